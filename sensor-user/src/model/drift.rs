//! Drift of the traffic away from the model's training data: every scored
//! row is binned, per feature, by the benign training quantiles its model
//! card lists, and the alert stage compares the bins' shares over a
//! sliding window with the shares the quantiles promise (population
//! stability index, PSI; see `docs/alerts.md`).
//!
//! The counting lives here, beside the scoring pipeline, because the
//! pipeline is the one place that sees every scored row: rows below the
//! emit floor never reach the alert stage, and drift is a property of all
//! the traffic, not of the suspicious part. Each worker counts into its own
//! array (one binary search over at most [`MAX_LEVELS`] cut points per
//! feature, no allocation, no shared cache line) and adds it to the shared
//! [`DriftTally`] every few milliseconds; the alert stage takes the tally
//! once per sub-window.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use super::card::ModelCard;
use crate::features::schema::MAX_FEATURES;

/// Most quantile levels a baseline may have (bins are levels + 1): the 7
/// the training script writes. The lookup compares a row's value with all
/// of them at once, so each one more costs every row.
pub const MAX_LEVELS: usize = 7;
/// Bins per feature in the count arrays.
pub const MAX_BINS: usize = MAX_LEVELS + 1;
/// Length of a count array: every feature a row can have, then the
/// classifier's attack score.
pub const COUNTS: usize = (MAX_FEATURES + 1) * MAX_BINS;
/// What the classifier's attack score (`1 − P(benign)`) is called among
/// the features (PSI, records, metrics).
pub const SCORE_NAME: &str = "attack_score";
/// Shares (observed and expected) below this count as this in the PSI, so
/// an empty bin adds a large but finite term instead of infinity. 1e-4 is
/// one row in ten thousand: a bin that should hold 1 % and holds nothing
/// adds (0.01 − 0.0001) · ln(100) ≈ 0.046.
pub const SHARE_FLOOR: f64 = 1e-4;

