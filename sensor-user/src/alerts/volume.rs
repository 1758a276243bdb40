//! The volume rule: floods found from the kernel's destination sketch
//! (packets, bytes and new flows per destination host and prefix, every
//! packet counted on every CPU), once per sketch epoch.
//!
//! Rows can be sampled, shed or never exported for a flow of one packet;
//! the sketch cannot, so this rule is what keeps a flood visible under
//! load, and what sees a flood spread over many victims (carpet bombing),
//! which no single victim's rows show. It walks the IPv4 wide prefixes
//! (every /16 by default), and for each one over the bars descends to the
//! narrow prefix and then the host that carry most of its new flows: the
//! alert names the narrowest key that holds the flood.

use std::net::{IpAddr, Ipv4Addr};

use sensor_common::{FlowKey, sketch::VolumeCell};

use super::config::VolumeSection;
use crate::capture::{
    gateway::GatewayView,
    volume::{DstLevel, DstVolume},
};

/// A flooded destination in one epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct VolumeFinding {
    /// The host, or the prefix's network address.
    pub(super) victim: IpAddr,
    /// Prefix length when the victim is a prefix.
    pub(super) prefix_len: Option<u8>,
    pub(super) packets_per_s: f64,
    pub(super) new_flows_per_s: f64,
    pub(super) bytes: u64,
    pub(super) packets: u64,
}

/// Per-second rates of one sketch estimate.
#[derive(Clone, Copy, Debug)]
struct Rates {
    pps: f64,
    flows: f64,
    cell: VolumeCell,
}

impl Rates {
    fn of(cell: VolumeCell, epoch_s: f64) -> Self {
        Self {
            pps: f64::from(cell.packets) / epoch_s,
            flows: f64::from(cell.new_flows) / epoch_s,
            cell,
        }
    }

    /// Over every bar of the rule.
    fn flooded(&self, v: &VolumeSection) -> bool {
        let single = self.cell.new_flows.saturating_sub(self.cell.continued);
        self.flows >= v.min_new_flows_per_s
            && self.pps >= v.min_pps
            && f64::from(single) >= v.min_single_share * f64::from(self.cell.new_flows)
    }
}

/// The IPv4 address `net` as the 16-byte key the sketch hashes.
fn key_of(net: u32) -> [u8; 16] {
    FlowKey::map_v4(net.to_be_bytes())
}

/// Of the `2^(child_len - parent_len)` children of `parent` (a network of
/// `parent_len` bits), the two with the most new flows at `level`, most
/// first.
fn busiest_children(
    s: &DstVolume,
    level: DstLevel,
    parent: u32,
    parent_len: u8,
    child_len: u8,
) -> [(u32, VolumeCell); 2] {
    let n = 1u32 << (child_len - parent_len);
    let step = 1u32.checked_shl(32 - u32::from(child_len)).unwrap_or(0);
    let mut best = [(parent, VolumeCell::default()); 2];
    for i in 0..n {
        let net = parent | i.wrapping_mul(step);
        let c = s.estimate(level, &key_of(net));
        if c.new_flows > best[0].1.new_flows {
            best[1] = best[0];
            best[0] = (net, c);
        } else if c.new_flows > best[1].1.new_flows {
            best[1] = (net, c);
        }
    }
    best
}

/// One walk of the rule over the sketch of an epoch.
struct Walk<'a> {
    s: &'a DstVolume,
    v: &'a VolumeSection,
    epoch_s: f64,
    lens: [u8; 3],
    out: Vec<VolumeFinding>,
}

