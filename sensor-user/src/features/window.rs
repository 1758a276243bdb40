//! Incremental window statistics for per-host state.
//!
//! Sums and rates are **exponentially damped sums** (EDS): one `f64` per
//! statistic and window, decayed by `exp(-Δt/τ)` at each update. We chose them
//! over ring-buffer buckets because they cost 8 bytes instead of one counter
//! per bucket, have no bucket-boundary jumps, and all three windows (1 s,
//! 5 min, 1 h) of a host share one timestamp and one decay factor per window.
//! For a steady rate `r` the sum converges to `r·τ`, so `rate = sum / τ`.
//!
//! Distinct counts cannot be decayed (HyperLogLog registers are maxima), so
//! they use two tumbling epochs per window ([`HllPair`]): the estimate is the
//! union of the current and the previous epoch, i.e. it covers between `W`
//! and `2W` of history. The union's harmonic sum is kept incrementally, so an
//! estimate costs one division and one logarithm, not a register scan. The
//! registers and their insert are the shared [`HyperLogLog`]; what this
//! module adds is the pair of epochs, the incremental union and the classic
//! estimator over it ([`HyperLogLog::classic_estimate`]).

use crate::capture::sketch::HyperLogLog;

/// Window lengths in nanoseconds, in schema order: 1 s, 5 min, 1 h.
pub const WINDOWS_NS: [u64; 3] = [1_000_000_000, 300_000_000_000, 3_600_000_000_000];
/// Number of host windows.
pub(crate) const N_WINDOWS: usize = WINDOWS_NS.len();

/// Per-window decay factors for advancing a set of EDS by `dt_ns`.
#[inline]
#[must_use]
pub fn decay_factors(dt_ns: u64) -> [f64; N_WINDOWS] {
    let dt = dt_ns as f64;
    let mut out = [1.0; N_WINDOWS];
    if dt_ns == 0 {
        return out;
    }
    for (o, w) in out.iter_mut().zip(WINDOWS_NS) {
        *o = (-dt / w as f64).exp();
    }
    out
}

/// HyperLogLog precision for per-host distinct counts: 2^6 = 64 one-byte
/// registers, standard error 1.04/√64 ≈ 13 %. Small cardinalities (the common
/// case) use linear counting and are far more precise. Detection needs the
/// order of magnitude (a scanner touches hundreds of ports, a client a few),
/// and 64 bytes keeps a host with 2 sketches × 3 windows × 2 epochs under
/// 1 KiB.
pub(crate) const HOST_HLL_P: u32 = 6;
/// Registers per host HyperLogLog.
pub const HOST_HLL_M: usize = 1 << HOST_HLL_P;

/// A per-host distinct counter's registers (one epoch).
pub(crate) type HostHll = HyperLogLog<HOST_HLL_M>;

/// The summary half of an [`HllPair`]: what estimates need, plus the epoch.
/// Hosts keep these next to their other hot fields and the registers
/// ([`HllRegs`]) apart, so an event that inserts nothing reads no register.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HllMeta {
    /// `Σ 2^-max(prev[i], cur[i])`, maintained on every register change.
    union_sum: f64,
    /// Registers where `max(prev, cur) == 0`.
    union_zeros: u32,
    /// `ts / W` of the current epoch.
    epoch: u64,
    /// A timestamp below this is in the current epoch (or older): the first
    /// nanosecond of the next epoch as last computed, saturated, or 0 before
    /// the first advance. Lets an advance within the epoch skip a division.
    until_ns: u64,
}

impl Default for HllMeta {
    fn default() -> Self {
        Self {
            union_sum: HOST_HLL_M as f64,
            union_zeros: HOST_HLL_M as u32,
            epoch: 0,
            until_ns: 0,
        }
    }
}

/// The registers of an [`HllPair`]: the previous and the current epoch.
#[derive(Clone, Debug, Default)]
pub(crate) struct HllRegs {
    prev: HostHll,
    cur: HostHll,
}

