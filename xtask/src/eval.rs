//! `cargo xtask eval`: how well the sensor, with its committed models,
//! detects attacks it was never trained on, and how quiet it stays on benign
//! traffic.
//!
//! Each case (a real capture from `tests/data/pcaps`, or a lab scenario)
//! gets a fresh lab, a fresh sensor with scoring on and its EVE output in a
//! file, its traffic, then the sensor is stopped and its alerts are matched
//! against the case's ground truth:
//!
//! - a *correct detection* is an alert of the expected class whose named
//!   attacker is an attacker and whose named victim is a victim of the
//!   attack traffic (`many` matches anything; roles come from the capture
//!   manifest's `attack_rule` or the scenario's sending namespace);
//! - every other alert is a *false detection*: any alert on a benign case,
//!   an alert of another class, or one naming a host outside its role;
//! - *time to detect* is `xdp_sensor.emitted_mono_ns` of the first correct
//!   alert (`CLOCK_MONOTONIC` when the alert stage wrote its `open` record)
//!   minus `CLOCK_MONOTONIC` just before the first attack frame was handed to
//!   the kernel.
//!
//! Captures replay through the sensor's `--mirror` mode: the gateway end
//! counts then drops every frame, so replayed traffic never reaches a stack.
//!
//! `--source flows` runs the same cases with no XDP program: softflowd
//! watches the same interface and exports IPFIX to `sensor collect`
//! (`sensor_lab::collect`), so detection comes from flow records alone;
//! `--source both` runs each case both ways, the flow row (`<case>
//! [flows]`) under the packet row, time to detect beside time to detect.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sensor_lab::collect::CollectRun;
use sensor_lab::detection::{OpenAlert, judge, read_open_alerts, scenario_roles};
use sensor_lab::lab::TrafficLab;
use sensor_lab::lab::scenario::{self, Label, ScenarioSpec};
use sensor_lab::manifest::{self, Entry};
use sensor_lab::replay::{AttackRoles, Capture, ReplayOptions, Replayer, compress_gaps};
use sensor_lab::sensor::{SensorRun, TempDir};
use sensor_lab::{Lab, Netns};
use serde_json::{Value, json};

/// `cargo xtask eval` options.
#[derive(clap::Args, Debug)]
pub(crate) struct EvalArgs {
    /// Only the real captures, not the lab scenarios.
    #[arg(long)]
    captures_only: bool,
    /// Replay speed of the captures: 1 is the recorded rate, 2 twice as fast.
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    speed: f64,
    /// Longest replay per capture, in seconds of replay time (after
    /// `--max-gap` shortening and `--speed`); longer captures are cut and
    /// marked as such in the table.
    #[arg(long, default_value_t = 30.0)]
    max_seconds: f64,
    /// Shorten every idle gap between consecutive frames of a capture that
    /// is longer than this many seconds to this many seconds, so long,
    /// mostly idle captures replay whole (bursts keep their recorded pace).
    #[arg(long, value_name = "SECONDS", value_parser = parse_gap)]
    max_gap: Option<f64>,
    /// Most frames replayed per capture.
    #[arg(long, default_value_t = 1_000_000)]
    max_packets: usize,
    /// Every scenario of the lab's catalogue instead of one or two per kind
    /// (takes several minutes longer).
    #[arg(long, conflicts_with = "captures_only")]
    all_scenarios: bool,
    /// Only cases whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// What the sensor reads: the interface's packets (XDP), flow records
    /// a real exporter (softflowd) makes of them (`sensor collect`), or
    /// each case both ways.
    #[arg(long, value_enum, default_value_t = Source::Xdp)]
    source: Source,
    /// Markdown table path; the JSON goes next to it (`.json`)
    /// [default: target/eval/eval.md].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// `--source`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Xdp,
    Flows,
    Both,
}

fn parse_gap(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!(
            "`{s}` must be zero or a positive number of seconds"
        ))
    }
}

fn parse_speed(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("`{s}` must be a positive number"))
    }
}

/// Replay bounds shared by every case.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunOpts {
    pub(crate) speed: f64,
    pub(crate) max_duration: Duration,
    pub(crate) max_packets: usize,
    /// Idle gaps of captures longer than this are shortened to it.
    pub(crate) max_gap: Option<Duration>,
}

/// Ground truth of a case, known once its traffic has been sent.
#[derive(Debug, Default)]
pub(crate) struct CaseTruth {
    /// `CLOCK_MONOTONIC` (ns) just before the first attack frame left; `None`
    /// for benign traffic (or when no attack frame was sent).
    pub(crate) first_attack_mono_ns: Option<u64>,
    /// Addresses a correct alert may name as attacker and as victim.
    pub(crate) roles: AttackRoles,
    /// What was sent, for the table: packets, seconds, bounds, skips.
    pub(crate) traffic: String,
    /// True when a bound cut the traffic short.
    pub(crate) bounded: bool,
    /// Recorded time the traffic covers, in seconds: for a capture the
    /// span of its own timestamps that was replayed (before `--max-gap`
    /// shortening; a silence counts [`MAX_COUNTED_GAP`] at most), for a
    /// scenario its run time. The denominator of alerts per benign hour.
    pub(crate) recorded_s: f64,
    /// Extra facts for the JSON report.
    pub(crate) details: Value,
}

