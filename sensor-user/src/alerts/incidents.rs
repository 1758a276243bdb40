//! Incidents: alerts that share an address or a subnet, correlated through
//! an index from correlation key to incident.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use super::{
    AlertMetrics,
    dedup::{DedupKey, TOP_K},
};
use crate::model::row::AttackClass;

/// Bounds on the lists an incident record carries.
const INCIDENT_LIST_CAP: usize = 32;
/// Addresses and subnets indexed per incident (a campaign touching more
/// hosts keeps correlating through the first ones).
const MAX_KEYS_PER_INCIDENT: usize = 256;
/// Addresses of an alert's aggregated side (targets of a scan, sources of a
/// flood) indexed for correlation: the first ones to enter its heavy-hitter
/// list. Bounded so a spoofed flood cannot fill its incident's index with
/// random sources, yet enough that a sweep's first targets correlate.
pub(super) const CORR_PEERS_PER_ALERT: u8 = TOP_K as u8;

/// What correlates alerts: an address, or the /24 (IPv4) or /64 (IPv6) it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum CorrKey {
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

pub(super) struct Incident {
    pub(super) id: Arc<str>,
    pub(super) first_seen_ns: u64,
    pub(super) last_seen_ns: u64,
    pub(super) alert_ids: Vec<Arc<str>>,
    pub(super) n_alerts: u64,
    pub(super) open_alerts: u32,
    pub(super) classes: Vec<AttackClass>,
    pub(super) attackers: Vec<IpAddr>,
    pub(super) victims: Vec<IpAddr>,
    pub(super) aggregated_attackers: bool,
    keys: Vec<CorrKey>,
    pub(super) max_severity: u8,
}

impl Incident {
    /// Counts a newly opened alert `id` keyed `key`, of severity `sev`,
    /// seen at `ts`.
    pub(super) fn add_alert(&mut self, id: Arc<str>, key: &DedupKey, ts: u64, sev: u8) {
        self.n_alerts += 1;
        self.open_alerts += 1;
        self.last_seen_ns = self.last_seen_ns.max(ts);
        self.max_severity = self.max_severity.max(sev);
        if self.alert_ids.len() < INCIDENT_LIST_CAP {
            self.alert_ids.push(id);
        }
        if !self.classes.contains(&key.class) {
            self.classes.push(key.class);
        }
        match key.attacker {
            Some(x) if !self.attackers.contains(&x) && self.attackers.len() < INCIDENT_LIST_CAP => {
                self.attackers.push(x);
            }
            None => self.aggregated_attackers = true,
            _ => {}
        }
        if let Some(x) = key.victim
            && !self.victims.contains(&x)
            && self.victims.len() < INCIDENT_LIST_CAP
        {
            self.victims.push(x);
        }
    }
}

/// The incidents by sequence number, and the correlation index.
#[derive(Default)]
pub(super) struct Incidents {
    by_seq: HashMap<u64, Incident>,
    corr: HashMap<CorrKey, u64>,
    next_seq: u64,
    keys_buf: Vec<CorrKey>,
}

