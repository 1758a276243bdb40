//! The per-worker scoring pipeline: features → micro-batch → classifier
//! (every row) → autoencoder (only rows in the classifier's ambiguous band)
//! → `ScoredRow` on a bounded channel to the alert stage.
//!
//! A batch closes when it is full or when its oldest row has waited the
//! batch deadline; both are checked on every event (against the event's
//! kernel timestamp) and on every worker tick (against the worker's clock,
//! the same `CLOCK_MONOTONIC`). The pipeline reports that deadline to the
//! worker ([`ScoringPipeline::next_deadline_ns`]), which ticks it on time
//! even when no further event arrives. By default a batch also closes as
//! soon as the worker has emptied its ring: waiting for more rows then only
//! adds latency. This batching is self-clocking: at moderate load batches
//! are whatever arrived while the last one was scored (tens of µs old, not
//! the deadline), and when the worker falls behind its ring stops emptying,
//! so batches grow to full size and the fixed cost per batch is spread
//! over more rows exactly when throughput matters. When the alert channel
//! is full the batch's rows are counted and shed: a worker never blocks.

use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use sensor_common::{FlowEvent, FlowKey, addr_to_ip as ip, clock::monotonic_ns};

use super::{
    Model, ModelKind, Runner,
    drift::{DriftCounter, DriftTally},
};
use crate::{
    capture::live::{LatencyHistogram, Published},
    capture::{collector::FlowOrigin, control::SketchHandle},
    features::{
        FeatureConfig, FeatureExtractor, FeatureVec, GatewayView, N_FEATURES, RowFacts,
        event_volume,
    },
    model::row::{Entity, MAX_FEATURES, ModelVersion, N_CLASSES, RowBatch, ScoredRow, Window},
};

/// Tunables of the pipeline.
#[derive(Clone, Copy, Debug)]
pub struct PipelineConfig {
    pub features: FeatureConfig,
    /// A batch closes when its oldest row has waited this long (ns).
    pub batch_deadline_ns: u64,
    /// A batch closes at this many rows (at most the largest planned batch).
    pub max_batch: usize,
    /// Rows whose attack score (`1 - P(benign)`) lies in `[lo, hi]` are also
    /// scored by the autoencoder.
    pub escalate_band: (f32, f32),
    /// Rows with an attack score below this, and not escalated, are not sent
    /// to the alert stage; 0 or less sends every row (recording, evaluation).
    /// `sensor run` derives it from the alert thresholds
    /// (`run::scoring::emit_floor`): rows far below every threshold can
    /// never alert, and sending them costs the worker and the alert stage.
    pub emit_floor: f32,
    /// Close the open batch whenever the worker has emptied its ring
    /// (`false`: only when full or at the deadline — fewer, larger batches,
    /// less CPU per row at moderate load, more latency).
    pub close_on_drain: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            features: FeatureConfig::default(),
            batch_deadline_ns: 200_000,
            max_batch: 256,
            escalate_band: (0.01, 0.9),
            emit_floor: 0.0,
            close_on_drain: true,
        }
    }
}

/// Counters of one worker's pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    /// Rows scored by the classifier.
    pub rows_scored: u64,
    /// Classifier batches run.
    pub batches: u64,
    /// Batches closed by the deadline rather than by filling up.
    pub batches_by_deadline: u64,
    /// Batches closed because the worker had emptied its ring.
    pub batches_on_drain: u64,
    /// Rows also scored by the autoencoder.
    pub escalated: u64,
    /// Rows sent to the alert stage.
    pub emitted: u64,
    /// Rows scored but not sent: below the emit floor and not escalated.
    pub below_floor: u64,
    /// Rows shed because the alert channel was full.
    pub shed: u64,
    /// Rows dropped because the alert stage is gone.
    pub disconnected: u64,
    /// Batches lost to an inference error.
    pub inference_errors: u64,
    /// Gateway views (kernel sketches, one per epoch) taken into the features.
    pub gateway_views: u64,
    /// Model swaps applied (hot reload), each at a batch boundary.
    pub model_swaps: u64,
}

