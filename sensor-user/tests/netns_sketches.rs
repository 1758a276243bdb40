//! The sketches against ground truth: Count-Min never underestimates and
//! stays within its ε·N bound (allowing its δ failure rate); `HyperLogLog`
//! counts 10 000 spoofed sources within 5 %.

use std::collections::BTreeMap;
use std::net::IpAddr;

use sensor_lab::generator::{FlowSpec, Pacing, spoofed_source, tcp};
use sensor_lab::sensor::{OBSERVE, net_test};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");

fn dst() -> IpAddr {
    "10.99.0.1".parse().unwrap()
}

#[test]
fn count_min_bounds_hold_per_source() {
    // 2 000 sources with a heavy-tailed volume: source i sends 1 + 3000/(i+1)
    // packets, so a few heavy hitters stand out over a long tail.
    const SOURCES: u32 = 2_000;
    let Some(net) = net_test("count_min_bounds_hold_per_source") else {
        return;
    };
    let mut frames = net.frames();
    let mut ids = Vec::new();
    for i in 0..SOURCES {
        ids.push(frames.add_flow(FlowSpec::tcp(spoofed_source(i), dst(), 5_000, 443)));
    }
    let mut remaining: Vec<u32> = (0..SOURCES).map(|i| 1 + 3_000 / (i + 1)).collect();
    let mut seq = 0;
    while remaining.iter().any(|&r| r > 0) {
        for (i, r) in remaining.iter_mut().enumerate() {
            if *r > 0 {
                *r -= 1;
                seq += 1;
                frames
                    .push(ids[i], tcp::ACK, (seq % 100) as usize, seq)
                    .expect("frame");
            }
        }
    }
    let r = net.scenario(SENSOR, OBSERVE, &frames, Pacing::paced(50_000));
    assert_eq!(r.report.sent, frames.len());
    let sk = &r.output.sketch;
    let n = r.truth.packets;
    assert_eq!(sk.total_packets, n, "sketch total");
    assert_eq!(sk.total_bytes, r.truth.bytes, "sketch bytes");
    let est: BTreeMap<IpAddr, (u64, u64)> = sk
        .sources
        .iter()
        .map(|s| (s.src, (s.packets_est, s.bytes_est)))
        .collect();
    let truth = r.truth.sources();
    let bound_p = (sk.cms.epsilon * n as f64).ceil() as u64;
    let bound_b = (sk.cms.epsilon * r.truth.bytes as f64).ceil() as u64;
    let mut over = 0usize;
    for (src, (tp, tb)) in &truth {
        let (ep, eb) = *est
            .get(src)
            .unwrap_or_else(|| panic!("no Count-Min estimate for source {src}"));
        assert!(ep >= *tp, "{src}: packet estimate {ep} < true {tp}");
        assert!(eb >= *tb, "{src}: byte estimate {eb} < true {tb}");
        if ep > tp + bound_p || eb > tb + bound_b {
            over += 1;
        }
    }
    let frac = over as f64 / truth.len() as f64;
    eprintln!(
        "N = {n}, eps*N = {bound_p} packets; {over} of {} sources beyond the bound (delta = {:.3})",
        truth.len(),
        sk.cms.delta
    );
    // δ is the per-query failure probability; allow a few percent.
    assert!(
        frac <= 0.03,
        "{over} of {} sources exceed est <= true + eps*N",
        truth.len()
    );
}

#[test]
fn hyperloglog_counts_ten_thousand_sources_within_five_percent() {
    const SOURCES: u32 = 10_000;
    let Some(net) = net_test("hyperloglog_counts_ten_thousand_sources_within_five_percent") else {
        return;
    };
    // Two SYNs per spoofed source.
    let frames = net.syn_flood(SOURCES, dst(), 80, 2 * u64::from(SOURCES));
    let r = net.scenario(SENSOR, OBSERVE, &frames, Pacing::paced(50_000));
    assert_eq!(r.report.sent, frames.len());
    assert_eq!(r.truth.sources().len(), SOURCES as usize);
    let est = r.output.sketch.distinct_sources_estimate;
    let err = (est - f64::from(SOURCES)).abs() / f64::from(SOURCES);
    eprintln!(
        "distinct sources: estimate {est:.0}, truth {SOURCES}, error {:.2}%",
        err * 100.0
    );
    assert!(
        err <= 0.05,
        "estimate {est} is {:.1}% off {SOURCES}",
        err * 100.0
    );
}
