//! Scenarios of the traffic lab: benign traffic from real programs and
//! attacks from real tools, each bounded in packets and seconds, each with a
//! label that comes from *which namespace sent it*, never from the sensor.
//!
//! Use: [`catalogue`] (or [`find`]) gives [`ScenarioSpec`]s; [`run`] plays
//! one against a [`TrafficLab`] and returns a [`ScenarioOutcome`]: when it
//! started, when its first frame left the sending namespace (for
//! time-to-detect), when it ended, how many frames that namespace sent, and
//! which sources carry its label ([`SourceRule`]). [`label_row`] applies the
//! labelling rule to a recorded row.
//!
//! Labelling rule: a row gets an attack scenario's label iff its event time
//! lies in that scenario's window (`start ..= end + tail`) and its source is
//! the attacker's address or, for a spoofing scenario, an address outside
//! the lab's plan. Rows from the attacker (or from outside the plan) outside
//! every attack window are *unattributed* and left out of training data
//! (rather than called benign). Every other row is benign: clients, and the
//! servers' replies.

mod first_frame;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::{Command, Output};
use std::time::Duration;

use serde::Serialize;

use super::{AddressPlan, TrafficLab, monotonic_ns, require_tool};
use crate::error::{LabError, Result};
use crate::netns::{Netns, describe};
use first_frame::FirstFrame;

/// Ground-truth classes: the classifier's four, plus `anomaly` for attacks
/// only the autoencoder is meant to catch (slow HTTP, exfiltration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Benign,
    Flood,
    Scan,
    Bruteforce,
    Anomaly,
}

impl Label {
    pub const ALL: [Label; 5] = [
        Label::Benign,
        Label::Flood,
        Label::Scan,
        Label::Bruteforce,
        Label::Anomaly,
    ];

    /// The class name as in the model cards and `train.py`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Label::Benign => "benign",
            Label::Flood => "flood",
            Label::Scan => "scan",
            Label::Bruteforce => "bruteforce",
            Label::Anomaly => "anomaly",
        }
    }
}

/// Which namespace sends a scenario's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Clients,
    Attacker,
}

/// Targets of an nmap run.
#[derive(Clone, Copy, Debug)]
enum Targets {
    Server,
    Sweep,
}

/// Brute-force service.
#[derive(Clone, Copy, Debug)]
enum Brute {
    Ssh,
    HttpLogin,
}

/// What a scenario runs (parameters included).
#[derive(Clone, Copy, Debug)]
enum Kind {
    Browse {
        seconds: u32,
    },
    Download,
    Dns {
        bursts: u32,
    },
    Iperf {
        seconds: u32,
        reverse: bool,
    },
    Ping {
        count: u32,
    },
    IdleTcp {
        seconds: u32,
    },
    Offline {
        seconds: u32,
    },
    Nmap {
        args: &'static [&'static str],
        targets: Targets,
    },
    Hping {
        args: &'static [&'static str],
        rand_source: bool,
    },
    /// hping3 from random sources to random hosts of the server side
    /// (`--rand-dest`, every `x` of `dest` replaced per packet).
    Carpet {
        args: &'static [&'static str],
        dest: &'static str,
    },
    Trafgen {
        packets: u64,
    },
    Hydra {
        service: Brute,
        passwords: u32,
    },
    SshLike {
        connections: u32,
    },
    SlowHttp {
        seconds: u32,
    },
    /// arp-scan of the attacker's own LAN (/24), one request per address.
    ArpScan,
    Exfil {
        seconds: u32,
    },
    Beacon {
        seconds: u32,
    },
}

/// One scenario of the catalogue.
#[derive(Clone, Debug)]
pub struct ScenarioSpec {
    /// Stable name (`cargo xtask lab run <name>`).
    pub name: &'static str,
    pub label: Label,
    pub origin: Origin,
    /// Sources are spoofed (random addresses outside the plan).
    pub spoofed: bool,
    pub description: &'static str,
    /// Binaries it runs (missing ones are reported with their package).
    pub tools: &'static [&'static str],
    /// Hard bound on wall time (the tool is interrupted after it).
    pub max_seconds: u32,
    /// Bound on packets the tool sends (as configured on it; 0 = bounded by
    /// time and request count only).
    pub max_packets: u64,
    kind: Kind,
}

