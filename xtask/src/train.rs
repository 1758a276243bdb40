//! `cargo xtask train`: rebuilds the committed models from scratch.
//!
//! 1. builds `sensor-dataset` (sensor-train) and `sensor` (release) and runs the first: the seeded traffic
//!    simulator → the kernel export model → the live feature extractor →
//!    `target/dataset/flows.csv` (+ `.meta.json`), and the recorded fixture in
//!    `models/fixtures/` (`events.bin`, `gateway.bin`, `rows.csv`);
//! 2. creates a Python venv in `target/train-venv` and installs the pinned
//!    `models/requirements.txt`;
//! 3. runs `models/train.py` on the simulated rows plus the lab recording
//!    (`models/data/lab-rows.csv.gz`, made by `cargo xtask lab record`), which
//!    writes the ONNX models, their cards and the ONNX Runtime scores of the
//!    fixture rows into `target/train-out`, and scores the validation rows
//!    with `sensor score` (tract, as the workers run it) to record in each
//!    card how far tract is from ONNX Runtime;
//! 4. adds each model to the registry as a new version,
//!    `models/<name>/<version>/` (the version carries the ONNX file's hash,
//!    so the same bytes are the same version, and an existing version is
//!    never overwritten); the active versions stay as they are unless
//!    `--promote` is given, which promotes both (`sensor models promote`)
//!    and installs their expected fixture scores;
//! 5. with `--promote`, runs the Rust tests that check tract reproduces
//!    those scores, the features reproduce the fixture rows bit for bit and
//!    the simulator reproduces the fixture's events.
//!
//! Same inputs, same seeds → the same ONNX bytes.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Options of `cargo xtask train`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TrainArgs {
    /// Python interpreter used to create the venv.
    #[arg(long, default_value = "python3")]
    pub(crate) python: String,
    /// Simulated episodes (more = more rows, slower).
    #[arg(long, default_value_t = 10)]
    pub(crate) episodes: u64,
    /// Base seed of the simulator.
    #[arg(long, default_value_t = 20_261_122)]
    pub(crate) seed: u64,
    /// Skip the tract-vs-ONNX-Runtime test run at the end.
    #[arg(long)]
    pub(crate) no_verify: bool,
    /// Labelled rows recorded in the traffic lab (`cargo xtask lab record`),
    /// CSV or gzipped CSV with its `.meta.json` beside it; repeatable. The
    /// committed recordings are used when none is given.
    #[arg(long)]
    pub(crate) lab_data: Vec<PathBuf>,
    /// Train on the simulated data only.
    #[arg(long, conflicts_with = "lab_data")]
    pub(crate) sim_only: bool,
    /// Cost of a false positive when the alert threshold is chosen.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) fp_cost: f64,
    /// Cost of a missed attack when the alert threshold is chosen.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) fn_cost: f64,
    /// Make the new versions active (and their fixture scores the expected
    /// ones). Without it they are only added: try one with `sensor models
    /// shadow`, then promote it.
    #[arg(long)]
    pub(crate) promote: bool,
}

/// The models `train.py` writes, by registry name.
const MODEL_NAMES: [&str; 2] = ["flow-classifier", "flow-autoencoder"];

/// The committed lab recordings (see `models/README.md`): every scenario
/// from a fresh lab (first-contact attackers), and the same scenarios
/// played back to back in one lab (attackers carrying the previous
/// scenarios' host history).
pub(crate) const LAB_DATA: [&str; 2] = [
    "models/data/lab-rows.csv.gz",
    "models/data/lab-rows-continuous.csv.gz",
];

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {}", cmd.get_program().display()))?;
    if !st.success() {
        bail!("{} failed: {st}", cmd.get_program().display());
    }
    Ok(())
}

