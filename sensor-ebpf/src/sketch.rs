//! Per-source Count-Min (packets, bytes) and HyperLogLog (distinct sources)
//! updates. They see every packet with an IP source, whether or not its flow
//! is exported, so volume attacks stay visible when events are sampled.

use sensor_common::sketch::{
    CMS_ROWS, DST_LEVELS, DST_ROWS, DST_WIDTH, HLL_P, cms_column, cms_index, dst_column, dst_index,
    dst_masked_hash, hll_index_rank, is_v4_words,
};

use crate::maps::{DST_VOLUME, SENSOR_CONFIG, SRC_BYTES_CMS, SRC_DISTINCT_HLL, SRC_PACKETS_CMS};

/// Adds one packet of `len` bytes to the host, narrow-prefix and
/// wide-prefix cells of the current epoch for the destination whose address
/// words ([`addr_words`](sensor_common::sketch::addr_words)) are `lo`, `hi`;
/// `flow_packets` is its flow's packet count on this CPU after it (1: it
/// started the flow, 2: the flow continued; 0 for none). Also for packets
/// without a flow (non-first fragments), so a fragmented flood counts into
/// its victim's volume. One lookup per level; the prefix masks come ready
/// from `SensorConfig::dst_masks`.
///
/// A global BPF function (external linkage, scalar arguments only): the
/// verifier checks it once on its own instead of once per call site and
/// caller state, which was most of the program's verification work.
#[unsafe(no_mangle)]
#[inline(never)]
pub(crate) extern "C" fn sensor_update_dst(lo: u64, hi: u64, len: u64, flow_packets: u64) -> u64 {
    let Some(cfg) = SENSOR_CONFIG.get_ptr(0) else {
        return 0;
    };
    // SAFETY: the single entry of an array map, valid while the program runs.
    let cfg = unsafe { &*cfg };
    let new_flow = u32::from(flow_packets == 1);
    let continued = u32::from(flow_packets == 2);
    let len = len as u32;
    let epoch = cfg.epoch;
    // Index of the narrow mask of the address's family; the wide one follows.
    let family = if is_v4_words(lo, hi) { 0 } else { 2 };
    for level in 0..DST_LEVELS {
        let [m_lo, m_hi] = match level {
            0 => [u64::MAX, u64::MAX],
            1 => cfg.dst_masks[family],
            _ => cfg.dst_masks[family + 1],
        };
        let h = dst_masked_hash(lo & m_lo, hi & m_hi, level);
        // Every entry exists (an array map): a failed lookup ends the
        // update rather than branching on, which keeps the verifier's
        // paths through this loop linear.
        let Some(p) = DST_VOLUME.get_ptr_mut(dst_index(epoch, level)) else {
            return 0;
        };
        // SAFETY: this CPU's slot of an array entry; only this CPU writes it.
        let cells = unsafe { &mut (*p).cells };
        for (row, cells) in (0..DST_ROWS).zip(cells.iter_mut()) {
            // Masked below the width: no bounds check for the verifier.
            let c = &mut cells[(dst_column(h, row) & (DST_WIDTH - 1)) as usize];
            c.packets = c.packets.wrapping_add(1);
            c.new_flows = c.new_flows.wrapping_add(new_flow);
            c.continued = c.continued.wrapping_add(continued);
            c.bytes = c.bytes.saturating_add(len);
        }
    }
    0
}

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
