//! Configuration of the alert stage: the sections of the sensor's TOML file it
//! reads, and the model cards that give default thresholds, feature names and
//! baseline distributions.
//!
//! Other sections of the sensor file are ignored here (they belong to other
//! stages); unknown keys inside the sections read here are errors, so a typo
//! never silently keeps a default.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use sensor_common::EnforceMode;
use serde::Deserialize;

use super::AlertsError;
pub use super::logins::LoginsSection;
use crate::model::{
    ModelCard,
    card::threshold_problem,
    row::{AttackClass, N_CLASSES},
};

/// Default location of the sensor's configuration file.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/sensor/sensor.toml";
/// Default verdict store when neither the config nor the command line names one.
pub(crate) const DEFAULT_VERDICT_STORE: &str = "/var/lib/sensor/verdicts.jsonl";
/// Default alert record log.
pub(crate) const DEFAULT_ALERT_LOG: &str = "/var/lib/sensor/alert-records.jsonl";

/// Threshold a class gets when neither a model card nor the config sets one:
/// high, so an uncalibrated model stays quiet rather than noisy.
pub(crate) const BUILTIN_CLASS_THRESHOLD: f32 = 0.9;

/// The parts of the sensor configuration file the alert stage reads. An
/// unknown (say, misspelt) section is an error, never silently ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorFile {
    pub sensor: SensorSection,
    pub models: ModelsSection,
    pub alerts: AlertsSection,
    pub volume: VolumeSection,
    pub logins: LoginsSection,
    /// Per-class overrides of the model cards' thresholds, written by
    /// `sensor tune --apply`. Keys are class names; `anomaly` is the
    /// autoencoder's reconstruction-error threshold.
    #[serde(deserialize_with = "checked_thresholds")]
    pub thresholds: BTreeMap<String, f32>,
    pub tuning: TuningSection,
    pub sinks: Vec<SinkConfig>,
    pub block: BlockSection,
    pub drift: DriftSection,
}

/// Drift monitoring: how far the traffic's feature distributions moved from
/// the benign training rows the model card describes (population stability
/// index per feature over a sliding window; see `docs/alerts.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftSection {
    /// `false` turns monitoring off (no PSI, no `drift` records).
    pub enabled: bool,
    /// Length of the sliding window, in seconds; it moves in tenths.
    pub window_s: f64,
    /// A feature has moved when its PSI over the window exceeds this
    /// (0.1 is commonly read as a slight shift, 0.25 as a major one).
    pub threshold: f64,
    /// Rows the window must hold before it is judged: a quiet link's few
    /// rows say nothing about a distribution.
    pub min_rows: u64,
    /// Features whose PSI is still measured (metrics) but never reported
    /// as moved: those known to differ at this site and accepted.
    pub ignore: Vec<String>,
}

impl Default for DriftSection {
    fn default() -> Self {
        Self {
            enabled: true,
            window_s: 300.0,
            threshold: 0.2,
            min_rows: 500,
            ignore: Vec::new(),
        }
    }
}

/// When an alert blocks its attacker at the edge (with `sensor run
/// --enforce on`, or counted only with `dry-run`): its EVE severity at most
/// `max_severity` and its peak score at least its class's bar. The default
/// blocks only severity-1 alerts with a near-certain score.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlockSection {
    /// Highest EVE severity level that blocks (1 is the most severe).
    pub max_severity: u8,
    /// Peak score an alert must reach, for classes without their own bar.
    pub min_score: f32,
    /// Per-class bars (class name to score).
    pub classes: BTreeMap<String, f32>,
    /// Seconds a block lasts after the alert's last record (renewed with
    /// each record while the alert stays open).
    pub ttl_s: u64,
}

impl Default for BlockSection {
    fn default() -> Self {
        Self {
            max_severity: 1,
            min_score: 0.99,
            classes: BTreeMap::new(),
            ttl_s: 600,
        }
    }
}

