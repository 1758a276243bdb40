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
//!    fixture rows, and scores the validation rows with `sensor score`
//!    (tract, as the workers run it) to record in each card how far tract is
//!    from ONNX Runtime;
//! 4. runs the Rust tests that check tract reproduces those scores, the
//!    features reproduce the fixture rows bit for bit and the simulator
//!    reproduces the fixture's events.
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
}

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
        .arg(&models))?;

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
    eprintln!("models rebuilt in {}", models.display());
    Ok(())
}
