//! Scoring and alerting for `sensor run`: loads the models once, builds one
//! scoring pipeline per worker (each with its own tract state) and starts the
//! alert stage that consumes their rows over one bounded channel.
//!
//! Everything that can fail (model files, cards, config, sinks) fails here,
//! before the XDP program is attached, so a bad file never leaves a half-running
//! sensor.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use sensor_common::records::ModelReloads;

use crate::{
    alerts::{
        self, AlertMetrics, AlertSettings, AlertStageHandle, AlertsError, Inventory, SensorFile,
        Thresholds,
    },
    capture::control::SketchHandle,
    capture::live::Published,
    capture::workers::{EventHandler, HandlerFactory, WorkerPool},
    features::FeatureConfig,
    model::row::{AttackClass, RowBatch},
    model::{
        DEFAULT_BATCH_SIZES, Model, ModelError,
        drift::DriftTally,
        pipeline::{
            ModelSwap, PipelineConfig, PipelineCounters, PipelineError, PipelineLive,
            ScoringPipeline,
        },
        registry::{AUTOENCODER, CLASSIFIER, ModelSlot, Registry, RegistryError},
    },
    ops::metrics::{ModelsInUse, ScoringFigures},
    run::cli::{CollectArgs, RunArgs},
    sinks::recorder::{self, RecordError, RecordSummary, RecorderHandle},
    sinks::{RotatingFileSink, SinkSet, StdoutSink},
};

/// Row batches that may wait for the alert stage before workers start
/// shedding: at most 512 × 256 rows (about 37 MB), and at any load some
/// tens of milliseconds of the stage falling behind (a batch closes at
/// least every batch deadline, 200 us by default, per busy worker).
const ALERT_CHANNEL_BATCHES: usize = 512;

/// Workers send a row to the alert stage when its attack score reaches this
/// fraction of the lowest classifier threshold (or the autoencoder scored
/// it). The margin below the threshold keeps rows near it visible to the
/// stage and leaves room for modest threshold changes at run time.
pub const EMIT_FLOOR_FRACTION: f32 = 0.5;

/// The pipelines' emit floor for the alert thresholds in force: a row whose
/// attack score `1 − P(benign)` is below [`EMIT_FLOOR_FRACTION`] of every
/// classifier threshold can never open or update an alert (anomaly alerts
/// need the autoencoder's score, and escalated rows are always sent), so it
/// is not sent. Without a finite positive classifier threshold every row is
/// sent.
///
/// The floor is fixed when the run starts: `sensor tune` only ever raises
/// thresholds, but a threshold lowered by hand below the floor in a running
/// sensor's config only sees rows at or above the floor until a restart.
#[must_use]
pub fn emit_floor(thresholds: &Thresholds) -> f32 {
    let lowest = [
        AttackClass::Flood,
        AttackClass::Scan,
        AttackClass::BruteForce,
    ]
    .into_iter()
    .map(|c| thresholds.get(c))
    .fold(f32::INFINITY, f32::min);
    if lowest.is_finite() && lowest > 0.0 {
        lowest * EMIT_FLOOR_FRACTION
    } else {
        0.0
    }
}

/// What scoring takes from the command line of `sensor run` or `sensor
/// collect`.
#[derive(Debug, Clone)]
pub(crate) struct ScoringOptions {
    pub(crate) models_dir: PathBuf,
    pub(crate) config: Option<PathBuf>,
    pub(crate) eve_out: Option<PathBuf>,
    pub(crate) record_out: Option<PathBuf>,
    pub(crate) batch_deadline_us: u64,
    pub(crate) hold_batches: bool,
    /// What alerts name as the interface (`in_iface`) when the config does
    /// not.
    pub(crate) interface: String,
    /// `--enforce`: whether alerts put their attackers in the XDP
    /// blocklists (never for flow records alone: a collector drops nothing).
    pub(crate) enforce: crate::run::cli::EnforceArg,
}

impl From<&RunArgs> for ScoringOptions {
    fn from(a: &RunArgs) -> Self {
        Self {
            models_dir: a.models_dir(),
            config: a.config.clone(),
            eve_out: a.eve_out.clone(),
            record_out: a.record_out.clone(),
            batch_deadline_us: a.batch_deadline_us,
            hold_batches: a.hold_batches,
            interface: a.iface.clone(),
            enforce: a.enforce,
        }
    }
}

