//! Streaming features, computed on the worker that owns the flow.
//!
//! Each ring event is a snapshot of a unidirectional flow's per-CPU kernel
//! statistics. The extractor turns successive snapshots into deltas, keeps
//! per-flow state (inter-arrival times, TCP handshake outcome) and per-host
//! state over 1 s / 5 min / 1 h windows, and writes one feature row per event
//! in the layout of [`schema::SCHEMA`]. All state lives in tables allocated at
//! construction with a fixed capacity and least-recently-used eviction, so
//! the event path never allocates, locks or makes a syscall.
//!
//! Host statistics are per worker. The kernel spreads a host's flows over the
//! workers by a symmetric flow hash, so each worker sees about `1/N` of a
//! host's flows; counts, rates and distinct counts are multiplied by
//! [`FeatureConfig::host_scale`] (the number of workers) to estimate the
//! whole host. Ratios need no scaling. The exact whole-gateway rate of a
//! source and the count of distinct sources come from the kernel's sketches
//! instead ([`gateway`]), one epoch late.

pub mod schema;
pub mod table;
pub mod window;
mod state;

use std::sync::Arc;

use sensor_common::{
    EventKind, FlowEvent, FlowKey, FlowStats, hash::fmix64, hash_addr, ipproto, tcp_flags,
};

pub use crate::capture::gateway::GatewayView;
pub use schema::{DST_PACKETS_PER_S_1S, N_FEATURES, SCHEMA, SCHEMA_VERSION};
use state::{DecayMemo, FlowState, HLL_DPORT, HLL_DST, HLL_SRC_1S, HostState, SynTimers};
use table::LruTable;
use window::{HOST_HLL_M, HllMeta, HostHll, N_WINDOWS};

/// A feature vector in schema order.
pub type FeatureVec = [f32; N_FEATURES];

/// Sizes and timeouts of the extractor.
#[derive(Clone, Copy, Debug)]
pub struct FeatureConfig {
    /// Flows tracked per worker; the least recently updated is evicted.
    pub max_flows: usize,
    /// Hosts tracked per worker (sources and destinations together), about
    /// 1.3 KiB each; the least recently updated is evicted.
    pub max_hosts: usize,
    /// A client SYN with no SYN-ACK in the reverse direction after this long
    /// counts as a failed connection attempt.
    pub syn_timeout_ns: u64,
    /// Multiplier for per-host counts, rates and distinct counts: the number
    /// of workers sharing the hosts' flows (see the module docs).
    pub host_scale: f64,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            max_flows: 65_536,
            max_hosts: 16_384,
            syn_timeout_ns: 2_000_000_000,
            host_scale: 1.0,
        }
    }
}

/// Counters of the extractor, read by the worker's stats reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureCounters {
    /// Events turned into rows.
    pub events: u64,
    /// Events with an unknown `kind`: counted and skipped.
    pub bad_kind: u64,
    /// Flows evicted from the full flow table.
    pub flows_evicted: u64,
    /// Hosts evicted from the full host table.
    pub hosts_evicted: u64,
    /// A flow's events arrived from a different CPU than before.
    pub flow_cpu_migrations: u64,
    /// A snapshot had fewer packets than the previous one on the same CPU
    /// (the kernel's LRU flow table dropped and restarted the flow).
    pub flow_restarts: u64,
    /// Client SYNs whose timeout could not be tracked (timer queue full).
    pub syn_timer_overflow: u64,
    /// Connection attempts counted failed because no SYN-ACK came in time.
    pub failed_by_timeout: u64,
    /// Connection attempts counted failed because the peer sent RST.
    pub failed_by_rst: u64,
}

