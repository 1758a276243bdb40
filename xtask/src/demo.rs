//! `cargo xtask demo`: a self-contained lab showing what the sensor sees.
//!
//! Topology (all in private network namespaces, removed at the end, also on
//! failure or Ctrl-C):
//!
//! ```text
//!  client 10.10.0.10 ─┐
//!                     ├─ lan (bridge) ── [sensor iface] gw ── server 10.20.0.2
//!  attacker 10.10.0.66┘                  10.10.0.1 / 10.20.0.1 (router)
//! ```
//!
//! The sensor attaches XDP to the gateway's LAN-side veth, so it sees every
//! frame the client and attacker send towards the server, exactly like a
//! sensor on a real gateway's inside interface.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sensor_lab::generator::{FlowSpec, Frames, Pacing, SendReport, Sender};
use sensor_lab::netns::run;
use sensor_lab::sensor::{SensorOutput, SensorRun, TempDir};
use sensor_lab::{Netns, VethPair};

use crate::has_binary;

pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches Ctrl-C so the demo unwinds through its guards (namespaces,
/// sensor process, temp dir) instead of dying with the lab still in place.
pub(crate) fn catch_ctrl_c() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
}

pub(crate) fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 10);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 66);
const GW_LAN: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
const GW_WAN: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);
/// Spoofed sources in the SYN flood.
const FLOOD_SOURCES: u32 = 5_000;
const FLOOD_PACKETS: u64 = 60_000;

/// Namespaces and links of the demo; dropping it removes everything.
struct DemoLab {
    /// LAN-side veth of the gateway: where the sensor attaches.
    sensor_iface: String,
    gw_lan_mac: [u8; 6],
    client_if: String,
    client_mac: [u8; 6],
    attacker_if: String,
    attacker_mac: [u8; 6],
    client: Netns,
    attacker: Netns,
    /// Holds the bridge; kept only so dropping the lab removes it.
    #[expect(dead_code, reason = "kept for its Drop, which removes the namespace")]
    lan: Netns,
    gw: Netns,
    server: Netns,
}

fn write_sysctl(ns: &Netns, path: &'static str, value: &'static str) -> Result<()> {
    ns.run_in(move || std::fs::write(path, value))?
        .with_context(|| format!("writing {path} in {}", ns.name()))
}

impl DemoLab {
    fn new() -> Result<Self> {
        let client = Netns::new("client")?;
        let attacker = Netns::new("attacker")?;
        let lan = Netns::new("lan")?;
        let gw = Netns::new("gw")?;
        let server = Netns::new("server")?;

        lan.ip(&["link", "add", "br0", "type", "bridge"])?;
        lan.link_up("br0")?;
        let c = VethPair::new(&client, &lan)?;
        let a = VethPair::new(&attacker, &lan)?;
        let up = VethPair::new(&lan, &gw)?;
        let wan = VethPair::new(&gw, &server)?;
        for port in [&c.b, &a.b, &up.a] {
            lan.ip(&["link", "set", "dev", port, "master", "br0"])?;
        }
        client.add_addr(&c.a, "10.10.0.10/24")?;
        attacker.add_addr(&a.a, "10.10.0.66/24")?;
        gw.add_addr(&up.b, "10.10.0.1/24")?;
        gw.add_addr(&wan.a, "10.20.0.1/24")?;
        server.add_addr(&wan.b, "10.20.0.2/24")?;
        for ns in [&client, &attacker] {
            ns.ip(&["route", "add", "default", "via", &GW_LAN.to_string()])?;
        }
        server.ip(&["route", "add", "default", "via", &GW_WAN.to_string()])?;
        write_sysctl(&gw, "/proc/sys/net/ipv4/ip_forward", "1")?;
        Ok(Self {
            sensor_iface: up.b.clone(),
            gw_lan_mac: gw.mac(&up.b)?,
            client_mac: client.mac(&c.a)?,
            client_if: c.a,
            attacker_mac: attacker.mac(&a.a)?,
            attacker_if: a.a,
            client,
            attacker,
            lan,
            gw,
            server,
        })
    }
}

/// Ground truth the demo knows independently of the sensor.
#[derive(Default)]
struct Sent {
    lines: Vec<String>,
    /// Sources of generator traffic (spoofed included).
    generated_sources: BTreeSet<IpAddr>,
}

