//! The merge of the kernel's destination volume sketch (packets, bytes and
//! new flows per destination host and prefix) and its point queries. Keys
//! hash exactly as the XDP program hashes them
//! ([`sensor_common::sketch::dst_key_hash`]), so a query reads the cells the
//! program incremented.

use sensor_common::sketch::{
    DST_LEVELS, DST_PREFIX_DEFAULT, DST_ROWS, DST_WIDTH, DstSketch, VolumeCell, addr_words,
    dst_column, dst_key_hash,
};

const LEVELS: usize = DST_LEVELS as usize;
const ROWS: usize = DST_ROWS as usize;
const WIDTH: usize = DST_WIDTH as usize;

/// Which destination key a query is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DstLevel {
    /// The address itself.
    Host = 0,
    /// Its narrow prefix (IPv4 /24, IPv6 /64 by default).
    Narrow = 1,
    /// Its wide prefix (IPv4 /16, IPv6 /48 by default).
    Wide = 2,
}

/// One epoch (or several, merged) of the destination sketch, CPUs summed.
#[derive(Clone, PartialEq, Eq)]
pub struct DstVolume {
    /// `LEVELS × ROWS × WIDTH` cells, level-major (see [`DstVolume::at`]).
    cells: Box<[VolumeCell]>,
    prefix: [u8; 4],
}

impl Default for DstVolume {
    fn default() -> Self {
        Self::new(DST_PREFIX_DEFAULT)
    }
}

impl std::fmt::Debug for DstVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DstVolume")
            .field("prefix", &self.prefix)
            .field("packets", &self.total_packets())
            .finish_non_exhaustive()
    }
}

impl DstVolume {
    /// An empty sketch keyed with prefix lengths `[v4 narrow, v4 wide, v6
    /// narrow, v6 wide]` (the program's `SensorConfig::dst_prefix`).
    #[must_use]
    pub fn new(prefix: [u8; 4]) -> Self {
        Self {
            cells: vec![VolumeCell::default(); LEVELS * ROWS * WIDTH].into_boxed_slice(),
            prefix,
        }
    }

    /// Index of a cell.
    const fn at(level: usize, row: usize, col: usize) -> usize {
        (level * ROWS + row) * WIDTH + col
    }

    /// The prefix lengths the keys use.
    #[must_use]
    pub fn prefix(&self) -> [u8; 4] {
        self.prefix
    }

    /// Prefix length of `level` for an IPv4 (`v4`) or IPv6 address, in
    /// that family's bits.
    #[must_use]
    pub fn prefix_len(&self, level: DstLevel, v4: bool) -> u8 {
        match (level, v4) {
            (DstLevel::Host, true) => 32,
            (DstLevel::Host, false) => 128,
            (DstLevel::Narrow, true) => self.prefix[0],
            (DstLevel::Wide, true) => self.prefix[1],
            (DstLevel::Narrow, false) => self.prefix[2],
            (DstLevel::Wide, false) => self.prefix[3],
        }
    }

    /// Adds a kernel level (one CPU's) into `level`.
    pub(crate) fn add_level(&mut self, level: usize, k: &DstSketch) {
        let start = Self::at(level, 0, 0);
        let dst = &mut self.cells[start..start + ROWS * WIDTH];
        for (d, s) in dst.iter_mut().zip(k.cells.iter().flatten()) {
            add_cell(d, s);
        }
    }

    /// Adds every cell of `other` (run-long accumulation).
    pub fn merge(&mut self, other: &DstVolume) {
        for (d, s) in self.cells.iter_mut().zip(other.cells.iter()) {
            add_cell(d, s);
        }
    }

    /// Counts `c` for a destination at every level, as the XDP program
    /// does for each packet (tests and simulations).
    pub fn add(&mut self, dst: &[u8; 16], c: VolumeCell) {
        let (lo, hi) = addr_words(dst);
        for level in 0..LEVELS {
            let h = self.key_hash(lo, hi, level);
            for r in 0..ROWS {
                let i = Self::at(level, r, dst_column(h, r as u32) as usize);
                add_cell(&mut self.cells[i], &c);
            }
        }
    }

