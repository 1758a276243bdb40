//! The beacon rule: regular connections from one client to one server, as
//! beaconing malware and low-and-slow exfiltration make them. Two shapes:
//! upload-heavy connections on a strict timer (data going out), and
//! check-ins of a steady size on a looser timer (an implant polling for
//! tasks with a jittered sleep, whichever way its bytes go).

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

/// Connections remembered per (client, server) pair.
const BEACON_HISTORY: usize = ConnStarts::CAPACITY;
/// (client, server) pairs the beacon rule tracks at most, per shape; when
/// full, expired pairs go, or all of them if that frees less than an eighth.
const BEACON_PAIRS: usize = 16_384;

/// Connections one client made to one server (the beacon rule's, the login
/// rule's short ones): their start times and bytes each way, the latest
/// [`ConnStarts::CAPACITY`] of them in a ring.
pub(super) struct ConnStarts {
    /// (start, bytes out, bytes in) per connection.
    conns: [(u64, u64, u64); BEACON_HISTORY],
    /// Connections recorded in all (the ring holds the latest).
    n: usize,
    /// Event time of the latest.
    last_ns: u64,
}

/// The spread of a sample: its median absolute deviation over its median
/// (0 for a constant, about 0.7 for exponential gaps); `None` for an empty
/// sample or a median of 0.
fn relative_spread(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let median = v[v.len() / 2];
    if median <= 0.0 {
        return None;
    }
    for x in v.iter_mut() {
        *x = (*x - median).abs();
    }
    v.sort_unstable_by(f64::total_cmp);
    Some(v[v.len() / 2] / median)
}

impl ConnStarts {
    /// Connections kept per pair.
    pub(super) const CAPACITY: usize = 32;

    pub(super) fn new() -> Self {
        Self {
            conns: [(0, 0, 0); BEACON_HISTORY],
            n: 0,
            last_ns: 0,
        }
    }

    pub(super) fn add(&mut self, c: &ClosedConn, ts: u64) {
        self.conns[self.n % BEACON_HISTORY] = (c.start_ns, c.bytes_out, c.bytes_in);
        self.n += 1;
        self.last_ns = self.last_ns.max(ts);
    }

    /// Connections started within `window_ns` of `now` (of the latest
    /// `BEACON_HISTORY`).
    pub(super) fn recent(&self, now: u64, window_ns: u64) -> usize {
        self.conns[..self.n.min(BEACON_HISTORY)]
            .iter()
            .filter(|&&(t, _, _)| now.saturating_sub(t) < window_ns)
            .count()
    }

    /// Whether at least two connections started within `window_ns` of
    /// `now`, each at least `min_gap_ns` after the one before.
    fn one_at_a_time(&self, now: u64, window_ns: u64, min_gap_ns: u64) -> bool {
        let mut buf = [(0, 0, 0); BEACON_HISTORY];
        let starts = self.within(now, window_ns, &mut buf);
        starts.len() >= 2 && starts.windows(2).all(|w| w[1].0 - w[0].0 >= min_gap_ns)
    }

    /// Event time of the latest connection.
    pub(super) fn last_ns(&self) -> u64 {
        self.last_ns
    }

    /// The connections started within `window_ns` of `now`, in start order
    /// (into `buf`).
    fn within<'b>(
        &self,
        now: u64,
        window_ns: u64,
        buf: &'b mut [(u64, u64, u64); BEACON_HISTORY],
    ) -> &'b [(u64, u64, u64)] {
        let mut k = 0;
        for &c in &self.conns[..self.n.min(BEACON_HISTORY)] {
            if now.saturating_sub(c.0) < window_ns {
                buf[k] = c;
                k += 1;
            }
        }
        let v = &mut buf[..k];
        v.sort_unstable_by_key(|c| c.0);
        v
    }

    /// The latest `need` connections started within `window_ns` of `now`,
    /// in start order (into `buf`); `None` with fewer than `need`.
    fn latest<'b>(
        &self,
        need: usize,
        now: u64,
        window_ns: u64,
        buf: &'b mut [(u64, u64, u64); BEACON_HISTORY],
    ) -> Option<&'b [(u64, u64, u64)]> {
        let v = self.within(now, window_ns, buf);
        v.len().checked_sub(need).map(|from| &v[from..])
    }

    /// The relative spread ([`relative_spread`]) of the intervals between
    /// the latest `need` connection starts within `window_ns` of `now`, and
    /// of their sizes (bytes both ways); `None` with fewer starts than
    /// `need` or no interval.
    fn regularity(&self, need: usize, now: u64, window_ns: u64) -> Option<Regularity> {
        let need = need.clamp(3, BEACON_HISTORY);
        let mut buf = [(0, 0, 0); BEACON_HISTORY];
        let latest = self.latest(need, now, window_ns, &mut buf)?;
        let mut gaps = [0f64; BEACON_HISTORY];
        let gaps = &mut gaps[..need - 1];
        for (g, w) in gaps.iter_mut().zip(latest.windows(2)) {
            *g = (w[1].0 - w[0].0) as f64;
        }
        let mut sorted = [0u64; BEACON_HISTORY];
        let sorted = &mut sorted[..need - 1];
        for (g, w) in sorted.iter_mut().zip(latest.windows(2)) {
            *g = w[1].0 - w[0].0;
        }
        sorted.sort_unstable();
        let median_gap_ns = sorted[sorted.len() / 2];
        let timing = relative_spread(gaps)?;
        let mut sizes = [0f64; BEACON_HISTORY];
        let sizes = &mut sizes[..need];
        for (x, c) in sizes.iter_mut().zip(latest) {
            *x = c.1.saturating_add(c.2) as f64;
        }
        Some(Regularity {
            median_gap_ns,
            timing,
            size: relative_spread(sizes).unwrap_or(0.0),
        })
    }
}

