//! `sensor run`: wires the stages together in data-flow order and shuts them
//! down in reverse, so no event is lost at either end.
//!
//! Start: load (maps sized, config written) → control thread → workers (each
//! owns its ring) → attach. Stop: detach (no new events) → workers drain their
//! rings and stop → control thread reads both sketch epochs → outputs.
//!
//! Signals: SIGINT/SIGTERM are blocked in the calling thread before any stage
//! thread is spawned (threads inherit the mask) and read from a `signalfd`.
//! That needs no async-signal-safe handler, no extra crate (`nix` is already a
//! dependency), and `poll` on the fd gives the `--duration` timeout for free.

use std::{
    os::fd::AsFd,
    time::{Duration, Instant},
};

use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{
        signal::{SigSet, SigmaskHow, Signal, pthread_sigmask},
        signalfd::{SfdFlags, SignalFd},
    },
};
use sensor_common::{
    COUNTER_COUNT, Counter,
    records::{ConfigReloads, Handover},
};
use tracing::{error, info, warn};

use crate::{
    capture::control::{ControlThread, EPOCH, SketchHandle, SketchMaps, SketchSnapshot},
    capture::error::SensorError,
    capture::live::Published,
    capture::loader::Sensor,
    capture::pins::KeptCounts,
    capture::privileges::Account,
    capture::workers::{HandlerFactory, WorkerPool, WorkerReport, merge_worker_flows},
    ops::metrics::{MetricSources, MetricsListener, ScoringFigures},
    ops::report::{self, CountersReader, OutputFile},
    run::cli::RunArgs,
    run::scoring::ReloadKind,
    run::watch::RegistryWatch,
};

/// What a run saw, for the closing summary.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub counters: [u64; COUNTER_COUNT as usize],
    pub flows: usize,
    pub worker_events: u64,
    pub decode_errors: u64,
    pub duration: Duration,
    /// The signal that ended the run, if any.
    pub signal: Option<Signal>,
}

impl RunSummary {
    /// Value of one global counter.
    #[must_use]
    pub fn counter(&self, c: Counter) -> u64 {
        self.counters[c as usize]
    }

    /// A short human summary (several lines).
    #[must_use]
    pub(crate) fn human(&self) -> String {
        format!(
            "sensor: observed {} packets ({} bytes) in {:.1} s, {} flows in the flow table\n\
             sensor: events emitted {}, received by workers {}, lost (ring full) {}, \
             sampled out {}, decode errors {}\n\
             sensor: parse problems {}, internal errors {}",
            self.counter(Counter::PacketsSeen),
            self.counter(Counter::BytesSeen),
            self.duration.as_secs_f64(),
            self.flows,
            self.counter(Counter::EventsEmitted),
            self.worker_events,
            self.counter(Counter::EventsLost),
            self.counter(Counter::EventsSampledOut),
            self.decode_errors,
            parse_problems(&self.counters),
            self.counter(Counter::InternalError),
        )
    }
}

/// Packets the parser could not fully parse (all passed).
fn parse_problems(c: &[u64; COUNTER_COUNT as usize]) -> u64 {
    Counter::ALL
        .iter()
        .filter(|k| k.is_parse_problem())
        .map(|&k| c[k as usize])
        .sum()
}

/// Blocks SIGINT and SIGTERM (stop) and SIGHUP and SIGUSR1 (reload and
/// dump requests, which must never kill a sensor) in this thread and so in
/// threads it spawns later, and returns a `signalfd` that reports them,
/// plus the previous mask.
pub(crate) fn shutdown_signals() -> Result<(SignalFd, SigSet), SensorError> {
    let mut mask = SigSet::empty();
    for sig in super::HANDLED_SIGNALS {
        mask.add(sig);
    }
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
        .map_err(|e| SensorError::system("blocking SIGINT/SIGTERM", e))?;
    let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| SensorError::system("creating a signalfd", e))?;
    Ok((fd, old))
}

/// What ended a wait for signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// SIGINT/SIGTERM (`Some`) or the deadline (`None`): stop.
    Stop(Option<Signal>),
    /// SIGHUP: reload the configuration.
    Reload,
    /// SIGUSR1: write the outputs so far.
    Dump,
    /// The model registry's state file changed.
    RegistryChanged,
}