/// Upper bounds of the batch-size histogram (rows), as the metrics endpoint
/// exports it; the largest planned batch is 256.
pub const BATCH_SIZE_BOUNDS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// What one worker's pipeline publishes for other threads (the metrics
/// endpoint, `--stats-out`): its counters, the event→score latency of every
/// scored row (from the event's kernel timestamp to the end of its batch's
/// inference) and its batch sizes.
#[derive(Debug, Clone, Default)]
pub struct PipelineLive {
    pub counters: PipelineCounters,
    pub score_latency: LatencyHistogram,
    /// Batches per [`BATCH_SIZE_BOUNDS`] bucket (not cumulative; larger
    /// batches in the last), and the rows of all batches.
    pub batch_sizes: [u64; BATCH_SIZE_BOUNDS.len()],
    pub batch_rows: u64,
}

impl PipelineLive {
    /// Adds `other`'s figures (a sum over workers).
    pub fn add(&mut self, other: &Self) {
        let (a, b) = (&mut self.counters, &other.counters);
        a.rows_scored += b.rows_scored;
        a.batches += b.batches;
        a.batches_by_deadline += b.batches_by_deadline;
        a.batches_on_drain += b.batches_on_drain;
        a.escalated += b.escalated;
        a.emitted += b.emitted;
        a.below_floor += b.below_floor;
        a.shed += b.shed;
        a.disconnected += b.disconnected;
        a.inference_errors += b.inference_errors;
        a.gateway_views = a.gateway_views.max(b.gateway_views);
        a.model_swaps += b.model_swaps;
        self.score_latency.add(&other.score_latency);
        for (x, y) in self.batch_sizes.iter_mut().zip(other.batch_sizes) {
            *x += y;
        }
        self.batch_rows += other.batch_rows;
    }

    fn copy_from(&mut self, other: &Self) {
        self.counters = other.counters;
        self.score_latency.copy_from(&other.score_latency);
        self.batch_sizes = other.batch_sizes;
        self.batch_rows = other.batch_rows;
    }
}

/// How often a pipeline publishes its [`PipelineLive`] (ns): the copy of
/// its histogram costs some microseconds, so not at every 1 ms tick.
const PUBLISH_EVERY_NS: u64 = 10_000_000;

/// Per-row context kept next to the features while the row waits in a batch.
#[derive(Clone, Copy, Default)]
struct RowMeta {
    key: FlowKey,
    ts_ns: u64,
    pps: f32,
    bytes: u64,
    packets: u64,
    facts: RowFacts,
    origin: Option<FlowOrigin>,
}

/// The worker-side handler: owns the feature state, the model runners and
/// the current batch. All buffers are allocated at construction, except the
/// one batch of rows sent to the alert stage per micro-batch.
pub struct ScoringPipeline {
    cfg: PipelineConfig,
    fx: FeatureExtractor,
    classifier: Arc<Model>,
    autoencoder: Option<Arc<Model>>,
    cls: Runner,
    ae: Option<Runner>,
    rows: Vec<FeatureVec>,
    meta: Vec<RowMeta>,
    probs: Vec<f32>,
    esc_rows: Vec<FeatureVec>,
    esc_idx: Vec<u32>,
    esc_out: Vec<f32>,
    tx: Sender<RowBatch>,
    counters: PipelineCounters,
    n_classes: usize,
    /// Where the control thread publishes the kernel sketches' gateway view.
    sketches: Option<SketchHandle>,
    /// Latency and batch figures, counted here and published to `live`.
    figures: PipelineLive,
    live: Option<Arc<Published<PipelineLive>>>,
    next_publish_ns: u64,
    /// Drift bins of every scored row (see [`super::drift`]).
    drift: Option<DriftCounter>,
}

