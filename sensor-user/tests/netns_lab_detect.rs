//! Detection in the traffic lab: real tools (dig against dnsmasq, nmap,
//! hping3) in network namespaces, mirrored to the test build of the sensor
//! with the committed models, judged as `cargo xtask eval` judges them.
//! Each attack must raise an alert of its class naming the attacker or the
//! attacked side and nothing else; benign traffic must raise nothing.
//!
//! Every scenario is bounded in packets and seconds and sends only inside
//! the lab's namespaces, which are removed afterwards, also on failure.

use std::path::Path;
use std::time::Duration;

use sensor_lab::detection::{ScenarioRun, judge, run_scenario, run_sequence};
use sensor_lab::lab::scenario;
use sensor_lab::root::require_root;
use sensor_lab::sensor::exclusive;

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");

/// Runs a catalogue scenario under the network-test lock; `None` when
/// skipped for lack of root.
fn play(test_name: &str, name: &str) -> Option<ScenarioRun> {
    if !require_root(test_name) {
        return None;
    }
    let _serial = exclusive();
    let spec = scenario::find(name).expect("scenario in the catalogue");
    let run = run_scenario(Path::new(SENSOR), &[], &spec, Duration::from_millis(1500))
        .unwrap_or_else(|e| panic!("scenario {name}: {e}"));
    Some(run)
}

fn alerts(run: &ScenarioRun) -> Vec<String> {
    run.alerts.iter().map(ToString::to_string).collect()
}