const HPING_SYN: &[&str] = &["-q", "-S", "-p", "80", "-i", "u40", "-c", "25000"];
const HPING_UDP: &[&str] = &[
    "-q", "--udp", "-p", "53", "-d", "120", "-i", "u40", "-c", "25000",
];
const HPING_ICMP: &[&str] = &["-q", "--icmp", "-d", "56", "-i", "u40", "-c", "25000"];

/// Every scenario, benign first, one row each: name, label, bound on wall
/// time (s), bound on packets (0: time and request count only), what it
/// runs, and what that is. The sending namespace follows from the label,
/// the tools and spoofing from what it runs.
#[rustfmt::skip]
const CATALOGUE: &[(&str, Label, u32, u64, Kind, &str)] = {
    use Kind::{
        Beacon, Browse, Carpet, Dns, Download, Exfil, Hping, Hydra, IdleTcp, Iperf, Nmap, Offline, Ping,
        SlowHttp, SshLike, Trafgen, ArpScan,
    };
    use Label::{Anomaly, Benign, Bruteforce, Flood, Scan};
    &[
        ("benign-browse", Benign, 25, 0, Browse { seconds: 20 }, "bursts of 2-8 page fetches from four client addresses, 0.2-1.5 s think time"),
        ("benign-download", Benign, 20, 0, Download, "one 24 MiB HTTP download (curl)"),
        ("benign-dns", Benign, 20, 0, Dns { bursts: 12 }, "12 bursts of 5 DNS lookups against the lab's dnsmasq (dig)"),
        ("benign-iperf", Benign, 10, 0, Iperf { seconds: 3, reverse: false }, "iperf3 upload, 3 s at 200 Mbit/s"),
        ("benign-speedtest", Benign, 10, 0, Iperf { seconds: 3, reverse: true }, "iperf3 download (-R), 3 s at 200 Mbit/s"),
        ("benign-ping", Benign, 10, 40, Ping { count: 20 }, "20 echo requests, 0.2 s apart"),
        ("benign-idle-tcp", Benign, 25, 0, IdleTcp { seconds: 15 }, "one idle TCP connection for 15 s with keepalive probes every second"),
        ("benign-offline-peers", Benign, 30, 0, Offline { seconds: 20 }, "devices whose cloud is down: UDP keepalives to 3-6 offline peers each, failing TCP connections and DNS lookups (ICMP unreachable from the gateway, timeouts, a refused port)"),
        ("scan-syn", Scan, 30, 2_500, Nmap { args: &["-sS", "-T4", "-p", "1-1000"], targets: Targets::Server }, "nmap SYN scan of 1000 ports"),
        ("scan-connect", Scan, 30, 5_000, Nmap { args: &["-sT", "-T4", "-p", "1-1000"], targets: Targets::Server }, "nmap connect scan of 1000 ports"),
        ("scan-udp", Scan, 30, 200, Nmap { args: &["-sU", "-T4", "-p", "53,67,69,123,137,161,500,514,1900,5353"], targets: Targets::Server }, "nmap UDP scan of 10 ports"),
        ("scan-fin", Scan, 30, 1_200, Nmap { args: &["-sF", "-T4", "-p", "1-500"], targets: Targets::Server }, "nmap FIN scan of 500 ports"),
        ("scan-null", Scan, 30, 1_200, Nmap { args: &["-sN", "-T4", "-p", "1-500"], targets: Targets::Server }, "nmap NULL scan of 500 ports"),
        ("scan-xmas", Scan, 30, 1_200, Nmap { args: &["-sX", "-T4", "-p", "1-500"], targets: Targets::Server }, "nmap Xmas scan of 500 ports"),
        ("scan-ack", Scan, 30, 1_200, Nmap { args: &["-sA", "-T4", "-p", "1-500"], targets: Targets::Server }, "nmap ACK scan of 500 ports (every probe answered with RST)"),
        ("scan-ipproto", Scan, 30, 600, Nmap { args: &["-sO", "-T4"], targets: Targets::Server }, "nmap IP protocol scan (-sO): one probe for each of the 256 protocol numbers"),
        ("scan-version", Scan, 15, 3_000, Nmap { args: &["-sV", "-T4", "-p", "22,53,80,5201,7000"], targets: Targets::Server }, "nmap service version probing (-sV) of the server's five open ports, cut after 15 s"),
        ("scan-aggressive-80", Scan, 40, 3_000, Nmap { args: &["-A", "-T4", "-p", "80"], targets: Targets::Server }, "nmap -A of the server's web port alone: service and OS detection, default scripts, traceroute, cut after 40 s"),
        ("scan-slow", Scan, 15, 40, Nmap { args: &["-sS", "-T2", "-p", "20-30,80,443,3306,8080"], targets: Targets::Server }, "nmap polite (-T2) SYN scan of 15 ports, one probe every 0.4 s"),
        ("scan-sweep", Scan, 30, 400, Nmap { args: &["-sS", "-T4", "-p", "22,80,443"], targets: Targets::Sweep }, "nmap horizontal sweep: 3 ports on 32 server addresses"),
        ("scan-ping-sweep", Scan, 30, 200, Nmap { args: &["-sn", "-PE", "-T4"], targets: Targets::Sweep }, "nmap ICMP echo sweep (-sn -PE) of 32 server addresses"),
        ("scan-arp", Scan, 15, 600, ArpScan, "arp-scan of the attacker's LAN /24: a broadcast ARP request for each of its 256 addresses"),
        ("flood-syn", Flood, 10, 25_000, Hping { args: HPING_SYN, rand_source: false }, "hping3 SYN flood to :80, 25k packets"),
        ("flood-syn-spoofed", Flood, 10, 25_000, Hping { args: HPING_SYN, rand_source: true }, "hping3 SYN flood to :80 from random sources, 25k packets"),
        ("flood-udp", Flood, 10, 25_000, Hping { args: HPING_UDP, rand_source: false }, "hping3 UDP flood to :53, 25k packets"),
        ("flood-udp-spoofed", Flood, 10, 25_000, Hping { args: HPING_UDP, rand_source: true }, "hping3 UDP flood to :53 from random sources, 25k packets"),
        ("flood-icmp", Flood, 10, 25_000, Hping { args: HPING_ICMP, rand_source: false }, "hping3 ICMP echo flood, 25k packets"),
        ("flood-icmp-spoofed", Flood, 10, 25_000, Hping { args: HPING_ICMP, rand_source: true }, "hping3 ICMP echo flood from random sources, 25k packets"),
        ("flood-carpet-24", Flood, 10, 25_000, Carpet { args: HPING_SYN, dest: "10.20.0.x" }, "carpet bombing: hping3 SYN flood to :80 of random hosts of the server /24, from random sources, 25k packets"),
        ("flood-carpet-16", Flood, 10, 25_000, Carpet { args: HPING_UDP, dest: "10.20.x.x" }, "carpet bombing: hping3 UDP flood to :53 of random hosts of the server /16, from random sources, 25k packets"),
        ("flood-trafgen", Flood, 10, 200_000, Trafgen { packets: 200_000 }, "trafgen line-rate UDP to :9 (one flow), 200k frames"),
        ("bruteforce-ssh", Bruteforce, 25, 0, Hydra { service: Brute::Ssh, passwords: 100 }, "hydra password guessing against the lab's OpenSSH server, 100 tries, 4 tasks"),
        ("bruteforce-ssh-like", Bruteforce, 25, 0, SshLike { connections: 150 }, "150 short TCP connections to :22: banner exchange, a few small packets, close"),
        ("bruteforce-http", Bruteforce, 25, 0, Hydra { service: Brute::HttpLogin, passwords: 300 }, "hydra HTTP POST form login guessing (every answer \"login failed\"), 300 tries, 8 tasks"),
        ("anomaly-slowhttp", Anomaly, 30, 0, SlowHttp { seconds: 20 }, "slowhttptest slowloris: 60 connections sending headers every 3 s for 20 s"),
        ("anomaly-exfil", Anomaly, 40, 0, Exfil { seconds: 30 }, "low-and-slow exfiltration: a 3 KB HTTP POST to one outside server every second for 30 s"),
        ("anomaly-beacon-get", Anomaly, 40, 0, Beacon { seconds: 30 }, "an implant's check-ins: an HTTP GET of the same page from one outside server every 1.5 s +- 30 % for 30 s, a new connection each"),
    ]
};