/// What the extractor learnt about one event beyond its feature vector:
/// the facts the alert stage's guards and the beacon rule need, handed on
/// with the row (see [`FeatureExtractor::process`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one event, each read by its own guard or rule"
)]
pub struct RowFacts {
    /// The event's flow is a response: a TCP flow that in this direction,
    /// over every CPU it was seen on, carried SYN-ACKs or RSTs but never a
    /// bare SYN; a UDP (or other non-TCP) flow whose reverse direction was
    /// tracked before it started; an ICMP reply or error. Its source is then
    /// the responder (a scanned host, a server, a resolver), never the
    /// initiator (scanner, guesser or anomaly's author).
    pub responder: bool,
    /// The flow started after its reverse direction was tracked (for ICMP,
    /// an echo reply after its request): its destination asked for this
    /// traffic, so it is an answer (a download, a scan's replies), not a
    /// flood against that host. Reflection floods are not: their victim
    /// never sent the requests.
    pub solicited: bool,
    /// The client TCP connection the event closed (an RST from either side,
    /// or the second direction's FIN): a bare SYN answered by a SYN-ACK, so
    /// its client is no spoofed address. Judged once per connection. Both
    /// directions of a connection are on one worker (the ring is chosen by
    /// a symmetric flow hash), and the closing event comes after both
    /// directions' data, so the byte counts are final up to the closing
    /// ACKs. The beacon rule reads the upload-heavy ones, the login rule
    /// the short ones to login services.
    pub closed: Option<ClosedConn>,
    /// The event's flow is the client side of a TCP connection whose SYN
    /// was answered: a real exchange with its destination, which a spoofed
    /// flood never makes.
    pub established: bool,
    /// Packets/s into the destination over 1 s: the `dst_packets_per_s_1s`
    /// feature before its logarithm, so the alert stage need not undo it.
    pub victim_pps: f32,
    /// The event started an ICMP or ICMPv6 echo request flow to a host
    /// (one per host and echo identifier), or an ARP request's flow (one
    /// per sender and target): a host discovery probe; or it is a
    /// half-open probe of a TCP port (SYN, the server's SYN-ACK, the
    /// client's RST, nothing else) or a stealth probe (a TCP flow whose
    /// first packet has none of SYN, ACK and RST). Such rows always reach the alert stage, whose scan
    /// rule counts the distinct hosts a source probes: a sweep, which no
    /// single row shows.
    pub discovery_probe: bool,
}

impl RowFacts {
    /// Whether the row must reach the alert stage whatever its scores: the
    /// stage's rules count such rows (closed connections for the beacon and
    /// login rules, host discovery probes for the sweep rule), which no
    /// score floor may hide.
    #[must_use]
    pub fn feeds_a_rule(&self) -> bool {
        self.closed.is_some() || self.discovery_probe
    }
}

/// A client TCP connection, reported when it closes ([`RowFacts::closed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosedConn {
    /// First packet of the client's direction (`CLOCK_MONOTONIC` ns).
    pub start_ns: u64,
    /// Bytes (frames) the client sent.
    pub bytes_out: u64,
    /// Bytes the server sent.
    pub bytes_in: u64,
    /// The client is the source of the event's flow (its FIN or RST closed
    /// the connection); otherwise the destination.
    pub client_is_src: bool,
}

impl ClosedConn {
    /// Whether the client sent much more than it received: what the beacon
    /// rule looks for, repeated at regular intervals to one server.
    #[must_use]
    pub fn is_upload_heavy(&self) -> bool {
        self.bytes_out >= UPLOAD_MIN_BYTES
            && self.bytes_out >= UPLOAD_RATIO.saturating_mul(self.bytes_in)
    }
}

/// A connection is upload-heavy when its client sent at least this many
/// bytes (frames, headers included) ...
pub(crate) const UPLOAD_MIN_BYTES: u64 = 1024;
/// ... and at least this many times the bytes it received. Page fetches,
/// downloads and login attempts (a guess out, a banner or a failure page
/// back) stay below it.
pub(crate) const UPLOAD_RATIO: u64 = 3;

/// Largest frame of a half-open probe ([`RowFacts::discovery_probe`]): a
/// SYN with the usual 20 bytes of options over IPv6 behind a VLAN tag is 98
/// bytes; one that carries data is larger.
const HALF_OPEN_MAX_FRAME: u32 = 100;

/// Host table key: the 16-byte address.
type HostKey = [u8; 16];

