//! Window statistics against brute-force recomputation on seeded random
//! event streams, and `HyperLogLog` error bounds.

use std::collections::{HashMap, HashSet};

use sensor::features::{
    FeatureConfig, FeatureExtractor, N_FEATURES,
    schema::index_of,
    window::{Eds3, HOST_HLL_M, HllPair, WINDOWS_NS, decay_factors},
};
use sensor_common::{FlowEvent, FlowKey, hash::fmix64};
use sensor_train::sim::{EpisodeConfig, Rng, build_episode};

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

/// Damped sums updated incrementally equal the closed form
/// `Σ v_i · exp(-(now - t_i)/τ)` on random streams.
#[test]
fn damped_sums_match_brute_force() {
    for seed in 0..10u64 {
        let mut rng = Rng::new(seed);
        let mut eds = Eds3::default();
        let mut last = 0u64;
        let mut hist: Vec<(u64, f64)> = Vec::new();
        let mut t = 1_000_000_000u64;
        for _ in 0..2000 {
            // Bursty gaps: mostly microseconds, sometimes minutes.
            t += if rng.chance(0.05) {
                rng.range(1, 600_000_000_000)
            } else {
                rng.range(0, 2_000_000)
            };
            let v = rng.uniform(0.0, 1500.0);
            eds.decay(&decay_factors(t - last));
            last = t;
            eds.add(v);
            hist.push((t, v));
            for (w, win) in WINDOWS_NS.iter().enumerate() {
                let brute: f64 = hist
                    .iter()
                    .map(|&(ti, vi)| vi * (-((t - ti) as f64) / *win as f64).exp())
                    .sum();
                assert!(
                    rel_close(eds.sums[w], brute, 1e-9),
                    "seed {seed} window {w}: {} vs {brute}",
                    eds.sums[w]
                );
            }
        }
    }
}

/// The incrementally kept union sum gives exactly the estimate recomputed
/// from the registers, across epoch changes; and the estimate tracks the
/// exact number of distinct items in the current and previous epoch.
#[test]
fn hll_pair_matches_exact_distinct_over_two_epochs() {
    let w = 1_000_000_000u64;
    for seed in 0..8u64 {
        let mut rng = Rng::new(100 + seed);
        let mut h = HllPair::default();
        let mut items: Vec<(u64, u64)> = Vec::new();
        let mut t = 5 * w;
        for _ in 0..1500 {
            t += rng.range(0, 3_000_000);
            if rng.chance(0.002) {
                t += rng.range(0, 3 * w);
            }
            let item = rng.range(0, 40);
            h.advance(t, w);
            h.insert(fmix64(item ^ seed << 32));
            items.push((t, item));
            let inc = h.estimate();
            let full = h.estimate_from_registers();
            assert!(rel_close(inc, full, 1e-12), "{inc} vs {full}");
            let e = t / w;
            let exact: HashSet<u64> = items
                .iter()
                .filter(|(ti, _)| ti / w + 1 >= e)
                .map(|&(_, i)| i)
                .collect();
            let n = exact.len() as f64;
            // Linear counting over 64 registers: a few collisions at most
            // for ≤ 40 items.
            assert!(
                (inc - n).abs() <= 2.0 + 0.2 * n,
                "seed {seed}: estimate {inc}, exact {n}"
            );
        }
    }
}

/// `HyperLogLog` relative error stays within bounds of its standard error
/// (1.04/√m ≈ 13 % for m = 64) across cardinalities.
#[test]
fn hll_error_within_bounds() {
    let se = 1.04 / (HOST_HLL_M as f64).sqrt();
    for &n in &[10u64, 100, 1000, 10_000, 100_000] {
        let mut sq = 0.0;
        let trials = 30;
        for s in 0..trials {
            let mut h = HllPair::default();
            h.advance(0, u64::MAX);
            for i in 0..n {
                h.insert(fmix64(i.wrapping_mul(0x9e37_79b9) ^ (s << 40) ^ n));
            }
            let err = (h.estimate() - n as f64) / n as f64;
            assert!(err.abs() <= 4.0 * se, "n {n} trial {s}: error {err}");
            sq += err * err;
        }
        let rms = (sq / f64::from(trials as u32)).sqrt();
        assert!(
            rms <= 1.5 * se,
            "n {n}: rms error {rms} vs standard error {se}"
        );
    }
}

