//! The project's traffic generator: raw Ethernet frames written to an
//! interface through an `AF_PACKET` socket, in `sendmmsg` batches, with the
//! exact ground truth of what was sent.
//!
//! Frames are built once, up front, into one contiguous buffer (a
//! [`FrameBuf`], so sending allocates nothing), with `etherparse` computing
//! every checksum. A plan ([`Frames::spread`], [`Frames::syn_flood`],
//! [`Frames::port_scan`], or [`Frames::push`] frame by frame) fills the
//! buffer; a [`Sender`] opened inside a namespace sends it, paced and
//! bounded; [`Frames::truth`] gives per-flow packets, bytes and TCP flag
//! counts of the frames actually sent.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use etherparse::{
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel, Ipv6Header,
    PacketBuilder, TcpHeader, VlanId,
};

use crate::error::{LabError, Result};
use crate::netns::Netns;

use sensor_common::ipproto as proto;
/// TCP flag bits, as the sensor counts them.
pub use sensor_common::tcp_flags as tcp;

/// A unidirectional flow as the sensor keys it. For ICMP/ICMPv6, `sport` is
/// the type and `dport` the code (an echo request: 8/0, or 128/0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl From<&sensor_common::records::FlowRecord> for FlowTuple {
    /// The tuple of a flow the sensor wrote (`--flows-out`), to compare
    /// with what was generated.
    fn from(f: &sensor_common::records::FlowRecord) -> Self {
        Self {
            src: f.src,
            dst: f.dst,
            sport: f.sport,
            dport: f.dport,
            proto: f.proto,
        }
    }
}

/// A flow to generate: its tuple and an optional 802.1Q VLAN id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    pub tuple: FlowTuple,
    pub vlan: Option<u16>,
}

impl FlowSpec {
    /// A TCP flow.
    #[must_use]
    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Self::l4(src, dst, sport, dport, proto::TCP)
    }

    /// A UDP flow.
    #[must_use]
    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Self::l4(src, dst, sport, dport, proto::UDP)
    }

    /// An ICMP (IPv4) or `ICMPv6` (IPv6) echo-request flow.
    #[must_use]
    pub fn echo(src: IpAddr, dst: IpAddr) -> Self {
        if src.is_ipv4() {
            Self::l4(src, dst, 8, 0, proto::ICMP)
        } else {
            Self::l4(src, dst, 128, 0, proto::ICMPV6)
        }
    }

    fn l4(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8) -> Self {
        Self {
            tuple: FlowTuple {
                src,
                dst,
                sport,
                dport,
                proto,
            },
            vlan: None,
        }
    }

    /// The same flow carried in an 802.1Q tag.
    #[must_use]
    pub fn with_vlan(mut self, id: u16) -> Self {
        self.vlan = Some(id);
        self
    }
}

/// What the sensor must report for one flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTruth {
    pub packets: u64,
    /// Sum of frame lengths (Ethernet header and VLAN tag included).
    pub bytes: u64,
    /// Segments with SYN and without ACK.
    pub syn: u64,
    /// Segments with SYN and ACK.
    pub synack: u64,
    pub fin: u64,
    pub rst: u64,
    pub len_min: u64,
    pub len_max: u64,
}

/// Ground truth of a sent frame sequence.
#[derive(Clone, Debug, Default)]
pub struct Truth {
    pub flows: BTreeMap<FlowTuple, FlowTruth>,
    pub packets: u64,
    pub bytes: u64,
}

impl Truth {
    /// Packets and bytes per source address.
    #[must_use]
    pub fn sources(&self) -> BTreeMap<IpAddr, (u64, u64)> {
        let mut m: BTreeMap<IpAddr, (u64, u64)> = BTreeMap::new();
        for (t, f) in &self.flows {
            let e = m.entry(t.src).or_default();
            e.0 += f.packets;
            e.1 += f.bytes;
        }
        m
    }
}

