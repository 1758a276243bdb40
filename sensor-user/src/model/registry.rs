//! The versioned model registry. Each version of a model lives in its own
//! directory, `<models-dir>/<name>/<version>/<name>.onnx` with its card
//! (`<name>.card.json`: schema, features, data sources, metrics, baseline
//! quantiles, thresholds, `onnx_sha256`) beside it, and `registry.json`
//! names each model's active version and the one in shadow:
//!
//! ```json
//! {"models": {"flow-classifier": {"active": "2.0.0+265a23a0523c", "shadow": null}}}
//! ```
//!
//! `sensor models promote|shadow` change that file (written to a temporary
//! file and renamed, so a reader sees the old or the new state, never half)
//! after checking the version loads: present, its hash matching its card,
//! its schema the one this build computes. A promotion also repoints the
//! compatibility links `<models-dir>/<name>.onnx` and `<name>.card.json`
//! (when they are symbolic links) at the active version, so paths written
//! before the registry (configs naming `models/flow-classifier.card.json`)
//! follow it. A directory without `registry.json` is the flat layout of
//! before: `<models-dir>/<name>.onnx`, still loaded as it is.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Model, ModelCard, ModelError, card::card_path};

/// The state file in a models directory.
pub const REGISTRY_FILE: &str = "registry.json";

/// One model slot: the name its files and directory carry, and the kind of
/// model the sensor loads into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSlot {
    pub name: &'static str,
    pub kind: &'static str,
}

/// The classifier every worker runs on every row.
pub const CLASSIFIER: ModelSlot = ModelSlot {
    name: "flow-classifier",
    kind: "classifier",
};
/// The autoencoder run on the classifier's ambiguous rows.
pub const AUTOENCODER: ModelSlot = ModelSlot {
    name: "flow-autoencoder",
    kind: "autoencoder",
};
/// The slots of a running sensor.
pub const SLOTS: [ModelSlot; 2] = [CLASSIFIER, AUTOENCODER];

/// What `registry.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryState {
    pub models: BTreeMap<String, Slots>,
}

/// A model's active version and the one in shadow, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slots {
    pub active: String,
    #[serde(default)]
    pub shadow: Option<String>,
}

