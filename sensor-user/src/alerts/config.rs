//! Configuration of the alert stage: the sections of the sensor's TOML file it
//! reads, and the model cards that give default thresholds, feature names and
//! baseline distributions.
//!
//! Other sections of the sensor file are ignored here (they belong to other
//! stages); unknown keys inside the sections read here are errors, so a typo
//! never silently keeps a default.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::AlertsError;
use crate::model::row::{AttackClass, N_CLASSES};

/// Default location of the sensor's configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sensor/sensor.toml";
/// Default verdict store when neither the config nor the command line names one.
pub const DEFAULT_VERDICT_STORE: &str = "/var/lib/sensor/verdicts.jsonl";
/// Default alert record log.
pub const DEFAULT_ALERT_LOG: &str = "/var/lib/sensor/alert-records.jsonl";

/// Threshold a class gets when neither a model card nor the config sets one:
/// high, so an uncalibrated model stays quiet rather than noisy.
pub const BUILTIN_CLASS_THRESHOLD: f32 = 0.9;

/// The parts of the sensor configuration file the alert stage reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SensorFile {
    pub sensor: SensorSection,
    pub models: ModelsSection,
    pub alerts: AlertsSection,
    /// Per-class overrides of the model cards' thresholds, written by
    /// `sensor tune --apply`. Keys are class names; `anomaly` is the
    /// autoencoder's reconstruction-error threshold.
    pub thresholds: BTreeMap<String, f32>,
    pub tuning: TuningSection,
    pub sinks: Vec<SinkConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorSection {
    /// Name of this sensor in every record (`host`).
    pub name: String,
    /// Interface the sensor watches (`in_iface`).
    pub interface: String,
}