/// Population stability index of `counts` against `expected` shares (same
/// length): Σ (aᵢ − eᵢ) · ln(aᵢ / eᵢ), each share floored at
/// [`SHARE_FLOOR`]. 0 without rows.
#[must_use]
pub fn psi(counts: &[u64], expected: &[f64]) -> f64 {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return 0.0;
    }
    counts
        .iter()
        .zip(expected)
        .map(|(&c, &e)| {
            let a = (c as f64 / n as f64).max(SHARE_FLOOR);
            let e = e.max(SHARE_FLOOR);
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// One feature's bins: a value `v` falls in bin `i` = the number of cut
/// points below it, so bin 0 is `v ≤ cut₀` and the last bin `v > cutₙ`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureBins {
    /// Distinct cut points, ascending, each raised by the card's rounding
    /// tolerance (see [`FeatureBins::new`]), then +∞ to the end: a fixed
    /// width the bin lookup compares in one pass, without branches (the
    /// compiler turns it into a few vector compares).
    cuts: [f32; MAX_BINS],
    /// Expected share of each bin (`cuts.len() + 1`, summing to 1).
    expected: Vec<f64>,
}

impl FeatureBins {
    /// Bins from quantile `levels` (strictly increasing, inside (0, 1)) and
    /// the feature's `values` at them (non-decreasing, finite); `None`
    /// otherwise. `cdf`, when the card records it (and it is usable: one
    /// share in [0, 1] per value, non-decreasing), gives each value's exact
    /// share `F(c)` of training rows at or below it.
    ///
    /// Equal values at several levels (a feature that is 0 on most rows)
    /// are one cut point with a point mass on it. Without `cdf`, its share
    /// `F(c)` is only known to lie between the highest of those levels and
    /// the next distinct level (or 1), so the bin up to it takes the middle
    /// of that interval, which halves the worst-case error of either end;
    /// a lone cut point is taken as continuous (`F(c)` = its level), which
    /// is wrong by up to the gap to the next level when a point mass sits
    /// on it.
    ///
    /// Cards round quantiles to 6 decimals and rows are `f32`: a row equal
    /// to a cut point (log1p(1) for one packet) must land at or below it,
    /// so each cut is raised by 1e-6 · (1 + |c|).
    #[must_use]
    pub fn new(levels: &[f64], values: &[f64], cdf: Option<&[f64]>) -> Option<Self> {
        let ok_levels = !levels.is_empty()
            && levels.len() <= MAX_LEVELS
            && levels.iter().all(|l| *l > 0.0 && *l < 1.0)
            && levels.windows(2).all(|w| w[0] < w[1]);
        let ok_values = values.len() == levels.len()
            && values.iter().all(|v| v.is_finite())
            && values.windows(2).all(|w| w[0] <= w[1]);
        if !(ok_levels && ok_values) {
            return None;
        }
        let cdf = cdf.filter(|c| {
            c.len() == values.len()
                && c.iter().all(|f| (0.0..=1.0).contains(f))
                && c.windows(2).all(|w| w[0] <= w[1])
        });
        let (mut cuts, mut below) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < values.len() {
            let mut j = i;
            while j + 1 < values.len() && values[j + 1] == values[i] {
                j += 1;
            }
            let f = if let Some(cdf) = cdf {
                cdf[j]
            } else if j > i {
                let next = levels.get(j + 1).copied().unwrap_or(1.0);
                f64::midpoint(levels[j], next)
            } else {
                levels[i]
            };
            let c = values[i];
            cuts.push((c + 1e-6 * (1.0 + c.abs())) as f32);
            below.push(f);
            i = j + 1;
        }
        let mut expected = Vec::with_capacity(cuts.len() + 1);
        let mut prev = 0.0;
        for f in below.iter().copied().chain([1.0]) {
            expected.push(f - prev);
            prev = f;
        }
        let mut padded = [f32::INFINITY; MAX_BINS];
        padded[..cuts.len()].copy_from_slice(&cuts);
        Some(Self {
            cuts: padded,
            expected,
        })
    }

    /// The bin of `v`: the number of cut points below it (a NaN falls in
    /// bin 0; features are never NaN).
    #[inline]
    #[must_use]
    pub fn bin(&self, v: f32) -> usize {
        self.cuts.iter().map(|&c| usize::from(c < v)).sum()
    }

    /// Expected share of each bin.
    #[must_use]
    pub fn expected(&self) -> &[f64] {
        &self.expected
    }
}

/// The bins of every feature a model card gives quantiles for.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftBaseline {
    /// `name@version` of the card the quantiles come from.
    pub model: String,
    /// Feature names, aligned with `bins`, then [`SCORE_NAME`] when the
    /// card has score quantiles.
    pub names: Vec<String>,
    /// (index in the row, bins).
    pub bins: Vec<(usize, FeatureBins)>,
    /// The attack score's bins (`score_quantiles` of a classifier card).
    pub score: Option<FeatureBins>,
}

impl DriftBaseline {
    /// The baseline of `card` (features beyond the row width or with
    /// unusable quantiles are left out, with a warning); `None` when the
    /// card has no usable quantiles at all.
    #[must_use]
    pub fn from_card(card: &ModelCard) -> Option<Self> {
        let q = card.quantiles.as_ref()?;
        let (mut names, mut bins) = (Vec::new(), Vec::new());
        for (i, (name, values)) in card.feature_names.iter().zip(&q.values).enumerate() {
            let Some(values) = values else { continue };
            let cdf = q.cdf.get(i).and_then(Option::as_deref);
            if let Some(b) = FeatureBins::new(&q.levels, values, cdf).filter(|_| i < MAX_FEATURES) {
                names.push(name.clone());
                bins.push((i, b));
            } else {
                tracing::warn!(
                    model = %card.name,
                    feature = %name,
                    "baseline quantiles unusable for drift (levels strictly rising in (0, 1), \
                     at most {MAX_LEVELS}, values finite and non-decreasing): feature left out"
                );
            }
        }
        let score = card
            .score_quantiles
            .as_ref()
            .and_then(|q| FeatureBins::new(&q.levels, &q.values, q.cdf.as_deref()));
        if score.is_some() {
            names.push(SCORE_NAME.to_owned());
        }
        (!bins.is_empty() || score.is_some()).then(|| Self {
            model: format!("{}@{}", card.name, card.version),
            names,
            bins,
            score,
        })
    }