/// The per-worker feature extractor. See the module docs.
pub struct FeatureExtractor {
    cfg: FeatureConfig,
    flows: LruTable<FlowKey, FlowState>,
    hosts: LruTable<HostKey, HostState>,
    timers: SynTimers,
    counters: FeatureCounters,
    /// Latest gateway-wide view from the kernel sketches, if any yet.
    gateway: Option<Arc<GatewayView>>,
    decay: DecayMemo,
    /// `ln1p(estimate × host_scale)` of a host distinct count for each zero
    /// register count in the linear-counting range, where the estimate
    /// depends on that count alone: the same values as computing them, with
    /// no logarithms per event.
    distinct_ln1p: [f32; HOST_HLL_M + 1],
    /// `ln1p(n)` and `ln1p(n / 1 ms)` for small counts `n`: a flow's packet
    /// and byte counts, and its packet and byte rates while it is under 1 ms
    /// old (most rows: most flows have one packet), are functions of those
    /// counts alone. Filled by the same calls, so the values are the same,
    /// without four logarithms per event.
    small_ln1p: Box<[[f32; 2]; SMALL_COUNTS]>,
}

/// Counts tabulated in [`FeatureExtractor`]'s `small_ln1p` (up to one
/// full-size Ethernet frame's bytes).
const SMALL_COUNTS: usize = 1536;
/// The shortest duration a flow rate is taken over (s): a one-packet flow has
/// no duration, so its rate is taken over 1 ms rather than divided by zero.
const MIN_RATE_S: f64 = 1e-3;

/// The reverse direction of a flow.
#[inline]
#[must_use]
pub(crate) fn reverse_key(k: &FlowKey) -> FlowKey {
    FlowKey::new(k.dst, k.src, k.dport, k.sport, k.proto)
}

/// The key of the flow this one would answer: the reverse direction, and
/// for an ICMP echo reply the echo request (keys carry type and code).
#[inline]
fn request_key(k: &FlowKey) -> FlowKey {
    let mut r = reverse_key(k);
    match (k.proto, k.sport) {
        (ipproto::ICMP, 0) => (r.sport, r.dport) = (8, 0),
        (ipproto::ICMPV6, 129) => (r.sport, r.dport) = (128, 0),
        _ => {}
    }
    r
}

/// ICMP messages only ever sent in response to something: echo and
/// timestamp/information replies, and errors (unreachable, time exceeded,
/// parameter problem, ICMPv6 packet too big).
#[inline]
fn icmp_is_response(proto: u8, icmp_type: u16) -> bool {
    if proto == ipproto::ICMP {
        matches!(icmp_type, 0 | 3 | 4 | 5 | 11 | 12 | 14 | 16 | 18)
    } else {
        matches!(icmp_type, 1..=4 | 129)
    }
}

#[inline]
fn dport_class(proto: u8, dport: u16) -> f32 {
    if proto != ipproto::TCP && proto != ipproto::UDP || dport == 0 {
        0.0
    } else if dport < 1024 {
        1.0
    } else if dport < 49152 {
        2.0
    } else {
        3.0
    }
}

#[inline]
fn ln1p(x: f64) -> f32 {
    let v = x.max(0.0);
    // log1p(±0) is ±0: many features are zero, skip the libm call for them.
    if v == 0.0 { v as f32 } else { v.ln_1p() as f32 }
}

impl FeatureExtractor {
    /// Allocates all state for `cfg`.
    #[must_use]
    pub fn new(cfg: FeatureConfig) -> Self {
        Self {
            flows: LruTable::new(cfg.max_flows),
            // Two hosts are touched per event; see `process`.
            hosts: LruTable::new(cfg.max_hosts.max(2)),
            timers: SynTimers::new(cfg.max_flows),
            counters: FeatureCounters::default(),
            gateway: None,
            decay: DecayMemo::default(),
            distinct_ln1p: std::array::from_fn(|z| {
                if z == 0 {
                    0.0
                } else {
                    ln1p(HostHll::linear_estimate(z as u32) * cfg.host_scale)
                }
            }),
            small_ln1p: Box::new(std::array::from_fn(|n| {
                let p = n as f64;
                [ln1p(p), ln1p(p / MIN_RATE_S)]
            })),
            cfg,
        }
    }

