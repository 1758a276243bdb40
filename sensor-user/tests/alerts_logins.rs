//! The login rule: many short connections from one client to a login
//! service of one server are a brute force, whatever the models scored
//! their rows, and a guesser's rows never go into another attack's alert.

mod alerts_util;

use std::net::IpAddr;

use alerts_util::*;
use sensor::{
    alerts::AlertStage,
    features::ClosedConn,
    model::row::AttackClass::{self, Benign, BruteForce, Flood, Scan},
};

const ATTACKER: &str = "198.51.100.7";
const SERVER: &str = "10.1.0.20";

/// The closing row of a client connection from `client:sport` to
/// `server:port` that started at `start`, lasted `dur` ns and carried
/// `bytes` each way; scored `p` for `class` (the rest benign).
#[expect(
    clippy::too_many_arguments,
    reason = "a test's connection, field by field"
)]
fn closing(
    class: AttackClass,
    p: f32,
    client: &str,
    server: &str,
    port: u16,
    sport: u16,
    start: u64,
    dur: u64,
    bytes: u64,
) -> sensor::model::row::ScoredRow {
    let mut r = row(class, p, client, server, port, start + dur);
    r.sport = sport;
    r.facts.established = true;
    r.facts.closed = Some(ClosedConn {
        start_ns: start,
        bytes_out: bytes,
        bytes_in: bytes,
        client_is_src: true,
    });
    r
}

/// `n` short guesses (600 bytes each way, 20 ms each) from `client` to
/// `server:port`, `gap` ns apart from `t0`, their rows scored benign.
fn guesses(
    stage: &mut AlertStage,
    client: &str,
    server: &str,
    port: u16,
    n: u64,
    t0: u64,
    gap: u64,
) {
    for i in 0..n {
        let r = closing(
            Benign,
            0.0,
            client,
            server,
            port,
            40_000 + i as u16,
            t0 + i * gap,
            20_000_000,
            600,
        );
        stage.process(&r);
    }
}

#[test]
fn short_connections_to_ssh_open_one_bruteforce_alert_at_the_bar() {
    let (mut stage, mem) = stage();
    let need = u64::from(settings().logins.attempts);
    for i in 0..need + 5 {
        guesses(&mut stage, ATTACKER, SERVER, 22, 1, SEC + i * SEC / 10, 0);
        assert_eq!(
            stage.metrics().alerts_opened,
            u64::from(i + 1 >= need),
            "after {} connections",
            i + 1
        );
    }
    let m = stage.metrics();
    assert_eq!(m.login_connections, need + 5);
    assert_eq!(m.login_detections, 6);
    let open = stage.open_alerts();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].class, BruteForce);
    assert_eq!(open[0].attacker, Some(ip(ATTACKER)));
    assert_eq!(open[0].victim, Some(ip(SERVER)));
    assert_eq!(open[0].count, 6);
    // One alert: opened once (updates as the guesses escalate it).
    let mut a = take_of_type(&mem, "alert");
    a.retain(|a| a["xdp_sensor"]["state"] == "open");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["xdp_sensor"]["class"], "bruteforce");
    assert_eq!(a[0]["xdp_sensor"]["detector"], "logins");
    assert_eq!(a[0]["src_ip"], ATTACKER);
    assert_eq!(a[0]["dest_ip"], SERVER);
    assert_eq!(a[0]["dest_port"], 22);
}

#[test]
fn page_fetches_long_sessions_transfers_and_slow_guessing_stay_silent() {
    let (mut stage, _mem) = stage();
    let need = u64::from(settings().logins.attempts);
    // Forty page fetches: the web port is no login service.
    guesses(&mut stage, "10.0.0.5", SERVER, 80, 2 * need, SEC, SEC / 10);
    // Logins that worked: sessions of a minute, or carrying a transfer.
    for i in 0..2 * need {
        let t = SEC + i * SEC;
        stage.process(&closing(
            Benign,
            0.0,
            "10.0.0.6",
            SERVER,
            22,
            41_000 + i as u16,
            t,
            60 * SEC,
            600,
        ));
        stage.process(&closing(
            Benign,
            0.0,
            "10.0.0.7",
            SERVER,
            22,
            42_000 + i as u16,
            t,
            SEC,
            500_000,
        ));
    }
    // Just under the bar, twice, further apart than the window.
    guesses(&mut stage, "10.0.0.8", SERVER, 22, need - 1, SEC, SEC);
    guesses(&mut stage, "10.0.0.8", SERVER, 22, need - 1, 200 * SEC, SEC);
    // The bar split over two servers.
    guesses(
        &mut stage,
        "10.0.0.9",
        SERVER,
        22,
        need / 2 + 1,
        SEC,
        SEC / 10,
    );
    guesses(
        &mut stage,
        "10.0.0.9",
        "10.1.0.21",
        22,
        need / 2 + 1,
        SEC,
        SEC / 10,
    );
    assert!(stage.open_alerts().is_empty(), "{:?}", stage.open_alerts());
    let m = stage.metrics();
    assert_eq!(m.login_detections, 0);
    // Counted: the slow guesser's and the split guesser's connections only.
    assert_eq!(m.login_connections, 2 * (need - 1) + 2 * (need / 2 + 1));
}

