//! Types and constants shared by the XDP program (`sensor-ebpf`) and user space
//! (`sensor-user`). Every type that crosses the kernel/user boundary is defined
//! here exactly once, `#[repr(C)]`, with explicit padding and a compile-time size
//! check, so the two sides can never drift apart.
//!
//! Byte order: addresses are stored as on the wire (network order); every other
//! integer is in host order.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![no_std]
#![expect(
    clippy::inline_always,
    reason = "the XDP program calls these helpers; BPF code must inline them into its one function"
)]
#![expect(
    clippy::pub_underscore_fields,
    reason = "explicit padding is part of each #[repr(C)] layout and is set in struct literals"
)]

#[cfg(feature = "records")]
extern crate std;

#[cfg(feature = "clock")]
pub mod clock;
pub mod hash;
#[cfg(feature = "records")]
pub mod records;
pub mod sketch;

pub use hash::{flow_ring_index, hash_addr};

/// A flow address (IPv6 or IPv4-mapped, network order) as an IP address:
/// IPv4-mapped addresses come out as plain IPv4.
#[must_use]
pub fn addr_to_ip(addr: &[u8; 16]) -> core::net::IpAddr {
    core::net::Ipv6Addr::from(*addr).to_canonical()
}

/// Whether `addr` lies in the network `net`/`len` (lengths beyond the
/// family's width mean the whole address; the families must match). A flood
/// alert on a network and the evaluation that judges it both ask this.
#[must_use]
pub fn ip_in_prefix(addr: core::net::IpAddr, net: core::net::IpAddr, len: u8) -> bool {
    use core::net::IpAddr;
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Largest number of worker rings the XDP program can export to. Each worker
/// owns one ring; the program picks the ring with [`flow_ring_index`].
pub const MAX_WORKERS: usize = 8;

/// Map names, so user space never repeats a string literal.
pub mod map_names {
    pub const FLOW_TABLE: &str = "FLOW_TABLE";
    pub const GLOBAL_COUNTERS: &str = "GLOBAL_COUNTERS";
    pub const SENSOR_CONFIG: &str = "SENSOR_CONFIG";
    pub const SRC_PACKETS_CMS: &str = "SRC_PACKETS_CMS";
    pub const SRC_BYTES_CMS: &str = "SRC_BYTES_CMS";
    pub const SRC_DISTINCT_HLL: &str = "SRC_DISTINCT_HLL";
    pub const DST_VOLUME: &str = "DST_VOLUME";
    pub const BLOCK_V4: &str = "BLOCK_V4";
    pub const BLOCK_V6: &str = "BLOCK_V6";
    pub const ALLOW_V4: &str = "ALLOW_V4";
    pub const ALLOW_V6: &str = "ALLOW_V6";
    pub const LIST_SIZES: &str = "LIST_SIZES";
    pub const PROTECTED: &str = "PROTECTED";
    pub const PROTECT_BUCKETS: &str = "PROTECT_BUCKETS";
    pub const KNOWN_SOURCES: &str = "KNOWN_SOURCES";
    /// Ring `i` is named `RING_WORKER_<i>`, `i` in `0..MAX_WORKERS`.
    pub const RING_WORKERS: [&str; super::MAX_WORKERS] = [
        "RING_WORKER_0",
        "RING_WORKER_1",
        "RING_WORKER_2",
        "RING_WORKER_3",
        "RING_WORKER_4",
        "RING_WORKER_5",
        "RING_WORKER_6",
        "RING_WORKER_7",
    ];
}

/// Name of the XDP program inside the eBPF object.
pub const XDP_PROGRAM_NAME: &str = "sensor_xdp";

/// IP protocol numbers the parser understands.
pub mod ipproto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    /// Not an IP protocol: an ARP request is a flow sender → target (their
    /// IPv4 addresses) with `proto` 0 and `sport` [`ARP_MARK`]. An IPv4
    /// packet of protocol 0 has no ports parsed, so both are 0 there: the
    /// pair tells them apart ([`crate::FlowKey::is_arp`]).
    pub const ARP: u8 = 0;
    /// `sport` of an ARP flow: the ARP ethertype.
    pub const ARP_MARK: u16 = 0x0806;

    /// True for the key fields of an ARP flow.
    #[inline(always)]
    #[must_use]
    pub const fn is_arp(proto: u8, sport: u16) -> bool {
        proto == ARP && sport == ARP_MARK
    }
}

