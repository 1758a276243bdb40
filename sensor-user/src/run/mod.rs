//! Composes the stages into a running sensor: the command line, signal
//! handling, the scoring and alert threads and the capture loop.

pub mod cli;
pub mod manual;
pub mod runner;
pub mod scoring;
mod watch;

use std::{io::Write, sync::Arc};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use crate::{
    capture::{SensorError, workers::noop_factory},
    sinks::recorder::RecordError,
};
use cli::RunArgs;
use scoring::{Scoring, ScoringError};

/// The signals a running sensor handles on its `signalfd`: SIGINT and
/// SIGTERM stop it; SIGHUP reloads `--config` and SIGUSR1 writes the
/// outputs so far, neither ever stops it.
const HANDLED_SIGNALS: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
];

/// Why `sensor run` failed. Each variant's message is one step of the
/// one-line error the binary prints.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The options do not describe a valid run (worker count, sizes).
    #[error(transparent)]
    Options(SensorError),
    /// SIGINT/SIGTERM could not be routed to the capture loop.
    #[error("blocking SIGINT/SIGTERM/SIGHUP/SIGUSR1")]
    SignalMask {
        #[source]
        source: nix::Error,
    },
    /// Models, alert configuration or recording could not start.
    #[error(transparent)]
    Scoring(#[from] ScoringError),
    /// Loading, attaching or running the capture stage failed.
    #[error("sensor run on `{iface}`")]
    Capture {
        iface: String,
        #[source]
        source: SensorError,
    },
    /// `--record-out` failed while the run was writing it.
    #[error("--record-out")]
    Record {
        #[source]
        source: Arc<RecordError>,
    },
}

/// `sensor run`: attaches the XDP program, runs the workers (scoring them
/// unless `--no-score`) and the alert stage until SIGINT/SIGTERM, then
/// writes the end-of-run summary for the operator to `out` (also when only
/// the recording failed).
///
/// # Errors
/// See [`RunError`]; the alert stage's thread is joined before any error
/// is returned, also after a failed start.
pub fn sensor_run(args: &RunArgs, out: &mut impl Write) -> Result<(), RunError> {
    let capture_err = |source| RunError::Capture {
        iface: args.iface.clone(),
        source,
    };
    if args.no_score {
        let summary = runner::run(args, &*noop_factory()).map_err(capture_err)?;
        // The summary is a courtesy: a closed stderr must not fail the run.
        let _ = writeln!(out, "{}", summary.human());
        return Ok(());
    }
    // Threads inherit the signal mask: block SIGINT/SIGTERM before the
    // scoring and alert threads start, so the runner's signalfd (not the
    // default action on some other thread) receives them.
    let mut signals = SigSet::empty();
    for sig in HANDLED_SIGNALS {
        signals.add(sig);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .map_err(|source| RunError::SignalMask { source })?;
    // Once: the options read the config file for the kernel's prefixes.
    let opts = args.load_options().map_err(RunError::Options)?;
    let n_workers = opts.n_workers as usize;
    let scoring = Scoring::start(args, n_workers)?;
    let reload =
        |kind, pool: &crate::capture::workers::WorkerPool| scoring.reload_for(args, kind, pool);
    let result = runner::run_with_sketches(
        args,
        opts,
        scoring.factory(),
        scoring.sketches(),
        Some(&reload),
        scoring.figures(),
    )
    .map_err(capture_err);
    // Runs also after a failed start, so the alert stage's thread ends.
    let scored = scoring.finish();
    let summary = result?;
    let _ = writeln!(out, "{}\n{}", summary.human(), scored.human());
    if let Some(line) = scored.record_line() {
        let _ = writeln!(out, "{line}");
    }
    if let Some(Err(source)) = scored.record {
        return Err(RunError::Record { source });
    }
    Ok(())
}
