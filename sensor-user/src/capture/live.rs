//! Figures a stage publishes for readers on other threads (the metrics
//! endpoint): the owning thread copies its own figures in at a tick or batch
//! boundary with `try_lock`, so it never waits for a reader (a busy slot
//! only delays the copy to the next boundary); a reader copies them out.
//! Nothing on the per-event path touches a slot.

use std::sync::{Mutex, PoisonError, TryLockError};

use hdrhistogram::Histogram;
use sensor_common::records::LatencySummary;

/// One stage's latest published figures.
#[derive(Debug, Default)]
pub struct Published<T> {
    slot: Mutex<T>,
}

impl<T: Clone> Published<T> {
    /// A slot holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            slot: Mutex::new(value),
        }
    }

    /// Updates the slot through `f` unless a reader holds it right now;
    /// returns whether it did. Never blocks.
    pub fn try_publish(&self, f: impl FnOnce(&mut T)) -> bool {
        match self.slot.try_lock() {
            Ok(mut g) => {
                f(&mut g);
                true
            }
            Err(TryLockError::Poisoned(p)) => {
                f(&mut p.into_inner());
                true
            }
            Err(TryLockError::WouldBlock) => false,
        }
    }

    /// Updates the slot through `f`, waiting for a reader to finish: for
    /// the last publication of a stage that is stopping.
    pub fn publish(&self, f: impl FnOnce(&mut T)) {
        f(&mut self.slot.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// A copy of the latest figures.
    pub fn read(&self) -> T {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Highest latency a [`LatencyHistogram`] tells apart (60 s); longer ones
/// count as 60 s.
const LATENCY_MAX_NS: u64 = 60_000_000_000;

/// A latency distribution in nanoseconds of `CLOCK_MONOTONIC`
/// ([`sensor_common::clock`]), the clock of the kernel's event timestamps:
/// an hdrhistogram at 2 significant digits (about 30 KiB, allocated once),
/// plus the exact sum the Prometheus histogram needs.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
    sum_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, LATENCY_MAX_NS, 2)
                .expect("constant bounds are valid"),
            sum_ns: 0,
        }
    }
}

impl LatencyHistogram {
    /// Counts one latency: from `from_ns` (an event's kernel timestamp) to
    /// `to_ns`, both `CLOCK_MONOTONIC`. No allocation.
    #[inline]
    pub fn record(&mut self, from_ns: u64, to_ns: u64) {
        let ns = to_ns.saturating_sub(from_ns).clamp(1, LATENCY_MAX_NS);
        self.hist.saturating_record(ns);
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Latencies counted.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Sum of the latencies counted, in seconds.
    #[must_use]
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// Latencies at or below `le_ns` (to the histogram's resolution).
    #[must_use]
    pub fn count_at_or_below(&self, le_ns: u64) -> u64 {
        self.hist.count_between(0, le_ns)
    }

    /// Adds `other`'s counts (a merge over workers).
    pub fn add(&mut self, other: &Self) {
        // Same bounds on both sides: the addition cannot fail.
        let _ = self.hist.add(&other.hist);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Makes `self` a copy of `other` without allocating.
    pub fn copy_from(&mut self, other: &Self) {
        self.hist.reset();
        let _ = self.hist.add(&other.hist);
        self.sum_ns = other.sum_ns;
    }

    /// Count, mean and quantiles in microseconds.
    #[must_use]
    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1e3;
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.hist.len(),
            mean_us: self.sum_ns as f64 / self.hist.len() as f64 / 1e3,
            p50_us: us(self.hist.value_at_quantile(0.5)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_sums_and_quantiles() {
        let mut h = LatencyHistogram::default();
        for us in 1..=100u64 {
            h.record(1_000, 1_000 + us * 1_000);
        }
        assert_eq!(h.count(), 100);
        assert!((h.sum_seconds() - 5050e-6).abs() < 1e-12);
        assert_eq!(h.count_at_or_below(50_000), 50);
        let s = h.summary();
        assert!((s.p50_us - 50.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 100.0).abs() < 1.0, "{s:?}");
        let mut m = LatencyHistogram::default();
        m.add(&h);
        m.add(&h);
        assert_eq!(m.count(), 200);
        m.copy_from(&h);
        assert_eq!(m.count(), 100);
    }

    #[test]
    fn a_clock_going_backwards_counts_as_the_smallest_latency() {
        let mut h = LatencyHistogram::default();
        h.record(5_000, 1_000);
        assert_eq!(h.count_at_or_below(1), 1);
    }

    #[test]
    fn a_busy_slot_is_skipped_not_waited_for() {
        let p = Published::new(1u64);
        let guard = p.slot.lock().unwrap();
        assert!(!p.try_publish(|v| *v = 2));
        drop(guard);
        assert!(p.try_publish(|v| *v = 3));
        assert_eq!(p.read(), 3);
    }
}
