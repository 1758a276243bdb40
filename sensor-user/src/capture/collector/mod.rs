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
