//! The traffic lab: a small network of namespaces with real services, real
//! clients and real attack tools, and a monitor port that gives the sensor
//! both directions of every routed flow, like a SPAN port or a TAP.
//!
//! ```text
//!  clients 10.10.0.11-.14 ─┐                                  ┌─ server 10.20.0.2 (web :80, DNS :53,
//!                          ├─ lan (bridge) ── gw ─────────────┤   iperf3 :5201, ssh :22, sink :7000)
//!  attacker 10.10.0.66 ────┘   10.10.0.1 │ 10.20.0.1          │  + sweep targets 10.20.0.100-.131
//!                                        │                    └  + exfil drop 10.20.0.200
//!    offline (never assigned): 10.20.0.150-.153 on the server LAN (the
//!    gateway's ARP fails: host unreachable) and 10.30.0.0/16 behind an
//!    `unreachable` route on the gateway (an uplink that is down)
//!                    tc mirred (ingress + egress of gw's LAN port)
//!                                        ▼
//!                         monitor veth ── sensor namespace: `sensor run --iface <mon> --mirror`
//! ```
//!
//! XDP sees only frames arriving on its interface, so the sensor does not
//! sit on the gateway itself: a `clsact` qdisc on the gateway's LAN-side
//! port mirrors every frame it receives (LAN → servers) and every frame it
//! sends (servers → LAN) into the monitor veth. Each frame is mirrored once.
//! Offloads (TSO/GSO/GRO) are off on every lab link, so the sensor sees
//! wire-sized frames, as on a physical SPAN port.
//!
//! Every address lives only inside these namespaces; dropping the
//! [`TrafficLab`] stops its services and removes every namespace (also on
//! a panic). Names carry the process id.

pub mod scenario;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sensor_common::clock::monotonic_ns;

use crate::error::{LabError, Result};
use crate::netns::{Netns, VethPair, run};
use crate::sensor::TempDir;

/// The lab's addresses. Labels of recorded rows are derived from it: a
/// source that is not in the plan was spoofed.
#[derive(Clone, Debug)]
pub struct AddressPlan {
    /// Benign clients (all in the clients namespace).
    pub clients: Vec<Ipv4Addr>,
    /// The attacker's own address.
    pub attacker: Ipv4Addr,
    pub gateway_lan: Ipv4Addr,
    pub gateway_server: Ipv4Addr,
    /// The main server: web, DNS, iperf3, SSH, TCP sink.
    pub server: Ipv4Addr,
    /// Extra server-side addresses for horizontal sweeps (same namespace).
    pub sweep_targets: Vec<Ipv4Addr>,
    /// The "outside" server exfiltration uploads go to (same namespace).
    pub exfil_server: Ipv4Addr,
    /// Server-LAN addresses that are never assigned: hosts that are down.
    /// Traffic to them ends at the gateway (its ARP fails: host unreachable).
    pub offline_hosts: Vec<Ipv4Addr>,
    /// A prefix the gateway has an `unreachable` route for, like an uplink
    /// that is down: traffic to it ends at the gateway (net unreachable).
    pub unrouted: (Ipv4Addr, u8),
}

impl Default for AddressPlan {
    fn default() -> Self {
        Self {
            clients: (11..=14).map(|h| Ipv4Addr::new(10, 10, 0, h)).collect(),
            attacker: Ipv4Addr::new(10, 10, 0, 66),
            gateway_lan: Ipv4Addr::new(10, 10, 0, 1),
            gateway_server: Ipv4Addr::new(10, 20, 0, 1),
            server: Ipv4Addr::new(10, 20, 0, 2),
            sweep_targets: (100..132).map(|h| Ipv4Addr::new(10, 20, 0, h)).collect(),
            exfil_server: Ipv4Addr::new(10, 20, 0, 200),
            offline_hosts: (150..154).map(|h| Ipv4Addr::new(10, 20, 0, h)).collect(),
            unrouted: (Ipv4Addr::new(10, 30, 0, 0), 16),
        }
    }
}

impl AddressPlan {
    /// Every address assigned in the lab.
    #[must_use]
    pub fn all(&self) -> BTreeSet<IpAddr> {
        let mut s: BTreeSet<IpAddr> = self.clients.iter().map(|&a| a.into()).collect();
        s.extend(self.sweep_targets.iter().map(|&a| IpAddr::from(a)));
        s.extend(
            [
                self.attacker,
                self.gateway_lan,
                self.gateway_server,
                self.server,
                self.exfil_server,
            ]
            .map(IpAddr::from),
        );
        s
    }

