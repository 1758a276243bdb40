//! The whole path on a real veth: XDP → rings → features → models → alert
//! stage → EVE file. A port scan from one source and a SYN flood from
//! spoofed sources must each raise an alert of the right class naming the
//! right attacker and victim.

use std::net::IpAddr;

use sensor_lab::generator::Pacing;
use sensor_lab::sensor::{TempDir, net_test};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");

#[test]
fn scan_and_flood_raise_alerts_of_their_class() {
    let Some(net) = net_test("scan_and_flood_raise_alerts_of_their_class") else {
        return;
    };
    let scanner: IpAddr = "10.66.0.7".parse().unwrap();
    let scan_victim: IpAddr = "10.99.0.1".parse().unwrap();
    let flood_victim: IpAddr = "10.99.0.2".parse().unwrap();

    let mut frames = net.port_scan(scanner, scan_victim, 1..=1000);
    frames.extend(&net.syn_flood(5_000, flood_victim, 80, 20_000));

    let eve_dir = TempDir::new("alerts").expect("tempdir");
    let eve = eve_dir.path().join("eve.json");
    let eve_arg = eve.to_string_lossy().into_owned();
    let r = net.scenario(
        SENSOR,
        &["--duration", "60", "--eve-out", &eve_arg],
        &frames,
        Pacing::paced(20_000),
    );
    assert_eq!(r.report.sent, frames.len(), "every frame sent");
    assert_eq!(r.output.stats.counter("events_lost"), 0);
    // The run spans at least one sketch epoch: the workers took the kernel's
    // gateway view into their features.
    let epochs: u64 = r
        .output
        .stderr
        .split("kernel sketch epochs used ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no scoring summary in stderr:\n{}", r.output.stderr));
    assert!(epochs >= 1, "no gateway view reached the workers");

    let text = std::fs::read_to_string(&eve).expect("EVE file written");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("EVE line is JSON"))
        .collect();
    let opened: Vec<&serde_json::Value> = records
        .iter()
        .filter(|v| v["event_type"] == "alert" && v["xdp_sensor"]["state"] == "open")
        .collect();
    let has = |class: &str, attacker: &str, victim: &str| {
        opened.iter().any(|v| {
            let x = &v["xdp_sensor"];
            x["class"] == class && x["attacker"] == attacker && x["victim"] == victim
        })
    };
    let summary: Vec<String> = opened
        .iter()
        .map(|v| {
            let x = &v["xdp_sensor"];
            format!("{} {} -> {}", x["class"], x["attacker"], x["victim"])
        })
        .collect();
    assert!(
        has("scan", &scanner.to_string(), "many")
            || has("scan", &scanner.to_string(), &scan_victim.to_string()),
        "no scan alert from {scanner}: {summary:?}"
    );
    assert!(
        has("flood", "many", &flood_victim.to_string()),
        "no flood alert on {flood_victim}: {summary:?}"
    );
    // Every alert closes when the sensor stops, with a closing record.
    let closed = records
        .iter()
        .filter(|v| v["event_type"] == "alert_closed")
        .count();
    assert_eq!(closed, opened.len(), "each opened alert is closed at exit");
}