impl Default for SensorSection {
    fn default() -> Self {
        Self {
            name: "sensor".into(),
            interface: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsSection {
    /// Model card (JSON) of the classifier, next to its ONNX file.
    pub classifier_card: Option<PathBuf>,
    /// Model card (JSON) of the autoencoder.
    pub autoencoder_card: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsSection {
    /// An open alert with no detection for this long closes (and a closing
    /// record is emitted). Also the dedup suppression window.
    pub quiet_period_s: f64,
    /// Minimum time between two update records of one alert.
    pub update_interval_s: f64,
    /// An incident stays joinable this long after its last activity.
    pub incident_window_s: f64,
    /// Caps on state; beyond them the least recently active entry is evicted.
    pub max_open_alerts: usize,
    pub max_incidents: usize,
    /// Top contributing features reported per alert.
    pub top_features: usize,
    /// Inventory file (TOML) for enrichment.
    pub inventory: Option<PathBuf>,
    /// Verdict store written by `sensor feedback`.
    pub verdict_store: PathBuf,
    /// Alert record log: what tuning and export need per alert.
    pub alert_log: PathBuf,
    /// How often the stage polls the verdict store and the config file.
    pub feedback_poll_ms: u64,
    /// An alert opens only once this many detected rows share its key
    /// (class, attacker, victim) within `corroborate_window_s`: one stray
    /// row, such as a single spoofed SYN scored as a probe, is not an
    /// attack. 1 opens on the first row (for every class). Scans have
    /// their own rule (`scan_ports_per_host`, `scan_hosts`).
    pub corroborate_rows: u32,
    /// Window for `corroborate_rows` and the scan rule.
    pub corroborate_window_s: f64,
    /// A scan alert opens once the source's detected probes reach this many
    /// distinct ports (and protocols) on one host (a vertical scan)…
    pub scan_ports_per_host: u32,
    /// … or this many distinct hosts (a horizontal scan), within
    /// `corroborate_window_s`. Probes of one target count once. Devices
    /// retrying an unreachable cloud fail against a handful of hosts with
    /// one or two ports each, which neither bar reaches; the bars are
    /// Zeek's idea (distinct ports per host, distinct hosts), lower because
    /// every probe counted here was already flagged by the model.
    pub scan_hosts: u32,
    /// Keys waiting for corroboration, at most; when full, expired keys are
    /// dropped, and all of them if that frees less than an eighth (counted
    /// in `corroboration_evicted`).
    pub max_pending: usize,
    /// A flood detection counts only while its victim receives at least
    /// this many packets per second (its 1 s window, whole host): a flood is
    /// volume, and a handful of ICMP errors or multicast announcements the
    /// model finds flood-like are not one. A victim flooded at `r` packets/s
    /// crosses the floor after about `flood_min_pps / r` seconds (the window
    /// fills linearly); 0 turns the floor off.
    pub flood_min_pps: f64,
    /// An anomaly alert opens when one client's upload-heavy connections to
    /// one server (each sent at least 1 KiB and three times what it
    /// received) reach this many, started at regular intervals: a beacon
    /// carrying data out, as low-and-slow exfiltration does (counted from
    /// 3 to 32). 0 turns the rule off.
    pub beacon_connections: u32,
    /// The intervals between those connections' starts are regular when
    /// their median absolute deviation is at most this fraction of their
    /// median.
    pub beacon_max_jitter: f64,
    /// Upload-heavy connections older than this are forgotten.
    pub beacon_window_s: f64,
}

impl Default for AlertsSection {
    fn default() -> Self {
        Self {
            quiet_period_s: 120.0,
            update_interval_s: 60.0,
            incident_window_s: 600.0,
            max_open_alerts: 10_000,
            max_incidents: 10_000,
            top_features: 3,
            inventory: None,
            verdict_store: DEFAULT_VERDICT_STORE.into(),
            alert_log: DEFAULT_ALERT_LOG.into(),
            feedback_poll_ms: 1000,
            corroborate_rows: 3,
            corroborate_window_s: 60.0,
            scan_ports_per_host: 3,
            scan_hosts: 16,
            max_pending: 100_000,
            flood_min_pps: 200.0,
            beacon_connections: 12,
            beacon_max_jitter: 0.05,
            beacon_window_s: 3600.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TuningSection {
    /// Cost of one false positive (an alert an analyst dismissed).
    pub fp_cost: f64,
    /// Cost of one false negative (a confirmed attack a threshold would hide).
    pub fn_cost: f64,
    /// Classes with fewer verdicts keep their threshold.
    pub min_verdicts: usize,
}

impl Default for TuningSection {
    fn default() -> Self {
        Self {
            fp_cost: 1.0,
            fn_cost: 100.0,
            min_verdicts: 3,
        }
    }
}

/// One output sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    Stdout,
    /// A file rotated by size: `path`, `path.1` … `path.<keep-1>`.
    File {
        path: PathBuf,
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
        #[serde(default = "default_keep")]
        keep: usize,
    },
    /// A Unix datagram socket (one record per datagram; dropped when the
    /// reader is slow or absent, counted).
    UnixDatagram {
        path: PathBuf,
    },
    /// A Unix stream socket (newline-delimited; reconnects, drops while down).
    UnixStream {
        path: PathBuf,
    },
}

fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_keep() -> usize {
    5
}

impl SensorFile {
    /// Parses the file at `path`; relative paths inside are resolved against
    /// the file's directory.
    ///
    /// # Errors
    /// With the path and line number when the file is unreadable or invalid.
    pub fn load(path: &Path) -> Result<Self, AlertsError> {
        let text = std::fs::read_to_string(path).map_err(|source| AlertsError::Io {
            path: path.to_path_buf(),
            action: "read",
            source,
        })?;
        let mut file: SensorFile = parse_toml(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = file.models.classifier_card.as_mut() {
            fix(p);
        }
        if let Some(p) = file.models.autoencoder_card.as_mut() {
            fix(p);
        }
        if let Some(p) = file.alerts.inventory.as_mut() {
            fix(p);
        }
        fix(&mut file.alerts.verdict_store);
        fix(&mut file.alerts.alert_log);
        for s in &mut file.sinks {
            match s {
                SinkConfig::Stdout => {}
                SinkConfig::File { path, .. }
                | SinkConfig::UnixDatagram { path }
                | SinkConfig::UnixStream { path } => fix(path),
            }
        }
        for key in file.thresholds.keys() {
            if class_by_name(key).is_none_or(|c| c == AttackClass::Benign) {
                return Err(AlertsError::Config {
                    path: path.to_path_buf(),
                    line: None,
                    message: format!(
                        "[thresholds] has unknown class `{key}` (expected flood, scan, bruteforce, anomaly)"
                    ),
                });
            }
        }
        Ok(file)
    }
}

/// Deserialises TOML, turning errors into [`AlertsError::Config`] with a line.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, AlertsError> {
    toml_edit::de::from_str(text).map_err(|e| AlertsError::Config {
        path: path.to_path_buf(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim().to_string(),
    })
}

/// 1-based line number of byte offset `at`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The class with this stable name.
#[must_use]
pub fn class_by_name(name: &str) -> Option<AttackClass> {
    AttackClass::ALL.into_iter().find(|c| c.name() == name)
}

/// Robust location and scale of one feature in the training data, for the
/// "top contributing features" of an alert.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Baseline {
    pub center: f32,
    pub scale: f32,
}

/// What the alert stage takes from a model card.
///
/// Accepted shape (JSON, next to the ONNX file), as `models/train.py` writes it:
///
/// ```json
/// {
///   "name": "flow-classifier", "version": "3.0.0+1a2b3c",
///   "schema": {"version": 3, "features": [{"name": "syn_ratio", "unit": "ratio"}, ...]},
///   "thresholds": {"attack_score": 0.72, "chosen_by": "..."},
///   "baseline_quantiles": {"quantiles": [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99],
///                          "benign_train": {"syn_ratio": [0, 0, 0, 0.01, 0.05, 0.3, 0.6], ...}}
/// }
/// ```
///
/// and the autoencoder's `"thresholds": {"anomaly_score": 0.031}`. Also
/// accepted: `features` / `feature_names` at the top level (names or objects
/// with `name`); per-class entries in `thresholds` (`"scan": 0.85`, overriding
/// `attack_score` for that class) and `anomaly_threshold`; `baseline` keyed by
/// feature name (or an array aligned with the features) with `p25`/`p50`/`p75`,
/// `median` and `iqr`, or `mean` and `std`. Non-numeric or unknown threshold
/// entries (descriptions) are ignored.
#[derive(Clone, Debug, Default)]
pub struct ModelCard {
    pub name: String,
    pub version: String,
    pub feature_names: Vec<String>,
    /// Per-class probability thresholds the card recommends.
    pub thresholds: BTreeMap<AttackClass, f32>,
    /// Reconstruction-error threshold (autoencoder cards).
    pub anomaly_threshold: Option<f32>,
    /// Aligned with `feature_names`; `None` where the card has no baseline.
    pub baseline: Vec<Option<Baseline>>,
}

impl ModelCard {
    /// Loads and validates a card.
    ///
    /// # Errors
    /// With the path and reason when the file is unreadable or malformed.
    pub fn load(path: &Path) -> Result<Self, AlertsError> {
        let text = std::fs::read_to_string(path).map_err(|source| AlertsError::Io {
            path: path.to_path_buf(),
            action: "read",
            source,
        })?;
        let bad = |message: String, line: Option<usize>| AlertsError::ModelCard {
            path: path.to_path_buf(),
            line,
            message,
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string(), Some(e.line())))?;
        Self::from_json(&v).map_err(|m| bad(m, None))
    }

    /// Builds a card from its JSON value.
    ///
    /// # Errors
    /// A message naming the offending field.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let obj = v.as_object().ok_or("a model card must be a JSON object")?;
        let mut card = ModelCard {
            name: obj
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("model")
                .to_string(),
            version: match obj.get("version") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => "unknown".into(),
            },
            ..Self::default()
        };
        let feats = obj
            .get("features")
            .or_else(|| obj.get("feature_names"))
            .or_else(|| obj.get("schema").and_then(|s| s.get("features")));
        if let Some(feats) = feats {
            let arr = feats.as_array().ok_or("`features` must be an array")?;
            for f in arr {
                let name = f
                    .as_str()
                    .or_else(|| f.get("name").and_then(|n| n.as_str()))
                    .ok_or("every `features` entry must be a name or an object with `name`")?;
                card.feature_names.push(name.to_string());
            }
        }
        if let Some(t) = obj.get("thresholds") {
            let t = t.as_object().ok_or("`thresholds` must be an object")?;
            let num = |k: &str, v: &serde_json::Value| {
                v.as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| format!("threshold `{k}` must be a number"))
            };
            // One threshold on 1 − P(benign) for every attack class; a
            // class-specific entry overrides it.
            if let Some(v) = t.get("attack_score") {
                let x = num("attack_score", v)?;
                for c in [
                    AttackClass::Flood,
                    AttackClass::Scan,
                    AttackClass::BruteForce,
                ] {
                    card.thresholds.insert(c, x);
                }
            }
            for (k, v) in t {
                match k.as_str() {
                    "anomaly_score" | "anomaly" => card.anomaly_threshold = Some(num(k, v)?),
                    "benign" => return Err("`thresholds` cannot name `benign`".into()),
                    _ => {
                        // Descriptive entries (definition, how it was chosen,
                        // validation cost) are for people, not for us.
                        if let Some(c) = class_by_name(k) {
                            card.thresholds.insert(c, num(k, v)?);
                        }
                    }
                }
            }
        }
        if let Some(a) = obj.get("anomaly_threshold") {
            card.anomaly_threshold =
                Some(a.as_f64().ok_or("`anomaly_threshold` must be a number")? as f32);
        }
        card.baseline = vec![None; card.feature_names.len()];
        match obj.get("baseline") {
            Some(serde_json::Value::Object(m)) => {
                for (i, name) in card.feature_names.iter().enumerate() {
                    card.baseline[i] = m.get(name).and_then(baseline_of);
                }
            }
            Some(serde_json::Value::Array(a)) => {
                for (i, e) in a.iter().enumerate().take(card.baseline.len()) {
                    card.baseline[i] = baseline_of(e);
                }
            }
            _ => {}
        }
        // The training script's form: quantile levels plus, per feature, the
        // values at those levels on benign training rows.
        if let Some(bq) = obj.get("baseline_quantiles") {
            let levels: Vec<f64> = bq
                .get("quantiles")
                .and_then(|q| q.as_array())
                .ok_or("`baseline_quantiles.quantiles` must be an array")?
                .iter()
                .map(|x| x.as_f64().ok_or("quantile levels must be numbers"))
                .collect::<Result<_, _>>()?;
            let per = bq
                .get("benign_train")
                .and_then(|b| b.as_object())
                .ok_or("`baseline_quantiles.benign_train` must be an object")?;
            for (i, name) in card.feature_names.iter().enumerate() {
                if let Some(vals) = per.get(name).and_then(|v| v.as_array()) {
                    let at = |q: f64| {
                        levels
                            .iter()
                            .position(|l| (l - q).abs() < 1e-9)
                            .and_then(|j| vals.get(j))
                            .and_then(serde_json::Value::as_f64)
                    };
                    card.baseline[i] = quantile_baseline(&at);
                }
            }
        }
        Ok(card)
    }
}

/// Center p50; scale the IQR / 1.349, or, for features whose middle half is
/// constant (common for counts that are mostly zero), the 5–95 % range / 3.29
/// or the 1–99 % range / 4.65.
fn quantile_baseline(at: &dyn Fn(f64) -> Option<f64>) -> Option<Baseline> {
    let center = at(0.5)?;
    let spread = |lo: f64, hi: f64, k: f64| match (at(lo), at(hi)) {
        (Some(a), Some(b)) if b - a > 1e-9 => Some((b - a) / k),
        _ => None,
    };
    let scale = spread(0.25, 0.75, 1.349)
        .or_else(|| spread(0.05, 0.95, 3.29))
        .or_else(|| spread(0.01, 0.99, 4.65))
        .unwrap_or(0.0);
    Some(finish_baseline(center, scale))
}

fn finish_baseline(center: f64, scale: f64) -> Baseline {
    // A constant feature has zero spread; keep z finite.
    let scale = if scale.is_finite() && scale > 1e-9 {
        scale
    } else {
        1e-6_f64.max(center.abs() * 1e-3)
    };
    Baseline {
        center: center as f32,
        scale: scale as f32,
    }
}

fn baseline_of(v: &serde_json::Value) -> Option<Baseline> {
    let g = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    let (center, scale) = if let (Some(q1), Some(q2), Some(q3)) = (g("p25"), g("p50"), g("p75")) {
        (q2, (q3 - q1) / 1.349)
    } else if let (Some(m), Some(iqr)) = (g("median"), g("iqr")) {
        (m, iqr / 1.349)
    } else if let (Some(m), Some(s)) = (g("mean"), g("std")) {
        (m, s)
    } else {
        return None;
    };
    Some(finish_baseline(center, scale))
}

/// Thresholds in force: per class, in the unit the class is scored in
/// (probability for classifier classes, reconstruction error for `anomaly`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub by_class: [f32; N_CLASSES],
}

impl Thresholds {
    /// Built-in defaults < model cards < config overrides.
    #[must_use]
    pub fn resolve(
        classifier: Option<&ModelCard>,
        autoencoder: Option<&ModelCard>,
        overrides: &BTreeMap<String, f32>,
    ) -> Self {
        let mut by_class = [BUILTIN_CLASS_THRESHOLD; N_CLASSES];
        by_class[AttackClass::Benign as usize] = f32::INFINITY;
        // No autoencoder threshold known: anomaly alerts stay off.
        by_class[AttackClass::Anomaly as usize] = f32::INFINITY;
        for card in [classifier, autoencoder].into_iter().flatten() {
            for (c, t) in &card.thresholds {
                by_class[*c as usize] = *t;
            }
            if let Some(a) = card.anomaly_threshold {
                by_class[AttackClass::Anomaly as usize] = a;
            }
        }
        for (k, t) in overrides {
            if let Some(c) = class_by_name(k).filter(|c| *c != AttackClass::Benign) {
                by_class[c as usize] = *t;
            }
        }
        Self { by_class }
    }

