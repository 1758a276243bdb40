//! Replays real captures (pcap and pcapng) into a lab interface through
//! `AF_PACKET`, paced by the capture's own timestamps.
//!
//! The lab sends Ethernet frames over a veth, so captures of another link
//! type get an Ethernet header when read: raw IP (link types 101, 228, 229;
//! the Ethernet type follows the IP version) and Linux cooked captures (SLL,
//! 113; the Ethernet type is its protocol field, the source MAC its link
//! address when that is 6 bytes long). The synthesized addresses are
//! locally administered (`02:00:00:00:00:01` → `02:00:00:00:00:02`). Any
//! other link type is refused.
//!
//! A [`Capture`] is read whole into one buffer up front, so replaying
//! allocates nothing per frame. [`Replayer::replay`] sends each frame at
//! `(ts - ts_first) / speed` after the start, bounded by a packet and a time
//! limit. Timestamps that go backwards are clamped to the previous one
//! (sent at once, never slept negatively). Idle gaps longer than
//! [`ReplayOptions::max_gap`] can be shortened to that gap, so a long,
//! mostly idle capture is replayed whole within the time limit (the limit
//! applies to the shortened timeline). Frames larger than the
//! interface's MTU allows, or shorter than an Ethernet header, are counted
//! and skipped, never silently dropped.
//!
//! An [`AttackRule`] says which frames are the attack (the labels of
//! `tests/data/pcaps/MANIFEST.tsv`); the replay records the `CLOCK_MONOTONIC`
//! time of the first frame and of the first attack frame it sent, the
//! reference for detection latency.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use etherparse::{NetSlice, SlicedPacket};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};

use sensor_common::clock::monotonic_ns;

use crate::error::{LabError, Result};
use crate::generator::FrameBuf;
use crate::netns::Netns;

/// Length of an Ethernet header without VLAN tags.
const ETH_HLEN: usize = 14;
/// Frames handed to one `sendmmsg` call at most (all of them already due).
const MAX_BATCH: usize = 64;
/// A frame due less than this far ahead is sent now rather than slept for:
/// `nanosleep` overshoots by tens of microseconds anyway.
const SLEEP_SLACK: Duration = Duration::from_micros(50);

/// A capture read into memory: Ethernet frames (a [`FrameBuf`]) and their
/// timestamps.
#[derive(Clone, Debug)]
pub struct Capture {
    path: PathBuf,
    frames: FrameBuf,
    /// Capture timestamp of each frame, ns since the Unix epoch, as
    /// recorded (may go backwards).
    ts_ns: Vec<u64>,
}

impl std::ops::Deref for Capture {
    type Target = FrameBuf;

    fn deref(&self) -> &FrameBuf {
        &self.frames
    }
}

/// Source and destination MAC of a synthesized Ethernet header.
const SYNTH_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SYNTH_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Length of a Linux cooked capture (SLL) header.
const SLL_HLEN: usize = 16;

/// How frames of a capture's link type become Ethernet frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Ethernet,
    /// An IPv4 or IPv6 packet without link header.
    RawIp,
    /// Linux cooked capture v1.
    LinuxSll,
}

impl Framing {
    fn of(link: DataLink) -> Option<Self> {
        match link {
            DataLink::ETHERNET => Some(Self::Ethernet),
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Some(Self::RawIp),
            DataLink::LINUX_SLL => Some(Self::LinuxSll),
            _ => None,
        }
    }

