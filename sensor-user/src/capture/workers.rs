//! Pinned worker threads, one per ring. A worker owns its ring and all state of
//! the flows hashed to it, so it needs no lock. The event path
//! ([`WorkerState::dispatch`]) decodes in place, updates a pre-sized map and
//! calls the handler: no allocation, lock or syscall per event. The only
//! syscall is one `ppoll` per wake-up when the ring is empty; its timeout
//! (nanosecond resolution) ends at the next tick or at the handler's next
//! deadline, whichever comes first, so a batch waiting for its deadline on an
//! idle ring closes on time rather than at the next millisecond tick.

use std::{
    collections::HashMap,
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use aya::maps::{MapData, RingBuf};
use nix::{
    poll::{PollFd, PollFlags, ppoll},
    sys::time::TimeSpec,
};
use sensor_common::{EventKind, FlowEvent, FlowKey, FlowStats, MAX_WORKERS, clock::monotonic_ns};
use tracing::{debug, warn};

use crate::capture::{collector::FlowOrigin, error::SensorError, live::Published};

/// Each worker's counters as other threads see them, in worker order:
/// published at every regular tick (about 1 ms).
pub(crate) type LiveWorkers = Arc<[Published<WorkerCounters>]>;

/// The seam where scoring plugs in: one handler per worker, called on the
/// worker thread.
pub trait EventHandler: Send + 'static {
    /// Called for every decoded event, on the worker thread. Must not block or allocate per call.
    fn on_event(&mut self, ev: &FlowEvent);
    /// Called instead of [`Self::on_event`] for an event made from a flow
    /// record of the collector, with the exporter and interfaces it came
    /// from; by default the origin is dropped.
    fn on_flow_record(&mut self, ev: &FlowEvent, origin: &FlowOrigin) {
        let _ = origin;
        self.on_event(ev);
    }
    /// Called at least every ~1 ms of wall time (also when idle), for deadlines and idle expiry,
    /// and as soon as possible once [`Self::next_deadline_ns`] has passed.
    fn on_tick(&mut self, now_ns: u64) {
        let _ = now_ns;
    }
    /// The `CLOCK_MONOTONIC` time (ns) at which the handler next needs a tick
    /// sooner than the regular ~1 ms one (e.g. when a micro-batch must
    /// close), or `None`. Asked after every drain, so it must be cheap.
    fn next_deadline_ns(&self) -> Option<u64> {
        None
    }
    /// Called when the worker has emptied its ring after handling at least
    /// one event: a batching handler can close its batch rather than make
    /// the rows wait for more that are not there.
    fn on_drained(&mut self) {}
    /// Called once on the worker thread after the final ring drain, so work
    /// held back for batching is not lost at shutdown.
    fn finish(&mut self) {}
    /// A request for the handler from another thread (a reloaded model),
    /// delivered on the worker thread at a tick, between two events, so the
    /// handler's state needs no lock. Returns what to tell the requester
    /// (`Err` with a reason when the request does not apply).
    fn on_request(&mut self, request: HandlerRequest) -> Result<(), String> {
        let _ = request;
        Err("this worker's handler takes no requests".into())
    }
}

/// A request for a worker's handler; the handler knows the concrete type
/// (capture does not depend on the stages it runs).
pub type HandlerRequest = Box<dyn std::any::Any + Send>;

/// The default handler: does nothing (the worker still keeps flow state and
/// counters).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopHandler;

impl EventHandler for NoopHandler {
    fn on_event(&mut self, _ev: &FlowEvent) {}
}

/// Builds the handler of worker `i`.
pub(crate) type HandlerFactory = dyn Fn(usize) -> Box<dyn EventHandler> + Send + Sync;

/// A factory that gives every worker a [`NoopHandler`].
#[must_use]
pub(crate) fn noop_factory() -> Box<HandlerFactory> {
    Box::new(|_| Box::new(NoopHandler))
}

