//! Worker benchmark: events per second on one core, and event-timestamp →
//! score latency at fixed offered loads.
//!
//! A BPF ring buffer cannot be written from user space, so a producer thread
//! plays the kernel: it stamps each 128-byte event record with
//! `CLOCK_MONOTONIC` (as `bpf_ktime_get_ns` would) and pushes the raw bytes
//! into a lock-free bounded queue (crossbeam `ArrayQueue`). The worker thread
//! pops records and hands them to `WorkerState::dispatch`, the same decode +
//! handler path the ring loop uses, with the full scoring pipeline (features,
//! micro-batching, classifier, autoencoder on escalated rows) as handler. A
//! third thread plays the alert stage, draining the scored rows and recording
//! `scored_ts - event_ts` in an HDR histogram. Events come from the traffic
//! simulator (benign mix plus floods, scans and brute force).
//!
//! Output, one line per offered load:
//! `worker_load <events_per_s> achieved=<n> p50_us=<n> p99_us=<n> p999_us=<n> shed=<n>`
//! where `shed` counts rows shed on a full alert channel plus events dropped
//! on a full input queue (a full kernel ring). `worker_max` and `worker_load`
//! use the configuration `sensor run` uses: the emit floor derived from the
//! committed cards' alert thresholds, so only rows that can matter cross the
//! channel, and no per-flow map in the worker (kept only for `--flows-out`;
//! `worker_max_flows_out` is the peak with it). Batches close when the
//! worker's queue empties, as on an emptied ring (`sensor run`'s default);
//! `worker_load_hold_batches` repeats two loads with `--hold-batches` (only
//! full or deadline). `worker_load_all_rows`
//! repeats two loads sending every row (what recording needs). Latency is recorded only for rows that reach the
//! consumer; rows kept back by the floor are scored in the same batches, so
//! the sent rows' latency is the batch latency.
//!
//! Every worker also counts its rows' drift bins, as in `sensor run`;
//! `WORKER_BENCH_DRIFT=0` leaves that out (to measure what it costs).
//!
//! The machine may have only two cores: the producer is pinned to core 0
//! and the worker to core 1, and the consumer floats. Producer and consumer
//! sleep or block when idle, so at moderate loads the worker has its core
//! to itself; at the highest loads they compete with it, which is counted in
//! the worker's figures (pessimistic, not flattering). `worker_max` has no
//! producer, so its consumer is pinned to core 0.
#![expect(clippy::print_stdout, reason = "a bench binary reports on stdout")]

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;
use sensor::{
    alerts::{AlertSettings, SensorFile},
    capture::workers::{EventHandler, HandlerRequest, WorkerState},
    features::{FeatureConfig, FeatureExtractor, N_FEATURES},
    model::row::RowBatch,
    model::{
        DEFAULT_BATCH_SIZES, Model,
        drift::DriftTally,
        pipeline::{ModelSwap, PipelineConfig, ScoringPipeline},
    },
    run::scoring::emit_floor,
};
use sensor_common::FlowEvent;
use sensor_common::clock::monotonic_ns;
use sensor_train::sim::{EpisodeConfig, build_episode};

const REC: usize = size_of::<FlowEvent>();
type Record = [u8; REC];

/// The pipeline plus counters published once per tick (not per event).
struct Probe {
    p: ScoringPipeline,
    shed: Arc<AtomicU64>,
    scored: Arc<AtomicU64>,
    escalated: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
}

impl EventHandler for Probe {
    fn on_event(&mut self, ev: &FlowEvent) {
        self.p.on_event(ev);
    }
    fn on_tick(&mut self, now_ns: u64) {
        self.p.on_tick(now_ns);
        let c = self.p.counters();
        self.shed.store(c.shed, Ordering::Relaxed);
        self.scored.store(c.rows_scored, Ordering::Relaxed);
        self.escalated.store(c.escalated, Ordering::Relaxed);
        self.batches.store(c.batches, Ordering::Relaxed);
    }
    fn next_deadline_ns(&self) -> Option<u64> {
        self.p.next_deadline_ns()
    }
    fn on_drained(&mut self) {
        self.p.on_drained();
    }
    fn on_request(&mut self, request: HandlerRequest) -> Result<(), String> {
        match request.downcast::<ModelSwap>() {
            Ok(swap) => self.p.swap_models(*swap),
            Err(_) => Err("not a model swap".into()),
        }
    }
}

