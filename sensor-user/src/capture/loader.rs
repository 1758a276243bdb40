//! Loads the XDP object, sizes its maps, writes the runtime configuration and
//! attaches the program to one interface. Detaching happens explicitly in
//! [`Sensor::detach`] or, at the latest, when the [`Sensor`] is dropped (aya
//! detaches owned links on drop), so a crash never leaves the program behind.

use std::{ffi::CString, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, RingBuf},
    programs::{ProgramError, Xdp, XdpMode, xdp::XdpLinkId},
};
use sensor_common::{MAX_WORKERS, SensorConfig, XDP_PROGRAM_NAME, map_names};
use tracing::{debug, info, warn};

use crate::capture::{
    error::{SensorError, find_errno},
    pins::{Liveness, PinDir},
};

/// Default `FLOW_TABLE` capacity (per CPU: it is an LRU per-CPU hash).
pub(crate) const DEFAULT_FLOW_TABLE_SIZE: u32 = 65_536;
/// Default size of each ring in use: at 128 bytes per event (plus an 8-byte
/// header) it buffers ~30k events, tens of milliseconds at 0.5 Mpps of new
/// flows.
pub(crate) const DEFAULT_RING_BYTES: u32 = 4 << 20;
/// Size of the rings no worker reads: the kernel needs a valid size, and a
/// page wastes nothing.
pub(crate) const UNUSED_RING_BYTES: u32 = 4096;
/// Largest ring a worker may ask for: 1 GiB holds seconds of events at any
/// rate a worker can drain; more only hides a stuck worker.
pub(crate) const MAX_RING_BYTES: u32 = 1 << 30;
/// The sensor's maps (rings and flow table) may take at most this fraction
/// (1/n) of physical memory: the gateway needs the rest to forward.
const MEMORY_SHARE_DIVISOR: u64 = 4;
/// Bytes one `FLOW_TABLE` entry costs per CPU (its value) and once (key and
/// the kernel's hash-table element overhead, rounded up).
const FLOW_VALUE_BYTES: u64 = size_of::<sensor_common::FlowStats>() as u64;
const FLOW_ENTRY_BYTES: u64 = size_of::<sensor_common::FlowKey>() as u64 + 64;
/// Under ring pressure, one new-flow event in `2^SAMPLE_SHIFT` is exported.
pub(crate) const DEFAULT_SAMPLE_SHIFT: u32 = 3;

/// How the program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`): fastest; needs driver support.
    #[default]
    Native,
    /// Generic XDP in the network stack (`XDP_FLAGS_SKB_MODE`): works on any
    /// interface, slower.
    Skb,
}

impl AttachMode {
    /// Name as given on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        }
    }

    const fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// What to load and where to attach it.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub iface: String,
    pub mode: AttachMode,
    /// Mirror/SPAN port: drop after observing.
    pub mirror: bool,
    /// Worker rings in use, `1..=MAX_WORKERS`.
    pub n_workers: u32,
    /// `FLOW_TABLE` max entries.
    pub flow_table_size: u32,
    /// Bytes of each ring in use: a power of two, at least a page.
    pub ring_bytes: u32,
    /// Destination sketch prefix lengths (`SensorConfig::dst_prefix`).
    pub dst_prefix: [u8; 4],
}

impl LoadOptions {
    /// Rejects values the kernel would refuse with an opaque `EINVAL`.
    ///
    /// # Errors
    /// [`SensorError::InvalidConfig`] naming the option and the rule.
    pub fn validate(&self) -> Result<(), SensorError> {
        if self.n_workers == 0 || self.n_workers as usize > MAX_WORKERS {
            return Err(SensorError::InvalidConfig {
                what: "--workers",
                reason: format!("{} is not in 1..={MAX_WORKERS}", self.n_workers),
            });
        }
        if self.flow_table_size == 0 {
            return Err(SensorError::InvalidConfig {
                what: "--flow-table-size",
                reason: "must be at least 1".into(),
            });
        }
        let page = page_size();
        if !self.ring_bytes.is_power_of_two()
            || (self.ring_bytes as usize) < page
            || self.ring_bytes > MAX_RING_BYTES
        {
            return Err(SensorError::InvalidConfig {
                what: "--ring-bytes",
                reason: format!(
                    "{} must be a power of two from the page size ({page}) to {MAX_RING_BYTES}",
                    self.ring_bytes
                ),
            });
        }
        // Per-CPU maps hold a value for every possible CPU, not only the
        // ones this process may run on.
        let cpus = aya::util::nr_cpus().map_or(1, |n| n as u64);
        self.check_memory(physical_memory(), cpus)
    }

