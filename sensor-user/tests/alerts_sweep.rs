//! Host discovery: echo requests to new hosts reach the alert stage
//! whatever the models say, and the scan rule's distinct-host bar tells a
//! sweep from a pinger.

mod alerts_util;

use alerts_util::*;
use sensor::{
    alerts::AlertStage,
    model::row::AttackClass::{Benign, Scan},
};

/// An echo request from `src` to `dst` that no model flagged.
fn echo(stage: &mut AlertStage, src: &str, dst: &str, ts: u64) {
    let mut r = row(Benign, 0.99, src, dst, 0, ts);
    r.proto = 1;
    r.sport = 8;
    r.facts.discovery_probe = true;
    stage.process(&r);
}

#[test]
fn an_echo_sweep_is_a_scan_and_a_pinger_is_not() {
    let (mut stage, mem) = stage();
    // A monitor pinging one host, and a client pinging three.
    for i in 0..20u64 {
        echo(&mut stage, "10.0.0.5", "10.0.1.1", SEC + i * SEC / 5);
    }
    for h in 1..=3u64 {
        echo(&mut stage, "10.0.0.6", &format!("10.0.1.{h}"), SEC + h);
    }
    assert!(stage.open_alerts().is_empty(), "{:?}", stage.open_alerts());
    // nmap -sn over 32 hosts.
    for h in 0..32u64 {
        echo(
            &mut stage,
            "10.0.0.66",
            &format!("10.0.2.{h}"),
            2 * SEC + h * 1_000_000,
        );
    }
    let open = stage.open_alerts();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].class, Scan);
    assert_eq!(open[0].attacker, Some(ip("10.0.0.66")));
    assert_eq!(open[0].victim, None);
    assert_eq!(stage.metrics().discovery_probes, 20 + 3 + 32);
    let alerts = take_of_type(&mem, "alert");
    assert_eq!(alerts[0]["xdp_sensor"]["detector"], "sweep");
}

/// A probe the model scores as a flood, at no flood's volume, is dropped
/// as a flood but still counts as a probe: FIN, NULL and Xmas probes look
/// nothing like the traffic the model learnt, yet one source probing 32
/// hosts so is a scan.
#[test]
fn probes_scored_as_floods_at_low_volume_still_count_for_the_scan_rule() {
    let (mut stage, _mem) = stage();
    for h in 0..32u64 {
        let mut r = row(
            sensor::model::row::AttackClass::Flood,
            0.95,
            "10.0.0.66",
            format!("10.0.3.{h}").as_str(),
            3390,
            SEC + h * 1_000_000,
        );
        r.facts.discovery_probe = true;
        r.facts.victim_pps = 1.0;
        stage.process(&r);
    }
    let open = stage.open_alerts();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].class, Scan);
    assert_eq!(open[0].attacker, Some(ip("10.0.0.66")));
    let m = stage.metrics();
    assert_eq!(m.rows_flood_low_volume, 32);
    assert_eq!(m.discovery_probes, 32);
}
