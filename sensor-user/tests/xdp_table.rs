//! The XDP program driven through `BPF_PROG_TEST_RUN`: a table of frames
//! (well-formed and broken) with the verdict, the exact flow entry and exactly
//! which counters must move, plus export, sampling, mirror and sketch checks.
//!
//! Each test loads its own program instance (maps belong to the instance), so
//! tests can run in parallel threads. Each test pins its thread to one CPU so
//! per-CPU flow slots stay on one CPU between runs.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{TestRunResult, Xdp},
};
use etherparse::{PacketBuilder, TcpHeader, VlanId};
use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestRunner},
};
use sensor_common::{
    COUNTER_COUNT, Counter, EventKind, FlowEvent, FlowKey, FlowStats, MAX_WORKERS, SensorConfig,
    XDP_PROGRAM_NAME, flow_ring_index, hash_addr, ipproto, map_names,
    sketch::{
        CMS_ROWS, CmsRow, HLL_REGISTERS, HllRegisters, cms_column, cms_index, hll_index_rank,
    },
    tcp_flags,
};
use sensor_lab::require_root;

mod xdp_util;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
/// One ring record: 8-byte header plus the event.
const RING_RECORD: u32 = 8 + size_of::<FlowEvent>() as u32;

// ---------------------------------------------------------------- harness

fn pin_to_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).expect("cpu 0 in set");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .expect("pin test thread to cpu 0");
}

fn config(n_workers: u32, ring_bytes: u32) -> SensorConfig {
    SensorConfig::new(
        n_workers,
        false,
        ring_bytes,
        3,
        sensor_common::sketch::DST_PREFIX_DEFAULT,
    )
}

struct Sensor {
    ebpf: Ebpf,
}

impl Sensor {
    /// The program for root test `test`, configured with `cfg` (its worker
    /// rings sized to match); `None` where the test is skipped (no root).
    fn for_root_test(test: &str, cfg: SensorConfig) -> Option<Self> {
        require_root(test).then(|| Self::load(cfg.ring_bytes, cfg))
    }

    fn load(ring_bytes: u32, cfg: SensorConfig) -> Self {
        pin_to_cpu0();
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(map_names::FLOW_TABLE, 4096);
        for name in map_names::RING_WORKERS {
            loader.map_max_entries(name, ring_bytes);
        }
        let mut ebpf = loader
            .load(sensor::capture::XDP_OBJECT)
            .unwrap_or_else(|e| panic!("loading the XDP object: {e}"));
        for name in [XDP_PROGRAM_NAME, "sensor_xdp_floor"] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("program {name} missing"))
                .try_into()
                .expect("an XDP program");
            prog.load()
                .unwrap_or_else(|e| panic!("verifier rejected {name}: {e}"));
        }
        let mut s = Self { ebpf };
        s.set_config(cfg);
        s
    }

    fn set_config(&mut self, cfg: SensorConfig) {
        let mut a: Array<_, SensorConfig> = Array::try_from(
            self.ebpf
                .map_mut(map_names::SENSOR_CONFIG)
                .expect("config map"),
        )
        .expect("config array");
        a.set(0, cfg, 0).expect("write config");
    }

    fn run_prog(&self, name: &str, frame: &[u8], repeat: u32) -> TestRunResult {
        xdp_util::test_run(&self.ebpf, name, frame, repeat)
    }

    fn run(&self, frame: &[u8]) -> u32 {
        self.run_prog(XDP_PROGRAM_NAME, frame, 1).return_value
    }

    fn counters(&self) -> [u64; COUNTER_COUNT as usize] {
        let a: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(map_names::GLOBAL_COUNTERS).expect("counters"))
                .expect("per-cpu array");
        let mut out = [0u64; COUNTER_COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = a
                .get(&(i as u32), 0)
                .expect("read counter")
                .iter()
                .sum::<u64>();
        }
        out
    }

    /// The flow's per-CPU slots merged: sums, min of minima, max of maxima.
    fn flow(&self, key: &FlowKey) -> Option<FlowStats> {
        let m: PerCpuHashMap<_, FlowKey, FlowStats> =
            PerCpuHashMap::try_from(self.ebpf.map(map_names::FLOW_TABLE).expect("flow table"))
                .expect("per-cpu hash");
        let vals = m.get(key, 0).ok()?;
        let mut out = FlowStats::default();
        for v in vals.iter() {
            out.merge(v);
        }
        (out.packets > 0).then_some(out)
    }

    fn flow_count(&self) -> usize {
        let m: PerCpuHashMap<_, FlowKey, FlowStats> =
            PerCpuHashMap::try_from(self.ebpf.map(map_names::FLOW_TABLE).expect("flow table"))
                .expect("per-cpu hash");
        m.keys().count()
    }

    fn drain_ring(&mut self, i: usize) -> Vec<FlowEvent> {
        let mut ring = RingBuf::try_from(
            self.ebpf
                .map_mut(map_names::RING_WORKERS[i])
                .expect("ring map"),
        )
        .expect("ring");
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            assert_eq!(item.len(), size_of::<FlowEvent>(), "ring record size");
            out.push(bytemuck::pod_read_unaligned::<FlowEvent>(&item));
        }
        out
    }

    /// Count-Min packet and byte estimates (minimum over rows, CPUs summed).
    fn cms_estimate(&self, epoch: u32, src: &[u8; 16]) -> (u64, u64) {
        let h = hash_addr(src);
        let read = |name: &str| {
            let a: PerCpuArray<_, CmsRow> =
                PerCpuArray::try_from(self.ebpf.map(name).expect("cms map")).expect("cms array");
            (0..CMS_ROWS)
                .map(|row| {
                    let col = cms_column(h, row) as usize;
                    a.get(&cms_index(epoch, row), 0)
                        .expect("cms row")
                        .iter()
                        .map(|r| r.cells[col])
                        .sum::<u64>()
                })
                .min()
                .expect("rows")
        };
        (
            read(map_names::SRC_PACKETS_CMS),
            read(map_names::SRC_BYTES_CMS),
        )
    }

    /// `HyperLogLog` registers of `epoch`, CPUs merged by max.
    fn hll(&self, epoch: u32) -> Vec<u8> {
        let a: PerCpuArray<_, HllRegisters> =
            PerCpuArray::try_from(self.ebpf.map(map_names::SRC_DISTINCT_HLL).expect("hll"))
                .expect("hll array");
        let mut regs = vec![0u8; HLL_REGISTERS as usize];
        for cpu in a.get(&epoch, 0).expect("hll epoch").iter() {
            for (m, r) in regs.iter_mut().zip(cpu.regs.iter()) {
                *m = (*m).max(*r);
            }
        }
        regs
    }
}

