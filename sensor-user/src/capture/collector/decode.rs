//! NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) datagrams into
//! flow records.
//!
//! Templates are kept per exporter address, observation domain (IPFIX) or
//! source id (v9) and template id: different routers reuse the same ids for
//! different layouts. A template is compiled once into its list of fields
//! (which of the record's bytes hold what this decoder reads); a data record
//! is then decoded by one walk over that list into a fixed [`DecodedFlow`],
//! with no allocation per record. A template sent again replaces the old one
//! (a refresh, or a router that changed its layout); an IPFIX withdrawal
//! (field count 0) removes it. Options records set the exporter's sampling
//! rate (per sampler id when the data records name one), and sampled
//! records are scaled by it.
//!
//! Nothing in a datagram is trusted: every length is checked against what
//! is left of the datagram and of its set, and whatever does not fit is
//! counted by reason in [`DecodeCounters`]. The records decoded before a
//! fault are kept.

use std::{collections::HashMap, net::IpAddr};

use sensor_common::FlowKey;

/// Templates kept at most, over all exporters: exporters are whoever can
/// send a UDP datagram to the collector, so their number is not theirs to
/// choose. Templates beyond it are refused and counted.
pub const MAX_TEMPLATES: usize = 16_384;
/// Exporter domains (address and observation domain) whose sampling state is
/// kept at most; as [`MAX_TEMPLATES`].
pub const MAX_DOMAINS: usize = 4096;
/// Samplers remembered per domain.
const MAX_SAMPLERS: usize = 16;

/// Why a datagram, or a part of it, was not decoded. Each reason has its
/// counter in [`DecodeCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than its version's header.
    TruncatedHeader,
    /// A version other than 5, 9 or 10.
    UnknownVersion,
    /// The header's length or record count disagrees with the datagram.
    BadLength,
    /// A set (flowset) header is cut off, or its length is under 4 bytes or
    /// runs past the datagram.
    TruncatedSet,
    /// A template or options template does not fit its set, uses a data id
    /// under 256, or has a field of length 0.
    BadTemplate,
    /// A variable-length field runs past its set.
    TruncatedRecord,
}

/// The decoder's counters (defined with the `--stats-out` records, which
/// the lab reads back).
pub use sensor_common::records::CollectorCounters as DecodeCounters;

fn count(c: &mut DecodeCounters, m: Malformed) {
    *match m {
        Malformed::TruncatedHeader => &mut c.truncated_header,
        Malformed::UnknownVersion => &mut c.unknown_version,
        Malformed::BadLength => &mut c.bad_length,
        Malformed::TruncatedSet => &mut c.truncated_set,
        Malformed::BadTemplate => &mut c.bad_template,
        Malformed::TruncatedRecord => &mut c.truncated_record,
    } += 1;
}

/// One decoded flow record: a unidirectional flow as its exporter saw it,
/// counts already scaled by the sampling rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodedFlow {
    /// Flow key (IPv4 addresses IPv4-mapped; for ICMP, `sport` holds the
    /// type and `dport` the code, as the XDP program keys them).
    pub key: FlowKey,
    /// Packets, times the sampling rate.
    pub packets: u64,
    /// Bytes of the IP packets (layer 3, as every exporter counts them),
    /// times the sampling rate.
    pub octets: u64,
    /// OR of the TCP flags of the flow's packets.
    pub tcp_flags: u8,
    /// Milliseconds between the flow's first packet and the datagram's
    /// export time (0 when the record carries no start time).
    pub start_age_ms: u64,
    /// Milliseconds between the flow's last packet and the export time.
    pub end_age_ms: u64,
    /// SNMP index of the interface the flow entered the exporter by.
    pub in_if: u32,
    /// SNMP index of the interface it left by.
    pub out_if: u32,
    /// The sampling rate applied (1: unsampled).
    pub sampling: u32,
}

/// What a datagram's header says about all of its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramInfo {
    /// 5, 9 or 10.
    pub version: u16,
    /// IPFIX observation domain, v9 source id, v5 engine type and id.
    pub domain: u32,
}

