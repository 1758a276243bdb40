//! The committed models load in tract, pass the schema check, and score the
//! recorded fixture rows as ONNX Runtime did at training time (≤ 1e-5), both
//! through the model runner at every planned batch size and through the
//! whole worker pipeline (features → batching → both models → channel).

use std::{path::PathBuf, sync::Arc};

use sensor::{
    features::{FeatureVec, N_FEATURES},
    model::{
        DEFAULT_BATCH_SIZES, Model,
        pipeline::{PipelineConfig, ScoringPipeline},
        row::RowBatch,
    },
};
use sensor_common::FlowEvent;
use sensor_train::fixture::{self, FixtureItem};

const TOL: f32 = 1e-5;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn parse_csv(p: &PathBuf, skip_last: bool) -> Vec<Vec<f32>> {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .skip(1)
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            if skip_last {
                f.pop();
            }
            f.iter().map(|s| s.parse::<f32>().unwrap()).collect()
        })
        .collect()
}

fn fixture() -> (Vec<FeatureVec>, Vec<Vec<f32>>) {
    let rows = parse_csv(&models_dir().join("fixtures/rows.csv"), true)
        .into_iter()
        .map(|r| {
            let mut v = [0f32; N_FEATURES];
            v.copy_from_slice(&r);
            v
        })
        .collect();
    let expected = parse_csv(&models_dir().join("fixtures/expected_scores.csv"), false);
    (rows, expected)
}

fn fixture_items() -> Vec<FixtureItem> {
    fixture::read(&models_dir().join("fixtures")).unwrap_or_else(|e| panic!("{e}"))
}

fn fixture_events() -> Vec<FlowEvent> {
    fixture_items()
        .into_iter()
        .filter_map(|it| match it {
            FixtureItem::Event(e) => Some(e),
            FixtureItem::Gateway(_) => None,
        })
        .collect()
}

fn load() -> (Arc<Model>, Arc<Model>) {
    let c = Model::load(
        &models_dir().join("flow-classifier.onnx"),
        "classifier",
        &DEFAULT_BATCH_SIZES,
    )
    .unwrap_or_else(|e| panic!("classifier: {e:?}"));
    let a = Model::load(
        &models_dir().join("flow-autoencoder.onnx"),
        "autoencoder",
        &DEFAULT_BATCH_SIZES,
    )
    .unwrap_or_else(|e| panic!("autoencoder: {e:?}"));
    (Arc::new(c), Arc::new(a))
}

#[test]
fn tract_scores_match_onnx_runtime_at_every_batch_size() {
    let (cls, ae) = load();
    let (rows, expected) = fixture();
    assert_eq!(rows.len(), expected.len());
    let k = cls.out_width();
    assert_eq!(k, 4);
    // Chunks landing on every planned size (1, 8, 16, 32, 64, 128, 256) and
    // beyond the largest.
    for chunk in [1usize, 5, 8, 12, 30, 50, 64, 100, 200, 256, 1000] {
        let mut cr = cls.runner().unwrap();
        let mut ar = ae.runner().unwrap();
        for (ci, (rs, es)) in rows.chunks(chunk).zip(expected.chunks(chunk)).enumerate() {
            let mut p = vec![0f32; rs.len() * k];
            let mut a = vec![0f32; rs.len()];
            cr.run(rs, &mut p).unwrap();
            ar.run(rs, &mut a).unwrap();
            for (i, e) in es.iter().enumerate() {
                let row = ci * chunk + i;
                for c in 0..k {
                    let d = (p[i * k + c] - e[c]).abs();
                    assert!(
                        d <= TOL,
                        "chunk {chunk} row {row} class {c}: {} vs {}",
                        p[i * k + c],
                        e[c]
                    );
                }
                let d = (a[i] - e[k]).abs();
                assert!(
                    d <= TOL * e[k].abs().max(1.0),
                    "chunk {chunk} row {row}: AE {} vs {}",
                    a[i],
                    e[k]
                );
            }
        }
    }
}