/// Frames packed one after another in one buffer, so sending or replaying
/// them allocates nothing per frame.
#[derive(Clone, Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
    /// Start and length of each frame in `buf`.
    spans: Vec<(usize, u32)>,
}

impl FrameBuf {
    /// Appends a frame (one longer than 4 GiB is cut to that length).
    pub fn push(&mut self, frame: &[u8]) {
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        self.spans.push((self.buf.len(), len));
        self.buf.extend_from_slice(&frame[..len as usize]);
    }

    /// Appends every frame of `other`.
    pub fn extend(&mut self, other: &FrameBuf) {
        let off = self.buf.len();
        self.buf.extend_from_slice(&other.buf);
        self.spans
            .extend(other.spans.iter().map(|&(start, len)| (start + off, len)));
    }

    /// Number of frames.
    #[must_use]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are no frames.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `i`-th frame's bytes.
    #[must_use]
    pub fn frame(&self, i: usize) -> &[u8] {
        let (start, len) = self.spans[i];
        &self.buf[start..start + len as usize]
    }
}

/// What the ground truth needs of a generated frame besides its length.
#[derive(Clone, Copy, Debug)]
struct FrameMeta {
    flow: u32,
    tcp_flags: u8,
}

/// A sequence of ready-to-send frames plus the flow each belongs to (the
/// frames themselves are a [`FrameBuf`]).
#[derive(Clone, Debug)]
pub struct Frames {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    buf: FrameBuf,
    meta: Vec<FrameMeta>,
    flows: Vec<FlowSpec>,
    /// Reused per frame while building, never while sending.
    scratch: Vec<u8>,
}

impl std::ops::Deref for Frames {
    type Target = FrameBuf;

    fn deref(&self) -> &FrameBuf {
        &self.buf
    }
}

/// TCP flags of the `j`-th packet of a flow in [`Frames::spread`]: every
/// kind the sensor counts appears, in a fixed cycle.
#[must_use]
pub const fn spread_tcp_flags(j: u64) -> u8 {
    match j % 7 {
        0 => tcp::SYN,
        1 => tcp::SYN | tcp::ACK,
        2 | 6 => tcp::ACK,
        3 => tcp::PSH | tcp::ACK,
        4 => tcp::FIN | tcp::ACK,
        _ => tcp::RST,
    }
}

/// Payload length of the `j`-th packet of a flow in [`Frames::spread`]:
/// varies so byte counts and length statistics are non-trivial.
#[must_use]
pub const fn spread_payload_len(j: u64) -> usize {
    ((j * 37) % 211) as usize
}

impl Frames {
    /// An empty sequence of frames from `src_mac` to `dst_mac`.
    #[must_use]
    pub fn new(src_mac: [u8; 6], dst_mac: [u8; 6]) -> Self {
        Self {
            src_mac,
            dst_mac,
            buf: FrameBuf::default(),
            meta: Vec::new(),
            flows: Vec::new(),
            scratch: Vec::with_capacity(2048),
        }
    }

    /// Registers a flow; returns its index for [`Frames::push`].
    pub fn add_flow(&mut self, spec: FlowSpec) -> u32 {
        self.flows.push(spec);
        u32::try_from(self.flows.len() - 1).expect("fewer than 2^32 flows")
    }

