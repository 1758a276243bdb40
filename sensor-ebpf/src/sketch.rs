//! Per-source Count-Min (packets, bytes) and HyperLogLog (distinct sources)
//! updates. They see every packet with an IP source, whether or not its flow
//! is exported, so volume attacks stay visible when events are sampled.

use sensor_common::{
    SensorConfig,
    sketch::{
        CMS_ROWS, DST_LEVELS, DST_ROWS, DST_WIDTH, HLL_P, addr_words, cms_column, cms_index,
        dst_column, dst_index, dst_key_hash, hll_index_rank,
    },
};

use crate::maps::{DST_VOLUME, SRC_BYTES_CMS, SRC_DISTINCT_HLL, SRC_PACKETS_CMS};

/// Adds one packet of `len` bytes to `dst`'s host, narrow-prefix and
/// wide-prefix cells of `cfg.epoch`; `flow_packets` is its flow's packet
/// count on this CPU after it (1: it started the flow, 2: the flow
/// continued; 0 for none). Also for packets without a flow (non-first
/// fragments), so a fragmented flood counts into its victim's volume. One
/// lookup per level.
///
/// Not inlined: a BPF subprogram returns with the caller's registers as
/// they were, so the verifier explores the rest of the program once, not
/// once per path through these loops.
#[inline(never)]
pub(crate) fn update_dst(dst: &[u8; 16], len: u64, flow_packets: u64, cfg: &SensorConfig) {
    let new_flow = u32::from(flow_packets == 1);
    let continued = u32::from(flow_packets == 2);
    let len = len as u32;
    let (lo, hi) = addr_words(dst);
    let [v4n, v4w, v6n, v6w] = cfg.dst_prefix;
    let epoch = cfg.epoch;
    for level in 0..DST_LEVELS {
        let (v4, v6) = if level == 1 { (v4n, v6n) } else { (v4w, v6w) };
        let h = dst_key_hash(lo, hi, level, v4, v6);
        // Every entry exists (an array map): a failed lookup ends the
        // update rather than branching on, which keeps the verifier's
        // paths through this loop linear.
        let Some(p) = DST_VOLUME.get_ptr_mut(dst_index(epoch, level)) else {
            return;
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
