//! Sketch geometry shared by the XDP program (writer) and user space (reader).
//!
//! Both sketches are per-CPU arrays with two epochs. The program writes epoch
//! `SensorConfig::epoch`; the control thread flips it every second, then reads
//! and clears the other epoch. User space merges CPUs: sum for Count-Min, max
//! for HyperLogLog registers.

/// Count-Min rows (independent hash functions). Error probability δ = e^-ROWS ≈ 1.8 %.
pub const CMS_ROWS: u32 = 4;
/// Count-Min columns per row; a power of two. Error bound ε·N with ε = e / WIDTH ≈ 0.13 %.
pub const CMS_WIDTH: u32 = 2048;
/// Sketch epochs (current and previous).
pub const EPOCHS: u32 = 2;
/// Entries in each Count-Min map: one row per (epoch, row).
pub const CMS_ENTRIES: u32 = EPOCHS * CMS_ROWS;

/// One Count-Min row: 16 KiB, under the 32 KiB per-CPU value limit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CmsRow {
    pub cells: [u64; CMS_WIDTH as usize],
}

/// HyperLogLog precision: 2¹² registers, standard error 1.04 / 64 ≈ 1.6 %.
pub const HLL_P: u32 = 12;
pub const HLL_REGISTERS: u32 = 1 << HLL_P;

/// HyperLogLog registers of one epoch (4 KiB).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HllRegisters {
    pub regs: [u8; HLL_REGISTERS as usize],
}

/// Map index of Count-Min `row` in `epoch`.
#[inline(always)]
#[must_use]
pub const fn cms_index(epoch: u32, row: u32) -> u32 {
    (epoch & 1) * CMS_ROWS + row
}

/// Column of `row` for an address hash (Kirsch–Mitzenmacher double hashing:
/// h1 + row·h2 gives independent-enough rows from one 64-bit hash).
#[inline(always)]
#[must_use]
pub const fn cms_column(hash: u64, row: u32) -> u32 {
    let h1 = hash as u32;
    let h2 = ((hash >> 32) as u32) | 1;
    h1.wrapping_add(row.wrapping_mul(h2)) & (CMS_WIDTH - 1)
}

/// HyperLogLog register index (top `HLL_P` bits) and rank (position of the
/// first set bit in the rest, 1-based, capped at `64 - HLL_P + 1`).
#[inline(always)]
#[must_use]
pub const fn hll_index_rank(hash: u64) -> (u32, u8) {
    hll_index_rank_p(hash, HLL_P)
}

/// [`hll_index_rank`] for a sketch of `2^p` registers, `1 <= p <= 32`
/// (user-space sketches of other sizes index the same way).
#[inline(always)]
#[must_use]
pub const fn hll_index_rank_p(hash: u64, p: u32) -> (u32, u8) {
    let idx = (hash >> (64 - p)) as u32;
    let rest = (hash << p) | (1 << (p - 1));
    (idx, rest.leading_zeros() as u8 + 1)
}

/// Destination volume levels: the host itself, a narrow prefix of it and a
/// wide one (IPv4 /24 and /16, IPv6 /64 and /48 by default), so a flood
/// spread over a network ("carpet bombing") adds up somewhere even when each
/// of its victims receives little.
pub const DST_LEVELS: u32 = 3;
/// Rows of each level's Count-Min (δ = e^-4 ≈ 1.8 %).
pub const DST_ROWS: u32 = 4;
/// Columns per row; a power of two. 4 rows × 512 cells × 16 bytes is
/// exactly the 32 KiB a per-CPU array value may hold, so one map lookup
/// reaches every row of a level.
pub const DST_WIDTH: u32 = 512;
/// Entries of the destination map: one per (epoch, level).
pub const DST_ENTRIES: u32 = EPOCHS * DST_LEVELS;
/// Default prefix lengths `[v4 narrow, v4 wide, v6 narrow, v6 wide]`
/// (`SensorConfig::dst_prefix`).
pub const DST_PREFIX_DEFAULT: [u8; 4] = [24, 16, 64, 48];