    /// Appends `data` as an Ethernet frame to `out` (cleared first).
    fn frame(self, data: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
        out.clear();
        let (src, ethertype, payload) = match self {
            Self::Ethernet => {
                out.extend_from_slice(data);
                return Ok(());
            }
            Self::RawIp => {
                let ethertype: u16 = match data.first().map(|b| b >> 4) {
                    Some(4) => 0x0800,
                    Some(6) => 0x86dd,
                    v => return Err(format!("raw IP packet with IP version {v:?}")),
                };
                (SYNTH_SRC_MAC, ethertype, data)
            }
            Self::LinuxSll => {
                if data.len() < SLL_HLEN {
                    return Err(format!(
                        "{} bytes, shorter than a Linux cooked header",
                        data.len()
                    ));
                }
                let addr_len = usize::from(u16::from_be_bytes([data[4], data[5]]));
                let src = if addr_len == 6 {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(&data[6..12]);
                    m
                } else {
                    SYNTH_SRC_MAC
                };
                (
                    src,
                    u16::from_be_bytes([data[14], data[15]]),
                    &data[SLL_HLEN..],
                )
            }
        };
        out.extend_from_slice(&SYNTH_DST_MAC);
        out.extend_from_slice(&src);
        out.extend_from_slice(&ethertype.to_be_bytes());
        out.extend_from_slice(payload);
        Ok(())
    }
}

