//! Drives `sensor collect` with a real flow exporter beside it: softflowd
//! watches an interface of a namespace and exports IPFIX to the collector
//! on that namespace's loopback. The flow path's counterpart of
//! [`crate::sensor::SensorRun`], for the evaluation's `--source flows`.
//!
//! softflowd exports a flow when it expires; the run sets its timeouts to
//! [`FLOW_TIMEOUT_S`] (idle and maximum life) and checks expiry every
//! second, so records trail the packets by a few seconds, and the stop
//! expires every flow (`softflowctl expire-all`) before the collector
//! stops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use sensor_common::records::CollectStats;

use crate::error::{LabError, Result};
use crate::netns::Netns;

/// The collector's port on the namespace's loopback.
pub const COLLECT_PORT: u16 = 2055;
/// softflowd's idle timeouts and maximum flow life (s): a flow's record
/// leaves at most this long (plus the 1-s expiry check) after its packets.
pub const FLOW_TIMEOUT_S: u32 = 2;
/// The interface index softflowd reports for the watched interface.
pub const EXPORTER_IF_INDEX: u32 = 1;

/// What `sensor collect` wrote.
#[derive(Debug, Clone)]
pub struct CollectOutput {
    pub status: ExitStatus,
    pub stats: CollectStats,
    pub stderr: String,
}

/// A running collector and its exporter. Both are stopped on drop.
#[derive(Debug)]
pub struct CollectRun {
    collector: Option<Child>,
    exporter: Option<Child>,
    ns: String,
    dir: PathBuf,
}

impl CollectRun {
    pub const STATS: &'static str = "collect-stats.json";
    pub const STDERR: &'static str = "collect.stderr";
    const CTL: &'static str = "softflowd.ctl";

    /// Starts `<bin> collect --listen 127.0.0.1:COLLECT_PORT --stats-out …
    /// <extra>` in `ns`, waits until it listens, then softflowd on `iface`,
    /// and waits until softflowd answers on its control socket.
    ///
    /// # Errors
    /// A process cannot start, or does not get ready within 30 s.
    pub fn start(ns: &Netns, bin: &Path, iface: &str, dir: &Path, extra: &[&str]) -> Result<Self> {
        ns.ip(&["link", "set", "lo", "up"])?;
        let file = |name: &str| {
            std::fs::File::create(dir.join(name)).map_err(|source| LabError::Sys {
                call: format!("create {}", dir.join(name).display()),
                source,
            })
        };
        let mut cmd = ns.command(bin);
        cmd.args(["collect", "--listen", &format!("127.0.0.1:{COLLECT_PORT}")])
            .arg("--stats-out")
            .arg(dir.join(Self::STATS))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file(Self::STDERR)?);
        let collector = cmd.spawn().map_err(|source| LabError::Spawn {
            command: crate::netns::describe(&cmd),
            source,
        })?;
        let mut run = Self {
            collector: Some(collector),
            exporter: None,
            ns: ns.name().to_owned(),
            dir: dir.to_owned(),
        };
        run.wait_for("sensor collect to listen", || {
            Ok(run_stderr(dir).contains("collecting flow records on udp"))
        })?;
        let t = FLOW_TIMEOUT_S.to_string();
        let mut sf = ns.command("softflowd");
        sf.args(["-d", "-N", "-C", "128", "-m", "65536", "-v", "10"])
            .args(["-i", &format!("{EXPORTER_IF_INDEX}:{iface}")])
            .args(["-n", &format!("127.0.0.1:{COLLECT_PORT}")])
            .args(["-t", &format!("maxlife={t}"), "-t", "expint=1"])
            .args(["-t", &format!("tcp={t}"), "-t", &format!("tcp.rst={t}")])
            .args(["-t", &format!("tcp.fin={t}"), "-t", &format!("udp={t}")])
            .args(["-t", &format!("icmp={t}"), "-t", &format!("general={t}")])
            .arg("-c")
            .arg(dir.join(Self::CTL))
            .arg("-p")
            .arg(dir.join("softflowd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file("softflowd.stderr")?);
        let exporter = sf.spawn().map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => LabError::MissingTool {
                tool: "softflowd".into(),
                package: "softflowd".into(),
            },
            _ => LabError::Spawn {
                command: crate::netns::describe(&sf),
                source,
            },
        })?;
        run.exporter = Some(exporter);
        run.wait_for("softflowd's control socket", || {
            Ok(run.ctl("statistics").is_ok())
        })?;
        Ok(run)
    }

    fn wait_for(&self, what: &str, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
        let start = Instant::now();
        while !ready()? {
            if start.elapsed() > Duration::from_secs(30) {
                return Err(LabError::Timeout {
                    what: format!("{what} (stderr: {})", run_stderr(&self.dir)),
                    seconds: start.elapsed().as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Runs `softflowctl -c CTL <command>` in the namespace.
    fn ctl(&self, command: &str) -> Result<String> {
        crate::netns::run(
            Command::new("ip")
                .args(["netns", "exec", &self.ns, "softflowctl", "-c"])
                .arg(self.dir.join(Self::CTL))
                .arg(command),
        )
    }

    /// Expires every flow softflowd holds (so their records go out), stops
    /// softflowd, then stops the collector with SIGINT and reads its
    /// statistics.
    ///
    /// # Errors
    /// The collector does not stop within `timeout`, or its output is
    /// unreadable.
    pub fn stop(mut self, timeout: Duration) -> Result<CollectOutput> {
        let _ = self.ctl("expire-all");
        std::thread::sleep(Duration::from_millis(500));
        if let Some(c) = self.exporter.take() {
            stop_child(c, Duration::from_secs(5));
        }
        let c = self.collector.take().expect("collector running");
        let status = stop_child(c, timeout).ok_or_else(|| LabError::Timeout {
            what: "sensor collect to stop".into(),
            seconds: timeout.as_secs_f64(),
        })?;
        let stderr = run_stderr(&self.dir);
        let path = self.dir.join(Self::STATS);
        let text = std::fs::read_to_string(&path).map_err(|source| LabError::Read {
            path: path.clone(),
            source,
        })?;
        let stats = serde_json::from_str(&text).map_err(|source| LabError::Parse {
            path,
            line: 1,
            source,
        })?;
        Ok(CollectOutput {
            status,
            stats,
            stderr,
        })
    }
}

fn run_stderr(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(CollectRun::STDERR)).unwrap_or_default()
}

/// SIGINT, then up to `timeout` for the exit, then SIGKILL. The exit
/// status, unless it had to be killed.
fn stop_child(mut c: Child, timeout: Duration) -> Option<ExitStatus> {
    if let Ok(pid) = i32::try_from(c.id()) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(status)) = c.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

impl Drop for CollectRun {
    fn drop(&mut self) {
        for c in [self.exporter.take(), self.collector.take()]
            .into_iter()
            .flatten()
        {
            stop_child(c, Duration::from_secs(5));
        }
    }
}
