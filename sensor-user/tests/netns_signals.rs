//! Signals to a live sensor: SIGUSR1 writes the outputs so far without
//! stopping it; SIGHUP reloads `--config`, validated as at start: a good
//! configuration is applied, a bad one is refused with its file and line
//! and the running one stays; both outcomes are counted in `--stats-out`.

use std::path::Path;
use std::time::{Duration, Instant};

use sensor_lab::generator::{Frames, Pacing, Sender, mixed_flows};
use sensor_lab::sensor::{PinsGuard, SensorRun, TempDir, exclusive, read_stats};
use sensor_lab::{Lab, require_root};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");
const START: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(30);

/// Waits until `path` exists (an output renamed into place).
fn wait_for_file(path: &Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} not written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigusr1_writes_the_outputs_so_far_and_the_sensor_keeps_running() {
    if !require_root("sigusr1_writes_the_outputs_so_far_and_the_sensor_keeps_running") {
        return;
    }
    let _serial = exclusive();
    let lab = Lab::sender_gateway().expect("lab");
    let _pins = PinsGuard::of(&lab.gateway, &lab.link.b).expect("pin directory");
    let dir = TempDir::new("sigusr1").expect("temp dir");
    let mut run = SensorRun::start_nsenter_logging(
        &lab.gateway,
        Path::new(SENSOR),
        &lab.link.b,
        dir.path(),
        &["--duration", "60", "--no-score"],
        "info",
    )
    .expect("start sensor");
    run.wait_logged("sensor running", START).expect("running");
    let frames =
        Frames::spread(lab.sender_mac, lab.gateway_mac, &mixed_flows(4), 500).expect("frames");
    let sender = Sender::open(&lab.sender, &lab.link.a).expect("sender");
    sender.send(&frames, Pacing::paced(10_000)).expect("send");
    std::thread::sleep(Duration::from_millis(200));

    let stats_path = dir.path().join(SensorRun::STATS);
    assert!(!stats_path.exists(), "stats written before the signal");
    run.signal(libc::SIGUSR1);
    run.wait_logged("SIGUSR1: outputs so far written", Duration::from_secs(10))
        .expect("dump logged");
    wait_for_file(&stats_path);
    let so_far = read_stats(&stats_path).expect("stats so far");
    assert_eq!(so_far.counter("packets_seen"), 500);
    let flows = sensor_lab::sensor::read_flows(&dir.path().join(SensorRun::FLOWS)).expect("flows");
    assert_eq!(flows.iter().map(|f| f.packets).sum::<u64>(), 500);
    assert!(dir.path().join(SensorRun::SKETCH).exists(), "sketch so far");
    assert!(
        run.is_running().expect("waitpid"),
        "SIGUSR1 stopped the sensor"
    );

    // More traffic after the dump: the final outputs count it too.
    sender.send(&frames, Pacing::paced(10_000)).expect("send");
    std::thread::sleep(Duration::from_millis(200));
    let out = run.stop(STOP).expect("stop");
    assert_eq!(out.stats.counter("packets_seen"), 1_000);
}

#[test]
fn sighup_applies_a_good_config_and_refuses_a_bad_one() {
    if !require_root("sighup_applies_a_good_config_and_refuses_a_bad_one") {
        return;
    }
    let _serial = exclusive();
    let lab = Lab::sender_gateway().expect("lab");
    let _pins = PinsGuard::of(&lab.gateway, &lab.link.b).expect("pin directory");
    let dir = TempDir::new("sighup").expect("temp dir");
    let config = dir.path().join("sensor.toml");
    let sink = |name: &str| format!("[[sinks]]\nkind = \"file\"\npath = \"{name}\"\n");
    std::fs::write(
        &config,
        format!("[thresholds]\nflood = 0.5\n\n{}", sink("before.jsonl")),
    )
    .expect("config");
    let config_arg = config.to_str().expect("utf-8 path");
    let mut run = SensorRun::start_nsenter_logging(
        &lab.gateway,
        Path::new(SENSOR),
        &lab.link.b,
        dir.path(),
        &[
            "--duration",
            "120",
            "--config",
            config_arg,
            "--workers",
            "1",
        ],
        "info",
    )
    .expect("start sensor");
    run.wait_logged("sensor running", START).expect("running");

    assert!(dir.path().join("before.jsonl").exists(), "sink opened");

    // A good configuration: applied, with its new sink opened and swapped in.
    std::fs::write(
        &config,
        format!("[thresholds]\nflood = 0.7\n\n{}", sink("after.jsonl")),
    )
    .expect("config");
    run.signal(libc::SIGHUP);
    run.wait_logged("SIGHUP: configuration reloaded", Duration::from_secs(10))
        .expect("reload logged");
    // The stage applies it between row batches and says what is in force.
    run.wait_logged("alert thresholds reloaded", Duration::from_secs(10))
        .expect("thresholds applied");
    assert!(
        run.stderr().contains("by_class: [inf, 0.7,"),
        "flood threshold 0.7 not in force: {}",
        run.stderr()
    );
    run.wait_logged("alert sinks replaced", Duration::from_secs(10))
        .expect("sinks swapped");
    assert!(dir.path().join("after.jsonl").exists(), "new sink opened");

    // A bad one: refused with file and line, and the sensor keeps running.
    std::fs::write(&config, "[thresholds]\nscan = 0.4\nflood = 1.5\n").expect("config");
    run.signal(libc::SIGHUP);
    run.wait_logged("SIGHUP: configuration refused", Duration::from_secs(10))
        .expect("refusal logged");
    let stderr = run.stderr();
    let refused = stderr
        .lines()
        .find(|l| l.contains("SIGHUP: configuration refused"))
        .expect("refusal line");
    assert!(
        refused.contains(&format!("{config_arg}:")) && refused.contains("`flood` = 1.5"),
        "{refused}"
    );
    assert!(
        run.is_running().expect("waitpid"),
        "SIGHUP stopped the sensor"
    );

    // Both outcomes are counted, in the outputs so far and at exit.
    run.signal(libc::SIGUSR1);
    let stats_path = dir.path().join(SensorRun::STATS);
    wait_for_file(&stats_path);
    let so_far = read_stats(&stats_path).expect("stats so far");
    assert_eq!(
        (
            so_far.config_reloads.applied,
            so_far.config_reloads.rejected
        ),
        (1, 1)
    );
    let out = run.stop(STOP).expect("stop");
    assert_eq!(
        (
            out.stats.config_reloads.applied,
            out.stats.config_reloads.rejected
        ),
        (1, 1)
    );
}