fn capture_error(path: &Path, reason: impl Into<String>) -> LabError {
    LabError::Capture {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// pcapng timestamp units per second from an `if_tsresol` option value:
/// bit 7 clear is a power of ten, set a power of two (default 10^6).
fn tsresol_units(v: u8) -> Option<u128> {
    let exp = u32::from(v & 0x7f);
    if v & 0x80 == 0 {
        10u128.checked_pow(exp)
    } else {
        2u128.checked_pow(exp)
    }
}

impl Capture {
    /// Reads a pcap (either byte order, µs or ns timestamps) or pcapng file,
    /// told apart by their magic number, not the file name; frames of raw IP
    /// and Linux cooked captures get an Ethernet header (see the module
    /// documentation).
    ///
    /// # Errors
    /// The file cannot be read, is neither format, is malformed, or has an
    /// interface whose link type is none of Ethernet, raw IP and Linux SLL.
    pub fn load(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| LabError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_reader(path, BufReader::new(file))
    }

    /// Reads a capture held in memory as [`Self::load`] reads a file;
    /// `path` only names it in errors.
    ///
    /// # Errors
    /// As [`Self::load`], but for reading the file.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        Self::from_reader(path, bytes)
    }

    fn from_reader(path: &Path, mut reader: impl BufRead) -> Result<Self> {
        let head = reader.fill_buf().map_err(|source| LabError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut magic = [0u8; 4];
        let Some(m) = head.get(..4) else {
            return Err(capture_error(
                path,
                "shorter than a pcap or pcapng magic number",
            ));
        };
        magic.copy_from_slice(m);
        let mut cap = Self {
            path: path.to_owned(),
            frames: FrameBuf::default(),
            ts_ns: Vec::new(),
        };
        match u32::from_le_bytes(magic) {
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => cap.read_pcap(reader)?,
            0x0a0d_0d0a => cap.read_pcapng(reader)?,
            m => {
                return Err(capture_error(
                    path,
                    format!("not a pcap or pcapng file (magic {m:#010x})"),
                ));
            }
        }
        Ok(cap)
    }

    fn push(&mut self, ts_ns: u64, data: &[u8]) {
        self.frames.push(data);
        self.ts_ns.push(ts_ns);
    }

    /// Appends one frame of link type `framing` as an Ethernet frame
    /// (`buf` is scratch space for the synthesized header).
    fn push_framed(
        &mut self,
        framing: Framing,
        ts_ns: u64,
        data: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if framing == Framing::Ethernet {
            self.push(ts_ns, data);
            return Ok(());
        }
        framing
            .frame(data, buf)
            .map_err(|e| capture_error(&self.path, format!("packet {}: {e}", self.len() + 1)))?;
        self.frames.push(buf);
        self.ts_ns.push(ts_ns);
        Ok(())
    }

    fn read_pcap(&mut self, reader: impl Read) -> Result<()> {
        let path = self.path.clone();
        let mut r = PcapReader::new(reader).map_err(|e| capture_error(&path, e.to_string()))?;
        let link = r.header().datalink;
        let framing = Framing::of(link).ok_or_else(|| {
            capture_error(
                &path,
                format!("link type {link:?} is none of Ethernet, raw IP, Linux SLL"),
            )
        })?;
        let mut buf = Vec::new();
        while let Some(p) = r.next_packet() {
            let p =
                p.map_err(|e| capture_error(&path, format!("packet {}: {e}", self.len() + 1)))?;
            let ts = u64::try_from(p.timestamp.as_nanos()).unwrap_or(u64::MAX);
            self.push_framed(framing, ts, &p.data, &mut buf)?;
        }
        Ok(())
    }

    fn read_pcapng(&mut self, reader: impl Read) -> Result<()> {
        let path = self.path.clone();
        let mut r = PcapNgReader::new(reader).map_err(|e| capture_error(&path, e.to_string()))?;
        // Timestamp units per second and framing of each interface of the
        // current section.
        let mut units: Vec<(u128, Framing)> = Vec::new();
        let mut buf = Vec::new();
        let mut last_ts = 0u64;
        let mut block_no = 0usize;
        while let Some(b) = r.next_block() {
            block_no += 1;
            let b = b.map_err(|e| capture_error(&path, format!("block {block_no}: {e}")))?;
            match b {
                Block::SectionHeader(_) => units.clear(),
                Block::InterfaceDescription(idb) => {
                    let framing = Framing::of(idb.linktype).ok_or_else(|| {
                        capture_error(
                            &path,
                            format!(
                                "interface {} has link type {:?}, none of Ethernet, raw IP, \
                                 Linux SLL",
                                units.len(),
                                idb.linktype
                            ),
                        )
                    })?;
                    let mut u = 1_000_000u128;
                    for o in &idb.options {
                        if let InterfaceDescriptionOption::IfTsResol(v) = o {
                            u = tsresol_units(*v).ok_or_else(|| {
                                capture_error(&path, format!("bad if_tsresol {v:#x}"))
                            })?;
                        }
                    }
                    units.push((u, framing));
                }
                Block::EnhancedPacket(epb) => {
                    let (u, framing) = *units.get(epb.interface_id as usize).ok_or_else(|| {
                        capture_error(
                            &path,
                            format!(
                                "block {block_no}: packet on undeclared interface {}",
                                epb.interface_id
                            ),
                        )
                    })?;
                    // pcap-file hands the raw 64-bit timestamp over as
                    // nanoseconds; its unit is really the interface's.
                    let raw = epb.timestamp.as_nanos();
                    let ns = raw / u * 1_000_000_000 + raw % u * 1_000_000_000 / u;
                    last_ts = u64::try_from(ns).unwrap_or(u64::MAX);
                    self.push_framed(framing, last_ts, &epb.data, &mut buf)?;
                }
                // No timestamp: sent with the previous packet's; a simple
                // packet belongs to the first interface.
                Block::SimplePacket(spb) => {
                    let framing = units.first().map_or(Framing::Ethernet, |&(_, f)| f);
                    self.push_framed(framing, last_ts, &spb.data, &mut buf)?;
                }
                Block::Packet(pb) => {
                    let (u, framing) = units
                        .get(usize::from(pb.interface_id))
                        .copied()
                        .unwrap_or((1_000_000, Framing::Ethernet));
                    let raw = u128::from(pb.timestamp);
                    let ns = raw / u * 1_000_000_000 + raw % u * 1_000_000_000 / u;
                    last_ts = u64::try_from(ns).unwrap_or(u64::MAX);
                    self.push_framed(framing, last_ts, &pb.data, &mut buf)?;
                }
                _ => {}
            }
        }
        if units.is_empty() && !self.is_empty() {
            return Err(capture_error(&path, "packets without an interface block"));
        }
        Ok(())
    }

    /// The file it was read from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Timestamp of frame `i` (ns since the epoch, as recorded).
    #[must_use]
    pub fn timestamp_ns(&self, i: usize) -> u64 {
        self.ts_ns[i]
    }

    /// Offsets of every frame from the first, in ns, with timestamps that go
    /// backwards clamped to the previous one; and how many were clamped.
    #[must_use]
    pub fn offsets_ns(&self) -> (Vec<u64>, u64) {
        let mut out = Vec::with_capacity(self.ts_ns.len());
        let mut clamped = 0;
        let first = self.ts_ns.first().copied().unwrap_or(0);
        let mut prev = first;
        for &ts in &self.ts_ns {
            if ts < prev {
                clamped += 1;
            } else {
                prev = ts;
            }
            out.push(prev - first);
        }
        (out, clamped)
    }

    /// Span from the first to the last timestamp after clamping.
    #[must_use]
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.offsets_ns().0.last().copied().unwrap_or(0))
    }

    /// Who attacks and who is attacked, from the frames `rule` marks as
    /// attack traffic. A whole-file label that names neither side makes
    /// every address play both roles.
    #[must_use]
    pub fn attack_roles(&self, rule: &AttackRule) -> AttackRoles {
        let mut roles = AttackRoles::default();
        for i in 0..self.len() {
            let Some((src, dst)) = ip_pair(self.frame(i)) else {
                continue;
            };
            match rule {
                AttackRule::None => {}
                AttackRule::All(side) => {
                    for h in [src, dst] {
                        match side {
                            Side::Unknown => {
                                roles.attackers.insert(h);
                                roles.victims.insert(h);
                            }
                            Side::Attackers(a) if a.contains(&h) => {
                                roles.attackers.insert(h);
                            }
                            Side::Attackers(_) => {
                                roles.victims.insert(h);
                            }
                            Side::Victims(v) if v.contains(&h) => {
                                roles.victims.insert(h);
                            }
                            Side::Victims(_) => {
                                roles.attackers.insert(h);
                            }
                        }
                    }
                }
                AttackRule::Between { a, .. } => {
                    if rule.is_attack(src, dst) {
                        roles.attackers.insert(*a);
                        roles.victims.insert(if src == *a { dst } else { src });
                    }
                }
            }
        }
        roles
    }

    /// Index of the first frame `rule` marks as attack traffic.
    #[must_use]
    pub fn first_attack(&self, rule: &AttackRule) -> Option<usize> {
        match rule {
            AttackRule::All(_) => (!self.is_empty()).then_some(0),
            AttackRule::None => None,
            AttackRule::Between { .. } => (0..self.len())
                .find(|&i| ip_pair(self.frame(i)).is_some_and(|(s, d)| rule.is_attack(s, d))),
        }
    }
}