impl Walk<'_> {
    /// Names the flood on the flooded key `net` (of `level`, 2 = wide, 1 =
    /// narrow, 0 = host): the key itself when its new flows are spread over
    /// its children (carpet bombing), else the child that holds the
    /// `concentration` share of them, or each of the two that hold it
    /// together (a scan's target and its scanner receiving the answers are
    /// two hosts, not a spread flood). Children under the bars name nothing.
    fn descend(&mut self, level: usize, net: u32, r: Rates) {
        if level == 0 {
            self.push(net, None, r);
            return;
        }
        let (len, child_len) = (self.lens[level], self.lens[level - 1]);
        let child_level = if level == 2 {
            DstLevel::Narrow
        } else {
            DstLevel::Host
        };
        let [a, b] = busiest_children(self.s, child_level, net, len, child_len);
        let (ra, rb) = (Rates::of(a.1, self.epoch_s), Rates::of(b.1, self.epoch_s));
        let bar = self.v.concentration * r.flows;
        if ra.flows >= bar {
            if ra.flooded(self.v) {
                self.descend(level - 1, a.0, ra);
            }
        } else if ra.flows + rb.flows >= bar {
            for (c, rc) in [(a.0, ra), (b.0, rb)] {
                if rc.flooded(self.v) {
                    self.descend(level - 1, c, rc);
                }
            }
        } else {
            self.push(net, Some(len), r);
        }
    }

    fn push(&mut self, net: u32, prefix_len: Option<u8>, r: Rates) {
        self.out.push(VolumeFinding {
            victim: IpAddr::V4(Ipv4Addr::from(net)),
            prefix_len,
            packets_per_s: r.pps,
            new_flows_per_s: r.flows,
            bytes: u64::from(r.cell.bytes),
            packets: u64::from(r.cell.packets),
        });
    }
}