#[test]
fn the_bar_is_counted_over_every_login_service_of_the_server() {
    let (mut stage, _mem) = stage();
    let need = u64::from(settings().logins.attempts);
    guesses(&mut stage, ATTACKER, SERVER, 22, need / 2, SEC, SEC / 10);
    guesses(
        &mut stage,
        ATTACKER,
        SERVER,
        21,
        need - need / 2,
        5 * SEC,
        SEC / 10,
    );
    let open = stage.open_alerts();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].class, BruteForce);
}

/// One attacker floods a server (from spoofed sources), scans it, then
/// guesses SSH passwords on it. Its guesses' rows look like the flood to
/// the classifier (its history is a scan and a flood): they must still be
/// a brute-force alert of their own, not rows of the open flood alert,
/// and the three alerts are one incident.
#[test]
fn flood_then_scan_then_guesses_are_three_alerts_of_one_incident() {
    let (mut stage, mem) = stage();
    let server: IpAddr = ip(SERVER);
    for i in 0..5_000u32 {
        let src = format!("203.0.{}.{}", i / 250 % 250, i % 250 + 1);
        stage.process(&row(
            Flood,
            0.99,
            &*src,
            server,
            80,
            SEC + u64::from(i) * 100_000,
        ));
    }
    for port in 1..=200u16 {
        let t = 3 * SEC + u64::from(port) * 1_000_000;
        stage.process(&row(Scan, 0.97, ATTACKER, server, port, t));
    }
    let flood_rows = stage
        .open_alerts()
        .iter()
        .find(|a| a.class == Flood)
        .map(|a| a.count)
        .unwrap();
    let need = u64::from(settings().logins.attempts);
    for i in 0..need + 10 {
        let t = 5 * SEC + i * SEC / 20;
        let sport = 50_000 + i as u16;
        // The connection's rows before its close, scored as the flood …
        for k in 0..3 {
            let mut r = row(Flood, 0.99, ATTACKER, server, 22, t + k * 1_000_000);
            r.sport = sport;
            r.facts.established = true;
            stage.process(&r);
        }
        // … and its close.
        stage.process(&closing(
            Flood, 0.99, ATTACKER, SERVER, 22, sport, t, 5_000_000, 900,
        ));
    }
    let open = stage.open_alerts();
    assert_eq!(open.len(), 3, "{open:?}");
    let of = |c| open.iter().find(|a| a.class == c).unwrap();
    let (flood, scan, bf) = (of(Flood), of(Scan), of(BruteForce));
    assert_eq!(
        flood.count, flood_rows,
        "no guess went into the flood alert"
    );
    assert_eq!(flood.victim, Some(server));
    assert_eq!(scan.attacker, Some(ip(ATTACKER)));
    assert_eq!((bf.attacker, bf.victim), (Some(ip(ATTACKER)), Some(server)));
    assert_eq!(bf.count, 11);
    assert_eq!(flood.incident_id, scan.incident_id);
    assert_eq!(scan.incident_id, bf.incident_id);
    assert_eq!(stage.metrics().rows_flood_login, 4 * (need + 10));
    let classes: Vec<_> = take_of_type(&mem, "alert")
        .iter()
        .filter(|a| a["xdp_sensor"]["state"] == "open")
        .map(|a| a["xdp_sensor"]["class"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(classes, ["flood", "scan", "bruteforce"]);
}

#[test]
fn the_rule_reads_its_bars_from_the_config_and_zero_turns_it_off() {
    let mut s = settings();
    s.logins.attempts = 0;
    let (mut stage, _mem) = stage_with(s, sensor::alerts::Inventory::default());
    guesses(&mut stage, ATTACKER, SERVER, 22, 40, SEC, SEC / 10);
    assert!(stage.open_alerts().is_empty());
    assert_eq!(stage.metrics().login_connections, 0);

    let mut s = settings();
    s.logins.attempts = 5;
    s.logins.ports = vec![2222];
    let (mut stage, _mem) = stage_with(s, sensor::alerts::Inventory::default());
    guesses(&mut stage, ATTACKER, SERVER, 22, 10, SEC, SEC / 10);
    assert!(stage.open_alerts().is_empty());
    guesses(&mut stage, ATTACKER, SERVER, 2222, 5, 3 * SEC, SEC / 10);
    assert_eq!(stage.open_alerts().len(), 1);
}