/// Source and destination addresses of an Ethernet frame carrying IPv4 or
/// IPv6, or of an IPv4 ARP packet (sender and target protocol address: an
/// ARP scan's prober and the address it asks for); VLAN tags skipped;
/// `None` for anything else or a truncated header.
#[must_use]
pub fn ip_pair(frame: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    match p.net? {
        NetSlice::Ipv4(v4) => Some((
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        )),
        NetSlice::Ipv6(v6) => Some((
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        )),
        NetSlice::Arp(arp) => {
            let v4 = |a: &[u8]| <[u8; 4]>::try_from(a).ok().map(IpAddr::from);
            Some((
                v4(arp.sender_protocol_addr())?,
                v4(arp.target_protocol_addr())?,
            ))
        }
    }
}

/// Which side of a whole-file attack the capture's labels name, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// Neither: every address may be attacker or victim.
    Unknown,
    /// These addresses attack; every other address is attacked.
    Attackers(Vec<IpAddr>),
    /// These addresses are attacked; every other address attacks (a
    /// spoofed or reflected flood).
    Victims(Vec<IpAddr>),
}

/// The two sides of a capture's attack traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttackRoles {
    pub attackers: BTreeSet<IpAddr>,
    pub victims: BTreeSet<IpAddr>,
    /// For attacks from spoofed sources: the addresses that really exist
    /// (a lab's plan); any attacker address outside them is spoofed and
    /// counts as an attacker.
    pub spoofed_outside: Option<BTreeSet<IpAddr>>,
}

