//! `cargo xtask fuzz`: builds the cargo-fuzz targets of `fuzz/` and runs
//! each for a bounded time with its committed corpus, one at a time (the
//! machine is shared), then reports runs, new inputs and crashes per target.
//!
//! New inputs go to a scratch corpus in the target directory; the committed
//! one (`fuzz/corpus/<target>/`) is only read, so it stays small until a
//! developer minimises and commits on purpose (`cargo fuzz cmin`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{has_binary, target_dir, workspace_root};

#[derive(clap::Args, Debug)]
pub(crate) struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Only this target (default: every target in `fuzz/fuzz_targets`).
    #[arg(long)]
    target: Option<String>,
}

/// Build flags shared by `build` and `run` (so `run` finds the build done).
/// No sanitizer: the fuzzed code is safe Rust, where `AddressSanitizer` finds
/// nothing the borrow checker does not, and it would cost half the
/// executions; overflow checks and debug assertions stay on, so arithmetic
/// an input can overflow is a crash.
fn fuzz_flags(target: &Path) -> Vec<String> {
    vec![
        "--sanitizer=none".into(),
        "--debug-assertions".into(),
        // Sixteen units build tract several times faster than one, for a
        // few percent of execution speed.
        "--codegen-units=16".into(),
        format!("--target-dir={}", target.display()),
    ]
}

/// What one target's run came to.
struct Outcome {
    name: String,
    runs: Option<u64>,
    new_inputs: usize,
    crash: Option<String>,
}

pub(crate) fn fuzz(args: &FuzzArgs) -> Result<()> {
    if !has_binary("cargo-fuzz") {
        bail!("cargo-fuzz is missing: run `cargo xtask setup`");
    }
    let fuzz_dir = workspace_root().join("fuzz");
    let targets = targets(&fuzz_dir)?;
    let selected: Vec<String> = match &args.target {
        Some(t) if targets.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target `{t}` (targets: {})", targets.join(", ")),
        None => targets,
    };
    let build_dir = target_dir().join("fuzz");
    let flags = fuzz_flags(&build_dir);
    crate::run_status(
        Command::new("cargo")
            .current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "build"])
            .args(&flags),
    )?;
    let mut outcomes = Vec::new();
    for name in &selected {
        outcomes.push(run_target(
            &fuzz_dir,
            &build_dir,
            &flags,
            name,
            args.seconds,
        )?);
    }
    println!(
        "\n{:<18} {:>12} {:>10}  crash",
        "target", "runs", "new inputs"
    );
    for o in &outcomes {
        println!(
            "{:<18} {:>12} {:>10}  {}",
            o.name,
            o.runs.map_or_else(|| "?".into(), |r| r.to_string()),
            o.new_inputs,
            o.crash.as_deref().unwrap_or("none")
        );
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crash.is_some())
        .map(|o| o.name.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "{} target(s) crashed: {}; reproduce with `cargo +nightly fuzz run NAME FILE` in fuzz/, \
             fix, and add FILE to fuzz/corpus/NAME/",
            crashed.len(),
            crashed.join(", ")
        );
    }
    Ok(())
}

/// Target names: the files of `fuzz/fuzz_targets`.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    out.sort();
    Ok(out)
}

fn run_target(
    fuzz_dir: &Path,
    build_dir: &Path,
    flags: &[String],
    name: &str,
    seconds: u64,
) -> Result<Outcome> {
    let scratch = build_dir.join("corpus").join(name);
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let before = count_files(&scratch);
    let seeds: PathBuf = fuzz_dir.join("corpus").join(name);
    println!("fuzz: {name} for {seconds} s");
    let out = Command::new("cargo")
        .current_dir(fuzz_dir)
        .args(["+nightly", "fuzz", "run", name])
        .args(flags)
        .arg(&scratch)
        .arg(&seeds)
        .arg("--")
        .args([
            // One process, libFuzzer's default (`-jobs` would fork workers
            // that log to fuzz-N.log files instead).
            format!("-max_total_time={seconds}"),
            // An input that takes this long is a hang, reported as a crash.
            "-timeout=10".into(),
            "-print_final_stats=1".into(),
        ])
        .output()
        .with_context(|| format!("running the fuzz target {name}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let log_path = build_dir.join(format!("{name}.log"));
    std::fs::write(&log_path, log.as_bytes())
        .with_context(|| format!("writing {}", log_path.display()))?;
    let runs = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok());
    let crash = (!out.status.success()).then(|| {
        log.lines()
            .find_map(|l| {
                l.split_once("Test unit written to ")
                    .map(|(_, p)| p.trim().to_owned())
            })
            .unwrap_or_else(|| format!("exit {} (see {})", out.status, log_path.display()))
    });
    Ok(Outcome {
        name: name.to_owned(),
        runs,
        new_inputs: count_files(&scratch).saturating_sub(before),
        crash,
    })
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}