impl From<&CollectArgs> for ScoringOptions {
    fn from(a: &CollectArgs) -> Self {
        Self {
            models_dir: a
                .models_dir
                .clone()
                .unwrap_or_else(crate::model::default_models_dir),
            config: a.config.clone(),
            eve_out: a.eve_out.clone(),
            record_out: a.record_out.clone(),
            batch_deadline_us: a.batch_deadline_us,
            hold_batches: false,
            interface: format!("collect:{}", a.listen),
            enforce: crate::run::cli::EnforceArg::Off,
        }
    }
}

/// `--eve-out` rotation: 100 MiB per file, five files kept.
const EVE_FILE_MAX_BYTES: u64 = 100 * 1024 * 1024;
const EVE_FILES_KEPT: usize = 5;

/// Why scoring could not start.
#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    /// A model or its card is missing or invalid.
    #[error("cannot load model {path} (or pass --no-score to observe only)")]
    Model {
        path: PathBuf,
        #[source]
        source: ModelError,
    },
    /// The models directory's `registry.json` cannot be read.
    #[error("cannot read the model registry (or pass --no-score to observe only)")]
    Registry {
        #[source]
        source: RegistryError,
    },
    /// A worker's pipeline could not be built from the loaded models.
    #[error("cannot build the scoring pipeline of worker {worker}")]
    Pipeline {
        worker: usize,
        #[source]
        source: PipelineError,
    },
    /// The alert configuration, inventory or a sink is invalid.
    #[error("cannot start the alert stage")]
    Alerts {
        #[source]
        source: AlertsError,
    },
    /// `--record-out` could not be created.
    #[error("cannot start recording")]
    Record {
        #[source]
        source: RecordError,
    },
}

/// What scoring and alerting did during a run.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScoringSummary {
    /// Per-worker pipeline counters, in worker order of finishing.
    pub pipelines: Vec<PipelineCounters>,
    pub alerts: AlertMetrics,
    /// What `--record-out` wrote (None without it). Rows lost to the
    /// recording are the pipelines' `shed` total.
    pub record: Option<Result<RecordSummary, Arc<RecordError>>>,
}

impl ScoringSummary {
    /// Pipeline counters summed over workers.
    #[must_use]
    pub(crate) fn pipeline_total(&self) -> PipelineCounters {
        let mut t = PipelineCounters::default();
        for c in &self.pipelines {
            t.rows_scored += c.rows_scored;
            t.batches += c.batches;
            t.batches_by_deadline += c.batches_by_deadline;
            t.batches_on_drain += c.batches_on_drain;
            t.escalated += c.escalated;
            t.emitted += c.emitted;
            t.below_floor += c.below_floor;
            t.shed += c.shed;
            t.disconnected += c.disconnected;
            t.inference_errors += c.inference_errors;
            t.gateway_views = t.gateway_views.max(c.gateway_views);
        }
        t
    }

    /// A short human summary (two lines).
    #[must_use]
    pub(crate) fn human(&self) -> String {
        let p = self.pipeline_total();
        let a = &self.alerts;
        format!(
            "sensor: rows scored {} in {} batches ({} closed by deadline, {} on an empty ring), escalated to the \
             autoencoder {}, sent to alerts {} ({} far below every threshold kept back), shed {}, \
             inference errors {}, kernel sketch epochs used {}\n\
             sensor: alerts opened {}, updated {}, closed {}; incidents opened {}; \
             rows below threshold {}, from a responding TCP flow {}, floods below the volume floor {}, \
             floods of solicited traffic {}, ICMP errors answering an attacker {}, awaiting corroboration {}, \
             upload-heavy connections {}, beacon detections {}, brute force on uploads {}, \
             anomalies on a scanner's probes {}, login connections {}, login detections {}, \
             floods of login sessions {}",
            p.rows_scored,
            p.batches,
            p.batches_by_deadline,
            p.batches_on_drain,
            p.escalated,
            p.emitted,
            p.below_floor,
            p.shed,
            p.inference_errors,
            p.gateway_views,
            a.alerts_opened,
            a.alerts_updated,
            a.alerts_closed,
            a.incidents_opened,
            a.rows_below_threshold,
            a.rows_responder,
            a.rows_flood_low_volume,
            a.rows_flood_solicited,
            a.rows_flood_backscatter,
            a.rows_uncorroborated,
            a.upload_connections,
            a.beacon_detections,
            a.rows_bruteforce_upload,
            a.rows_anomaly_scan_probe,
            a.login_connections,
            a.login_detections,
            a.rows_flood_login,
        )
    }

