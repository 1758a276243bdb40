//! The beacon rule: regular upload-heavy connections from one client to one
//! server, as beaconing malware and low-and-slow exfiltration make them.

use std::{borrow::Cow, collections::HashMap, net::IpAddr};

use super::{
    AlertMetrics,
    config::{AlertsSection, secs_to_ns},
    detect::{Detection, Rule},
    guards::evict_in_bulk,
    inventory::canonical,
};
use crate::{
    features::ClosedConn,
    model::row::{AttackClass, ScoredRow},
};

/// Connection starts remembered per (client, server) pair.
const BEACON_HISTORY: usize = ConnStarts::CAPACITY;
/// (client, server) pairs the beacon rule tracks at most; when full,
/// expired pairs go, or all of them if that frees less than an eighth.
const BEACON_PAIRS: usize = 16_384;

/// Connections one client made to one server (the beacon rule's
/// upload-heavy ones, the login rule's short ones): their start times, the
/// latest [`ConnStarts::CAPACITY`] of them in a ring.
pub(super) struct ConnStarts {
    starts: [u64; BEACON_HISTORY],
    /// Connections recorded in all (the ring holds the latest).
    n: usize,
    /// Event time of the latest.
    last_ns: u64,
}

impl ConnStarts {
    /// Starts kept per pair.
    pub(super) const CAPACITY: usize = 32;

    pub(super) fn new() -> Self {
        Self {
            starts: [0; BEACON_HISTORY],
            n: 0,
            last_ns: 0,
        }
    }

    pub(super) fn add(&mut self, start_ns: u64, ts: u64) {
        self.starts[self.n % BEACON_HISTORY] = start_ns;
        self.n += 1;
        self.last_ns = self.last_ns.max(ts);
    }

    /// Connections started within `window_ns` of `now` (of the latest
    /// `BEACON_HISTORY`).
    pub(super) fn recent(&self, now: u64, window_ns: u64) -> usize {
        self.starts[..self.n.min(BEACON_HISTORY)]
            .iter()
            .filter(|&&t| now.saturating_sub(t) < window_ns)
            .count()
    }

    /// Event time of the latest connection.
    pub(super) fn last_ns(&self) -> u64 {
        self.last_ns
    }

    /// Median interval between the latest `need` connection starts within
    /// `window_ns` of `now`, and the intervals' median absolute deviation
    /// from it (ns); `None` with fewer starts than `need`.
    fn intervals(&self, need: usize, now: u64, window_ns: u64) -> Option<(f64, f64)> {
        let need = need.clamp(3, BEACON_HISTORY);
        let mut v = [0u64; BEACON_HISTORY];
        let mut k = 0;
        for &t in &self.starts[..self.n.min(BEACON_HISTORY)] {
            if now.saturating_sub(t) < window_ns {
                v[k] = t;
                k += 1;
            }
        }
        if k < need {
            return None;
        }
        let v = &mut v[..k];
        v.sort_unstable();
        let latest = &v[k - need..];
        let mut gaps = [0f64; BEACON_HISTORY];
        let gaps = &mut gaps[..need - 1];
        for (g, w) in gaps.iter_mut().zip(latest.windows(2)) {
            *g = (w[1] - w[0]) as f64;
        }
        gaps.sort_unstable_by(f64::total_cmp);
        let median = gaps[gaps.len() / 2];
        let mut dev = [0f64; BEACON_HISTORY];
        let dev = &mut dev[..need - 1];
        for (d, g) in dev.iter_mut().zip(gaps.iter()) {
            *d = (g - median).abs();
        }
        dev.sort_unstable_by(f64::total_cmp);
        Some((median, dev[dev.len() / 2]))
    }
}

/// Upload-heavy connections per (client, server).
#[derive(Default)]
pub(super) struct BeaconRule {
    pairs: HashMap<(IpAddr, IpAddr), ConnStarts>,
}

