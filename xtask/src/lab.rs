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
            "  {:<11} sev {:>3}  {} -> {}  score {:.3}  ({owner})",
            a.class,
            a.severity,
            a.attacker,
            a.victim_side(),
            a.score
        );
    }
    if n == 0 {
        println!("  (none)");
    }
    Ok(())
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

mod eve;
#[cfg(test)]
mod tests;

pub(crate) use eve::{EveAlert, Owner, attribute, clock_offset_ns};
