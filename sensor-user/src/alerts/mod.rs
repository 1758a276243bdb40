//! The alert stage: turns scored rows into deduplicated, correlated,
//! severity-ranked, enriched alerts (EVE JSON lines), and the feedback loop
//! that tunes its thresholds from analysts' verdicts.
//!
//! One thread owns all alert state ([`AlertStage`]); scoring workers reach it
//! only through a bounded channel of [`RowBatch`]es, so no lock is shared with
//! them. A second, idle-most-of-the-time thread polls the verdict store and the
//! config file once a second and forwards what changed as control messages.
//! See `docs/alerts.md` for the rules and the output schema.

mod beacon;
mod block;
pub mod config;
mod dedup;
mod detect;
mod drift;
mod emit;
pub mod eve;
pub mod feedback;
mod guards;
mod incidents;
pub mod inventory;
mod logins;
mod open_alert;
mod stage;
mod volume;
pub mod store;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, select};

pub use config::{AlertSettings, SensorFile, Thresholds};
pub use emit::{AlertState, CloseReason};
pub use eve::ClockMap;
pub use feedback::{
    AlertRecord, ExportTrainingArgs, FeedbackArgs, LogPaths, RecordKind, TuneArgs, Verdict,
    VerdictRecord, run_export_training, run_feedback, run_tune,
};
pub use inventory::{Asset, Inventory};
pub use stage::{AlertStage, OpenAlertInfo};

use crate::capture::control::SketchHandle;
use crate::capture::live::{LatencyHistogram, Published};
use crate::model::{
    ModelError,
    row::{RowBatch, ScoredRow},
};

