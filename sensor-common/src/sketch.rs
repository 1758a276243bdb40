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
    fn rank_is_bounded() {
        assert_eq!(hll_index_rank(0).1, (64 - HLL_P + 1) as u8);
        assert_eq!(hll_index_rank(u64::MAX).1, 1);
        assert_eq!(hll_index_rank(u64::MAX).0, HLL_REGISTERS - 1);
    }
}
