//! `cargo xtask lab`: the traffic lab (see `sensor_lab::lab` and docs/lab.md).
//!
//! - `lab list`: the scenario catalogue.
//! - `lab run <scenario>...`: builds the lab, starts the sensor on its
//!   monitor port (both directions, `--mirror`), plays the scenarios and
//!   prints what each sent and what the sensor raised.
//! - `lab record`: a sequence of benign and attack scenarios, each in a
//!   fresh lab with benign background traffic and a fresh sensor recording
//!   every scored row; labels each row
//!   from the address plan and the scenario windows and writes
//!   `labelled.csv` (train.py's format: features, `group` = scenario,
//!   `label`), `labelled.meta.json` and `summary.json`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sensor_common::clock::{monotonic_ns, realtime_ns};
use sensor_lab::lab::scenario::{
    self, Background, Label, RowLabel, ScenarioOutcome, ScenarioSpec, label_row,
};
use sensor_lab::lab::{AddressPlan, TrafficLab};
use sensor_lab::sensor::{SensorOutput, SensorRun};

/// Options of `cargo xtask lab`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum LabCmd {
    /// List the scenarios: name, label, origin, bounds, tools.
    List,
    /// Play scenarios against a fresh lab with the sensor watching.
    Run {
        /// Scenario names (see `lab list`).
        #[arg(required = true)]
        scenarios: Vec<String>,
        /// Keep the sensor's outputs here (default: a temporary directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Record a labelled dataset from a sequence of scenarios.
    Record {
        /// Output directory.
        #[arg(long, default_value = "target/lab")]
        out: PathBuf,
        /// Comma-separated scenario names [default: the standard sequence].
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        /// At most this many rows per scenario (and for the background) in
        /// labelled.csv, thinned evenly; 0 keeps all.
        #[arg(long, default_value_t = 6000)]
        max_rows_per_scenario: usize,
    },
}

/// The standard `lab record` sequence: benign first, then every attack,
/// each in its own lab with benign traffic in the background (about 6
/// minutes).
pub(crate) const RECORD_SEQUENCE: &[&str] = &[
    "benign-browse",
    "benign-dns",
    "benign-download",
    "benign-iperf",
    "benign-speedtest",
    "benign-ping",
    "benign-offline-peers",
    "scan-syn",
    "scan-connect",
    "scan-udp",
    "scan-fin",
    "scan-null",
    "scan-xmas",
    "scan-slow",
    "scan-sweep",
    "flood-syn",
    "flood-syn-spoofed",
    "flood-udp",
    "flood-udp-spoofed",
    "flood-icmp",
    "flood-icmp-spoofed",
    "flood-trafgen",
    "bruteforce-ssh",
    "bruteforce-ssh-like",
    "bruteforce-http",
    "anomaly-slowhttp",
    "anomaly-exfil",
    "benign-idle-tcp",
];

/// Extra time after a scenario ends during which its sources' rows still
/// carry its label (in-flight replies, the mirror, batching).
pub(crate) const TAIL_NS: u64 = 1_000_000_000;
/// Pause between scenarios, longer than the tail, so windows never overlap.
pub(crate) const GAP: Duration = Duration::from_millis(1_500);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches Ctrl-C so a lab command unwinds through its guards (sensor,
/// services, namespaces) instead of dying with the lab still in place.
pub(crate) fn catch_ctrl_c() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
}

/// True once Ctrl-C was pressed (after [`catch_ctrl_c`]).
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub(crate) fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs a `lab` subcommand.
pub(crate) fn lab(cmd: &LabCmd) -> Result<()> {
    if let LabCmd::List = cmd {
        list();
        return Ok(());
    }
    if !sensor_lab::root::is_root() {
        bail!("the lab creates network namespaces and loads XDP: run it as root");
    }
    let bin = crate::build()?;
    catch_ctrl_c();
    let result = match cmd {
        LabCmd::List => Ok(()),
        LabCmd::Run { scenarios, out } => run_cmd(&bin, scenarios, out.as_deref()),
        LabCmd::Record {
            out,
            scenarios,
            max_rows_per_scenario,
        } => record(&bin, out, scenarios, *max_rows_per_scenario),
    };
    if interrupted() {
        eprintln!("lab interrupted; lab removed");
        std::process::exit(130);
    }
    result
}