/// Why a registry operation failed; each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file or directory could not be read or written.
    #[error("{action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `registry.json` is not the registry's JSON.
    #[error("{} is malformed", .path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// No such model slot in this sensor.
    #[error("no model `{name}` (known: {known})")]
    UnknownModel { name: String, known: String },
    /// The version has no directory with its model.
    #[error("{name} {version}: no model at {}", .path.display())]
    NoSuchVersion {
        name: String,
        version: String,
        path: PathBuf,
    },
    /// The model file does not hash to what its card records.
    #[error("{}: sha256 {found}, its card records {expected}", .path.display())]
    Hash {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// The card names another model or version than its directory.
    #[error("{}: card says {found}, the directory is {expected}", .path.display())]
    Misplaced {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// The model or its card does not load (schema, classes, ONNX).
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A models directory.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

/// One version on disk, for `sensor models list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    pub version: String,
    pub active: bool,
    pub shadow: bool,
}

impl Registry {
    /// The registry in `dir`.
    #[must_use]
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(REGISTRY_FILE)
    }

    /// The state, or `None` in a flat directory (no `registry.json`).
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn state(&self) -> Result<Option<RegistryState>, RegistryError> {
        let path = self.state_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(RegistryError::Io {
                    action: "cannot read",
                    path,
                    source,
                });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| RegistryError::State { path, source })
    }

    /// Where `version` of `name` lives.
    #[must_use]
    pub fn version_path(&self, name: &str, version: &str) -> PathBuf {
        self.dir
            .join(name)
            .join(version)
            .join(format!("{name}.onnx"))
    }

    /// The model file of `slot` the sensor loads: its active version, or
    /// `<dir>/<name>.onnx` when the registry names none (flat layout).
    ///
    /// # Errors
    /// `registry.json` cannot be read.
    pub fn active_path(&self, slot: ModelSlot) -> Result<PathBuf, RegistryError> {
        Ok(self.slot_paths(slot)?.0)
    }

    /// The active model file of `slot` and, if one is in shadow, its file.
    ///
    /// # Errors
    /// `registry.json` cannot be read.
    pub fn slot_paths(&self, slot: ModelSlot) -> Result<(PathBuf, Option<PathBuf>), RegistryError> {
        let slots = self
            .state()?
            .and_then(|mut s| s.models.remove(slot.name))
            .unwrap_or_default();
        let active = if slots.active.is_empty() {
            self.dir.join(format!("{}.onnx", slot.name))
        } else {
            self.version_path(slot.name, &slots.active)
        };
        let shadow = slots.shadow.map(|v| self.version_path(slot.name, &v));
        Ok((active, shadow))
    }

    /// The versions of `name` on disk (directories holding its model),
    /// sorted, each marked active or shadow.
    ///
    /// # Errors
    /// The directory or the state cannot be read.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionEntry>, RegistryError> {
        let slots = self
            .state()?
            .and_then(|mut s| s.models.remove(name))
            .unwrap_or_default();
        let dir = self.dir.join(name);
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(RegistryError::Io {
                    action: "cannot list",
                    path: dir,
                    source,
                });
            }
        };
        for e in entries.flatten() {
            let version = e.file_name().to_string_lossy().into_owned();
            if self.version_path(name, &version).is_file() {
                out.push(VersionEntry {
                    active: slots.active == version,
                    shadow: slots.shadow.as_deref() == Some(version.as_str()),
                    version,
                });
            }
        }
        out.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(out)
    }

    /// Checks that `version` of `slot` can run in this sensor: its files
    /// exist, the model hashes to its card's `onnx_sha256`, the card names
    /// this model and version, and the model loads against this build's
    /// feature schema. Returns its card.
    ///
    /// # Errors
    /// The first check that failed, with the path and the reason.
    pub fn check(&self, slot: ModelSlot, version: &str) -> Result<ModelCard, RegistryError> {
        let path = self.version_path(slot.name, version);
        if !path.is_file() {
            return Err(RegistryError::NoSuchVersion {
                name: slot.name.to_owned(),
                version: version.to_owned(),
                path,
            });
        }
        check_model(&path, slot, &[1]).map(|(card, _)| card)
    }

    /// Makes `version` the active version of `name` (and takes it out of
    /// shadow if it was there), after [`Self::check`].
    ///
    /// # Errors
    /// The version does not pass the check, or the state cannot be written.
    pub fn promote(&self, name: &str, version: &str) -> Result<(), RegistryError> {
        let slot = slot_named(name)?;
        self.check(slot, version)?;
        let mut state = self.state()?.unwrap_or_default();
        let slots = state.models.entry(name.to_owned()).or_default();
        version.clone_into(&mut slots.active);
        if slots.shadow.as_deref() == Some(version) {
            slots.shadow = None;
        }
        self.write_state(&state)?;
        self.relink(name, version)
    }

    /// Puts `version` of `name` in shadow (`None`: none), after
    /// [`Self::check`].
    ///
    /// # Errors
    /// As [`Self::promote`].
    pub fn set_shadow(&self, name: &str, version: Option<&str>) -> Result<(), RegistryError> {
        let slot = slot_named(name)?;
        if let Some(v) = version {
            self.check(slot, v)?;
        }
        let mut state = self.state()?.unwrap_or_default();
        let slots = state.models.entry(name.to_owned()).or_default();
        slots.shadow = version.map(str::to_owned);
        self.write_state(&state)
    }

    fn write_state(&self, state: &RegistryState) -> Result<(), RegistryError> {
        let path = self.state_path();
        let io = |action, source| RegistryError::Io {
            action,
            path: path.clone(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".registry.")
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(|e| io("cannot create a temporary file beside", e))?;
        let mut text = serde_json::to_string_pretty(state).unwrap_or_default();
        text.push('\n');
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| io("cannot write", e))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = tmp
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644));
        }
        tmp.persist(&path)
            .map_err(|e| io("cannot replace", e.error))?;
        Ok(())
    }

    /// Repoints `<dir>/<name>.onnx` and `<name>.card.json` at `version`
    /// where they are symbolic links or absent; a regular file there (a
    /// flat directory) is left alone.
    fn relink(&self, name: &str, version: &str) -> Result<(), RegistryError> {
        for file in [format!("{name}.onnx"), format!("{name}.card.json")] {
            let link = self.dir.join(&file);
            match std::fs::symlink_metadata(&link) {
                Ok(m) if !m.file_type().is_symlink() => continue,
                Ok(_) | Err(_) => {}
            }
            let target = Path::new(name).join(version).join(&file);
            let tmp = self.dir.join(format!(".{file}.link.tmp"));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&target, &tmp)
                .and_then(|()| std::fs::rename(&tmp, &link))
                .map_err(|source| RegistryError::Io {
                    action: "cannot repoint",
                    path: link.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// `sensor models`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub action: ModelsAction,
    /// Models directory [default: the one `sensor run` uses].
    #[arg(long, value_name = "DIR", global = true)]
    pub models_dir: Option<PathBuf>,
}

/// What `sensor models` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ModelsAction {
    /// List each model's versions, marking the active one and the one in
    /// shadow.
    List,
    /// Make VERSION the active version of NAME (a running sensor picks it
    /// up on SIGHUP or when it sees the registry change).
    Promote {
        name: String,
        #[arg(value_name = "VERSION")]
        model_version: String,
    },
    /// Score with VERSION of NAME in shadow beside the active one (or,
    /// with --clear, with none).
    Shadow {
        name: String,
        #[arg(value_name = "VERSION", required_unless_present = "clear")]
        model_version: Option<String>,
        #[arg(long, conflicts_with = "model_version")]
        clear: bool,
    },
}

/// Runs `sensor models`, writing what it did or found to `out`.
///
/// # Errors
/// See [`RegistryError`]; also a failed write to `out`.
pub fn run_models(args: &ModelsArgs, out: &mut impl std::io::Write) -> Result<(), RegistryError> {
    let dir = args
        .models_dir
        .clone()
        .unwrap_or_else(super::default_models_dir);
    let r = Registry::new(&dir);
    let io = |source| RegistryError::Io {
        action: "cannot write to",
        path: PathBuf::from("stdout"),
        source,
    };
    match &args.action {
        ModelsAction::List => {
            let flat = r.state()?.is_none();
            for slot in SLOTS {
                writeln!(out, "{} ({})", slot.name, slot.kind).map_err(io)?;
                if flat {
                    let path = dir.join(format!("{}.onnx", slot.name));
                    let version = ModelCard::load(&card_path(&path))
                        .map_or_else(|e| format!("unreadable: {e}"), |c| c.version);
                    writeln!(out, "  {version}  active (flat layout: {})", path.display())
                        .map_err(io)?;
                    continue;
                }
                for v in r.versions(slot.name)? {
                    let card = ModelCard::load(&card_path(&r.version_path(slot.name, &v.version)));
                    let (schema, hash) = card.map_or_else(
                        |_| ("?".to_owned(), "card unreadable".to_owned()),
                        |c| {
                            (
                                c.schema.map_or("?".to_owned(), |s| s.version.to_string()),
                                c.onnx_sha256
                                    .map_or("no hash".to_owned(), |h| format!("sha256 {h}")),
                            )
                        },
                    );
                    let mark = match (v.active, v.shadow) {
                        (true, _) => "active",
                        (false, true) => "shadow",
                        _ => "",
                    };
                    writeln!(
                        out,
                        "  {:<24} {:<7} schema {schema}  {hash}",
                        v.version, mark
                    )
                    .map_err(io)?;
                }
            }
        }
        ModelsAction::Promote {
            name,
            model_version: version,
        } => {
            r.promote(name, version)?;
            writeln!(
                out,
                "{name} {version} is now active in {}; a running sensor picks it up on SIGHUP or when it sees {REGISTRY_FILE} change",
                dir.display()
            )
            .map_err(io)?;
        }
        ModelsAction::Shadow {
            name,
            model_version: version,
            ..
        } => {
            r.set_shadow(name, version.as_deref())?;
            match version {
                Some(v) => writeln!(out, "{name} {v} is now in shadow"),
                None => writeln!(out, "{name}: no version in shadow"),
            }
            .map_err(io)?;
        }
    }
    Ok(())
}

/// The slot called `name`.
///
/// # Errors
/// [`RegistryError::UnknownModel`].
pub fn slot_named(name: &str) -> Result<ModelSlot, RegistryError> {
    SLOTS
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| RegistryError::UnknownModel {
            name: name.to_owned(),
            known: SLOTS.map(|s| s.name).join(", "),
        })
}

