//! Every map the XDP program uses. Names come from `sensor_common::map_names`
//! (the statics are named identically), so user space never repeats a string.
//! Sizes here are defaults: user space overrides them with `set_max_entries`
//! before loading.

use aya_ebpf::{
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf,
    },
};
use sensor_common::{
    BlockEntry, COUNTER_COUNT, Counter, FlowKey, FlowStats, Protection, SensorConfig, TokenBucket,
    list_size,
    sketch::{CMS_ENTRIES, CmsRow, DST_ENTRIES, DstSketch, EPOCHS, HllRegisters},
};

/// Default flow-table capacity; LRU eviction keeps the busiest flows.
const FLOW_TABLE_DEFAULT_ENTRIES: u32 = 65_536;
/// Default ring size per worker (a power-of-two multiple of the page size).
const RING_DEFAULT_BYTES: u32 = 256 * 1024;

/// Per-flow statistics, one slot per CPU so updates need no atomics; LRU so a
/// flood of new flows evicts idle ones instead of failing inserts.
#[map]
pub(crate) static FLOW_TABLE: LruPerCpuHashMap<FlowKey, FlowStats> =
    LruPerCpuHashMap::with_max_entries(FLOW_TABLE_DEFAULT_ENTRIES, 0);

/// Program counters indexed by `Counter`; per CPU, summed by user space.
#[map]
pub(crate) static GLOBAL_COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// The single runtime configuration written by user space.
#[map]
pub(crate) static SENSOR_CONFIG: Array<SensorConfig> = Array::with_max_entries(1, 0);

/// Count-Min sketch of packets per source address, one row per (epoch, row).
#[map]
pub(crate) static SRC_PACKETS_CMS: PerCpuArray<CmsRow> =
    PerCpuArray::with_max_entries(CMS_ENTRIES, 0);

/// Count-Min sketch of frame bytes per source address, one row per (epoch, row).
#[map]
pub(crate) static SRC_BYTES_CMS: PerCpuArray<CmsRow> =
    PerCpuArray::with_max_entries(CMS_ENTRIES, 0);

/// HyperLogLog registers counting distinct source addresses, one per epoch.
#[map]
pub(crate) static SRC_DISTINCT_HLL: PerCpuArray<HllRegisters> =
    PerCpuArray::with_max_entries(EPOCHS, 0);

/// Count-Min sketches of packets, bytes and new flows per destination host,
/// narrow prefix and wide prefix, one entry per (epoch, level).
#[map]
pub(crate) static DST_VOLUME: PerCpuArray<DstSketch> =
    PerCpuArray::with_max_entries(DST_ENTRIES, 0);

/// Blocklist entries per list; LPM tries allocate on insert.
const BLOCK_LIST_ENTRIES: u32 = 65_536;

/// IPv4 source prefixes whose packets are dropped (or counted in a dry
/// run) before any flow work, with an expiry time each.
#[map]
pub(crate) static BLOCK_V4: LpmTrie<[u8; 4], BlockEntry> =
    LpmTrie::with_max_entries(BLOCK_LIST_ENTRIES, 0);

/// IPv6 source prefixes, as `BLOCK_V4`.
#[map]
pub(crate) static BLOCK_V6: LpmTrie<[u8; 16], BlockEntry> =
    LpmTrie::with_max_entries(BLOCK_LIST_ENTRIES, 0);

/// IPv4 source prefixes never blocked, whatever the blocklist says (the
/// gateway's own addresses, configured prefixes, critical assets).
#[map]
pub(crate) static ALLOW_V4: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(BLOCK_LIST_ENTRIES, 0);

/// IPv6 prefixes never blocked, as `ALLOW_V4`.
#[map]
pub(crate) static ALLOW_V6: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(BLOCK_LIST_ENTRIES, 0);

/// Entries in each of the lists above, indexed by `sensor_common::list_size`,
/// kept by whoever changes a list.
#[map]
pub(crate) static LIST_SIZES: Array<u32> = Array::with_max_entries(list_size::COUNT, 0);

/// Victims under protection, by address (IPv4-mapped for IPv4).
#[map]
pub(crate) static PROTECTED: HashMap<[u8; 16], Protection> = HashMap::with_max_entries(1024, 0);

/// Each CPU's token bucket for each protected victim.
#[map]
pub(crate) static PROTECT_BUCKETS: PerCpuHashMap<[u8; 16], TokenBucket> =
    PerCpuHashMap::with_max_entries(1024, 0);

/// Sources seen completing a TCP exchange (a flow with an ACK at one of its
/// export checkpoints), with the time: they keep reaching a protected
/// victim. LRU, so the busiest stay.
#[map]
pub(crate) static KNOWN_SOURCES: LruHashMap<[u8; 16], u64> =
    LruHashMap::with_max_entries(65_536, 0);

/// Flow events for worker 0.
#[map]
pub(crate) static RING_WORKER_0: RingBuf = RingBuf::with_byte_size(RING_DEFAULT_BYTES, 0);
/// Flow events for worker 1.
#[map]
pub(crate) static RING_WORKER_1: RingBuf = RingBuf::with_byte_size(RING_DEFAULT_BYTES, 0);
/// Flow events for worker 2.
#[map]
pub(crate) static RING_WORKER_2: RingBuf = RingBuf::with_byte_size(RING_DEFAULT_BYTES, 0);
/// Flow events for worker 3.
#[map]
pub(crate) static RING_WORKER_3: RingBuf = RingBuf::with_byte_size(RING_DEFAULT_BYTES, 0);
/// Flow events for worker 4.
#[map]
pub(crate) static RING_WORKER_4: RingBuf = RingBuf::with_byte_size(RING_DEFAULT_BYTES, 0);
/// Flow events for worker 5.
#[map]
pub(crate) static RING_WORKER_5: RingBuf = RingBuf::with_byte_size(RING_DEFAULT_BYTES, 0);
/// Flow events for worker 6.
#[map]
pub(crate) static RING_WORKER_6: RingBuf = RingBuf::with_byte_size(RING_DEFAULT_BYTES, 0);
/// Flow events for worker 7.
#[map]
pub(crate) static RING_WORKER_7: RingBuf = RingBuf::with_byte_size(RING_DEFAULT_BYTES, 0);

/// The ring of worker `i` (`i` already reduced below `MAX_WORKERS`).
#[inline(always)]
pub(crate) fn worker_ring(i: u32) -> &'static RingBuf {
    match i {
        0 => &RING_WORKER_0,
        1 => &RING_WORKER_1,
        2 => &RING_WORKER_2,
        3 => &RING_WORKER_3,
        4 => &RING_WORKER_4,
        5 => &RING_WORKER_5,
        6 => &RING_WORKER_6,
        _ => &RING_WORKER_7,
    }
}

/// Adds `n` to counter `c` on this CPU. Per-CPU slots are only touched by the
/// CPU running the program (with preemption disabled), so a plain add is safe.
#[inline(always)]
pub(crate) fn count_add(c: Counter, n: u64) {
    if let Some(p) = GLOBAL_COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: the pointer is a valid per-CPU slot returned by the kernel.
        unsafe { *p += n };
    }
}

/// Adds one to counter `c` on this CPU.
#[inline(always)]
pub(crate) fn count(c: Counter) {
    count_add(c, 1);
}