// ---------------------------------------------------------------- frames

/// The start of every test frame: `MAC_A` to `MAC_B`.
fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(MAC_A, MAC_B)
}

/// A frame from a finished `PacketBuilder` chain and its payload.
macro_rules! frame {
    ($builder:expr, $payload:expr) => {{
        let mut out = Vec::new();
        $builder.write(&mut out, $payload).expect("frame");
        out
    }};
}

fn v4(i: u8, host: u8) -> [u8; 4] {
    [10, i, 0, host]
}

fn v6(i: u8, host: u8) -> [u8; 16] {
    [
        0x20, 0x01, 0x0d, 0xb8, 0, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, host,
    ]
}

fn key4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey::new(
        FlowKey::map_v4(src),
        FlowKey::map_v4(dst),
        sport,
        dport,
        proto,
    )
}

fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    frame!(
        eth().ipv4(src, dst, 64).udp(sport, dport),
        &vec![0xab; payload]
    )
}

fn udp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    frame!(eth().ipv6(src, dst, 64).udp(sport, dport), &[1, 2, 3, 4])
}

fn tcp_hdr(sport: u16, dport: u16, flags: u8) -> TcpHeader {
    let mut t = TcpHeader::new(sport, dport, 1000, 64240);
    t.fin = flags & tcp_flags::FIN != 0;
    t.syn = flags & tcp_flags::SYN != 0;
    t.rst = flags & tcp_flags::RST != 0;
    t.psh = flags & tcp_flags::PSH != 0;
    t.ack = flags & tcp_flags::ACK != 0;
    t
}

fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let tcp = tcp_hdr(sport, dport, flags);
    frame!(eth().ipv4(src, dst, 64).tcp_header(tcp), &[])
}

fn tcp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let tcp = tcp_hdr(sport, dport, flags);
    frame!(eth().ipv6(src, dst, 64).tcp_header(tcp), &[])
}

fn icmp4_echo(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    frame!(eth().ipv4(src, dst, 64).icmpv4_echo_request(7, 1), &[0; 16])
}

fn icmp6_echo(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    frame!(eth().ipv6(src, dst, 64).icmpv6_echo_request(7, 1), &[0; 16])
}

fn vlan(id: u16) -> VlanId {
    VlanId::try_new(id).expect("vlan id")
}

fn udp4_vlan1(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    frame!(
        eth()
            .single_vlan(vlan(100))
            .ipv4(src, dst, 64)
            .udp(5000, 53),
        &[0; 8]
    )
}

fn udp4_vlan2(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    frame!(
        eth()
            .double_vlan(vlan(200), vlan(300))
            .ipv4(src, dst, 64)
            .udp(5001, 53),
        &[0; 8]
    )
}

/// Inserts `bytes` at `at`.
fn splice(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame.splice(at..at, bytes.iter().copied());
    frame
}

/// IPv4 frame (untagged) with `opts` inserted as header options; fixes IHL
/// and total length.
fn with_ipv4_options(frame: Vec<u8>, opts: &[u8]) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let mut f = splice(frame, ETH_LEN + IPV4_LEN, opts);
    f[ETH_LEN] = 0x40 | ((IPV4_LEN + opts.len()) / 4) as u8;
    let tot = u16::from_be_bytes([f[ETH_LEN + 2], f[ETH_LEN + 3]]) + opts.len() as u16;
    f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&tot.to_be_bytes());
    f
}

/// Sets the IPv4 fragment field (flags + offset in 8-byte units).
fn with_ipv4_frag(mut frame: Vec<u8>, more: bool, offset8: u16) -> Vec<u8> {
    let v = offset8 | if more { 0x2000 } else { 0 };
    frame[ETH_LEN + 6..ETH_LEN + 8].copy_from_slice(&v.to_be_bytes());
    frame
}

