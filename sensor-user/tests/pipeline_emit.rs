//! The emit floor: with the floor `sensor run` derives from the alert
//! thresholds, the rows kept back are exactly rows that could not have
//! alerted, every other row is still sent, and a floor of 0 sends all.

use std::{path::PathBuf, sync::Arc};

use sensor::{
    alerts::{AlertSettings, SensorFile, Thresholds},
    model::row::{AttackClass, N_CLASSES, ScoredRow},
    model::{
        DEFAULT_BATCH_SIZES, Model,
        pipeline::{PipelineConfig, ScoringPipeline},
    },
    run::scoring::{EMIT_FLOOR_FRACTION, emit_floor},
};
use sensor_common::FlowEvent;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn model(file: &str, kind: &'static str) -> Arc<Model> {
    Arc::new(Model::load(&models_dir().join(file), kind, &DEFAULT_BATCH_SIZES).unwrap())
}

fn events() -> Vec<FlowEvent> {
    let bytes = std::fs::read(models_dir().join("fixtures/events.bin")).unwrap();
    bytes
        .chunks_exact(size_of::<FlowEvent>())
        .map(bytemuck::pod_read_unaligned::<FlowEvent>)
        .collect()
}

/// The thresholds `sensor run` resolves from the committed cards.
fn card_thresholds() -> Thresholds {
    let mut file = SensorFile::default();
    file.models.classifier_card = Some(models_dir().join("flow-classifier.card.json"));
    file.models.autoencoder_card = Some(models_dir().join("flow-autoencoder.card.json"));
    AlertSettings::from_file(&file, None).unwrap().thresholds
}

fn run(cfg: PipelineConfig, events: &[FlowEvent]) -> (Vec<ScoredRow>, u64, u64, u64) {
    let (tx, rx) = crossbeam_channel::bounded(events.len() + 1);
    let mut p = ScoringPipeline::new(
        cfg,
        model("flow-classifier.onnx", "classifier"),
        Some(model("flow-autoencoder.onnx", "autoencoder")),
        tx,
    )
    .unwrap();
    for ev in events {
        p.on_event(ev);
    }
    p.flush_now();
    let c = p.counters();
    (
        rx.try_iter().flatten().collect(),
        c.rows_scored,
        c.emitted,
        c.below_floor,
    )
}

fn attack(r: &ScoredRow) -> f32 {
    1.0 - r.class_probs[AttackClass::Benign as usize]
}

#[test]
fn floor_is_a_fraction_of_the_lowest_classifier_threshold() {
    let mut by_class = [f32::INFINITY; N_CLASSES];
    by_class[AttackClass::Flood as usize] = 0.8;
    by_class[AttackClass::Scan as usize] = 0.6;
    by_class[AttackClass::BruteForce as usize] = 0.9;
    by_class[AttackClass::Anomaly as usize] = 0.01;
    let t = Thresholds { by_class };
    assert_eq!(emit_floor(&t), 0.6 * EMIT_FLOOR_FRACTION);
    // No usable classifier threshold: send everything.
    let mut by_class = [f32::INFINITY; N_CLASSES];
    by_class[AttackClass::Anomaly as usize] = 0.01;
    assert_eq!(emit_floor(&Thresholds { by_class }), 0.0);
    by_class[AttackClass::Scan as usize] = 0.0;
    assert_eq!(emit_floor(&Thresholds { by_class }), 0.0);
}

#[test]
fn rows_kept_back_could_not_alert_and_the_rest_are_sent() {
    let events = events();
    let t = card_thresholds();
    let floor = emit_floor(&t);
    assert!(floor > 0.0, "the committed card has a classifier threshold");

    let (all, scored_all, emitted_all, below_all) = run(PipelineConfig::default(), &events);
    assert_eq!(scored_all, events.len() as u64);
    assert_eq!(
        (emitted_all, below_all),
        (scored_all, 0),
        "floor 0 sends all"
    );

    let cfg = PipelineConfig {
        emit_floor: floor,
        ..PipelineConfig::default()
    };
    let (sent, scored, emitted, below) = run(cfg, &events);
    assert_eq!(scored, scored_all);
    assert_eq!(emitted + below, scored);
    assert_eq!(sent.len() as u64, emitted);
    // Both runs score the same rows the same way; the floored run sends the
    // subsequence at or above the floor, plus every escalated row and every
    // row a rule of the stage counts.
    let expected: Vec<&ScoredRow> = all
        .iter()
        .filter(|r| attack(r) >= floor || r.anomaly_score.is_finite() || r.facts.feeds_a_rule())
        .collect();
    assert!(
        all.iter().any(|r| r.facts.closed.is_some()),
        "the fixture closes connections"
    );
    assert_eq!(sent.len(), expected.len());
    for (a, b) in sent.iter().zip(&expected) {
        assert_eq!(a.event_ts_ns, b.event_ts_ns);
        assert_eq!(a.class_probs, b.class_probs);
    }
    // Nothing kept back reaches any classifier threshold or has an
    // autoencoder score.
    let lowest = [
        AttackClass::Flood,
        AttackClass::Scan,
        AttackClass::BruteForce,
    ]
    .map(|c| t.get(c))
    .into_iter()
    .fold(f32::INFINITY, f32::min);
    for r in &all {
        if attack(r) < floor && r.anomaly_score.is_nan() {
            assert!(attack(r) < lowest);
        }
    }
    // The fixture holds both kinds, so the test says something.
    assert!(below > 0 && emitted > 0, "below {below}, emitted {emitted}");
}
