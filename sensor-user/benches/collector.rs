//! Throughput of the flow collector on one core: NetFlow v5, v9 and IPFIX
//! datagrams as routers send them (30 records each, the v9 and IPFIX ones
//! after their templates were learnt) decoded in a loop, then decoded and
//! turned into the events the workers score ([`record_stats`],
//! [`record_event`]). Prints `<name> <records per second>` lines, best of
//! three runs, and `collector_decode_records_per_s <n>` (the slowest
//! version) for scripts to pick up.
//!
//! Run: `cargo bench -p sensor-user --bench collector`.
#![expect(clippy::print_stdout, reason = "a bench binary reports on stdout")]

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use sensor::capture::collector::{
    CollectedFlow, DecodedFlow, Decoder, FlowOrigin, record_event, record_stats,
};

/// Records per datagram: a 1500-byte MTU holds about 30 IPv4 v9 records.
const RECORDS: usize = 30;
/// Datagrams decoded per run.
const DATAGRAMS: usize = 200_000;
const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn be16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_be_bytes());
}
fn be32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_be_bytes());
}

/// The IPv4 fields (type, length) of the v9/IPFIX template: 5-tuple,
/// flags, counters, interfaces, first/last sysUpTime or epoch ms.
fn fields(ipfix: bool) -> Vec<(u16, u16)> {
    let (first, last, tlen) = if ipfix { (152, 153, 8) } else { (22, 21, 4) };
    vec![
        (8, 4),
        (12, 4),
        (7, 2),
        (11, 2),
        (4, 1),
        (6, 1),
        (2, 4),
        (1, 4),
        (10, 2),
        (14, 2),
        (first, tlen),
        (last, tlen),
    ]
}

fn record(v: &mut Vec<u8>, i: u32, ipfix: bool) {
    v.extend_from_slice(&(0x0a00_0000 | (i & 0xffff)).to_be_bytes());
    v.extend_from_slice(&[10, 99, 0, 1]);
    be16(v, 40_000 + (i % 20_000) as u16);
    be16(v, 443);
    v.push(6);
    v.push(0x1b);
    be32(v, 10 + i % 7);
    be32(v, 1500 + i % 900);
    be16(v, 3);
    be16(v, 4);
    if ipfix {
        v.extend_from_slice(&(1_700_000_000_000u64 - 5_000).to_be_bytes());
        v.extend_from_slice(&(1_700_000_000_000u64 - 100).to_be_bytes());
    } else {
        be32(v, 95_000);
        be32(v, 99_900);
    }
}

/// A set: id, length, body.
fn set(id: u16, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    be16(&mut v, id);
    be16(&mut v, u16::try_from(body.len() + 4).unwrap());
    v.extend_from_slice(body);
    v
}

/// (template datagram, data datagram) of NetFlow v9 or IPFIX.
fn templated(ipfix: bool) -> (Vec<u8>, Vec<u8>) {
    let mut t = Vec::new();
    be16(&mut t, 256);
    be16(&mut t, u16::try_from(fields(ipfix).len()).unwrap());
    for (ty, len) in fields(ipfix) {
        be16(&mut t, ty);
        be16(&mut t, len);
    }
    let mut d = Vec::new();
    for i in 0..RECORDS as u32 {
        record(&mut d, i, ipfix);
    }
    let message = |sets: &[Vec<u8>]| {
        let body: Vec<u8> = sets.concat();
        let mut v = Vec::new();
        if ipfix {
            be16(&mut v, 10);
            be16(&mut v, u16::try_from(16 + body.len()).unwrap());
            be32(&mut v, 1_700_000_000);
            be32(&mut v, 1);
            be32(&mut v, 0);
        } else {
            be16(&mut v, 9);
            be16(&mut v, u16::try_from(sets.len()).unwrap());
            be32(&mut v, 100_000);
            be32(&mut v, 1_700_000_000);
            be32(&mut v, 1);
            be32(&mut v, 0);
        }
        v.extend_from_slice(&body);
        v
    };
    let tid = if ipfix { 2 } else { 0 };
    (message(&[set(tid, &t)]), message(&[set(256, &d)]))
}

fn v5() -> Vec<u8> {
    let mut v = Vec::new();
    be16(&mut v, 5);
    be16(&mut v, RECORDS as u16);
    be32(&mut v, 100_000);
    be32(&mut v, 1_700_000_000);
    be32(&mut v, 0);
    be32(&mut v, 1);
    be32(&mut v, 0);
    for i in 0..RECORDS as u32 {
        v.extend_from_slice(&(0x0a00_0000 | (i & 0xffff)).to_be_bytes());
        v.extend_from_slice(&[10, 99, 0, 1, 0, 0, 0, 0]);
        be16(&mut v, 3);
        be16(&mut v, 4);
        be32(&mut v, 10);
        be32(&mut v, 1500);
        be32(&mut v, 95_000);
        be32(&mut v, 99_900);
        be16(&mut v, 40_000);
        be16(&mut v, 443);
        v.extend_from_slice(&[0, 0x1b, 6, 0, 0, 0, 0, 0, 24, 24, 0, 0]);
    }
    v
}

/// Best of three runs of `DATAGRAMS` datagrams; with `events`, each record
/// also becomes a worker event.
fn run(name: &str, setup: Option<&[u8]>, data: &[u8], events: bool) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..3 {
        let mut d = Decoder::new();
        let mut out: Vec<DecodedFlow> = Vec::with_capacity(RECORDS);
        if let Some(t) = setup {
            d.decode(EXPORTER, t, &mut out);
        }
        let origin = FlowOrigin {
            exporter: EXPORTER,
            domain: 0,
            version: 9,
            in_if: 0,
            out_if: 0,
        };
        let t = Instant::now();
        let mut n = 0usize;
        for i in 0..DATAGRAMS {
            out.clear();
            d.decode(EXPORTER, black_box(data), &mut out);
            n += out.len();
            if events {
                for f in &out {
                    let c = CollectedFlow {
                        flow: *f,
                        origin,
                        received_ns: 1_000_000_000 + i as u64,
                    };
                    let s = record_stats(f, c.received_ns);
                    black_box(record_event(&c, &s, true));
                }
            }
        }
        let dt = t.elapsed().as_secs_f64();
        assert_eq!(n, DATAGRAMS * RECORDS, "{name}: every record decoded");
        best = best.max(n as f64 / dt);
    }
    println!("{name} {best:.0}");
    best
}

fn main() {
    let v5 = v5();
    let (v9_t, v9_d) = templated(false);
    let (fix_t, fix_d) = templated(true);
    let rates = [
        run("collector_v5_records_per_s", None, &v5, false),
        run("collector_v9_records_per_s", Some(&v9_t), &v9_d, false),
        run("collector_ipfix_records_per_s", Some(&fix_t), &fix_d, false),
    ];
    run(
        "collector_v9_to_events_records_per_s",
        Some(&v9_t),
        &v9_d,
        true,
    );
    let slowest = rates.into_iter().fold(f64::INFINITY, f64::min);
    println!("collector_decode_records_per_s {slowest:.0}");
}
