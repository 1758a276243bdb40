//! Worker event path throughput: decode + per-flow state + handler call, over
//! an in-memory stream of events (the same code the ring loop runs), without
//! the kernel. Prints ns/event and events/s per worker thread, in thread CPU
//! time (so a busy machine that preempts the bench does not inflate it) and
//! in wall time.
//!
//! `cargo bench -p sensor-user --bench worker_dispatch`
#![expect(clippy::print_stdout, reason = "a bench binary reports on stdout")]

use std::time::Instant;

use sensor::capture::workers::{NoopHandler, WorkerState};
use sensor_common::{EventKind, FlowEvent, FlowKey, clock::clock_ns};

fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn stream(n_events: usize, n_flows: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(n_events * size_of::<FlowEvent>());
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..n_events {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let flow = u32::try_from(x % u64::from(n_flows)).unwrap_or(0);
        let mut ev = FlowEvent {
            key: FlowKey::new(
                FlowKey::map_v4(flow.to_be_bytes()),
                FlowKey::map_v4([10, 0, 0, 1]),
                u16::try_from(flow & 0xffff).unwrap_or(0),
                443,
                6,
            ),
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
        let (mut best_cpu, mut best_wall) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..5 {
            let mut w = WorkerState::new(0, 2 * n_flows as usize, Box::new(NoopHandler));
            let (t, c) = (Instant::now(), thread_cpu_ns());
            w.dispatch_stream(&bytes);
            let cpu = (thread_cpu_ns() - c) as f64 / n_events as f64;
            let wall = t.elapsed().as_nanos() as f64 / n_events as f64;
            assert_eq!(w.counters.events, n_events as u64);
            best_cpu = best_cpu.min(cpu);
            best_wall = best_wall.min(wall);
        }
        println!(
            "worker_dispatch flows={n_flows:>7} events={n_events}: {best_cpu:.1} ns/event CPU \
             ({:.2} M events/s), {best_wall:.1} ns/event wall",
            1e3 / best_cpu
        );
    }
}