impl Incidents {
    pub(super) fn new() -> Self {
        Self {
            next_seq: 1,
            ..Self::default()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub(super) fn get(&self, seq: u64) -> Option<&Incident> {
        self.by_seq.get(&seq)
    }

    pub(super) fn get_mut(&mut self, seq: u64) -> Option<&mut Incident> {
        self.by_seq.get_mut(&seq)
    }

    /// The id of incident `seq`, or "" once it is gone.
    pub(super) fn id_of(&self, seq: u64) -> String {
        self.by_seq
            .get(&seq)
            .map(|x| x.id.to_string())
            .unwrap_or_default()
    }

    /// All incidents' sequence numbers.
    pub(super) fn all(&self) -> Vec<u64> {
        self.by_seq.keys().copied().collect()
    }

    /// Incidents without open alerts quiet for `window_ns` at `now`.
    pub(super) fn due(&self, now: u64, window_ns: u64) -> Vec<u64> {
        self.by_seq
            .iter()
            .filter(|(_, inc)| {
                inc.open_alerts == 0 && now.saturating_sub(inc.last_seen_ns) >= window_ns
            })
            .map(|(s, _)| *s)
            .collect()
    }

    /// The incident to evict at the cap: one without open alerts if any,
    /// the least recently active first. Rare (incident creation under a
    /// cap), so a scan is affordable.
    pub(super) fn eviction_candidate(&self) -> Option<u64> {
        self.by_seq
            .iter()
            .min_by_key(|(_, i)| (i.open_alerts > 0, i.last_seen_ns))
            .map(|(s, _)| *s)
    }

    /// The correlation keys of an alert keyed `key` (its labelled sides and
    /// the first address of its aggregated side), in the reused buffer:
    /// hand it back with [`Self::recycle`].
    pub(super) fn alert_keys(
        &mut self,
        key: &DedupKey,
        first_peer: Option<IpAddr>,
    ) -> Vec<CorrKey> {
        let mut keys = std::mem::take(&mut self.keys_buf);
        corr_keys(key, &mut keys);
        if let Some(p) = first_peer {
            peer_keys(p, key.peers_are_targets(), &mut keys);
        }
        keys
    }

    /// Returns a buffer from [`Self::alert_keys`] for reuse.
    pub(super) fn recycle(&mut self, keys: Vec<CorrKey>) {
        self.keys_buf = keys;
    }

    /// The oldest incident owning one of `keys` (sequence numbers grow
    /// with time: the smallest is the oldest).
    pub(super) fn find(&self, keys: &[CorrKey]) -> Option<u64> {
        keys.iter().filter_map(|k| self.corr.get(k).copied()).min()
    }

    /// Opens an empty incident at `ts`; returns its sequence number.
    pub(super) fn create(&mut self, run_id: &str, ts: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_seq.insert(
            seq,
            Incident {
                id: format!("i-{run_id}-{seq}").into(),
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
        seq
    }

    /// Removes incident `seq` and its keys from the index; false when it
    /// was already gone.
    pub(super) fn remove(&mut self, seq: u64) -> bool {
        let Some(inc) = self.by_seq.remove(&seq) else {
            return false;
        };
        for k in &inc.keys {
            if self.corr.get(k) == Some(&seq) {
                self.corr.remove(k);
            }
        }
        true
    }

    /// Indexes the keys not yet owned by any incident for incident `seq`.
    /// A key another incident owns stays with it (incidents are not merged).
    pub(super) fn index_keys(&mut self, seq: u64, keys: &[CorrKey], metrics: &mut AlertMetrics) {
        let Some(inc) = self.by_seq.get_mut(&seq) else {
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
                metrics.correlation_keys_dropped += 1;
                break;
            }
            self.corr.insert(*k, seq);
            inc.keys.push(*k);
        }
    }

    /// Indexes an address newly seen on an open alert's aggregated side.
    pub(super) fn index_peer(
        &mut self,
        seq: u64,
        peer: IpAddr,
        is_target: bool,
        metrics: &mut AlertMetrics,
    ) {
        let mut keys = std::mem::take(&mut self.keys_buf);
        keys.clear();
        peer_keys(peer, is_target, &mut keys);
        self.index_keys(seq, &keys, metrics);
        self.note_target(seq, peer, is_target);
        self.keys_buf = keys;
    }

    /// Lists a host an aggregated alert actually hit among its incident's
    /// victims, so a scan-only incident still names them.
    pub(super) fn note_target(&mut self, seq: u64, peer: IpAddr, is_target: bool) {
        if let Some(inc) = self.by_seq.get_mut(&seq)
            && is_target
            && !inc.victims.contains(&peer)
            && inc.victims.len() < INCIDENT_LIST_CAP
        {
            inc.victims.push(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn alerts_sharing_a_subnet_find_one_incident_and_keys_go_with_it() {
        let mut incs = Incidents::new();
        let mut m = AlertMetrics::default();
        let scan = DedupKey {
            class: AttackClass::Scan,
            attacker: Some(ip("198.51.100.7")),
            victim: None,
            victim_prefix: None,
        };
        let keys = incs.alert_keys(&scan, Some(ip("10.1.2.3")));
        assert_eq!(incs.find(&keys), None);
        let seq = incs.create("run", 5);
        incs.index_keys(seq, &keys, &mut m);
        incs.note_target(seq, ip("10.1.2.3"), scan.peers_are_targets());
        incs.recycle(keys);
        assert_eq!(&*incs.get(seq).unwrap().id, "i-run-1");
        assert_eq!(incs.get(seq).unwrap().victims, [ip("10.1.2.3")]);
        // A brute force on another host of the scanned /24 joins it.
        let bf = DedupKey {
            class: AttackClass::BruteForce,
            attacker: Some(ip("203.0.113.9")),
            victim: Some(ip("10.1.2.200")),
            victim_prefix: None,
        };
        let keys = incs.alert_keys(&bf, None);
        assert_eq!(incs.find(&keys), Some(seq));
        assert!(incs.remove(seq));
        assert_eq!(incs.find(&keys), None);
        assert!(!incs.remove(seq));
    }
}
