//! The `sensor` binary: parses the command line, sets up logging, runs the
//! subcommand and turns any error into one `error: …` line and exit code 1.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use sensor::{
    capture::workers::noop_factory,
    run::{
        cli::{Cli, Command},
        runner,
        scoring::Scoring,
    },
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            tracing::debug!("full error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            if args.no_score {
                let summary = runner::run(&args, &*noop_factory())
                    .with_context(|| format!("sensor run on `{}`", args.iface))?;
                eprintln!("{}", summary.human());
                return Ok(());
            }
            // Threads inherit the signal mask: block SIGINT/SIGTERM before the
            // scoring and alert threads start, so the runner's signalfd (not
            // the default action on some other thread) receives them.
            let mut signals = SigSet::empty();
            signals.add(Signal::SIGINT);
            signals.add(Signal::SIGTERM);
            pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
                .context("blocking SIGINT/SIGTERM")?;
            let n_workers = args.load_options()?.n_workers as usize;
            let scoring = Scoring::start(&args, n_workers)?;
            let result = runner::run_with_sketches(&args, scoring.factory(), scoring.sketches())
                .with_context(|| format!("sensor run on `{}`", args.iface));
            // Runs also after a failed start, so the alert stage's thread ends.
            let scored = scoring.finish();
            let summary = result?;
            eprintln!("{}\n{}", summary.human(), scored.human());
            if let Some(line) = scored.record_line() {
                eprintln!("{line}");
            }
            if let Some(Err(e)) = scored.record {
                return Err(anyhow::anyhow!(e).context("--record-out"));
            }
            Ok(())
        }
        Command::Stats(args) => {
            use std::io::Write as _;
            let counters = sensor::ops::report::read_pinned_counters(&args.iface)?;
            let line = serde_json::json!({
                "iface": args.iface,
                "counters": sensor::ops::report::counters_json(&counters),
            });
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}").context("writing to stdout")?;
            Ok(())
        }
        Command::Feedback(args) => {
            sensor::alerts::run_feedback(&args, &mut std::io::stdout())?;
            Ok(())
        }
        Command::Tune(args) => {
            sensor::alerts::run_tune(&args, &mut std::io::stdout())?;
            Ok(())
        }
        Command::ExportTraining(args) => {
            sensor::alerts::run_export_training(&args, &mut std::io::stdout())?;
            Ok(())
        }
        Command::Score(args) => {
            let n = sensor::model::offline::run_score(&args)?;
            eprintln!("scored {n} rows of {}", args.rows.display());
            Ok(())
        }
    }
}

/// The error chain on one line. Causes that span several lines (a verifier
/// log) contribute only their first line; `RUST_LOG=debug` shows everything.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let first = text.lines().next().unwrap_or_default().trim().to_owned();
        // aya often repeats its source in its own message; skip exact repeats.
        if !first.is_empty() && !parts.iter().any(|p| p.contains(&first)) {
            parts.push(first);
        }
    }
    parts.join(": ")
}
