//! The control thread: once per epoch it flips `SENSOR_CONFIG.epoch`, reads the
//! epoch the program just left (all CPUs), merges it (sum for Count-Min, max
//! for `HyperLogLog`), zeroes it for reuse, and publishes a [`SketchSnapshot`]
//! with that epoch and the run-long accumulation. The data path never stops:
//! the program always writes the other epoch.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues};
use sensor_common::{
    SensorConfig, map_names,
    sketch::{
        CMS_ROWS, CMS_WIDTH, CmsRow, DST_LEVELS, DST_ROWS, DST_WIDTH, DstSketch, EPOCHS,
        HLL_REGISTERS, HllRegisters, VolumeCell, cms_index, dst_index,
    },
};
use tracing::{debug, warn};

use crate::{
    capture::error::SensorError,
    capture::gateway::GatewayView,
    capture::loader::Sensor,
    capture::{
        sketch::{CountMin, HyperLogLog},
        volume::DstVolume,
    },
};

/// Default epoch length.
pub(crate) const EPOCH: Duration = Duration::from_secs(1);
/// Wait after a flip before reading the old epoch: a program run that loaded
/// the old epoch number just before the flip finishes its update within
/// microseconds (XDP runs to completion), so a few milliseconds is ample.
const FLIP_GRACE: Duration = Duration::from_millis(5);

/// The three sketches of one epoch (or of a whole run), CPUs merged.
#[derive(Clone, Debug, Default)]
pub struct EpochSketch {
    /// Packets per source address.
    pub packets: CountMin,
    /// Bytes per source address.
    pub bytes: CountMin,
    /// Distinct source addresses.
    pub distinct_sources: HyperLogLog,
    /// Packets, bytes and new flows per destination host and prefix.
    pub dst: DstVolume,
}

impl EpochSketch {
    /// Adds `other` into `self` (sum / max).
    pub fn merge(&mut self, other: &EpochSketch) {
        self.packets.merge(&other.packets);
        self.bytes.merge(&other.bytes);
        self.distinct_sources.merge(&other.distinct_sources);
        self.dst.merge(&other.dst);
    }
}

/// What other stages read: the latest complete epoch and the run so far.
#[derive(Clone, Debug, Default)]
pub struct SketchSnapshot {
    /// Epoch flips done so far.
    pub epochs_flipped: u64,
    /// The most recently completed epoch.
    pub last_epoch: EpochSketch,
    /// Every epoch read so far, accumulated.
    pub run: EpochSketch,
    /// The most recently completed epoch as the feature extractors use it.
    pub gateway: Option<Arc<GatewayView>>,
}

#[derive(Debug, Default)]
struct Shared {
    snap: Mutex<Arc<SketchSnapshot>>,
    /// `gateway.seq` of the latest snapshot, readable without the lock.
    gateway_seq: AtomicU64,
}

/// A shared handle to the latest snapshot. Readers clone the `Arc` (one short
/// lock per read) and never block the control thread for longer than that;
/// workers first compare [`SketchHandle::gateway_seq`], so they take the lock
/// once per epoch, not once per tick.
#[derive(Clone, Debug, Default)]
pub struct SketchHandle(Arc<Shared>);