/// Starts the sensor of a case on the interface the case chooses. Holds
/// the sensor and its output directory.
pub(crate) struct SensorSlot {
    bin: PathBuf,
    models: PathBuf,
    max_duration: Duration,
    dir: TempDir,
    /// Flow records from softflowd to `sensor collect` instead of XDP.
    flows: bool,
    run: Option<SensorRun>,
    collect: Option<CollectRun>,
}

/// What a stopped sensor leaves for the table: its counters and stderr.
struct Stopped {
    counters: BTreeMap<String, u64>,
    stderr: String,
}

impl SensorSlot {
    /// EVE file of this case's sensor.
    fn eve(&self) -> PathBuf {
        self.dir.path().join("eve.json")
    }

    /// Starts `sensor run` with scoring on and EVE output on `iface` inside
    /// `ns`, `--mirror` when `mirror` (a monitor port: frames are counted
    /// and dropped), and waits until its XDP program is attached.
    ///
    /// # Errors
    /// A sensor is already running, or it fails to start.
    pub(crate) fn start(&mut self, ns: &Netns, iface: &str, mirror: bool) -> Result<()> {
        if self.run.is_some() || self.collect.is_some() {
            bail!("the sensor of this case is already running");
        }
        let eve = self.eve().to_string_lossy().into_owned();
        let models = self.models.to_string_lossy().into_owned();
        // A bound in case the harness dies: generous beyond the replay.
        let duration = format!("{:.0}", self.max_duration.as_secs_f64() + 120.0);
        let mut args = vec![
            "--eve-out",
            &eve,
            "--models-dir",
            &models,
            "--duration",
            &duration,
        ];
        if self.flows {
            // The exporter captures the frames; nothing drops them.
            self.collect = Some(
                CollectRun::start(ns, &self.bin, iface, self.dir.path(), &args)
                    .context("starting softflowd and sensor collect")?,
            );
            return Ok(());
        }
        if mirror {
            args.push("--mirror");
        }
        let mut run = SensorRun::start(ns, &self.bin, iface, self.dir.path(), &args)?;
        run.wait_attached(ns, Duration::from_secs(30), Duration::from_millis(500))
            .context("starting the sensor")?;
        self.run = Some(run);
        Ok(())
    }

    fn stop(&mut self) -> Result<Stopped> {
        if let Some(c) = self.collect.take() {
            let out = c.stop(Duration::from_secs(20))?;
            let counters = match serde_json::to_value(out.stats.collector)? {
                Value::Object(m) => m
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v.as_u64()?)))
                    .collect(),
                _ => BTreeMap::new(),
            };
            return Ok(Stopped {
                counters,
                stderr: out.stderr,
            });
        }
        let run = self
            .run
            .take()
            .context("the case never started the sensor")?;
        let out = run.stop(Duration::from_secs(20))?;
        Ok(Stopped {
            counters: out.stats.counters,
            stderr: out.stderr,
        })
    }
}

/// One evaluation case: a capture, or a lab scenario.
pub(crate) trait Case {
    /// Short name for the table.
    fn name(&self) -> String;
    /// `capture` or `scenario`.
    fn source(&self) -> &'static str;
    /// `benign` or the class the sensor should report.
    fn expected_class(&self) -> String;
    /// Builds the case's lab, starts the sensor through `sensor` at the
    /// lab's observation point, sends the traffic and returns its ground
    /// truth with whatever keeps the lab alive until the sensor is stopped.
    ///
    /// # Errors
    /// Any lab, sensor or traffic step fails.
    fn run(&self, sensor: &mut SensorSlot, opts: RunOpts) -> Result<(CaseTruth, Box<dyn Any>)>;
}

/// A real capture replayed into a sender → gateway lab.
pub(crate) struct CaptureCase {
    entry: Entry,
    capture: Capture,
}

impl CaptureCase {
    /// Checks the file against the manifest and reads it.
    ///
    /// # Errors
    /// Checksum mismatch or an unreadable capture.
    pub(crate) fn load(entry: Entry) -> Result<Self> {
        entry.verify()?;
        let capture = Capture::load(&entry.path)?;
        Ok(Self { entry, capture })
    }
}

impl Case for CaptureCase {
    fn name(&self) -> String {
        self.entry.name().to_owned()
    }