/// Checks one model file for `slot`, wherever it lives: its hash against
/// its card's `onnx_sha256` (when the card records one), and that it loads
/// against this build's schema, planned for `batch_sizes`. Returns its card
/// and the loaded model.
///
/// # Errors
/// The first check that failed, with the path and the reason.
pub fn check_model(
    path: &Path,
    slot: ModelSlot,
    batch_sizes: &[usize],
) -> Result<(ModelCard, Model), RegistryError> {
    let card = ModelCard::load(&card_path(path))?;
    if card.name != slot.name {
        return Err(RegistryError::Misplaced {
            path: card_path(path),
            expected: slot.name.to_owned(),
            found: card.name,
        });
    }
    if let Some(dir_version) = path
        .parent()
        .and_then(Path::file_name)
        .map(|v| v.to_string_lossy())
        && path
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            == Some(std::ffi::OsStr::new(slot.name))
        && dir_version != card.version
    {
        return Err(RegistryError::Misplaced {
            path: card_path(path),
            expected: format!("version {dir_version}"),
            found: format!("version {}", card.version),
        });
    }
    if let Some(expected) = &card.onnx_sha256 {
        let bytes = std::fs::read(path).map_err(|source| RegistryError::Io {
            action: "cannot read",
            path: path.to_owned(),
            source,
        })?;
        let found = sha256_hex(&bytes);
        if !found.eq_ignore_ascii_case(expected) {
            return Err(RegistryError::Hash {
                path: path.to_owned(),
                expected: expected.clone(),
                found,
            });
        }
    }
    let model = Model::load(path, slot.kind, batch_sizes)?;
    Ok((card, model))
}

/// Lower-case hex SHA-256 of `bytes`.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_tree_registry_names_the_shipped_models() {
        let r = Registry::new(Path::new(super::super::DEFAULT_MODELS_DIR));
        for slot in SLOTS {
            let versions = r.versions(slot.name).unwrap();
            let active: Vec<_> = versions.iter().filter(|v| v.active).collect();
            assert_eq!(active.len(), 1, "{versions:?}");
            let path = r.active_path(slot).unwrap();
            assert_eq!(path, r.version_path(slot.name, &active[0].version));
            let card = r.check(slot, &active[0].version).unwrap();
            assert_eq!(card.version, active[0].version);
        }
    }

    #[test]
    fn a_flat_directory_loads_its_files_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::new(dir.path());
        assert!(r.state().unwrap().is_none());
        assert_eq!(
            r.active_path(CLASSIFIER).unwrap(),
            dir.path().join("flow-classifier.onnx")
        );
        assert!(r.versions("flow-classifier").unwrap().is_empty());
    }

    #[test]
    fn unknown_models_are_named() {
        let e = slot_named("nope").unwrap_err().to_string();
        assert!(e.contains("flow-classifier, flow-autoencoder"), "{e}");
    }
}