    /// True when `ip` is assigned somewhere in the lab.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.all().contains(&ip)
    }

    /// True when no lab host has `ip`: a spoofed source. The unspecified
    /// address is not foreign: lab hosts send from it themselves (IGMP
    /// membership reports, DHCP) while an interface comes up.
    #[must_use]
    pub fn is_foreign(&self, ip: IpAddr) -> bool {
        !ip.is_unspecified() && !self.contains(ip)
    }

    /// True when `ip` is one of the benign clients.
    #[must_use]
    pub fn is_client(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if self.clients.contains(&v4))
    }
}

/// A Debian package that provides `binary`, for "missing tool" errors.
#[must_use]
pub fn package_of(binary: &str) -> &'static str {
    match binary {
        "nmap" => "nmap",
        "hping3" => "hping3",
        "trafgen" => "netsniff-ng",
        "iperf3" => "iperf3",
        "dnsmasq" => "dnsmasq-base",
        "dig" => "bind9-dnsutils",
        "hydra" => "hydra",
        "slowhttptest" => "slowhttptest",
        "arp-scan" => "arp-scan",
        "sshd" | "/usr/sbin/sshd" => "openssh-server",
        "ssh-keygen" => "openssh-client",
        "curl" => "curl",
        "ping" => "iputils-ping",
        "ethtool" => "ethtool",
        "tc" | "ip" => "iproute2",
        "python3" => "python3",
        "timeout" => "coreutils",
        "prometheus" | "promtool" => "prometheus",
        _ => "?",
    }
}

/// Full path of `binary` on PATH (or an absolute path that exists).
///
/// # Errors
/// [`LabError::MissingTool`] naming the Debian package to install.
pub fn require_tool(binary: &str) -> Result<PathBuf> {
    let found = if binary.starts_with('/') {
        Path::new(binary).exists().then(|| PathBuf::from(binary))
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .map(|d| d.join(binary))
                .find(|p| p.is_file())
        })
    };
    found.ok_or_else(|| LabError::MissingTool {
        tool: binary.to_owned(),
        package: package_of(binary).to_owned(),
    })
}

/// A background process inside a namespace, stopped (SIGTERM, then SIGKILL
/// after a second) on drop.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    child: Option<Child>,
}