    fn source(&self) -> &'static str {
        "capture"
    }

    fn expected_class(&self) -> String {
        self.entry.expected_class.clone()
    }

    fn run(&self, sensor: &mut SensorSlot, opts: RunOpts) -> Result<(CaseTruth, Box<dyn Any>)> {
        let lab = Lab::sender_gateway().context("building the lab")?;
        sensor.start(&lab.gateway, &lab.link.b, true)?;
        let tx = Replayer::open(&lab.sender, &lab.link.a)?;
        let rule = &self.entry.attack_rule;
        let rep = tx.replay(
            &self.capture,
            rule,
            ReplayOptions {
                speed: opts.speed,
                max_packets: opts.max_packets,
                max_duration: opts.max_duration,
                max_gap: opts.max_gap,
            },
        )?;
        let total = self.capture.duration().as_secs_f64();
        let mut traffic = if rep.truncated {
            format!(
                "{} of {} pkts, first {:.1} of {total:.1} s",
                rep.sent,
                self.capture.len(),
                rep.capture_span.as_secs_f64()
            )
        } else {
            format!("{} pkts, {total:.2} s", rep.sent)
        };
        if opts.speed != 1.0 {
            let _ = write!(traffic, " at {}x", opts.speed);
        }
        if let Some(g) = opts.max_gap.filter(|_| rep.gaps_shortened > 0) {
            let _ = write!(
                traffic,
                "; {} gaps > {} s shortened",
                rep.gaps_shortened,
                g.as_secs_f64()
            );
        }
        if rep.skipped_too_large > 0 {
            let _ = write!(
                traffic,
                "; {} > MTU {} skipped",
                rep.skipped_too_large,
                tx.mtu()
            );
        }
        if rep.skipped_short > 0 {
            let _ = write!(traffic, "; {} runts skipped", rep.skipped_short);
        }
        let truth = CaseTruth {
            first_attack_mono_ns: rep.first_attack_mono_ns,
            roles: self.capture.attack_roles(rule),
            traffic,
            bounded: rep.truncated,
            recorded_s: monitored_seconds(
                &self.capture.offsets_ns().0,
                usize::try_from(rep.sent + rep.skipped_too_large + rep.skipped_short)
                    .unwrap_or(usize::MAX),
            ),
            details: json!({
                "file": self.entry.file,
                "source": self.entry.source,
                "license": self.entry.license,
                "attack_rule": rule.to_string(),
                "packets_in_capture": self.capture.len(),
                "capture_seconds": total,
                "sent": rep.sent,
                "skipped_too_large": rep.skipped_too_large,
                "skipped_short": rep.skipped_short,
                "timestamps_clamped": rep.clamped,
                "retries": rep.retries,
                "truncated": rep.truncated,
                "gaps_shortened": rep.gaps_shortened,
                "capture_span_s": rep.capture_span.as_secs_f64(),
                "replay_elapsed_s": rep.elapsed.as_secs_f64(),
                "mtu": tx.mtu(),
            }),
        };
        Ok((truth, Box::new(lab)))
    }
}

/// Longest silence between two frames counted into a capture's recorded
/// time: some captures were merged from recordings months or years apart,
/// and such a gap is no traffic anybody monitored.
const MAX_COUNTED_GAP: Duration = Duration::from_mins(1);

/// Recorded seconds covered by the first `frames` frames of a capture with
/// these (clamped) offsets, each gap between frames counted up to
/// [`MAX_COUNTED_GAP`].
fn monitored_seconds(offsets: &[u64], frames: usize) -> f64 {
    let (counted, _) = compress_gaps(&offsets[..frames.min(offsets.len())], Some(MAX_COUNTED_GAP));
    counted.last().map_or(0.0, |&ns| ns as f64 / 1e9)
}

/// Every capture of the committed manifest.
fn capture_cases() -> Result<Vec<Box<dyn Case>>> {
    manifest::committed()?
        .into_iter()
        .map(|e| CaptureCase::load(e).map(|c| Box::new(c) as Box<dyn Case>))
        .collect()
}

/// A scenario of the traffic lab: real programs and attack tools, the
/// sensor on the lab's monitor port (`--mirror`: it sees both directions of
/// the gateway's LAN port and drops its copies).
pub(crate) struct ScenarioCase {
    spec: ScenarioSpec,
}

impl Case for ScenarioCase {
    fn name(&self) -> String {
        self.spec.name.to_owned()
    }

    fn source(&self) -> &'static str {
        "scenario"
    }

    fn expected_class(&self) -> String {
        self.spec.label.name().to_owned()
    }

    fn run(&self, sensor: &mut SensorSlot, _opts: RunOpts) -> Result<(CaseTruth, Box<dyn Any>)> {
        let lab = TrafficLab::new().context("building the traffic lab")?;
        sensor.start(&lab.sensor_ns, lab.monitor_iface(), true)?;
        let o = scenario::run(&lab, &self.spec)
            .with_context(|| format!("scenario {}", self.spec.name))?;
        let attack = o.label != Label::Benign;
        let roles = scenario_roles(lab.plan(), &o);
        let truth = CaseTruth {
            first_attack_mono_ns: if attack { o.first_packet_mono_ns } else { None },
            roles,
            traffic: format!(
                "{} frames from the {}, {:.1} s{}",
                o.packets_sent,
                match o.origin {
                    scenario::Origin::Clients => "clients",
                    scenario::Origin::Attacker => "attacker",
                },
                o.seconds(),
                if self.spec.spoofed { ", spoofed" } else { "" }
            ),
            bounded: false,
            recorded_s: o.seconds(),
            details: json!({
                "description": self.spec.description,
                "tools": self.spec.tools,
                "outcome": o,
            }),
        };
        Ok((truth, Box::new(lab)))
    }
}

