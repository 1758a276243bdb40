//! A model whose card schema differs from the sensor's is refused, with an
//! error naming the first mismatching feature.

use std::path::{Path, PathBuf};

use sensor::{
    features::N_FEATURES,
    model::{DEFAULT_BATCH_SIZES, Model, ModelError},
};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// Copies the committed classifier to a fresh directory with its card
/// edited by `edit`.
fn with_card(tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sensor-model-schema-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = models_dir().join("flow-classifier.onnx");
    let dst = dir.join("flow-classifier.onnx");
    std::fs::copy(&src, &dst).unwrap();
    let mut card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(models_dir().join("flow-classifier.card.json")).unwrap(),
    )
    .unwrap();
    edit(&mut card);
    std::fs::write(dir.join("flow-classifier.card.json"), card.to_string()).unwrap();
    dst
}

fn load(p: &Path) -> Result<Model, ModelError> {
    Model::load(p, "classifier", &DEFAULT_BATCH_SIZES)
}

#[test]
fn committed_classifier_passes_the_schema_check() {
    load(&models_dir().join("flow-classifier.onnx")).unwrap();
}

#[test]
fn renamed_feature_is_refused_by_name() {
    let p = with_card("rename", |c| {
        c["schema"]["features"][7]["name"] = "flow_packets_per_minute".into();
    });
    let err = load(&p).unwrap_err();
    match &err {
        ModelError::SchemaMismatch {
            index,
            expected,
            found,
            ..
        } => {
            assert_eq!(*index, 7);
            assert_eq!(*expected, "flow_packets_per_s");
            assert!(found.starts_with("flow_packets_per_minute"), "{found}");
        }
        other => panic!("wrong error: {other:?}"),
    }
    assert!(err.to_string().contains("flow_packets_per_s"), "{err}");
    std::fs::remove_dir_all(p.parent().unwrap()).ok();
}

#[test]
fn changed_unit_and_reordering_are_refused() {
    let p = with_card("unit", |c| {
        c["schema"]["features"][3]["unit"] = "kbytes".into();
    });
    assert!(matches!(
        load(&p),
        Err(ModelError::SchemaMismatch { index: 3, .. })
    ));
    std::fs::remove_dir_all(p.parent().unwrap()).ok();

    let p = with_card("swap", |c| {
        let f = c["schema"]["features"].as_array_mut().unwrap();
        f.swap(20, 21);
    });
    assert!(matches!(
        load(&p),
        Err(ModelError::SchemaMismatch { index: 20, .. })
    ));
    std::fs::remove_dir_all(p.parent().unwrap()).ok();

    let p = with_card("short", |c| {
        c["schema"]["features"].as_array_mut().unwrap().pop();
    });
    assert!(matches!(
        load(&p),
        Err(ModelError::SchemaMismatch { index, .. }) if index == N_FEATURES - 1
    ));
    std::fs::remove_dir_all(p.parent().unwrap()).ok();
}

#[test]
fn other_schema_version_and_kind_are_refused() {
    let p = with_card("version", |c| c["schema"]["version"] = 99.into());
    assert!(matches!(
        load(&p),
        Err(ModelError::SchemaVersion { found: 99, .. })
    ));
    std::fs::remove_dir_all(p.parent().unwrap()).ok();

    let p = with_card("kind", |c| c["kind"] = "autoencoder".into());
    assert!(matches!(load(&p), Err(ModelError::WrongKind { .. })));
    std::fs::remove_dir_all(p.parent().unwrap()).ok();
}

#[test]
fn missing_card_is_a_read_error_with_the_path() {
    let dir = std::env::temp_dir().join(format!("sensor-model-nocard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("m.onnx");
    std::fs::copy(models_dir().join("flow-classifier.onnx"), &p).unwrap();
    let err = load(&p).unwrap_err();
    assert!(matches!(err, ModelError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("m.card.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// An installed binary (`<prefix>/bin/sensor`) loads the models of
/// `<prefix>/share/xdp-sensor/models` without `--models-dir`: a broken model
/// placed there is the one the error names.
#[test]
fn an_installed_binary_finds_its_models_beside_it() {
    let prefix = std::env::temp_dir().join(format!("sensor-installed-{}", std::process::id()));
    let bin = prefix.join("bin");
    let models = prefix.join("share/xdp-sensor/models");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_sensor"), bin.join("sensor")).unwrap();
    std::fs::write(models.join("flow-classifier.onnx"), b"not an onnx model").unwrap();
    let out = std::process::Command::new(bin.join("sensor"))
        .args(["run", "--iface", "lo", "--duration", "0.1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&prefix).unwrap();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&models.join("flow-classifier.onnx").display().to_string()),
        "{stderr}"
    );
}