struct Setup {
    cls: Arc<Model>,
    ae: Arc<Model>,
    /// Their files, loaded again by the reload case.
    cls_path: PathBuf,
    ae_path: PathBuf,
    corpus: Vec<FlowEvent>,
    /// The pipeline configuration `sensor run` builds for these models.
    run_cfg: PipelineConfig,
}

fn setup() -> Setup {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models");
    let cls = Model::load(
        &dir.join("flow-classifier.onnx"),
        "classifier",
        &DEFAULT_BATCH_SIZES,
    )
    .expect("classifier");
    let ae = Model::load(
        &dir.join("flow-autoencoder.onnx"),
        "autoencoder",
        &DEFAULT_BATCH_SIZES,
    )
    .expect("autoencoder");
    let (events, _) = build_episode(&EpisodeConfig {
        seed: 4242,
        secs: 120,
        clients: 16,
        attacks: 5,
        intensity: 1.0,
    })
    .into_events(1);
    let corpus = events.into_iter().map(|e| e.ev).collect();
    let mut file = SensorFile::default();
    file.models.classifier_card = Some(dir.join("flow-classifier.card.json"));
    file.models.autoencoder_card = Some(dir.join("flow-autoencoder.card.json"));
    let thresholds = AlertSettings::from_file(&file, None)
        .expect("cards")
        .thresholds;
    Setup {
        cls: Arc::new(cls),
        ae: Arc::new(ae),
        cls_path: dir.join("flow-classifier.onnx"),
        ae_path: dir.join("flow-autoencoder.onnx"),
        corpus,
        run_cfg: PipelineConfig {
            emit_floor: emit_floor(&thresholds),
            ..PipelineConfig::default()
        },
    }
}

/// Event `i` of an endless replay: each pass over the corpus moves the
/// addresses, so replays are new flows and hosts rather than repeats.
fn replay(corpus: &[FlowEvent], i: u64, ts_ns: u64) -> Record {
    let n = corpus.len() as u64;
    let mut ev = corpus[(i % n) as usize];
    let pass = (i / n) as u8;
    ev.key.src[13] ^= pass;
    ev.key.dst[13] ^= pass;
    ev.ts_ns = ts_ns;
    let mut r = [0u8; REC];
    r.copy_from_slice(bytemuck::bytes_of(&ev));
    r
}

struct Worker {
    state: WorkerState,
    shed: Arc<AtomicU64>,
    scored: Arc<AtomicU64>,
    escalated: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
}

/// A worker as `sensor run` builds it; `flow_map` is its per-flow map's
/// capacity (0 without `--flows-out`, the default).
fn worker(
    s: &Setup,
    tx: crossbeam_channel::Sender<RowBatch>,
    cfg: PipelineConfig,
    flow_map: usize,
) -> Worker {
    let p = ScoringPipeline::new(cfg, Arc::clone(&s.cls), Some(Arc::clone(&s.ae)), tx)
        .expect("pipeline");
    let p = if std::env::var("WORKER_BENCH_DRIFT").is_ok_and(|v| v == "0") {
        p
    } else {
        p.with_drift(Arc::new(DriftTally::default()))
    };
    let shed = Arc::new(AtomicU64::new(0));
    let scored = Arc::new(AtomicU64::new(0));
    let escalated = Arc::new(AtomicU64::new(0));
    let batches = Arc::new(AtomicU64::new(0));
    let probe = Probe {
        p,
        shed: Arc::clone(&shed),
        scored: Arc::clone(&scored),
        escalated: Arc::clone(&escalated),
        batches: Arc::clone(&batches),
    };
    Worker {
        state: WorkerState::new(0, flow_map, Box::new(probe)),
        shed,
        scored,
        escalated,
        batches,
    }
}

fn pin(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids()
        && let Some(id) = ids.get(core % ids.len().max(1))
    {
        core_affinity::set_for_current(*id);
    }
}

/// Alert-stage stand-in: drains rows, records latency.
fn consumer(
    rx: crossbeam_channel::Receiver<RowBatch>,
    core: Option<usize>,
) -> thread::JoinHandle<(Histogram<u64>, u64)> {
    thread::Builder::new()
        .name("consumer".into())
        .spawn(move || {
            if let Some(c) = core {
                pin(c);
            }
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
            let mut n = 0u64;
            for batch in rx {
                for r in &batch {
                    let _ = h.record(r.scored_ts_ns.saturating_sub(r.event_ts_ns).max(1));
                }
                n += batch.len() as u64;
            }
            (h, n)
        })
        .expect("spawn consumer")
}