    /// One line about `--record-out`, if it was given.
    #[must_use]
    pub(crate) fn record_line(&self) -> Option<String> {
        let shed = self.pipeline_total().shed;
        self.record.as_ref().map(|r| match r {
            Ok(s) => format!(
                "sensor: recorded {} rows to {} (rows lost before recording: {shed}; \
                 not forwarded to alerts: {})",
                s.rows_written,
                s.path.display(),
                s.forward_shed
            ),
            Err(e) => format!("sensor: recording failed: {e}"),
        })
    }
}

/// The worker handler: a pipeline that reports its counters when its worker
/// stops.
struct ScoringHandler {
    pipeline: ScoringPipeline,
    report: Arc<Mutex<Vec<PipelineCounters>>>,
}

impl EventHandler for ScoringHandler {
    #[inline]
    fn on_event(&mut self, ev: &sensor_common::FlowEvent) {
        self.pipeline.on_event(ev);
    }

    #[inline]
    fn on_flow_record(
        &mut self,
        ev: &sensor_common::FlowEvent,
        origin: &crate::capture::collector::FlowOrigin,
    ) {
        self.pipeline.on_flow_record(ev, origin);
    }

    #[inline]
    fn on_tick(&mut self, now_ns: u64) {
        self.pipeline.on_tick(now_ns);
    }

    #[inline]
    fn next_deadline_ns(&self) -> Option<u64> {
        self.pipeline.next_deadline_ns()
    }

    #[inline]
    fn on_drained(&mut self) {
        self.pipeline.on_drained();
    }

    fn on_request(
        &mut self,
        request: crate::capture::workers::HandlerRequest,
    ) -> Result<(), String> {
        match request.downcast::<ModelSwap>() {
            Ok(swap) => self.pipeline.swap_models(*swap),
            Err(_) => Err("not a request this pipeline knows".into()),
        }
    }

    fn finish(&mut self) {
        self.pipeline.flush_now();
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.pipeline.counters());
    }
}

/// Models, pipelines and the alert stage of one run.
pub(crate) struct Scoring {
    factory: Box<HandlerFactory>,
    /// Between the pipelines and the alert stage with `--record-out`.
    recorder: Option<RecorderHandle>,
    alerts: AlertStageHandle,
    report: Arc<Mutex<Vec<PipelineCounters>>>,
    sketches: SketchHandle,
    /// Resolved once at start; a reload reads the cards from the same place.
    models_dir: PathBuf,
    /// The sinks in use (from the config at start), to tell a reload that
    /// changes them.
    sinks: String,
    /// What the pipelines and the alert stage publish (metrics).
    figures: ScoringFigures,
    /// The models the workers run, as loaded from the registry (changed
    /// only by [`Self::reload_models`], on the thread that serves signals).
    loaded: Mutex<Loaded>,
}

/// The models in use and where they were loaded from.
struct Loaded {
    classifier: (PathBuf, Arc<Model>),
    autoencoder: (PathBuf, Arc<Model>),
}

/// How long a model reload waits for every worker to confirm its swap
/// (each does at its next tick, within a millisecond unless a long batch
/// holds it).
const SWAP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadKind {
    /// SIGHUP: the configuration and the models.
    Signal,
    /// The registry's state file changed: the models.
    RegistryChanged,
}