/// What this decoder reads from a field (by information element id; the
/// NetFlow v9 field types 1–127 have the same numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Octets,
    Packets,
    Proto,
    TcpFlags,
    SrcPort,
    DstPort,
    SrcV4,
    DstV4,
    SrcV6,
    DstV6,
    InIf,
    OutIf,
    /// sysUpTime (ms) of the last / first packet.
    LastUptime,
    FirstUptime,
    /// ICMP type × 256 + code (IPv4 and IPv6).
    IcmpTypeCode,
    IcmpType,
    IcmpCode,
    /// Absolute times (Unix epoch).
    StartSeconds,
    EndSeconds,
    StartMillis,
    EndMillis,
    /// Micro- and nanosecond times: NTP format (seconds since 1900, 2^-32
    /// fractions).
    StartNtp,
    EndNtp,
    /// Sampling: interval (1 in N), sampler id, packet interval and space.
    SamplingInterval,
    SamplerId,
    PacketInterval,
    PacketSpace,
    /// `systemInitTimeMilliseconds`: the epoch time of sysUpTime 0.
    SystemInit,
    /// Anything else: skipped.
    Other,
}

impl Field {
    fn of(ie: u16, enterprise: bool) -> Self {
        if enterprise {
            return Self::Other;
        }
        match ie {
            1 | 85 => Self::Octets,
            2 | 86 => Self::Packets,
            4 => Self::Proto,
            6 => Self::TcpFlags,
            7 => Self::SrcPort,
            11 => Self::DstPort,
            8 => Self::SrcV4,
            12 => Self::DstV4,
            27 => Self::SrcV6,
            28 => Self::DstV6,
            10 => Self::InIf,
            14 => Self::OutIf,
            21 => Self::LastUptime,
            22 => Self::FirstUptime,
            32 | 139 => Self::IcmpTypeCode,
            176 | 178 => Self::IcmpType,
            177 | 179 => Self::IcmpCode,
            150 => Self::StartSeconds,
            151 => Self::EndSeconds,
            152 => Self::StartMillis,
            153 => Self::EndMillis,
            154 | 156 => Self::StartNtp,
            155 | 157 => Self::EndNtp,
            34 | 50 => Self::SamplingInterval,
            48 | 302 => Self::SamplerId,
            305 => Self::PacketInterval,
            306 => Self::PacketSpace,
            160 => Self::SystemInit,
            _ => Self::Other,
        }
    }
}

/// A field of a compiled template: what it holds and its length
/// ([`VARIABLE`] for IPFIX variable-length fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TemplateField {
    what: Field,
    len: u16,
}

