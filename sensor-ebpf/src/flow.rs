//! Per-CPU flow accounting in `FLOW_TABLE`.

use core::mem::MaybeUninit;

use sensor_common::{Counter, FlowKey, FlowStats};

use crate::maps::FLOW_TABLE;

/// Result of counting one packet in its flow.
pub(crate) struct FlowUpdate {
    /// The flow's statistics on this CPU after counting the packet: either the
    /// map slot or, when the insert had to go through the stack, `scratch`.
    pub stats: *const FlowStats,
    /// True when this packet started the flow on this CPU.
    pub is_new: bool,
}

/// Counts a packet of `len` bytes with TCP `flags` in the flow `key`.
/// One hash lookup for a known flow; a lookup plus an insert for a new one.
#[inline(always)]
pub(crate) fn update(
    key: &FlowKey,
    len: u64,
    flags: u8,
    now: u64,
    scratch: &mut MaybeUninit<FlowStats>,
) -> Result<FlowUpdate, Counter> {
    if let Some(p) = FLOW_TABLE.get_ptr_mut(key) {
        // SAFETY: a per-CPU slot of this CPU: nothing else writes it while the
        // program runs (preemption is off), so plain read-modify-write is safe.
        let s = unsafe { &mut *p };
        // A slot another CPU created is zeroed for this CPU: the flow starts
        // here now.
        if s.packets == 0 {
            // SAFETY: a map value slot: valid, 8-byte aligned.
            unsafe { FlowStats::write_fresh(p, len, flags, now) };
            return Ok(FlowUpdate {
                stats: p,
                is_new: true,
            });
        }
        s.add(len, flags, now);
        return Ok(FlowUpdate {
            stats: p,
            is_new: false,
        });
    }
    let p = scratch.as_mut_ptr();
    // SAFETY: a stack slot of the right type and alignment.
    unsafe { FlowStats::write_fresh(p, len, flags, now) };
    // BPF_ANY: if another CPU inserted the key meanwhile, this only writes
    // this CPU's slot, which is what we want.
    // SAFETY: fully initialised by `FlowStats::write_fresh`.
    let fresh: &FlowStats = unsafe { &*p };
    FLOW_TABLE
        .insert(key, fresh, 0)
        .map_err(|_| Counter::FlowInsertFailed)?;
    Ok(FlowUpdate {
        stats: p,
        is_new: true,
    })
}