    /// Rejects rings and a flow table that together would take more than
    /// 1/[`MEMORY_SHARE_DIVISOR`] of `memory` bytes on `cpus` CPUs.
    fn check_memory(&self, memory: Option<u64>, cpus: u64) -> Result<(), SensorError> {
        let Some(memory) = memory else {
            return Ok(());
        };
        let budget = memory / MEMORY_SHARE_DIVISOR;
        let rings = u64::from(self.n_workers) * u64::from(self.ring_bytes);
        let table = u64::from(self.flow_table_size) * (cpus * FLOW_VALUE_BYTES + FLOW_ENTRY_BYTES);
        if rings + table <= budget {
            return Ok(());
        }
        let mib = |b: u64| b >> 20;
        let (what, part) = if rings > table {
            ("--ring-bytes", rings)
        } else {
            ("--flow-table-size", table)
        };
        Err(SensorError::InvalidConfig {
            what,
            reason: format!(
                "rings ({} MiB) and flow table ({} MiB) would take {} MiB, more than 1/{MEMORY_SHARE_DIVISOR} of this machine's {} MiB ({what} alone: {} MiB)",
                mib(rings),
                mib(table),
                mib(rings + table),
                mib(memory),
                mib(part)
            ),
        })
    }
}

/// Physical memory in bytes, if the system says.
fn physical_memory() -> Option<u64> {
    let pages = nix::unistd::sysconf(nix::unistd::SysconfVar::_PHYS_PAGES).ok()??;
    u64::try_from(pages).ok().map(|p| p * page_size() as u64)
}

/// The page size, which ring sizes must be a multiple of.
#[must_use]
pub(crate) fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(4096)
}

