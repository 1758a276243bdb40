//! Pieces of Suricata's EVE format: timestamps, `flow_id`, protocol names,
//! signatures per attack class, and the severity function.

use std::{fmt::Write as _, net::IpAddr};

use sensor_common::{
    clock::{monotonic_ns, realtime_ns},
    hash::{fmix64, hash_addr},
};

use crate::model::row::AttackClass;

/// Maps `CLOCK_MONOTONIC` nanoseconds (the rows' event time) to wall-clock
/// nanoseconds since the Unix epoch. Fixed at stage start so the mapping is
/// monotonic; tests build one with a chosen offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockMap {
    /// realtime − monotonic, in ns.
    pub offset_ns: i128,
}

impl ClockMap {
    /// Reads both clocks now.
    #[must_use]
    pub(crate) fn from_system() -> Self {
        let real = realtime_ns();
        let mono = monotonic_ns();
        Self {
            offset_ns: i128::from(real) - i128::from(mono),
        }
    }

    /// Wall-clock ns since the epoch for a monotonic timestamp.
    #[must_use]
    pub(crate) fn wall_ns(&self, mono_ns: u64) -> i128 {
        i128::from(mono_ns) + self.offset_ns
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Appends a timestamp in Suricata's format, in UTC:
/// `2026-11-22T04:10:00.123456+0000`.
pub(crate) fn write_timestamp(out: &mut String, wall_ns: i128) {
    let us = wall_ns.div_euclid(1000);
    let secs = us.div_euclid(1_000_000) as i64;
    let frac = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}+0000",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
}

/// A timestamp string in Suricata's format.
#[must_use]
pub fn timestamp(wall_ns: i128) -> String {
    let mut s = String::with_capacity(31);
    write_timestamp(&mut s, wall_ns);
    s
}

fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

/// Largest integer a JSON double holds exactly: consumers parsing `flow_id`
/// as a double (JavaScript, jq) keep it intact.
const FLOW_ID_MASK: u64 = (1 << 53) - 1;

/// Deterministic `flow_id` for a 5-tuple, the same for both directions of a
/// connection (as Suricata's bidirectional flows), so alert and flow records
/// of one connection share it. Never 0.
#[must_use]
pub(crate) fn flow_id(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: u8) -> u64 {
    let a = (addr16(src), sport);
    let b = (addr16(dst), dport);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let h = fmix64(
        hash_addr(&lo.0)
            ^ fmix64(hash_addr(&hi.0) ^ (u64::from(lo.1) << 16 | u64::from(hi.1)))
            ^ (u64::from(proto) << 40),
    );
    (h & FLOW_ID_MASK).max(1)
}

/// EVE protocol name (IANA keyword, as Suricata prints it).
#[must_use]
pub fn proto_name(proto: u8) -> std::borrow::Cow<'static, str> {
    match proto {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        47 => "GRE".into(),
        50 => "ESP".into(),
        58 => "IPv6-ICMP".into(),
        132 => "SCTP".into(),
        n => n.to_string().into(),
    }
}

/// Signature of each alerting class: (`signature_id`, `signature`, `category`).
/// Categories are Suricata classtype descriptions so existing dashboards
/// group them with IDS alerts of the same kind.
#[must_use]
pub(crate) const fn signature(class: AttackClass) -> (u32, &'static str, &'static str) {
    match class {
        AttackClass::Benign => (9_100_000, "XDP-SENSOR benign", "Not Suspicious Traffic"),
        AttackClass::Flood => (
            9_100_001,
            "XDP-SENSOR volumetric flood (ML classifier)",
            "Attempted Denial of Service",
        ),
        AttackClass::Scan => (
            9_100_002,
            "XDP-SENSOR port scan or host sweep (ML classifier)",
            "Attempted Information Leak",
        ),
        AttackClass::BruteForce => (
            9_100_003,
            "XDP-SENSOR brute force against a service (ML classifier)",
            "Attempted Administrator Privilege Gain",
        ),
        AttackClass::Anomaly => (
            9_100_004,
            "XDP-SENSOR anomalous traffic (autoencoder)",
            "Potentially Bad Traffic",
        ),
    }
}

/// How much a class matters regardless of score: floods and brute force
/// threaten availability and credentials; scans are reconnaissance.
#[must_use]
pub(crate) const fn class_weight(class: AttackClass) -> f32 {
    match class {
        AttackClass::Benign => 0.0,
        AttackClass::Flood => 1.0,
        AttackClass::BruteForce => 0.9,
        AttackClass::Anomaly => 0.7,
        AttackClass::Scan => 0.6,
    }
}

/// Severity 0–100 and its EVE level (1 high … 3 low).
///
/// `score` is the detection confidence in 0..=1, `pps` the packets/s behind
/// the detection and `criticality` the victim's asset criticality (1..=5):
///
/// ```text
/// volume   = clamp(log10(1 + pps) / 6, 0, 1)        // 1 Mpps → 1
/// severity = 100 · score · (0.45·class_weight + 0.25·volume + 0.30·criticality/5)
/// EVE      = 1 if severity ≥ 70, 2 if ≥ 40, else 3
/// ```
///
/// The score multiplies everything, so a doubtful detection never ranks
/// high; volume and criticality separate the same attack on a lab box from
/// one on a production database.
#[must_use]
pub fn severity(score: f32, class: AttackClass, pps: f32, criticality: u8) -> (u8, u8) {
    let score = if score.is_finite() {
        score.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pps = if pps.is_finite() { pps.max(0.0) } else { 0.0 };
    let volume = ((1.0 + pps).log10() / 6.0).clamp(0.0, 1.0);
    let crit = f32::from(criticality.clamp(1, 5)) / 5.0;
    let s = 100.0 * score * (0.45 * class_weight(class) + 0.25 * volume + 0.30 * crit);
    let n = s.round().clamp(0.0, 100.0) as u8;
    let eve = if n >= 70 {
        1
    } else if n >= 40 {
        2
    } else {
        3
    };
    (n, eve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_suricata() {
        // 2026-11-22T04:10:00.123456Z
        let ns = 1_795_320_600_123_456_789_i128;
        assert_eq!(timestamp(ns), "2026-11-22T04:10:00.123456+0000");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000+0000");
        assert_eq!(
            timestamp(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000+0000"
        );
    }

    #[test]
    fn flow_id_is_symmetric_and_distinct() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(flow_id(a, 1234, b, 80, 6), flow_id(b, 80, a, 1234, 6));
        assert_ne!(flow_id(a, 1234, b, 80, 6), flow_id(a, 1235, b, 80, 6));
        assert_ne!(flow_id(a, 1234, b, 80, 6), flow_id(a, 1234, b, 80, 17));
        assert!(flow_id(a, 1, b, 2, 6) <= FLOW_ID_MASK);
    }

    #[test]
    fn severity_is_monotonic_in_each_input() {
        let base = severity(0.8, AttackClass::Scan, 100.0, 3).0;
        assert!(severity(0.95, AttackClass::Scan, 100.0, 3).0 > base);
        assert!(severity(0.8, AttackClass::Flood, 100.0, 3).0 > base);
        assert!(severity(0.8, AttackClass::Scan, 100_000.0, 3).0 > base);
        assert!(severity(0.8, AttackClass::Scan, 100.0, 5).0 > base);
        assert_eq!(severity(0.99, AttackClass::Flood, 1e6, 5), (99, 1));
        assert_eq!(severity(0.5, AttackClass::Scan, 1.0, 1).1, 3);
        assert_eq!(severity(f32::NAN, AttackClass::Flood, f32::NAN, 5).0, 0);
    }
}