impl SketchHandle {
    /// The latest published snapshot.
    #[must_use]
    pub fn latest(&self) -> Arc<SketchSnapshot> {
        Arc::clone(&self.0.snap.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sequence number of the latest gateway view (0 before the first epoch
    /// completes). One atomic load.
    #[must_use]
    pub(crate) fn gateway_seq(&self) -> u64 {
        self.0.gateway_seq.load(Ordering::Acquire)
    }

    /// The latest gateway view, if it is newer than `seen`.
    #[must_use]
    pub(crate) fn gateway_if_newer(&self, seen: u64) -> Option<Arc<GatewayView>> {
        if self.gateway_seq() <= seen {
            return None;
        }
        self.latest().gateway.clone().filter(|g| g.seq > seen)
    }

    fn publish(&self, snap: SketchSnapshot) {
        let seq = snap.gateway.as_ref().map_or(0, |g| g.seq);
        *self.0.snap.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(snap);
        self.0.gateway_seq.store(seq, Ordering::Release);
    }
}

/// The maps the control thread owns.
pub struct SketchMaps {
    config: Array<MapData, SensorConfig>,
    packets: PerCpuArray<MapData, CmsRow>,
    bytes: PerCpuArray<MapData, CmsRow>,
    hll: PerCpuArray<MapData, HllRegisters>,
    dst: PerCpuArray<MapData, DstSketch>,
}

fn map_type(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> SensorError {
    move |source| SensorError::MapType {
        name,
        source: Box::new(source),
    }
}

impl SketchMaps {
    /// Takes the config and sketch maps out of the sensor.
    ///
    /// # Errors
    /// A map is missing or has the wrong layout.
    pub fn take(sensor: &mut Sensor) -> Result<Self, SensorError> {
        use map_names::{
            DST_VOLUME, SENSOR_CONFIG, SRC_BYTES_CMS, SRC_DISTINCT_HLL, SRC_PACKETS_CMS,
        };
        Ok(Self {
            config: Array::try_from(sensor.take_map(SENSOR_CONFIG)?)
                .map_err(map_type(SENSOR_CONFIG))?,
            packets: PerCpuArray::try_from(sensor.take_map(SRC_PACKETS_CMS)?)
                .map_err(map_type(SRC_PACKETS_CMS))?,
            bytes: PerCpuArray::try_from(sensor.take_map(SRC_BYTES_CMS)?)
                .map_err(map_type(SRC_BYTES_CMS))?,
            hll: PerCpuArray::try_from(sensor.take_map(SRC_DISTINCT_HLL)?)
                .map_err(map_type(SRC_DISTINCT_HLL))?,
            dst: PerCpuArray::try_from(sensor.take_map(DST_VOLUME)?)
                .map_err(map_type(DST_VOLUME))?,
        })
    }
}

/// Epoch rotation and accumulation, independent of the thread that drives it.
pub struct Controller {
    maps: SketchMaps,
    config: SensorConfig,
    snapshot: SketchSnapshot,
    handle: SketchHandle,
    /// When the epoch now being read began (the previous flip).
    epoch_started: Instant,
}

fn read_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> SensorError {
    move |source| SensorError::MapAccess {
        name,
        op: "reading",
        source: Box::new(source),
    }
}

fn write_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> SensorError {
    move |source| SensorError::MapAccess {
        name,
        op: "writing",
        source: Box::new(source),
    }
}

impl Controller {
    /// Reads the current configuration and starts with empty sketches.
    ///
    /// # Errors
    /// `SENSOR_CONFIG` cannot be read.
    pub fn new(maps: SketchMaps, handle: SketchHandle) -> Result<Self, SensorError> {
        let config = maps
            .config
            .get(&0, 0)
            .map_err(read_err(map_names::SENSOR_CONFIG))?;
        Ok(Self {
            maps,
            config,
            snapshot: SketchSnapshot::default(),
            handle,
            epoch_started: Instant::now(),
        })
    }

    /// Flips the epoch, then reads, accumulates and zeroes the epoch the
    /// program left, and publishes the result.
    ///
    /// # Errors
    /// A map read or write failed.
    pub fn flip(&mut self) -> Result<(), SensorError> {
        let old = self.config.epoch & 1;
        let mut next = self.config;
        next.epoch = old ^ 1;
        self.maps
            .config
            .set(0, next, 0)
            .map_err(write_err(map_names::SENSOR_CONFIG))?;
        self.config = next;
        let flipped = Instant::now();
        let epoch_ns = u64::try_from((flipped - self.epoch_started).as_nanos()).unwrap_or(u64::MAX);
        self.epoch_started = flipped;
        std::thread::sleep(FLIP_GRACE);
        let sketch = self.read_epoch(old)?;
        self.zero_epoch(old)?;
        self.snapshot.run.merge(&sketch);
        self.snapshot.epochs_flipped += 1;
        self.snapshot.gateway = Some(Arc::new(GatewayView {
            seq: self.snapshot.epochs_flipped,
            epoch_ns,
            src_packets: sketch.packets.clone(),
            distinct_sources: sketch.distinct_sources.estimate(),
            dst: sketch.dst.clone(),
        }));
        self.snapshot.last_epoch = sketch;
        self.handle.publish(self.snapshot.clone());
        Ok(())
    }

    /// Reads both epochs without flipping (at shutdown, after the program is
    /// detached) so nothing counted is lost, and returns the final snapshot.
    ///
    /// # Errors
    /// A map read failed.
    pub fn finish(mut self) -> Result<SketchSnapshot, SensorError> {
        for epoch in 0..EPOCHS {
            let sketch = self.read_epoch(epoch)?;
            self.snapshot.run.merge(&sketch);
            if epoch == self.config.epoch & 1 {
                // The epoch in progress is the freshest view.
                self.snapshot.last_epoch = sketch;
            }
        }
        self.handle.publish(self.snapshot.clone());
        Ok(self.snapshot)
    }

    /// Reads one epoch of the three sketches, merging CPUs.
    ///
    /// # Errors
    /// A map read failed.
    pub(crate) fn read_epoch(&self, epoch: u32) -> Result<EpochSketch, SensorError> {
        let mut out = EpochSketch {
            dst: DstVolume::new(self.config.dst_prefix),
            ..EpochSketch::default()
        };
        for level in 0..DST_LEVELS {
            let cells = self
                .maps
                .dst
                .get(&dst_index(epoch, level), 0)
                .map_err(read_err(map_names::DST_VOLUME))?;
            for cpu in cells.iter() {
                out.dst.add_level(level as usize, cpu);
            }
        }
        for row in 0..CMS_ROWS {
            let idx = cms_index(epoch, row);
            let pk = self
                .maps
                .packets
                .get(&idx, 0)
                .map_err(read_err(map_names::SRC_PACKETS_CMS))?;
            let by = self
                .maps
                .bytes
                .get(&idx, 0)
                .map_err(read_err(map_names::SRC_BYTES_CMS))?;
            for cpu in pk.iter() {
                out.packets.add_row(row as usize, cpu);
            }
            for cpu in by.iter() {
                out.bytes.add_row(row as usize, cpu);
            }
        }
        let regs = self
            .maps
            .hll
            .get(&(epoch & 1), 0)
            .map_err(read_err(map_names::SRC_DISTINCT_HLL))?;
        for cpu in regs.iter() {
            out.distinct_sources.merge_registers(&cpu.regs);
        }
        Ok(out)
    }

    fn zero_epoch(&mut self, epoch: u32) -> Result<(), SensorError> {
        let ncpu =
            aya::util::nr_cpus().map_err(|(what, source)| SensorError::System { what, source })?;
        for row in 0..CMS_ROWS {
            let idx = cms_index(epoch, row);
            let zero = || {
                per_cpu_zero(
                    CmsRow {
                        cells: [0; CMS_WIDTH as usize],
                    },
                    ncpu,
                )
            };
            self.maps
                .packets
                .set(idx, zero()?, 0)
                .map_err(write_err(map_names::SRC_PACKETS_CMS))?;
            self.maps
                .bytes
                .set(idx, zero()?, 0)
                .map_err(write_err(map_names::SRC_BYTES_CMS))?;
        }
        for level in 0..DST_LEVELS {
            #[expect(
                clippy::large_stack_arrays,
                reason = "aya's per-CPU values are built from a value: 32 KiB on the control \
                          thread's stack, once per level and epoch"
            )]
            let zero = per_cpu_zero(
                DstSketch {
                    cells: [[VolumeCell::default(); DST_WIDTH as usize]; DST_ROWS as usize],
                },
                ncpu,
            )?;
            self.maps
                .dst
                .set(dst_index(epoch, level), zero, 0)
                .map_err(write_err(map_names::DST_VOLUME))?;
        }
        let zero = per_cpu_zero(
            HllRegisters {
                regs: [0; HLL_REGISTERS as usize],
            },
            ncpu,
        )?;
        self.maps
            .hll
            .set(epoch & 1, zero, 0)
            .map_err(write_err(map_names::SRC_DISTINCT_HLL))?;
        Ok(())
    }
}

/// `ncpu` copies of a zeroed value, to reset a per-CPU map slot.
fn per_cpu_zero<T: aya::Pod>(zero: T, ncpu: usize) -> Result<PerCpuValues<T>, SensorError> {
    PerCpuValues::try_from(vec![zero; ncpu]).map_err(|source| SensorError::System {
        what: "building per-CPU zero values",
        source,
    })
}

/// The running control thread.
pub(crate) struct ControlThread {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<Result<SketchSnapshot, SensorError>>,
}

impl ControlThread {
    /// Starts rotating epochs every `period`, publishing to `sketches`.
    ///
    /// # Errors
    /// The configuration cannot be read or the thread cannot start.
    pub(crate) fn spawn(
        maps: SketchMaps,
        period: Duration,
        sketches: SketchHandle,
    ) -> Result<Self, SensorError> {
        let mut ctl = Controller::new(maps, sketches)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("sensor-control".into())
            .spawn(move || {
                // Any message or a dropped sender ends the loop.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    if let Err(e) = ctl.flip() {
                        // Keep going: the next epoch may succeed, and the
                        // final read still collects what is in the maps.
                        warn!(error = %e, "sketch epoch rotation failed");
                    } else {
                        debug!(epochs = ctl.snapshot.epochs_flipped, "sketch epoch rotated");
                    }
                }
                ctl.finish()
            })
            .map_err(|source| SensorError::System {
                what: "spawning the control thread",
                source,
            })?;
        Ok(Self { stop, handle })
    }