impl Sent {
    fn note(&mut self, what: &str, r: &SendReport) {
        self.lines.push(format!(
            "  {what:<44} {:>7} packets in {:.2} s ({:.0} pps)",
            r.sent,
            r.elapsed.as_secs_f64(),
            r.pps()
        ));
    }
}

/// Runs the demo; on Ctrl-C, everything is removed and the exit code is 130.
pub fn demo() -> Result<()> {
    let result = run_demo();
    // By now every guard (namespaces, sensor, temp dir) has been dropped.
    if INTERRUPTED.load(Ordering::SeqCst) {
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
    let bin = crate::build()?;
    catch_ctrl_c();
    let t0 = Instant::now();
    let lab = DemoLab::new().context("building the lab")?;
    println!(
        "lab: client {CLIENT}, attacker {ATTACKER} -> lan bridge -> gateway ({}) -> server {SERVER}",
        lab.sensor_iface
    );
    let out = TempDir::new("demo")?;
    let eve = out.path().join("eve.json");
    let eve_arg = eve.to_string_lossy().into_owned();
    let mut sensor = SensorRun::start(
        &lab.gw,
        &bin,
        &lab.sensor_iface,
        out.path(),
        &["--duration", "50", "--eve-out", &eve_arg],
    )?;
    sensor
        .wait_attached(&lab.gw, Duration::from_secs(15), Duration::from_millis(300))
        .context("starting the sensor")?;
    println!(
        "sensor attached to {} in {}",
        lab.sensor_iface,
        lab.gw.name()
    );
    println!(
        "alerts are printed as the sensor raises them ({})",
        eve.display()
    );
    let stop_view = std::sync::Arc::new(AtomicBool::new(false));
    let view = follow_alerts(eve.clone(), std::sync::Arc::clone(&stop_view));

    let mut sent = Sent::default();
    benign(&lab, &mut sent)?;
    check_interrupt()?;
    hostile(&lab, &mut sent)?;
    check_interrupt()?;

    std::thread::sleep(Duration::from_millis(300));
    let output = sensor
        .stop(Duration::from_secs(10))
        .context("stopping the sensor")?;
    println!("\ntraffic sent:");
    for l in &sent.lines {
        println!("{l}");
    }
    stop_view.store(true, Ordering::SeqCst);
    let view = view
        .join()
        .map_err(|_| anyhow::anyhow!("the alert view thread panicked"))??;
    report(&output, &sent);
    println!(
        "\nalerts: {} opened in {} incidents (all closed when the sensor stopped; EVE lines in {})",
        view.opened,
        view.incidents.len(),
        eve.display()
    );
    println!(
        "\nlab time {:.1} s (total with setup/build {:.1} s); lab removed",
        t0.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(lab);
    Ok(())
}

/// A few ordinary connections through the real stack: TCP transfers, UDP
/// datagrams, echo requests, and an iperf3 run when installed.
fn benign(lab: &DemoLab, sent: &mut Sent) -> Result<()> {
    println!(
        "benign traffic: TCP transfers, UDP, ICMP echo{}",
        if has_binary("iperf3") { ", iperf3" } else { "" }
    );
    const CONNS: usize = 4;
    const BYTES: usize = 256 * 1024;
    let listener = lab
        .server
        .run_in(|| TcpListener::bind((SERVER, 8080)))?
        .context("listening on the server")?;
    let acceptor = std::thread::spawn(move || -> std::io::Result<usize> {
        let mut total = 0;
        for _ in 0..CONNS {
            let (mut s, _) = listener.accept()?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n;
            }
        }
        Ok(total)
    });
    let udp_rx = lab
        .server
        .run_in(|| UdpSocket::bind((SERVER, 5353)))?
        .context("binding UDP on the server")?;
    lab.client
        .run_in(|| -> std::io::Result<()> {
            for _ in 0..CONNS {
                let mut s = TcpStream::connect_timeout(
                    &SocketAddr::from((SERVER, 8080)),
                    Duration::from_secs(3),
                )?;
                s.write_all(&vec![0x42; BYTES])?;
            }
            let u = UdpSocket::bind((CLIENT, 0))?;
            for i in 0..200u32 {
                u.send_to(&i.to_be_bytes().repeat(32), (SERVER, 5353))?;
            }
            Ok(())
        })?
        .context("client traffic")?;
    let received = acceptor.join().expect("acceptor thread")?;
    sent.lines.push(format!(
        "  {:<44} {CONNS} connections, {received} bytes delivered",
        "TCP transfers client -> server:8080"
    ));
    sent.lines.push(format!(
        "  {:<44} 200 datagrams",
        "UDP client -> server:5353"
    ));
    drop(udp_rx);

    // Echo requests from the client's own address: the server answers them.
    let mut echo = Frames::new(lab.client_mac, lab.gw_lan_mac);
    let id = echo.add_flow(FlowSpec::echo(CLIENT.into(), SERVER.into()));
    for seq in 0..20 {
        echo.push(id, 0, 56, seq)?;
    }
    let r = Sender::open(&lab.client, &lab.client_if)?.send(
        &echo,
        Pacing {
            pps: Some(100),
            batch: 1,
            ..Pacing::default()
        },
    )?;
    sent.note("ICMP echo client -> server", &r);

    if has_binary("iperf3") {
        let mut srv = lab
            .server
            .command("iperf3")
            .args(["-s", "-1", "-B", &SERVER.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        std::thread::sleep(Duration::from_millis(300));
        let client = run(lab.client.command("timeout").args([
            "5",
            "iperf3",
            "-c",
            &SERVER.to_string(),
            "-t",
            "1",
            "-b",
            "50M",
            "-l",
            "1200",
        ]));
        let _ = srv.kill();
        let _ = srv.wait();
        match client {
            Ok(_) => sent.lines.push(format!(
                "  {:<44} 1 s at 50 Mbit/s",
                "iperf3 client -> server"
            )),
            Err(e) => sent.lines.push(format!("  iperf3 skipped: {e}")),
        }
    }
    Ok(())
}

/// The project's generator (spoofed SYN flood, port scan, UDP flood) plus
/// real tools when installed (nmap SYN scan, hping3 flood).
fn hostile(lab: &DemoLab, sent: &mut Sent) -> Result<()> {
    println!("hostile traffic: spoofed SYN flood, port scans, UDP flood");
    let tx = Sender::open(&lab.attacker, &lab.attacker_if)?;
    let flood = Frames::syn_flood(
        lab.attacker_mac,
        lab.gw_lan_mac,
        FLOOD_SOURCES,
        SERVER.into(),
        80,
        FLOOD_PACKETS,
    )?;
    let r = tx.send(
        &flood,
        Pacing {
            pps: Some(100_000),
            time_limit: Duration::from_secs(5),
            batch: 64,
        },
    )?;
    sent.generated_sources
        .extend(flood.truth(r.sent).sources().into_keys());
    sent.note(
        &format!("SYN flood, {FLOOD_SOURCES} spoofed sources -> :80"),
        &r,
    );
    check_interrupt()?;

    let scan = Frames::port_scan(
        lab.attacker_mac,
        lab.gw_lan_mac,
        ATTACKER.into(),
        SERVER.into(),
        1..=1024,
    )?;
    let r = tx.send(
        &scan,
        Pacing {
            pps: Some(20_000),
            ..Pacing::default()
        },
    )?;
    sent.generated_sources.insert(ATTACKER.into());
    sent.note("SYN port scan attacker -> server:1-1024", &r);

    let udp = Frames::udp_flood(
        lab.attacker_mac,
        lab.gw_lan_mac,
        FlowSpec::udp(ATTACKER.into(), SERVER.into(), 31_337, 9),
        10_000,
        512,
    )?;
    let r = tx.send(
        &udp,
        Pacing {
            pps: Some(50_000),
            ..Pacing::default()
        },
    )?;
    sent.note("UDP flood attacker -> server:9 (512 B)", &r);
    check_interrupt()?;

    if has_binary("nmap") {
        let res = run(lab.attacker.command("timeout").args([
            "20",
            "nmap",
            "-sS",
            "-n",
            "-Pn",
            "-T4",
            "--max-retries",
            "1",
            "-p",
            "1-1000",
            &SERVER.to_string(),
        ]));
        sent.lines.push(match res {
            Ok(_) => format!("  {:<44} 1000 ports", "nmap -sS attacker -> server"),
            Err(e) => format!("  nmap failed: {e}"),
        });
    }
    check_interrupt()?;
    if has_binary("hping3") {
        // --flood ignores -c, so the run is bounded by time instead.
        let res = Command::new("ip")
            .args([
                "netns",
                "exec",
                lab.attacker.name(),
                "timeout",
                "-s",
                "INT",
                "2",
                "hping3",
                "--flood",
                "-q",
                "-S",
                "-p",
                "443",
            ])
            .arg(SERVER.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        sent.lines.push(match res {
            Ok(_) => format!("  {:<44} 2 s", "hping3 --flood -S attacker -> server:443"),
            Err(e) => format!("  hping3 failed: {e}"),
        });
    }
    Ok(())
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

fn report(out: &SensorOutput, sent: &Sent) {
    let s = &out.stats;
    println!("\nsensor counters ({:.1} s):", s.duration_s);
    for (name, v) in &s.counters {
        if *v != 0 || name == "events_lost" {
            println!("  {name:<24} {v}");
        }
    }

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

    let mut truth: BTreeMap<IpAddr, u64> = BTreeMap::new();
    for f in &out.flows {
        *truth.entry(f.src).or_default() += f.packets;
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
            truth.get(&e.src).copied().unwrap_or(0),
            e.bytes_est
        );
    }
    println!(
        "  (\"table\" undercounts sources whose flows the LRU table evicted; \
         the sketches see every packet)"
    );
    // Every source the lab sent from: the generator's (spoofed included),
    // plus the client and the attacker's own address (real tools, stack).
    let mut sources = sent.generated_sources.clone();
    sources.extend([IpAddr::from(CLIENT), IpAddr::from(ATTACKER)]);
    let distinct_truth = sources.len();
    let est = out.sketch.distinct_sources_estimate;
    println!(
        "\ndistinct sources: HyperLogLog estimate {est:.0}, truth {distinct_truth} \
         (error {:+.2}%); {} sources still in the flow table",
        (est - distinct_truth as f64) / distinct_truth.max(1) as f64 * 100.0,
        truth.len()
    );
}

/// Follows the sensor's EVE file and prints each alert as it opens and
/// closes, one line each.
#[derive(Default)]
struct AlertView {
    /// Bytes of the file already shown.
    offset: usize,
    opened: usize,
    incidents: BTreeSet<String>,
}

impl AlertView {
    /// Prints the complete lines written since the last call.
    fn poll(&mut self, eve: &std::path::Path) -> Result<()> {
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
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("an alert line is not JSON: {line}"))?;
            self.show(&v);
        }
        Ok(())
    }

    fn show(&mut self, v: &serde_json::Value) {
        let x = &v["xdp_sensor"];
        if let Some(id) = x["incident_id"].as_str() {
            self.incidents.insert(id.to_owned());
        }
        let kind = v["event_type"].as_str().unwrap_or("?");
        let state = x["state"].as_str().unwrap_or("");
        if kind == "alert" && state == "open" {
            self.opened += 1;
        } else if kind != "alert_closed" {
            return;
        }
        println!(
            "  {:<6} {:<10} sev {} ({:>3})  {} -> {}:{}  count {:<7} score {:.3}  incident {}",
            if kind == "alert" { "ALERT" } else { "closed" },
            x["class"].as_str().unwrap_or("?"),
            v["alert"]["severity"],
            x["severity"],
            x["attacker"].as_str().unwrap_or("?"),
            x["victim"].as_str().unwrap_or("?"),
            v["dest_port"],
            x["count"],
            x["score"].as_f64().unwrap_or(f64::NAN),
            x["incident_id"].as_str().unwrap_or("?"),
        );
    }
}

/// Runs an [`AlertView`] on its own thread every 200 ms until `stop` is set,
/// then once more, and returns it for the summary.
fn follow_alerts(
    eve: std::path::PathBuf,
    stop: std::sync::Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<AlertView>> {
    std::thread::spawn(move || {
        let mut view = AlertView::default();
        while !stop.load(Ordering::SeqCst) {
            view.poll(&eve)?;
            std::thread::sleep(Duration::from_millis(200));
        }
        view.poll(&eve)?;
        Ok(view)
    })
}
