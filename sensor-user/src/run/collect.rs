//! `sensor collect`: the flow collector on its own. Datagrams from routers
//! are decoded on a receiver thread and their records scored by collector
//! workers with the same pipelines and alert stage as `sensor run` (see
//! [`crate::capture::collector`]); the start and stop order is the same:
//! everything that can fail is opened first, and at the stop the receiver
//! ends before the workers drain, so no received record is left unscored.

use std::{io::Write, time::Instant};

use nix::sys::signal::{SigmaskHow, pthread_sigmask};
use sensor_common::{
    FlowKey, FlowStats,
    records::{CollectStats, CollectorCounters},
};
use tracing::warn;

use crate::{
    capture::{
        SensorError,
        collector::{Collector, CollectorError, RecordBatch, RecordSource},
        live::Published,
        workers::{HandlerFactory, WorkerPool, WorkerReport, merge_worker_flows, noop_factory},
    },
    ops::report::{OutputFile, worker_stats, write_flows},
    run::{
        cli::CollectArgs,
        runner::{ReloadHook, serve_until_stop, shutdown_signals},
        scoring::{Scoring, ScoringError, ScoringOptions},
    },
};

/// Record batches (one datagram's records for one worker) queued per
/// worker before the receiver waits for it.
const WORKER_QUEUE: usize = 1024;
/// Flows whose totals and report entries each worker keeps.
const FLOWS_PER_WORKER: usize = 131_072;

/// Why `sensor collect` failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Signals, outputs, workers or the end-of-run files.
    #[error("sensor collect")]
    Run {
        #[source]
        source: SensorError,
    },
    /// Models, alert configuration or recording could not start.
    #[error(transparent)]
    Scoring(#[from] ScoringError),
    /// The socket could not be bound.
    #[error(transparent)]
    Listen(#[from] CollectorError),
}

fn run_err(source: SensorError) -> CollectError {
    CollectError::Run { source }
}

/// `sensor collect`: receives and scores flow records until SIGINT/SIGTERM
/// or `--duration`, then writes the requested outputs and a summary to
/// `out`.
///
/// # Errors
/// See [`CollectError`]; threads started before a failure are stopped and
/// joined first.
pub fn sensor_collect(args: &CollectArgs, out: &mut impl Write) -> Result<(), CollectError> {
    let (sfd, old_mask) = shutdown_signals().map_err(run_err)?;
    let result = collect_inner(args, out, &sfd);
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None) {
        warn!(error = %e, "could not restore the signal mask");
    }
    result
}