impl HllMeta {
    /// True when both epochs are empty, so every register is zero.
    #[inline]
    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        self.union_zeros == HOST_HLL_M as u32
    }

    /// Moves to the epoch containing `ts_ns` (windows of `window_ns`; always
    /// the same for one sketch). Time never goes backwards here: an older
    /// timestamp stays in the current epoch.
    #[inline]
    pub(crate) fn advance(&mut self, regs: &mut HllRegs, ts_ns: u64, window_ns: u64) {
        if ts_ns < self.until_ns {
            return;
        }
        self.advance_epoch(regs, ts_ns, window_ns);
    }

    fn advance_epoch(&mut self, regs: &mut HllRegs, ts_ns: u64, window_ns: u64) {
        let e = ts_ns / window_ns;
        if e <= self.epoch {
            self.until_ns = (self.epoch + 1).saturating_mul(window_ns);
            return;
        }
        let next = e == self.epoch + 1;
        self.epoch = e;
        self.until_ns = (e + 1).saturating_mul(window_ns);
        if self.is_empty() {
            // Both epochs are empty (a new host, or one idle for 2W): only
            // the epoch number changes.
            return;
        }
        if next {
            regs.prev.clone_from(&regs.cur);
        } else {
            regs.prev.clear();
        }
        regs.cur.clear();
        (self.union_sum, self.union_zeros) = regs.prev.harmonic_sum_and_zeros();
    }

    /// Adds an item by its 64-bit hash (after [`Self::advance`]).
    #[inline]
    pub(crate) fn insert(&mut self, regs: &mut HllRegs, hash: u64) {
        let Some(raise) = regs.cur.insert_hash(hash) else {
            return;
        };
        let old_union = raise.from.max(regs.prev.register(raise.index));
        if raise.to > old_union {
            self.union_sum += HostHll::pow2_neg(raise.to) - HostHll::pow2_neg(old_union);
            if old_union == 0 {
                self.union_zeros -= 1;
            }
        }
    }

    /// Estimated distinct items in the current and previous epoch.
    #[inline]
    #[must_use]
    pub(crate) fn estimate(&self) -> f64 {
        HostHll::classic_estimate(self.union_sum, self.union_zeros)
    }

    /// The zero-register count when [`Self::estimate`] is by linear counting
    /// (the common case: small distinct counts), else `None`. The estimate
    /// is then [`HyperLogLog::linear_estimate`] of it.
    #[inline]
    #[must_use]
    pub(crate) fn linear_zeros(&self) -> Option<u32> {
        HostHll::is_linear(self.union_sum, self.union_zeros).then_some(self.union_zeros)
    }

    /// Current epoch number (`ts / W`).
    #[must_use]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl HllRegs {
    /// The estimate recomputed from the registers alone.
    #[must_use]
    pub(crate) fn estimate(&self) -> f64 {
        let mut union = self.prev.clone();
        union.merge(&self.cur);
        let (sum, zeros) = union.harmonic_sum_and_zeros();
        HostHll::classic_estimate(sum, zeros)
    }
}

/// A distinct counter over a tumbling window of `W` ns with two epochs:
/// `cur` holds items since the start of the current epoch, `prev` the epoch
/// before. Estimates count the union. Its two halves ([`HllMeta`],
/// [`HllRegs`]) can also be kept apart, as hosts do.
#[derive(Clone, Debug, Default)]
pub struct HllPair {
    meta: HllMeta,
    regs: HllRegs,
}

impl HllPair {
    /// Moves to the epoch containing `ts_ns` (windows of `window_ns`).
    /// Time never goes backwards here: an older timestamp stays in the
    /// current epoch.
    #[inline]
    pub fn advance(&mut self, ts_ns: u64, window_ns: u64) {
        self.meta.advance(&mut self.regs, ts_ns, window_ns);
    }

    /// Adds an item by its 64-bit hash (after [`Self::advance`]).
    #[inline]
    pub fn insert(&mut self, hash: u64) {
        self.meta.insert(&mut self.regs, hash);
    }

    /// Estimated distinct items in the current and previous epoch.
    #[inline]
    #[must_use]
    pub fn estimate(&self) -> f64 {
        self.meta.estimate()
    }

    /// Recomputes the estimate from the registers (for tests and audits of
    /// the incremental sum).
    #[must_use]
    pub fn estimate_from_registers(&self) -> f64 {
        self.regs.estimate()
    }

    /// Current epoch number (`ts / W`).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.meta.epoch()
    }
}

/// A set of exponentially damped sums over the three host windows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Eds3 {
    pub sums: [f64; N_WINDOWS],
}

impl Eds3 {
    /// Decays by precomputed factors (see [`decay_factors`]).
    #[inline]
    pub fn decay(&mut self, f: &[f64; N_WINDOWS]) {
        for (s, k) in self.sums.iter_mut().zip(f) {
            *s *= k;
        }
    }

    /// Adds `v` at the current time (after [`Self::decay`]).
    #[inline]
    pub fn add(&mut self, v: f64) {
        for s in &mut self.sums {
            *s += v;
        }
    }

    /// Rate per second over window `w` (sum / τ).
    #[inline]
    #[must_use]
    pub(crate) fn rate_per_s(&self, w: usize) -> f64 {
        self.sums[w] / (WINDOWS_NS[w] as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_pair_estimates_zero() {
        let h = HllPair::default();
        assert_eq!(h.estimate(), 0.0);
    }

    #[test]
    fn eds_converges_to_rate_times_tau() {
        let mut e = Eds3::default();
        // 100 events per second for 10 s: the 1 s window sees 100/s.
        for _ in 0..1000 {
            e.decay(&decay_factors(10_000_000));
            e.add(1.0);
        }
        let r = e.rate_per_s(0);
        assert!((r - 100.0).abs() < 1.0, "{r}");
    }
}
