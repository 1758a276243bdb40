//! Guards between a detection and an alert: what refutes a detection
//! (a responder, solicited traffic, a flood without volume, an attacker's
//! own backscatter, a scanner's probes) and what must corroborate one
//! before an alert opens (repeated rows, a scan's spread, distinct
//! brute-force connections).

use std::{collections::HashMap, net::IpAddr};

use super::{
    AlertMetrics,
    beacon::BeaconRule,
    config::{AlertSettings, AlertsSection, secs_to_ns},
    dedup::DedupKey,
    detect::{Detection, Rule, detect_except},
    inventory::canonical,
    logins::LoginRule,
    open_alert::OpenAlerts,
};
use crate::model::row::{AttackClass, Entity, ScoredRow};
use sensor_common::ipproto;

/// Makes room in a full map of `cap` entries: drops the entries `live`
/// rejects, or all of them if that frees less than an eighth (so a map
/// filled by live one-off keys is emptied once, not scanned per insert).
/// Returns how many went.
pub(super) fn evict_in_bulk<K, V>(
    map: &mut HashMap<K, V>,
    cap: usize,
    mut live: impl FnMut(&V) -> bool,
) -> u64 {
    let before = map.len();
    map.retain(|_, v| live(v));
    if map.len() > cap - cap / 8 {
        map.clear();
    }
    (before - map.len()) as u64
}

/// The guards a model's detection `det` on `row` passes, each counted when
/// it fails: the detection to go on with, or `None` to drop the row. A flood
/// needs volume, must not be traffic its victim asked for, nor ICMP errors
/// answering an attacker's probes.
pub(super) fn screen(
    row: &ScoredRow,
    det: Detection,
    settings: &AlertSettings,
    open: &OpenAlerts,
    logins: &LoginRule,
    metrics: &mut AlertMetrics,
) -> Option<Detection> {
    let det = if det.class != AttackClass::Flood {
        det
    } else if row.facts.solicited {
        // Traffic its destination asked for (a scan's replies reaching the
        // scanner, echo replies to a pinger) floods nobody.
        metrics.rows_flood_solicited += 1;
        return None;
    } else if settings.logins.ports.contains(&row.dport)
        && (row.facts.established || logins.is_guessing(row, &settings.logins))
    {
        // A real client's answered connection to a login service, or the
        // next one of a client guessing there: a guess (the login rule
        // counts it on its close), even when the client's history (a flood
        // or scan before) makes the row look flood-like.
        metrics.rows_flood_login += 1;
        return None;
    } else if !is_port_or_icmp_protocol(row.proto) && is_scanning(open, row.src, row.dst) {
        // An IP protocol scan sends one packet of each protocol number to
        // its target: from the source of an open scan alert to a host it
        // probes, such rows are that scan's probes, not a flood.
        metrics.rows_flood_scan_probe += 1;
        return None;
    } else if is_icmp_error(row) && is_open_attacker(open, row.dst, row.src) {
        // ICMP errors name no request to match, but those sent to a host
        // this stage already holds as an attacker answer its probes.
        metrics.rows_flood_backscatter += 1;
        return None;
    } else if f64::from(row.facts.victim_pps) >= settings.alerts.flood_min_pps {
        det
    } else {
        // Not a flood at this volume. If the model's next guess is a scan
        // that passes its threshold and is more likely than benign, the row
        // is a probe: a slow scanner's first rows can look flood-like before
        // its spread shows, and the scan rule still needs that spread.
        metrics.rows_flood_low_volume += 1;
        detect_except(row, &settings.thresholds, Some(AttackClass::Flood)).filter(|d| {
            d.class == AttackClass::Scan
                && row.class_probs[AttackClass::Scan as usize]
                    > row.class_probs[AttackClass::Benign as usize]
        })?
    };
    // A flow that answers a connection names its responder as source:
    // that host is a scan's or a brute force's target, not its author.
    if row.facts.responder
        && matches!(
            det.class,
            AttackClass::Scan | AttackClass::BruteForce | AttackClass::Anomaly
        )
    {
        metrics.rows_responder += 1;
        return None;
    }
    // The autoencoder finds a scanner's probes of a host unusual: they
    // are the scan an open alert already reports, not a second attack.
    if det.class == AttackClass::Anomaly && is_scanning(open, row.src, row.dst) {
        metrics.rows_anomaly_scan_probe += 1;
        return None;
    }
    Some(det)
}

