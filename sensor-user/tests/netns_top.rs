//! `sensor top` in a real terminal: a detached tmux session (its own tmux
//! socket, killed by a guard) inside the lab's gateway namespace runs the
//! view against a running sensor's `--metrics-addr`; the pane shows the
//! packet rate while paced traffic flows, the exact packet total after it,
//! and the model versions the endpoint reports; `q` ends the session.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sensor_lab::generator::{Frames, Pacing, Sender, mixed_flows};
use sensor_lab::lab::require_tool;
use sensor_lab::netns::Netns;
use sensor_lab::sensor::{PinsGuard, SensorRun, TempDir, exclusive};
use sensor_lab::{Lab, require, require_root};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");
const START: Duration = Duration::from_secs(30);
/// Loopback of the gateway namespace: private to the test.
const METRICS_ADDR: &str = "127.0.0.1:9644";
const PACKETS: u64 = 2_000;
/// 2 000 packets over 5 s: long enough for several refreshes mid-traffic.
const PPS: u64 = 400;

/// The test's own tmux server (`tmux -L <socket>`), never a user's; killed
/// on drop, also when the test fails.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn capture(&self) -> String {
        self.cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn alive(&self) -> bool {
        self.cmd()
            .args(["has-session", "-t", "top"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

/// Polls `f` until it returns true or `timeout` passes.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The token after `packets/s ` in the pane, if any.
fn packet_rate(pane: &str) -> Option<String> {
    let at = pane.find("packets/s ")? + "packets/s ".len();
    pane[at..].split_whitespace().next().map(str::to_owned)
}

/// The model versions the endpoint reports (curl inside the namespace).
fn model_versions(ns: &Netns) -> Vec<String> {
    let out = ns
        .command("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{METRICS_ADDR}/metrics"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("xdp_sensor_model_info{"))
        .filter_map(|l| {
            let v = l.split("version=\"").nth(1)?;
            v.split('"').next().map(str::to_owned)
        })
        .collect()
}

#[test]
fn top_in_tmux_shows_rates_totals_and_models_and_quits_on_q() {
    const NAME: &str = "top_in_tmux_shows_rates_totals_and_models_and_quits_on_q";
    if !require_root(NAME) {
        return;
    }
    let (Ok(_), Ok(_)) = (require_tool("tmux"), require_tool("curl")) else {
        let _ = require(NAME, "tmux and curl", false);
        return;
    };
    let _serial = exclusive();
    let lab = Lab::sender_gateway().expect("lab");
    let _pins = PinsGuard::of(&lab.gateway, &lab.link.b).expect("pin directory");
    let dir = TempDir::new("top").expect("temp dir");
    let mut run = SensorRun::start_nsenter_logging(
        &lab.gateway,
        Path::new(SENSOR),
        &lab.link.b,
        dir.path(),
        &[
            "--duration",
            "120",
            "--workers",
            "2",
            "--metrics-addr",
            METRICS_ADDR,
        ],
        "info",
    )
    .expect("start sensor");
    run.wait_logged("sensor running", START).expect("running");

    let tmux = Tmux {
        socket: format!("sensor-top-test-{}", std::process::id()),
    };
    let status = lab
        .gateway
        .command("tmux")
        .args([
            "-L",
            &tmux.socket,
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "160",
            "-y",
            "50",
        ])
        .arg(format!(
            "{SENSOR} top --metrics {METRICS_ADDR} --iface {} --interval 0.5",
            lab.link.b
        ))
        .status()
        .expect("tmux");
    assert!(status.success(), "tmux new-session: {status}");
    assert!(
        eventually(Duration::from_secs(10), || tmux
            .capture()
            .contains("scraped in")),
        "the view never scraped:\n{}",
        tmux.capture()
    );

    let frames =
        Frames::spread(lab.sender_mac, lab.gateway_mac, &mixed_flows(4), PACKETS).expect("frames");
    let sender = Sender::open(&lab.sender, &lab.link.a).expect("sender");
    let mut rates = Vec::new();
    std::thread::scope(|s| {
        let sending = s.spawn(|| sender.send(&frames, Pacing::paced(PPS)));
        while !sending.is_finished() {
            rates.extend(packet_rate(&tmux.capture()));
            std::thread::sleep(Duration::from_millis(300));
        }
        sending.join().expect("sender thread").expect("send");
    });
    // While traffic flows, the view shows a non-zero packet rate (the
    // paced rate, give or take a refresh's rounding).
    assert!(
        rates
            .iter()
            .any(|r| r.parse::<f64>().is_ok_and(|r| r >= PPS as f64 / 4.0)),
        "no packet rate near {PPS}/s while sending: {rates:?}\n{}",
        tmux.capture()
    );
    let total = format!("packets {PACKETS} total");
    assert!(
        eventually(Duration::from_secs(10), || tmux.capture().contains(&total)),
        "{total:?} never shown:\n{}",
        tmux.capture()
    );
    let versions = model_versions(&lab.gateway);
    assert!(!versions.is_empty(), "the endpoint reports no model");
    let pane = tmux.capture();
    for v in &versions {
        assert!(pane.contains(v.as_str()), "model {v} not shown:\n{pane}");
    }
    eprintln!("sensor top pane:\n{pane}");

    let status = tmux
        .cmd()
        .args(["send-keys", "-t", "top", "q"])
        .status()
        .expect("send-keys");
    assert!(status.success(), "send-keys: {status}");
    assert!(
        eventually(Duration::from_secs(5), || !tmux.alive()),
        "the view did not quit on q:\n{}",
        tmux.capture()
    );
    run.stop(Duration::from_secs(30)).expect("sensor stops");
}