/// What one destination cell counts in an epoch. 32-bit counts cannot wrap
/// within a one-second epoch (4·10⁹ packets); bytes saturate at 4 GiB per
/// epoch (34 Gbit/s into one cell), which only caps a reported rate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VolumeCell {
    pub packets: u32,
    /// Packets that started a flow in the flow table (a spoofed or
    /// random-port flood starts one per packet; a download one in total).
    pub new_flows: u32,
    /// Flows that reached their second packet: `new_flows - continued` is
    /// about how many flows stayed single packets, the shape of a flood
    /// (a busy service's connections all continue).
    pub continued: u32,
    pub bytes: u32,
}

/// One level of the destination sketch in one epoch: all its rows.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DstSketch {
    pub cells: [[VolumeCell; DST_WIDTH as usize]; DST_ROWS as usize],
}
const _: () = assert!(core::mem::size_of::<DstSketch>() == 32 * 1024);

/// Map index of destination `level` in `epoch`.
#[inline(always)]
#[must_use]
pub const fn dst_index(epoch: u32, level: u32) -> u32 {
    (epoch & 1) * DST_LEVELS + level
}

/// Column of `row` for a destination key hash: row `r` takes its own 16
/// bits of the hash. (Double hashing `h1 + r·h2` would make two keys that
/// meet in two rows meet in all of them: with 512 columns, one in 2^18
/// pairs, too often for a rule that enumerates 65 536 prefixes.)
#[inline(always)]
#[must_use]
pub const fn dst_column(hash: u64, row: u32) -> u32 {
    ((hash >> ((row & 3) * 16)) as u32) & (DST_WIDTH - 1)
}

/// Mask keeping the first `bits` bits (network order) of an 8-byte word
/// loaded little-endian: byte 0 of the address is the word's low byte.
#[inline(always)]
#[must_use]
pub const fn prefix_mask_le(bits: u32) -> u64 {
    if bits >= 64 {
        return u64::MAX;
    }
    let full = bits / 8;
    let rem = bits % 8;
    let mut m = if full == 0 {
        0
    } else {
        u64::MAX >> (64 - 8 * full)
    };
    if rem != 0 {
        m |= ((0xff_u64 << (8 - rem)) & 0xff) << (8 * full);
    }
    m
}

/// Hash of the destination key of `level` for an address given as its two
/// little-endian words (`lo` = bytes 0..8, `hi` = bytes 8..16): the address
/// itself at level 0, else its prefix of the configured length (`v4` when
/// the address is IPv4-mapped, `v6` otherwise; the IPv4 length counts IPv4
/// bits). Levels hash apart even when a prefix covers the whole address.
#[inline(always)]
#[must_use]
pub const fn dst_key_hash(lo: u64, hi: u64, level: u32, v4_bits: u8, v6_bits: u8) -> u64 {
    let [m_lo, m_hi] = if level == 0 {
        [u64::MAX, u64::MAX]
    } else if is_v4_words(lo, hi) {
        dst_prefix_mask(true, v4_bits)
    } else {
        dst_prefix_mask(false, v6_bits)
    };
    dst_masked_hash(lo & m_lo, hi & m_hi, level)
}

/// True when the address words ([`addr_words`]) are IPv4-mapped.
#[inline(always)]
#[must_use]
pub const fn is_v4_words(lo: u64, hi: u64) -> bool {
    lo == 0 && (hi & 0xffff_ffff) == 0xffff_0000
}

/// The masks `[lo, hi]` that cut an address's words to its first `bits`
/// bits of IPv4 (`v4`, the mapped prefix kept) or IPv6.
#[inline(always)]
#[must_use]
pub const fn dst_prefix_mask(v4: bool, bits: u8) -> [u64; 2] {
    if v4 {
        // The IPv4 address is bytes 12..16, the high half of `hi`.
        let bits = if bits > 32 { 32 } else { bits as u32 };
        [u64::MAX, prefix_mask_le(32 + bits) | 0xffff_ffff]
    } else {
        let bits = if bits > 128 { 128 } else { bits as u32 };
        if bits <= 64 {
            [prefix_mask_le(bits), 0]
        } else {
            [u64::MAX, prefix_mask_le(bits - 64)]
        }
    }
}