/// Scenarios of the default evaluation: one or two per kind of traffic, so
/// a full run stays within a few minutes (`--all-scenarios` runs the whole
/// catalogue).
const DEFAULT_SCENARIOS: &[&str] = &[
    "benign-browse",
    "benign-download",
    "benign-dns",
    "benign-iperf",
    "benign-offline-peers",
    "scan-syn",
    "scan-udp",
    "scan-sweep",
    "flood-syn-spoofed",
    "flood-udp",
    "flood-icmp",
    "bruteforce-ssh",
    "bruteforce-http",
    "anomaly-slowhttp",
];

/// Lab scenarios: the default selection, or the whole catalogue.
fn scenario_cases(all: bool) -> Vec<Box<dyn Case>> {
    scenario::catalogue()
        .into_iter()
        .filter(|s| all || DEFAULT_SCENARIOS.contains(&s.name))
        .map(|spec| Box::new(ScenarioCase { spec }) as Box<dyn Case>)
        .collect()
}

/// The evaluation of one case.
#[derive(Debug)]
struct Row {
    name: String,
    source: &'static str,
    expected: String,
    traffic: String,
    bounded: bool,
    /// [`CaseTruth::recorded_s`].
    recorded_s: f64,
    /// Alerts opened, by class.
    classes: BTreeMap<String, u64>,
    correct: u64,
    false_alerts: Vec<String>,
    /// Every opened alert, in order.
    alerts: Vec<String>,
    latency_ms: Option<f64>,
    error: Option<String>,
    details: Value,
    counters: BTreeMap<String, u64>,
    /// Last lines of the sensor's stderr (its closing summary).
    summary: Vec<String>,
}

/// Lines of the sensor's stderr kept per case.
const SUMMARY_LINES: usize = 40;

impl Row {
    fn is_benign(&self) -> bool {
        self.expected == "benign"
    }

    fn detected(&self) -> bool {
        self.correct > 0
    }

    /// Attack found and nothing else raised, or benign and silent.
    fn ok(&self) -> bool {
        self.error.is_none()
            && self.false_alerts.is_empty()
            && (self.is_benign() || self.detected())
    }

    fn to_json(&self) -> Value {
        json!({
            "case": self.name,
            "source": self.source,
            "expected": self.expected,
            "traffic": self.traffic,
            "bounded": self.bounded,
            "recorded_s": self.recorded_s,
            "detected": !self.is_benign() && self.detected(),
            "alert_classes": self.classes,
            "correct_alerts": self.correct,
            "false_detections": self.false_alerts.len(),
            "false_alerts": self.false_alerts,
            "alerts": self.alerts,
            "time_to_detect_ms": self.latency_ms,
            "ok": self.ok(),
            "error": self.error,
            "details": self.details,
            "sensor_counters": self.counters,
            "sensor_summary": self.summary,
        })
    }
}

fn score(
    name: String,
    source: &'static str,
    expected: String,
    truth: CaseTruth,
    alerts: &[OpenAlert],
) -> Row {
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    for a in alerts {
        *classes.entry(a.class.clone()).or_default() += 1;
    }
    let j = judge(alerts, &expected, &truth.roles);
    Row {
        latency_ms: j.time_to_detect_ms(truth.first_attack_mono_ns),
        name,
        source,
        expected,
        traffic: truth.traffic,
        bounded: truth.bounded,
        recorded_s: truth.recorded_s,
        classes,
        correct: j.correct.len() as u64,
        false_alerts: j.false_alerts.iter().map(ToString::to_string).collect(),
        alerts: alerts.iter().map(ToString::to_string).collect(),
        error: None,
        details: truth.details,
        counters: BTreeMap::new(),
        summary: Vec::new(),
    }
}

