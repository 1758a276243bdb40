//! Per-CPU flow accounting in `FLOW_TABLE`.

use core::mem::MaybeUninit;

use sensor_common::{Counter, FlowKey, FlowStats, tcp_flags};

use crate::maps::FLOW_TABLE;

/// Result of counting one packet in its flow.
pub struct FlowUpdate {
    /// The flow's statistics on this CPU after counting the packet: either the
    /// map slot or, when the insert had to go through the stack, `scratch`.
    pub stats: *const FlowStats,
    /// True when this packet started the flow on this CPU.
    pub is_new: bool,
}

// The program is linked with memset lowered to an out-of-line byte loop, so
// nothing on the packet path may zero memory through a struct literal with a
// padding array: fresh statistics are written field by field, and the flags
// byte and its padding as one 32-bit word.
const FLAGS_WORD: usize = core::mem::offset_of!(FlowStats, tcp_flags_or);
const _: () = assert!(FLAGS_WORD.is_multiple_of(4) && FLAGS_WORD + 4 == size_of::<FlowStats>());

/// Writes the statistics of a flow whose first packet this is to `p`.
///
/// # Safety
/// `p` must be valid for writes of a `FlowStats` and 8-byte aligned.
#[inline(always)]
unsafe fn write_fresh(p: *mut FlowStats, len: u64, flags: u8, now: u64) {
    let syn = flags & tcp_flags::SYN != 0;
    let ack = flags & tcp_flags::ACK != 0;
    // SAFETY: per the contract; every field is written exactly once.
    unsafe {
        (*p).packets = 1;
        (*p).bytes = len;
        (*p).first_seen_ns = now;
        (*p).last_seen_ns = now;
        (*p).len_sq_sum = len * len;
        (*p).syn = u32::from(syn && !ack);
        (*p).synack = u32::from(syn && ack);
        (*p).fin = u32::from(flags & tcp_flags::FIN != 0);
        (*p).rst = u32::from(flags & tcp_flags::RST != 0);
        (*p).len_min = len as u16;
        (*p).len_max = len as u16;
        p.cast::<u8>()
            .add(FLAGS_WORD)
            .cast::<u32>()
            .write(u32::from(flags));
    }
}

/// Counts a packet of `len` bytes with TCP `flags` in the flow `key`.
/// One hash lookup for a known flow; a lookup plus an insert for a new one.
#[inline(always)]
pub fn update(
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
            unsafe { write_fresh(p, len, flags, now) };
            return Ok(FlowUpdate {
                stats: p,
                is_new: true,
            });
        }
        let syn = flags & tcp_flags::SYN != 0;
        let ack = flags & tcp_flags::ACK != 0;
        s.packets += 1;
        s.bytes += len;
        s.last_seen_ns = now;
        s.len_sq_sum += len * len;
        s.syn += u32::from(syn && !ack);
        s.synack += u32::from(syn && ack);
        s.fin += u32::from(flags & tcp_flags::FIN != 0);
        s.rst += u32::from(flags & tcp_flags::RST != 0);
        let l = len as u16;
        if l < s.len_min {
            s.len_min = l;
        }
        if l > s.len_max {
            s.len_max = l;
        }
        s.tcp_flags_or |= flags;
        return Ok(FlowUpdate {
            stats: p,
            is_new: false,
        });
    }
    let p = scratch.as_mut_ptr();
    // SAFETY: a stack slot of the right type and alignment.
    unsafe { write_fresh(p, len, flags, now) };
    // BPF_ANY: if another CPU inserted the key meanwhile, this only writes
    // this CPU's slot, which is what we want.
    // SAFETY: fully initialised by `write_fresh`.
    let fresh: &FlowStats = unsafe { &*p };
    FLOW_TABLE
        .insert(key, fresh, 0)
        .map_err(|_| Counter::FlowInsertFailed)?;
    Ok(FlowUpdate {
        stats: p,
        is_new: true,
    })
}
