//! The sensor's end-of-run output records: a line of `--flows-out`, the
//! `--stats-out` object and the `--sketch-out` object. `sensor-user` writes
//! them and `sensor-lab` reads them back; both import these types, so the
//! writer and the reader cannot disagree on a field or its type. They live
//! here, behind the `records` feature (std + serde), because the lab does
//! not depend on the sensor (building it needs the BPF toolchain), and the
//! flow record is built from the kernel types defined in this crate.

use std::{borrow::ToOwned, collections::BTreeMap, net::IpAddr, string::String, vec::Vec};

use serde::{Deserialize, Serialize};

use crate::{COUNTER_COUNT, Counter, FlowKey, FlowStats, addr_to_ip};

/// One line of `--flows-out`: a flow's statistics merged over the CPUs, with
/// what the workers received for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub syn: u32,
    pub synack: u32,
    pub fin: u32,
    pub rst: u32,
    pub len_min: u16,
    pub len_max: u16,
    pub len_mean: f64,
    pub len_stddev: f64,
    pub tcp_flags_or: u8,
    /// Events the workers received for this flow.
    pub events: u64,
    /// Start events among them (0 if the Start was sampled out or lost).
    pub start_events: u32,
}

impl FlowRecord {
    /// A record from a flow's merged statistics, the events the workers
    /// received for it and the Start events among them.
    #[must_use]
    pub fn new(key: &FlowKey, s: &FlowStats, events: u64, start_events: u32) -> Self {
        let (len_mean, len_stddev) = len_mean_stddev(s);
        Self {
            src: addr_to_ip(&key.src),
            dst: addr_to_ip(&key.dst),
            sport: key.sport,
            dport: key.dport,
            proto: key.proto,
            packets: s.packets,
            bytes: s.bytes,
            first_seen_ns: s.first_seen_ns,
            last_seen_ns: s.last_seen_ns,
            syn: s.syn,
            synack: s.synack,
            fin: s.fin,
            rst: s.rst,
            len_min: s.len_min,
            len_max: s.len_max,
            len_mean,
            len_stddev,
            tcp_flags_or: s.tcp_flags_or,
            events,
            start_events,
        }
    }
}

/// Mean and population standard deviation of a flow's frame lengths.
#[must_use]
pub fn len_mean_stddev(s: &FlowStats) -> (f64, f64) {
    if s.packets == 0 {
        return (0.0, 0.0);
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "statistics; 2^53 bytes is far away"
    )]
    let (n, sum, sq) = (s.packets as f64, s.bytes as f64, s.len_sq_sum as f64);
    let mean = sum / n;
    let var = (sq / n - mean * mean).max(0.0);
    (mean, var.sqrt())
}

/// One worker's line in `--stats-out`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub worker: usize,
    pub events: u64,
    pub start: u64,
    pub update: u64,
    pub fin: u64,
    pub rst: u64,
    pub decode_errors: u64,
    /// Events of flows the worker could not track (flow map full).
    pub untracked: u64,
    /// Flows the worker forgot to make room (least recently active).
    pub evicted: u64,
}

/// The `--stats-out` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Every [`Counter`] by name, summed over CPUs.
    pub counters: BTreeMap<String, u64>,
    pub workers: Vec<WorkerStats>,
    pub epochs_flipped: u64,
    pub duration_s: f64,
}

impl StatsReport {
    /// The report of a run: the kernel's counters in [`Counter`] index
    /// order, the workers' statistics, the sketch epochs flipped and the
    /// run's length.
    #[must_use]
    pub fn new(
        counters: &[u64; COUNTER_COUNT as usize],
        workers: Vec<WorkerStats>,
        epochs_flipped: u64,
        duration_s: f64,
    ) -> Self {
        Self {
            counters: Counter::ALL
                .iter()
                .map(|&c| (c.name().to_owned(), counters[c as usize]))
                .collect(),
            workers,
            epochs_flipped,
            duration_s,
        }
    }

    /// A counter by its [`Counter::name`] (0 when absent).
    #[must_use]
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

/// Count-Min parameters, so readers know the error bounds of the estimates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CmsParams {
    pub rows: u32,
    pub width: u32,
    pub epsilon: f64,
    pub delta: f64,
}

/// One source in `--sketch-out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEstimate {
    pub src: IpAddr,
    pub packets_est: u64,
    pub bytes_est: u64,
}

/// The `--sketch-out` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SketchReport {
    /// Run-long packets (Count-Min row sum).
    pub total_packets: u64,
    /// Run-long bytes (Count-Min row sum).
    pub total_bytes: u64,
    /// Run-long HyperLogLog estimate of distinct source addresses.
    pub distinct_sources_estimate: f64,
    pub epochs_flipped: u64,
    pub cms: CmsParams,
    /// Every source address in the flow table, by estimated packets, largest
    /// first.
    pub sources: Vec<SourceEstimate>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let key = FlowKey::new(FlowKey::map_v4([10, 0, 0, 1]), [0; 16], 1, 2, 6);
        let mut s = FlowStats::fresh(60, crate::tcp_flags::SYN, 5);
        s.add(100, 0, 9);
        let f = FlowRecord::new(&key, &s, 3, 1);
        let line = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<FlowRecord>(&line).unwrap(), f);
        let mut c = [0u64; COUNTER_COUNT as usize];
        c[Counter::EventsLost as usize] = 7;
        let st = StatsReport::new(&c, Vec::new(), 2, 0.5);
        let text = serde_json::to_string(&st).unwrap();
        let back: StatsReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back.counter("events_lost"), 7);
        assert_eq!(back.counters.len(), COUNTER_COUNT as usize);
    }
}
