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
    /// The flow's Community ID (v1, seed 0), the hash Zeek and Suricata
    /// print for the same connection; absent only when the two addresses
    /// are of different families.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
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
            community_id: community_id(
                addr_to_ip(&key.src),
                addr_to_ip(&key.dst),
                key.sport,
                key.dport,
                key.proto,
            ),
        }
    }
}

/// The Community ID (v1, seed 0) of a flow: a base64 SHA-1 of its
/// endpoints ordered smaller first, prefixed `1:`, the same for both
/// directions. `sport`/`dport` are the ports for TCP, UDP and SCTP, and the
/// ICMP type and code for ICMP and ICMPv6 (as the flow key holds them);
/// other protocols hash the addresses alone. `None` when the addresses are
/// of different families.
#[must_use]
pub fn community_id(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8) -> Option<String> {
    let ports = matches!(proto, 1 | 6 | 17 | 58 | 132);
    ::community_id::calculate_community_id(
        0,
        src.to_canonical(),
        dst.to_canonical(),
        ports.then_some(sport),
        ports.then_some(dport),
        proto,
        false,
    )
    .ok()
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
    /// Configuration reloads (SIGHUP) so far.
    #[serde(default)]
    pub config_reloads: ConfigReloads,
    /// When the run adopted the state a sensor stopped with `--keep-state`
    /// left: what its program counted while no sensor ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<Handover>,
    /// With `sensor run --collect`: the flow collector's counters at the
    /// stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<CollectorCounters>,
    /// Model reloads (SIGHUP, or the registry's state file changing).
    #[serde(default)]
    pub model_reloads: ModelReloads,
    /// Event→score latency per worker and event→alert latency (absent with
    /// `--no-score`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyReport>,
    /// Drift monitoring's figures at the stop (absent with `--no-score`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftReport>,
}

/// What drift monitoring reported over a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// `drift` records written (start, update, end).
    pub events: u64,
    /// The latest PSI of each feature against the model card's baseline
    /// (empty when no window was judged).
    pub psi: BTreeMap<String, f64>,
}

/// What the model reloads of a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelReloads {
    /// New models loaded, checked and swapped in by every worker.
    pub applied: u64,
    /// Reloads refused (a model that did not load or check; the log says
    /// which file and why) or not confirmed by every worker in time.
    pub rejected: u64,
    /// Reloads that found the active versions already running.
    pub unchanged: u64,
    /// From the reload's start (reading the registry) until every worker
    /// had swapped, for the last applied reload and the longest (µs).
    pub last_latency_us: u64,
    pub max_latency_us: u64,
}

/// A latency distribution, in microseconds: from an event's kernel
/// timestamp (`CLOCK_MONOTONIC`) to a later point on the same clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// One worker's event→score latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WorkerLatency {
    pub worker: usize,
    #[serde(flatten)]
    pub latency: LatencySummary,
}

/// The latencies a scoring run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// From each event's kernel timestamp to the end of the inference of
    /// the batch holding its row, per worker.
    pub event_to_score: Vec<WorkerLatency>,
    /// From the kernel timestamp of the event whose row opened an alert to
    /// the opening, over all alerts (the alert stage is one thread); as the
    /// stage last published it (at most a second old at exit).
    pub event_to_alert: LatencySummary,
}

/// What the kept program did between the previous sensor's stop and this
/// sensor's attach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// Packets counted into the adopted flow table and counters.
    pub packets: u64,
    /// Flow events emitted to rings no process read (an upper bound: the
    /// count is read just after the new program took over).
    pub events_unread: u64,
}

/// What the configuration reloads (SIGHUP) of a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReloads {
    /// Reloads whose configuration was valid and is now in force.
    pub applied: u64,
    /// Reloads refused (the log says why); the previous configuration
    /// kept running.
    pub rejected: u64,
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
            config_reloads: ConfigReloads::default(),
            handover: None,
            collector: None,
            model_reloads: ModelReloads::default(),
            latency: None,
            drift: None,
        }
    }

    /// A counter by its [`Counter::name`] (0 when absent).
    #[must_use]
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

/// What the flow collector (`sensor collect`, `sensor run --collect`) did:
/// datagrams received and decoded, by outcome and by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorCounters {
    /// Datagrams received from the socket.
    pub received: u64,
    /// Socket receive errors (the collector goes on).
    pub receive_errors: u64,
    /// Datagrams handed to the decoder.
    pub datagrams: u64,
    /// Datagrams by version.
    pub v5_datagrams: u64,
    pub v9_datagrams: u64,
    pub ipfix_datagrams: u64,
    /// Flow records decoded.
    pub records: u64,
    /// Options records read (sampling rates, system init time).
    pub options_records: u64,
    /// Templates learnt for the first time.
    pub templates_learned: u64,
    /// Templates sent again with the same layout (a refresh).
    pub templates_refreshed: u64,
    /// Templates sent again with a different layout: the new one is used.
    pub templates_changed: u64,
    /// Templates withdrawn (IPFIX field count 0).
    pub templates_withdrawn: u64,
    /// Templates refused because the decoder's cap are kept.
    pub templates_refused: u64,
    /// Data sets skipped because their template is not known (yet): sent
    /// before the exporter's template, or after the collector restarted.
    pub sets_without_template: u64,
    /// Records without a source or destination address: counted, skipped.
    pub records_without_addresses: u64,
    /// Sampled records scaled by their rate.
    pub records_scaled: u64,
    /// Malformed input, by reason.
    pub truncated_header: u64,
    pub unknown_version: u64,
    pub bad_length: u64,
    pub truncated_set: u64,
    pub bad_template: u64,
    pub truncated_record: u64,
}