/// How long a registry change settles before the reload reads it (an
/// editor or a promotion may write in several steps).
const REGISTRY_SETTLE: Duration = Duration::from_millis(50);

/// Waits for a signal, a registry change (with `watch`) or `deadline`.
fn wait_for_wake(
    sfd: &SignalFd,
    watch: Option<&RegistryWatch>,
    deadline: Option<Instant>,
) -> Result<Wake, SensorError> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Wake::Stop(None));
                }
                // Round up so we never wake just before the deadline and spin.
                let ms = left.as_millis().saturating_add(1);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(w) = watch {
            fds.push(PollFd::new(w.fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_)
                if fds
                    .get(1)
                    .and_then(PollFd::revents)
                    .is_some_and(|r| r.contains(PollFlags::POLLIN)) =>
            {
                std::thread::sleep(REGISTRY_SETTLE);
                if let Some(w) = watch {
                    w.drain();
                }
                return Ok(Wake::RegistryChanged);
            }
            Ok(_) => match sfd.read_signal() {
                Ok(Some(info)) => {
                    let sig = i32::try_from(info.ssi_signo)
                        .ok()
                        .and_then(|s| Signal::try_from(s).ok());
                    return Ok(match sig {
                        Some(Signal::SIGHUP) => Wake::Reload,
                        Some(Signal::SIGUSR1) => Wake::Dump,
                        other => Wake::Stop(other),
                    });
                }
                Ok(None) | Err(nix::errno::Errno::EAGAIN) => {}
                Err(e) => return Err(SensorError::system("reading the signalfd", e)),
            },
            Err(e) => return Err(SensorError::system("waiting for signals", e)),
        }
    }
}

/// Reloads on SIGHUP (the configuration, validated as at start, and the
/// models) or when the model registry changed (the models): `Err` carries
/// the reason (with file and line) when the new configuration was refused
/// and the previous one kept running. Model reloads count themselves.
pub(crate) type ReloadHook<'a> = &'a dyn Fn(ReloadKind, &WorkerPool) -> Result<(), String>;

/// The counters so far of a flow collector running beside the capture
/// (`sensor run --collect`), for `--stats-out`.
pub(crate) type CollectorCounts<'a> = &'a dyn Fn() -> sensor_common::records::CollectorCounters;

/// Waits for SIGINT/SIGTERM or `deadline`, reloading the configuration on
/// each SIGHUP and writing the outputs so far on each SIGUSR1; neither ever
/// stops the sensor.
pub(crate) fn serve_until_stop(
    (sfd, watch): (&SignalFd, Option<&RegistryWatch>),
    deadline: Option<Instant>,
    (reload, pool): (Option<ReloadHook<'_>>, &WorkerPool),
    reloads: &Published<ConfigReloads>,
    mut dump: impl FnMut(&ConfigReloads),
) -> Result<Option<Signal>, SensorError> {
    loop {
        match wait_for_wake(sfd, watch, deadline)? {
            Wake::Stop(sig) => return Ok(sig),
            Wake::RegistryChanged => {
                if let Some(hook) = reload {
                    info!("model registry changed: reloading the models");
                    let _ = hook(ReloadKind::RegistryChanged, pool);
                }
            }
            Wake::Reload => match reload {
                None => {
                    reloads.publish(|r| r.rejected += 1);
                    warn!(
                        "SIGHUP: no --config to reload (or scoring is off); the sensor keeps running as it was"
                    );
                }
                Some(hook) => match hook(ReloadKind::Signal, pool) {
                    Ok(()) => {
                        reloads.publish(|r| r.applied += 1);
                        info!(
                            applied = reloads.read().applied,
                            "SIGHUP: configuration reloaded"
                        );
                    }
                    Err(reason) => {
                        reloads.publish(|r| r.rejected += 1);
                        error!(%reason, rejected = reloads.read().rejected, "SIGHUP: configuration refused; the previous one keeps running");
                    }
                },
            },
            Wake::Dump => dump(&reloads.read()),
        }
    }
}

/// Worker flow-map capacity: twice the fair share of the flow table, since
/// rings are chosen by hash and shares are uneven for small tables.
fn flow_capacity_per_worker(flow_table_size: u32, n_workers: u32) -> usize {
    let share = (flow_table_size / n_workers.max(1)) as usize;
    share.saturating_mul(2).max(1024)
}

/// Runs the sensor as `sensor run` does: until a signal or `--duration`, then
/// writes the requested outputs. `factory` builds each worker's handler.
///
/// # Errors
/// Load/attach failures (with a user-facing diagnosis), map access failures,
/// or outputs that cannot be written.
pub fn run(args: &RunArgs, factory: &HandlerFactory) -> Result<RunSummary, SensorError> {
    run_with_sketches(
        args,
        args.load_options()?,
        factory,
        &SketchHandle::default(),
        None,
        None,
        ScoringFigures::default(),
    )
}

/// Like [`run`], publishing each epoch's sketches to `sketches`, so stages
/// built by `factory` (which can capture a clone of the handle) read them.
///
/// # Errors
/// As [`run`].
pub(crate) fn run_with_sketches(
    args: &RunArgs,
    opts: crate::capture::loader::LoadOptions,
    factory: &HandlerFactory,
    sketches: &SketchHandle,
    reload: Option<ReloadHook<'_>>,
    collector: Option<CollectorCounts<'_>>,
    scoring: ScoringFigures,
) -> Result<RunSummary, SensorError> {
    let outputs = Outputs::create(args)?;
    let metrics = args.metrics_addr.map(MetricsListener::bind).transpose()?;
    let (sfd, old_mask) = shutdown_signals()?;
    let hooks = Hooks {
        reload,
        collector,
        metrics,
        scoring,
    };
    let result = run_inner(args, opts, outputs, factory, sketches, &sfd, hooks);
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None) {
        warn!(error = %e, "could not restore the signal mask");
    }
    result
}

