//! Per-CPU flow accounting in `FLOW_TABLE`.

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

#[inline(always)]
fn fresh(len: u64, flags: u8, now: u64) -> FlowStats {
    let syn = flags & tcp_flags::SYN != 0;
    let ack = flags & tcp_flags::ACK != 0;
    FlowStats {
        packets: 1,
        bytes: len,
        first_seen_ns: now,
        last_seen_ns: now,
        len_sq_sum: len * len,
        syn: u32::from(syn && !ack),
        synack: u32::from(syn && ack),
        fin: u32::from(flags & tcp_flags::FIN != 0),
        rst: u32::from(flags & tcp_flags::RST != 0),
        len_min: len as u16,
        len_max: len as u16,
        tcp_flags_or: flags,
        _pad: [0; 3],
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
    scratch: &mut FlowStats,
) -> Result<FlowUpdate, Counter> {
    if let Some(p) = FLOW_TABLE.get_ptr_mut(key) {
        // SAFETY: a per-CPU slot of this CPU: nothing else writes it while the
        // program runs (preemption is off), so plain read-modify-write is safe.
        let s = unsafe { &mut *p };
        // A slot another CPU created is zeroed for this CPU: the flow starts
        // here now.
        if s.packets == 0 {
            *s = fresh(len, flags, now);
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
    *scratch = fresh(len, flags, now);
    // BPF_ANY: if another CPU inserted the key meanwhile, this only writes
    // this CPU's slot, which is what we want.
    FLOW_TABLE
        .insert(key, &*scratch, 0)
        .map_err(|_| Counter::FlowInsertFailed)?;
    Ok(FlowUpdate {
        stats: scratch,
        is_new: true,
    })
}
