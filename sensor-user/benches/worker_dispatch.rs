//! Worker event path throughput: decode + per-flow state + handler call, over
//! an in-memory stream of events (the same code the ring loop runs), without
//! the kernel. Prints ns/event and events/s per worker thread.
//!
//! `cargo bench -p sensor-user --bench worker_dispatch`

use std::time::Instant;

use sensor::workers::{NoopHandler, WorkerState};
use sensor_common::{EventKind, FlowEvent, FlowKey};

fn stream(n_events: usize, n_flows: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(n_events * size_of::<FlowEvent>());
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..n_events {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let flow = u32::try_from(x % u64::from(n_flows)).unwrap_or(0);
        let mut ev = FlowEvent {
            key: FlowKey {
                src: FlowKey::map_v4(flow.to_be_bytes()),
                dst: FlowKey::map_v4([10, 0, 0, 1]),
                sport: u16::try_from(flow & 0xffff).unwrap_or(0),
                dport: 443,
                proto: 6,
                _pad: [0; 3],
            },
            kind: if i % 4 == 0 {
                EventKind::Start as u32
            } else {
                EventKind::Update as u32
            },
            ts_ns: i as u64,
            ..FlowEvent::default()
        };
        ev.stats.packets = 1;
        out.extend_from_slice(bytemuck::bytes_of(&ev));
    }
    out
}

fn main() {
    for (n_events, n_flows) in [(2_000_000usize, 1_000u32), (2_000_000, 100_000)] {
        let bytes = stream(n_events, n_flows);
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let mut w = WorkerState::new(0, 2 * n_flows as usize, Box::new(NoopHandler));
            let t = Instant::now();
            w.dispatch_stream(&bytes);
            let ns = t.elapsed().as_nanos() as f64 / n_events as f64;
            assert_eq!(w.counters.events, n_events as u64);
            best = best.min(ns);
        }
        println!(
            "worker_dispatch flows={n_flows:>7} events={n_events}: {best:.1} ns/event, {:.2} M events/s",
            1e3 / best
        );
    }
}