/// A unidirectional flow: the map key of `FLOW_TABLE` and the subject of every
/// event. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`) so one key
/// type serves both families. For ICMP/ICMPv6, `sport` holds the type and
/// `dport` the code. Non-first IPv4 fragments and protocols without ports have
/// both ports zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowKey {
    /// Source address, network byte order, IPv4-mapped for IPv4.
    pub src: [u8; 16],
    /// Destination address, network byte order, IPv4-mapped for IPv4.
    pub dst: [u8; 16],
    /// Source port, host byte order.
    pub sport: u16,
    /// Destination port, host byte order.
    pub dport: u16,
    /// IP protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// Always zero: hash keys compare every byte.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

/// The IPv4-mapped IPv6 prefix `::ffff:0:0/96`.
pub const V4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

impl FlowKey {
    /// A key from its fields (the padding is always zero: keys are hashed
    /// and compared as bytes).
    #[inline(always)]
    #[must_use]
    pub const fn new(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, proto: u8) -> Self {
        Self {
            src,
            dst,
            sport,
            dport,
            proto,
            _pad: [0; 3],
        }
    }

    /// Builds the 16-byte IPv4-mapped form of an IPv4 address given in
    /// network byte order.
    #[inline(always)]
    #[must_use]
    pub const fn map_v4(addr_be: [u8; 4]) -> [u8; 16] {
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr_be[0], addr_be[1], addr_be[2],
            addr_be[3],
        ]
    }

    /// True for an ARP request's flow ([`ipproto::ARP`]).
    #[inline(always)]
    #[must_use]
    pub const fn is_arp(&self) -> bool {
        ipproto::is_arp(self.proto, self.sport)
    }

    /// True when `addr` is an IPv4-mapped address.
    #[must_use]
    pub fn is_v4_mapped(addr: &[u8; 16]) -> bool {
        addr[..12] == V4_MAPPED_PREFIX
    }
}

/// Per-flow, per-CPU statistics: the value of `FLOW_TABLE`. User space sums the
/// CPUs (min/max/first/last merged accordingly).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowStats {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen (whole frame, L2 header included).
    pub bytes: u64,
    /// `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`) of the first packet.
    pub first_seen_ns: u64,
    /// `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`) of the latest packet.
    pub last_seen_ns: u64,
    /// Sum of squared frame lengths: with `bytes` and `packets` gives variance.
    pub len_sq_sum: u64,
    /// TCP segments with SYN and without ACK.
    pub syn: u32,
    /// TCP segments with SYN and ACK.
    pub synack: u32,
    /// TCP segments with FIN.
    pub fin: u32,
    /// TCP segments with RST.
    pub rst: u32,
    /// Smallest frame length seen.
    pub len_min: u16,
    /// Largest frame length seen.
    pub len_max: u16,
    /// OR of every TCP flag byte seen on this flow.
    pub tcp_flags_or: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowStats>() == 64);

/// Offset of the word holding `tcp_flags_or` and the padding after it.
const FLAGS_WORD: usize = core::mem::offset_of!(FlowStats, tcp_flags_or);
const _: () = assert!(FLAGS_WORD.is_multiple_of(4) && FLAGS_WORD + 4 == size_of::<FlowStats>());

impl FlowStats {
    /// The statistics of a flow whose first packet (`len` bytes, TCP
    /// `flags`, at `now_ns`) this is.
    #[inline(always)]
    #[must_use]
    pub fn fresh(len: u64, flags: u8, now_ns: u64) -> Self {
        let mut s = core::mem::MaybeUninit::<Self>::uninit();
        // SAFETY: a local of the right type and alignment; `write_fresh`
        // writes every byte.
        unsafe {
            Self::write_fresh(s.as_mut_ptr(), len, flags, now_ns);
            s.assume_init()
        }
    }