/// How regular a pair's latest connections were ([`relative_spread`]s).
struct Regularity {
    /// The median interval between their starts.
    median_gap_ns: u64,
    timing: f64,
    /// Of the connections' sizes, both directions together: the bytes
    /// each way at the close differ by the acknowledgements the close
    /// caught (delayed ACKs vary), the exchange as a whole does not.
    size: f64,
}

/// Closed connections per (client, server): the upload-heavy ones, and
/// all of them (for check-ins).
#[derive(Default)]
pub(super) struct BeaconRule {
    pairs: HashMap<(IpAddr, IpAddr), ConnStarts>,
    checkins: HashMap<(IpAddr, IpAddr), ConnStarts>,
}

/// The pair's entry in `table`, making room when it is full.
fn entry<'t>(
    table: &'t mut HashMap<(IpAddr, IpAddr), ConnStarts>,
    pair: (IpAddr, IpAddr),
    now: u64,
    window: u64,
    evicted: &mut u64,
) -> &'t mut ConnStarts {
    if !table.contains_key(&pair) && table.len() >= BEACON_PAIRS {
        *evicted += evict_in_bulk(table, BEACON_PAIRS, |p| {
            now.saturating_sub(p.last_ns) < window
        });
    }
    table.entry(pair).or_insert_with(ConnStarts::new)
}

impl BeaconRule {
    /// Records a closed client connection and returns an `anomaly`
    /// detection once the client's latest `beacon_connections` connections
    /// to this server, within `beacon_window_s`, are a beacon:
    ///
    /// - upload-heavy ones started at regular intervals (median absolute
    ///   deviation of the intervals at most `beacon_max_jitter` of their
    ///   median): a client sending data out on a timer, as beaconing
    ///   malware and low-and-slow exfiltration do; people uploading files
    ///   do not keep a clock;
    /// - or any connections whose intervals vary by at most
    ///   `beacon_checkin_jitter` and whose sizes by at most
    ///   `beacon_checkin_size_spread`: the same check-in, over and over, on
    ///   a jittered sleep, whether it uploads or downloads (an HTTP GET
    ///   poll for tasks). People's sessions vary in size and timing both.
    ///
    /// Check-ins come at least `beacon_checkin_min_interval_s` apart (a
    /// sleep, not a tool hammering a service), and a `login` connection (to
    /// a login service) is the login rule's, never a check-in.
    ///
    /// Confidence: 1 at no jitter, ½ at the bar. Raw score: the jitter.
    pub(super) fn observe(
        &mut self,
        row: &ScoredRow,
        (c, login): (ClosedConn, bool),
        now: u64,
        a: &AlertsSection,
        metrics: &mut AlertMetrics,
    ) -> Option<Detection> {
        // Upload-heavy connections are recorded even with the rule off:
        // the brute-force guard reads them (`recent_uploads`).
        let need = a.beacon_connections as usize;
        let window = secs_to_ns(a.beacon_window_s);
        let (client, server) = if c.client_is_src {
            (row.src, row.dst)
        } else {
            (row.dst, row.src)
        };
        let pair = (canonical(client), canonical(server));
        let at = now.max(c.start_ns);
        let ts = row.event_ts_ns;
        let mut found: Option<(f64, f64, Rule)> = None;
        if c.is_upload_heavy() {
            metrics.upload_connections += 1;
            let p = entry(
                &mut self.pairs,
                pair,
                now,
                window,
                &mut metrics.beacon_pairs_evicted,
            );
            p.add(&c, ts);
            if need == 0 {
                return None;
            }
            let bar = a.beacon_max_jitter;
            found = p
                .regularity(need, at, window)
                .filter(|r| r.timing <= bar)
                .map(|r| (r.timing, bar, Rule::Beacon));
        }
        if found.is_none() && need > 0 && !login && a.beacon_checkin_jitter > 0.0 {
            let p = entry(
                &mut self.checkins,
                pair,
                now,
                window,
                &mut metrics.beacon_pairs_evicted,
            );
            p.add(&c, ts);
            let (bar, sizes) = (a.beacon_checkin_jitter, a.beacon_checkin_size_spread);
            found = p
                .regularity(need, at, window)
                .filter(|r| {
                    r.median_gap_ns >= secs_to_ns(a.beacon_checkin_min_interval_s)
                        && r.timing <= bar
                        && r.size <= sizes
                })
                .map(|r| (r.timing, bar, Rule::Checkin));
        }
        let (jitter, bar, rule) = found?;
        let score = if bar > 0.0 {
            1.0 - 0.5 * jitter / bar
        } else {
            1.0
        };
        Some(Detection {
            class: AttackClass::Anomaly,
            score: (score as f32).clamp(0.5, 1.0),
            raw: jitter as f32,
            rule,
        })
    }