impl Kind {
    /// The binaries it runs.
    const fn tools(self) -> &'static [&'static str] {
        match self {
            Kind::Browse { .. }
            | Kind::IdleTcp { .. }
            | Kind::Offline { .. }
            | Kind::SshLike { .. }
            | Kind::Exfil { .. }
            | Kind::Beacon { .. } => &["python3"],
            Kind::Download => &["curl"],
            Kind::Dns { .. } => &["dig"],
            Kind::Iperf { .. } => &["iperf3"],
            Kind::Ping { .. } => &["ping"],
            Kind::Nmap { .. } => &["nmap"],
            Kind::Hping { .. } | Kind::Carpet { .. } => &["hping3"],
            Kind::Trafgen { .. } => &["trafgen"],
            Kind::Hydra { .. } => &["hydra"],
            Kind::SlowHttp { .. } => &["slowhttptest"],
            Kind::ArpScan => &["arp-scan"],
        }
    }
}

/// Every scenario, benign first.
#[must_use]
pub fn catalogue() -> Vec<ScenarioSpec> {
    CATALOGUE
        .iter()
        .map(
            |&(name, label, max_seconds, max_packets, kind, description)| ScenarioSpec {
                name,
                label,
                origin: if label == Label::Benign {
                    Origin::Clients
                } else {
                    Origin::Attacker
                },
                spoofed: matches!(
                    kind,
                    Kind::Hping {
                        rand_source: true,
                        ..
                    } | Kind::Carpet { .. }
                ),
                description,
                tools: kind.tools(),
                max_seconds,
                max_packets,
                kind,
            },
        )
        .collect()
}