/// What a run does besides capturing: reload on SIGHUP, serve metrics,
/// report a flow collector running beside it.
struct Hooks<'a> {
    reload: Option<ReloadHook<'a>>,
    /// `--collect`: the collector's counters, for `--stats-out`.
    collector: Option<CollectorCounts<'a>>,
    /// `--metrics-addr`, bound.
    metrics: Option<MetricsListener>,
    /// What scoring publishes (metrics, latency in `--stats-out`).
    scoring: ScoringFigures,
}

fn run_inner(
    args: &RunArgs,
    opts: crate::capture::loader::LoadOptions,
    outputs: Outputs,
    factory: &HandlerFactory,
    sketches: &SketchHandle,
    sfd: &SignalFd,
    hooks: Hooks<'_>,
) -> Result<RunSummary, SensorError> {
    let Hooks {
        reload,
        collector,
        metrics,
        scoring,
    } = hooks;
    let n_workers = opts.n_workers;
    let flow_table_size = opts.flow_table_size;
    let mut sensor = Sensor::load_pinned(opts)?;
    let rings = sensor.take_rings()?;
    let maps = SketchMaps::take(&mut sensor)?;
    let control = ControlThread::spawn(maps, EPOCH, sketches.clone())?;
    // Per-flow event counts feed only the `--flows-out` report.
    let worker_flows = if outputs.flows.is_some() {
        flow_capacity_per_worker(flow_table_size, n_workers)
    } else {
        0
    };
    let pool = match WorkerPool::spawn(rings, factory, worker_flows) {
        Ok(p) => p,
        Err(e) => {
            let _ = control.stop();
            return Err(e);
        }
    };
    let reloads = std::sync::Arc::new(Published::<ConfigReloads>::default());
    let server = match metrics
        .map(|listener| {
            let sources = MetricSources {
                kernel: CountersReader::new(&sensor)?,
                workers: pool.live(),
                scoring: scoring.clone(),
                reloads: std::sync::Arc::clone(&reloads),
            };
            listener.serve(sources)
        })
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            pool.stop_and_join();
            let _ = control.stop();
            return Err(e);
        }
    };
    // With --user, the last privileged step: from here on the process
    // holds only file descriptors (see `capture::privileges`).
    if let Err(e) = sensor
        .attach()
        .and_then(|()| outputs.drop_privileges(args, sensor.pin_dir()))
    {
        pool.stop_and_join();
        let _ = control.stop();
        if let Some(s) = server {
            s.stop();
        }
        return Err(e);
    }
    let started = Instant::now();
    info!(
        iface = %args.iface,
        workers = n_workers,
        duration = ?args.duration,
        "sensor running; stop with Ctrl-C"
    );

    let handover = sensor
        .kept_counts()
        .and_then(|kept| report_handover(&sensor, kept));

    // A promotion reaches the running sensor without a signal; a watch
    // that cannot start leaves SIGHUP as the way to reload.
    let watch = match (&reload, &scoring.models_dir) {
        (Some(_), Some(dir)) => match RegistryWatch::start(dir) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, dir = %dir.display(), "cannot watch the model registry; reload models with SIGHUP");
                None
            }
        },
        _ => None,
    };
    let waited = serve_until_stop(
        (sfd, watch.as_ref()),
        args.duration.map(|d| started + d),
        (reload, &pool),
        &reloads,
        |reloads| {
            // SIGUSR1: the outputs so far, each renamed into place; the run
            // goes on.
            let written = (|| {
                let reports = pool.reports_so_far();
                let counters = report::read_counters(&sensor)?;
                let flows = report::read_flow_table(&sensor)?;
                Outputs::create(args)?.write(
                    &reports,
                    &sketches.latest(),
                    &counters,
                    &flows,
                    started.elapsed(),
                    (*reloads, handover, &scoring, collector.map(|c| c())),
                )
            })();
            match written {
                Ok(()) => info!("SIGUSR1: outputs so far written"),
                Err(e) => {
                    error!(error = %e, "SIGUSR1: writing the outputs so far failed; the sensor keeps running");
                }
            }
        },
    );
    // Only an orderly stop keeps the state: after a failure the pins would
    // describe a sensor that did not stop cleanly.
    let keep = args.keep_state && waited.is_ok();
    if !keep {
        // Stop in order: detach first, so the rings receive nothing more
        // and the drain below is complete.
        sensor.release(None);
    }
    let duration = started.elapsed();
    let reports = pool.stop_and_join();
    let snapshot = control.stop();
    if let Some(s) = server {
        s.stop();
    }
    let reloads = reloads.read();
    let signal = waited?;
    if let Some(sig) = signal {
        info!(signal = %sig, "stopping");
    }
    let snapshot = snapshot?;

    let counters = report::read_counters(&sensor)?;
    let flows = report::read_flow_table(&sensor)?;
    if keep {
        // The program keeps counting into the pinned maps; the events it
        // emits from now on go to rings no process reads.
        sensor.release(Some(KeptCounts {
            packets_seen: counters[Counter::PacketsSeen as usize],
            events_emitted: counters[Counter::EventsEmitted as usize],
        }));
    }
    outputs.write(
        &reports,
        &snapshot,
        &counters,
        &flows,
        duration,
        (reloads, handover, &scoring, collector.map(|c| c())),
    )?;

    Ok(RunSummary {
        counters,
        flows: flows.len(),
        worker_events: reports.iter().map(|r| r.counters.events).sum(),
        decode_errors: reports.iter().map(|r| r.counters.decode_errors).sum(),
        duration,
        signal,
    })
}