impl AttackRoles {
    /// True when `h` is an attacker (listed, or spoofed).
    #[must_use]
    pub fn is_attacker(&self, h: IpAddr) -> bool {
        self.attackers.contains(&h)
            || self
                .spoofed_outside
                .as_ref()
                .is_some_and(|k| !k.contains(&h))
    }
}

/// Which frames of a capture are the attack (the `attack_rule` column of
/// the capture manifest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttackRule {
    /// Every frame (whole-file label).
    All(Side),
    /// No frame (a benign capture).
    None,
    /// Frames between attacker `a` and any of the victims `b`, either
    /// direction (replies of the victims included).
    Between { a: IpAddr, b: Vec<IpAddr> },
}

impl AttackRule {
    /// True when a packet from `src` to `dst` is attack traffic. Under
    /// [`AttackRule::All`] every packet is, IP or not.
    #[must_use]
    pub fn is_attack(&self, src: IpAddr, dst: IpAddr) -> bool {
        match self {
            Self::All(_) => true,
            Self::None => false,
            Self::Between { a, b } => {
                (src == *a && b.contains(&dst)) || (dst == *a && b.contains(&src))
            }
        }
    }
}

impl std::fmt::Display for AttackRule {
    /// The manifest syntax [`AttackRule::from_str`] reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |l: &[IpAddr]| {
            l.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Self::All(Side::Unknown) => write!(f, "all"),
            Self::All(Side::Attackers(a)) => write!(f, "all attacker {}", list(a)),
            Self::All(Side::Victims(v)) => write!(f, "all victim {}", list(v)),
            Self::None => write!(f, "none"),
            Self::Between { a, b } => write!(f, "between {a} {}", list(b)),
        }
    }
}

impl FromStr for AttackRule {
    type Err = String;

    /// `all`, `all attacker A1,A2,...`, `all victim V1,V2,...`, `none`, or
    /// `between A B1,B2,...`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let list = |l: &str| {
            l.split(',')
                .map(|x| {
                    x.parse::<IpAddr>()
                        .map_err(|e| format!("attack rule {s:?}: address {x:?}: {e}"))
                })
                .collect::<std::result::Result<Vec<IpAddr>, String>>()
        };
        let mut words = s.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("all"), None, None, None) => Ok(Self::All(Side::Unknown)),
            (Some("all"), Some("attacker"), Some(l), None) => {
                Ok(Self::All(Side::Attackers(list(l)?)))
            }
            (Some("all"), Some("victim"), Some(l), None) => Ok(Self::All(Side::Victims(list(l)?))),
            (Some("none"), None, None, None) => Ok(Self::None),
            (Some("between"), Some(a), Some(b), None) => {
                let a = a
                    .parse()
                    .map_err(|e| format!("attack rule {s:?}: address {a:?}: {e}"))?;
                Ok(Self::Between { a, b: list(b)? })
            }
            _ => Err(format!(
                "attack rule {s:?}: expected `all`, `all attacker A,...`, `all victim V,...`, \
                 `none` or `between A B1,B2,...`"
            )),
        }
    }
}

/// Shortens every gap between consecutive (non-decreasing) `offsets` longer
/// than `max_gap` to `max_gap`; returns the new offsets and how many gaps
/// were shortened. Frames closer than `max_gap` keep their spacing, so
/// bursts replay at their recorded rate.
#[must_use]
pub fn compress_gaps(offsets: &[u64], max_gap: Option<Duration>) -> (Vec<u64>, u64) {
    let Some(max_gap) = max_gap else {
        return (offsets.to_vec(), 0);
    };
    let cap = u64::try_from(max_gap.as_nanos()).unwrap_or(u64::MAX);
    let mut out = Vec::with_capacity(offsets.len());
    let mut shortened = 0;
    let mut prev_in = offsets.first().copied().unwrap_or(0);
    let mut prev_out = 0u64;
    for &o in offsets {
        let gap = o.saturating_sub(prev_in);
        let kept = if gap > cap {
            shortened += 1;
            cap
        } else {
            gap
        };
        prev_out = prev_out.saturating_add(kept);
        prev_in = o;
        out.push(prev_out);
    }
    (out, shortened)
}