    /// Adds one row's bins and its attack `score`'s to `counts` ([`COUNTS`]
    /// long, [`MAX_BINS`] per feature, the score after the features).
    #[inline]
    pub fn count(&self, row: &[f32], score: f32, counts: &mut [u64]) {
        for (k, (i, b)) in self.bins.iter().enumerate() {
            if let Some(&v) = row.get(*i) {
                counts[k * MAX_BINS + b.bin(v)] += 1;
            }
        }
        if let Some(b) = &self.score {
            counts[self.bins.len() * MAX_BINS + b.bin(score)] += 1;
        }
    }

    /// PSI of each feature for `counts` (as [`Self::count`] fills them),
    /// written to `out` (cleared first).
    pub fn psi_into(&self, counts: &[u64], out: &mut Vec<f64>) {
        out.clear();
        let all = self.bins.iter().map(|(_, b)| b).chain(self.score.as_ref());
        for (k, b) in all.enumerate() {
            let n = b.expected().len();
            out.push(psi(&counts[k * MAX_BINS..k * MAX_BINS + n], b.expected()));
        }
    }
}

/// Bin counts shared by the workers' pipelines and read by the alert stage:
/// the baseline the workers bin by (that of the classifier they run) and
/// the counts added since the stage last took them.
pub struct DriftTally {
    baseline: Mutex<Option<Arc<DriftBaseline>>>,
    counts: Box<[AtomicU64]>,
    rows: AtomicU64,
}

impl Default for DriftTally {
    fn default() -> Self {
        Self {
            baseline: Mutex::new(None),
            counts: (0..COUNTS).map(|_| AtomicU64::new(0)).collect(),
            rows: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for DriftTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftTally").finish_non_exhaustive()
    }
}

impl DriftTally {
    /// The baseline for `card`: the one in place when `card` gives the
    /// same bins (every worker then shares it), otherwise built and put in
    /// place (a model reload, or a card re-baselined under the same
    /// version). `None`, and none in place, when the card has none.
    pub fn baseline_for(&self, card: &ModelCard) -> Option<Arc<DriftBaseline>> {
        let mut slot = self.baseline.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(b) = DriftBaseline::from_card(card) else {
            *slot = None;
            return None;
        };
        if let Some(cur) = slot.as_ref().filter(|cur| ***cur == b) {
            return Some(Arc::clone(cur));
        }
        let b = Arc::new(b);
        *slot = Some(Arc::clone(&b));
        Some(b)
    }

    /// The baseline the workers bin by now.
    #[must_use]
    pub fn baseline(&self) -> Option<Arc<DriftBaseline>> {
        self.baseline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds a worker's `counts` of `rows` rows and zeroes them.
    pub fn add(&self, counts: &mut [u64], rows: &mut u64) {
        for (shared, c) in self.counts.iter().zip(counts.iter_mut()) {
            if *c != 0 {
                shared.fetch_add(*c, Ordering::Relaxed);
                *c = 0;
            }
        }
        self.rows.fetch_add(*rows, Ordering::Relaxed);
        *rows = 0;
    }

    /// Moves the counts added since the last call into `out` (overwritten)
    /// and returns their rows.
    pub fn take(&self, out: &mut [u64]) -> u64 {
        for (o, shared) in out.iter_mut().zip(self.counts.iter()) {
            *o = shared.swap(0, Ordering::Relaxed);
        }
        self.rows.swap(0, Ordering::Relaxed)
    }
}

/// What a worker's pipeline keeps for drift: the shared tally, the baseline
/// it bins by, and its own counts since it last added them.
#[derive(Debug)]
pub struct DriftCounter {
    tally: Arc<DriftTally>,
    baseline: Option<Arc<DriftBaseline>>,
    counts: Vec<u64>,
    rows: u64,
}

impl DriftCounter {
    /// A counter binning by `card`'s baseline into `tally`.
    #[must_use]
    pub fn new(tally: Arc<DriftTally>, card: &ModelCard) -> Self {
        Self {
            baseline: tally.baseline_for(card),
            tally,
            counts: vec![0; COUNTS],
            rows: 0,
        }
    }

    /// Counts one scored row and its attack score.
    #[inline]
    pub fn count(&mut self, row: &[f32], score: f32) {
        if let Some(b) = &self.baseline {
            b.count(row, score, &mut self.counts);
            self.rows += 1;
        }
    }

