//! One header-cursor parser: each step checks its own bounds through
//! [`ptr_at`], records what it learnt in the flow key and moves the cursor to
//! the next header. VLAN depth and the IPv6 extension-header walk are bounded
//! by named constants so the verifier sees finite loops.
//!
//! Headers are read as raw bytes at fixed offsets rather than through enums:
//! a wire value outside an enum's variants must never become a Rust enum.

use aya_ebpf::programs::XdpContext;
use network_types::{eth::EthHdr, ip::Ipv4Hdr, ip::Ipv6Hdr, tcp::TcpHdr, udp::UdpHdr};
use sensor_common::{Counter, FlowKey, ipproto};

/// VLAN tags followed (802.1ad outer + 802.1Q inner); a third tag is refused.
pub(crate) const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up on finding L4.
pub(crate) const MAX_IPV6_EXT_HEADERS: usize = 6;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_ARP: u16 = 0x0806;
/// ARP for IPv4 over Ethernet: hardware and protocol types, their lengths,
/// the operation, then sender and target hardware and protocol addresses.
const ARP_LEN: usize = 28;
/// The first 8 bytes of an ARP request for IPv4 over Ethernet.
const ARP_IPV4_REQUEST: [u8; 8] = [0, 1, 8, 0, 6, 4, 0, 1];
/// VLAN tag: TCI (2 bytes) + encapsulated ethertype (2 bytes).
const VLAN_TAG_LEN: usize = 4;

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
/// Every extension header has at least 8 bytes; the fragment header exactly 8.
const IPV6_EXT_MIN_LEN: usize = 8;
/// ICMP/ICMPv6 common header: type, code, checksum, 4 bytes of rest-of-header.
const ICMP_HDR_LEN: usize = 8;

/// The parts of a packet the rest of the program needs besides the flow key.
#[derive(Clone, Copy)]
pub(crate) struct PacketMeta {
    /// TCP flags byte (0 for other protocols).
    pub tcp_flags: u8,
    /// 1 when the frame carried a VLAN tag.
    pub vlan_tagged: u8,
    /// Outer VLAN id, 0 when untagged.
    pub vlan_id: u16,
    /// A counter to bump besides `ParsedOk` (`NonFirstFragment`, `OtherL4`).
    pub note: Option<Counter>,
}

/// How far parsing got.
pub(crate) enum Parsed {
    /// The flow key is complete.
    Flow(PacketMeta),
    /// The IP header was valid (addresses are in the key) but a later header
    /// was not: the source still feeds the sketches.
    IpOnly(Counter),
    /// No IP source could be read.
    NoIp(Counter),
}

/// Bounds-checked pointer to a `T` at `off` bytes into the packet.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// Reads `N` bytes at `off`, or `None` if they are not all in the packet.
#[inline(always)]
fn bytes_at<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    // SAFETY: `ptr_at` checked that all N bytes lie inside the packet; arrays
    // of u8 have alignment 1.
    ptr_at::<[u8; N]>(ctx, off).map(|p| unsafe { *p })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// A broadcast ARP request for another address becomes a flow sender →
/// target ([`ipproto::ARP`]): ARP scans on the local segment probe hosts
/// this way. Unicast requests (a host refreshing a neighbour it knows),
/// replies, announcements (sender = target) and other address types are
/// only counted.
#[inline(always)]
fn parse_arp(ctx: &XdpContext, off: usize, key: &mut FlowKey, mut meta: PacketMeta) -> Parsed {
    let (Some(dst_mac), Some(a)) = (bytes_at::<6>(ctx, 0), bytes_at::<ARP_LEN>(ctx, off)) else {
        return Parsed::NoIp(Counter::ArpOther);
    };
    let (spa, tpa) = ([a[14], a[15], a[16], a[17]], [a[24], a[25], a[26], a[27]]);
    if dst_mac != [0xff; 6] || a[..8] != ARP_IPV4_REQUEST || spa == tpa {
        return Parsed::NoIp(Counter::ArpOther);
    }
    key.src = FlowKey::map_v4(spa);
    key.dst = FlowKey::map_v4(tpa);
    key.proto = ipproto::ARP;
    key.sport = ipproto::ARP_MARK;
    meta.note = Some(Counter::ArpRequest);
    Parsed::Flow(meta)
}

