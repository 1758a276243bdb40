//! The flow collector: NetFlow v5/v9 and IPFIX records from routers, turned
//! into the same [`FlowEvent`]s the XDP program writes to its rings, so the
//! same workers, features, models and alert stage serve them.
//!
//! ```text
//! UDP socket ─► receiver thread: decode (templates per exporter/domain)
//!            ─► channel[worker = hash(flow) % N] (batches of records)
//!            ─► collector workers: accumulate per flow ─► FlowEvent + origin
//!            ─► WorkerState / EventHandler (as a ring worker)
//! ```
//!
//! A record becomes an event as the kernel's flow table would have made
//! one: its counts are added to the flow's totals (per exporter and
//! domain), and the event carries the totals, so the feature extractor's
//! deltas are the record's counts. Exporters count IP bytes; the event
//! adds an Ethernet header per packet ([`ETHERNET_HEADER`]), the frame
//! bytes the XDP program counts and the models were trained on. Per-packet
//! facts a record does not hold are inferred from the OR of its TCP flags:
//! a flow with SYN is a client's (one SYN) unless it also has ACK and
//! looks like the answer (one packet, or the lower port), a SYN-ACK; FIN
//! and RST count one each. Each event carries its [`FlowOrigin`] (exporter,
//! domain, interfaces) to the alert it may raise.

pub mod decode;
mod receiver;
mod source;

use std::net::IpAddr;

use sensor_common::{EventKind, FlowEvent, FlowKey, FlowStats, ipproto, tcp_flags};
use serde::Serialize;

pub use decode::{DecodeCounters, DecodedFlow, Decoder};
pub(crate) use receiver::{Collector, CollectorError};
pub(crate) use source::RecordSource;

/// Bytes of an Ethernet header without VLAN tags, added per packet to an
/// exporter's IP byte count to give the frame bytes the sensor counts.
pub const ETHERNET_HEADER: u64 = 14;

/// Where a flow record came from: the exporter, its observation domain
/// (IPFIX) or source id (v9) or engine (v5), and the interfaces the flow
/// crossed there. Printed in the alerts it contributes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct FlowOrigin {
    /// The exporter's address (the datagram's source).
    pub exporter: IpAddr,
    /// Observation domain, source id or engine type and id.
    pub domain: u32,
    /// 5, 9 or 10 (IPFIX).
    pub version: u16,
    /// SNMP index of the input interface.
    pub in_if: u32,
    /// SNMP index of the output interface.
    pub out_if: u32,
}

/// One decoded record on its way to a collector worker.
#[derive(Clone, Copy, Debug)]
pub struct CollectedFlow {
    pub flow: DecodedFlow,
    pub origin: FlowOrigin,
    /// `CLOCK_MONOTONIC` ns when its datagram arrived.
    pub received_ns: u64,
}

/// The records of one datagram for one worker.
pub type RecordBatch = Vec<CollectedFlow>;

/// Whether a flow record is its connection's initiator, judged from what
/// the record holds (see the module docs). Initiators are handed to the
/// features before the answers in the same datagram, as the packets came.
#[must_use]
pub fn is_initiator(f: &DecodedFlow) -> bool {
    let flags = f.tcp_flags;
    match f.key.proto {
        ipproto::TCP if flags & tcp_flags::SYN != 0 => {
            flags & tcp_flags::ACK == 0 || (f.packets > 1 && f.key.sport > f.key.dport)
        }
        ipproto::TCP => f.key.sport > f.key.dport,
        ipproto::ICMP => matches!(f.key.sport, 8 | 13 | 15 | 17),
        ipproto::ICMPV6 => f.key.sport == 128,
        _ => f.key.sport >= f.key.dport,
    }
}