/// How often the handler's `on_tick` runs.
pub const TICK_NS: u64 = 1_000_000;
/// Timer slack of worker threads (ns). Linux lets a sleeping thread's timer
/// fire up to 50 us late by default; a deadline wait of ~200 us needs better.
const WORKER_TIMER_SLACK_NS: libc::c_ulong = 1_000;
/// Events drained between clock reads while the ring stays busy.
const EVENTS_PER_CLOCK_CHECK: u32 = 256;

/// What a worker knows about one flow, from its events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerFlow {
    /// Events received for this flow.
    pub events: u64,
    pub start: u32,
    pub update: u32,
    pub fin: u32,
    pub rst: u32,
    /// The latest snapshot of the flow's (per-CPU) statistics.
    pub last: FlowStats,
    /// Kernel timestamp of the latest event.
    pub last_ts_ns: u64,
}

impl WorkerFlow {
    fn merge(&mut self, o: &WorkerFlow) {
        self.events += o.events;
        self.start += o.start;
        self.update += o.update;
        self.fin += o.fin;
        self.rst += o.rst;
        if o.last_ts_ns >= self.last_ts_ns {
            self.last = o.last;
            self.last_ts_ns = o.last_ts_ns;
        }
    }
}

/// Hasher for the worker's flow map. `SipHash` (std's default) costs tens of
/// nanoseconds on a 40-byte key; this multiply-xor mix with a fmix64 finish
/// costs a few. Keys are attacker-controlled (spoofable addresses), so the
/// state starts from a per-process random seed: collisions cannot be
/// precomputed offline.
#[derive(Clone, Copy, Debug)]
pub struct FlowHasher(u64);

impl FlowHasher {
    fn mix(&mut self, word: u64) {
        self.0 = sensor_common::hash::mix_word(self.0, word);
    }
}

impl std::hash::Hasher for FlowHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        sensor_common::hash::fmix64(self.0)
    }
}

/// Builds [`FlowHasher`]s from one random seed per map.
#[derive(Clone, Copy, Debug)]
pub struct FlowHashBuilder {
    seed: u64,
}

impl Default for FlowHashBuilder {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // std's RandomState is seeded from the OS once per thread; one
        // SipHash output of it is a good random seed.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5e45_0f10_c0de_0001);
        Self { seed: h.finish() }
    }
}

impl std::hash::BuildHasher for FlowHashBuilder {
    type Hasher = FlowHasher;
    #[inline]
    fn build_hasher(&self) -> FlowHasher {
        FlowHasher(self.seed)
    }
}

/// The worker's flow map.
pub(crate) type FlowMap = HashMap<FlowKey, WorkerFlow, FlowHashBuilder>;

/// Per-worker counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Well-formed events handled.
    pub events: u64,
    pub start: u64,
    pub update: u64,
    pub fin: u64,
    pub rst: u64,
    /// Records that were not an event: wrong size or unknown kind.
    pub decode_errors: u64,
    /// Records not 8-byte aligned, decoded through a copy (never from a
    /// ring, whose records are aligned; only from byte buffers).
    pub unaligned: u64,
    /// Events of flows not tracked because the flow map was full.
    pub untracked: u64,
    /// Flows forgotten to make room (least recently active first).
    pub evicted: u64,
    /// `ppoll` wake-ups (one syscall each).
    pub wakeups: u64,
}

/// Everything one worker owns besides its ring. Also usable without a ring,
/// over bytes from a file or a benchmark, through [`WorkerState::dispatch`]
/// and [`WorkerState::dispatch_stream`].
pub struct WorkerState {
    pub index: usize,
    pub counters: WorkerCounters,
    flows: FlowMap,
    flow_capacity: usize,
    /// Reused by eviction to find the age cutoff without allocating.
    scratch_ts: Vec<u64>,
    handler: Box<dyn EventHandler>,
    /// When the next regular tick is due (`CLOCK_MONOTONIC` ns).
    next_tick_ns: u64,
}