    #[must_use]
    pub fn get(&self, class: AttackClass) -> f32 {
        self.by_class[class as usize]
    }
}

/// Everything the stage needs from the config and the cards, resolved.
#[derive(Clone, Debug)]
pub struct AlertSettings {
    pub sensor_name: String,
    pub interface: String,
    pub alerts: AlertsSection,
    pub thresholds: Thresholds,
    pub classifier: Option<ModelCard>,
    pub autoencoder: Option<ModelCard>,
    /// The config file the stage watches for threshold changes, if any.
    pub config_path: Option<PathBuf>,
}

impl AlertSettings {
    /// Resolves settings from a parsed sensor file (loads the model cards).
    ///
    /// # Errors
    /// When a model card cannot be loaded.
    pub fn from_file(file: &SensorFile, config_path: Option<&Path>) -> Result<Self, AlertsError> {
        let classifier = file
            .models
            .classifier_card
            .as_deref()
            .map(ModelCard::load)
            .transpose()?;
        let autoencoder = file
            .models
            .autoencoder_card
            .as_deref()
            .map(ModelCard::load)
            .transpose()?;
        let thresholds =
            Thresholds::resolve(classifier.as_ref(), autoencoder.as_ref(), &file.thresholds);
        Ok(Self {
            sensor_name: file.sensor.name.clone(),
            interface: file.sensor.interface.clone(),
            alerts: file.alerts.clone(),
            thresholds,
            classifier,
            autoencoder,
            config_path: config_path.map(Path::to_path_buf),
        })
    }