/// A scenario by name.
///
/// # Errors
/// [`LabError::UnknownScenario`].
pub fn find(name: &str) -> Result<ScenarioSpec> {
    catalogue()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| LabError::UnknownScenario {
            name: name.to_owned(),
        })
}

impl ScenarioSpec {
    /// This scenario's outcome the moment it starts, at `start_mono_ns`
    /// (see [`ScenarioOutcome::started`]).
    #[must_use]
    pub fn started(&self, plan: &AddressPlan, start_mono_ns: u64) -> ScenarioOutcome {
        ScenarioOutcome::started(
            self.name,
            self.label,
            self.origin,
            self.sources(plan),
            start_mono_ns,
        )
    }

    /// The sources whose traffic is this scenario's (known before it runs,
    /// so a live view can attribute alerts while it plays).
    #[must_use]
    pub fn sources(&self, plan: &AddressPlan) -> SourceRule {
        let own: Vec<IpAddr> = match self.origin {
            Origin::Clients => plan.clients.iter().map(|&a| a.into()).collect(),
            Origin::Attacker => vec![plan.attacker.into()],
        };
        if self.spoofed {
            SourceRule::AddressesAndSpoofed(own)
        } else {
            SourceRule::Addresses(own)
        }
    }
}

/// Which row sources carry a scenario's label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum SourceRule {
    /// Exactly these addresses.
    Addresses(Vec<IpAddr>),
    /// These addresses and any address outside the lab plan (spoofing).
    AddressesAndSpoofed(Vec<IpAddr>),
}

impl SourceRule {
    /// True when a row from `src` is this scenario's traffic.
    #[must_use]
    pub fn matches(&self, plan: &AddressPlan, src: IpAddr) -> bool {
        match self {
            SourceRule::Addresses(a) => a.contains(&src),
            SourceRule::AddressesAndSpoofed(a) => a.contains(&src) || plan.is_foreign(src),
        }
    }
}

