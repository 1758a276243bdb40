//! Drives the real `sensor` binary inside a namespace: start it, wait until
//! its XDP program is attached, stop it with SIGINT like an operator would,
//! and parse the files it writes on exit.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The sensor's output records, defined once for the sensor that writes
/// them and the lab that reads them.
pub use sensor_common::records::{
    CmsParams, FlowRecord, SketchReport, SourceEstimate, StatsReport, WorkerStats,
};

use crate::error::{LabError, Result};
use crate::netns::Netns;

/// A directory under the system temp dir, removed on drop unless the thread
/// is panicking (then it is kept and its path printed, for post-mortems).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/sensor-lab-<pid>-<n>-<tag>`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn new(tag: &str) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sensor-lab-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).map_err(|source| LabError::Sys {
            call: format!("mkdir {}", path.display()),
            source,
        })?;
        Ok(Self { path })
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("sensor output kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Everything the sensor wrote.
#[derive(Clone, Debug)]
pub struct SensorOutput {
    pub status: ExitStatus,
    pub flows: Vec<FlowRecord>,
    pub stats: StatsReport,
    pub sketch: SketchReport,
    pub stderr: String,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| LabError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, line: usize, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| LabError::Parse {
        path: path.to_owned(),
        line,
        source,
    })
}

/// Parses a `--flows-out` file (JSON lines).
///
/// # Errors
/// Unreadable file or a line that is not a flow object.
pub fn read_flows(path: &Path) -> Result<Vec<FlowRecord>> {
    read(path)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse(path, i + 1, l))
        .collect()
}

/// Parses a `--stats-out` file.
///
/// # Errors
/// Unreadable or malformed file.
pub fn read_stats(path: &Path) -> Result<StatsReport> {
    parse(path, 1, &read(path)?)
}

/// Parses a `--sketch-out` file.
///
/// # Errors
/// Unreadable or malformed file.
pub fn read_sketch(path: &Path) -> Result<SketchReport> {
    parse(path, 1, &read(path)?)
}

/// A running sensor inside a namespace. Killed on drop if still running.
#[derive(Debug)]
pub struct SensorRun {
    child: Option<Child>,
    iface: String,
    dir: PathBuf,
}

impl SensorRun {
    /// Output file names inside the output directory.
    pub const FLOWS: &'static str = "flows.jsonl";
    pub const STATS: &'static str = "stats.json";
    pub const SKETCH: &'static str = "sketch.json";
    pub const STDERR: &'static str = "sensor.stderr";

    /// Starts `<bin> run --iface <iface> --flows-out … --stats-out …
    /// --sketch-out … <extra>` inside `ns`, writing into `dir`.
    ///
    /// # Errors
    /// The process cannot be started.
    pub fn start(ns: &Netns, bin: &Path, iface: &str, dir: &Path, extra: &[&str]) -> Result<Self> {
        Self::start_with(ns.command(bin), iface, dir, extra)
    }

