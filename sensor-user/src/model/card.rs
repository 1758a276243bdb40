//! Model cards: the JSON file next to each ONNX model. One type serves the
//! runtime (identity, schema, tensor names: a model whose schema differs
//! from the one compiled into this binary is refused) and the alert stage
//! (thresholds, feature baselines).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{
    features::schema::{FeatureSpec, N_FEATURES, SCHEMA, SCHEMA_VERSION},
    model::row::AttackClass,
};

/// Errors loading or checking a model and its card.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The card or model file could not be read.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The card is not valid JSON of the expected shape.
    #[error("model card {path} is malformed")]
    CardFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A card field has a bad value or a required section is missing.
    #[error("model card {path}: {message}")]
    CardValue { path: PathBuf, message: String },
    /// The card's schema version differs from this build's.
    #[error("model card {path}: schema version {found}, this sensor computes version {expected}")]
    SchemaVersion {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    /// The card lists a different feature at some position.
    #[error(
        "model card {path}: feature {index} is {found:?}, this sensor computes {expected:?} ({unit})"
    )]
    SchemaMismatch {
        path: PathBuf,
        index: usize,
        /// Name this build computes at `index`.
        expected: &'static str,
        /// Its unit.
        unit: &'static str,
        /// What the card says at `index` (`"<missing>"` if the card is shorter).
        found: String,
    },
    /// The card lists more features than this build computes.
    #[error("model card {path}: {found} features, this sensor computes {expected}")]
    SchemaLength {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    /// The card is of another kind than the slot it was loaded into.
    #[error("model card {path}: kind {found:?}, expected {expected:?}")]
    WrongKind {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },
    /// A classifier card's classes are not the sensor's attack classes in
    /// order (`benign` first).
    #[error(
        "model card {path}: classes {found:?}, expected a prefix of {expected:?} starting with benign"
    )]
    Classes {
        path: PathBuf,
        expected: Vec<&'static str>,
        found: Vec<String>,
    },
    /// tract could not load, type or optimise the ONNX graph.
    #[error("ONNX model {path}: {what}")]
    Onnx {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The model's output does not have the shape the card promises.
    #[error("ONNX model {path}: output shape {found:?}, expected {expected:?}")]
    OutputShape {
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

/// One feature as listed in a card.
#[derive(Clone, Debug, Deserialize)]
pub struct CardFeature {
    pub name: String,
    pub unit: String,
}

/// The schema section of a card.
#[derive(Clone, Debug, Deserialize)]
pub struct CardSchema {
    pub version: u32,
    pub features: Vec<CardFeature>,
}

/// What a card says, as written: the training script's shape plus the
/// shorter forms hand-written cards use (see [`ModelCard`]).
#[derive(Deserialize)]
struct RawCard {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<serde_json::Value>,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    schema: Option<CardSchema>,
    /// Top-level feature list (names or objects with `name`).
    #[serde(default, alias = "feature_names")]
    features: Option<Vec<FeatureRef>>,
    #[serde(default)]
    input: String,
    #[serde(default)]
    output: String,
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default)]
    thresholds: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    anomaly_threshold: Option<f32>,
    #[serde(default)]
    baseline: Option<RawBaseline>,
    #[serde(default)]
    baseline_quantiles: Option<BaselineQuantiles>,
    #[serde(default)]
    score_quantiles: Option<ScoreQuantiles>,
    #[serde(default)]
    onnx_sha256: Option<String>,
}

/// A feature named in a top-level list: a bare name or `{"name": …}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum FeatureRef {
    Name(String),
    Object { name: String },
}

/// The classifier's attack score (`1 − P(benign)`) on the benign training
/// rows: quantile levels, values and the share at or below each.
#[derive(Deserialize)]
struct ScoreQuantiles {
    quantiles: Vec<f64>,
    benign_train: Vec<f64>,
    #[serde(default)]
    benign_train_cdf: Option<Vec<f64>>,
}