    /// Writes [`Self::fresh`] to `p` in place.
    ///
    /// The XDP program is linked with memset lowered to an out-of-line byte
    /// loop, so nothing on its packet path may zero memory through a struct
    /// literal with a padding array: the fields are written one by one, and
    /// the flags byte with its padding as one 32-bit word.
    ///
    /// # Safety
    /// `p` must be valid for writes of a `FlowStats` and 8-byte aligned.
    #[inline(always)]
    pub unsafe fn write_fresh(p: *mut Self, len: u64, flags: u8, now_ns: u64) {
        let syn = flags & tcp_flags::SYN != 0;
        let ack = flags & tcp_flags::ACK != 0;
        // SAFETY: per the contract; every field is written exactly once.
        unsafe {
            (*p).packets = 1;
            (*p).bytes = len;
            (*p).first_seen_ns = now_ns;
            (*p).last_seen_ns = now_ns;
            (*p).len_sq_sum = len * len;
            (*p).syn = u32::from(syn && !ack);
            (*p).synack = u32::from(syn && ack);
            (*p).fin = u32::from(flags & tcp_flags::FIN != 0);
            (*p).rst = u32::from(flags & tcp_flags::RST != 0);
            (*p).len_min = len as u16;
            (*p).len_max = len as u16;
            #[expect(
                clippy::cast_ptr_alignment,
                reason = "FLAGS_WORD is a multiple of 4 in an 8-byte aligned struct (asserted above)"
            )]
            p.cast::<u8>()
                .add(FLAGS_WORD)
                .cast::<u32>()
                .write(if cfg!(target_endian = "little") {
                    u32::from(flags)
                } else {
                    u32::from(flags) << 24
                });
        }
    }

    /// Counts one more packet (`len` bytes, TCP `flags`, at `now_ns`) of a
    /// flow that already has one.
    #[inline(always)]
    pub fn add(&mut self, len: u64, flags: u8, now_ns: u64) {
        // Statement order as the XDP program was tuned with: it keeps the
        // packet path free of register spills.
        let syn = flags & tcp_flags::SYN != 0;
        let ack = flags & tcp_flags::ACK != 0;
        self.packets += 1;
        self.bytes += len;
        self.last_seen_ns = now_ns;
        self.len_sq_sum = self.len_sq_sum.wrapping_add(len * len);
        self.syn += u32::from(syn && !ack);
        self.synack += u32::from(syn && ack);
        self.fin += u32::from(flags & tcp_flags::FIN != 0);
        self.rst += u32::from(flags & tcp_flags::RST != 0);
        let l = len as u16;
        if l < self.len_min {
            self.len_min = l;
        }
        if l > self.len_max {
            self.len_max = l;
        }
        self.tcp_flags_or |= flags;
    }

    /// Folds in the statistics of the same flow from another CPU (or an
    /// earlier interval): sums for counts, the earliest first and latest
    /// last packet, min/max of lengths. Statistics without packets (a CPU
    /// that never saw the flow) change nothing, so their zero timestamps and
    /// lengths do not count as minima. Counts saturate: a damaged snapshot
    /// must neither wrap a flow's total back to a small number nor panic a
    /// build with overflow checks.
    #[inline(always)]
    pub fn merge(&mut self, o: &Self) {
        if o.packets == 0 {
            return;
        }
        if self.packets == 0 {
            *self = *o;
            return;
        }
        self.packets = self.packets.saturating_add(o.packets);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.len_sq_sum = self.len_sq_sum.wrapping_add(o.len_sq_sum);
        if o.first_seen_ns < self.first_seen_ns {
            self.first_seen_ns = o.first_seen_ns;
        }
        if o.last_seen_ns > self.last_seen_ns {
            self.last_seen_ns = o.last_seen_ns;
        }
        self.syn = self.syn.saturating_add(o.syn);
        self.synack = self.synack.saturating_add(o.synack);
        self.fin = self.fin.saturating_add(o.fin);
        self.rst = self.rst.saturating_add(o.rst);
        if o.len_min < self.len_min {
            self.len_min = o.len_min;
        }
        if o.len_max > self.len_max {
            self.len_max = o.len_max;
        }
        self.tcp_flags_or |= o.tcp_flags_or;
    }
}

/// Why an event was exported.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// First packet of the flow on this CPU.
    Start = 1,
    /// The flow's packet count reached a checkpoint (2, 4 … 1024, then every 1024).
    Update = 2,
    /// A TCP segment carrying FIN.
    Fin = 3,
    /// A TCP segment carrying RST.
    Rst = 4,
}

