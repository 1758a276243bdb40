//! `cargo xtask install` lays the sensor out under a prefix: the installed
//! binary finds its installed models without root, the manual pages and
//! completions are there, and `systemd-analyze verify` accepts the unit.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sensor_lab::sensor::TempDir;

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");

/// `cargo xtask install --sensor-bin SENSOR --prefix <dir>/usr
/// --sysconfdir <dir>/etc`: this test's binary, nothing outside `dir`.
fn install(dir: &Path) -> (PathBuf, PathBuf) {
    let prefix = dir.join("usr");
    let sysconf = dir.join("etc");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "-q",
            "-p",
            "xtask",
            "--",
            "install",
            "--sensor-bin",
            SENSOR,
        ])
        .arg("--prefix")
        .arg(&prefix)
        .arg("--sysconfdir")
        .arg(&sysconf)
        .output()
        .expect("cargo xtask install");
    assert!(
        out.status.success(),
        "cargo xtask install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (prefix, sysconf)
}

/// Runs `cmd` as `nobody` when this test runs as root: the installed
/// layout must work without privileges.
fn unprivileged(cmd: &mut Command) -> Output {
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody")
            .expect("passwd")
            .expect("no `nobody` account");
        cmd.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw());
    }
    cmd.output().expect("run the installed sensor")
}

#[test]
fn installed_layout_works() {
    let dir = TempDir::new("install").expect("temp dir");
    // The unprivileged run below reads the prefix, whatever the umask.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod temp dir");
    let (prefix, sysconf) = install(dir.path());
    for path in [
        "bin/sensor",
        "share/xdp-sensor/models/flow-classifier.onnx",
        "share/xdp-sensor/models/flow-autoencoder.card.json",
        "share/doc/xdp-sensor/sensor.example.toml",
        "share/man/man1/sensor.1",
        "share/man/man1/sensor-run.1",
        "share/bash-completion/completions/sensor",
        "share/zsh/site-functions/_sensor",
        "share/fish/vendor_completions.d/sensor.fish",
        "lib/systemd/system/xdp-sensor@.service",
        "lib/sysusers.d/xdp-sensor.conf",
        "lib/tmpfiles.d/xdp-sensor.conf",
    ] {
        assert!(prefix.join(path).is_file(), "{path} not installed");
    }
    // The model registry came along: the installed binary lists it.
    assert!(
        prefix
            .join("share/xdp-sensor/models/registry.json")
            .is_file()
    );
    let list = Command::new(prefix.join("bin/sensor"))
        .args(["models", "list"])
        .output()
        .expect("sensor models list");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{list:?}");
    assert_eq!(
        text.lines().filter(|l| l.contains(" active ")).count(),
        2,
        "{text}"
    );

    // The installed binary reads the installed cards (not the source
    // tree's): a threshold changed there shows in `sensor tune`.
    let card_path = prefix.join("share/xdp-sensor/models/flow-classifier.card.json");
    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&card_path).expect("card")).expect("card JSON");
    card["thresholds"]["flood"] = serde_json::json!(0.5);
    std::fs::write(&card_path, serde_json::to_vec(&card).expect("JSON")).expect("write card");
    let config = dir.path().join("tune.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\nverdict_store = \"{0}/none.jsonl\"\nalert_log = \"{0}/none-log.jsonl\"\n",
            dir.path().display()
        ),
    )
    .expect("config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = unprivileged(
        Command::new(prefix.join("bin/sensor"))
            .arg("tune")
            .arg("--config")
            .arg(&config),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flood = stdout
        .lines()
        .find(|l| l.starts_with("flood"))
        .unwrap_or_else(|| panic!("no flood line: {stdout}"));
    assert!(flood.contains("0.5000"), "installed card not used: {flood}");

    // The installed configuration loads as installed: models and inventory
    // resolve to the installed files.
    let installed_config = sysconf.join("sensor/sensor.toml");
    let text = std::fs::read_to_string(&installed_config).expect("installed config");
    assert!(
        text.contains(&format!("{}/share/xdp-sensor/models/", prefix.display())),
        "{text}"
    );
    let file = sensor::alerts::config::SensorFile::load(&installed_config).expect("config parses");
    let inventory = file.alerts.inventory.as_ref().expect("inventory named");
    sensor::alerts::inventory::Inventory::load(inventory).expect("installed inventory loads");
    let settings = sensor::alerts::config::AlertSettings::load(&installed_config)
        .expect("installed config loads with its model cards");
    assert!(settings.classifier.is_some() && settings.autoencoder.is_some());

    // `systemd-analyze verify` on an instance of the template: the
    // ExecStart binary exists (the temporary prefix).
    let units = dir.path().join("units");
    std::fs::create_dir_all(&units).expect("units dir");
    let instance = units.join("xdp-sensor@lo.service");
    std::fs::copy(
        prefix.join("lib/systemd/system/xdp-sensor@.service"),
        &instance,
    )
    .expect("copy unit");
    // With the installed pages on MANPATH, verify also checks that the
    // unit's Documentation= page exists.
    let verify = Command::new("systemd-analyze")
        .env("MANPATH", prefix.join("share/man"))
        .arg("verify")
        .arg(&instance)
        .output()
        .expect("systemd-analyze (cargo xtask setup installs systemd)");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("xdp-sensor@"),
        "systemd-analyze verify complains about the unit: {stderr}"
    );
}