    /// Whether `client`'s closed connections to `server` (all of them, as
    /// the check-ins record them) started within `window_ns` of `now` one
    /// at a time, each at least `min_gap_ns` after the one before: a
    /// sleep between them, not a tool opening the next as soon as it can.
    pub(super) fn paced(
        &self,
        (client, server): (IpAddr, IpAddr),
        now: u64,
        window_ns: u64,
        min_gap_ns: u64,
    ) -> bool {
        self.checkins
            .get(&(client, server))
            .is_some_and(|p| p.one_at_a_time(now, window_ns, min_gap_ns))
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

    fn conn(start_ns: u64, bytes_out: u64, bytes_in: u64) -> ClosedConn {
        ClosedConn {
            start_ns,
            bytes_out,
            bytes_in,
            client_is_src: true,
        }
    }

    #[test]
    fn regularity_is_the_relative_spread_of_gaps_and_sizes() {
        let mut p = ConnStarts::new();
        for (i, (jitter, out)) in [(0, 500), (1, 500), (0, 520), (2, 500), (0, 500)]
            .into_iter()
            .enumerate()
        {
            let t = 60 * SEC * i as u64 + jitter * SEC;
            p.add(&conn(t, out, 900), t);
        }
        let now = 5 * 60 * SEC;
        assert_eq!(p.recent(now, 10 * 60 * SEC), 5);
        // Gaps 61, 59, 62, 58 s: median 61 s (upper middle), deviations
        // 0, 2, 1, 3 s: median 2 s.
        let r = p.regularity(5, now, 10 * 60 * SEC).unwrap();
        assert_eq!(r.timing, 2.0 / 61.0);
        // Sizes 1 400 ×4 and 1 420: no spread (median deviation 0).
        assert_eq!(r.size, 0.0);
        // Fewer starts within the window than needed: no verdict.
        assert!(p.regularity(5, now, 3 * 60 * SEC).is_none());
        // The latest 3 only: gaps 62, 58; median 62 (upper middle),
        // deviations 0, 4: median 4.
        let r = p.regularity(3, now, 10 * 60 * SEC).unwrap();
        assert_eq!(r.timing, 4.0 / 62.0);
    }

    #[test]
    fn one_at_a_time_needs_two_starts_each_a_gap_apart() {
        let mut p = ConnStarts::new();
        p.add(&conn(SEC, 400, 2_600), SEC);
        assert!(!p.one_at_a_time(2 * SEC, 60 * SEC, SEC / 2), "one start");
        p.add(&conn(2 * SEC, 400, 2_600), 2 * SEC);
        assert!(p.one_at_a_time(3 * SEC, 60 * SEC, SEC / 2));
        // A second connection opened beside one: not one at a time.
        p.add(&conn(2 * SEC + SEC / 10, 400, 2_600), 2 * SEC);
        assert!(!p.one_at_a_time(3 * SEC, 60 * SEC, SEC / 2));
        // Outside the window, only the latest two count: paced again.
        p.add(&conn(70 * SEC, 400, 2_600), 70 * SEC);
        p.add(&conn(72 * SEC, 400, 2_600), 72 * SEC);
        assert!(p.one_at_a_time(72 * SEC, 60 * SEC, SEC / 2));
    }

    #[test]
    fn relative_spread_of_a_constant_is_zero_and_of_nothing_none() {
        assert_eq!(relative_spread(&mut [3.0, 3.0, 3.0]), Some(0.0));
        // Median 3 (upper middle), deviations 0, 1, 2, 7: median 2.
        assert_eq!(relative_spread(&mut [1.0, 2.0, 3.0, 10.0]), Some(2.0 / 3.0));
        assert_eq!(relative_spread(&mut []), None);
        assert_eq!(relative_spread(&mut [0.0, 0.0]), None);
    }
}
