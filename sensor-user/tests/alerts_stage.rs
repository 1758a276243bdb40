//! The alert stage on synthetic scored rows: dedup, correlation, closing,
//! enrichment, schema, caps, and the threaded stage with live feedback.

mod alerts_util;

use std::{net::IpAddr, path::Path, time::Duration};

use alerts_util::*;
use sensor::{
    alerts::{
        AlertSettings, AlertStage, Inventory, SensorFile, Verdict, VerdictRecord,
        spawn_alert_stage, store::LogWriter,
    },
    model::row::{
        AttackClass::{self, Anomaly, Benign, BruteForce, Flood, Scan},
        Entity, ScoredRow,
    },
    sinks::{MemorySink, SinkSet},
};

const VICTIM: &str = "10.1.2.3";

fn spoofed(i: u32) -> IpAddr {
    // Spread over the whole space, as a spoofing flooder does.
    IpAddr::V4(std::net::Ipv4Addr::from(
        0x2000_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761)),
    ))
}

/// A detection scored 0.99 for `class`, from spoofed source `i` to port 80.
fn spoofed_row(class: AttackClass, i: u32, dst: impl Addr, ts: u64) -> ScoredRow {
    row(class, 0.99, spoofed(i), dst, 80, ts)
}

/// `n` single scan detections toward [`VICTIM`] from as many spoofed
/// sources, `step` ns apart from one second on.
fn feed_scan_probes(stage: &mut AlertStage, n: u32, step: u64) {
    for i in 0..n {
        stage.process(&spoofed_row(Scan, i, VICTIM, SEC + u64::from(i) * step));
    }
}

#[test]
fn spoofed_syn_flood_is_one_incident_with_one_alert() {
    let (mut stage, mem) = stage();
    let victim = ip(VICTIM);
    for i in 0..100_000u32 {
        let mut r = spoofed_row(Flood, i % 30_000, victim, SEC + u64::from(i) * 10_000);
        r.packets_per_s = 50_000.0 + (i % 1000) as f32;
        stage.process(&r);
    }
    let open = stage.open_alerts();
    assert_eq!(open.len(), 1, "{open:?}");
    let a = &open[0];
    assert_eq!(a.class, Flood);
    assert_eq!(a.count, 100_000);
    assert_eq!(a.victim, Some(victim));
    assert_eq!(a.attacker, None);
    assert_eq!(a.peak_pps, 50_999.0);
    let distinct = a.distinct_peers.unwrap() as f64;
    assert!(
        (distinct - 30_000.0).abs() < 3_000.0,
        "distinct sources {distinct}"
    );
    assert_eq!(stage.open_incident_count(), 1);
    let m = stage.metrics();
    assert_eq!(
        (m.alerts_opened, m.incidents_opened, m.rows_in),
        (1, 1, 100_000)
    );
    // Counted once by class and EVE severity (1, as the record says), with
    // its event->alert latency.
    let f = stage.figures();
    assert_eq!(f.opened[Flood as usize], [1, 0, 0]);
    assert_eq!(f.opened.iter().flatten().sum::<u64>(), 1);
    assert_eq!(f.alert_latency.count(), 1);

    let recs = parse(&mem.take());
    let alerts = of_type(&recs, "alert");
    assert_eq!(
        alerts.len(),
        1,
        "one open record, no update within a second"
    );
    let x = &alerts[0]["xdp_sensor"];
    assert_eq!(x["state"], "open");
    assert_eq!(x["attacker"], "many");
    assert_eq!(x["victim"], VICTIM);
    // The spoofed first source is not named as the attacker's endpoint.
    assert_eq!(alerts[0]["dest_ip"], VICTIM);
    assert_eq!(alerts[0]["dest_port"], 80);
    for absent in ["src_ip", "src_port", "flow_id", "community_id"] {
        assert!(alerts[0].get(absent).is_none(), "{absent}: {}", alerts[0]);
    }
    assert_eq!(alerts[0]["alert"]["severity"], 1);
    assert_eq!(alerts[0]["proto"], "TCP");
    assert_eq!(alerts[0]["timestamp"], "2026-11-22T04:10:01.000000+0000");
    assert_eq!(of_type(&recs, "incident").len(), 1);

    // No row for a while: the due update carries the final count …
    stage.tick(80 * SEC);
    let updates = take_of_type(&mem, "alert");
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["xdp_sensor"]["state"], "update");
    assert_eq!(updates[0]["xdp_sensor"]["count"], 100_000);
    // … then nothing until new rows arrive and the update interval passes.
    stage.tick(100 * SEC);
    assert!(mem.take().is_empty());
    for i in 0..10u32 {
        stage.process(&spoofed_row(Flood, i, victim, 110 * SEC + u64::from(i)));
    }
    stage.tick(139 * SEC);
    assert!(mem.take().is_empty(), "update interval not yet passed");
    stage.tick(141 * SEC);
    let updates = take_of_type(&mem, "alert");
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["xdp_sensor"]["count"], 100_010);
    // 30 000 sources of about 3 rows each: none stands above the heavy-
    // hitter list's error bound, so none is listed (their counters hold
    // tens of thousands of rows on paper only).
    assert_eq!(array_len(&updates[0]["xdp_sensor"]["sources"]["top"]), 0);
    assert!(updates[0].get("src_ip").is_none());
}

#[test]
fn flood_lists_only_its_heavy_source_with_the_error_bound() {
    let (mut stage, mem) = stage();
    let heavy = ip("198.51.100.9");
    let mut t = SEC;
    let mut send = |stage: &mut sensor::alerts::AlertStage, src| {
        t += 10_000;
        stage.process(&row(AttackClass::Flood, 0.99, src, ip(VICTIM), 80, t));
    };
    for i in 0..60_000u32 {
        send(&mut stage, spoofed(i));
        if i % 3 == 0 {
            send(&mut stage, heavy);
        }
    }
    stage.shutdown();
    let recs = parse(&mem.take());
    let closed = of_type(&recs, "alert_closed");
    assert_eq!(closed.len(), 1);
    let top = closed[0]["xdp_sensor"]["sources"]["top"]
        .as_array()
        .unwrap();
    assert_eq!(top.len(), 1, "{top:?}");
    assert_eq!(top[0]["ip"], heavy.to_string());
    let (count, error) = (
        top[0]["count"].as_u64().unwrap(),
        top[0]["error"].as_u64().unwrap(),
    );
    assert!(count - error <= 20_000 && 20_000 <= count, "{top:?}");
    assert!(closed[0].get("src_ip").is_none());
}

