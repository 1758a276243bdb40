//! Inference with tract: models are loaded once, checked against the feature
//! schema, optimised and planned for a few fixed batch sizes (fixed-shape
//! plans run 2–3× faster than a symbolic batch). Each worker spawns its own
//! states and reuses them for every batch; a partial batch is zero-padded to
//! the next planned size.
//!
//! Tensors are allocated per batch inside tract (inputs and outputs), never
//! per event.

pub mod card;
pub mod drift;
pub mod offline;
pub mod pipeline;
pub mod registry;
pub mod row;

use std::{path::Path, sync::Arc};

use tract_onnx::prelude::*;

use card::card_path;
pub use card::{ModelCard, ModelError};

use crate::{
    features::{FeatureVec, N_FEATURES},
    model::row::{AttackClass, ModelVersion, N_CLASSES},
};

/// The models committed with the source tree this binary was built from.
pub(crate) const DEFAULT_MODELS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");

/// Where `sensor run` looks for its models without `--models-dir`, in order:
/// an installed layout (`<prefix>/bin/sensor` with
/// `<prefix>/share/xdp-sensor/models`), a `models` folder beside the binary
/// (a copied binary with its models), then the build tree.
#[must_use]
pub(crate) fn models_dir_candidates(exe: Option<&Path>) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Some(bin_dir) = exe.and_then(Path::parent) {
        if let Some(prefix) = bin_dir.parent() {
            out.push(prefix.join("share/xdp-sensor/models"));
        }
        out.push(bin_dir.join("models"));
    }
    out.push(Path::new(DEFAULT_MODELS_DIR).to_path_buf());
    out
}

/// The first of [`models_dir_candidates`] for the running binary that holds
/// the classifier; the build tree's path when none does (the load error then
/// names it).
#[must_use]
pub(crate) fn default_models_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().ok();
    let candidates = models_dir_candidates(exe.as_deref());
    candidates
        .iter()
        .find(|d| {
            registry::Registry::new(d)
                .active_path(registry::CLASSIFIER)
                .is_ok_and(|p| p.is_file())
        })
        .or(candidates.last())
        .cloned()
        .unwrap_or_else(|| Path::new(DEFAULT_MODELS_DIR).to_path_buf())
}

/// Batch sizes planned by default. A batch is padded to the next planned
/// size, and padding rows cost as much as real ones: the autoencoder sees
/// only the classifier's ambiguous rows (~6% of a 256-row batch, ~15 rows),
/// and deadline-closed batches at moderate load are partial, so the steps
/// are powers of two from 8 up (padding at most doubles a batch).
pub const DEFAULT_BATCH_SIZES: [usize; 7] = [1, 8, 16, 32, 64, 128, 256];

type Plan = Arc<TypedRunnableModel>;

/// What a model outputs per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Class probabilities, `n_classes` per row.
    Classifier { n_classes: usize },
    /// One reconstruction error per row.
    Autoencoder,
}

/// A loaded, checked, planned model, shared by all workers.
pub struct Model {
    card: ModelCard,
    kind: ModelKind,
    /// `name@version`, as reported in scored rows.
    id: ModelVersion,
    /// One plan per batch size, ascending.
    plans: Vec<(usize, Plan)>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("batch_sizes", &self.batch_sizes())
            .finish_non_exhaustive()
    }
}

fn onnx_err(path: &Path, what: &'static str, e: TractError) -> ModelError {
    ModelError::Onnx {
        path: path.to_owned(),
        what,
        source: e.into(),
    }
}

impl Model {
    /// Loads `path` (ONNX) and its card (`path` with `.card.json`), refusing a
    /// card of another `expected_kind` or schema, then plans every batch size.
    pub fn load(
        path: &Path,
        expected_kind: &'static str,
        batch_sizes: &[usize],
    ) -> Result<Self, ModelError> {
        let cpath = card_path(path);
        let card = ModelCard::load(&cpath)?;
        if card.kind != expected_kind {
            return Err(ModelError::WrongKind {
                path: cpath,
                expected: expected_kind,
                found: card.kind,
            });
        }
        card.check_schema(&cpath)?;
        if expected_kind == "classifier" {
            // Probabilities are indexed by `AttackClass as usize`.
            let ours: Vec<&'static str> = AttackClass::ALL.iter().map(|c| c.name()).collect();
            let ok = card.classes.len() >= 2
                && card.classes.len() <= N_CLASSES
                && card.classes.iter().zip(&ours).all(|(a, b)| a == b);
            if !ok {
                return Err(ModelError::Classes {
                    path: cpath,
                    expected: ours,
                    found: card.classes,
                });
            }
        }
        let kind = if expected_kind == "classifier" {
            ModelKind::Classifier {
                n_classes: card.classes.len(),
            }
        } else {
            ModelKind::Autoencoder
        };
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.to_owned(),
            source,
        })?;
        let proto = tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .map_err(|e| onnx_err(path, "cannot parse", e))?
            .with_outputs_by_name([card.output.as_str()])
            .map_err(|e| onnx_err(path, "no such output", e))?;
        let mut sizes: Vec<usize> = batch_sizes.iter().copied().filter(|&b| b > 0).collect();
        sizes.sort_unstable();
        sizes.dedup();
        if sizes.is_empty() {
            sizes.push(1);
        }
        let mut plans = Vec::with_capacity(sizes.len());
        for &b in &sizes {
            let plan = proto
                .clone()
                .with_input_fact(0, f32::fact([b, N_FEATURES]).into())
                .map_err(|e| onnx_err(path, "bad input shape", e))?
                .into_optimized()
                .map_err(|e| onnx_err(path, "cannot optimise", e))?
                .into_runnable()
                .map_err(|e| onnx_err(path, "cannot plan", e))?;
            plans.push((b, plan));
        }
        let id = ModelVersion::intern(&format!("{}@{}", card.name, card.version));
        let m = Self {
            card,
            kind,
            id,
            plans,
        };
        // Check the output shape once, with a zero batch of the smallest size.
        let mut st = m.runner().map_err(|e| onnx_err(path, "cannot spawn", e))?;
        let rows = vec![[0f32; N_FEATURES]; 1];
        let mut out = vec![0f32; m.out_width()];
        st.run(&rows, &mut out).map_err(|e| match e {
            RunError::Shape { expected, found } => ModelError::OutputShape {
                path: path.to_owned(),
                expected,
                found,
            },
            RunError::Tract(e) => onnx_err(path, "cannot run", e),
        })?;
        Ok(m)
    }

    /// The card this model was loaded with.
    #[must_use]
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// `name@version`.
    #[must_use]
    pub fn id(&self) -> ModelVersion {
        self.id
    }

    #[must_use]
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// Planned batch sizes, ascending.
    #[must_use]
    pub(crate) fn batch_sizes(&self) -> Vec<usize> {
        self.plans.iter().map(|(b, _)| *b).collect()
    }

    /// Outputs per row.
    #[must_use]
    pub fn out_width(&self) -> usize {
        match self.kind {
            ModelKind::Classifier { n_classes } => n_classes,
            ModelKind::Autoencoder => 1,
        }
    }

    /// A per-worker runner with one spawned state per batch size.
    pub fn runner(&self) -> TractResult<Runner> {
        let mut states = Vec::with_capacity(self.plans.len());
        for (b, p) in &self.plans {
            states.push((*b, p.spawn()?));
        }
        Ok(Runner {
            states,
            width: self.out_width(),
        })
    }
}

