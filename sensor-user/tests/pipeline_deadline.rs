//! A batch on an idle ring closes at its deadline: the pipeline reports the
//! deadline to its worker, which sleeps no longer than that and ticks it
//! then, instead of waiting for the next regular (1 ms) tick; and by default
//! a batch closes as soon as the worker has emptied its ring.

use std::{path::PathBuf, sync::Arc};

use sensor::{
    capture::workers::{EventHandler, TICK_NS, WorkerState},
    model::{
        DEFAULT_BATCH_SIZES, Model,
        pipeline::{PipelineConfig, ScoringPipeline},
    },
};
use sensor_common::FlowEvent;
use sensor_common::clock::monotonic_ns;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn model(file: &str, kind: &'static str) -> Arc<Model> {
    Arc::new(Model::load(&models_dir().join(file), kind, &DEFAULT_BATCH_SIZES).unwrap())
}

fn first_event() -> FlowEvent {
    let bytes = std::fs::read(models_dir().join("fixtures/events.bin")).unwrap();
    bytemuck::pod_read_unaligned(&bytes[..size_of::<FlowEvent>()])
}

#[test]
fn pipeline_reports_its_batch_deadline() {
    let (tx, _rx) = crossbeam_channel::bounded(16);
    let cfg = PipelineConfig::default();
    let mut p =
        ScoringPipeline::new(cfg, model("flow-classifier.onnx", "classifier"), None, tx).unwrap();
    assert_eq!(EventHandler::next_deadline_ns(&p), None, "no batch open");
    let mut ev = first_event();
    ev.ts_ns = 5_000_000;
    p.on_event(&ev);
    let mut later = ev;
    later.ts_ns += 50_000;
    p.on_event(&later);
    assert_eq!(
        EventHandler::next_deadline_ns(&p),
        Some(5_000_000 + cfg.batch_deadline_ns),
        "the oldest row sets the deadline"
    );
    p.flush_now();
    assert_eq!(EventHandler::next_deadline_ns(&p), None);
}

#[test]
fn idle_worker_closes_the_batch_at_its_deadline() {
    let (tx, rx) = crossbeam_channel::bounded(16);
    let cfg = PipelineConfig::default();
    let p =
        ScoringPipeline::new(cfg, model("flow-classifier.onnx", "classifier"), None, tx).unwrap();
    let mut w = WorkerState::new(0, 64, Box::new(p));
    let t0 = monotonic_ns();
    let mut ev = first_event();
    ev.ts_ns = t0;
    w.dispatch(bytemuck::bytes_of(&ev));
    assert!(rx.try_recv().is_err(), "the batch waits for its deadline");
    let d = cfg.batch_deadline_ns;
    let wait = w.idle_wait_ns(t0);
    assert!(
        wait <= d && wait < TICK_NS,
        "an idle worker wakes by the deadline ({wait} ns)"
    );
    w.tick_if_due(t0 + d - 1);
    assert!(rx.try_recv().is_err(), "not closed early");
    w.tick_if_due(t0 + d);
    let batch = rx.try_recv().expect("closed at the deadline");
    assert_eq!(batch.len(), 1);
    let row = &batch[0];
    assert_eq!(row.event_ts_ns, t0);
    assert!(row.scored_ts_ns >= t0);
}

#[test]
fn an_emptied_ring_closes_the_batch_unless_batches_are_held() {
    for close_on_drain in [true, false] {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let cfg = PipelineConfig {
            close_on_drain,
            ..PipelineConfig::default()
        };
        let p = ScoringPipeline::new(cfg, model("flow-classifier.onnx", "classifier"), None, tx)
            .unwrap();
        let mut w = WorkerState::new(0, 64, Box::new(p));
        let t0 = monotonic_ns();
        let mut ev = first_event();
        ev.ts_ns = t0;
        w.dispatch(bytemuck::bytes_of(&ev));
        ev.ts_ns = t0 + 1_000;
        w.dispatch(bytemuck::bytes_of(&ev));
        w.drained();
        if close_on_drain {
            let batch = rx.try_recv().expect("closed when the ring emptied");
            assert_eq!(batch.len(), 2, "one batch of both rows");
            assert!(
                w.idle_wait_ns(t0) > cfg.batch_deadline_ns,
                "no batch left open, so no deadline to wake for"
            );
        } else {
            assert!(rx.try_recv().is_err(), "held until its deadline");
            w.tick_if_due(t0 + cfg.batch_deadline_ns);
            assert_eq!(rx.try_recv().expect("closed at the deadline").len(), 2);
        }
    }
}