impl Scoring {
    /// Loads the models from `args.models_dir`, builds `n_workers` pipelines
    /// (and `collector_workers` more for a flow collector beside them,
    /// handlers `n_workers..`)
    /// and starts the alert stage (config from `--config`, or the model cards'
    /// thresholds and stdout / `--eve-out` without one).
    ///
    /// # Errors
    /// A model, card, config, inventory or sink is missing or invalid.
    pub(crate) fn start(
        args: &ScoringOptions,
        n_workers: usize,
        collector_workers: usize,
    ) -> Result<Self, ScoringError> {
        let models_dir = args.models_dir.clone();
        let registry = Registry::new(&models_dir);
        let load = |slot: ModelSlot| {
            let path = registry
                .active_path(slot)
                .map_err(|source| ScoringError::Registry { source })?;
            Model::load(&path, slot.kind, &DEFAULT_BATCH_SIZES)
                .map(Arc::new)
                .map_err(|source| ScoringError::Model { path, source })
        };
        let classifier = load(CLASSIFIER)?;
        let autoencoder = load(AUTOENCODER)?;
        let loaded = Loaded {
            classifier: (
                registry.active_path(CLASSIFIER).unwrap_or_default(),
                Arc::clone(&classifier),
            ),
            autoencoder: (
                registry.active_path(AUTOENCODER).unwrap_or_default(),
                Arc::clone(&autoencoder),
            ),
        };

        let alert_setup = AlertSetup::resolve(args, &models_dir)
            .map_err(|source| ScoringError::Alerts { source })?;
        let sinks = format!("{:?}", alert_setup.file.sinks);
        let (tx, rx) = crossbeam_channel::bounded::<RowBatch>(ALERT_CHANNEL_BATCHES);
        let cfg = PipelineConfig {
            features: FeatureConfig {
                host_scale: n_workers as f64,
                ..FeatureConfig::default()
            },
            batch_deadline_ns: args.batch_deadline_us.saturating_mul(1000),
            close_on_drain: !args.hold_batches,
            emit_floor: emit_floor(&alert_setup.settings.thresholds),
            ..PipelineConfig::default()
        };
        // A recording holds every scored row, whatever the emit floor.
        let cfg = if args.record_out.is_some() {
            PipelineConfig {
                emit_floor: 0.0,
                ..cfg
            }
        } else {
            cfg
        };
        let report = Arc::new(Mutex::new(Vec::with_capacity(n_workers)));
        let sketches = SketchHandle::default();
        // Every scored row's drift bins, whatever the emit floor.
        let drift = Arc::new(DriftTally::default());
        let total = n_workers + collector_workers;
        let mut handlers = Vec::with_capacity(total);
        let live: Vec<Arc<Published<PipelineLive>>> =
            (0..total).map(|_| Arc::new(Published::default())).collect();
        for (worker, live) in live.iter().enumerate() {
            // The collector's workers share the hosts of the flow records
            // among themselves, not with the ring workers.
            let scale = if worker < n_workers {
                n_workers
            } else {
                collector_workers
            };
            let cfg = PipelineConfig {
                features: FeatureConfig {
                    host_scale: scale as f64,
                    ..cfg.features
                },
                ..cfg
            };
            let pipeline = ScoringPipeline::new(
                cfg,
                Arc::clone(&classifier),
                Some(Arc::clone(&autoencoder)),
                tx.clone(),
            )
            .map_err(|source| ScoringError::Pipeline { worker, source })?
            .with_sketches(sketches.clone())
            .with_live(Arc::clone(live))
            .with_drift(Arc::clone(&drift));
            handlers.push(Some(ScoringHandler {
                pipeline,
                report: Arc::clone(&report),
            }));
        }
        // Only the pipelines hold senders: when the workers stop and drop
        // them, the alert stage drains the channel, closes its alerts and ends.
        drop(tx);

        // With a recording, rows go pipelines -> recorder -> alert stage.
        let (alert_rx, recorder) = match &args.record_out {
            Some(path) => {
                let (fwd_tx, fwd_rx) =
                    crossbeam_channel::bounded::<RowBatch>(ALERT_CHANNEL_BATCHES);
                let rec = recorder::spawn(path, rx, fwd_tx)
                    .map_err(|source| ScoringError::Record { source })?;
                (fwd_rx, Some(rec))
            }
            None => (rx, None),
        };
        let alerts = alert_setup
            .spawn(args, alert_rx, sketches.clone(), drift)
            .map_err(|source| ScoringError::Alerts { source })?;
        let figures = ScoringFigures {
            pipelines: live,
            alerts: Some(alerts.reader()),
            models: Arc::new(Published::new(ModelsInUse {
                ids: vec![
                    ("classifier", classifier.id().to_string()),
                    ("autoencoder", autoencoder.id().to_string()),
                ],
                reloads: ModelReloads::default(),
            })),
            models_dir: Some(models_dir.clone()),
        };
        let handlers = Mutex::new(handlers);
        let factory: Box<HandlerFactory> = Box::new(move |i| {
            let taken = handlers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(i)
                .and_then(Option::take);
            match taken {
                Some(h) => Box::new(h) as Box<dyn EventHandler>,
                // The runner asks once per worker, and never for more than
                // `n_workers`; a second request for the same index gets no
                // scoring rather than a shared pipeline.
                None => Box::new(crate::capture::workers::NoopHandler),
            }
        });
        Ok(Self {
            factory,
            recorder,
            alerts,
            report,
            sketches,
            models_dir,
            sinks,
            figures,
            loaded: Mutex::new(loaded),
        })
    }

