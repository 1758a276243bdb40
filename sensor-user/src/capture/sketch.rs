//! User-side sketches: the merge of the kernel's per-CPU Count-Min and
//! HyperLogLog epochs, and their estimators. The geometry and hashes come from
//! `sensor_common::sketch`, so a query here looks at exactly the cells the XDP
//! program incremented.

use sensor_common::{
    hash_addr,
    sketch::{CMS_ROWS, CMS_WIDTH, CmsRow, HLL_REGISTERS, cms_column, hll_index_rank_p},
};

const ROWS: usize = CMS_ROWS as usize;
const WIDTH: usize = CMS_WIDTH as usize;

/// A Count-Min sketch with the kernel's geometry: `CMS_ROWS` × `CMS_WIDTH`
/// cells. Every row receives every increment, so each row sums to the total.
#[derive(Clone, PartialEq, Eq)]
pub struct CountMin {
    rows: Box<[[u64; WIDTH]; ROWS]>,
}

impl Default for CountMin {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CountMin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountMin")
            .field("total", &self.total())
            .finish_non_exhaustive()
    }
}

impl CountMin {
    /// An empty sketch.
    #[must_use]
    pub fn new() -> Self {
        Self {
            // Built on the heap: the array is too large for a stack temporary.
            rows: vec![[0; WIDTH]; ROWS]
                .into_boxed_slice()
                .try_into()
                .expect("ROWS rows"),
        }
    }

    /// Adds a kernel row (one CPU's or an already merged one) into `row`.
    /// Count-Min merges by cell-wise sum.
    pub(crate) fn add_row(&mut self, row: usize, cells: &CmsRow) {
        for (dst, src) in self.rows[row].iter_mut().zip(cells.cells.iter()) {
            *dst = dst.wrapping_add(*src);
        }
    }

    /// Adds every cell of `other` (run-long accumulation of epochs).
    pub fn merge(&mut self, other: &CountMin) {
        for (dr, sr) in self.rows.iter_mut().zip(other.rows.iter()) {
            for (d, s) in dr.iter_mut().zip(sr.iter()) {
                *d = d.wrapping_add(*s);
            }
        }
    }

    /// Counts `count` for an address exactly as the XDP program does.
    pub fn add(&mut self, addr: &[u8; 16], count: u64) {
        let h = hash_addr(addr);
        for (r, row) in (0..CMS_ROWS).zip(self.rows.iter_mut()) {
            let c = cms_column(h, r) as usize;
            row[c] = row[c].wrapping_add(count);
        }
    }

    /// Point query: an overestimate of the address's count, exceeding the truth
    /// by more than `epsilon() * total()` with probability at most `delta()`.
    #[must_use]
    pub fn estimate(&self, addr: &[u8; 16]) -> u64 {
        let h = hash_addr(addr);
        (0..CMS_ROWS)
            .zip(self.rows.iter())
            .map(|(r, row)| row[cms_column(h, r) as usize])
            .min()
            .unwrap_or(0)
    }

    /// Sum of all increments (row 0's sum; every row has the same).
    #[must_use]
    pub fn total(&self) -> u64 {
        self.rows[0].iter().fold(0u64, |a, &c| a.wrapping_add(c))
    }

    /// Error factor ε = e / width.
    #[must_use]
    pub fn epsilon() -> f64 {
        std::f64::consts::E / f64::from(CMS_WIDTH)
    }

    /// Failure probability δ = e^-rows.
    #[must_use]
    pub fn delta() -> f64 {
        (-f64::from(CMS_ROWS)).exp()
    }

    /// Number of rows.
    #[must_use]
    pub const fn rows() -> u32 {
        CMS_ROWS
    }

    /// Number of columns per row.
    #[must_use]
    pub const fn width() -> u32 {
        CMS_WIDTH
    }

    /// Zeroes every cell.
    pub fn clear(&mut self) {
        for row in self.rows.iter_mut() {
            row.fill(0);
        }
    }

    /// Non-zero cells as `(row * width + column, count)`, for compact
    /// serialisation of sparse sketches.
    pub(crate) fn nonzero_cells(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.rows
            .iter()
            .flatten()
            .enumerate()
            .filter(|&(_, &c)| c != 0)
            .map(|(i, &c)| (u32::try_from(i).unwrap_or(u32::MAX), c))
    }

    /// Sets the cell `row * width + column`; false if outside the sketch.
    pub(crate) fn set_cell(&mut self, idx: u32, count: u64) -> bool {
        let (r, c) = (idx as usize / WIDTH, idx as usize % WIDTH);
        match self.rows.get_mut(r) {
            Some(row) => {
                row[c] = count;
                true
            }
            None => false,
        }
    }
}