#[test]
fn alerts_name_only_the_endpoints_their_key_names() {
    let (mut stage, mem) = stage();
    for i in 0..40u32 {
        let t = SEC + u64::from(i) * SEC / 10;
        // A scan: the scanner is named, its targets are not.
        let mut sc = row(
            AttackClass::Scan,
            0.95,
            ip("203.0.113.5"),
            ip(&format!("10.9.0.{}", i + 1)),
            22,
            t,
        );
        sc.entity = Entity::SrcHost;
        stage.process(&sc);
        // Brute force on one flow: both ends named, with the flow's ids.
        stage.process(&row(
            AttackClass::BruteForce,
            0.95,
            ip("128.232.110.120"),
            ip("66.35.250.204"),
            80,
            t,
        ));
    }
    let recs = parse(&mem.take());
    let alerts = of_type(&recs, "alert");
    let by_class = |c: &str| {
        *alerts
            .iter()
            .find(|a| a["xdp_sensor"]["class"] == c)
            .unwrap_or_else(|| panic!("no {c} alert in {alerts:?}"))
    };
    let scan = by_class("scan");
    assert_eq!(scan["src_ip"], "203.0.113.5");
    assert_eq!(scan["xdp_sensor"]["victim"], "many");
    for absent in ["dest_ip", "dest_port", "flow_id", "community_id"] {
        assert!(scan.get(absent).is_none(), "{absent}: {scan}");
    }
    let bf = by_class("bruteforce");
    assert_eq!(bf["src_ip"], "128.232.110.120");
    assert_eq!(bf["src_port"], 40_000);
    assert_eq!(bf["dest_ip"], "66.35.250.204");
    assert!(bf["flow_id"].as_u64().is_some_and(|f| f > 0));
    // The specification's algorithm on 128.232.110.120:40000 -> :80/TCP,
    // the same hash the flow record of that connection carries.
    assert_eq!(
        bf["community_id"],
        sensor_common::records::community_id(
            ip("128.232.110.120"),
            ip("66.35.250.204"),
            40_000,
            80,
            6
        )
        .unwrap()
    );
}

#[test]
fn two_attackers_on_one_victim_are_one_incident_two_alerts() {
    let (mut stage, mem) = stage();
    for t in (0..50u64).map(|i| SEC + i * SEC / 10) {
        stage.process(&row(BruteForce, 0.95, "198.51.100.7", VICTIM, 22, t));
        stage.process(&row(BruteForce, 0.96, "203.0.113.9", VICTIM, 22, t + 1));
    }
    let open = stage.open_alerts();
    assert_eq!(open.len(), 2);
    assert!(open.iter().all(|a| a.count == 50));
    assert_eq!(open[0].incident_id, open[1].incident_id);
    assert_eq!(stage.open_incident_count(), 1);
    let inc = take_of_type(&mem, "incident");
    assert_eq!(
        inc.len(),
        2,
        "open, then update when the second alert joins"
    );
    assert_eq!(inc[1]["xdp_sensor"]["incident"]["alert_count"], 2);
    assert_eq!(array_len(&inc[1]["xdp_sensor"]["incident"]["attackers"]), 2);
}

#[test]
fn scan_then_brute_force_from_one_source_is_one_incident() {
    let (mut stage, mem) = stage();
    let attacker = ip("198.51.100.7");
    // Host sweep: one row per target, from the source host's view.
    for i in 0..200u32 {
        let target = format!("10.1.{}.{}", i / 250, i % 250 + 1);
        let t = SEC + u64::from(i) * 1_000_000;
        let mut r = row(Scan, 0.97, attacker, &*target, 22, t);
        r.entity = Entity::SrcHost;
        stage.process(&r);
    }
    // Thirty seconds later it hammers the one SSH server it found.
    for i in 0..100u64 {
        let t = 31 * SEC + i * SEC / 10;
        stage.process(&row(BruteForce, 0.93, attacker, "10.1.0.20", 22, t));
    }
    let open = stage.open_alerts();
    assert_eq!(open.len(), 2);
    let scan = open.iter().find(|a| a.class == Scan).unwrap();
    let bf = open.iter().find(|a| a.class == BruteForce).unwrap();
    assert_eq!(scan.count, 200);
    // HyperLogLog estimate: a few percent.
    let targets = scan.distinct_peers.unwrap();
    assert!((190..=210).contains(&targets), "{targets}");
    assert_eq!(bf.count, 100);
    assert_eq!(scan.incident_id, bf.incident_id);
    assert_eq!(stage.open_incident_count(), 1);
    let scan_rec = take_of_type(&mem, "alert")
        .into_iter()
        .find(|r| r["xdp_sensor"]["class"] == "scan")
        .unwrap();
    assert_eq!(scan_rec["xdp_sensor"]["victim"], "many");
    assert_eq!(scan_rec["xdp_sensor"]["entity"], "src_host");
}

#[test]
fn unrelated_attacks_are_separate_incidents_and_subnets_correlate() {
    let (mut stage, _mem) = stage();
    stage.process(&row(BruteForce, 0.95, "198.51.100.7", "10.1.2.3", 22, SEC));
    stage.process(&row(BruteForce, 0.95, "192.0.2.50", "172.16.9.9", 22, SEC));
    assert_eq!(stage.open_incident_count(), 2);
    // Same /24 as the first attacker: joins its incident.
    let neighbour = "198.51.100.99";
    stage.process(&row(BruteForce, 0.95, neighbour, "10.9.9.9", 3389, SEC));
    assert_eq!(stage.open_incident_count(), 2);
    // IPv6 /64.
    let (v6a, v6b) = ("2001:db8:1:2::5", "2001:db8:1:2::77");
    stage.process(&row(Scan, 0.95, v6a, "2001:db8:ffff::1", 22, SEC));
    stage.process(&row(BruteForce, 0.95, v6b, "2001:db8:eeee::1", 22, SEC));
    assert_eq!(stage.open_incident_count(), 3);
    assert_eq!(stage.open_alerts().len(), 5);
}

#[test]
fn quiet_period_closes_alert_then_incident() {
    let (mut stage, mem) = stage_tuned(|s| {
        s.alerts.quiet_period_s = 30.0;
        s.alerts.incident_window_s = 120.0;
    });
    for t in (10..30u64).map(|s| s * SEC) {
        stage.process(&row(BruteForce, 0.95, "198.51.100.7", VICTIM, 22, t));
    }
    // Last row at 29 s: still open at 58 s, closed at 59 s.
    stage.tick(58 * SEC);
    assert!(of_type(&parse(&mem.lines()), "alert_closed").is_empty());
    stage.tick(59 * SEC);
    let closed = take_of_type(&mem, "alert_closed");
    assert_eq!(closed.len(), 1);
    let x = &closed[0]["xdp_sensor"];
    assert_eq!(
        (x["state"].as_str(), x["count"].as_u64()),
        (Some("closed"), Some(20))
    );
    assert_eq!(x["close_reason"], "quiet");
    assert_eq!(x["first_seen"], "2026-11-22T04:10:10.000000+0000");
    assert_eq!(x["last_seen"], "2026-11-22T04:10:29.000000+0000");
    assert_eq!(x["duration_s"], 19.0);
    assert_eq!(stage.open_alerts().len(), 0);
    assert_eq!(
        stage.open_incident_count(),
        1,
        "incident outlives its alert by the window"
    );
    stage.tick(29 * SEC + 120 * SEC);
    let inc = take_of_type(&mem, "incident");
    assert_eq!(inc.len(), 1);
    assert_eq!(inc[0]["xdp_sensor"]["incident"]["state"], "closed");
    assert_eq!(stage.open_incident_count(), 0);
    // A detection after closing opens a new alert and a new incident.
    let t = 200 * SEC;
    stage.process(&row(BruteForce, 0.95, "198.51.100.7", "10.1.2.3", 22, t));
    let m = stage.metrics();
    assert_eq!(
        (
            m.alerts_opened,
            m.alerts_closed,
            m.incidents_opened,
            m.incidents_closed
        ),
        (2, 1, 2, 1)
    );
}