/// How fast and how much to replay.
#[derive(Clone, Copy, Debug)]
pub struct ReplayOptions {
    /// Multiplier of the recorded rate: 2.0 replays twice as fast.
    pub speed: f64,
    /// Stop after this many frames (sent or skipped).
    pub max_packets: usize,
    /// Stop before the first frame due later than this after the start
    /// (on the paced timeline: after `max_gap` shortening, divided by
    /// `speed`).
    pub max_duration: Duration,
    /// Gaps between consecutive frames longer than this (capture time)
    /// are shortened to it; `None` keeps the recorded gaps.
    pub max_gap: Option<Duration>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            speed: 1.0,
            max_packets: usize::MAX,
            max_duration: Duration::from_secs(30),
            max_gap: None,
        }
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct ReplayReport {
    /// Frames the kernel accepted.
    pub sent: u64,
    /// Frames longer than the interface's MTU allows: counted, not sent.
    pub skipped_too_large: u64,
    /// Frames shorter than an Ethernet header: counted, not sent.
    pub skipped_short: u64,
    /// Frames whose timestamp went backwards and were sent at once.
    pub clamped: u64,
    /// Times the kernel pushed back (`ENOBUFS`/`EAGAIN`) and a batch was retried.
    pub retries: u64,
    /// True when a bound (packets or time) stopped the replay before the
    /// end of the capture.
    pub truncated: bool,
    /// Gaps shortened to [`ReplayOptions::max_gap`].
    pub gaps_shortened: u64,
    /// Recorded capture time covered: offset of the last frame considered
    /// in the capture's own timestamps (before gap shortening).
    pub capture_span: Duration,
    /// Wall time of the replay.
    pub elapsed: Duration,
    /// `CLOCK_MONOTONIC` (ns) just before the first frame was handed to the
    /// kernel.
    pub first_packet_mono_ns: Option<u64>,
    /// `CLOCK_MONOTONIC` (ns) just before the first attack frame was handed
    /// to the kernel.
    pub first_attack_mono_ns: Option<u64>,
}

/// Sends captures out of one interface of a namespace.
#[derive(Debug)]
pub struct Replayer {
    fd: OwnedFd,
    mtu: usize,
}

impl Replayer {
    /// Opens a raw packet socket on `ifname` inside `ns` and reads its MTU.
    ///
    /// # Errors
    /// Not root, the interface does not exist, or its MTU cannot be read.
    pub fn open(ns: &Netns, ifname: &str) -> Result<Self> {
        let fd = crate::generator::send_socket(ns, ifname)?;
        let v = ns.ip_json(&["-j", "link", "show", "dev", ifname])?;
        let mtu = v[0]["mtu"].as_u64().ok_or_else(|| LabError::Frame {
            reason: format!("{ifname} reports no MTU: {v}"),
        })?;
        Ok(Self {
            fd,
            mtu: usize::try_from(mtu).unwrap_or(usize::MAX),
        })
    }

    /// The interface's MTU.
    #[must_use]
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Largest frame the kernel accepts for `frame`'s tagging: the MTU plus
    /// the Ethernet header, plus one VLAN tag when the frame carries one.
    fn fits(&self, frame: &[u8]) -> bool {
        let tagged =
            frame.len() >= ETH_HLEN && matches!(frame[12..14], [0x81, 0x00] | [0x88, 0xa8]);
        frame.len() <= self.mtu + ETH_HLEN + if tagged { 4 } else { 0 }
    }