/// Models to put in place of a pipeline's running ones (hot reload), with
/// their per-worker tract states already spawned, so the worker only swaps
/// pointers.
pub struct ModelSwap {
    classifier: Arc<Model>,
    autoencoder: Option<Arc<Model>>,
    cls: Runner,
    ae: Option<Runner>,
    n_classes: usize,
}

impl ModelSwap {
    /// Checks the kinds (a classifier, an autoencoder) and spawns the
    /// states one worker needs.
    pub fn new(
        classifier: Arc<Model>,
        autoencoder: Option<Arc<Model>>,
    ) -> Result<Self, PipelineError> {
        let ModelKind::Classifier { n_classes } = classifier.kind() else {
            return Err(PipelineError::WrongModel {
                id: classifier.id().to_string(),
                expected: "classifier",
            });
        };
        if let Some(a) = &autoencoder
            && a.kind() != ModelKind::Autoencoder
        {
            return Err(PipelineError::WrongModel {
                id: a.id().to_string(),
                expected: "autoencoder",
            });
        }
        let spawn = |m: &Model| {
            m.runner().map_err(|e| PipelineError::Spawn {
                id: m.id().to_string(),
                source: e.into(),
            })
        };
        let cls = spawn(&classifier)?;
        let ae = autoencoder.as_deref().map(spawn).transpose()?;
        Ok(Self {
            classifier,
            autoencoder,
            cls,
            ae,
            n_classes,
        })
    }
}

impl std::fmt::Debug for ModelSwap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSwap")
            .field("classifier", &self.classifier.id())
            .field("autoencoder", &self.autoencoder.as_ref().map(|a| a.id()))
            .finish_non_exhaustive()
    }
}