/// The statistics a record adds to its flow.
#[must_use]
pub fn record_stats(f: &DecodedFlow, received_ns: u64) -> FlowStats {
    let packets = f.packets;
    let bytes = f
        .octets
        .saturating_add(ETHERNET_HEADER.saturating_mul(packets));
    let mean = bytes.checked_div(packets).unwrap_or(0);
    let ms = 1_000_000u64;
    let last = received_ns.saturating_sub(f.end_age_ms.saturating_mul(ms));
    let first = received_ns
        .saturating_sub(f.start_age_ms.saturating_mul(ms))
        .min(last);
    let flags = f.tcp_flags;
    let tcp = f.key.proto == ipproto::TCP;
    let has = |b: u8| u32::from(tcp && flags & b != 0);
    let initiator = is_initiator(f);
    let syn = has(tcp_flags::SYN);
    let mut s = FlowStats::default();
    s.packets = packets;
    s.bytes = bytes;
    s.first_seen_ns = first;
    s.last_seen_ns = last;
    // Every packet at the mean length: a record holds no spread.
    s.len_sq_sum = u64::try_from(u128::from(bytes) * u128::from(mean)).unwrap_or(u64::MAX);
    s.syn = if initiator { syn } else { 0 };
    s.synack = if initiator { 0 } else { syn };
    s.fin = has(tcp_flags::FIN);
    s.rst = has(tcp_flags::RST);
    s.len_min = u16::try_from(mean).unwrap_or(u16::MAX);
    s.len_max = s.len_min;
    s.tcp_flags_or = if tcp { flags } else { 0 };
    s
}

/// The event a record makes for a flow whose totals (this record included)
/// are `totals`; `new` when the record started the flow.
#[must_use]
pub fn record_event(c: &CollectedFlow, totals: &FlowStats, new: bool) -> FlowEvent {
    let f = &c.flow;
    let flags = if f.key.proto == ipproto::TCP {
        f.tcp_flags
    } else {
        0
    };
    let kind = if flags & tcp_flags::RST != 0 {
        EventKind::Rst
    } else if flags & tcp_flags::FIN != 0 {
        EventKind::Fin
    } else if new {
        EventKind::Start
    } else {
        EventKind::Update
    };
    // The packet behind a new flow's event is its first: a SYN for a
    // client, a SYN-ACK for its answer.
    let trigger = if new && flags & tcp_flags::SYN != 0 {
        if is_initiator(f) {
            tcp_flags::SYN
        } else {
            tcp_flags::SYN | tcp_flags::ACK
        }
    } else {
        flags
    };
    let pkt_len = totals.bytes.checked_div(totals.packets).unwrap_or(0);
    let mut ev: FlowEvent = bytemuck::Zeroable::zeroed();
    ev.key = f.key;
    ev.stats = *totals;
    ev.ts_ns = c.received_ns;
    ev.kind = kind as u32;
    ev.cpu = origin_tag(&c.origin);
    ev.tcp_flags = trigger;
    ev.pkt_len = u32::try_from(pkt_len).unwrap_or(u32::MAX);
    ev
}