/// Errors of the alert stage and its tools.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// A file could not be opened, read, written or locked.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A TOML file (sensor config, inventory) is malformed or has a bad value.
    #[error("{}: {message}", location(.path, *.line))]
    Config {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// A model card is unreadable or malformed.
    #[error(transparent)]
    ModelCard(#[from] ModelError),
    /// A record could not be serialised.
    #[error("encode record for {}: {source}", .path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A request cannot be carried out (unknown alert, nothing to export …).
    #[error("{message}")]
    Invalid { message: String },
    /// A thread could not be started.
    #[error("spawn thread {name}: {source}")]
    Spawn {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn location(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    }
}

/// Counters of the alert stage, as a snapshot for the control thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertMetrics {
    /// Rows received from the scoring workers.
    pub rows_in: u64,
    /// Rows whose scores passed no threshold.
    pub rows_below_threshold: u64,
    /// Scan, brute-force or anomaly detections on rows of a flow that answers
    /// a TCP connection (its source responds; it cannot be the attacker):
    /// dropped.
    pub rows_responder: u64,
    /// Flood detections on rows whose victim received fewer than
    /// `flood_min_pps` packets per second: dropped.
    pub rows_flood_low_volume: u64,
    /// Flood detections on rows of a flow its destination asked for (it
    /// started after its reverse direction): dropped.
    pub rows_flood_solicited: u64,
    /// Flood detections on ICMP errors sent to a host that an open alert
    /// names as the attacker: its probes' answers (a UDP scan's port
    /// unreachables), not a flood on it. Dropped.
    pub rows_flood_backscatter: u64,
    /// Flood detections on rows of a protocol other than TCP, UDP and ICMP
    /// from the source of an open scan alert to a host it probes: an IP
    /// protocol scan's probes. Dropped.
    pub rows_flood_scan_probe: u64,
    /// Detections waiting for corroboration (`corroborate_rows`) that did
    /// not open an alert (yet).
    pub rows_uncorroborated: u64,
    /// Brute-force detections dropped because the client's connections to
    /// that server were mostly upload-heavy (see the beacon rule).
    pub rows_bruteforce_upload: u64,
    /// Brute-force detections dropped because the client's connections to
    /// that server came one at a time, a sleep apart (check-ins or a
    /// person's clicks; guessing tools run as fast as the service answers).
    pub rows_bruteforce_paced: u64,
    /// Autoencoder anomalies on a scanner's rows to a host its open scan
    /// alert lists among its top targets: the scan's probes, dropped.
    pub rows_anomaly_scan_probe: u64,
    /// Keys dropped from the corroboration table because it was full.
    pub corroboration_evicted: u64,
    /// Rows that closed an upload-heavy client connection (the beacon rule's
    /// input).
    pub upload_connections: u64,
    /// Anomaly detections of the beacon rule: regular upload-heavy
    /// connections from one client to one server.
    pub beacon_detections: u64,
    /// (client, server) pairs the beacon rule forgot because its table was
    /// full.
    pub beacon_pairs_evicted: u64,
    /// Rows that closed a short client connection to a login service (the
    /// login rule's input).
    pub login_connections: u64,
    /// Brute-force detections of the login rule.
    pub login_detections: u64,
    /// (client, server) pairs the login rule forgot because its table was
    /// full.
    pub login_pairs_evicted: u64,
    /// Flood detections on rows of an answered client connection to a
    /// login service: guesses (the login rule counts them), not a flood.
    /// Dropped.
    pub rows_flood_login: u64,
    /// Flooded destinations the volume rule found (one per key per epoch).
    pub volume_findings: u64,
    /// Of those, hosts left to an open scan alert that probes them.
    pub volume_scan_targets: u64,
    /// Sketch epochs the volume rule read.
    pub gateway_views: u64,
    /// Echo requests to new hosts that no model flagged, counted as scan
    /// probes (the scan rule's distinct-host bar decides).
    pub discovery_probes: u64,
    /// Rows producers could not enqueue because the channel was full.
    pub rows_shed: u64,
    pub alerts_opened: u64,
    /// Update records emitted for open alerts.
    pub alerts_updated: u64,
    pub alerts_closed: u64,
    /// Alerts closed early because `max_open_alerts` was reached (also in `alerts_closed`).
    pub alerts_evicted: u64,
    /// Host flood alerts taken into a spread flood's alert on their network
    /// (also in `alerts_closed`).
    pub alerts_merged: u64,
    pub incidents_opened: u64,
    pub incidents_closed: u64,
    /// Incidents closed early because `max_incidents` was reached (also in `incidents_closed`).
    pub incidents_evicted: u64,
    /// Alerts (or addresses newly seen on an alert's aggregated side) whose
    /// keys were left out of the correlation index because their incident
    /// reached its key cap.
    pub correlation_keys_dropped: u64,
    /// Gauges: state held now.
    pub open_alerts: u64,
    pub open_incidents: u64,
    /// Verdicts received from the store while running.
    pub verdicts_applied: u64,
    /// Threshold sets reloaded from the config file.
    pub threshold_reloads: u64,
    /// Lines a sink failed to deliver.
    pub sink_errors: u64,
    /// Alert records that could not be written to the alert record log.
    pub alert_log_errors: u64,
    /// `drift` records written (start, update and end).
    pub drift_events: u64,
}

macro_rules! shared_metrics {
    ($($f:ident),* $(,)?) => {
        /// [`AlertMetrics`] published by the stage thread for other threads.
        #[derive(Default)]
        pub(crate) struct SharedMetrics { $($f: AtomicU64,)* }

        impl SharedMetrics {
            fn publish(&self, m: &AlertMetrics) {
                $(self.$f.store(m.$f, Ordering::Relaxed);)*
            }

            /// Reads the latest published counters.
            #[must_use]
            pub(crate) fn snapshot(&self) -> AlertMetrics {
                AlertMetrics { $($f: self.$f.load(Ordering::Relaxed),)* }
            }
        }
    };
}

shared_metrics!(
    rows_in,
    rows_below_threshold,
    rows_responder,
    rows_flood_low_volume,
    rows_flood_solicited,
    rows_flood_backscatter,
    rows_flood_scan_probe,
    rows_uncorroborated,
    rows_bruteforce_upload,
    rows_bruteforce_paced,
    rows_anomaly_scan_probe,
    corroboration_evicted,
    upload_connections,
    beacon_detections,
    beacon_pairs_evicted,
    login_connections,
    login_detections,
    login_pairs_evicted,
    rows_flood_login,
    volume_findings,
    volume_scan_targets,
    gateway_views,
    discovery_probes,
    rows_shed,
    alerts_opened,
    alerts_updated,
    alerts_closed,
    alerts_evicted,
    alerts_merged,
    incidents_opened,
    incidents_closed,
    incidents_evicted,
    correlation_keys_dropped,
    open_alerts,
    open_incidents,
    verdicts_applied,
    threshold_reloads,
    sink_errors,
    alert_log_errors,
    drift_events,
);

/// What the poller thread (and a reload) tells the stage.
#[derive(Debug)]
pub enum Control {
    /// An analyst's verdict was recorded.
    Verdict(VerdictRecord),
    /// The config file changed: thresholds now in force.
    Thresholds(Thresholds),
    /// The configuration was reloaded (SIGHUP) and validated as at start.
    Reload(Box<Reloaded>),
}

/// A validated configuration for the running stage to apply between two
/// row batches.
pub struct Reloaded {
    pub settings: AlertSettings,
    pub inventory: Inventory,
    /// New sinks, opened, when the configuration changed them: the stage
    /// flushes the old ones and swaps, so no record is split or lost.
    pub sinks: Option<Box<dyn AlertOutput>>,
}

impl std::fmt::Debug for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloaded")
            .field("settings", &self.settings)
            .field("inventory", &self.inventory)
            .field("sinks", &self.sinks.is_some())
            .finish()
    }
}

