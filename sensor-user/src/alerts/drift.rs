//! The drift monitor: the workers' bin counts (`model::drift`) over a
//! sliding window of [`SUBWINDOWS`] sub-windows, judged against the model
//! card's baseline at each rotation, and the `drift` records it writes.
//!
//! A record opens (`start`) when some feature's PSI passes the threshold,
//! is repeated (`update`) only when the set of moved features changes or a
//! whole window has passed since the last one, and ends (`end`) at the
//! first judged window in which no feature passes. A window is judged only
//! once it spans its whole length of counting (after the start, a reload
//! that changes it, or a model swap: the sensor's 5-minute and 1-hour
//! features are still filling then) and holds at least `min_rows` rows;
//! otherwise the state and the latest PSI stay.

use std::sync::Arc;

use serde::Serialize;

use super::config::{DriftSection, secs_to_ns};
use crate::model::drift::{COUNTS, DriftBaseline, DriftTally};

/// Sub-windows per window: the window moves in tenths of its length.
pub(super) const SUBWINDOWS: usize = 10;
const CELLS: usize = COUNTS;

/// What a judged window found, for the stage to write.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DriftFinding {
    pub state: DriftState,
    pub baseline: String,
    pub window_s: f64,
    pub rows: u64,
    pub threshold: f64,
    /// Moved features and their PSI, highest first.
    pub moved: Vec<(String, f64)>,
    pub max_psi: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum DriftState {
    Start,
    Update,
    End,
}

/// The window and the drift state; owned by the alert stage.
pub(super) struct DriftMonitor {
    tally: Option<Arc<DriftTally>>,
    baseline: Option<Arc<DriftBaseline>>,
    /// `SUBWINDOWS` count arrays of [`CELLS`], one per sub-window.
    ring: Vec<u64>,
    ring_rows: [u64; SUBWINDOWS],
    slot: usize,
    /// Sub-windows counted since the window was last cleared (capped).
    filled: usize,
    /// Scratch: the window's counts summed.
    sum: Vec<u64>,
    window_ns: u64,
    next_ns: u64,
    /// Latest PSI per baseline feature (aligned with its names).
    psi: Vec<f64>,
    drifting: bool,
    /// Baseline indices of the features moved at the last record, sorted.
    moved: Vec<usize>,
    last_emit_ns: u64,
    /// `drift` records written.
    pub(super) events: u64,
    /// Windows judged (each refreshes the latest PSI).
    pub(super) judged: u64,
}

impl DriftMonitor {
    pub(super) fn new() -> Self {
        Self {
            tally: None,
            baseline: None,
            ring: vec![0; SUBWINDOWS * CELLS],
            ring_rows: [0; SUBWINDOWS],
            slot: 0,
            filled: 0,
            sum: vec![0; CELLS],
            window_ns: 0,
            next_ns: 0,
            psi: Vec::new(),
            drifting: false,
            moved: Vec::new(),
            last_emit_ns: 0,
            events: 0,
            judged: 0,
        }
    }

    /// Reads the workers' counts from `tally` from now on.
    pub(super) fn attach(&mut self, tally: Arc<DriftTally>) {
        self.tally = Some(tally);
    }

