//! Model cards: the JSON file next to each ONNX model. The runtime reads the
//! parts it needs (identity, schema, tensor names, thresholds) and refuses a
//! model whose schema differs from the one compiled into this binary.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::features::schema::{FeatureSpec, N_FEATURES, SCHEMA, SCHEMA_VERSION};

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

/// Decision thresholds stored in a card.
#[derive(Clone, Debug, Deserialize)]
pub struct CardThresholds {
    /// Classifier: alert when `1 - P(benign)` is at least this (chosen on a
    /// validation split by misclassification cost).
    #[serde(default)]
    pub attack_score: Option<f32>,
    /// Autoencoder: alert when the reconstruction error is at least this (a
    /// stated quantile of benign validation errors).
    #[serde(default)]
    pub anomaly_score: Option<f32>,
}

/// What the runtime reads from a model card.
#[derive(Clone, Debug, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub version: String,
    /// `classifier` or `autoencoder`.
    pub kind: String,
    pub schema: CardSchema,
    /// Input tensor name (informational; input 0 is fed).
    pub input: String,
    /// Output tensor to read.
    pub output: String,
    /// Classifier only: class names in output order.
    #[serde(default)]
    pub classes: Vec<String>,
    pub thresholds: CardThresholds,
}

impl ModelCard {
    /// Reads a card from `path`.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ModelError::CardFormat {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks the card's schema against the one this build computes,
    /// naming the first mismatching feature.
    pub fn check_schema(&self, path: &Path) -> Result<(), ModelError> {
        check_schema(&self.schema, &SCHEMA, path)
    }
}

/// Compares a card schema with `ours` (see [`ModelCard::check_schema`]).
pub fn check_schema(
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

/// The card path for a model: `x.onnx` → `x.card.json`.
#[must_use]
pub fn card_path(model: &Path) -> PathBuf {
    model.with_extension("card.json")
}
