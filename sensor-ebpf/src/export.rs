//! Adaptive export of flow events to the worker rings: a flow speaks when it
//! starts, at growing packet-count checkpoints and on FIN/RST, never per
//! packet, and never blocks: a full ring is counted, not waited for.

use aya_ebpf::{bindings::BPF_RB_AVAIL_DATA, helpers::bpf_get_smp_processor_id};
use sensor_common::{
    Counter, EventKind, FlowEvent, FlowKey, FlowStats, MAX_WORKERS, SensorConfig, flow_ring_index,
    hash::fmix64,
};

use crate::{
    maps::{count, worker_ring},
    parse::PacketMeta,
};

/// Writes one event of `kind` for `key` to its worker's ring. `hashes` are
/// the `hash_addr` of its source and destination, `now_ns` the packet's
/// clock reading.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "inlined into the packet path: values the caller already has, passed in registers"
)]
pub(crate) fn emit(
    cfg: &SensorConfig,
    key: &FlowKey,
    stats: *const FlowStats,
    kind: EventKind,
    (src_hash, dst_hash): (u64, u64),
    now_ns: u64,
    meta: &PacketMeta,
    pkt_len: u32,
) {
    let n_workers = if cfg.n_workers > MAX_WORKERS as u32 {
        MAX_WORKERS as u32
    } else {
        cfg.n_workers
    };
    let ring = worker_ring(flow_ring_index(
        src_hash, dst_hash, key.sport, key.dport, key.proto, n_workers,
    ));

    // Under pressure, keep 1 in 2^sample_shift new flows. The choice hangs on
    // the flow's own hash, so a flow is either fully reported or not at all.
    // `ring_bytes == 0` means the size is unknown: no sampling.
    if matches!(kind, EventKind::Start) && cfg.sample_shift != 0 && cfg.ring_bytes != 0 {
        let avail = ring.query(u64::from(BPF_RB_AVAIL_DATA));
        if avail > u64::from(cfg.ring_bytes / 4 * 3) {
            let h = fmix64(
                src_hash
                    ^ dst_hash.rotate_left(23)
                    ^ (u64::from(key.sport) << 24
                        | u64::from(key.dport) << 8
                        | u64::from(key.proto)),
            );
            let shift = cfg.sample_shift & 63;
            if h & ((1u64 << shift) - 1) != 0 {
                count(Counter::EventsSampledOut);
                return;
            }
        }
    }

    let Some(mut entry) = ring.reserve::<FlowEvent>(0) else {
        count(Counter::EventsLost);
        return;
    };
    // SAFETY: `stats` points at this CPU's map slot or the caller's stack copy;
    // both are valid for the duration of this call.
    let stats = unsafe { *stats };
    entry.write(FlowEvent {
        key: *key,
        stats,
        ts_ns: now_ns,
        kind: kind as u32,
        // SAFETY: a helper without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        tcp_flags: meta.tcp_flags,
        vlan_tagged: meta.vlan_tagged,
        vlan_id: meta.vlan_id,
        pkt_len,
    });
    entry.submit(0);
    count(Counter::EventsEmitted);
}