impl WorkerState {
    /// A worker with room for `flow_capacity` flows allocated up front, or,
    /// with `flow_capacity` 0, one that keeps no per-flow map at all (its
    /// only reader is the `--flows-out` report; without it, the map's update
    /// per event is about a tenth of a scoring worker's time for nothing).
    #[must_use]
    pub fn new(index: usize, flow_capacity: usize, handler: Box<dyn EventHandler>) -> Self {
        Self {
            index,
            counters: WorkerCounters::default(),
            flows: HashMap::with_capacity_and_hasher(flow_capacity, FlowHashBuilder::default()),
            flow_capacity,
            scratch_ts: Vec::with_capacity(flow_capacity),
            handler,
            next_tick_ns: monotonic_ns() + TICK_NS,
        }
    }

    /// Decodes one ring record and dispatches it. Bad records are counted,
    /// never fatal.
    ///
    /// Ring records are 8-byte aligned (the ring's record headers are 8
    /// bytes), so the event is read in place, by reference. A misaligned
    /// record of the right size (only from a byte buffer, never from the
    /// ring) is copied out first and counted in
    /// [`WorkerCounters::unaligned`].
    #[inline]
    pub fn dispatch(&mut self, record: &[u8]) {
        match bytemuck::try_from_bytes::<FlowEvent>(record) {
            Ok(ev) => self.dispatch_event(ev),
            Err(bytemuck::PodCastError::TargetAlignmentGreaterAndInputNotAligned) => {
                self.counters.unaligned += 1;
                let ev = bytemuck::pod_read_unaligned::<FlowEvent>(record);
                self.dispatch_event(&ev);
            }
            Err(_) => self.counters.decode_errors += 1,
        }
    }

    #[inline]
    fn dispatch_event(&mut self, ev: &FlowEvent) {
        let Some(kind) = EventKind::from_u32(ev.kind) else {
            self.counters.decode_errors += 1;
            return;
        };
        self.on_event(ev, kind, None);
    }

    /// Dispatches an event the collector made from a flow record, with its
    /// origin. An event of unknown kind is counted as a decode error.
    #[inline]
    pub fn dispatch_record(&mut self, ev: &FlowEvent, origin: &FlowOrigin) {
        match EventKind::from_u32(ev.kind) {
            Some(kind) => self.on_event(ev, kind, Some(origin)),
            None => self.counters.decode_errors += 1,
        }
    }

    /// Dispatches a buffer of back-to-back 128-byte records (a recording or a
    /// benchmark input). A trailing partial record counts as a decode error.
    pub fn dispatch_stream(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(size_of::<FlowEvent>());
        for rec in &mut chunks {
            self.dispatch(rec);
        }
        if !chunks.remainder().is_empty() {
            self.counters.decode_errors += 1;
        }
    }

    #[inline]
    fn on_event(&mut self, ev: &FlowEvent, kind: EventKind, origin: Option<&FlowOrigin>) {
        let c = &mut self.counters;
        c.events += 1;
        *kind_count(kind, [&mut c.start, &mut c.update, &mut c.fin, &mut c.rst]) += 1;
        if self.flow_capacity == 0 {
            self.handle(ev, origin);
            return;
        }
        let len = self.flows.len();
        let slot = if len < self.flow_capacity {
            Some(self.flows.entry(ev.key).or_default())
        } else {
            self.flows.get_mut(&ev.key)
        };
        match slot {
            Some(f) => {
                f.events += 1;
                *kind_count(kind, [&mut f.start, &mut f.update, &mut f.fin, &mut f.rst]) += 1;
                f.last = ev.stats;
                f.last_ts_ns = ev.ts_ns;
            }
            None => self.counters.untracked += 1,
        }
        self.handle(ev, origin);
    }

    #[inline]
    fn handle(&mut self, ev: &FlowEvent, origin: Option<&FlowOrigin>) {
        match origin {
            Some(o) => self.handler.on_flow_record(ev, o),
            None => self.handler.on_event(ev),
        }
    }

    /// Runs the handler's tick.
    pub fn tick(&mut self, now_ns: u64) {
        self.handler.on_tick(now_ns);
    }