impl BlockSection {
    /// The score bar of `class`.
    #[must_use]
    pub fn bar(&self, class: AttackClass) -> f32 {
        self.classes
            .get(class.name())
            .copied()
            .unwrap_or(self.min_score)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorSection {
    /// Name of this sensor in every record (`host`).
    pub name: String,
    /// Interface the sensor watches (`in_iface`).
    pub interface: String,
}

impl Default for SensorSection {
    fn default() -> Self {
        Self {
            name: "sensor".into(),
            interface: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsSection {
    /// Model card (JSON) of the classifier, next to its ONNX file.
    pub classifier_card: Option<PathBuf>,
    /// Model card (JSON) of the autoencoder.
    pub autoencoder_card: Option<PathBuf>,
}

impl ModelsSection {
    /// Fills the cards the file does not name with those of the models in
    /// `models_dir`, as `sensor run` loads them: one rule for the running
    /// sensor and for `sensor tune`, so both see the same thresholds.
    pub fn default_cards_from(&mut self, models_dir: &Path) {
        use crate::model::registry::{AUTOENCODER, CLASSIFIER, ModelSlot, Registry};
        let registry = Registry::new(models_dir);
        // An unreadable registry is reported when the models load; the
        // card of the flat layout is the best guess meanwhile.
        let card = |slot: ModelSlot| {
            let model = registry
                .active_path(slot)
                .unwrap_or_else(|_| models_dir.join(format!("{}.onnx", slot.name)));
            crate::model::card::card_path(&model)
        };
        self.classifier_card.get_or_insert_with(|| card(CLASSIFIER));
        self.autoencoder_card
            .get_or_insert_with(|| card(AUTOENCODER));
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsSection {
    /// An open alert with no detection for this long closes (and a closing
    /// record is emitted). Also the dedup suppression window.
    pub quiet_period_s: f64,
    /// Minimum time between two update records of one alert.
    pub update_interval_s: f64,
    /// An incident stays joinable this long after its last activity.
    pub incident_window_s: f64,
    /// Caps on state; beyond them the least recently active entry is evicted.
    pub max_open_alerts: usize,
    pub max_incidents: usize,
    /// Top contributing features reported per alert.
    pub top_features: usize,
    /// Inventory file (TOML) for enrichment.
    pub inventory: Option<PathBuf>,
    /// Verdict store written by `sensor feedback`.
    pub verdict_store: PathBuf,
    /// Alert record log: what tuning and export need per alert.
    pub alert_log: PathBuf,
    /// How often the stage polls the verdict store and the config file.
    pub feedback_poll_ms: u64,
    /// An alert opens only once this many detected rows share its key
    /// (class, attacker, victim) within `corroborate_window_s`: one stray
    /// row, such as a single spoofed SYN scored as a probe, is not an
    /// attack. 1 opens on the first row (for every class). Scans have
    /// their own rule (`scan_ports_per_host`, `scan_hosts`).
    pub corroborate_rows: u32,
    /// Window for `corroborate_rows` and the scan rule.
    pub corroborate_window_s: f64,
    /// A scan alert opens once the source's detected probes reach this many
    /// distinct ports (and protocols) on one host (a vertical scan)…
    pub scan_ports_per_host: u32,
    /// … or this many distinct hosts (a horizontal scan), within
    /// `corroborate_window_s`. Probes of one target count once. Devices
    /// retrying an unreachable cloud fail against a handful of hosts with
    /// one or two ports each, which neither bar reaches; the bars are
    /// Zeek's idea (distinct ports per host, distinct hosts), lower because
    /// every probe counted here was already flagged by the model.
    pub scan_hosts: u32,
    /// Keys waiting for corroboration, at most; when full, expired keys are
    /// dropped, and all of them if that frees less than an eighth (counted
    /// in `corroboration_evicted`).
    pub max_pending: usize,
    /// A flood detection counts only while its victim receives at least
    /// this many packets per second (its 1 s window, whole host): a flood is
    /// volume, and a handful of ICMP errors or multicast announcements the
    /// model finds flood-like are not one. A victim flooded at `r` packets/s
    /// crosses the floor after about `flood_min_pps / r` seconds (the window
    /// fills linearly); 0 turns the floor off.
    pub flood_min_pps: f64,
    /// An anomaly alert opens when one client's upload-heavy connections to
    /// one server (each sent at least 1 KiB and three times what it
    /// received) reach this many, started at regular intervals: a beacon
    /// carrying data out, as low-and-slow exfiltration does (counted from
    /// 3 to 32). 0 turns the rule off.
    pub beacon_connections: u32,
    /// The intervals between those connections' starts are regular when
    /// their median absolute deviation is at most this fraction of their
    /// median.
    pub beacon_max_jitter: f64,
    /// Upload-heavy connections older than this are forgotten.
    pub beacon_window_s: f64,
    /// Check-ins: `beacon_connections` connections (any direction) from one
    /// client to one server whose intervals vary by at most this fraction
    /// (median absolute deviation over median; a sleep jittered by ±j
    /// gives about j/2) …
    /// 0 turns check-in detection off.
    pub beacon_checkin_jitter: f64,
    /// … and whose bytes each way vary by at most this fraction: the same
    /// request and answer every time …
    pub beacon_checkin_size_spread: f64,
    /// … started at least this many seconds apart (median): a sleep, not a
    /// tool working through a list.
    pub beacon_checkin_min_interval_s: f64,
}

impl Default for AlertsSection {
    fn default() -> Self {
        Self {
            quiet_period_s: 120.0,
            update_interval_s: 60.0,
            incident_window_s: 600.0,
            max_open_alerts: 10_000,
            max_incidents: 10_000,
            top_features: 3,
            inventory: None,
            verdict_store: DEFAULT_VERDICT_STORE.into(),
            alert_log: DEFAULT_ALERT_LOG.into(),
            feedback_poll_ms: 1000,
            corroborate_rows: 3,
            corroborate_window_s: 60.0,
            scan_ports_per_host: 3,
            scan_hosts: 16,
            max_pending: 100_000,
            flood_min_pps: 200.0,
            beacon_connections: 12,
            beacon_max_jitter: 0.05,
            beacon_window_s: 3600.0,
            beacon_checkin_jitter: 0.2,
            beacon_checkin_size_spread: 0.1,
            beacon_checkin_min_interval_s: 0.5,
        }
    }
}

/// The volume rule: floods found from the kernel's destination sketch,
/// which counts every packet, so a flood is found even when its per-flow
/// rows are sampled or shed, and a flood spread over a network is one alert
/// on the prefix. Like FastNetMon's per-host thresholds, the bars are
/// absolute: a destination that legitimately receives more new
/// one-packet flows than them (a very busy DNS resolver) needs higher bars.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeSection {
    /// A destination (host or prefix) is flooded in an epoch when it
    /// received at least this many new flows per second…
    pub min_new_flows_per_s: f64,
    /// … and at least this many packets per second…
    pub min_pps: f64,
    /// … and at least this share of those new flows stayed single packets
    /// in the epoch: spoofed, random-port and reflected floods start a flow
    /// with nearly every packet, while a busy service's connections
    /// continue (and a download in the same prefix adds one flow, not a
    /// skew).
    pub min_single_share: f64,
    /// The alert names the narrower key (prefix inside the wide prefix,
    /// host inside the narrow one) when it received at least this share of
    /// the wider key's new flows; otherwise the flood is spread and the
    /// wider prefix is the victim.
    pub concentration: f64,
    /// Prefix lengths `[narrow, wide]` for IPv4 destinations. The wide
    /// prefixes are enumerated every epoch, so it is at most /18.
    pub prefix_v4: [u8; 2],
    /// Prefix lengths `[narrow, wide]` for IPv6 destinations (counted in
    /// the kernel; the rule enumerates IPv4 only, see docs/alerts.md).
    pub prefix_v6: [u8; 2],
    /// `false` turns the rule off.
    pub enabled: bool,
}

impl Default for VolumeSection {
    fn default() -> Self {
        let [v4n, v4w, v6n, v6w] = sensor_common::sketch::DST_PREFIX_DEFAULT;
        Self {
            min_new_flows_per_s: 500.0,
            min_pps: 1000.0,
            min_single_share: 0.5,
            concentration: 0.5,
            prefix_v4: [v4n, v4w],
            prefix_v6: [v6n, v6w],
            enabled: true,
        }
    }
}

impl VolumeSection {
    /// `SensorConfig::dst_prefix` for these lengths.
    #[must_use]
    pub fn dst_prefix(&self) -> [u8; 4] {
        [
            self.prefix_v4[0],
            self.prefix_v4[1],
            self.prefix_v6[0],
            self.prefix_v6[1],
        ]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TuningSection {
    /// Cost of one false positive (an alert an analyst dismissed).
    pub fp_cost: f64,
    /// Cost of one false negative (a confirmed attack a threshold would hide).
    pub fn_cost: f64,
    /// Classes with fewer verdicts keep their threshold.
    pub min_verdicts: usize,
}

impl Default for TuningSection {
    fn default() -> Self {
        Self {
            fp_cost: 1.0,
            fn_cost: 100.0,
            min_verdicts: 3,
        }
    }
}

/// One output sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    Stdout,
    /// A file rotated by size: `path`, `path.1` … `path.<keep-1>`.
    File {
        path: PathBuf,
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
        #[serde(default = "default_keep")]
        keep: usize,
    },
    /// A Unix datagram socket (one record per datagram; dropped when the
    /// reader is slow or absent, counted).
    UnixDatagram {
        path: PathBuf,
    },
    /// A Unix stream socket (newline-delimited; reconnects, drops while down).
    UnixStream {
        path: PathBuf,
    },
}

fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_keep() -> usize {
    5
}

impl SensorFile {
    /// Parses the file at `path`; relative paths inside are resolved against
    /// the file's directory.
    ///
    /// # Errors
    /// With the path and line number when the file is unreadable or invalid.
    pub fn load(path: &Path) -> Result<Self, AlertsError> {
        Self::parse(path, &read_text(path)?)
    }

    /// Parses and range-checks config text as if read from `path` (which
    /// names the file in errors and anchors the relative paths inside it).
    /// The whole of [`Self::load`] but the read, so in-memory text (a
    /// fuzzer's input) takes exactly the path a file does.
    ///
    /// # Errors
    /// With the path and line number when the text is invalid.
    pub fn parse(path: &Path, text: &str) -> Result<Self, AlertsError> {
        let mut file: SensorFile = parse_toml(path, text)?;
        if let Err(bad) = file.check_ranges() {
            return Err(AlertsError::Config {
                path: path.to_path_buf(),
                line: bad.line_in(text),
                message: bad.to_string(),
            });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = file.models.classifier_card.as_mut() {
            fix(p);
        }
        if let Some(p) = file.models.autoencoder_card.as_mut() {
            fix(p);
        }
        if let Some(p) = file.alerts.inventory.as_mut() {
            fix(p);
        }
        fix(&mut file.alerts.verdict_store);
        fix(&mut file.alerts.alert_log);
        for s in &mut file.sinks {
            match s {
                SinkConfig::Stdout => {}
                SinkConfig::File { path, .. }
                | SinkConfig::UnixDatagram { path }
                | SinkConfig::UnixStream { path } => fix(path),
            }
        }
        Ok(file)
    }
}

/// `[thresholds]`: every key a class the models score, every value in its
/// class's range ([`threshold_problem`]).
fn checked_thresholds<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, f32>, D::Error> {
    let map = BTreeMap::<String, f32>::deserialize(d)?;
    for (key, &value) in &map {
        let class = AttackClass::by_name(key)
            .filter(|&c| c != AttackClass::Benign)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "[thresholds] has unknown class `{key}` (expected flood, scan, bruteforce, anomaly)"
                ))
            })?;
        if let Some(problem) = threshold_problem(class, value) {
            return Err(serde::de::Error::custom(format!("[thresholds] {problem}")));
        }
    }
    Ok(map)
}

/// A value of the sensor file outside its range: its section, key and the
/// range it must be in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutOfRange {
    section: &'static str,
    key: &'static str,
    value: String,
    want: &'static str,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] {} = {}: must be {}",
            self.section, self.key, self.value, self.want
        )
    }
}

impl OutOfRange {
    /// The line of the offending key in `text`, if it is written there.
    fn line_in(&self, text: &str) -> Option<usize> {
        let doc = toml_edit::Document::parse(text).ok()?;
        let item = doc.get(self.section)?;
        let span = match item {
            toml_edit::Item::ArrayOfTables(a) => a.iter().find_map(|t| t.get(self.key)?.span()),
            other => other.get(self.key)?.span(),
        }?;
        Some(line_of(text, span.start))
    }
}

/// Checks one value: `ok` or an [`OutOfRange`] naming it.
pub(super) fn range(
    section: &'static str,
    key: &'static str,
    value: impl std::fmt::Display,
    ok: bool,
    want: &'static str,
) -> Result<(), OutOfRange> {
    if ok {
        Ok(())
    } else {
        Err(OutOfRange {
            section,
            key,
            value: value.to_string(),
            want,
        })
    }
}

/// Ceiling of the alert stage's tables (open alerts, incidents, pending
/// keys): each entry costs up to a few KiB, so ten million is tens of GiB,
/// beyond any gateway's budget for alert state.
const MAX_TABLE_ENTRIES: usize = 10_000_000;
/// [`MAX_TABLE_ENTRIES`] as the range an error states.
const TABLE: &str = "from 1 to 10000000";

impl SensorFile {
    /// Every number in its range; the first one out of range otherwise.
    pub(crate) fn check_ranges(&self) -> Result<(), OutOfRange> {
        let pos = |x: f64| x.is_finite() && x > 0.0;
        let nonneg = |x: f64| x.is_finite() && x >= 0.0;
        let table = |n: usize| (1..=MAX_TABLE_ENTRIES).contains(&n);
        let a = &self.alerts;
        range(
            "alerts",
            "quiet_period_s",
            a.quiet_period_s,
            pos(a.quiet_period_s),
            "a positive number of seconds",
        )?;
        range(
            "alerts",
            "update_interval_s",
            a.update_interval_s,
            nonneg(a.update_interval_s),
            "a number of seconds >= 0",
        )?;
        range(
            "alerts",
            "incident_window_s",
            a.incident_window_s,
            nonneg(a.incident_window_s),
            "a number of seconds >= 0",
        )?;
        range(
            "alerts",
            "max_open_alerts",
            a.max_open_alerts,
            table(a.max_open_alerts),
            TABLE,
        )?;
        range(
            "alerts",
            "max_incidents",
            a.max_incidents,
            table(a.max_incidents),
            TABLE,
        )?;
        range(
            "alerts",
            "max_pending",
            a.max_pending,
            table(a.max_pending),
            TABLE,
        )?;
        range(
            "alerts",
            "top_features",
            a.top_features,
            a.top_features <= crate::features::schema::MAX_FEATURES,
            "at most 40",
        )?;
        range(
            "alerts",
            "feedback_poll_ms",
            a.feedback_poll_ms,
            (1..=3_600_000).contains(&a.feedback_poll_ms),
            "from 1 to 3600000 ms",
        )?;
        range(
            "alerts",
            "corroborate_rows",
            a.corroborate_rows,
            a.corroborate_rows >= 1,
            "at least 1",
        )?;
        range(
            "alerts",
            "corroborate_window_s",
            a.corroborate_window_s,
            pos(a.corroborate_window_s),
            "a positive number of seconds",
        )?;
        range(
            "alerts",
            "scan_ports_per_host",
            a.scan_ports_per_host,
            a.scan_ports_per_host >= 1,
            "at least 1",
        )?;
        range(
            "alerts",
            "scan_hosts",
            a.scan_hosts,
            a.scan_hosts >= 1,
            "at least 1",
        )?;
        range(
            "alerts",
            "flood_min_pps",
            a.flood_min_pps,
            nonneg(a.flood_min_pps),
            "a packet rate >= 0 (0 = off)",
        )?;
        range(
            "alerts",
            "beacon_connections",
            a.beacon_connections,
            a.beacon_connections == 0 || (3..=32).contains(&a.beacon_connections),
            "0 (off) or from 3 to 32",
        )?;
        range(
            "alerts",
            "beacon_max_jitter",
            a.beacon_max_jitter,
            (0.0..=1.0).contains(&a.beacon_max_jitter),
            "a fraction in [0, 1]",
        )?;
        range(
            "alerts",
            "beacon_window_s",
            a.beacon_window_s,
            pos(a.beacon_window_s),
            "a positive number of seconds",
        )?;
        range(
            "alerts",
            "beacon_checkin_jitter",
            a.beacon_checkin_jitter,
            (0.0..=1.0).contains(&a.beacon_checkin_jitter),
            "a fraction in [0, 1] (0 = off)",
        )?;
        range(
            "alerts",
            "beacon_checkin_size_spread",
            a.beacon_checkin_size_spread,
            (0.0..=1.0).contains(&a.beacon_checkin_size_spread),
            "a fraction in [0, 1]",
        )?;
        range(
            "alerts",
            "beacon_checkin_min_interval_s",
            a.beacon_checkin_min_interval_s,
            nonneg(a.beacon_checkin_min_interval_s),
            "a number of seconds >= 0",
        )?;
        let v = &self.volume;
        range(
            "volume",
            "min_new_flows_per_s",
            v.min_new_flows_per_s,
            pos(v.min_new_flows_per_s),
            "a positive rate",
        )?;
        range(
            "volume",
            "min_pps",
            v.min_pps,
            pos(v.min_pps),
            "a positive packet rate",
        )?;
        range(
            "volume",
            "min_single_share",
            v.min_single_share,
            (0.0..=1.0).contains(&v.min_single_share),
            "a fraction in [0, 1]",
        )?;
        range(
            "volume",
            "concentration",
            v.concentration,
            v.concentration > 0.0 && v.concentration <= 1.0,
            "a fraction in (0, 1]",
        )?;
        let [v4n, v4w] = v.prefix_v4;
        range(
            "volume",
            "prefix_v4",
            format!("[{v4n}, {v4w}]"),
            (8..=18).contains(&v4w) && v4n > v4w && v4n - v4w <= 12 && (20..=30).contains(&v4n),
            "[narrow, wide] with wide in 8..=18, narrow in 20..=30 and at most 12 bits longer",
        )?;
        let [v6n, v6w] = v.prefix_v6;
        range(
            "volume",
            "prefix_v6",
            format!("[{v6n}, {v6w}]"),
            v6w >= 16 && v6n > v6w && v6n <= 120,
            "[narrow, wide] with 16 <= wide < narrow <= 120",
        )?;
        self.logins.check_ranges()?;
        let t = &self.tuning;
        range(
            "tuning",
            "fp_cost",
            t.fp_cost,
            pos(t.fp_cost),
            "a positive cost",
        )?;
        range(
            "tuning",
            "fn_cost",
            t.fn_cost,
            pos(t.fn_cost),
            "a positive cost",
        )?;
        for sink in &self.sinks {
            if let SinkConfig::File {
                max_bytes, keep, ..
            } = sink
            {
                range(
                    "sinks",
                    "max_bytes",
                    max_bytes,
                    *max_bytes >= 4096,
                    "at least 4096 bytes",
                )?;
                range(
                    "sinks",
                    "keep",
                    keep,
                    (1..=1000).contains(keep),
                    "from 1 to 1000 files",
                )?;
            }
        }
        let d = &self.drift;
        range(
            "drift",
            "window_s",
            d.window_s,
            d.window_s.is_finite() && (1.0..=86_400.0).contains(&d.window_s),
            "from 1 to 86400 seconds",
        )?;
        range(
            "drift",
            "threshold",
            d.threshold,
            pos(d.threshold),
            "a positive PSI",
        )?;
        range(
            "drift",
            "min_rows",
            d.min_rows,
            d.min_rows >= 1,
            "at least 1 row",
        )?;
        for name in &d.ignore {
            range(
                "drift",
                "ignore",
                name,
                crate::features::SCHEMA.iter().any(|f| f.name == name),
                "feature names of the schema",
            )?;
        }
        let b = &self.block;
        let fraction = |x: f32| x.is_finite() && (0.0..=1.0).contains(&x);
        range(
            "block",
            "max_severity",
            b.max_severity,
            (1..=3).contains(&b.max_severity),
            "an EVE severity from 1 to 3",
        )?;
        range(
            "block",
            "min_score",
            b.min_score,
            fraction(b.min_score),
            "a score in [0, 1]",
        )?;
        range("block", "ttl_s", b.ttl_s, b.ttl_s > 0, "at least 1 second")?;
        for (class, bar) in &b.classes {
            range(
                "block.classes",
                "a class",
                class,
                AttackClass::by_name(class).is_some_and(|c| c != AttackClass::Benign),
                "an attack class name (flood, scan, bruteforce, anomaly)",
            )?;
            range(
                "block.classes",
                "a bar",
                bar,
                fraction(*bar),
                "a score in [0, 1]",
            )?;
        }
        Ok(())
    }
}

/// Reads a whole text file, naming it in the error.
pub(crate) fn read_text(path: &Path) -> Result<String, AlertsError> {
    std::fs::read_to_string(path).map_err(|source| AlertsError::Io {
        path: path.to_path_buf(),
        action: "read",
        source,
    })
}

/// Deserialises TOML, turning errors into [`AlertsError::Config`] with a line.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, AlertsError> {
    toml_edit::de::from_str(text).map_err(|e| AlertsError::Config {
        path: path.to_path_buf(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim().to_string(),
    })
}

/// 1-based line number of byte offset `at`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// Thresholds in force: per class, in the unit the class is scored in
/// (probability for classifier classes, reconstruction error for `anomaly`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub by_class: [f32; N_CLASSES],
}

