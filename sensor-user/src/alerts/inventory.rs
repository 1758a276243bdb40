//! Asset inventory: subnets with a name, owner, criticality and tags, matched
//! by longest prefix. Addresses outside every subnet are "unknown" (never an
//! error) with the default criticality.
//!
//! File format (TOML):
//!
//! ```toml
//! default_criticality = 3          # for unknown addresses, 1..=5
//!
//! [[asset]]
//! subnet = "10.1.0.0/16"
//! name = "office"
//! owner = "it-ops"
//! criticality = 2                  # 1 (lab) .. 5 (crown jewels)
//! tags = ["workstations"]
//! ```

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    str::FromStr,
    sync::Arc,
};

use serde::{Deserialize, Deserializer};

use super::{
    AlertsError,
    config::{parse_toml, read_text},
};

/// Criticality of addresses the inventory does not know.
pub(crate) const DEFAULT_CRITICALITY: u8 = 3;

/// What the inventory says about one address (shared, cheap to clone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asset {
    pub name: Arc<str>,
    pub owner: Arc<str>,
    /// 1 (lowest) ..= 5 (highest).
    pub criticality: u8,
    pub tags: Arc<[String]>,
    /// The matching subnet, or "unknown".
    pub subnet: Arc<str>,
}

/// An IP network in canonical form (host bits cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    fn contains_bits(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(n), IpAddr::V4(x)) => mask4(x, self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(x)) => mask6(x, self.prefix) == u128::from(n),
            _ => false,
        }
    }
}

fn mask4(a: Ipv4Addr, prefix: u8) -> u32 {
    let bits = u32::from(a);
    if prefix == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask6(a: Ipv6Addr, prefix: u8) -> u128 {
    let bits = u128::from(a);
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix)))
    }
}

/// Folds IPv4-mapped IPv6 addresses to IPv4 so one subnet matches both forms.
#[must_use]
pub(crate) fn canonical(a: IpAddr) -> IpAddr {
    a.to_canonical()
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR subnet"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0..={max}"))?,
            None => max,
        };
        let addr = match addr {
            IpAddr::V4(v) => IpAddr::V4(Ipv4Addr::from(mask4(v, prefix))),
            IpAddr::V6(v) => IpAddr::V6(Ipv6Addr::from(mask6(v, prefix))),
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn criticality<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = i64::deserialize(d)?;
    u8::try_from(n)
        .ok()
        .filter(|n| (1..=5).contains(n))
        .ok_or_else(|| serde::de::Error::custom(format!("criticality must be 1..=5, got {n}")))
}

fn default_criticality() -> u8 {
    DEFAULT_CRITICALITY
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssetEntry {
    subnet: Cidr,
    name: String,
    #[serde(default)]
    owner: String,
    #[serde(deserialize_with = "criticality", default = "default_criticality")]
    criticality: u8,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    #[serde(deserialize_with = "criticality", default = "default_criticality")]
    default_criticality: u8,
    #[serde(default)]
    asset: Vec<AssetEntry>,
}

/// Subnets sorted longest prefix first; a linear scan returns the longest
/// match. Lookups happen per emitted record, not per row, and inventories are
/// hundreds of entries, so a trie would not pay for itself.
#[derive(Clone, Debug)]
pub struct Inventory {
    entries: Vec<(Cidr, Asset)>,
    unknown: Asset,
}

impl Default for Inventory {
    fn default() -> Self {
        Self::with_default_criticality(DEFAULT_CRITICALITY)
    }
}

impl Inventory {
    fn with_default_criticality(c: u8) -> Self {
        Self {
            entries: Vec::new(),
            unknown: Asset {
                name: "unknown".into(),
                owner: "unknown".into(),
                criticality: c,
                tags: Arc::from(Vec::new()),
                subnet: "unknown".into(),
            },
        }
    }

    /// Loads an inventory file.
    ///
    /// # Errors
    /// [`AlertsError::Config`] with the path and line of the bad entry.
    pub fn load(path: &Path) -> Result<Self, AlertsError> {
        Self::parse(path, &read_text(path)?)
    }

    /// Parses inventory text; `path` only labels errors.
    ///
    /// # Errors
    /// [`AlertsError::Config`] with the path and line of the bad entry.
    pub fn parse(path: &Path, text: &str) -> Result<Self, AlertsError> {
        let file: InventoryFile = parse_toml(path, text)?;
        let mut inv = Self::with_default_criticality(file.default_criticality);
        for e in file.asset {
            let subnet: Arc<str> = e.subnet.to_string().into();
            inv.entries.push((
                e.subnet,
                Asset {
                    name: e.name.into(),
                    owner: if e.owner.is_empty() {
                        "unknown".into()
                    } else {
                        e.owner.into()
                    },
                    criticality: e.criticality,
                    tags: e.tags.into(),
                    subnet,
                },
            ));
        }
        // Stable: equal prefixes keep file order, so the first listed wins.
        inv.entries.sort_by_key(|e| std::cmp::Reverse(e.0.prefix));
        Ok(inv)
    }

    /// The asset owning `addr`, or the "unknown" asset.
    #[must_use]
    pub fn lookup(&self, addr: IpAddr) -> &Asset {
        let a = canonical(addr);
        self.entries
            .iter()
            .find(|(c, _)| c.contains_bits(a))
            .map_or(&self.unknown, |(_, asset)| asset)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = r#"
default_criticality = 2

[[asset]]
subnet = "10.0.0.0/8"
name = "corp"
owner = "it"
criticality = 2

[[asset]]
subnet = "10.1.2.0/24"
name = "db"
owner = "dba"
criticality = 5
tags = ["pci"]

[[asset]]
subnet = "2001:db8::/32"
name = "v6-lab"
"#;

    #[test]
    fn longest_prefix_wins_and_unknown_is_not_an_error() {
        let inv = Inventory::parse(Path::new("inv.toml"), INV).unwrap();
        assert_eq!(&*inv.lookup("10.1.2.3".parse().unwrap()).name, "db");
        assert_eq!(inv.lookup("10.1.2.3".parse().unwrap()).criticality, 5);
        assert_eq!(&*inv.lookup("10.9.9.9".parse().unwrap()).name, "corp");
        assert_eq!(&*inv.lookup("::ffff:10.1.2.9".parse().unwrap()).name, "db");
        assert_eq!(&*inv.lookup("2001:db8::1".parse().unwrap()).name, "v6-lab");
        let u = inv.lookup("192.0.2.1".parse().unwrap());
        assert_eq!(
            (&*u.name, &*u.owner, u.criticality),
            ("unknown", "unknown", 2)
        );
    }

    #[test]
    fn bad_entries_name_path_and_line() {
        let text = "[[asset]]\nsubnet = \"10.0.0.0/8\"\nname = \"a\"\n\n[[asset]]\nsubnet = \"10.0.0.0/33\"\nname = \"b\"\n";
        let err = Inventory::parse(Path::new("/etc/sensor/inv.toml"), text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/sensor/inv.toml:6"), "{msg}");
        assert!(msg.contains("prefix length"), "{msg}");
        let err = Inventory::parse(
            Path::new("i.toml"),
            "[[asset]]\nsubnet=\"1.2.3.0/24\"\nname=\"x\"\ncriticality = 9\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("i.toml:4"), "{err}");
    }
}