    /// Reloads as `kind` asks: on SIGHUP the configuration (the result is
    /// the configuration's, see [`Self::reload`]) and the models; on a
    /// registry change the models only. A model reload's outcome is logged
    /// and counted by [`Self::reload_models`] itself.
    pub(crate) fn reload_for(
        &self,
        args: &ScoringOptions,
        kind: ReloadKind,
        pools: &[&WorkerPool],
    ) -> Result<(), String> {
        let config = match kind {
            ReloadKind::Signal => self.reload(args),
            ReloadKind::RegistryChanged => Ok(()),
        };
        self.reload_models(pools);
        config
    }

    /// Loads the registry's active versions and, where they differ from
    /// the running ones, checks them as `sensor models promote` does (hash,
    /// card, schema), plans them and has every worker swap them in at its
    /// next batch boundary. A model that fails is refused with its path and
    /// the reason, and the running ones keep scoring. Counted in
    /// [`ModelReloads`].
    /// `pools` are every worker pool scoring rows: the ring workers' and,
    /// with `--collect`, the flow collector's.
    pub(crate) fn reload_models(&self, pools: &[&WorkerPool]) {
        let started = std::time::Instant::now();
        let outcome = self.swap_models(pools);
        let latency_us = started.elapsed().as_micros() as u64;
        self.figures.models.publish(|m| {
            let r = &mut m.reloads;
            match &outcome {
                Ok(Some(ids)) => {
                    r.applied += 1;
                    r.last_latency_us = latency_us;
                    r.max_latency_us = r.max_latency_us.max(latency_us);
                    m.ids.clone_from(ids);
                }
                Ok(None) => r.unchanged += 1,
                Err(_) => r.rejected += 1,
            }
        });
        match outcome {
            Ok(Some(ids)) => tracing::info!(
                models = ?ids,
                latency_us,
                "models reloaded: every worker swapped at a batch boundary ({} workers)",
                pools.iter().map(|p| p.workers()).sum::<usize>()
            ),
            Ok(None) => tracing::info!("models reloaded: the active versions already run"),
            Err(reason) => tracing::error!(
                %reason,
                "model reload refused; the running models keep scoring"
            ),
        }
    }