/// The length that marks an IPFIX variable-length field.
const VARIABLE: u16 = 0xffff;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Template {
    fields: Box<[TemplateField]>,
    /// Shortest record (each variable-length field at its 1-byte minimum):
    /// fewer bytes left in a set are padding.
    min_len: usize,
    /// An options template: its records describe the exporter, not flows.
    options: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct DomainKey {
    exporter: IpAddr,
    domain: u32,
    version: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TemplateKey {
    domain: DomainKey,
    id: u16,
}

/// What options records told about a domain.
#[derive(Clone, Debug, Default)]
struct DomainState {
    /// The latest sampling rate any options record announced (0: none).
    sampling: u32,
    /// Rates per sampler id.
    samplers: Vec<(u64, u32)>,
    /// Epoch ms of the exporter's sysUpTime 0, if announced.
    system_init_ms: Option<u64>,
}

/// The values of one record, before it becomes a [`DecodedFlow`].
#[derive(Default)]
struct RecordValues {
    src: Option<[u8; 16]>,
    dst: Option<[u8; 16]>,
    sport: u16,
    dport: u16,
    proto: u8,
    tcp_flags: u8,
    packets: u64,
    octets: u64,
    in_if: u32,
    out_if: u32,
    first_uptime: Option<u64>,
    last_uptime: Option<u64>,
    start_ms: Option<u64>,
    end_ms: Option<u64>,
    icmp: Option<(u8, u8)>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    sampling: Option<u64>,
    sampler_id: Option<u64>,
    packet_interval: Option<u64>,
    packet_space: Option<u64>,
    system_init: Option<u64>,
}

/// Big-endian unsigned integer of up to 8 bytes (IPFIX allows reduced-size
/// encoding: a 64-bit counter may be sent in 4 bytes); longer fields give
/// their last 8 bytes.
#[inline]
fn be_uint(b: &[u8]) -> u64 {
    let b = &b[b.len().saturating_sub(8)..];
    b.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x))
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Seconds from the NTP era (1900) to the Unix epoch.
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Epoch milliseconds of an NTP-format timestamp.
fn ntp_ms(v: u64) -> u64 {
    let secs = (v >> 32).saturating_sub(NTP_UNIX_OFFSET_S);
    secs * 1000 + (((v & 0xffff_ffff) * 1000) >> 32)
}

fn sat_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl RecordValues {
    #[inline]
    fn set(&mut self, what: Field, b: &[u8]) {
        match what {
            Field::Octets => self.octets = be_uint(b),
            Field::Packets => self.packets = be_uint(b),
            Field::Proto => self.proto = be_uint(b) as u8,
            // IPFIX sends tcpControlBits in 2 bytes; the flags are the low 8.
            Field::TcpFlags => self.tcp_flags = be_uint(b) as u8,
            Field::SrcPort => self.sport = be_uint(b) as u16,
            Field::DstPort => self.dport = be_uint(b) as u16,
            Field::SrcV4 if b.len() == 4 => {
                self.src = Some(FlowKey::map_v4([b[0], b[1], b[2], b[3]]));
            }
            Field::DstV4 if b.len() == 4 => {
                self.dst = Some(FlowKey::map_v4([b[0], b[1], b[2], b[3]]));
            }
            Field::SrcV6 if b.len() == 16 => self.src = b.try_into().ok(),
            Field::DstV6 if b.len() == 16 => self.dst = b.try_into().ok(),
            Field::InIf => self.in_if = sat_u32(be_uint(b)),
            Field::OutIf => self.out_if = sat_u32(be_uint(b)),
            Field::FirstUptime => self.first_uptime = Some(be_uint(b)),
            Field::LastUptime => self.last_uptime = Some(be_uint(b)),
            Field::StartSeconds => self.start_ms = Some(be_uint(b).saturating_mul(1000)),
            Field::EndSeconds => self.end_ms = Some(be_uint(b).saturating_mul(1000)),
            Field::StartMillis => self.start_ms = Some(be_uint(b)),
            Field::EndMillis => self.end_ms = Some(be_uint(b)),
            Field::StartNtp => self.start_ms = Some(ntp_ms(be_uint(b))),
            Field::EndNtp => self.end_ms = Some(ntp_ms(be_uint(b))),
            Field::IcmpTypeCode => {
                let v = be_uint(b) as u16;
                self.icmp = Some(((v >> 8) as u8, v as u8));
            }
            Field::IcmpType => self.icmp_type = Some(be_uint(b) as u8),
            Field::IcmpCode => self.icmp_code = Some(be_uint(b) as u8),
            Field::SamplingInterval => self.sampling = Some(be_uint(b)),
            Field::SamplerId => self.sampler_id = Some(be_uint(b)),
            Field::PacketInterval => self.packet_interval = Some(be_uint(b)),
            Field::PacketSpace => self.packet_space = Some(be_uint(b)),
            Field::SystemInit => self.system_init = Some(be_uint(b)),
            _ => {}
        }
    }

    /// The sampling rate this record states itself (1 in N), if any.
    fn own_rate(&self) -> Option<u32> {
        if let Some(n) = self.sampling.filter(|&n| n > 0) {
            return Some(sat_u32(n));
        }
        // RFC 5476: select `interval` packets, then skip `space`.
        let interval = self.packet_interval.filter(|&n| n > 0)?;
        let space = self.packet_space.unwrap_or(0);
        Some(sat_u32(interval.saturating_add(space) / interval))
    }
}

/// The datagram decoder with its templates. One per collector thread.
pub struct Decoder {
    templates: HashMap<TemplateKey, Template>,
    domains: HashMap<DomainKey, DomainState>,
    counters: DecodeCounters,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a datagram's export time sits, to turn record times into ages.
#[derive(Clone, Copy)]
struct ExportClock {
    /// The exporter's sysUpTime at export (ms; v5 and v9).
    uptime_ms: Option<u64>,
    /// Export time, epoch ms.
    epoch_ms: u64,
}

impl ExportClock {
    /// Age (ms before export) of a sysUpTime stamp; sysUpTime wraps at
    /// 2^32 ms (49.7 days), so the difference is taken modulo that, and a
    /// stamp after the export (a broken clock) is age 0.
    fn uptime_age(&self, stamp: u64, init_ms: Option<u64>) -> Option<u64> {
        match (self.uptime_ms, init_ms) {
            (Some(now), _) => {
                let age = (now as u32).wrapping_sub(stamp as u32);
                Some(if age > u32::MAX / 2 {
                    0
                } else {
                    u64::from(age)
                })
            }
            (None, Some(init)) => Some(self.epoch_ms.saturating_sub(init.saturating_add(stamp))),
            (None, None) => None,
        }
    }

    fn epoch_age(&self, ms: u64) -> u64 {
        self.epoch_ms.saturating_sub(ms)
    }
}

impl Decoder {
    #[must_use]
    pub fn new() -> Self {
        Self {
            templates: HashMap::new(),
            domains: HashMap::new(),
            counters: DecodeCounters::default(),
        }
    }

    /// Counters so far.
    #[must_use]
    pub fn counters(&self) -> &DecodeCounters {
        &self.counters
    }

    /// Templates kept now.
    #[must_use]
    pub fn templates(&self) -> usize {
        self.templates.len()
    }

    /// Decodes one datagram from `exporter`, appending its flow records to
    /// `out`. A malformed datagram is counted by reason and returns `None`
    /// when not even its header could be read; records decoded before a
    /// fault later in the datagram stay in `out`.
    pub fn decode(
        &mut self,
        exporter: IpAddr,
        datagram: &[u8],
        out: &mut Vec<DecodedFlow>,
    ) -> Option<DatagramInfo> {
        self.counters.datagrams += 1;
        if datagram.len() < 4 {
            count(&mut self.counters, Malformed::TruncatedHeader);
            return None;
        }
        let before = out.len();
        let result = match be16(datagram, 0) {
            5 => self.decode_v5(datagram, out),
            9 => self.decode_v9(exporter, datagram, out),
            10 => self.decode_ipfix(exporter, datagram, out),
            _ => Err((None, Malformed::UnknownVersion)),
        };
        self.counters.records += (out.len() - before) as u64;
        match result {
            Ok(info) => Some(info),
            Err((info, why)) => {
                count(&mut self.counters, why);
                info
            }
        }
    }

    fn decode_v5(
        &mut self,
        d: &[u8],
        out: &mut Vec<DecodedFlow>,
    ) -> Result<DatagramInfo, (Option<DatagramInfo>, Malformed)> {
        const HEADER: usize = 24;
        const RECORD: usize = 48;
        if d.len() < HEADER {
            return Err((None, Malformed::TruncatedHeader));
        }
        self.counters.v5_datagrams += 1;
        let count = usize::from(be16(d, 2));
        let clock = ExportClock {
            uptime_ms: Some(u64::from(be32(d, 4))),
            epoch_ms: u64::from(be32(d, 8)) * 1000 + u64::from(be32(d, 12)) / 1_000_000,
        };
        let info = DatagramInfo {
            version: 5,
            domain: u32::from(be16(d, 20)),
        };
        // Top 2 bits: sampling mode; low 14: the interval.
        let interval = u32::from(be16(d, 22) & 0x3fff);
        let rate = interval.max(1);
        let fits = (d.len() - HEADER) / RECORD;
        for i in 0..count.min(fits) {
            let r = &d[HEADER + i * RECORD..HEADER + (i + 1) * RECORD];
            let proto = r[38];
            let (mut sport, mut dport) = (be16(r, 32), be16(r, 34));
            if is_icmp(proto) {
                (sport, dport) = (dport >> 8, dport & 0xff);
            }
            let first = u64::from(be32(r, 24));
            let last = u64::from(be32(r, 28));
            let f = DecodedFlow {
                key: FlowKey::new(
                    FlowKey::map_v4([r[0], r[1], r[2], r[3]]),
                    FlowKey::map_v4([r[4], r[5], r[6], r[7]]),
                    sport,
                    dport,
                    proto,
                ),
                packets: u64::from(be32(r, 16)) * u64::from(rate),
                octets: u64::from(be32(r, 20)) * u64::from(rate),
                tcp_flags: r[37],
                start_age_ms: clock.uptime_age(first, None).unwrap_or(0),
                end_age_ms: clock.uptime_age(last, None).unwrap_or(0),
                in_if: u32::from(be16(r, 12)),
                out_if: u32::from(be16(r, 14)),
                sampling: rate,
            };
            if rate > 1 {
                self.counters.records_scaled += 1;
            }
            out.push(f);
        }
        if count > fits || d.len() != HEADER + count * RECORD {
            return Err((Some(info), Malformed::BadLength));
        }
        Ok(info)
    }

    fn decode_v9(
        &mut self,
        exporter: IpAddr,
        d: &[u8],
        out: &mut Vec<DecodedFlow>,
    ) -> Result<DatagramInfo, (Option<DatagramInfo>, Malformed)> {
        const HEADER: usize = 20;
        if d.len() < HEADER {
            return Err((None, Malformed::TruncatedHeader));
        }
        self.counters.v9_datagrams += 1;
        let clock = ExportClock {
            uptime_ms: Some(u64::from(be32(d, 4))),
            epoch_ms: u64::from(be32(d, 8)) * 1000,
        };
        let info = DatagramInfo {
            version: 9,
            domain: be32(d, 16),
        };
        let dom = DomainKey {
            exporter,
            domain: info.domain,
            version: 9,
        };
        self.sets(dom, &clock, &d[HEADER..], out)
            .map_err(|m| (Some(info), m))?;
        Ok(info)
    }

    fn decode_ipfix(
        &mut self,
        exporter: IpAddr,
        d: &[u8],
        out: &mut Vec<DecodedFlow>,
    ) -> Result<DatagramInfo, (Option<DatagramInfo>, Malformed)> {
        const HEADER: usize = 16;
        if d.len() < HEADER {
            return Err((None, Malformed::TruncatedHeader));
        }
        self.counters.ipfix_datagrams += 1;
        let len = usize::from(be16(d, 2));
        let info = DatagramInfo {
            version: 10,
            domain: be32(d, 12),
        };
        if len < HEADER || len > d.len() {
            return Err((Some(info), Malformed::BadLength));
        }
        let clock = ExportClock {
            uptime_ms: None,
            epoch_ms: u64::from(be32(d, 4)) * 1000,
        };
        let dom = DomainKey {
            exporter,
            domain: info.domain,
            version: 10,
        };
        self.sets(dom, &clock, &d[HEADER..len], out)
            .map_err(|m| (Some(info), m))?;
        if len != d.len() {
            return Err((Some(info), Malformed::BadLength));
        }
        Ok(info)
    }

    /// The sets (v9 flowsets) of a datagram's body.
    fn sets(
        &mut self,
        dom: DomainKey,
        clock: &ExportClock,
        mut body: &[u8],
        out: &mut Vec<DecodedFlow>,
    ) -> Result<(), Malformed> {
        let ipfix = dom.version == 10;
        while !body.is_empty() {
            // v9 allows padding after the last flowset.
            if body.len() < 4 {
                return if !ipfix && body.iter().all(|&b| b == 0) {
                    Ok(())
                } else {
                    Err(Malformed::TruncatedSet)
                };
            }
            let id = be16(body, 0);
            let len = usize::from(be16(body, 2));
            if len < 4 || len > body.len() {
                return Err(Malformed::TruncatedSet);
            }
            let set = &body[4..len];
            body = &body[len..];
            match (ipfix, id) {
                (false, 0) | (true, 2) => self.templates_set(dom, set, ipfix, false)?,
                (false, 1) | (true, 3) => self.templates_set(dom, set, ipfix, true)?,
                (_, 256..) => self.data_set(dom, id, clock, set, out)?,
                // Reserved set ids: skipped as the RFCs ask.
                _ => {}
            }
        }
        Ok(())
    }

    /// A template set (or options template set) of either protocol.
    fn templates_set(
        &mut self,
        dom: DomainKey,
        mut set: &[u8],
        ipfix: bool,
        options: bool,
    ) -> Result<(), Malformed> {
        // Template headers: v9 {id, count}, v9 options {id, scope bytes,
        // option bytes}, IPFIX {id, count}, IPFIX options {id, count, scope count}.
        let header = if options { 6 } else { 4 };
        while set.len() >= header {
            let id = be16(set, 0);
            // v9 options templates give byte lengths of scope and option
            // fields (4 bytes each); the others give a field count.
            let count = if !ipfix && options {
                (usize::from(be16(set, 2)) + usize::from(be16(set, 4))) / 4
            } else {
                usize::from(be16(set, 2))
            };
            let mut at = header;
            if ipfix && count == 0 {
                // Withdrawal (RFC 7011 8.1); id 2 or 3 withdraws all.
                set = &set[at..];
                self.withdraw(dom, id);
                continue;
            }
            if id < 256 {
                return Err(Malformed::BadTemplate);
            }
            let mut fields = Vec::with_capacity(count);
            let mut min_len = 0usize;
            for _ in 0..count {
                if set.len() < at + 4 {
                    return Err(Malformed::BadTemplate);
                }
                let raw = be16(set, at);
                let len = be16(set, at + 2);
                at += 4;
                let enterprise = ipfix && raw & 0x8000 != 0;
                if enterprise {
                    if set.len() < at + 4 {
                        return Err(Malformed::BadTemplate);
                    }
                    at += 4;
                }
                if len == 0 || (!ipfix && len == VARIABLE) {
                    return Err(Malformed::BadTemplate);
                }
                min_len += if len == VARIABLE { 1 } else { usize::from(len) };
                fields.push(TemplateField {
                    what: Field::of(raw & 0x7fff, enterprise),
                    len,
                });
            }
            set = &set[at..];
            self.learn(
                TemplateKey { domain: dom, id },
                Template {
                    fields: fields.into_boxed_slice(),
                    min_len,
                    options,
                },
            );
            // v9 options templates may be padded to 4 bytes; a remainder
            // shorter than a header is padding in every case.
        }
        Ok(())
    }

    fn learn(&mut self, key: TemplateKey, t: Template) {
        let full = self.templates.len() >= MAX_TEMPLATES;
        match self.templates.get_mut(&key) {
            Some(old) if *old == t => self.counters.templates_refreshed += 1,
            Some(old) => {
                *old = t;
                self.counters.templates_changed += 1;
            }
            None if full => self.counters.templates_refused += 1,
            None => {
                self.templates.insert(key, t);
                self.counters.templates_learned += 1;
            }
        }
    }

    fn withdraw(&mut self, dom: DomainKey, id: u16) {
        let before = self.templates.len();
        match id {
            2 => self.templates.retain(|k, t| k.domain != dom || t.options),
            3 => self.templates.retain(|k, t| k.domain != dom || !t.options),
            _ => {
                self.templates.remove(&TemplateKey { domain: dom, id });
            }
        }
        self.counters.templates_withdrawn += (before - self.templates.len()) as u64;
    }

    fn data_set(
        &mut self,
        dom: DomainKey,
        id: u16,
        clock: &ExportClock,
        mut set: &[u8],
        out: &mut Vec<DecodedFlow>,
    ) -> Result<(), Malformed> {
        let Some(t) = self.templates.get(&TemplateKey { domain: dom, id }) else {
            self.counters.sets_without_template += 1;
            return Ok(());
        };
        let min_len = t.min_len.max(1);
        let options = t.options;
        let state = self.domains.get(&dom);
        let (domain_rate, init_ms) = state.map_or((0, None), |s| (s.sampling, s.system_init_ms));
        // Looked up per record only when a record names its sampler.
        let mut sampler_rates: [(u64, u32); MAX_SAMPLERS] = [(0, 0); MAX_SAMPLERS];
        let n_samplers = state.map_or(0, |s| {
            let n = s.samplers.len().min(MAX_SAMPLERS);
            sampler_rates[..n].copy_from_slice(&s.samplers[..n]);
            n
        });
        let mut option_updates: Vec<RecordValues> = Vec::new();
        while set.len() >= min_len {
            let mut v = RecordValues::default();
            let mut at = 0usize;
            for f in &*t.fields {
                let len = if f.len == VARIABLE {
                    let Some(&first) = set.get(at) else {
                        return Err(Malformed::TruncatedRecord);
                    };
                    at += 1;
                    if first == 255 {
                        if set.len() < at + 2 {
                            return Err(Malformed::TruncatedRecord);
                        }
                        at += 2;
                        usize::from(be16(set, at - 2))
                    } else {
                        usize::from(first)
                    }
                } else {
                    usize::from(f.len)
                };
                let Some(b) = set.get(at..at + len) else {
                    return Err(Malformed::TruncatedRecord);
                };
                at += len;
                if f.what != Field::Other {
                    v.set(f.what, b);
                }
            }
            set = &set[at..];
            if options {
                option_updates.push(v);
                continue;
            }
            let (Some(src), Some(dst)) = (v.src, v.dst) else {
                self.counters.records_without_addresses += 1;
                continue;
            };
            let rate = v
                .own_rate()
                .or_else(|| {
                    let id = v.sampler_id?;
                    sampler_rates[..n_samplers]
                        .iter()
                        .find(|s| s.0 == id)
                        .map(|s| s.1)
                })
                .unwrap_or(domain_rate)
                .max(1);
            if rate > 1 {
                self.counters.records_scaled += 1;
            }
            let (mut sport, mut dport) = (v.sport, v.dport);
            if is_icmp(v.proto) {
                (sport, dport) = match (v.icmp, v.icmp_type) {
                    (Some((ty, code)), _) => (u16::from(ty), u16::from(code)),
                    (None, Some(ty)) => (u16::from(ty), u16::from(v.icmp_code.unwrap_or(0))),
                    // Exporters without an ICMP field put type and code in
                    // the destination port.
                    (None, None) => (dport >> 8, dport & 0xff),
                };
            }
            let age = |uptime: Option<u64>, epoch: Option<u64>| {
                epoch
                    .map(|ms| clock.epoch_age(ms))
                    .or_else(|| uptime.and_then(|u| clock.uptime_age(u, init_ms)))
                    .unwrap_or(0)
            };
            out.push(DecodedFlow {
                key: FlowKey::new(src, dst, sport, dport, v.proto),
                packets: v.packets.saturating_mul(u64::from(rate)),
                octets: v.octets.saturating_mul(u64::from(rate)),
                tcp_flags: v.tcp_flags,
                start_age_ms: age(v.first_uptime, v.start_ms),
                end_age_ms: age(v.last_uptime, v.end_ms),
                in_if: v.in_if,
                out_if: v.out_if,
                sampling: rate,
            });
        }
        for v in option_updates {
            self.options_record(dom, &v);
        }
        Ok(())
    }

    /// An options record: what it says about the exporter's sampling and
    /// clock is kept for the domain's later data records.
    fn options_record(&mut self, dom: DomainKey, v: &RecordValues) {
        self.counters.options_records += 1;
        let rate = v.own_rate();
        if rate.is_none() && v.system_init.is_none() {
            return;
        }
        if !self.domains.contains_key(&dom) && self.domains.len() >= MAX_DOMAINS {
            return;
        }
        let s = self.domains.entry(dom).or_default();
        if let Some(init) = v.system_init {
            s.system_init_ms = Some(init);
        }
        if let Some(rate) = rate {
            s.sampling = rate;
            if let Some(id) = v.sampler_id {
                if let Some(x) = s.samplers.iter_mut().find(|x| x.0 == id) {
                    x.1 = rate;
                } else if s.samplers.len() < MAX_SAMPLERS {
                    s.samplers.push((id, rate));
                }
            }
        }
    }
}

fn is_icmp(proto: u8) -> bool {
    proto == sensor_common::ipproto::ICMP || proto == sensor_common::ipproto::ICMPV6
}

#[cfg(test)]
mod tests;
