//! Sustained load: 100 000 packets/s over many flows for 1.5 s. The sensor
//! loses no event, every flow gets its start event, and every packet is
//! counted.

use std::time::Duration;

use sensor_lab::generator::{Pacing, mixed_flows};
use sensor_lab::sensor::{OBSERVE, ScenarioResult, net_test};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");
const RATE: u64 = 100_000;
const PACKETS: u64 = 150_000;
const FLOWS: u32 = 3_000;

fn report_send(r: &ScenarioResult) {
    eprintln!(
        "sent {} packets in {:.2} s ({:.0} pps, {} push-backs)",
        r.report.sent,
        r.report.elapsed.as_secs_f64(),
        r.report.pps(),
        r.report.retries
    );
}

/// `packets` frames over `FLOWS` mixed flows sent with `pacing` to a sensor
/// that only observes; `None` where the test is skipped (no root).
fn observe_mixed_flows(test_name: &str, packets: u64, pacing: Pacing) -> Option<ScenarioResult> {
    let net = net_test(test_name)?;
    let frames = net.spread(&mixed_flows(FLOWS), packets);
    let r = net.scenario(SENSOR, OBSERVE, &frames, pacing);
    report_send(&r);
    Some(r)
}

#[test]
fn hundred_thousand_pps_loses_no_event() {
    let pacing = Pacing {
        time_limit: Duration::from_secs(5),
        ..Pacing::paced(RATE)
    };
    let Some(r) = observe_mixed_flows("hundred_thousand_pps_loses_no_event", PACKETS, pacing)
    else {
        return;
    };
    assert_eq!(
        r.report.sent as u64, PACKETS,
        "generator hit its time limit"
    );
    // The generator kept close to the requested rate (it is paced, not
    // throttled by the sensor).
    assert!(
        r.report.pps() > RATE as f64 * 0.8,
        "only {:.0} pps",
        r.report.pps()
    );

    let c = &r.output.stats;
    assert_eq!(
        c.counter("events_lost"),
        0,
        "ring overflowed: {:?}",
        c.counters
    );
    assert_eq!(c.counter("events_sampled_out"), 0, "{:?}", c.counters);
    assert_eq!(c.counter("packets_seen"), PACKETS);
    assert_eq!(c.counter("parsed_ok"), PACKETS);
    assert!(c.counter("events_emitted") >= u64::from(FLOWS));

    assert_eq!(r.output.flows.len(), r.truth.flows.len());
    let missing_start: Vec<_> = r
        .output
        .flows
        .iter()
        .filter(|f| f.start_events == 0)
        .map(|f| (f.src, f.dst, f.sport, f.dport, f.proto))
        .collect();
    assert!(
        missing_start.is_empty(),
        "{} flows without a start event: {:?}",
        missing_start.len(),
        &missing_start[..missing_start.len().min(5)]
    );
    let total: u64 = r.output.flows.iter().map(|f| f.packets).sum();
    assert_eq!(total, PACKETS);
}

/// As fast as one generator core can send (about 0.3 Mpps on a small VM,
/// XDP attached): still no event lost and every packet counted.
#[test]
fn unpaced_generator_loses_no_event() {
    const N: u64 = 300_000;
    let pacing = Pacing {
        time_limit: Duration::from_secs(30),
        ..Pacing::default()
    };
    let Some(r) = observe_mixed_flows("unpaced_generator_loses_no_event", N, pacing) else {
        return;
    };
    assert_eq!(r.report.sent as u64, N, "generator hit its time limit");
    let c = &r.output.stats;
    eprintln!("counters: {:?}", c.counters);
    assert_eq!(
        c.counter("events_lost"),
        0,
        "ring overflowed: {:?}",
        c.counters
    );
    assert_eq!(c.counter("packets_seen"), N);
    let total: u64 = r.output.flows.iter().map(|f| f.packets).sum();
    assert_eq!(total, N);
}