impl EventKind {
    /// The event a packet with TCP `flags` exports, if any: RST and FIN
    /// always (RST first), then the flow's first packet on this CPU
    /// (`is_new`), then a checkpoint of its per-CPU packet count `packets`
    /// (after counting the packet, see [`is_checkpoint`]).
    #[inline(always)]
    #[must_use]
    pub const fn for_packet(flags: u8, is_new: bool, packets: u64) -> Option<Self> {
        if flags & tcp_flags::RST != 0 {
            Some(Self::Rst)
        } else if flags & tcp_flags::FIN != 0 {
            Some(Self::Fin)
        } else if is_new {
            Some(Self::Start)
        } else if is_checkpoint(packets) {
            Some(Self::Update)
        } else {
            None
        }
    }

    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Start),
            2 => Some(Self::Update),
            3 => Some(Self::Fin),
            4 => Some(Self::Rst),
            _ => None,
        }
    }
}

/// One record in a worker ring: a snapshot of a flow's per-CPU statistics at
/// the moment of export.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowEvent {
    pub key: FlowKey,
    /// Statistics of this flow on `cpu` after counting the triggering packet.
    pub stats: FlowStats,
    /// `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`) when the event was written.
    pub ts_ns: u64,
    /// An [`EventKind`] value.
    pub kind: u32,
    /// CPU that saw the triggering packet.
    pub cpu: u32,
    /// TCP flags byte of the triggering packet (0 for other protocols).
    pub tcp_flags: u8,
    /// 1 if the triggering packet had an 802.1Q/802.1ad tag.
    pub vlan_tagged: u8,
    /// Outer VLAN id (0 if untagged), host byte order.
    pub vlan_id: u16,
    /// Frame length of the triggering packet.
    pub pkt_len: u32,
}
const _: () = assert!(core::mem::size_of::<FlowEvent>() == 128);

/// TCP flag bits as in the TCP header's 14th byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Runtime configuration: the single entry of the `SENSOR_CONFIG` array map.
/// User space writes it before attaching and flips `epoch` every second.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SensorConfig {
    /// Sketch epoch the program writes to (0 or 1); user space reads the other.
    pub epoch: u32,
    /// Number of worker rings in use, `1..=MAX_WORKERS`.
    pub n_workers: u32,
    /// 1: mirror/SPAN port, return `XDP_DROP` after observing (nobody needs the
    /// copy). 0: passive gateway, always `XDP_PASS`.
    pub mirror: u32,
    /// When a ring holds more than `ring_size * 3 / 4` bytes, only one new-flow
    /// event in `2^sample_shift` is exported. Ring size in bytes.
    pub ring_bytes: u32,
    /// See `ring_bytes`.
    pub sample_shift: u32,
    /// Destination prefix lengths `[v4 narrow, v4 wide, v6 narrow, v6 wide]`
    /// of the destination volume sketch (`sketch::DST_PREFIX_DEFAULT`).
    pub dst_prefix: [u8; 4],
    /// What the program does with a packet from a blocked source
    /// ([`EnforceMode`] as `u32`).
    pub enforce: u32,
    pub _pad: u32,
    /// `sketch::dst_prefix_masks(dst_prefix)`: the prefix cuts the program
    /// applies, computed once here instead of per packet.
    pub dst_masks: [[u64; 2]; 4],
}
const _: () = assert!(core::mem::size_of::<SensorConfig>() == 96);

impl SensorConfig {
    /// A configuration for epoch 0 with enforcement off; `dst_masks` follow
    /// from `dst_prefix`.
    #[must_use]
    pub const fn new(
        n_workers: u32,
        mirror: bool,
        ring_bytes: u32,
        sample_shift: u32,
        dst_prefix: [u8; 4],
    ) -> Self {
        Self {
            epoch: 0,
            n_workers,
            mirror: mirror as u32,
            ring_bytes,
            sample_shift,
            dst_prefix,
            enforce: EnforceMode::Off as u32,
            _pad: 0,
            dst_masks: sketch::dst_prefix_masks(dst_prefix),
        }
    }
}

/// What the XDP program does with a packet whose source is in the
/// blocklist (and not in the allowlist).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EnforceMode {
    /// Blocklists are not consulted.
    #[default]
    Off = 0,
    /// Counted as "would drop" per reason, passed.
    DryRun = 1,
    /// Dropped and counted per reason.
    On = 2,
}