#[test]
fn rows_below_threshold_are_counted_not_alerted_and_anomaly_uses_autoencoder() {
    let (mut stage, mem) = stage();
    stage.process(&row(Scan, 0.5, "198.51.100.7", "10.1.2.3", 22, SEC));
    assert_eq!(stage.metrics().rows_below_threshold, 1);
    assert!(mem.take().is_empty());
    // The default settings have no autoencoder threshold: anomalies stay off.
    let mut r = row(Benign, 0.0, "198.51.100.7", "10.1.2.3", 443, SEC);
    r.class_probs[0] = 1.0;
    r.anomaly_score = 5.0;
    stage.process(&r);
    assert_eq!(stage.metrics().rows_below_threshold, 2);
    let (mut stage, mem) = stage_tuned(|s| s.thresholds.by_class[Anomaly as usize] = 1.0);
    stage.process(&r);
    let a = take_of_type(&mem, "alert");
    assert_eq!(a[0]["xdp_sensor"]["class"], "anomaly");
    assert_eq!(a[0]["xdp_sensor"]["raw_score"], 5.0);
    assert_eq!(a[0]["xdp_sensor"]["score"], 0.9);
    assert_eq!(a[0]["alert"]["signature_id"], 9_100_004);
}

/// A benign-scored row closing an upload-heavy connection that started at
/// `start` (event time 20 ms later).
fn upload_row(src: &str, dst: &str, start: u64) -> ScoredRow {
    let mut r = row(Benign, 0.0, ip(src), ip(dst), 80, start + 20_000_000);
    r.class_probs[0] = 1.0;
    r.facts.closed = Some(sensor::features::ClosedConn {
        start_ns: start,
        bytes_out: 3700,
        bytes_in: 600,
        client_is_src: true,
    });
    r
}

#[test]
fn regular_uploads_to_one_server_open_one_anomaly_alert() {
    let (mut stage, mem) = stage();
    let need = u64::from(settings().alerts.beacon_connections);
    // One connection a second with a few ms of jitter: silent until the
    // `need`-th, then one alert that later connections update.
    for i in 0..need + 4 {
        let jitter = (i * 7 % 5) * 3_000_000;
        let t = SEC + i * SEC + jitter;
        stage.process(&upload_row("10.10.0.66", "10.20.0.200", t));
        let opened = stage.metrics().alerts_opened;
        assert_eq!(
            opened,
            u64::from(i + 1 >= need),
            "after {} connections",
            i + 1
        );
    }
    let m = stage.metrics();
    assert_eq!(m.upload_connections, need + 4);
    assert_eq!(m.beacon_detections, 5);
    assert_eq!(m.rows_below_threshold, need + 4);
    let a = take_of_type(&mem, "alert");
    assert_eq!(a.len(), 1);
    let x = &a[0]["xdp_sensor"];
    assert_eq!(x["class"], "anomaly");
    assert_eq!(x["detector"], "beacon");
    assert_eq!(x["attacker"], "10.10.0.66");
    assert_eq!(x["victim"], "10.20.0.200");
    assert_eq!(x["threshold"], 0.05);
    assert!(x["raw_score"].as_f64().unwrap() < 0.02, "{x}");
    assert_eq!(a[0]["alert"]["signature_id"], 9_100_004);
}

#[test]
fn irregular_or_spread_uploads_open_nothing() {
    let (mut stage, mem) = stage();
    // A person's files differ in size: the check-in shape (the same
    // exchange every time) never fits them.
    let sized = |src: &str, t: u64, i: u64| {
        let mut r = upload_row(src, "10.20.0.2", t);
        if let Some(c) = r.facts.closed.as_mut() {
            c.bytes_out = 3_000 + (i * 7_919) % 40_000;
        }
        r
    };
    // Uploads at irregular times (a person sending files) ...
    let mut t = SEC;
    for i in 0..40u64 {
        t += SEC * (1 + (i * i * 7919) % 23);
        stage.process(&sized("10.10.0.11", t, i));
    }
    // ... or at random (exponential gaps, 10 s on average) ...
    let (mut t, mut x) = (SEC, 0x2545_f491_4f6c_dd1du64);
    for i in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        t += (-(1.0 - u).ln() * 10.0 * SEC as f64) as u64;
        stage.process(&sized("10.10.0.14", t, i));
    }
    // ... and regular ones spread over many servers (one each).
    for i in 0..40u64 {
        let dst = format!("10.20.1.{}", i + 1);
        stage.process(&upload_row("10.10.0.12", &dst, SEC + i * SEC));
    }
    // Regular, but old connections expire: two per hour never add up.
    for i in 0..20u64 {
        stage.process(&upload_row("10.10.0.13", "10.20.0.2", SEC + i * 1800 * SEC));
    }
    assert_eq!(stage.metrics().beacon_detections, 0);
    assert_eq!(stage.metrics().alerts_opened, 0);
    assert!(mem.take().is_empty());
    // The rule can be turned off.
    let (mut stage, _mem) = stage_tuned(|s| s.alerts.beacon_connections = 0);
    for i in 0..20u64 {
        stage.process(&upload_row("10.10.0.66", "10.20.0.200", SEC + i * SEC));
    }
    assert_eq!(stage.metrics().alerts_opened, 0);
}

/// Asset inventory: the payments database inside the corporate /8.
const INVENTORY: &str = include_str!("alerts_util/inventory.toml");

#[test]
fn enrichment_from_inventory_and_unknown_addresses() {
    let inv = Inventory::parse(Path::new("inv.toml"), INVENTORY).unwrap();
    let (mut stage, mem) = stage_with(settings(), inv);
    stage.process(&row(BruteForce, 0.95, "198.51.100.7", "10.1.2.3", 22, SEC));
    stage.process(&row(BruteForce, 0.95, "198.51.100.8", "10.7.7.7", 22, SEC));
    let a = take_of_type(&mem, "alert");
    let db = &a[0]["xdp_sensor"];
    assert_eq!(db["victim_asset"]["name"], "payments-db");
    assert_eq!(db["victim_asset"]["owner"], "dba-team");
    assert_eq!(
        db["victim_asset"]["tags"],
        serde_json::json!(["pci", "prod"])
    );
    assert_eq!(db["attacker_asset"]["name"], "unknown");
    assert_eq!(db["attacker_asset"]["owner"], "unknown");
    assert_eq!(db["attacker_asset"]["criticality"], 2);
    assert_eq!(db["sensor"], "gw-test");
    assert_eq!(a[0]["in_iface"], "veth-test");
    assert_eq!(db["models"]["classifier"], "clf-test-1");
    // Criticality raises severity: same detection on a corp box ranks lower.
    assert!(db["severity"].as_u64().unwrap() > a[1]["xdp_sensor"]["severity"].as_u64().unwrap());
}

#[test]
fn bad_inventory_file_is_rejected_with_path_and_line() {
    let d = tmpdir("inv");
    let p = d.join("inventory.toml");
    std::fs::write(&p, "[[asset]]\nsubnet = \"10.0.0.0/8\"\nname = \"ok\"\n\n[[asset]]\nsubnet = \"10.0.0.300/24\"\nname = \"bad\"\n").unwrap();
    let e = Inventory::load(&p).unwrap_err().to_string();
    assert!(e.contains(&format!("{}:6", p.display())), "{e}");
    assert!(e.contains("10.0.0.300/24"), "{e}");
    std::fs::write(
        &p,
        "[[asset]]\nsubnet = \"10.0.0.0/8\"\nname = \"ok\"\ncolour = \"red\"\n",
    )
    .unwrap();
    let e = Inventory::load(&p).unwrap_err().to_string();
    assert!(
        e.contains(&format!("{}:4", p.display())) && e.contains("colour"),
        "{e}"
    );
    std::fs::write(&p, "[[asset]\n").unwrap();
    let e = Inventory::load(&p).unwrap_err().to_string();
    assert!(e.contains(&format!("{}:1", p.display())), "{e}");
}

