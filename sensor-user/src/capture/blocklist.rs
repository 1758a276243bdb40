//! The XDP program's source lists (and its protected victims): blocklists (LPM tries of IPv4 and IPv6
//! prefixes, each entry with a reason, a note and an expiry time) and the
//! allowlist that overrides them. The same code changes the maps of a
//! sensor being loaded and, through their pins, those of a running sensor
//! (`sensor block add|del|list`).
//!
//! Every change ends by writing the lists' sizes to `LIST_SIZES`, where the
//! program learns that a list is empty and skips its lookup.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, Map, MapData, MapError,
        lpm_trie::{Key, LpmTrie},
    },
};
use sensor_common::{
    BLOCK_NOTE_LEN, BlockEntry, BlockReason, Protection, clock::monotonic_ns, list_size, map_names,
};

use crate::capture::{SensorError, pins::PinDir};

/// How long an entry blocks when no TTL is given.
pub const DEFAULT_BLOCK_TTL: Duration = Duration::from_mins(10);

/// An IPv4 or IPv6 prefix: `10.0.0.0/8`, `2001:db8::/32`, or an address
/// alone (a /32 or /128). Host bits are cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `addr/len` with the bits after `len` cleared; `None` when `len` is
    /// longer than the address.
    #[must_use]
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Some(Self {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                    len,
                })
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Some(Self {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    len,
                })
            }
            _ => None,
        }
    }

    /// The network address.
    #[must_use]
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    #[must_use]
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}`: `{addr}` is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0..={max}"))?,
        };
        Self::new(addr, len).ok_or_else(|| format!("`{s}`: bad prefix"))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One blocklist entry as user space sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Blocked {
    pub prefix: String,
    pub reason: &'static str,
    pub note: String,
    /// Seconds until the entry stops blocking; `None`: never.
    pub expires_in_s: Option<u64>,
    /// True when the entry has expired (the program passes its sources).
    pub expired: bool,
}

/// The lists of one program instance.
pub struct Lists {
    block_v4: LpmTrie<MapData, [u8; 4], BlockEntry>,
    block_v6: LpmTrie<MapData, [u8; 16], BlockEntry>,
    allow_v4: LpmTrie<MapData, [u8; 4], u32>,
    allow_v6: LpmTrie<MapData, [u8; 16], u32>,
    protected: HashMap<MapData, [u8; 16], Protection>,
    sizes: Array<MapData, u32>,
}

/// One protected victim as user space sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Protected {
    pub victim: IpAddr,
    /// Packets per second per CPU from sources without a completed exchange.
    pub rate_pps: u64,
    pub burst: u64,
    /// Seconds until the protection ends; `None`: never.
    pub expires_in_s: Option<u64>,
}

/// The key of `PROTECTED` for `addr` (IPv4-mapped for IPv4).
fn victim_key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn map_type(name: &'static str) -> impl Fn(MapError) -> SensorError {
    move |source| SensorError::MapType {
        name,
        source: Box::new(source),
    }
}

fn access(name: &'static str, op: &'static str) -> impl Fn(MapError) -> SensorError {
    move |source| SensorError::MapAccess {
        name,
        op,
        source: Box::new(source),
    }
}

impl Lists {
    /// Takes the lists' maps out of a loaded program (before it is attached,
    /// or in tests).
    ///
    /// # Errors
    /// A map is missing or of another type.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, SensorError> {
        Self::from_maps(|name| ebpf.take_map(name).ok_or(SensorError::MissingMap { name }))
    }

    /// Opens the pinned lists of a running sensor.
    ///
    /// # Errors
    /// A pin cannot be opened or is not the expected map.
    pub(crate) fn from_pins(pins: &PinDir) -> Result<Self, SensorError> {
        Self::from_maps(|name| {
            let data =
                MapData::from_pin(pins.map(name)).map_err(access(name, "opening the pinned"))?;
            Map::from_map_data(data).map_err(map_type(name))
        })
    }

    fn from_maps(
        mut open: impl FnMut(&'static str) -> Result<Map, SensorError>,
    ) -> Result<Self, SensorError> {
        let n = map_names::BLOCK_V4;
        let block_v4 = LpmTrie::try_from(open(n)?).map_err(map_type(n))?;
        let n = map_names::BLOCK_V6;
        let block_v6 = LpmTrie::try_from(open(n)?).map_err(map_type(n))?;
        let n = map_names::ALLOW_V4;
        let allow_v4 = LpmTrie::try_from(open(n)?).map_err(map_type(n))?;
        let n = map_names::ALLOW_V6;
        let allow_v6 = LpmTrie::try_from(open(n)?).map_err(map_type(n))?;
        let n = map_names::PROTECTED;
        let protected = HashMap::try_from(open(n)?).map_err(map_type(n))?;
        let n = map_names::LIST_SIZES;
        let sizes = Array::try_from(open(n)?).map_err(map_type(n))?;
        Ok(Self {
            block_v4,
            block_v6,
            allow_v4,
            allow_v6,
            protected,
            sizes,
        })
    }

    /// Blocks `prefix` for `ttl` (`None` or zero: until removed), replacing
    /// any entry of the same prefix (which renews it).
    ///
    /// # Errors
    /// The map refused the entry (full).
    pub fn block(
        &mut self,
        prefix: Prefix,
        ttl: Option<Duration>,
        reason: BlockReason,
        note: &str,
    ) -> Result<(), SensorError> {
        let now = monotonic_ns();
        let expires_ns = match ttl {
            Some(t) if !t.is_zero() => {
                now.saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX))
            }
            _ => 0,
        };
        let mut text = [0u8; BLOCK_NOTE_LEN];
        // Cut at a character boundary so the stored note stays UTF-8.
        let mut end = note.len().min(BLOCK_NOTE_LEN);
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].copy_from_slice(&note.as_bytes()[..end]);
        let entry = BlockEntry {
            expires_ns,
            added_ns: now,
            reason: reason as u32,
            _pad: 0,
            note: text,
        };
        let len = u32::from(prefix.len);
        let op = "adding to";
        match prefix.addr {
            IpAddr::V4(a) => self
                .block_v4
                .insert(&Key::new(len, a.octets()), entry, 0)
                .map_err(access(map_names::BLOCK_V4, op))?,
            IpAddr::V6(a) => self
                .block_v6
                .insert(&Key::new(len, a.octets()), entry, 0)
                .map_err(access(map_names::BLOCK_V6, op))?,
        }
        self.recount()
    }

    /// Removes the entry of exactly `prefix`; false when there was none.
    ///
    /// # Errors
    /// The sizes could not be written.
    pub fn unblock(&mut self, prefix: Prefix) -> Result<bool, SensorError> {
        let len = u32::from(prefix.len);
        let removed = match prefix.addr {
            IpAddr::V4(a) => self.block_v4.remove(&Key::new(len, a.octets())).is_ok(),
            IpAddr::V6(a) => self.block_v6.remove(&Key::new(len, a.octets())).is_ok(),
        };
        self.recount()?;
        Ok(removed)
    }

    /// Never blocks sources in `prefix`, whatever the blocklist says.
    ///
    /// # Errors
    /// The map refused the entry (full).
    pub fn allow(&mut self, prefix: Prefix) -> Result<(), SensorError> {
        let len = u32::from(prefix.len);
        let op = "adding to";
        match prefix.addr {
            IpAddr::V4(a) => self
                .allow_v4
                .insert(&Key::new(len, a.octets()), 1, 0)
                .map_err(access(map_names::ALLOW_V4, op))?,
            IpAddr::V6(a) => self
                .allow_v6
                .insert(&Key::new(len, a.octets()), 1, 0)
                .map_err(access(map_names::ALLOW_V6, op))?,
        }
        self.recount()
    }

    /// The blocklist entries, IPv4 first.
    #[must_use]
    pub fn blocked(&self) -> Vec<Blocked> {
        let now = monotonic_ns();
        let describe = |addr: IpAddr, len: u32, e: &BlockEntry| {
            let end = e
                .note
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(BLOCK_NOTE_LEN);
            Blocked {
                prefix: format!("{addr}/{len}"),
                reason: match BlockReason::from_u32(e.reason) {
                    Some(BlockReason::Operator) => "operator",
                    Some(BlockReason::Alert) => "alert",
                    None => "unknown",
                },
                note: String::from_utf8_lossy(&e.note[..end]).into_owned(),
                expires_in_s: (e.expires_ns != 0)
                    .then(|| e.expires_ns.saturating_sub(now) / 1_000_000_000),
                expired: e.expires_ns != 0 && e.expires_ns <= now,
            }
        };
        let mut out = Vec::new();
        for (k, e) in self.block_v4.iter().filter_map(Result::ok) {
            out.push(describe(IpAddr::from(k.data()), k.prefix_len(), &e));
        }
        for (k, e) in self.block_v6.iter().filter_map(Result::ok) {
            out.push(describe(IpAddr::from(k.data()), k.prefix_len(), &e));
        }
        out
    }

    /// Removes the entries that expired; returns how many.
    ///
    /// # Errors
    /// The sizes could not be written.
    pub fn remove_expired(&mut self) -> Result<usize, SensorError> {
        let now = monotonic_ns();
        let dead = |e: &BlockEntry| e.expires_ns != 0 && e.expires_ns <= now;
        let v4: Vec<Key<[u8; 4]>> = self
            .block_v4
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, e)| dead(e))
            .map(|(k, _)| k)
            .collect();
        let v6: Vec<Key<[u8; 16]>> = self
            .block_v6
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, e)| dead(e))
            .map(|(k, _)| k)
            .collect();
        let n = v4.len() + v6.len();
        for k in &v4 {
            let _ = self.block_v4.remove(k);
        }
        for k in &v6 {
            let _ = self.block_v6.remove(k);
        }
        if n > 0 {
            self.recount()?;
        }
        Ok(n)
    }

    /// Protects `victim`: packets to it from sources without a completed
    /// exchange pass at `rate_pps` per second per CPU in bursts of `burst`,
    /// for `ttl` (`None` or zero: until removed).
    ///
    /// # Errors
    /// A rate or burst out of range, or the map refused the entry.
    pub fn protect(
        &mut self,
        victim: IpAddr,
        rate_pps: u64,
        burst: u64,
        ttl: Option<Duration>,
    ) -> Result<(), SensorError> {
        let limit = u64::from(u32::MAX);
        if rate_pps == 0 || rate_pps > limit || burst == 0 || burst > limit {
            return Err(SensorError::InvalidConfig {
                what: "protection",
                reason: format!(
                    "rate {rate_pps} and burst {burst} must both be 1..={limit} packets"
                ),
            });
        }
        let expires_ns = match ttl {
            Some(t) if !t.is_zero() => {
                monotonic_ns().saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX))
            }
            _ => 0,
        };
        self.protected
            .insert(
                victim_key(victim),
                Protection::new(rate_pps, burst, expires_ns),
                0,
            )
            .map_err(access(map_names::PROTECTED, "adding to"))?;
        self.recount()
    }

    /// Ends the protection of `victim`; false when there was none.
    ///
    /// # Errors
    /// The sizes could not be written.
    pub fn unprotect(&mut self, victim: IpAddr) -> Result<bool, SensorError> {
        let removed = self.protected.remove(&victim_key(victim)).is_ok();
        self.recount()?;
        Ok(removed)
    }

    /// The protected victims.
    #[must_use]
    pub fn protected(&self) -> Vec<Protected> {
        let now = monotonic_ns();
        self.protected
            .iter()
            .filter_map(Result::ok)
            .map(|(k, p)| {
                let v6 = Ipv6Addr::from(k);
                Protected {
                    victim: v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    rate_pps: p.rate_pps(),
                    burst: p.burst(),
                    expires_in_s: (p.expires_ns != 0)
                        .then(|| p.expires_ns.saturating_sub(now) / 1_000_000_000),
                }
            })
            .collect()
    }

    /// Writes each list's entry count to `LIST_SIZES`.
    fn recount(&mut self) -> Result<(), SensorError> {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let sizes = [
            (list_size::BLOCK_V4, count(self.block_v4.keys().count())),
            (list_size::BLOCK_V6, count(self.block_v6.keys().count())),
            (list_size::ALLOW_V4, count(self.allow_v4.keys().count())),
            (list_size::ALLOW_V6, count(self.allow_v6.keys().count())),
            (list_size::PROTECTED, count(self.protected.keys().count())),
        ];
        for (i, n) in sizes {
            self.sizes
                .set(i, n, 0)
                .map_err(access(map_names::LIST_SIZES, "writing"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_clear_host_bits() {
        let p: Prefix = "10.1.2.3/16".parse().unwrap();
        assert_eq!(p.to_string(), "10.1.0.0/16");
        let p: Prefix = "10.1.2.3".parse().unwrap();
        assert_eq!(p.to_string(), "10.1.2.3/32");
        let p: Prefix = "2001:db8::1/32".parse().unwrap();
        assert_eq!(p.to_string(), "2001:db8::/32");
        assert_eq!("0.0.0.0/0".parse::<Prefix>().unwrap().prefix_len(), 0);
        assert!(
            "10.0.0.0/33"
                .parse::<Prefix>()
                .unwrap_err()
                .contains("0..=32")
        );
        assert!(
            "eth0"
                .parse::<Prefix>()
                .unwrap_err()
                .contains("not an IPv4")
        );
    }
}
