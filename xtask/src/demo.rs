//! `cargo xtask demo`: the traffic lab (`sensor_lab::lab`, docs/lab.md)
//! with the sensor on its monitor port, a benign background, a few benign
//! scenarios and a few attacks from real tools, each alert shown as the
//! sensor raises it with the scenario it belongs to, then what the sensor
//! counted and a verdict per scenario.
//!
//! ```text
//!  clients 10.10.0.11-.14 ─┐
//!                          ├─ lan ── gw ── server 10.20.0.2 (web, DNS, iperf3, ssh)
//!  attacker 10.10.0.66 ────┘         │ mirror of the LAN port, both directions
//!                                    ▼
//!                     sensor namespace: `sensor run --iface <monitor> --mirror`
//! ```
//!
//! The sensor sits on a SPAN-like port, so it sees the servers' replies as
//! well as the requests. Everything lives in private network namespaces,
//! removed at the end, on error and on Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sensor_common::clock::monotonic_ns;
use sensor_lab::lab::AddressPlan;
use sensor_lab::lab::scenario::{self, Background, Label, ScenarioOutcome, ScenarioSpec};
use sensor_lab::sensor::{SensorOutput, TempDir};

use crate::lab::{EveAlert, GAP, Owner, Session, attribute, clock_offset_ns};
// Ctrl-C handling is shared by every lab command (`eval` reaches it here).
pub(crate) use crate::lab::{catch_ctrl_c, check_interrupt};

/// The demo's scenarios, in order: benign first, then attacks. Each takes
/// at most a few seconds here (bounds in `cargo xtask lab list`).
const SCENARIOS: &[&str] = &[
    "benign-dns",
    "benign-speedtest",
    "benign-ping",
    "scan-syn",
    "flood-syn-spoofed",
    "flood-udp",
    "bruteforce-ssh-like",
];

/// Benign background before the first scenario, so the sensor has seen
/// ordinary traffic first.
const WARM_UP: Duration = Duration::from_secs(2);

/// Runs the demo; on Ctrl-C, everything is removed and the exit code is 130.
pub(crate) fn demo() -> Result<()> {
    let result = run_demo();
    // By now every guard (sensor, services, namespaces, temp dir) has been
    // dropped.
    if crate::lab::interrupted() {
        eprintln!("demo interrupted; lab removed");
        std::process::exit(130);
    }
    result
}

