//! The `sensor` binary: parses the command line, sets up logging, runs the
//! subcommand and turns any error into one `error: …` line and exit code 1.

use std::process::ExitCode;

use clap::Parser as _;
use sensor::run::{
    self,
    cli::{Cli, Command},
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
        Command::Run(args) => Ok(run::sensor_run(&args, &mut std::io::stderr())?),
        Command::Collect(args) => Ok(run::collect::sensor_collect(&args, &mut std::io::stderr())?),
        Command::Stats(args) => Ok(sensor::ops::stats::write_stats(
            &args.iface,
            &mut std::io::stdout().lock(),
        )?),
        Command::Top(args) => Ok(sensor::ops::top::run_top(&sensor::ops::top::TopOptions {
            metrics: &args.metrics,
            iface: args.iface.as_deref(),
            interval: args.interval,
        })?),
        Command::Block(args) => {
            let (iface, op) = args.op();
            Ok(sensor::ops::block::run_block(
                iface,
                &op,
                &mut std::io::stdout().lock(),
            )?)
        }
        Command::Protect(args) => {
            let (iface, op) = args.op();
            Ok(sensor::ops::block::run_block(
                iface,
                &op,
                &mut std::io::stdout().lock(),
            )?)
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
        Command::Completions(args) => {
            run::manual::write_completions(args.shell, &mut std::io::stdout().lock());
            Ok(())
        }
        Command::ManPages(args) => {
            let pages = run::manual::write_man_pages(&args.dir)?;
            eprintln!(
                "wrote {} manual pages to {}",
                pages.len(),
                args.dir.display()
            );
            Ok(())
        }
        Command::Models(args) => {
            sensor::model::registry::run_models(&args, &mut std::io::stdout().lock())?;
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