    /// Loads the config file and resolves it.
    ///
    /// # Errors
    /// When the file or a model card is unreadable or invalid.
    pub fn load(config_path: &Path) -> Result<Self, AlertsError> {
        let file = SensorFile::load(config_path)?;
        Self::from_file(&file, Some(config_path))
    }

    /// Settings with defaults only and no files: no alert record log, no
    /// verdict store (tests, or running without a config file).
    #[must_use]
    pub fn defaults() -> Self {
        let mut s = Self::from_file(&SensorFile::default(), None).expect("defaults load no files");
        s.alerts.alert_log = PathBuf::new();
        s.alerts.verdict_store = PathBuf::new();
        s
    }

    /// Feature names for the alert record log: the classifier card's, or
    /// `f0`, `f1` … when no card names them.
    #[must_use]
    pub fn feature_names(&self, n: usize) -> Vec<String> {
        let names = self
            .classifier
            .as_ref()
            .map(|c| c.feature_names.as_slice())
            .unwrap_or_default();
        (0..n)
            .map(|i| names.get(i).cloned().unwrap_or_else(|| format!("f{i}")))
            .collect()
    }
}

/// A configured duration (seconds, negative read as 0) in the stage's
/// nanoseconds of event time.
pub(super) fn secs_to_ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_shapes_are_accepted() {
        let v = serde_json::json!({
            "name": "clf", "version": 3,
            "features": ["a", {"name": "b"}, "c"],
            "thresholds": {"flood": 0.8, "scan": 0.7},
            "anomaly_threshold": 0.05,
            "baseline": {"a": {"p25": 1.0, "p50": 2.0, "p75": 3.349}, "b": {"mean": 5.0, "std": 2.0}}
        });
        let c = ModelCard::from_json(&v).unwrap();
        assert_eq!(c.version, "3");
        assert_eq!(c.feature_names, ["a", "b", "c"]);
        assert_eq!(c.baseline[0].unwrap().center, 2.0);
        assert!((c.baseline[0].unwrap().scale - 1.742_031).abs() < 1e-3);
        assert_eq!(c.baseline[1].unwrap().scale, 2.0);
        assert!(c.baseline[2].is_none());
        let mut o = BTreeMap::new();
        o.insert("scan".to_string(), 0.95);
        let t = Thresholds::resolve(Some(&c), None, &o);
        assert_eq!(t.get(AttackClass::Flood), 0.8);
        assert_eq!(t.get(AttackClass::Scan), 0.95);
        assert_eq!(t.get(AttackClass::BruteForce), BUILTIN_CLASS_THRESHOLD);
        assert_eq!(t.get(AttackClass::Anomaly), 0.05);
        assert!(ModelCard::from_json(&serde_json::json!({"thresholds": {"benign": 1}})).is_err());
        assert!(
            ModelCard::from_json(&serde_json::json!({"thresholds": {"scan": "high"}})).is_err()
        );
    }

