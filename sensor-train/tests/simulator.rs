//! The simulator still produces exactly the committed recorded stream, and
//! its control thread counts every packet into the gateway views.

use sensor_common::FlowKey;
use sensor_train::{
    fixture::{self, FixtureItem},
    sim::{GatewayEpochs, SimItem, fixture_episode},
};

#[test]
fn simulator_regenerates_the_recorded_stream() {
    let recorded = fixture::read_committed();
    let (items, _) = fixture_episode().into_stream(2);
    assert_eq!(items.len(), recorded.len());
    for (i, (a, b)) in items.iter().zip(&recorded).enumerate() {
        match (a, b) {
            (SimItem::Event(a), FixtureItem::Event(b)) => assert_eq!(&a.ev, b, "item {i}"),
            (SimItem::Gateway(a), FixtureItem::Gateway(b)) => assert_eq!(a, b, "item {i}"),
            _ => panic!("item {i}: {a:?} vs {b:?}"),
        }
    }
}

/// The simulated control thread publishes one view per epoch, a little after
/// it ends, counting every packet of every source (Count-Min never under).
#[test]
fn simulated_gateway_epochs_count_every_packet() {
    let t0 = 1_000_000_000_000u64;
    let mut g = GatewayEpochs::new(t0);
    let mut out = Vec::new();
    let a = FlowKey::map_v4([10, 0, 0, 1]);
    let b = FlowKey::map_v4([10, 0, 0, 2]);
    for i in 0..3000u64 {
        let ts = t0 + i * 1_000_000; // 1000 packets per second for 3 s
        g.advance(ts, &mut out);
        g.count(if i % 4 == 0 { &b } else { &a });
    }
    // Epochs 1 and 2 closed; epoch 1's view came out at t0 + 1 s + delay.
    let views: Vec<_> = out
        .iter()
        .map(|it| match it {
            SimItem::Gateway(v) => v.clone(),
            SimItem::Event(_) => unreachable!(),
        })
        .collect();
    assert_eq!(views.len(), 2);
    for (i, v) in views.iter().enumerate() {
        assert_eq!(v.seq, i as u64 + 1);
        assert!(v.src_packets.estimate(&a) >= 750);
        assert!(v.src_packets.estimate(&b) >= 250);
        assert_eq!(v.src_packets.total(), 1000);
        assert!((v.distinct_sources - 2.0).abs() < 0.01);
    }
}
