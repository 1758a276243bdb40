//! The Rust feature extraction reproduces the committed training rows
//! bit-for-bit from the committed recorded stream (events and gateway
//! views). That the simulator still produces exactly that stream is
//! sensor-train's `simulator` test.

use sensor::features::{
    FeatureConfig, FeatureExtractor, N_FEATURES,
    schema::{csv_header, index_of},
    write_csv_row,
};
use sensor_train::fixture::{self, FixtureItem};

#[test]
fn extractor_reproduces_committed_rows_bit_for_bit() {
    let items = fixture::read_committed();
    let p = fixture::committed_dir().join("rows.csv");
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
    let mut views = 0;
    let mut gw_nonzero = 0;
    let gw = index_of("src_packets_per_s_gw").unwrap();
    for it in &items {
        let ev = match it {
            FixtureItem::Gateway(g) => {
                fx.set_gateway_view(std::sync::Arc::clone(g));
                views += 1;
                continue;
            }
            FixtureItem::Event(ev) => ev,
        };
        let i = n;
        assert!(fx.process(ev, &mut row).is_some());
        gw_nonzero += usize::from(row[gw] > 0.0);
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
    // The stream really exercises the gateway features.
    assert!(views >= 20, "{views} gateway views");
    assert!(
        gw_nonzero > n / 4,
        "{gw_nonzero} of {n} rows see a gateway rate"
    );
}