    /// Stops rotating, reads both epochs one last time and returns the final
    /// snapshot.
    ///
    /// # Errors
    /// The final read failed or the thread panicked.
    pub(crate) fn stop(self) -> Result<SketchSnapshot, SensorError> {
        // A send error means the thread already left its loop: fine.
        let _ = self.stop.send(());
        self.handle.join().unwrap_or_else(|_| {
            Err(SensorError::System {
                what: "the control thread",
                source: std::io::Error::other("panicked"),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    //! Kernel round trip: the real XDP program (through `BPF_PROG_TEST_RUN`,
    //! not attached anywhere) writes sketches and ring events; the control
    //! and worker code read them back.

    use super::*;
    use crate::capture::volume::DstLevel;
    use crate::capture::{
        loader::{AttachMode, LoadOptions},
        workers::{NoopHandler, WorkerState},
    };
    use sensor_common::FlowKey;

    /// Ethernet + IPv4 (no options) + UDP with `payload` zero bytes.
    fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + payload];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&u16::try_from(20 + 8 + payload).unwrap().to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let udp = &mut f[34..42];
        udp[0..2].copy_from_slice(&sport.to_be_bytes());
        udp[2..4].copy_from_slice(&dport.to_be_bytes());
        udp[4..6].copy_from_slice(&u16::try_from(8 + payload).unwrap().to_be_bytes());
        f
    }

    #[test]
    fn epochs_rotate_without_losing_counts_and_rings_decode() {
        if !sensor_lab::require_root("epochs_rotate_without_losing_counts_and_rings_decode") {
            return;
        }
        // One CPU, so each flow has one per-CPU entry and one Start event.
        if let Some(core) = core_affinity::get_core_ids().and_then(|c| c.first().copied()) {
            core_affinity::set_for_current(core);
        }
        let mut sensor = Sensor::load(LoadOptions {
            iface: "lo".into(),
            mode: AttachMode::Skb,
            mirror: false,
            n_workers: 2,
            flow_table_size: 4096,
            ring_bytes: 1 << 16,
            dst_prefix: sensor_common::sketch::DST_PREFIX_DEFAULT,
            enforce: crate::capture::loader::EnforceMode::Off,
            allow: Vec::new(),
        })
        .expect("load");
        let mut rings = sensor.take_rings().expect("rings");
        let mut ctl = Controller::new(
            SketchMaps::take(&mut sensor).expect("maps"),
            SketchHandle::default(),
        )
        .expect("controller");

        // Epoch 0: 40 sources, source i sends i+1 packets of 100 bytes payload.
        let mut truth_pkts = std::collections::HashMap::new();
        let mut sent = 0u64;
        for i in 0..40u8 {
            let frame = udp4([10, 1, 0, i], [10, 2, 0, 1], 1000 + u16::from(i), 53, 100);
            let n = u32::from(i) + 1;
            sensor.test_run(&frame, n).expect("test_run");
            truth_pkts.insert(FlowKey::map_v4([10, 1, 0, i]), u64::from(n));
            sent += u64::from(n);
        }
        ctl.flip().expect("flip");
        let snap = ctl.handle.latest();
        assert_eq!(snap.epochs_flipped, 1);
        assert_eq!(snap.last_epoch.packets.total(), sent, "epoch 0 read whole");
        assert_eq!(snap.last_epoch.bytes.total(), sent * 142);
        // Epoch 1: 10 new sources, one packet each.
        for i in 0..10u8 {
            sensor
                .test_run(&udp4([10, 3, 0, i], [10, 2, 0, 1], 2000, 53, 0), 1)
                .expect("test_run");
            truth_pkts.insert(FlowKey::map_v4([10, 3, 0, i]), 1);
            sent += 1;
        }
        // The epoch just read was zeroed: reading it again yields nothing.
        assert_eq!(ctl.read_epoch(0).expect("read").packets.total(), 0);
        let fin = ctl.finish().expect("finish");
        assert_eq!(
            fin.run.packets.total(),
            sent,
            "no count lost across the flip"
        );
        assert_eq!(fin.last_epoch.packets.total(), 10);
        for (addr, &t) in &truth_pkts {
            let e = fin.run.packets.estimate(addr);
            assert!(e >= t, "Count-Min underestimated {t} as {e}");
        }
        let d = fin.run.distinct_sources.estimate();
        assert!((d - 50.0).abs() < 2.0, "distinct sources {d}");
        // One destination: its cells are exact at every level. 50 flows
        // started, the 39 of epoch 0 with more than one packet continued.
        let victim = FlowKey::map_v4([10, 2, 0, 1]);
        let epoch0_bytes = (sent - 10) * 142;
        for level in [DstLevel::Host, DstLevel::Narrow, DstLevel::Wide] {
            let c = fin.run.dst.estimate(level, &victim);
            assert_eq!(
                (c.packets, c.new_flows, c.continued, c.bytes),
                (
                    u32::try_from(sent).unwrap(),
                    50,
                    39,
                    u32::try_from(epoch0_bytes + 10 * 42).unwrap()
                ),
                "{level:?}"
            );
        }
        let elsewhere = FlowKey::map_v4([10, 9, 0, 1]);
        assert_eq!(fin.run.dst.estimate(DstLevel::Wide, &elsewhere).packets, 0);
        assert_eq!(
            fin.last_epoch
                .dst
                .estimate(DstLevel::Host, &victim)
                .new_flows,
            10
        );

        // Every event the program wrote decodes on the workers: one Start per
        // flow plus Updates at 2, 4, 8, 16, 32 packets.
        let mut total = 0u64;
        let mut starts = 0u64;
        for (i, ring) in rings.iter_mut().enumerate() {
            let mut w = WorkerState::new(i, 1024, Box::new(NoopHandler));
            while let Some(item) = ring.next() {
                w.dispatch(&item);
            }
            assert_eq!(w.counters.decode_errors, 0);
            total += w.counters.events;
            starts += w.counters.start;
        }
        let expected_updates: u64 = (1..=40u64)
            .map(|n| [2u64, 4, 8, 16, 32].iter().filter(|&&c| c <= n).count() as u64)
            .sum();
        assert_eq!(starts, 50);
        assert_eq!(total, 50 + expected_updates);
    }
}
