//! Per-flow and per-host state of the feature extractor: what it keeps
//! between events (flow snapshots and handshake facts, host windows and
//! distinct counters, pending SYN deadlines).

use sensor_common::{FlowKey, FlowStats};

use super::window::{Eds3, HllMeta, HllRegs, N_WINDOWS, WINDOWS_NS, decay_factors};

/// Per-flow state.
#[derive(Clone, Copy, Debug, Default)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one flow, kept unpacked for the hot path"
)]
pub(super) struct FlowState {
    /// CPU whose snapshots `last` holds.
    pub(super) cpu: u32,
    /// Latest snapshot from `cpu`.
    pub(super) last: FlowStats,
    /// Statistics from CPUs the flow left before `cpu` (and from before a
    /// restart), merged.
    pub(super) base: FlowStats,
    pub(super) first_seen: u64,
    pub(super) last_seen: u64,
    /// Weighted Welford over per-snapshot mean inter-arrival times (ns),
    /// weighted by the packets between the two snapshots.
    pub(super) iat_w: f64,
    pub(super) iat_mean: f64,
    pub(super) iat_m2: f64,
    /// This flow opened a TCP connection (its first packet was a bare SYN).
    pub(super) client_syn: bool,
    /// A SYN-ACK came back in the reverse direction.
    pub(super) answered: bool,
    /// The attempt has been counted failed (timeout or RST), once only.
    pub(super) failed: bool,
    /// Some snapshot of this direction counted a bare SYN.
    pub(super) saw_syn: bool,
    /// Some snapshot of this direction counted a SYN-ACK or an RST.
    pub(super) saw_answer: bool,
    /// The reverse direction was already tracked when this one started (a
    /// DNS answer, a server's SYN-ACK, an echo reply): this direction was
    /// asked for by its destination.
    pub(super) reply: bool,
    /// This client connection's close was already judged for
    /// [`RowFacts::closed`].
    pub(super) close_judged: bool,
}

/// Sketch slots of a host's distinct counters ([`HostState::hll`]).
pub(super) const HLL_DST: usize = 0; // distinct destinations, windows 0..3
pub(super) const HLL_DPORT: usize = 3; // distinct destination ports, windows 0..3
pub(super) const HLL_SRC_1S: usize = 6; // as a destination: distinct sources over 1 s
pub(super) const N_HOST_HLL: usize = 7;
/// Window of each sketch slot.
pub(super) const HLL_WINDOW_NS: [u64; N_HOST_HLL] = [
    WINDOWS_NS[0],
    WINDOWS_NS[1],
    WINDOWS_NS[2],
    WINDOWS_NS[0],
    WINDOWS_NS[1],
    WINDOWS_NS[2],
    WINDOWS_NS[0],
];

/// Per-host state: its behaviour as a source over three windows, and its
/// view as a destination over 1 s. Laid out hot first: every event of the
/// host reads and writes the damped sums and the sketches' summaries (about
/// 420 bytes); the 896 bytes of sketch registers behind them are touched
/// only when an item is inserted or an epoch turns over.
#[derive(Clone, Debug, Default)]
#[repr(C)]
pub(super) struct HostState {
    pub(super) last_ns: u64,
    pub(super) new_flows: Eds3,
    pub(super) syn_attempts: Eds3,
    pub(super) failed: Eds3,
    pub(super) bytes_out: Eds3,
    pub(super) bytes_in: Eds3,
    // Victim view.
    pub(super) syn_in: Eds3,
    pub(super) packets_in: Eds3,
    /// The gateway view this host's `gw_pps` was computed from (0 = none).
    pub(super) gw_seq: u64,
    /// Packets/s from this host over the whole gateway, from that view.
    pub(super) gw_pps: f64,
    /// Distinct counters, slots `HLL_*`: summaries here, registers below.
    pub(super) hll: [HllMeta; N_HOST_HLL],
    pub(super) hll_regs: [HllRegs; N_HOST_HLL],
}

/// The decay factors of the latest time step, reused when the next host to
/// advance moved by the same step (both hosts of a conversation were last
/// touched by the same event): the same `dt` gives the same factors, without
/// three more exponentials.
#[derive(Clone, Copy, Debug)]
pub(super) struct DecayMemo {
    pub(super) dt: u64,
    pub(super) factors: [f64; N_WINDOWS],
}

impl Default for DecayMemo {
    fn default() -> Self {
        Self {
            dt: 0,
            factors: decay_factors(0),
        }
    }
}

impl DecayMemo {
    #[inline]
    pub(super) fn factors(&mut self, dt: u64) -> [f64; N_WINDOWS] {
        if dt != self.dt {
            self.dt = dt;
            self.factors = decay_factors(dt);
        }
        self.factors
    }
}

impl HostState {
    /// Brings every window to `now` (older timestamps count as `last_ns`).
    #[inline]
    pub(super) fn advance(&mut self, now: u64, memo: &mut DecayMemo) {
        if now <= self.last_ns {
            return;
        }
        // A new host has nothing to decay: skip the exponentials.
        let f = if self.last_ns == 0 {
            [1.0; 3]
        } else {
            memo.factors(now - self.last_ns)
        };
        self.last_ns = now;
        for e in self.damped_sums() {
            e.decay(&f);
        }
        for ((m, r), w) in self
            .hll
            .iter_mut()
            .zip(self.hll_regs.iter_mut())
            .zip(HLL_WINDOW_NS)
        {
            m.advance(r, now, w);
        }
    }

    /// Every damped sum of the host, for decaying or clearing them together.
    pub(super) fn damped_sums(&mut self) -> [&mut Eds3; 7] {
        [
            &mut self.new_flows,
            &mut self.syn_attempts,
            &mut self.failed,
            &mut self.bytes_out,
            &mut self.bytes_in,
            &mut self.syn_in,
            &mut self.packets_in,
        ]
    }

    /// Makes an evicted host's state equal to `HostState::default()` in
    /// place, clearing only the sketch registers that hold something (a
    /// host seen only as a destination never filled its source sketches).
    pub(super) fn reset(&mut self) {
        for (m, r) in self.hll.iter().zip(self.hll_regs.iter_mut()) {
            if !m.is_empty() {
                *r = HllRegs::default();
            }
        }
        self.hll = [HllMeta::default(); N_HOST_HLL];
        self.last_ns = 0;
        for e in self.damped_sums() {
            *e = Eds3::default();
        }
        self.gw_seq = 0;
        self.gw_pps = 0.0;
    }
}

/// Fixed-capacity FIFO of pending client SYNs. Deadlines are inserted in
/// (nearly) increasing time order, so the head is always the next to expire.
pub(super) struct SynTimers {
    pub(super) buf: Vec<(FlowKey, u64)>,
    pub(super) head: usize,
    pub(super) len: usize,
}

impl SynTimers {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            buf: vec![(FlowKey::default(), 0); cap.max(1)],
            head: 0,
            len: 0,
        }
    }

    pub(super) fn push(&mut self, key: FlowKey, deadline: u64) -> bool {
        if self.len == self.buf.len() {
            return false;
        }
        let i = (self.head + self.len) % self.buf.len();
        self.buf[i] = (key, deadline);
        self.len += 1;
        true
    }

    pub(super) fn pop_expired(&mut self, now: u64) -> Option<FlowKey> {
        if self.len == 0 {
            return None;
        }
        let (k, d) = self.buf[self.head];
        if d > now {
            return None;
        }
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
        Some(k)
    }
}