/// Errors building a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A model slot holds a model of the wrong kind.
    #[error("model {id} is not a {expected}")]
    WrongModel { id: String, expected: &'static str },
    /// tract could not spawn a per-worker state.
    #[error("cannot spawn a tract state for {id}")]
    Spawn {
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ScoringPipeline {
    /// A pipeline for one worker. `classifier` must be a classifier model and
    /// `autoencoder`, if given, an autoencoder.
    pub fn new(
        cfg: PipelineConfig,
        classifier: Arc<Model>,
        autoencoder: Option<Arc<Model>>,
        tx: Sender<RowBatch>,
    ) -> Result<Self, PipelineError> {
        let ModelSwap {
            classifier,
            autoencoder,
            cls,
            ae,
            n_classes,
        } = ModelSwap::new(classifier, autoencoder)?;
        let max_batch = cfg.max_batch.clamp(1, cls.max_batch());
        let cfg = PipelineConfig { max_batch, ..cfg };
        Ok(Self {
            fx: FeatureExtractor::new(cfg.features),
            rows: Vec::with_capacity(max_batch),
            meta: Vec::with_capacity(max_batch),
            probs: vec![0.0; max_batch * n_classes],
            esc_rows: Vec::with_capacity(max_batch),
            esc_idx: Vec::with_capacity(max_batch),
            esc_out: vec![0.0; max_batch],
            n_classes: n_classes.min(N_CLASSES),
            cfg,
            classifier,
            autoencoder,
            cls,
            ae,
            tx,
            counters: PipelineCounters::default(),
            sketches: None,
            figures: PipelineLive::default(),
            live: None,
            next_publish_ns: 0,
            drift: None,
        })
    }

    /// Reads the gateway view from `sketches` on every tick (a new view is
    /// taken once per epoch; see [`crate::capture::gateway`]).
    #[must_use]
    pub(crate) fn with_sketches(mut self, sketches: SketchHandle) -> Self {
        self.sketches = Some(sketches);
        self
    }

    /// Publishes the pipeline's counters, latency and batch figures to
    /// `live` every [`PUBLISH_EVERY_NS`] (at a tick) and when it finishes.
    #[must_use]
    pub fn with_live(mut self, live: Arc<Published<PipelineLive>>) -> Self {
        self.live = Some(live);
        self
    }

    /// Counts every scored row into `tally`'s drift bins (the classifier
    /// card's baseline), added to it with each publication.
    #[must_use]
    pub fn with_drift(mut self, tally: Arc<DriftTally>) -> Self {
        self.drift = Some(DriftCounter::new(tally, self.classifier.card()));
        self
    }

    /// The figures so far: counters, event→score latency, batch sizes.
    #[must_use]
    pub fn figures(&self) -> PipelineLive {
        let mut f = self.figures.clone();
        f.counters = self.counters;
        f
    }

    /// Publishes to `live` (see [`Self::with_live`]); `wait` for the last
    /// publication, otherwise skipped while a reader holds the slot.
    fn publish(&mut self, wait: bool) {
        if let Some(d) = &mut self.drift {
            d.publish();
        }
        let Some(live) = &self.live else {
            return;
        };
        self.figures.counters = self.counters;
        let figures = &self.figures;
        if wait {
            live.publish(|p| p.copy_from(figures));
        } else {
            live.try_publish(|p| p.copy_from(figures));
        }
    }

    /// Installs a gateway view directly (replays and tests).
    pub fn set_gateway_view(&mut self, view: Arc<GatewayView>) {
        self.fx.set_gateway_view(view);
    }

    /// Every decoded ring event. No allocation, lock or syscall unless a
    /// batch closes (then one clock read and tract's per-batch tensors).
    pub fn on_event(&mut self, ev: &FlowEvent) {
        self.push_event(ev, None);
    }

    /// An event the collector made from a flow record: as [`Self::on_event`],
    /// and its row carries the record's origin to the alert stage.
    pub fn on_flow_record(&mut self, ev: &FlowEvent, origin: &FlowOrigin) {
        self.push_event(ev, Some(*origin));
    }

    #[inline]
    fn push_event(&mut self, ev: &FlowEvent, origin: Option<FlowOrigin>) {
        // Extracted in place: `rows` holds `max_batch` rows from the start.
        let i = self.rows.len();
        self.rows.push([0f32; N_FEATURES]);
        let Some(facts) = self.fx.process(ev, &mut self.rows[i]) else {
            self.rows.pop();
            return;
        };
        let (pps, bytes, packets) = event_volume(ev);
        self.meta.push(RowMeta {
            key: ev.key,
            ts_ns: ev.ts_ns,
            pps,
            bytes,
            packets,
            facts,
            origin,
        });
        if self.rows.len() >= self.cfg.max_batch {
            self.flush(Close::Full);
        } else if ev.ts_ns.saturating_sub(self.meta[0].ts_ns) >= self.cfg.batch_deadline_ns {
            self.flush(Close::Deadline);
        }
    }

    /// Worker tick (at least every ~1 ms, also when idle): settles timed-out
    /// handshakes and closes a batch whose deadline passed.
    pub fn on_tick(&mut self, now_ns: u64) {
        if let Some(g) = self
            .sketches
            .as_ref()
            .and_then(|s| s.gateway_if_newer(self.fx.gateway_seq()))
        {
            self.fx.set_gateway_view(g);
            self.counters.gateway_views += 1;
        }
        self.fx.expire(now_ns);
        if let Some(m) = self.meta.first()
            && now_ns.saturating_sub(m.ts_ns) >= self.cfg.batch_deadline_ns
        {
            self.flush(Close::Deadline);
        }
        if now_ns >= self.next_publish_ns {
            self.publish(false);
            self.next_publish_ns = now_ns + PUBLISH_EVERY_NS;
        }
    }

    /// The worker has emptied its ring: close the open batch now unless
    /// [`PipelineConfig::close_on_drain`] is off.
    pub fn on_drained(&mut self) {
        if self.cfg.close_on_drain && !self.rows.is_empty() {
            self.flush(Close::Drained);
        }
    }

    /// When the current batch must close (its oldest row's timestamp plus
    /// the batch deadline), or `None` with no batch open.
    #[must_use]
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.meta
            .first()
            .map(|m| m.ts_ns.saturating_add(self.cfg.batch_deadline_ns))
    }

    /// Scores and emits whatever is batched now (e.g. at shutdown), and
    /// publishes the final figures.
    pub fn flush_now(&mut self) {
        if !self.rows.is_empty() {
            self.flush(Close::Deadline);
        }
        self.publish(true);
    }

    /// Puts `swap`'s models in place at this batch boundary: the open
    /// batch is scored by the models it was collected for, every later row
    /// by the new ones, so no row is lost or scored twice.
    ///
    /// # Errors
    /// The new classifier plans a smaller largest batch than this pipeline
    /// collects (the models stay as they were).
    pub fn swap_models(&mut self, swap: ModelSwap) -> Result<(), String> {
        if swap.cls.max_batch() < self.cfg.max_batch {
            return Err(format!(
                "{} plans batches of at most {} rows, this pipeline collects {}",
                swap.classifier.id(),
                swap.cls.max_batch(),
                self.cfg.max_batch
            ));
        }
        if !self.rows.is_empty() {
            self.flush(Close::Swap);
        }
        let ModelSwap {
            classifier,
            autoencoder,
            cls,
            ae,
            n_classes,
        } = swap;
        if let Some(d) = &mut self.drift {
            d.swap(classifier.card());
        }
        self.n_classes = n_classes.min(N_CLASSES);
        self.probs.resize(self.cfg.max_batch * self.n_classes, 0.0);
        self.classifier = classifier;
        self.autoencoder = autoencoder;
        self.cls = cls;
        self.ae = ae;
        self.counters.model_swaps += 1;
        Ok(())
    }

    /// `name@version` of the classifier and the autoencoder in use.
    #[must_use]
    pub fn model_ids(&self) -> (ModelVersion, Option<ModelVersion>) {
        (
            self.classifier.id(),
            self.autoencoder.as_ref().map(|a| a.id()),
        )
    }

    /// Pipeline counters.
    #[must_use]
    pub fn counters(&self) -> PipelineCounters {
        self.counters
    }

    /// The configuration in force (after clamping `max_batch`).
    #[must_use]
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    fn flush(&mut self, why: Close) {
        let n = self.rows.len();
        if n == 0 {
            return;
        }
        let k = self.n_classes;
        self.counters.batches += 1;
        match why {
            Close::Full | Close::Swap => {}
            Close::Deadline => self.counters.batches_by_deadline += 1,
            Close::Drained => self.counters.batches_on_drain += 1,
        }
        if self.cls.run(&self.rows, &mut self.probs[..n * k]).is_err() {
            self.counters.inference_errors += 1;
            self.rows.clear();
            self.meta.clear();
            return;
        }
        self.counters.rows_scored += n as u64;
        if let Some(d) = &mut self.drift {
            // The attack score, 1 − P(benign), as the thresholds read it.
            for (i, r) in self.rows.iter().enumerate() {
                d.count(r, 1.0 - self.probs[i * k]);
            }
        }
        let bucket = BATCH_SIZE_BOUNDS
            .iter()
            .position(|&b| n as u64 <= b)
            .unwrap_or(BATCH_SIZE_BOUNDS.len() - 1);
        self.figures.batch_sizes[bucket] += 1;
        self.figures.batch_rows += n as u64;

        // Escalate the ambiguous rows to the autoencoder.
        self.esc_rows.clear();
        self.esc_idx.clear();
        let (lo, hi) = self.cfg.escalate_band;
        if self.ae.is_some() {
            for i in 0..n {
                let s = 1.0 - self.probs[i * k];
                if (lo..=hi).contains(&s) {
                    self.esc_rows.push(self.rows[i]);
                    self.esc_idx.push(i as u32);
                }
            }
        }
        let mut esc_ok = false;
        if let Some(ae) = &mut self.ae
            && !self.esc_rows.is_empty()
        {
            let m = self.esc_rows.len();
            esc_ok = ae.run(&self.esc_rows, &mut self.esc_out[..m]).is_ok();
            if esc_ok {
                self.counters.escalated += m as u64;
            } else {
                self.counters.inference_errors += 1;
            }
        }

        let scored_ts = monotonic_ns();
        for m in &self.meta {
            self.figures.score_latency.record(m.ts_ns, scored_ts);
        }
        let cls_id = self.classifier.id();
        let ae_id = self.autoencoder.as_ref().map_or(cls_id, |a| a.id());
        let mut e = 0usize;
        // Allocated at the first row sent (at most once per batch, sized for
        // the rest of the batch) and handed to the alert stage whole.
        let mut out: RowBatch = Vec::new();
        for i in 0..n {
            let mut anomaly = f32::NAN;
            if esc_ok && e < self.esc_idx.len() && self.esc_idx[e] as usize == i {
                anomaly = self.esc_out[e];
                e += 1;
            }
            let p = &self.probs[i * k..i * k + k];
            if self.cfg.emit_floor > 0.0
                && 1.0 - p[0] < self.cfg.emit_floor
                && anomaly.is_nan()
                && !self.meta[i].facts.feeds_a_rule()
            {
                self.counters.below_floor += 1;
                continue;
            }
            let m = &self.meta[i];
            let mut class_probs = [0f32; N_CLASSES];
            class_probs[..k].copy_from_slice(p);
            let mut features = [0f32; MAX_FEATURES];
            features[..N_FEATURES].copy_from_slice(&self.rows[i]);
            if out.capacity() == 0 {
                out.reserve_exact(n - i);
            }
            out.push(ScoredRow {
                entity: Entity::Flow,
                window: Window::Flow,
                src: ip(&m.key.src),
                dst: ip(&m.key.dst),
                sport: m.key.sport,
                dport: m.key.dport,
                proto: m.key.proto,
                event_ts_ns: m.ts_ns,
                scored_ts_ns: scored_ts,
                features,
                n_features: N_FEATURES as u8,
                class_probs,
                anomaly_score: anomaly,
                packets_per_s: m.pps,
                bytes: m.bytes,
                packets: m.packets,
                facts: m.facts,
                origin: m.origin,
                classifier_version: cls_id,
                autoencoder_version: ae_id,
            });
        }
        if !out.is_empty() {
            let sent = out.len() as u64;
            match self.tx.try_send(out) {
                Ok(()) => self.counters.emitted += sent,
                Err(TrySendError::Full(_)) => self.counters.shed += sent,
                Err(TrySendError::Disconnected(_)) => self.counters.disconnected += sent,
            }
        }
        self.rows.clear();
        self.meta.clear();
    }
}

/// Why a batch closed (counted in [`PipelineCounters`]).
#[derive(Clone, Copy)]
enum Close {
    Full,
    Deadline,
    Drained,
    /// Before a model swap: the batch's rows go to the models they were
    /// collected for.
    Swap,
}

impl crate::capture::workers::EventHandler for ScoringPipeline {
    #[inline]
    fn on_event(&mut self, ev: &FlowEvent) {
        ScoringPipeline::on_event(self, ev);
    }

    #[inline]
    fn on_flow_record(&mut self, ev: &FlowEvent, origin: &FlowOrigin) {
        ScoringPipeline::on_flow_record(self, ev, origin);
    }

    #[inline]
    fn on_tick(&mut self, now_ns: u64) {
        ScoringPipeline::on_tick(self, now_ns);
    }

    #[inline]
    fn next_deadline_ns(&self) -> Option<u64> {
        ScoringPipeline::next_deadline_ns(self)
    }

    #[inline]
    fn on_drained(&mut self) {
        ScoringPipeline::on_drained(self);
    }

    fn finish(&mut self) {
        self.flush_now();
    }
}