/// TCP, UDP, ICMP and ICMPv6: the protocols hosts talk with every day.
fn is_port_or_icmp_protocol(proto: u8) -> bool {
    matches!(
        proto,
        ipproto::TCP | ipproto::UDP | ipproto::ICMP | ipproto::ICMPV6
    )
}

/// ICMP and ICMPv6 errors (unreachable, source quench, redirect, time
/// exceeded, parameter problem, packet too big); flow keys carry the ICMP
/// type in the source port.
fn is_icmp_error(row: &ScoredRow) -> bool {
    match row.proto {
        1 => matches!(row.sport, 3 | 4 | 5 | 11 | 12),
        58 => matches!(row.sport, 1..=4),
        _ => false,
    }
}

/// True when an open alert names `host` as the attacker of a scan
/// (any target) or of a brute force or anomaly on `peer`. Exact key
/// lookups: constant cost per row, even during an ICMP error flood.
fn is_open_attacker(open: &OpenAlerts, host: IpAddr, peer: IpAddr) -> bool {
    let (host, peer) = (canonical(host), canonical(peer));
    [
        (AttackClass::Scan, None),
        (AttackClass::BruteForce, Some(peer)),
        (AttackClass::Anomaly, Some(peer)),
    ]
    .into_iter()
    .any(|(class, victim)| {
        open.contains(&DedupKey {
            class,
            attacker: Some(host),
            victim,
            victim_prefix: None,
        })
    })
}

/// True when an open scan alert names `src` as the scanner and `dst`
/// among its top targets.
fn is_scanning(open: &OpenAlerts, src: IpAddr, dst: IpAddr) -> bool {
    let key = DedupKey {
        class: AttackClass::Scan,
        attacker: Some(canonical(src)),
        victim: None,
        victim_prefix: None,
    };
    let dst = canonical(dst);
    open.get(&key)
        .is_some_and(|a| a.aggregate.as_ref().is_some_and(|g| g.is_top(dst)))
}

/// Distinct targets remembered per pending scan key; a source that probes
/// this many distinct targets within the window is a scanner whatever their
/// spread.
const SCAN_TARGETS: usize = 32;

/// The distinct targets a pending scan key has probed.
struct ScanTargets {
    /// (host hash, target hash) per distinct target, in arrival order.
    seen: [(u64, u64); SCAN_TARGETS],
    n: usize,
    hosts: usize,
}

/// Where a pending scan stands after a new target.
struct ScanSpread {
    /// Distinct targets on the new target's host.
    ports_on_host: usize,
    hosts: usize,
    targets: usize,
}

impl ScanTargets {
    fn new() -> Box<Self> {
        Box::new(Self {
            seen: [(0, 0); SCAN_TARGETS],
            n: 0,
            hosts: 0,
        })
    }

    /// Adds a target; `None` when it was already counted.
    fn add(&mut self, (host, target): (u64, u64)) -> Option<ScanSpread> {
        let seen = &self.seen[..self.n];
        if seen.iter().any(|&(_, t)| t == target) {
            return None;
        }
        let on_host = seen.iter().filter(|&&(h, _)| h == host).count();
        if on_host == 0 {
            self.hosts += 1;
        }
        if self.n < SCAN_TARGETS {
            self.seen[self.n] = (host, target);
            self.n += 1;
        }
        Some(ScanSpread {
            ports_on_host: on_host + 1,
            hosts: self.hosts,
            targets: self.n,
        })
    }
}

/// Distinct connections (source ports) remembered per pending brute-force
/// key; more count as repeats of the last.
const GUESS_CONNECTIONS: usize = 32;

/// The distinct connections a pending brute-force key was detected on.
struct Connections {
    ports: [u16; GUESS_CONNECTIONS],
    n: usize,
}

