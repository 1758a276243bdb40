//! Throughput of the alert stage: how many scored rows per second one stage
//! thread absorbs while a spoofed SYN flood (every row an alert-worthy
//! detection of one victim from ever-changing sources) is under way, and
//! while mostly benign traffic is scored. Prints
//! `alert_stage_rows_per_s <n>` (flood case) for scripts to pick up.
//!
//! Run: `cargo bench -p sensor-user --bench alerts`.
#![expect(clippy::print_stdout, reason = "a bench binary reports on stdout")]

use std::{hint::black_box, net::IpAddr, time::Instant};

use sensor::{
    alerts::{AlertSettings, AlertStage, ClockMap, Inventory},
    model::row::{AttackClass, MAX_FEATURES, ModelVersion, ScoredRow},
    sinks::{MemorySink, SinkSet},
};

#[path = "../tests/alerts_util/mod.rs"]
mod alerts_util;

const ROWS: u32 = 2_000_000;

fn rows(class: AttackClass, p: f32) -> Vec<ScoredRow> {
    let cv = ModelVersion::intern("clf-bench");
    let av = ModelVersion::intern("ae-bench");
    (0..ROWS)
        .map(|i| {
            let src =
                IpAddr::V4((0x2000_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761))).into());
            let dst = IpAddr::V4(0x0a01_0203.into());
            let ts = 1_000_000_000 + u64::from(i) * 1_000;
            ScoredRow {
                sport: (i % 60_000) as u16 + 1024,
                scored_ts_ns: 0,
                features: [0.5; MAX_FEATURES],
                n_features: 24,
                packets_per_s: 200_000.0,
                bytes: 60,
                packets: 1,
                classifier_version: cv,
                autoencoder_version: av,
                ..alerts_util::row(class, p, src, dst, 80, ts)
            }
        })
        .collect()
}

fn run(name: &str, input: &[ScoredRow]) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..3 {
        let mem = MemorySink::new();
        let mut stage = AlertStage::new(
            AlertSettings::defaults(),
            Inventory::default(),
            SinkSet::new().with(mem.clone()),
            ClockMap { offset_ns: 0 },
        )
        .expect("stage");
        let t = Instant::now();
        for r in input {
            stage.process(black_box(r));
        }
        let dt = t.elapsed().as_secs_f64();
        black_box(stage.metrics());
        best = best.max(input.len() as f64 / dt);
    }
    println!("{name} {best:.0}");
    best
}

fn main() {
    let flood = rows(AttackClass::Flood, 0.99);
    let rate = run("alert_stage_flood_rows_per_s", &flood);
    let benign = rows(AttackClass::Flood, 0.05);
    run("alert_stage_benign_rows_per_s", &benign);
    println!("alert_stage_rows_per_s {rate:.0}");
}