    /// Ticks the handler if the regular tick is due or the handler's own
    /// deadline has passed. Returns true when the regular tick ran (the
    /// caller's cue for once-per-tick work such as [`Self::housekeeping`]).
    pub fn tick_if_due(&mut self, now_ns: u64) -> bool {
        if now_ns >= self.next_tick_ns {
            self.tick(now_ns);
            self.next_tick_ns = now_ns + TICK_NS;
            return true;
        }
        if self.handler.next_deadline_ns().is_some_and(|d| now_ns >= d) {
            self.tick(now_ns);
        }
        false
    }

    /// How long an idle worker may sleep from `now_ns`: until the next
    /// regular tick, or the handler's next deadline if that is sooner. A
    /// deadline the handler left in the past after its tick is ignored
    /// until the regular tick, so a handler cannot make the worker spin.
    #[must_use]
    pub fn idle_wait_ns(&self, now_ns: u64) -> u64 {
        let tick = self.next_tick_ns.saturating_sub(now_ns);
        match self.handler.next_deadline_ns() {
            Some(d) if d > now_ns => tick.min(d - now_ns),
            _ => tick,
        }
    }

    /// Gives the handler a request from another thread (see
    /// [`EventHandler::on_request`]); the ring loop calls it at a tick.
    pub fn handle_request(&mut self, request: HandlerRequest) -> Result<(), String> {
        self.handler.on_request(request)
    }

    /// Tells the handler the ring is empty (after a drain that handled events).
    pub fn drained(&mut self) {
        self.handler.on_drained();
    }

    /// Calls the handler's `finish` (after the final drain).
    pub fn finish(&mut self) {
        self.handler.finish();
    }

    /// Keeps the flow map within its pre-sized capacity: once it is ¾ full,
    /// forgets the least recently active flows until it is half full (the
    /// same policy as the kernel's LRU flow table, so under a flood the
    /// worker keeps the flows the table keeps). Called every tick; the
    /// check is O(1) and the O(n) eviction runs only under pressure, so the
    /// cost per new flow stays constant.
    pub(crate) fn housekeeping(&mut self) {
        let len = self.flows.len();
        if self.flow_capacity == 0 || len * 4 < self.flow_capacity * 3 {
            return;
        }
        let remove = len - self.flow_capacity / 2;
        if remove == 0 {
            return;
        }
        self.scratch_ts.clear();
        self.scratch_ts
            .extend(self.flows.values().map(|f| f.last_ts_ns));
        let (_, &mut cutoff, _) = self.scratch_ts.select_nth_unstable(remove - 1);
        self.flows.retain(|_, f| f.last_ts_ns > cutoff);
        let evicted = (len - self.flows.len()) as u64;
        self.counters.evicted += evicted;
        debug!(
            worker = self.index,
            evicted, "flow map full: least recently active flows evicted"
        );
    }

    /// Flow state, for reports.
    #[must_use]
    pub fn flows(&self) -> &FlowMap {
        &self.flows
    }

    /// Consumes the state into its report.
    #[must_use]
    /// The report so far, for outputs written while the run goes on.
    pub(crate) fn report_so_far(&self) -> WorkerReport {
        WorkerReport {
            worker: self.index,
            counters: self.counters,
            flows: self.flows.clone(),
        }
    }

    pub(crate) fn into_report(self) -> WorkerReport {
        WorkerReport {
            worker: self.index,
            counters: self.counters,
            flows: self.flows,
        }
    }
}

/// What a worker hands back when it stops.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkerReport {
    pub worker: usize,
    pub counters: WorkerCounters,
    pub flows: FlowMap,
}

/// Merges the flow state of all workers (each flow normally lives on exactly
/// one; merging keeps the result right if the ring choice ever changed).
#[must_use]
pub(crate) fn merge_worker_flows(reports: &[WorkerReport]) -> FlowMap {
    let mut out: FlowMap = HashMap::with_capacity_and_hasher(
        reports.iter().map(|r| r.flows.len()).sum(),
        FlowHashBuilder::default(),
    );
    for r in reports {
        for (k, f) in &r.flows {
            out.entry(*k).or_default().merge(f);
        }
    }
    out
}