fn collect_inner(
    args: &CollectArgs,
    out: &mut impl Write,
    sfd: &nix::sys::signalfd::SignalFd,
) -> Result<(), CollectError> {
    let stats_out = args
        .stats_out
        .as_deref()
        .map(OutputFile::create)
        .transpose()
        .map_err(run_err)?;
    let flows_out = args
        .flows_out
        .as_deref()
        .map(OutputFile::create)
        .transpose()
        .map_err(run_err)?;
    let n_workers = args.workers as usize;
    let opts = ScoringOptions::from(args);
    let scoring = if args.no_score {
        None
    } else {
        Some(Scoring::start(&opts, n_workers, 0)?)
    };
    let noop = noop_factory();
    let factory: &HandlerFactory = scoring.as_ref().map_or(&*noop, Scoring::factory);
    let (senders, sources): (Vec<_>, Vec<_>) = (0..n_workers)
        .map(|_| {
            let (tx, rx) = crossbeam_channel::bounded::<RecordBatch>(WORKER_QUEUE);
            (tx, RecordSource::new(rx, FLOWS_PER_WORKER))
        })
        .unzip();
    let report_flows = if flows_out.is_some() {
        FLOWS_PER_WORKER
    } else {
        0
    };
    let pool = match WorkerPool::spawn_sources(sources, factory, report_flows, "sensor-collect", 0)
    {
        Ok(p) => p,
        Err(e) => {
            drop(senders);
            let _ = scoring.map(Scoring::finish);
            return Err(run_err(e));
        }
    };
    let collector = match Collector::start(args.listen, senders) {
        Ok(c) => c,
        Err(e) => {
            pool.stop_and_join();
            let _ = scoring.map(Scoring::finish);
            return Err(e.into());
        }
    };
    let started = Instant::now();
    let _ = writeln!(
        out,
        "sensor: collecting flow records on udp {}",
        collector.local_addr()
    );
    let _ = out.flush();
    let reload = scoring
        .as_ref()
        .map(|s| move |kind, pool: &WorkerPool| s.reload_for(&opts, kind, &[pool]));
    let reloads = Published::<sensor_common::records::ConfigReloads>::default();
    let waited = serve_until_stop(
        (sfd, None),
        args.duration.map(|d| started + d),
        (reload.as_ref().map(|r| r as ReloadHook<'_>), &pool),
        &reloads,
        |_| warn!("SIGUSR1: sensor collect writes its outputs at the stop only"),
    );
    // Stop in order: the receiver first (its senders go), then the
    // workers drain what it sent, then the alert stage drains theirs.
    let counters = collector.stop();
    let duration = started.elapsed();
    let reports = pool.stop_and_join();
    let scored = scoring.map(Scoring::finish);
    waited.map_err(run_err)?;
    if let Some(f) = stats_out {
        f.write_json(&CollectStats {
            collector: counters,
            workers: reports.iter().map(worker_stats).collect(),
            duration_s: duration.as_secs_f64(),
        })
        .map_err(run_err)?;
    }
    if let Some(f) = flows_out {
        let merged = merge_worker_flows(&reports);
        let mut flows: Vec<(FlowKey, FlowStats)> =
            merged.iter().map(|(k, f)| (*k, f.last)).collect();
        flows.sort_by_key(|(_, s)| s.first_seen_ns);
        f.write_with(|w| write_flows(w, &flows, &merged))
            .map_err(run_err)?;
    }
    let _ = writeln!(out, "{}", summary(&counters, &reports));
    if let Some(s) = scored {
        let _ = writeln!(out, "{}", s.human());
    }
    Ok(())
}

/// The collector beside `sensor run` (`--collect`): its receiver and its
/// one worker, whose handler is the factory's `first_handler`-th.
pub(crate) struct Beside {
    collector: Collector,
    pool: WorkerPool,
}

impl Beside {
    /// Starts the worker, then binds `listen` and starts receiving.
    ///
    /// # Errors
    /// The worker cannot start or the socket cannot be bound.
    pub(crate) fn start(
        listen: std::net::SocketAddr,
        factory: &HandlerFactory,
        first_handler: usize,
    ) -> Result<Self, super::RunError> {
        let err = |source| super::RunError::Collect { source };
        let (tx, rx) = crossbeam_channel::bounded::<RecordBatch>(WORKER_QUEUE);
        let source = RecordSource::new(rx, FLOWS_PER_WORKER);
        let pool =
            WorkerPool::spawn_sources(vec![source], factory, 0, "sensor-collect", first_handler)
                .map_err(|e| err(run_err(e)))?;
        match Collector::start(listen, vec![tx]) {
            Ok(collector) => {
                tracing::info!(listen = %collector.local_addr(), "collecting flow records");
                Ok(Self { collector, pool })
            }
            Err(e) => {
                pool.stop_and_join();
                Err(err(e.into()))
            }
        }
    }

    /// The collector's counters so far.
    pub(crate) fn counters(&self) -> CollectorCounters {
        self.collector.counters()
    }

    /// The collector's worker, for requests (a model swap).
    pub(crate) fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    /// Stops the receiver, then lets the worker drain; returns the summary
    /// line.
    pub(crate) fn stop(self) -> String {
        let counters = self.collector.stop();
        let reports = self.pool.stop_and_join();
        summary(&counters, &reports)
    }
}

/// One line about what was received and decoded.
fn summary(c: &CollectorCounters, reports: &[WorkerReport]) -> String {
    format!(
        "sensor: datagrams received {} (v5 {}, v9 {}, IPFIX {}), flow records {}, malformed {} \
         (truncated header {}, unknown version {}, bad length {}, truncated set {}, bad template {}, \
         truncated record {}), sets without a template {}, templates learnt {} (changed {}, \
         withdrawn {}, refused {}), records scaled by sampling {}, events scored {}",
        c.received,
        c.v5_datagrams,
        c.v9_datagrams,
        c.ipfix_datagrams,
        c.records,
        c.malformed(),
        c.truncated_header,
        c.unknown_version,
        c.bad_length,
        c.truncated_set,
        c.bad_template,
        c.truncated_record,
        c.sets_without_template,
        c.templates_learned,
        c.templates_changed,
        c.templates_withdrawn,
        c.templates_refused,
        c.records_scaled,
        reports.iter().map(|r| r.counters.events).sum::<u64>(),
    )
}