/// IPv6 extension header bytes for `kind`, continuing with `next`.
fn ext_header(kind: u8, next: u8, frag_offset8: u16) -> Vec<u8> {
    match kind {
        // Fragment: next, reserved, offset<<3 | M, identification.
        44 => {
            let o = (frag_offset8 << 3) | 1;
            let [a, b] = o.to_be_bytes();
            vec![next, 0, a, b, 0, 0, 0x12, 0x34]
        }
        // AH: length in 4-byte units minus 2; 12 bytes = SPI, sequence.
        51 => vec![next, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        // Hop-by-hop, routing, destination options: 8 bytes with PadN.
        _ => vec![next, 0, 1, 4, 0, 0, 0, 0],
    }
}

/// An IPv6 frame with the extension headers `chain` between the IPv6 header
/// and its original L4 header. The fragment header (if any) gets
/// `frag_offset8`.
fn with_ipv6_ext(frame: Vec<u8>, chain: &[u8], frag_offset8: u16) -> Vec<u8> {
    let l4 = frame[ETH_LEN + 6];
    let mut exts = Vec::new();
    for (i, kind) in chain.iter().enumerate() {
        let next = chain.get(i + 1).copied().unwrap_or(l4);
        exts.extend(ext_header(*kind, next, frag_offset8));
    }
    let mut f = splice(frame, ETH_LEN + IPV6_LEN, &exts);
    f[ETH_LEN + 6] = chain[0];
    let pl = u16::from_be_bytes([f[ETH_LEN + 4], f[ETH_LEN + 5]]) + exts.len() as u16;
    f[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&pl.to_be_bytes());
    f
}

fn truncate(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}

fn set(mut frame: Vec<u8>, at: usize, v: u8) -> Vec<u8> {
    frame[at] = v;
    frame
}

/// A gratuitous ARP: the sender asks for its own address.
fn arp_announcement() -> Vec<u8> {
    let mut f = arp();
    let n = f.len();
    f[n - 4..].copy_from_slice(&[10, 0, 0, 1]);
    f
}

/// A broadcast ARP request from 10.0.0.1 for 10.0.0.2.
fn arp() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend([0xff; 6]);
    f.extend(MAC_A);
    f.extend([0x08, 0x06]);
    // htype 1, ptype IPv4, hlen 6, plen 4, request, sender, target.
    f.extend([0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend(MAC_A);
    f.extend([10, 0, 0, 1]);
    f.extend([0; 6]);
    f.extend([10, 0, 0, 2]);
    f
}

// ---------------------------------------------------------------- table

struct Fixture {
    name: &'static str,
    frame: Vec<u8>,
    /// The flow the packet must land in, with its TCP flags byte.
    flow: Option<(FlowKey, u8)>,
    /// Counters besides `PacketsSeen`/`BytesSeen` (always 1 / frame length)
    /// and, for fixtures with a flow, `ParsedOk` and `EventsEmitted` (1 each).
    counters: Vec<(Counter, u64)>,
    /// Source whose Count-Min estimate must grow by exactly one (IP header
    /// read), or `None` when the sketches must not move.
    sketch_src: Option<[u8; 16]>,
}

fn flow_fx(name: &'static str, frame: Vec<u8>, k: FlowKey, flags: u8) -> Fixture {
    Fixture {
        name,
        frame,
        flow: Some((k, flags)),
        counters: vec![],
        sketch_src: Some(k.src),
    }
}

fn bad_fx(name: &'static str, frame: Vec<u8>, c: Counter, src: Option<[u8; 16]>) -> Fixture {
    Fixture {
        name,
        frame,
        flow: None,
        counters: vec![(c, 1)],
        sketch_src: src,
    }
}

// One row per fixture, one line per row: the table reads as a table.
#[rustfmt::skip]
fn table() -> Vec<Fixture> {
    use ipproto::{ICMP, ICMPV6, TCP, UDP};
    const SYN: u8 = tcp_flags::SYN;
    const SYNACK: u8 = tcp_flags::SYN | tcp_flags::ACK;
    const FINACK: u8 = tcp_flags::FIN | tcp_flags::ACK;
    const RST: u8 = tcp_flags::RST;
    const GRE: u8 = 47;
    let m4 = FlowKey::map_v4;
    // The flow of row `n`: host 1 to host 2 of its own /24 (or /48).
    let k4 = |n, sport, dport, proto| key4(v4(n, 1), v4(n, 2), sport, dport, proto);
    let k6 = |n, sport, dport, proto| FlowKey::new(v6(n, 1), v6(n, 2), sport, dport, proto);

    let mut t = vec![
        flow_fx("udp4", udp4(v4(1, 1), v4(1, 2), 40000, 53, 32), k4(1, 40000, 53, UDP), 0),
        flow_fx("tcp4 syn", tcp4(v4(2, 1), v4(2, 2), 40001, 22, SYN), k4(2, 40001, 22, TCP), SYN),
        flow_fx("tcp4 syn-ack", tcp4(v4(3, 2), v4(3, 1), 22, 40001, SYNACK), key4(v4(3, 2), v4(3, 1), 22, 40001, TCP), SYNACK),
        flow_fx("tcp4 fin", tcp4(v4(4, 1), v4(4, 2), 40002, 80, FINACK), k4(4, 40002, 80, TCP), FINACK),
        flow_fx("tcp4 rst", tcp4(v4(5, 1), v4(5, 2), 40003, 80, RST), k4(5, 40003, 80, TCP), RST),
        flow_fx("icmp4 echo", icmp4_echo(v4(6, 1), v4(6, 2)), k4(6, 8, 0, ICMP), 0),
        flow_fx("udp4 one vlan tag", udp4_vlan1(v4(7, 1), v4(7, 2)), k4(7, 5000, 53, UDP), 0),
        flow_fx("udp4 two vlan tags", udp4_vlan2(v4(8, 1), v4(8, 2)), k4(8, 5001, 53, UDP), 0),
        flow_fx("tcp4 with ip options", with_ipv4_options(tcp4(v4(9, 1), v4(9, 2), 40004, 443, SYN), &[1, 1, 1, 0, 1, 1, 1, 0]), k4(9, 40004, 443, TCP), SYN),
        flow_fx("udp4 first fragment", with_ipv4_frag(udp4(v4(10, 1), v4(10, 2), 40005, 4789, 64), true, 0), k4(10, 40005, 4789, UDP), 0),
        flow_fx("udp6", udp6(v6(11, 1), v6(11, 2), 40006, 53), k6(11, 40006, 53, UDP), 0),
        flow_fx("tcp6 syn", tcp6(v6(12, 1), v6(12, 2), 40007, 22, SYN), k6(12, 40007, 22, TCP), SYN),
        flow_fx("icmp6 echo", icmp6_echo(v6(13, 1), v6(13, 2)), k6(13, 128, 0, ICMPV6), 0),
        flow_fx("udp6 behind hop-by-hop, dest-opts, routing, ah, fragment(0)", with_ipv6_ext(udp6(v6(14, 1), v6(14, 2), 40008, 53), &[0, 60, 43, 51, 44], 0), k6(14, 40008, 53, UDP), 0),
        flow_fx("tcp6 behind six extension headers (the walk limit)", with_ipv6_ext(tcp6(v6(15, 1), v6(15, 2), 40009, 443, SYN), &[0, 60, 43, 60, 51, 60], 0), k6(15, 40009, 443, TCP), SYN),
    ];

    // Flows with an extra counter.
    let mut extra = |name, frame, k: FlowKey, c| {
        t.push(Fixture {
            name,
            frame,
            flow: Some((k, 0)),
            counters: vec![(c, 1)],
            sketch_src: Some(k.src),
        });
    };
    extra("udp4 non-first fragment", with_ipv4_frag(udp4(v4(16, 1), v4(16, 2), 40010, 53, 64), false, 185), k4(16, 0, 0, UDP), Counter::NonFirstFragment);
    extra("udp6 non-first fragment", with_ipv6_ext(udp6(v6(17, 1), v6(17, 2), 40011, 53), &[44], 185), k6(17, 0, 0, UDP), Counter::NonFirstFragment);
    let gre = {
        let mut f = udp4(v4(18, 1), v4(18, 2), 1, 2, 16);
        f[ETH_LEN + 9] = GRE;
        f
    };
    extra("gre over ipv4 (other l4)", gre, k4(18, 0, 0, GRE), Counter::OtherL4);
    // An ARP request: a flow sender → target, marked as ARP.
    let arp_key = FlowKey::new(
        FlowKey::map_v4([10, 0, 0, 1]),
        FlowKey::map_v4([10, 0, 0, 2]),
        ipproto::ARP_MARK,
        0,
        ipproto::ARP,
    );
    assert!(arp_key.is_arp());
    extra("arp request", arp(), arp_key, Counter::ArpRequest);

    let three_tags = splice(
        udp4_vlan2(v4(19, 1), v4(19, 2)),
        12,
        &[0x81, 0x00, 0x00, 0x05],
    );
    let udp = udp4(v4(20, 1), v4(20, 2), 40012, 53, 8);
    let tcp = tcp4(v4(21, 1), v4(21, 2), 40013, 80, SYN);
    let tcp_l4 = ETH_LEN + IPV4_LEN;
    t.extend([
        // No "truncated l2" row: BPF_PROG_TEST_RUN rejects frames shorter than
        // an Ethernet header (also behind XDP metadata), so the program's
        // `TruncatedL2` branch cannot be driven from here.
        bad_fx("truncated vlan tag", truncate(udp4_vlan1(v4(22, 1), v4(22, 2)), ETH_LEN + 2), Counter::TruncatedVlan, None),
        bad_fx("three vlan tags", three_tags, Counter::TooManyVlanTags, None),
        // ARP replies, announcements and cut-off ARP: counted, no flow.
        bad_fx("arp reply", set(arp(), ETH_LEN + 7, 2), Counter::ArpOther, None),
        bad_fx("unicast arp request", set(arp(), 0, 0x02), Counter::ArpOther, None),
        bad_fx("arp announcement", arp_announcement(), Counter::ArpOther, None),
        bad_fx("truncated arp", truncate(arp(), ETH_LEN + 20), Counter::ArpOther, None),
        bad_fx("lldp", set(set(arp(), 12, 0x88), 13, 0xcc), Counter::UnknownEthertype, None),
        bad_fx("truncated ipv4", truncate(udp.clone(), ETH_LEN + 10), Counter::TruncatedIpv4, None),
        bad_fx("ipv4 ihl 4", set(udp.clone(), ETH_LEN, 0x44), Counter::BadIpv4Ihl, None),
        bad_fx("ipv4 ihl 15 past the end", truncate(set(udp.clone(), ETH_LEN, 0x4f), ETH_LEN + 40), Counter::BadIpv4Ihl, None),
        bad_fx("ipv4 ethertype with version 6", set(udp.clone(), ETH_LEN, 0x65), Counter::BadIpVersion, None),
        bad_fx("truncated ipv6", truncate(udp6(v6(23, 1), v6(23, 2), 1, 2), ETH_LEN + 30), Counter::TruncatedIpv6, None),
        bad_fx("truncated ipv6 extension header", truncate(with_ipv6_ext(udp6(v6(24, 1), v6(24, 2), 1, 2), &[60], 0), ETH_LEN + IPV6_LEN + 4), Counter::TruncatedExtHeader, Some(v6(24, 1))),
        bad_fx("eight ipv6 extension headers", with_ipv6_ext(udp6(v6(25, 1), v6(25, 2), 1, 2), &[0, 60, 60, 60, 60, 60, 60, 43], 0), Counter::TooManyExtHeaders, Some(v6(25, 1))),
        bad_fx("truncated tcp", truncate(tcp.clone(), tcp_l4 + 10), Counter::TruncatedTcp, Some(m4(v4(21, 1)))),
        bad_fx("tcp data offset 4", set(tcp.clone(), tcp_l4 + 12, 0x40), Counter::BadTcpDataOffset, Some(m4(v4(21, 1)))),
        bad_fx("tcp data offset 15 past the end", set(tcp.clone(), tcp_l4 + 12, 0xf0), Counter::TruncatedTcp, Some(m4(v4(21, 1)))),
        bad_fx("truncated udp", truncate(udp.clone(), tcp_l4 + 6), Counter::TruncatedUdp, Some(m4(v4(20, 1)))),
        bad_fx("truncated icmp", truncate(icmp4_echo(v4(26, 1), v4(26, 2)), tcp_l4 + 4), Counter::TruncatedIcmp, Some(m4(v4(26, 1)))),
        bad_fx("truncated icmp6", truncate(icmp6_echo(v6(27, 1), v6(27, 2)), ETH_LEN + IPV6_LEN + 2), Counter::TruncatedIcmp, Some(v6(27, 1))),
    ]);
    t
}

fn check_stats(name: &str, s: &FlowStats, len: u64, flags: u8) {
    let syn = flags & tcp_flags::SYN != 0;
    let ack = flags & tcp_flags::ACK != 0;
    assert_eq!(s.packets, 1, "{name}: packets");
    assert_eq!(s.bytes, len, "{name}: bytes");
    assert_eq!(s.len_sq_sum, len * len, "{name}: len_sq_sum");
    assert_eq!(
        (s.len_min, s.len_max),
        (len as u16, len as u16),
        "{name}: len min/max"
    );
    assert_eq!(s.syn, u32::from(syn && !ack), "{name}: syn");
    assert_eq!(s.synack, u32::from(syn && ack), "{name}: synack");
    assert_eq!(s.fin, u32::from(flags & tcp_flags::FIN != 0), "{name}: fin");
    assert_eq!(s.rst, u32::from(flags & tcp_flags::RST != 0), "{name}: rst");
    assert_eq!(s.tcp_flags_or, flags, "{name}: tcp_flags_or");
    assert!(s.first_seen_ns > 0, "{name}: first_seen");
    assert_eq!(s.first_seen_ns, s.last_seen_ns, "{name}: one packet");
}

#[test]
fn fixture_table() {
    let cfg = config(1, 64 * 1024);
    let Some(mut sensor) = Sensor::for_root_test("fixture_table", cfg) else {
        return;
    };
    for fx in table() {
        let name = fx.name;
        let before = sensor.counters();
        let flows_before = sensor.flow_count();
        let cms_before = fx.sketch_src.map(|s| sensor.cms_estimate(0, &s));

        assert_eq!(sensor.run(&fx.frame), XDP_PASS, "{name}: verdict");

        let after = sensor.counters();
        let len = fx.frame.len() as u64;
        let mut want = [0u64; COUNTER_COUNT as usize];
        want[Counter::PacketsSeen as usize] = 1;
        want[Counter::BytesSeen as usize] = len;
        if fx.flow.is_some() {
            want[Counter::ParsedOk as usize] = 1;
            want[Counter::EventsEmitted as usize] = 1;
        }
        for (c, n) in &fx.counters {
            want[*c as usize] += n;
        }
        for c in Counter::ALL {
            let i = c as usize;
            assert_eq!(
                after[i] - before[i],
                want[i],
                "{name}: counter {} moved by {} (want {})",
                c.name(),
                after[i] - before[i],
                want[i]
            );
        }

        if let Some((k, flags)) = fx.flow {
            assert_eq!(
                sensor.flow_count(),
                flows_before + 1,
                "{name}: one new flow"
            );
            let s = sensor
                .flow(&k)
                .unwrap_or_else(|| panic!("{name}: flow {k:?} missing"));
            check_stats(name, &s, len, flags);
            let ev = sensor.drain_ring(0);
            assert_eq!(ev.len(), 1, "{name}: one event");
            let want_kind = if flags & tcp_flags::RST != 0 {
                EventKind::Rst
            } else if flags & tcp_flags::FIN != 0 {
                EventKind::Fin
            } else {
                EventKind::Start
            };
            assert_eq!(
                EventKind::from_u32(ev[0].kind),
                Some(want_kind),
                "{name}: kind"
            );
            assert_eq!(ev[0].key, k, "{name}: event key");
            assert_eq!(ev[0].stats, s, "{name}: event stats");
            assert_eq!(u64::from(ev[0].pkt_len), len, "{name}: event pkt_len");
            assert_eq!(ev[0].tcp_flags, flags, "{name}: event flags");
        } else {
            assert_eq!(sensor.flow_count(), flows_before, "{name}: no flow");
            assert!(sensor.drain_ring(0).is_empty(), "{name}: no event");
        }

        if let (Some(src), Some(b)) = (fx.sketch_src, cms_before) {
            let a = sensor.cms_estimate(0, &src);
            assert_eq!(a.0 - b.0, 1, "{name}: cms packets");
            assert_eq!(a.1 - b.1, len, "{name}: cms bytes");
        }
    }
}

#[test]
fn vlan_fields_reach_the_event() {
    let Some(mut sensor) =
        Sensor::for_root_test("vlan_fields_reach_the_event", config(1, 16 * 1024))
    else {
        return;
    };
    sensor.run(&udp4_vlan2(v4(1, 1), v4(1, 2)));
    sensor.run(&udp4(v4(2, 1), v4(2, 2), 1, 2, 8));
    let ev = sensor.drain_ring(0);
    assert_eq!(ev.len(), 2);
    assert_eq!((ev[0].vlan_tagged, ev[0].vlan_id), (1, 200), "outer tag");
    assert_eq!((ev[1].vlan_tagged, ev[1].vlan_id), (0, 0), "untagged");
}

#[test]
fn mirror_mode_drops_after_accounting() {
    let mut cfg = config(1, 16 * 1024);
    cfg.mirror = 1;
    let Some(sensor) = Sensor::for_root_test("mirror_mode_drops_after_accounting", cfg) else {
        return;
    };
    let f = udp4(v4(1, 1), v4(1, 2), 1000, 2000, 10);
    assert_eq!(sensor.run(&f), XDP_DROP);
    assert_eq!(sensor.run(&truncate(f.clone(), 20)), XDP_DROP);
    let c = sensor.counters();
    assert_eq!(c[Counter::MirrorDropped as usize], 2);
    assert_eq!(c[Counter::PacketsSeen as usize], 2);
    assert_eq!(c[Counter::TruncatedIpv4 as usize], 1);
    let s = sensor
        .flow(&key4(v4(1, 1), v4(1, 2), 1000, 2000, ipproto::UDP))
        .expect("flow counted before the drop");
    assert_eq!(s.packets, 1);
}

#[test]
fn checkpoints_go_to_the_flows_ring() {
    use EventKind::{Fin, Rst, Start, Update};
    let n_workers = 4;
    let cfg = config(n_workers, 64 * 1024);
    let Some(mut sensor) = Sensor::for_root_test("checkpoints_go_to_the_flows_ring", cfg) else {
        return;
    };
    let (src, dst) = (v4(1, 1), v4(1, 2));
    let f = udp4(src, dst, 33333, 443, 100);
    let res = sensor.run_prog(XDP_PROGRAM_NAME, &f, 1024);
    assert_eq!(res.return_value, XDP_PASS);
    let ring = flow_ring_index(
        hash_addr(&FlowKey::map_v4(src)),
        hash_addr(&FlowKey::map_v4(dst)),
        33333,
        443,
        ipproto::UDP,
        n_workers,
    ) as usize;
    for i in 0..MAX_WORKERS {
        let ev = sensor.drain_ring(i);
        if i != ring {
            assert!(
                ev.is_empty(),
                "ring {i} must be empty, flow belongs to {ring}"
            );
            continue;
        }
        let kinds: Vec<_> = ev.iter().map(|e| EventKind::from_u32(e.kind)).collect();
        assert_eq!(ev.len(), 11, "1 start + 10 updates: {kinds:?}");
        assert_eq!(kinds[0], Some(EventKind::Start));
        assert!(kinds[1..].iter().all(|k| *k == Some(EventKind::Update)));
        let packets: Vec<u64> = ev.iter().map(|e| e.stats.packets).collect();
        assert_eq!(packets, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]);
        assert!(ev.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    }
    // The reverse direction lands in the same ring.
    sensor.run(&udp4(dst, src, 443, 33333, 100));
    assert_eq!(sensor.drain_ring(ring).len(), 1, "reverse flow's start");
    let c = sensor.counters();
    assert_eq!(c[Counter::EventsEmitted as usize], 12);
    assert_eq!(c[Counter::EventsLost as usize], 0);

    // A TCP connection: SYN starts, FIN and RST report.
    let (a, b) = (v4(2, 1), v4(2, 2));
    let k = key4(a, b, 50000, 22, ipproto::TCP);
    let ring = flow_ring_index(
        hash_addr(&k.src),
        hash_addr(&k.dst),
        k.sport,
        k.dport,
        k.proto,
        n_workers,
    ) as usize;
    for flags in [
        tcp_flags::SYN,
        tcp_flags::ACK,
        tcp_flags::ACK | tcp_flags::PSH,
        tcp_flags::FIN | tcp_flags::ACK,
        tcp_flags::RST,
    ] {
        sensor.run(&tcp4(a, b, 50000, 22, flags));
    }
    let kinds: Vec<_> = sensor
        .drain_ring(ring)
        .iter()
        .map(|e| EventKind::from_u32(e.kind))
        .collect();
    // Packet 2 and 4 are checkpoints; packet 4 carries FIN (FIN wins).
    assert_eq!(kinds, [Some(Start), Some(Update), Some(Fin), Some(Rst)]);
    let s = sensor.flow(&k).expect("tcp flow");
    assert_eq!((s.packets, s.syn, s.fin, s.rst), (5, 1, 1, 1));
    assert_eq!(
        s.tcp_flags_or,
        tcp_flags::SYN | tcp_flags::ACK | tcp_flags::PSH | tcp_flags::FIN | tcp_flags::RST
    );
}

#[test]
fn new_flows_are_sampled_when_the_ring_is_three_quarters_full() {
    let ring_bytes = 4096;
    let cfg = SensorConfig {
        sample_shift: 2,
        ..config(1, ring_bytes)
    };
    let name = "new_flows_are_sampled_when_the_ring_is_three_quarters_full";
    let Some(mut sensor) = Sensor::for_root_test(name, cfg) else {
        return;
    };
    let flows = 400u32;
    let frames: Vec<Vec<u8>> = (0..flows)
        .map(|i| {
            let [_, _, a, b] = i.to_be_bytes();
            udp4([10, 9, a, b], [10, 8, 0, 1], 5353, 53, 8)
        })
        .collect();
    for f in &frames {
        assert_eq!(sensor.run(f), XDP_PASS);
    }
    let c = sensor.counters();
    let emitted = c[Counter::EventsEmitted as usize];
    let sampled = c[Counter::EventsSampledOut as usize];
    let lost = c[Counter::EventsLost as usize];
    assert_eq!(
        emitted + sampled + lost,
        u64::from(flows),
        "every start accounted"
    );
    // Below ¾ the ring takes every start; above, about 3 in 4 are skipped.
    let threshold_records = u64::from(ring_bytes * 3 / 4 / RING_RECORD) + 1;
    let capacity_records = u64::from(ring_bytes / RING_RECORD);
    assert!(
        emitted >= threshold_records && emitted <= capacity_records,
        "{emitted}"
    );
    assert!(sampled > u64::from(flows) / 2, "sampled out {sampled}");
    assert!(sampled < u64::from(flows), "sampled out {sampled}");
    let ev = sensor.drain_ring(0);
    assert_eq!(ev.len() as u64, emitted);
    assert!(ev.iter().all(|e| e.kind == EventKind::Start as u32));

    // The choice is per flow: a fresh instance keeps exactly the same flows.
    let mut again = Sensor::load(ring_bytes, cfg);
    for f in &frames {
        again.run(f);
    }
    let ev2 = again.drain_ring(0);
    let keys = |v: &[FlowEvent]| v.iter().map(|e| e.key).collect::<Vec<_>>();
    assert_eq!(keys(&ev), keys(&ev2), "sampling is deterministic per flow");

    // Drained, the ring takes every start again.
    let before = sensor.counters()[Counter::EventsSampledOut as usize];
    sensor.run(&udp4([10, 7, 0, 1], [10, 8, 0, 1], 1, 2, 8));
    assert_eq!(
        sensor.counters()[Counter::EventsSampledOut as usize],
        before
    );
    assert_eq!(sensor.drain_ring(0).len(), 1);
}

#[test]
fn sketches_see_every_packet() {
    let cfg = SensorConfig {
        epoch: 1,
        ..config(1, 16 * 1024)
    };
    let Some(sensor) = Sensor::for_root_test("sketches_see_every_packet", cfg) else {
        return;
    };
    let heavy = v4(1, 1);
    let f = udp4(heavy, v4(1, 2), 1, 2, 58);
    sensor.run_prog(XDP_PROGRAM_NAME, &f, 100);
    let sources = 300u32;
    for i in 0..sources {
        let [_, _, a, b] = i.to_be_bytes();
        sensor.run(&udp4([10, 200, a, b], v4(1, 2), 1, 2, 8));
    }
    let (pk, by) = sensor.cms_estimate(1, &FlowKey::map_v4(heavy));
    assert!(pk >= 100, "packets estimate {pk}");
    assert!(by >= 100 * f.len() as u64, "bytes estimate {by}");
    // Error bound of the sketch: ε·N with ε = e / 2048, N = 400 packets.
    assert!(pk <= 100 + 2, "packets estimate {pk}");
    assert_eq!(
        sensor.cms_estimate(0, &FlowKey::map_v4(heavy)),
        (0, 0),
        "epoch 0 idle"
    );

    let regs = sensor.hll(1);
    // Exactly the registers the shared geometry defines for these sources.
    let mut want = vec![0u8; HLL_REGISTERS as usize];
    let all = std::iter::once(heavy).chain((0..sources).map(|i| {
        let [_, _, a, b] = i.to_be_bytes();
        [10, 200, a, b]
    }));
    for src in all {
        let (i, rank) = hll_index_rank(hash_addr(&FlowKey::map_v4(src)));
        want[i as usize] = want[i as usize].max(rank);
    }
    assert!(regs == want, "HLL registers differ from hll_index_rank");
    let nonzero = regs.iter().filter(|r| **r != 0).count() as u32;
    assert!(
        (sources * 9 / 10..=sources + 1).contains(&nonzero),
        "{nonzero} registers set for {} sources",
        sources + 1
    );
    // Linear counting (the HLL estimate for small cardinalities).
    let m = f64::from(HLL_REGISTERS);
    let est = m * (m / f64::from(HLL_REGISTERS - nonzero)).ln();
    let truth = f64::from(sources + 1);
    assert!(
        (est - truth).abs() / truth < 0.05,
        "estimate {est} for {truth}"
    );
    assert!(sensor.hll(0).iter().all(|r| *r == 0), "epoch 0 idle");
}

#[test]
fn floor_program_passes() {
    let cfg = config(1, 16 * 1024);
    let Some(sensor) = Sensor::for_root_test("floor_program_passes", cfg) else {
        return;
    };
    let r = sensor.run_prog("sensor_xdp_floor", &arp(), 10);
    assert_eq!(r.return_value, XDP_PASS);
    assert_eq!(sensor.counters()[Counter::PacketsSeen as usize], 0);
}

// ---------------------------------------------------------------- random frames

/// What the parser must make of a generated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Whole through its L4 header: counted in this flow.
    Flow(FlowKey),
    /// Cut inside its headers, or a bad header field: one parse-problem
    /// counter, no flow.
    Problem,
    /// Random bytes or random corruption: only what holds for every frame.
    Any,
}

/// A generated frame and its expectation.
#[derive(Clone, Debug)]
struct RandomFrame {
    bytes: Vec<u8>,
    expect: Expect,
}

/// The parts of a well-formed frame the generator varies.
#[derive(Clone, Debug)]
struct Shape {
    v6: bool,
    /// 0 TCP, 1 UDP, 2 ICMP.
    l4: u8,
    tags: usize,
    /// IPv4 option words (IHL = 5 + this).
    option_words: usize,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    payload: usize,
}

/// The frame of `s`, its flow key and where its headers end (the parser
/// needs every byte before that).
fn build(s: &Shape) -> (Vec<u8>, FlowKey, usize) {
    let mut src4 = [0u8; 4];
    src4.copy_from_slice(&s.src[12..]);
    let mut dst4 = [0u8; 4];
    dst4.copy_from_slice(&s.dst[12..]);
    let tagged = || {
        if s.tags == 1 {
            eth().single_vlan(vlan(100))
        } else {
            eth().double_vlan(vlan(200), vlan(300))
        }
    };
    let payload = vec![0x5a; s.payload];
    let mut out = Vec::new();
    macro_rules! l4 {
        ($ip:expr) => {
            match s.l4 {
                0 => $ip
                    .tcp_header(tcp_hdr(s.sport, s.dport, s.tcp_flags))
                    .write(&mut out, &payload),
                1 => $ip.udp(s.sport, s.dport).write(&mut out, &payload),
                _ if s.v6 => $ip
                    .icmpv6_echo_request(s.sport, s.dport)
                    .write(&mut out, &payload),
                _ => $ip
                    .icmpv4_echo_request(s.sport, s.dport)
                    .write(&mut out, &payload),
            }
        };
    }
    match (s.tags, s.v6) {
        (0, false) => l4!(eth().ipv4(src4, dst4, 64)),
        (0, true) => l4!(eth().ipv6(s.src, s.dst, 64)),
        (_, false) => l4!(tagged().ipv4(src4, dst4, 64)),
        (_, true) => l4!(tagged().ipv6(s.src, s.dst, 64)),
    }
    .expect("frame");
    let l3 = ETH_LEN + 4 * s.tags;
    if !s.v6 && s.option_words > 0 {
        // No-operation options, then IHL and total length to match.
        let opts = vec![1u8; 4 * s.option_words];
        out.splice(l3 + IPV4_LEN..l3 + IPV4_LEN, opts);
        out[l3] = 0x40 | (5 + s.option_words) as u8;
        let tot = u16::from_be_bytes([out[l3 + 2], out[l3 + 3]]) + 4 * s.option_words as u16;
        out[l3 + 2..l3 + 4].copy_from_slice(&tot.to_be_bytes());
    }
    let l4_off = l3
        + if s.v6 {
            IPV6_LEN
        } else {
            IPV4_LEN + 4 * s.option_words
        };
    let (proto, ports, l4_len) = match s.l4 {
        0 => (ipproto::TCP, (s.sport, s.dport), 20),
        1 => (ipproto::UDP, (s.sport, s.dport), 8),
        // ICMP echo: type and code are the flow's "ports".
        _ if s.v6 => (ipproto::ICMPV6, (128, 0), 8),
        _ => (ipproto::ICMP, (8, 0), 8),
    };
    let (src, dst) = if s.v6 {
        (s.src, s.dst)
    } else {
        (FlowKey::map_v4(src4), FlowKey::map_v4(dst4))
    };
    let key = FlowKey::new(src, dst, ports.0, ports.1, proto);
    (out, key, l4_off + l4_len)
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        any::<bool>(),
        0u8..3,
        0usize..3,
        0usize..11,
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<(u16, u16, u8)>(),
        0usize..64,
    )
        .prop_map(
            |(v6, l4, tags, option_words, src, dst, (sport, dport, tcp_flags), payload)| Shape {
                v6,
                l4,
                tags,
                option_words,
                src,
                dst,
                sport,
                dport,
                tcp_flags,
                payload,
            },
        )
}

