//! End-of-run outputs: the flow table (`--flows-out`, JSON lines), counters
//! and worker statistics (`--stats-out`, one JSON object) and the sketches
//! (`--sketch-out`, one JSON object). Formats are stable: tests and tools
//! parse them. The record types are `sensor_common::records`, which the lab
//! reads them back with; this module fills them in.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{BufWriter, Write},
    path::Path,
};

use aya::maps::{MapData, MapError, PerCpuArray, PerCpuHashMap};
pub use sensor_common::records::{
    CmsParams, FlowRecord, SketchReport, SourceEstimate, StatsReport, WorkerStats, len_mean_stddev,
};
use sensor_common::{COUNTER_COUNT, Counter, FlowKey, FlowStats, addr_to_ip, map_names};
use serde::Serialize;

use crate::{
    capture::control::SketchSnapshot,
    capture::error::SensorError,
    capture::loader::Sensor,
    capture::pins::{PinDir, State},
    capture::sketch::CountMin,
    capture::workers::{WorkerFlow, WorkerReport},
    files::PendingFile,
};

/// Merges one flow's per-CPU statistics ([`FlowStats::merge`]). `None` when
/// no CPU saw a packet.
#[must_use]
pub(crate) fn merge_cpus(per_cpu: &[FlowStats]) -> Option<FlowStats> {
    let mut out = FlowStats::default();
    for s in per_cpu {
        out.merge(s);
    }
    (out.packets > 0).then_some(out)
}