#[test]
fn state_is_capped_and_evictions_counted() {
    let (mut stage, mem) = stage_tuned(|s| {
        s.alerts.max_open_alerts = 10;
        s.alerts.max_incidents = 4;
    });
    for i in 0..50u32 {
        let src = IpAddr::V4(std::net::Ipv4Addr::from(0xc633_6400 + i * 256));
        let dst = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i * 256));
        let t = SEC + u64::from(i) * 1000;
        stage.process(&row(BruteForce, 0.95, src, dst, 22, t));
    }
    let m = stage.metrics();
    assert_eq!(m.open_alerts, 10);
    assert_eq!(m.alerts_evicted, 40);
    assert_eq!(m.alerts_opened, 50);
    assert!(m.open_incidents <= 4);
    assert_eq!(m.incidents_evicted, 46);
    let evicted = take_of_type(&mem, "alert_closed");
    assert_eq!(evicted.len(), 40);
    assert!(
        evicted
            .iter()
            .all(|r| r["xdp_sensor"]["close_reason"] == "evicted")
    );
}

#[test]
fn output_validates_against_json_schema() {
    let schema_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/eve-alert.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap()).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();

    // Every kind of record: flood (aggregated sources), scan (aggregated
    // targets), pair alerts, anomaly, IPv6, ICMP, updates, closing, incidents,
    // a verdict, enrichment and top features from a model card baseline.
    let mut s = settings();
    s.alerts.quiet_period_s = 20.0;
    s.alerts.update_interval_s = 5.0;
    s.alerts.incident_window_s = 30.0;
    s.thresholds.by_class[Anomaly as usize] = 1.0;
    let card = sensor::model::ModelCard::from_json(&serde_json::json!({
        "version": "1", "features": ["f0","f1","f2","f3","f4","f5","f6","f7"],
        "baseline": {"f3": {"p25": 0.0, "p50": 0.5, "p75": 1.0}, "f7": {"mean": 1.0, "std": 0.5}}
    }))
    .unwrap();
    s.classifier = Some(card);
    let inv = Inventory::parse(Path::new("inv.toml"), INVENTORY).unwrap();
    let (mut stage, mem) = stage_with(s, inv);
    for i in 0..100u32 {
        let t = SEC + u64::from(i) * SEC / 10;
        stage.process(&row(Flood, 0.99, spoofed(i), ip(VICTIM), 80, t));
        let target = format!("10.1.3.{}", i + 1);
        let mut sc = row(Scan, 0.9, "198.51.100.7", &*target, 22, t);
        sc.entity = Entity::SrcHost;
        stage.process(&sc);
        let mut icmp = row(BruteForce, 0.92, "2001:db8::66", "2001:db8:1::2", 0, t);
        icmp.proto = 58;
        stage.process(&icmp);
        let mut an = row(Benign, 0.0, "192.0.2.1", "10.1.2.9", 443, t);
        an.class_probs[0] = 1.0;
        an.anomaly_score = 3.0;
        an.proto = 17;
        stage.process(&an);
    }
    let id = stage.open_alerts()[0].alert_id.clone();
    stage.apply_verdict(&VerdictRecord {
        alert_id: id,
        verdict: Verdict::Tp,
        note: None,
        unix_ms: 0,
        user: None,
    });
    stage.tick(100 * SEC);
    let t = 101 * SEC;
    stage.process(&row(Scan, 0.99, "198.51.100.200", "10.1.2.3", 22, t));
    stage.shutdown();
    let lines = mem.take();
    let recs = parse(&lines);
    for t in ["alert", "alert_closed", "incident"] {
        assert!(!of_type(&recs, t).is_empty(), "no {t} record to validate");
    }
    assert!(recs.iter().any(|r| r["xdp_sensor"]["state"] == "update"));
    assert!(recs.iter().any(|r| r["xdp_sensor"]["verdict"] == "tp"));
    assert!(
        recs.iter()
            .any(|r| r["xdp_sensor"]["close_reason"] == "shutdown")
    );
    let tf = recs
        .iter()
        .find(|r| {
            r["xdp_sensor"]["top_features"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
        .expect("top features reported");
    assert_eq!(array_len(&tf["xdp_sensor"]["top_features"]), 2);
    for (line, rec) in lines.iter().zip(&recs) {
        let errors: Vec<String> = validator
            .iter_errors(rec)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{line}\n{errors:#?}");
    }
    // The schema is not vacuous: broken records fail.
    let mut bad = recs[0].clone();
    bad["timestamp"] = "2026-11-22 04:10:00".into();
    assert!(!validator.is_valid(&bad));
    let mut bad = recs[0].clone();
    bad["xdp_sensor"]["class"] = "dos".into();
    assert!(!validator.is_valid(&bad));
}

#[test]
fn threaded_stage_applies_verdicts_and_reloads_thresholds_without_restart() {
    let d = tmpdir("threaded");
    let cfg = d.join("sensor.toml");
    std::fs::write(
        &cfg,
        "[sensor]\nname = \"gw-live\"\n\n[alerts]\ncorroborate_rows = 1\nfeedback_poll_ms = 20\nverdict_store = \"verdicts.jsonl\"\nalert_log = \"alerts.jsonl\"\n\n[thresholds]\nbruteforce = 0.8\n",
    )
    .unwrap();
    let settings = AlertSettings::load(&cfg).unwrap();
    assert_eq!(settings.thresholds.get(BruteForce), 0.8);
    let mem = MemorySink::new();
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let handle = spawn_alert_stage(
        rx,
        settings,
        Inventory::default(),
        SinkSet::new().with(mem.clone()),
        None,
        None,
    )
    .unwrap();
    let now = sensor_common::clock::monotonic_ns();
    let shed = handle.shed_counter();
    assert!(sensor::alerts::offer_row(
        &tx,
        row(BruteForce, 0.85, "198.51.100.7", "10.1.2.3", 22, now),
        &shed
    ));
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        for _ in 0..1000 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out waiting for {what}");
    };
    wait_for("the open record", &|| !mem.lines().is_empty());
    let id = parse(&mem.lines())[0]["xdp_sensor"]["alert_id"]
        .as_str()
        .unwrap()
        .to_string();
    // An analyst marks it a false positive from another process.
    LogWriter::open(&d.join("verdicts.jsonl"))
        .unwrap()
        .append(
            &VerdictRecord {
                alert_id: id,
                verdict: Verdict::Fp,
                note: None,
                unix_ms: 1,
                user: None,
            },
            true,
        )
        .unwrap();
    wait_for("the verdict", &|| handle.metrics().verdicts_applied == 1);
    // Tuning rewrote the config: 0.85 no longer alerts.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        &cfg,
        "[sensor]\nname = \"gw-live\"\n\n[alerts]\ncorroborate_rows = 1\nfeedback_poll_ms = 20\nverdict_store = \"verdicts.jsonl\"\nalert_log = \"alerts.jsonl\"\n\n[thresholds]\nbruteforce = 0.9\n",
    )
    .unwrap();
    wait_for("the threshold reload", &|| {
        handle.metrics().threshold_reloads == 1
    });
    let late = row(BruteForce, 0.85, "198.51.100.8", "10.1.2.4", 22, now + 1);
    tx.send(vec![late]).unwrap();
    drop(tx);
    let m = handle.join();
    assert_eq!(m.rows_in, 2);
    assert_eq!(m.rows_below_threshold, 1);
    assert_eq!(m.alerts_opened, 1);
    assert_eq!(m.alerts_closed, 1);
    let closed = take_of_type(&mem, "alert_closed");
    assert_eq!(closed[0]["xdp_sensor"]["verdict"], "fp");
    assert_eq!(closed[0]["host"], "gw-live");
    // The alert record log has the open and close records for tuning.
    let (log, _) =
        sensor::alerts::store::read_all::<sensor::alerts::AlertRecord>(&d.join("alerts.jsonl"))
            .unwrap();
    assert_eq!(
        log.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
        ["open", "close"]
    );
    assert_eq!(log[0].feature_names.len(), 8);
    let _ = SensorFile::load(&cfg).unwrap();
}

fn repo_file(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn documented_examples_match_the_schema_and_example_configs_load() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("schemas/eve-alert.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let doc = std::fs::read_to_string(repo_file("docs/alerts.md")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```json\n")
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 4);
    for b in blocks {
        let v: serde_json::Value = serde_json::from_str(b).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{b}\n{errors:#?}");
    }
    let file = SensorFile::load(&repo_file("config/sensor.example.toml")).unwrap();
    assert_eq!(file.sinks.len(), 2);
    assert_eq!(file.sensor.name, "gw-01");
    let inv = Inventory::load(file.alerts.inventory.as_ref().unwrap()).unwrap();
    assert_eq!(&*inv.lookup(ip("10.20.5.17")).name, "payments-db");
    assert_eq!(&*inv.lookup(ip("10.20.9.1")).name, "datacenter");
    // Loaded whole, as `sensor run --config` does: its model cards exist.
    let settings = AlertSettings::load(&repo_file("config/sensor.example.toml")).unwrap();
    assert_eq!(
        settings.classifier.as_ref().map(|c| c.name.as_str()),
        Some("flow-classifier")
    );
    assert!(settings.autoencoder.is_some());
}

#[test]
fn stage_started_from_config_writes_rotated_eve_file() {
    let d = tmpdir("fromcfg");
    std::fs::write(d.join("inventory.toml"), INVENTORY).unwrap();
    std::fs::write(
        d.join("sensor.toml"),
        "[sensor]\nname = \"gw-file\"\ninterface = \"eth9\"\n\n[alerts]\ncorroborate_rows = 1\ninventory = \"inventory.toml\"\nverdict_store = \"v.jsonl\"\nalert_log = \"a.jsonl\"\n\n[[sinks]]\nkind = \"file\"\npath = \"log/eve.json\"\nmax_bytes = 4096\nkeep = 3\n",
    )
    .unwrap();
    let (tx, rx) = crossbeam_channel::bounded(16);
    let handle =
        sensor::run::scoring::spawn_alerts_from_config(rx, &d.join("sensor.toml")).unwrap();
    let now = sensor_common::clock::monotonic_ns();
    for i in 0..20u32 {
        let attacker = IpAddr::V4(std::net::Ipv4Addr::from(0xc633_6400 + i * 256));
        let r = row(BruteForce, 0.95, attacker, VICTIM, 22, now + u64::from(i));
        tx.send(vec![r]).unwrap();
    }
    drop(tx);
    let m = handle.join();
    assert_eq!((m.alerts_opened, m.alerts_closed), (20, 20));
    // 20 open + 20 closed + incident records, ~1.5 KiB each: rotated, 3 kept.
    let mut recs = Vec::new();
    for f in ["log/eve.json", "log/eve.json.1", "log/eve.json.2"] {
        let text = std::fs::read_to_string(d.join(f)).unwrap();
        assert!(text.len() <= 4096, "{f} is {} bytes", text.len());
        recs.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
    }
    assert!(!d.join("log/eve.json.3").exists());
    assert!(recs.iter().all(|r| r["host"] == "gw-file"));
    let closed = of_type(&recs, "alert_closed");
    assert!(!closed.is_empty());
    assert_eq!(
        closed[0]["xdp_sensor"]["victim_asset"]["name"],
        "payments-db"
    );
    assert_eq!(closed[0]["in_iface"], "eth9");
}

#[test]
fn correlation_index_is_bounded_per_incident() {
    let (mut stage, _mem) = stage();
    // One attacker brute-forcing 1000 servers in 1000 subnets: one incident
    // through the shared attacker, but only 256 keys indexed for it.
    for i in 0..1000u32 {
        let victim = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0001 + i * 256));
        let t = SEC + u64::from(i);
        stage.process(&row(BruteForce, 0.95, "198.51.100.7", victim, 22, t));
    }
    assert_eq!(stage.open_incident_count(), 1);
    assert_eq!(stage.open_alerts().len(), 1000);
    let m = stage.metrics();
    // Alert 1 indexes 4 keys, each later one 2 new (victim and its /24).
    assert_eq!(m.correlation_keys_dropped, 1000 - 127);
}