impl EnforceMode {
    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Off),
            1 => Some(Self::DryRun),
            2 => Some(Self::On),
            _ => None,
        }
    }
}

/// Who put a source in a blocklist: the drop counters are per reason.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// `sensor block add`.
    Operator = 1,
    /// An alert at or above its class's block threshold.
    Alert = 2,
}

impl BlockReason {
    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Operator),
            2 => Some(Self::Alert),
            _ => None,
        }
    }

    /// The counters of a packet this reason drops (`[dropped, would drop]`).
    #[must_use]
    pub const fn counters(self) -> [Counter; 2] {
        match self {
            Self::Operator => [
                Counter::DroppedBlockOperator,
                Counter::WouldDropBlockOperator,
            ],
            Self::Alert => [Counter::DroppedBlockAlert, Counter::WouldDropBlockAlert],
        }
    }
}

/// A victim under protection (`PROTECTED`, keyed by its IPv4-mapped or
/// IPv6 address): sources it has no completed exchange with share a
/// per-CPU token bucket. Kept in nanoseconds of credit, so the program
/// neither multiplies nor divides: a packet costs `ns_per_token`, time
/// adds credit, up to `max_credit_ns` (the burst).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Protection {
    /// 10⁹ / rate: nanoseconds of credit one packet costs.
    pub ns_per_token: u64,
    /// Burst × `ns_per_token`.
    pub max_credit_ns: u64,
    /// `CLOCK_MONOTONIC` ns after which the protection ends; 0: never.
    pub expires_ns: u64,
}

impl Protection {
    /// `rate_pps` packets per second per CPU, bursts of `burst`.
    #[must_use]
    pub const fn new(rate_pps: u64, burst: u64, expires_ns: u64) -> Self {
        let rate = if rate_pps == 0 { 1 } else { rate_pps };
        let ns_per_token = 1_000_000_000 / rate;
        let ns_per_token = if ns_per_token == 0 { 1 } else { ns_per_token };
        Self {
            ns_per_token,
            max_credit_ns: ns_per_token.saturating_mul(burst),
            expires_ns,
        }
    }

    /// The rate it was made with (rounded).
    #[must_use]
    pub const fn rate_pps(&self) -> u64 {
        1_000_000_000
            / if self.ns_per_token == 0 {
                1
            } else {
                self.ns_per_token
            }
    }

    /// The burst it was made with.
    #[must_use]
    pub const fn burst(&self) -> u64 {
        self.max_credit_ns
            / if self.ns_per_token == 0 {
                1
            } else {
                self.ns_per_token
            }
    }
}

/// One CPU's token bucket for one protected victim (`PROTECT_BUCKETS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct TokenBucket {
    /// Credit left, in nanoseconds (see [`Protection`]).
    pub credit_ns: u64,
    /// `bpf_ktime_get_coarse_ns` of the last refill.
    pub last_ns: u64,
}

/// Indexes of `LIST_SIZES`, the number of entries in each list: the program
/// skips the trie lookup of an empty list (a miss costs more than the rest
/// of the check).
pub mod list_size {
    pub const BLOCK_V4: u32 = 0;
    pub const BLOCK_V6: u32 = 1;
    pub const ALLOW_V4: u32 = 2;
    pub const ALLOW_V6: u32 = 3;
    pub const PROTECTED: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// Bytes of free text an operator or alert attaches to a block entry.
pub const BLOCK_NOTE_LEN: usize = 32;

/// The value of a `BLOCK_V4`/`BLOCK_V6` LPM-trie entry (keys: prefix length
/// and the address prefix in network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct BlockEntry {
    /// `CLOCK_MONOTONIC` ns (the clock of `bpf_ktime_get_ns`) after which the
    /// entry no longer blocks; 0: never expires.
    pub expires_ns: u64,
    /// `CLOCK_MONOTONIC` ns when the entry was added or last renewed.
    pub added_ns: u64,
    /// [`BlockReason`] as `u32`.
    pub reason: u32,
    pub _pad: u32,
    /// UTF-8 note, NUL-padded.
    pub note: [u8; BLOCK_NOTE_LEN],
}
const _: () = assert!(core::mem::size_of::<BlockEntry>() == 56);