/// How a well-formed frame is broken, if at all.
#[derive(Clone, Debug)]
enum Damage {
    None,
    /// Cut to `n`‰ of the way through its headers (never below an
    /// Ethernet header, which `BPF_PROG_TEST_RUN` refuses).
    Cut(u16),
    /// IPv4 IHL below 5.
    BadIhl(u8),
    /// IP version nibble that is not the ethertype's.
    BadVersion(u8),
    /// TCP data offset below 5.
    BadDataOffset(u8),
    /// IPv4 fragment with a non-zero offset: a port-less flow.
    LaterFragment(u16),
    /// `k` random bytes overwritten.
    Flip(Vec<(usize, u8)>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        2 => Just(Damage::None),
        3 => (0u16..1000).prop_map(Damage::Cut),
        1 => (0u8..5).prop_map(Damage::BadIhl),
        1 => (0u8..16).prop_map(Damage::BadVersion),
        1 => (0u8..5).prop_map(Damage::BadDataOffset),
        1 => (1u16..0x2000).prop_map(Damage::LaterFragment),
        2 => prop::collection::vec((any::<usize>(), any::<u8>()), 1..6).prop_map(Damage::Flip),
    ]
}

fn structured() -> impl Strategy<Value = RandomFrame> {
    (shape(), damage()).prop_map(|(s, d)| {
        let (mut f, key, headers) = build(&s);
        let l3 = ETH_LEN + 4 * s.tags;
        let l4 = headers - if s.l4 == 0 { 20 } else { 8 };
        let expect = match d {
            Damage::Cut(n) => {
                let cut = ETH_LEN + (headers - ETH_LEN) * usize::from(n) / 1000;
                f.truncate(cut);
                Expect::Problem
            }
            Damage::BadIhl(ihl) if !s.v6 => {
                f[l3] = 0x40 | ihl;
                Expect::Problem
            }
            Damage::BadVersion(v) if v != if s.v6 { 6 } else { 4 } => {
                f[l3] = (v << 4) | (f[l3] & 0x0f);
                Expect::Problem
            }
            Damage::BadDataOffset(doff) if s.l4 == 0 => {
                f[l4 + 12] = doff << 4;
                Expect::Problem
            }
            Damage::LaterFragment(off) if !s.v6 => {
                f[l3 + 6..l3 + 8].copy_from_slice(&off.to_be_bytes());
                Expect::Flow(FlowKey::new(key.src, key.dst, 0, 0, key.proto))
            }
            Damage::Flip(flips) => {
                let n = f.len();
                for (at, v) in flips {
                    f[at % n] = v;
                }
                Expect::Any
            }
            // No damage, or one that does not apply to this shape: whole.
            _ => Expect::Flow(key),
        };
        RandomFrame { bytes: f, expect }
    })
}

