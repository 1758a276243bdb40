//! Error paths of the `sensor` binary: a wrong interface fails fast with a
//! non-zero exit and one clear line, as root (inside an empty namespace) and
//! as an unprivileged user, and leaves earlier output files as they were.

use std::process::Command;
use std::time::{Duration, Instant};

use sensor_lab::root::is_root;
use sensor_lab::{Netns, require, require_root};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");

/// Runs `cmd`, asserts it fails within 20 s with one stderr line that names
/// `iface` and is not a backtrace, and returns that line.
fn check_fails_clearly(mut cmd: Command, iface: &str) -> String {
    let start = Instant::now();
    let out = cmd.output().expect("run sensor");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit {:?}, stderr: {stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].contains(iface),
        "line does not name the interface: {}",
        lines[0]
    );
    assert!(!lines[0].contains("Backtrace"), "{}", lines[0]);
    lines[0].to_owned()
}

#[test]
fn nonexistent_interface_fails_with_one_clear_line() {
    let iface = format!("nosuch{}", std::process::id() % 100_000);
    if is_root() {
        // An empty namespace: the interface certainly does not exist.
        let ns = Netns::new("err").expect("netns");
        let mut cmd = ns.command(SENSOR);
        cmd.args(["run", "--iface", &iface, "--duration", "5"]);
        check_fails_clearly(cmd, &iface);
    } else {
        // Without root the binary must still fail cleanly (missing
        // interface or missing privilege), not hang or panic.
        let mut cmd = Command::new(SENSOR);
        cmd.args(["run", "--iface", &iface, "--duration", "5"]);
        check_fails_clearly(cmd, &iface);
    }
}

#[test]
fn a_failed_start_leaves_previous_outputs_untouched() {
    let iface = format!("nosuch{}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("sensor-failed-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let stats = dir.join("stats.json");
    let previous = b"{\"counters\":{\"packets_seen\":7}}\n";
    std::fs::write(&stats, previous).expect("previous stats");
    let ns = is_root().then(|| Netns::new("outs").expect("netns"));
    let mut cmd = ns
        .as_ref()
        .map_or_else(|| Command::new(SENSOR), |ns| ns.command(SENSOR));
    cmd.args(["run", "--iface", &iface, "--no-score", "--stats-out"])
        .arg(&stats)
        .arg("--flows-out")
        .arg(dir.join("flows.jsonl"));
    check_fails_clearly(cmd, &iface);
    assert_eq!(
        std::fs::read(&stats).expect("stats kept"),
        previous,
        "the previous --stats-out changed"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["stats.json"], "no new or temporary file is left");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn existing_interface_without_xdp_support_is_reported_not_hung() {
    // Loopback in a fresh namespace exists but its driver has no native XDP:
    // the default (native) attach is refused with the hint to use skb mode.
    if !require_root("existing_interface_without_xdp_support_is_reported_not_hung") {
        return;
    }
    let ns = Netns::new("lo").expect("netns");
    let mut cmd = ns.command(SENSOR);
    cmd.args(["run", "--iface", "lo", "--duration", "1"]);
    let line = check_fails_clearly(cmd, "lo");
    assert!(
        line.contains("native XDP") && line.contains("try --mode skb"),
        "does not say native XDP is missing or how to go on: {line}"
    );
}

#[test]
fn unprivileged_run_explains_missing_privilege() {
    let dir = sensor_lab::sensor::TempDir::new("unpriv").expect("temp dir");
    let mut cmd = if is_root() {
        // Drop to nobody with setpriv (util-linux) on a world-readable copy.
        let setpriv = Command::new("setpriv").arg("--version").output();
        if !require(
            "unprivileged_run_explains_missing_privilege",
            "setpriv (util-linux)",
            setpriv.is_ok_and(|o| o.status.success()),
        ) {
            return;
        }
        let bin = dir.path().join("sensor");
        std::fs::copy(SENSOR, &bin).expect("copy sensor");
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin);
        cmd
    } else {
        Command::new(SENSOR)
    };
    cmd.args(["run", "--iface", "lo", "--duration", "1"]);
    let out = cmd.output().expect("run sensor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].contains("root") || lines[0].contains("CAP_BPF"),
        "does not say which privilege is missing: {}",
        lines[0]
    );
}