impl BeaconRule {
    /// Records an upload-heavy client connection and returns an `anomaly`
    /// detection once the client's latest `beacon_connections` upload-heavy
    /// connections to this server started at regular intervals (median
    /// absolute deviation of the intervals at most `beacon_max_jitter` of
    /// their median), within `beacon_window_s`. A client sending data out
    /// to one server on a timer is what beaconing malware and low-and-slow
    /// exfiltration look like; people uploading files do not keep a clock.
    /// Confidence: 1 at no jitter, ½ at the bar.
    pub(super) fn observe(
        &mut self,
        row: &ScoredRow,
        u: ClosedConn,
        now: u64,
        a: &AlertsSection,
        metrics: &mut AlertMetrics,
    ) -> Option<Detection> {
        let need = a.beacon_connections as usize;
        let (max_jitter, window) = (a.beacon_max_jitter, secs_to_ns(a.beacon_window_s));
        let (client, server) = if u.client_is_src {
            (row.src, row.dst)
        } else {
            (row.dst, row.src)
        };
        let pair = (canonical(client), canonical(server));
        if !self.pairs.contains_key(&pair) && self.pairs.len() >= BEACON_PAIRS {
            metrics.beacon_pairs_evicted += evict_in_bulk(&mut self.pairs, BEACON_PAIRS, |p| {
                now.saturating_sub(p.last_ns) < window
            });
        }
        let p = self.pairs.entry(pair).or_insert_with(ConnStarts::new);
        p.add(u.start_ns, row.event_ts_ns);
        if need == 0 {
            return None;
        }
        let (median, mad) = p.intervals(need, now.max(u.start_ns), window)?;
        if median <= 0.0 {
            return None;
        }
        let jitter = mad / median;
        if jitter > max_jitter {
            return None;
        }
        let score = if max_jitter > 0.0 {
            1.0 - 0.5 * jitter / max_jitter
        } else {
            1.0
        };
        Some(Detection {
            class: AttackClass::Anomaly,
            score: (score as f32).clamp(0.5, 1.0),
            raw: jitter as f32,
            rule: Rule::Beacon,
        })
    }

    /// Upload-heavy connections `client` started to `server` within
    /// `window_ns` of `now`.
    pub(super) fn recent_uploads(
        &self,
        client: IpAddr,
        server: IpAddr,
        now: u64,
        window_ns: u64,
    ) -> usize {
        self.pairs
            .get(&(client, server))
            .map_or(0, |p| p.recent(now, window_ns))
    }
}

/// The row a beacon alert is raised on: the client's side of the
/// connection, whichever side's close ended it.
pub(super) fn client_row(row: &ScoredRow, u: ClosedConn) -> Cow<'_, ScoredRow> {
    if u.client_is_src {
        Cow::Borrowed(row)
    } else {
        let mut c = row.clone();
        (c.src, c.dst, c.sport, c.dport) = (row.dst, row.src, row.dport, row.sport);
        c.facts.responder = false;
        Cow::Owned(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn intervals_give_the_median_gap_and_its_deviation() {
        let mut p = ConnStarts::new();
        for (i, jitter) in [0, 1, 0, 2, 0].into_iter().enumerate() {
            let t = 60 * SEC * i as u64 + jitter * SEC;
            p.add(t, t);
        }
        let now = 5 * 60 * SEC;
        assert_eq!(p.recent(now, 10 * 60 * SEC), 5);
        // Gaps 61, 59, 62, 58 s: median 61 s (upper middle), deviations 0, 2, 1, 3 s.
        let (median, mad) = p.intervals(5, now, 10 * 60 * SEC).unwrap();
        assert_eq!(median, 61.0 * SEC as f64);
        assert_eq!(mad, 2.0 * SEC as f64);
        // Fewer starts within the window than needed: no verdict.
        assert!(p.intervals(5, now, 3 * 60 * SEC).is_none());
    }
}