impl Connections {
    fn new() -> Self {
        Self {
            ports: [0; GUESS_CONNECTIONS],
            n: 0,
        }
    }

    /// Adds a connection's source port, unless already there (or full).
    fn add(&mut self, port: u16) {
        if !self.ports[..self.n].contains(&port) && self.n < GUESS_CONNECTIONS {
            self.ports[self.n] = port;
            self.n += 1;
        }
    }
}

/// Detections of a key without an open alert, waiting for corroboration.
struct Pending {
    /// Detections counted.
    count: u32,
    /// Event time of the first counted detection.
    first_ns: u64,
    /// Scans only: the distinct targets probed (boxed: flood keys from
    /// spoofed sources are many and need none).
    scan: Option<Box<ScanTargets>>,
    /// Brute force only: the distinct connections detected.
    conns: Option<Box<Connections>>,
}

impl Pending {
    fn new(first_ns: u64) -> Self {
        Self {
            count: 0,
            first_ns,
            scan: None,
            conns: None,
        }
    }
}

/// What corroborates a pending key.
#[derive(Clone, Copy)]
pub(super) enum Evidence {
    /// Any detected row.
    Row,
    /// A scan probe of this target (host hash, target hash).
    Probe((u64, u64)),
    /// A host discovery probe no model flagged (the sweep rule): counted
    /// like [`Evidence::Probe`], but the scan rule's bars always apply,
    /// even when one row would open other alerts.
    Sweep((u64, u64)),
    /// A brute-force attempt on the connection with this source port.
    Attempt(u16),
}

impl Evidence {
    /// What detection `det` on `row` counts as.
    pub(super) fn of(row: &ScoredRow, det: &Detection) -> Self {
        match det.class {
            AttackClass::Scan if det.rule == Rule::Sweep => Evidence::Sweep(scan_target(row)),
            AttackClass::Scan => Evidence::Probe(scan_target(row)),
            AttackClass::BruteForce if row.entity == Entity::Flow => Evidence::Attempt(row.sport),
            _ => Evidence::Row,
        }
    }
}

/// The target of a scan row, for [`ScanTargets`]: hashes of its destination
/// host and of (host, port, protocol).
fn scan_target(row: &ScoredRow) -> (u64, u64) {
    let dst = canonical(row.dst);
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&dst, &mut h);
    let host = std::hash::Hasher::finish(&h);
    std::hash::Hash::hash(&(row.dport, row.proto), &mut h);
    (host, std::hash::Hasher::finish(&h))
}

/// Detections of keys without an open alert, until they corroborate.
pub(super) struct Corroboration {
    pending: HashMap<DedupKey, Pending>,
    /// `corroborate_window_s` in ns.
    window_ns: u64,
}

impl Corroboration {
    pub(super) fn new(window_ns: u64) -> Self {
        Self {
            pending: HashMap::new(),
            window_ns,
        }
    }