/// Enqueues a row for the alert stage without blocking; a full channel sheds
/// the row and counts it in `shed` (the stage reports it as `rows_shed`).
pub fn offer_row(tx: &Sender<RowBatch>, row: ScoredRow, shed: &AtomicU64) -> bool {
    offer_rows(tx, vec![row], shed)
}

/// Enqueues a batch of rows without blocking; a full channel sheds the whole
/// batch and counts its rows in `shed`.
pub(crate) fn offer_rows(tx: &Sender<RowBatch>, rows: RowBatch, shed: &AtomicU64) -> bool {
    match tx.try_send(rows) {
        Ok(()) => true,
        Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => {
            shed.fetch_add(r.len() as u64, Ordering::Relaxed);
            false
        }
    }
}

/// EVE severities an alert can have (1 = highest; see [`eve::severity`]).
pub const EVE_SEVERITIES: usize = 3;

/// What the alert stage publishes besides its counters: alerts opened by
/// class and EVE severity, and the latency from the event of the row that
/// opened an alert (its kernel timestamp) to the opening.
#[derive(Debug, Clone, Default)]
pub struct AlertFigures {
    /// `opened[class as usize][eve_severity - 1]`.
    pub opened: [[u64; EVE_SEVERITIES]; crate::model::row::N_CLASSES],
    pub alert_latency: LatencyHistogram,
    /// Latest PSI per feature against the model card's baseline (empty
    /// before the first judged window).
    pub drift_psi: Vec<(String, f64)>,
}

impl AlertFigures {
    fn copy_from(&mut self, other: &Self) {
        self.opened = other.opened;
        self.alert_latency.copy_from(&other.alert_latency);
        self.drift_psi.clone_from(&other.drift_psi);
    }
}

/// The running stage.
pub struct AlertStageHandle {
    thread: JoinHandle<AlertMetrics>,
    poller: Option<JoinHandle<()>>,
    /// Where reloads (SIGHUP) are sent; the stage applies them between
    /// row batches.
    control: Sender<Control>,
    metrics: Arc<SharedMetrics>,
    figures: Arc<Published<AlertFigures>>,
    shed: Arc<AtomicU64>,
}