/// The flooded destinations of one epoch's view.
pub(super) fn findings(view: &GatewayView, v: &VolumeSection) -> Vec<VolumeFinding> {
    let s = &view.dst;
    let epoch_s = (view.epoch_ns as f64 / 1e9).max(1e-3);
    if !v.enabled || (s.total_packets() as f64) / epoch_s < v.min_pps {
        return Vec::new();
    }
    let wide_len = s.prefix_len(DstLevel::Wide, true);
    let narrow_len = s.prefix_len(DstLevel::Narrow, true);
    if !(1..=20).contains(&wide_len) || narrow_len <= wide_len || narrow_len - wide_len > 12 {
        return Vec::new();
    }
    let mut walk = Walk {
        s,
        v,
        epoch_s,
        lens: [32, narrow_len, wide_len],
        out: Vec::new(),
    };
    let wide_step = 1u32 << (32 - u32::from(wide_len));
    for i in 0..(1u32 << wide_len) {
        let wide_net = i.wrapping_mul(wide_step);
        let wide = Rates::of(s.estimate(DstLevel::Wide, &key_of(wide_net)), epoch_s);
        if wide.flooded(v) {
            walk.descend(2, wide_net, wide);
        }
    }
    walk.out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn view(s: DstVolume) -> GatewayView {
        GatewayView {
            seq: 1,
            epoch_ns: SEC,
            dst: s,
            ..GatewayView::default()
        }
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
        FlowKey::map_v4([a, b, c, d])
    }

    /// `n` packets in `new_flows` flows, all of which stayed single when
    /// there are as many flows as packets, else all continued.
    fn packets(n: u32, new_flows: u32) -> VolumeCell {
        VolumeCell {
            packets: n,
            new_flows,
            continued: if n > new_flows { new_flows } else { 0 },
            bytes: 60 * n,
        }
    }

    fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn one_victim_is_named_as_a_host() {
        let mut s = DstVolume::default();
        s.add(&v4(10, 0, 0, 5), packets(5000, 5000));
        // Ordinary traffic elsewhere in its /24 and /16.
        for d in 10..60 {
            s.add(&v4(10, 0, 0, d), packets(100, 2));
            s.add(&v4(10, 0, 7, d), packets(100, 2));
        }
        let f = findings(&view(s), &VolumeSection::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].victim, ip(10, 0, 0, 5));
        assert_eq!(f[0].prefix_len, None);
        assert!((f[0].new_flows_per_s - 5000.0).abs() < 1.0);
    }

    #[test]
    fn a_spread_flood_is_named_by_its_prefix() {
        // Random victims over a /24: 20 new flows/s each, 5 120 in all.
        let mut s = DstVolume::default();
        for d in 0..=255 {
            s.add(&v4(192, 0, 2, d), packets(20, 20));
        }
        let f = findings(&view(s), &VolumeSection::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].victim, f[0].prefix_len), (ip(192, 0, 2, 0), Some(24)));
        // Over a /16: every /24 small, the /16 flooded.
        let mut s = DstVolume::default();
        for c in 0..=255 {
            for d in (0..=255).step_by(32) {
                s.add(&v4(172, 16, c, d), packets(1, 1));
            }
        }
        let f = findings(&view(s), &VolumeSection::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            (f[0].victim, f[0].prefix_len),
            (ip(172, 16, 0, 0), Some(16))
        );
    }

    #[test]
    fn a_target_and_the_host_its_answers_go_to_are_two_hosts() {
        // A fast scan of 192.168.1.1 by 192.168.1.10: probes one way,
        // RSTs the other, each a new single-packet flow.
        let mut s = DstVolume::default();
        s.add(&v4(192, 168, 1, 1), packets(1200, 1200));
        s.add(&v4(192, 168, 1, 10), packets(1100, 1100));
        // A third host below the bars: neither of the two holds half.
        s.add(&v4(192, 168, 1, 20), packets(400, 400));
        let f = findings(&view(s), &VolumeSection::default());
        let named: Vec<_> = f.iter().map(|f| (f.victim, f.prefix_len)).collect();
        assert_eq!(
            named,
            [(ip(192, 168, 1, 1), None), (ip(192, 168, 1, 10), None)]
        );
    }

    #[test]
    fn busy_services_and_quiet_floods_are_not_floods() {
        let v = VolumeSection::default();
        // A download: many packets, one flow.
        let mut s = DstVolume::default();
        s.add(&v4(10, 0, 0, 9), packets(80_000, 1));
        // A busy web server: 2 000 connections/s of 12 packets each.
        s.add(&v4(10, 0, 0, 10), packets(24_000, 2_000));
        // A trickle of new flows under the bar.
        s.add(&v4(10, 0, 0, 11), packets(400, 400));
        assert!(findings(&view(s.clone()), &v).is_empty());
        let off = VolumeSection {
            enabled: false,
            ..v.clone()
        };
        // A flood beside them is still found, on its host.
        s.add(&v4(10, 0, 0, 12), packets(9_000, 9_000));
        let f = findings(&view(s.clone()), &v);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].victim, ip(10, 0, 0, 12));
        assert!(findings(&view(s), &off).is_empty());
    }

    #[test]
    fn rates_are_per_second_of_epoch() {
        let mut s = DstVolume::default();
        s.add(&v4(10, 0, 0, 5), packets(900, 900));
        let mut g = view(s);
        assert!(findings(&g, &VolumeSection::default()).is_empty());
        g.epoch_ns = SEC / 2;
        assert_eq!(findings(&g, &VolumeSection::default()).len(), 1);
    }

    #[test]
    fn prefixes_contain_their_addresses() {
        use sensor_common::ip_in_prefix;
        assert!(ip_in_prefix(ip(10, 1, 2, 3), ip(10, 1, 0, 0), 16));
        assert!(!ip_in_prefix(ip(10, 2, 2, 3), ip(10, 1, 0, 0), 16));
        assert!(ip_in_prefix(ip(10, 1, 2, 3), ip(10, 1, 2, 3), 32));
        assert!(ip_in_prefix(ip(10, 1, 2, 3), ip(0, 0, 0, 0), 0));
        assert!(!ip_in_prefix(ip(10, 1, 2, 3), "::1".parse().unwrap(), 16));
    }
}
