//! Developer tasks cargo cannot do by itself: install the toolchain pieces,
//! build and run the sensor, run the whole test suite, benches, and a
//! self-contained demo in network namespaces.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![expect(
    clippy::print_stdout,
    reason = "a developer tool: progress and results are its output"
)]

mod demo;
mod eval;
mod fuzz;
mod install;
mod lab;
mod setup;
mod train;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, test, bench and demo the XDP threat sensor"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building, testing and the demo need (apt packages,
    /// nightly rust-src, bpf-linker). Idempotent.
    Setup,
    /// Build the release sensor (the XDP object is built by sensor-user's build.rs).
    Build,
    /// Build, then run `sensor run <ARGS>` (needs root). Ctrl-C detaches.
    Run {
        /// Arguments for `sensor run`, e.g. `-- --iface eth0`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run the whole test suite (nextest when installed).
    Test {
        /// Extra arguments for the test runner.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the release sensor and install it with its models, example
    /// configuration, systemd unit, manual pages and shell completions.
    Install(install::InstallArgs),
    /// Run benchmarks: `xdp`, `workers`, or all when omitted.
    Bench {
        /// Which bench target.
        which: Option<String>,
    },
    /// Self-contained demo: the traffic lab, benign scenarios and attacks
    /// from real tools, alerts live with their scenario, a verdict per
    /// scenario.
    Demo,
    /// Detection quality on real captures (tests/data/pcaps) and lab
    /// scenarios: detected or not, class, time to detect, false detections.
    /// Writes target/eval/eval.md and eval.json. Needs root.
    Eval(eval::EvalArgs),
    /// Traffic lab: labelled scenarios from real tools with the sensor on a
    /// monitor port (`lab list`, `lab run <scenario>...`, `lab record`).
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// Fuzz the parsers of untrusted input (events, config, inventory,
    /// captures, feedback store) with cargo-fuzz on nightly, each target
    /// for a bounded time with its committed corpus (`fuzz/corpus`).
    Fuzz(fuzz::FuzzArgs),
    /// Regenerate the training data and retrain the committed models
    /// (Python venv with pinned requirements; deterministic).
    Train(train::TrainArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    cargo_bin_on_path();
    match cli.task {
        Task::Setup => setup::setup(),
        Task::Build => build().map(drop),
        Task::Run { args } => run(&args),
        Task::Test { args } => test(&args),
        Task::Install(args) => install::install(&args),
        Task::Bench { which } => bench(which.as_deref()),
        Task::Demo => demo::demo(),
        Task::Eval(args) => eval::eval(&args),
        Task::Lab(cmd) => lab::lab(&cmd),
        Task::Fuzz(args) => fuzz::fuzz(&args),
        Task::Train(args) => train::train(&workspace_root(), &args),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_owned()
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// True when `name` is an executable on PATH.
pub fn has_binary(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::metadata(dir.join(name)).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

/// Runs a command with inherited stdio; fails with the command line if it
/// exits non-zero.
pub fn run_status(cmd: &mut Command) -> Result<()> {
    let line = sensor_lab::netns::describe(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// `cargo`, the same binary that runs this xtask.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Builds the release sensor; returns the binary's path.
pub fn build() -> Result<PathBuf> {
    if !setup::is_complete() {
        bail!(
            "the eBPF build needs nightly with rust-src and bpf-linker 0.13; \
             run `cargo xtask setup` first"
        );
    }
    run_status(cargo().args(["build", "--release", "-p", "sensor-user"]))?;
    let bin = target_dir().join("release/sensor");
    if !bin.exists() {
        bail!("build succeeded but {} is missing", bin.display());
    }
    println!("built {}", bin.display());
    Ok(bin)
}

fn run(args: &[String]) -> Result<()> {
    let bin = build()?;
    if !sensor_lab::root::is_root() {
        bail!(
            "loading XDP needs root: sudo -E cargo xtask run -- {}",
            args.join(" ")
        );
    }
    // Replace this process so Ctrl-C reaches the sensor alone, which
    // detaches its program and writes its outputs.
    let err = std::os::unix::process::CommandExt::exec(Command::new(&bin).arg("run").args(args));
    Err(err).with_context(|| format!("cannot exec {}", bin.display()))
}

fn test(extra: &[String]) -> Result<()> {
    setup::setup()?;
    // The eBPF crate builds only for the BPF target (sensor-user's build.rs
    // does that), so it is excluded from host test builds.
    let scope = ["--workspace", "--exclude", "sensor-ebpf"];
    if has_binary("cargo-nextest") {
        // nextest does not run doctests; they go first so nextest's summary
        // is the last thing printed.
        let doc = cargo()
            .args(["test", "--doc"])
            .args(scope)
            .status()
            .context("running cargo test --doc")?;
        let nextest = cargo()
            .args(["nextest", "run", "--no-fail-fast"])
            .args(scope)
            .args(extra)
            .status()
            .context("running cargo nextest")?;
        if !nextest.success() || !doc.success() {
            bail!("tests failed (nextest: {nextest}, doctests: {doc})");
        }
    } else {
        run_status(
            cargo()
                .args(["test", "--no-fail-fast"])
                .args(scope)
                .args(extra),
        )?;
    }
    Ok(())
}

/// Names of the bench targets of sensor-user.
fn bench_targets() -> Result<Vec<String>> {
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let mut names = Vec::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        if pkg["name"] != "sensor-user" {
            continue;
        }
        for t in pkg["targets"].as_array().into_iter().flatten() {
            if t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bench"))
            {
                names.push(t["name"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    Ok(names)
}

/// Bench names users type, and the bench targets they stand for.
const BENCH_ALIASES: [(&str, &[&str]); 2] = [
    ("xdp", &["xdp"]),
    ("workers", &["workers", "worker_dispatch"]),
];

fn bench(which: Option<&str>) -> Result<()> {
    setup::setup()?;
    let available = bench_targets()?;
    let wanted: Vec<String> = match which {
        // Everything sensor-user has.
        None => available.clone(),
        Some(w) => {
            let targets = BENCH_ALIASES
                .iter()
                .find(|(alias, _)| *alias == w)
                .map_or_else(|| vec![w], |(_, t)| t.to_vec());
            targets
                .into_iter()
                .filter(|t| available.iter().any(|a| a == t))
                .map(str::to_owned)
                .collect()
        }
    };
    if wanted.is_empty() {
        let have = if available.is_empty() {
            "none".to_owned()
        } else {
            available.join(", ")
        };
        println!(
            "bench `{}`: no such bench target in sensor-user yet (have: {have})",
            which.unwrap_or("all")
        );
        if which.is_some() {
            bail!("no bench ran");
        }
        return Ok(());
    }
    for name in &wanted {
        let mut cmd = cargo();
        cmd.args(["bench", "-p", "sensor-user", "--bench", name]);
        if name == "xdp" {
            cmd.env("SENSOR_BENCH_REFERENCE_DIR", build_reference()?);
        }
        run_status(&mut cmd)?;
    }
    Ok(())
}

/// Compiles the C reference programs of the XDP bench
/// (`sensor-user/benches/reference`) with clang-19 and returns the directory
/// holding `flow.o` and `noop.o`.
fn build_reference() -> Result<PathBuf> {
    let src = workspace_root().join("sensor-user/benches/reference");
    let out = target_dir().join("bench-reference");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // The multiarch include directory holds `asm/types.h`.
    let multiarch = format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    for name in ["flow", "noop"] {
        run_status(
            Command::new("clang-19")
                .args(["-O2", "-g", "-target", "bpf", &multiarch, "-c"])
                .arg(src.join(format!("{name}.c")))
                .arg("-o")
                .arg(out.join(format!("{name}.o"))),
        )
        .context("compiling the C reference (clang-19 and libbpf-dev: `cargo xtask setup`)")?;
    }
    Ok(out)
}

/// `cargo install` puts bpf-linker in `$CARGO_HOME/bin`; make sure the builds
/// this task starts find it even when that directory is not on PATH.
fn cargo_bin_on_path() {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let Some(bin) = home.map(|h| h.join("bin")) else {
        return;
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: called first thing in main, before any thread exists.
        unsafe { std::env::set_var("PATH", joined) };
    }
}
