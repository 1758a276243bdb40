//! The control thread: once per epoch it flips `SENSOR_CONFIG.epoch`, reads the
//! epoch the program just left (all CPUs), merges it (sum for Count-Min, max
//! for HyperLogLog), zeroes it for reuse, and publishes a [`SketchSnapshot`]
//! with that epoch and the run-long accumulation. The data path never stops:
//! the program always writes the other epoch.

use std::{
    sync::{Arc, Mutex, PoisonError, mpsc},
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues};
use sensor_common::{
    SensorConfig, map_names,
    sketch::{CMS_ROWS, CMS_WIDTH, CmsRow, EPOCHS, HLL_REGISTERS, HllRegisters, cms_index},
};
use tracing::{debug, warn};

use crate::{
    error::SensorError,
    loader::Sensor,
    sketch::{CountMin, HyperLogLog},
};

/// Default epoch length.
pub const EPOCH: Duration = Duration::from_secs(1);
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
}

impl EpochSketch {
    /// Adds `other` into `self` (sum / max).
    pub fn merge(&mut self, other: &EpochSketch) {
        self.packets.merge(&other.packets);
        self.bytes.merge(&other.bytes);
        self.distinct_sources.merge(&other.distinct_sources);
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
}

/// A shared handle to the latest snapshot. Readers clone the `Arc` (one short
/// lock per read, once per tick at most) and never block the control thread
/// for longer than that.
#[derive(Clone, Debug, Default)]
pub struct SketchHandle(Arc<Mutex<Arc<SketchSnapshot>>>);

impl SketchHandle {
    /// The latest published snapshot.
    #[must_use]
    pub fn latest(&self) -> Arc<SketchSnapshot> {
        Arc::clone(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn publish(&self, snap: SketchSnapshot) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(snap);
    }
}

/// The maps the control thread owns.
pub struct SketchMaps {
    config: Array<MapData, SensorConfig>,
    packets: PerCpuArray<MapData, CmsRow>,
    bytes: PerCpuArray<MapData, CmsRow>,
    hll: PerCpuArray<MapData, HllRegisters>,
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
        use map_names::{SENSOR_CONFIG, SRC_BYTES_CMS, SRC_DISTINCT_HLL, SRC_PACKETS_CMS};
        Ok(Self {
            config: Array::try_from(sensor.take_map(SENSOR_CONFIG)?)
                .map_err(map_type(SENSOR_CONFIG))?,
            packets: PerCpuArray::try_from(sensor.take_map(SRC_PACKETS_CMS)?)
                .map_err(map_type(SRC_PACKETS_CMS))?,
            bytes: PerCpuArray::try_from(sensor.take_map(SRC_BYTES_CMS)?)
                .map_err(map_type(SRC_BYTES_CMS))?,
            hll: PerCpuArray::try_from(sensor.take_map(SRC_DISTINCT_HLL)?)
                .map_err(map_type(SRC_DISTINCT_HLL))?,
        })
    }
}

/// Epoch rotation and accumulation, independent of the thread that drives it.
pub struct Controller {
    maps: SketchMaps,
    config: SensorConfig,
    snapshot: SketchSnapshot,
    handle: SketchHandle,
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
        std::thread::sleep(FLIP_GRACE);
        let sketch = self.read_epoch(old)?;
        self.zero_epoch(old)?;
        self.snapshot.run.merge(&sketch);
        self.snapshot.last_epoch = sketch;
        self.snapshot.epochs_flipped += 1;
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
    pub fn read_epoch(&self, epoch: u32) -> Result<EpochSketch, SensorError> {
        let mut out = EpochSketch::default();
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
            out.distinct_sources.merge_registers(cpu);
        }
        Ok(out)
    }

    fn zero_epoch(&mut self, epoch: u32) -> Result<(), SensorError> {
        let ncpu =
            aya::util::nr_cpus().map_err(|(what, source)| SensorError::System { what, source })?;
        for row in 0..CMS_ROWS {
            let idx = cms_index(epoch, row);
            let zero = || {
                PerCpuValues::try_from(vec![
                    CmsRow {
                        cells: [0; CMS_WIDTH as usize]
                    };
                    ncpu
                ])
                .map_err(|source| SensorError::System {
                    what: "building per-CPU zero values",
                    source,
                })
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
        let zero = PerCpuValues::try_from(vec![
            HllRegisters {
                regs: [0; HLL_REGISTERS as usize]
            };
            ncpu
        ])
        .map_err(|source| SensorError::System {
            what: "building per-CPU zero values",
            source,
        })?;
        self.maps
            .hll
            .set(epoch & 1, zero, 0)
            .map_err(write_err(map_names::SRC_DISTINCT_HLL))?;
        Ok(())
    }
}

/// The running control thread.
pub struct ControlThread {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<Result<SketchSnapshot, SensorError>>,
    sketches: SketchHandle,
}

impl ControlThread {
    /// Starts rotating epochs every `period`.
    ///
    /// # Errors
    /// The configuration cannot be read or the thread cannot start.
    pub fn spawn(maps: SketchMaps, period: Duration) -> Result<Self, SensorError> {
        let sketches = SketchHandle::default();
        let mut ctl = Controller::new(maps, sketches.clone())?;
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
        Ok(Self {
            stop,
            handle,
            sketches,
        })
    }

    /// Where other stages read the latest sketches.
    #[must_use]
    pub fn sketches(&self) -> SketchHandle {
        self.sketches.clone()
    }

    /// Stops rotating, reads both epochs one last time and returns the final
    /// snapshot.
    ///
    /// # Errors
    /// The final read failed or the thread panicked.
    pub fn stop(self) -> Result<SketchSnapshot, SensorError> {
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