/// The `cpu` of a collected event: one value per exporter and domain, so
/// the feature extractor keeps each exporter's totals of a flow apart, as
/// it keeps each CPU's (the same flow seen by two routers is counted at
/// both).
#[must_use]
pub fn origin_tag(o: &FlowOrigin) -> u32 {
    let addr = match o.exporter {
        IpAddr::V4(a) => FlowKey::map_v4(a.octets()),
        IpAddr::V6(a) => a.octets(),
    };
    let h = sensor_common::hash::hash_addr(&addr) ^ u64::from(o.domain).rotate_left(17);
    (sensor_common::hash::fmix64(h) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::capture::workers::{EventHandler, WorkerState};

    /// Keeps every event with its origin.
    struct Keep(Arc<Mutex<Vec<(FlowEvent, FlowOrigin)>>>);

    impl EventHandler for Keep {
        fn on_event(&mut self, _ev: &FlowEvent) {
            panic!("a collected record arrived without its origin");
        }
        fn on_flow_record(&mut self, ev: &FlowEvent, origin: &FlowOrigin) {
            self.0.lock().unwrap().push((*ev, *origin));
        }
    }

    fn origin(exporter: &str) -> FlowOrigin {
        FlowOrigin {
            exporter: exporter.parse().unwrap(),
            domain: 1,
            version: 9,
            in_if: 2,
            out_if: 3,
        }
    }

    fn tcp(sport: u16, dport: u16, flags: u8, packets: u64, octets: u64) -> DecodedFlow {
        DecodedFlow {
            key: FlowKey::new(
                FlowKey::map_v4([10, 0, 0, 1]),
                FlowKey::map_v4([10, 0, 0, 2]),
                sport,
                dport,
                ipproto::TCP,
            ),
            packets,
            octets,
            tcp_flags: flags,
            start_age_ms: 2_000,
            end_age_ms: 500,
            in_if: 2,
            out_if: 3,
            sampling: 1,
        }
    }

    fn collected(flow: DecodedFlow, o: FlowOrigin, at: u64) -> CollectedFlow {
        CollectedFlow {
            flow,
            origin: o,
            received_ns: at,
        }
    }

    #[test]
    fn records_become_events_with_running_totals_per_exporter() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut state = WorkerState::new(0, 64, Box::new(Keep(Arc::clone(&seen))));
        let (tx, rx) = crossbeam_channel::bounded(4);
        drop(tx);
        let mut src = RecordSource::new(rx, 1024);
        let s = 10_000_000_000u64;
        let a = origin("192.0.2.1");
        let b = origin("192.0.2.2");
        let syn_ack_fin = tcp_flags::SYN | tcp_flags::ACK | tcp_flags::FIN;
        // The answer comes first in the datagram; the client is handed on first.
        let batch = [
            collected(tcp(22, 40_000, syn_ack_fin, 4, 400), a, s),
            collected(tcp(40_000, 22, syn_ack_fin, 5, 300), a, s),
        ];
        assert_eq!(src.handle(&batch, &mut state), 2);
        // A later record of the client's flow from the same exporter, and one
        // from another exporter.
        src.handle(
            &[collected(tcp(40_000, 22, tcp_flags::ACK, 2, 80), a, s + 1)],
            &mut state,
        );
        src.handle(
            &[collected(tcp(40_000, 22, tcp_flags::ACK, 7, 700), b, s + 2)],
            &mut state,
        );
        let ev = seen.lock().unwrap().clone();
        assert_eq!(ev.len(), 4);
        let (client, o) = ev[0];
        assert_eq!(o, a);
        assert_eq!(client.key.sport, 40_000, "the initiator goes first");
        assert_eq!(client.kind, EventKind::Fin as u32);
        assert_eq!(
            client.tcp_flags,
            tcp_flags::SYN,
            "a new client flow starts with its SYN"
        );
        let st = client.stats;
        assert_eq!((st.packets, st.bytes), (5, 300 + 5 * ETHERNET_HEADER));
        assert_eq!((st.syn, st.synack, st.fin), (1, 0, 1));
        assert_eq!(st.first_seen_ns, s - 2_000_000_000);
        assert_eq!(st.last_seen_ns, s - 500_000_000);
        let server = ev[1].0;
        assert_eq!(server.tcp_flags, tcp_flags::SYN | tcp_flags::ACK);
        assert_eq!((server.stats.syn, server.stats.synack), (0, 1));
        // Totals run on per exporter: 5 + 2 packets at `a`, 7 at `b`.
        assert_eq!(ev[2].0.kind, EventKind::Update as u32);
        assert_eq!(ev[2].0.stats.packets, 7);
        assert_eq!(ev[2].0.stats.bytes, 300 + 80 + 7 * ETHERNET_HEADER);
        assert_eq!(ev[3].0.kind, EventKind::Start as u32);
        assert_eq!(ev[3].0.stats.packets, 7);
        assert_ne!(
            ev[2].0.cpu, ev[3].0.cpu,
            "exporters keep their totals apart"
        );
        assert_eq!(state.counters.events, 4);
    }

    #[test]
    fn initiators_are_told_from_flags_ports_and_icmp_types() {
        assert!(is_initiator(&tcp(40_000, 80, tcp_flags::SYN, 1, 40)));
        // A lone SYN-ACK answers.
        assert!(!is_initiator(&tcp(
            80,
            40_000,
            tcp_flags::SYN | tcp_flags::ACK,
            1,
            40
        )));
        // A whole connection: the higher port is the client's.
        let both = tcp_flags::SYN | tcp_flags::ACK;
        assert!(is_initiator(&tcp(40_000, 80, both, 9, 900)));
        assert!(!is_initiator(&tcp(80, 40_000, both, 9, 900)));
        let mut echo = tcp(8, 0, 0, 1, 84);
        echo.key.proto = ipproto::ICMP;
        assert!(is_initiator(&echo));
        echo.key.sport = 0;
        assert!(!is_initiator(&echo));
    }
}
