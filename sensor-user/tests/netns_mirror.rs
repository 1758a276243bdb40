//! Mirror (SPAN port) mode: the sensor counts every packet and drops it, so
//! the stack of the gateway receives nothing. The same run without
//! `--mirror` is the control: the stack receives every packet.

use std::path::Path;
use std::sync::Mutex;

use sensor_lab::generator::{Frames, Pacing, PacketCounter, mixed_flows};
use sensor_lab::sensor::{exclusive, scenario};
use sensor_lab::{Lab, require_root};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");
const PACKETS: u64 = 3_000;

/// Runs the sensor with `extra`, sends PACKETS frames, returns (frames the
/// gateway's stack received, sensor counters).
fn run(extra: &[&str]) -> (u64, sensor_lab::sensor::StatsReport) {
    let lab = Lab::sender_gateway().expect("lab");
    let frames =
        Frames::spread(lab.sender_mac, lab.gateway_mac, &mixed_flows(12), PACKETS).expect("frames");
    let mut counter = PacketCounter::open(&lab.gateway, &lab.link.b).expect("counter");
    let delivered = Mutex::new(None);
    let r = scenario(
        &lab,
        Path::new(SENSOR),
        extra,
        &frames,
        Pacing {
            pps: Some(50_000),
            ..Pacing::default()
        },
        || {
            *delivered.lock().unwrap() = Some(counter.received()?);
            Ok(())
        },
    )
    .expect("scenario");
    assert_eq!(r.report.sent as u64, PACKETS);
    let delivered = delivered.into_inner().unwrap().expect("counter read");
    (delivered, r.output.stats)
}

#[test]
fn mirror_mode_counts_and_drops_everything() {
    if !require_root("mirror_mode_counts_and_drops_everything") {
        return;
    }
    let _serial = exclusive();

    let (delivered, stats) = run(&["--duration", "60", "--no-score"]);
    assert_eq!(delivered, PACKETS, "passive mode must deliver every frame");
    assert_eq!(stats.counter("packets_seen"), PACKETS);
    assert_eq!(stats.counter("mirror_dropped"), 0);

    let (delivered, stats) = run(&["--duration", "60", "--mirror", "--no-score"]);
    assert_eq!(delivered, 0, "mirror mode delivered frames to the stack");
    assert_eq!(stats.counter("packets_seen"), PACKETS);
    assert_eq!(stats.counter("parsed_ok"), PACKETS);
    assert_eq!(stats.counter("mirror_dropped"), PACKETS);
}
