//! Composes the stages into a running sensor: the command line, signal
//! handling, the scoring and alert threads and the capture loop.

pub mod cli;
pub mod collect;
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
    /// The flow collector beside the capture (`--collect`) could not start.
    #[error("--collect")]
    Collect {
        #[source]
        source: collect::CollectError,
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
    // Threads inherit the signal mask: block SIGINT/SIGTERM before the
    // scoring, alert and collector threads start, so the runner's signalfd
    // (not the default action on some other thread) receives them.
    let mut signals = SigSet::empty();
    for sig in HANDLED_SIGNALS {
        signals.add(sig);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .map_err(|source| RunError::SignalMask { source })?;
    // Once: the options read the config file for the kernel's prefixes.
    let opts = args.load_options().map_err(RunError::Options)?;
    let n_workers = opts.n_workers as usize;
    if args.no_score {
        let noop = noop_factory();
        let beside = args
            .collect
            .map(|addr| collect::Beside::start(addr, &*noop, n_workers))
            .transpose()?;
        let counts = beside.as_ref().map(|b| move || b.counters());
        let result = runner::run_with_sketches(
            args,
            opts,
            &*noop,
            &crate::capture::control::SketchHandle::default(),
            None,
            counts.as_ref().map(|c| c as runner::CollectorCounts<'_>),
            crate::ops::metrics::ScoringFigures::default(),
        );
        let collected = beside.map(collect::Beside::stop);
        let summary = result.map_err(capture_err)?;
        // The summary is a courtesy: a closed stderr must not fail the run.
        let _ = writeln!(out, "{}", summary.human());
        if let Some(line) = collected {
            let _ = writeln!(out, "{line}");
        }
        return Ok(());
    }
    let scoring_opts = scoring::ScoringOptions::from(args);
    let collector_workers = usize::from(args.collect.is_some());
    let scoring = Scoring::start(&scoring_opts, n_workers, collector_workers)?;
    let beside = match args
        .collect
        .map(|addr| collect::Beside::start(addr, scoring.factory(), n_workers))
        .transpose()
    {
        Ok(b) => b,
        Err(e) => {
            let _ = scoring.finish();
            return Err(e);
        }
    };
    // The collector's worker scores rows too: it swaps models with the
    // ring workers.
    let reload = |kind, pool: &crate::capture::workers::WorkerPool| match &beside {
        Some(b) => scoring.reload_for(&scoring_opts, kind, &[pool, b.pool()]),
        None => scoring.reload_for(&scoring_opts, kind, &[pool]),
    };
    let counts = beside.as_ref().map(|b| move || b.counters());
    let result = runner::run_with_sketches(
        args,
        opts,
        scoring.factory(),
        scoring.sketches(),
        Some(&reload),
        counts.as_ref().map(|c| c as runner::CollectorCounts<'_>),
        scoring.figures(),
    )
    .map_err(capture_err);
    // The collector stops before scoring finishes, so its rows are scored.
    let collected = beside.map(collect::Beside::stop);
    // Runs also after a failed start, so the alert stage's thread ends.
    let scored = scoring.finish();
    let summary = result?;
    let _ = writeln!(out, "{}", summary.human());
    if let Some(line) = collected {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "{}", scored.human());
    if let Some(line) = scored.record_line() {
        let _ = writeln!(out, "{line}");
    }
    if let Some(Err(source)) = scored.record {
        return Err(RunError::Record { source });
    }
    Ok(())
}