/// Global counters: indexes into the `GLOBAL_COUNTERS` per-CPU array of `u64`.
/// The user side sums CPUs; per-CPU slots need no atomics.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    PacketsSeen = 0,
    BytesSeen,
    /// Parsed to L4 (or to L3 for protocols without ports) and counted in a flow.
    ParsedOk,
    /// Frame shorter than an Ethernet header.
    TruncatedL2,
    /// VLAN tag cut off, or more tags than the parser follows.
    TruncatedVlan,
    TooManyVlanTags,
    /// Ethertype neither IPv4, IPv6 nor ARP (LLDP …): passed, not a flow.
    UnknownEthertype,
    TruncatedIpv4,
    /// IPv4 IHL below 5 or header longer than the packet.
    BadIpv4Ihl,
    /// IPv4 version field is not 4.
    BadIpVersion,
    TruncatedIpv6,
    /// Extension-header chain longer than the parser walks.
    TooManyExtHeaders,
    TruncatedExtHeader,
    /// IPv4 or IPv6 fragment with offset > 0: counted in a port-less flow.
    NonFirstFragment,
    TruncatedTcp,
    /// TCP data offset below 5.
    BadTcpDataOffset,
    TruncatedUdp,
    TruncatedIcmp,
    /// L4 protocol without ports (GRE, ESP, SCTP …): counted in a port-less flow.
    OtherL4,
    /// Flow table insert failed (should not happen with an LRU map).
    FlowInsertFailed,
    EventsEmitted,
    /// `bpf_ringbuf_reserve` failed: the ring was full.
    EventsLost,
    /// New-flow events skipped by sampling while the ring was over ¾ full.
    EventsSampledOut,
    /// Packets dropped because of mirror mode.
    MirrorDropped,
    /// Dropped: the source is in a blocklist, put there by an operator.
    DroppedBlockOperator,
    /// Dropped: the source is in a blocklist, put there by an alert.
    DroppedBlockAlert,
    /// Dry run: would have been dropped (operator entry), passed.
    WouldDropBlockOperator,
    /// Dry run: would have been dropped (alert entry), passed.
    WouldDropBlockAlert,
    /// A blocklisted source that the allowlist kept passing.
    BlockAllowlisted,
    /// A blocklist entry matched but had expired: passed.
    BlockExpired,
    /// To a protected victim from a source it has no completed exchange
    /// with, over the victim's token bucket: dropped.
    DroppedRateLimit,
    /// As `DroppedRateLimit`, in a dry run: passed.
    WouldDropRateLimit,
    /// To a protected victim from a known source or on a known flow: passed
    /// without a token.
    ProtectKnownPassed,
    /// A broadcast ARP request for another IPv4 address: counted in a flow
    /// sender → target ([`ipproto::ARP`]), never blocked or rate-limited.
    ArpRequest,
    /// Any other ARP frame (unicast requests, replies, announcements, other
    /// address types, a cut-off one): passed, not a flow.
    ArpOther,
    /// The program hit an internal error and failed open.
    InternalError,
}

/// Number of slots in `GLOBAL_COUNTERS`.
pub const COUNTER_COUNT: u32 = Counter::InternalError as u32 + 1;

