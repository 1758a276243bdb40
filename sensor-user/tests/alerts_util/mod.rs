//! Helpers shared by the alert-stage integration tests: synthetic scored
//! rows, a stage with a fixed clock and an in-memory sink, temp dirs.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use sensor::{
    alerts::{AlertSettings, AlertStage, ClockMap, Inventory},
    features::RowFacts,
    model::row::{AttackClass, Entity, MAX_FEATURES, ModelVersion, N_CLASSES, ScoredRow, Window},
    sinks::{MemorySink, SinkSet},
};

/// 2026-11-22T04:10:00Z when the monotonic clock reads 0.
pub(crate) const CLOCK: ClockMap = ClockMap {
    offset_ns: 1_795_320_600_000_000_000,
};
pub(crate) const SEC: u64 = 1_000_000_000;

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An address written as text or already parsed.
pub(crate) trait Addr {
    fn addr(self) -> IpAddr;
}

impl Addr for IpAddr {
    fn addr(self) -> IpAddr {
        self
    }
}

impl Addr for &str {
    fn addr(self) -> IpAddr {
        ip(self)
    }
}

/// A row scored `p` for `class`, the rest of the mass on benign.
pub(crate) fn row(
    class: AttackClass,
    p: f32,
    src: impl Addr,
    dst: impl Addr,
    dport: u16,
    ts: u64,
) -> ScoredRow {
    let (src, dst) = (src.addr(), dst.addr());
    let mut class_probs = [0.0f32; N_CLASSES];
    class_probs[class as usize] = p;
    class_probs[AttackClass::Benign as usize] = 1.0 - p;
    let mut features = [0.0f32; MAX_FEATURES];
    for (i, f) in features.iter_mut().enumerate().take(8) {
        *f = i as f32 * p;
    }
    ScoredRow {
        origin: None,
        facts: RowFacts {
            victim_pps: 1e6,
            ..RowFacts::default()
        },
        entity: Entity::Flow,
        window: Window::OneSecond,
        src,
        dst,
        sport: 40_000,
        dport,
        proto: 6,
        event_ts_ns: ts,
        scored_ts_ns: ts + 50_000,
        features,
        n_features: 8,
        class_probs,
        anomaly_score: f32::NAN,
        packets_per_s: 100.0,
        bytes: 6000,
        packets: 100,
        classifier_version: ModelVersion::intern("clf-test-1"),
        autoencoder_version: ModelVersion::intern("ae-test-1"),
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty directory unique to this process and call.
pub(crate) fn tmpdir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("sensor-alerts-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub(crate) fn settings() -> AlertSettings {
    let mut s = AlertSettings::defaults();
    s.sensor_name = "gw-test".into();
    s.interface = "veth-test".into();
    // These tests check dedup and correlation row by row; corroboration
    // has its own test.
    s.alerts.corroborate_rows = 1;
    s
}

pub(crate) fn stage_with(
    settings: AlertSettings,
    inventory: Inventory,
) -> (AlertStage, MemorySink) {
    let mem = MemorySink::new();
    let stage =
        AlertStage::new(settings, inventory, SinkSet::new().with(mem.clone()), CLOCK).unwrap();
    (stage, mem)
}

/// A stage on the test [`settings`] as `tune` changes them.
pub(crate) fn stage_tuned(tune: impl FnOnce(&mut AlertSettings)) -> (AlertStage, MemorySink) {
    let mut s = settings();
    tune(&mut s);
    stage_with(s, Inventory::default())
}

/// A stage that opens an alert on a key's `rows`-th detection within the
/// corroboration window, tuned further by `tune`.
pub(crate) fn stage_with_corroboration(
    rows: u32,
    tune: impl FnOnce(&mut AlertSettings),
) -> (AlertStage, MemorySink) {
    stage_tuned(|s| {
        s.alerts.corroborate_rows = rows;
        tune(s);
    })
}

pub(crate) fn stage() -> (AlertStage, MemorySink) {
    stage_with(settings(), Inventory::default())
}

pub(crate) fn parse(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn of_type<'a>(recs: &'a [serde_json::Value], t: &str) -> Vec<&'a serde_json::Value> {
    recs.iter().filter(|r| r["event_type"] == t).collect()
}

/// The length of a JSON array (a record field that must be one).
pub(crate) fn array_len(v: &serde_json::Value) -> usize {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .len()
}

/// Takes every record written so far and keeps those of event type `t`.
pub(crate) fn take_of_type(mem: &MemorySink, t: &str) -> Vec<serde_json::Value> {
    let mut recs = parse(&mem.take());
    recs.retain(|r| r["event_type"] == t);
    recs
}