impl Service {
    /// Starts `cmd` with stdout/stderr to `log`.
    ///
    /// # Errors
    /// The process cannot be started.
    pub fn start(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log).map_err(|source| LabError::Sys {
            call: format!("create {}", log.display()),
            source,
        })?;
        let err = out.try_clone().map_err(|source| LabError::Sys {
            call: "dup log fd".into(),
            source,
        })?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: name.to_owned(),
                source,
            })?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    /// Fails if the process already exited (with its log in the error).
    ///
    /// # Errors
    /// The service died.
    pub fn check_alive(&mut self, log: &Path) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LabError::Command {
                command: self.name.clone(),
                status,
                stderr: std::fs::read_to_string(log).unwrap_or_default(),
            });
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(1) {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The lab: namespaces, links, mirror and services. Field order matters:
/// services stop before the namespaces they run in are removed.
#[derive(Debug)]
pub struct TrafficLab {
    plan: AddressPlan,
    /// Interface in [`TrafficLab::sensor_ns`] that receives the mirror.
    monitor_iface: String,
    /// Gateway LAN-side MAC (destination of frames the attacker crafts).
    gateway_lan_mac: [u8; 6],
    attacker_iface: String,
    attacker_mac: [u8; 6],
    clients_iface: String,
    dir: TempDir,
    services: Vec<(Service, PathBuf)>,
    pub clients: Netns,
    pub attacker: Netns,
    /// Holds the LAN bridge.
    pub lan: Netns,
    pub gateway: Netns,
    pub server: Netns,
    /// Where the sensor runs: holds the monitor interface only.
    pub sensor_ns: Netns,
}

/// Writes a sysctl inside `ns`.
fn sysctl(ns: &Netns, path: &'static str, value: &'static str) -> Result<()> {
    ns.run_in(move || std::fs::write(path, value))?
        .map_err(|source| LabError::Sys {
            call: format!("write {path} in {}", ns.name()),
            source,
        })
}

/// Turns segmentation/receive offloads off, so frames are wire-sized.
fn offloads_off(ns: &Netns, ifname: &str) -> Result<()> {
    let ethtool = require_tool("ethtool")?;
    run(ns.command(&ethtool).args([
        "-K", ifname, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
    ]))
    .map(drop)
}

impl TrafficLab {
    /// Builds the lab with the default [`AddressPlan`] and starts its
    /// services (web, DNS, iperf3, SSH, TCP sink). Takes about a second.
    ///
    /// # Errors
    /// Not root, a command fails, or a required tool is missing (the error
    /// names its Debian package).
    pub fn new() -> Result<Self> {
        for t in ["ip", "tc", "ethtool", "python3", "timeout"] {
            require_tool(t)?;
        }
        let plan = AddressPlan::default();
        let dir = TempDir::new("traffic-lab")?;
        let clients = Netns::new("clients")?;
        let attacker = Netns::new("attacker")?;
        let lan = Netns::new("lan")?;
        let gateway = Netns::new("gw")?;
        let server = Netns::new("server")?;
        let sensor_ns = Netns::new("sensor")?;

        lan.ip(&["link", "add", "br0", "type", "bridge"])?;
        lan.link_up("br0")?;
        let c = VethPair::new(&clients, &lan)?;
        let a = VethPair::new(&attacker, &lan)?;
        let up = VethPair::new(&lan, &gateway)?;
        let wan = VethPair::new(&gateway, &server)?;
        let mon = VethPair::new(&gateway, &sensor_ns)?;
        for port in [&c.b, &a.b, &up.a] {
            lan.ip(&["link", "set", "dev", port, "master", "br0"])?;
        }
        for (ns, ifname) in [
            (&clients, &c.a),
            (&lan, &c.b),
            (&attacker, &a.a),
            (&lan, &a.b),
            (&lan, &up.a),
            (&gateway, &up.b),
            (&gateway, &wan.a),
            (&server, &wan.b),
            (&gateway, &mon.a),
            (&sensor_ns, &mon.b),
        ] {
            offloads_off(ns, ifname)?;
        }
        for ip in &plan.clients {
            clients.add_addr(&c.a, &format!("{ip}/24"))?;
        }
        attacker.add_addr(&a.a, &format!("{}/24", plan.attacker))?;
        gateway.add_addr(&up.b, &format!("{}/24", plan.gateway_lan))?;
        gateway.add_addr(&wan.a, &format!("{}/24", plan.gateway_server))?;
        server.add_addr(&wan.b, &format!("{}/24", plan.server))?;
        for ip in plan.sweep_targets.iter().chain([&plan.exfil_server]) {
            server.add_addr(&wan.b, &format!("{ip}/24"))?;
        }
        for ns in [&clients, &attacker] {
            ns.ip(&[
                "route",
                "add",
                "default",
                "via",
                &plan.gateway_lan.to_string(),
            ])?;
        }
        server.ip(&[
            "route",
            "add",
            "default",
            "via",
            &plan.gateway_server.to_string(),
        ])?;
        gateway.ip(&[
            "route",
            "add",
            "unreachable",
            &format!("{}/{}", plan.unrouted.0, plan.unrouted.1),
        ])?;
        sysctl(&gateway, "/proc/sys/net/ipv4/ip_forward", "1")?;
        // Spoofed sources must reach the server (the sensor sees them on the
        // mirror either way; this keeps the replies realistic).
        sysctl(&gateway, "/proc/sys/net/ipv4/conf/all/rp_filter", "0")?;
        // Many short connections from one client (scans, brute force, the
        // slow-HTTP test) would otherwise exhaust the default backlog.
        sysctl(&server, "/proc/sys/net/core/somaxconn", "4096")?;

        // The mirror: both directions of the gateway's LAN port, once each.
        let tc = |args: &[&str]| run(gateway.command("tc").args(args)).map(drop);
        tc(&["qdisc", "add", "dev", &up.b, "clsact"])?;
        // `matchall` where the kernel has it, else a `u32` filter matching
        // every frame (some kernels build only cls_u32).
        for dir in ["ingress", "egress"] {
            let mirror = ["action", "mirred", "egress", "mirror", "dev", &mon.a];
            let matchall = [
                &["filter", "add", "dev", &up.b, dir, "matchall"][..],
                &mirror,
            ]
            .concat();
            if tc(&matchall).is_err() {
                let u32_all = [
                    &[
                        "filter", "add", "dev", &up.b, dir, "protocol", "all", "u32", "match",
                        "u32", "0", "0",
                    ][..],
                    &mirror,
                ]
                .concat();
                tc(&u32_all)?;
            }
        }

        let mut lab = Self {
            monitor_iface: mon.b.clone(),
            gateway_lan_mac: gateway.mac(&up.b)?,
            attacker_mac: attacker.mac(&a.a)?,
            attacker_iface: a.a.clone(),
            clients_iface: c.a.clone(),
            plan,
            dir,
            services: Vec::new(),
            clients,
            attacker,
            lan,
            gateway,
            server,
            sensor_ns,
        };
        lab.start_services()?;
        Ok(lab)
    }

    /// The address plan.
    #[must_use]
    pub fn plan(&self) -> &AddressPlan {
        &self.plan
    }

    /// The interface (in [`TrafficLab::sensor_ns`]) to run the sensor on,
    /// with `--mirror`.
    #[must_use]
    pub fn monitor_iface(&self) -> &str {
        &self.monitor_iface
    }

    /// The attacker's interface and MAC, and the gateway's LAN MAC: what a
    /// raw-frame generator on the attacker needs.
    #[must_use]
    pub fn attacker_link(&self) -> (&str, [u8; 6], [u8; 6]) {
        (
            &self.attacker_iface,
            self.attacker_mac,
            self.gateway_lan_mac,
        )
    }

    /// The clients' interface (all client addresses are on it).
    #[must_use]
    pub fn clients_iface(&self) -> &str {
        &self.clients_iface
    }

    /// Scratch directory of this lab (service logs, generated files).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Fails if a service of the lab died (with its log).
    ///
    /// # Errors
    /// A service exited.
    pub fn check_services(&mut self) -> Result<()> {
        for (s, log) in &mut self.services {
            s.check_alive(log)?;
        }
        Ok(())
    }

    fn spawn(&mut self, name: &str, cmd: Command) -> Result<()> {
        let log = self.dir.path().join(format!("{name}.log"));
        let s = Service::start(name, cmd, &log)?;
        self.services.push((s, log));
        Ok(())
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).map_err(|source| LabError::Sys {
            call: format!("write {}", p.display()),
            source,
        })?;
        Ok(p)
    }

    /// Web content, the Python helpers, and every server process.
    fn start_services(&mut self) -> Result<()> {
        let www = self.dir.path().join("www");
        std::fs::create_dir_all(&www).map_err(|source| LabError::Sys {
            call: format!("mkdir {}", www.display()),
            source,
        })?;
        // Pages of 2-60 KiB and one 24 MiB download; content is irrelevant
        // to a flow sensor, sizes are not.
        for i in 0..20u32 {
            let size = 2048 + (i as usize * 7919 * 13) % (58 * 1024);
            self.write(&format!("www/page{i}.html"), &vec![b'x'; size])?;
        }
        self.write("www/big.bin", &vec![0x5a; 24 << 20])?;
        let server_py = self.write("lab_server.py", include_bytes!("lab_server.py"))?;
        self.write("lab_client.py", include_bytes!("lab_client.py"))?;

        let mut web = self.server.command("python3");
        web.arg(&server_py).arg("--root").arg(&www);
        self.spawn("web", web)?;

        let dnsmasq = require_tool("dnsmasq")?;
        let mut dns = self.server.command(dnsmasq);
        dns.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--group=root",
            "--cache-size=0",
        ])
        .arg(format!("--listen-address={}", self.plan.server))
        .arg(format!("--address=/lab.test/{}", self.plan.server))
        .arg(format!(
            "--pid-file={}",
            self.dir.path().join("dnsmasq.pid").display()
        ));
        self.spawn("dnsmasq", dns)?;

        let iperf3 = require_tool("iperf3")?;
        let mut ip3 = self.server.command(iperf3);
        ip3.args(["-s", "-B", &self.plan.server.to_string()]);
        self.spawn("iperf3", ip3)?;

        self.start_sshd()?;

        // Wait until the web server and sshd accept connections.
        let server = self.plan.server;
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [80u16, 22, 7000] {
            loop {
                let ok = self.clients.run_in(move || {
                    std::net::TcpStream::connect_timeout(
                        &(server, port).into(),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                })?;
                if ok {
                    break;
                }
                self.check_services()?;
                if Instant::now() > deadline {
                    return Err(LabError::Timeout {
                        what: format!("the lab server to listen on :{port}"),
                        seconds: 10.0,
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.check_services()
    }

    /// An OpenSSH server on :22 accepting password logins for nobody (every
    /// attempt fails), the target of the SSH brute force.
    fn start_sshd(&mut self) -> Result<()> {
        let sshd = require_tool("/usr/sbin/sshd")?;
        let keygen = require_tool("ssh-keygen")?;
        let key = self.dir.path().join("ssh_host_ed25519_key");
        run(Command::new(keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key))?;
        // sshd insists on its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").map_err(|source| LabError::Sys {
            call: "mkdir /run/sshd".into(),
            source,
        })?;
        let cfg = format!(
            "ListenAddress {}:22\nHostKey {}\nPidFile {}\nUsePAM no\nPasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\nPermitRootLogin no\nMaxStartups 200:30:400\n\
             MaxAuthTries 6\nLoginGraceTime 10\nAllowUsers labnobody\n",
            self.plan.server,
            key.display(),
            self.dir.path().join("sshd.pid").display()
        );
        let cfg = self.write("sshd_config", cfg.as_bytes())?;
        let mut cmd = self.server.command(sshd);
        cmd.args(["-D", "-e", "-f"]).arg(cfg);
        self.spawn("sshd", cmd)
    }

    /// A command running the lab's Python client (`lab_client.py <mode>`)
    /// in `ns`.
    #[must_use]
    pub fn client_script(&self, ns: &Netns, mode: &str) -> Command {
        let mut cmd = ns.command("python3");
        cmd.arg(self.dir.path().join("lab_client.py")).arg(mode);
        cmd
    }
}