/// The counter of `kind` among a record's per-kind event counters, given in
/// `EventKind` order (start, update, fin, rst).
#[inline]
fn kind_count<T>(kind: EventKind, [start, update, fin, rst]: [&mut T; 4]) -> &mut T {
    match kind {
        EventKind::Start => start,
        EventKind::Update => update,
        EventKind::Fin => fin,
        EventKind::Rst => rst,
    }
}

/// Default worker count: one per available core, at most [`MAX_WORKERS`].
#[must_use]
pub(crate) fn default_workers() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    u32::try_from(cores.min(MAX_WORKERS)).unwrap_or(1)
}

/// A request to a running worker, handled between two drains of its ring
/// (a batch boundary), so the worker's state needs no lock. This is where a
/// later request (a reloaded model for the worker's pipeline) plugs in.
pub(crate) enum WorkerRequest {
    /// Send the report so far (`--stats-out`, `--flows-out` on SIGUSR1).
    Report(crossbeam_channel::Sender<WorkerReport>),
    /// Give the handler this request and answer with the worker's index
    /// and the handler's outcome.
    Handler(
        HandlerRequest,
        crossbeam_channel::Sender<(usize, Result<(), String>)>,
    ),
}

impl std::fmt::Debug for WorkerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Report(_) => f.write_str("Report"),
            Self::Handler(..) => f.write_str("Handler"),
        }
    }
}

/// Requests queued per worker before a sender would block: a request is
/// rare (an operator's signal), so a few are plenty.
const WORKER_REQUESTS: usize = 4;

/// How long [`WorkerPool::reports_so_far`] waits for each worker: a worker
/// answers within one tick (1 ms) unless a long drain delays it.
const REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Running worker threads.
pub(crate) struct WorkerPool {
    stop: Arc<AtomicBool>,
    live: LiveWorkers,
    handles: Vec<JoinHandle<WorkerReport>>,
    requests: Vec<crossbeam_channel::Sender<WorkerRequest>>,
}

impl WorkerPool {
    /// Starts one pinned thread per ring; worker `i` owns `rings[i]`, runs on
    /// core `i % cores` and gets `factory(i)` as its handler.
    ///
    /// # Errors
    /// A thread could not be spawned.
    pub(crate) fn spawn(
        rings: Vec<RingBuf<MapData>>,
        factory: &HandlerFactory,
        flow_capacity_per_worker: usize,
    ) -> Result<Self, SensorError> {
        let sources = rings.into_iter().map(RingSource).collect();
        Self::spawn_sources(
            sources,
            factory,
            flow_capacity_per_worker,
            "sensor-worker",
            0,
        )
    }