    /// Adds the counts so far to the tally.
    pub fn publish(&mut self) {
        if self.rows > 0 {
            self.tally.add(&mut self.counts, &mut self.rows);
        }
    }

    /// Bins by `card`'s baseline from now on (a model swap), after adding
    /// the counts binned by the old one.
    pub fn swap(&mut self, card: &ModelCard) {
        self.publish();
        self.baseline = self.tally.baseline_for(card);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVELS: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];

    fn counts_of(b: &FeatureBins, values: impl IntoIterator<Item = f32>) -> Vec<u64> {
        let mut c = vec![0u64; b.expected().len()];
        for v in values {
            c[b.bin(v)] += 1;
        }
        c
    }

    #[test]
    fn psi_of_known_shares() {
        assert!(psi(&[50, 50], &[0.5, 0.5]).abs() < 1e-12);
        // 0.4·ln(1.8) + 0.4·ln(5)
        let want = 0.4 * 1.8f64.ln() + 0.4 * 5f64.ln();
        assert!((psi(&[90, 10], &[0.5, 0.5]) - want).abs() < 1e-12);
        // An empty bin is floored, not infinite.
        let p = psi(&[100, 0], &[0.5, 0.5]);
        let want = (1.0 - 0.5) * 2f64.ln() + (SHARE_FLOOR - 0.5) * (SHARE_FLOOR / 0.5).ln();
        assert!((p - want).abs() < 1e-12, "{p} vs {want}");
        assert_eq!(psi(&[0, 0], &[0.5, 0.5]), 0.0);
    }

    #[test]
    fn distinct_cuts_give_eight_bins_with_the_levels_shares() {
        let b = FeatureBins::new(&LEVELS, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], None).unwrap();
        let want = [0.01, 0.04, 0.20, 0.25, 0.25, 0.20, 0.04, 0.01];
        assert_eq!(b.expected().len(), 8);
        for (e, w) in b.expected().iter().zip(want) {
            assert!((e - w).abs() < 1e-12);
        }
        // At a cut point: at or below it.
        assert_eq!(b.bin(1.0), 0);
        assert_eq!(b.bin(1.000_000_5), 0, "within the card's rounding");
        assert_eq!(b.bin(1.01), 1);
        assert_eq!(b.bin(7.5), 7);
        assert_eq!(b.bin(-3.0), 0);
    }

    /// A sample drawn by the baseline's own shares scores PSI ≈ 0; the
    /// same rows moved up by three bins score a large PSI, equal to the
    /// formula on the shifted shares.
    #[test]
    fn matching_sample_is_quiet_and_a_shifted_one_is_not() {
        let b = FeatureBins::new(&LEVELS, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], None).unwrap();
        // 10 000 rows: 100 in bin 0 (≤ 1), 400 in bin 1 …
        let per_bin = [100, 400, 2000, 2500, 2500, 2000, 400, 100];
        let mid = [0.5f32, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5];
        let sample: Vec<f32> = per_bin
            .iter()
            .zip(mid)
            .flat_map(|(&n, v)| std::iter::repeat_n(v, n))
            .collect();
        let c = counts_of(&b, sample.iter().copied());
        assert_eq!(c, per_bin.map(|n| n as u64));
        assert!(psi(&c, b.expected()) < 1e-9);
        let shifted = counts_of(&b, sample.iter().map(|v| v + 3.0));
        let p = psi(&shifted, b.expected());
        // Shares after the shift: bins 0-2 empty, 3: 0.01, 4: 0.04, 5: 0.2,
        // 6: 0.25, 7: 0.5.
        let a = [0.0, 0.0, 0.0, 0.01, 0.04, 0.20, 0.25, 0.50];
        let want: f64 = a
            .iter()
            .zip(b.expected())
            .map(|(&a, &e)| {
                let (a, e) = (f64::max(a, SHARE_FLOOR), f64::max(e, SHARE_FLOOR));
                (a - e) * (a / e).ln()
            })
            .sum();
        assert!((p - want).abs() < 1e-9, "{p} vs {want}");
        assert!(p > 2.0, "{p}");
    }