/// Per-feature baseline statistics, keyed by feature name or aligned with
/// the features.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawBaseline {
    ByName(BTreeMap<String, serde_json::Value>),
    Aligned(Vec<serde_json::Value>),
}

/// The training script's baseline: quantile levels plus, per feature, the
/// values at those levels on benign training rows.
#[derive(Deserialize)]
struct BaselineQuantiles {
    quantiles: Vec<f64>,
    benign_train: BTreeMap<String, Vec<f64>>,
    /// Per feature, the share of the benign training rows at or below each
    /// of its quantile values (exact where values tie; cards written before
    /// it existed lack it).
    #[serde(default)]
    benign_train_cdf: BTreeMap<String, Vec<f64>>,
}

/// Robust location and scale of one feature in the training data, for the
/// "top contributing features" of an alert.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Baseline {
    pub center: f32,
    pub scale: f32,
}

/// A model card: the JSON file next to each ONNX model. The runtime checks
/// identity, schema and tensor names at load; the alert stage takes the
/// thresholds and feature baselines.
///
/// Accepted shape, as `models/train.py` writes it:
///
/// ```json
/// {
///   "name": "flow-classifier", "kind": "classifier", "version": "3.0.0+1a2b3c",
///   "schema": {"version": 3, "features": [{"name": "syn_ratio", "unit": "ratio"}, ...]},
///   "input": "input", "output": "probabilities", "classes": ["benign", ...],
///   "thresholds": {"attack_score": 0.72, "chosen_by": "..."},
///   "baseline_quantiles": {"quantiles": [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99],
///                          "benign_train": {"syn_ratio": [0, 0, 0, 0.01, 0.05, 0.3, 0.6], ...}}
/// }
/// ```
///
/// and the autoencoder's `"thresholds": {"anomaly_score": 0.031}`. Also
/// accepted (hand-written cards for the alert stage): `features` /
/// `feature_names` at the top level (names or objects with `name`);
/// per-class entries in `thresholds` (`"scan": 0.85`, overriding
/// `attack_score` for that class) and `anomaly_threshold`; `baseline` keyed
/// by feature name (or an array aligned with the features) with
/// `p25`/`p50`/`p75`, `median` and `iqr`, or `mean` and `std`. Non-numeric
/// or unknown threshold entries (descriptions) are ignored.
#[derive(Clone, Debug, Default)]
pub struct ModelCard {
    pub name: String,
    pub version: String,
    /// `classifier` or `autoencoder`.
    pub kind: String,
    /// The feature schema the model was trained on; required to load a model.
    pub schema: Option<CardSchema>,
    /// Input tensor name (informational; input 0 is fed).
    pub input: String,
    /// Output tensor to read.
    pub output: String,
    /// Classifier only: class names in output order.
    pub classes: Vec<String>,
    /// Feature names, from the schema or the top-level list.
    pub feature_names: Vec<String>,
    /// Per-class probability thresholds the card recommends.
    pub thresholds: BTreeMap<AttackClass, f32>,
    /// Reconstruction-error threshold (autoencoder cards).
    pub anomaly_threshold: Option<f32>,
    /// Aligned with `feature_names`; `None` where the card has no baseline.
    pub baseline: Vec<Option<Baseline>>,
    /// SHA-256 of the ONNX file the card describes (hex), when recorded.
    pub onnx_sha256: Option<String>,
    /// The benign training rows' quantiles, as the card lists them (drift
    /// monitoring bins rows by them; see `model::drift`).
    pub quantiles: Option<QuantileBaseline>,
    /// Classifier cards: the attack score's quantiles on the benign training
    /// rows (levels, values, shares at or below), when recorded.
    pub score_quantiles: Option<ScoreBaseline>,
}

/// A score's quantile levels, its values at them and, when recorded, the
/// share at or below each value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreBaseline {
    pub levels: Vec<f64>,
    pub values: Vec<f64>,
    pub cdf: Option<Vec<f64>>,
}

