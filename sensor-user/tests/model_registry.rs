//! `sensor models list|promote|shadow` on a copy of the committed registry:
//! a good version is promoted (state file and compatibility links follow),
//! a version whose file does not match its card's hash, whose schema is not
//! this build's, or that does not exist is refused with its path and the
//! reason, and the registry stays as it was.

mod registry_util;

use std::path::Path;
use std::process::Command;

use registry_util::{add_version, copy_registry};
use sensor::model::registry::{CLASSIFIER, REGISTRY_FILE, Registry};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");

fn models(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(SENSOR)
        .arg("models")
        .args(args)
        .arg("--models-dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn promote_and_shadow_a_good_version_refuse_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_registry(dir);
    let shipped = std::fs::read_to_string(dir.join(REGISTRY_FILE)).unwrap();
    let (ok, list, err) = models(dir, &["list"]);
    assert!(ok, "{err}");
    assert!(list.contains("active"), "{list}");

    add_version(dir, "2.0.0+good", |_, _| {});
    let corrupt = add_version(dir, "2.0.0+corrupt", |bytes, _| {
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
    });
    let mismatched = add_version(dir, "2.0.0+schema", |_, card| {
        card["schema"]["features"][3]["name"] = "something_else".into();
    });

    // Refused, each with the path and the reason; the registry unchanged.
    for (version, path, reason) in [
        ("2.0.0+corrupt", corrupt.clone(), "sha256"),
        (
            "2.0.0+schema",
            mismatched.with_extension("card.json"),
            "something_else",
        ),
        (
            "2.0.0+absent",
            Registry::new(dir).version_path("flow-classifier", "2.0.0+absent"),
            "no model at",
        ),
    ] {
        let (ok, _, err) = models(dir, &["promote", "flow-classifier", version]);
        assert!(!ok, "{version} promoted");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(reason), "{err}");
        let (ok, _, err) = models(dir, &["shadow", "flow-classifier", version]);
        assert!(!ok && err.contains(reason), "{version} shadowed: {err}");
        assert_eq!(
            std::fs::read_to_string(dir.join(REGISTRY_FILE)).unwrap(),
            shipped
        );
    }
    let (ok, _, err) = models(dir, &["promote", "no-such-model", "1"]);
    assert!(!ok && err.contains("no model `no-such-model`"), "{err}");

    // Shadow, then promote the good one: the state and links follow.
    let (ok, _, err) = models(dir, &["shadow", "flow-classifier", "2.0.0+good"]);
    assert!(ok, "{err}");
    let (_, list, _) = models(dir, &["list"]);
    assert!(
        list.lines()
            .any(|l| l.contains("2.0.0+good") && l.contains("shadow")),
        "{list}"
    );
    let (ok, out, err) = models(dir, &["promote", "flow-classifier", "2.0.0+good"]);
    assert!(ok, "{err}");
    assert!(out.contains("now active"), "{out}");
    let r = Registry::new(dir);
    let state = r.state().unwrap().unwrap();
    let slots = &state.models["flow-classifier"];
    assert_eq!(slots.active, "2.0.0+good");
    assert_eq!(slots.shadow, None, "promoted out of shadow");
    assert_eq!(
        r.active_path(CLASSIFIER).unwrap(),
        r.version_path("flow-classifier", "2.0.0+good")
    );
    assert_eq!(
        std::fs::read_link(dir.join("flow-classifier.card.json")).unwrap(),
        Path::new("flow-classifier/2.0.0+good/flow-classifier.card.json")
    );
    let (ok, _, err) = models(dir, &["shadow", "flow-classifier", "--clear"]);
    assert!(ok, "{err}");
    assert_eq!(
        r.state().unwrap().unwrap().models["flow-classifier"].shadow,
        None
    );
}