impl CollectorCounters {
    /// Malformed datagrams or parts, all reasons together.
    #[must_use]
    pub fn malformed(&self) -> u64 {
        self.truncated_header
            + self.unknown_version
            + self.bad_length
            + self.truncated_set
            + self.bad_template
            + self.truncated_record
    }

    /// Adds `o` into `self` (collector threads' counters summed).
    pub fn add(&mut self, o: &Self) {
        let Self {
            received,
            receive_errors,
            datagrams,
            v5_datagrams,
            v9_datagrams,
            ipfix_datagrams,
            records,
            options_records,
            templates_learned,
            templates_refreshed,
            templates_changed,
            templates_withdrawn,
            templates_refused,
            sets_without_template,
            records_without_addresses,
            records_scaled,
            truncated_header,
            unknown_version,
            bad_length,
            truncated_set,
            bad_template,
            truncated_record,
        } = o;
        self.received += received;
        self.receive_errors += receive_errors;
        self.datagrams += datagrams;
        self.v5_datagrams += v5_datagrams;
        self.v9_datagrams += v9_datagrams;
        self.ipfix_datagrams += ipfix_datagrams;
        self.records += records;
        self.options_records += options_records;
        self.templates_learned += templates_learned;
        self.templates_refreshed += templates_refreshed;
        self.templates_changed += templates_changed;
        self.templates_withdrawn += templates_withdrawn;
        self.templates_refused += templates_refused;
        self.sets_without_template += sets_without_template;
        self.records_without_addresses += records_without_addresses;
        self.records_scaled += records_scaled;
        self.truncated_header += truncated_header;
        self.unknown_version += unknown_version;
        self.bad_length += bad_length;
        self.truncated_set += truncated_set;
        self.bad_template += bad_template;
        self.truncated_record += truncated_record;
    }
}

/// The `--stats-out` object of `sensor collect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectStats {
    pub collector: CollectorCounters,
    /// The collector's workers (events are flow records).
    pub workers: Vec<WorkerStats>,
    pub duration_s: f64,
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The specification's published baseline (seed 0), both directions.
    #[test]
    fn community_id_matches_the_spec_baseline() {
        let cases = [
            (
                "128.232.110.120",
                34855,
                "66.35.250.204",
                80,
                6,
                "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            ),
            (
                "192.168.1.52",
                54585,
                "8.8.8.8",
                53,
                17,
                "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
            ),
            (
                "192.168.0.89",
                8,
                "192.168.0.1",
                0,
                1,
                "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
            ),
            (
                "192.168.0.1",
                0,
                "192.168.0.89",
                0,
                1,
                "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
            ),
            (
                "fe80::200:86ff:fe05:80da",
                135,
                "fe80::260:97ff:fe07:69ea",
                0,
                58,
                "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
            ),
        ];
        for (s, sp, d, dp, proto, want) in cases {
            assert_eq!(
                community_id(ip(s), ip(d), sp, dp, proto).as_deref(),
                Some(want),
                "{s} {d}"
            );
        }
        let (s, d) = (ip("128.232.110.120"), ip("66.35.250.204"));
        assert_eq!(
            community_id(d, s, 80, 34855, 6),
            community_id(s, d, 34855, 80, 6)
        );
        // IPv4-mapped addresses, as the flow key stores them, hash as IPv4.
        let mapped: IpAddr = "::ffff:128.232.110.120".parse().unwrap();
        assert_eq!(
            community_id(mapped, d, 34855, 80, 6),
            community_id(s, d, 34855, 80, 6)
        );
        assert_eq!(community_id(s, ip("2001:db8::1"), 1, 2, 6), None);
    }

    #[test]
    fn flow_records_carry_their_community_id() {
        let key = FlowKey::new(
            FlowKey::map_v4([192, 168, 1, 52]),
            FlowKey::map_v4([8, 8, 8, 8]),
            54585,
            53,
            17,
        );
        let f = FlowRecord::new(&key, &FlowStats::fresh(60, 0, 5), 1, 1);
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["community_id"], "1:d/FP5EW3wiY1vCndhwleRRKHowQ=");
    }
}
