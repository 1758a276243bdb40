//! Drift monitoring on a real veth, with the shipped models.
//!
//! The generated lab mix is far from the training data: against the
//! shipped baseline several features have a PSI of 7 to 12 (the test prints
//! them), so the shipped card reports drift on any of it. The test
//! therefore does what an operator re-baselining a site does: a first,
//! recorded run of the normal mix gives the classifier card's quantiles
//! and shares. Against that card a mix shifted on purpose (1 400-byte UDP
//! datagrams to high ports) must raise a `drift` record naming the
//! features it moved (frame size, protocol, port class), and a second run
//! of the normal mix (other sources) must move none of them.
//!
//! A second run of the normal mix is not quiet in every feature: what a row
//! holds depends on when the kernel reports its flow, so features measured
//! in time or per time, and some that follow from timing (frame-size
//! spread of a flow so far, unanswered handshakes), differ between two runs
//! of the same mix by PSI 0.2 to 5.7 (printed; the sender's reached rate
//! varies by some 10 % on a shared machine, and a 4 s run has four kernel
//! sketch epochs). The test does not hide that behind a raised threshold
//! or an `ignore` list chosen on these captures; it checks what the shift
//! is about.
//!
//! The mix is stationary on purpose: short flows from sources used once,
//! generation after generation, so that a window of it looks like the
//! whole. A fresh sensor's features are still filling for their first
//! second (the 1 s host windows, the kernel sketches' first epoch), so each
//! run starts with drift off, sends 2 s of warm-up traffic, and turns
//! drift on by a SIGHUP reload; the baseline comes from the rows after it.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sensor::model::{
    ModelCard,
    drift::{COUNTS, DriftBaseline},
};
use sensor_lab::generator::{FlowSpec, Frames, Pacing, Sender};
use sensor_lab::sensor::{NetTest, SensorRun, TempDir, net_test};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");
const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
/// What the shifted mix changes: frame sizes, protocols, the port class.
const SHIFTED: [&str; 6] = [
    "flow_frame_mean",
    "flow_dport_class",
    "proto_tcp",
    "proto_udp",
    "proto_icmp",
    "flow_syn_unanswered",
];
const LEVELS: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];
/// Flows per generation and packets per flow: 1 200 packets, 0.3 s at
/// [`PPS`].
const FLOWS: u32 = 200;
const PER_FLOW: u64 = 6;
const PPS: u64 = 4_000;
/// Generations of warm-up (2.1 s) and of the judged traffic (4.2 s: the
/// 3 s window is judged a few times).
const WARM_UP: u32 = 7;
const JUDGED: u32 = 14;

/// The generations `from..to` of a mix from the sources of 10.`net`.0.0/16
/// to eight servers: the normal profile (TCP to 443, UDP to 53 and echo
/// requests, small packets of varied flags and sizes) or the shifted one
/// (1 400-byte UDP datagrams to high ports).
fn mix(net: &NetTest, block: u8, from: u32, to: u32, shifted: bool) -> Frames {
    let mut all = net.frames();
    for g in from..to {
        let flows: Vec<FlowSpec> = (0..FLOWS)
            .map(|i| {
                let n = g * FLOWS + i + 1;
                let src = IpAddr::V4(Ipv4Addr::new(10, block, (n >> 8) as u8, n as u8));
                let dst = IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1 + (i % 8) as u8));
                let sport = 20_000 + i as u16;
                match (shifted, i % 5) {
                    (true, _) => FlowSpec::udp(src, dst, sport, 40_000 + i as u16),
                    (false, 0 | 3) => FlowSpec::tcp(src, dst, sport, 443),
                    (false, 1 | 4) => FlowSpec::udp(src, dst, sport, 53),
                    (false, _) => FlowSpec::echo(src, dst),
                }
            })
            .collect();
        if shifted {
            let mut f = net.frames();
            let ids: Vec<u32> = flows.iter().map(|s| f.add_flow(*s)).collect();
            for p in 0..u64::from(FLOWS) * PER_FLOW {
                let id = ids[(p % u64::from(FLOWS)) as usize];
                f.push(id, 0, 1_400, (p / u64::from(FLOWS)) as u32).unwrap();
            }
            all.extend(&f);
        } else {
            all.extend(&net.spread(&flows, u64::from(FLOWS) * PER_FLOW));
        }
    }
    all
}