fn list() {
    println!(
        "{:<22} {:<11} {:<9} {:>5} {:>8}  {:<14} description",
        "scenario", "label", "origin", "max s", "max pkts", "tools"
    );
    for s in scenario::catalogue() {
        println!(
            "{:<22} {:<11} {:<9} {:>5} {:>8}  {:<14} {}{}",
            s.name,
            s.label.name(),
            format!("{:?}", s.origin).to_lowercase(),
            s.max_seconds,
            if s.max_packets == 0 {
                "-".to_owned()
            } else {
                s.max_packets.to_string()
            },
            s.tools.join(","),
            s.description,
            if s.spoofed { " [spoofed]" } else { "" }
        );
    }
}

fn specs(names: &[String]) -> Result<Vec<ScenarioSpec>> {
    names
        .iter()
        .map(|n| scenario::find(n).map_err(anyhow::Error::from))
        .collect()
}

/// A lab with the sensor on its monitor port, recording.
pub(crate) struct Session {
    sensor: SensorRun,
    record: PathBuf,
    pub(crate) eve: PathBuf,
    pub(crate) lab: TrafficLab,
}

/// What a stopped [`Session`] leaves: the sensor's outputs and files.
pub(crate) struct Stopped {
    pub(crate) output: SensorOutput,
    pub(crate) record: PathBuf,
    pub(crate) eve: PathBuf,
}