impl Thresholds {
    /// Built-in defaults < model cards < config overrides.
    #[must_use]
    pub(crate) fn resolve(
        classifier: Option<&ModelCard>,
        autoencoder: Option<&ModelCard>,
        overrides: &BTreeMap<String, f32>,
    ) -> Self {
        let mut by_class = [BUILTIN_CLASS_THRESHOLD; N_CLASSES];
        by_class[AttackClass::Benign as usize] = f32::INFINITY;
        // No autoencoder threshold known: anomaly alerts stay off.
        by_class[AttackClass::Anomaly as usize] = f32::INFINITY;
        for card in [classifier, autoencoder].into_iter().flatten() {
            for (c, t) in &card.thresholds {
                by_class[*c as usize] = *t;
            }
            if let Some(a) = card.anomaly_threshold {
                by_class[AttackClass::Anomaly as usize] = a;
            }
        }
        for (k, t) in overrides {
            if let Some(c) = AttackClass::by_name(k).filter(|c| *c != AttackClass::Benign) {
                by_class[c as usize] = *t;
            }
        }
        Self { by_class }
    }

    #[must_use]
    pub fn get(&self, class: AttackClass) -> f32 {
        self.by_class[class as usize]
    }
}

/// Everything the stage needs from the config and the cards, resolved.
#[derive(Clone, Debug)]
pub struct AlertSettings {
    pub sensor_name: String,
    pub interface: String,
    pub alerts: AlertsSection,
    pub volume: VolumeSection,
    pub logins: LoginsSection,
    pub thresholds: Thresholds,
    pub classifier: Option<ModelCard>,
    pub autoencoder: Option<ModelCard>,
    /// The config file the stage watches for threshold changes, if any.
    pub config_path: Option<PathBuf>,
    /// When an alert blocks its attacker.
    pub block: BlockSection,
    /// `sensor run --enforce`: whether blocks are installed at all.
    pub enforce: EnforceMode,
    /// Drift monitoring.
    pub drift: DriftSection,
}

