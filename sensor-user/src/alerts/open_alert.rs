//! The open alerts: what the stage remembers about each, and the index from
//! dedup key to alert.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use super::{
    dedup::{Aggregate, DedupKey},
    detect::Rule,
    eve,
    feedback::Verdict,
};
use crate::{
    capture::collector::FlowOrigin,
    model::row::{Entity, MAX_FEATURES, ModelVersion},
};

/// The 5-tuple of a row, for the EVE envelope.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tuple {
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) proto: u8,
}

/// The endpoints an alert's record names: the source when its key names
/// the attacker, the destination when it names the victim. A side the key
/// aggregates (a flood's sources, which are spoofable; a scan's targets; the
/// peers of a host row) is left out: the first address seen there was
/// chosen by whoever sent the first packet, not found by the sensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Endpoints {
    pub(super) src: Option<(IpAddr, u16)>,
    pub(super) dst: Option<(IpAddr, u16)>,
    pub(super) proto: u8,
    /// An ARP request's pseudo-flow ([`sensor_common::ipproto::ARP`]): no
    /// ports, and no IP flow to name (flow id, Community ID).
    pub(super) arp: bool,
}

impl Endpoints {
    /// The one flow the alert is about: both endpoints named (never ARP).
    pub(super) fn flow(&self) -> Option<Tuple> {
        if self.arp {
            return None;
        }
        let ((src, sport), (dst, dport)) = (self.src?, self.dst?);
        Some(Tuple {
            src,
            dst,
            sport,
            dport,
            proto: self.proto,
        })
    }
}

pub(super) struct OpenAlert {
    pub(super) id: Arc<str>,
    pub(super) key: DedupKey,
    pub(super) entity: Entity,
    pub(super) incident: u64,
    pub(super) tuple: Tuple,
    pub(super) first_seen_ns: u64,
    pub(super) last_seen_ns: u64,
    pub(super) last_emit_ns: u64,
    pub(super) count: u64,
    pub(super) emitted_count: u64,
    pub(super) peak_pps: f32,
    pub(super) peak_score: f32,
    pub(super) peak_raw: f32,
    /// The peak detection came from the beacon rule.
    pub(super) peak_rule: Rule,
    pub(super) peak_features: [f32; MAX_FEATURES],
    pub(super) n_features: u8,
    pub(super) aggregate: Option<Aggregate>,
    /// Addresses of the aggregated side indexed so far (≤ `CORR_PEERS_PER_ALERT`).
    pub(super) peers_indexed: u8,
    pub(super) victim_criticality: u8,
    pub(super) emitted_eve_severity: u8,
    pub(super) classifier_version: ModelVersion,
    pub(super) autoencoder_version: ModelVersion,
    pub(super) verdict: Option<Verdict>,
    /// The exporter and interfaces of the first flow record behind the
    /// alert (`None` when its rows came from the XDP program).
    pub(super) origin: Option<FlowOrigin>,
    /// The block this alert put on its attacker, if any.
    pub(super) block: Option<super::block::BlockSpan>,
}

impl OpenAlert {
    /// Severity 0–100 and its EVE level now.
    pub(super) fn severity(&self) -> (u8, u8) {
        eve::severity(
            self.peak_score,
            self.key.class,
            self.peak_pps,
            self.victim_criticality,
        )
    }

    /// The endpoints its records name (see [`Endpoints`]).
    pub(super) fn endpoints(&self) -> Endpoints {
        let t = self.tuple;
        // An ARP flow's `sport` is its mark, not a port.
        let arp = sensor_common::ipproto::is_arp(t.proto, t.sport);
        let (sport, dport) = if arp { (0, 0) } else { (t.sport, t.dport) };
        Endpoints {
            src: self.key.attacker.is_some().then_some((t.src, sport)),
            dst: self.key.victim.is_some().then_some((t.dst, dport)),
            proto: t.proto,
            arp,
        }
    }

    /// The feature row behind the peak score.
    pub(super) fn peak_features(&self) -> &[f32] {
        &self.peak_features[..usize::from(self.n_features).min(MAX_FEATURES)]
    }
}

/// The open alerts, in a vector (cheap to sample and sweep) indexed by key.
#[derive(Default)]
pub(super) struct OpenAlerts {
    list: Vec<OpenAlert>,
    index: HashMap<DedupKey, usize>,
}

impl OpenAlerts {
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Position of the alert of `key`.
    pub(super) fn position(&self, key: &DedupKey) -> Option<usize> {
        self.index.get(key).copied()
    }

    pub(super) fn contains(&self, key: &DedupKey) -> bool {
        self.index.contains_key(key)
    }

    pub(super) fn get(&self, key: &DedupKey) -> Option<&OpenAlert> {
        self.index.get(key).map(|&i| &self.list[i])
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, OpenAlert> {
        self.list.iter()
    }

    pub(super) fn iter_mut(&mut self) -> std::slice::IterMut<'_, OpenAlert> {
        self.list.iter_mut()
    }

    /// Adds an alert (its key must not be open); returns its position.
    pub(super) fn push(&mut self, a: OpenAlert) -> usize {
        let i = self.list.len();
        self.index.insert(a.key, i);
        self.list.push(a);
        i
    }

    /// Removes the alert at `i`; the last alert takes its position.
    pub(super) fn swap_remove(&mut self, i: usize) -> OpenAlert {
        let a = self.list.swap_remove(i);
        self.index.remove(&a.key);
        if i < self.list.len() {
            let moved = self.list[i].key;
            self.index.insert(moved, i);
        }
        a
    }
}

impl std::ops::Index<usize> for OpenAlerts {
    type Output = OpenAlert;

    fn index(&self, i: usize) -> &OpenAlert {
        &self.list[i]
    }
}

impl std::ops::IndexMut<usize> for OpenAlerts {
    fn index_mut(&mut self, i: usize) -> &mut OpenAlert {
        &mut self.list[i]
    }
}