/// Logs what the program counted between the previous sensor's stop with
/// `--keep-state` and this sensor's attach: packets went into the adopted
/// flow table and counters, but the events emitted meanwhile went to the
/// previous sensor's rings, which nobody read.
fn report_handover(sensor: &Sensor, kept: KeptCounts) -> Option<Handover> {
    match report::read_counters(sensor) {
        Ok(now) => {
            let h = Handover {
                packets: now[Counter::PacketsSeen as usize].saturating_sub(kept.packets_seen),
                events_unread: now[Counter::EventsEmitted as usize]
                    .saturating_sub(kept.events_emitted),
            };
            info!(
                packets = h.packets,
                events_unread = h.events_unread,
                "while no sensor ran, the program counted these packets into the adopted flow table; the flow events it emitted then were not read (at most this many)"
            );
            Some(h)
        }
        Err(e) => {
            warn!(error = %e, "could not read the adopted counters");
            None
        }
    }
}

/// The requested output files, opened up front, and the account (`--user`)
/// that will own them.
struct Outputs {
    flows: Option<OutputFile>,
    stats: Option<OutputFile>,
    sketch: Option<OutputFile>,
    owner: Option<Account>,
}

impl Outputs {
    /// Also resolves `--user`/`--group`, so an unknown account stops the
    /// run before anything is loaded.
    fn create(args: &RunArgs) -> Result<Self, SensorError> {
        let owner = args.account()?;
        let open = |p: &Option<std::path::PathBuf>| -> Result<_, SensorError> {
            let Some(path) = p.as_deref() else {
                return Ok(None);
            };
            let out = OutputFile::create(path)?;
            if let Some(account) = &owner {
                account.hand_over(out.file(), path)?;
            }
            Ok(Some(out))
        };
        Ok(Self {
            flows: open(&args.flows_out)?,
            stats: open(&args.stats_out)?,
            sketch: open(&args.sketch_out)?,
            owner,
        })
    }