    /// Tied cut points merge: a feature that is 0 on at least 75 % of the
    /// training rows has one bin `≤ 0` whose share lies between 0.75 and
    /// the next level, 0.95: the middle, 0.85.
    #[test]
    fn tied_cuts_merge_into_one_point_bin() {
        let b = FeatureBins::new(&LEVELS, &[0.0, 0.0, 0.0, 0.0, 0.0, 0.125, 0.2], None).unwrap();
        let want = [0.85, 0.95 - 0.85, 0.04, 0.01];
        assert_eq!(b.expected().len(), want.len());
        for (e, w) in b.expected().iter().zip(want) {
            assert!((e - w).abs() < 1e-12, "{:?}", b.expected());
        }
        assert_eq!(b.bin(0.0), 0);
        assert_eq!(b.bin(0.1), 1);
        assert_eq!(b.bin(0.15), 2);
        assert_eq!(b.bin(0.5), 3);
        // All equal: F(c) in [0.99, 1], one bin of 0.995 and the rest.
        let b = FeatureBins::new(&LEVELS, &[0.0; 7], None).unwrap();
        assert_eq!(b.expected().len(), 2);
        assert!((b.expected()[0] - 0.995).abs() < 1e-12);
        // Matching traffic: 85 % zeros … is quiet; all rows non-zero is not.
        let sample = std::iter::repeat_n(0.0f32, 85)
            .chain(std::iter::repeat_n(0.1, 10))
            .chain(std::iter::repeat_n(0.15, 4))
            .chain([0.5]);
        let b = FeatureBins::new(&LEVELS, &[0.0, 0.0, 0.0, 0.0, 0.0, 0.125, 0.2], None).unwrap();
        assert!(psi(&counts_of(&b, sample), b.expected()) < 1e-9);
        assert!(psi(&counts_of(&b, [0.1f32; 100]), b.expected()) > 1.0);
    }

    /// With the card's shares, a tie's point bin takes its exact share;
    /// an unusable `cdf` falls back to the estimate.
    #[test]
    fn recorded_shares_replace_the_estimate() {
        let values = [0.0, 0.0, 0.0, 0.0, 0.0, 0.125, 0.2];
        let cdf = [0.9, 0.9, 0.9, 0.9, 0.9, 0.97, 0.995];
        let b = FeatureBins::new(&LEVELS, &values, Some(&cdf)).unwrap();
        let want = [0.9, 0.07, 0.025, 0.005];
        for (e, w) in b.expected().iter().zip(want) {
            assert!((e - w).abs() < 1e-12, "{:?}", b.expected());
        }
        let falling = [0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.995];
        let b = FeatureBins::new(&LEVELS, &values, Some(&falling)).unwrap();
        assert!((b.expected()[0] - 0.85).abs() < 1e-12);
    }