/// Reads what a running alert stage publishes, from any thread.
#[derive(Clone)]
pub struct AlertReader {
    metrics: Arc<SharedMetrics>,
    figures: Arc<Published<AlertFigures>>,
    shed: Arc<AtomicU64>,
}

impl AlertReader {
    /// Latest counters (published at least once a second and at exit).
    #[must_use]
    pub fn counters(&self) -> AlertMetrics {
        let mut m = self.metrics.snapshot();
        m.rows_shed = self.shed.load(Ordering::Relaxed);
        m
    }

    /// Alerts opened by class and severity and their latency, as last
    /// published (at least once a second and at exit).
    #[must_use]
    pub fn figures(&self) -> AlertFigures {
        self.figures.read()
    }
}

impl std::fmt::Debug for AlertReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertReader").finish_non_exhaustive()
    }
}

impl AlertStageHandle {
    /// A reader of the stage's published counters and figures.
    #[must_use]
    pub fn reader(&self) -> AlertReader {
        AlertReader {
            metrics: Arc::clone(&self.metrics),
            figures: Arc::clone(&self.figures),
            shed: Arc::clone(&self.shed),
        }
    }

    /// Latest counters (published at least once a second and at exit).
    #[must_use]
    pub fn metrics(&self) -> AlertMetrics {
        let mut m = self.metrics.snapshot();
        m.rows_shed = self.shed.load(Ordering::Relaxed);
        m
    }

    /// Sends the stage a control message, applied between row batches.
    /// False when the stage has ended or its queue is full.
    pub fn send_control(&self, c: Control) -> bool {
        self.control.try_send(c).is_ok()
    }

    /// The counter producers pass to [`offer_row`].
    #[must_use]
    pub fn shed_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.shed)
    }

    /// Waits for the stage to finish: it does once every sender of the row
    /// channel is dropped, after closing open alerts and flushing the sinks.
    #[must_use]
    pub fn join(self) -> AlertMetrics {
        let m = self.thread.join().unwrap_or_default();
        if let Some(p) = self.poller {
            let _ = p.join();
        }
        m
    }
}

/// How long the stage waits for a row before advancing its clock by itself.
const IDLE_TICK: Duration = Duration::from_millis(200);
/// Rows handled per wake-up (whole batches, at least one) before checking
/// control messages again.
const BATCH: usize = 1024;

/// Where the stage writes its EVE lines. `sinks::SinkSet` implements it;
/// the trait lives here so the alert stage never imports the stage after it.
pub trait AlertOutput: Send {
    /// Writes one record (`line` has no trailing newline); a failure is
    /// counted by the output, never returned to the stage.
    fn write_line(&mut self, line: &[u8]);
    /// Pushes buffered records out (called when the stage is idle and at exit).
    fn flush(&mut self);
    /// Lines the output failed to deliver so far.
    fn errors(&self) -> u64;
}