impl Stopped {
    /// The sensor's own summary lines (`sensor: ...` on stderr).
    pub(crate) fn summary(&self) -> String {
        self.output
            .stderr
            .lines()
            .filter(|l| l.starts_with("sensor:"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Session {
    /// Builds the lab and starts the sensor with `extra` arguments.
    pub(crate) fn start(bin: &Path, dir: &Path, extra: &[&str]) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let t = Instant::now();
        let lab = TrafficLab::new().context("building the traffic lab")?;
        let record = dir.join("recording.csv");
        let eve = dir.join("eve.json");
        let _ = std::fs::remove_file(&eve);
        let record_arg = record.display().to_string();
        let eve_arg = eve.display().to_string();
        let mut sensor = SensorRun::start(
            &lab.sensor_ns,
            bin,
            lab.monitor_iface(),
            dir,
            &[
                "--mirror",
                "--record-out",
                &record_arg,
                "--eve-out",
                &eve_arg,
            ]
            .iter()
            .chain(extra)
            .copied()
            .collect::<Vec<_>>(),
        )?;
        sensor
            .wait_attached(
                &lab.sensor_ns,
                Duration::from_secs(20),
                Duration::from_millis(500),
            )
            .context("starting the sensor")?;
        println!(
            "lab up in {:.1} s; sensor on monitor port {} ({})",
            t.elapsed().as_secs_f64(),
            lab.monitor_iface(),
            lab.sensor_ns.name()
        );
        Ok(Self {
            sensor,
            record,
            eve,
            lab,
        })
    }

    pub(crate) fn play(&mut self, spec: &ScenarioSpec) -> Result<ScenarioOutcome> {
        check_interrupt()?;
        let o =
            scenario::run(&self.lab, spec).with_context(|| format!("scenario {}", spec.name))?;
        self.lab.check_services()?;
        let first = o.first_packet_mono_ns.map_or_else(
            || "-".to_owned(),
            |t| format!("{:.1} ms", t.saturating_sub(o.start_mono_ns) as f64 / 1e6),
        );
        println!(
            "  {:<22} {:<10} {:>8} frames {:>11} bytes in {:>5.1} s (first frame after {first})",
            o.name,
            o.label.name(),
            o.packets_sent,
            o.bytes_sent,
            o.seconds()
        );
        Ok(o)
    }

    /// Stops the sensor and removes the lab.
    pub(crate) fn stop(self) -> Result<Stopped> {
        std::thread::sleep(Duration::from_millis(500));
        let output = self
            .sensor
            .stop(Duration::from_secs(30))
            .context("stopping the sensor")?;
        drop(self.lab);
        Ok(Stopped {
            output,
            record: self.record,
            eve: self.eve,
        })
    }
}

fn run_cmd(bin: &Path, names: &[String], out: Option<&Path>) -> Result<()> {
    let specs = specs(names)?;
    let tmp = sensor_lab::sensor::TempDir::new("lab-run")?;
    let dir = out.map_or_else(|| tmp.path().to_owned(), Path::to_owned);
    let mut s = Session::start(bin, &dir, &[])?;
    let plan = s.lab.plan().clone();
    println!("sent:");
    let mut outcomes = Vec::new();
    for spec in &specs {
        outcomes.push(s.play(spec)?);
        std::thread::sleep(GAP);
    }
    let stopped = s.stop()?;
    println!("{}", stopped.summary());
    print_alerts(&stopped.eve, &plan, &outcomes)?;
    let rec = Recording::read(&stopped.record)?;
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &rec.rows {
        let l = match label_row(&plan, &outcomes, TAIL_NS, r.src, r.ts_ns) {
            RowLabel::Attack(i) => outcomes[i].label.name(),
            RowLabel::Benign => "benign",
            RowLabel::Unattributed => "unattributed",
        };
        *counts.entry(l).or_default() += 1;
    }
    println!("recorded rows by label: {counts:?}");
    if out.is_some() {
        println!("outputs in {}", dir.display());
    }
    Ok(())
}

/// Prints the alerts the sensor opened, with the scenario each belongs to
/// ([`attribute`]).
fn print_alerts(eve: &Path, plan: &AddressPlan, outcomes: &[ScenarioOutcome]) -> Result<()> {
    let clock_offset_ns = clock_offset_ns();
    let text = std::fs::read_to_string(eve).unwrap_or_default();
    println!("alerts raised:");
    let mut n = 0;
    for line in text.lines() {
        let a = EveAlert::parse(line, clock_offset_ns)?;
        if !a.opened {
            continue;
        }
        n += 1;
        let owner = attribute(plan, outcomes, a.src, a.dst, a.mono_ns).describe(outcomes);
        println!(
            "  {:<11} sev {:>3}  {} -> {}:{}  score {:.3}  ({owner})",
            a.class, a.severity, a.attacker, a.victim, a.dest_port, a.score
        );
    }
    if n == 0 {
        println!("  (none)");
    }
    Ok(())
}

/// One line of the sensor's EVE output: the fields the lab shows and
/// attributes.
pub(crate) struct EveAlert {
    /// `alert` with state `open` (not an update or a close).
    pub(crate) opened: bool,
    /// `alert_closed`.
    pub(crate) closed: bool,
    pub(crate) alert_id: String,
    pub(crate) class: String,
    /// The sensor's 0-100 severity.
    pub(crate) severity: u64,
    /// EVE's 1-3 severity.
    pub(crate) eve_severity: u64,
    /// As printed: an address or `many`.
    pub(crate) attacker: String,
    pub(crate) victim: String,
    pub(crate) dest_port: u64,
    pub(crate) score: f64,
    pub(crate) incident: String,
    /// Most active sources of an alert that aggregates its attackers
    /// (`many -> victim`, e.g. a flood), most rows first; empty otherwise.
    pub(crate) top_sources: Vec<(IpAddr, u64)>,
    /// Last row of the alert so far, on `CLOCK_MONOTONIC`.
    pub(crate) last_seen_ns: Option<u64>,
    /// The attacker, or for a many-source alert the row's own source.
    pub(crate) src: Option<IpAddr>,
    /// The victim, or for a many-target alert the row's own destination.
    pub(crate) dst: Option<IpAddr>,
    /// The line's timestamp (an opening alert: its first row) on
    /// `CLOCK_MONOTONIC`, the scenarios' clock.
    pub(crate) mono_ns: Option<u64>,
}

impl EveAlert {
    /// Parses an EVE line; `clock_offset_ns` is [`clock_offset_ns`].
    pub(crate) fn parse(line: &str, clock_offset_ns: u64) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("EVE line is not JSON: {line}"))?;
        let x = &v["xdp_sensor"];
        let text = |j: &serde_json::Value| j.as_str().unwrap_or("?").to_owned();
        let ip = |own: &serde_json::Value, row: &serde_json::Value| {
            own.as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| row.as_str().and_then(|s| s.parse().ok()))
        };
        let mono = |j: &serde_json::Value| {
            j.as_str()
                .and_then(eve_unix_ns)
                .map(|t| t.saturating_sub(clock_offset_ns))
        };
        let top_sources = x["sources"]["top"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| Some((e["ip"].as_str()?.parse().ok()?, e["count"].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            opened: v["event_type"] == "alert" && x["state"] == "open",
            closed: v["event_type"] == "alert_closed",
            alert_id: text(&x["alert_id"]),
            class: text(&x["class"]),
            severity: x["severity"].as_u64().unwrap_or(0),
            eve_severity: v["alert"]["severity"].as_u64().unwrap_or(0),
            attacker: text(&x["attacker"]),
            victim: text(&x["victim"]),
            dest_port: v["dest_port"].as_u64().unwrap_or(0),
            score: x["score"].as_f64().unwrap_or(f64::NAN),
            incident: text(&x["incident_id"]),
            top_sources,
            last_seen_ns: mono(&x["last_seen"]),
            src: ip(&x["attacker"], &v["src_ip"]),
            dst: ip(&x["victim"], &v["dest_ip"]),
            mono_ns: mono(&v["timestamp"]),
        })
    }
}

/// Whom an alert belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// `outcomes[i]`.
    Scenario(usize),
    /// No scenario matches; the role of the alert's source in the plan.
    Unmatched(&'static str),
}

impl Owner {
    /// The scenario's name, or `<role>: no scenario running`.
    pub(crate) fn describe(self, outcomes: &[ScenarioOutcome]) -> String {
        match self {
            Owner::Scenario(i) => outcomes[i].name.clone(),
            Owner::Unmatched(role) => format!("{role}: no scenario running"),
        }
    }
}

/// The scenario an alert (or rows of one) from `src` to `dst` at `t`
/// (`CLOCK_MONOTONIC`) belongs to: the one running at `t` whose traffic it
/// is, else one that ended at most `2 * TAIL_NS` earlier. An attack scenario's traffic is its senders'
/// (spoofed sources included) and the replies to them; a benign
/// scenario's is everything between lab addresses other than the
/// attacker. A scenario still running can be passed with `end_mono_ns =
/// u64::MAX`.
pub(crate) fn attribute(
    plan: &AddressPlan,
    outcomes: &[ScenarioOutcome],
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    t: Option<u64>,
) -> Owner {
    let attacker = IpAddr::from(plan.attacker);
    let ends = [src, dst];
    let hostile = ends
        .iter()
        .flatten()
        .any(|&a| a == attacker || !plan.contains(a));
    let owns = |o: &ScenarioOutcome| {
        if o.label == Label::Benign {
            !hostile
        } else {
            ends.iter().flatten().any(|&a| o.sources.matches(plan, a))
        }
    };
    let unmatched = Owner::Unmatched(src.or(dst).map_or("?", |a| role(plan, a)));
    let Some(t) = t else {
        return unmatched;
    };
    [0, 2 * TAIL_NS]
        .iter()
        .find_map(|&tail| {
            // Benign scenarios share their clients with the background, so
            // only their own window counts.
            outcomes.iter().position(|o| {
                let tail = if o.label == Label::Benign { 0 } else { tail };
                o.in_window(t, tail) && owns(o)
            })
        })
        .map_or(unmatched, Owner::Scenario)
}

/// What an address is in the lab plan.
fn role(plan: &AddressPlan, a: IpAddr) -> &'static str {
    if a == IpAddr::from(plan.attacker) {
        "attacker"
    } else if plan.is_client(a) {
        "client"
    } else if plan.contains(a) {
        "server side"
    } else {
        "spoofed source"
    }
}