    /// Appends one frame of flow `flow`. `tcp_flags` is used for TCP flows
    /// only; `seq` becomes the TCP sequence number or the ICMP sequence.
    ///
    /// # Errors
    /// The frame cannot be built (payload too large, mixed address families).
    ///
    /// # Panics
    /// `flow` was not returned by [`Frames::add_flow`].
    pub fn push(&mut self, flow: u32, tcp_flags: u8, payload_len: usize, seq: u32) -> Result<()> {
        let spec = self.flows[flow as usize];
        let t = spec.tuple;
        let frame_err = |reason: String| LabError::Frame { reason };
        let ip = match (t.src, t.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => IpHeaders::Ipv4(
                Ipv4Header::new(0, 64, IpNumber(t.proto), s.octets(), d.octets())
                    .map_err(|e| frame_err(e.to_string()))?,
                Ipv4Extensions::default(),
            ),
            (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
                Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: 0,
                    next_header: IpNumber(t.proto),
                    hop_limit: 64,
                    source: s.octets(),
                    destination: d.octets(),
                },
                Ipv6Extensions::default(),
            ),
            _ => return Err(frame_err(format!("mixed address families in {t:?}"))),
        };
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let ip_step = match spec.vlan {
            Some(id) => eth
                .single_vlan(VlanId::try_new(id).map_err(|e| frame_err(e.to_string()))?)
                .ip(ip),
            None => eth.ip(ip),
        };
        // Deterministic, non-zero payload bytes.
        let payload: Vec<u8> = (0..payload_len).map(|i| (i as u8) ^ 0x5a).collect();
        self.scratch.clear();
        let written = match t.proto {
            proto::TCP => {
                let mut h = TcpHeader::new(t.sport, t.dport, seq, 64_240);
                h.fin = tcp_flags & tcp::FIN != 0;
                h.syn = tcp_flags & tcp::SYN != 0;
                h.rst = tcp_flags & tcp::RST != 0;
                h.psh = tcp_flags & tcp::PSH != 0;
                h.ack = tcp_flags & tcp::ACK != 0;
                if h.ack {
                    h.acknowledgment_number = seq.wrapping_mul(7) | 1;
                }
                ip_step.tcp_header(h).write(&mut self.scratch, &payload)
            }
            proto::UDP => ip_step
                .udp(t.sport, t.dport)
                .write(&mut self.scratch, &payload),
            proto::ICMP => ip_step
                .icmpv4_echo_request(t.sport ^ t.dport ^ 0x1234, seq as u16)
                .write(&mut self.scratch, &payload),
            proto::ICMPV6 => ip_step
                .icmpv6_echo_request(0x1234, seq as u16)
                .write(&mut self.scratch, &payload),
            other => return Err(frame_err(format!("protocol {other} not supported"))),
        };
        written.map_err(|e| frame_err(e.to_string()))?;
        self.meta.push(FrameMeta {
            flow,
            tcp_flags: if t.proto == proto::TCP { tcp_flags } else { 0 },
        });
        self.buf.push(&self.scratch);
        Ok(())
    }

    /// A plan: `flows` registered in order, then one frame per
    /// `(flow index, TCP flags, payload length, sequence number)`.
    fn planned(
        mut self,
        flows: impl IntoIterator<Item = FlowSpec>,
        frames: impl IntoIterator<Item = (u32, u8, usize, u32)>,
    ) -> Result<Self> {
        for spec in flows {
            self.add_flow(spec);
        }
        for (flow, tcp_flags, payload_len, seq) in frames {
            self.push(flow, tcp_flags, payload_len, seq)?;
        }
        Ok(self)
    }

    /// Plan "K packets spread over F flows": flow `i` gets `k / F` packets,
    /// plus one if `i < k % F`, interleaved round-robin. TCP packets cycle
    /// through [`spread_tcp_flags`]; payload lengths follow
    /// [`spread_payload_len`].
    ///
    /// # Errors
    /// A frame cannot be built.
    pub fn spread(src_mac: [u8; 6], dst_mac: [u8; 6], flows: &[FlowSpec], k: u64) -> Result<Self> {
        let n = flows.len() as u64;
        let k = if n == 0 { 0 } else { k };
        Self::new(src_mac, dst_mac).planned(
            flows.iter().copied(),
            (0..k).map(|p| {
                let (i, j) = (p % n, p / n);
                (
                    i as u32,
                    spread_tcp_flags(j),
                    spread_payload_len(j),
                    j as u32,
                )
            }),
        )
    }

    /// SYN flood: `packets` SYNs to `dst:dport` from `sources` spoofed IPv4
    /// sources (`spoofed_source(i)`), round-robin, each with its own port.
    ///
    /// # Errors
    /// A frame cannot be built.
    pub fn syn_flood(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        sources: u32,
        dst: IpAddr,
        dport: u16,
        packets: u64,
    ) -> Result<Self> {
        let sources = sources.max(1);
        let sport = |i: u32| 1024 + (i % 60_000) as u16;
        Self::new(src_mac, dst_mac).planned(
            (0..sources).map(|i| FlowSpec::tcp(spoofed_source(i), dst, sport(i), dport)),
            (0..packets).map(|p| ((p % u64::from(sources)) as u32, tcp::SYN, 0, p as u32)),
        )
    }

    /// TCP SYN port scan: one SYN from `src:sport` to each port of `ports`.
    ///
    /// # Errors
    /// A frame cannot be built.
    pub fn port_scan(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: IpAddr,
        dst: IpAddr,
        ports: std::ops::RangeInclusive<u16>,
    ) -> Result<Self> {
        Self::new(src_mac, dst_mac).planned(
            ports
                .clone()
                .map(|port| FlowSpec::tcp(src, dst, 40_000, port)),
            ports
                .zip(0..)
                .map(|(port, id)| (id, tcp::SYN, 0, u32::from(port))),
        )
    }

    /// Appends all frames of `other` (which must use the same MACs).
    pub fn extend(&mut self, other: &Frames) {
        let base = u32::try_from(self.flows.len()).expect("fewer than 2^32 flows");
        self.flows.extend_from_slice(&other.flows);
        self.buf.extend(&other.buf);
        self.meta.extend(other.meta.iter().map(|m| FrameMeta {
            flow: m.flow + base,
            ..*m
        }));
    }

    /// Ground truth of the first `sent` frames.
    #[must_use]
    pub fn truth(&self, sent: usize) -> Truth {
        let mut t = Truth::default();
        for (i, m) in self.meta[..sent.min(self.meta.len())].iter().enumerate() {
            let len = self.frame(i).len() as u64;
            let f = t
                .flows
                .entry(self.flows[m.flow as usize].tuple)
                .or_default();
            f.len_min = if f.packets == 0 {
                len
            } else {
                f.len_min.min(len)
            };
            f.len_max = f.len_max.max(len);
            f.packets += 1;
            f.bytes += len;
            let syn = m.tcp_flags & tcp::SYN != 0;
            let ack = m.tcp_flags & tcp::ACK != 0;
            f.syn += u64::from(syn && !ack);
            f.synack += u64::from(syn && ack);
            f.fin += u64::from(m.tcp_flags & tcp::FIN != 0);
            f.rst += u64::from(m.tcp_flags & tcp::RST != 0);
            t.packets += 1;
            t.bytes += len;
        }
        t
    }
}