/// Registers of the kernel's distinct-source HyperLogLog.
pub(crate) const KERNEL_HLL_M: usize = HLL_REGISTERS as usize;

/// `2^-r` for every possible register value, so sums need no `powi`.
const POW2_NEG: [f64; 64] = {
    let mut t = [0.0f64; 64];
    let mut i = 0;
    let mut v = 1.0f64;
    while i < 64 {
        t[i] = v;
        v /= 2.0;
        i += 1;
    }
    t
};

/// A register an insert raised ([`HyperLogLog::insert_hash`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Raise {
    /// Register index.
    pub index: usize,
    /// Its value before.
    pub from: u8,
    /// Its value now.
    pub to: u8,
}

/// A HyperLogLog of `M` one-byte registers (a power of two, at least 16;
/// precision `p = log2 M`). Items are indexed and ranked as the XDP program
/// does ([`sensor_common::sketch::hll_index_rank_p`]), so the kernel's
/// registers (`M` = [`KERNEL_HLL_M`]) merge in directly. The default size is
/// the kernel's; the feature extractor keeps small per-host ones.
#[derive(Clone, PartialEq, Eq)]
pub struct HyperLogLog<const M: usize = KERNEL_HLL_M> {
    regs: [u8; M],
}

impl<const M: usize> Default for HyperLogLog<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const M: usize> std::fmt::Debug for HyperLogLog<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperLogLog")
            .field("registers", &M)
            .field("estimate", &self.estimate())
            .finish_non_exhaustive()
    }
}

impl<const M: usize> HyperLogLog<M> {
    /// Precision: bits of the hash that pick the register.
    pub const P: u32 = {
        assert!(M.is_power_of_two() && M >= 16, "M: a power of two >= 16");
        M.trailing_zeros()
    };

    /// An empty sketch.
    #[must_use]
    pub const fn new() -> Self {
        let _ = Self::P;
        Self { regs: [0; M] }
    }

    /// Register index and rank of a 64-bit hash.
    #[inline]
    #[must_use]
    pub(crate) const fn index_rank(hash: u64) -> (usize, u8) {
        let (i, rank) = hll_index_rank_p(hash, Self::P);
        (i as usize, rank)
    }

    /// Inserts a 64-bit hash exactly as the XDP program does; returns the
    /// register it raised, if any.
    #[inline]
    pub(crate) fn insert_hash(&mut self, hash: u64) -> Option<Raise> {
        let (index, rank) = Self::index_rank(hash);
        let r = &mut self.regs[index];
        let from = *r;
        (rank > from).then(|| {
            *r = rank;
            Raise {
                index,
                from,
                to: rank,
            }
        })
    }

    /// Inserts an address exactly as the XDP program does.
    pub fn insert_addr(&mut self, addr: &[u8; 16]) {
        self.insert_hash(hash_addr(addr));
    }

    /// Register `i`.
    #[inline]
    #[must_use]
    pub fn register(&self, i: usize) -> u8 {
        self.regs[i]
    }

    /// Merges registers (one CPU's or an epoch's of the kernel, or another
    /// sketch's): register-wise max.
    pub(crate) fn merge_registers(&mut self, regs: &[u8; M]) {
        for (d, &s) in self.regs.iter_mut().zip(regs.iter()) {
            *d = (*d).max(s);
        }
    }

    /// Merges another sketch: register-wise max.
    pub fn merge(&mut self, other: &Self) {
        self.merge_registers(&other.regs);
    }

    /// Zeroes every register.
    pub fn clear(&mut self) {
        self.regs.fill(0);
    }

    /// `2^-r`, the register value `r`'s term of the harmonic sum.
    #[inline]
    #[must_use]
    pub(crate) fn pow2_neg(r: u8) -> f64 {
        POW2_NEG[usize::from(r)]
    }

    /// The harmonic sum `Σ 2^-reg` (in register order) and the number of
    /// zero registers: what [`Self::classic_estimate`] needs.
    #[must_use]
    pub(crate) fn harmonic_sum_and_zeros(&self) -> (f64, u32) {
        let mut sum = 0.0;
        let mut zeros = 0;
        for &r in &self.regs {
            sum += Self::pow2_neg(r);
            zeros += u32::from(r == 0);
        }
        (sum, zeros)
    }