    /// The latest PSI per feature (empty before the first judged window).
    pub(super) fn latest(&self) -> Vec<(String, f64)> {
        match &self.baseline {
            Some(b) => b
                .names
                .iter()
                .cloned()
                .zip(self.psi.iter().copied())
                .collect(),
            None => Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.ring.fill(0);
        self.ring_rows = [0; SUBWINDOWS];
        self.filled = 0;
        self.psi.clear();
        self.drifting = false;
        self.moved.clear();
    }

    /// Advances to `now_ns`: at each sub-window boundary takes the tally's
    /// counts and judges the window. A record to write, if any.
    pub(super) fn tick(&mut self, now_ns: u64, cfg: &DriftSection) -> Option<DriftFinding> {
        self.tally.as_ref()?;
        let window_ns = secs_to_ns(cfg.window_s).max(SUBWINDOWS as u64);
        // Every row ticks the stage: between boundaries, nothing to do.
        if cfg.enabled && self.next_ns != 0 && window_ns == self.window_ns && now_ns < self.next_ns
        {
            return None;
        }
        let tally = Arc::clone(self.tally.as_ref()?);
        if !cfg.enabled {
            // Counts keep arriving; drop them so turning monitoring back
            // on starts from an empty window.
            if self.next_ns != 0 {
                let _ = tally.take(&mut self.sum);
                self.clear();
                self.next_ns = 0;
            }
            return None;
        }
        if window_ns != self.window_ns || self.next_ns == 0 {
            // First tick, or a reload changed the window: start afresh.
            self.window_ns = window_ns;
            self.clear();
            let _ = tally.take(&mut self.sum);
            self.next_ns = now_ns + window_ns / SUBWINDOWS as u64;
            return None;
        }
        if now_ns < self.next_ns {
            return None;
        }
        let sub_ns = window_ns / SUBWINDOWS as u64;
        // Into the current slot go the counts since the last rotation; a
        // stage idle for several sub-windows leaves the skipped ones empty.
        let baseline = tally.baseline();
        self.slot = (self.slot + 1) % SUBWINDOWS;
        let taken = self.slot;
        let rows = tally.take(&mut self.ring[taken * CELLS..(taken + 1) * CELLS]);
        self.ring_rows[taken] = rows;
        self.filled += 1;
        let mut skipped = 0;
        self.next_ns += sub_ns;
        while now_ns >= self.next_ns && skipped < SUBWINDOWS {
            self.slot = (self.slot + 1) % SUBWINDOWS;
            self.ring[self.slot * CELLS..(self.slot + 1) * CELLS].fill(0);
            self.ring_rows[self.slot] = 0;
            self.next_ns += sub_ns;
            self.filled += 1;
            skipped += 1;
        }
        self.filled = self.filled.min(SUBWINDOWS);
        if now_ns >= self.next_ns {
            self.next_ns = now_ns + sub_ns;
        }
        let same = match (&self.baseline, &baseline) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            // A model reload: counts binned by the old cut points mean
            // nothing against the new ones. A drift in progress ends (it
            // was drift from the old model's training data).
            let ended = self.drifting.then(|| self.end_finding(cfg));
            let kept = self.ring[taken * CELLS..(taken + 1) * CELLS].to_vec();
            self.clear();
            self.baseline = baseline;
            self.ring[taken * CELLS..(taken + 1) * CELLS].copy_from_slice(&kept);
            self.ring_rows[taken] = rows;
            self.filled = 1;
            if ended.is_some() {
                self.last_emit_ns = now_ns;
                self.events += 1;
            }
            return ended;
        }
        if self.filled < SUBWINDOWS {
            return None;
        }
        self.judge(now_ns, cfg)
    }

    /// The `end` record of a drift cut short by a model reload: the old
    /// baseline, its latest figures, nothing moved.
    fn end_finding(&self, cfg: &DriftSection) -> DriftFinding {
        DriftFinding {
            state: DriftState::End,
            baseline: self
                .baseline
                .as_ref()
                .map(|b| b.model.clone())
                .unwrap_or_default(),
            window_s: cfg.window_s,
            rows: self.ring_rows.iter().sum(),
            threshold: cfg.threshold,
            moved: Vec::new(),
            max_psi: self.psi.iter().copied().fold(0.0, f64::max),
        }
    }

