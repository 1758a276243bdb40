//! `--metrics-addr`: a real Prometheus server (Debian's `prometheus`,
//! started and stopped by the test with its own config and data directory)
//! scrapes a running sensor inside the lab's gateway namespace; the target
//! is up, the kernel's packet counter matches the packets sent, and
//! `promtool check metrics` accepts the exposition.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sensor_lab::generator::{Frames, Pacing, Sender, mixed_flows};
use sensor_lab::lab::{Service, require_tool};
use sensor_lab::netns::Netns;
use sensor_lab::sensor::{PinsGuard, SensorRun, TempDir, exclusive};
use sensor_lab::{Lab, require, require_root};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");
const START: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(30);
/// Loopback of the gateway namespace: private to the test, so fixed ports
/// cannot collide with anything on the host.
const METRICS_ADDR: &str = "127.0.0.1:9640";
const PROMETHEUS_ADDR: &str = "127.0.0.1:9090";
const PACKETS: u64 = 500;

/// GET `url` from inside `ns` (curl, bounded by a timeout).
fn http_get(ns: &Netns, url: &str) -> Option<String> {
    let out = ns
        .command("curl")
        .args(["-sS", "--max-time", "5", "--fail", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The single value of an instant query to the Prometheus server, if the
/// query has exactly one result.
fn query(ns: &Netns, expr: &str) -> Option<f64> {
    let out = ns
        .command("curl")
        .args(["-sS", "--max-time", "5", "--fail", "-G"])
        .arg(format!("http://{PROMETHEUS_ADDR}/api/v1/query"))
        .arg("--data-urlencode")
        .arg(format!("query={expr}"))
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

/// Polls `f` until it returns true or `timeout` passes.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

#[test]
fn prometheus_scrapes_a_running_sensor_and_promtool_accepts_it() {
    const NAME: &str = "prometheus_scrapes_a_running_sensor_and_promtool_accepts_it";
    if !require_root(NAME) {
        return;
    }
    let (Ok(prometheus), Ok(promtool), Ok(_)) = (
        require_tool("prometheus"),
        require_tool("promtool"),
        require_tool("curl"),
    ) else {
        let _ = require(NAME, "prometheus, promtool and curl", false);
        return;
    };
    let _serial = exclusive();
    let lab = Lab::sender_gateway().expect("lab");
    let _pins = PinsGuard::of(&lab.gateway, &lab.link.b).expect("pin directory");
    let dir = TempDir::new("metrics").expect("temp dir");
    let eve = dir.path().join("eve.json");
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
            "--eve-out",
            eve.to_str().expect("utf-8 path"),
        ],
        "info",
    )
    .expect("start sensor");
    run.wait_logged("sensor running", START).expect("running");
    assert!(
        run.stderr()
            .contains(&format!("metrics served at http://{METRICS_ADDR}/metrics")),
        "{}",
        run.stderr()
    );

    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: sensor\n    static_configs:\n      - targets: ['{METRICS_ADDR}']\n"
        ),
    )
    .expect("prometheus config");
    let mut cmd = lab.gateway.command(&prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={PROMETHEUS_ADDR}"));
    let log = dir.path().join("prometheus.log");
    let mut server = Service::start("prometheus", cmd, &log).expect("start prometheus");

    let frames =
        Frames::spread(lab.sender_mac, lab.gateway_mac, &mixed_flows(4), PACKETS).expect("frames");
    let sender = Sender::open(&lab.sender, &lab.link.a).expect("sender");
    sender.send(&frames, Pacing::paced(10_000)).expect("send");

    let healthy = eventually(Duration::from_secs(40), || {
        query(&lab.gateway, "up{job=\"sensor\"}") == Some(1.0)
            && query(&lab.gateway, "xdp_sensor_kernel_packets_seen_total") == Some(PACKETS as f64)
    });
    server.check_alive(&log).expect("prometheus still running");
    assert!(
        healthy,
        "the target is not up with {PACKETS} packets seen: up={:?} packets_seen={:?}\n{}",
        query(&lab.gateway, "up{job=\"sensor\"}"),
        query(&lab.gateway, "xdp_sensor_kernel_packets_seen_total"),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Every event the kernel emitted reached a worker, and the workers'
    // counters say so (published at their ticks).
    assert!(
        eventually(Duration::from_secs(20), || {
            let emitted = query(&lab.gateway, "xdp_sensor_kernel_events_emitted_total");
            emitted.is_some_and(|e| e > 0.0)
                && emitted == query(&lab.gateway, "sum(xdp_sensor_worker_events_total)")
        }),
        "worker events never matched the kernel's events emitted"
    );

    let body = http_get(&lab.gateway, &format!("http://{METRICS_ADDR}/metrics")).expect("scrape");
    // For the record (speed is measured, not asserted, in a test): curl's
    // view of one scrape, connection included.
    if let Ok(out) = lab
        .gateway
        .command("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{time_total}",
            "--max-time",
            "5",
        ])
        .arg(format!("http://{METRICS_ADDR}/metrics"))
        .output()
    {
        eprintln!(
            "one scrape: {} s, {} bytes",
            String::from_utf8_lossy(&out.stdout),
            body.len()
        );
    }
    for needle in [
        "xdp_sensor_model_info{role=\"classifier\"",
        "xdp_sensor_event_to_score_seconds_bucket{worker=\"0\",le=\"0.001\"}",
        "xdp_sensor_batch_size_rows_count{worker=\"1\"}",
        "xdp_sensor_config_reloads_total{outcome=\"rejected\"} 0",
        "xdp_sensor_alerts_opened_total{class=\"flood\",severity=\"1\"}",
    ] {
        assert!(body.contains(needle), "no `{needle}` in\n{body}");
    }
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), body.as_bytes())
        .expect("promtool stdin");
    let checked = check.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        http_get(&lab.gateway, &format!("http://{METRICS_ADDR}/other")).is_none(),
        "only /metrics is served"
    );

    // The traffic is over: what the pipelines scored by now is final.
    let scored = query(&lab.gateway, "sum(xdp_sensor_rows_scored_total)").expect("rows scored");
    assert!(scored > 0.0, "no row scored");
    drop(server);
    let out = run.stop(STOP).expect("stop");
    assert_eq!(out.stats.counter("packets_seen"), PACKETS);

    // `--stats-out` has the event->score latency of every scored row, per
    // worker, from the same histograms.
    let latency = out.stats.latency.expect("latency in --stats-out");
    assert_eq!(latency.event_to_score.len(), 2, "{latency:?}");
    let counted: u64 = latency.event_to_score.iter().map(|w| w.latency.count).sum();
    assert_eq!(counted as f64, scored, "{latency:?}");
    for w in &latency.event_to_score {
        let l = w.latency;
        assert!(
            l.count == 0 || (0.0 < l.p50_us && l.p50_us <= l.p99_us && l.p99_us <= l.max_us),
            "{w:?}"
        );
        // Sent and scored within this test's few seconds.
        assert!(l.max_us < 10e6, "{w:?}");
    }
}
