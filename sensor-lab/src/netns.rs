//! Network namespaces and veth pairs for tests and the demo.
//!
//! Everything is created with the `ip` tool (iproute2) and named uniquely from
//! the process id and a counter, so tests running in parallel (and leftovers of
//! a killed run) never collide. [`Netns`] deletes its namespace on drop, which
//! also destroys every interface inside it, including veth peers elsewhere.

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{LabError, Result};

/// Counter making names unique within this process.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
pub const IFNAME_MAX: usize = 15;

fn next_id() -> u32 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Renders a command line for error messages.
#[must_use]
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let _ = write!(s, " {}", a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; returns its stdout, or an error carrying the
/// command line and its stderr.
///
/// # Errors
/// The command cannot be started or exits non-zero.
pub fn run(cmd: &mut Command) -> Result<String> {
    let command = describe(cmd);
    let out = cmd.output().map_err(|source| LabError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip <args>` in the current namespace.
fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// A network namespace that is deleted when dropped.
///
/// New namespaces have IPv6 disabled by default (`disable_ipv6` in `all` and
/// `default`), so the kernel emits no router solicitations, MLD reports or DAD
/// probes on lab links: whatever the sensor sees there was sent on purpose.
/// XDP still sees IPv6 frames sent by the generator, since it runs before
/// the stack.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `sl-<pid>-<n>-<role>` with loopback up and IPv6 disabled.
    ///
    /// # Errors
    /// `ip netns add` fails (not root, iproute2 missing).
    pub fn new(role: &str) -> Result<Self> {
        let name = format!("sl-{}-{}-{role}", std::process::id(), next_id());
        ip(&["netns", "add", &name])?;
        // From here on Drop removes it, even if the set-up below fails.
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.set_ipv6(false)?;
        Ok(ns)
    }

    /// The namespace's name (as in `ip netns list`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>`.
    ///
    /// # Errors
    /// The command fails; the error carries its stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.name).args(args);
        run(&mut cmd)
    }

    /// A command that runs `program` inside the namespace
    /// (`ip netns exec <ns> <program>`). `ip` execs the program, so the
    /// child's pid is the program's own and signals reach it directly.
    #[must_use]
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// A command that runs `program` in this network namespace only, with
    /// `nsenter --net`: unlike `ip netns exec` it keeps the host's mounts
    /// (notably the BPF filesystem at `/sys/fs/bpf`, for pinned maps). Also
    /// execs the program, so the child's pid is the program's own.
    #[must_use]
    pub fn nsenter_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Enables or disables IPv6 for every interface created afterwards and
    /// for the namespace as a whole.
    ///
    /// # Errors
    /// Entering the namespace or writing the sysctl fails.
    pub fn set_ipv6(&self, enabled: bool) -> Result<()> {
        let value = if enabled { "0" } else { "1" };
        self.run_in(|| {
            for key in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6");
                std::fs::write(&path, value).map_err(|source| LabError::Sys {
                    call: format!("write {path}"),
                    source,
                })?;
            }
            Ok(())
        })?
    }

    /// Runs `f` on a fresh thread that has entered this namespace and returns
    /// its result. Sockets opened by `f` belong to the namespace for their
    /// whole life, whichever thread uses them later.
    ///
    /// # Errors
    /// The namespace cannot be opened or entered.
    ///
    /// # Panics
    /// Re-raises a panic of `f`.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.open_fd()?;
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: fd is a valid namespace fd; setns affects only this
                // thread, which ends when `f` returns.
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(LabError::last_os("setns(CLONE_NEWNET)"));
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn open_fd(&self) -> Result<OwnedFd> {
        let path = format!("/run/netns/{}", self.name);
        std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|source| LabError::Sys {
                call: format!("open {path}"),
                source,
            })
    }

    /// Brings an interface up.
    ///
    /// # Errors
    /// `ip link set` fails.
    pub fn link_up(&self, ifname: &str) -> Result<()> {
        self.ip(&["link", "set", "dev", ifname, "up"]).map(drop)
    }

    /// Adds an address (`10.0.0.1/24`, `fd00::1/64`) to an interface.
    ///
    /// # Errors
    /// `ip addr add` fails.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", ifname]).map(drop)
    }

    /// The MAC address of an interface.
    ///
    /// # Errors
    /// The interface does not exist or has no parseable MAC.
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6]> {
        let out = self.ip(&["-o", "link", "show", "dev", ifname])?;
        let text = out
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .ok_or_else(|| LabError::Frame {
                reason: format!("{ifname} has no link/ether address: {out}"),
            })?;
        parse_mac(text).ok_or_else(|| LabError::Frame {
            reason: format!("bad MAC {text:?} on {ifname}"),
        })
    }

    /// Index of an interface inside this namespace.
    ///
    /// # Errors
    /// The interface does not exist.
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let c = CString::new(ifname).map_err(|_| LabError::Frame {
            reason: format!("interface name {ifname:?} contains NUL"),
        })?;
        self.run_in(move || {
            // SAFETY: c is a valid NUL-terminated string.
            let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if idx == 0 {
                Err(LabError::last_os(format!("if_nametoindex({ifname})")))
            } else {
                Ok(idx)
            }
        })?
    }

    /// True when an XDP program is attached to `ifname` (any mode).
    ///
    /// # Errors
    /// `ip link show` fails.
    pub fn has_xdp(&self, ifname: &str) -> Result<bool> {
        let out = self.ip(&["-d", "link", "show", "dev", ifname])?;
        Ok(out.contains("prog/xdp") || out.contains(" xdp"))
    }

    /// Reads one counter of `/sys/class/net/<ifname>/statistics`.
    ///
    /// # Errors
    /// The interface or counter does not exist.
    pub fn link_stat(&self, ifname: &str, stat: &str) -> Result<u64> {
        let v = self.ip_json(&["-s", "-j", "link", "show", "dev", ifname])?;
        let (dir, key) = stat.split_once('_').unwrap_or(("rx", stat));
        Ok(v[0]["stats64"][dir][key].as_u64().unwrap_or(0))
    }

    /// Runs `ip <args>` (a `-j` command) in this namespace and parses its
    /// JSON output.
    ///
    /// # Errors
    /// `ip` fails or prints something that is not JSON.
    pub fn ip_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = self.ip(args)?;
        serde_json::from_str(&out).map_err(|source| LabError::Parse {
            path: format!("ip {}", args.join(" ")).into(),
            line: 1,
            source,
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "warning: cannot remove network namespace {}: {e}",
                self.name
            );
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
#[must_use]
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The two ends of a veth pair: `a` lives in one namespace, `b` in another.
/// Both disappear with either namespace.
#[derive(Debug, Clone)]
pub struct VethPair {
    pub a: String,
    pub b: String,
}

impl VethPair {
    /// Creates a veth pair with end `a` in `ns_a` and end `b` in `ns_b`, both
    /// up. Names are `v<pid>x<n>a` / `…b`, at most 15 characters.
    ///
    /// # Errors
    /// `ip link add` or `ip link set up` fails.
    pub fn new(ns_a: &Netns, ns_b: &Netns) -> Result<Self> {
        let base = format!(
            "v{}x{}",
            std::process::id() % 10_000_000,
            next_id() % 100_000
        );
        let pair = Self {
            a: format!("{base}a"),
            b: format!("{base}b"),
        };
        debug_assert!(pair.a.len() <= IFNAME_MAX);
        ip(&[
            "link", "add", "name", &pair.a, "netns", &ns_a.name, "type", "veth", "peer", "name",
            &pair.b, "netns", &ns_b.name,
        ])?;
        ns_a.link_up(&pair.a)?;
        ns_b.link_up(&pair.b)?;
        Ok(pair)
    }
}

/// The standard test topology: a sender namespace whose veth end the
/// generator writes to, and a gateway namespace whose end (`link.b`) receives
/// those frames and is where the sensor attaches XDP. No addresses, no IPv6:
/// the only frames on the link are the generator's.
#[derive(Debug)]
pub struct Lab {
    pub link: VethPair,
    /// MAC of the gateway end, the destination of generated frames.
    pub gateway_mac: [u8; 6],
    /// MAC of the sender end, the source of generated frames.
    pub sender_mac: [u8; 6],
    // Field order matters: namespaces are removed after the fields above.
    pub sender: Netns,
    pub gateway: Netns,
}

impl Lab {
    /// Builds the sender → gateway topology.
    ///
    /// # Errors
    /// Any `ip` command fails (typically: not root).
    pub fn sender_gateway() -> Result<Self> {
        let sender = Netns::new("snd")?;
        let gateway = Netns::new("gw")?;
        let link = VethPair::new(&sender, &gateway)?;
        // veth defaults to noqueue; a FIFO on the sender end lets the kernel
        // push back (ENOBUFS to the generator, which retries) instead of
        // silently dropping when the receiver's XDP ring is full.
        sender.ip(&["link", "set", "dev", &link.a, "txqueuelen", "10000"])?;
        run(Command::new("ip").args([
            "netns",
            "exec",
            &sender.name,
            "tc",
            "qdisc",
            "replace",
            "dev",
            &link.a,
            "root",
            "pfifo",
            "limit",
            "10000",
        ]))
        .or_else(|e| match e {
            // tc missing is not fatal: the generator still works, with less
            // back-pressure.
            LabError::Spawn { .. } => Ok(String::new()),
            other => Err(other),
        })?;
        Ok(Self {
            gateway_mac: gateway.mac(&link.b)?,
            sender_mac: sender.mac(&link.a)?,
            link,
            sender,
            gateway,
        })
    }
}