    #[test]
    fn training_script_card_shape_is_accepted() {
        let v = serde_json::json!({
            "name": "flow-classifier", "kind": "classifier", "version": "3.0.0+abc",
            "schema": {"version": 3, "features": [{"name": "syn_ratio", "unit": "ratio"}, {"name": "pkts", "unit": "1/s"}]},
            "thresholds": {"attack_score": 0.7, "attack_score_definition": "1 - P(benign)",
                           "chosen_by": "min cost", "validation_cost": 12.0, "scan": 0.8},
            "baseline_quantiles": {"quantiles": [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99],
                "benign_train": {"syn_ratio": [0.0, 0.0, 0.0, 0.0, 0.0, 0.329, 0.5],
                                 "pkts": [1.0, 2.0, 3.0, 5.0, 4.349, 9.0, 20.0]}}
        });
        let c = ModelCard::from_json(&v).unwrap();
        assert_eq!(c.feature_names, ["syn_ratio", "pkts"]);
        assert_eq!(c.thresholds[&AttackClass::Flood], 0.7);
        assert_eq!(c.thresholds[&AttackClass::Scan], 0.8);
        let b = c.baseline[0].unwrap();
        assert_eq!(b.center, 0.0);
        assert!(
            (b.scale - 0.1).abs() < 1e-6,
            "IQR 0: falls back to the 5-95 range"
        );
        assert_eq!(c.baseline[1].unwrap().center, 5.0);
        let ae = ModelCard::from_json(
            &serde_json::json!({"thresholds": {"anomaly_score": 0.04, "chosen_by": "q"}}),
        )
        .unwrap();
        assert_eq!(ae.anomaly_threshold, Some(0.04));
    }
}