    /// The new models' ids when swapped, `None` when nothing changed.
    fn swap_models(
        &self,
        pools: &[&WorkerPool],
    ) -> Result<Option<Vec<(&'static str, String)>>, String> {
        let registry = Registry::new(&self.models_dir);
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let next = |slot: ModelSlot, current: &(PathBuf, Arc<Model>)| {
            let path = registry.active_path(slot).map_err(|e| error_chain(&e))?;
            if path == current.0 {
                return Ok::<_, String>(None);
            }
            let (_, model) = crate::model::registry::check_model(&path, slot, &DEFAULT_BATCH_SIZES)
                .map_err(|e| error_chain(&e))?;
            Ok(Some((path, Arc::new(model))))
        };
        let classifier = next(CLASSIFIER, &loaded.classifier)?;
        let autoencoder = next(AUTOENCODER, &loaded.autoencoder)?;
        if classifier.is_none() && autoencoder.is_none() {
            return Ok(None);
        }
        let cls = classifier.unwrap_or_else(|| loaded.classifier.clone());
        let ae = autoencoder.unwrap_or_else(|| loaded.autoencoder.clone());
        // Every worker's states are spawned here, off the worker threads,
        // before any worker is asked: a model that cannot be planned
        // leaves every worker as it was.
        let mut swaps = pools
            .iter()
            .map(|pool| {
                (0..pool.workers())
                    .map(|_| {
                        ModelSwap::new(Arc::clone(&cls.1), Some(Arc::clone(&ae.1)))
                            .map(Some)
                            .map_err(|e| error_chain(&e))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut failed = Vec::new();
        for (p, (pool, swaps)) in pools.iter().zip(&mut swaps).enumerate() {
            let answers = pool.request_handlers(
                |i| match swaps.get_mut(i).and_then(Option::take) {
                    Some(swap) => Box::new(swap),
                    // More workers than pipelines: the worker refuses it.
                    None => Box::new(()),
                },
                SWAP_WAIT,
            );
            failed.extend(answers.iter().filter_map(|(w, r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("pool {p} worker {w}: {e}"))
            }));
        }
        if !failed.is_empty() {
            return Err(format!(
                "{} -> {}, {}: not every worker swapped ({})",
                loaded.classifier.1.id(),
                cls.1.id(),
                ae.1.id(),
                failed.join("; ")
            ));
        }
        let ids = vec![
            ("classifier", cls.1.id().to_string()),
            ("autoencoder", ae.1.id().to_string()),
        ];
        *loaded = Loaded {
            classifier: cls,
            autoencoder: ae,
        };
        Ok(Some(ids))
    }

    /// What the pipelines and the alert stage publish, for the metrics
    /// endpoint.
    #[must_use]
    pub(crate) fn figures(&self) -> ScoringFigures {
        self.figures.clone()
    }

    /// Reloads `--config` (SIGHUP) with exactly the validation of the start
    /// (config, model cards, inventory, sinks) and hands it to the alert
    /// stage, which applies it between row batches. A changed `[[sinks]]`
    /// is opened here and swapped in by the stage; the pipelines' emit floor
    /// and the models stay as they are.
    ///
    /// # Errors
    /// The reason the new configuration was refused, with file and line;
    /// the running configuration stays in force.
    pub(crate) fn reload(&self, args: &ScoringOptions) -> Result<(), String> {
        let Some(path) = &args.config else {
            return Err("no --config to reload".into());
        };
        let setup = AlertSetup::resolve(args, &self.models_dir).map_err(|e| error_chain(&e))?;
        let inventory = setup.inventory().map_err(|e| error_chain(&e))?;
        // Sinks are opened here, before anything is sent: a sink that
        // cannot be opened refuses the whole reload.
        let sinks = if format!("{:?}", setup.file.sinks) == self.sinks {
            None
        } else {
            tracing::info!(config = %path.display(), "[[sinks]] changed: opening the new sinks");
            let sinks: Box<dyn alerts::AlertOutput> =
                Box::new(setup.sinks(args).map_err(|e| error_chain(&e))?);
            Some(sinks)
        };
        let reloaded = alerts::Reloaded {
            settings: setup.settings,
            inventory,
            sinks,
        };
        if self
            .alerts
            .send_control(alerts::Control::Reload(Box::new(reloaded)))
        {
            Ok(())
        } else {
            Err("the alert stage is not taking reloads (stopped or busy)".into())
        }
    }

    /// Where the pipelines read the kernel sketches' gateway view: give it to
    /// [`crate::run::runner::run_with_sketches`].
    #[must_use]
    pub(crate) fn sketches(&self) -> &SketchHandle {
        &self.sketches
    }

    /// The handler factory to give the runner.
    pub(crate) fn factory(&self) -> &HandlerFactory {
        &*self.factory
    }

    /// Waits for the alert stage to drain and close its alerts (call after
    /// the workers stopped) and returns what scoring did.
    #[must_use]
    pub(crate) fn finish(self) -> ScoringSummary {
        let Self {
            factory,
            recorder,
            alerts,
            report,
            sketches: _,
            models_dir: _,
            sinks: _,
            figures: _,
            loaded: _,
        } = self;
        // Pipelines never handed to a worker still hold senders.
        drop(factory);
        // The recorder ends when the pipelines' senders are gone; its end
        // drops the alert stage's only sender.
        let record = recorder.map(|r| r.join().map_err(Arc::new));
        let alerts = alerts.join();
        let pipelines = std::mem::take(&mut *report.lock().unwrap_or_else(PoisonError::into_inner));
        ScoringSummary {
            pipelines,
            alerts,
            record,
        }
    }
}

/// The alert stage's resolved settings, known before the pipelines are built
/// (their emit floor follows the thresholds).
struct AlertSetup {
    file: SensorFile,
    settings: AlertSettings,
}

impl AlertSetup {
    fn resolve(args: &ScoringOptions, models_dir: &Path) -> Result<Self, AlertsError> {
        let (file, config_path) = match &args.config {
            Some(path) => (SensorFile::load(path)?, Some(path.as_path())),
            None => (SensorFile::default(), None),
        };
        let mut file = file;
        file.models.default_cards_from(models_dir);
        if file.sensor.interface.is_empty() {
            file.sensor.interface.clone_from(&args.interface);
        }
        let mut settings = AlertSettings::from_file(&file, config_path)?;
        settings.enforce = args.enforce.into();
        if config_path.is_none() {
            // Without a config there is no place for the verdict store and the
            // alert record log: feedback needs `--config`.
            settings.alerts.alert_log = PathBuf::new();
            settings.alerts.verdict_store = PathBuf::new();
        }
        Ok(Self { file, settings })
    }

    /// The inventory the config names (empty without one).
    fn inventory(&self) -> Result<Inventory, AlertsError> {
        match &self.file.alerts.inventory {
            Some(p) => Inventory::load(p),
            None => Ok(Inventory::default()),
        }
    }

    /// The sinks: the config's, plus `--eve-out`; stdout without either.
    fn sinks(&self, args: &ScoringOptions) -> Result<SinkSet, AlertsError> {
        let with_config = args.config.is_some();
        let mut sinks = if with_config {
            SinkSet::from_config(&self.file.sinks)?
        } else {
            SinkSet::new()
        };
        if let Some(path) = &args.eve_out {
            sinks = sinks.with(RotatingFileSink::open(
                path,
                EVE_FILE_MAX_BYTES,
                EVE_FILES_KEPT,
            )?);
        } else if !with_config {
            sinks = sinks.with(StdoutSink::new());
        }
        Ok(sinks)
    }

    fn spawn(
        self,
        args: &ScoringOptions,
        rx: crossbeam_channel::Receiver<RowBatch>,
        sketches: SketchHandle,
        drift: Arc<DriftTally>,
    ) -> Result<AlertStageHandle, AlertsError> {
        let inventory = self.inventory()?;
        let sinks = self.sinks(args)?;
        alerts::spawn_alert_stage(
            rx,
            self.settings,
            inventory,
            sinks,
            Some(sketches),
            Some(drift),
        )
    }
}

/// An error and its causes on one line, as the log shows a refused reload.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// Loads everything the stage needs from the sensor configuration file
/// (settings, model cards, inventory, sinks) and starts it.
///
/// # Errors
/// When the config, a model card or the inventory is invalid (with path and
/// line), a sink cannot be opened, or the thread cannot start.
pub fn spawn_alerts_from_config(
    rows: crossbeam_channel::Receiver<RowBatch>,
    config_path: &Path,
) -> Result<AlertStageHandle, AlertsError> {
    let file = SensorFile::load(config_path)?;
    let settings = AlertSettings::from_file(&file, Some(config_path))?;
    let inventory = match &file.alerts.inventory {
        Some(p) => Inventory::load(p)?,
        None => Inventory::default(),
    };
    let sinks = SinkSet::from_config(&file.sinks)?;
    alerts::spawn_alert_stage(rows, settings, inventory, sinks, None, None)
}