/// The interface index, or `None` when no such interface exists.
#[must_use]
pub(crate) fn if_index(iface: &str) -> Option<u32> {
    let name = CString::new(iface).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// A loaded (and, after [`Sensor::attach`], attached) XDP sensor.
pub struct Sensor {
    ebpf: Ebpf,
    opts: LoadOptions,
    if_index: u32,
    link: Option<XdpLinkId>,
    /// The pin directory this sensor holds, removed on detach.
    pins: Option<PinDir>,
}

impl Sensor {
    /// Loads the object with sized maps, writes `SENSOR_CONFIG` and loads the
    /// program into the kernel. Nothing is attached yet, so the caller can
    /// start consumers first and lose no event.
    ///
    /// # Errors
    /// Bad options, unknown interface, missing privileges, verifier
    /// rejection, or an object without the expected maps.
    pub fn load(opts: LoadOptions) -> Result<Self, SensorError> {
        opts.validate()?;
        let if_index = if_index(&opts.iface).ok_or_else(|| SensorError::NoSuchInterface {
            iface: opts.iface.clone(),
        })?;
        raise_memlock_limit();

        let mut loader = EbpfLoader::new();
        loader.map_max_entries(map_names::FLOW_TABLE, opts.flow_table_size);
        for (i, name) in map_names::RING_WORKERS.iter().enumerate() {
            let bytes = if i < opts.n_workers as usize {
                opts.ring_bytes
            } else {
                UNUSED_RING_BYTES.max(u32::try_from(page_size()).unwrap_or(UNUSED_RING_BYTES))
            };
            loader.map_max_entries(name, bytes);
        }
        let mut ebpf = loader.load(crate::capture::XDP_OBJECT).map_err(|source| {
            if find_errno(&source) == Some(libc::EPERM) {
                SensorError::PermissionDenied {
                    source: Box::new(source),
                }
            } else {
                SensorError::Load {
                    source: Box::new(source),
                }
            }
        })?;

        let config = SensorConfig {
            epoch: 0,
            n_workers: opts.n_workers,
            mirror: u32::from(opts.mirror),
            ring_bytes: opts.ring_bytes,
            sample_shift: DEFAULT_SAMPLE_SHIFT,
            dst_prefix: opts.dst_prefix,
        };
        {
            let map = ebpf
                .map_mut(map_names::SENSOR_CONFIG)
                .ok_or(SensorError::MissingMap {
                    name: map_names::SENSOR_CONFIG,
                })?;
            let mut cfg: Array<&mut MapData, SensorConfig> =
                Array::try_from(map).map_err(|source| SensorError::MapType {
                    name: map_names::SENSOR_CONFIG,
                    source: Box::new(source),
                })?;
            cfg.set(0, config, 0)
                .map_err(|source| SensorError::MapAccess {
                    name: map_names::SENSOR_CONFIG,
                    op: "writing",
                    source: Box::new(source),
                })?;
        }

        let prog = xdp_program(&mut ebpf)?;
        prog.load().map_err(|source| {
            if find_errno(&source) == Some(libc::EPERM) {
                SensorError::PermissionDenied {
                    source: Box::new(source),
                }
            } else {
                SensorError::Program {
                    name: XDP_PROGRAM_NAME,
                    source: Box::new(source),
                }
            }
        })?;
        debug!(?config, "XDP program loaded");
        Ok(Self {
            ebpf,
            opts,
            if_index,
            link: None,
            pins: None,
        })
    }

    /// Attaches the loaded program to the interface, then pins its counters
    /// with a liveness record for `sensor stats` (see [`crate::capture::pins`]).
    /// Pins a dead sensor left for this interface are removed first.
    ///
    /// # Errors
    /// A live sensor already holds the interface's pins, native mode
    /// unsupported (with the `--mode skb` hint), an XDP program already
    /// attached, or another attach failure.
    pub fn attach(&mut self) -> Result<(), SensorError> {
        let mode = self.opts.mode;
        let iface = self.opts.iface.clone();
        let if_index = self.if_index;
        let pins = self.claim_pins()?;
        let prog = xdp_program(&mut self.ebpf)?;
        let link = prog
            .attach_to_if_index(if_index, mode.xdp_mode())
            .map_err(|source| attach_error(&iface, mode, source))?;
        self.link = Some(link);
        info!(iface = %iface, mode = mode.name(), "XDP program attached");
        if let Some(pins) = pins {
            self.pin_counters(pins);
        }
        Ok(())
    }

    /// The pin directory of this interface in this network namespace, with
    /// a dead sensor's pins removed. `None` (the sensor runs unpinned, with
    /// a warning) when there is no BPF filesystem or the directory cannot be
    /// made. When `/sys/fs/bpf` is not a BPF filesystem (a host whose init
    /// does not mount it, or `ip netns exec`, which remounts `/sys`), mounts
    /// one there first, as bpftool does; it stays mounted for later runs and
    /// `sensor stats`.
    fn claim_pins(&self) -> Result<Option<PinDir>, SensorError> {
        if !ensure_bpffs(Path::new("/sys/fs/bpf")) {
            return Ok(None);
        }
        let claimed = PinDir::here(self.if_index).and_then(|dir| {
            dir.claim(&self.opts.iface)?;
            Ok(dir)
        });
        match claimed {
            Ok(dir) => Ok(Some(dir)),
            Err(e @ SensorError::AlreadyRunning { .. }) => Err(e),
            Err(e) => {
                warn!(error = %e, "could not prepare the pins; `sensor stats` will not see this run");
                Ok(None)
            }
        }
    }

    /// Writes the liveness record, then pins `GLOBAL_COUNTERS` (in that
    /// order: counters are never visible without a record). Best effort.
    fn pin_counters(&mut self, pins: PinDir) {
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            let prog_id = xdp_program(&mut self.ebpf)?.info()?.id();
            let netns = crate::capture::pins::current_netns()?;
            let record = Liveness::of_self(&self.opts.iface, self.if_index, prog_id, netns)?;
            pins.write_liveness(&record)?;
            self.map(map_names::GLOBAL_COUNTERS)?.pin(pins.counters())?;
            Ok(())
        })();
        match result {
            Ok(()) => debug!(dir = %pins.path().display(), "counters pinned"),
            Err(e) => {
                warn!(dir = %pins.path().display(), error = %e, "could not pin the counters; `sensor stats` will not see this run");
            }
        }
        // Also after a failure, so detach removes what was made.
        self.pins = Some(pins);
    }

    fn unpin_counters(&mut self) {
        if let Some(pins) = self.pins.take()
            && let Err(e) = pins.remove()
        {
            warn!(dir = %pins.path().display(), error = %e, "could not remove the counters pin");
        }
    }

    /// Detaches the program; packets then flow without it. Idempotent.
    pub(crate) fn detach(&mut self) {
        self.unpin_counters();
        let Some(link) = self.link.take() else {
            return;
        };
        match xdp_program(&mut self.ebpf) {
            Ok(prog) => match prog.detach(link) {
                Ok(()) => info!(iface = %self.opts.iface, "XDP program detached"),
                Err(e) => warn!(error = %e, "detaching the XDP program failed"),
            },
            Err(e) => warn!(error = %e, "detaching the XDP program failed"),
        }
    }

    /// The options the sensor was loaded with.
    #[must_use]
    pub fn options(&self) -> &LoadOptions {
        &self.opts
    }

    /// Runs the loaded program once per `repeat` on `frame` through
    /// `BPF_PROG_TEST_RUN`, without attaching: for tests and per-packet
    /// benchmarks that need the real maps. Returns the XDP verdict.
    ///
    /// # Errors
    /// The kernel refused the test run.
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> Result<u32, SensorError> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let prog = xdp_program(&mut self.ebpf)?;
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })
        .map(|r| r.return_value)
        .map_err(|source| SensorError::Program {
            name: XDP_PROGRAM_NAME,
            source: Box::new(source),
        })
    }

    /// Takes the rings in use (`RING_WORKER_0..n_workers`), in order, so each
    /// worker thread can own one.
    ///
    /// # Errors
    /// A ring is missing or is not a ring buffer.
    pub(crate) fn take_rings(&mut self) -> Result<Vec<RingBuf<MapData>>, SensorError> {
        let n = self.opts.n_workers as usize;
        map_names::RING_WORKERS[..n]
            .iter()
            .map(|&name| {
                let map = self.take_map(name)?;
                RingBuf::try_from(map).map_err(|source| SensorError::MapType {
                    name,
                    source: Box::new(source),
                })
            })
            .collect()
    }

    /// Takes ownership of a map (for a thread that needs it alone).
    ///
    /// # Errors
    /// [`SensorError::MissingMap`].
    pub(crate) fn take_map(&mut self, name: &'static str) -> Result<Map, SensorError> {
        self.ebpf
            .take_map(name)
            .ok_or(SensorError::MissingMap { name })
    }

    /// Borrows a map still held by the sensor.
    ///
    /// # Errors
    /// [`SensorError::MissingMap`].
    pub fn map(&self, name: &'static str) -> Result<&Map, SensorError> {
        self.ebpf.map(name).ok_or(SensorError::MissingMap { name })
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        self.detach();
    }
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, SensorError> {
    let prog = ebpf
        .program_mut(XDP_PROGRAM_NAME)
        .ok_or(SensorError::MissingProgram {
            name: XDP_PROGRAM_NAME,
        })?;
    prog.try_into().map_err(|source| SensorError::Program {
        name: XDP_PROGRAM_NAME,
        source: Box::new(source),
    })
}

