//! Per-packet cost of the XDP program through `BPF_PROG_TEST_RUN`, next to the
//! do-nothing `sensor_xdp_floor` program and, when `cargo xtask bench xdp`
//! built it, the C reference program (`benches/reference/flow.c`), all
//! measured the same way in the same run.
//!
//! The program holds one blocklist entry and one protected victim. The
//! `*_enforcing` cases and the dropped ones run with `--enforce on` (every
//! packet pays both checks); the others with enforcement off, the default.
//! `udp_blocked` comes from a blocklisted source and is dropped before flow
//! work, `tcp_syn_rate_limited` is a SYN to the protected victim over its
//! token bucket, dropped after the accounting.
//!
//! Prints one line per case: `xdp_ns_per_packet <case> <ns> floor=<ns>` and,
//! with the reference, `ratio=<case / reference_c>`, after a line
//! `xdp_ns_per_packet reference_c <ns>`. Each figure is the median of
//! `ROUNDS` rounds; within a round the programs take turns, so a change in the
//! machine's load shifts them all alike. Also prints the instructions the
//! verifier processed (`xdp_verified_insns`), the margin left under its
//! limit of one million.
//!
//! Environment:
//! - `SENSOR_BENCH_REFERENCE_DIR`: a directory with the compiled `flow.o` and
//!   `noop.o` (set by `cargo xtask bench xdp`).
//! - `SENSOR_BENCH_XDP_OBJECT`: measure this XDP object file instead of the
//!   one built into the sensor.
//! - `SENSOR_BENCH_BASELINE_OBJECT`: another build of the sensor's XDP object,
//!   measured alternately with this one (`baseline_<case>` lines), for
//!   before/after comparisons in one sitting.
//!
//! Needs root (BPF); without it the bench prints "skipped: needs root" and
//! exits 0 (or fails, as the tests do, under `SENSOR_REQUIRE_ROOT_TESTS=1`).
#![expect(clippy::print_stdout, reason = "a bench binary reports on stdout")]

use std::{path::Path, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::Xdp,
};
use etherparse::{PacketBuilder, TcpHeader};
use sensor_common::{
    BlockEntry, BlockReason, EnforceMode, MAX_WORKERS, Protection, SensorConfig, XDP_PROGRAM_NAME,
    list_size, map_names,
};

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
/// The source the blocked case sends from (in the blocklist, enforcement on).
const BLOCKED_SOURCE: [u8; 4] = [10, 0, 0, 99];
/// A victim under protection with an empty token bucket: the
/// `tcp_syn_rate_limited` case's SYNs to it are dropped.
const PROTECTED_VICTIM: [u8; 4] = [10, 255, 0, 77];
/// The verifier's limit on processed instructions per program.
const VERIFIER_LIMIT: u32 = 1_000_000;

/// The C reference programs, loaded.
struct Reference {
    flow: Ebpf,
    noop: Ebpf,
}