    /// Starts one pinned thread per source; worker `i` owns `sources[i]`,
    /// runs on core `(first_handler + i) % cores` and gets
    /// `factory(first_handler + i)` as its handler. Its reports number it `i`.
    ///
    /// # Errors
    /// A thread could not be spawned.
    pub(crate) fn spawn_sources<S: EventSource>(
        sources: Vec<S>,
        factory: &HandlerFactory,
        flow_capacity_per_worker: usize,
        name: &str,
        first_handler: usize,
    ) -> Result<Self, SensorError> {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let mut handles = Vec::with_capacity(sources.len());
        let mut requests = Vec::with_capacity(sources.len());
        let live: LiveWorkers = (0..sources.len())
            .map(|_| Published::default())
            .collect::<Vec<_>>()
            .into();
        for (i, ring) in sources.into_iter().enumerate() {
            let h = first_handler + i;
            let core = (!cores.is_empty()).then(|| cores[h % cores.len()]);
            let state = WorkerState::new(i, flow_capacity_per_worker, factory(h));
            let stop = Arc::clone(&stop);
            let live = Arc::clone(&live);
            let (request_tx, request_rx) = crossbeam_channel::bounded(WORKER_REQUESTS);
            requests.push(request_tx);
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    if let Some(core) = core
                        && !core_affinity::set_for_current(core)
                    {
                        warn!(
                            worker = i,
                            core = core.id,
                            "could not pin worker to its core"
                        );
                    }
                    run_worker(ring, state, &stop, &request_rx, &live[i])
                })
                .map_err(|source| SensorError::System {
                    what: "spawning a worker thread",
                    source,
                })?;
            handles.push(handle);
        }
        Ok(Self {
            stop,
            live,
            handles,
            requests,
        })
    }

    /// The workers' published counters (for the metrics endpoint).
    pub(crate) fn live(&self) -> LiveWorkers {
        Arc::clone(&self.live)
    }

    /// Each worker's report so far, in worker order, without stopping them.
    /// A worker that does not answer within [`REPORT_WAIT`] is left out,
    /// with a warning.
    pub(crate) fn reports_so_far(&self) -> Vec<WorkerReport> {
        let (tx, rx) = crossbeam_channel::bounded(self.requests.len());
        let asked = self
            .requests
            .iter()
            .filter(|r| r.try_send(WorkerRequest::Report(tx.clone())).is_ok())
            .count();
        drop(tx);
        let deadline = std::time::Instant::now() + REPORT_WAIT;
        let mut reports: Vec<WorkerReport> = (0..asked)
            .map_while(|_| rx.recv_deadline(deadline).ok())
            .collect();
        if reports.len() < self.requests.len() {
            warn!(
                answered = reports.len(),
                workers = self.requests.len(),
                "not every worker reported in time; the outputs so far leave the others out"
            );
        }
        reports.sort_by_key(|r| r.worker);
        reports
    }

    /// The workers in the pool (each takes requests).
    pub(crate) fn workers(&self) -> usize {
        self.requests.len()
    }

    /// Gives worker `i` the request `make(i)`, for every worker, and waits
    /// up to `wait` for their answers: `(worker, outcome)` in worker order.
    /// A worker whose queue is full or that does not answer in time is
    /// reported with an `Err`.
    pub(crate) fn request_handlers(
        &self,
        mut make: impl FnMut(usize) -> HandlerRequest,
        wait: std::time::Duration,
    ) -> Vec<(usize, Result<(), String>)> {
        let (tx, rx) = crossbeam_channel::bounded(self.requests.len());
        let mut out: Vec<(usize, Result<(), String>)> = Vec::with_capacity(self.requests.len());
        let mut asked = 0;
        for (i, r) in self.requests.iter().enumerate() {
            match r.try_send(WorkerRequest::Handler(make(i), tx.clone())) {
                Ok(()) => asked += 1,
                Err(_) => out.push((i, Err("its request queue is full or it stopped".into()))),
            }
        }
        drop(tx);
        let deadline = std::time::Instant::now() + wait;
        for _ in 0..asked {
            match rx.recv_deadline(deadline) {
                Ok(answer) => out.push(answer),
                Err(_) => break,
            }
        }
        for i in 0..self.requests.len() {
            if !out.iter().any(|(w, _)| *w == i) {
                out.push((i, Err(format!("no answer within {wait:?}"))));
            }
        }
        out.sort_by_key(|(w, _)| *w);
        out
    }

    /// Asks the workers to stop. Each drains its ring to empty first, so
    /// detach the program before calling this to lose nothing.
    pub(crate) fn stop_and_join(self) -> Vec<WorkerReport> {
        self.stop.store(true, Ordering::Release);
        self.handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.join().unwrap_or_else(|_| {
                    warn!(worker = i, "worker thread panicked; its counts are lost");
                    WorkerReport {
                        worker: i,
                        ..WorkerReport::default()
                    }
                })
            })
            .collect()
    }
}

/// Where a worker's events come from: the XDP program's ring, or the flow
/// collector's channel ([`crate::capture::collector::RecordSource`]).
pub(crate) trait EventSource: Send + 'static {
    /// Dispatches the events waiting now to `state`, ticking it (and
    /// answering `requests`) when due during a long drain
    /// ([`tick_between_events`]); returns how many it handled.
    fn drain(
        &mut self,
        state: &mut WorkerState,
        requests: &crossbeam_channel::Receiver<WorkerRequest>,
    ) -> u32;
    /// Sleeps until events may be waiting, at most `wait_ns`.
    fn wait(&mut self, worker: usize, wait_ns: u64);
}

