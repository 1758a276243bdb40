//! `sensor stats --iface IF` reads the live counters of a running sensor
//! (pinned under /sys/fs/bpf) and agrees exactly with what was sent; once the
//! sensor has stopped, the pin is gone and `sensor stats` says so.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use sensor_lab::generator::{Frames, Pacing, Sender, mixed_flows};
use sensor_lab::sensor::{OBSERVE, SensorRun, TempDir, exclusive};
use sensor_lab::{Lab, require_root};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");
const PACKETS: u64 = 2_000;

/// `sensor stats --iface IFACE` in the gateway's network namespace, with the
/// host's /sys/fs/bpf.
fn sensor_stats(lab: &Lab, iface: &str) -> Output {
    lab.gateway
        .nsenter_command(SENSOR)
        .args(["stats", "--iface", iface])
        .output()
        .expect("sensor stats")
}

#[test]
fn live_counters_match_what_was_sent() {
    if !require_root("live_counters_match_what_was_sent") {
        return;
    }
    assert!(
        Path::new("/sys/fs/bpf").is_dir(),
        "no BPF filesystem at /sys/fs/bpf: cannot test pinned counters"
    );
    let _serial = exclusive();
    let lab = Lab::sender_gateway().expect("lab");
    let dir = TempDir::new("stats").expect("temp dir");
    let iface = lab.link.b.clone();
    // nsenter keeps the host's /sys/fs/bpf, where the sensor pins its counters.
    let mut run =
        SensorRun::start_nsenter(&lab.gateway, Path::new(SENSOR), &iface, dir.path(), OBSERVE)
            .expect("start sensor");
    run.wait_ready(&lab.gateway).expect("attach");
    let frames =
        Frames::spread(lab.sender_mac, lab.gateway_mac, &mixed_flows(8), PACKETS).expect("frames");
    let report = Sender::open(&lab.sender, &lab.link.a)
        .expect("sender")
        .send(&frames, Pacing::default())
        .expect("send");
    assert_eq!(report.sent as u64, PACKETS);
    std::thread::sleep(Duration::from_millis(200));

    let out = sensor_stats(&lab, &iface);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sensor stats failed: {stderr}");
    let live: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    assert_eq!(live["iface"], iface.as_str());
    assert_eq!(live["counters"]["packets_seen"], PACKETS, "{live}");
    assert_eq!(live["counters"]["parsed_ok"], PACKETS, "{live}");

    // SIGHUP and SIGUSR1 (reload and dump requests) never stop a sensor.
    run.signal(libc::SIGHUP);
    run.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        run.is_running().expect("waitpid"),
        "SIGHUP or SIGUSR1 stopped the sensor: {}",
        run.stderr()
    );
    let out = sensor_stats(&lab, &iface);
    assert!(out.status.success(), "stats after SIGHUP/SIGUSR1");

    let output = run.stop(Duration::from_secs(15)).expect("stop");
    assert_eq!(output.stats.counter("packets_seen"), PACKETS);

    // Stopped: the pin was removed, and `sensor stats` says there is no sensor.
    let out = sensor_stats(&lab, &iface);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stats of a stopped sensor succeeded");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(&iface), "{stderr}");
}