/// What a scenario did, from the sending side.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioOutcome {
    pub name: String,
    pub label: Label,
    pub origin: Origin,
    pub sources: SourceRule,
    /// `CLOCK_MONOTONIC` ns just before the tool started.
    pub start_mono_ns: u64,
    /// `CLOCK_MONOTONIC` ns when the first IP frame left the sending
    /// namespace (None if nothing was sent): the attack's start for
    /// time-to-detect.
    pub first_packet_mono_ns: Option<u64>,
    /// `CLOCK_MONOTONIC` ns after the tool exited.
    pub end_mono_ns: u64,
    /// Frames and bytes the sending namespace's link transmitted meanwhile
    /// (all of them, ARP included; concurrent background traffic from the
    /// same namespace included too).
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// The tool's command line and the tail of its output.
    pub detail: String,
}

impl ScenarioOutcome {
    /// The outcome of a scenario that has just started at `start_mono_ns`:
    /// its window stays open (`end_mono_ns = u64::MAX`) and nothing is
    /// counted until [`run`] returns the real outcome.
    #[must_use]
    pub fn started(
        name: &str,
        label: Label,
        origin: Origin,
        sources: SourceRule,
        start_mono_ns: u64,
    ) -> Self {
        Self {
            name: name.to_owned(),
            label,
            origin,
            sources,
            start_mono_ns,
            first_packet_mono_ns: None,
            end_mono_ns: u64::MAX,
            packets_sent: 0,
            bytes_sent: 0,
            detail: String::new(),
        }
    }

    /// Seconds from start to end.
    #[must_use]
    pub fn seconds(&self) -> f64 {
        self.end_mono_ns.saturating_sub(self.start_mono_ns) as f64 / 1e9
    }

    /// True when `ts_ns` lies in the window `start ..= end + tail_ns`.
    #[must_use]
    pub fn in_window(&self, ts_ns: u64, tail_ns: u64) -> bool {
        (self.start_mono_ns..=self.end_mono_ns.saturating_add(tail_ns)).contains(&ts_ns)
    }
}

/// The label of a recorded row, by the rule in the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowLabel {
    /// The row belongs to attack scenario `outcomes[i]`.
    Attack(usize),
    Benign,
    /// From the attacker or a spoofed source, outside every attack window.
    Unattributed,
}

/// Labels a row with source `src` and event time `ts_ns` against the
/// outcomes of a run (attack windows extended by `tail_ns`).
#[must_use]
pub fn label_row(
    plan: &AddressPlan,
    outcomes: &[ScenarioOutcome],
    tail_ns: u64,
    src: IpAddr,
    ts_ns: u64,
) -> RowLabel {
    for (i, o) in outcomes.iter().enumerate() {
        if o.label != Label::Benign && o.in_window(ts_ns, tail_ns) && o.sources.matches(plan, src) {
            return RowLabel::Attack(i);
        }
    }
    if src == IpAddr::from(plan.attacker) || plan.is_foreign(src) {
        RowLabel::Unattributed
    } else {
        RowLabel::Benign
    }
}

/// Runs `program args` in `ns` under `timeout` (SIGINT after `secs`, SIGKILL
/// 2 s later). Exit codes in `ok` (and 124, timed out) are success.
fn bounded(ns: &Netns, secs: u32, program: &str, args: &[String], ok: &[i32]) -> Result<String> {
    let path = require_tool(program)?;
    let mut cmd = ns.command("timeout");
    cmd.args(["-k", "2", "-s", "INT", &secs.to_string()])
        .arg(&path)
        .args(args);
    finish(&mut cmd, ok)
}

fn finish(cmd: &mut Command, ok: &[i32]) -> Result<String> {
    let line = describe(cmd);
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().map_err(|source| LabError::Spawn {
        command: line.clone(),
        source,
    })?;
    let code = status.code().unwrap_or(-1);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    if code != 124 && !ok.contains(&code) {
        return Err(LabError::Command {
            command: line,
            status,
            stderr: tail(&text, 600),
        });
    }
    Ok(format!("{line}\n{}", tail(&text, 300)))
}