impl Counter {
    /// Every counter in index order.
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::PacketsSeen,
        Counter::BytesSeen,
        Counter::ParsedOk,
        Counter::TruncatedL2,
        Counter::TruncatedVlan,
        Counter::TooManyVlanTags,
        Counter::UnknownEthertype,
        Counter::TruncatedIpv4,
        Counter::BadIpv4Ihl,
        Counter::BadIpVersion,
        Counter::TruncatedIpv6,
        Counter::TooManyExtHeaders,
        Counter::TruncatedExtHeader,
        Counter::NonFirstFragment,
        Counter::TruncatedTcp,
        Counter::BadTcpDataOffset,
        Counter::TruncatedUdp,
        Counter::TruncatedIcmp,
        Counter::OtherL4,
        Counter::FlowInsertFailed,
        Counter::EventsEmitted,
        Counter::EventsLost,
        Counter::EventsSampledOut,
        Counter::MirrorDropped,
        Counter::DroppedBlockOperator,
        Counter::DroppedBlockAlert,
        Counter::WouldDropBlockOperator,
        Counter::WouldDropBlockAlert,
        Counter::BlockAllowlisted,
        Counter::BlockExpired,
        Counter::DroppedRateLimit,
        Counter::WouldDropRateLimit,
        Counter::ProtectKnownPassed,
        Counter::ArpRequest,
        Counter::ArpOther,
        Counter::InternalError,
    ];

    /// A frame the parser could not fully parse (it was passed all the same).
    #[must_use]
    pub const fn is_parse_problem(self) -> bool {
        matches!(
            self,
            Counter::TruncatedL2
                | Counter::TruncatedVlan
                | Counter::TooManyVlanTags
                | Counter::TruncatedIpv4
                | Counter::BadIpv4Ihl
                | Counter::BadIpVersion
                | Counter::TruncatedIpv6
                | Counter::TooManyExtHeaders
                | Counter::TruncatedExtHeader
                | Counter::TruncatedTcp
                | Counter::BadTcpDataOffset
                | Counter::TruncatedUdp
                | Counter::TruncatedIcmp
        )
    }

    /// Stable `snake_case` name used in stats output and metrics.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PacketsSeen => "packets_seen",
            Counter::BytesSeen => "bytes_seen",
            Counter::ParsedOk => "parsed_ok",
            Counter::TruncatedL2 => "truncated_l2",
            Counter::TruncatedVlan => "truncated_vlan",
            Counter::TooManyVlanTags => "too_many_vlan_tags",
            Counter::UnknownEthertype => "unknown_ethertype",
            Counter::TruncatedIpv4 => "truncated_ipv4",
            Counter::BadIpv4Ihl => "bad_ipv4_ihl",
            Counter::BadIpVersion => "bad_ip_version",
            Counter::TruncatedIpv6 => "truncated_ipv6",
            Counter::TooManyExtHeaders => "too_many_ext_headers",
            Counter::TruncatedExtHeader => "truncated_ext_header",
            Counter::NonFirstFragment => "non_first_fragment",
            Counter::TruncatedTcp => "truncated_tcp",
            Counter::BadTcpDataOffset => "bad_tcp_data_offset",
            Counter::TruncatedUdp => "truncated_udp",
            Counter::TruncatedIcmp => "truncated_icmp",
            Counter::OtherL4 => "other_l4",
            Counter::FlowInsertFailed => "flow_insert_failed",
            Counter::EventsEmitted => "events_emitted",
            Counter::EventsLost => "events_lost",
            Counter::EventsSampledOut => "events_sampled_out",
            Counter::MirrorDropped => "mirror_dropped",
            Counter::DroppedBlockOperator => "dropped_block_operator",
            Counter::DroppedBlockAlert => "dropped_block_alert",
            Counter::WouldDropBlockOperator => "would_drop_block_operator",
            Counter::WouldDropBlockAlert => "would_drop_block_alert",
            Counter::BlockAllowlisted => "block_allowlisted",
            Counter::BlockExpired => "block_expired",
            Counter::DroppedRateLimit => "dropped_rate_limit",
            Counter::WouldDropRateLimit => "would_drop_rate_limit",
            Counter::ProtectKnownPassed => "protect_known_passed",
            Counter::ArpRequest => "arp_request",
            Counter::ArpOther => "arp_other",
            Counter::InternalError => "internal_error",
        }
    }
}

/// True when a flow's per-CPU packet count `n` (after counting the packet)
/// should produce an `Update` event: 2, 4, 8 … 1024, then every 1024.
#[inline(always)]
#[must_use]
pub const fn is_checkpoint(n: u64) -> bool {
    if n < 2 {
        false
    } else if n <= 1024 {
        // Not `is_power_of_two`: BPF has no population count instruction.
        #[expect(
            clippy::manual_is_power_of_two,
            reason = "two BPF instructions instead of a popcount expansion"
        )]
        let pow2 = n & (n - 1) == 0;
        pow2
    } else {
        n.is_multiple_of(1024)
    }
}

#[cfg(feature = "user")]
mod pod_impls {
    use super::{BlockEntry, FlowKey, FlowStats, Protection, SensorConfig, TokenBucket};
    use crate::sketch::{CmsRow, DstSketch, HllRegisters};