    /// Like [`SensorRun::start`], but entered with `nsenter --net`, which
    /// keeps the host's `/sys/fs/bpf` so the sensor can pin its counters
    /// for `sensor stats`.
    ///
    /// # Errors
    /// The process cannot be started.
    pub fn start_nsenter(
        ns: &Netns,
        bin: &Path,
        iface: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Result<Self> {
        Self::start_with(ns.nsenter_command(bin), iface, dir, extra)
    }

    /// Like [`SensorRun::start_nsenter`], with `RUST_LOG` set to `filter`
    /// (e.g. `info`), for tests that read what the sensor logs.
    ///
    /// # Errors
    /// The process cannot be started.
    pub fn start_nsenter_logging(
        ns: &Netns,
        bin: &Path,
        iface: &str,
        dir: &Path,
        extra: &[&str],
        filter: &str,
    ) -> Result<Self> {
        let mut cmd = ns.nsenter_command(bin);
        cmd.env("RUST_LOG", filter);
        Self::start_with(cmd, iface, dir, extra)
    }

    /// Waits until the sensor's stderr contains `needle` (a log line).
    ///
    /// # Errors
    /// The sensor exits first (its stderr is in the error) or `timeout`
    /// passes.
    pub fn wait_logged(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.stderr().contains(needle) {
                return Ok(());
            }
            self.fail_if_exited()?;
            if start.elapsed() > timeout {
                return Err(LabError::Timeout {
                    what: format!("the sensor to log `{needle}` (stderr: {})", self.stderr()),
                    seconds: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_with(
        mut cmd: std::process::Command,
        iface: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Result<Self> {
        let stderr =
            std::fs::File::create(dir.join(Self::STDERR)).map_err(|source| LabError::Sys {
                call: format!("create {}", dir.join(Self::STDERR).display()),
                source,
            })?;
        cmd.arg("run")
            .args(["--iface", iface])
            .arg("--flows-out")
            .arg(dir.join(Self::FLOWS))
            .arg("--stats-out")
            .arg(dir.join(Self::STATS))
            .arg("--sketch-out")
            .arg(dir.join(Self::SKETCH))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: crate::netns::describe(&cmd),
            source,
        })?;
        Ok(Self {
            child: Some(child),
            iface: iface.to_owned(),
            dir: dir.to_owned(),
        })
    }

    /// The sensor's process id while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the sensor printed to stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join(Self::STDERR)).unwrap_or_default()
    }

    /// An error carrying the sensor's stderr when it has exited.
    fn fail_if_exited(&mut self) -> Result<()> {
        let exited = self
            .child_mut()
            .try_wait()
            .map_err(|source| LabError::Sys {
                call: "waitpid(sensor)".into(),
                source,
            })?;
        match exited {
            Some(status) => Err(LabError::Command {
                command: format!("sensor run --iface {}", self.iface),
                status,
                stderr: self.stderr(),
            }),
            None => Ok(()),
        }
    }

    /// Waits until an XDP program is attached to the interface, then
    /// `settle` more (workers start polling their rings).
    ///
    /// # Errors
    /// The sensor exits first (its stderr is in the error) or `timeout` passes.
    pub fn wait_attached(&mut self, ns: &Netns, timeout: Duration, settle: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            self.fail_if_exited()?;
            if ns.has_xdp(&self.iface)? {
                std::thread::sleep(settle);
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(LabError::Timeout {
                    what: format!(
                        "the sensor to attach XDP to {} (stderr: {})",
                        self.iface,
                        self.stderr()
                    ),
                    seconds: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Self::wait_attached`] with the timings of the network tests: 20 s
    /// to attach on a loaded 2-core machine, then 300 ms for the workers.
    ///
    /// # Errors
    /// As [`Self::wait_attached`].
    pub fn wait_ready(&mut self, ns: &Netns) -> Result<()> {
        self.wait_attached(ns, Duration::from_secs(20), Duration::from_millis(300))
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until stop")
    }

    /// Sends `signal` to the running sensor.
    pub fn signal(&mut self, signal: libc::c_int) {
        let child = self.child.as_mut().expect("child present until stop");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, signal) };
    }

    /// True while the sensor process has not exited.
    ///
    /// # Errors
    /// `waitpid` failed.
    pub fn is_running(&mut self) -> Result<bool> {
        let child = self.child.as_mut().expect("child present until stop");
        let waited = child.try_wait().map_err(|source| LabError::Sys {
            call: "waitpid(sensor)".into(),
            source,
        })?;
        Ok(waited.is_none())
    }

    /// Sends SIGINT and waits up to `timeout` for the sensor to exit.
    ///
    /// # Errors
    /// The sensor does not exit in time (it is then killed).
    pub fn interrupt(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGINT);
        let child = self.child.as_mut().expect("child present until stop");
        let start = Instant::now();
        loop {
            let waited = child.try_wait().map_err(|source| LabError::Sys {
                call: "waitpid(sensor)".into(),
                source,
            })?;
            if let Some(status) = waited {
                self.child = None;
                return Ok(status);
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return Err(LabError::Timeout {
                    what: format!(
                        "the sensor to exit after SIGINT (stderr: {})",
                        self.stderr()
                    ),
                    seconds: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the sensor with SIGINT and reads its output files.
    ///
    /// # Errors
    /// The sensor does not exit in time, exits non-zero, or wrote malformed
    /// output.
    pub fn stop(mut self, timeout: Duration) -> Result<SensorOutput> {
        let status = self.interrupt(timeout)?;
        let stderr = self.stderr();
        if !status.success() {
            return Err(LabError::Command {
                command: format!("sensor run --iface {}", self.iface),
                status,
                stderr,
            });
        }
        Ok(SensorOutput {
            status,
            flows: read_flows(&self.dir.join(Self::FLOWS))?,
            stats: read_stats(&self.dir.join(Self::STATS))?,
            sketch: read_sketch(&self.dir.join(Self::SKETCH))?,
            stderr,
        })
    }
}

impl Drop for SensorRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The pin directory a sensor on `iface` in `ns` uses in the host's BPF
/// filesystem (`/sys/fs/bpf/xdp-sensor/net<netns inode>-if<ifindex>`),
/// removed when the guard drops: a killed sensor, or one stopped with
/// `--keep-state`, leaves its program attached and its maps pinned there,
/// and the pins outlive the test's namespaces.
pub struct PinsGuard(PathBuf);

impl PinsGuard {
    /// The guard of `iface` in `ns`.
    ///
    /// # Errors
    /// The namespace or the interface cannot be examined.
    pub fn of(ns: &Netns, iface: &str) -> Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let netns = ns
            .run_in(|| std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()))?
            .map_err(|source| LabError::Sys {
                call: format!("stat the network namespace of {}", ns.name()),
                source,
            })?;
        let ifindex = ns.ifindex(iface)?;
        Ok(Self(
            Path::new("/sys/fs/bpf/xdp-sensor").join(format!("net{netns}-if{ifindex}")),
        ))
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinsGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serialises lab scenarios within one process: each one measures exact
/// counts and rates, which parallel scenarios on two cores would disturb.
/// (Across test binaries, nextest's `netns` test group does the same.)
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a root network test stands on: a fresh sender → gateway lab, held
/// under the [`exclusive`] lock. Fields drop in order, so the lab is removed
/// before the next test may start.
pub struct NetTest {
    pub lab: crate::Lab,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// The start of every root network test: `None` (after the loud skip of
/// [`crate::require_root`]) without root, else the lock and a new lab.
///
/// # Panics
/// The lab cannot be built (the message says which command failed).
#[must_use]
pub fn net_test(test_name: &str) -> Option<NetTest> {
    if !crate::require_root(test_name) {
        return None;
    }
    let serial = exclusive();
    let lab = crate::Lab::sender_gateway().expect("building the sender/gateway lab");
    Some(NetTest {
        lab,
        _serial: serial,
    })
}

/// `sensor run` arguments for a scenario that checks accounting only: no
/// models, and a duration no scenario reaches (SIGINT stops the sensor).
pub const OBSERVE: &[&str] = &["--duration", "60", "--no-score"];

impl NetTest {
    /// An empty frame set from this lab's sender to its gateway.
    pub fn frames(&self) -> crate::generator::Frames {
        crate::generator::Frames::new(self.lab.sender_mac, self.lab.gateway_mac)
    }

    /// [`crate::generator::Frames::spread`] from this lab's sender to its
    /// gateway.
    ///
    /// # Panics
    /// The frames cannot be built.
    pub fn spread(
        &self,
        flows: &[crate::generator::FlowSpec],
        packets: u64,
    ) -> crate::generator::Frames {
        crate::generator::Frames::spread(self.lab.sender_mac, self.lab.gateway_mac, flows, packets)
            .expect("spread frames")
    }

    /// [`crate::generator::Frames::syn_flood`] from this lab's sender.
    ///
    /// # Panics
    /// The frames cannot be built.
    pub fn syn_flood(
        &self,
        sources: u32,
        dst: std::net::IpAddr,
        dport: u16,
        packets: u64,
    ) -> crate::generator::Frames {
        let (src_mac, dst_mac) = (self.lab.sender_mac, self.lab.gateway_mac);
        crate::generator::Frames::syn_flood(src_mac, dst_mac, sources, dst, dport, packets)
            .expect("flood frames")
    }

    /// [`crate::generator::Frames::port_scan`] from this lab's sender.
    ///
    /// # Panics
    /// The frames cannot be built.
    pub fn port_scan(
        &self,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        ports: std::ops::RangeInclusive<u16>,
    ) -> crate::generator::Frames {
        let (src_mac, dst_mac) = (self.lab.sender_mac, self.lab.gateway_mac);
        crate::generator::Frames::port_scan(src_mac, dst_mac, src, dst, ports).expect("scan frames")
    }

    /// [`scenario`] on this test's lab, with nothing to do once the frames
    /// are sent.
    ///
    /// # Panics
    /// Any step fails (the message carries the sensor's stderr where
    /// relevant).
    #[must_use]
    pub fn scenario(
        &self,
        bin: &str,
        extra: &[&str],
        frames: &crate::generator::Frames,
        pacing: crate::generator::Pacing,
    ) -> ScenarioResult {
        scenario(&self.lab, Path::new(bin), extra, frames, pacing, || Ok(()))
            .unwrap_or_else(|e| panic!("scenario: {e}"))
    }
}

/// The result of [`scenario`].
#[derive(Debug)]
pub struct ScenarioResult {
    pub report: crate::generator::SendReport,
    /// Ground truth of the frames actually sent.
    pub truth: crate::generator::Truth,
    pub output: SensorOutput,
}

/// The standard network-test scenario: start the sensor (`bin`, with
/// `extra` arguments) on the gateway end of `lab`, wait for its XDP program,
/// send `frames` from the sender end with `pacing`, let the last events
/// drain, stop the sensor with SIGINT and return what it wrote alongside the
/// ground truth.
///
/// # Errors
/// Any step fails; errors carry the sensor's stderr where relevant.
pub fn scenario(
    lab: &crate::Lab,
    bin: &Path,
    extra: &[&str],
    frames: &crate::generator::Frames,
    pacing: crate::generator::Pacing,
    on_sent: impl FnOnce() -> Result<()>,
) -> Result<ScenarioResult> {
    let dir = TempDir::new("scenario")?;
    let mut run = SensorRun::start(&lab.gateway, bin, &lab.link.b, dir.path(), extra)?;
    run.wait_ready(&lab.gateway)?;
    let sender = crate::generator::Sender::open(&lab.sender, &lab.link.a)?;
    let report = sender.send(frames, pacing)?;
    std::thread::sleep(Duration::from_millis(300));
    on_sent()?;
    let output = run.stop(Duration::from_secs(15))?;
    Ok(ScenarioResult {
        truth: frames.truth(report.sent),
        report,
        output,
    })
}