/// The `i`-th spoofed IPv4 source: walks 100.64.0.0/10 (shared address
/// space, never routed on the internet) skipping .0 and .255 host bytes.
#[must_use]
pub fn spoofed_source(i: u32) -> IpAddr {
    let host = i % 254 + 1;
    let net = i / 254;
    let v = (100u32 << 24) | (64 << 16) | ((net & 0x3fff) << 8) | host;
    IpAddr::V4(Ipv4Addr::from(v))
}

/// Sends `packets` frames spread over `flows` [`mixed_flows`] from the lab's
/// sender to its gateway, unpaced, then gives a sensor there 200 ms to read
/// them. Returns what was sent (the caller checks it was all).
///
/// # Errors
/// The frames cannot be built or the sender cannot open or send.
pub fn send_mixed(lab: &crate::Lab, flows: u32, packets: u64) -> Result<SendReport> {
    let frames = Frames::spread(
        lab.sender_mac,
        lab.gateway_mac,
        &mixed_flows(flows),
        packets,
    )?;
    let report = Sender::open(&lab.sender, &lab.link.a)?.send(&frames, Pacing::default())?;
    std::thread::sleep(Duration::from_millis(200));
    Ok(report)
}

/// A varied set of `n` flows: IPv4 and IPv6; TCP, UDP and ICMP; every third
/// one 802.1Q-tagged. All tuples are distinct.
#[must_use]
pub fn mixed_flows(n: u32) -> Vec<FlowSpec> {
    (0..n)
        .map(|i| {
            let v6 = i % 2 == 1;
            let (src, dst): (IpAddr, IpAddr) = if v6 {
                (
                    IpAddr::V6(Ipv6Addr::new(
                        0xfd00,
                        0x5e,
                        0,
                        0,
                        0,
                        0,
                        1,
                        (i % 65_000) as u16 + 1,
                    )),
                    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x5e, 0, 0, 0, 0, 2, 1)),
                )
            } else {
                (
                    IpAddr::V4(Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250) as u8 + 1)),
                    IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1)),
                )
            };
            let sport = 20_000 + (i % 40_000) as u16;
            let spec = match i % 5 {
                0 | 3 => FlowSpec::tcp(src, dst, sport, 443),
                1 | 4 => FlowSpec::udp(src, dst, sport, 53),
                _ => FlowSpec::echo(src, dst),
            };
            if i % 3 == 2 {
                spec.with_vlan(100 + (i % 7) as u16)
            } else {
                spec
            }
        })
        .collect()
}