    // SAFETY: all are `#[repr(C)]`, `Copy`, made only of integers with explicit
    // padding fields, so every bit pattern is valid and there are no holes
    // (bytemuck's derive checks the same for the structs that have it).
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowStats {}
    unsafe impl aya::Pod for SensorConfig {}
    unsafe impl aya::Pod for BlockEntry {}
    unsafe impl aya::Pod for Protection {}
    unsafe impl aya::Pod for TokenBucket {}
    unsafe impl aya::Pod for CmsRow {}
    unsafe impl aya::Pod for HllRegisters {}
    unsafe impl aya::Pod for DstSketch {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_follow_powers_of_two_then_every_1024() {
        let hits: [u64; 13] = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3072, 4096];
        for n in 0..5000u64 {
            assert_eq!(is_checkpoint(n), hits.contains(&n), "n = {n}");
        }
    }

    #[test]
    #[expect(clippy::used_underscore_binding, reason = "the padding must be zeroed")]
    fn fresh_then_add_counts_every_packet() {
        use tcp_flags::{ACK, FIN, RST, SYN};
        let mut s = FlowStats::fresh(60, SYN, 10);
        assert_eq!((s.packets, s.syn, s.synack, s.tcp_flags_or), (1, 1, 0, SYN));
        assert_eq!(s._pad, [0; 3]);
        s.add(1500, SYN | ACK, 20);
        s.add(40, FIN | ACK, 30);
        s.add(100, RST, 40);
        assert_eq!((s.packets, s.bytes), (4, 1700));
        assert_eq!(s.len_sq_sum, 3600 + 1500 * 1500 + 1600 + 10_000);
        assert_eq!((s.syn, s.synack, s.fin, s.rst), (1, 1, 1, 1));
        assert_eq!((s.len_min, s.len_max), (40, 1500));
        assert_eq!((s.first_seen_ns, s.last_seen_ns), (10, 40));
        assert_eq!(s.tcp_flags_or, SYN | ACK | FIN | RST);
    }

    #[test]
    fn merge_is_packetwise_accounting_and_skips_empty_stats() {
        let mut a = FlowStats::fresh(100, 0, 50);
        a.add(200, 0, 60);
        let mut b = FlowStats::fresh(40, tcp_flags::FIN, 30);
        b.add(300, 0, 90);
        let mut m = FlowStats::default();
        m.merge(&FlowStats::default());
        m.merge(&a);
        m.merge(&FlowStats::default());
        m.merge(&b);
        let mut want = FlowStats::fresh(100, 0, 50);
        want.add(200, 0, 60);
        want.add(40, tcp_flags::FIN, 30);
        want.add(300, 0, 90);
        want.first_seen_ns = 30;
        assert_eq!(m, want);
    }

    /// Found by the `event_decoder` fuzz target (its corpus keeps the
    /// input): a flow that moved CPUs with a near-`u64::MAX` packet count
    /// in its snapshot overflowed the merge in the feature extractor.
    #[test]
    fn merged_counts_saturate() {
        let mut big = FlowStats::fresh(60, tcp_flags::SYN, 10);
        big.packets = u64::MAX - 1;
        big.bytes = u64::MAX;
        big.syn = u32::MAX;
        let mut m = big;
        m.merge(&FlowStats::fresh(60, tcp_flags::SYN, 20));
        assert_eq!((m.packets, m.bytes, m.syn), (u64::MAX, u64::MAX, u32::MAX));
        assert_eq!((m.first_seen_ns, m.last_seen_ns), (10, 20));
    }

    #[test]
    fn event_priority_is_rst_fin_start_checkpoint() {
        use tcp_flags::{FIN, RST, SYN};
        assert_eq!(
            EventKind::for_packet(RST | FIN, true, 2),
            Some(EventKind::Rst)
        );
        assert_eq!(EventKind::for_packet(FIN, true, 1), Some(EventKind::Fin));
        assert_eq!(EventKind::for_packet(SYN, true, 1), Some(EventKind::Start));
        assert_eq!(EventKind::for_packet(0, false, 4), Some(EventKind::Update));
        assert_eq!(EventKind::for_packet(0, false, 5), None);
    }

    #[test]
    fn counter_table_is_in_index_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{}", c.name());
        }
    }
}
