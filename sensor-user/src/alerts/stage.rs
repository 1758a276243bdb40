//! The alert stage's state machine: threshold, dedup, correlate, rank,
//! enrich, emit. Driven by row timestamps and explicit ticks, never by the
//! wall clock, so tests replay hours of traffic in microseconds.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use serde_json::{Value, json};

use super::{
    AlertMetrics, AlertOutput, AlertsError, Control,
    config::{AlertSettings, Thresholds},
    eve::{self, ClockMap},
    feedback::{AlertRecord, Verdict, VerdictRecord},
    inventory::{Inventory, canonical},
    store::LogWriter,
};
use crate::{
    features::UploadConn,
    model::row::{AttackClass, Entity, MAX_FEATURES, ModelVersion, ScoredRow},
};

/// How often (event time) open alerts are checked for updates and closing.
const SWEEP_NS: u64 = 1_000_000_000;
/// Heavy hitters kept per aggregated side (sources of a flood, targets of a scan).
const TOP_K: usize = 8;
/// HyperLogLog precision for distinct counts per aggregated alert: 2^10
/// one-byte registers, about 3 % standard error, 1 KiB per alert.
const HLL_BITS: u32 = 10;
/// Bounds on the lists an incident record carries.
const INCIDENT_LIST_CAP: usize = 32;
/// Addresses and subnets indexed per incident (a campaign touching more
/// hosts keeps correlating through the first ones).
const MAX_KEYS_PER_INCIDENT: usize = 256;
/// Addresses of an alert's aggregated side (targets of a scan, sources of a
/// flood) indexed for correlation: the first ones to enter its heavy-hitter
/// list. Bounded so a spoofed flood cannot fill its incident's index with
/// random sources, yet enough that a sweep's first targets correlate.
const CORR_PEERS_PER_ALERT: u8 = TOP_K as u8;
/// Open alerts sampled when one must be evicted (approximate LRU, as Redis
/// does): exact LRU would cost an ordered index update on every row.
const EVICTION_SAMPLES: usize = 8;

/// How alerts of a class are keyed, so one attack is one alert.
///
/// - `flood`: by victim. Sources of a volume attack are often spoofed or
///   spread (a botnet), so the attacker side is aggregated: distinct source
///   count (HyperLogLog) and the top sources (space-saving heavy hitters).
/// - `scan`: by attacker; the targets of a sweep are aggregated the same way.
/// - `bruteforce`, `anomaly`: by (attacker, victim) for flow rows; rows about
///   a destination host aggregate its sources, rows about a source host
///   aggregate its destinations (the other side of such a row is only the
///   most recent peer, not a fact about the behaviour).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct DedupKey {
    class: AttackClass,
    attacker: Option<IpAddr>,
    victim: Option<IpAddr>,
}

