//! The alert stage's volume rule on synthetic kernel sketches: floods found
//! from the destination sketch (every packet counted, rows or not), named
//! by host or, when spread, by prefix, with the rows of a spread flood's
//! hosts folded into its alert.

mod alerts_util;

use std::net::IpAddr;

use alerts_util::*;
use sensor::{
    alerts::AlertStage,
    capture::{gateway::GatewayView, volume::DstVolume},
    model::row::AttackClass::{Flood, Scan},
};
use sensor_common::{FlowKey, sketch::VolumeCell};

fn key(s: &str) -> [u8; 16] {
    match ip(s) {
        IpAddr::V4(v) => FlowKey::map_v4(v.octets()),
        IpAddr::V6(v) => v.octets(),
    }
}

/// `new_flows` single-packet flows to `dst` in one epoch.
fn flows(s: &mut DstVolume, dst: &str, new_flows: u32) {
    s.add(
        &key(dst),
        VolumeCell {
            packets: new_flows,
            new_flows,
            continued: 0,
            bytes: 60 * new_flows,
        },
    );
}

fn view(seq: u64, s: DstVolume) -> GatewayView {
    GatewayView {
        seq,
        epoch_ns: SEC,
        dst: s,
        ..GatewayView::default()
    }
}

/// A /24 flooded over all its hosts, 20 flows/s each, for `epochs` epochs.
fn carpet(stage: &mut AlertStage, epochs: u64) {
    for e in 1..=epochs {
        let mut s = DstVolume::default();
        for h in 0..=255 {
            flows(&mut s, &format!("192.0.2.{h}"), 20);
        }
        stage.process_gateway(&view(e, s), e * SEC);
    }
}

/// 200 ports of 10.1.2.3 probed by 203.0.113.9 from 0.5 s on.
fn vertical_scan(stage: &mut AlertStage) {
    for p in 0..200u16 {
        stage.process(&row(
            Scan,
            0.99,
            "203.0.113.9",
            "10.1.2.3",
            p,
            SEC / 2 + u64::from(p) * 100_000,
        ));
    }
}

#[test]
fn carpet_bombing_is_one_alert_on_the_prefix() {
    let (mut stage, mem) = stage();
    carpet(&mut stage, 5);
    let open = stage.open_alerts();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].class, Flood);
    assert_eq!(open[0].victim, Some(ip("192.0.2.0")));
    assert_eq!(open[0].attacker, None);
    assert_eq!(open[0].count, 5);
    let m = stage.metrics();
    assert_eq!((m.volume_findings, m.gateway_views), (5, 5));
    let alerts = take_of_type(&mem, "alert");
    let x = &alerts[0]["xdp_sensor"];
    assert_eq!(x["victim_prefix"], "192.0.2.0/24");
    assert_eq!(x["detector"], "volume");
    assert_eq!(x["raw_score"], 5120.0);
    assert!(alerts[0].get("src_ip").is_none());
    // No source was ever seen by this rule: none is listed.
    assert_eq!(array_len(&x["sources"]["top"]), 0);
}

#[test]
fn flood_rows_on_a_host_of_a_flooded_prefix_join_its_alert() {
    let (mut stage, _mem) = stage();
    carpet(&mut stage, 1);
    for i in 0..50u32 {
        let mut r = row(
            Flood,
            0.99,
            format!("198.51.100.{}", i % 7).as_str(),
            "192.0.2.77",
            80,
            SEC + u64::from(i) * 1_000_000,
        );
        r.packets_per_s = 5_000.0;
        stage.process(&r);
    }
    let open = stage.open_alerts();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].victim, Some(ip("192.0.2.0")));
    assert_eq!(open[0].count, 51);
    // The rows named sources: now the alert lists them.
    assert_eq!(open[0].distinct_peers, Some(7));
}

#[test]
fn host_flood_alerts_close_into_their_network_s_alert() {
    let (mut stage, mem) = stage();
    // Rows raise flood alerts on two hosts of the /24 before the first
    // epoch shows the spread, and one on a host outside it.
    for (k, host) in ["192.0.2.7", "192.0.2.9", "198.51.100.1"]
        .iter()
        .enumerate()
    {
        for i in 0..10u64 {
            let mut r = row(
                Flood,
                0.99,
                "203.0.113.5",
                *host,
                80,
                SEC / 2 + i * 1_000 + k as u64,
            );
            r.packets_per_s = 5_000.0;
            stage.process(&r);
        }
    }
    assert_eq!(stage.open_alerts().len(), 3);
    carpet(&mut stage, 1);
    let open = stage.open_alerts();
    assert_eq!(open.len(), 2, "{open:?}");
    let net = open
        .iter()
        .find(|a| a.victim == Some(ip("192.0.2.0")))
        .expect("the network's alert");
    assert_eq!(net.count, 1 + 10 + 10);
    assert!(open.iter().any(|a| a.victim == Some(ip("198.51.100.1"))));
    assert_eq!(stage.metrics().alerts_merged, 2);
    stage.flush();
    let closed = take_of_type(&mem, "alert_closed");
    assert_eq!(closed.len(), 2);
    assert!(
        closed
            .iter()
            .all(|a| a["xdp_sensor"]["close_reason"] == "merged")
    );
}

#[test]
fn one_flooded_host_is_named_and_a_scanned_host_is_left_to_its_scan() {
    let (mut stage, _mem) = stage();
    // A fast vertical scan of 10.1.2.3 opens its scan alert first.
    vertical_scan(&mut stage);
    let mut s = DstVolume::default();
    flows(&mut s, "10.1.2.3", 3000);
    flows(&mut s, "10.9.9.9", 3000);
    stage.process_gateway(&view(1, s), SEC);
    let open = stage.open_alerts();
    let floods: Vec<_> = open.iter().filter(|a| a.class == Flood).collect();
    assert_eq!(floods.len(), 1, "{open:?}");
    assert_eq!(floods[0].victim, Some(ip("10.9.9.9")));
    assert_eq!(stage.metrics().volume_scan_targets, 1);
}

#[test]
fn the_rule_can_be_turned_off() {
    let (mut stage, _mem) = stage_tuned(|s| s.volume.enabled = false);
    carpet(&mut stage, 3);
    assert!(stage.open_alerts().is_empty());
    assert_eq!(stage.metrics().gateway_views, 3);
}

#[test]
fn a_scanned_host_hammered_past_any_scan_is_flooded() {
    let (mut stage, _mem) = stage();
    vertical_scan(&mut stage);
    // 40 000 new flows a second: past three probes a port after 5 s.
    let mut flooded_at = None;
    for e in 1..=8u64 {
        let mut s = DstVolume::default();
        flows(&mut s, "10.1.2.3", 40_000);
        stage.process_gateway(&view(e, s), e * SEC);
        if flooded_at.is_none() && stage.open_alerts().iter().any(|a| a.class == Flood) {
            flooded_at = Some(e);
        }
    }
    assert_eq!(flooded_at, Some(5));
    assert_eq!(stage.metrics().volume_scan_targets, 4);
}
