//! What each fuzz target does with one input: call the parser the sensor
//! uses on that kind of input, then check what must hold for any input (no
//! panic, counters that add up, an accepted value that is in range, an
//! error that names its file). One definition for both runners: the
//! libFuzzer targets in `fuzz_targets/` call these functions, and
//! `sensor-user/tests/fuzz_corpus.rs` runs every committed corpus file
//! through them on stable Rust in the normal test suite.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use sensor::{
    alerts::{
        AlertRecord, AlertsError, ExportTrainingArgs, Inventory, LogPaths, SensorFile, TuneArgs,
        VerdictRecord, run_export_training, run_tune, store::read_all,
    },
    capture::workers::{EventHandler, NoopHandler, WorkerState},
    features::{FeatureConfig, FeatureExtractor, FeatureVec, N_FEATURES},
    model::{card::threshold_problem, row::AttackClass},
};
use sensor_common::{FlowEvent, records::FlowRecord};
use sensor_lab::replay::{AttackRule, Capture, Side};

/// What a target runs on one input.
pub type Target = fn(&[u8]);

/// Every fuzz target: its name (the file in `fuzz_targets/`, the folder in
/// `corpus/`) and what it runs on one input.
pub const TARGETS: [(&str, Target); 5] = [
    ("event_decoder", event_decoder),
    ("config_parser", config_parser),
    ("inventory_parser", inventory_parser),
    ("capture_reader", capture_reader),
    ("feedback_store", feedback_store),
];

/// Flows the decoding worker keeps: small, so eviction and the "map full"
/// path are reached by short inputs.
const WORKER_FLOWS: usize = 8;

/// Feeds every decoded event to the feature extractor, as the scoring
/// handler does, and writes each row the way the flow report does.
struct FeatureHandler {
    extractor: FeatureExtractor,
    row: FeatureVec,
}

impl EventHandler for FeatureHandler {
    fn on_event(&mut self, ev: &FlowEvent) {
        self.extractor.process(ev, &mut self.row);
    }

    fn on_tick(&mut self, now_ns: u64) {
        self.extractor.expire(now_ns);
    }
}

/// Ring record bytes (back-to-back 128-byte `FlowEvent`s, as a worker reads
/// them) through the worker's decoder and the feature extractor.
pub fn event_decoder(data: &[u8]) {
    let extractor = FeatureExtractor::new(FeatureConfig {
        max_flows: 16,
        max_hosts: 16,
        ..FeatureConfig::default()
    });
    let handler = FeatureHandler {
        extractor,
        row: [0.0; N_FEATURES],
    };
    let mut w = WorkerState::new(0, WORKER_FLOWS, Box::new(handler));
    w.dispatch_stream(data);
    let size = size_of::<FlowEvent>();
    let records = data.len() / size + usize::from(!data.len().is_multiple_of(size));
    let c = w.counters;
    assert_eq!(
        c.events + c.decode_errors,
        records as u64,
        "every record is an event or a decode error"
    );
    assert_eq!(c.start + c.update + c.fin + c.rst, c.events, "kinds add up");
    assert!(w.flows().len() <= WORKER_FLOWS, "flow map over capacity");
    let tracked: u64 = w.flows().values().map(|f| f.events).sum();
    assert_eq!(
        tracked + c.untracked,
        c.events,
        "every event tracked or counted"
    );
    for (key, flow) in w.flows() {
        let rec = FlowRecord::new(key, &flow.last, flow.events, flow.start);
        serde_json::to_string(&rec).expect("a flow record serialises");
    }
    if let Some(last) = data.chunks_exact(size).last() {
        w.tick(bytemuck::pod_read_unaligned::<FlowEvent>(last).ts_ns);
    }
    w.finish();
    // The same bytes one record at a time, misaligned: decoded through a copy.
    let mut shifted = vec![0u8; data.len().min(4 * size) + 1];
    shifted[1..].copy_from_slice(&data[..data.len().min(4 * size)]);
    let mut w = WorkerState::new(0, 0, Box::new(NoopHandler));
    for rec in shifted[1..].chunks(size) {
        w.dispatch(rec);
    }
}

/// A config file's text through the loader `sensor run`, `sensor tune` and
/// the live reload use.
pub fn config_parser(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/sensor/sensor.toml");
    match SensorFile::parse(path, text) {
        Ok(file) => {
            for (name, &value) in &file.thresholds {
                let class = AttackClass::ALL
                    .into_iter()
                    .find(|c| c.name() == name)
                    .expect("accepted class names are classes");
                assert!(
                    threshold_problem(class, value).is_none(),
                    "accepted threshold {name} = {value}"
                );
            }
            for p in [&file.alerts.verdict_store, &file.alerts.alert_log] {
                assert!(
                    p.as_os_str().is_empty() || p.is_absolute(),
                    "{}",
                    p.display()
                );
            }
        }
        Err(e) => check_config_error(&e, path, text),
    }
}

/// An error about a text file names the file, and a line that exists.
fn check_config_error(e: &AlertsError, path: &Path, text: &str) {
    let msg = e.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    if let AlertsError::Config {
        line: Some(line), ..
    } = e
    {
        assert!(
            *line >= 1 && *line <= text.matches('\n').count() + 1,
            "line {line}: {msg}"
        );
    }
}