/// End to end: the extractor's host-window features equal a brute-force
/// recomputation from the raw event stream (new flows per second over the
/// three windows, and the destination's packets per second).
#[test]
fn host_window_features_match_brute_force() {
    let f_new = [
        index_of("src_new_flows_1s").unwrap(),
        index_of("src_new_flows_5m").unwrap(),
        index_of("src_new_flows_1h").unwrap(),
    ];
    let f_dst_pps = index_of("dst_packets_per_s_1s").unwrap();
    let f_ddst = index_of("src_distinct_dst_1h").unwrap();
    for seed in [1u64, 2, 3] {
        let ep = build_episode(&EpisodeConfig {
            seed,
            secs: 60,
            clients: 3,
            attacks: 2,
            intensity: 0.1,
        });
        let (events, _) = ep.into_events(2);
        let events: Vec<FlowEvent> = events.into_iter().map(|e| e.ev).collect();
        let mut fx = FeatureExtractor::new(FeatureConfig::default());
        let mut row = [0f32; N_FEATURES];
        let mut seen: HashSet<FlowKey> = HashSet::new();
        let mut last_packets: HashMap<FlowKey, u64> = HashMap::new();
        let mut new_flows: HashMap<[u8; 16], Vec<u64>> = HashMap::new();
        let mut dsts: HashMap<[u8; 16], Vec<(u64, [u8; 16])>> = HashMap::new();
        let mut pkts_in: HashMap<[u8; 16], Vec<(u64, u64)>> = HashMap::new();
        for (i, ev) in events.iter().enumerate() {
            assert!(fx.process(ev, &mut row).is_some());
            let now = ev.ts_ns;
            if seen.insert(ev.key) {
                new_flows.entry(ev.key.src).or_default().push(now);
                dsts.entry(ev.key.src).or_default().push((now, ev.key.dst));
            }
            let prev = last_packets.insert(ev.key, ev.stats.packets).unwrap_or(0);
            pkts_in
                .entry(ev.key.dst)
                .or_default()
                .push((now, ev.stats.packets - prev));
            // Check a sample of rows (all of them is quadratic).
            if i % 29 != 0 {
                continue;
            }
            for (w, &fi) in f_new.iter().enumerate() {
                let tau = WINDOWS_NS[w] as f64;
                let s: f64 = new_flows[&ev.key.src]
                    .iter()
                    .map(|&t| (-((now - t) as f64) / tau).exp())
                    .sum();
                let want = (s / (tau / 1e9)).ln_1p() as f32;
                assert!(
                    (row[fi] - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "seed {seed} event {i} window {w}: {} vs {want}",
                    row[fi]
                );
            }
            let s: f64 = pkts_in[&ev.key.dst]
                .iter()
                .map(|&(t, p)| p as f64 * (-((now - t) as f64) / 1e9).exp())
                .sum();
            let want = s.ln_1p() as f32;
            assert!(
                (row[f_dst_pps] - want).abs() <= 1e-5 * want.abs().max(1.0),
                "seed {seed} event {i}: dst pps {} vs {want}",
                row[f_dst_pps]
            );
            // Distinct destinations over the 1 h window (two epochs).
            let e = now / WINDOWS_NS[2];
            let exact: HashSet<[u8; 16]> = dsts[&ev.key.src]
                .iter()
                .filter(|(t, _)| t / WINDOWS_NS[2] + 1 >= e)
                .map(|&(_, d)| d)
                .collect();
            let est = f64::from(row[f_ddst]).exp_m1();
            let n = exact.len() as f64;
            let se = 1.04 / (HOST_HLL_M as f64).sqrt();
            assert!(
                (est - n).abs() <= 2.0 + 4.0 * se * n,
                "seed {seed} event {i}: distinct dst {est} vs exact {n}"
            );
        }
    }
}

/// Bounded state: with small caps, the tables stay at their caps and count
/// evictions.
#[test]
fn state_is_bounded_and_evictions_counted() {
    let ep = build_episode(&EpisodeConfig {
        seed: 9,
        secs: 60,
        clients: 4,
        attacks: 2,
        intensity: 0.2,
    });
    let (events, _) = ep.into_events(2);
    let mut fx = FeatureExtractor::new(FeatureConfig {
        max_flows: 64,
        max_hosts: 32,
        ..FeatureConfig::default()
    });
    let mut row = [0f32; N_FEATURES];
    for e in &events {
        let _ = fx.process(&e.ev, &mut row);
        let (f, h) = fx.tracked();
        assert!(f <= 64 && h <= 32);
    }
    let c = fx.counters();
    assert!(c.flows_evicted > 0 && c.hosts_evicted > 0, "{c:?}");
    assert_eq!(c.events, events.len() as u64);
}

/// The gateway features follow the installed view: the source's whole-gateway
/// packet rate (Count-Min estimate over the epoch) and the distinct sources
/// per second, refreshed when a newer view arrives, zero before any view.
#[test]
fn gateway_features_follow_the_kernel_view() {
    use sensor::features::{GatewayView, schema::index_of};
    use std::sync::Arc;
    let gw_pps = index_of("src_packets_per_s_gw").unwrap();
    let gw_src = index_of("gw_distinct_src_per_s").unwrap();
    let mut fx = FeatureExtractor::new(FeatureConfig::default());
    let mut row = [0f32; N_FEATURES];
    let src = FlowKey::map_v4([10, 0, 0, 1]);
    let mut ev = FlowEvent {
        key: FlowKey::new(
            src,
            FlowKey::map_v4([10, 0, 0, 2]),
            40000,
            80,
            sensor_common::ipproto::TCP,
        ),
        ts_ns: 5_000_000_000,
        kind: sensor_common::EventKind::Start as u32,
        ..FlowEvent::default()
    };
    ev.stats.packets = 1;
    ev.stats.bytes = 60;
    ev.stats.first_seen_ns = ev.ts_ns;
    ev.stats.last_seen_ns = ev.ts_ns;
    assert!(fx.process(&ev, &mut row).is_some());
    assert_eq!((row[gw_pps], row[gw_src]), (0.0, 0.0));

    let mut v = GatewayView {
        seq: 1,
        epoch_ns: 2_000_000_000,
        distinct_sources: 300.0,
        ..GatewayView::default()
    };
    v.src_packets.add(&src, 4000);
    fx.set_gateway_view(Arc::new(v.clone()));
    ev.ts_ns += 1000;
    ev.kind = sensor_common::EventKind::Update as u32;
    ev.stats.packets = 2;
    assert!(fx.process(&ev, &mut row).is_some());
    assert_eq!(row[gw_pps], (2000f64).ln_1p() as f32);
    assert_eq!(row[gw_src], (150f64).ln_1p() as f32);

    v.seq = 2;
    v.src_packets.clear();
    v.src_packets.add(&src, 10);
    v.distinct_sources = 2.0;
    fx.set_gateway_view(Arc::new(v));
    ev.ts_ns += 1000;
    ev.stats.packets = 4;
    assert!(fx.process(&ev, &mut row).is_some());
    assert_eq!(row[gw_pps], (5f64).ln_1p() as f32);
    assert_eq!(row[gw_src], (1f64).ln_1p() as f32);
}

/// A TCP direction that carried SYN-ACKs or RSTs but never a bare SYN is a
/// responder, on whichever CPU its snapshots come from; the initiator's
/// direction is not.
/// A feature extractor for tests that look at each event's facts only.
struct Facts {
    fx: FeatureExtractor,
    row: [f32; N_FEATURES],
}

impl Default for Facts {
    fn default() -> Self {
        Self {
            fx: FeatureExtractor::new(FeatureConfig::default()),
            row: [0f32; N_FEATURES],
        }
    }
}

impl Facts {
    /// The facts `e` yields (its kind is one the extractor knows).
    fn of(&mut self, e: &FlowEvent) -> sensor::features::RowFacts {
        self.fx.process(e, &mut self.row).expect("known event kind")
    }
}

#[test]
fn responder_flows_are_recognised_across_cpus() {
    let mut fx = Facts::default();
    let a = FlowKey::map_v4([10, 0, 0, 1]);
    let b = FlowKey::map_v4([10, 0, 0, 2]);
    let key =
        |src, dst, sport, dport| FlowKey::new(src, dst, sport, dport, sensor_common::ipproto::TCP);
    let mut ev = FlowEvent {
        key: key(a, b, 40000, 22),
        ts_ns: 1_000_000_000,
        kind: sensor_common::EventKind::Start as u32,
        tcp_flags: sensor_common::tcp_flags::SYN,
        ..FlowEvent::default()
    };
    ev.stats.packets = 1;
    ev.stats.syn = 1;
    let facts = fx.of(&ev);
    assert!(!facts.responder);

    let mut back = FlowEvent {
        key: key(b, a, 22, 40000),
        ts_ns: 1_000_100_000,
        kind: sensor_common::EventKind::Start as u32,
        tcp_flags: sensor_common::tcp_flags::SYN | sensor_common::tcp_flags::ACK,
        ..FlowEvent::default()
    };
    back.stats.packets = 1;
    back.stats.synack = 1;
    let facts = fx.of(&back);
    assert!(facts.responder);
    // Later packets of the answering side, counted on another CPU: no
    // SYN-ACK in that snapshot, still the responder.
    back.cpu = 1;
    back.stats.synack = 0;
    back.stats.packets = 1;
    back.kind = sensor_common::EventKind::Update as u32;
    back.tcp_flags = sensor_common::tcp_flags::ACK;
    let facts = fx.of(&back);
    assert!(facts.responder);
}

/// A flow's five-tuple: source, destination, ports, protocol.
type Conn = ([u8; 16], [u8; 16], u16, u16, u8);

/// An event of a flow's first packet (`kind` as given).
fn one_packet(conn: Conn, ts_ns: u64, kind: sensor_common::EventKind) -> FlowEvent {
    let (src, dst, sport, dport, proto) = conn;
    let mut e = FlowEvent {
        key: FlowKey::new(src, dst, sport, dport, proto),
        ts_ns,
        kind: kind as u32,
        ..FlowEvent::default()
    };
    e.stats.packets = 1;
    e
}

/// A UDP direction that starts after its reverse direction is a reply (a
/// resolver's answers, a scanned host's UDP replies); the direction that
/// started first is not, even when its later snapshots arrive after the
/// reply's. ICMP replies and errors are responses by type.
#[test]
fn udp_replies_and_icmp_responses_are_responders() {
    use sensor_common::EventKind::{Start, Update};
    use sensor_common::ipproto;
    let mut fx = Facts::default();
    let (client, resolver) = (
        FlowKey::map_v4([10, 0, 0, 1]),
        FlowKey::map_v4([10, 0, 0, 53]),
    );
    let start = |conn, ts_ns| one_packet(conn, ts_ns, Start);
    let query = start((client, resolver, 40000, 53, ipproto::UDP), 1_000_000);
    let facts = fx.of(&query);
    assert!(!facts.responder, "the query starts the conversation");
    let answer = start((resolver, client, 53, 40000, ipproto::UDP), 1_100_000);
    let facts = fx.of(&answer);
    assert!(facts.responder, "the answer follows its query");
    let mut again = query;
    again.kind = Update as u32;
    again.ts_ns = 1_200_000;
    again.stats.packets = 2;
    let facts = fx.of(&again);
    assert!(!facts.responder, "still the initiator after the reply");
    // A UDP probe nobody answered is not a response either.
    let probe = start((client, resolver, 40001, 161, ipproto::UDP), 1_300_000);
    let facts = fx.of(&probe);
    assert!(!facts.responder);
    // ICMP: echo request (8) initiates; echo reply (0) and port unreachable
    // (3) respond; ICMPv6 echo reply (129) responds.
    for (proto, icmp_type, response) in [
        (ipproto::ICMP, 8, false),
        (ipproto::ICMP, 0, true),
        (ipproto::ICMP, 3, true),
        (ipproto::ICMPV6, 128, false),
        (ipproto::ICMPV6, 129, true),
    ] {
        let e = start((resolver, client, icmp_type, 0, proto), 1_400_000);
        let facts = fx.of(&e);
        assert_eq!(facts.responder, response, "{proto}/{icmp_type}");
    }
}

/// A flow that starts after its reverse direction (a SYN-ACK after its SYN,
/// a DNS answer, an echo reply after its request) was asked for by its
/// destination; unsolicited answers (reflection: SYN-ACKs to a host that
/// sent no SYN) are not.
#[test]
fn solicited_flows_follow_their_request() {
    use sensor_common::EventKind::Start;
    use sensor_common::ipproto;
    let mut fx = Facts::default();
    let [a, b, victim] = [1, 2, 3].map(|h| FlowKey::map_v4([10, 0, 0, h]));
    let ev = |conn, ts_ns| one_packet(conn, ts_ns, Start);
    let cases: [(Conn, Conn); 4] = [
        // (request, answer)
        (
            (a, b, 40000, 443, ipproto::TCP),
            (b, a, 443, 40000, ipproto::TCP),
        ),
        (
            (a, b, 40001, 53, ipproto::UDP),
            (b, a, 53, 40001, ipproto::UDP),
        ),
        ((a, b, 8, 0, ipproto::ICMP), (b, a, 0, 0, ipproto::ICMP)),
        (
            (a, b, 128, 0, ipproto::ICMPV6),
            (b, a, 129, 0, ipproto::ICMPV6),
        ),
    ];
    let mut t = 1_000_000;
    for (q, r) in cases {
        t += 1000;
        let facts = fx.of(&ev(q, t));
        assert!(!facts.solicited, "request {q:?}");
        let facts = fx.of(&ev(r, t + 500));
        assert!(facts.solicited, "answer {r:?}");
    }
    // Reflected SYN-ACKs and echo replies the victim never asked for.
    let facts = fx.of(&ev((b, victim, 80, 5555, ipproto::TCP), t + 1000));
    assert!(!facts.solicited);
    let facts = fx.of(&ev((b, victim, 0, 0, ipproto::ICMP), t + 2000));
    assert!(!facts.solicited);
}

/// A client connection is reported once, when it is closed (the second
/// FIN, or an RST), with its bytes each way; it is upload-heavy when it
/// sent much more than it received, which a download and a small exchange
/// are not.
#[test]
fn client_connections_are_reported_once_at_close() {
    use sensor_common::{EventKind, tcp_flags};
    let a = FlowKey::map_v4([10, 0, 0, 1]);
    let b = FlowKey::map_v4([10, 0, 0, 2]);
    let key =
        |src, dst, sport, dport| FlowKey::new(src, dst, sport, dport, sensor_common::ipproto::TCP);
    // One connection from a:sport to b:80 carrying `up` bytes out and
    // `down` back, ended by the client's RST if `rst`, else by FINs from
    // both sides (client first); returns what each event reported.
    let connection = |fx: &mut Facts, sport: u16, up: u64, down: u64, rst: bool| {
        let mut seen = Vec::new();
        let t0 = 1_000_000_000 + u64::from(sport) * 1_000_000;
        let mut syn = FlowEvent {
            key: key(a, b, sport, 80),
            ts_ns: t0,
            kind: EventKind::Start as u32,
            tcp_flags: tcp_flags::SYN,
            ..FlowEvent::default()
        };
        syn.stats.packets = 1;
        syn.stats.bytes = 74;
        syn.stats.syn = 1;
        syn.stats.first_seen_ns = t0;
        syn.stats.last_seen_ns = t0;
        let facts = fx.of(&syn);
        seen.push(facts.closed);
        let mut synack = FlowEvent {
            key: key(b, a, 80, sport),
            ts_ns: t0 + 100_000,
            kind: EventKind::Start as u32,
            tcp_flags: tcp_flags::SYN | tcp_flags::ACK,
            ..FlowEvent::default()
        };
        synack.stats.packets = 1;
        synack.stats.bytes = 74;
        synack.stats.synack = 1;
        let facts = fx.of(&synack);
        seen.push(facts.closed);
        let mut fin = syn;
        fin.ts_ns = t0 + 5_000_000;
        fin.kind = if rst { EventKind::Rst } else { EventKind::Fin } as u32;
        fin.tcp_flags = tcp_flags::ACK | if rst { tcp_flags::RST } else { tcp_flags::FIN };
        fin.stats.packets = 8;
        fin.stats.bytes = up;
        fin.stats.fin = u32::from(!rst);
        fin.stats.rst = u32::from(rst);
        fin.stats.last_seen_ns = fin.ts_ns;
        let facts = fx.of(&fin);
        seen.push(facts.closed);
        // The server's FIN closes it (after its last data).
        let mut sfin = synack;
        sfin.ts_ns = t0 + 6_000_000;
        sfin.kind = EventKind::Fin as u32;
        sfin.tcp_flags = tcp_flags::FIN | tcp_flags::ACK;
        sfin.stats.packets = 4;
        sfin.stats.bytes = down;
        sfin.stats.fin = 1;
        let facts = fx.of(&sfin);
        seen.push(facts.closed);
        // A retransmitted FIN is no second report.
        fin.stats.packets = 9;
        let facts = fx.of(&fin);
        seen.push(facts.closed);
        (t0, seen)
    };
    let mut fx = Facts::default();
    let (t0, seen) = connection(&mut fx, 40000, 3700, 600, false);
    let up = |bytes_in, client_is_src| sensor::features::ClosedConn {
        start_ns: t0,
        bytes_out: 3700,
        bytes_in,
        client_is_src,
    };
    assert_eq!(seen, [None, None, None, Some(up(600, false)), None]);
    assert!(up(600, false).is_upload_heavy());
    // An RST closes at once, with the server's bytes so far.
    let (_, seen) = connection(&mut fx, 40001, 3700, 600, true);
    let mut want = up(74, true);
    want.start_ns = 1_000_000_000 + 40001 * 1_000_000;
    assert_eq!(seen, [None, None, Some(want), None, None]);
    // Download, or a login attempt's few hundred bytes each way: reported
    // at close, not upload-heavy.
    for (sport, up, down) in [(40002, 600, 90_000), (40003, 700, 400), (40004, 3000, 1100)] {
        let (_, seen) = connection(&mut fx, sport, up, down, false);
        let closed: Vec<_> = seen.iter().flatten().collect();
        assert_eq!(closed.len(), 1, "{up} out, {down} in: {seen:?}");
        assert_eq!((closed[0].bytes_out, closed[0].bytes_in), (up, down));
        assert!(!closed[0].is_upload_heavy(), "{up} out, {down} in");
    }
}

/// Found by the `event_decoder` fuzz target (its corpus keeps the input): a
/// client SYN stamped near the end of the clock (a damaged record)
/// overflowed its connection-attempt deadline.
#[test]
fn syn_at_the_end_of_the_clock_does_not_overflow_its_deadline() {
    use sensor_common::{EventKind, FlowStats, ipproto, tcp_flags};
    let mut fx = FeatureExtractor::new(FeatureConfig {
        max_flows: 16,
        max_hosts: 16,
        ..FeatureConfig::default()
    });
    let ts = u64::MAX - 1;
    let key = FlowKey::new(
        FlowKey::map_v4([10, 0, 0, 1]),
        FlowKey::map_v4([10, 0, 0, 2]),
        40000,
        22,
        ipproto::TCP,
    );
    let ev = FlowEvent {
        key,
        stats: FlowStats::fresh(60, tcp_flags::SYN, ts),
        ts_ns: ts,
        kind: EventKind::Start as u32,
        cpu: 0,
        tcp_flags: tcp_flags::SYN,
        vlan_tagged: 0,
        vlan_id: 0,
        pkt_len: 60,
    };
    let mut row = [0.0; N_FEATURES];
    assert!(fx.process(&ev, &mut row).is_some());
    fx.expire(u64::MAX);
    assert_eq!(fx.counters().events, 1);
}

/// Probes no model needs to flag reach the scan rule as discovery probes:
/// stealth probes (a first packet with none of SYN, ACK and RST),
/// half-open probes (SYN, the host's SYN-ACK, the scanner's RST) and ARP
/// requests. A flow met mid-stream and a connection that completed its
/// handshake before its RST are none.
#[test]
fn stealth_half_open_and_arp_probes_are_discovery_probes() {
    use sensor_common::EventKind::{Fin, Rst, Start};
    use sensor_common::ipproto;
    use sensor_common::tcp_flags::{ACK, FIN, PSH, RST, SYN, URG};
    let mut fx = Facts::default();
    let (scanner, host) = (
        FlowKey::map_v4([10, 0, 0, 66]),
        FlowKey::map_v4([10, 0, 0, 2]),
    );
    let tcp = |sport, dport| (scanner, host, sport, dport, ipproto::TCP);
    let first = |conn, ts, kind, flags| {
        let mut e = one_packet(conn, ts, kind);
        e.tcp_flags = flags;
        e.stats.tcp_flags_or = flags;
        e.stats.fin = u32::from(flags & FIN != 0);
        e.stats.bytes = 60;
        e.stats.len_max = 60;
        e
    };
    for (port, kind, flags) in [
        (3390, Fin, FIN),
        (3391, Start, 0),
        (3392, Fin, FIN | PSH | URG),
    ] {
        let e = first(tcp(40_000, port), 1_000_000, kind, flags);
        assert!(fx.of(&e).discovery_probe, "flags {flags:#x}");
    }
    let mid = first(tcp(40_001, 443), 2_000_000, Start, ACK | PSH);
    assert!(!fx.of(&mid).discovery_probe, "a flow met mid-stream");

    // SYN, SYN-ACK, then the scanner's RST (2 packets its way) or its ACK
    // and RST (3 packets: a connection it completed).
    for (sport, packets) in [(41_000, 2), (41_001, 3)] {
        let ts = 3_000_000 + u64::from(sport) * 1_000;
        let mut syn = first(tcp(sport, 80), ts, Start, SYN);
        syn.stats.syn = 1;
        syn.stats.len_max = 74;
        assert!(!fx.of(&syn).discovery_probe, "a SYN is not yet a probe");
        let mut synack = first(
            (host, scanner, 80, sport, ipproto::TCP),
            ts + 100,
            Start,
            SYN | ACK,
        );
        synack.stats.synack = 1;
        fx.of(&synack);
        let mut rst = syn;
        rst.kind = Rst as u32;
        rst.ts_ns = ts + 200;
        rst.tcp_flags = RST | if packets == 3 { ACK } else { 0 };
        rst.stats.packets = packets;
        rst.stats.rst = 1;
        rst.stats.tcp_flags_or = SYN | rst.tcp_flags;
        rst.stats.last_seen_ns = ts + 200;
        assert_eq!(
            fx.of(&rst).discovery_probe,
            packets == 2,
            "{packets} packets before the RST"
        );
    }

    let arp = one_packet(
        (scanner, host, ipproto::ARP_MARK, 0, ipproto::ARP),
        9_000_000,
        Start,
    );
    assert!(fx.of(&arp).discovery_probe, "an ARP request");
}