    /// Installs a newer gateway-wide view (called on a worker tick, never
    /// per event). Views must carry increasing, non-zero `seq`.
    pub fn set_gateway_view(&mut self, view: Arc<GatewayView>) {
        self.gateway = Some(view);
    }

    /// Sequence number of the installed gateway view (0 = none).
    #[must_use]
    pub(crate) fn gateway_seq(&self) -> u64 {
        self.gateway.as_ref().map_or(0, |g| g.seq)
    }

    /// Counters so far (evictions are read from the tables).
    #[must_use]
    pub fn counters(&self) -> FeatureCounters {
        let mut c = self.counters;
        c.flows_evicted = self.flows.evictions();
        c.hosts_evicted = self.hosts.evictions();
        c
    }

    /// Flows and hosts currently tracked.
    #[must_use]
    pub fn tracked(&self) -> (usize, usize) {
        (self.flows.len(), self.hosts.len())
    }

    /// Counts a failed connection attempt of host `addr` at `now`, if tracked.
    fn count_failed(&mut self, addr: &HostKey, now: u64) {
        if let Some(h) = self.hosts.find(addr) {
            let h = self.hosts.get_mut(h);
            h.advance(now, &mut self.decay);
            h.failed.add(1.0);
        }
    }

    /// Settles connection attempts whose SYN timed out by `now_ns`. Called
    /// from every event and every worker tick.
    pub fn expire(&mut self, now_ns: u64) {
        while let Some(k) = self.timers.pop_expired(now_ns) {
            let Some(idx) = self.flows.find(&k) else {
                continue;
            };
            let f = self.flows.get_mut(idx);
            if f.client_syn && !f.answered && !f.failed {
                f.failed = true;
                self.counters.failed_by_timeout += 1;
                self.count_failed(&k.src, now_ns);
            }
        }
    }

