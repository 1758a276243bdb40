//! The gateway-wide view from the kernel's sketches.
//!
//! Workers see only the flows their ring carries, so per-host statistics in
//! a worker cover about `1/N` of a host's traffic. The XDP program's
//! Count-Min sketch of packets per source and HyperLogLog of distinct sources
//! cover every packet on every CPU; the control thread merges them once per
//! epoch and publishes a [`GatewayView`], which each worker picks up on its
//! next tick. Two features come from it: the source's packet rate over the
//! whole gateway, and the number of distinct sources the protected network
//! received packets from (the victim-side view of a spoofed flood). Both lag
//! by up to one epoch; the workers' own 1 s windows cover the first second.

use std::io::{self, Read, Write};

use crate::capture::{sketch::CountMin, volume::DstVolume};

/// One completed epoch of the kernel's sketches, as the features use it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayView {
    /// Epochs completed before this one was published (identifies the view).
    pub seq: u64,
    /// Length of the epoch, ns (the control thread's measured flip interval).
    pub epoch_ns: u64,
    /// Packets per source address over the epoch, all CPUs merged.
    pub src_packets: CountMin,
    /// Distinct source addresses over the epoch (HyperLogLog estimate).
    pub distinct_sources: f64,
    /// Packets, bytes and new flows per destination host and prefix over
    /// the epoch (the alert stage's volume rule; not in the fixture format,
    /// which the features alone read).
    pub dst: DstVolume,
}

impl GatewayView {
    fn epoch_s(&self) -> f64 {
        (self.epoch_ns as f64 / 1e9).max(1e-3)
    }

    /// Packets per second the gateway received from `src` in the epoch.
    #[must_use]
    pub(crate) fn src_packets_per_s(&self, src: &[u8; 16]) -> f64 {
        self.src_packets.estimate(src) as f64 / self.epoch_s()
    }

    /// Distinct sources per second of epoch.
    #[must_use]
    pub(crate) fn distinct_sources_per_s(&self) -> f64 {
        self.distinct_sources / self.epoch_s()
    }

    /// Appends the view in the fixture format: `seq`, `epoch_ns`,
    /// `distinct_sources` (f64 bits), the number of non-zero Count-Min cells,
    /// then `(cell index u32, count u64)` pairs; all little-endian.
    ///
    /// # Errors
    /// The writer failed.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.seq.to_le_bytes())?;
        w.write_all(&self.epoch_ns.to_le_bytes())?;
        w.write_all(&self.distinct_sources.to_bits().to_le_bytes())?;
        let cells: Vec<(u32, u64)> = self.src_packets.nonzero_cells().collect();
        w.write_all(&(cells.len() as u32).to_le_bytes())?;
        for (i, c) in cells {
            w.write_all(&i.to_le_bytes())?;
            w.write_all(&c.to_le_bytes())?;
        }
        Ok(())
    }

    /// Reads one view written by [`GatewayView::write_to`]; `None` at a
    /// clean end of input.
    ///
    /// # Errors
    /// Truncated input or a cell index outside the sketch.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Self>> {
        let mut b8 = [0u8; 8];
        match r.read_exact(&mut b8) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let seq = u64::from_le_bytes(b8);
        r.read_exact(&mut b8)?;
        let epoch_ns = u64::from_le_bytes(b8);
        r.read_exact(&mut b8)?;
        let distinct_sources = f64::from_bits(u64::from_le_bytes(b8));
        let mut b4 = [0u8; 4];
        r.read_exact(&mut b4)?;
        let n = u32::from_le_bytes(b4);
        let mut src_packets = CountMin::new();
        for _ in 0..n {
            r.read_exact(&mut b4)?;
            r.read_exact(&mut b8)?;
            let idx = u32::from_le_bytes(b4);
            if !src_packets.set_cell(idx, u64::from_le_bytes(b8)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("Count-Min cell {idx} is outside the sketch"),
                ));
            }
        }
        Ok(Some(Self {
            seq,
            epoch_ns,
            src_packets,
            distinct_sources,
            dst: DstVolume::default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_fixture_format() {
        let mut v = GatewayView {
            seq: 7,
            epoch_ns: 1_000_400_000,
            distinct_sources: 123.25,
            ..GatewayView::default()
        };
        v.src_packets.add(&[1; 16], 500);
        v.src_packets.add(&[2; 16], 7);
        let mut buf = Vec::new();
        v.write_to(&mut buf).unwrap();
        v.write_to(&mut buf).unwrap();
        let mut r = buf.as_slice();
        assert_eq!(GatewayView::read_from(&mut r).unwrap().as_ref(), Some(&v));
        assert_eq!(GatewayView::read_from(&mut r).unwrap().as_ref(), Some(&v));
        assert_eq!(GatewayView::read_from(&mut r).unwrap(), None);
        assert!(GatewayView::read_from(&mut &buf[..20]).is_err());
        let rate = v.src_packets_per_s(&[1; 16]);
        assert!((rate - 500.0 / 1.0004).abs() < 1e-6, "{rate}");
    }
}
