//! Restart without forgetting: a sensor stopped with `--keep-state` leaves
//! its program attached and its maps pinned; the next sensor adopts the maps
//! and replaces the program through the pinned link while traffic runs, and
//! the flow table it writes at exit counts every packet sent, exactly, as
//! if one sensor had run throughout. A state whose layout does not fit the
//! new sensor is replaced by a fresh one, with the reason logged.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sensor_lab::generator::{FlowTuple, Frames, Pacing, Sender, mixed_flows};
use sensor_lab::sensor::{PinsGuard, SensorOutput, SensorRun, TempDir, exclusive};
use sensor_lab::{Lab, require_root};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");
/// Logged once the sensor is attached and its workers run.
const RUNNING: &str = "sensor running";
const START: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(20);
/// 8 flows at [`RATE`] packets/s for 6 s: the restart (stop, load, adopt,
/// replace) happens while they run.
const PACKETS: u64 = 60_000;
const RATE: u64 = 10_000;

fn observe(extra: &[&'static str]) -> Vec<&'static str> {
    ["--duration", "60", "--no-score", "--workers", "1"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect()
}

fn start(lab: &Lab, dir: &TempDir, args: &[&str]) -> SensorRun {
    let mut run = SensorRun::start_nsenter_logging(
        &lab.gateway,
        Path::new(SENSOR),
        &lab.link.b,
        dir.path(),
        args,
        "info",
    )
    .expect("start sensor");
    run.wait_logged(RUNNING, START).expect("sensor running");
    run
}

/// Per-flow packet counts of a `--flows-out`.
fn flow_packets(out: &SensorOutput) -> BTreeMap<FlowTuple, u64> {
    out.flows
        .iter()
        .map(|f| (FlowTuple::from(f), f.packets))
        .collect()
}

/// Two sensors in turn on one lab link: 400 packets of four flows go
/// through while the first runs.
struct TwoSensors {
    lab: Lab,
    pins: PinsGuard,
    frames: Frames,
    sender: Sender,
    dir_a: TempDir,
    dir_b: TempDir,
}

impl TwoSensors {
    fn new(tag: &str) -> Self {
        let lab = Lab::sender_gateway().expect("lab");
        let pins = PinsGuard::of(&lab.gateway, &lab.link.b).expect("pin directory");
        let frames =
            Frames::spread(lab.sender_mac, lab.gateway_mac, &mixed_flows(4), 400).expect("frames");
        let sender = Sender::open(&lab.sender, &lab.link.a).expect("sender");
        let dir_a = TempDir::new(&format!("{tag}-a")).unwrap();
        let dir_b = TempDir::new(&format!("{tag}-b")).unwrap();
        Self {
            lab,
            pins,
            frames,
            sender,
            dir_a,
            dir_b,
        }
    }

    /// The 400 packets, then a moment for the sensor to read them.
    fn send(&self) {
        self.sender
            .send(&self.frames, Pacing::paced(10_000))
            .expect("send");
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Starts the first sensor with `args` and sends the packets.
    fn first(&self, args: &[&str]) -> SensorRun {
        let a = start(&self.lab, &self.dir_a, args);
        self.send();
        a
    }
}

/// Asserts the sensor logged every one of `texts`.
fn assert_logged(out: &SensorOutput, texts: &[&str]) {
    for t in texts {
        assert!(out.stderr.contains(t), "no {t:?} in:\n{}", out.stderr);
    }
}

/// Asserts the pin directory is gone.
fn assert_unpinned(pins: &PinsGuard) {
    assert!(
        !pins.path().exists(),
        "{} left behind",
        pins.path().display()
    );
}

#[test]
fn a_restart_under_traffic_keeps_every_flow_count_exact() {
    if !require_root("a_restart_under_traffic_keeps_every_flow_count_exact") {
        return;
    }
    let _serial = exclusive();
    let lab = Lab::sender_gateway().expect("lab");
    let pins = PinsGuard::of(&lab.gateway, &lab.link.b).expect("pin directory");
    let frames =
        Frames::spread(lab.sender_mac, lab.gateway_mac, &mixed_flows(8), PACKETS).expect("frames");
    let sender = Sender::open(&lab.sender, &lab.link.a).expect("sender");
    let (dir_a, dir_b) = (
        TempDir::new("restart-a").unwrap(),
        TempDir::new("restart-b").unwrap(),
    );
    let a = start(&lab, &dir_a, &observe(&["--keep-state"]));

    let (report, out_a, out_b) = std::thread::scope(|s| {
        let traffic = s.spawn(|| sender.send(&frames, Pacing::paced(RATE)));
        std::thread::sleep(Duration::from_secs(1));
        let out_a = a.stop(STOP).expect("stop sensor A");
        let b = start(&lab, &dir_b, &observe(&[]));
        assert!(
            !traffic.is_finished(),
            "the traffic ended before the new sensor attached: the test did not restart under traffic"
        );
        let report = traffic.join().expect("sender thread").expect("send");
        std::thread::sleep(Duration::from_millis(300));
        (report, out_a, b.stop(STOP).expect("stop sensor B"))
    });
    assert_eq!(report.sent as u64, PACKETS, "generator hit its time limit");
    assert_logged(&out_a, &["left attached with its state pinned"]);
    assert_logged(
        &out_b,
        &[
            "adopting the flow table",
            "XDP program replaced through the pinned link",
        ],
    );

    // Sensor A saw part of each flow; sensor B's flow table holds each
    // flow's whole history, exactly.
    let truth = frames.truth(report.sent);
    let want: BTreeMap<FlowTuple, u64> = truth.flows.iter().map(|(t, f)| (*t, f.packets)).collect();
    let before = flow_packets(&out_a);
    let after = flow_packets(&out_b);
    assert_eq!(after, want, "per-flow packets after the restart");
    assert!(
        before.values().sum::<u64>() > 0 && before.values().sum::<u64>() < PACKETS,
        "sensor A saw {} of {PACKETS} packets",
        before.values().sum::<u64>()
    );
    for (tuple, n) in &before {
        assert!(after[tuple] >= *n, "{tuple:?} lost its history");
    }
    assert_eq!(out_b.stats.counter("packets_seen"), truth.packets);
    assert_eq!(out_b.stats.counter("parsed_ok"), truth.packets);
    // Traffic ran while no sensor did: the kept program counted it.
    let handover = out_b.stats.handover.expect("handover in --stats-out");
    assert!(handover.packets > 0, "{handover:?}");
    assert!(out_a.stats.handover.is_none(), "A adopted nothing");

    // B stopped without --keep-state: nothing stays attached or pinned.
    assert!(
        !lab.gateway.has_xdp(&lab.link.b).expect("ip link"),
        "XDP still attached after a stop without --keep-state"
    );
    assert_unpinned(&pins);
}

#[test]
fn a_state_of_another_layout_is_replaced_by_a_fresh_one() {
    if !require_root("a_state_of_another_layout_is_replaced_by_a_fresh_one") {
        return;
    }
    let _serial = exclusive();
    let t = TwoSensors::new("layout");
    let (lab, pins, dir_b) = (&t.lab, &t.pins, &t.dir_b);
    let a = t.first(&observe(&["--keep-state", "--flow-table-size", "4096"]));
    let out_a = a.stop(STOP).expect("stop sensor A");
    assert_eq!(out_a.stats.counter("packets_seen"), 400);

    let b = start(lab, dir_b, &observe(&["--flow-table-size", "8192"]));
    let out_b = b.stop(STOP).expect("stop sensor B");
    // A fresh state, and the program was still replaced through the
    // link; the new sensor's counters start from zero.
    assert_logged(
        &out_b,
        &[
            "starting with a fresh flow table, sketches and counters",
            "FLOW_TABLE has another layout",
            "XDP program replaced through the pinned link",
        ],
    );
    assert_eq!(out_b.stats.counter("packets_seen"), 0);
    assert!(out_b.flows.is_empty(), "fresh flow table");
    assert!(out_b.stats.handover.is_none(), "nothing adopted");
    assert_unpinned(pins);
}

#[test]
fn a_link_of_another_mode_is_replaced_and_the_state_still_adopted() {
    if !require_root("a_link_of_another_mode_is_replaced_and_the_state_still_adopted") {
        return;
    }
    let _serial = exclusive();
    let t = TwoSensors::new("mode");
    let (lab, pins, dir_b) = (&t.lab, &t.pins, &t.dir_b);
    let a = t.first(&observe(&["--keep-state", "--mode", "native"]));
    a.stop(STOP).expect("stop sensor A");

    let b = start(lab, dir_b, &observe(&["--mode", "skb"]));
    t.send();
    let out_b = b.stop(STOP).expect("stop sensor B");
    // The maps do not depend on the mode: both sends are in the flow table.
    assert_logged(
        &out_b,
        &[
            "it was attached in native mode, this sensor asks for skb",
            "XDP program attached",
            "adopting the flow table",
        ],
    );
    assert_eq!(out_b.stats.counter("packets_seen"), 800);
    assert_unpinned(pins);
}