fn dedup_key(row: &ScoredRow, class: AttackClass) -> DedupKey {
    let src = canonical(row.src);
    let dst = canonical(row.dst);
    let (attacker, victim) = match (class, row.entity) {
        (AttackClass::Flood, _) | (_, Entity::DstHost) => (None, Some(dst)),
        (AttackClass::Scan, _) | (_, Entity::SrcHost) => (Some(src), None),
        _ => (Some(src), Some(dst)),
    };
    DedupKey {
        class,
        attacker,
        victim,
    }
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
enum Evidence {
    /// Any detected row.
    Row,
    /// A scan probe of this target (host hash, target hash).
    Probe((u64, u64)),
    /// A brute-force attempt on the connection with this source port.
    Attempt(u16),
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

/// Upload-heavy connection starts remembered per (client, server) pair.
const BEACON_HISTORY: usize = 32;
/// (client, server) pairs the beacon rule tracks at most; when full,
/// expired pairs go, or all of them if that frees less than an eighth.
const BEACON_PAIRS: usize = 16_384;

/// The upload-heavy connections one client made to one server: their start
/// times, the latest `BEACON_HISTORY` of them in a ring.
struct BeaconPair {
    starts: [u64; BEACON_HISTORY],
    /// Connections recorded in all (the ring holds the latest).
    n: usize,
    /// Event time of the latest.
    last_ns: u64,
}

impl BeaconPair {
    fn new() -> Self {
        Self {
            starts: [0; BEACON_HISTORY],
            n: 0,
            last_ns: 0,
        }
    }

    fn add(&mut self, start_ns: u64, ts: u64) {
        self.starts[self.n % BEACON_HISTORY] = start_ns;
        self.n += 1;
        self.last_ns = self.last_ns.max(ts);
    }

    /// Connections started within `window_ns` of `now` (of the latest
    /// `BEACON_HISTORY`).
    fn recent(&self, now: u64, window_ns: u64) -> usize {
        self.starts[..self.n.min(BEACON_HISTORY)]
            .iter()
            .filter(|&&t| now.saturating_sub(t) < window_ns)
            .count()
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

/// A detection: the class that fired, its confidence in 0..=1 (for severity)
/// and the raw score in the threshold's unit (for tuning).
#[derive(Clone, Copy, Debug)]
struct Detection {
    class: AttackClass,
    score: f32,
    raw: f32,
    /// Raised by the beacon rule (an `anomaly` whose raw score is the
    /// intervals' relative jitter, not a model's), not by a model.
    beacon: bool,
}

/// Classifier first: the alert's class is the most probable attack class and
/// its score the attack probability `1 − P(benign)` (the model card's
/// `attack_score`), compared with that class's threshold. Probability mass
/// split between attack classes still counts as attack. Failing that, the
/// autoencoder fires `anomaly` when its reconstruction error reaches the
/// anomaly threshold; its confidence is `1 − ½·threshold/error`: ½ at the
/// threshold, → 1 as the error grows.
fn detect(row: &ScoredRow, t: &Thresholds) -> Option<Detection> {
    detect_except(row, t, None)
}

/// [`detect`] with one classifier class ruled out (a flood the victim's
/// volume refutes): the next most probable attack class takes its place.
fn detect_except(
    row: &ScoredRow,
    t: &Thresholds,
    ruled_out: Option<AttackClass>,
) -> Option<Detection> {
    let mut top: Option<(AttackClass, f32)> = None;
    for class in [
        AttackClass::Flood,
        AttackClass::Scan,
        AttackClass::BruteForce,
    ] {
        if Some(class) == ruled_out {
            continue;
        }
        let p = row.class_probs[class as usize];
        if p > 0.0 && top.is_none_or(|(_, q)| p > q) {
            top = Some((class, p));
        }
    }
    if let Some((class, _)) = top {
        let attack = 1.0 - row.class_probs[AttackClass::Benign as usize];
        if attack >= t.get(class) {
            return Some(Detection {
                class,
                score: attack.clamp(0.0, 1.0),
                raw: attack,
                beacon: false,
            });
        }
    }
    let e = row.anomaly_score;
    let th = t.get(AttackClass::Anomaly);
    if e.is_finite() && th.is_finite() && e >= th {
        let score = if e > 0.0 && th > 0.0 {
            1.0 - 0.5 * th / e
        } else {
            1.0
        };
        return Some(Detection {
            class: AttackClass::Anomaly,
            score: score.clamp(0.5, 1.0),
            raw: e,
            beacon: false,
        });
    }
    None
}

/// Distinct count and heavy hitters of the aggregated side of an alert.
struct Aggregate {
    hll: Box<[u8; 1 << HLL_BITS]>,
    top: [(Option<IpAddr>, u64); TOP_K],
}

impl Aggregate {
    fn new() -> Self {
        Self {
            hll: Box::new([0; 1 << HLL_BITS]),
            top: [(None, 0); TOP_K],
        }
    }

    /// Counts `a`; returns it when it entered the heavy-hitter list (a free
    /// slot or a replacement), so the caller can index it for correlation.
    fn insert(&mut self, a: IpAddr) -> Option<IpAddr> {
        let bytes = match a {
            IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
            IpAddr::V6(v) => v.octets(),
        };
        let h = sensor_common::hash_addr(&bytes);
        let idx = (h >> (64 - HLL_BITS)) as usize;
        let rank = ((h << HLL_BITS) | (1 << (HLL_BITS - 1))).leading_zeros() as u8 + 1;
        if rank > self.hll[idx] {
            self.hll[idx] = rank;
        }
        // Space-saving: increment if tracked, else fill a free slot, else
        // replace the smallest counter (its count carries over as error bound).
        let mut min_i = 0;
        for i in 0..TOP_K {
            match self.top[i].0 {
                Some(x) if x == a => {
                    self.top[i].1 += 1;
                    return None;
                }
                None => {
                    self.top[i] = (Some(a), 1);
                    return Some(a);
                }
                Some(_) => {
                    if self.top[i].1 < self.top[min_i].1 {
                        min_i = i;
                    }
                }
            }
        }
        self.top[min_i] = (Some(a), self.top[min_i].1 + 1);
        Some(a)
    }

    /// HyperLogLog estimate with the small-range (linear counting) correction.
    fn distinct(&self) -> u64 {
        let m = f64::from(1u32 << HLL_BITS);
        let mut sum = 0.0;
        let mut zeros = 0u32;
        for &r in self.hll.iter() {
            sum += 2f64.powi(-i32::from(r));
            if r == 0 {
                zeros += 1;
            }
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let est = alpha * m * m / sum;
        let est = if est <= 2.5 * m && zeros > 0 {
            m * (m / f64::from(zeros)).ln()
        } else {
            est
        };
        est.round() as u64
    }

    fn top_json(&self) -> Value {
        let mut v: Vec<_> = self
            .top
            .iter()
            .filter_map(|(a, n)| a.map(|a| (a, *n)))
            .collect();
        v.sort_by_key(|x| std::cmp::Reverse(x.1));
        Value::Array(
            v.into_iter()
                .map(|(a, n)| json!({"ip": a.to_string(), "count": n}))
                .collect(),
        )
    }
}

/// The EVE envelope of alert records, fields in Suricata's order so lines
/// read the same as Suricata's in a terminal.
#[derive(serde::Serialize)]
struct EveAlertRecord<'a> {
    timestamp: String,
    flow_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    in_iface: Option<&'a str>,
    event_type: &'static str,
    src_ip: IpAddr,
    src_port: u16,
    dest_ip: IpAddr,
    dest_port: u16,
    proto: std::borrow::Cow<'static, str>,
    alert: EveAlert,
    host: &'a str,
    xdp_sensor: Value,
}

#[derive(serde::Serialize)]
struct EveAlert {
    action: &'static str,
    gid: u32,
    signature_id: u32,
    rev: u32,
    signature: &'static str,
    category: &'static str,
    severity: u8,
}

#[derive(serde::Serialize)]
struct EveIncidentRecord<'a> {
    timestamp: String,
    event_type: &'static str,
    host: &'a str,
    xdp_sensor: Value,
}

/// The 5-tuple of a row, for the EVE envelope.
#[derive(Clone, Copy, Debug)]
struct Tuple {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
}

struct OpenAlert {
    id: Arc<str>,
    key: DedupKey,
    entity: Entity,
    incident: u64,
    tuple: Tuple,
    first_seen_ns: u64,
    last_seen_ns: u64,
    last_emit_ns: u64,
    count: u64,
    emitted_count: u64,
    peak_pps: f32,
    peak_score: f32,
    peak_raw: f32,
    /// The peak detection came from the beacon rule.
    peak_beacon: bool,
    peak_features: [f32; MAX_FEATURES],
    n_features: u8,
    aggregate: Option<Aggregate>,
    /// Addresses of the aggregated side indexed so far (≤ `CORR_PEERS_PER_ALERT`).
    peers_indexed: u8,
    victim_criticality: u8,
    emitted_eve_severity: u8,
    classifier_version: ModelVersion,
    autoencoder_version: ModelVersion,
    verdict: Option<Verdict>,
}

impl OpenAlert {
    fn severity(&self) -> (u8, u8) {
        eve::severity(
            self.peak_score,
            self.key.class,
            self.peak_pps,
            self.victim_criticality,
        )
    }
}

/// What correlates alerts: an address, or the /24 (IPv4) or /64 (IPv6) it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum CorrKey {
    Addr(IpAddr),
    Net4(u32),
    Net6(u64),
}

/// The subnet key of an address.
fn net_key(a: IpAddr) -> CorrKey {
    match a {
        IpAddr::V4(v) => CorrKey::Net4(u32::from(v) & 0xffff_ff00),
        IpAddr::V6(v) => CorrKey::Net6((u128::from(v) >> 64) as u64),
    }
}

/// The keys of an alert's labelled sides (attacker and victim, when not
/// aggregated): each address and its subnet.
fn corr_keys(key: &DedupKey, out: &mut Vec<CorrKey>) {
    out.clear();
    for a in [key.attacker, key.victim].into_iter().flatten() {
        out.push(CorrKey::Addr(a));
        out.push(net_key(a));
    }
}

/// The keys of one address seen on an alert's aggregated side. A target is
/// a host actually hit, so it correlates with its subnet like a victim; a
/// source of an aggregated alert is often spoofed, so only the exact
/// address is indexed (a random /24 would pull in unrelated alerts).
fn peer_keys(peer: IpAddr, is_target: bool, out: &mut Vec<CorrKey>) {
    out.push(CorrKey::Addr(peer));
    if is_target {
        out.push(net_key(peer));
    }
}

/// Whether the aggregated side of an alert keyed `key` is its targets
/// (victim aggregated: scan, source-host rows) rather than its sources.
fn peers_are_targets(key: &DedupKey) -> bool {
    key.victim.is_none()
}

struct Incident {
    id: Arc<str>,
    first_seen_ns: u64,
    last_seen_ns: u64,
    alert_ids: Vec<Arc<str>>,
    n_alerts: u64,
    open_alerts: u32,
    classes: Vec<AttackClass>,
    attackers: Vec<IpAddr>,
    victims: Vec<IpAddr>,
    aggregated_attackers: bool,
    keys: Vec<CorrKey>,
    max_severity: u8,
}

/// Read-only view of an open alert (tests, control thread, debugging).
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAlertInfo {
    pub alert_id: String,
    pub incident_id: String,
    pub class: AttackClass,
    pub attacker: Option<IpAddr>,
    pub victim: Option<IpAddr>,
    pub count: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub peak_pps: f32,
    pub peak_score: f32,
    /// Estimated distinct peers on the aggregated side, if any.
    pub distinct_peers: Option<u64>,
    pub severity: u8,
}

/// All alert state; owned by one thread.
pub struct AlertStage {
    settings: AlertSettings,
    inventory: Inventory,
    sinks: Box<dyn AlertOutput>,
    clock: ClockMap,
    alert_log: Option<LogWriter>,
    run_id: String,
    now_ns: u64,
    next_sweep_ns: u64,
    quiet_ns: u64,
    update_ns: u64,
    incident_ns: u64,
    alerts: Vec<OpenAlert>,
    index: HashMap<DedupKey, usize>,
    /// Detections not yet corroborated.
    pending: HashMap<DedupKey, Pending>,
    /// Upload-heavy connections per (client, server), for the beacon rule.
    beacons: HashMap<(IpAddr, IpAddr), BeaconPair>,
    corroborate_ns: u64,
    incidents: HashMap<u64, Incident>,
    corr: HashMap<CorrKey, u64>,
    next_alert_seq: u64,
    next_incident_seq: u64,
    metrics: AlertMetrics,
    rng: u64,
    keys_buf: Vec<CorrKey>,
    line: Vec<u8>,
    dirty: bool,
    feature_names: Vec<String>,
    /// Why the closing record being emitted closes its alert.
    pending_close_reason: Option<&'static str>,
}

/// Makes room in a full map of `cap` entries: drops the entries `live`
/// rejects, or all of them if that frees less than an eighth (so a map
/// filled by live one-off keys is emptied once, not scanned per insert).
/// Returns how many went.
fn evict_in_bulk<K, V>(
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

fn secs_to_ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9) as u64
}

impl AlertStage {
    /// Builds the stage. `clock` maps row timestamps to wall-clock time.
    ///
    /// # Errors
    /// When the alert record log cannot be opened.
    pub fn new(
        settings: AlertSettings,
        inventory: Inventory,
        sinks: impl AlertOutput + 'static,
        clock: ClockMap,
    ) -> Result<Self, AlertsError> {
        let alert_log = if settings.alerts.alert_log.as_os_str().is_empty() {
            None
        } else {
            Some(LogWriter::open(&settings.alerts.alert_log)?)
        };
        let wall_s = sensor_common::clock::realtime_ns() / 1_000_000_000;
        let run_id = format!("{wall_s:x}{:04x}", std::process::id() & 0xffff);
        Ok(Self {
            quiet_ns: secs_to_ns(settings.alerts.quiet_period_s),
            corroborate_ns: secs_to_ns(settings.alerts.corroborate_window_s),
            update_ns: secs_to_ns(settings.alerts.update_interval_s),
            incident_ns: secs_to_ns(settings.alerts.incident_window_s),
            settings,
            inventory,
            sinks: Box::new(sinks),
            clock,
            alert_log,
            run_id,
            now_ns: 0,
            next_sweep_ns: 0,
            alerts: Vec::new(),
            index: HashMap::new(),
            pending: HashMap::new(),
            beacons: HashMap::new(),
            incidents: HashMap::new(),
            corr: HashMap::new(),
            next_alert_seq: 1,
            next_incident_seq: 1,
            metrics: AlertMetrics::default(),
            rng: 0x9e37_79b9_7f4a_7c15,
            keys_buf: Vec::new(),
            line: Vec::with_capacity(2048),
            dirty: false,
            feature_names: Vec::new(),
            pending_close_reason: None,
        })
    }

    /// Counters now (`rows_shed` as last set by the owner).
    #[must_use]
    pub fn metrics(&self) -> AlertMetrics {
        let mut m = self.metrics;
        m.open_alerts = self.alerts.len() as u64;
        m.open_incidents = self.incidents.len() as u64;
        m.sink_errors = self.sinks.errors();
        m
    }

    pub(crate) fn set_rows_shed(&mut self, n: u64) {
        self.metrics.rows_shed = n;
    }

    /// Thresholds in force.
    #[must_use]
    pub fn thresholds(&self) -> Thresholds {
        self.settings.thresholds
    }

    /// The open alerts.
    #[must_use]
    pub fn open_alerts(&self) -> Vec<OpenAlertInfo> {
        self.alerts
            .iter()
            .map(|a| OpenAlertInfo {
                alert_id: a.id.to_string(),
                incident_id: self
                    .incidents
                    .get(&a.incident)
                    .map(|i| i.id.to_string())
                    .unwrap_or_default(),
                class: a.key.class,
                attacker: a.key.attacker,
                victim: a.key.victim,
                count: a.count,
                first_seen_ns: a.first_seen_ns,
                last_seen_ns: a.last_seen_ns,
                peak_pps: a.peak_pps,
                peak_score: a.peak_score,
                distinct_peers: a.aggregate.as_ref().map(Aggregate::distinct),
                severity: a.severity().0,
            })
            .collect()
    }

    /// Number of open incidents.
    #[must_use]
    pub fn open_incident_count(&self) -> usize {
        self.incidents.len()
    }

    /// Handles a control message from the feedback poller.
    pub fn control(&mut self, c: Control) {
        match c {
            Control::Verdict(v) => self.apply_verdict(&v),
            Control::Thresholds(t) => {
                if t != self.settings.thresholds {
                    tracing::info!(?t, "alert thresholds reloaded");
                    self.settings.thresholds = t;
                    self.metrics.threshold_reloads += 1;
                }
            }
        }
    }

    /// Attaches an analyst's verdict to the alert if it is still open: a
    /// false positive stops its update records (the closing record still
    /// comes, carrying the verdict).
    pub fn apply_verdict(&mut self, v: &VerdictRecord) {
        self.metrics.verdicts_applied += 1;
        if let Some(a) = self.alerts.iter_mut().find(|a| *a.id == *v.alert_id) {
            a.verdict = Some(v.verdict);
        }
    }

    /// Advances the stage clock (CLOCK_MONOTONIC ns) without a row: closes
    /// quiet alerts and emits due updates.
    pub fn tick(&mut self, now_ns: u64) {
        if now_ns > self.now_ns {
            self.now_ns = now_ns;
        }
        if self.now_ns >= self.next_sweep_ns {
            self.sweep();
        }
    }

    /// Flushes buffered sink output and the alert log.
    pub fn flush(&mut self) {
        if self.dirty {
            self.sinks.flush();
            self.dirty = false;
        }
    }

    /// Handles one scored row. No I/O unless an alert opens or escalates.
    pub fn process(&mut self, row: &ScoredRow) {
        self.metrics.rows_in += 1;
        self.tick(row.event_ts_ns);
        if let Some(u) = row.facts.upload {
            self.metrics.upload_connections += 1;
            if let Some(det) = self.beacon(row, u) {
                self.metrics.beacon_detections += 1;
                // The alert is the client's, whichever side's close ended
                // the connection.
                let client_row;
                let r = if u.client_is_src {
                    row
                } else {
                    let mut c = row.clone();
                    (c.src, c.dst, c.sport, c.dport) = (row.dst, row.src, row.dport, row.sport);
                    c.facts.responder = false;
                    client_row = c;
                    &client_row
                };
                let key = dedup_key(r, AttackClass::Anomaly);
                // The rule's own bar (that many regular connections) is its
                // corroboration.
                self.apply(r, key, det, false);
            }
        }
        let Some(det) = detect(row, &self.settings.thresholds) else {
            self.metrics.rows_below_threshold += 1;
            return;
        };
        let det = if det.class == AttackClass::Flood {
            match self.flood_guards(row, det) {
                Some(d) => d,
                None => return,
            }
        } else {
            det
        };
        // A flow that answers a connection names its responder as source:
        // that host is a scan's or a brute force's target, not its author.
        if row.facts.responder
            && matches!(
                det.class,
                AttackClass::Scan | AttackClass::BruteForce | AttackClass::Anomaly
            )
        {
            self.metrics.rows_responder += 1;
            return;
        }
        // The autoencoder finds a scanner's probes of a host unusual: they
        // are the scan an open alert already reports, not a second attack.
        if det.class == AttackClass::Anomaly && self.is_scanning(row.src, row.dst) {
            self.metrics.rows_anomaly_scan_probe += 1;
            return;
        }
        let key = dedup_key(row, det.class);
        self.apply(row, key, det, true);
    }

    /// True when an open scan alert names `src` as the scanner and `dst`
    /// among its top targets.
    fn is_scanning(&self, src: IpAddr, dst: IpAddr) -> bool {
        let key = DedupKey {
            class: AttackClass::Scan,
            attacker: Some(canonical(src)),
            victim: None,
        };
        let dst = canonical(dst);
        self.index.get(&key).is_some_and(|&i| {
            self.alerts[i]
                .aggregate
                .as_ref()
                .is_some_and(|g| g.top.iter().any(|&(a, _)| a == Some(dst)))
        })
    }

    /// Opens (after corroboration, if `corroborate`) or updates the alert of
    /// `key` with detection `det` on `row`.
    fn apply(&mut self, row: &ScoredRow, key: DedupKey, det: Detection, corroborate: bool) {
        let Some(&i) = self.index.get(&key) else {
            let evidence = match det.class {
                AttackClass::Scan => Evidence::Probe(scan_target(row)),
                AttackClass::BruteForce if row.entity == Entity::Flow => {
                    Evidence::Attempt(row.sport)
                }
                _ => Evidence::Row,
            };
            if !corroborate || self.corroborated(key, row.event_ts_ns, evidence) {
                self.open(row, key, det);
            }
            return;
        };
        let a = &mut self.alerts[i];
        a.count += 1;
        a.last_seen_ns = a.last_seen_ns.max(row.event_ts_ns);
        let mut peak = false;
        if row.packets_per_s > a.peak_pps {
            a.peak_pps = row.packets_per_s;
            peak = true;
        }
        if det.score > a.peak_score {
            a.peak_score = det.score;
            a.peak_raw = det.raw;
            a.peak_beacon = det.beacon;
            a.peak_features = row.features;
            a.n_features = row.n_features;
            peak = true;
        }
        if let Some(agg) = a.aggregate.as_mut()
            && let Some(peer) = agg.insert(if key.attacker.is_none() {
                canonical(row.src)
            } else {
                canonical(row.dst)
            })
            && a.peers_indexed < CORR_PEERS_PER_ALERT
        {
            // At most CORR_PEERS_PER_ALERT times per alert: off the steady path.
            a.peers_indexed += 1;
            let incident = a.incident;
            self.index_peer(incident, peer, peers_are_targets(&key));
        }
        let a = &self.alerts[i];
        // Escalation to a higher EVE level is news now, not at the next update.
        if peak && a.verdict != Some(Verdict::Fp) && a.severity().1 < a.emitted_eve_severity {
            self.emit_alert(i, "update");
        }
    }

    /// The beacon rule: records an upload-heavy client connection and
    /// returns an `anomaly` detection once the client's latest
    /// `beacon_connections` upload-heavy connections to this server started
    /// at regular intervals (median absolute deviation of the intervals at
    /// most `beacon_max_jitter` of their median), within `beacon_window_s`.
    /// A client sending data out to one server on a timer is what beaconing
    /// malware and low-and-slow exfiltration look like; people uploading
    /// files do not keep a clock. Confidence: 1 at no jitter, ½ at the bar.
    fn beacon(&mut self, row: &ScoredRow, u: UploadConn) -> Option<Detection> {
        let a = &self.settings.alerts;
        let need = a.beacon_connections as usize;
        let (max_jitter, window) = (a.beacon_max_jitter, secs_to_ns(a.beacon_window_s));
        let now = self.now_ns;
        let (client, server) = if u.client_is_src {
            (row.src, row.dst)
        } else {
            (row.dst, row.src)
        };
        let pair = (canonical(client), canonical(server));
        if !self.beacons.contains_key(&pair) && self.beacons.len() >= BEACON_PAIRS {
            self.metrics.beacon_pairs_evicted +=
                evict_in_bulk(&mut self.beacons, BEACON_PAIRS, |p| {
                    now.saturating_sub(p.last_ns) < window
                });
        }
        let p = self.beacons.entry(pair).or_insert_with(BeaconPair::new);
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
            beacon: true,
        })
    }

    /// The bar a detection of `class` had to pass: the beacon rule's jitter
    /// bound for its detections, else the class's score threshold.
    fn threshold_of(&self, class: AttackClass, beacon: bool) -> f32 {
        if beacon {
            self.settings.alerts.beacon_max_jitter as f32
        } else {
            self.settings.thresholds.get(class)
        }
    }

    /// The guards a flood detection `det` passes (counted when it fails):
    /// the detection to go on with, or `None` to drop the row.
    fn flood_guards(&mut self, row: &ScoredRow, det: Detection) -> Option<Detection> {
        let t = &self.settings.thresholds;
        // Traffic its destination asked for (a scan's replies reaching the
        // scanner, echo replies to a pinger) floods nobody.
        if row.facts.solicited {
            self.metrics.rows_flood_solicited += 1;
            return None;
        }
        // ICMP errors name no request to match, but those sent to a host
        // this stage already holds as an attacker answer its probes.
        if is_icmp_error(row) && self.is_open_attacker(row.dst, row.src) {
            self.metrics.rows_flood_backscatter += 1;
            return None;
        }
        if f64::from(row.facts.victim_pps) >= self.settings.alerts.flood_min_pps {
            return Some(det);
        }
        // Not a flood at this volume. If the model's next guess is a scan
        // that passes its threshold and is more likely than benign, the row
        // is a probe: a slow scanner's first rows can look flood-like before
        // its spread shows, and the scan rule still needs that spread.
        self.metrics.rows_flood_low_volume += 1;
        detect_except(row, t, Some(AttackClass::Flood)).filter(|d| {
            d.class == AttackClass::Scan
                && row.class_probs[AttackClass::Scan as usize]
                    > row.class_probs[AttackClass::Benign as usize]
        })
    }

    /// True when an open alert names `host` as the attacker of a scan
    /// (any target) or of a brute force or anomaly on `peer`. Exact key
    /// lookups: constant cost per row, even during an ICMP error flood.
    fn is_open_attacker(&self, host: IpAddr, peer: IpAddr) -> bool {
        let (host, peer) = (canonical(host), canonical(peer));
        [
            (AttackClass::Scan, None),
            (AttackClass::BruteForce, Some(peer)),
            (AttackClass::Anomaly, Some(peer)),
        ]
        .into_iter()
        .any(|(class, victim)| {
            self.index.contains_key(&DedupKey {
                class,
                attacker: Some(host),
                victim,
            })
        })
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
    /// guessing. A guesser that uploads now and then stays suspected.
    fn corroborated(&mut self, key: DedupKey, ts: u64, evidence: Evidence) -> bool {
        let need = self.settings.alerts.corroborate_rows.max(1);
        if need == 1 {
            return true;
        }
        if !self.pending.contains_key(&key)
            && self.pending.len() >= self.settings.alerts.max_pending
        {
            // Full: forget entries whose window has passed; if that frees
            // less than an eighth, forget them all. One O(n) pass per n/8
            // new keys at worst, so a flood of one-row keys (spoofed
            // sources) costs O(1) per row instead of a scan per row.
            let (win, now, cap) = (
                self.corroborate_ns,
                self.now_ns,
                self.settings.alerts.max_pending,
            );
            self.metrics.corroboration_evicted += evict_in_bulk(&mut self.pending, cap, |p| {
                now.saturating_sub(p.first_ns) < win
            });
        }
        let e = self.pending.entry(key).or_insert_with(|| Pending::new(ts));
        if ts.saturating_sub(e.first_ns) >= self.corroborate_ns {
            *e = Pending::new(ts);
        }
        let a = &self.settings.alerts;
        let done = match evidence {
            Evidence::Probe(t) => e
                .scan
                .get_or_insert_with(ScanTargets::new)
                .add(t)
                .is_some_and(|s| {
                    s.ports_on_host >= a.scan_ports_per_host.max(1) as usize
                        || s.hosts >= a.scan_hosts.max(1) as usize
                        || s.targets >= SCAN_TARGETS
                }),
            Evidence::Attempt(port) => {
                let conns = e.conns.get_or_insert_with(|| {
                    Box::new(Connections {
                        ports: [0; GUESS_CONNECTIONS],
                        n: 0,
                    })
                });
                conns.add(port);
                let attempts = conns.n;
                let uploads = match (key.attacker, key.victim) {
                    (Some(c), Some(s)) => self
                        .beacons
                        .get(&(c, s))
                        .map_or(0, |p| p.recent(ts, self.corroborate_ns)),
                    _ => 0,
                };
                if 2 * uploads >= attempts {
                    self.metrics.rows_bruteforce_upload += 1;
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
            self.metrics.rows_uncorroborated += 1;
            false
        }
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn open(&mut self, row: &ScoredRow, key: DedupKey, det: Detection) {
        if self.alerts.len() >= self.settings.alerts.max_open_alerts.max(1) {
            let mut victim = usize::MAX;
            for _ in 0..EVICTION_SAMPLES {
                let j = (self.next_rand() % self.alerts.len() as u64) as usize;
                if victim == usize::MAX
                    || self.alerts[j].last_seen_ns < self.alerts[victim].last_seen_ns
                {
                    victim = j;
                }
            }
            self.metrics.alerts_evicted += 1;
            self.close_alert(victim, "evicted");
        }
        let (aggregate, first_peer) = if key.attacker.is_none() || key.victim.is_none() {
            let mut agg = Aggregate::new();
            let peer = agg.insert(if key.attacker.is_none() {
                canonical(row.src)
            } else {
                canonical(row.dst)
            });
            (Some(agg), peer)
        } else {
            (None, None)
        };
        let incident = self.assign_incident(&key, first_peer, row.event_ts_ns);
        let seq = self.next_alert_seq;
        self.next_alert_seq += 1;
        let id: Arc<str> = format!("a-{}-{seq}", self.run_id).into();
        let victim_criticality = self.inventory.lookup(canonical(row.dst)).criticality;
        let mut a = OpenAlert {
            id: Arc::clone(&id),
            key,
            entity: row.entity,
            incident,
            tuple: Tuple {
                src: canonical(row.src),
                dst: canonical(row.dst),
                sport: row.sport,
                dport: row.dport,
                proto: row.proto,
            },
            first_seen_ns: row.event_ts_ns,
            last_seen_ns: row.event_ts_ns,
            last_emit_ns: row.event_ts_ns,
            count: 1,
            emitted_count: 0,
            peak_pps: row.packets_per_s.max(0.0),
            peak_score: det.score,
            peak_raw: det.raw,
            peak_beacon: det.beacon,
            peak_features: row.features,
            n_features: row.n_features,
            aggregate,
            peers_indexed: u8::from(first_peer.is_some()),
            victim_criticality,
            emitted_eve_severity: 4,
            classifier_version: row.classifier_version,
            autoencoder_version: row.autoencoder_version,
            verdict: None,
        };
        if !a.peak_pps.is_finite() {
            a.peak_pps = 0.0;
        }
        let sev = a.severity().0;
        let i = self.alerts.len();
        self.alerts.push(a);
        self.index.insert(key, i);
        self.metrics.alerts_opened += 1;
        if let Some(inc) = self.incidents.get_mut(&incident) {
            inc.n_alerts += 1;
            inc.open_alerts += 1;
            inc.last_seen_ns = inc.last_seen_ns.max(row.event_ts_ns);
            inc.max_severity = inc.max_severity.max(sev);
            if inc.alert_ids.len() < INCIDENT_LIST_CAP {
                inc.alert_ids.push(id);
            }
            if !inc.classes.contains(&key.class) {
                inc.classes.push(key.class);
            }
            match key.attacker {
                Some(x)
                    if !inc.attackers.contains(&x) && inc.attackers.len() < INCIDENT_LIST_CAP =>
                {
                    inc.attackers.push(x);
                }
                None => inc.aggregated_attackers = true,
                _ => {}
            }
            if let Some(x) = key.victim
                && !inc.victims.contains(&x)
                && inc.victims.len() < INCIDENT_LIST_CAP
            {
                inc.victims.push(x);
            }
        }
        self.log_alert(i, "open");
        self.emit_alert(i, "open");
        let state = if self
            .incidents
            .get(&incident)
            .is_some_and(|x| x.n_alerts == 1)
        {
            "open"
        } else {
            "update"
        };
        self.emit_incident(incident, state, None);
    }

    /// Finds the active incident sharing an address or subnet with the
    /// alert (its labelled sides and the first address of its aggregated
    /// side), or opens one. Joining the oldest match (rather than merging
    /// several incidents) keeps ids stable for consumers.
    fn assign_incident(&mut self, key: &DedupKey, first_peer: Option<IpAddr>, ts: u64) -> u64 {
        let mut keys = std::mem::take(&mut self.keys_buf);
        corr_keys(key, &mut keys);
        if let Some(p) = first_peer {
            peer_keys(p, peers_are_targets(key), &mut keys);
        }
        // Incident sequence numbers grow with time: the smallest is the oldest.
        let found = keys.iter().filter_map(|k| self.corr.get(k).copied()).min();
        let seq = if let Some(seq) = found {
            seq
        } else {
            if self.incidents.len() >= self.settings.alerts.max_incidents.max(1) {
                // Rare (incident creation under a cap); a scan is affordable.
                if let Some(old) = self
                    .incidents
                    .iter()
                    .min_by_key(|(_, i)| (i.open_alerts > 0, i.last_seen_ns))
                    .map(|(s, _)| *s)
                {
                    self.metrics.incidents_evicted += 1;
                    self.close_incident(old, "evicted");
                }
            }
            let seq = self.next_incident_seq;
            self.next_incident_seq += 1;
            self.incidents.insert(
                seq,
                Incident {
                    id: format!("i-{}-{seq}", self.run_id).into(),
                    first_seen_ns: ts,
                    last_seen_ns: ts,
                    alert_ids: Vec::new(),
                    n_alerts: 0,
                    open_alerts: 0,
                    classes: Vec::new(),
                    attackers: Vec::new(),
                    victims: Vec::new(),
                    aggregated_attackers: false,
                    keys: Vec::new(),
                    max_severity: 0,
                },
            );
            self.metrics.incidents_opened += 1;
            seq
        };
        self.index_keys(seq, &keys);
        if let Some(p) = first_peer {
            self.note_target(seq, p, peers_are_targets(key));
        }
        self.keys_buf = keys;
        seq
    }

    /// Indexes the keys not yet owned by any incident for incident `seq`.
    /// A key another incident owns stays with it (incidents are not merged).
    fn index_keys(&mut self, seq: u64, keys: &[CorrKey]) {
        let Some(inc) = self.incidents.get_mut(&seq) else {
            // Evicted at the incident cap while its alert stays open.
            return;
        };
        for k in keys {
            if self.corr.contains_key(k) {
                continue;
            }
            if inc.keys.len() >= MAX_KEYS_PER_INCIDENT {
                // Bounds the correlation index at MAX_KEYS_PER_INCIDENT ×
                // max_incidents; the alert still joins, later alerts sharing
                // only the unindexed addresses open their own incident.
                self.metrics.correlation_keys_dropped += 1;
                break;
            }
            self.corr.insert(*k, seq);
            inc.keys.push(*k);
        }
    }

    /// Indexes an address newly seen on an open alert's aggregated side.
    fn index_peer(&mut self, seq: u64, peer: IpAddr, is_target: bool) {
        let mut keys = std::mem::take(&mut self.keys_buf);
        keys.clear();
        peer_keys(peer, is_target, &mut keys);
        self.index_keys(seq, &keys);
        self.note_target(seq, peer, is_target);
        self.keys_buf = keys;
    }

    /// Lists a host an aggregated alert actually hit among its incident's
    /// victims, so a scan-only incident still names them.
    fn note_target(&mut self, seq: u64, peer: IpAddr, is_target: bool) {
        if let Some(inc) = self.incidents.get_mut(&seq)
            && is_target
            && !inc.victims.contains(&peer)
            && inc.victims.len() < INCIDENT_LIST_CAP
        {
            inc.victims.push(peer);
        }
    }

    fn sweep(&mut self) {
        let now = self.now_ns;
        let mut i = self.alerts.len();
        while i > 0 {
            i -= 1;
            let a = &self.alerts[i];
            if now.saturating_sub(a.last_seen_ns) >= self.quiet_ns {
                self.close_alert(i, "quiet");
                continue;
            }
            if let Some(inc) = self.incidents.get_mut(&a.incident) {
                inc.last_seen_ns = inc.last_seen_ns.max(a.last_seen_ns);
            }
            if a.count > a.emitted_count
                && a.verdict != Some(Verdict::Fp)
                && now.saturating_sub(a.last_emit_ns) >= self.update_ns
            {
                self.emit_alert(i, "update");
            }
        }
        let due: Vec<u64> = self
            .incidents
            .iter()
            .filter(|(_, inc)| {
                inc.open_alerts == 0 && now.saturating_sub(inc.last_seen_ns) >= self.incident_ns
            })
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            self.close_incident(s, "quiet");
        }
        self.next_sweep_ns = now + SWEEP_NS.min(self.quiet_ns.max(1));
        if let Some(log) = self.alert_log.as_mut() {
            // Records are appended unsynced; make them durable once a sweep.
            let _ = log_sync(log);
        }
    }

    fn close_alert(&mut self, i: usize, reason: &'static str) {
        self.log_alert(i, "close");
        self.pending_close_reason = Some(reason);
        self.emit_alert(i, "closed");
        let a = self.alerts.swap_remove(i);
        self.index.remove(&a.key);
        if i < self.alerts.len() {
            let moved = self.alerts[i].key;
            self.index.insert(moved, i);
        }
        self.metrics.alerts_closed += 1;
        if let Some(inc) = self.incidents.get_mut(&a.incident) {
            inc.open_alerts = inc.open_alerts.saturating_sub(1);
            inc.last_seen_ns = inc.last_seen_ns.max(a.last_seen_ns);
        }
    }

    fn close_incident(&mut self, seq: u64, reason: &str) {
        self.emit_incident(seq, "closed", Some(reason));
        if let Some(inc) = self.incidents.remove(&seq) {
            for k in &inc.keys {
                if self.corr.get(k) == Some(&seq) {
                    self.corr.remove(k);
                }
            }
            self.metrics.incidents_closed += 1;
        }
    }

    /// Closes every open alert and incident (at exit) and flushes.
    pub fn shutdown(&mut self) {
        while !self.alerts.is_empty() {
            let i = self.alerts.len() - 1;
            self.close_alert(i, "shutdown");
        }
        let all: Vec<u64> = self.incidents.keys().copied().collect();
        for s in all {
            self.close_incident(s, "shutdown");
        }
        if let Some(log) = self.alert_log.as_mut() {
            let _ = log_sync(log);
        }
        self.dirty = true;
        self.flush();
    }

    fn wall(&self, ns: u64) -> String {
        eve::timestamp(self.clock.wall_ns(ns))
    }

    fn names(&mut self, n: usize) -> &[String] {
        if self.feature_names.len() != n {
            self.feature_names = self.settings.feature_names(n);
        }
        &self.feature_names
    }

    /// The features of the peak row furthest from the model card's baseline
    /// (robust z-score: (x − median) / (IQR / 1.349)).
    fn top_features(&self, a: &OpenAlert) -> Value {
        let Some(card) = [
            self.settings.classifier.as_ref(),
            self.settings.autoencoder.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find(|c| c.baseline.iter().any(Option::is_some)) else {
            return Value::Array(Vec::new());
        };
        let n = usize::from(a.n_features).min(MAX_FEATURES);
        let mut z: Vec<(usize, f32)> = (0..n)
            .filter_map(|i| {
                let b = card.baseline.get(i).copied().flatten()?;
                let x = a.peak_features[i];
                x.is_finite().then(|| (i, (x - b.center) / b.scale))
            })
            .collect();
        z.sort_by(|x, y| y.1.abs().total_cmp(&x.1.abs()));
        z.truncate(self.settings.alerts.top_features);
        Value::Array(
            z.into_iter()
                .map(|(i, zv)| {
                    json!({
                        "name": card.feature_names[i],
                        "value": shortest(a.peak_features[i]),
                        "z": (f64::from(zv) * 100.0).round() / 100.0,
                    })
                })
                .collect(),
        )
    }

    fn asset_json(&self, addr: Option<IpAddr>) -> Value {
        match addr {
            Some(a) => self.inventory.lookup(a).to_json(),
            None => {
                json!({"name": "many", "owner": "many", "criticality": 0, "tags": [], "subnet": "many"})
            }
        }
    }

    fn emit_alert(&mut self, i: usize, state: &'static str) {
        let reason = self.pending_close_reason.take();
        let now = self.now_ns;
        let a = &self.alerts[i];
        let (sev, eve_sev) = a.severity();
        let (sid, sig, cat) = eve::signature(a.key.class);
        let t = a.tuple;
        let ts = match state {
            "open" => a.first_seen_ns,
            "closed" => now.max(a.last_seen_ns),
            _ => a.last_seen_ns,
        };
        let incident_id = self
            .incidents
            .get(&a.incident)
            .map(|x| x.id.to_string())
            .unwrap_or_default();
        let (sources, targets) = match (&a.aggregate, a.key.attacker.is_none()) {
            (Some(agg), true) => (
                json!({"distinct": agg.distinct(), "top": agg.top_json()}),
                Value::Null,
            ),
            (Some(agg), false) => (
                Value::Null,
                json!({"distinct": agg.distinct(), "top": agg.top_json()}),
            ),
            (None, _) => (Value::Null, Value::Null),
        };
        let ip_or_many =
            |x: Option<IpAddr>| x.map_or_else(|| "many".to_string(), |a| a.to_string());
        let mut xs = json!({
            "state": state,
            "alert_id": &*a.id,
            "incident_id": incident_id,
            "class": a.key.class.name(),
            "entity": match a.entity { Entity::Flow => "flow", Entity::SrcHost => "src_host", Entity::DstHost => "dst_host" },
            "score": round4(a.peak_score),
            "raw_score": round4(a.peak_raw),
            "threshold": round4(self.threshold_of(a.key.class, a.peak_beacon)),
            "severity": sev,
            "count": a.count,
            "first_seen": self.wall(a.first_seen_ns),
            "last_seen": self.wall(a.last_seen_ns),
            "duration_s": (a.last_seen_ns.saturating_sub(a.first_seen_ns) as f64 / 1e9 * 1000.0).round() / 1000.0,
            "peak_pps": shortest(a.peak_pps),
            "attacker": ip_or_many(a.key.attacker),
            "victim": ip_or_many(a.key.victim),
            "attacker_asset": self.asset_json(a.key.attacker),
            "victim_asset": self.asset_json(a.key.victim),
            "sensor": self.settings.sensor_name,
            "interface": self.settings.interface,
            "models": {"classifier": &*a.classifier_version, "autoencoder": &*a.autoencoder_version},
            "top_features": self.top_features(a),
            // When this record was produced, on the clock packets are
            // stamped with: the one wall-clock reading of the stage, taken
            // only when a record is written, so consumers can measure
            // detection latency (event time alone cannot show queueing).
            "emitted_mono_ns": sensor_common::clock::monotonic_ns(),
        });
        if let Value::Object(m) = &mut xs {
            if !sources.is_null() {
                m.insert("sources".into(), sources);
            }
            if !targets.is_null() {
                m.insert("targets".into(), targets);
            }
            if let Some(v) = a.verdict {
                m.insert("verdict".into(), json!(v.name()));
            }
            if a.peak_beacon {
                m.insert("detector".into(), json!("beacon"));
            }
            if state == "closed" {
                m.insert("close_reason".into(), json!(reason.unwrap_or("quiet")));
            }
        }
        let rec = EveAlertRecord {
            timestamp: self.wall(ts),
            flow_id: eve::flow_id(t.src, t.sport, t.dst, t.dport, t.proto),
            in_iface: (!self.settings.interface.is_empty())
                .then_some(self.settings.interface.as_str()),
            event_type: if state == "closed" {
                "alert_closed"
            } else {
                "alert"
            },
            src_ip: t.src,
            src_port: t.sport,
            dest_ip: t.dst,
            dest_port: t.dport,
            proto: eve::proto_name(t.proto),
            alert: EveAlert {
                action: "allowed",
                gid: 1,
                signature_id: sid,
                rev: 1,
                signature: sig,
                category: cat,
                severity: eve_sev,
            },
            host: &self.settings.sensor_name,
            xdp_sensor: xs,
        };
        self.line.clear();
        let ok = serde_json::to_writer(&mut self.line, &rec).is_ok();
        if ok {
            self.sinks.write_line(&self.line);
            self.dirty = true;
        }
        let a = &mut self.alerts[i];
        a.last_emit_ns = now.max(a.last_emit_ns);
        a.emitted_count = a.count;
        a.emitted_eve_severity = eve_sev;
        let inc_seq = a.incident;
        if state == "update" {
            self.metrics.alerts_updated += 1;
        }
        if let Some(inc) = self.incidents.get_mut(&inc_seq) {
            inc.max_severity = inc.max_severity.max(sev);
        }
    }

    fn emit_incident(&mut self, seq: u64, state: &str, reason: Option<&str>) {
        let Some(inc) = self.incidents.get(&seq) else {
            return;
        };
        let mut attackers: Vec<String> = inc.attackers.iter().map(ToString::to_string).collect();
        if inc.aggregated_attackers {
            attackers.push("many".into());
        }
        let (n, eve_sev) = (
            inc.max_severity,
            match inc.max_severity {
                70.. => 1,
                40.. => 2,
                _ => 3,
            },
        );
        let mut body = json!({
            "incident_id": &*inc.id,
            "state": state,
            "first_seen": self.wall(inc.first_seen_ns),
            "last_seen": self.wall(inc.last_seen_ns),
            "alert_count": inc.n_alerts,
            "open_alerts": inc.open_alerts,
            "alert_ids": inc.alert_ids.iter().map(|s| &**s).collect::<Vec<_>>(),
            "classes": inc.classes.iter().map(|c| c.name()).collect::<Vec<_>>(),
            "attackers": attackers,
            "victims": inc.victims.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "severity": n,
            "eve_severity": eve_sev,
            "sensor": self.settings.sensor_name,
        });
        if let (Some(r), Value::Object(m)) = (reason, &mut body) {
            m.insert("close_reason".into(), json!(r));
        }
        let ts = if state == "closed" {
            self.now_ns.max(inc.last_seen_ns)
        } else {
            inc.last_seen_ns
        };
        let rec = EveIncidentRecord {
            timestamp: self.wall(ts),
            event_type: "incident",
            host: &self.settings.sensor_name,
            xdp_sensor: json!({ "incident": body }),
        };
        self.line.clear();
        if serde_json::to_writer(&mut self.line, &rec).is_ok() {
            self.sinks.write_line(&self.line);
            self.dirty = true;
        }
    }

    fn log_alert(&mut self, i: usize, kind: &str) {
        if self.alert_log.is_none() {
            return;
        }
        let a = &self.alerts[i];
        let n = usize::from(a.n_features).min(MAX_FEATURES);
        let beacon = a.peak_beacon;
        let (class, score, raw, count, features, cv, av, incident, id) = (
            a.key.class,
            a.peak_score,
            a.peak_raw,
            a.count,
            a.peak_features[..n]
                .iter()
                .map(|x| x.is_finite().then_some(*x))
                .collect(),
            a.classifier_version.to_string(),
            a.autoencoder_version.to_string(),
            a.incident,
            a.id.to_string(),
        );
        let rec = AlertRecord {
            kind: kind.to_string(),
            alert_id: id,
            incident_id: self
                .incidents
                .get(&incident)
                .map(|x| x.id.to_string())
                .unwrap_or_default(),
            class: class.name().to_string(),
            score,
            raw_score: raw,
            threshold: self.threshold_of(class, beacon),
            detector: beacon.then(|| "beacon".to_string()),
            count,
            feature_names: self.names(n).to_vec(),
            features,
            classifier_version: cv,
            autoencoder_version: av,
            unix_ms: i64::try_from(self.clock.wall_ns(self.now_ns) / 1_000_000).unwrap_or(0),
        };
        if let Some(log) = self.alert_log.as_mut()
            && log.append(&rec, false).is_err()
        {
            self.metrics.alert_log_errors += 1;
        }
    }
}

/// The f64 that prints like the f32 does (`0.98`, not `0.9800000190734863`).
fn shortest(x: f32) -> f64 {
    if x.is_finite() {
        x.to_string().parse().unwrap_or(0.0)
    } else {
        0.0
    }
}

fn round4(x: f32) -> f64 {
    if x.is_finite() {
        (f64::from(x) * 10_000.0).round() / 10_000.0
    } else {
        0.0
    }
}

fn log_sync(log: &mut LogWriter) -> std::io::Result<()> {
    log.sync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hll_counts_distinct_within_a_few_percent() {
        let mut agg = Aggregate::new();
        for i in 0..30_000u32 {
            agg.insert(IpAddr::V4((0x0a00_0000 + i).into()));
            agg.insert(IpAddr::V4((0x0a00_0000 + i).into()));
        }
        let d = agg.distinct() as f64;
        assert!((d - 30_000.0).abs() / 30_000.0 < 0.1, "{d}");
        let mut small = Aggregate::new();
        for i in 0..5u32 {
            small.insert(IpAddr::V4(i.into()));
        }
        assert_eq!(small.distinct(), 5);
    }

    #[test]
    fn heavy_hitter_stays_on_top() {
        let mut agg = Aggregate::new();
        let heavy: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..10_000u32 {
            agg.insert(IpAddr::V4((0x0a00_0000 + i).into()));
            if i % 4 == 0 {
                agg.insert(heavy);
            }
        }
        let top = agg.top_json();
        assert_eq!(top[0]["ip"], "192.0.2.1");
    }
}