fn unstructured() -> impl Strategy<Value = RandomFrame> {
    // Random bytes, often behind an IP or VLAN ethertype so the parser
    // gets past Ethernet.
    let ethertype = prop_oneof![
        Just([0x08u8, 0x00]),
        Just([0x86, 0xdd]),
        Just([0x81, 0x00]),
        Just([0x88, 0xa8]),
        any::<[u8; 2]>(),
    ];
    (ethertype, prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(et, rest)| {
        let mut f = Vec::with_capacity(ETH_LEN + rest.len());
        f.extend(MAC_B);
        f.extend(MAC_A);
        f.extend(et);
        f.extend(rest);
        RandomFrame {
            bytes: f,
            expect: Expect::Any,
        }
    })
}

/// Runs `frame` and checks what holds for every frame, and what its
/// expectation adds.
fn check_random_frame(
    sensor: &mut Sensor,
    frame: &RandomFrame,
    verdict: u32,
) -> Result<(), TestCaseError> {
    let f = &frame.bytes;
    let before = sensor.counters();
    let flows_before = sensor.flow_count();
    prop_assert_eq!(sensor.run(f), verdict, "verdict");
    let after = sensor.counters();
    let moved = |c: Counter| after[c as usize] - before[c as usize];
    prop_assert_eq!(moved(Counter::PacketsSeen), 1, "packets_seen");
    prop_assert_eq!(moved(Counter::BytesSeen), f.len() as u64, "bytes_seen");
    prop_assert_eq!(moved(Counter::InternalError), 0, "internal_error");
    prop_assert_eq!(moved(Counter::FlowInsertFailed), 0, "flow_insert_failed");
    let problems: u64 = Counter::ALL
        .into_iter()
        .filter(|c| c.is_parse_problem())
        .map(moved)
        .sum();
    let parsed = moved(Counter::ParsedOk);
    prop_assert_eq!(
        parsed + problems + moved(Counter::UnknownEthertype) + moved(Counter::ArpOther),
        1,
        "every frame has exactly one outcome: parsed {}, problems {}",
        parsed,
        problems
    );
    prop_assert!(
        moved(Counter::NonFirstFragment) + moved(Counter::OtherL4) + moved(Counter::ArpRequest)
            <= parsed,
        "notes only on parsed frames"
    );
    let flows_after = sensor.flow_count();
    prop_assert!(
        flows_after - flows_before <= parsed as usize,
        "a flow entry for a frame that did not parse"
    );
    prop_assert_eq!(
        moved(Counter::MirrorDropped),
        u64::from(verdict == XDP_DROP),
        "mirror_dropped"
    );
    match frame.expect {
        Expect::Flow(key) => {
            prop_assert_eq!(parsed, 1, "a well-formed frame parses");
            prop_assert!(sensor.flow(&key).is_some(), "flow {:?} missing", key);
        }
        Expect::Problem => {
            prop_assert_eq!(problems, 1, "a broken frame is a parse problem");
            prop_assert_eq!(flows_after, flows_before, "no flow for a broken frame");
        }
        Expect::Any => {}
    }
    // Keep the ring empty: every frame then has room for its event.
    sensor.drain_ring(0);
    Ok(())
}