impl AlertSettings {
    /// Resolves settings from a parsed sensor file (loads the model cards).
    ///
    /// # Errors
    /// When a model card cannot be loaded.
    pub fn from_file(file: &SensorFile, config_path: Option<&Path>) -> Result<Self, AlertsError> {
        let card = |p: &Option<PathBuf>| p.as_deref().map(ModelCard::load).transpose();
        let classifier = card(&file.models.classifier_card)?;
        let autoencoder = card(&file.models.autoencoder_card)?;
        let thresholds =
            Thresholds::resolve(classifier.as_ref(), autoencoder.as_ref(), &file.thresholds);
        Ok(Self {
            sensor_name: file.sensor.name.clone(),
            interface: file.sensor.interface.clone(),
            alerts: file.alerts.clone(),
            volume: file.volume.clone(),
            logins: file.logins.clone(),
            thresholds,
            classifier,
            autoencoder,
            config_path: config_path.map(Path::to_path_buf),
            block: file.block.clone(),
            enforce: EnforceMode::Off,
            drift: file.drift.clone(),
        })
    }

    /// Loads the config file and resolves it.
    ///
    /// # Errors
    /// When the file or a model card is unreadable or invalid.
    pub fn load(config_path: &Path) -> Result<Self, AlertsError> {
        let file = SensorFile::load(config_path)?;
        Self::from_file(&file, Some(config_path))
    }

    /// Settings with defaults only and no files: no alert record log, no
    /// verdict store (tests, or running without a config file).
    #[must_use]
    pub fn defaults() -> Self {
        let mut s = Self::from_file(&SensorFile::default(), None).expect("defaults load no files");
        s.alerts.alert_log = PathBuf::new();
        s.alerts.verdict_store = PathBuf::new();
        s
    }

    /// Feature names for the alert record log: the classifier card's, or
    /// `f0`, `f1` … when no card names them.
    #[must_use]
    pub fn feature_names(&self, n: usize) -> Vec<String> {
        let names = self
            .classifier
            .as_ref()
            .map(|c| c.feature_names.as_slice())
            .unwrap_or_default();
        (0..n)
            .map(|i| names.get(i).cloned().unwrap_or_else(|| format!("f{i}")))
            .collect()
    }
}

/// A configured duration (seconds, negative read as 0) in the stage's
/// nanoseconds of event time.
pub(super) fn secs_to_ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9) as u64
}

#[cfg(test)]
mod tests;