/// Quantile levels and, aligned with the card's features, each feature's
/// values at those levels (`None` for a feature the card does not list).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantileBaseline {
    pub levels: Vec<f64>,
    pub values: Vec<Option<Vec<f64>>>,
    /// Share of the training rows at or below each value, when the card
    /// records it.
    pub cdf: Vec<Option<Vec<f64>>>,
}

impl ModelCard {
    /// Reads a card from `path`.
    ///
    /// # Errors
    /// The file is unreadable, not JSON of the card's shape, or a field has
    /// a bad value (with the field named).
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Read {
            path: path.to_owned(),
            source,
        })?;
        let raw: RawCard =
            serde_json::from_str(&text).map_err(|source| ModelError::CardFormat {
                path: path.to_owned(),
                source,
            })?;
        Self::resolve(raw).map_err(|message| ModelError::CardValue {
            path: path.to_owned(),
            message,
        })
    }

    /// Builds a card from its JSON value.
    ///
    /// # Errors
    /// A message naming the offending field.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let raw = RawCard::deserialize(v).map_err(|e| e.to_string())?;
        Self::resolve(raw)
    }

    fn resolve(raw: RawCard) -> Result<Self, String> {
        let feature_names: Vec<String> = match (&raw.features, &raw.schema) {
            (Some(list), _) => list
                .iter()
                .map(|f| match f {
                    FeatureRef::Name(n) | FeatureRef::Object { name: n } => n.clone(),
                })
                .collect(),
            (None, Some(schema)) => schema.features.iter().map(|f| f.name.clone()).collect(),
            (None, None) => Vec::new(),
        };
        let mut thresholds = BTreeMap::new();
        let mut anomaly_threshold = None;
        let num = |k: &str, v: &serde_json::Value| {
            v.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| format!("threshold `{k}` must be a number"))
        };
        // One threshold on 1 − P(benign) for every attack class; a
        // class-specific entry overrides it.
        if let Some(v) = raw.thresholds.get("attack_score") {
            let x = num("attack_score", v)?;
            for c in [
                AttackClass::Flood,
                AttackClass::Scan,
                AttackClass::BruteForce,
            ] {
                thresholds.insert(c, x);
            }
        }
        for (k, v) in &raw.thresholds {
            match k.as_str() {
                "anomaly_score" | "anomaly" => anomaly_threshold = Some(num(k, v)?),
                "benign" => return Err("`thresholds` cannot name `benign`".into()),
                _ => {
                    // Descriptive entries (definition, how it was chosen,
                    // validation cost) are for people, not for us.
                    if let Some(c) = AttackClass::by_name(k) {
                        thresholds.insert(c, num(k, v)?);
                    }
                }
            }
        }
        if raw.anomaly_threshold.is_some() {
            anomaly_threshold = raw.anomaly_threshold;
        }
        let anomaly = anomaly_threshold.map(|t| (AttackClass::Anomaly, t));
        for (class, value) in thresholds.iter().map(|(&c, &t)| (c, t)).chain(anomaly) {
            if let Some(problem) = threshold_problem(class, value) {
                return Err(problem);
            }
        }
        let mut baseline = vec![None; feature_names.len()];
        match &raw.baseline {
            Some(RawBaseline::ByName(m)) => {
                for (i, name) in feature_names.iter().enumerate() {
                    baseline[i] = m.get(name).and_then(baseline_of);
                }
            }
            Some(RawBaseline::Aligned(a)) => {
                for (slot, e) in baseline.iter_mut().zip(a) {
                    *slot = baseline_of(e);
                }
            }
            None => {}
        }
        if let Some(bq) = &raw.baseline_quantiles {
            for (i, name) in feature_names.iter().enumerate() {
                if let Some(vals) = bq.benign_train.get(name) {
                    let at = |q: f64| {
                        bq.quantiles
                            .iter()
                            .position(|l| (l - q).abs() < 1e-9)
                            .and_then(|j| vals.get(j).copied())
                    };
                    baseline[i] = quantile_baseline(&at);
                }
            }
        }
        let quantiles = raw.baseline_quantiles.map(|bq| QuantileBaseline {
            values: feature_names
                .iter()
                .map(|n| bq.benign_train.get(n).cloned())
                .collect(),
            cdf: feature_names
                .iter()
                .map(|n| bq.benign_train_cdf.get(n).cloned())
                .collect(),
            levels: bq.quantiles,
        });
        Ok(Self {
            name: raw.name.unwrap_or_else(|| "model".to_owned()),
            version: match raw.version {
                Some(serde_json::Value::String(s)) => s,
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => "unknown".to_owned(),
            },
            kind: raw.kind,
            schema: raw.schema,
            input: raw.input,
            output: raw.output,
            classes: raw.classes,
            feature_names,
            thresholds,
            anomaly_threshold,
            quantiles,
            score_quantiles: raw.score_quantiles.map(|q| ScoreBaseline {
                levels: q.quantiles,
                values: q.benign_train,
                cdf: q.benign_train_cdf,
            }),
            baseline,
            onnx_sha256: raw.onnx_sha256,
        })
    }

    /// Checks the card's schema against the one this build computes,
    /// naming the first mismatching feature.
    ///
    /// # Errors
    /// The card has no schema, or it differs from this build's.
    pub(crate) fn check_schema(&self, path: &Path) -> Result<(), ModelError> {
        let schema = self.schema.as_ref().ok_or_else(|| ModelError::CardValue {
            path: path.to_owned(),
            message: "no `schema` section: a model needs the feature schema it was trained on"
                .to_owned(),
        })?;
        check_schema(schema, &SCHEMA, path)
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

/// Compares a card schema with `ours` (see [`ModelCard::check_schema`]).
pub(crate) fn check_schema(
    card: &CardSchema,
    ours: &[FeatureSpec; N_FEATURES],
    path: &Path,
) -> Result<(), ModelError> {
    if card.version != SCHEMA_VERSION {
        return Err(ModelError::SchemaVersion {
            path: path.to_owned(),
            expected: SCHEMA_VERSION,
            found: card.version,
        });
    }
    for (i, spec) in ours.iter().enumerate() {
        let found = card.features.get(i);
        if found.is_none_or(|f| f.name != spec.name || f.unit != spec.unit) {
            return Err(ModelError::SchemaMismatch {
                path: path.to_owned(),
                index: i,
                expected: spec.name,
                unit: spec.unit,
                found: found.map_or_else(
                    || "<missing>".to_owned(),
                    |f| format!("{} ({})", f.name, f.unit),
                ),
            });
        }
    }
    if card.features.len() != N_FEATURES {
        return Err(ModelError::SchemaLength {
            path: path.to_owned(),
            expected: N_FEATURES,
            found: card.features.len(),
        });
    }
    Ok(())
}

/// The thresholds `class` accepts: a probability for classifier classes, a
/// finite, non-negative reconstruction error for the autoencoder (a NaN is
/// in no range).
#[must_use]
pub fn threshold_range(class: AttackClass) -> std::ops::RangeInclusive<f32> {
    match class {
        AttackClass::Anomaly => 0.0..=f32::MAX,
        _ => 0.0..=1.0,
    }
}

/// Why `value` cannot be `class`'s threshold, if it cannot: a classifier
/// threshold is a probability in [0, 1]; the anomaly threshold a finite,
/// non-negative reconstruction error. A NaN or out-of-range value would
/// silently turn a class off (or on for everything).
pub fn threshold_problem(class: AttackClass, value: f32) -> Option<String> {
    (!threshold_range(class).contains(&value)).then(|| {
        let want = if class == AttackClass::Anomaly {
            "a finite reconstruction error >= 0"
        } else {
            "a probability in [0, 1]"
        };
        format!("threshold `{}` = {value}: must be {want}", class.name())
    })
}

/// The card path for a model: `x.onnx` → `x.card.json`.
#[must_use]
pub(crate) fn card_path(model: &Path) -> PathBuf {
    model.with_extension("card.json")
}
