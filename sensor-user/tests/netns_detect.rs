//! Detection on real captures the models never saw (tests/data/pcaps),
//! replayed at their recorded pace into a veth whose sensor runs in
//! `--mirror` mode with the committed models: each attack must raise an
//! alert of its class naming an attack host and nothing else; benign
//! traffic must raise nothing.
//!
//! The truth is asserted as it is. Assertions the current models do not
//! meet yet are `#[ignore]`d with the measured outcome as the reason.

use std::path::Path;
use std::time::Duration;

use sensor_lab::detection::{CaptureRun, Judgement, judge, run_capture};
use sensor_lab::manifest::{self, Entry};
use sensor_lab::replay::{Capture, ReplayOptions};
use sensor_lab::sensor::net_test;

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");

const CICDDOS_SYN_FLOOD: &str = "flood/cicddos2019_SynFlood.pcap";
const STOPDDOS_SNMP_AMP: &str = "flood/stopddos_amp.UDP.snmp.src161.pcapng";
const EVILFINGERS_SYN_SCAN: &str = "scan/evilfingers_nmap/TCP_SYN_SCAN.pcap";
const EVILFINGERS_UDP_SCAN: &str = "scan/evilfingers_nmap/UDP_SCAN.pcap";
const KITSUNE_IOT: &str = "benign/kitsune_mirai2000_benign-iot-prefix.pcap";
const ESPN_BROWSING: &str = "benign/ppa3_http_espn.pcapng";
const SGR_ARP_SCAN: &str = "scan/sgr_hs-arpScan.pcap";

/// Replays one committed capture (checked against its manifest row) and
/// judges the sensor's alerts; `None` when skipped for lack of root.
fn replay(test_name: &str, file: &str) -> Option<(Entry, CaptureRun, Judgement)> {
    replay_bounded(test_name, file, None)
}

/// [`replay`], cut after `bound` (the evaluation's bound) when given;
/// without one the capture must fit in 30 s.
fn replay_bounded(
    test_name: &str,
    file: &str,
    bound: Option<Duration>,
) -> Option<(Entry, CaptureRun, Judgement)> {
    let net = net_test(test_name)?;
    let entry = manifest::committed()
        .expect("reading the capture manifest")
        .into_iter()
        .find(|e| e.file == file)
        .unwrap_or_else(|| panic!("{file} is not in the manifest"));
    entry.verify().expect("capture matches its manifest row");
    let cap = Capture::load(&entry.path).expect("reading the capture");
    let run = run_capture(
        &net.lab,
        Path::new(SENSOR),
        &[],
        &cap,
        &entry.attack_rule,
        ReplayOptions {
            speed: 1.0,
            max_packets: usize::MAX,
            max_duration: bound.unwrap_or(Duration::from_secs(30)),
            max_gap: None,
        },
        // Generous: the test build of the sensor scores slower than a
        // release build, and its last rows must reach the alert stage.
        Duration::from_secs(3),
    )
    .expect("replaying through the sensor");
    assert!(
        bound.is_some() || !run.replay.truncated,
        "{file} replayed completely"
    );
    assert_eq!(
        run.output.stats.counter("packets_seen"),
        run.replay.sent,
        "the sensor saw every replayed frame"
    );
    let j = judge(&run.alerts, &entry.expected_class, &run.roles);
    eprintln!(
        "{file}: {} frames sent, alerts {:?}, time to detect {:?} ms; sensor counters {:?}",
        run.replay.sent,
        run.alerts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        j.time_to_detect_ms(run.replay.first_attack_mono_ns),
        run.output.stats.counters
    );
    Some((entry, run, j))
}

fn assert_detected(entry: &Entry, run: &CaptureRun, j: &Judgement) {
    assert!(
        !j.correct.is_empty(),
        "{}: no {} alert on an attack host; alerts: {:?}; sensor counters: {:?}",
        entry.file,
        entry.expected_class,
        run.alerts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        run.output.stats.counters
    );
    assert!(
        j.time_to_detect_ms(run.replay.first_attack_mono_ns)
            .is_some_and(|ms| ms >= 0.0),
        "a detection cannot precede the attack"
    );
}