#[test]
fn pipeline_scores_recorded_events_like_training() {
    let (cls, ae) = load();
    let (_, expected) = fixture();
    let items = fixture_items();
    let events = fixture_events();
    let (tx, rx) = crossbeam_channel::bounded(events.len() + 1);
    let cfg = PipelineConfig {
        // Escalate everything, so every row carries both scores.
        escalate_band: (f32::NEG_INFINITY, f32::INFINITY),
        max_batch: 64,
        ..PipelineConfig::default()
    };
    let mut p = ScoringPipeline::new(cfg, cls, Some(ae), tx).unwrap();
    for it in &items {
        match it {
            FixtureItem::Event(ev) => p.on_event(ev),
            FixtureItem::Gateway(g) => p.set_gateway_view(Arc::clone(g)),
        }
    }
    p.flush_now();
    let got: Vec<_> = rx.try_iter().flatten().collect();
    assert_eq!(got.len(), events.len());
    let c = p.counters();
    assert_eq!(c.rows_scored, events.len() as u64);
    assert_eq!(c.escalated, events.len() as u64);
    assert_eq!((c.shed, c.inference_errors), (0, 0));
    for (i, (r, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(r.event_ts_ns, events[i].ts_ns);
        for (c, (got, want)) in r.class_probs.iter().zip(&e[..4]).enumerate() {
            assert!((got - want).abs() <= TOL, "row {i} class {c}");
        }
        assert!(
            (r.anomaly_score - e[4]).abs() <= TOL * e[4].abs().max(1.0),
            "row {i} AE"
        );
    }
}

/// A classifier-only pipeline whose batches close at 8 rows, never by
/// deadline.
fn eight_row_batches(tx: crossbeam_channel::Sender<RowBatch>) -> ScoringPipeline {
    let cfg = PipelineConfig {
        max_batch: 8,
        batch_deadline_ns: u64::MAX,
        ..PipelineConfig::default()
    };
    let (cls, _) = load();
    ScoringPipeline::new(cfg, cls, None, tx).unwrap()
}

#[test]
fn full_channel_sheds_instead_of_blocking() {
    let events = fixture_events();
    // Room for two batches of 8 rows: every later batch is shed whole.
    let (tx, _rx) = crossbeam_channel::bounded(2);
    let mut p = eight_row_batches(tx);
    assert!(events.len() > 16);
    for ev in &events {
        p.on_event(ev);
    }
    p.flush_now();
    let c = p.counters();
    assert_eq!(c.emitted, 16);
    assert_eq!(c.shed, events.len() as u64 - 16);
}

/// Feeds `events` to `p`; returns its (batches, batches closed by deadline,
/// rows scored) counters.
fn batches_after(p: &mut ScoringPipeline, events: &[FlowEvent]) -> (u64, u64, u64) {
    for ev in events {
        p.on_event(ev);
    }
    let c = p.counters();
    (c.batches, c.batches_by_deadline, c.rows_scored)
}

#[test]
fn batches_close_on_deadline_in_events_and_ticks() {
    let (cls, ae) = load();
    let mut events = fixture_events();
    let t0 = 1_000_000_000u64;
    for (i, e) in events.iter_mut().enumerate() {
        e.ts_ns = t0 + i as u64 * 50_000;
    }
    let (tx, rx) = crossbeam_channel::bounded(events.len() + 1);
    let cfg = PipelineConfig {
        batch_deadline_ns: 200_000,
        ..PipelineConfig::default()
    };
    let mut p = ScoringPipeline::new(cfg, cls, Some(ae), tx).unwrap();
    // Events 50 µs apart: the 5th row of a batch sees the 1st waited 200 µs.
    assert_eq!(batches_after(&mut p, &events[..10]), (2, 2, 10));
    // A tick closes a waiting batch only once its deadline has passed.
    p.on_event(&events[10]);
    p.on_tick(events[10].ts_ns + 199_999);
    assert_eq!(p.counters().batches, 2);
    p.on_tick(events[10].ts_ns + 200_000);
    assert_eq!(p.counters().batches, 3);
    // One message per closed batch (of 5, 5 and 1 rows).
    let sizes: Vec<usize> = rx.try_iter().map(|b| b.len()).collect();
    assert_eq!(sizes, [5, 5, 1]);
    // A full batch closes at once, without waiting.
    let (tx, _rx) = crossbeam_channel::bounded(1000);
    let mut p = eight_row_batches(tx);
    assert_eq!(batches_after(&mut p, &events[..16]), (2, 0, 16));
}