/// A failed batch.
#[derive(Debug)]
pub enum RunError {
    /// tract failed (counted by the caller; the batch is dropped).
    Tract(TractError),
    /// The output had an unexpected shape.
    Shape {
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

/// One worker's reusable execution states for a model.
pub struct Runner {
    states: Vec<(usize, TypedSimpleState)>,
    width: usize,
}

impl Runner {
    /// Largest planned batch.
    #[must_use]
    pub fn max_batch(&self) -> usize {
        self.states.last().map_or(1, |s| s.0)
    }

    /// Scores `rows` into `out` (`rows.len() × width` values, row-major).
    /// Rows beyond the largest planned batch are run in several batches.
    pub fn run(&mut self, rows: &[FeatureVec], out: &mut [f32]) -> Result<(), RunError> {
        let max = self.max_batch();
        let w = self.width;
        for (ci, chunk) in rows.chunks(max).enumerate() {
            let n = chunk.len();
            let si = self
                .states
                .iter()
                .position(|(b, _)| *b >= n)
                .unwrap_or(self.states.len() - 1);
            let (b, state) = &mut self.states[si];
            let b = *b;
            // Rows, then zero padding up to the planned batch size, written
            // straight into the tensor tract consumes (one copy).
            let mut input = Tensor::zero::<f32>(&[b, N_FEATURES]).map_err(RunError::Tract)?;
            {
                let mut plain = input.try_as_plain_ram_mut().map_err(RunError::Tract)?;
                let dst = plain.as_slice_mut::<f32>().map_err(RunError::Tract)?;
                for (d, r) in dst.chunks_exact_mut(N_FEATURES).zip(chunk) {
                    d.copy_from_slice(r);
                }
            }
            let res = state.run(tvec!(input.into_tvalue()));
            clear_upper_vector_state();
            let res = res.map_err(RunError::Tract)?;
            let t = &res[0];
            let shape = t.shape();
            let ok = match w {
                1 => shape == [b] || shape == [b, 1],
                _ => shape == [b, w],
            };
            if !ok {
                return Err(RunError::Shape {
                    expected: vec![b, w],
                    found: shape.to_vec(),
                });
            }
            let view = t.to_plain_array_view::<f32>().map_err(RunError::Tract)?;
            let o = &mut out[ci * max * w..ci * max * w + n * w];
            for (d, v) in o.iter_mut().zip(view.iter()) {
                *d = *v;
            }
        }
        Ok(())
    }
}

/// tract's AVX kernels can return with the upper halves of the vector
/// registers dirty. Until a `vzeroupper`, every legacy-SSE instruction (the
/// feature code and libm, compiled for baseline x86-64) then pays a state
/// transition or merge penalty; measured here, that made feature extraction
/// about 20× slower. One `vzeroupper` per batch clears it.
#[inline]
fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: only reached when the CPU supports AVX.
            unsafe { zeroupper() }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zeroupper() {
    // AVX is enabled for this function, so the intrinsic is safe to call.
    std::arch::x86_64::_mm256_zeroupper();
}

#[cfg(test)]
mod tests {
    #[test]
    fn models_are_looked_for_beside_the_binary_first() {
        let c = super::models_dir_candidates(Some(std::path::Path::new("/opt/x/bin/sensor")));
        assert_eq!(c[0], std::path::Path::new("/opt/x/share/xdp-sensor/models"));
        assert_eq!(c[1], std::path::Path::new("/opt/x/bin/models"));
        assert_eq!(c[2], std::path::Path::new(super::DEFAULT_MODELS_DIR));
        assert_eq!(super::models_dir_candidates(None).len(), 1);
        // From this test binary, the models of the source tree are found.
        assert!(
            super::registry::Registry::new(&super::default_models_dir())
                .active_path(super::registry::CLASSIFIER)
                .unwrap()
                .is_file()
        );
    }
}