/// Runs the whole pipeline from the workspace root `root`.
pub(crate) fn train(root: &Path, args: &TrainArgs) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let models = root.join("models");
    let out = target.join("train-out");
    let data = target.join("dataset/flows.csv");
    let fixtures = models.join("fixtures");

    run(Command::new(&cargo).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "sensor-train",
        "--bin",
        "sensor-dataset",
        "-p",
        "sensor-user",
        "--bin",
        "sensor",
    ]))?;
    run(Command::new(target.join("release/sensor-dataset"))
        .current_dir(root)
        .arg("--out")
        .arg(&data)
        .arg("--fixture-dir")
        .arg(&fixtures)
        .arg("--episodes")
        .arg(args.episodes.to_string())
        .arg("--seed")
        .arg(args.seed.to_string()))?;

    let venv = target.join("train-venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        run(Command::new(&args.python).arg("-m").arg("venv").arg(&venv))
            .context("creating the training venv (is python3-venv installed?)")?;
    }
    run(Command::new(&py)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(models.join("requirements.txt")))?;
    let mut lab = args.lab_data.clone();
    if lab.is_empty() && !args.sim_only {
        lab.extend(LAB_DATA.iter().map(|p| root.join(p)).filter(|p| p.exists()));
    }
    let mut train = Command::new(&py);
    train
        .current_dir(root)
        .arg(models.join("train.py"))
        .arg("--data")
        .arg(&data);
    for l in &lab {
        train.arg("--data").arg(l);
    }
    run(train
        .arg("--fp-cost")
        .arg(args.fp_cost.to_string())
        .arg("--fn-cost")
        .arg(args.fn_cost.to_string())
        .arg("--fixture")
        .arg(fixtures.join("rows.csv"))
        .arg("--tract-scorer")
        .arg(target.join("release/sensor"))
        .arg("--out")
        .arg(&out))?;

    let sensor = target.join("release/sensor");
    let mut versions = Vec::new();
    for name in MODEL_NAMES {
        let version = add_version(&out, &models, name)?;
        if args.promote {
            run(Command::new(&sensor)
                .args(["models", "promote", name, &version, "--models-dir"])
                .arg(&models))?;
        }
        versions.push(format!("{name} {version}"));
    }
    if !args.promote {
        eprintln!(
            "added {} to {}; the active versions are unchanged: try them with \
             `sensor models shadow NAME VERSION`, make them active with \
             `sensor models promote NAME VERSION` (and copy {} into models/fixtures/), \
             or rerun with --promote",
            versions.join(", "),
            models.display(),
            out.join("fixtures/expected_scores.csv").display()
        );
        return Ok(());
    }
    std::fs::copy(
        out.join("fixtures/expected_scores.csv"),
        models.join("fixtures/expected_scores.csv"),
    )
    .context("installing the new versions' expected fixture scores")?;

    if !args.no_verify {
        run(Command::new(&cargo).current_dir(root).args([
            "test",
            "-p",
            "sensor-user",
            "--test",
            "features_fixture",
            "--test",
            "model_scores",
            "--test",
            "model_schema",
        ]))?;
        run(Command::new(&cargo).current_dir(root).args([
            "test",
            "-p",
            "sensor-train",
            "--test",
            "simulator",
        ]))?;
    }
    eprintln!(
        "models rebuilt and promoted in {}: {}",
        models.display(),
        versions.join(", ")
    );
    Ok(())
}

/// Copies `<out>/<name>.onnx` and its card into the registry as
/// `models/<name>/<version>/`, the version read from the card; returns the
/// version. The same version already there with the same bytes is kept
/// (training is reproducible); with other bytes, it is an error, never an
/// overwrite.
fn add_version(out: &Path, models: &Path, name: &str) -> anyhow::Result<String> {
    let card_file = format!("{name}.card.json");
    let onnx_file = format!("{name}.onnx");
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join(&card_file))
            .with_context(|| format!("reading {}", out.join(&card_file).display()))?,
    )
    .with_context(|| format!("parsing {}", out.join(&card_file).display()))?;
    let version = card["version"]
        .as_str()
        .with_context(|| format!("{}: no version", out.join(&card_file).display()))?
        .to_owned();
    let dir = models.join(name).join(&version);
    let onnx = std::fs::read(out.join(&onnx_file))?;
    if dir.join(&onnx_file).exists() {
        if std::fs::read(dir.join(&onnx_file))? != onnx {
            bail!(
                "{} exists with other bytes: a version is never overwritten",
                dir.join(&onnx_file).display()
            );
        }
        eprintln!("{name} {version}: already in the registry");
    } else {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(&onnx_file), &onnx)?;
        std::fs::copy(out.join(&card_file), dir.join(&card_file))?;
        eprintln!("{name} {version}: added to the registry");
    }
    Ok(version)
}
