//! The Rust feature extraction reproduces the committed training rows
//! bit-for-bit from the committed recorded event sequence, and the simulator
//! still produces exactly that sequence.

use std::path::PathBuf;

use sensor::features::{
    FeatureConfig, FeatureExtractor, N_FEATURES, schema::csv_header, sim::fixture_episode,
    write_csv_row,
};
use sensor_common::FlowEvent;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures")
}

fn read_events() -> Vec<FlowEvent> {
    let p = fixture_dir().join("events.bin");
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let sz = size_of::<FlowEvent>();
    assert_eq!(
        bytes.len() % sz,
        0,
        "{} is not a whole number of events",
        p.display()
    );
    bytes
        .chunks_exact(sz)
        .map(bytemuck::pod_read_unaligned::<FlowEvent>)
        .collect()
}

#[test]
fn extractor_reproduces_committed_rows_bit_for_bit() {
    let events = read_events();
    let p = fixture_dir().join("rows.csv");
    let want = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut lines = want.lines();
    assert_eq!(
        lines.next(),
        Some(csv_header().as_str()),
        "CSV header != schema"
    );
    let mut fx = FeatureExtractor::new(FeatureConfig::default());
    let mut row = [0f32; N_FEATURES];
    let mut n = 0;
    for (i, ev) in events.iter().enumerate() {
        assert!(fx.process(ev, &mut row));
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("rows.csv ends at row {i}"));
        let (features, label) = line.rsplit_once(',').unwrap();
        let mut got = String::new();
        write_csv_row(&mut got, &row, label);
        assert_eq!(got.trim_end(), line, "row {i} differs");
        // And the text parses back to the very same bits.
        for (v, s) in row.iter().zip(features.split(',')) {
            assert_eq!(v.to_bits(), s.parse::<f32>().unwrap().to_bits(), "row {i}");
        }
        n += 1;
    }
    assert!(lines.next().is_none(), "rows.csv has more rows than events");
    assert!(n > 100, "fixture too small: {n} events");
}

#[test]
fn simulator_regenerates_the_recorded_events() {
    let recorded = read_events();
    let (events, _) = fixture_episode().into_events(2);
    assert_eq!(events.len(), recorded.len());
    for (i, (a, b)) in events.iter().zip(&recorded).enumerate() {
        assert_eq!(&a.ev, b, "event {i}");
    }
}