/// The last `n` bytes of `s` (at a char boundary), trimmed.
fn tail(s: &str, n: usize) -> String {
    let s = s.trim();
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_owned()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Plays one scenario against the lab and reports what was sent. Blocks
/// for the scenario's duration (at most `spec.max_seconds` plus a few
/// seconds of tool shutdown).
///
/// # Errors
/// A tool is missing (named with its package), fails, or the lab's
/// interfaces cannot be read.
pub fn run(lab: &TrafficLab, spec: &ScenarioSpec) -> Result<ScenarioOutcome> {
    for t in spec.tools {
        require_tool(t)?;
    }
    let plan = lab.plan();
    let (ns, ifname) = match spec.origin {
        Origin::Clients => (&lab.clients, lab.clients_iface()),
        Origin::Attacker => (&lab.attacker, lab.attacker_link().0),
    };
    let tx_packets = ns.link_stat(ifname, "tx_packets")?;
    let tx_bytes = ns.link_stat(ifname, "tx_bytes")?;
    let ethertype = match spec.kind {
        Kind::ArpScan => libc::ETH_P_ARP,
        _ => libc::ETH_P_IP,
    };
    let first = FirstFrame::arm(ns, ifname, ethertype as u16)?;
    let start_mono_ns = monotonic_ns();
    let detail = play(lab, spec);
    let end_mono_ns = monotonic_ns();
    let first_packet_mono_ns = first.finish();
    let detail = detail?;
    let packets_sent = ns
        .link_stat(ifname, "tx_packets")?
        .saturating_sub(tx_packets);
    let bytes_sent = ns.link_stat(ifname, "tx_bytes")?.saturating_sub(tx_bytes);
    Ok(ScenarioOutcome {
        first_packet_mono_ns,
        end_mono_ns,
        packets_sent,
        bytes_sent,
        detail,
        ..spec.started(plan, start_mono_ns)
    })
}

/// Runs the scenario's tool(s); returns the detail text.
fn play(lab: &TrafficLab, spec: &ScenarioSpec) -> Result<String> {
    let plan = lab.plan();
    let server = plan.server.to_string();
    let secs = spec.max_seconds;
    let clients: Vec<String> = plan.clients.iter().map(ToString::to_string).collect();
    let attacker = plan.attacker.to_string();
    match spec.kind {
        Kind::Browse { seconds } => {
            let mut cmd = lab.client_script(&lab.clients, "browse");
            cmd.args(["--src", &clients.join(","), "--server", &server])
                .args(["--seconds", &seconds.to_string()]);
            finish(&mut cmd, &[0])
        }
        Kind::IdleTcp { seconds } => {
            let mut cmd = lab.client_script(&lab.clients, "idle");
            cmd.args(["--src", &clients[1], "--server", &server])
                .args(["--seconds", &seconds.to_string()]);
            finish(&mut cmd, &[0])
        }
        Kind::Offline { seconds } => {
            let (net, _) = plan.unrouted;
            let o = net.octets();
            let unrouted = |h: u8| std::net::Ipv4Addr::new(o[0], o[1], h, h).to_string();
            let mut peers: Vec<String> = plan.offline_hosts[..3]
                .iter()
                .map(ToString::to_string)
                .collect();
            peers.extend((1..=5).map(|i| unrouted(i * 10)));
            let resolvers = [
                unrouted(53),
                plan.offline_hosts[3].to_string(),
                server.clone(),
            ];
            let mut cmd = lab.client_script(&lab.clients, "offline");
            cmd.args(["--src", &clients[..2].join(","), "--server", &server])
                .args(["--seconds", &seconds.to_string()])
                .args(["--peers", &peers.join(",")])
                .args(["--resolvers", &resolvers.join(",")]);
            finish(&mut cmd, &[0])
        }
        Kind::Exfil { seconds } => {
            let mut cmd = lab.client_script(&lab.attacker, "exfil");
            cmd.args(["--src", &attacker])
                .args(["--server", &plan.exfil_server.to_string()])
                .args(["--seconds", &seconds.to_string()])
                .args(["--interval", "1", "--bytes", "3000"]);
            finish(&mut cmd, &[0])
        }
        Kind::Beacon { seconds } => {
            let mut cmd = lab.client_script(&lab.attacker, "beacon");
            cmd.args(["--src", &attacker])
                .args(["--server", &plan.exfil_server.to_string()])
                .args(["--seconds", &seconds.to_string()])
                .args(["--interval", "1.5", "--jitter", "0.3"]);
            finish(&mut cmd, &[0])
        }
        Kind::SshLike { connections } => {
            let mut cmd = lab.client_script(&lab.attacker, "sshlike");
            cmd.args(["--src", &attacker, "--server", &server])
                .args(["--count", &connections.to_string()]);
            finish(&mut cmd, &[0])
        }
        Kind::Download => bounded(
            &lab.clients,
            secs,
            "curl",
            &[
                "-sS".into(),
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                "%{size_download} bytes in %{time_total} s".into(),
                "--interface".into(),
                clients[2].clone(),
                format!("http://{server}/big.bin"),
            ],
            &[0],
        ),
        Kind::Dns { bursts } => {
            let mut out = String::new();
            for b in 0..bursts {
                let mut args = vec![
                    format!("@{server}"),
                    "-b".into(),
                    clients[(b as usize) % clients.len()].clone(),
                    "+tries=1".into(),
                    "+time=1".into(),
                    "+short".into(),
                ];
                for q in 0..5 {
                    args.push(format!("host{}.lab.test", (b * 5 + q) % 23));
                }
                out = bounded(&lab.clients, 5, "dig", &args, &[0])?;
                std::thread::sleep(Duration::from_millis(400));
            }
            Ok(out)
        }
        Kind::Iperf { seconds, reverse } => {
            let mut args = strs(&["-c", &server, "-B", &clients[3], "-b", "200M", "-t"]);
            args.push(seconds.to_string());
            if reverse {
                args.push("-R".into());
            }
            bounded(&lab.clients, secs, "iperf3", &args, &[0])
        }
        Kind::Ping { count } => bounded(
            &lab.clients,
            secs,
            "ping",
            &strs(&[
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-I",
                &clients[0],
                &server,
            ]),
            &[0],
        ),
        Kind::Nmap { args, targets } => {
            // A host discovery run (-sn) is the ping probes themselves;
            // elsewhere -Pn skips discovery and goes straight to the ports.
            let base: &[&str] = if args.contains(&"-sn") {
                &["-n", "--max-retries", "1"]
            } else {
                &["-n", "-Pn", "--max-retries", "1"]
            };
            let mut a = strs(base);
            a.extend(strs(args));
            match targets {
                Targets::Server => a.push(server),
                Targets::Sweep => a.extend(plan.sweep_targets.iter().map(ToString::to_string)),
            }
            bounded(&lab.attacker, secs, "nmap", &a, &[0])
        }
        Kind::Hping { args, rand_source } => {
            let mut a = strs(args);
            if rand_source {
                a.push("--rand-source".into());
            }
            a.push(server);
            // hping3 exits 1 when no reply came back (spoofed sources).
            bounded(&lab.attacker, secs, "hping3", &a, &[0, 1])
        }
        Kind::Carpet { args, dest } => {
            let mut a = strs(args);
            // With random destinations hping3 cannot pick the outgoing
            // interface itself.
            let (ifname, _, _) = lab.attacker_link();
            a.extend(strs(&["--rand-source", "--rand-dest", "-I", ifname, dest]));
            bounded(&lab.attacker, secs, "hping3", &a, &[0, 1])
        }
        Kind::Trafgen { packets } => {
            let (ifname, src_mac, gw_mac) = lab.attacker_link();
            let mac = |m: [u8; 6]| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            };
            let conf = format!(
                "{{ eth(da={}, sa={}), ipv4(saddr={attacker}, daddr={server}, ttl=64), \
                 udp(sport=40000, dport=9), fill(0x41, 128) }}\n",
                mac(gw_mac),
                mac(src_mac)
            );
            let path = lab.dir().join("trafgen.cfg");
            std::fs::write(&path, conf).map_err(|source| LabError::Sys {
                call: format!("write {}", path.display()),
                source,
            })?;
            let args = vec![
                "--dev".into(),
                ifname.to_owned(),
                "--conf".into(),
                path.display().to_string(),
                // Through the qdisc layer, where packet taps (the
                // first-frame watch) see frames; trafgen bypasses it by default.
                "--qdisc-path".into(),
                "--cpus".into(),
                "1".into(),
                "-n".into(),
                packets.to_string(),
            ];
            bounded(&lab.attacker, secs, "trafgen", &args, &[0])
        }
        Kind::Hydra { service, passwords } => {
            let mut list = String::new();
            for i in 0..passwords {
                let _ = writeln!(list, "guess{i:04}");
            }
            let pw = lab.dir().join("passwords.txt");
            std::fs::write(&pw, list).map_err(|source| LabError::Sys {
                call: format!("write {}", pw.display()),
                source,
            })?;
            let pw = pw.display().to_string();
            let args = match service {
                Brute::Ssh => strs(&[
                    "-I",
                    "-q",
                    "-l",
                    "labnobody",
                    "-P",
                    &pw,
                    "-t",
                    "4",
                    // Wait at most 3 s for an answer (default 32 s).
                    "-w",
                    "3",
                    &format!("ssh://{server}"),
                ]),
                Brute::HttpLogin => strs(&[
                    "-I",
                    "-q",
                    "-l",
                    "admin",
                    "-P",
                    &pw,
                    "-t",
                    "8",
                    "-s",
                    "80",
                    &server,
                    "http-post-form",
                    "/login:user=^USER^&pass=^PASS^:F=login failed",
                ]),
            };
            let path = require_tool("hydra")?;
            let mut cmd = lab.attacker.command("timeout");
            cmd.args(["-k", "2", "-s", "INT", &secs.to_string()])
                .arg(path)
                .args(&args)
                // hydra writes hydra.restore into its working directory.
                .current_dir(lab.dir());
            finish(&mut cmd, &[0, 255])
        }
        Kind::ArpScan => {
            let (ifname, _, _) = lab.attacker_link();
            let lan = format!("{}/24", plan.gateway_lan);
            let a = strs(&["--interface", ifname, "--retry", "1", &lan]);
            bounded(&lab.attacker, secs, "arp-scan", &a, &[0])
        }
        Kind::SlowHttp { seconds } => bounded(
            &lab.attacker,
            secs,
            "slowhttptest",
            &strs(&[
                "-H",
                "-c",
                "60",
                "-r",
                "30",
                "-i",
                "3",
                "-x",
                "24",
                "-p",
                "3",
                "-l",
                &seconds.to_string(),
                "-u",
                &format!("http://{server}/page1.html"),
            ]),
            &[0],
        ),
    }
}

/// Benign background for a recording: continuous browsing from every
/// client and one idle keepalive connection, until dropped.
pub struct Background {
    _browse: super::Service,
    _idle: super::Service,
}

impl Background {
    /// Starts the background for at most `seconds`.
    ///
    /// # Errors
    /// The client processes cannot start.
    pub fn start(lab: &TrafficLab, seconds: u32) -> Result<Self> {
        let plan = lab.plan();
        let clients: Vec<String> = plan.clients.iter().map(ToString::to_string).collect();
        let server = plan.server.to_string();
        let mut browse = lab.client_script(&lab.clients, "browse");
        browse
            .args(["--src", &clients.join(","), "--server", &server])
            .args(["--seconds", &seconds.to_string(), "--seed", "7"]);
        let mut idle = lab.client_script(&lab.clients, "idle");
        idle.args(["--src", &clients[0], "--server", &server])
            .args(["--seconds", &seconds.to_string()]);
        Ok(Self {
            _browse: super::Service::start(
                "background-browse",
                browse,
                &lab.dir().join("background-browse.log"),
            )?,
            _idle: super::Service::start(
                "background-idle",
                idle,
                &lab.dir().join("background-idle.log"),
            )?,
        })
    }
}

#[cfg(test)]
mod tests;