/// The victim of the SYN-flood correlation tests.
const FLOODED: &str = "10.99.0.2";

/// One single-row scan detection per spoofed source, as a flood with
/// random sources produces from the source-host view.
fn spoofed_scans(stage: &mut AlertStage, t0: u64) {
    for i in 0..15u32 {
        let t = t0 + u64::from(i) * 1_000_000;
        let mut r = row(Scan, 0.97, spoofed(1_000_000 + i), FLOODED, 80, t);
        r.entity = Entity::SrcHost;
        stage.process(&r);
    }
}

fn flood_rows(stage: &mut AlertStage, t0: u64) {
    for i in 0..10_000u32 {
        let mut r = spoofed_row(Flood, i, FLOODED, t0 + u64::from(i) * 100_000);
        r.entity = Entity::DstHost;
        r.packets_per_s = 20_000.0;
        stage.process(&r);
    }
}

/// One incident holding the flood alert and every scan alert that hit its
/// victim, checked on the live state and on the emitted records.
fn assert_one_flood_incident(stage: &mut AlertStage, mem: &MemorySink) {
    let open = stage.open_alerts();
    assert_eq!(open.len(), 16, "{open:?}");
    let flood: Vec<_> = open.iter().filter(|a| a.class == Flood).collect();
    assert_eq!(flood.len(), 1);
    assert_eq!(flood[0].count, 10_000);
    assert_eq!(flood[0].victim, Some(ip(FLOODED)));
    assert_eq!(open.iter().filter(|a| a.class == Scan).count(), 15);
    assert!(
        open.iter().all(|a| a.incident_id == open[0].incident_id),
        "{open:?}"
    );
    assert_eq!(stage.open_incident_count(), 1);
    assert_eq!(stage.metrics().incidents_opened, 1);
    stage.shutdown();
    let recs = parse(&mem.take());
    let incidents = of_type(&recs, "incident");
    let last = &incidents.last().unwrap()["xdp_sensor"]["incident"];
    assert_eq!(last["state"], "closed");
    assert_eq!(last["alert_count"], 16);
    assert_eq!(last["victims"], serde_json::json!([FLOODED]));
    assert_eq!(array_len(&last["classes"]), 2);
    let ids: std::collections::BTreeSet<_> = recs
        .iter()
        .filter_map(|r| {
            r["xdp_sensor"]["incident_id"]
                .as_str()
                .or(r["xdp_sensor"]["incident"]["incident_id"].as_str())
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// Feeds `first` from one second on and checks it is one incident, then
/// `then` from `then_at` on: still that one incident.
fn first_then_one_incident(
    first: fn(&mut AlertStage, u64),
    then: fn(&mut AlertStage, u64),
    then_at: u64,
) {
    let (mut stage, mem) = stage();
    first(&mut stage, SEC);
    assert_eq!(stage.open_incident_count(), 1);
    then(&mut stage, then_at);
    assert_one_flood_incident(&mut stage, &mem);
}

/// The scans share no attacker, but they hit one host: one incident.
#[test]
fn scans_from_spoofed_sources_then_flood_on_their_target_are_one_incident() {
    first_then_one_incident(spoofed_scans, flood_rows, 2 * SEC);
}

#[test]
fn flood_then_scans_on_its_victim_are_one_incident() {
    first_then_one_incident(flood_rows, spoofed_scans, 2 * SEC + 500_000_000);
}

#[test]
fn scans_of_different_subnets_stay_separate_and_targets_correlate() {
    /// A scan detection seen from the source host.
    fn scan(stage: &mut AlertStage, src: impl Addr, dst: impl Addr, t: u64) {
        let mut r = row(Scan, 0.95, src, dst, 22, t);
        r.entity = Entity::SrcHost;
        stage.process(&r);
    }
    let (mut stage, _mem) = stage();
    for i in 0..50u64 {
        scan(
            &mut stage,
            "198.51.100.7",
            &*format!("10.1.1.{}", i + 1),
            SEC + i,
        );
        scan(
            &mut stage,
            "203.0.113.9",
            &*format!("10.2.2.{}", i + 1),
            SEC + i,
        );
    }
    scan(&mut stage, "192.0.2.77", "172.16.5.5", SEC + 100);
    let open = stage.open_alerts();
    assert_eq!(open.len(), 3);
    assert_eq!(stage.open_incident_count(), 3, "{open:?}");
    let incident_of = |stage: &AlertStage, src: &str| {
        stage
            .open_alerts()
            .into_iter()
            .find(|a| a.attacker == Some(ip(src)))
            .unwrap()
            .incident_id
    };
    // A flood on another subnet from spoofed sources: its own incident.
    for i in 0..1000u32 {
        stage.process(&spoofed_row(Flood, i, "10.3.3.3", 2 * SEC + u64::from(i)));
    }
    assert_eq!(stage.open_incident_count(), 4);
    // Another scanner hitting a host in the second scan's target /24 joins
    // that incident; one hitting a host of its own stays apart.
    scan(&mut stage, "100.64.7.7", "10.2.2.200", 3 * SEC);
    assert_eq!(stage.open_incident_count(), 4);
    assert_eq!(
        incident_of(&stage, "100.64.7.7"),
        incident_of(&stage, "203.0.113.9")
    );
    scan(&mut stage, "100.65.8.8", "10.5.5.5", 3 * SEC);
    assert_eq!(stage.open_incident_count(), 5);
    // A flood source past the indexed first few is not a correlation key:
    // spoofed addresses must not chain unrelated incidents.
    scan(&mut stage, spoofed(500), "10.6.6.6", 3 * SEC);
    assert_eq!(stage.open_incident_count(), 6);
    // One of the first sources the flood tracked is.
    scan(&mut stage, spoofed(3), "10.7.7.7", 3 * SEC);
    assert_eq!(stage.open_incident_count(), 6);
    let flood_incident = stage
        .open_alerts()
        .into_iter()
        .find(|a| a.class == Flood)
        .unwrap()
        .incident_id;
    assert_eq!(incident_of(&stage, &spoofed(3).to_string()), flood_incident);
}

/// With the default corroboration (3 detections per key within a minute),
/// one spoofed source scored once as a probe opens nothing, while a real
/// scan (many probes from one source) opens one alert on its third row; a
/// key's window restarts after it expires.
#[test]
fn single_detections_wait_for_corroboration() {
    let (mut stage, _mem) = stage_with_corroboration(3, |s| s.alerts.corroborate_window_s = 60.0);
    feed_scan_probes(&mut stage, 5_000, 1000);
    let victim = ip(VICTIM);
    assert!(stage.open_alerts().is_empty(), "{:?}", stage.open_alerts());
    assert_eq!(stage.metrics().rows_uncorroborated, 5_000);

    let scanner = ip("10.9.9.9");
    let t0 = 10 * SEC;
    for port in 1..=2u16 {
        stage.process(&row(Scan, 0.99, scanner, victim, port, t0));
    }
    assert!(stage.open_alerts().is_empty());
    stage.process(&row(Scan, 0.99, scanner, victim, 3, t0 + 1));
    let open = stage.open_alerts();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].attacker, Some(scanner));

    // Two detections, then a third after the window: still waiting.
    let other = ip("10.9.9.10");
    stage.process(&row(Scan, 0.99, other, victim, 1, t0));
    stage.process(&row(Scan, 0.99, other, victim, 2, t0));
    stage.process(&row(Scan, 0.99, other, victim, 3, t0 + 61 * SEC));
    assert_eq!(stage.open_alerts().len(), 1);
}

/// Rows of a flow that answers a TCP connection (SYN-ACKs, RSTs from a
/// scanned host) never make their source a scanner or a brute forcer; they
/// are counted. Floods keep them (a SYN-ACK reflection flood is made of
/// answers).
#[test]
fn responders_are_not_scanners() {
    let (mut stage, _mem) = stage_tuned(|s| s.thresholds.by_class[Anomaly as usize] = 1.0);
    let (server, scanner) = (ip(VICTIM), ip("10.9.9.9"));
    for (i, class) in [Scan, BruteForce, Anomaly].into_iter().enumerate() {
        let mut r = row(class, 0.99, server, scanner, 40_000, SEC + i as u64);
        if class == Anomaly {
            r.class_probs = [1.0, 0.0, 0.0, 0.0, 0.0];
            r.anomaly_score = 5.0;
        }
        r.facts.responder = true;
        stage.process(&r);
    }
    assert!(stage.open_alerts().is_empty());
    assert_eq!(stage.metrics().rows_responder, 3);
    let mut r = row(Flood, 0.99, server, scanner, 40_000, 2 * SEC);
    r.facts.responder = true;
    stage.process(&r);
    assert_eq!(stage.open_alerts().len(), 1);
}

/// A flood detection counts only while its victim receives
/// `flood_min_pps`; below, rows are counted and no alert opens, whatever
/// the score. Other classes need no volume.
#[test]
fn floods_need_volume_at_the_victim() {
    let (mut stage, _mem) = stage_with_corroboration(1, |s| s.alerts.flood_min_pps = 500.0);
    let (victim, src) = (ip(VICTIM), ip("10.9.9.9"));
    let mut r = row(Flood, 0.999, src, victim, 1900, SEC);
    r.facts.victim_pps = 20.0;
    stage.process(&r);
    assert!(stage.open_alerts().is_empty());
    assert_eq!(stage.metrics().rows_flood_low_volume, 1);
    let mut r = row(Scan, 0.99, src, victim, 1900, SEC + 1);
    r.facts.victim_pps = 20.0;
    stage.process(&r);
    assert_eq!(stage.open_alerts().len(), 1, "a scan needs no volume");
    let mut r = row(Flood, 0.999, src, victim, 1900, SEC + 2);
    r.facts.victim_pps = 600.0;
    stage.process(&r);
    assert_eq!(stage.open_alerts().len(), 2);
    assert_eq!(stage.metrics().rows_flood_low_volume, 1);
    // Traffic its destination asked for floods nobody, whatever its rate.
    let scanner = ip("10.9.9.7");
    let mut r = row(Flood, 0.999, victim, scanner, 40_000, SEC + 3);
    r.facts.victim_pps = 5_000.0;
    r.facts.solicited = true;
    stage.process(&r);
    assert_eq!(stage.open_alerts().len(), 2);
    assert_eq!(stage.metrics().rows_flood_solicited, 1);
}

/// A flood-like row below the victim's volume floor is no flood; when the
/// model's next guess is a scan, more likely than benign, it counts as a
/// probe (and still needs a scan's spread). Otherwise it is dropped.
#[test]
fn low_volume_flood_rows_count_as_probes_when_scan_is_next() {
    let (mut stage, _mem) = stage_with_corroboration(3, |s| s.alerts.scan_ports_per_host = 3);
    let (scanner, target) = (ip("10.9.9.9"), ip(VICTIM));
    let probe = |port, ts, p_scan: f32| {
        let mut r = row(Flood, 0.99, scanner, target, port, ts);
        r.facts.victim_pps = 100.0;
        r.class_probs[Flood as usize] = 0.99 - p_scan;
        r.class_probs[Scan as usize] = p_scan;
        r
    };
    // Scan barely more likely than nothing: dropped.
    for port in 1..=3 {
        stage.process(&probe(port, SEC + u64::from(port), 0.005));
    }
    assert!(stage.open_alerts().is_empty());
    assert_eq!(stage.metrics().rows_flood_low_volume, 3);
    for port in 1..=3 {
        stage.process(&probe(port, 2 * SEC + u64::from(port), 0.3));
    }
    let open = stage.open_alerts();
    assert_eq!(open.len(), 1, "three ports probed");
    assert_eq!(open[0].class, Scan);
    assert_eq!(open[0].attacker, Some(scanner));
}

/// ICMP errors sent to a host that an open alert holds as a scanner (or
/// as the brute forcer of their sender) answer its probes: a flood score on
/// them is counted and dropped. The same errors toward any other host, and
/// floods of other traffic toward the scanner, still count.
#[test]
fn icmp_errors_answering_an_attacker_are_not_a_flood() {
    let (mut stage, _mem) = stage_with_corroboration(1, |_| ());
    let (scanner, target) = (ip("10.9.9.9"), ip(VICTIM));
    let unreachable = |src, dst, ts| {
        let mut r = row(Flood, 0.999, src, dst, 3, ts);
        (r.proto, r.sport) = (1, 3);
        r
    };
    // Before any alert names the scanner, its port unreachables are a flood.
    stage.process(&unreachable(target, scanner, SEC));
    assert_eq!(stage.open_alerts().len(), 1);
    assert_eq!(stage.open_alerts()[0].class, Flood);
    let other = ip("10.9.9.10");
    stage.process(&row(Scan, 0.99, other, target, 161, SEC + 1));
    assert_eq!(stage.open_alerts().len(), 2);
    for i in 0..50 {
        stage.process(&unreachable(target, other, SEC + 2 + i));
    }
    assert_eq!(stage.metrics().rows_flood_backscatter, 50);
    assert_eq!(
        stage.open_alerts().len(),
        2,
        "no flood alert on the scanner"
    );
    // A SYN flood on the scanner is still a flood.
    stage.process(&row(Flood, 0.999, target, other, 80, SEC + 60));
    assert_eq!(stage.open_alerts().len(), 3);
    // Echo replies are not errors.
    let mut r = row(Flood, 0.999, "10.9.9.11", other, 0, SEC + 61);
    (r.proto, r.sport) = (1, 0);
    stage.process(&r);
    assert_eq!(stage.metrics().rows_flood_backscatter, 50);
}

/// Scan detections corroborate only with distinct targets, and only when
/// they spread like a scan: `scan_ports_per_host` ports of one host
/// (vertical) or `scan_hosts` hosts (horizontal). A client that queries one
/// resolver five times, each row scored as a probe, is not a scanner; nor is
/// a device failing against a few hosts on one or two ports each.
#[test]
fn scans_corroborate_on_distinct_targets() {
    let (mut stage, _mem) = stage_with_corroboration(3, |s| {
        s.alerts.scan_ports_per_host = 3;
        s.alerts.scan_hosts = 6;
    });
    let client = ip("10.9.9.9");
    let resolver = ip(VICTIM);
    for i in 0..5u64 {
        stage.process(&row(Scan, 0.99, client, resolver, 53, SEC + i));
    }
    assert!(stage.open_alerts().is_empty());
    assert_eq!(stage.metrics().rows_uncorroborated, 5);
    // Two ports on the resolver, one on each of four more hosts: five
    // hosts, at most two ports on one.
    stage.process(&row(Scan, 0.99, client, resolver, 161, SEC + 5));
    for h in 1..=4u64 {
        let host = ip(&format!("10.0.0.{h}"));
        stage.process(&row(Scan, 0.99, client, host, 53, SEC + 5 + h));
        stage.process(&row(Scan, 0.99, client, host, 53, SEC + 10 + h));
    }
    assert!(
        stage.open_alerts().is_empty(),
        "five hosts, two ports on one"
    );
    // A third port on one host: a vertical scan.
    stage.process(&row(Scan, 0.99, client, resolver, 123, SEC + 20));
    assert_eq!(stage.open_alerts().len(), 1, "three ports of one host");
    // One port on many hosts: a horizontal scan at the sixth host.
    let sweeper = ip("10.9.9.7");
    for h in 1..=6u64 {
        assert_eq!(stage.open_alerts().len(), 1, "{} hosts", h - 1);
        let host = ip(&format!("10.0.1.{h}"));
        stage.process(&row(Scan, 0.99, sweeper, host, 22, 2 * SEC + h));
    }
    assert_eq!(stage.open_alerts().len(), 2, "six hosts");
    // Brute force repeats one target by nature: connections count, and the
    // rows of one connection are one attempt.
    let guesser = ip("10.9.9.8");
    for i in 0..3u64 {
        stage.process(&row(BruteForce, 0.99, guesser, resolver, 22, 3 * SEC + i));
    }
    assert_eq!(stage.open_alerts().len(), 2, "one connection");
    for sport in [40_001, 40_002] {
        let mut r = row(BruteForce, 0.99, guesser, resolver, 22, 4 * SEC);
        r.sport = sport;
        stage.process(&r);
    }
    assert_eq!(stage.open_alerts().len(), 3);
}

/// The autoencoder's anomalies on a scanner's rows to a host it is scanning
/// are that scan's probes; on another host they are news.
#[test]
fn anomalies_on_a_scanned_host_belong_to_the_scan() {
    let (mut stage, _mem) = stage_tuned(|s| s.thresholds.by_class[Anomaly as usize] = 1.0);
    let (scanner, target, other) = (ip("10.9.9.9"), ip(VICTIM), ip("10.1.2.4"));
    stage.process(&row(Scan, 0.99, scanner, target, 22, SEC));
    let odd = |dst, ts| {
        let mut r = row(Benign, 0.0, scanner, dst, 443, ts);
        r.class_probs[0] = 1.0;
        r.anomaly_score = 5.0;
        r
    };
    stage.process(&odd(target, 2 * SEC));
    assert_eq!(stage.metrics().rows_anomaly_scan_probe, 1);
    assert_eq!(stage.open_alerts().len(), 1);
    stage.process(&odd(other, 3 * SEC));
    let open = stage.open_alerts();
    assert_eq!(open.len(), 2);
    assert!(
        open.iter()
            .any(|a| a.class == Anomaly && a.victim == Some(other))
    );
}

/// A client whose connections to a server are mostly upload-heavy is not
/// guessing passwords there, however its connection openings score; a
/// guesser that uploads now and then still is.
#[test]
fn brute_force_attempts_that_upload_are_not_guesses() {
    let (mut stage, _mem) = stage_with_corroboration(3, |s| s.alerts.beacon_connections = 0);
    let (client, server) = (ip("10.10.0.66"), ip("10.20.0.200"));
    for k in 0..20u64 {
        let t = SEC + k * 1_300_000_000;
        for dt in [0, 1_000_000] {
            let mut r = row(BruteForce, 0.99, client, server, 80, t + dt);
            r.sport = 40_000 + k as u16;
            stage.process(&r);
        }
        let mut up = row(Benign, 0.0, client, server, 80, t + 20_000_000);
        up.class_probs[0] = 1.0;
        up.sport = 40_000 + k as u16;
        up.facts.closed = Some(sensor::features::ClosedConn {
            start_ns: t,
            bytes_out: 3700,
            bytes_in: 600,
            client_is_src: true,
        });
        stage.process(&up);
    }
    assert!(stage.open_alerts().is_empty(), "{:?}", stage.open_alerts());
    assert!(stage.metrics().rows_bruteforce_upload >= 19);
    // One upload among many guesses.
    let guesser = ip("10.10.0.67");
    let mut up = row(Benign, 0.0, guesser, server, 22, 2 * SEC);
    up.class_probs[0] = 1.0;
    up.facts.closed = Some(sensor::features::ClosedConn {
        start_ns: 2 * SEC,
        bytes_out: 5000,
        bytes_in: 900,
        client_is_src: true,
    });
    stage.process(&up);
    for k in 0..3u16 {
        let mut r = row(BruteForce, 0.99, guesser, server, 22, 3 * SEC);
        r.sport = 50_000 + k;
        stage.process(&r);
    }
    assert_eq!(stage.open_alerts().len(), 1);
    assert_eq!(stage.open_alerts()[0].attacker, Some(guesser));
}

/// A closed client connection from `client` to `server:80` that started
/// at `start_ns` and closed 20 ms later (a GET and its page).
fn closed_get(client: IpAddr, server: IpAddr, sport: u16, start_ns: u64) -> ScoredRow {
    let mut r = row(Benign, 0.0, client, server, 80, start_ns + 20_000_000);
    r.class_probs[0] = 1.0;
    r.sport = sport;
    r.facts.closed = Some(sensor::features::ClosedConn {
        start_ns,
        bytes_out: 412,
        bytes_in: 2639,
        client_is_src: true,
    });
    r
}

/// Connections opened one at a time, a sleep apart, are a poller (or a
/// person), however their openings score as guesses; the same exchanges
/// opened several at once, as guessing tools do, are still brute force.
#[test]
fn brute_force_attempts_a_sleep_apart_are_not_guesses() {
    let (mut stage, _mem) = stage_with_corroboration(3, |_| {});
    let (poller, server) = (ip("10.10.0.66"), ip("10.20.0.200"));
    for k in 0..20u64 {
        let t = SEC + k * 1_500_000_000;
        let sport = 40_000 + k as u16;
        let mut r = row(BruteForce, 0.99, poller, server, 80, t + 1_000_000);
        r.sport = sport;
        stage.process(&r);
        stage.process(&closed_get(poller, server, sport, t));
    }
    assert!(
        stage.open_alerts().iter().all(|a| a.class != BruteForce),
        "{:?}",
        stage.open_alerts()
    );
    assert!(stage.metrics().rows_bruteforce_paced >= 17);
    // Four connections at a time, the next as soon as the last closes.
    let guesser = ip("10.10.0.67");
    for k in 0..4u64 {
        let t = 40 * SEC + k * 30_000_000;
        for task in 0..4u64 {
            let sport = 50_000 + (4 * k + task) as u16;
            let mut r = row(BruteForce, 0.99, guesser, server, 80, t + 1_000_000);
            r.sport = sport;
            stage.process(&r);
            stage.process(&closed_get(guesser, server, sport, t + task * 1_000));
        }
    }
    let open = stage.open_alerts();
    assert!(
        open.iter()
            .any(|a| a.class == BruteForce && a.attacker == Some(guesser)),
        "{open:?}"
    );
}

/// A full corroboration table is emptied in bulk (counted), and keys keep
/// being corroborated afterwards.
#[test]
fn full_corroboration_table_is_bounded() {
    let (mut stage, _mem) = stage_with_corroboration(3, |s| s.alerts.max_pending = 64);
    feed_scan_probes(&mut stage, 10_000, 1);
    let victim = ip(VICTIM);
    let m = stage.metrics();
    assert!(m.corroboration_evicted >= 10_000 - 64, "{m:?}");
    assert!(stage.open_alerts().is_empty());
    let scanner = ip("10.9.9.9");
    for port in 1..=3u16 {
        stage.process(&row(Scan, 0.99, scanner, victim, port, 2 * SEC));
    }
    assert_eq!(stage.open_alerts().len(), 1);
}

/// An IP protocol scan (one packet of each protocol number to one host)
/// is one scan alert: once its scan alert is open, the probes the model
/// scores as a flood are the scan's. A GRE flood from elsewhere is a flood.
#[test]
fn ip_protocol_scan_probes_are_no_flood_on_the_scanned_host() {
    let (mut stage, _mem) = stage_with_corroboration(3, |s| s.alerts.scan_ports_per_host = 3);
    let (scanner, host) = (ip("10.10.0.66"), ip(VICTIM));
    let probe = |proto: u8, class, ts| {
        let mut r = row(class, 0.99, scanner, host, 0, ts);
        r.proto = proto;
        r.facts.victim_pps = 5_000.0;
        r
    };
    for (i, proto) in [0u8, 2, 3, 4].into_iter().enumerate() {
        stage.process(&probe(proto, Scan, SEC + i as u64 * 1_000_000));
    }
    assert_eq!(stage.open_alerts().len(), 1, "{:?}", stage.open_alerts());
    // Its probes of the protocols without ports or ICMP, scored as a
    // flood at flood volume.
    let other = (5u8..=100).filter(|p| ![6, 17, 58].contains(p));
    for (i, proto) in other.enumerate() {
        stage.process(&probe(proto, Flood, 2 * SEC + i as u64 * 1_000_000));
    }
    let open = stage.open_alerts();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].class, Scan);
    assert_eq!(stage.metrics().rows_flood_scan_probe, 93);
    // GRE from other sources to the same host: a flood.
    for i in 0..10u32 {
        let mut r = spoofed_row(Flood, i, VICTIM, 3 * SEC + u64::from(i) * 1_000_000);
        r.proto = 47;
        r.facts.victim_pps = 5_000.0;
        stage.process(&r);
    }
    assert!(
        stage.open_alerts().iter().any(|a| a.class == Flood),
        "{:?}",
        stage.open_alerts()
    );
}