/// Reads `FLOW_TABLE`, merging CPUs. Entries evicted while iterating (LRU)
/// are skipped.
///
/// # Errors
/// The map is missing, has the wrong layout, or iteration failed.
pub(crate) fn read_flow_table(sensor: &Sensor) -> Result<Vec<(FlowKey, FlowStats)>, SensorError> {
    let name = map_names::FLOW_TABLE;
    let table: PerCpuHashMap<&MapData, FlowKey, FlowStats> =
        PerCpuHashMap::try_from(sensor.map(name)?).map_err(|source| SensorError::MapType {
            name,
            source: Box::new(source),
        })?;
    let mut out = Vec::new();
    for item in &table {
        match item {
            Ok((key, values)) => {
                if let Some(s) = merge_cpus(&values) {
                    out.push((key, s));
                }
            }
            Err(MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(SensorError::MapAccess {
                    name,
                    op: "iterating",
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(out)
}

/// Reads `GLOBAL_COUNTERS`, summing CPUs, in [`Counter`] index order.
///
/// # Errors
/// The map is missing, has the wrong layout, or a read failed.
pub(crate) fn read_counters(sensor: &Sensor) -> Result<[u64; COUNTER_COUNT as usize], SensorError> {
    sum_counters(sensor.map(map_names::GLOBAL_COUNTERS)?)
}

/// The sensor's `GLOBAL_COUNTERS`, through a descriptor of its own, for a
/// thread other than the one that owns the [`Sensor`] (the metrics
/// endpoint). Reading needs no privilege once the descriptor is open.
#[derive(Debug)]
pub(crate) struct CountersReader {
    map: aya::maps::Map,
}

impl CountersReader {
    /// Duplicates the descriptor of `sensor`'s counters.
    ///
    /// # Errors
    /// The map is missing, of another type, or the descriptor cannot be
    /// duplicated.
    pub(crate) fn new(sensor: &Sensor) -> Result<Self, SensorError> {
        use std::os::fd::AsFd as _;
        let name = map_names::GLOBAL_COUNTERS;
        let aya::maps::Map::PerCpuArray(data) = sensor.map(name)? else {
            return Err(SensorError::MissingMap { name });
        };
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| SensorError::System {
                what: "duplicating the counters' descriptor",
                source,
            })?;
        let data = MapData::from_fd(fd).map_err(|source| SensorError::MapAccess {
            name,
            op: "opening",
            source: Box::new(source),
        })?;
        Ok(Self {
            map: aya::maps::Map::PerCpuArray(data),
        })
    }

    /// The counters now, summed over CPUs, in [`Counter`] index order.
    ///
    /// # Errors
    /// A read failed.
    pub(crate) fn read(&self) -> Result<[u64; COUNTER_COUNT as usize], SensorError> {
        sum_counters(&self.map)
    }
}

/// Reads the counters a running sensor pinned for `iface`, resolved in the
/// caller's network namespace.
///
/// # Errors
/// [`SensorError::NoSuchInterface`] when `iface` does not exist here,
/// [`SensorError::NotRunning`] when nothing is pinned for it,
/// [`SensorError::StaleCounters`] when the sensor that pinned them is dead,
/// or a read error.
pub(crate) fn read_pinned_counters(
    iface: &str,
) -> Result<[u64; COUNTER_COUNT as usize], SensorError> {
    let if_index =
        crate::capture::loader::if_index(iface).ok_or_else(|| SensorError::NoSuchInterface {
            iface: iface.to_owned(),
        })?;
    let pins = PinDir::here(if_index)?;
    let path = pins.counters();
    let Some(record) = pins.read_liveness().filter(|_| path.exists()) else {
        return Err(SensorError::NotRunning {
            iface: iface.to_owned(),
            path,
        });
    };
    if record.state() != State::Alive {
        return Err(SensorError::StaleCounters {
            iface: iface.to_owned(),
            pid: record.pid,
        });
    }
    let name = map_names::GLOBAL_COUNTERS;
    let data = MapData::from_pin(&path).map_err(|source| SensorError::MapAccess {
        name,
        op: "opening the pinned",
        source: Box::new(source),
    })?;
    let map = aya::maps::Map::from_map_data(data).map_err(|source| SensorError::MapType {
        name,
        source: Box::new(source),
    })?;
    sum_counters(&map)
}

fn sum_counters(map: &aya::maps::Map) -> Result<[u64; COUNTER_COUNT as usize], SensorError> {
    let name = map_names::GLOBAL_COUNTERS;
    let arr: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(|source| SensorError::MapType {
            name,
            source: Box::new(source),
        })?;
    let mut out = [0u64; COUNTER_COUNT as usize];
    for c in Counter::ALL {
        let v = arr
            .get(&(c as u32), 0)
            .map_err(|source| SensorError::MapAccess {
                name,
                op: "reading",
                source: Box::new(source),
            })?;
        out[c as usize] = v.iter().fold(0u64, |a, &x| a.wrapping_add(x));
    }
    Ok(out)
}

/// Writes one [`FlowRecord`] per line, in the table's order.
///
/// # Errors
/// The writer failed.
pub(crate) fn write_flows<W: Write, S: std::hash::BuildHasher>(
    mut w: W,
    flows: &[(FlowKey, FlowStats)],
    worker_flows: &HashMap<FlowKey, WorkerFlow, S>,
) -> std::io::Result<()> {
    for (key, s) in flows {
        let wf = worker_flows.get(key);
        let rec = FlowRecord::new(
            key,
            s,
            wf.map_or(0, |f| f.events),
            wf.map_or(0, |f| f.start),
        );
        serde_json::to_writer(&mut w, &rec)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Every counter by name, in index order (for `sensor stats`).
#[must_use]
pub(crate) fn counters_json(
    counters: &[u64; COUNTER_COUNT as usize],
) -> serde_json::Map<String, serde_json::Value> {
    Counter::ALL
        .iter()
        .map(|&c| (c.name().to_owned(), counters[c as usize].into()))
        .collect()
}

/// One worker's line in `--stats-out`.
#[must_use]
pub(crate) fn worker_stats(r: &WorkerReport) -> WorkerStats {
    WorkerStats {
        worker: r.worker,
        events: r.counters.events,
        start: r.counters.start,
        update: r.counters.update,
        fin: r.counters.fin,
        rst: r.counters.rst,
        decode_errors: r.counters.decode_errors,
        untracked: r.counters.untracked,
        evicted: r.counters.evicted,
    }
}

/// The `--stats-out` object of a run.
#[must_use]
pub(crate) fn stats_report(
    counters: &[u64; COUNTER_COUNT as usize],
    workers: &[WorkerReport],
    epochs_flipped: u64,
    duration_s: f64,
) -> StatsReport {
    StatsReport::new(
        counters,
        workers.iter().map(worker_stats).collect(),
        epochs_flipped,
        duration_s,
    )
}

/// The `--sketch-out` object: the run-long sketches, and the estimates of
/// every source address in the flow table.
#[must_use]
pub(crate) fn sketch_report(snap: &SketchSnapshot, flows: &[(FlowKey, FlowStats)]) -> SketchReport {
    let mut seen = HashSet::with_capacity(flows.len());
    let mut sources: Vec<SourceEstimate> = flows
        .iter()
        .filter(|(k, _)| seen.insert(k.src))
        .map(|(k, _)| SourceEstimate {
            src: addr_to_ip(&k.src),
            packets_est: snap.run.packets.estimate(&k.src),
            bytes_est: snap.run.bytes.estimate(&k.src),
        })
        .collect();
    sources.sort_by(|a, b| {
        b.packets_est
            .cmp(&a.packets_est)
            .then(b.bytes_est.cmp(&a.bytes_est))
            .then(a.src.cmp(&b.src))
    });
    SketchReport {
        total_packets: snap.run.packets.total(),
        total_bytes: snap.run.bytes.total(),
        distinct_sources_estimate: snap.run.distinct_sources.estimate(),
        epochs_flipped: snap.epochs_flipped,
        cms: CmsParams {
            rows: CountMin::rows(),
            width: CountMin::width(),
            epsilon: CountMin::epsilon(),
            delta: CountMin::delta(),
        },
        sources,
    }
}

/// An output file opened when the run starts, so a bad path fails in the
/// first second rather than after hours of observation. It is written to a
/// temporary file beside its path ([`PendingFile`], mode
/// [`OUTPUT_MODE`](crate::files::OUTPUT_MODE)) and renamed into place once
/// complete: a run that fails or crashes leaves the previous file as it was.
#[derive(Debug)]
pub(crate) struct OutputFile {
    file: PendingFile,
}

impl OutputFile {
    /// Creates the temporary file beside `path`.
    ///
    /// # Errors
    /// [`SensorError::WriteOutput`] with the path.
    pub(crate) fn create(path: &Path) -> Result<Self, SensorError> {
        let file = PendingFile::create(path, crate::files::OUTPUT_MODE).map_err(|source| {
            SensorError::WriteOutput {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(Self { file })
    }

    /// The file's path.
    #[must_use]
    pub(crate) fn path(&self) -> &Path {
        self.file.target()
    }

    /// The open temporary file (to hand it to another owner).
    #[must_use]
    pub(crate) fn file(&self) -> &File {
        self.file.file()
    }

    /// Runs `f` on a buffered writer over the file, then renames it into
    /// place, mapping I/O errors to [`SensorError::WriteOutput`] with the
    /// path.
    ///
    /// # Errors
    /// The file cannot be written.
    pub(crate) fn write_with(
        self,
        f: impl FnOnce(&mut BufWriter<&mut File>) -> std::io::Result<()>,
    ) -> Result<(), SensorError> {
        let Self { mut file } = self;
        let path = file.target().to_owned();
        let werr = |source| SensorError::WriteOutput {
            path: path.clone(),
            source,
        };
        {
            let mut w = BufWriter::new(file.file_mut());
            f(&mut w).map_err(werr)?;
            w.flush().map_err(werr)?;
        }
        file.commit().map_err(werr)
    }

    /// Writes a serialisable value as one JSON object on one line.
    ///
    /// # Errors
    /// The file cannot be written.
    pub(crate) fn write_json<T: Serialize>(self, value: &T) -> Result<(), SensorError> {
        self.write_with(|w| {
            serde_json::to_writer(&mut *w, value)?;
            w.write_all(b"\n")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(packets: u64, first: u64, last: u64, min: u16, max: u16) -> FlowStats {
        FlowStats {
            packets,
            bytes: packets * u64::from(min),
            first_seen_ns: first,
            last_seen_ns: last,
            len_sq_sum: packets * u64::from(min) * u64::from(min),
            syn: 1,
            len_min: min,
            len_max: max,
            tcp_flags_or: 0x02,
            ..FlowStats::default()
        }
    }

    #[test]
    fn cpu_merge_ignores_idle_cpus() {
        let per_cpu = [
            FlowStats::default(),
            stats(3, 200, 500, 60, 60),
            FlowStats::default(),
            FlowStats {
                tcp_flags_or: 0x10,
                ..stats(2, 100, 400, 100, 1500)
            },
        ];
        let m = merge_cpus(&per_cpu).unwrap();
        assert_eq!(m.packets, 5);
        assert_eq!(m.bytes, 3 * 60 + 2 * 100);
        assert_eq!(
            m.first_seen_ns, 100,
            "zero first_seen of idle CPUs is ignored"
        );
        assert_eq!(m.last_seen_ns, 500);
        assert_eq!((m.len_min, m.len_max), (60, 1500));
        assert_eq!(m.syn, 2);
        assert_eq!(m.tcp_flags_or, 0x12);
        assert!(merge_cpus(&[FlowStats::default(); 3]).is_none());
    }

    #[test]
    fn mean_and_stddev_of_lengths() {
        // Lengths 60 and 100: mean 80, population stddev 20.
        let s = FlowStats {
            packets: 2,
            bytes: 160,
            len_sq_sum: 3600 + 10_000,
            ..FlowStats::default()
        };
        let (m, sd) = len_mean_stddev(&s);
        assert!(
            (m - 80.0).abs() < 1e-9 && (sd - 20.0).abs() < 1e-9,
            "{m} {sd}"
        );
        assert_eq!(len_mean_stddev(&FlowStats::default()), (0.0, 0.0));
    }

    #[test]
    fn addresses_print_as_users_expect() {
        use std::net::Ipv6Addr;
        let v4 = FlowKey::map_v4([192, 0, 2, 7]);
        assert_eq!(addr_to_ip(&v4).to_string(), "192.0.2.7");
        let v6: [u8; 16] = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(addr_to_ip(&v6).to_string(), "2001:db8::1");
        let ll: [u8; 16] = "fe80::1".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(addr_to_ip(&ll).to_string(), "fe80::1");
    }

    #[test]
    fn flow_lines_are_json_with_every_field() {
        let key = FlowKey::new(
            FlowKey::map_v4([10, 0, 0, 1]),
            "2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            1234,
            443,
            6,
        );
        let s = stats(4, 10, 20, 64, 64);
        let mut wf = HashMap::new();
        wf.insert(
            key,
            WorkerFlow {
                events: 3,
                start: 1,
                update: 2,
                ..WorkerFlow::default()
            },
        );
        let other = FlowKey { sport: 1, ..key };
        let mut out = Vec::new();
        write_flows(&mut out, &[(key, s), (other, s)], &wf).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["src"], "10.0.0.1");
        assert_eq!(v["dst"], "2001:db8::2");
        assert_eq!(v["sport"], 1234);
        assert_eq!(v["dport"], 443);
        assert_eq!(v["proto"], 6);
        assert_eq!(v["packets"], 4);
        assert_eq!(v["bytes"], 256);
        assert_eq!(v["events"], 3);
        assert_eq!(v["start_events"], 1);
        assert_eq!(v["len_mean"], 64.0);
        assert_eq!(v["len_stddev"], 0.0);
        for field in [
            "first_seen_ns",
            "last_seen_ns",
            "syn",
            "synack",
            "fin",
            "rst",
            "len_min",
            "len_max",
            "tcp_flags_or",
        ] {
            assert!(v.get(field).is_some(), "missing {field}");
        }
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(
            v["events"], 0,
            "flows without worker state report zero events"
        );
    }

    #[test]
    fn stats_report_names_every_counter() {
        let mut c = [0u64; COUNTER_COUNT as usize];
        c[Counter::PacketsSeen as usize] = 42;
        let r = stats_report(&c, &[WorkerReport::default()], 3, 1.5);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["counters"]["packets_seen"], 42);
        assert_eq!(
            v["counters"].as_object().unwrap().len(),
            COUNTER_COUNT as usize
        );
        assert_eq!(v["workers"][0]["worker"], 0);
        assert_eq!(v["epochs_flipped"], 3);
        assert_eq!(v["duration_s"], 1.5);
    }

    #[test]
    fn sketch_report_sorts_sources_by_packets() {
        let mut snap = SketchSnapshot::default();
        let a = FlowKey::map_v4([10, 0, 0, 1]);
        let b = FlowKey::map_v4([10, 0, 0, 2]);
        snap.run.packets.add(&a, 5);
        snap.run.packets.add(&b, 50);
        snap.run.bytes.add(&a, 500);
        snap.run.bytes.add(&b, 5000);
        snap.run.distinct_sources.insert_addr(&a);
        snap.run.distinct_sources.insert_addr(&b);
        let k = |src| FlowKey {
            src,
            ..FlowKey::default()
        };
        let flows = [
            (k(a), FlowStats::default()),
            (k(b), FlowStats::default()),
            (FlowKey { sport: 9, ..k(a) }, FlowStats::default()),
        ];
        let r = sketch_report(&snap, &flows);
        assert_eq!(r.total_packets, 55);
        assert_eq!(r.total_bytes, 5500);
        assert!((r.distinct_sources_estimate - 2.0).abs() < 0.01);
        assert_eq!(r.sources.len(), 2);
        assert_eq!(r.sources[0].src.to_string(), "10.0.0.2");
        assert_eq!(r.sources[0].packets_est, 50);
        assert_eq!(r.sources[1].bytes_est, 500);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["cms"]["rows"], 4);
        assert_eq!(v["cms"]["width"], 2048);
    }
}