/// Turns an attach failure into the diagnosis a user can act on.
fn attach_error(iface: &str, mode: AttachMode, source: ProgramError) -> SensorError {
    let errno = find_errno(&source);
    match (mode, errno) {
        (AttachMode::Native, Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
            SensorError::NativeXdpUnsupported {
                iface: iface.to_owned(),
                source: Box::new(source),
            }
        }
        (_, Some(libc::EBUSY | libc::EEXIST)) => SensorError::XdpAlreadyAttached {
            iface: iface.to_owned(),
            source: Box::new(source),
        },
        (AttachMode::Native, _) => SensorError::Attach {
            iface: iface.to_owned(),
            mode: mode.name(),
            hint: "; try --mode skb",
            source: Box::new(source),
        },
        (AttachMode::Skb, _) => SensorError::Attach {
            iface: iface.to_owned(),
            mode: mode.name(),
            hint: "",
            source: Box::new(source),
        },
    }
}

/// Kernels before 5.11 charge BPF maps to `RLIMIT_MEMLOCK`; newer ones use
/// memory cgroups and ignore it. Raising it is harmless either way.
fn raise_memlock_limit() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        debug!(error = %e, "could not raise RLIMIT_MEMLOCK");
    }
}

/// Whether `dir` is a BPF filesystem, mounting one there if it is not (and
/// the directory exists). Logs what it did or why it could not.
fn ensure_bpffs(dir: &Path) -> bool {
    let is_bpffs = |d: &Path| {
        nix::sys::statfs::statfs(d)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
    };
    if is_bpffs(dir) {
        return true;
    }
    if !dir.is_dir() {
        debug!(dir = %dir.display(), "no such directory; counters not pinned");
        return false;
    }
    match nix::mount::mount(
        Some("bpf"),
        dir,
        Some("bpf"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        Ok(()) if is_bpffs(dir) => {
            info!(dir = %dir.display(), "mounted a BPF filesystem for the counters pin");
            true
        }
        Ok(()) => false,
        Err(e) => {
            debug!(dir = %dir.display(), error = %e, "no BPF filesystem and cannot mount one; counters not pinned");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LoadOptions {
        LoadOptions {
            iface: "lo".into(),
            mode: AttachMode::Skb,
            mirror: false,
            n_workers: 2,
            flow_table_size: DEFAULT_FLOW_TABLE_SIZE,
            ring_bytes: DEFAULT_RING_BYTES,
            dst_prefix: sensor_common::sketch::DST_PREFIX_DEFAULT,
        }
    }

    #[test]
    fn validation_rejects_bad_sizes() {
        assert!(opts().validate().is_ok());
        let mut o = opts();
        o.ring_bytes = 5000;
        assert!(matches!(
            o.validate(),
            Err(SensorError::InvalidConfig {
                what: "--ring-bytes",
                ..
            })
        ));
        o = opts();
        o.ring_bytes = 1024;
        assert!(o.validate().is_err());
        o = opts();
        o.n_workers = 9;
        assert!(o.validate().is_err());
        o.n_workers = 0;
        assert!(o.validate().is_err());
        o = opts();
        o.flow_table_size = 0;
        assert!(o.validate().is_err());
        // 2 GiB per ring: over the cap whatever the machine.
        o = opts();
        o.ring_bytes = 1 << 31;
        assert!(matches!(
            o.validate(),
            Err(SensorError::InvalidConfig {
                what: "--ring-bytes",
                ..
            })
        ));
    }

    #[test]
    fn maps_are_bounded_by_physical_memory() {
        const GIB: u64 = 1 << 30;
        let mut o = opts();
        o.n_workers = 8;
        o.ring_bytes = 1 << 30;
        // Eight 1 GiB rings on a 16 GiB machine: over a quarter.
        let e = o.check_memory(Some(16 * GIB), 2).unwrap_err().to_string();
        assert!(e.contains("--ring-bytes") && e.contains("8192 MiB"), "{e}");
        assert!(o.check_memory(Some(64 * GIB), 2).is_ok());
        o = opts();
        o.flow_table_size = u32::MAX;
        let e = o.check_memory(Some(16 * GIB), 2).unwrap_err().to_string();
        assert!(e.contains("--flow-table-size"), "{e}");
        // The defaults fit a small gateway.
        assert!(opts().check_memory(Some(GIB), 4).is_ok());
        assert!(opts().check_memory(None, 4).is_ok());
    }

    #[test]
    fn interface_lookup() {
        assert!(if_index("lo").is_some());
        assert!(if_index("no-such-if0").is_none());
        assert!(if_index("bad\0name").is_none());
    }

    #[test]
    fn attach_errors_carry_the_right_hint() {
        let err = |code| {
            ProgramError::SyscallError(aya::sys::SyscallError {
                call: "bpf_link_create",
                io_error: std::io::Error::from_raw_os_error(code),
            })
        };
        let e = attach_error("lo", AttachMode::Native, err(libc::EOPNOTSUPP));
        assert_eq!(
            e.to_string(),
            "interface `lo` does not support native XDP; try --mode skb"
        );
        let e = attach_error("eth0", AttachMode::Skb, err(libc::EBUSY));
        assert!(e.to_string().contains("xdp off"), "{e}");
        let e = attach_error("eth0", AttachMode::Skb, err(libc::ENOMEM));
        assert_eq!(e.to_string(), "attaching XDP to `eth0` in skb mode failed");
    }
}