    /// The committed classifier card bins every feature of the schema, each
    /// feature's expected shares summing to 1.
    #[test]
    fn the_shipped_card_bins_every_feature() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/flow-classifier.card.json"
        );
        let card = ModelCard::load(std::path::Path::new(path)).unwrap();
        let b = DriftBaseline::from_card(&card).unwrap();
        assert_eq!(b.names.len(), crate::features::N_FEATURES);
        for (_, bins) in &b.bins {
            let sum: f64 = bins.expected().iter().sum();
            assert!((sum - 1.0).abs() < 1e-9, "{bins:?}");
            assert!(bins.expected().iter().all(|e| *e >= 0.0), "{bins:?}");
        }
    }

    /// A classifier card's score quantiles add the attack score after the
    /// features, binned from the score each row is counted with.
    #[test]
    fn score_quantiles_add_the_attack_score() {
        let card = ModelCard::from_json(&serde_json::json!({
            "name": "c", "version": "1",
            "schema": {"version": 1, "features": [{"name": "a", "unit": "x"}]},
            "baseline_quantiles": {"quantiles": [0.5], "benign_train": {"a": [1.0]}},
            "score_quantiles": {"quantiles": [0.5, 0.99], "benign_train": [0.01, 0.2],
                                "benign_train_cdf": [0.5, 0.99]}
        }))
        .unwrap();
        let b = DriftBaseline::from_card(&card).unwrap();
        assert_eq!(b.names, ["a", SCORE_NAME]);
        let mut counts = vec![0; COUNTS];
        // Scores as the baseline: half at or below 0.01, 49 % to 0.2, 1 % above.
        for i in 0..1000 {
            let score = match i % 100 {
                0..50 => 0.005,
                50..99 => 0.1,
                _ => 0.9,
            };
            b.count(&[[0.5, 1.5][i % 2]], score, &mut counts);
        }
        let mut psi = Vec::new();
        b.psi_into(&counts, &mut psi);
        assert_eq!(psi.len(), 2);
        assert!(psi.iter().all(|p| *p < 1e-9), "{psi:?}");
        // Every row scored high: the score moved, the feature did not.
        let mut counts = vec![0; COUNTS];
        for i in 0..1000 {
            b.count(&[[0.5, 1.5][i % 2]], 0.9, &mut counts);
        }
        b.psi_into(&counts, &mut psi);
        assert!(psi[1] > 1.0, "{psi:?}");
        assert!(psi[0] < 1e-9, "{psi:?}");
    }

    #[test]
    fn unusable_quantiles_give_no_bins() {
        let rising = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        assert!(FeatureBins::new(&LEVELS, &[1.0, 2.0, 3.0, 5.0, 4.3, 9.0, 20.0], None).is_none());
        assert!(FeatureBins::new(&LEVELS, &rising[..6], None).is_none());
        assert!(FeatureBins::new(&LEVELS, &[f64::NAN; 7], None).is_none());
        assert!(FeatureBins::new(&[0.5, 0.25], &rising[..2], None).is_none());
        assert!(FeatureBins::new(&[0.0, 0.5], &rising[..2], None).is_none());
        assert!(FeatureBins::new(&[], &[], None).is_none());
    }

    #[test]
    fn tally_moves_worker_counts_to_the_stage_once() {
        let card = ModelCard::from_json(&serde_json::json!({
            "name": "m", "version": "1",
            "schema": {"version": 1, "features": [{"name": "a", "unit": "x"}, {"name": "b", "unit": "x"}]},
            "baseline_quantiles": {"quantiles": [0.5], "benign_train": {"b": [10.0]}}
        }))
        .unwrap();
        let tally = Arc::new(DriftTally::default());
        let mut w1 = DriftCounter::new(Arc::clone(&tally), &card);
        let mut w2 = DriftCounter::new(Arc::clone(&tally), &card);
        let base = tally.baseline().unwrap();
        assert_eq!(base.names, ["b"]);
        assert!(Arc::ptr_eq(&base, w2.baseline.as_ref().unwrap()));
        w1.count(&[0.0, 5.0], 0.0);
        w2.count(&[0.0, 50.0], 0.0);
        w2.count(&[0.0, 60.0], 0.0);
        w1.publish();
        w2.publish();
        let mut out = vec![0; COUNTS];
        assert_eq!(tally.take(&mut out), 3);
        assert_eq!(&out[..2], &[1, 2]);
        assert_eq!(tally.take(&mut out), 0);
        assert!(out.iter().all(|&c| c == 0));
        // The same model re-baselined: a swap bins by the new cut point.
        let mut v = serde_json::json!({
            "name": "m", "version": "1",
            "schema": {"version": 1, "features": [{"name": "a", "unit": "x"}, {"name": "b", "unit": "x"}]},
            "baseline_quantiles": {"quantiles": [0.5], "benign_train": {"b": [100.0]}}
        });
        let rebased = ModelCard::from_json(&v).unwrap();
        w1.swap(&rebased);
        let now = tally.baseline().unwrap();
        assert!(!Arc::ptr_eq(&now, &base));
        w1.count(&[0.0, 50.0], 0.0);
        w1.publish();
        assert_eq!(tally.take(&mut out), 1);
        assert_eq!(&out[..2], &[1, 0], "50 is below the new cut, 100");
        // A card without quantiles: nothing counted.
        v["baseline_quantiles"] = serde_json::Value::Null;
        w1.swap(&ModelCard::from_json(&v).unwrap());
        assert!(tally.baseline().is_none());
        w1.count(&[0.0, 50.0], 0.0);
        w1.publish();
        assert_eq!(tally.take(&mut out), 0);
    }
}
