//! The flow collector against a real exporter: `softflowd` watches the
//! gateway end of a lab veth and exports NetFlow v9 or IPFIX to `sensor
//! collect` on the gateway namespace's loopback. Per-flow packet and byte
//! totals must equal the generator's ground truth, and a port scan must be
//! detected from the flow records alone, its alert naming the exporter and
//! the interface index the exporter was given.
//!
//! softflowd's documented behaviour the test works with: it reads packets
//! through libpcap, whose `TPACKET_V3` ring hands a block of packets over
//! only once the block is full, so the test sends filler frames (one
//! flow, left out of the comparison) until softflowd's own statistics
//! show every test frame processed; it exports a flow when it expires, and
//! `softflowctl expire-all` expires all at once, so the test is bounded in
//! seconds rather than by softflowd's timeouts. Exporters count IP bytes;
//! the sensor's flow bytes are frames (IP + the 14-byte Ethernet header per
//! packet), as the lab's frames are untagged.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sensor_common::records::{CollectStats, FlowRecord};
use sensor_lab::{
    Netns,
    generator::{FlowSpec, FlowTuple, Frames, Pacing, Sender, mixed_flows, spread_payload_len},
    sensor::{NetTest, SensorRun, TempDir, net_test, read_flows},
};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");
/// The collector's port on the gateway namespace's loopback.
const PORT: u16 = 2055;
/// The interface index softflowd is told to report (`-i IDX:IF`).
const IF_INDEX: u32 = 5;

/// A child process stopped and reaped when dropped (also during a panic):
/// SIGINT first, so a program that forked helpers (pmacctd's plugins) stops
/// them, then SIGKILL if it has not exited within 5 s.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(self.0.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stderr_file(dir: &Path, name: &str) -> (PathBuf, Stdio) {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).expect("log file");
    (path, Stdio::from(f))
}

