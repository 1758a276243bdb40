//! The real sensor on a real veth: per-flow counts in `--flows-out` equal the
//! generator's ground truth exactly, for IPv4 and IPv6, TCP, UDP and ICMP,
//! with and without an 802.1Q tag.

use std::collections::BTreeMap;

use sensor_lab::generator::{FlowTuple, Pacing, mixed_flows};
use sensor_lab::sensor::{OBSERVE, net_test};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");

#[test]
fn per_flow_counts_match_ground_truth_exactly() {
    let Some(net) = net_test("per_flow_counts_match_ground_truth_exactly") else {
        return;
    };
    let specs = mixed_flows(30);
    assert!(specs.iter().any(|s| s.vlan.is_some()) && specs.iter().any(|s| s.vlan.is_none()));
    assert!(
        specs.iter().any(|s| s.tuple.src.is_ipv6()) && specs.iter().any(|s| s.tuple.src.is_ipv4())
    );
    // 5003 packets: not a multiple of 30, so flows get 166 or 167 packets.
    let frames = net.spread(&specs, 5_003);
    let r = net.scenario(
        SENSOR,
        OBSERVE,
        &frames,
        Pacing {
            batch: 32,
            ..Pacing::paced(50_000)
        },
    );
    assert_eq!(r.report.sent, frames.len(), "generator hit its time limit");

    let got: BTreeMap<FlowTuple, _> = r
        .output
        .flows
        .iter()
        .map(|f| (FlowTuple::from(f), f))
        .collect();
    // The lab link carries nothing but the generator's frames.
    let want_keys: Vec<_> = r.truth.flows.keys().collect();
    let got_keys: Vec<_> = got.keys().collect();
    assert_eq!(got_keys, want_keys, "flow set differs");
    for (tuple, want) in &r.truth.flows {
        let f = got[tuple];
        let have = (
            f.packets,
            f.bytes,
            u64::from(f.syn),
            u64::from(f.synack),
            u64::from(f.fin),
            u64::from(f.rst),
            u64::from(f.len_min),
            u64::from(f.len_max),
        );
        let exp = (
            want.packets,
            want.bytes,
            want.syn,
            want.synack,
            want.fin,
            want.rst,
            want.len_min,
            want.len_max,
        );
        assert_eq!(
            have, exp,
            "{tuple:?}: (packets, bytes, syn, synack, fin, rst, len_min, len_max)"
        );
        assert!(f.start_events >= 1, "{tuple:?} has no start event");
        assert!(f.events >= u64::from(f.start_events), "{tuple:?}");
    }
    let c = &r.output.stats;
    assert_eq!(c.counter("packets_seen"), r.truth.packets);
    assert_eq!(c.counter("bytes_seen"), r.truth.bytes);
    assert_eq!(c.counter("parsed_ok"), r.truth.packets);
    assert_eq!(c.counter("events_lost"), 0);
    assert_eq!(c.counter("internal_error"), 0);
}
