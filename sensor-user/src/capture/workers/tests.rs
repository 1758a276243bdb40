use super::*;
use std::sync::atomic::AtomicU64;

fn event(i: u32, kind: EventKind) -> FlowEvent {
    let mut ev = FlowEvent::default();
    ev.key.src = FlowKey::map_v4([10, 0, 0, 1]);
    ev.key.dst = FlowKey::map_v4([10, 0, 0, 2]);
    ev.key.sport = u16::try_from(i).unwrap();
    ev.key.dport = 80;
    ev.key.proto = 6;
    ev.kind = kind as u32;
    ev.ts_ns = u64::from(i) + 1;
    ev.stats.packets = 1;
    ev
}

struct Counting(Arc<AtomicU64>);
impl EventHandler for Counting {
    fn on_event(&mut self, _ev: &FlowEvent) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn decodes_counts_and_dispatches() {
    let seen = Arc::new(AtomicU64::new(0));
    let mut w = WorkerState::new(0, 16, Box::new(Counting(Arc::clone(&seen))));
    let mut buf = Vec::new();
    for i in 0..4 {
        buf.extend_from_slice(bytemuck::bytes_of(&event(i, EventKind::Start)));
    }
    buf.extend_from_slice(bytemuck::bytes_of(&event(0, EventKind::Update)));
    buf.extend_from_slice(bytemuck::bytes_of(&event(0, EventKind::Fin)));
    buf.extend_from_slice(bytemuck::bytes_of(&event(1, EventKind::Rst)));
    w.dispatch_stream(&buf);
    assert_eq!(seen.load(Ordering::Relaxed), 7);
    let c = w.counters;
    assert_eq!((c.events, c.start, c.update, c.fin, c.rst), (7, 4, 1, 1, 1));
    assert_eq!(c.decode_errors, 0);
    let f0 = w.flows()[&event(0, EventKind::Start).key];
    assert_eq!((f0.events, f0.start, f0.update, f0.fin), (3, 1, 1, 1));
    assert!(f0.start > 0, "the Start event reached the worker");
    assert_eq!(w.flows().len(), 4);
}

#[test]
fn without_a_flow_map_events_are_counted_and_handled() {
    let seen = Arc::new(AtomicU64::new(0));
    let mut w = WorkerState::new(0, 0, Box::new(Counting(Arc::clone(&seen))));
    for i in 0..100 {
        w.dispatch(bytemuck::bytes_of(&event(i, EventKind::Start)));
    }
    w.dispatch(bytemuck::bytes_of(&event(3, EventKind::Fin)));
    w.housekeeping();
    assert_eq!(seen.load(Ordering::Relaxed), 101);
    let c = w.counters;
    assert_eq!((c.events, c.start, c.fin), (101, 100, 1));
    assert_eq!(
        (c.untracked, c.evicted),
        (0, 0),
        "no map, nothing untracked"
    );
    assert!(w.flows().is_empty());
}

#[test]
fn bad_records_are_counted_not_fatal() {
    let mut w = WorkerState::new(0, 16, Box::new(NoopHandler));
    w.dispatch(&[0u8; 12]);
    let mut bad_kind = event(0, EventKind::Start);
    bad_kind.kind = 99;
    w.dispatch(bytemuck::bytes_of(&bad_kind));
    let mut buf = bytemuck::bytes_of(&event(1, EventKind::Start)).to_vec();
    buf.extend_from_slice(&[1, 2, 3]);
    w.dispatch_stream(&buf);
    assert_eq!(w.counters.decode_errors, 3);
    assert_eq!(w.counters.events, 1);
    // Unaligned input decodes too, through a counted copy.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(bytemuck::bytes_of(&event(2, EventKind::Update)));
    w.dispatch(&shifted[1..]);
    assert_eq!(w.counters.events, 2);
    assert_eq!(w.counters.unaligned, 1);
    assert_eq!(w.counters.decode_errors, 3);
}

#[test]
fn full_flow_map_counts_untracked_and_evicts_least_recent() {
    let mut w = WorkerState::new(0, 8, Box::new(NoopHandler));
    for i in 0..10 {
        w.dispatch(bytemuck::bytes_of(&event(i, EventKind::Start)));
    }
    assert_eq!(w.flows().len(), 8);
    assert_eq!(w.counters.untracked, 2);
    assert_eq!(w.counters.events, 10);
    // Flow 0 becomes the most recently active.
    let mut again = event(0, EventKind::Update);
    again.ts_ns = 1_000;
    w.dispatch(bytemuck::bytes_of(&again));
    w.housekeeping();
    assert_eq!(w.flows().len(), 4, "evicted down to half");
    assert_eq!(w.counters.evicted, 4);
    let kept: Vec<u16> = {
        let mut v: Vec<u16> = w.flows().keys().map(|k| k.sport).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(
        kept,
        vec![0, 5, 6, 7],
        "the most recently active flows stay"
    );
    // Below ¾ nothing happens.
    w.housekeeping();
    assert_eq!(w.flows().len(), 4);
}

#[test]
fn worker_flows_merge_across_workers() {
    let mut a = WorkerState::new(0, 8, Box::new(NoopHandler));
    let mut b = WorkerState::new(1, 8, Box::new(NoopHandler));
    a.dispatch(bytemuck::bytes_of(&event(0, EventKind::Start)));
    b.dispatch(bytemuck::bytes_of(&event(0, EventKind::Update)));
    b.dispatch(bytemuck::bytes_of(&event(1, EventKind::Start)));
    let merged = merge_worker_flows(&[a.into_report(), b.into_report()]);
    let f = merged[&event(0, EventKind::Start).key];
    assert_eq!((f.events, f.start, f.update), (2, 1, 1));
    assert_eq!(merged.len(), 2);
}

#[test]
fn flow_hasher_separates_keys_and_is_seeded() {
    use std::hash::BuildHasher;
    let b = FlowHashBuilder::default();
    let k0 = event(0, EventKind::Start).key;
    let k1 = event(1, EventKind::Start).key;
    assert_eq!(b.hash_one(k0), b.hash_one(k0));
    assert_ne!(b.hash_one(k0), b.hash_one(k1));
    let mut swapped = k0;
    swapped.src = k0.dst;
    swapped.dst = k0.src;
    assert_ne!(b.hash_one(k0), b.hash_one(swapped), "direction matters");
    // Two builders (two workers, two runs) disagree: the seed is random.
    assert_ne!(b.hash_one(k0), FlowHashBuilder::default().hash_one(k0));
    // Buckets spread: 4096 sequential keys fill most of 4096 low-bit buckets.
    let mut seen = std::collections::HashSet::new();
    for i in 0..4096u32 {
        let mut k = k0;
        k.src = FlowKey::map_v4(i.to_be_bytes());
        seen.insert(b.hash_one(k) & 4095);
    }
    assert!(seen.len() > 2400, "{}", seen.len());
}

/// A handler with a pending deadline, recording its ticks.
struct Deadline {
    due: Option<u64>,
    ticks: Arc<AtomicU64>,
    /// Whether a tick at or after `due` clears it.
    honours: bool,
}
impl EventHandler for Deadline {
    fn on_event(&mut self, ev: &FlowEvent) {
        self.due.get_or_insert(ev.ts_ns + 200_000);
    }
    fn on_tick(&mut self, now_ns: u64) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        if self.honours && self.due.is_some_and(|d| now_ns >= d) {
            self.due = None;
        }
    }
    fn next_deadline_ns(&self) -> Option<u64> {
        self.due
    }
}

/// A worker whose handler asks for a tick 200 us after its first event
/// (and, if it `honours` it, forgets the request once served), with the
/// handler's tick count and the start of the worker's current tick period.
fn deadline_worker(honours: bool) -> (WorkerState, Arc<AtomicU64>, u64) {
    let ticks = Arc::new(AtomicU64::new(0));
    let h = Deadline {
        due: None,
        ticks: Arc::clone(&ticks),
        honours,
    };
    let w = WorkerState::new(0, 16, Box::new(h));
    let t0 = w.next_tick_ns - TICK_NS;
    (w, ticks, t0)
}

/// Hands the worker a flow-start event stamped `ts_ns`.
fn dispatch_start(w: &mut WorkerState, ts_ns: u64) {
    let mut ev = event(0, EventKind::Start);
    ev.ts_ns = ts_ns;
    w.dispatch(bytemuck::bytes_of(&ev));
}

#[test]
fn handler_deadline_gets_its_tick_before_the_regular_one() {
    let (mut w, ticks, t0) = deadline_worker(true);
    // Nothing pending: sleep until the regular tick.
    assert_eq!(w.idle_wait_ns(t0), TICK_NS);
    dispatch_start(&mut w, t0 + 100_000);
    // The idle wait ends at the deadline (t0 + 300 us), not the tick.
    assert_eq!(w.idle_wait_ns(t0 + 150_000), 150_000);
    assert!(!w.tick_if_due(t0 + 299_999));
    assert_eq!(ticks.load(Ordering::Relaxed), 0, "not due yet");
    assert!(!w.tick_if_due(t0 + 300_000), "not the regular tick");
    assert_eq!(ticks.load(Ordering::Relaxed), 1, "deadline tick");
    // Deadline served: back to the regular schedule.
    assert_eq!(w.idle_wait_ns(t0 + 300_000), TICK_NS - 300_000);
    assert!(w.tick_if_due(t0 + TICK_NS));
    assert_eq!(ticks.load(Ordering::Relaxed), 2);
    assert_eq!(w.idle_wait_ns(t0 + TICK_NS), TICK_NS);
}

#[test]
fn a_deadline_left_in_the_past_does_not_make_the_worker_spin() {
    let (mut w, ticks, t0) = deadline_worker(false);
    dispatch_start(&mut w, t0);
    w.tick_if_due(t0 + 250_000);
    assert_eq!(ticks.load(Ordering::Relaxed), 1);
    // The handler ignored its deadline: sleep until the regular tick.
    assert_eq!(w.idle_wait_ns(t0 + 250_000), TICK_NS - 250_000);
}

#[test]
fn monotonic_clock_advances() {
    let a = monotonic_ns();
    let b = monotonic_ns();
    assert!(a > 0 && b >= a);
    assert!((1..=MAX_WORKERS as u32).contains(&default_workers()));
}
