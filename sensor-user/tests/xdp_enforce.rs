//! Enforcement in the XDP program through `BPF_PROG_TEST_RUN`: blocklisted
//! sources dropped before any flow work with a counter per reason, dry runs
//! that drop nothing and count, the allowlist that wins, expiry, the
//! lists' user-space view, and victim protection.

use std::time::Duration;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray},
    programs::Xdp,
};
use etherparse::PacketBuilder;
use sensor::capture::blocklist::{Lists, Prefix};
use sensor_common::{
    BlockReason, COUNTER_COUNT, Counter, EnforceMode, SensorConfig, XDP_PROGRAM_NAME, map_names,
    sketch::DST_PREFIX_DEFAULT,
};
use sensor_lab::require_root;

mod xdp_util;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn load(test: &str, mode: EnforceMode) -> Option<(Ebpf, Lists)> {
    if !require_root(test) {
        return None;
    }
    // One CPU: per-CPU flow slots and token buckets stay on it between runs.
    let mut set = nix::sched::CpuSet::new();
    set.set(0).expect("cpu 0");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin to cpu 0");
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
    Some((ebpf, lists))
}

fn udp(src: [u8; 4]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, [10, 9, 0, 1], 64)
        .udp(40000, 53);
    let mut v = Vec::new();
    b.write(&mut v, &[0u8; 16]).expect("udp4");
    v
}

fn udp6(src: [u8; 16]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(
            src,
            [0x20, 1, 0xd, 0xb8, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            64,
        )
        .udp(40000, 53);
    let mut v = Vec::new();
    b.write(&mut v, &[0u8; 16]).expect("udp6");
    v
}

/// Runs `frame` `n` times; returns the verdicts seen (all runs must agree).
fn send(ebpf: &Ebpf, frame: &[u8], n: u32) -> u32 {
    let r = xdp_util::test_run(ebpf, XDP_PROGRAM_NAME, frame, n);
    r.return_value
}

fn counters(ebpf: &Ebpf) -> [u64; COUNTER_COUNT as usize] {
    let a: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(map_names::GLOBAL_COUNTERS).expect("counters"))
            .expect("per-cpu array");
    let mut out = [0u64; COUNTER_COUNT as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = a.get(&(i as u32), 0).expect("read").iter().sum();
    }
    out
}

fn c(counters: &[u64; COUNTER_COUNT as usize], c: Counter) -> u64 {
    counters[c as usize]
}

fn prefix(s: &str) -> Prefix {
    s.parse().expect("prefix")
}

#[test]
fn blocked_sources_are_dropped_before_flow_work_and_counted_per_reason() {
    let Some((ebpf, mut lists)) = load(
        "blocked_sources_are_dropped_before_flow_work_and_counted_per_reason",
        EnforceMode::On,
    ) else {
        return;
    };
    // Nothing blocked yet: everything passes.
    assert_eq!(send(&ebpf, &udp([10, 1, 2, 3]), 10), XDP_PASS);
    lists
        .block(prefix("10.1.0.0/16"), None, BlockReason::Operator, "test")
        .unwrap();
    lists
        .block(
            prefix("2001:db8:66::/48"),
            None,
            BlockReason::Alert,
            "flood",
        )
        .unwrap();
    let before = counters(&ebpf);
    assert_eq!(send(&ebpf, &udp([10, 1, 2, 3]), 100), XDP_DROP);
    assert_eq!(send(&ebpf, &udp([10, 2, 2, 3]), 30), XDP_PASS);
    let mut blocked6 = [0x20, 1, 0xd, 0xb8, 0, 0x66, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    assert_eq!(send(&ebpf, &udp6(blocked6), 7), XDP_DROP);
    blocked6[5] = 0x67;
    assert_eq!(send(&ebpf, &udp6(blocked6), 5), XDP_PASS);
    let after = counters(&ebpf);
    let d = |k| c(&after, k) - c(&before, k);
    assert_eq!(d(Counter::DroppedBlockOperator), 100);
    assert_eq!(d(Counter::DroppedBlockAlert), 7);
    assert_eq!(d(Counter::WouldDropBlockOperator), 0);
    // Dropped packets never reach the flow accounting.
    assert_eq!(d(Counter::PacketsSeen), 142);
    assert_eq!(d(Counter::ParsedOk), 142);
    // Only the passing flows export: 30 packets (Start, 2, 4, 8, 16) and 5
    // packets (Start, 2, 4).
    assert_eq!(d(Counter::EventsEmitted), 8);

    // Removed: passes again.
    assert!(lists.unblock(prefix("10.1.0.0/16")).unwrap());
    assert!(!lists.unblock(prefix("10.1.0.0/16")).unwrap());
    assert_eq!(send(&ebpf, &udp([10, 1, 2, 3]), 10), XDP_PASS);
    let listed = lists.blocked();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].prefix, "2001:db8:66::/48");
    assert_eq!(listed[0].reason, "alert");
    assert_eq!(listed[0].note, "flood");
    assert_eq!(listed[0].expires_in_s, None);
}

#[test]
fn dry_run_drops_nothing_and_counts_what_it_would_drop() {
    let Some((ebpf, mut lists)) = load(
        "dry_run_drops_nothing_and_counts_what_it_would_drop",
        EnforceMode::DryRun,
    ) else {
        return;
    };
    lists
        .block(prefix("10.1.2.3"), None, BlockReason::Alert, "")
        .unwrap();
    let before = counters(&ebpf);
    assert_eq!(send(&ebpf, &udp([10, 1, 2, 3]), 250), XDP_PASS);
    let after = counters(&ebpf);
    let d = |k| c(&after, k) - c(&before, k);
    assert_eq!(d(Counter::WouldDropBlockAlert), 250);
    assert_eq!(d(Counter::DroppedBlockAlert), 0);
    // Still observed: a Start and the checkpoints 2, 4 … 128.
    assert_eq!(d(Counter::EventsEmitted), 8);
}

