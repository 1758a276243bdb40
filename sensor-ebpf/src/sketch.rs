//! Per-source Count-Min (packets, bytes) and HyperLogLog (distinct sources)
//! updates. They see every packet with an IP source, whether or not its flow
//! is exported, so volume attacks stay visible when events are sampled.

use sensor_common::sketch::{CMS_ROWS, HLL_P, cms_column, cms_index, hll_index_rank};

use crate::maps::{SRC_BYTES_CMS, SRC_DISTINCT_HLL, SRC_PACKETS_CMS};

/// Adds one packet of `len` bytes from the source with hash `src_hash` to the
/// sketches of `epoch`. Per-CPU rows: plain adds, no atomics.
#[inline(always)]
pub(crate) fn update(src_hash: u64, len: u64, epoch: u32) {
    for row in 0..CMS_ROWS {
        let idx = cms_index(epoch, row);
        let col = cms_column(src_hash, row) as usize;
        if let Some(p) = SRC_PACKETS_CMS.get_ptr_mut(idx) {
            // SAFETY: this CPU's slot of an array entry; only this CPU writes it.
            if let Some(c) = unsafe { (*p).cells.get_mut(col) } {
                *c += 1;
            }
        }
        if let Some(p) = SRC_BYTES_CMS.get_ptr_mut(idx) {
            // SAFETY: as above.
            if let Some(c) = unsafe { (*p).cells.get_mut(col) } {
                *c += len;
            }
        }
    }
    let Some(p) = SRC_DISTINCT_HLL.get_ptr_mut(epoch & 1) else {
        return;
    };
    let reg = (src_hash >> (64 - HLL_P)) as usize;
    // SAFETY: this CPU's slot of an array entry; only this CPU writes it.
    let Some(r) = (unsafe { (*p).regs.get_mut(reg) }) else {
        return;
    };
    let cur = *r;
    // A known source hashes to the same rank every time, so first check
    // cheaply whether the rank can exceed the register at all: rank <= cur
    // exactly when a bit is set among the top `cur` bits of the rank word
    // (what `hll_index_rank` counts leading zeros of). Saves the ~35
    // instruction leading-zero count on nearly every packet.
    let rest = (src_hash << HLL_P) | (1 << (HLL_P - 1));
    if cur != 0 && cur <= HLL_MAX_RANK && rest >> (64 - u32::from(cur)) != 0 {
        return;
    }
    let (_, rank) = hll_index_rank(src_hash);
    if rank > cur {
        *r = rank;
    }
}

/// Largest rank `hll_index_rank` returns.
const HLL_MAX_RANK: u8 = (64 - HLL_P + 1) as u8;