    /// Updates all state with one event, writes its feature row into `out`
    /// and returns the row's other facts. `None` (counted) for an event of
    /// unknown kind.
    pub fn process(&mut self, ev: &FlowEvent, out: &mut FeatureVec) -> Option<RowFacts> {
        let Some(kind) = EventKind::from_u32(ev.kind) else {
            self.counters.bad_kind += 1;
            return None;
        };
        self.counters.events += 1;
        let now = ev.ts_ns;
        self.expire(now);
        let key = ev.key;
        let s = &ev.stats;
        // Start the memory loads of all table lookups at once: the flow, its
        // hosts, and the flow it would answer (looked up for every new flow
        // and every TCP answer or close; for TCP the reverse direction).
        let flow_tag = self.flows.tag_of(&key);
        let src_tag = self.hosts.tag_of(&key.src);
        let dst_tag = self.hosts.tag_of(&key.dst);
        let req_key = request_key(&key);
        let req_tag = self.flows.tag_of(&req_key);
        self.flows.prefetch(flow_tag);
        self.hosts.prefetch(src_tag);
        self.hosts.prefetch(dst_tag);
        self.flows.prefetch_bucket(req_tag);

        // --- flow ---
        let e = self.flows.entry_tagged(key, flow_tag, FlowState::default);
        // Only new flows pay the reverse lookup.
        let reply = e.inserted
            && self
                .flows
                .find_tagged(&req_key, req_tag)
                .is_some_and(|r| r != e.idx);
        let f = self.flows.get_mut(e.idx);
        if e.inserted {
            f.reply = reply;
            f.cpu = ev.cpu;
            f.first_seen = s.first_seen_ns;
            f.client_syn = key.proto == ipproto::TCP
                && s.syn > 0
                && s.synack == 0
                && ev.tcp_flags & tcp_flags::SYN != 0
                && ev.tcp_flags & tcp_flags::ACK == 0;
        } else if f.cpu != ev.cpu {
            self.counters.flow_cpu_migrations += 1;
            f.base.merge(&f.last);
            f.last = FlowStats::default();
            f.cpu = ev.cpu;
        } else if s.packets < f.last.packets {
            self.counters.flow_restarts += 1;
            f.base.merge(&f.last);
            f.last = FlowStats::default();
        }
        let prev = f.last;
        let d_packets = s.packets - prev.packets;
        let d_bytes = s.bytes.saturating_sub(prev.bytes);
        let d_syn = s.syn.saturating_sub(prev.syn);
        let d_synack = s.synack.saturating_sub(prev.synack);
        let d_rst = s.rst.saturating_sub(prev.rst);
        if prev.packets > 0 && d_packets > 0 && s.last_seen_ns > prev.last_seen_ns {
            // Mean gap between the packets counted since the last snapshot.
            let x = (s.last_seen_ns - prev.last_seen_ns) as f64 / d_packets as f64;
            let w = d_packets as f64;
            f.iat_w += w;
            let delta = x - f.iat_mean;
            f.iat_mean += delta * w / f.iat_w;
            f.iat_m2 += w * delta * (x - f.iat_mean);
        }
        f.last = *s;
        f.saw_syn |= s.syn > 0;
        f.saw_answer |= s.synack > 0 || s.rst > 0;
        let responder = match key.proto {
            ipproto::TCP => f.saw_answer && !f.saw_syn,
            // ICMP keys carry the type in `sport`.
            ipproto::ICMP | ipproto::ICMPV6 => icmp_is_response(key.proto, key.sport),
            _ => f.reply,
        };
        let solicited = f.reply;
        f.first_seen = f.first_seen.min(s.first_seen_ns);
        f.last_seen = f.last_seen.max(s.last_seen_ns);
        let mut tot = f.base;
        tot.merge(s);
        let new_client_syn = e.inserted && f.client_syn;
        let new_flow = e.inserted;
        let flow = *f;

        // --- handshake outcome, seen from the reverse direction ---
        // For TCP the request key is the reverse direction.
        if key.proto == ipproto::TCP
            && (d_synack > 0 || d_rst > 0)
            && let Some(ri) = self.flows.find_tagged(&req_key, req_tag)
        {
            let r = self.flows.get_mut(ri);
            if r.client_syn && !r.failed {
                if d_rst > 0 {
                    r.failed = true;
                    self.counters.failed_by_rst += 1;
                    // The reverse flow's source (our destination) failed.
                    self.count_failed(&key.dst, now);
                } else {
                    r.answered = true;
                }
            }
        }
        // Saturating: an event time near the end of the clock (a damaged
        // record) must not overflow the deadline.
        let deadline = now.saturating_add(self.cfg.syn_timeout_ns);
        if new_client_syn && !self.timers.push(key, deadline) {
            self.counters.syn_timer_overflow += 1;
        }

        // --- a client connection closed ---
        let mut closed_conn = None;
        if key.proto == ipproto::TCP
            && matches!(kind, EventKind::Fin | EventKind::Rst)
            && let Some(ri) = self
                .flows
                .find_tagged(&req_key, req_tag)
                .filter(|&ri| ri != e.idx)
        {
            let rev = *self.flows.get(ri);
            let sent_fin = |f: &FlowState| f.base.fin > 0 || f.last.fin > 0;
            // Closed: an RST from either side, or a FIN from both (the
            // second FIN's event comes after both directions' last data).
            let closed = kind == EventKind::Rst || (sent_fin(&flow) && sent_fin(&rev));
            let client = if flow.client_syn && flow.answered {
                Some((flow, e.idx, rev, true))
            } else if rev.client_syn && rev.answered {
                Some((rev, ri, flow, false))
            } else {
                None
            };
            if let Some((c, ci, server, client_is_src)) = client
                && closed
                && !c.close_judged
            {
                self.flows.get_mut(ci).close_judged = true;
                // Saturating, as `FlowStats::merge`: damaged counts must
                // not overflow.
                closed_conn = Some(ClosedConn {
                    start_ns: c.first_seen,
                    bytes_out: c.base.bytes.saturating_add(c.last.bytes),
                    bytes_in: server.base.bytes.saturating_add(server.last.bytes),
                    client_is_src,
                });
            }
        }

        // --- source host ---
        // The source is touched first, so inserting the destination (which
        // evicts the least recent host, never the most recent) keeps it.
        let src_idx = self
            .hosts
            .entry_reset_tagged(key.src, src_tag, HostState::default, HostState::reset)
            .idx;
        let dst_idx = if key.src == key.dst {
            src_idx
        } else {
            self.hosts
                .entry_reset_tagged(key.dst, dst_tag, HostState::default, HostState::reset)
                .idx
        };
        let dst_hash = hash_addr(&key.dst);
        let src_hash = hash_addr(&key.src);
        {
            let h = self.hosts.get_mut(src_idx);
            h.advance(now, &mut self.decay);
            h.bytes_out.add(d_bytes as f64);
            if e.inserted {
                h.new_flows.add(1.0);
                for w in 0..N_WINDOWS {
                    let k = HLL_DST + w;
                    h.hll[k].insert(&mut h.hll_regs[k], dst_hash);
                }
                if key.dport != 0 {
                    let port_hash = fmix64(u64::from(key.dport) ^ 0x6b43_a9b5);
                    for w in 0..N_WINDOWS {
                        let k = HLL_DPORT + w;
                        h.hll[k].insert(&mut h.hll_regs[k], port_hash);
                    }
                }
            }
            if new_client_syn {
                h.syn_attempts.add(1.0);
            }
        }
        {
            let h = self.hosts.get_mut(dst_idx);
            h.advance(now, &mut self.decay);
            h.bytes_in.add(d_bytes as f64);
            h.packets_in.add(d_packets as f64);
            h.syn_in.add(f64::from(d_syn));
            if e.inserted {
                h.hll[HLL_SRC_1S].insert(&mut h.hll_regs[HLL_SRC_1S], src_hash);
            }
        }

        // --- gateway view: once per source host and epoch ---
        let (gw_src_pps, gw_distinct) = match &self.gateway {
            Some(g) => {
                let h = self.hosts.get_mut(src_idx);
                if h.gw_seq != g.seq {
                    h.gw_seq = g.seq;
                    h.gw_pps = g.src_packets_per_s(&key.src);
                }
                (h.gw_pps, g.distinct_sources_per_s())
            }
            None => (0.0, 0.0),
        };

        // --- row ---
        let sc = self.cfg.host_scale;
        let src = self.hosts.get(src_idx);
        let dst = self.hosts.get(dst_idx);
        let packets = tot.packets.max(1) as f64;
        let dur_ns = flow.last_seen.saturating_sub(flow.first_seen);
        let dur_s = dur_ns as f64 / 1e9;
        let mean = tot.bytes as f64 / packets;
        let var = (tot.len_sq_sum as f64 / packets - mean * mean).max(0.0);
        let iat_var = if flow.iat_w > 0.0 {
            flow.iat_m2 / flow.iat_w
        } else {
            0.0
        };
        // Rates over the flow's life (at least `MIN_RATE_S`).
        let rate_s = dur_s.max(MIN_RATE_S);
        let count_ln1p = |n: u64| match self.small_ln1p.get(n as usize) {
            Some(&[v, r]) if rate_s == MIN_RATE_S => (v, r),
            Some(&[v, _]) => (v, ln1p(n as f64 / rate_s)),
            None => (ln1p(n as f64), ln1p(n as f64 / rate_s)),
        };
        let (ln_packets, ln_pps) = count_ln1p(tot.packets);
        let (ln_bytes, ln_bps) = count_ln1p(tot.bytes);
        let syn_unanswered = flow.client_syn && !flow.answered;
        let failed_ratio = |w: usize| {
            let a = src.syn_attempts.sums[w];
            if a < 1e-9 {
                0.0
            } else {
                (src.failed.sums[w] / a).clamp(0.0, 1.0) as f32
            }
        };
        let distinct = |h: &HllMeta| match h.linear_zeros() {
            Some(z) => self.distinct_ln1p[z as usize],
            None => ln1p(h.estimate() * sc),
        };
        let proto = key.proto;
        let victim_pps = dst.packets_in.rate_per_s(0) * sc;
        *out = [
            ln1p(dur_s),
            ln_packets,
            ln_bytes,
            mean as f32,
            var.sqrt() as f32,
            ln1p(flow.iat_mean / 1e6),
            ln1p(iat_var.sqrt() / 1e6),
            ln_pps,
            ln_bps,
            f32::from(u8::from(syn_unanswered)),
            (f64::from(tot.rst) / packets) as f32,
            (f64::from(tot.fin) / packets) as f32,
            dport_class(proto, key.dport),
            f32::from(u8::from(proto == ipproto::TCP)),
            f32::from(u8::from(proto == ipproto::UDP)),
            f32::from(u8::from(proto == ipproto::ICMP || proto == ipproto::ICMPV6)),
            ln1p(src.new_flows.rate_per_s(0) * sc),
            ln1p(src.new_flows.rate_per_s(1) * sc),
            ln1p(src.new_flows.rate_per_s(2) * sc),
            distinct(&src.hll[HLL_DST]),
            distinct(&src.hll[HLL_DST + 1]),
            distinct(&src.hll[HLL_DST + 2]),
            distinct(&src.hll[HLL_DPORT]),
            distinct(&src.hll[HLL_DPORT + 1]),
            distinct(&src.hll[HLL_DPORT + 2]),
            failed_ratio(1),
            failed_ratio(2),
            ((src.bytes_out.sums[1] + 1.0) / (src.bytes_in.sums[1] + 1.0)).ln() as f32,
            ln1p(src.bytes_out.sums[1] / src.new_flows.sums[1].max(1.0)),
            distinct(&dst.hll[HLL_SRC_1S]),
            ln1p(dst.syn_in.rate_per_s(0) * sc),
            ln1p(victim_pps),
            ln1p(gw_src_pps),
            ln1p(gw_distinct),
        ];
        // A half-open probe: the client answered the server's SYN-ACK with
        // an RST, having sent nothing else (a SYN scan finding an open
        // port; `nmap -sV` starts so). A program that gives up on a
        // connection closes it after its handshake, with an ACK first.
        let half_open = key.proto == ipproto::TCP
            && kind == EventKind::Rst
            && flow.client_syn
            && flow.answered
            && tot.packets <= 2
            && u32::from(tot.len_max) <= HALF_OPEN_MAX_FRAME;
        // A stealth probe: a connection's first packet with none of SYN,
        // ACK and RST (FIN, NULL and Xmas scans; nmap's OS detection). No
        // stack opens or continues a connection so: mid-stream packets
        // carry an ACK.
        let stealth = key.proto == ipproto::TCP
            && new_flow
            && tot.tcp_flags_or & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == 0;
        let discovery_probe = half_open
            || stealth
            || new_flow
                && !solicited
                && (matches!(
                    (key.proto, key.sport),
                    (ipproto::ICMP, 8) | (ipproto::ICMPV6, 128)
                ) || key.is_arp());
        Some(RowFacts {
            responder,
            solicited,
            closed: closed_conn,
            established: key.proto == ipproto::TCP && flow.client_syn && flow.answered,
            victim_pps: victim_pps as f32,
            discovery_probe,
        })
    }
}

/// Volume behind the latest row of a flow, for severity ranking.
#[must_use]
pub(crate) fn event_volume(ev: &FlowEvent) -> (f32, u64, u64) {
    let s = &ev.stats;
    let dur = s.last_seen_ns.saturating_sub(s.first_seen_ns) as f64 / 1e9;
    let pps = s.packets as f64 / dur.max(1e-3);
    (pps as f32, s.bytes, s.packets)
}

/// Formats a row (and its label) as one CSV line, exactly as the dataset tool
/// writes it: Rust's shortest round-trip `f32` formatting, so a reader that
/// parses the text as `float32` gets the same bits back.
pub fn write_csv_row(out: &mut String, row: &FeatureVec, label: &str) {
    use std::fmt::Write as _;
    for v in row {
        let _ = write!(out, "{v},");
    }
    out.push_str(label);
    out.push('\n');
}