/// `CLOCK_REALTIME` minus `CLOCK_MONOTONIC`: turns EVE's wall-clock timestamps
/// into the scenarios' clock.
pub(crate) fn clock_offset_ns() -> u64 {
    realtime_ns().saturating_sub(monotonic_ns())
}

/// Parses an EVE timestamp (`2026-11-22T06:40:44.055992+0000`) to Unix ns.
fn eve_unix_ns(ts: &str) -> Option<u64> {
    let (date, rest) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (time, zone) = rest.split_at(rest.find(['+', '-', 'Z'])?);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    let off_min = match zone.as_bytes().first()? {
        b'Z' => 0,
        sign => {
            let z = &zone[1..];
            let v = z.get(..2)?.parse::<i64>().ok()? * 60 + z.get(2..4)?.parse::<i64>().ok()?;
            if *sign == b'-' { -v } else { v }
        }
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 - off_min * 60;
    let ns = secs as f64 * 1e9 + sec * 1e9;
    (ns >= 0.0).then_some(ns as u64)
}

/// One row of a `--record-out` file (what labelling needs).
struct Row {
    ts_ns: u64,
    src: IpAddr,
    /// The feature columns, as written.
    features: String,
}

/// A parsed `--record-out` file.
struct Recording {
    feature_names: Vec<String>,
    rows: Vec<Row>,
}

impl Recording {
    /// Reads the recording; its header must be `event_ts_ns,src,dst,sport,
    /// dport,proto,<features>,p_<class>...,anomaly_score`.
    fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .with_context(|| format!("{} is empty", path.display()))?
            .split(',')
            .collect();
        let first_prob = header
            .iter()
            .position(|c| c.starts_with("p_"))
            .with_context(|| format!("{}: no p_<class> columns", path.display()))?;
        if header.len() < 7 || header[0] != "event_ts_ns" || header[1] != "src" || first_prob < 6 {
            bail!("{}: unexpected header {header:?}", path.display());
        }
        let feature_names: Vec<String> = header[6..first_prob]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut rows = Vec::new();
        for (i, l) in lines.enumerate() {
            let cols: Vec<&str> = l.split(',').collect();
            if cols.len() != header.len() {
                bail!(
                    "{}: line {} has {} columns, the header {}",
                    path.display(),
                    i + 2,
                    cols.len(),
                    header.len()
                );
            }
            rows.push(Row {
                ts_ns: cols[0]
                    .parse()
                    .with_context(|| format!("{}: line {}: bad ts", path.display(), i + 2))?,
                src: cols[1]
                    .parse()
                    .with_context(|| format!("{}: line {}: bad src", path.display(), i + 2))?,
                features: cols[6..first_prob].join(","),
            });
        }
        Ok(Self {
            feature_names,
            rows,
        })
    }
}