/// Cost of the parts on their own: feature extraction per event, and one
/// classifier / autoencoder batch per planned size.
fn components(s: &Setup) {
    let mut row = [0f32; N_FEATURES];
    let n = 400_000u64;
    let base = monotonic_ns();
    let recs: Vec<FlowEvent> = (0..n)
        .map(|i| {
            let r = replay(&s.corpus, i, base + i * 100);
            bytemuck::pod_read_unaligned(&r)
        })
        .collect();
    for (flows, hosts) in [(65_536, 16_384), (8192, 2048)] {
        let mut fx = FeatureExtractor::new(FeatureConfig {
            max_flows: flows,
            max_hosts: hosts,
            ..FeatureConfig::default()
        });
        let t = Instant::now();
        for ev in &recs {
            fx.process(ev, &mut row);
        }
        let el = t.elapsed().as_secs_f64();
        println!(
            "features_only max_flows={flows} max_hosts={hosts} events={n} ns_per_event={:.0} events_per_s={:.0}",
            el * 1e9 / n as f64,
            n as f64 / el
        );
    }
    // One flow over and over: hot state, no inserts.
    let mut fx = FeatureExtractor::new(FeatureConfig::default());
    let mut one = recs[1000];
    let t = Instant::now();
    for i in 0..n {
        one.ts_ns = base + i * 100;
        fx.process(&one, &mut row);
    }
    println!(
        "features_only_one_flow ns_per_event={:.0}",
        t.elapsed().as_secs_f64() * 1e9 / n as f64
    );
    let big = DEFAULT_BATCH_SIZES[DEFAULT_BATCH_SIZES.len() - 1];
    let rows = vec![row; big];
    for (name, m) in [("classifier", &s.cls), ("autoencoder", &s.ae)] {
        let mut r = m.runner().unwrap();
        let mut out = vec![0f32; big * m.out_width()];
        for b in DEFAULT_BATCH_SIZES {
            let iters = 2000 / b.max(8) + 20;
            let t = Instant::now();
            for _ in 0..iters {
                r.run(&rows[..b], &mut out[..b * m.out_width()]).unwrap();
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
            println!(
                "{name}_batch {b} us_per_batch={us:.1} ns_per_row={:.0}",
                us * 1e3 / b as f64
            );
        }
    }
}

/// Peak rate on one core: records are pre-built and dispatched back to back
/// (timestamps advance 100 ns per event, so batches fill).
fn max_throughput(s: &Setup, secs: f64, flow_map: usize) -> f64 {
    let (tx, rx) = crossbeam_channel::bounded(512); // as `sensor run`: batches of rows
    // No producer here: the consumer gets the other core, so the figure is
    // the worker's alone.
    let cons = consumer(rx, Some(0));
    let mut w = worker(s, tx, s.run_cfg, flow_map);
    pin(1);
    let n_pre = 1u64 << 19;
    let base = monotonic_ns();
    let recs: Vec<Record> = (0..n_pre)
        .map(|i| replay(&s.corpus, i, base + i * 100))
        .collect();
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed().as_secs_f64() < secs && done < n_pre {
        for r in &recs[done as usize..(done as usize + 4096).min(recs.len())] {
            w.state.dispatch(r);
        }
        done = (done + 4096).min(n_pre);
    }
    w.state.tick(u64::MAX / 2);
    let el = start.elapsed().as_secs_f64();
    let shed = w.shed.load(Ordering::Relaxed);
    let scored = w.scored.load(Ordering::Relaxed);
    let esc = w.escalated.load(Ordering::Relaxed);
    drop(w);
    let (_, got) = cons.join().unwrap();
    let rate = done as f64 / el;
    println!(
        "{} events={done} secs={el:.3} events_per_s={rate:.0} scored={scored} escalated={esc} emitted={got} shed={shed}",
        if flow_map == 0 {
            "worker_max"
        } else {
            "worker_max_flows_out"
        }
    );
    rate
}

/// One offered load: paced producer → SPSC queue → worker → channel → consumer.
fn offered_load(s: &Setup, rate: u64, secs: f64, cfg: PipelineConfig, label: Option<&str>) {
    offered_load_reloading(s, rate, secs, cfg, label, None);
}

/// [`offered_load`], and with `reload_every`, a thread playing `sensor
/// run`'s reload: it loads and plans the classifier and autoencoder from
/// their files again and spawns their states off the worker (as a reload
/// does), and the worker swaps them in at its next regular tick.
fn offered_load_reloading(
    s: &Setup,
    rate: u64,
    secs: f64,
    cfg: PipelineConfig,
    label: Option<&str>,
    reload_every: Option<Duration>,
) {
    let q = Arc::new(ArrayQueue::<Record>::new(1 << 16));
    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let total = (rate as f64 * secs) as u64;

    let (tx, rx) = crossbeam_channel::bounded(512); // as `sensor run`: batches of rows
    let cons = consumer(rx, None);

    let prod = {
        let q = Arc::clone(&q);
        let stop = Arc::clone(&stop);
        let dropped = Arc::clone(&dropped);
        let corpus = s.corpus.clone();
        thread::Builder::new()
            .name("producer".into())
            .spawn(move || {
                pin(0);
                let start = monotonic_ns();
                let gap = 1e9 / rate as f64;
                let mut i = 0u64;
                let mut late = 0u64;
                while i < total {
                    let due = start + (i as f64 * gap) as u64;
                    let mut now = monotonic_ns();
                    // Two cores carry producer, worker and consumer: sleep rather
                    // than spin while nothing is due, and emit what fell due in
                    // one burst, stamped with the time it is pushed.
                    if now < due {
                        thread::sleep(Duration::from_nanos((due - now).min(50_000)));
                        now = monotonic_ns();
                        if now < due {
                            continue;
                        }
                    }
                    // How late the oldest due event goes out: a burst this
                    // long arrives at once (an overslept timer here, an
                    // interrupt-coalesced NIC on a gateway).
                    late = late.max(now - due);
                    // Emit every event that is due by now (catch up in bursts).
                    while i < total && start + (i as f64 * gap) as u64 <= now {
                        if q.push(replay(&corpus, i, now)).is_err() {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        i += 1;
                    }
                }
                let el = (monotonic_ns() - start) as f64 / 1e9;
                stop.store(true, Ordering::Release);
                (el, late)
            })
            .expect("spawn producer")
    };

    let (swap_tx, swap_rx) = crossbeam_channel::bounded::<ModelSwap>(4);
    let reloader = reload_every.map(|every| {
        let stop = Arc::clone(&stop);
        let (cls, ae) = (s.cls_path.clone(), s.ae_path.clone());
        thread::Builder::new()
            .name("reloader".into())
            .spawn(move || {
                let mut sent = 0u64;
                while !stop.load(Ordering::Acquire) {
                    thread::sleep(every);
                    let load = |p: &PathBuf, kind| {
                        Arc::new(Model::load(p, kind, &DEFAULT_BATCH_SIZES).expect("model"))
                    };
                    let swap =
                        ModelSwap::new(load(&cls, "classifier"), Some(load(&ae, "autoencoder")))
                            .expect("swap");
                    if swap_tx.send(swap).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
            .expect("spawn reloader")
    });
    let mut w = worker(s, tx, cfg, 0);
    let wq = Arc::clone(&q);
    let wstop = Arc::clone(&stop);
    let wt = thread::Builder::new()
        .name("worker".into())
        .spawn(move || {
            pin(1);
            let mut since_clock = 0u32;
            let mut n = 0u64;
            let mut undrained = false;
            let mut swapped = 0u64;
            let (mut first, mut last) = (0u64, 0u64);
            // As the ring loop serves requests: at a regular tick.
            let mut serve = |state: &mut WorkerState| {
                while let Ok(swap) = swap_rx.try_recv() {
                    state.handle_request(Box::new(swap)).expect("swap applied");
                    swapped += 1;
                }
            };
            // The ring loop's tick schedule: the regular tick, plus the
            // pipeline's batch deadline when it comes sooner, and a
            // drained call whenever the queue empties.
            loop {
                if let Some(r) = wq.pop() {
                    if n == 0 {
                        first = monotonic_ns();
                    }
                    w.state.dispatch(&r);
                    n += 1;
                    undrained = true;
                    since_clock += 1;
                    if since_clock >= 256 {
                        since_clock = 0;
                        if w.state.tick_if_due(monotonic_ns()) {
                            serve(&mut w.state);
                        }
                    }
                } else {
                    // As the ring loop: the queue is empty after events.
                    if undrained {
                        undrained = false;
                        w.state.drained();
                        last = monotonic_ns();
                    }
                    if w.state.tick_if_due(monotonic_ns()) {
                        serve(&mut w.state);
                    }
                    if wstop.load(Ordering::Acquire) && wq.is_empty() {
                        break;
                    }
                    // The ring loop sleeps in ppoll when idle; yield so the
                    // consumer sharing this core can run.
                    thread::yield_now();
                }
            }
            // Let the last batch's deadline pass, then publish the counters.
            thread::sleep(Duration::from_millis(2));
            w.state.tick(monotonic_ns());
            (n, last.saturating_sub(first).max(1), w, swapped)
        })
        .expect("spawn worker");
    let (prod_secs, late_ns) = prod.join().unwrap();
    let (n, busy_ns, w, swapped) = wt.join().unwrap();
    let reloads = reloader.map(|r| r.join().unwrap());
    let shed = w.shed.load(Ordering::Relaxed) + dropped.load(Ordering::Relaxed);
    let scored = w.scored.load(Ordering::Relaxed);
    let escalated = w.escalated.load(Ordering::Relaxed);
    let batches = w.batches.load(Ordering::Relaxed).max(1);
    drop(w);
    let (h, _) = cons.join().unwrap();
    if let Some(label) = label {
        let reloads = reloads.map_or(String::new(), |sent| {
            format!(" reloads_sent={sent} swaps_applied={swapped}")
        });
        println!(
            "{label} {rate}{reloads} achieved={:.0} p50_us={:.1} p99_us={:.1} p999_us={:.1} shed={shed} max_us={:.1} rows={} rows_per_batch={:.1} escalated={escalated} worker_events_per_s={:.0} longest_burst_us={:.0}",
            n as f64 / prod_secs,
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.value_at_quantile(0.999) as f64 / 1e3,
            h.max() as f64 / 1e3,
            h.len(),
            scored as f64 / batches as f64,
            n as f64 * 1e9 / busy_ns as f64,
            late_ns as f64 / 1e3,
        );
    }
}

fn main() {
    let secs: f64 = std::env::var("WORKER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let s = setup();
    println!(
        "corpus events={} (simulated mix; replayed with shifted addresses)",
        s.corpus.len()
    );
    // `WORKER_BENCH_ONLY=max` runs the one-core peak alone (for profiling);
    // `components` the component costs alone; `load` the offered loads.
    let only = std::env::var("WORKER_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "components" {
        components(&s);
    }
    if only != "components" && only != "load" {
        // `WORKER_BENCH_MAX_RUNS` repeats the peak measurement (fresh state
        // each run), so a profiler sees mostly the worker.
        let runs: u32 = std::env::var("WORKER_BENCH_MAX_RUNS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        for _ in 0..runs {
            max_throughput(&s, secs, 0);
            // With `--flows-out`: the worker also keeps its per-flow map.
            max_throughput(&s, secs, 65_536);
        }
    }
    if !only.is_empty() && only != "load" {
        return;
    }
    let cfg = s.run_cfg;
    println!(
        "config batch_deadline_us={} max_batch={} escalate_band={:?} emit_floor={} close_on_drain={}",
        cfg.batch_deadline_ns / 1000,
        cfg.max_batch,
        cfg.escalate_band,
        cfg.emit_floor,
        cfg.close_on_drain
    );
    offered_load(&s, 100_000, 0.3, cfg, None); // warm-up
    for rate in [100_000u64, 500_000, 1_000_000, 2_000_000] {
        offered_load(&s, rate, secs, cfg, Some("worker_load"));
    }
    // `--hold-batches`: batches close only when full or at the deadline.
    let held = PipelineConfig {
        close_on_drain: false,
        ..cfg
    };
    for rate in [500_000u64, 1_000_000] {
        offered_load(&s, rate, secs, held, Some("worker_load_hold_batches"));
    }
    // Hot model reload every 250 ms at 1 M events/s offered: compare with
    // `worker_load 1000000` (no event may be lost; p99.9 within 2x).
    offered_load_reloading(
        &s,
        1_000_000,
        secs,
        cfg,
        Some("worker_load_reload"),
        Some(Duration::from_millis(250)),
    );
    // Every row sent to the consumer (emit floor 0), as recording needs.
    let cfg = PipelineConfig {
        emit_floor: 0.0,
        ..cfg
    };
    for rate in [100_000u64, 1_000_000] {
        offered_load(&s, rate, secs, cfg, Some("worker_load_all_rows"));
    }
}