    /// Switches to the `--user` account, if any, checking that it can
    /// write every output's directory; the account gets the pin directory
    /// first, so a clean stop can still detach.
    fn drop_privileges(
        &self,
        args: &RunArgs,
        pins: Option<&std::path::Path>,
    ) -> Result<(), SensorError> {
        if let Some(account) = &self.owner {
            if let Some(dir) = pins {
                account.give_dir(dir)?;
            }
            account.switch(&args.output_dirs())?;
            info!(
                user = account.user(),
                uid = account.uid(),
                gid = account.gid(),
                "running without privileges"
            );
        }
        Ok(())
    }

    fn write(
        self,
        reports: &[WorkerReport],
        snapshot: &SketchSnapshot,
        counters: &[u64; COUNTER_COUNT as usize],
        flows: &[(sensor_common::FlowKey, sensor_common::FlowStats)],
        duration: Duration,
        (reloads, handover, scoring, collector): (
            ConfigReloads,
            Option<Handover>,
            &ScoringFigures,
            Option<sensor_common::records::CollectorCounters>,
        ),
    ) -> Result<(), SensorError> {
        if let Some(out) = self.flows {
            let worker_flows = merge_worker_flows(reports);
            let path = out.path().display().to_string();
            out.write_with(|w| report::write_flows(w, flows, &worker_flows))?;
            info!(path, flows = flows.len(), "flow table written");
        }
        if let Some(out) = self.stats {
            let mut stats = report::stats_report(
                counters,
                reports,
                snapshot.epochs_flipped,
                duration.as_secs_f64(),
            );
            stats.config_reloads = reloads;
            stats.handover = handover;
            stats.collector = collector;
            stats.latency = scoring.latency_report();
            stats.drift = scoring.drift_report();
            stats.model_reloads = scoring.models.read().reloads;
            let path = out.path().display().to_string();
            out.write_json(&stats)?;
            info!(path, "statistics written");
        }
        if let Some(out) = self.sketch {
            let path = out.path().display().to_string();
            out.write_json(&report::sketch_report(snapshot, flows))?;
            info!(path, "sketch report written");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_capacity_is_bounded_below() {
        assert_eq!(flow_capacity_per_worker(65_536, 2), 65_536);
        assert_eq!(flow_capacity_per_worker(100, 8), 1024);
        assert_eq!(flow_capacity_per_worker(100, 0), 1024);
    }

    #[test]
    fn deadline_wait_returns_after_the_deadline() {
        // Signals are not blocked here, so the fd never fires; only the
        // deadline can end the wait.
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGUSR2);
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK).unwrap();
        let t = Instant::now();
        let r = wait_for_wake(&sfd, None, Some(t + Duration::from_millis(30))).unwrap();
        assert_eq!(r, Wake::Stop(None));
        assert!(t.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn summary_mentions_losses() {
        let mut counters = [0u64; COUNTER_COUNT as usize];
        counters[Counter::PacketsSeen as usize] = 10;
        counters[Counter::EventsLost as usize] = 3;
        counters[Counter::TruncatedTcp as usize] = 2;
        let s = RunSummary {
            counters,
            flows: 4,
            worker_events: 7,
            decode_errors: 0,
            duration: Duration::from_secs(2),
            signal: None,
        };
        let h = s.human();
        assert!(h.contains("observed 10 packets"), "{h}");
        assert!(h.contains("lost (ring full) 3"), "{h}");
        assert!(h.contains("parse problems 2"), "{h}");
    }
}