    fn judge(&mut self, now_ns: u64, cfg: &DriftSection) -> Option<DriftFinding> {
        let b = self.baseline.clone()?;
        let rows: u64 = self.ring_rows.iter().sum();
        if rows < cfg.min_rows {
            return None;
        }
        self.sum.fill(0);
        for sub in self.ring.chunks_exact(CELLS) {
            for (s, c) in self.sum.iter_mut().zip(sub) {
                *s += c;
            }
        }
        b.psi_into(&self.sum, &mut self.psi);
        self.judged += 1;
        let mut moved: Vec<usize> = (0..self.psi.len())
            .filter(|&i| self.psi[i] > cfg.threshold && !cfg.ignore.contains(&b.names[i]))
            .collect();
        let max_psi = self.psi.iter().copied().fold(0.0, f64::max);
        let state = if moved.is_empty() {
            if !self.drifting {
                return None;
            }
            self.drifting = false;
            self.moved.clear();
            DriftState::End
        } else {
            let changed = moved != self.moved;
            let due = now_ns.saturating_sub(self.last_emit_ns) >= self.window_ns;
            if self.drifting && !changed && !due {
                return None;
            }
            let state = if self.drifting {
                DriftState::Update
            } else {
                DriftState::Start
            };
            self.drifting = true;
            self.moved.clone_from(&moved);
            state
        };
        self.last_emit_ns = now_ns;
        self.events += 1;
        moved.sort_by(|&a, &b| self.psi[b].total_cmp(&self.psi[a]));
        Some(DriftFinding {
            state,
            baseline: b.model.clone(),
            window_s: cfg.window_s,
            rows,
            threshold: cfg.threshold,
            moved: moved
                .into_iter()
                .map(|i| (b.names[i].clone(), self.psi[i]))
                .collect(),
            max_psi,
        })
    }
}

/// A `drift` EVE record.
#[derive(Serialize)]
pub(super) struct EveDriftRecord<'a> {
    pub timestamp: String,
    pub event_type: &'static str,
    pub host: &'a str,
    pub xdp_sensor: DriftWrapper<'a>,
}

#[derive(Serialize)]
pub(super) struct DriftWrapper<'a> {
    pub drift: DriftFields<'a>,
}

#[derive(Serialize)]
pub(super) struct DriftFields<'a> {
    pub state: DriftState,
    /// `name@version` of the card whose quantiles are the baseline.
    pub baseline: &'a str,
    /// `name@version` of the models the configuration names.
    pub models: Vec<String>,
    pub window_s: f64,
    pub rows: u64,
    pub threshold: f64,
    pub max_psi: f64,
    /// Moved features, highest PSI first (empty when drift ends).
    pub features: Vec<MovedFeature<'a>>,
}