    /// Counts a detection for a key without an open alert; true once the
    /// key has `corroborate_rows` detections within the window, or for
    /// scans (`Probe` evidence) once its distinct targets reach
    /// `scan_ports_per_host` on one host or `scan_hosts` hosts.
    ///
    /// Brute force (`Attempt`) counts distinct connections, not rows: the
    /// class is repeated short connections, and one connection's handshake
    /// and first packets are one attempt however many rows they make. An
    /// attempt is dropped (`rows_bruteforce_upload`) while the client's
    /// upload-heavy connections to the server within the window (the beacon
    /// rule's records) number at least half of its suspected attempts: a
    /// guess is a few bytes answered by a banner or a failure page, and a
    /// client whose connections carry kilobytes out is uploading, not
    /// guessing. A guesser that uploads now and then stays suspected. An
    /// attempt is also dropped (`rows_bruteforce_paced`) while the client's
    /// closed connections to the server ([`BeaconRule::paced`]) started one
    /// at a time, at least `beacon_checkin_min_interval_s` apart: a poller
    /// or a person, where a guessing tool opens the next connection as soon
    /// as the last answer comes, usually several at once. Login ports are
    /// the login rule's, whatever the pace.
    #[expect(
        clippy::too_many_arguments,
        reason = "the stage's clock, settings, tables and counters, borrowed apart"
    )]
    pub(super) fn corroborated(
        &mut self,
        key: DedupKey,
        ts: u64,
        now: u64,
        evidence: Evidence,
        a: &AlertsSection,
        beacons: &BeaconRule,
        metrics: &mut AlertMetrics,
    ) -> bool {
        let need = a.corroborate_rows.max(1);
        if need == 1 && !matches!(evidence, Evidence::Sweep(_)) {
            return true;
        }
        let win = self.window_ns;
        if !self.pending.contains_key(&key) && self.pending.len() >= a.max_pending {
            // Full: forget entries whose window has passed; if that frees
            // less than an eighth, forget them all. One O(n) pass per n/8
            // new keys at worst, so a flood of one-row keys (spoofed
            // sources) costs O(1) per row instead of a scan per row.
            metrics.corroboration_evicted += evict_in_bulk(&mut self.pending, a.max_pending, |p| {
                now.saturating_sub(p.first_ns) < win
            });
        }
        let e = self.pending.entry(key).or_insert_with(|| Pending::new(ts));
        if ts.saturating_sub(e.first_ns) >= win {
            *e = Pending::new(ts);
        }
        let done = match evidence {
            Evidence::Probe(t) | Evidence::Sweep(t) => e
                .scan
                .get_or_insert_with(ScanTargets::new)
                .add(t)
                .is_some_and(|s| {
                    s.ports_on_host >= a.scan_ports_per_host.max(1) as usize
                        || s.hosts >= a.scan_hosts.max(1) as usize
                        || s.targets >= SCAN_TARGETS
                }),
            Evidence::Attempt(port) => {
                let conns = e.conns.get_or_insert_with(|| Box::new(Connections::new()));
                conns.add(port);
                let attempts = conns.n;
                let uploads = match (key.attacker, key.victim) {
                    (Some(c), Some(s)) => beacons.recent_uploads(c, s, ts, win),
                    _ => 0,
                };
                if 2 * uploads >= attempts {
                    metrics.rows_bruteforce_upload += 1;
                    return false;
                }
                let paced = match (key.attacker, key.victim) {
                    (Some(c), Some(s)) => {
                        beacons.paced((c, s), ts, win, secs_to_ns(a.beacon_checkin_min_interval_s))
                    }
                    _ => false,
                };
                if paced {
                    metrics.rows_bruteforce_paced += 1;
                    return false;
                }
                attempts >= need as usize
            }
            Evidence::Row => {
                e.count += 1;
                e.count >= need
            }
        };
        if done {
            self.pending.remove(&key);
            true
        } else {
            metrics.rows_uncorroborated += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_targets_count_each_target_once_and_hosts_apart() {
        let mut s = ScanTargets::new();
        let a = s.add((1, 10)).unwrap();
        assert_eq!((a.ports_on_host, a.hosts, a.targets), (1, 1, 1));
        assert!(s.add((1, 10)).is_none());
        let b = s.add((1, 11)).unwrap();
        assert_eq!((b.ports_on_host, b.hosts, b.targets), (2, 1, 2));
        let c = s.add((2, 20)).unwrap();
        assert_eq!((c.ports_on_host, c.hosts, c.targets), (1, 2, 3));
    }

    #[test]
    fn bulk_eviction_keeps_live_entries_unless_too_few_go() {
        // Cap 16: keeping more than 14 entries frees less than an eighth.
        let mut m: HashMap<u32, bool> = (0..16).map(|k| (k, k < 8)).collect();
        assert_eq!(evict_in_bulk(&mut m, 16, |&live| live), 8);
        assert_eq!(m.len(), 8);
        let mut m: HashMap<u32, bool> = (0..16).map(|k| (k, k > 0)).collect();
        assert_eq!(evict_in_bulk(&mut m, 16, |&live| live), 16);
        assert!(m.is_empty());
    }
}
