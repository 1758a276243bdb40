//! `sensor run --user`: once attached, the sensor runs as an unprivileged
//! account in every thread (workers, scoring, alert stage), with no
//! capability left, and still counts every packet, writes its outputs
//! (owned by that account) and detaches at exit.
//! An unknown account, or `--user` without root, stops the run with one
//! line before anything is attached.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sensor::capture::privileges::ThreadCreds;
use sensor::files::OUTPUT_MODE;
use sensor_lab::generator::send_mixed;
use sensor_lab::sensor::{SensorRun, TempDir, exclusive};
use sensor_lab::{Lab, require_root};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");
const PACKETS: u64 = 1_500;
/// `nobody`/`nogroup`, present on every Debian-like system: the test adds
/// no account of its own.
const USER: &str = "nobody";
const GROUP: &str = "nogroup";

fn account_ids() -> (u32, u32) {
    let user = nix::unistd::User::from_name(USER)
        .expect("passwd")
        .expect("no `nobody` account");
    let group = nix::unistd::Group::from_name(GROUP)
        .expect("group")
        .expect("no `nogroup` group");
    (user.uid.as_raw(), group.gid.as_raw())
}

/// The identity of every thread of `pid`.
fn threads(pid: u32) -> Vec<(String, ThreadCreds)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc/<pid>/task")
        .map(|t| {
            let t = t.expect("task entry");
            let status = std::fs::read_to_string(t.path().join("status")).expect("task status");
            let name = status.lines().next().unwrap_or_default().to_owned();
            (
                name,
                ThreadCreds::parse(&status).expect("Uid/Gid/Cap lines"),
            )
        })
        .collect()
}

#[test]
fn unprivileged_sensor_counts_and_writes_its_outputs() {
    if !require_root("unprivileged_sensor_counts_and_writes_its_outputs") {
        return;
    }
    let _serial = exclusive();
    let (uid, gid) = account_ids();
    let lab = Lab::sender_gateway().expect("lab");
    let dir = TempDir::new("privileges").expect("temp dir");
    // The account writes its outputs here (renamed into place at exit).
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown output dir");
    let iface = lab.link.b.clone();
    // Scoring on: the model workers and the alert stage run before the
    // switch too, and must switch with the rest.
    let eve = dir.path().join("eve.json");
    let eve = eve.to_str().expect("utf-8 path");
    let extra = [
        "--duration",
        "60",
        "--eve-out",
        eve,
        "--user",
        USER,
        "--group",
        GROUP,
    ];
    let mut run = SensorRun::start(&lab.gateway, Path::new(SENSOR), &iface, dir.path(), &extra)
        .expect("start");
    run.wait_ready(&lab.gateway).expect("attach");
    let pid = run.pid().expect("running");

    let tasks = threads(pid);
    assert!(
        tasks.len() > 1,
        "workers and control thread expected: {tasks:?}"
    );
    for (name, creds) in &tasks {
        assert_eq!(creds.uids, [uid; 4], "{name}: {creds:?}");
        assert_eq!(creds.gids, [gid; 4], "{name}: {creds:?}");
        assert_eq!(creds.cap_eff, 0, "{name}: CapEff {creds:?}");
        assert_eq!(creds.cap_prm, 0, "{name}: CapPrm {creds:?}");
        assert_eq!(creds.cap_amb, 0, "{name}: CapAmb {creds:?}");
    }

    let report = send_mixed(&lab, 8, PACKETS).expect("send");
    assert_eq!(report.sent as u64, PACKETS);

    let out = run.stop(Duration::from_secs(20)).expect("stop");
    assert_eq!(
        out.stats.counters["packets_seen"], PACKETS,
        "{}",
        out.stderr
    );
    assert_eq!(out.flows.len(), 8, "{}", out.stderr);
    assert!(
        !lab.gateway.has_xdp(&iface).expect("ip link"),
        "closing the link must detach without a capability"
    );
    assert!(
        Path::new(eve).is_file(),
        "the EVE file opened before the switch"
    );
    for name in [SensorRun::FLOWS, SensorRun::STATS, SensorRun::SKETCH] {
        let meta = std::fs::metadata(dir.path().join(name)).expect(name);
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{name} owner");
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            OUTPUT_MODE,
            "{name} mode"
        );
    }
}

#[test]
fn bad_accounts_stop_the_run_with_one_line() {
    if !require_root("bad_accounts_stop_the_run_with_one_line") {
        return;
    }
    let run = |extra: &[&str], as_account: Option<(u32, u32)>| {
        let mut cmd = Command::new(SENSOR);
        cmd.args(["run", "--iface", "lo", "--no-score", "--duration", "1"])
            .args(extra);
        if let Some((uid, gid)) = as_account {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().expect("sensor run");
        assert!(!out.status.success());
        String::from_utf8(out.stderr).expect("utf-8")
    };
    let unknown = run(&["--user", "no-such-user-xdp-sensor"], None);
    assert!(
        unknown.contains("--user `no-such-user-xdp-sensor`: no such user"),
        "{unknown}"
    );
    let group = run(
        &["--user", USER, "--group", "no-such-group-xdp-sensor"],
        None,
    );
    assert!(
        group.contains("--group `no-such-group-xdp-sensor`: no such group"),
        "{group}"
    );
    let root = run(&["--user", "root"], None);
    assert!(root.contains("is root (uid 0)"), "{root}");
    let (uid, gid) = account_ids();
    let unprivileged = run(&["--user", USER], Some((uid, gid)));
    assert!(
        unprivileged.contains(&format!(
            "--user needs the sensor to start as root (it runs as uid {uid})"
        )),
        "{unprivileged}"
    );
}