fn run_demo() -> Result<()> {
    let started = Instant::now();
    crate::setup::setup()?;
    if !sensor_lab::root::is_root() {
        bail!("the demo creates network namespaces and loads XDP: run it as root");
    }
    let specs: Vec<ScenarioSpec> = SCENARIOS
        .iter()
        .map(|n| scenario::find(n))
        .collect::<Result<_, _>>()?;
    let bin = crate::build()?;
    catch_ctrl_c();
    let t0 = Instant::now();
    let out = TempDir::new("demo")?;
    // Alert updates every second (default 60 s) so the live view sees which
    // scenario's rows go into an alert that is already open.
    let config = out.path().join("demo.toml");
    std::fs::write(&config, "[alerts]\nupdate_interval_s = 1.0\n")
        .with_context(|| format!("writing {}", config.display()))?;
    let config_arg = config.display().to_string();
    let mut session = Session::start(&bin, out.path(), &["--config", &config_arg])?;
    let plan = session.lab.plan().clone();
    println!(
        "clients {}, attacker {} -> gateway -> server {}; the gateway's LAN port is mirrored \
         (both directions) to the sensor",
        plan.clients
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        plan.attacker,
        plan.server
    );
    println!(
        "alerts are printed as the sensor raises them, with the scenario each belongs to ({})",
        session.eve.display()
    );

    let budget: u32 = specs
        .iter()
        .map(|s| s.max_seconds + GAP.as_secs() as u32 + 1)
        .sum::<u32>()
        + 10;
    let background = Background::start(&session.lab, budget).context("benign background")?;
    // Scenarios as they play; the one running has `end_mono_ns = u64::MAX`.
    let timeline: Arc<Mutex<Vec<ScenarioOutcome>>> = Arc::default();
    let follower = Follower::start(session.eve.clone(), plan.clone(), Arc::clone(&timeline));
    println!(
        "\nbackground (benign): page fetches from the four clients and an idle keepalive \
         connection, throughout"
    );
    std::thread::sleep(WARM_UP);
    for spec in &specs {
        check_interrupt()?;
        println!(
            "\n{} ({}): {}",
            spec.name,
            spec.label.name(),
            spec.description
        );
        lock(&timeline).push(spec.started(&plan, monotonic_ns()));
        let outcome = session.play(spec)?;
        *lock(&timeline).last_mut().expect("pushed above") = outcome;
        std::thread::sleep(GAP);
    }
    drop(background);
    let stopped = session.stop()?;
    let view = follower.finish()?;
    let outcomes = std::mem::take(&mut *lock(&timeline));

    report(&stopped.output, &plan, &outcomes);
    println!(
        "\nalerts: {} opened, {} closed, in {} incident(s) (all closed when the sensor stopped)",
        view.opened,
        view.closed,
        view.incidents.len()
    );
    verdicts(&view, &outcomes);
    println!(
        "\nlab time {:.1} s (total with setup/build {:.1} s); lab removed",
        t0.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What an unmatched alert is called: traffic between clients and servers
/// outside every scenario is the background's.
fn owner_name(owner: Owner, outcomes: &[ScenarioOutcome]) -> String {
    match owner {
        Owner::Unmatched("client" | "server side") => "background".into(),
        o => o.describe(outcomes),
    }
}

/// One opened alert, attributed.
struct Seen {
    owner: Owner,
    class: String,
    /// When the demo printed it (`CLOCK_MONOTONIC`): the sensor's alert
    /// latency plus at most one 200 ms poll.
    printed_ns: u64,
}

/// Rows a scenario added to an alert another scenario (or the background)
/// opened. Flood alerts are keyed by victim, so a second flood on the same
/// victim joins the open alert instead of opening its own; the alert's
/// updates (top sources with row counts) show whose rows it took.
struct Join {
    class: String,
    victim: String,
    rows: u64,
}

/// Follows the sensor's EVE file, prints each alert as it opens with the
/// scenario it belongs to, and keeps them for the verdicts.
struct AlertView {
    plan: AddressPlan,
    clock_offset_ns: u64,
    /// Bytes of the file already read.
    offset: usize,
    opened: usize,
    closed: usize,
    incidents: BTreeSet<String>,
    seen: Vec<Seen>,
    /// Owner of each alert, by alert id.
    owners: BTreeMap<String, Owner>,
    /// Top sources and their rows in the latest line of each alert.
    tops: BTreeMap<String, BTreeMap<IpAddr, u64>>,
    /// By (alert id, scenario index).
    joins: BTreeMap<(String, usize), Join>,
}

impl AlertView {
    /// Handles the complete lines written since the last call.
    fn poll(
        &mut self,
        eve: &std::path::Path,
        timeline: &Mutex<Vec<ScenarioOutcome>>,
    ) -> Result<()> {
        let Ok(text) = std::fs::read(eve) else {
            return Ok(()); // not created yet
        };
        let Some(new) = text.get(self.offset..) else {
            return Ok(());
        };
        let Some(end) = new.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let chunk = String::from_utf8_lossy(&new[..=end]).into_owned();
        self.offset += end + 1;
        for line in chunk.lines() {
            let a = EveAlert::parse(line, self.clock_offset_ns)?;
            if !a.incident.is_empty() && a.incident != "?" {
                self.incidents.insert(a.incident.clone());
            }
            if a.closed {
                self.closed += 1;
            }
            let outcomes = lock(timeline);
            if a.opened {
                self.opened += 1;
                let owner = attribute(&self.plan, &outcomes, a.src, a.dst, a.mono_ns);
                self.owners.insert(a.alert_id.clone(), owner);
                self.show(&a, owner, &outcomes);
            }
            self.joined(&a, &outcomes);
        }
        Ok(())
    }

    /// Prints an alert that just opened and keeps it for the verdicts.
    fn show(&mut self, a: &EveAlert, owner: Owner, outcomes: &[ScenarioOutcome]) {
        println!(
            "  ALERT {:<10} sev {} ({:>3})  {} -> {}  score {:.3}  <- {}",
            a.class,
            a.eve_severity,
            a.severity,
            a.attacker,
            a.victim_side(),
            a.score,
            owner_name(owner, outcomes)
        );
        self.seen.push(Seen {
            owner,
            class: a.class.clone(),
            printed_ns: monotonic_ns(),
        });
    }

    /// Credits rows that top sources added to an aggregated alert since its
    /// previous line to the scenario running at the alert's last row, when
    /// that scenario is not the one that opened it (printed the first time).
    fn joined(&mut self, a: &EveAlert, outcomes: &[ScenarioOutcome]) {
        if a.top_sources.is_empty() {
            return;
        }
        let opener = self.owners.get(&a.alert_id).copied();
        let prev = self.tops.entry(a.alert_id.clone()).or_default();
        for &(ip, rows) in &a.top_sources {
            let before = prev.insert(ip, rows).unwrap_or(0);
            if rows <= before {
                continue;
            }
            let Owner::Scenario(j) =
                attribute(&self.plan, outcomes, Some(ip), a.dst, a.last_seen_ns)
            else {
                continue;
            };
            if opener == Some(Owner::Scenario(j)) {
                continue;
            }
            let key = (a.alert_id.clone(), j);
            if !self.joins.contains_key(&key) {
                println!(
                    "  JOIN  {:<10} {} -> {}  rows from {ip} go into this open alert  <- {}",
                    a.class,
                    a.attacker,
                    a.victim_side(),
                    outcomes[j].name
                );
            }
            self.joins
                .entry(key)
                .or_insert_with(|| Join {
                    class: a.class.clone(),
                    victim: a.victim.clone(),
                    rows: 0,
                })
                .rows += rows - before;
        }
    }
}

/// An [`AlertView`] polling every 200 ms on its own thread; stopped when
/// finished or dropped (an error path).
struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<AlertView>>>,
}

impl Follower {
    fn start(eve: PathBuf, plan: AddressPlan, timeline: Arc<Mutex<Vec<ScenarioOutcome>>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut view = AlertView {
                plan,
                clock_offset_ns: clock_offset_ns(),
                offset: 0,
                opened: 0,
                closed: 0,
                incidents: BTreeSet::new(),
                seen: Vec::new(),
                owners: BTreeMap::new(),
                tops: BTreeMap::new(),
                joins: BTreeMap::new(),
            };
            while !stop2.load(Ordering::SeqCst) {
                view.poll(&eve, &timeline)?;
                std::thread::sleep(Duration::from_millis(200));
            }
            view.poll(&eve, &timeline)?;
            Ok(view)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Reads what is left (the sensor has stopped) and returns the view.
    fn finish(mut self) -> Result<AlertView> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| anyhow::anyhow!("the alert view thread panicked"))?
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One line per scenario (and the background): detected or not, as what,
/// and how fast; false alerts on benign traffic.
fn verdicts(view: &AlertView, outcomes: &[ScenarioOutcome]) {
    println!("\nverdict per scenario:");
    let classes = |owner: Owner| -> BTreeMap<&str, usize> {
        let mut m = BTreeMap::new();
        for s in view.seen.iter().filter(|s| s.owner == owner) {
            *m.entry(s.class.as_str()).or_default() += 1;
        }
        m
    };
    let list = |m: &BTreeMap<&str, usize>| {
        m.iter()
            .map(|(c, n)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let background: BTreeMap<&str, usize> = ["client", "server side"]
        .into_iter()
        .flat_map(|r| classes(Owner::Unmatched(r)))
        .fold(BTreeMap::new(), |mut m, (c, n)| {
            *m.entry(c).or_default() += n;
            m
        });
    let benign = |m: &BTreeMap<&str, usize>, joins: &[&Join]| {
        let mut parts = Vec::new();
        if !m.is_empty() {
            parts.push(list(m));
        }
        parts.extend(joins.iter().map(|j| join_text(j)));
        if parts.is_empty() {
            "clean: no alert".to_owned()
        } else {
            format!("FALSE ALERTS: {}", parts.join("; "))
        }
    };
    println!(
        "  {:<20} {:<10} {}",
        "background",
        "benign",
        benign(&background, &[])
    );
    for (i, o) in outcomes.iter().enumerate() {
        let m = classes(Owner::Scenario(i));
        let joins: Vec<&Join> = view
            .joins
            .iter()
            .filter(|((_, j), _)| *j == i)
            .map(|(_, j)| j)
            .collect();
        let verdict = if o.label == Label::Benign {
            benign(&m, &joins)
        } else if m.is_empty() {
            let how = joins
                .iter()
                .map(|j| join_text(j))
                .collect::<Vec<_>>()
                .join("; ");
            match joins.iter().find(|j| j.class == o.label.name()) {
                Some(j) => format!("DETECTED as {} (no alert of its own: {how})", j.class),
                None if joins.is_empty() => "MISSED: no alert".to_owned(),
                None => format!("MISSED (no alert of its own: {how})"),
            }
        } else {
            let first = view
                .seen
                .iter()
                .filter(|s| s.owner == Owner::Scenario(i))
                .map(|s| s.printed_ns)
                .min();
            let delay = match (first, o.first_packet_mono_ns) {
                (Some(a), Some(f)) => format!(
                    "; first alert printed {:.1} s after its first frame",
                    a.saturating_sub(f) as f64 / 1e9
                ),
                _ => String::new(),
            };
            if m.contains_key(o.label.name()) {
                format!("DETECTED as {} ({}){delay}", o.label.name(), list(&m))
            } else {
                format!("alerted, WRONG CLASS ({}){delay}", list(&m))
            }
        };
        println!("  {:<20} {:<10} {verdict}", o.name, o.label.name());
    }
    let stray: Vec<String> = ["attacker", "spoofed source", "?"]
        .into_iter()
        .filter_map(|r| {
            let m = classes(Owner::Unmatched(r));
            (!m.is_empty()).then(|| format!("{r}: {}", list(&m)))
        })
        .collect();
    if !stray.is_empty() {
        println!("  outside every scenario window: {}", stray.join("; "));
    }
}

/// "N rows into the open <class> alert on <victim>".
fn join_text(j: &Join) -> String {
    format!(
        "{} rows into the open {} alert on {}",
        j.rows, j.class, j.victim
    )
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmp6".into(),
        other => other.to_string(),
    }
}

fn report(out: &SensorOutput, plan: &AddressPlan, outcomes: &[ScenarioOutcome]) {
    let s = &out.stats;
    println!("\nsensor counters ({:.1} s):", s.duration_s);
    for (name, v) in &s.counters {
        if *v != 0 || name == "events_lost" {
            println!("  {name:<24} {v}");
        }
    }
    println!(
        "  (mirror_dropped: frames the sensor consumed on its monitor port after counting \
         them; the mirror is a copy, nothing is dropped on the network)"
    );

    let mut flows: Vec<_> = out.flows.iter().collect();
    flows.sort_by_key(|f| std::cmp::Reverse(f.packets));
    println!(
        "\ntop flows by packets ({} flows in the table):",
        flows.len()
    );
    println!(
        "  {:<22} {:<22} {:<6} {:>8} {:>10} {:>6} {:>6} {:>5} {:>5}",
        "source", "destination", "proto", "packets", "bytes", "syn", "synack", "fin", "rst"
    );
    for f in flows.iter().take(10) {
        println!(
            "  {:<22} {:<22} {:<6} {:>8} {:>10} {:>6} {:>6} {:>5} {:>5}",
            format!("{}:{}", f.src, f.sport),
            format!("{}:{}", f.dst, f.dport),
            proto_name(f.proto),
            f.packets,
            f.bytes,
            f.syn,
            f.synack,
            f.fin,
            f.rst
        );
    }

    let mut table: BTreeMap<IpAddr, u64> = BTreeMap::new();
    for f in &out.flows {
        *table.entry(f.src).or_default() += f.packets;
    }
    let mut hh: Vec<_> = out.sketch.sources.iter().collect();
    hh.sort_by_key(|e| std::cmp::Reverse(e.packets_est));
    let cms = out.sketch.cms;
    println!(
        "\nheavy-hitter sources (Count-Min {}x{}, error <= {:.2}% of {} packets with prob. {:.1}%):",
        cms.rows,
        cms.width,
        cms.epsilon * 100.0,
        out.sketch.total_packets,
        (1.0 - cms.delta) * 100.0
    );
    println!(
        "  {:<40} {:>14} {:>16} {:>14}",
        "source", "packets (est)", "packets (table)", "bytes (est)"
    );
    for e in hh.iter().take(5) {
        println!(
            "  {:<40} {:>14} {:>16} {:>14}",
            e.src.to_string(),
            e.packets_est,
            table.get(&e.src).copied().unwrap_or(0),
            e.bytes_est
        );
    }
    println!(
        "  (\"table\" undercounts sources whose flows the LRU table evicted; \
         the sketches see every packet)"
    );

    // Truth from the sending side: the lab's own addresses that sent
    // anything (few, never evicted), plus one random source per frame of
    // the spoofing scenarios (hping3 --rand-source draws 32-bit sources, so
    // repeats are vanishingly rare).
    let lab_sources = table.keys().filter(|&&a| plan.contains(a)).count();
    let spoofed: u64 = outcomes
        .iter()
        .filter(|o| matches!(o.sources, scenario::SourceRule::AddressesAndSpoofed(_)))
        .map(|o| o.packets_sent)
        .sum();
    let truth = lab_sources as u64 + spoofed;
    let est = out.sketch.distinct_sources_estimate;
    println!(
        "\ndistinct sources: HyperLogLog estimate {est:.0}, truth ~{truth} ({lab_sources} lab \
         addresses + {spoofed} frames from random sources; error {:+.2}%); {} sources in the \
         flow table",
        (est - truth as f64) / truth.max(1) as f64 * 100.0,
        table.len()
    );
}