/// How fast and how long to send.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// Target packets per second; `None` sends as fast as possible.
    pub pps: Option<u64>,
    /// Stop after this long even if frames remain.
    pub time_limit: Duration,
    /// Frames per `sendmmsg` call.
    pub batch: usize,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            pps: None,
            time_limit: Duration::from_secs(10),
            batch: 64,
        }
    }
}

impl Pacing {
    /// `pps` packets per second, otherwise the defaults.
    #[must_use]
    pub fn paced(pps: u64) -> Self {
        Self {
            pps: Some(pps),
            ..Self::default()
        }
    }
}

/// What a send did.
#[derive(Clone, Copy, Debug)]
pub struct SendReport {
    /// Frames accepted by the kernel (a prefix of the sequence).
    pub sent: usize,
    pub elapsed: Duration,
    /// Times the kernel pushed back (`ENOBUFS`/`EAGAIN`) and a batch was retried.
    pub retries: u64,
}

impl SendReport {
    /// Achieved rate in packets per second.
    #[must_use]
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn sockaddr_ll(ifindex: u32, protocol: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = protocol.to_be();
    sa.sll_ifindex = ifindex as i32;
    sa
}

/// A send-only `AF_PACKET` socket on `ifname` inside `ns` with a large send
/// buffer, so whole batches queue without blocking.
pub(crate) fn send_socket(ns: &Netns, ifname: &str) -> Result<OwnedFd> {
    let fd = packet_socket(ns, ifname, 0)?;
    set_socket_option(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        &(4 << 20),
        "SO_SNDBUF",
    )?;
    Ok(fd)
}

/// Opens an `AF_PACKET` raw socket inside `ns`, bound to `ifname` for
/// `protocol` (host byte order; 0: send only, receives nothing).
pub(crate) fn packet_socket(ns: &Netns, ifname: &str, protocol: u16) -> Result<OwnedFd> {
    let ifindex = ns.ifindex(ifname)?;
    let fd = ns.run_in(|| {
        // SAFETY: plain socket(2); protocol 0 so nothing is received before
        // the bind below selects the interface.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(LabError::last_os("socket(AF_PACKET)"));
        }
        // SAFETY: raw is a fresh fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    })??;
    let sa = sockaddr_ll(ifindex, protocol);
    // SAFETY: sa is a valid sockaddr_ll of the given size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(LabError::last_os(format!("bind(AF_PACKET, {ifname})")));
    }
    Ok(fd)
}

/// Sets socket option `level`/`name` (`what` names it in the error) to
/// `value`, whose type is the one the option takes.
pub(crate) fn set_socket_option<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
    what: &str,
) -> Result<()> {
    // SAFETY: `value` is a valid `T` for the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(LabError::last_os(format!("setsockopt({what})")))
    }
}