    /// Estimated number of distinct items, with Ertl's improved estimator
    /// ("New cardinality estimation algorithms for HyperLogLog sketches",
    /// 2017). The classic raw estimate with a linear-counting switch at 2.5·m
    /// is biased by several percent between 2.5·m and 5·m (HLL++ fixes that
    /// with empirical tables); Ertl's closed form is unbiased over the whole
    /// range from the register histogram alone, and collapses to linear
    /// counting for small sets.
    #[must_use]
    pub fn estimate(&self) -> f64 {
        // Registers hold ranks 0..=q+1 with q = 64 - p (at most 60).
        let q = 64 - Self::P as usize;
        let mut hist = [0u32; 62];
        for &r in &self.regs {
            hist[usize::from(r).min(q + 1)] += 1;
        }
        #[expect(clippy::cast_precision_loss, reason = "M is at most 2^32, exact")]
        let m = M as f64;
        if hist[0] as usize == M {
            return 0.0;
        }
        let mut z = m * ertl_tau(1.0 - f64::from(hist[q + 1]) / m);
        for k in (1..=q).rev() {
            z = 0.5 * (z + f64::from(hist[k]));
        }
        z += m * ertl_sigma(f64::from(hist[0]) / m);
        let alpha_inf = 0.5 / std::f64::consts::LN_2;
        alpha_inf * m * m / z
    }

    /// The classic estimate (Flajolet et al.) from a harmonic sum and zero
    /// count: linear counting while the raw estimate is at most 2.5·m and a
    /// register is still zero, else the raw estimate. Cheaper than
    /// [`Self::estimate`] when the sum is kept incrementally, as the feature
    /// extractor does.
    #[inline]
    #[must_use]
    pub(crate) fn classic_estimate(harmonic_sum: f64, zeros: u32) -> f64 {
        if Self::is_linear(harmonic_sum, zeros) {
            Self::linear_estimate(zeros)
        } else {
            Self::raw_estimate(harmonic_sum)
        }
    }

    /// The raw estimate `α_m·m²/Σ`.
    #[inline]
    fn raw_estimate(harmonic_sum: f64) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "M is at most 2^32, exact")]
        let m = M as f64;
        let alpha = match M {
            16 => 0.673,
            32 => 0.697,
            64 => 0.709,
            _ => 0.7213 / (1.0 + 1.079 / m),
        };
        alpha * m * m / harmonic_sum
    }

    /// True when [`Self::classic_estimate`] uses linear counting: a small
    /// range with at least one zero register.
    #[inline]
    #[must_use]
    pub(crate) fn is_linear(harmonic_sum: f64, zeros: u32) -> bool {
        #[expect(clippy::cast_precision_loss, reason = "M is at most 2^32, exact")]
        let m = M as f64;
        Self::raw_estimate(harmonic_sum) <= 2.5 * m && zeros > 0
    }

    /// The linear-counting estimate for `zeros` (1..=m) zero registers. It
    /// depends on the zero count alone, so callers may tabulate functions of
    /// it.
    #[inline]
    #[must_use]
    pub(crate) fn linear_estimate(zeros: u32) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "M is at most 2^32, exact")]
        let m = M as f64;
        m * (m / f64::from(zeros)).ln()
    }
}

/// σ(x) = x + Σ_{k≥1} x^(2^k) 2^(k-1), for the registers still zero.
fn ertl_sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if z.to_bits() == prev.to_bits() {
            return z;
        }
    }
}

