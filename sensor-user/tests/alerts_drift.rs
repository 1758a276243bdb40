//! Drift monitoring through the alert stage: the workers' counters feed
//! the shared tally, the stage judges the window at its ticks and writes
//! `drift` records that the EVE schema accepts, and its metrics and
//! figures carry the drift figures.

mod alerts_util;

use std::sync::Arc;

use alerts_util::{SEC, parse, stage_tuned};
use sensor::model::{
    ModelCard,
    drift::{DriftCounter, DriftTally},
};

fn card() -> ModelCard {
    ModelCard::from_json(&serde_json::json!({
        "name": "flow-classifier", "version": "9.9.9",
        "schema": {"version": 1, "features": [
            {"name": "flow_bytes", "unit": "log1p(bytes)"},
            {"name": "proto_udp", "unit": "flag"}]},
        "baseline_quantiles": {
            "quantiles": [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99],
            "benign_train": {
                "flow_bytes": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
                "proto_udp": [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]},
            "benign_train_cdf": {"proto_udp": [0.6, 0.6, 0.6, 0.6, 1.0, 1.0, 1.0]}}
    }))
    .unwrap()
}

/// One second of 1 000 rows: `flow_bytes` by the baseline's shares or all
/// above its 0.99 quantile; 60 % TCP or all UDP.
fn second(w: &mut DriftCounter, shifted: bool) {
    let per_bin = [10, 40, 200, 250, 250, 200, 40, 10];
    let mid = [0.5f32, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5];
    let mut i = 0;
    for (n, v) in per_bin.into_iter().zip(mid) {
        for _ in 0..n {
            let bytes = if shifted { 9.0 } else { v };
            let udp = if shifted || i % 5 >= 3 { 1.0 } else { 0.0 };
            w.count(&[bytes, udp], 0.0);
            i += 1;
        }
    }
    w.publish();
}

#[test]
fn shifted_rows_raise_a_drift_record_the_schema_accepts_and_matching_rows_do_not() {
    let (mut stage, mem) = stage_tuned(|s| {
        s.drift.window_s = 10.0;
        s.drift.min_rows = 1000;
    });
    let tally = Arc::new(DriftTally::default());
    stage.set_drift_tally(Arc::clone(&tally));
    let mut w = DriftCounter::new(Arc::clone(&tally), &card());
    let t0 = 100 * SEC;
    stage.tick(t0);
    // 30 s as the baseline: judged from the tenth second on, quiet.
    for t in 1..=30 {
        second(&mut w, false);
        stage.tick(t0 + t * SEC);
    }
    assert!(parse(&mem.take()).is_empty());
    let psi = stage.figures().drift_psi.clone();
    assert_eq!(psi.len(), 2, "{psi:?}");
    assert!(psi.iter().all(|(_, p)| *p < 1e-9), "{psi:?}");
    // 10 s shifted: a start record naming both features, worst first.
    for t in 31..=40 {
        second(&mut w, true);
        stage.tick(t0 + t * SEC);
    }
    let recs = parse(&mem.take());
    assert!(!recs.is_empty());
    let start = &recs[0];
    assert_eq!(start["event_type"], "drift");
    let d = &start["xdp_sensor"]["drift"];
    assert_eq!(d["state"], "start");
    assert_eq!(d["baseline"], "flow-classifier@9.9.9");
    assert_eq!(d["window_s"], 10.0);
    assert_eq!(d["threshold"], 0.2);
    let names = |r: &serde_json::Value| -> Vec<String> {
        r["xdp_sensor"]["drift"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // `flow_bytes` moves most and passes first; `proto_udp` follows, and
    // the changed set writes an update naming both, worst first.
    assert_eq!(names(start), ["flow_bytes"], "{d}");
    let last = recs.last().unwrap();
    assert_eq!(last["xdp_sensor"]["drift"]["state"], "update");
    assert_eq!(names(last), ["flow_bytes", "proto_udp"], "{last}");
    assert!(
        recs.len() <= 3,
        "one record per change of the set: {recs:?}"
    );
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../schemas/eve-alert.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::options().build(&schema).unwrap();
    for r in &recs {
        assert!(validator.is_valid(r), "{r}");
    }
    let mut bad = start.clone();
    bad["xdp_sensor"]["drift"]["state"] = "moved".into();
    assert!(!validator.is_valid(&bad));
    assert_eq!(stage.metrics().drift_events, recs.len() as u64);
    // Back to the baseline: an end record once the shift has left.
    for t in 41..=60 {
        second(&mut w, false);
        stage.tick(t0 + t * SEC);
    }
    let recs = parse(&mem.take());
    let last = recs.last().expect("records after the shift");
    assert_eq!(last["xdp_sensor"]["drift"]["state"], "end");
    assert_eq!(
        last["xdp_sensor"]["drift"]["features"],
        serde_json::json!([])
    );
    for r in &recs {
        assert!(validator.is_valid(r), "{r}");
    }
}

/// A reload applies `[drift]`: turned off, shifted rows raise nothing.
#[test]
fn disabled_drift_writes_nothing() {
    let (mut stage, mem) = stage_tuned(|s| {
        s.drift.window_s = 10.0;
        s.drift.min_rows = 1000;
        s.drift.enabled = false;
    });
    let tally = Arc::new(DriftTally::default());
    stage.set_drift_tally(Arc::clone(&tally));
    let mut w = DriftCounter::new(Arc::clone(&tally), &card());
    for t in 0..=30 {
        second(&mut w, true);
        stage.tick(100 * SEC + t * SEC);
    }
    assert!(parse(&mem.take()).is_empty());
    assert_eq!(stage.metrics().drift_events, 0);
}