/// Which scenario (or the background) a row is attributed to, for counts
/// and thinning: attack rows by label; benign rows from clients by the
/// benign scenario whose window holds them, else the background; server
/// replies as `replies`.
fn bucket(plan: &AddressPlan, outcomes: &[ScenarioOutcome], r: &Row, l: RowLabel) -> String {
    match l {
        RowLabel::Attack(i) => outcomes[i].name.clone(),
        RowLabel::Unattributed => "unattributed".into(),
        RowLabel::Benign if plan.is_client(r.src) => outcomes
            .iter()
            .find(|o| o.label == Label::Benign && o.in_window(r.ts_ns, 0))
            .map_or_else(|| "background".into(), |o| o.name.clone()),
        RowLabel::Benign => "replies".into(),
    }
}

/// Consecutive rows of one scenario kept together in labelled.csv.
const CHUNK_ROWS: usize = 100;

/// Appends the buckets' rows to `out` in chunks of `chunk` consecutive rows,
/// taking one chunk from each bucket in turn. `train.py` splits its input
/// into blocks of 1000 consecutive rows; in plain time order a scenario would
/// fill a few whole blocks and a class could miss a split entirely, while
/// chunks keep neighbouring rows of one flow together.
fn interleave(out: &mut String, buckets: BTreeMap<&str, Vec<String>>, chunk: usize) {
    let mut iters: Vec<_> = buckets.into_values().map(Vec::into_iter).collect();
    loop {
        let mut any = false;
        for it in &mut iters {
            for line in it.by_ref().take(chunk) {
                out.push_str(&line);
                any = true;
            }
        }
        if !any {
            break;
        }
    }
}