/// Starts the alert stage thread (and its feedback poller when the settings
/// name a verdict store or a config file).
///
/// The stage runs until every sender of `rows` is dropped.
///
/// # Errors
/// When the alert record log cannot be opened or a thread cannot start.
pub fn spawn_alert_stage(
    rows: Receiver<RowBatch>,
    settings: AlertSettings,
    inventory: Inventory,
    sinks: impl AlertOutput + 'static,
    sketches: Option<SketchHandle>,
    drift: Option<Arc<crate::model::drift::DriftTally>>,
) -> Result<AlertStageHandle, AlertsError> {
    let shed = Arc::new(AtomicU64::new(0));
    let metrics = Arc::new(SharedMetrics::default());
    let figures = Arc::new(Published::<AlertFigures>::default());
    let (ctrl_tx, ctrl_rx) = crossbeam_channel::bounded::<Control>(1024);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let poll = Duration::from_millis(settings.alerts.feedback_poll_ms.max(10));
    let store = settings.alerts.verdict_store.clone();
    let config_path = settings.config_path.clone();
    let control = ctrl_tx.clone();
    let poller = if store.as_os_str().is_empty() && config_path.is_none() {
        None
    } else {
        Some(
            std::thread::Builder::new()
                .name("alert-feedback".into())
                .spawn(move || {
                    feedback::poll_loop(&store, config_path.as_deref(), poll, &ctrl_tx, &stop_rx);
                })
                .map_err(|source| AlertsError::Spawn {
                    name: "alert-feedback",
                    source,
                })?,
        )
    };
    let mut stage = AlertStage::new(settings, inventory, sinks, ClockMap::from_system())?;
    if let Some(t) = drift {
        stage.set_drift_tally(t);
    }
    let m2 = Arc::clone(&metrics);
    let f2 = Arc::clone(&figures);
    let shed2 = Arc::clone(&shed);
    let thread = std::thread::Builder::new()
        .name("alert-stage".into())
        .spawn(move || {
            run_loop(
                &mut stage,
                &rows,
                ctrl_rx,
                (&m2, &f2),
                &shed2,
                sketches.as_ref(),
            );
            drop(stop_tx);
            stage.metrics()
        })
        .map_err(|source| AlertsError::Spawn {
            name: "alert-stage",
            source,
        })?;
    Ok(AlertStageHandle {
        thread,
        poller,
        control,
        metrics,
        figures,
        shed,
    })
}

fn run_loop(
    stage: &mut AlertStage,
    rows: &Receiver<RowBatch>,
    ctrl: Receiver<Control>,
    (shared, figures): (&SharedMetrics, &Published<AlertFigures>),
    shed: &AtomicU64,
    sketches: Option<&SketchHandle>,
) {
    let mut ctrl = ctrl;
    let mut gateway_seq = 0;
    let mut last_publish = std::time::Instant::now();
    loop {
        select! {
            recv(rows) -> r => match r {
                Ok(batch) => {
                    let mut done = batch.len();
                    for row in &batch {
                        stage.process(row);
                    }
                    while done < BATCH
                        && let Ok(batch) = rows.try_recv()
                    {
                        done += batch.len();
                        for row in &batch {
                        stage.process(row);
                    }
                    }
                    if rows.is_empty() {
                        stage.flush();
                    }
                }
                Err(_) => break,
            },
            recv(ctrl) -> c => match c {
                Ok(c) => stage.control(c),
                // No poller (or it stopped): stop selecting on a dead channel.
                Err(_) => ctrl = crossbeam_channel::never(),
            },
            default(IDLE_TICK) => {
                stage.tick(sensor_common::clock::monotonic_ns());
                stage.flush();
            },
        }
        // A new sketch epoch (once a second): one atomic load otherwise.
        if let Some(g) = sketches.and_then(|s| s.gateway_if_newer(gateway_seq)) {
            gateway_seq = g.seq;
            stage.process_gateway(&g, sensor_common::clock::monotonic_ns());
        }
        if last_publish.elapsed() >= Duration::from_secs(1) {
            stage.tick(sensor_common::clock::monotonic_ns());
            stage.set_rows_shed(shed.load(Ordering::Relaxed));
            shared.publish(&stage.metrics());
            figures.try_publish(|f| f.copy_from(stage.figures()));
            last_publish = std::time::Instant::now();
        }
    }
    stage.set_rows_shed(shed.load(Ordering::Relaxed));
    stage.shutdown();
    shared.publish(&stage.metrics());
    figures.publish(|f| f.copy_from(stage.figures()));
}

/// Waits on a receiver that only ever disconnects; true when it did.
pub(crate) fn stopped(stop: &Receiver<()>, wait: Duration) -> bool {
    matches!(
        stop.recv_timeout(wait),
        Err(RecvTimeoutError::Disconnected) | Ok(())
    )
}