/// Parses `ctx` into `key` (which must start zeroed).
#[inline(always)]
pub(crate) fn parse(ctx: &XdpContext, key: &mut FlowKey) -> Parsed {
    let mut meta = PacketMeta {
        tcp_flags: 0,
        vlan_tagged: 0,
        vlan_id: 0,
        note: None,
    };
    // Ethernet: the ethertype is the last two bytes of the header.
    let Some(et) = bytes_at::<2>(ctx, EthHdr::LEN - 2) else {
        return Parsed::NoIp(Counter::TruncatedL2);
    };
    let mut ethertype = be16(et);
    let mut off = EthHdr::LEN;

    for i in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(tag) = bytes_at::<VLAN_TAG_LEN>(ctx, off) else {
            return Parsed::NoIp(Counter::TruncatedVlan);
        };
        if i == 0 {
            meta.vlan_tagged = 1;
            meta.vlan_id = be16([tag[0], tag[1]]) & 0x0fff;
        }
        ethertype = be16([tag[2], tag[3]]);
        off += VLAN_TAG_LEN;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Parsed::NoIp(Counter::TooManyVlanTags);
    }

    let (proto, l4_off) = match ethertype {
        ETH_P_IPV4 => match parse_ipv4(ctx, off, key) {
            Ok(Some(v)) => v,
            // Non-first fragment: no L4 header here, a port-less flow.
            Ok(None) => {
                meta.note = Some(Counter::NonFirstFragment);
                return Parsed::Flow(meta);
            }
            Err(e) => return e,
        },
        ETH_P_IPV6 => match parse_ipv6(ctx, off, key) {
            Ok(Some(v)) => v,
            Ok(None) => {
                meta.note = Some(Counter::NonFirstFragment);
                return Parsed::Flow(meta);
            }
            Err(e) => return e,
        },
        ETH_P_ARP => return parse_arp(ctx, off, key, meta),
        _ => return Parsed::NoIp(Counter::UnknownEthertype),
    };

    match proto {
        ipproto::TCP => {
            let Some(t) = bytes_at::<{ TcpHdr::LEN }>(ctx, l4_off) else {
                return Parsed::IpOnly(Counter::TruncatedTcp);
            };
            let doff = (t[12] >> 4) as usize;
            if doff < 5 {
                return Parsed::IpOnly(Counter::BadTcpDataOffset);
            }
            // Options must be present too: a cut-off header is truncated.
            if ctx.data() + l4_off + doff * 4 > ctx.data_end() {
                return Parsed::IpOnly(Counter::TruncatedTcp);
            }
            key.sport = be16([t[0], t[1]]);
            key.dport = be16([t[2], t[3]]);
            meta.tcp_flags = t[13];
        }
        ipproto::UDP => {
            let Some(u) = bytes_at::<{ UdpHdr::LEN }>(ctx, l4_off) else {
                return Parsed::IpOnly(Counter::TruncatedUdp);
            };
            key.sport = be16([u[0], u[1]]);
            key.dport = be16([u[2], u[3]]);
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            let Some(h) = bytes_at::<ICMP_HDR_LEN>(ctx, l4_off) else {
                return Parsed::IpOnly(Counter::TruncatedIcmp);
            };
            key.sport = u16::from(h[0]);
            key.dport = u16::from(h[1]);
        }
        _ => meta.note = Some(Counter::OtherL4),
    }
    Parsed::Flow(meta)
}

/// IPv4 header at `off`: fills addresses and protocol. `Ok(Some((proto,
/// l4_offset)))` when an L4 header follows, `Ok(None)` for a non-first fragment.
#[inline(always)]
fn parse_ipv4(
    ctx: &XdpContext,
    off: usize,
    key: &mut FlowKey,
) -> Result<Option<(u8, usize)>, Parsed> {
    let Some(p) = ptr_at::<[u8; Ipv4Hdr::LEN]>(ctx, off) else {
        return Err(Parsed::NoIp(Counter::TruncatedIpv4));
    };
    // SAFETY: bounds checked by `ptr_at`.
    let h = unsafe { &*p };
    if h[0] >> 4 != 4 {
        return Err(Parsed::NoIp(Counter::BadIpVersion));
    }
    let ihl = (h[0] & 0x0f) as usize;
    if ihl < 5 || ctx.data() + off + ihl * 4 > ctx.data_end() {
        return Err(Parsed::NoIp(Counter::BadIpv4Ihl));
    }
    key.src[10] = 0xff;
    key.src[11] = 0xff;
    key.src[12..16].copy_from_slice(&h[12..16]);
    key.dst[10] = 0xff;
    key.dst[11] = 0xff;
    key.dst[12..16].copy_from_slice(&h[16..20]);
    key.proto = h[9];
    let frag_offset = be16([h[6], h[7]]) & 0x1fff;
    if frag_offset != 0 {
        return Ok(None);
    }
    Ok(Some((h[9], off + ihl * 4)))
}

/// IPv6 header at `off` plus a bounded walk of its extension headers.
#[inline(always)]
fn parse_ipv6(
    ctx: &XdpContext,
    off: usize,
    key: &mut FlowKey,
) -> Result<Option<(u8, usize)>, Parsed> {
    let Some(p) = ptr_at::<[u8; Ipv6Hdr::LEN]>(ctx, off) else {
        return Err(Parsed::NoIp(Counter::TruncatedIpv6));
    };
    // SAFETY: bounds checked by `ptr_at`.
    let h = unsafe { &*p };
    if h[0] >> 4 != 6 {
        return Err(Parsed::NoIp(Counter::BadIpVersion));
    }
    key.src.copy_from_slice(&h[8..24]);
    key.dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut off = off + Ipv6Hdr::LEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_ext(next) {
            break;
        }
        let Some(e) = bytes_at::<IPV6_EXT_MIN_LEN>(ctx, off) else {
            key.proto = next;
            return Err(Parsed::IpOnly(Counter::TruncatedExtHeader));
        };
        let len = match next {
            IPV6_FRAGMENT => {
                if be16([e[2], e[3]]) >> 3 != 0 {
                    key.proto = e[0];
                    return Ok(None);
                }
                IPV6_EXT_MIN_LEN
            }
            IPV6_AH => (e[1] as usize + 2) * 4,
            _ => (e[1] as usize + 1) * 8,
        };
        next = e[0];
        off += len;
    }
    key.proto = next;
    if is_ipv6_ext(next) {
        return Err(Parsed::IpOnly(Counter::TooManyExtHeaders));
    }
    Ok(Some((next, off)))
}

#[inline(always)]
fn is_ipv6_ext(nh: u8) -> bool {
    matches!(
        nh,
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_AH | IPV6_DEST_OPTS
    )
}