fn record(bin: &Path, out: &Path, names: &[String], cap: usize) -> Result<()> {
    let t0 = Instant::now();
    let names: Vec<String> = if names.is_empty() {
        RECORD_SEQUENCE.iter().map(|s| (*s).to_owned()).collect()
    } else {
        names.to_vec()
    };
    let specs = specs(&names)?;
    let out = if out.is_relative() {
        crate::workspace_root().join(out)
    } else {
        out.to_owned()
    };
    // Each scenario gets a fresh lab and sensor, as in `cargo xtask eval`:
    // no host enters a scenario with windows filled by the previous one (an
    // attacker's 1 h distinct-port count from an earlier scan would
    // otherwise label a later 10-port scan or a single ICMP flood by that
    // history, which a first-time attacker does not have).
    let mut outcomes = Vec::new();
    let mut summaries = Vec::new();
    let mut feature_names: Option<(Vec<String>, serde_json::Value)> = None;
    let mut rows: Vec<(Row, RowLabel, String)> = Vec::new();
    println!(
        "sent (each scenario in a fresh lab, with benign browsing and an idle keepalive \
         connection in the background):"
    );
    for (i, spec) in specs.iter().enumerate() {
        let dir = out.join(format!("run-{i:02}-{}", spec.name));
        let mut s = Session::start(bin, &dir, &[])?;
        let plan = s.lab.plan().clone();
        let background =
            Background::start(&s.lab, spec.max_seconds + 15).context("benign background")?;
        std::thread::sleep(Duration::from_secs(2));
        let o = s.play(spec)?;
        std::thread::sleep(GAP);
        drop(background);
        let stopped = s.stop()?;
        let local = std::slice::from_ref(&o);
        print_alerts(&stopped.eve, &plan, local)?;
        summaries.push(stopped.summary());
        let rec = Recording::read(&stopped.record)?;
        let schema_path = stopped.record.with_extension("schema.json");
        let schema: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&schema_path)
                .with_context(|| format!("reading {}", schema_path.display()))?,
        )
        .with_context(|| format!("parsing {}", schema_path.display()))?;
        let schema_names: Vec<&str> = schema["features"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["name"].as_str()).collect())
            .unwrap_or_default();
        if schema_names != rec.feature_names {
            bail!(
                "{} does not describe the recording's feature columns",
                schema_path.display()
            );
        }
        match &feature_names {
            Some((names, _)) if *names != rec.feature_names => {
                bail!(
                    "{}: feature columns differ from the first run",
                    stopped.record.display()
                )
            }
            Some(_) => {}
            None => feature_names = Some((rec.feature_names.clone(), schema)),
        }
        for r in rec.rows {
            let l = label_row(&plan, local, TAIL_NS, r.src, r.ts_ns);
            let b = bucket(&plan, local, &r, l);
            let l = match l {
                RowLabel::Attack(_) => RowLabel::Attack(outcomes.len()),
                other => other,
            };
            rows.push((r, l, b));
        }
        outcomes.push(o);
    }
    let Some((feature_names, schema)) = feature_names else {
        bail!("no scenario to record");
    };
    let summary = summaries.join("\n");
    println!("{summary}");

    // Thin each bucket evenly to `cap`.
    let mut per_bucket: BTreeMap<String, [u64; 2]> = BTreeMap::new();
    for (_, _, b) in &rows {
        per_bucket.entry(b.clone()).or_default()[0] += 1;
    }
    let stride: BTreeMap<String, u64> = per_bucket
        .iter()
        .map(|(b, n)| {
            let s = if cap == 0 {
                1
            } else {
                n[0].div_ceil(cap as u64).max(1)
            };
            (b.clone(), s)
        })
        .collect();
    // `group` is the scenario (bucket) a row belongs to: training counts a
    // missed attack per scenario, not per row.
    let mut train = format!("{},group,label\n", feature_names.join(","));
    // Kept training rows per bucket, in time order.
    let mut kept: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut per_class: BTreeMap<&str, u64> = BTreeMap::new();
    let mut bucket_label: BTreeMap<String, &str> = BTreeMap::new();
    let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
    for (r, l, b) in &rows {
        let name = match l {
            RowLabel::Attack(i) => outcomes[*i].label.name(),
            RowLabel::Benign => "benign",
            RowLabel::Unattributed => continue,
        };
        let k = seen.entry(b.as_str()).or_default();
        *k += 1;
        if !(*k - 1).is_multiple_of(stride[b]) {
            continue;
        }
        per_bucket.get_mut(b).expect("bucket counted")[1] += 1;
        bucket_label.insert(b.clone(), name);
        *per_class.entry(name).or_default() += 1;
        let line = format!("{},{b},{name}\n", r.features);
        kept.entry(b.as_str()).or_default().push(line);
    }
    interleave(&mut train, kept, CHUNK_ROWS);
    let labelled_path = out.join("labelled.csv");
    std::fs::write(&labelled_path, &train)
        .with_context(|| format!("writing {}", labelled_path.display()))?;

    let counts = |l: &str| per_class.get(l).copied().unwrap_or(0);
    let command = format!(
        "cargo xtask lab record --out {} --scenarios {} --max-rows-per-scenario {cap}",
        out.display(),
        names.join(",")
    );
    let meta = serde_json::json!({
        "schema": schema,
        "dataset": {
            "simulated": false,
            "generator": "cargo xtask lab record: real programs and attack tools in network \
                namespaces, mirrored to the sensor (XDP, --mirror), every scored row recorded \
                (sensor run --record-out), each scenario in a fresh lab watched by a fresh \
                sensor, labelled by sending namespace and scenario window",
            "labelling_rule": "a row has an attack scenario's label iff its source is the \
                attacker's address (or, for spoofing scenarios, an address outside the lab plan other \
                than 0.0.0.0) \
                and its event time lies in the scenario's window (+1 s); attacker/spoofed rows \
                outside every window are dropped; all other rows are benign",
            "scenarios": names,
            "rows_per_scenario_cap": cap,
            "row_order": format!(
                "chunks of {CHUNK_ROWS} consecutive rows (time order) of each scenario, \
                 one chunk per scenario in turn"
            ),
            "rows_per_class": {
                "benign": counts("benign"), "flood": counts("flood"), "scan": counts("scan"),
                "bruteforce": counts("bruteforce"), "anomaly": counts("anomaly"),
            },
            "command": command,
        },
    });
    let meta_path = out.join("labelled.meta.json");
    std::fs::write(&meta_path, serde_json::to_string_pretty(&meta)?)
        .with_context(|| format!("writing {}", meta_path.display()))?;
    let summary_json = serde_json::json!({
        "seconds": t0.elapsed().as_secs_f64(),
        "recorded_rows": rows.len(),
        "rows_per_class": per_class,
        "buckets": per_bucket.iter().map(|(b, n)| serde_json::json!({
            "bucket": b, "label": bucket_label.get(b).copied().unwrap_or("-"),
            "recorded": n[0], "kept": n[1],
        })).collect::<Vec<_>>(),
        "scenarios": outcomes,
        "sensor": summary,
    });
    let summary_path = out.join("summary.json");
    std::fs::write(&summary_path, serde_json::to_string_pretty(&summary_json)?)
        .with_context(|| format!("writing {}", summary_path.display()))?;

    println!("\nrows per scenario (recorded -> kept in the dataset):");
    for (b, n) in &per_bucket {
        println!(
            "  {b:<22} {:<11} {:>8} -> {:>6}",
            bucket_label.get(b).copied().unwrap_or("-"),
            n[0],
            n[1]
        );
    }
    println!("rows per class: {per_class:?}");
    println!(
        "wrote {} ({} rows), {}, {} in {:.0} s",
        labelled_path.display(),
        train.lines().count() - 1,
        meta_path.display(),
        summary_path.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_lab::lab::scenario::SourceRule;

    #[test]
    fn interleave_takes_chunks_in_turn_and_keeps_every_row() {
        let mut b: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        b.insert("a", (0..5).map(|i| format!("a{i}\n")).collect());
        b.insert("b", (0..2).map(|i| format!("b{i}\n")).collect());
        let mut out = String::new();
        interleave(&mut out, b, 2);
        assert_eq!(out, "a0\na1\nb0\nb1\na2\na3\na4\n");
    }

    fn outcome(
        name: &str,
        label: Label,
        sources: SourceRule,
        start: u64,
        end: u64,
    ) -> ScenarioOutcome {
        ScenarioOutcome {
            first_packet_mono_ns: Some(start),
            end_mono_ns: end,
            ..ScenarioOutcome::started(name, label, scenario::Origin::Attacker, sources, start)
        }
    }

    #[test]
    fn alerts_are_attributed_by_window_and_endpoints() {
        let plan = AddressPlan::default();
        let (att, client, server) = (
            plan.attacker.to_string(),
            plan.clients[0].to_string(),
            plan.server.to_string(),
        );
        let s = 1_000 * TAIL_NS;
        let o = vec![
            outcome(
                "dns",
                Label::Benign,
                SourceRule::Addresses(vec![plan.clients[0].into()]),
                s,
                s + 5 * TAIL_NS,
            ),
            outcome(
                "flood",
                Label::Flood,
                SourceRule::AddressesAndSpoofed(vec![plan.attacker.into()]),
                s + 7 * TAIL_NS,
                u64::MAX,
            ),
        ];
        let a = |src: &str, dst: &str, t: u64| {
            attribute(&plan, &o, src.parse().ok(), dst.parse().ok(), Some(t))
        };
        let (att, client, server) = (att.as_str(), client.as_str(), server.as_str());
        let (benign, attack) = (Owner::Scenario(0), Owner::Scenario(1));
        let unmatched = Owner::Unmatched("client");
        // (source, destination, time, owner, why)
        #[rustfmt::skip]
        let cases = [
            (client, server, s + TAIL_NS, benign, ""),
            (server, client, s + TAIL_NS, benign, "reply"),
            (client, server, s + 6 * TAIL_NS, unmatched, "no tail for benign scenarios: the background shares their clients"),
            (att, server, s + 7 * TAIL_NS + 1, attack, ""),
            (att, server, s + TAIL_NS, Owner::Unmatched("attacker"), ""),
            (att, server, s + 8 * TAIL_NS, attack, "still running"),
            ("198.51.100.7", server, s + 8 * TAIL_NS, attack, ""),
            (server, att, s + 8 * TAIL_NS, attack, "reply"),
            (client, server, s + 8 * TAIL_NS, unmatched, "benign traffic during an attack is not the attack's"),
            (client, server, s - TAIL_NS, unmatched, ""),
        ];
        for (src, dst, t, owner, why) in cases {
            assert_eq!(a(src, dst, t), owner, "{src} -> {dst} at {t}: {why}");
        }
        assert_eq!(
            attribute(&plan, &o, att.parse().ok(), server.parse().ok(), None),
            Owner::Unmatched("attacker")
        );
    }

    #[test]
    fn eve_timestamps_parse_to_unix_time() {
        assert_eq!(
            eve_unix_ns("1970-01-01T00:00:01.5+0000"),
            Some(1_500_000_000)
        );
        // 2026-11-22 06:40:44 UTC = 1795329644.
        let t = eve_unix_ns("2026-11-22T06:40:44.000000+0000").unwrap();
        assert_eq!(t / 1_000_000_000, 1_795_329_644);
        let east = eve_unix_ns("2026-11-22T07:40:44.000000+0100").unwrap();
        assert_eq!(east, t);
        assert_eq!(eve_unix_ns("garbage"), None);
    }
}