#[derive(Serialize)]
pub(super) struct MovedFeature<'a> {
    pub name: &'a str,
    pub psi: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelCard;

    fn card() -> ModelCard {
        ModelCard::from_json(&serde_json::json!({
            "name": "m", "version": "1",
            "schema": {"version": 1, "features": [{"name": "a", "unit": "x"}, {"name": "b", "unit": "x"}]},
            "baseline_quantiles": {"quantiles": [0.25, 0.5, 0.75],
                "benign_train": {"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}}
        }))
        .unwrap()
    }

    fn cfg() -> DriftSection {
        DriftSection {
            enabled: true,
            window_s: 10.0,
            threshold: 0.2,
            min_rows: 100,
            ignore: Vec::new(),
        }
    }

    /// 100 rows per second: `a` as the baseline, `b` too or shifted up.
    /// A worker's counter and the stage's monitor sharing one tally.
    fn counter_and_monitor() -> (crate::model::drift::DriftCounter, DriftMonitor) {
        let tally = Arc::new(DriftTally::default());
        let w = crate::model::drift::DriftCounter::new(Arc::clone(&tally), &card());
        let mut m = DriftMonitor::new();
        m.attach(tally);
        (w, m)
    }

    fn feed(c: &mut crate::model::drift::DriftCounter, shift_b: bool) {
        for i in 0..100 {
            let v = [0.5f32, 1.5, 2.5, 3.5][i % 4];
            c.count(&[v, if shift_b { 3.5 } else { v }], 0.0);
        }
        c.publish();
    }

    #[test]
    fn start_update_end_over_a_sliding_window() {
        let (mut w, mut m) = counter_and_monitor();
        let cfg = cfg();
        let s = 1_000_000_000u64;
        let mut found = Vec::new();
        assert!(m.tick(s, &cfg).is_none());
        // 20 s matching, 20 s with `b` shifted, 30 s matching.
        for t in 1..=70u64 {
            feed(&mut w, (21..=40).contains(&t));
            if let Some(f) = m.tick(s + t * s, &cfg) {
                found.push((t, f));
            }
        }
        let states: Vec<_> = found.iter().map(|(t, f)| (*t, f.state)).collect();
        // The tick at t judges the counts fed at t − 9 … t − 1 s. With 3
        // of 10 sub-windows shifted, `b`'s top bin holds 0.475 instead of
        // 0.25: PSI 0.225·ln 1.9 + 3·0.075·ln(0.25/0.175) ≈ 0.225 > 0.2;
        // with 2, ≈ 0.104. So: start at 23, updates a window apart while
        // the moved set stays {b}, the end at 48 (2 shifted left).
        assert_eq!(
            states,
            [
                (23, DriftState::Start),
                (33, DriftState::Update),
                (43, DriftState::Update),
                (48, DriftState::End)
            ],
            "{found:?}"
        );
        let want = 0.225 * 1.9f64.ln() + 3.0 * 0.075 * (0.25f64 / 0.175).ln();
        assert!((found[0].1.moved[0].1 - want).abs() < 1e-9);
        let start = &found[0].1;
        assert_eq!(start.moved.len(), 1);
        assert_eq!(start.moved[0].0, "b");
        assert_eq!(start.baseline, "m@1");
        assert!(start.rows >= 100);
        let latest = m.latest();
        assert_eq!(latest.len(), 2);
        assert!(latest.iter().all(|(_, p)| *p < 0.2), "{latest:?}");
        assert_eq!(m.events, 4);
    }

    /// A model reload whose card bins the shifted rows as normal ends the
    /// drift at once and starts a new window.
    #[test]
    fn a_model_swap_ends_a_drift_and_starts_a_new_window() {
        let (mut w, mut m) = counter_and_monitor();
        let s = 1_000_000_000u64;
        m.tick(s, &cfg());
        let mut states = Vec::new();
        for t in 1..=12u64 {
            feed(&mut w, true);
            states.extend(m.tick(s + t * s, &cfg()).map(|f| (t, f.state)));
        }
        assert_eq!(states, [(10, DriftState::Start)]);
        // `b` re-baselined where the shifted rows are: all at 3.5.
        let rebased = ModelCard::from_json(&serde_json::json!({
            "name": "m", "version": "2",
            "schema": {"version": 1, "features": [{"name": "a", "unit": "x"}, {"name": "b", "unit": "x"}]},
            "baseline_quantiles": {"quantiles": [0.25, 0.5, 0.75],
                "benign_train": {"a": [1.0, 2.0, 3.0], "b": [4.0, 4.0, 4.0]},
                "benign_train_cdf": {"b": [1.0, 1.0, 1.0]}}
        }))
        .unwrap();
        w.swap(&rebased);
        let mut after = Vec::new();
        for t in 13..=40u64 {
            feed(&mut w, true);
            after.extend(m.tick(s + t * s, &cfg()).map(|f| (t, f.state, f.baseline)));
        }
        assert_eq!(after, [(13, DriftState::End, "m@1".to_owned())]);
        assert_eq!(m.events, 2);
    }

    /// Shifted from the first row: nothing is judged until the window
    /// spans its whole length (ten rotations).
    #[test]
    fn a_window_is_judged_once_it_spans_its_length() {
        let (mut w, mut m) = counter_and_monitor();
        let s = 1_000_000_000u64;
        m.tick(s, &cfg());
        let first = (1..=20u64).find_map(|t| {
            feed(&mut w, true);
            m.tick(s + t * s, &cfg()).map(|f| (t, f.state))
        });
        assert_eq!(first, Some((10, DriftState::Start)));
    }

    #[test]
    fn too_few_rows_are_not_judged_and_disabled_counts_nothing() {
        let (mut w, mut m) = counter_and_monitor();
        let mut cfg = cfg();
        cfg.min_rows = 5000;
        let s = 1_000_000_000u64;
        m.tick(s, &cfg);
        for t in 1..=30u64 {
            feed(&mut w, true);
            assert!(m.tick(s + t * s, &cfg).is_none());
        }
        cfg.min_rows = 100;
        cfg.enabled = false;
        for t in 31..=60u64 {
            feed(&mut w, true);
            assert!(m.tick(s + t * s, &cfg).is_none());
        }
        assert_eq!(m.events, 0);
    }
}