/// An inventory file's text through its loader; every lookup of an
/// accepted inventory gives an asset.
pub fn inventory_parser(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/sensor/inventory.toml");
    match Inventory::parse(path, text) {
        Ok(inv) => {
            let mut probes = vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V4(Ipv4Addr::BROADCAST),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::from(u128::MAX)),
            ];
            // Addresses written in the input itself, in both forms.
            for word in text.split(|c: char| !(c.is_ascii_hexdigit() || ".:".contains(c))) {
                if let Ok(a) = word.parse::<IpAddr>() {
                    probes.push(a);
                    if let IpAddr::V4(v4) = a {
                        probes.push(IpAddr::V6(v4.to_ipv6_mapped()));
                    }
                }
            }
            for a in probes {
                let asset = inv.lookup(a);
                assert!(!asset.name.is_empty(), "{a}: empty asset name");
            }
        }
        Err(e) => check_config_error(&e, path, text),
    }
}

/// A pcap or pcapng file through the reader `sensor-lab` replays captures
/// with, then the per-frame work a replay and its labels do.
pub fn capture_reader(data: &[u8]) {
    let Ok(cap) = Capture::parse(Path::new("fuzz.pcap"), data) else {
        return;
    };
    let (offsets, _clamped) = cap.offsets_ns();
    assert_eq!(offsets.len(), cap.len());
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "offsets go back");
    let _ = cap.duration();
    let roles = cap.attack_roles(&AttackRule::All(Side::Unknown));
    if let Some(&a) = roles.attackers.iter().next() {
        let rule = AttackRule::Between { a, b: Vec::new() };
        let _ = cap.attack_roles(&rule);
        let _ = cap.first_attack(&rule);
    }
    for i in 0..cap.len() {
        let _ = sensor_lab::replay::ip_pair(cap.frame(i));
        let _ = cap.timestamp_ns(i);
    }
}

/// Files of the feedback target, one set per process: libFuzzer runs one
/// input at a time.
struct StoreFiles {
    dir: PathBuf,
    config: PathBuf,
    store: PathBuf,
    alert_log: PathBuf,
}

fn store_files() -> &'static StoreFiles {
    static FILES: OnceLock<StoreFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sensor-fuzz-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz directory");
        StoreFiles {
            config: dir.join("sensor.toml"),
            store: dir.join("verdicts.jsonl"),
            alert_log: dir.join("alert-records.jsonl"),
            dir,
        }
    })
}

/// Removes the feedback target's files (the corpus test calls this when
/// done; a fuzzing process leaves them for its crash report).
pub fn remove_scratch_files() {
    let _ = std::fs::remove_dir_all(&store_files().dir);
}

/// The committed models, whose cards give `sensor tune` its thresholds.
fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// Lines a log reader must account for: complete, non-empty ones.
fn complete_lines(bytes: &[u8]) -> u64 {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    bytes[..end]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64
}

/// A verdict store and an alert record log (the input's two parts, split
/// at its first NUL byte) through the readers and the commands that use
/// them: `sensor tune --apply` and `sensor export-training`.
pub fn feedback_store(data: &[u8]) {
    let (verdicts, alerts) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let f = store_files();
    let write = |p: &Path, bytes: &[u8]| std::fs::write(p, bytes).expect("write a fuzz file");
    write(&f.store, verdicts);
    write(&f.alert_log, alerts);
    // Tuning on every verdict; the cards give the thresholds.
    write(&f.config, b"[tuning]\nmin_verdicts = 1\n");

    let (v, vrep) = read_all::<VerdictRecord>(&f.store).expect("read the store");
    assert_eq!(vrep.records, v.len() as u64);
    assert_eq!(vrep.records + vrep.corrupt_lines, complete_lines(verdicts));
    assert_eq!(vrep.torn_tail, verdicts.last().is_some_and(|&b| b != b'\n'));
    let (a, arep) = read_all::<AlertRecord>(&f.alert_log).expect("read the log");
    assert_eq!(arep.records + arep.corrupt_lines, complete_lines(alerts));
    assert_eq!(arep.records, a.len() as u64);

    let paths = LogPaths {
        store: Some(f.store.clone()),
        alert_log: Some(f.alert_log.clone()),
    };
    let tune = TuneArgs {
        apply: true,
        config: f.config.clone(),
        models_dir: Some(models_dir()),
        paths: paths.clone(),
    };
    let tuned = run_tune(&tune, &mut std::io::sink()).expect("sensor tune");
    for t in &tuned {
        if t.old.is_finite() {
            assert!(t.new >= t.old, "tuning lowered {:?}: {t:?}", t.class);
        }
    }
    // What tune wrote, the sensor must accept at its next start.
    if let Err(e) = SensorFile::load(&f.config) {
        panic!("sensor tune --apply wrote a config the sensor refuses: {e}");
    }
    let export = ExportTrainingArgs {
        out: f.dir.join("training.csv"),
        config: Some(f.config.clone()),
        paths,
    };
    match run_export_training(&export, &mut std::io::sink()) {
        Ok(_) | Err(AlertsError::Invalid { .. }) => {}
        Err(e) => panic!("sensor export-training: {e}"),
    }
}
