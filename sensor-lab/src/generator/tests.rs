use super::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

#[test]
fn spread_counts_are_exact_and_frames_parse() {
    let flows = mixed_flows(10);
    let f = Frames::spread(A, B, &flows, 1003).unwrap();
    assert_eq!(f.len(), 1003);
    let t = f.truth(f.len());
    assert_eq!(t.flows.len(), 10);
    for (i, spec) in flows.iter().enumerate() {
        let want = 100 + u64::from(i < 3);
        assert_eq!(t.flows[&spec.tuple].packets, want, "{spec:?}");
    }
    assert_eq!(t.packets, 1003);
    assert_eq!(
        t.bytes,
        (0..f.len()).map(|i| f.frame(i).len() as u64).sum::<u64>()
    );
    // Every frame parses back to its flow, with the right VLAN.
    for i in 0..f.len() {
        let p = SlicedPacket::from_ethernet(f.frame(i)).unwrap();
        let spec = f.flows[f.meta[i].flow as usize];
        assert_eq!(p.vlan().is_some(), spec.vlan.is_some());
        let (src, dst): (IpAddr, IpAddr) = match p.net.unwrap() {
            NetSlice::Ipv4(v4) => (
                v4.header().source_addr().into(),
                v4.header().destination_addr().into(),
            ),
            NetSlice::Ipv6(v6) => (
                v6.header().source_addr().into(),
                v6.header().destination_addr().into(),
            ),
            NetSlice::Arp(_) => panic!("arp"),
        };
        assert_eq!((src, dst), (spec.tuple.src, spec.tuple.dst));
        match p.transport.unwrap() {
            TransportSlice::Tcp(t) => {
                assert_eq!(spec.tuple.proto, proto::TCP);
                assert_eq!(
                    (t.source_port(), t.destination_port()),
                    (spec.tuple.sport, spec.tuple.dport)
                );
            }
            TransportSlice::Udp(u) => {
                assert_eq!(spec.tuple.proto, proto::UDP);
                assert_eq!(u.source_port(), spec.tuple.sport);
            }
            TransportSlice::Icmpv4(_) => assert_eq!(spec.tuple.proto, proto::ICMP),
            TransportSlice::Icmpv6(_) => assert_eq!(spec.tuple.proto, proto::ICMPV6),
            other @ TransportSlice::Igmp(_) => panic!("unexpected transport {other:?}"),
        }
    }
}

#[test]
fn tcp_flag_truth_follows_the_cycle() {
    let src = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let dst = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let f = Frames::spread(A, B, &[FlowSpec::tcp(src, dst, 1, 2)], 14).unwrap();
    let t = f.truth(14);
    let ft = t.flows.values().next().unwrap();
    assert_eq!((ft.syn, ft.synack, ft.fin, ft.rst), (2, 2, 2, 2));
    // A prefix's truth counts only the prefix.
    assert_eq!(f.truth(3).packets, 3);
    assert_eq!(f.truth(3).flows.values().next().unwrap().synack, 1);
}

#[test]
fn spoofed_sources_are_distinct() {
    let set: std::collections::HashSet<IpAddr> = (0..20_000).map(spoofed_source).collect();
    assert_eq!(set.len(), 20_000);
}

#[test]
fn scan_and_flood_plans() {
    let src = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let dst = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let s = Frames::port_scan(A, B, src, dst, 1..=100).unwrap();
    assert_eq!(s.truth(s.len()).flows.len(), 100);
    let fl = Frames::syn_flood(A, B, 50, dst, 80, 500).unwrap();
    let t = fl.truth(fl.len());
    assert_eq!(t.sources().len(), 50);
    assert!(t.flows.values().all(|f| f.packets == 10 && f.syn == 10));
    let mut all = s.clone();
    all.extend(&fl);
    assert_eq!(all.truth(all.len()).packets, 600);
}