fn main() {
    if !sensor_lab::require_root("xdp bench (BPF_PROG_TEST_RUN)") {
        return;
    }
    // Every run on one CPU, so per-CPU flow slots stay warm between calls.
    let mut set = nix::sched::CpuSet::new();
    set.set(0).expect("cpu 0");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin to cpu 0");

    let object = |var: &str| {
        std::env::var_os(var).map(|path| {
            std::fs::read(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", Path::new(&path).display()))
        })
    };
    let own = object("SENSOR_BENCH_XDP_OBJECT");
    let mut sensors = vec![(
        "",
        load(own.as_deref().unwrap_or(sensor::capture::XDP_OBJECT)),
    )];
    if let Some(bytes) = object("SENSOR_BENCH_BASELINE_OBJECT") {
        sensors.push(("baseline_", load(&bytes)));
    }
    for (label, ebpf) in &sensors {
        let n = verified_insns(ebpf, XDP_PROGRAM_NAME);
        println!(
            "xdp_verified_insns {label}sensor_xdp {n} margin={}",
            VERIFIER_LIMIT.saturating_sub(n)
        );
    }
    let reference = std::env::var_os("SENSOR_BENCH_REFERENCE_DIR").map(|d| {
        let d = Path::new(&d);
        Reference {
            flow: load_reference(&d.join("flow.o"), "flow"),
            noop: load_reference(&d.join("noop.o"), "noop"),
        }
    });

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
    let blocked = udp4_frame(BLOCKED_SOURCE);
    let rate_limited = tcp_syn_frame([10, 0, 0, 1], PROTECTED_VICTIM);

    // The reference on the same frame as the sensor's warm IPv4 UDP case.
    let reference_ns = reference.as_ref().map(|r| {
        let (flow, noop) = median_pair(|| {
            (
                per_packet_repeat(&r.flow, "flow", &udp4),
                per_packet_repeat(&r.noop, "noop", &udp4),
            )
        });
        println!("xdp_ns_per_packet reference_c {flow:.1} floor={noop:.1}");
        flow
    });
    let ratio =
        |ns: f64| reference_ns.map_or_else(String::new, |r| format!(" ratio={:.2}", ns / r));

    for (case, frame, mode) in [
        ("udp_warm", &udp4, EnforceMode::Off),
        ("ipv6_udp_warm", &udp6, EnforceMode::Off),
        ("malformed", &malformed, EnforceMode::Off),
        ("udp_warm_enforcing", &udp4, EnforceMode::On),
        ("udp_blocked", &blocked, EnforceMode::On),
        ("tcp_syn_rate_limited", &rate_limited, EnforceMode::On),
    ] {
        for (_, e) in &mut sensors {
            set_enforce(e, mode);
        }
        // Sensor builds and the floor take turns within each round.
        let mut rounds: Vec<Vec<f64>> = Vec::new();
        for _ in 0..ROUNDS {
            let mut r: Vec<f64> = sensors
                .iter()
                .map(|(_, e)| per_packet_repeat(e, XDP_PROGRAM_NAME, frame))
                .collect();
            r.push(per_packet_repeat(&sensors[0].1, FLOOR, frame));
            rounds.push(r);
        }
        let floor = median_of(rounds.iter().map(|r| r[sensors.len()]));
        for (i, (label, _)) in sensors.iter().enumerate() {
            let ns = median_of(rounds.iter().map(|r| r[i]));
            println!(
                "xdp_ns_per_packet {label}{case} {ns:.1} floor={floor:.1}{}",
                ratio(ns)
            );
        }
    }

    // A SYN flood: a new source address, so a new flow, Count-Min cells, HLL
    // register and a Start event, on every packet. `repeat` cannot express
    // this (it replays one frame, so only the first run is new), so each
    // frame runs once (repeat = 1) and the kernel-measured durations are
    // averaged. That per-call figure carries the kernel timer's own overhead,
    // so the floor is measured exactly the same way over the same frames.
    // Rings are drained between batches (outside the timed region), as the
    // workers would, so the figure is the normal export path, not a full ring.
    for (_, e) in &mut sensors {
        set_enforce(e, EnforceMode::Off);
    }
    let frames: Vec<Vec<u8>> = (0..NEW_SOURCES)
        .map(|i| {
            let [_, a, b, c] = i.to_be_bytes();
            tcp_syn_frame([10, a, b, c], [10, 255, 0, 1])
        })
        .collect();
    for (label, ebpf) in &mut sensors {
        let sensor = median(|| per_packet_each(ebpf, XDP_PROGRAM_NAME, &frames));
        let floor = median(|| per_packet_each(ebpf, FLOOR, &frames));
        println!(
            "xdp_ns_per_packet {label}tcp_syn_new_source {sensor:.1} floor={floor:.1}{}",
            ratio(sensor)
        );
    }
}

/// Instructions the verifier processed for program `name` of `ebpf`.
fn verified_insns(ebpf: &Ebpf, name: &str) -> u32 {
    let prog: &Xdp = ebpf
        .program(name)
        .expect("program")
        .try_into()
        .expect("xdp");
    prog.info()
        .ok()
        .and_then(|i| i.verified_instruction_count())
        .unwrap_or(0)
}

fn load_reference(path: &Path, prog: &str) -> Ebpf {
    let mut ebpf = EbpfLoader::new()
        .load_file(path)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    let p: &mut Xdp = ebpf
        .program_mut(prog)
        .unwrap_or_else(|| panic!("{} has no program {prog}", path.display()))
        .try_into()
        .expect("xdp");
    p.load()
        .unwrap_or_else(|e| panic!("verifier rejected {}: {e}", path.display()));
    ebpf
}

fn load(object: &[u8]) -> Ebpf {
    let mut ebpf = EbpfLoader::new()
        .load(object)
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
    if let Some(map) = ebpf.map_mut(map_names::BLOCK_V4) {
        let mut block: LpmTrie<_, [u8; 4], BlockEntry> = LpmTrie::try_from(map).expect("lpm trie");
        let entry = BlockEntry {
            expires_ns: 0,
            added_ns: 0,
            reason: BlockReason::Operator as u32,
            _pad: 0,
            note: [0; sensor_common::BLOCK_NOTE_LEN],
        };
        block
            .insert(&Key::new(32, BLOCKED_SOURCE), entry, 0)
            .expect("block entry");
        if let Some(map) = ebpf.map_mut(map_names::LIST_SIZES) {
            let mut sizes: Array<_, u32> = Array::try_from(map).expect("list sizes");
            sizes.set(list_size::BLOCK_V4, 1, 0).expect("list size");
        }
    }
    if let Some(map) = ebpf.map_mut(map_names::PROTECTED) {
        let mut protected: HashMap<_, [u8; 16], Protection> =
            HashMap::try_from(map).expect("hash map");
        let victim = std::net::Ipv4Addr::from(PROTECTED_VICTIM)
            .to_ipv6_mapped()
            .octets();
        protected
            .insert(victim, Protection::new(1, 1, 0), 0)
            .expect("protect");
        let map = ebpf.map_mut(map_names::LIST_SIZES).expect("list sizes");
        let mut sizes: Array<_, u32> = Array::try_from(map).expect("list sizes");
        sizes.set(list_size::PROTECTED, 1, 0).expect("list size");
    }
    set_enforce(&mut ebpf, EnforceMode::On);
    ebpf
}

/// Writes the bench's configuration with enforcement `mode`.
fn set_enforce(ebpf: &mut Ebpf, mode: EnforceMode) {
    let cfg = SensorConfig {
        enforce: mode as u32,
        ..SensorConfig::new(
            N_WORKERS,
            false,
            RING_BYTES,
            3,
            sensor_common::sketch::DST_PREFIX_DEFAULT,
        )
    };
    let map = ebpf.map_mut(map_names::SENSOR_CONFIG).expect("config");
    if let Ok(mut a) = Array::<_, SensorConfig>::try_from(map) {
        a.set(0, cfg, 0).expect("write config");
    } else {
        // A baseline built before the configuration grew (fields are only
        // ever appended): it reads the first 24 bytes.
        let map = ebpf.map_mut(map_names::SENSOR_CONFIG).expect("config");
        let mut a = Array::<_, [u8; 24]>::try_from(map).expect("a config array");
        let mut old = [0u8; 24];
        old.copy_from_slice(&bytemuck::bytes_of(&cfg)[..24]);
        a.set(0, old, 0).expect("write config");
    }
}

fn udp4_frame(src: [u8; 4]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, [10, 0, 0, 2], 64)
        .udp(40000, 443);
    let mut v = Vec::new();
    b.write(&mut v, &[0u8; 64]).expect("udp4");
    v
}

fn tcp_syn_frame(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut t = TcpHeader::new(40000, 80, 1, 64240);
    t.syn = true;
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
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
    median_of((0..ROUNDS).map(|_| f()))
}

/// Medians of both halves of `ROUNDS` pairs measured in turns.
fn median_pair(mut f: impl FnMut() -> (f64, f64)) -> (f64, f64) {
    let v: Vec<(f64, f64)> = (0..ROUNDS).map(|_| f()).collect();
    (
        median_of(v.iter().map(|p| p.0)),
        median_of(v.iter().map(|p| p.1)),
    )
}

fn median_of(it: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = it.collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