#[test]
fn enforcement_off_ignores_the_blocklist() {
    let Some((ebpf, mut lists)) = load("enforcement_off_ignores_the_blocklist", EnforceMode::Off)
    else {
        return;
    };
    lists
        .block(prefix("10.1.2.3"), None, BlockReason::Operator, "")
        .unwrap();
    let before = counters(&ebpf);
    assert_eq!(send(&ebpf, &udp([10, 1, 2, 3]), 20), XDP_PASS);
    let after = counters(&ebpf);
    for k in [
        Counter::DroppedBlockOperator,
        Counter::WouldDropBlockOperator,
    ] {
        assert_eq!(c(&after, k), c(&before, k));
    }
}

#[test]
fn allowlisted_sources_are_never_dropped() {
    let Some((ebpf, mut lists)) = load("allowlisted_sources_are_never_dropped", EnforceMode::On)
    else {
        return;
    };
    lists
        .block(prefix("10.0.0.0/8"), None, BlockReason::Alert, "")
        .unwrap();
    lists.allow(prefix("10.5.0.0/16")).unwrap();
    let before = counters(&ebpf);
    assert_eq!(send(&ebpf, &udp([10, 5, 9, 9]), 40), XDP_PASS);
    assert_eq!(send(&ebpf, &udp([10, 6, 9, 9]), 3), XDP_DROP);
    let after = counters(&ebpf);
    let d = |k| c(&after, k) - c(&before, k);
    assert_eq!(d(Counter::BlockAllowlisted), 40);
    assert_eq!(d(Counter::DroppedBlockAlert), 3);
}

#[test]
fn entries_expire_after_their_ttl() {
    let Some((ebpf, mut lists)) = load("entries_expire_after_their_ttl", EnforceMode::On) else {
        return;
    };
    lists
        .block(
            prefix("10.1.2.3"),
            Some(Duration::from_millis(300)),
            BlockReason::Operator,
            "short",
        )
        .unwrap();
    assert_eq!(lists.blocked()[0].expires_in_s, Some(0));
    assert_eq!(send(&ebpf, &udp([10, 1, 2, 3]), 5), XDP_DROP);
    // The program's clock is the coarse one (a jiffy behind at most).
    std::thread::sleep(Duration::from_millis(400));
    let before = counters(&ebpf);
    assert_eq!(send(&ebpf, &udp([10, 1, 2, 3]), 5), XDP_PASS);
    let after = counters(&ebpf);
    assert_eq!(
        c(&after, Counter::BlockExpired) - c(&before, Counter::BlockExpired),
        5
    );
    assert!(lists.blocked()[0].expired);
    assert_eq!(lists.remove_expired().unwrap(), 1);
    assert!(lists.blocked().is_empty());
}

fn tcp(src: [u8; 4], sport: u16, syn: bool, ack: bool) -> Vec<u8> {
    let mut t = etherparse::TcpHeader::new(sport, 80, 1, 64240);
    t.syn = syn;
    t.ack = ack;
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, [10, 9, 0, 1], 64)
        .tcp_header(t);
    let mut v = Vec::new();
    b.write(&mut v, &[]).expect("tcp4");
    v
}

#[test]
fn victim_protection_passes_a_known_client_and_drops_spoofed_syns() {
    let Some((ebpf, mut lists)) = load(
        "victim_protection_passes_a_known_client_and_drops_spoofed_syns",
        EnforceMode::On,
    ) else {
        return;
    };
    let client = [10, 7, 0, 1];
    // The client's connection before the flood: its SYN (unknown yet: it
    // takes one of the burst's 5 tokens), then ACKs (a known flow; its
    // checkpoint at packet 2 makes the source known).
    lists
        .protect("10.9.0.1".parse().unwrap(), 1, 5, None)
        .unwrap();
    assert_eq!(send(&ebpf, &tcp(client, 40_000, true, false), 1), XDP_PASS);
    assert_eq!(send(&ebpf, &tcp(client, 40_000, false, true), 1), XDP_PASS);
    let before = counters(&ebpf);
    // The flood: SYNs from 200 spoofed sources, one each.
    let mut verdicts = [0u32; 3];
    for i in 0..200u16 {
        let [a, b] = i.to_be_bytes();
        let v = send(&ebpf, &tcp([10, 66, a, b], 1024 + i, true, false), 1);
        verdicts[v as usize] += 1;
    }
    assert_eq!(verdicts[XDP_PASS as usize], 4, "the burst's 4 tokens left");
    assert_eq!(verdicts[XDP_DROP as usize], 196);
    // The client keeps being served: its flow, and a new connection.
    assert_eq!(send(&ebpf, &tcp(client, 40_000, false, true), 50), XDP_PASS);
    assert_eq!(send(&ebpf, &tcp(client, 40_001, true, false), 1), XDP_PASS);
    let after = counters(&ebpf);
    let d = |k| c(&after, k) - c(&before, k);
    assert_eq!(d(Counter::DroppedRateLimit), 196);
    assert_eq!(d(Counter::ProtectKnownPassed), 51);
    // Every spoofed SYN was still counted in its flow (the flood stays
    // visible to the sketches and the alert stage).
    assert_eq!(d(Counter::ParsedOk), 251);
    let listed = lists.protected();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].rate_pps, 1);
    assert_eq!(listed[0].burst, 5);
    assert!(lists.unprotect("10.9.0.1".parse().unwrap()).unwrap());
    assert_eq!(
        send(&ebpf, &tcp([10, 66, 1, 1], 5000, true, false), 1),
        XDP_PASS
    );
}