/// The prefix masks of levels 1 and 2 for prefix lengths `[v4 narrow, v4
/// wide, v6 narrow, v6 wide]`, in that order: computed once by user space
/// into `SensorConfig::dst_masks`, so the XDP program only applies them.
#[must_use]
pub const fn dst_prefix_masks(prefix: [u8; 4]) -> [[u64; 2]; 4] {
    [
        dst_prefix_mask(true, prefix[0]),
        dst_prefix_mask(true, prefix[1]),
        dst_prefix_mask(false, prefix[2]),
        dst_prefix_mask(false, prefix[3]),
    ]
}

/// [`dst_key_hash`] of words already cut to the prefix of `level`.
#[inline(always)]
#[must_use]
pub const fn dst_masked_hash(lo: u64, hi: u64, level: u32) -> u64 {
    crate::hash::fmix64(
        lo.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ hi.rotate_left(29).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            ^ (level as u64 + 1).wrapping_mul(0xd6e8_feb8_6659_fd93),
    )
}

/// The two little-endian words [`dst_key_hash`] takes.
#[inline(always)]
#[must_use]
pub const fn addr_words(addr: &[u8; 16]) -> (u64, u64) {
    let mut lo = 0u64;
    let mut hi = 0u64;
    let mut i = 0;
    while i < 8 {
        lo |= (addr[i] as u64) << (8 * i);
        hi |= (addr[i + 8] as u64) << (8 * i);
        i += 1;
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_use_different_columns() {
        let h = crate::hash_addr(&[7; 16]);
        let cols: [u32; 4] = [0, 1, 2, 3].map(|r| cms_column(h, r));
        assert!(cols.iter().all(|&c| c < CMS_WIDTH));
        assert!(cols[0] != cols[1] || cols[1] != cols[2]);
    }

    #[test]
    fn prefix_masks_keep_leading_bits() {
        assert_eq!(prefix_mask_le(0), 0);
        assert_eq!(prefix_mask_le(8), 0xff);
        assert_eq!(prefix_mask_le(12), 0xf0ff);
        assert_eq!(prefix_mask_le(64), u64::MAX);
    }

    #[test]
    fn prefix_keys_group_addresses() {
        let v4 = |a: u8, b: u8, c: u8, d: u8| {
            addr_words(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d])
        };
        // Each level hashes with its own lengths (narrow /24, wide /16).
        let lens = |level| if level == 1 { (24, 64) } else { (16, 48) };
        let h = |w: (u64, u64), level| {
            let (v4, v6) = lens(level);
            dst_key_hash(w.0, w.1, level, v4, v6)
        };
        let (x, y, z) = (v4(10, 1, 2, 3), v4(10, 1, 2, 200), v4(10, 1, 9, 3));
        assert_ne!(h(x, 0), h(y, 0));
        assert_eq!(h(x, 1), h(y, 1));
        assert_ne!(h(x, 1), h(z, 1));
        assert_eq!(h(x, 2), h(z, 2));
        assert_ne!(h(x, 2), h(v4(10, 2, 2, 3), 2));
        // A /32 prefix is the host, but its level keeps it apart.
        assert_ne!(h(x, 0), dst_key_hash(x.0, x.1, 1, 32, 64));
        // IPv6: /64 ignores the interface identifier, /48 the subnet.
        let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1];
        let w1 = addr_words(&a);
        a[15] = 9;
        let w2 = addr_words(&a);
        a[7] = 3;
        let w3 = addr_words(&a);
        let h6 = h;
        assert_eq!(h6(w1, 1), h6(w2, 1));
        assert_ne!(h6(w1, 1), h6(w3, 1));
        assert_eq!(h6(w1, 2), h6(w3, 2));
        assert_ne!(h6(w1, 0), h6(w2, 0));
    }

    #[test]
    fn rank_is_bounded() {
        assert_eq!(hll_index_rank(0).1, (64 - HLL_P + 1) as u8);
        assert_eq!(hll_index_rank(u64::MAX).1, 1);
        assert_eq!(hll_index_rank(u64::MAX).0, HLL_REGISTERS - 1);
    }
}
