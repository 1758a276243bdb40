//! `sensor stats --iface IF` reads the live counters of a running sensor
//! (pinned under /sys/fs/bpf) and agrees exactly with what was sent; once the
//! sensor has stopped, the pin is gone and `sensor stats` says so.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use sensor_lab::generator::send_mixed;
use sensor_lab::sensor::{OBSERVE, PinsGuard, SensorRun, TempDir, exclusive};
use sensor_lab::{Lab, Netns, require_root};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");
const PACKETS: u64 = 2_000;
/// The interface name both namespaces of the pin-keying test use.
const IFACE: &str = "sensed0";

/// `sensor stats --iface IFACE` in the gateway's network namespace, with the
/// host's /sys/fs/bpf.
fn sensor_stats(lab: &Lab, iface: &str) -> Output {
    stats_in(&lab.gateway, iface)
}

/// `sensor stats --iface IFACE` in `ns`, with the host's /sys/fs/bpf.
fn stats_in(ns: &Netns, iface: &str) -> Output {
    ns.nsenter_command(SENSOR)
        .args(["stats", "--iface", iface])
        .output()
        .expect("sensor stats")
}

/// A sender → gateway lab with an observing sensor attached on the gateway
/// side, started with nsenter, which keeps the host's /sys/fs/bpf where the
/// sensor pins its counters.
fn observed_gateway(tag: &str) -> (Lab, TempDir, String, SensorRun) {
    let lab = Lab::sender_gateway().expect("lab");
    let dir = TempDir::new(tag).expect("temp dir");
    let iface = lab.link.b.clone();
    let mut run =
        SensorRun::start_nsenter(&lab.gateway, Path::new(SENSOR), &iface, dir.path(), OBSERVE)
            .expect("start sensor");
    run.wait_ready(&lab.gateway).expect("attach");
    (lab, dir, iface, run)
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
    let (lab, _dir, iface, mut run) = observed_gateway("stats");
    let report = send_mixed(&lab, 8, PACKETS).expect("send");
    assert_eq!(report.sent as u64, PACKETS);

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

/// The one line of a failed command's stderr.
fn one_error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0].to_owned()
}

#[test]
fn a_killed_sensor_is_reported_dead_and_its_state_is_adopted() {
    if !require_root("a_killed_sensor_is_reported_dead_and_its_state_is_adopted") {
        return;
    }
    let _serial = exclusive();
    let (lab, dir, iface, mut run) = observed_gateway("stats-kill");
    let pins = PinsGuard::of(&lab.gateway, &iface).expect("pin directory");
    let out = sensor_stats(&lab, &iface);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    run.signal(libc::SIGKILL);
    let t = std::time::Instant::now();
    while run.is_running().expect("waitpid") {
        assert!(t.elapsed() < Duration::from_secs(10), "SIGKILL ignored");
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = one_error_line(&sensor_stats(&lab, &iface));
    assert!(
        line.starts_with(&format!("error: the sensor on {iface} (pid "))
            && line.ends_with(
                ") is not running; its state waits for the next `sensor run` to adopt it"
            ),
        "{line}"
    );
    // Its program stays attached through the pinned link and still counts.
    assert!(lab.gateway.has_xdp(&iface).expect("ip link"), "detached");
    // No output was truncated or left empty at its path.
    for name in [SensorRun::STATS, SensorRun::FLOWS, SensorRun::SKETCH] {
        assert!(
            !dir.path().join(name).exists(),
            "{name} exists after a crash"
        );
    }

    // The next start adopts the dead sensor's state and replaces its
    // program (already attached, so wait for the log, not for XDP).
    let dir2 = TempDir::new("stats-restart").expect("temp dir");
    let mut run = SensorRun::start_nsenter_logging(
        &lab.gateway,
        Path::new(SENSOR),
        &iface,
        dir2.path(),
        OBSERVE,
        "info",
    )
    .expect("restart sensor");
    run.wait_logged("sensor running", Duration::from_secs(30))
        .expect("attach again");
    assert!(
        run.stderr().contains("adopting the flow table"),
        "{}",
        run.stderr()
    );
    let out = sensor_stats(&lab, &iface);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    assert_eq!(
        live["counters"]["packets_seen"], 0,
        "nothing was sent: {live}"
    );
    run.stop(Duration::from_secs(15)).expect("stop");
    let line = one_error_line(&sensor_stats(&lab, &iface));
    assert!(line.contains("no running sensor"), "{line}");
    assert!(!pins.path().exists(), "pins left after a clean stop");
}

#[test]
fn same_named_interfaces_in_two_namespaces_keep_their_own_pins() {
    if !require_root("same_named_interfaces_in_two_namespaces_keep_their_own_pins") {
        return;
    }
    let _serial = exclusive();
    let nss: Vec<Netns> = ["pin-a", "pin-b"]
        .iter()
        .map(|role| {
            let ns = Netns::new(role).expect("netns");
            ns.ip(&[
                "link", "add", IFACE, "type", "veth", "peer", "name", "sensed1",
            ])
            .expect("veth");
            ns.link_up(IFACE).expect("up");
            ns.link_up("sensed1").expect("peer up");
            ns
        })
        .collect();
    let dirs: Vec<TempDir> = ["pin-a", "pin-b"]
        .iter()
        .map(|t| TempDir::new(t).expect("temp dir"))
        .collect();
    let args: Vec<&str> = OBSERVE.iter().copied().chain(["--mode", "skb"]).collect();
    let mut runs: Vec<SensorRun> = nss
        .iter()
        .zip(&dirs)
        .map(|(ns, dir)| {
            let mut run = SensorRun::start_nsenter(ns, Path::new(SENSOR), IFACE, dir.path(), &args)
                .expect("start sensor");
            run.wait_ready(ns).expect("attach");
            run
        })
        .collect();
    for ns in &nss {
        let out = stats_in(ns, IFACE);
        assert!(
            out.status.success(),
            "stats in {}: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Stopping the first sensor removes its pins only.
    let second = runs.pop().expect("second run");
    runs.pop()
        .expect("first run")
        .stop(Duration::from_secs(15))
        .expect("stop first");
    let line = one_error_line(&stats_in(&nss[0], IFACE));
    assert!(line.contains("no running sensor"), "{line}");
    let out = stats_in(&nss[1], IFACE);
    assert!(
        out.status.success(),
        "the second sensor lost its pins: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    second.stop(Duration::from_secs(15)).expect("stop second");
}
