//! Hot model reload on a running sensor while traffic flows: a promoted
//! version is picked up from the registry (file watch), swapped by every
//! worker at a batch boundary (the flow collector's beside the ring
//! workers'); a state file naming a version that does not
//! match the feature schema is refused (file watch and SIGHUP) with the
//! card's path and the reason while the running models keep scoring. Every
//! event reaches a worker and every scored row is scored once.

mod registry_util;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use registry_util::{add_version, copy_registry};
use sensor::model::registry::{REGISTRY_FILE, Registry};
use sensor_lab::generator::{Frames, Pacing, Sender, mixed_flows};
use sensor_lab::sensor::{PinsGuard, SensorRun, TempDir, exclusive};
use sensor_lab::{Lab, require_root};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");
const START: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(15);
/// Packets per round and rounds: traffic flows through every reload.
const PACKETS: u64 = 400;
const ROUNDS: u64 = 12;
/// Loopback of the gateway namespace (private to the test).
const METRICS_ADDR: &str = "127.0.0.1:9641";
/// A flow collector beside the ring workers (no exporter sends to it: its
/// worker must still swap models with them).
const COLLECT_ADDR: &str = "127.0.0.1:9642";

/// The sensor's metrics, read from inside the gateway namespace.
fn scrape(lab: &Lab) -> String {
    let out = lab
        .gateway
        .command("curl")
        .args(["-sS", "--max-time", "5", "--fail"])
        .arg(format!("http://{METRICS_ADDR}/metrics"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn promote(dir: &Path, version: &str) {
    let out = Command::new(SENSOR)
        .args([
            "models",
            "promote",
            "flow-classifier",
            version,
            "--models-dir",
        ])
        .arg(dir)
        .output()
        .expect("sensor models promote");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn promoted_model_swaps_in_and_a_bad_one_is_refused_while_traffic_flows() {
    if !require_root("promoted_model_swaps_in_and_a_bad_one_is_refused_while_traffic_flows") {
        return;
    }
    let _serial = exclusive();
    let lab = Lab::sender_gateway().expect("lab");
    let _pins = PinsGuard::of(&lab.gateway, &lab.link.b).expect("pin directory");
    let dir = TempDir::new("reload").expect("temp dir");
    let models = dir.path().join("models");
    std::fs::create_dir(&models).expect("models dir");
    copy_registry(&models);
    let shipped = Registry::new(&models).state().unwrap().unwrap().models["flow-classifier"]
        .active
        .clone();
    add_version(&models, "2.0.0+good", |_, _| {});
    let bad = add_version(&models, "2.0.0+schema", |_, card| {
        card["schema"]["features"][3]["name"] = "something_else".into();
    });
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
            "--models-dir",
            models.to_str().expect("utf-8 path"),
            "--eve-out",
            eve.to_str().expect("utf-8 path"),
            "--metrics-addr",
            METRICS_ADDR,
            "--collect",
            COLLECT_ADDR,
        ],
        "info",
    )
    .expect("start sensor");
    run.wait_logged("sensor running", START).expect("running");

    let frames =
        Frames::spread(lab.sender_mac, lab.gateway_mac, &mixed_flows(8), PACKETS).expect("frames");
    let sender = Sender::open(&lab.sender, &lab.link.a).expect("sender");
    std::thread::scope(|s| {
        let traffic = s.spawn(|| {
            for _ in 0..ROUNDS {
                sender.send(&frames, Pacing::paced(2_000)).expect("send");
            }
        });

        // A promotion, seen through the watch: swapped by every worker.
        std::thread::sleep(Duration::from_millis(300));
        promote(&models, "2.0.0+good");
        run.wait_logged("models reloaded: every worker swapped", WAIT)
            .expect("promotion picked up");
        assert!(
            run.stderr().contains("flow-classifier@2.0.0+good"),
            "{}",
            run.stderr()
        );
        // Two ring workers and the collector's.
        assert!(run.stderr().contains("(3 workers)"), "{}", run.stderr());

        // A state file naming a version that does not fit this build's
        // schema (written by hand, past `promote`'s own check): refused,
        // with the card's path and the reason.
        let state = std::fs::read_to_string(models.join(REGISTRY_FILE)).unwrap();
        std::fs::write(
            models.join(REGISTRY_FILE),
            state.replace("2.0.0+good", "2.0.0+schema"),
        )
        .unwrap();
        run.wait_logged("model reload refused", WAIT)
            .expect("bad model refused");
        let log = run.stderr();
        assert!(
            log.contains(&bad.with_extension("card.json").display().to_string()),
            "{log}"
        );
        assert!(log.contains("something_else"), "{log}");
        // The promoted version keeps scoring.
        let metrics = scrape(&lab);
        for needle in [
            "xdp_sensor_model_info{role=\"classifier\",version=\"flow-classifier@2.0.0+good\"} 1",
            "xdp_sensor_model_reloads_total{outcome=\"applied\"} 1",
            "xdp_sensor_model_reloads_total{outcome=\"rejected\"} 1",
        ] {
            assert!(metrics.contains(needle), "no `{needle}` in\n{metrics}");
        }
        // SIGHUP: the same refusal (no --config: that part is refused too).
        let refusals = log.matches("model reload refused").count();
        run.signal(libc::SIGHUP);
        let t = std::time::Instant::now();
        while run.stderr().matches("model reload refused").count() == refusals {
            assert!(
                t.elapsed() < WAIT,
                "SIGHUP did not reload: {}",
                run.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        // Back to the shipped version through a promotion.
        promote(&models, &shipped);
        let t = std::time::Instant::now();
        while run
            .stderr()
            .matches("models reloaded: every worker swapped")
            .count()
            < 2
        {
            assert!(t.elapsed() < WAIT, "second promotion: {}", run.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        traffic.join().expect("traffic");
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = run.stop(STOP).expect("stop");
    let stats = &out.stats;
    assert_eq!(stats.counter("packets_seen"), PACKETS * ROUNDS);
    let r = stats.model_reloads;
    eprintln!("model reloads: {r:?}");
    assert_eq!((r.applied, r.rejected), (2, 2), "{r:?}");
    assert!(r.last_latency_us > 0 && r.max_latency_us >= r.last_latency_us);
    // Every event the kernel emitted reached a worker, none lost …
    let events: u64 = stats.workers.iter().map(|w| w.events).sum();
    assert_eq!(events, stats.counter("events_emitted"));
    assert_eq!(stats.counter("events_lost"), 0);
    // … and every row was scored exactly once, across the swaps.
    let latency = stats.latency.as_ref().expect("latency");
    let scored: u64 = latency.event_to_score.iter().map(|w| w.latency.count).sum();
    assert_eq!(scored, events, "rows scored vs events");
}