    /// Replays `cap`, marking frames of `rule` as attack traffic.
    ///
    /// # Errors
    /// `sendmmsg` fails for a reason other than push-back or an oversized
    /// frame.
    pub fn replay(
        &self,
        cap: &Capture,
        rule: &AttackRule,
        opts: ReplayOptions,
    ) -> Result<ReplayReport> {
        let speed = if opts.speed.is_finite() && opts.speed > 0.0 {
            opts.speed
        } else {
            1.0
        };
        let (recorded, clamped) = cap.offsets_ns();
        let (offsets, gaps_shortened) = compress_gaps(&recorded, opts.max_gap);
        let first_attack = cap.first_attack(rule);
        let mut rep = ReplayReport {
            clamped,
            gaps_shortened,
            ..ReplayReport::default()
        };
        // SAFETY: iovec and mmsghdr are plain data; zero is valid.
        let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; MAX_BATCH];
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; MAX_BATCH];
        // Capture index of each batch slot.
        let mut slot = [0usize; MAX_BATCH];
        let limit = cap.len().min(opts.max_packets);
        let start = Instant::now();
        let mut next = 0usize;
        while next < limit {
            let due = Duration::from_nanos((offsets[next] as f64 / speed) as u64);
            if due > opts.max_duration {
                break;
            }
            let now = start.elapsed();
            if due > now + SLEEP_SLACK {
                std::thread::sleep(due.saturating_sub(now));
                continue;
            }
            rep.capture_span = Duration::from_nanos(recorded[next]);
            // Every frame due by now goes into one batch.
            let now = start.elapsed() + SLEEP_SLACK;
            let mut n = 0;
            while next < limit && n < MAX_BATCH {
                let due = Duration::from_nanos((offsets[next] as f64 / speed) as u64);
                if due > now || due > opts.max_duration {
                    break;
                }
                let frame = cap.frame(next);
                if frame.len() < ETH_HLEN {
                    rep.skipped_short += 1;
                } else if !self.fits(frame) {
                    rep.skipped_too_large += 1;
                } else {
                    iov[n] = libc::iovec {
                        iov_base: frame.as_ptr().cast_mut().cast(),
                        iov_len: frame.len(),
                    };
                    msgs[n].msg_hdr.msg_iov = &raw mut iov[n];
                    msgs[n].msg_hdr.msg_iovlen = 1;
                    slot[n] = next;
                    n += 1;
                }
                rep.capture_span = Duration::from_nanos(recorded[next]);
                next += 1;
            }
            self.send_batch(&mut msgs[..n], &slot[..n], first_attack, &mut rep)?;
        }
        rep.truncated = next < cap.len();
        rep.elapsed = start.elapsed();
        Ok(rep)
    }

    /// Sends a batch completely, retrying push-back and skipping a frame
    /// the kernel rejects as too large.
    fn send_batch(
        &self,
        msgs: &mut [libc::mmsghdr],
        slot: &[usize],
        first_attack: Option<usize>,
        rep: &mut ReplayReport,
    ) -> Result<()> {
        let mut done = 0;
        while done < msgs.len() {
            let t = monotonic_ns();
            let rest = &mut msgs[done..];
            // SAFETY: rest points at iovecs into the capture's buffer, which
            // outlives the call; the socket is bound, so no address is needed.
            let rc = unsafe {
                libc::sendmmsg(self.fd.as_raw_fd(), rest.as_mut_ptr(), rest.len() as u32, 0)
            };
            if rc < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => {
                        rep.retries += 1;
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    Some(libc::EMSGSIZE) => {
                        rep.skipped_too_large += 1;
                        done += 1;
                    }
                    _ => {
                        return Err(LabError::Sys {
                            call: "sendmmsg(AF_PACKET)".into(),
                            source: err,
                        });
                    }
                }
                continue;
            }
            let sent = rc as usize;
            if sent > 0 {
                rep.first_packet_mono_ns.get_or_insert(t);
                if let Some(fa) = first_attack
                    && rep.first_attack_mono_ns.is_none()
                    && slot[done..done + sent].contains(&fa)
                {
                    rep.first_attack_mono_ns = Some(t);
                }
            }
            rep.sent += sent as u64;
            done += sent;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