/// Runs one case end to end. Errors become a row with the error, so one
/// broken case does not hide the others.
/// The case's EVE file is kept in `eve_dir` as `<case>.eve.json`.
fn evaluate(
    case: &dyn Case,
    bin: &Path,
    models: &Path,
    opts: RunOpts,
    eve_dir: &Path,
    flows: bool,
) -> Row {
    let name = if flows {
        format!("{} [flows]", case.name())
    } else {
        case.name()
    };
    let failed = |e: anyhow::Error| Row {
        name: name.clone(),
        source: case.source(),
        expected: case.expected_class(),
        traffic: String::new(),
        bounded: false,
        recorded_s: 0.0,
        classes: BTreeMap::new(),
        correct: 0,
        false_alerts: Vec::new(),
        alerts: Vec::new(),
        latency_ms: None,
        error: Some(format!("{e:#}")),
        details: Value::Null,
        counters: BTreeMap::new(),
        summary: Vec::new(),
    };
    let dir = match TempDir::new("eval") {
        Ok(d) => d,
        Err(e) => return failed(e.into()),
    };
    let mut slot = SensorSlot {
        bin: bin.to_owned(),
        models: models.to_owned(),
        max_duration: opts.max_duration,
        dir,
        flows,
        run: None,
        collect: None,
    };
    let result = (|| -> Result<(CaseTruth, Stopped)> {
        let (truth, keep) = case.run(&mut slot, opts)?;
        // Rows of the last events reach the models and the alert stage.
        std::thread::sleep(Duration::from_millis(1500));
        let out = slot.stop()?;
        drop(keep);
        Ok((truth, out))
    })();
    let (truth, out) = match result {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    // Capture names are paths (`scan/x`): the same tree under `eve_dir`.
    let kept = eve_dir.join(format!(
        "{}{}.eve.json",
        case.name(),
        if flows { ".flows" } else { "" }
    ));
    let copied = kept
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::copy(slot.eve(), &kept));
    if let Err(e) = copied {
        eprintln!(
            "cannot keep {} as {}: {e}",
            slot.eve().display(),
            kept.display()
        );
    }
    match read_open_alerts(&slot.eve()) {
        Ok(alerts) => {
            let mut row = score(name, case.source(), case.expected_class(), truth, &alerts);
            row.counters = out.counters;
            // The sensor's closing summary (pipeline and alert-stage
            // counters): why rows did or did not become alerts.
            let lines: Vec<&str> = out.stderr.lines().collect();
            row.summary = lines[lines.len().saturating_sub(SUMMARY_LINES)..]
                .iter()
                .map(|l| (*l).to_owned())
                .collect();
            row
        }
        Err(e) => failed(e.into()),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Cases and alerts of one class, counted over cases.
#[derive(Debug, Default, PartialEq)]
struct ClassCount {
    /// Cases whose expected class this is.
    cases: u64,
    /// Of them, those detected (an alert of the class on the attack).
    detected: u64,
    /// Cases with at least one alert of this class.
    alerted: u64,
    /// Of them, those whose expected class this is and that were detected.
    alerted_right: u64,
}

impl ClassCount {
    fn recall(&self) -> Option<f64> {
        ratio(self.detected, self.cases)
    }

    fn precision(&self) -> Option<f64> {
        ratio(self.alerted_right, self.alerted)
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// The evaluation's figures over all cases; cases with an error are left
/// out of every figure except `errors`.
#[derive(Debug, Default)]
struct Summary {
    attacks: u64,
    attacks_detected: u64,
    benign: u64,
    benign_silent: u64,
    false_alerts: u64,
    errors: u64,
    /// Per attack class, every class expected or alerted on.
    classes: BTreeMap<String, ClassCount>,
    /// False detections inside attack cases.
    attack_false_alerts: u64,
    /// Alerts opened on benign cases.
    benign_alerts: u64,
    /// Recorded seconds of benign traffic ([`CaseTruth::recorded_s`]).
    benign_seconds: f64,
}

impl Summary {
    fn of(rows: &[Row]) -> Self {
        let mut m = Self::default();
        for r in rows {
            if r.error.is_some() {
                m.errors += 1;
                continue;
            }
            m.false_alerts += r.false_alerts.len() as u64;
            if r.is_benign() {
                m.benign += 1;
                m.benign_silent += u64::from(r.false_alerts.is_empty());
                m.benign_alerts += r.alerts.len() as u64;
                m.benign_seconds += r.recorded_s;
            } else {
                m.attacks += 1;
                m.attacks_detected += u64::from(r.detected());
                m.attack_false_alerts += r.false_alerts.len() as u64;
                let c = m.classes.entry(r.expected.clone()).or_default();
                c.cases += 1;
                c.detected += u64::from(r.detected());
            }
            for class in r.classes.keys() {
                let c = m.classes.entry(class.clone()).or_default();
                c.alerted += 1;
                c.alerted_right += u64::from(*class == r.expected && r.detected());
            }
        }
        m
    }

    fn extra_per_attack(&self) -> Option<f64> {
        ratio(self.attack_false_alerts, self.attacks)
    }

    fn alerts_per_benign_hour(&self) -> Option<f64> {
        (self.benign_seconds > 0.0)
            .then(|| self.benign_alerts as f64 * 3600.0 / self.benign_seconds)
    }

    fn to_json(&self) -> Value {
        json!({
            "attacks": self.attacks,
            "attacks_detected": self.attacks_detected,
            "benign": self.benign,
            "benign_silent": self.benign_silent,
            "false_detections": self.false_alerts,
            "errors": self.errors,
            "per_class": self.classes.iter().map(|(k, c)| (k.clone(), json!({
                "cases": c.cases,
                "detected": c.detected,
                "recall": c.recall(),
                "cases_alerted": c.alerted,
                "cases_alerted_right": c.alerted_right,
                "precision": c.precision(),
            }))).collect::<serde_json::Map<_, _>>(),
            "extra_alerts_per_attack_case": self.extra_per_attack(),
            "benign_alerts": self.benign_alerts,
            "benign_recorded_s": self.benign_seconds,
            "alerts_per_benign_hour": self.alerts_per_benign_hour(),
        })
    }
}

fn markdown(rows: &[Row], opts: RunOpts) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| case | source | expected | traffic | detected | alert classes | time to detect | false detections |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | ---: | --- |");
    for r in rows {
        if let Some(e) = &r.error {
            let _ = writeln!(
                s,
                "| {} | {} | {} | error: {} | | | | |",
                r.name,
                r.source,
                r.expected,
                e.replace('|', "/").replace('\n', " ")
            );
            continue;
        }
        let classes = if r.classes.is_empty() {
            "none".to_owned()
        } else {
            r.classes
                .iter()
                .map(|(c, n)| format!("{c} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let detected = if r.is_benign() {
            "n/a".to_owned()
        } else {
            yes_no(r.detected()).to_owned()
        };
        let latency = r
            .latency_ms
            .map_or_else(|| "–".to_owned(), |ms| format!("{ms:.0} ms"));
        let false_detections = if r.false_alerts.is_empty() {
            "0".to_owned()
        } else {
            let mut shown: Vec<&str> = r.false_alerts.iter().take(3).map(String::as_str).collect();
            let more = r.false_alerts.len().saturating_sub(3);
            let extra = if more > 0 {
                format!(", +{more}")
            } else {
                String::new()
            };
            shown.dedup();
            format!("{} ({}{extra})", r.false_alerts.len(), shown.join(", "))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}{} | {detected} | {classes} | {latency} | {false_detections} |",
            r.name,
            r.source,
            r.expected,
            r.traffic,
            if r.bounded { " (bounded)" } else { "" },
        );
    }
    let m = Summary::of(rows);
    let _ = writeln!(
        s,
        "\nAttacks detected with the right class: {}/{}. Benign cases without any alert: {}/{}. \
         False detections: {}. Errors: {}.",
        m.attacks_detected, m.attacks, m.benign_silent, m.benign, m.false_alerts, m.errors,
    );
    let _ = writeln!(
        s,
        "\n| class | cases | detected | recall | cases with an alert of the class | of them right | precision |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let pct = |x: Option<f64>| x.map_or_else(|| "–".to_owned(), |v| format!("{:.0} %", v * 100.0));
    for (class, c) in &m.classes {
        let _ = writeln!(
            s,
            "| {class} | {} | {} | {} | {} | {} | {} |",
            c.cases,
            c.detected,
            pct(c.recall()),
            c.alerted,
            c.alerted_right,
            pct(c.precision())
        );
    }
    let per = |x: Option<f64>, digits: usize| {
        x.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
    };
    let _ = writeln!(
        s,
        "\nExtra alerts per attack case: {} ({} false detections over {} attack cases). \
         Alerts per benign hour: {} ({} alerts over {:.2} h of recorded benign traffic).",
        per(m.extra_per_attack(), 2),
        m.attack_false_alerts,
        m.attacks,
        per(m.alerts_per_benign_hour(), 1),
        m.benign_alerts,
        m.benign_seconds / 3600.0,
    );
    let counted_gap = MAX_COUNTED_GAP.as_secs();
    let gaps = opts.max_gap.map_or_else(String::new, |g| {
        format!(
            ", idle gaps longer than {} s shortened to it",
            g.as_secs_f64()
        )
    });
    let _ = writeln!(
        s,
        "\nCaptures replayed at {}x their recorded rate{gaps}, each bounded to {:.0} s of replay and {} frames; scenarios \
         run real tools in a fresh traffic lab (sensor on its monitor port). \
         Detected: an alert of the expected class whose named attacker/victim are an \
         attacker/victim of the attack traffic (captures: the manifest's attack_rule; \
         scenarios: the attacker or a spoofed source attacks, the server side is attacked). \
         Time to detect: `xdp_sensor.emitted_mono_ns` of the first such alert minus \
         CLOCK_MONOTONIC just before the first attack frame was sent. \
         False detections: alerts on benign cases, and alerts of another class or \
         naming a host outside its role. \
         Per class, the unit is a case: recall is the share of the class's cases detected; \
         precision is the share of cases with an alert of the class whose expected class \
         it is and that were detected. \
         Benign hours: the recorded time of the benign traffic replayed (capture \
         timestamps before `--max-gap` shortening, a silence counting {counted_gap} s at most; \
         scenario run time). Cases that failed \
         with an error count in none of these figures.",
        opts.speed,
        opts.max_duration.as_secs_f64(),
        opts.max_packets
    );
    s
}

/// Runs the evaluation.
///
/// # Errors
/// Not root, the build fails, a capture differs from the manifest, or the
/// reports cannot be written. A case that fails is reported in its row.
pub(crate) fn eval(args: &EvalArgs) -> Result<()> {
    let started = Instant::now();
    if !sensor_lab::root::is_root() {
        bail!("the evaluation creates network namespaces and loads XDP: run it as root");
    }
    let bin = crate::build()?;
    let models = crate::workspace_root().join("models");
    let opts = RunOpts {
        speed: args.speed,
        max_duration: Duration::try_from_secs_f64(args.max_seconds)
            .context("--max-seconds must be a positive number")?,
        max_packets: args.max_packets,
        max_gap: args
            .max_gap
            .map(Duration::try_from_secs_f64)
            .transpose()
            .context("--max-gap must be a number of seconds")?,
    };
    let mut cases = capture_cases()?;
    if args.captures_only {
        println!("lab scenarios skipped (--captures-only)");
    } else {
        cases.extend(scenario_cases(args.all_scenarios));
    }
    if let Some(f) = &args.only {
        cases.retain(|c| c.name().contains(f.as_str()));
        if cases.is_empty() {
            bail!("no case name contains `{f}`");
        }
    }
    let md_path = args
        .out
        .clone()
        .unwrap_or_else(|| crate::target_dir().join("eval/eval.md"));
    let json_path = md_path.with_extension("json");
    // Every case's alerts as the sensor wrote them, for a closer look.
    let eve_dir = md_path.with_file_name("eve");
    std::fs::create_dir_all(&eve_dir).with_context(|| format!("creating {}", eve_dir.display()))?;
    crate::demo::catch_ctrl_c();
    let mut rows = Vec::new();
    let ways: &[bool] = match args.source {
        Source::Xdp => &[false],
        Source::Flows => &[true],
        Source::Both => &[false, true],
    };
    let runs: Vec<(&Box<dyn Case>, bool)> = cases
        .iter()
        .flat_map(|c| ways.iter().map(move |&f| (c, f)))
        .collect();
    for (i, &(case, flows)) in runs.iter().enumerate() {
        crate::demo::check_interrupt()?;
        print!(
            "[{}/{}] {} {}{} ... ",
            i + 1,
            runs.len(),
            case.source(),
            case.name(),
            if flows { " [flows]" } else { "" }
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let t = Instant::now();
        let row = evaluate(case.as_ref(), &bin, &models, opts, &eve_dir, flows);
        println!(
            "{} ({:.1} s)",
            match (&row.error, row.ok()) {
                (Some(e), _) => format!("error: {e}"),
                (None, true) => "ok".to_owned(),
                (None, false) if !row.is_benign() && !row.detected() => "missed".to_owned(),
                (None, false) => format!("{} false detections", row.false_alerts.len()),
            },
            t.elapsed().as_secs_f64()
        );
        rows.push(row);
    }
    crate::demo::check_interrupt()?;
    let md = markdown(&rows, opts);
    println!("\n{md}");
    if let Some(dir) = md_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    let report = json!({
        "speed": opts.speed,
        "max_seconds": opts.max_duration.as_secs_f64(),
        "max_packets": opts.max_packets,
        "max_gap_s": opts.max_gap.map(|g| g.as_secs_f64()),
        "elapsed_s": started.elapsed().as_secs_f64(),
        "summary": Summary::of(&rows).to_json(),
        "cases": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!(
        "written {} and {} ({:.0} s)",
        md_path.display(),
        json_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn alert(class: &str, victim: &str, t: u64) -> OpenAlert {
        OpenAlert {
            incident_id: String::new(),
            alert_id: String::new(),
            class: class.into(),
            attacker: None,
            victim: Some(ip(victim)),
            victim_prefix: None,
            emitted_mono_ns: Some(t),
        }
    }

    #[test]
    fn rows_count_classes_detections_and_false_alerts() {
        let truth = || CaseTruth {
            first_attack_mono_ns: Some(1_000_000_000),
            roles: AttackRoles {
                attackers: [ip("172.16.0.5")].into(),
                victims: [ip("192.168.50.4")].into(),
                spoofed_outside: None,
            },
            ..CaseTruth::default()
        };
        let alerts = [
            alert("flood", "192.168.50.4", 1_250_000_000),
            alert("scan", "192.168.50.4", 1_100_000_000),
        ];
        let r = score("c".into(), "capture", "flood".into(), truth(), &alerts);
        assert_eq!((r.correct, r.false_alerts.len()), (1, 1));
        assert!(r.detected() && !r.ok());
        assert_eq!(r.latency_ms, Some(250.0));
        assert_eq!(r.classes.len(), 2);
        let r = score("b".into(), "capture", "benign".into(), truth(), &[]);
        assert!(r.ok() && r.latency_ms.is_none());
        let r = score("m".into(), "capture", "scan".into(), truth(), &[]);
        assert!(!r.ok() && !r.detected());
        let md = markdown(
            &[r],
            RunOpts {
                speed: 1.0,
                max_duration: Duration::from_secs(30),
                max_packets: 1000,
                max_gap: None,
            },
        );
        assert!(
            md.contains("| m | capture | scan |") && md.contains("| no |"),
            "{md}"
        );
    }

    #[test]
    fn benign_time_counts_replayed_frames_and_long_silences_up_to_a_minute() {
        let s = |x: u64| x * 1_000_000_000;
        // Two bursts a year apart, then 30 s more.
        let offsets = [0, s(10), s(31_536_000), s(31_536_030)];
        assert_eq!(monitored_seconds(&offsets, 4), 100.0);
        assert_eq!(monitored_seconds(&offsets, 2), 10.0);
        assert_eq!(monitored_seconds(&offsets, 99), 100.0);
        assert_eq!(monitored_seconds(&offsets, 0), 0.0);
    }

    #[test]
    fn summary_counts_per_class_over_cases_and_per_benign_hour() {
        let roles = AttackRoles {
            attackers: [ip("172.16.0.5")].into(),
            victims: [ip("192.168.50.4")].into(),
            spoofed_outside: None,
        };
        let truth = |attack: bool, recorded_s: f64| CaseTruth {
            first_attack_mono_ns: attack.then_some(0),
            roles: roles.clone(),
            recorded_s,
            ..CaseTruth::default()
        };
        let v = "192.168.50.4";
        let rows = [
            // Flood found, plus a scan alert beside it.
            score(
                "f1".into(),
                "capture",
                "flood".into(),
                truth(true, 10.0),
                &[alert("flood", v, 1), alert("scan", v, 2)],
            ),
            // Flood missed, named a scan.
            score(
                "f2".into(),
                "capture",
                "flood".into(),
                truth(true, 10.0),
                &[alert("scan", v, 1)],
            ),
            // Scan found.
            score(
                "s1".into(),
                "capture",
                "scan".into(),
                truth(true, 5.0),
                &[alert("scan", v, 1)],
            ),
            // Anomaly expected, missed, silent.
            score(
                "a1".into(),
                "capture",
                "anomaly".into(),
                truth(true, 5.0),
                &[],
            ),
            // Benign: 30 min with two alerts, 90 min silent.
            score(
                "b1".into(),
                "capture",
                "benign".into(),
                truth(false, 1800.0),
                &[alert("flood", v, 1), alert("anomaly", v, 2)],
            ),
            score(
                "b2".into(),
                "scenario",
                "benign".into(),
                truth(false, 5400.0),
                &[],
            ),
        ];
        let mut broken = score("e".into(), "capture", "scan".into(), truth(true, 99.0), &[]);
        broken.error = Some("lab failed".into());
        let mut all: Vec<Row> = rows.into_iter().collect();
        all.push(broken);
        let m = Summary::of(&all);
        assert_eq!(
            (m.attacks, m.attacks_detected, m.benign, m.benign_silent),
            (4, 2, 2, 1)
        );
        assert_eq!((m.errors, m.false_alerts, m.attack_false_alerts), (1, 4, 2));
        let c = |k: &str| &m.classes[k];
        assert_eq!(
            c("flood"),
            &ClassCount {
                cases: 2,
                detected: 1,
                alerted: 2,
                alerted_right: 1
            }
        );
        assert_eq!(
            c("scan"),
            &ClassCount {
                cases: 1,
                detected: 1,
                alerted: 3,
                alerted_right: 1
            }
        );
        assert_eq!(
            c("anomaly"),
            &ClassCount {
                cases: 1,
                detected: 0,
                alerted: 1,
                alerted_right: 0
            }
        );
        assert_eq!(c("flood").recall(), Some(0.5));
        assert_eq!(c("scan").precision(), Some(1.0 / 3.0));
        assert_eq!(c("anomaly").precision(), Some(0.0));
        assert!(!m.classes.contains_key("benign") && !m.classes.contains_key("bruteforce"));
        assert_eq!(m.extra_per_attack(), Some(0.5));
        assert_eq!(m.benign_seconds, 7200.0);
        assert_eq!(m.alerts_per_benign_hour(), Some(1.0));
        assert_eq!(Summary::of(&[]).alerts_per_benign_hour(), None);
        let md = markdown(
            &all,
            RunOpts {
                speed: 1.0,
                max_duration: Duration::from_secs(30),
                max_packets: 1000,
                max_gap: Some(Duration::from_secs(2)),
            },
        );
        assert!(
            md.contains("| flood | 2 | 1 | 50 % | 2 | 1 | 50 % |"),
            "{md}"
        );
        assert!(
            md.contains("| scan | 1 | 1 | 100 % | 3 | 1 | 33 % |"),
            "{md}"
        );
        assert!(md.contains("Extra alerts per attack case: 0.50"), "{md}");
        assert!(
            md.contains("Alerts per benign hour: 1.0 (2 alerts over 2.00 h"),
            "{md}"
        );
        assert!(md.contains("idle gaps longer than 2 s shortened"), "{md}");
    }
}