/// `sensor collect` in `ns` with `extra` arguments, once it listens.
fn start_collector(ns: &Netns, dir: &Path, extra: &[&str]) -> (Guard, PathBuf) {
    ns.ip(&["link", "set", "lo", "up"]).expect("loopback up");
    let (log, stderr) = stderr_file(dir, "collect.log");
    let child = ns
        .command(SENSOR)
        .args(["collect", "--listen", &format!("127.0.0.1:{PORT}")])
        .args(["--duration", "120"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("starting sensor collect");
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("collecting flow records on udp") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sensor collect did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, log)
}

/// Stops the collector with SIGINT and waits for it (bounded).
fn stop_collector(mut g: Guard, log: &Path) -> String {
    let pid = i32::try_from(g.0.id()).expect("pid");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = g.0.try_wait().expect("waiting for sensor collect") {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(status.success(), "sensor collect failed:\n{text}");
            return text;
        }
        assert!(Instant::now() < deadline, "sensor collect did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Softflowd {
    _child: Guard,
    ctl: PathBuf,
    ns_name: String,
}

impl Softflowd {
    /// softflowd in the foreground on `iface` of `ns`, exporting
    /// `version` (9 or 10) to the collector.
    fn start(ns: &Netns, iface: &str, dir: &Path, version: u8) -> Self {
        let ctl = dir.join("softflowd.ctl");
        let (_, stderr) = stderr_file(dir, "softflowd.log");
        let child = ns
            .command("softflowd")
            .args(["-d", "-N", "-C", "128", "-m", "65536"])
            .args(["-i", &format!("{IF_INDEX}:{iface}")])
            .args(["-n", &format!("127.0.0.1:{PORT}")])
            .args(["-v", &version.to_string()])
            .arg("-c")
            .arg(&ctl)
            .arg("-p")
            .arg(dir.join("softflowd.pid"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting softflowd (cargo xtask setup installs it)");
        let s = Self {
            _child: Guard(child),
            ctl,
            ns_name: ns.name().to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.ctl("statistics").is_none() {
            assert!(Instant::now() < deadline, "softflowd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The capture is open once the control socket answers; give
        // libpcap's ring a moment to be attached.
        std::thread::sleep(Duration::from_millis(300));
        s
    }

    fn ctl(&self, command: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns_name, "softflowctl", "-c"])
            .arg(&self.ctl)
            .arg(command)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// "Packets processed" of softflowd's statistics.
    fn processed(&self) -> u64 {
        self.ctl("statistics")
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("Packets processed: "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sends filler frames until softflowd has processed more than
    /// `frames` packets (every frame before the filler), then expires
    /// every flow and gives the export a moment to arrive.
    fn flush(&self, net: &NetTest, frames: u64) {
        let src: IpAddr = "198.18.0.1".parse().unwrap();
        let dst: IpAddr = "198.18.0.2".parse().unwrap();
        let mut filler = net.frames();
        let f = filler.add_flow(FlowSpec::udp(src, dst, 9, 9));
        for i in 0..500 {
            filler.push(f, 0, 1000, i).expect("filler frame");
        }
        let sender = Sender::open(&net.lab.sender, &net.lab.link.a).expect("sender");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.processed() <= frames {
            assert!(
                Instant::now() < deadline,
                "softflowd processed {} of {frames} frames",
                self.processed()
            );
            sender
                .send(&filler, Pacing::paced(50_000))
                .expect("sending filler");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.ctl("expire-all").expect("softflowctl expire-all");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Flows of every kind the exporter reports, untagged: IPv4 and IPv6, TCP
/// (a SYN, then ACKs), UDP and ICMP echo, with varied lengths.
fn truth_frames(net: &NetTest) -> Frames {
    let mut frames = net.frames();
    let specs: Vec<FlowSpec> = mixed_flows(24)
        .into_iter()
        .filter(|s| s.vlan.is_none())
        .collect();
    let ids: Vec<u32> = specs.iter().map(|s| frames.add_flow(*s)).collect();
    for j in 0..40u64 {
        for (&id, spec) in ids.iter().zip(&specs) {
            // Flows end at different lengths.
            if j >= 10 + u64::from(id) {
                continue;
            }
            let flags = if j == 0 { 0x02 } else { 0x10 };
            let flags = if spec.tuple.proto == 6 { flags } else { 0 };
            frames
                .push(id, flags, spread_payload_len(j), u32::try_from(j).unwrap())
                .expect("frame");
        }
    }
    frames
}

fn totals_match(version: u8, test: &str) {
    let Some(net) = net_test(test) else {
        return;
    };
    let dir = TempDir::new("collect").expect("tempdir");
    let flows_out = dir.path().join("flows.json");
    let stats_out = dir.path().join("stats.json");
    let (collector, log) = start_collector(
        &net.lab.gateway,
        dir.path(),
        &[
            "--no-score",
            "--flows-out",
            &flows_out.to_string_lossy(),
            "--stats-out",
            &stats_out.to_string_lossy(),
        ],
    );
    let exporter = Softflowd::start(&net.lab.gateway, &net.lab.link.b, dir.path(), version);
    let frames = truth_frames(&net);
    let report = Sender::open(&net.lab.sender, &net.lab.link.a)
        .expect("sender")
        .send(&frames, Pacing::paced(20_000))
        .expect("sending");
    assert_eq!(report.sent, frames.len(), "every frame sent");
    let truth = frames.truth(report.sent);
    exporter.flush(&net, truth.packets);
    let stderr = stop_collector(collector, &log);

    let got: BTreeMap<FlowTuple, FlowRecord> = read_flows(&flows_out)
        .expect("flows written")
        .into_iter()
        .map(|f| (FlowTuple::from(&f), f))
        .collect();
    for (tuple, want) in &truth.flows {
        let f = got
            .get(tuple)
            .unwrap_or_else(|| panic!("v{version}: no record of {tuple:?}\n{stderr}"));
        assert_eq!(
            (f.packets, f.bytes),
            (want.packets, want.bytes),
            "v{version} {tuple:?}: (packets, bytes)"
        );
    }
    let stats: CollectStats =
        serde_json::from_str(&std::fs::read_to_string(&stats_out).expect("stats written"))
            .expect("stats JSON");
    let c = &stats.collector;
    assert_eq!(c.malformed(), 0, "{c:?}");
    assert_eq!(c.sets_without_template, 0, "{c:?}");
    assert!(c.templates_learned >= 1, "{c:?}");
    match version {
        9 => assert!(c.v9_datagrams >= 1 && c.ipfix_datagrams == 0, "{c:?}"),
        _ => assert!(c.ipfix_datagrams >= 1 && c.v9_datagrams == 0, "{c:?}"),
    }
    eprintln!(
        "v{version}: {} flows, {} packets matched; collector {c:?}",
        truth.flows.len(),
        truth.packets
    );
}

/// pmacct's `pmacctd` with its nfprobe plugin on `iface` of `ns`,
/// exporting `version` with every timeout at 1 s, so a flow is exported
/// within about 2 s of its last packet.
fn start_pmacct(ns: &Netns, iface: &str, dir: &Path, version: u8) -> Guard {
    let conf = dir.join("pmacctd.conf");
    std::fs::write(
        &conf,
        format!(
            "daemonize: false\n\
             pcap_interface: {iface}\n\
             promisc: false\n\
             aggregate: src_host, dst_host, src_port, dst_port, proto, tos\n\
             plugins: nfprobe\n\
             nfprobe_receiver: 127.0.0.1:{PORT}\n\
             nfprobe_version: {version}\n\
             nfprobe_timeouts: tcp=1:tcp.rst=1:tcp.fin=1:udp=1:icmp=1:general=1:maxlife=60:expint=1\n"
        ),
    )
    .expect("pmacctd config");
    let (_, stderr) = stderr_file(dir, "pmacctd.log");
    let child = ns
        .command("pmacctd")
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("starting pmacctd (cargo xtask setup installs pmacct)");
    // pmacctd opens its capture and starts its plugin within a second.
    std::thread::sleep(Duration::from_millis(1500));
    Guard(child)
}

/// pmacct's nfprobe (v9 or IPFIX) on the lab link: per-flow totals equal
/// the ground truth once its 1-s timeouts have expired every flow.
fn pmacct_totals_match(version: u8, test: &str) {
    let Some(net) = net_test(test) else {
        return;
    };
    let dir = TempDir::new("collect-pmacct").expect("tempdir");
    let flows_out = dir.path().join("flows.json");
    let (collector, log) = start_collector(
        &net.lab.gateway,
        dir.path(),
        &["--no-score", "--flows-out", &flows_out.to_string_lossy()],
    );
    let pmacct = start_pmacct(&net.lab.gateway, &net.lab.link.b, dir.path(), version);
    let frames = truth_frames(&net);
    let report = Sender::open(&net.lab.sender, &net.lab.link.a)
        .expect("sender")
        .send(&frames, Pacing::paced(20_000))
        .expect("sending");
    assert_eq!(report.sent, frames.len(), "every frame sent");
    let truth = frames.truth(report.sent);
    // Idle timeout 1 s, expiry check every 1 s: every flow is out by 3 s.
    std::thread::sleep(Duration::from_secs(4));
    drop(pmacct);
    let stderr = stop_collector(collector, &log);
    let got: BTreeMap<FlowTuple, FlowRecord> = read_flows(&flows_out)
        .expect("flows written")
        .into_iter()
        .map(|f| (FlowTuple::from(&f), f))
        .collect();
    for (tuple, want) in &truth.flows {
        let f = got
            .get(tuple)
            .unwrap_or_else(|| panic!("pmacct v{version}: no record of {tuple:?}\n{stderr}"));
        assert_eq!(
            (f.packets, f.bytes),
            (want.packets, want.bytes),
            "pmacct v{version} {tuple:?}: (packets, bytes)"
        );
    }
    assert!(stderr.contains("malformed 0 "), "{stderr}");
}

#[test]
fn pmacct_nfprobe_v9_totals_equal_ground_truth() {
    pmacct_totals_match(9, "pmacct_nfprobe_v9_totals_equal_ground_truth");
}

#[test]
fn pmacct_nfprobe_ipfix_totals_equal_ground_truth() {
    pmacct_totals_match(10, "pmacct_nfprobe_ipfix_totals_equal_ground_truth");
}

#[test]
fn softflowd_v9_totals_equal_ground_truth() {
    totals_match(9, "softflowd_v9_totals_equal_ground_truth");
}

#[test]
fn softflowd_ipfix_totals_equal_ground_truth() {
    totals_match(10, "softflowd_ipfix_totals_equal_ground_truth");
}

/// The lab's port scan (1000 SYN probes from one source) seen only as
/// IPFIX records raises a scan alert naming the scanner, with the
/// exporter and its interface index.
#[test]
fn scan_is_detected_from_flow_records_alone() {
    let Some(net) = net_test("scan_is_detected_from_flow_records_alone") else {
        return;
    };
    let scanner: IpAddr = "10.66.0.7".parse().unwrap();
    let victim: IpAddr = "10.99.0.1".parse().unwrap();
    let dir = TempDir::new("collect-scan").expect("tempdir");
    let eve = dir.path().join("eve.json");
    let (collector, log) = start_collector(
        &net.lab.gateway,
        dir.path(),
        &["--eve-out", &eve.to_string_lossy()],
    );
    let exporter = Softflowd::start(&net.lab.gateway, &net.lab.link.b, dir.path(), 10);
    let frames = net.port_scan(scanner, victim, 1..=1000);
    let report = Sender::open(&net.lab.sender, &net.lab.link.a)
        .expect("sender")
        .send(&frames, Pacing::paced(20_000))
        .expect("sending");
    assert_eq!(report.sent, frames.len(), "every frame sent");
    exporter.flush(&net, frames.len() as u64);
    // Unanswered SYNs count as failed after the extractor's 2 s timeout.
    std::thread::sleep(Duration::from_secs(3));
    let stderr = stop_collector(collector, &log);

    let text = std::fs::read_to_string(&eve).expect("EVE file written");
    let opened: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("EVE line is JSON"))
        .filter(|v| v["event_type"] == "alert" && v["xdp_sensor"]["state"] == "open")
        .collect();
    let summary: Vec<String> = opened
        .iter()
        .map(|v| {
            let x = &v["xdp_sensor"];
            format!(
                "{} {} -> {} via {}",
                x["class"], x["attacker"], x["victim"], x["flow_source"]
            )
        })
        .collect();
    let scan = opened
        .iter()
        .find(|v| {
            let x = &v["xdp_sensor"];
            x["class"] == "scan" && x["attacker"] == scanner.to_string()
        })
        .unwrap_or_else(|| panic!("no scan alert from {scanner}: {summary:?}\n{stderr}"));
    let source = &scan["xdp_sensor"]["flow_source"];
    assert_eq!(source["exporter"], "127.0.0.1", "{source}");
    assert_eq!(source["version"], 10, "{source}");
    assert_eq!(source["in_if"], IF_INDEX, "{source}");
    eprintln!("alerts from flow records: {summary:?}");
}

/// `sensor run --collect`: one process scores the interface's packets
/// (XDP) and softflowd's NetFlow v9 records of the same port scan; both
/// raise a scan alert, the collector's naming its exporter, and
/// `--stats-out` holds the kernel's counters and the collector's.
#[test]
fn run_scores_packets_and_flow_records_side_by_side() {
    let Some(net) = net_test("run_scores_packets_and_flow_records_side_by_side") else {
        return;
    };
    let scanner: IpAddr = "10.66.0.7".parse().unwrap();
    let victim: IpAddr = "10.99.0.1".parse().unwrap();
    let dir = TempDir::new("run-collect").expect("tempdir");
    let eve = dir.path().join("eve.json");
    net.lab
        .gateway
        .ip(&["link", "set", "lo", "up"])
        .expect("loopback up");
    let mut run = SensorRun::start(
        &net.lab.gateway,
        Path::new(SENSOR),
        &net.lab.link.b,
        dir.path(),
        &[
            "--duration",
            "120",
            "--eve-out",
            &eve.to_string_lossy(),
            "--collect",
            &format!("127.0.0.1:{PORT}"),
        ],
    )
    .expect("starting sensor run");
    run.wait_ready(&net.lab.gateway).expect("sensor attached");
    let exporter = Softflowd::start(&net.lab.gateway, &net.lab.link.b, dir.path(), 9);
    let frames = net.port_scan(scanner, victim, 1..=1000);
    let report = Sender::open(&net.lab.sender, &net.lab.link.a)
        .expect("sender")
        .send(&frames, Pacing::paced(20_000))
        .expect("sending");
    assert_eq!(report.sent, frames.len(), "every frame sent");
    exporter.flush(&net, frames.len() as u64);
    std::thread::sleep(Duration::from_secs(3));
    let output = run.stop(Duration::from_secs(30)).expect("sensor stopped");

    let c = output
        .stats
        .collector
        .unwrap_or_else(|| panic!("no collector counters in --stats-out\n{}", output.stderr));
    assert!(c.v9_datagrams >= 1 && c.records >= 1000, "{c:?}");
    assert_eq!(c.malformed(), 0, "{c:?}");
    assert!(output.stats.counter("packets_seen") >= frames.len() as u64);
    let text = std::fs::read_to_string(&eve).expect("EVE file written");
    // Records of the scanner's scan alert, in any state: the packets open
    // it (their rows come first), the flow records' rows join it later.
    let scans: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("EVE line is JSON"))
        .filter(|v| {
            v["xdp_sensor"]["class"] == "scan" && v["xdp_sensor"]["attacker"] == scanner.to_string()
        })
        .collect();
    assert!(
        scans.iter().any(|v| v["xdp_sensor"]["state"] == "open"
            && v["xdp_sensor"]["flow_source"].is_null()),
        "no scan alert opened by the packets: {scans:?}"
    );
    let from_flows = scans
        .iter()
        .filter(|v| v["xdp_sensor"]["flow_source"]["exporter"] == "127.0.0.1")
        .count();
    assert!(
        from_flows >= 1,
        "no scan alert record from the flow records: {scans:?}\n{}",
        output.stderr
    );
}

/// The lab's SYN flood (20 000 SYNs from 5 000 spoofed sources to one
/// port) seen only as IPFIX records raises a flood alert on its victim.
#[test]
fn flood_is_detected_from_flow_records_alone() {
    let Some(net) = net_test("flood_is_detected_from_flow_records_alone") else {
        return;
    };
    let victim: IpAddr = "10.99.0.2".parse().unwrap();
    let dir = TempDir::new("collect-flood").expect("tempdir");
    let eve = dir.path().join("eve.json");
    let (collector, log) = start_collector(
        &net.lab.gateway,
        dir.path(),
        &["--eve-out", &eve.to_string_lossy()],
    );
    let exporter = Softflowd::start(&net.lab.gateway, &net.lab.link.b, dir.path(), 10);
    let frames = net.syn_flood(5_000, victim, 80, 20_000);
    let report = Sender::open(&net.lab.sender, &net.lab.link.a)
        .expect("sender")
        .send(&frames, Pacing::paced(20_000))
        .expect("sending");
    assert_eq!(report.sent, frames.len(), "every frame sent");
    exporter.flush(&net, frames.len() as u64);
    std::thread::sleep(Duration::from_secs(1));
    let stderr = stop_collector(collector, &log);
    let text = std::fs::read_to_string(&eve).expect("EVE file written");
    let opened: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("EVE line is JSON"))
        .filter(|v| v["event_type"] == "alert" && v["xdp_sensor"]["state"] == "open")
        .collect();
    let summary: Vec<String> = opened
        .iter()
        .map(|v| {
            let x = &v["xdp_sensor"];
            format!("{} {} -> {}", x["class"], x["attacker"], x["victim"])
        })
        .collect();
    assert!(
        opened.iter().any(|v| {
            let x = &v["xdp_sensor"];
            x["class"] == "flood"
                && x["victim"] == victim.to_string()
                && x["flow_source"]["exporter"] == "127.0.0.1"
        }),
        "no flood alert on {victim} from the flow records: {summary:?}\n{stderr}"
    );
    eprintln!("alerts from flow records: {summary:?}");
}