/// Sends frames out of one interface of a namespace.
#[derive(Debug)]
pub struct Sender {
    fd: OwnedFd,
}

impl Sender {
    /// Opens a raw packet socket on `ifname` inside `ns`.
    ///
    /// # Errors
    /// Not root, or the interface does not exist.
    pub fn open(ns: &Netns, ifname: &str) -> Result<Self> {
        Ok(Self {
            fd: send_socket(ns, ifname)?,
        })
    }

    /// Sends `frames` in order, at most `pacing.pps` per second, stopping at
    /// `pacing.time_limit`. Kernel push-back is retried, so every frame
    /// counted in `sent` left through the interface.
    ///
    /// # Errors
    /// `sendmmsg` fails for a reason other than push-back.
    pub fn send(&self, frames: &Frames, pacing: Pacing) -> Result<SendReport> {
        let batch = pacing.batch.clamp(1, 1024);
        // SAFETY: iovec and mmsghdr are plain data; zero is valid.
        let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; batch];
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; batch];
        let start = Instant::now();
        let mut sent = 0usize;
        let mut retries = 0u64;
        while sent < frames.len() {
            let elapsed = start.elapsed();
            if elapsed >= pacing.time_limit {
                break;
            }
            if let Some(pps) = pacing.pps {
                let due = Duration::from_secs_f64(sent as f64 / pps.max(1) as f64);
                let wait = due.saturating_sub(elapsed);
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
            }
            let n = batch.min(frames.len() - sent);
            for i in 0..n {
                let frame = frames.frame(sent + i);
                iov[i] = libc::iovec {
                    iov_base: frame.as_ptr().cast_mut().cast(),
                    iov_len: frame.len(),
                };
                msgs[i].msg_hdr.msg_iov = &raw mut iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: msgs[..n] point at iovecs into `frames`' buffer, which
            // outlives the call; the socket is bound, so no address is needed.
            let rc = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if rc < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => {
                        retries += 1;
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    _ => {
                        return Err(LabError::Sys {
                            call: "sendmmsg(AF_PACKET)".into(),
                            source: err,
                        });
                    }
                }
            } else {
                sent += rc as usize;
            }
        }
        Ok(SendReport {
            sent,
            elapsed: start.elapsed(),
            retries,
        })
    }
}

/// Counts frames an interface delivers to the stack (after XDP), via an
/// `AF_PACKET` socket's kernel statistics: frames the XDP program dropped
/// never reach it.
#[derive(Debug)]
pub struct PacketCounter {
    fd: OwnedFd,
    total: u64,
}

impl PacketCounter {
    /// Starts counting frames received on `ifname` inside `ns` (outgoing
    /// frames are ignored).
    ///
    /// # Errors
    /// Not root, or the interface does not exist.
    pub fn open(ns: &Netns, ifname: &str) -> Result<Self> {
        let fd = packet_socket(ns, ifname, libc::ETH_P_ALL as u16)?;
        set_socket_option(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &1i32,
            "PACKET_IGNORE_OUTGOING",
        )?;
        Ok(Self { fd, total: 0 })
    }

    /// Frames received since [`PacketCounter::open`] (including any the
    /// socket buffer had to drop: the kernel counts both).
    ///
    /// # Errors
    /// `getsockopt(PACKET_STATISTICS)` fails.
    pub fn received(&mut self) -> Result<u64> {
        // SAFETY: tpacket_stats is plain data.
        let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::tpacket_stats>() as u32;
        // SAFETY: st/len describe a valid buffer; reading resets the kernel's
        // counters, so they are accumulated here.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(LabError::last_os("getsockopt(PACKET_STATISTICS)"));
        }
        self.total += u64::from(st.tp_packets);
        Ok(self.total)
    }
}

#[cfg(test)]
mod tests;
