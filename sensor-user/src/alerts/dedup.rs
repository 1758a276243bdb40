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
    /// When the victim is a network (the volume rule's spread flood), its
    /// prefix length; `victim` is then its network address.
    pub(super) victim_prefix: Option<u8>,
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
        victim_prefix: None,
    }
}

/// Distinct count and heavy hitters of the aggregated side of an alert.
pub(super) struct Aggregate {
    distinct: DistinctCount,
    top: [Slot; TOP_K],
    /// Whether a tracked address was ever replaced: until then every count
    /// is exact and an untracked address was never seen.
    replaced: bool,
}

/// A space-saving counter: `count` is an upper bound of the address's
/// rows, `error` how much of it may belong to the addresses it replaced
/// (the smallest counter when it entered), so `count - error` is a lower
/// bound.
#[derive(Clone, Copy)]
struct Slot {
    addr: Option<IpAddr>,
    count: u64,
    error: u64,
}

/// A reported heavy hitter: its count (an upper bound) and the error of
/// that count (the true count is in `count - error ..= count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TopPeer {
    pub(super) ip: IpAddr,
    pub(super) count: u64,
    pub(super) error: u64,
}

impl Aggregate {
    pub(super) fn new() -> Self {
        Self {
            distinct: DistinctCount::new(),
            top: [Slot {
                addr: None,
                count: 0,
                error: 0,
            }; TOP_K],
            replaced: false,
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
        // replace the smallest counter (its count carries over as the new
        // entry's error).
        let mut min_i = 0;
        for i in 0..TOP_K {
            match self.top[i].addr {
                Some(x) if x == a => {
                    self.top[i].count += 1;
                    return None;
                }
                None => {
                    self.top[i] = Slot {
                        addr: Some(a),
                        count: 1,
                        error: 0,
                    };
                    return Some(a);
                }
                Some(_) => {
                    if self.top[i].count < self.top[min_i].count {
                        min_i = i;
                    }
                }
            }
        }
        let error = self.top[min_i].count;
        self.top[min_i] = Slot {
            addr: Some(a),
            count: error + 1,
            error,
        };
        self.replaced = true;
        Some(a)
    }

    /// Estimated distinct addresses counted.
    pub(super) fn distinct(&self) -> u64 {
        self.distinct.estimate()
    }

    /// Whether `a` is among the heavy hitters.
    pub(super) fn is_top(&self, a: IpAddr) -> bool {
        self.top.iter().any(|s| s.addr == Some(a))
    }

    /// The sketch's error bound: the most rows an address it does not
    /// track may have had (the smallest counter once an entry was
    /// replaced, 0 before).
    fn error_bound(&self) -> u64 {
        if self.replaced {
            self.top.iter().map(|s| s.count).min().unwrap_or(0)
        } else {
            0
        }
    }

    /// The heavy hitters whose guaranteed rows (`count - error`) exceed the
    /// sketch's error bound, largest count first. Spoofed one-row sources
    /// cycling through the list never qualify: each entered with the
    /// smallest counter as its error, so they hold the bound's rows only
    /// on paper.
    /// Whether `a` is one of the tracked heavy hitters.
    pub(super) fn tracks(&self, a: IpAddr) -> bool {
        self.top.iter().any(|s| s.addr == Some(a))
    }

    pub(super) fn top(&self) -> Vec<TopPeer> {
        let bound = self.error_bound();
        let mut v: Vec<_> = self
            .top
            .iter()
            .filter(|s| s.count - s.error > bound)
            .filter_map(|s| {
                s.addr.map(|ip| TopPeer {
                    ip,
                    count: s.count,
                    error: s.error,
                })
            })
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.count));
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
        assert_eq!(top[0].ip.to_string(), "192.0.2.1");
    }

    #[test]
    fn spoofed_one_row_sources_are_not_reported_the_heavy_one_is_with_its_error() {
        let mut agg = Aggregate::new();
        let heavy: IpAddr = "192.0.2.1".parse().unwrap();
        // The heavy source enters a free slot (no error), then a spoofed
        // flood of 100 000 one-row sources cycles through the others.
        agg.insert(heavy);
        for i in 0..100_000u32 {
            agg.insert(IpAddr::V4((0x2000_0000 + i).into()));
            if i % 4 == 0 {
                agg.insert(heavy);
            }
        }
        let top = agg.top();
        assert_eq!(top.len(), 1, "{top:?}");
        assert_eq!(top[0].ip, heavy);
        assert_eq!((top[0].count, top[0].error), (25_001, 0));
        // Entering late, a heavy source carries the counter it replaced
        // as its error, and is still reported above the bound.
        let mut late = Aggregate::new();
        for i in 0..50_000u32 {
            late.insert(IpAddr::V4((0x2000_0000 + i).into()));
        }
        for _ in 0..20_000 {
            late.insert(heavy);
        }
        let top = late.top();
        assert_eq!(top.len(), 1, "{top:?}");
        let min_before = 50_000 / TOP_K as u64;
        assert_eq!(top[0].ip, heavy);
        assert!(
            (min_before - 1..=min_before + 1).contains(&top[0].error),
            "{top:?}"
        );
        assert_eq!(top[0].count - top[0].error, 20_000);
    }

    #[test]
    fn exact_counts_are_all_reported_until_an_entry_is_replaced() {
        let mut agg = Aggregate::new();
        for i in 0..TOP_K as u32 {
            for _ in 0..=i {
                agg.insert(IpAddr::V4((0x0a00_0001 + i).into()));
            }
        }
        let top = agg.top();
        assert_eq!(top.len(), TOP_K);
        assert!(top.iter().all(|p| p.error == 0));
        assert_eq!(top[0].count, TOP_K as u64);
    }
}
