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