/// A config with a short drift window, on or off; alert state files in
/// `dir`.
fn write_config(dir: &Path, enabled: bool) -> PathBuf {
    let path = dir.join("sensor.toml");
    std::fs::write(
        &path,
        format!(
            "[alerts]\nalert_log = \"{a}\"\nverdict_store = \"{v}\"\n\n\
             [drift]\nenabled = {enabled}\nwindow_s = 3\nmin_rows = 2000\n",
            a = dir.join("alert-records.jsonl").display(),
            v = dir.join("verdicts.jsonl").display(),
        ),
    )
    .unwrap();
    path
}

/// What a run left: its `drift` records and the feature rows recorded
/// after drift was turned on.
struct Run {
    drift: Vec<serde_json::Value>,
    /// `--stats-out`'s drift figures.
    stats: Option<sensor_common::records::DriftReport>,
    rows: Vec<Vec<f32>>,
    /// The metrics endpoint's text at the end of the traffic.
    metrics: String,
}

/// The metrics endpoint, inside the gateway namespace.
const METRICS_ADDR: &str = "127.0.0.1:9643";

/// The value of the sample `name` in Prometheus text, if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Runs the sensor with `models`: warm-up with drift off, a SIGHUP turning
/// it on, then `judged`.
fn run(net: &NetTest, tag: &str, models: &Path, warm_up: &Frames, judged: &Frames) -> Run {
    let dir = TempDir::new(&format!("drift-{tag}")).expect("temp dir");
    let cfg = write_config(dir.path(), false);
    let (eve, rec) = (dir.path().join("eve.json"), dir.path().join("rows.csv"));
    let args: Vec<String> = [
        "--duration".into(),
        "60".into(),
        "--models-dir".into(),
        models.display().to_string(),
        "--config".into(),
        cfg.display().to_string(),
        "--eve-out".into(),
        eve.display().to_string(),
        "--record-out".into(),
        rec.display().to_string(),
        "--metrics-addr".into(),
        METRICS_ADDR.into(),
    ]
    .into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lab = &net.lab;
    let mut sensor = SensorRun::start_nsenter_logging(
        &lab.gateway,
        Path::new(SENSOR),
        &lab.link.b,
        dir.path(),
        &args,
        "info",
    )
    .expect("sensor start");
    sensor.wait_ready(&lab.gateway).expect("sensor ready");
    let sender = Sender::open(&lab.sender, &lab.link.a).expect("sender");
    // One frame per send call: frames sent in batches make the flows'
    // timing features vary from run to run.
    let pacing = Pacing {
        batch: 1,
        ..Pacing::paced(PPS)
    };
    let sent = sender.send(warm_up, pacing).expect("warm-up");
    assert_eq!(sent.sent, warm_up.len(), "{tag}: warm-up sent");
    let drift = |sensor: &mut SensorRun, enabled: bool| {
        write_config(dir.path(), enabled);
        let reloads = sensor.stderr().matches("configuration reloaded").count();
        sensor.signal(libc::SIGHUP);
        let t = Instant::now();
        while sensor.stderr().matches("configuration reloaded").count() == reloads {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{tag}: SIGHUP did not reload: {}",
                sensor.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    drift(&mut sensor, true);
    let on_ns = sensor_common::clock::monotonic_ns();
    let sent = sender.send(judged, pacing).expect("judged traffic");
    assert_eq!(sent.sent, judged.len(), "{tag}: every frame sent");
    let off_ns = sensor_common::clock::monotonic_ns();
    // Off again before the traffic's end (its last flows unfinished, none
    // starting) fills a window; then the figures, published once a
    // second, keep the last judged PSI.
    drift(&mut sensor, false);
    std::thread::sleep(Duration::from_millis(1_300));
    let metrics = lab
        .gateway
        .command("curl")
        .args(["-sS", "--max-time", "5", "--fail"])
        .arg(format!("http://{METRICS_ADDR}/metrics"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let out = sensor.stop(Duration::from_secs(15)).expect("sensor stop");
    assert!(
        out.stderr.contains("rows lost before recording: 0"),
        "{}",
        out.stderr
    );
    let text = std::fs::read_to_string(&eve).unwrap_or_default();
    let drift = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("EVE line is JSON"))
        .filter(|v| v["event_type"] == "drift")
        .collect();
    let first = sensor::sinks::recorder::KEY_COLUMNS.len();
    let n = sensor::features::SCHEMA.len();
    let rows = std::fs::read_to_string(&rec)
        .expect("recording")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            let ts: u64 = c[0].parse().expect("event time");
            (on_ns..off_ns).contains(&ts).then(|| {
                c[first..first + n]
                    .iter()
                    .map(|v| v.parse().expect("feature value"))
                    .collect()
            })
        })
        .collect();
    Run {
        drift,
        stats: out.stats.drift.clone(),
        rows,
        metrics,
    }
}

/// PSI per feature of `rows` against `card`, highest first.
fn psi_of(card: &ModelCard, rows: &[Vec<f32>]) -> Vec<(String, f64)> {
    let b = DriftBaseline::from_card(card).expect("card has a baseline");
    let mut counts = vec![0u64; COUNTS];
    for r in rows {
        b.count(r, f32::NAN, &mut counts);
    }
    let mut psi = Vec::new();
    b.psi_into(&counts, &mut psi);
    let mut out: Vec<(String, f64)> = b.names.iter().cloned().zip(psi).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

fn show(psi: &[(String, f64)]) -> String {
    psi.iter()
        .take(6)
        .map(|(n, p)| format!("{n}={p:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quantile `q` of sorted `v`, interpolated linearly (numpy's default, as
/// the training script computes the card's).
fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// A flat models directory: the shipped models, the classifier card's
/// baseline (quantiles and shares, as `models/train.py` writes them)
/// computed from `rows`.
fn rebaselined_models(dir: &Path, rows: &[Vec<f32>]) -> PathBuf {
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let src = Path::new(MODELS);
    for name in ["flow-classifier", "flow-autoencoder"] {
        let onnx = format!("{name}.onnx");
        std::fs::copy(src.join(&onnx), models.join(&onnx)).unwrap();
        let card_name = format!("{name}.card.json");
        let mut card: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join(&card_name)).unwrap()).unwrap();
        if name == "flow-classifier" {
            let (mut train, mut cdf) = (serde_json::Map::new(), serde_json::Map::new());
            for (i, f) in sensor::features::SCHEMA.iter().enumerate() {
                let mut v: Vec<f64> = rows.iter().map(|r| f64::from(r[i])).collect();
                v.sort_by(f64::total_cmp);
                let q: Vec<f64> = LEVELS
                    .iter()
                    .map(|&l| (quantile(&v, l) * 1e6).round() / 1e6)
                    .collect();
                let c: Vec<f64> = q
                    .iter()
                    .map(|&x| {
                        let below = v.partition_point(|&y| y <= x + 1e-6 * (1.0 + x.abs()));
                        (below as f64 / v.len() as f64 * 1e6).round() / 1e6
                    })
                    .collect();
                train.insert(f.name.to_owned(), serde_json::json!(q));
                cdf.insert(f.name.to_owned(), serde_json::json!(c));
            }
            card["baseline_quantiles"] = serde_json::json!({
                "quantiles": LEVELS, "benign_train": train, "benign_train_cdf": cdf
            });
        }
        std::fs::write(models.join(card_name), card.to_string()).unwrap();
    }
    models
}

#[test]
fn a_shifted_mix_raises_drift_naming_what_moved_and_the_normal_mix_moves_none_of_it() {
    let Some(net) = net_test(
        "a_shifted_mix_raises_drift_naming_what_moved_and_the_normal_mix_moves_none_of_it",
    ) else {
        return;
    };
    let dir = TempDir::new("drift").expect("temp dir");
    let shipped = Path::new(MODELS);
    let all = JUDGED + WARM_UP;

    // 1. The normal mix with the shipped models, recorded.
    let calibrate = run(
        &net,
        "calibrate",
        shipped,
        &mix(&net, 10, 0, WARM_UP, false),
        &mix(&net, 10, WARM_UP, all, false),
    );
    let rows = &calibrate.rows;
    assert!(rows.len() >= 4000, "{} rows recorded", rows.len());
    let shipped_card = ModelCard::load(&shipped.join("flow-classifier.card.json")).unwrap();
    eprintln!(
        "normal lab mix ({} rows) vs the shipped baseline: {}",
        rows.len(),
        show(&psi_of(&shipped_card, rows))
    );
    let models = rebaselined_models(dir.path(), rows);
    let card = ModelCard::load(&models.join("flow-classifier.card.json")).unwrap();
    // The card's shares reproduce its own rows (up to the rounding of cut
    // points to `f32`).
    let own = psi_of(&card, rows);
    eprintln!("normal lab mix vs its own baseline: {}", show(&own));
    assert!(own.iter().all(|(_, p)| *p < 1e-3), "{own:?}");

    // 2. The same profile from other sources: none of the shift's features
    // moves.
    let normal = run(
        &net,
        "normal",
        &models,
        &mix(&net, 11, 0, WARM_UP, false),
        &mix(&net, 11, WARM_UP, all, false),
    );
    let again = psi_of(&card, &normal.rows);
    eprintln!(
        "normal lab mix, second run ({} rows) vs its baseline: {}; the shift's features: {}",
        normal.rows.len(),
        show(&again),
        show(
            &again
                .iter()
                .filter(|(n, _)| SHIFTED.contains(&n.as_str()))
                .cloned()
                .collect::<Vec<_>>()
        )
    );
    assert!(normal.rows.len() >= 4000, "{} rows", normal.rows.len());
    let named = |r: &serde_json::Value| -> Vec<String> {
        r["xdp_sensor"]["drift"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for r in &normal.drift {
        let moved = named(r);
        eprintln!("normal mix, drift record: {moved:?}");
        assert!(
            moved.iter().all(|n| !SHIFTED.contains(&n.as_str())),
            "the normal mix moved what the shift is about: {r}"
        );
    }

    // 3. Large UDP datagrams to high ports after the same warm-up: drift,
    // naming what moved.
    let shifted = run(
        &net,
        "shifted",
        &models,
        &mix(&net, 12, 0, WARM_UP, false),
        &mix(&net, 12, WARM_UP, all, true),
    );
    eprintln!(
        "shifted mix ({} rows) vs the normal baseline: {}",
        shifted.rows.len(),
        show(&psi_of(&card, &shifted.rows))
    );
    let start = shifted
        .drift
        .iter()
        .find(|r| r["xdp_sensor"]["drift"]["state"] == "start")
        .unwrap_or_else(|| panic!("no drift record for the shifted mix: {:?}", shifted.drift));
    eprintln!("drift record: {start}");
    let d = &start["xdp_sensor"]["drift"];
    assert_eq!(
        d["baseline"],
        format!("{}@{}", card.name, card.version).as_str()
    );
    assert_eq!(d["threshold"], 0.2);
    assert!(d["rows"].as_u64().unwrap() >= 2000);
    let moved = d["features"].as_array().unwrap();
    let psi: Vec<f64> = moved.iter().map(|f| f["psi"].as_f64().unwrap()).collect();
    assert!(psi.windows(2).all(|w| w[0] >= w[1]), "sorted: {psi:?}");
    assert!(psi.iter().all(|p| *p > 0.2), "{psi:?}");
    // The metrics say so too: the records counted, each feature's PSI.
    let events = sample(&shifted.metrics, "xdp_sensor_drift_events_total");
    assert_eq!(
        events,
        Some(shifted.drift.len() as f64),
        "{}",
        shifted.metrics
    );
    let frame_mean = sample(
        &shifted.metrics,
        "xdp_sensor_feature_psi{feature=\"flow_frame_mean\"}",
    );
    assert!(frame_mean.is_some_and(|p| p > 0.2), "{}", shifted.metrics);
    // And `--stats-out` at the stop.
    let stats = shifted.stats.as_ref().expect("drift in --stats-out");
    assert_eq!(stats.events, shifted.drift.len() as u64);
    assert!(stats.psi["flow_frame_mean"] > 0.2, "{stats:?}");
    // What the shift changed is among the moved features: the frame size,
    // the protocol and the port class.
    let named = named(start);
    for f in ["flow_frame_mean", "proto_udp", "flow_dport_class"] {
        assert!(named.iter().any(|n| n == f), "{f} not named: {named:?}");
    }
}