fn assert_no_false_alert(entry: &Entry, j: &Judgement) {
    assert!(
        j.false_alerts.is_empty(),
        "{}: {} false detections: {:?}",
        entry.file,
        j.false_alerts.len(),
        j.false_alerts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
}

/// The capture's attack raises an alert of its class on an attack host.
fn detected(test_name: &str, file: &str) {
    if let Some((e, run, j)) = replay(test_name, file) {
        assert_detected(&e, &run, &j);
    }
}

/// The capture raises no alert beyond the expected one (none for benign
/// traffic, which has no attack).
fn no_other_alert(test_name: &str, file: &str) -> Option<CaptureRun> {
    let (e, run, j) = replay(test_name, file)?;
    assert_no_false_alert(&e, &j);
    Some(run)
}

#[test]
fn cicddos2019_syn_flood_is_detected_as_flood() {
    detected(
        "cicddos2019_syn_flood_is_detected_as_flood",
        CICDDOS_SYN_FLOOD,
    );
}

#[test]
#[ignore = "measured: the flooder 172.16.0.5 also gets a scan alert (one source sending SYNs to 8 450 random ports looks like probing for its first ms; the models also gave it an anomaly alert in the last evaluation)"]
fn cicddos2019_syn_flood_raises_no_other_alert() {
    no_other_alert(
        "cicddos2019_syn_flood_raises_no_other_alert",
        CICDDOS_SYN_FLOOD,
    );
}

#[test]
fn stopddos_snmp_amplification_is_detected_as_flood() {
    detected(
        "stopddos_snmp_amplification_is_detected_as_flood",
        STOPDDOS_SNMP_AMP,
    );
}

#[test]
fn stopddos_snmp_amplification_raises_no_other_alert() {
    no_other_alert(
        "stopddos_snmp_amplification_raises_no_other_alert",
        STOPDDOS_SNMP_AMP,
    );
}

#[test]
fn evilfingers_nmap_syn_scan_is_detected_as_scan() {
    detected(
        "evilfingers_nmap_syn_scan_is_detected_as_scan",
        EVILFINGERS_SYN_SCAN,
    );
}

#[test]
fn evilfingers_nmap_syn_scan_raises_no_other_alert() {
    no_other_alert(
        "evilfingers_nmap_syn_scan_raises_no_other_alert",
        EVILFINGERS_SYN_SCAN,
    );
}

/// The target's ICMP port unreachables answer the scanner's probes: one scan
/// alert, no flood alert on the scanner.
#[test]
fn evilfingers_nmap_udp_scan_is_one_scan_alert() {
    let Some((e, run, j)) = replay(
        "evilfingers_nmap_udp_scan_is_one_scan_alert",
        EVILFINGERS_UDP_SCAN,
    ) else {
        return;
    };
    assert_detected(&e, &run, &j);
    assert_no_false_alert(&e, &j);
}

/// An ARP scan of a /24 (a broadcast request for each address): a scan by
/// its sender and nothing else. The parser makes each request a flow.
#[test]
fn sgr_arp_scan_is_one_scan_alert() {
    let Some((e, run, j)) = replay("sgr_arp_scan_is_one_scan_alert", SGR_ARP_SCAN) else {
        return;
    };
    assert_detected(&e, &run, &j);
    assert_no_false_alert(&e, &j);
    assert!(run.output.stats.counter("arp_request") >= 250);
}

#[test]
fn espn_browsing_raises_no_alert() {
    if let Some(run) = no_other_alert("espn_browsing_raises_no_alert", ESPN_BROWSING) {
        assert!(run.replay.first_attack_mono_ns.is_none());
    }
}

/// Networked cameras whose cloud is unreachable: UDP keepalives to a dozen hosts,
/// SYNs retried against them, DNS queries nobody answers, ICMP errors from
/// the router. Failing traffic, not an attack. The first 30 s, as in the
/// evaluation.
#[test]
fn iot_cameras_failing_to_reach_their_cloud_raise_no_alert() {
    let Some((e, run, j)) = replay_bounded(
        "iot_cameras_failing_to_reach_their_cloud_raise_no_alert",
        KITSUNE_IOT,
        Some(Duration::from_secs(30)),
    ) else {
        return;
    };
    assert!(run.replay.first_attack_mono_ns.is_none());
    assert_no_false_alert(&e, &j);
}