/// A worker's BPF ring.
pub(crate) struct RingSource(pub(crate) RingBuf<MapData>);

impl EventSource for RingSource {
    fn drain(
        &mut self,
        state: &mut WorkerState,
        requests: &crossbeam_channel::Receiver<WorkerRequest>,
    ) -> u32 {
        let mut drained = 0u32;
        while let Some(item) = self.0.next() {
            state.dispatch(&item);
            drained += 1;
            if drained.is_multiple_of(EVENTS_PER_CLOCK_CHECK) {
                tick_between_events(state, requests);
            }
        }
        drained
    }

    fn wait(&mut self, worker: usize, wait_ns: u64) {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        let timeout = TimeSpec::from_duration(std::time::Duration::from_nanos(wait_ns));
        match ppoll(&mut fds, Some(timeout), None) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                warn!(worker, error = %e, "ppoll on ring failed; sleeping instead");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

/// The worker loop: drain the source, tick the handler, sleep in the
/// source's wait when idle. Returns after a final drain once `stop` is set.
fn run_worker<S: EventSource>(
    mut source: S,
    mut state: WorkerState,
    stop: &AtomicBool,
    requests: &crossbeam_channel::Receiver<WorkerRequest>,
    live: &Published<WorkerCounters>,
) -> WorkerReport {
    set_timer_slack(state.index);
    loop {
        let drained = source.drain(&mut state, requests);
        if drained > 0 {
            state.drained();
        }
        let now = monotonic_ns();
        if state.tick_if_due(now) {
            state.housekeeping();
            live.try_publish(|c| *c = state.counters);
            serve_requests(&mut state, requests);
        }
        if stop.load(Ordering::Acquire) {
            // Final drain: anything written before the stop request is handled.
            while source.drain(&mut state, requests) > 0 {}
            state.finish();
            live.publish(|c| *c = state.counters);
            break;
        }
        if drained == 0 {
            state.counters.wakeups += 1;
            // From the `now` the tick check used: a deadline that passed
            // since then gives a wait already over, not a missed deadline.
            source.wait(state.index, state.idle_wait_ns(now));
        }
    }
    debug!(worker = state.index, counters = ?state.counters, "worker stopped");
    state.into_report()
}

/// Ticks `state` if its tick is due and then answers its requests: drain
/// loops call it between events, so a source that never empties (sustained
/// load) still serves them at the tick.
pub(crate) fn tick_between_events(
    state: &mut WorkerState,
    requests: &crossbeam_channel::Receiver<WorkerRequest>,
) {
    if state.tick_if_due(monotonic_ns()) {
        serve_requests(state, requests);
    }
}

/// Answers the requests queued for this worker.
fn serve_requests(state: &mut WorkerState, requests: &crossbeam_channel::Receiver<WorkerRequest>) {
    while let Ok(request) = requests.try_recv() {
        match request {
            WorkerRequest::Report(reply) => {
                let _ = reply.send(state.report_so_far());
            }
            WorkerRequest::Handler(request, reply) => {
                let outcome = state.handle_request(request);
                let _ = reply.send((state.index, outcome));
            }
        }
    }
}

/// Lowers the calling thread's timer slack to [`WORKER_TIMER_SLACK_NS`] so
/// `ppoll` wakes close to the batch deadline. Failure only costs latency.
fn set_timer_slack(worker: usize) {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects only
    // the calling thread.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, WORKER_TIMER_SLACK_NS, 0, 0, 0) };
    if rc != 0 {
        warn!(
            worker,
            error = %std::io::Error::last_os_error(),
            "could not lower the timer slack; batch deadlines may close up to 50 us late"
        );
    }
}

#[cfg(test)]
mod tests;