/// Asserts a detection of the scenario's class within `max_ms` of its first
/// packet, and no other alert.
fn assert_detected_alone(run: &ScenarioRun, max_ms: f64) {
    let class = run.outcome.label.name();
    let j = judge(&run.alerts, class, &run.roles);
    assert!(
        !j.correct.is_empty(),
        "{}: no {class} alert on the attack; alerts: {:?}",
        run.outcome.name,
        alerts(run)
    );
    assert!(
        j.false_alerts.is_empty(),
        "{}: false detections {:?}",
        run.outcome.name,
        j.false_alerts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    let ms = j
        .time_to_detect_ms(run.outcome.first_packet_mono_ns)
        .expect("the attack sent packets");
    assert!(
        (0.0..=max_ms).contains(&ms),
        "{}: detected after {ms:.1} ms",
        run.outcome.name
    );
}

/// nmap probing ten UDP ports of the server (35 frames): a scan by the
/// attacker, and the server's replies make nobody else a scanner.
#[test]
fn nmap_udp_scan_is_detected_as_scan() {
    let Some(run) = play("nmap_udp_scan_is_detected_as_scan", "scan-udp") else {
        return;
    };
    assert_detected_alone(&run, 100.0);
}

/// A single-source hping3 UDP flood is a flood on the server within 100 ms.
#[test]
fn hping3_udp_flood_is_detected_as_flood() {
    let Some(run) = play("hping3_udp_flood_is_detected_as_flood", "flood-udp") else {
        return;
    };
    assert_detected_alone(&run, 100.0);
}

/// Four clients resolving names against dnsmasq raise nothing: neither the
/// clients' queries nor the resolver's answers are scans.
#[test]
fn dns_lookups_raise_no_alert() {
    let Some(run) = play("dns_lookups_raise_no_alert", "benign-dns") else {
        return;
    };
    assert!(
        run.alerts.is_empty(),
        "benign DNS raised {:?}",
        alerts(&run)
    );
}

/// Low-and-slow exfiltration: a 3 KB HTTP POST to one outside server every
/// second. No row looks unusual; the beacon rule finds the uploads' clock
/// after its twelfth connection, as `anomaly` on that pair, and nothing
/// else alerts (the classifier's brute-force guesses at the first uploads
/// are dropped as uploads).
#[test]
fn periodic_uploads_are_detected_as_anomaly() {
    let Some(run) = play("periodic_uploads_are_detected_as_anomaly", "anomaly-exfil") else {
        return;
    };
    assert_detected_alone(&run, 20_000.0);
}

/// arp-scan of the attacker's own LAN: a broadcast ARP request for every
/// address of the /24, seen on the gateway's LAN port. The parser makes
/// each request a flow sender → target and the scan rule counts the hosts
/// probed: a scan by the attacker, and nothing else.
#[test]
fn arp_scan_is_detected_as_scan() {
    let Some(run) = play("arp_scan_is_detected_as_scan", "scan-arp") else {
        return;
    };
    assert_detected_alone(&run, 5_000.0);
}

/// nmap -sA: bare ACKs to 500 ports, every one answered by an RST.
#[test]
fn nmap_ack_scan_is_detected_as_scan() {
    let Some(run) = play("nmap_ack_scan_is_detected_as_scan", "scan-ack") else {
        return;
    };
    assert_detected_alone(&run, 1_000.0);
}

/// nmap -sV of the server's five open ports: it first finds them with
/// half-open probes (SYN, the server's SYN-ACK, the scanner's RST), then
/// talks to each service. Three half-open probes of one host are a scan
/// (the rows of the service probes look like ordinary connections).
#[test]
fn nmap_version_probing_is_detected_as_scan() {
    let Some(run) = play("nmap_version_probing_is_detected_as_scan", "scan-version") else {
        return;
    };
    assert_detected_alone(&run, 5_000.0);
}

/// An implant polling one outside server for tasks: the same GET every
/// 1.5 s ± 30 % (download-heavy, so no upload beacon): an anomaly by the
/// attacker (the beacon rule's check-ins), and nothing else.
#[test]
fn jittered_get_checkins_are_detected_as_anomaly() {
    let Some(run) = play(
        "jittered_get_checkins_are_detected_as_anomaly",
        "anomaly-beacon-get",
    ) else {
        return;
    };
    assert_detected_alone(&run, 30_000.0);
}

/// Carpet bombing: spoofed SYNs to random hosts of the server /24. No
/// host receives a flood, the /24 does: one flood alert naming the prefix
/// (the volume rule reads the kernel's destination sketch once a second),
/// and no alert on any single host.
#[test]
fn carpet_bombing_a_24_is_one_alert_on_the_prefix() {
    let Some(run) = play(
        "carpet_bombing_a_24_is_one_alert_on_the_prefix",
        "flood-carpet-24",
    ) else {
        return;
    };
    assert_detected_alone(&run, 3000.0);
    assert_one_prefix_alert(&run, 24);
}

/// Carpet bombing a /16: spoofed UDP to random hosts of 10.20.0.0/16, a
/// few packets per host. One flood alert on the /16.
#[test]
fn carpet_bombing_a_16_is_one_alert_on_the_prefix() {
    let Some(run) = play(
        "carpet_bombing_a_16_is_one_alert_on_the_prefix",
        "flood-carpet-16",
    ) else {
        return;
    };
    assert_detected_alone(&run, 3000.0);
    assert_one_prefix_alert(&run, 16);
}

fn assert_one_prefix_alert(run: &ScenarioRun, len: u8) {
    assert_eq!(run.alerts.len(), 1, "alerts: {:?}", alerts(run));
    assert_eq!(
        run.alerts[0].victim_prefix,
        Some(len),
        "alerts: {:?}",
        alerts(run)
    );
}

/// An ICMP echo sweep (nmap -sn -PE) of the 32 sweep targets: a scan by
/// the attacker, one echo request per host.
#[test]
fn nmap_ping_sweep_is_detected_as_scan() {
    let Some(run) = play("nmap_ping_sweep_is_detected_as_scan", "scan-ping-sweep") else {
        return;
    };
    assert_detected_alone(&run, 3000.0);
}

/// One attacker scans the server (nmap), floods it (a spoofed SYN flood,
/// then its own UDP flood), then guesses SSH logins on it: one alert per
/// attack with the right class, all in one incident. Its guesses' rows
/// carry the scan and the floods in their source features and score as a
/// flood; they must still be the brute force's, not rows of the open flood
/// alert.
#[test]
fn scan_flood_then_guesses_from_one_attacker_are_three_alerts_of_one_incident() {
    const NAME: &str = "scan_flood_then_guesses_from_one_attacker_are_three_alerts_of_one_incident";
    if !require_root(NAME) {
        return;
    }
    let _serial = exclusive();
    let specs: Vec<_> = [
        "scan-syn",
        "flood-syn-spoofed",
        "flood-udp",
        "bruteforce-ssh-like",
    ]
    .iter()
    .map(|n| scenario::find(n).expect("scenario in the catalogue"))
    .collect();
    let run = run_sequence(Path::new(SENSOR), &[], &specs, Duration::from_millis(1500))
        .unwrap_or_else(|e| panic!("sequence: {e}"));
    let shown: Vec<String> = run.alerts.iter().map(ToString::to_string).collect();
    let mut classes: Vec<&str> = run.alerts.iter().map(|a| a.class.as_str()).collect();
    classes.sort_unstable();
    assert_eq!(classes, ["bruteforce", "flood", "scan"], "{shown:?}");
    for (outcome, roles) in run.outcomes.iter().zip(&run.roles) {
        let class = outcome.label.name();
        let j = judge(&run.alerts, class, roles);
        assert!(
            !j.correct.is_empty(),
            "{}: no {class} alert on it; alerts: {shown:?}",
            outcome.name
        );
    }
    let incident = &run.alerts[0].incident_id;
    assert!(!incident.is_empty());
    assert!(
        run.alerts.iter().all(|a| &a.incident_id == incident),
        "{:?}",
        run.alerts
    );
}
