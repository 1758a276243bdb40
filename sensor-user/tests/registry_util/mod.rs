//! A copy of the committed model registry to change in a test, and new
//! versions made from its active classifier.
#![allow(
    dead_code,
    reason = "each test binary that includes this module uses part of it"
)]

use std::path::{Path, PathBuf};

use sensor::model::registry::{CLASSIFIER, REGISTRY_FILE, Registry, sha256_hex};

pub(crate) fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// A copy of the committed registry: state file, version directories and
/// the compatibility links.
pub(crate) fn copy_registry(dst: &Path) {
    let src = models_dir();
    std::fs::copy(src.join(REGISTRY_FILE), dst.join(REGISTRY_FILE)).unwrap();
    for name in ["flow-classifier", "flow-autoencoder"] {
        for entry in std::fs::read_dir(src.join(name)).unwrap() {
            let version = entry.unwrap().file_name();
            let to = dst.join(name).join(&version);
            std::fs::create_dir_all(&to).unwrap();
            for file in [format!("{name}.onnx"), format!("{name}.card.json")] {
                std::fs::copy(src.join(name).join(&version).join(&file), to.join(&file)).unwrap();
            }
        }
        for file in [format!("{name}.onnx"), format!("{name}.card.json")] {
            let target = std::fs::read_link(src.join(&file)).unwrap();
            std::os::unix::fs::symlink(target, dst.join(&file)).unwrap();
        }
    }
}

/// A new classifier version `version` made from the active one, its ONNX
/// bytes and card changed by `edit` (the card's version and hash are set
/// to match unless `edit` changes them after).
pub(crate) fn add_version(
    dir: &Path,
    version: &str,
    edit: impl FnOnce(&mut Vec<u8>, &mut serde_json::Value),
) -> PathBuf {
    let r = Registry::new(dir);
    let active = r.active_path(CLASSIFIER).unwrap();
    let mut bytes = std::fs::read(&active).unwrap();
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(active.with_extension("card.json")).unwrap())
            .unwrap();
    card["version"] = version.into();
    card["onnx_sha256"] = sha256_hex(&bytes).into();
    edit(&mut bytes, &mut card);
    let path = r.version_path("flow-classifier", version);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(path.with_extension("card.json"), card.to_string()).unwrap();
    path
}
