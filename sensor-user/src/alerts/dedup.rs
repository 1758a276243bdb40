//! Dedup: which alert a detection belongs to, so one attack is one alert,
//! and the aggregated side of an alert (distinct count and heavy hitters).

use std::net::IpAddr;

use super::inventory::canonical;
use crate::model::row::{AttackClass, Entity, ScoredRow};

/// Heavy hitters kept per aggregated side (sources of a flood, targets of a scan).
pub(super) const TOP_K: usize = 8;

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
pub(super) struct DedupKey {
    pub(super) class: AttackClass,
    pub(super) attacker: Option<IpAddr>,
    pub(super) victim: Option<IpAddr>,
}

impl DedupKey {
    /// Whether one side of the alert is aggregated rather than named.
    pub(super) fn is_aggregated(&self) -> bool {
        self.attacker.is_none() || self.victim.is_none()
    }

    /// Whether the aggregated side is the alert's targets (victim
    /// aggregated: scan, source-host rows) rather than its sources.
    pub(super) fn peers_are_targets(&self) -> bool {
        self.victim.is_none()
    }

    /// The address `row` adds to the aggregated side: its source when the
    /// attackers are aggregated, else its destination.
    pub(super) fn peer_of(&self, row: &ScoredRow) -> IpAddr {
        if self.attacker.is_none() {
            canonical(row.src)
        } else {
            canonical(row.dst)
        }
    }
}

/// The key of a detection of `class` on `row`.
pub(super) fn dedup_key(row: &ScoredRow, class: AttackClass) -> DedupKey {
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

/// Distinct count and heavy hitters of the aggregated side of an alert.
pub(super) struct Aggregate {
    distinct: DistinctCount,
    top: [(Option<IpAddr>, u64); TOP_K],
}

impl Aggregate {
    pub(super) fn new() -> Self {
        Self {
            distinct: DistinctCount::new(),
            top: [(None, 0); TOP_K],
        }
    }

    /// Counts `a`; returns it when it entered the heavy-hitter list (a free
    /// slot or a replacement), so the caller can index it for correlation.
    pub(super) fn insert(&mut self, a: IpAddr) -> Option<IpAddr> {
        let bytes = match a {
            IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
            IpAddr::V6(v) => v.octets(),
        };
        self.distinct.insert(sensor_common::hash_addr(&bytes));
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

    /// Estimated distinct addresses counted.
    pub(super) fn distinct(&self) -> u64 {
        self.distinct.estimate()
    }

    /// Whether `a` is among the heavy hitters.
    pub(super) fn is_top(&self, a: IpAddr) -> bool {
        self.top.iter().any(|&(x, _)| x == Some(a))
    }

    /// The heavy hitters with their counts, largest first.
    pub(super) fn top(&self) -> Vec<(IpAddr, u64)> {
        let mut v: Vec<_> = self
            .top
            .iter()
            .filter_map(|(a, n)| a.map(|a| (a, *n)))
            .collect();
        v.sort_by_key(|x| std::cmp::Reverse(x.1));
        v
    }
}

/// HyperLogLog precision for distinct counts per aggregated alert: 2^10
/// one-byte registers, about 3 % standard error, 1 KiB per alert.
const HLL_BITS: u32 = 10;

/// HyperLogLog distinct count of 64-bit hashes.
struct DistinctCount {
    registers: Box<[u8; 1 << HLL_BITS]>,
}

impl DistinctCount {
    fn new() -> Self {
        Self {
            registers: Box::new([0; 1 << HLL_BITS]),
        }
    }

    fn insert(&mut self, h: u64) {
        let idx = (h >> (64 - HLL_BITS)) as usize;
        let rank = ((h << HLL_BITS) | (1 << (HLL_BITS - 1))).leading_zeros() as u8 + 1;
        if rank > self.registers[idx] {
            self.registers[idx] = rank;
        }
    }

    /// HyperLogLog estimate with the small-range (linear counting) correction.
    fn estimate(&self) -> u64 {
        let m = f64::from(1u32 << HLL_BITS);
        let mut sum = 0.0;
        let mut zeros = 0u32;
        for &r in self.registers.iter() {
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
        let top = agg.top();
        assert_eq!(top[0].0.to_string(), "192.0.2.1");
    }
}
