//! The block rule of the alert stage against a loaded XDP program: an
//! alert at its class's block bar puts its attacker in the program's
//! blocklist (dropped with `--enforce on`, counted as would-drop in a dry
//! run), its EVE records say `action: blocked` with the block's start and
//! end; an alert below the bar blocks nothing.

mod alerts_util;
mod xdp_util;

use alerts_util::*;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray},
    programs::Xdp,
};
use etherparse::PacketBuilder;
use sensor::{
    alerts::{AlertStage, Inventory},
    capture::blocklist::Lists,
    model::row::AttackClass::BruteForce,
    sinks::MemorySink,
};
use sensor_common::{
    Counter, EnforceMode, SensorConfig, XDP_PROGRAM_NAME, map_names, sketch::DST_PREFIX_DEFAULT,
};
use sensor_lab::require_root;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const ATTACKER: [u8; 4] = [198, 51, 100, 7];

/// The XDP program with enforcement `mode`, and a stage blocking into its
/// lists at `bar` (any severity).
fn setup(test: &str, mode: EnforceMode, bar: f32) -> Option<(Ebpf, AlertStage, MemorySink)> {
    setup_with(test, mode, bar, Inventory::default())
}

fn setup_with(
    test: &str,
    mode: EnforceMode,
    bar: f32,
    inventory: Inventory,
) -> Option<(Ebpf, AlertStage, MemorySink)> {
    if !require_root(test) {
        return None;
    }
    let mut ebpf = EbpfLoader::new()
        .load(sensor::capture::XDP_OBJECT)
        .unwrap_or_else(|e| panic!("loading the XDP object: {e}"));
    let prog: &mut Xdp = ebpf
        .program_mut(XDP_PROGRAM_NAME)
        .expect("program")
        .try_into()
        .expect("xdp");
    prog.load().unwrap_or_else(|e| panic!("verifier: {e}"));
    let cfg = SensorConfig {
        enforce: mode as u32,
        ..SensorConfig::new(1, false, 64 * 1024, 3, DST_PREFIX_DEFAULT)
    };
    let mut a: Array<_, SensorConfig> =
        Array::try_from(ebpf.map_mut(map_names::SENSOR_CONFIG).expect("config")).expect("array");
    a.set(0, cfg, 0).expect("write config");
    let lists = Lists::from_ebpf(&mut ebpf).expect("lists");
    let mut settings = settings();
    settings.enforce = mode;
    settings.block.max_severity = 3;
    settings.block.min_score = bar;
    let (mut stage, mem) = stage_with(settings, inventory);
    stage.set_block_lists(lists);
    Some((ebpf, stage, mem))
}

fn from_attacker(ebpf: &Ebpf, n: u32) -> u32 {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(ATTACKER, [10, 0, 0, 5], 64)
        .udp(40000, 22);
    let mut v = Vec::new();
    b.write(&mut v, &[0u8; 16]).expect("frame");
    xdp_util::test_run(ebpf, XDP_PROGRAM_NAME, &v, n).return_value
}

fn counter(ebpf: &Ebpf, c: Counter) -> u64 {
    let a: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(map_names::GLOBAL_COUNTERS).expect("counters"))
            .expect("per-cpu array");
    a.get(&(c as u32), 0).expect("read").iter().sum()
}

fn brute_force(stage: &mut AlertStage, score: f32) {
    for i in 0..3 {
        stage.process(&row(
            BruteForce,
            score,
            "198.51.100.7",
            "10.0.0.5",
            22,
            10 * SEC + i,
        ));
    }
}

#[test]
fn an_alert_at_its_block_bar_blocks_its_attacker_and_says_so() {
    let Some((ebpf, mut stage, mem)) = setup(
        "an_alert_at_its_block_bar_blocks_its_attacker_and_says_so",
        EnforceMode::On,
        0.99,
    ) else {
        return;
    };
    assert_eq!(from_attacker(&ebpf, 5), XDP_PASS, "nothing blocked yet");
    brute_force(&mut stage, 0.995);
    let alerts = take_of_type(&mem, "alert");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["alert"]["action"], "blocked", "{a}");
    assert_eq!(a["xdp_sensor"]["block"]["mode"], "on", "{a}");
    let (start, end) = (
        a["xdp_sensor"]["block"]["start"].as_str().expect("start"),
        a["xdp_sensor"]["block"]["end"].as_str().expect("end"),
    );
    assert!(start < end, "{start} {end}");
    let before = counter(&ebpf, Counter::DroppedBlockAlert);
    assert_eq!(from_attacker(&ebpf, 40), XDP_DROP);
    assert_eq!(counter(&ebpf, Counter::DroppedBlockAlert) - before, 40);
}

#[test]
fn an_alert_below_its_block_bar_blocks_nothing() {
    let Some((ebpf, mut stage, mem)) = setup(
        "an_alert_below_its_block_bar_blocks_nothing",
        EnforceMode::On,
        0.99,
    ) else {
        return;
    };
    brute_force(&mut stage, 0.95);
    let alerts = take_of_type(&mem, "alert");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["alert"]["action"], "allowed");
    assert!(alerts[0]["xdp_sensor"].get("block").is_none());
    assert_eq!(from_attacker(&ebpf, 10), XDP_PASS);
}

#[test]
fn a_dry_run_alert_counts_what_its_block_would_drop() {
    let Some((ebpf, mut stage, mem)) = setup(
        "a_dry_run_alert_counts_what_its_block_would_drop",
        EnforceMode::DryRun,
        0.99,
    ) else {
        return;
    };
    brute_force(&mut stage, 0.995);
    let alerts = take_of_type(&mem, "alert");
    assert_eq!(alerts[0]["alert"]["action"], "allowed");
    assert_eq!(alerts[0]["xdp_sensor"]["block"]["mode"], "dry-run");
    let before = counter(&ebpf, Counter::WouldDropBlockAlert);
    assert_eq!(from_attacker(&ebpf, 25), XDP_PASS);
    assert_eq!(counter(&ebpf, Counter::WouldDropBlockAlert) - before, 25);
}

#[test]
fn a_critical_asset_is_never_blocked_by_an_alert() {
    let inventory = Inventory::parse(
        std::path::Path::new("inventory.toml"),
        "[[asset]]\nsubnet = \"198.51.100.0/24\"\nname = \"partner-gw\"\nowner = \"net\"\ncriticality = 5\ntags = []\n",
    )
    .expect("inventory");
    let Some((ebpf, mut stage, mem)) = setup_with(
        "a_critical_asset_is_never_blocked_by_an_alert",
        EnforceMode::On,
        0.99,
        inventory,
    ) else {
        return;
    };
    brute_force(&mut stage, 0.995);
    let alerts = take_of_type(&mem, "alert");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["alert"]["action"], "allowed");
    assert!(alerts[0]["xdp_sensor"].get("block").is_none());
    assert_eq!(from_attacker(&ebpf, 10), XDP_PASS);
}