    /// Point query: an overestimate of each count of `dst`'s key at
    /// `level` (each field the minimum over the rows, as Count-Min does).
    #[must_use]
    pub fn estimate(&self, level: DstLevel, dst: &[u8; 16]) -> VolumeCell {
        let (lo, hi) = addr_words(dst);
        let l = level as usize;
        let h = self.key_hash(lo, hi, l);
        let mut out = VolumeCell {
            packets: u32::MAX,
            new_flows: u32::MAX,
            continued: u32::MAX,
            bytes: u32::MAX,
        };
        for r in 0..ROWS {
            let c = &self.cells[Self::at(l, r, dst_column(h, r as u32) as usize)];
            out.packets = out.packets.min(c.packets);
            out.new_flows = out.new_flows.min(c.new_flows);
            out.continued = out.continued.min(c.continued);
            out.bytes = out.bytes.min(c.bytes);
        }
        out
    }

    /// Packets counted (row 0 of the host level; every row sums the same).
    #[must_use]
    pub fn total_packets(&self) -> u64 {
        self.cells[..WIDTH]
            .iter()
            .fold(0u64, |a, c| a.wrapping_add(u64::from(c.packets)))
    }

    /// Zeroes every cell.
    pub fn clear(&mut self) {
        self.cells.fill(VolumeCell::default());
    }

    fn key_hash(&self, lo: u64, hi: u64, level: usize) -> u64 {
        let [v4n, v4w, v6n, v6w] = self.prefix;
        let (v4, v6) = if level == 1 { (v4n, v6n) } else { (v4w, v6w) };
        dst_key_hash(lo, hi, level as u32, v4, v6)
    }
}

fn add_cell(d: &mut VolumeCell, s: &VolumeCell) {
    d.packets = d.packets.wrapping_add(s.packets);
    d.new_flows = d.new_flows.wrapping_add(s.new_flows);
    d.continued = d.continued.wrapping_add(s.continued);
    d.bytes = d.bytes.saturating_add(s.bytes);
}

#[cfg(test)]
mod tests {
    use sensor_common::FlowKey;

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
        FlowKey::map_v4([a, b, c, d])
    }

    fn one(bytes: u32, new_flow: bool) -> VolumeCell {
        VolumeCell {
            packets: 1,
            new_flows: u32::from(new_flow),
            continued: 0,
            bytes,
        }
    }

    #[test]
    fn prefixes_sum_their_hosts() {
        let mut s = DstVolume::default();
        for host in 0..=255u8 {
            s.add(&v4(10, 1, 2, host), one(60, true));
        }
        s.add(&v4(10, 1, 3, 1), one(1500, false));
        let host = s.estimate(DstLevel::Host, &v4(10, 1, 2, 7));
        assert_eq!((host.packets, host.new_flows, host.bytes), (1, 1, 60));
        let narrow = s.estimate(DstLevel::Narrow, &v4(10, 1, 2, 0));
        assert_eq!((narrow.packets, narrow.new_flows), (256, 256));
        let wide = s.estimate(DstLevel::Wide, &v4(10, 1, 200, 200));
        assert_eq!(
            (wide.packets, wide.new_flows, wide.bytes),
            (257, 256, 256 * 60 + 1500)
        );
        assert_eq!(
            s.estimate(DstLevel::Wide, &v4(10, 2, 0, 0)),
            VolumeCell::default()
        );
        assert_eq!(s.total_packets(), 257);
        assert_eq!(s.prefix_len(DstLevel::Narrow, true), 24);
        assert_eq!(s.prefix_len(DstLevel::Wide, false), 48);
    }

    #[test]
    fn merge_adds_and_clear_empties() {
        let mut a = DstVolume::default();
        a.add(&v4(192, 0, 2, 1), one(100, true));
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.estimate(DstLevel::Host, &v4(192, 0, 2, 1)).bytes, 200);
        b.clear();
        assert_eq!(b.total_packets(), 0);
    }
}