/// τ(x) = (1 - x - Σ_{k≥1} (1 - x^(2^-k))² 2^-k) / 3, for the saturated
/// registers.
fn ertl_tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if z.to_bits() == prev.to_bits() {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// `SplitMix64`: a deterministic stream of well-mixed keys for tests.
    struct SplitMix(u64);
    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn addr(&mut self) -> [u8; 16] {
            let mut a = [0u8; 16];
            a[..8].copy_from_slice(&self.next().to_le_bytes());
            a[8..].copy_from_slice(&self.next().to_le_bytes());
            a
        }
    }

    fn v4(i: u32) -> [u8; 16] {
        sensor_common::FlowKey::map_v4(i.to_be_bytes())
    }

    #[test]
    fn hll_within_five_percent_on_random_keys() {
        for (n, seed) in [
            (10_000u32, 1u64),
            (10_000, 11),
            (100_000, 2),
            (100_000, 12),
            (1_000_000, 5),
            (1_000, 3),
            (100, 4),
        ] {
            let mut rng = SplitMix(seed);
            let mut h = HyperLogLog::<KERNEL_HLL_M>::new();
            for _ in 0..n {
                h.insert_addr(&rng.addr());
            }
            let est = h.estimate();
            let err = (est - f64::from(n)).abs() / f64::from(n);
            assert!(err < 0.05, "n={n} estimate={est} err={err}");
        }
    }

    #[test]
    fn hll_within_five_percent_on_sequential_ipv4_sources() {
        // Sequential addresses are what a scan or spoofed flood produces.
        for n in [5_000u32, 10_000, 20_000, 100_000] {
            let mut h = HyperLogLog::<KERNEL_HLL_M>::new();
            for i in 0..n {
                h.insert_addr(&v4(0x0a00_0000 + i));
            }
            let est = h.estimate();
            let err = (est - f64::from(n)).abs() / f64::from(n);
            assert!(err < 0.05, "n={n} estimate={est} err={err}");
        }
    }

    #[test]
    fn hll_merge_is_union_and_duplicates_do_not_count() {
        let mut a = HyperLogLog::<KERNEL_HLL_M>::new();
        let mut b = HyperLogLog::<KERNEL_HLL_M>::new();
        for i in 0..20_000u32 {
            a.insert_addr(&v4(i));
            a.insert_addr(&v4(i)); // duplicate
            b.insert_addr(&v4(i + 10_000));
        }
        let mut u = a.clone();
        u.merge(&b);
        let est = u.estimate();
        assert!((est - 30_000.0).abs() / 30_000.0 < 0.05, "{est}");
        assert_eq!(HyperLogLog::<KERNEL_HLL_M>::new().estimate(), 0.0);
        // Merging kernel registers is the same max.
        let mut k = sensor_common::sketch::HllRegisters {
            regs: [0; KERNEL_HLL_M],
        };
        k.regs.copy_from_slice(&b.regs[..]);
        let mut via_kernel = a.clone();
        via_kernel.merge_registers(&k.regs);
        assert_eq!(via_kernel, u);
    }

    #[test]
    fn rank_is_bounded_for_every_size() {
        type Small = HyperLogLog<64>;
        assert_eq!(Small::index_rank(0).1, (64 - Small::P + 1) as u8);
        assert_eq!(Small::index_rank(u64::MAX), (63, 1));
        let (i, r) = HyperLogLog::<KERNEL_HLL_M>::index_rank(0x1234_5678_9abc_def0);
        let (ki, kr) = sensor_common::sketch::hll_index_rank(0x1234_5678_9abc_def0);
        assert_eq!((i, r), (ki as usize, kr), "indexed as the kernel does");
    }

    #[test]
    fn cms_matches_brute_force_within_bounds() {
        let mut rng = SplitMix(7);
        let mut cms = CountMin::new();
        let mut truth: HashMap<[u8; 16], u64> = HashMap::new();
        // Skewed: a few heavy sources and many light ones.
        for i in 0..5_000u32 {
            let addr = v4(0xc0a8_0000 + i);
            let count = if i < 10 { 10_000 } else { 1 + rng.next() % 20 };
            cms.add(&addr, count);
            *truth.entry(addr).or_default() += count;
        }
        let total: u64 = truth.values().sum();
        assert_eq!(cms.total(), total);
        let bound = CountMin::epsilon() * total as f64;
        let mut over_bound = 0usize;
        for (addr, &t) in &truth {
            let e = cms.estimate(addr);
            assert!(e >= t, "Count-Min never underestimates");
            if (e - t) as f64 > bound {
                over_bound += 1;
            }
        }
        let frac = over_bound as f64 / truth.len() as f64;
        assert!(frac <= CountMin::delta(), "{frac} > δ");
        // Heavy hitters are close to exact.
        for i in 0..10u32 {
            let e = cms.estimate(&v4(0xc0a8_0000 + i));
            assert!(e - 10_000 <= bound as u64, "{e}");
        }
        // An address never counted estimates at most the bound.
        assert!(cms.estimate(&v4(0x0101_0101)) as f64 <= bound * 4.0);
    }

    #[test]
    fn cms_rows_merge_by_sum() {
        let mut a = CountMin::new();
        a.add(&v4(1), 5);
        let mut kernel = CmsRow { cells: [0; WIDTH] };
        let col = cms_column(hash_addr(&v4(1)), 0) as usize;
        kernel.cells[col] = 7;
        a.add_row(0, &kernel);
        assert_eq!(a.total(), 12);
        let mut b = CountMin::new();
        b.merge(&a);
        b.merge(&a);
        assert_eq!(b.total(), 24);
        b.clear();
        assert_eq!(b.total(), 0);
        assert!((CountMin::epsilon() - 0.001_327).abs() < 1e-5);
        assert!((CountMin::delta() - 0.018_316).abs() < 1e-5);
    }
}
