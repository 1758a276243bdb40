//! Per-packet cost of the XDP program through `BPF_PROG_TEST_RUN`, next to the
//! do-nothing `sensor_xdp_floor` program measured the same way in the same run.
//!
//! Prints one line per case: `xdp_ns_per_packet <case> <ns> floor=<ns>`.
//! Each figure is the median of `ROUNDS` rounds. Needs root (BPF); without it
//! the bench prints "skipped: needs root" and exits 0 (or fails, as the
//! tests do, under `SENSOR_REQUIRE_ROOT_TESTS=1`).
#![expect(clippy::print_stdout, reason = "a bench binary reports on stdout")]

use std::time::Duration;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, RingBuf},
    programs::Xdp,
};
use etherparse::{PacketBuilder, TcpHeader};
use sensor_common::{MAX_WORKERS, SensorConfig, XDP_PROGRAM_NAME, map_names};

#[path = "../tests/xdp_util/mod.rs"]
mod xdp_util;

const FLOOR: &str = "sensor_xdp_floor";
/// Runs per kernel call for the warm cases.
const REPEAT: u32 = 1_000_000;
/// Distinct sources for the new-flow case (more than the 65 536-entry flow
/// table, so LRU eviction is part of the figure).
const NEW_SOURCES: u32 = 100_000;
/// Rounds per case; the median is reported.
const ROUNDS: usize = 5;
/// Worker rings in use, as on this 2-core machine.
const N_WORKERS: u32 = 2;
const RING_BYTES: u32 = 256 * 1024;

fn main() {
    if !sensor_lab::require_root("xdp bench (BPF_PROG_TEST_RUN)") {
        return;
    }
    // Every run on one CPU, so per-CPU flow slots stay warm between calls.
    let mut set = nix::sched::CpuSet::new();
    set.set(0).expect("cpu 0");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin to cpu 0");

    let mut ebpf = load();
    let udp4 = udp4_frame([10, 0, 0, 1]);
    let udp6 = {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                64,
            )
            .udp(40000, 443);
        let mut v = Vec::new();
        b.write(&mut v, &[0u8; 64]).expect("udp6");
        v
    };
    let mut malformed = udp4.clone();
    malformed.truncate(14 + 10);

    for (case, frame) in [
        ("udp_warm", &udp4),
        ("ipv6_udp_warm", &udp6),
        ("malformed", &malformed),
    ] {
        let sensor = median(|| per_packet_repeat(&ebpf, XDP_PROGRAM_NAME, frame));
        let floor = median(|| per_packet_repeat(&ebpf, FLOOR, frame));
        println!("xdp_ns_per_packet {case} {sensor:.1} floor={floor:.1}");
    }

    // A SYN flood: a new source address, so a new flow, Count-Min cells, HLL
    // register and a Start event, on every packet. `repeat` cannot express
    // this (it replays one frame, so only the first run is new), so each
    // frame runs once (repeat = 1) and the kernel-measured durations are
    // averaged. That per-call figure carries the kernel timer's own overhead,
    // so the floor is measured exactly the same way over the same frames.
    // Rings are drained between batches (outside the timed region), as the
    // workers would, so the figure is the normal export path, not a full ring.
    let frames: Vec<Vec<u8>> = (0..NEW_SOURCES)
        .map(|i| {
            let [_, a, b, c] = i.to_be_bytes();
            tcp_syn_frame([10, a, b, c])
        })
        .collect();
    let sensor = median(|| per_packet_each(&mut ebpf, XDP_PROGRAM_NAME, &frames));
    let floor = median(|| per_packet_each(&mut ebpf, FLOOR, &frames));
    println!("xdp_ns_per_packet tcp_syn_new_source {sensor:.1} floor={floor:.1}");
}

fn load() -> Ebpf {
    let mut ebpf = EbpfLoader::new()
        .load(sensor::capture::XDP_OBJECT)
        .unwrap_or_else(|e| panic!("loading the XDP object: {e}"));
    for name in [XDP_PROGRAM_NAME, FLOOR] {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .expect("program")
            .try_into()
            .expect("xdp");
        prog.load()
            .unwrap_or_else(|e| panic!("verifier rejected {name}: {e}"));
    }
    let mut cfg: Array<_, SensorConfig> =
        Array::try_from(ebpf.map_mut(map_names::SENSOR_CONFIG).expect("config")).expect("array");
    cfg.set(
        0,
        SensorConfig {
            epoch: 0,
            n_workers: N_WORKERS,
            mirror: 0,
            ring_bytes: RING_BYTES,
            sample_shift: 3,
            dst_prefix: sensor_common::sketch::DST_PREFIX_DEFAULT,
        },
        0,
    )
    .expect("write config");
    ebpf
}

fn udp4_frame(src: [u8; 4]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, [10, 0, 0, 2], 64)
        .udp(40000, 443);
    let mut v = Vec::new();
    b.write(&mut v, &[0u8; 64]).expect("udp4");
    v
}

fn tcp_syn_frame(src: [u8; 4]) -> Vec<u8> {
    let mut t = TcpHeader::new(40000, 80, 1, 64240);
    t.syn = true;
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, [10, 255, 0, 1], 64)
        .tcp_header(t);
    let mut v = Vec::new();
    b.write(&mut v, &[]).expect("tcp syn");
    v
}

fn run(ebpf: &Ebpf, prog: &str, frame: &[u8], repeat: u32) -> Duration {
    xdp_util::test_run(ebpf, prog, frame, repeat).duration
}

/// The kernel reports the mean duration of one run when `repeat` > 1.
fn per_packet_repeat(ebpf: &Ebpf, prog: &str, frame: &[u8]) -> f64 {
    run(ebpf, prog, frame, REPEAT).as_nanos() as f64
}

fn per_packet_each(ebpf: &mut Ebpf, prog: &str, frames: &[Vec<u8>]) -> f64 {
    let mut total = Duration::ZERO;
    for batch in frames.chunks(1000) {
        for f in batch {
            total += run(ebpf, prog, f, 1);
        }
        drain_rings(ebpf);
    }
    total.as_nanos() as f64 / frames.len() as f64
}

fn drain_rings(ebpf: &mut Ebpf) {
    for name in map_names::RING_WORKERS.iter().take(MAX_WORKERS) {
        let mut ring = RingBuf::try_from(ebpf.map_mut(name).expect("ring")).expect("ringbuf");
        while ring.next().is_some() {}
    }
}

fn median(mut f: impl FnMut() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..ROUNDS).map(|_| f()).collect();
    v.sort_by(f64::total_cmp);
    v[ROUNDS / 2]
}