/// Random frames through the real program: runs `cases` of `strategy`,
/// failing with the (shrunk) frame.
fn random_frames(
    test: &str,
    mirror: bool,
    cases: u32,
    strategy: impl Strategy<Value = RandomFrame>,
) {
    let mut cfg = config(1, 64 * 1024);
    cfg.mirror = u32::from(mirror);
    let Some(sensor) = Sensor::for_root_test(test, cfg) else {
        return;
    };
    let verdict = if mirror { XDP_DROP } else { XDP_PASS };
    let sensor = std::cell::RefCell::new(sensor);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        // Shrinking reruns the program; a few hundred steps find a small frame.
        max_shrink_iters: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&strategy, |frame| {
        check_random_frame(&mut sensor.borrow_mut(), &frame, verdict)
    });
    if let Err(e) = result {
        panic!("{test}: {e}");
    }
}

#[test]
fn random_structured_frames_keep_the_invariants() {
    random_frames(
        "random_structured_frames_keep_the_invariants",
        false,
        600,
        structured(),
    );
}

#[test]
fn random_bytes_keep_the_invariants() {
    random_frames(
        "random_bytes_keep_the_invariants",
        false,
        400,
        unstructured(),
    );
}

#[test]
fn random_frames_in_mirror_mode_are_dropped_and_counted() {
    random_frames(
        "random_frames_in_mirror_mode_are_dropped_and_counted",
        true,
        200,
        prop_oneof![structured(), unstructured()],
    );
}
