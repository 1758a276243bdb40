//! Loads the XDP object, sizes its maps, writes the runtime configuration and
//! attaches the program to one interface. Detaching happens explicitly in
//! [`Sensor::detach`] or, at the latest, when the [`Sensor`] is dropped (aya
//! detaches owned links on drop), so a crash never leaves the program behind.

use std::{ffi::CString, net::IpAddr, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, MapInfo, RingBuf},
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use sensor_common::{MAX_WORKERS, SensorConfig, XDP_PROGRAM_NAME, map_names};

pub use sensor_common::EnforceMode;
use tracing::{debug, info, warn};

use crate::capture::{
    blocklist::{Lists, Prefix},
    error::{SensorError, find_errno},
    pins::{KeptCounts, Liveness, PinDir, STATE_MAPS, current_netns_cookie, remove_legacy_pins},
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
    /// What the program does with blocklisted sources.
    pub enforce: EnforceMode,
    /// Source prefixes never blocked, besides the interface's own addresses.
    pub allow: Vec<Prefix>,
}

impl LoadOptions {
    /// Rejects values the kernel would refuse with an opaque `EINVAL`.
    ///
    /// # Errors
    /// [`SensorError::InvalidConfig`] naming the option and the rule.
    pub fn validate(&self) -> Result<(), SensorError> {
        if self.mirror && self.enforce == EnforceMode::On {
            return Err(SensorError::InvalidConfig {
                what: "--enforce",
                reason: "`on` is refused with --mirror: a mirror port sees copies, so dropping \
                         them blocks nothing (use `dry-run` to see what would be dropped)"
                    .into(),
            });
        }
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

/// How the program is attached.
enum Attachment {
    /// Through a `bpf_link` (pinned when the sensor has a pin directory): a
    /// later sensor can replace the program through it atomically.
    Link(FdLink),
    /// Through netlink, on kernels without XDP links: detached by id.
    Netlink(XdpLinkId),
}

/// What a sensor started from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Fresh maps.
    Fresh,
    /// The pinned maps a stopped or crashed sensor left.
    Adopted,
}

/// A loaded (and, after [`Sensor::attach`], attached) XDP sensor.
pub struct Sensor {
    ebpf: Ebpf,
    opts: LoadOptions,
    if_index: u32,
    link: Option<Attachment>,
    /// The pin directory this sensor holds, with the record of the sensor
    /// whose state it found there.
    pins: Option<PinDir>,
    previous: Option<Liveness>,
    origin: Origin,
    /// Whether [`Sensor::release`] ran (so drop does nothing more).
    released: bool,
    /// Whether attaching removed a previous sensor's link pin (its link
    /// goes away asynchronously: see [`Sensor::attach_fresh`]).
    released_link: bool,
}

/// How long an attach waits for a released link to leave the interface.
const LINK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why pinned state cannot be adopted: the first map whose layout differs.
fn layout_mismatch(ebpf: &Ebpf, pins: &PinDir) -> Option<String> {
    for name in STATE_MAPS {
        let path = pins.map(name);
        let Ok(pinned) = MapInfo::from_pin(&path) else {
            return Some(format!("{name} is not pinned"));
        };
        let Some(fresh) = ebpf.map(name).and_then(|m| map_data(m)?.info().ok()) else {
            return Some(format!("{name} is missing from the program"));
        };
        let layout = |i: &MapInfo| {
            (
                format!("{:?}", i.map_type()),
                i.key_size(),
                i.value_size(),
                i.max_entries(),
                i.map_flags(),
            )
        };
        let (old, new) = (layout(&pinned), layout(&fresh));
        if old != new {
            return Some(format!(
                "{name} has another layout (type, key bytes, value bytes, max entries, flags): pinned {old:?}, this program {new:?}"
            ));
        }
    }
    None
}

/// The map's data, for the kinds the sensor pins.
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::LpmTrie(d) => Some(d),
        _ => None,
    }
}

impl Sensor {
    /// Loads the object with sized maps, writes `SENSOR_CONFIG` and loads the
    /// program into the kernel, with fresh maps and no pins (tests and
    /// benchmarks). Nothing is attached yet, so the caller can start
    /// consumers first and lose no event.
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
        let ebpf = load_object(&opts, None)?;
        Self::finish_load(ebpf, opts, if_index, None, None, Origin::Fresh)
    }

    /// Like [`Sensor::load`], for a sensor that keeps its state in the pin
    /// directory of the interface (see [`crate::capture::pins`]): a
    /// stopped or crashed sensor's maps are adopted when their layout
    /// matches this program's, and otherwise replaced by fresh ones (the
    /// log says why). Without a BPF filesystem the sensor runs unpinned,
    /// with a warning.
    ///
    /// # Errors
    /// As [`Sensor::load`], and [`SensorError::AlreadyRunning`] when a live
    /// sensor holds the interface.
    pub fn load_pinned(opts: LoadOptions) -> Result<Self, SensorError> {
        opts.validate()?;
        let if_index = if_index(&opts.iface).ok_or_else(|| SensorError::NoSuchInterface {
            iface: opts.iface.clone(),
        })?;
        raise_memlock_limit();
        // Loading first: without the privileges to load, the one error to
        // report is that, not a warning about the pin directory before it.
        let fresh = load_object(&opts, None)?;
        let Some((pins, previous)) = claim_pins(&opts.iface, if_index)? else {
            return Self::finish_load(fresh, opts, if_index, None, None, Origin::Fresh);
        };
        let mut origin = Origin::Fresh;
        let ebpf = match &previous {
            None => fresh,
            Some(rec) => match layout_mismatch(&fresh, &pins) {
                None => {
                    drop(fresh);
                    origin = Origin::Adopted;
                    info!(
                        dir = %pins.path().display(),
                        pid = rec.pid,
                        "adopting the flow table, sketches and counters of the previous sensor"
                    );
                    load_object(&opts, Some(&pins))?
                }
                Some(reason) => {
                    warn!(
                        dir = %pins.path().display(),
                        pid = rec.pid,
                        %reason,
                        "starting with a fresh flow table, sketches and counters: the previous sensor's state does not fit this one"
                    );
                    pins.remove_maps().map_err(|source| SensorError::Pin {
                        path: pins.path().to_owned(),
                        source,
                    })?;
                    fresh
                }
            },
        };
        let mut sensor = Self::finish_load(ebpf, opts, if_index, Some(pins), previous, origin)?;
        if origin == Origin::Fresh {
            sensor.pin_fresh_maps();
        }
        sensor.fill_allowlist()?;
        Ok(sensor)
    }

    /// Puts the interface's own addresses and the configured prefixes in
    /// the allowlist, through the pinned lists (the maps stay in the
    /// program object for pinning and adoption). Only with enforcement on
    /// or in a dry run, and only for a pinned sensor.
    fn fill_allowlist(&self) -> Result<(), SensorError> {
        let Some(pins) = &self.pins else {
            return Ok(());
        };
        if self.opts.enforce == EnforceMode::Off {
            return Ok(());
        }
        let mut lists = Lists::from_pins(pins)?;
        let own = nix::ifaddrs::getifaddrs()
            .map(|addrs| {
                addrs
                    .filter(|a| a.interface_name == self.opts.iface)
                    .filter_map(|a| {
                        let a = a.address?;
                        if let Some(v4) = a.as_sockaddr_in() {
                            Prefix::new(IpAddr::V4(v4.ip()), 32)
                        } else {
                            Prefix::new(IpAddr::V6(a.as_sockaddr_in6()?.ip()), 128)
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for p in own.iter().chain(&self.opts.allow) {
            lists.allow(*p)?;
            info!(prefix = %p, "never blocked");
        }
        Ok(())
    }

    fn finish_load(
        mut ebpf: Ebpf,
        opts: LoadOptions,
        if_index: u32,
        pins: Option<PinDir>,
        previous: Option<Liveness>,
        origin: Origin,
    ) -> Result<Self, SensorError> {
        let config = SensorConfig {
            enforce: opts.enforce as u32,
            ..SensorConfig::new(
                opts.n_workers,
                opts.mirror,
                opts.ring_bytes,
                DEFAULT_SAMPLE_SHIFT,
                opts.dst_prefix,
            )
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
            pins,
            previous,
            origin,
            released: false,
            released_link: false,
        })
    }

    /// Whether the sensor adopted a previous sensor's state.
    #[must_use]
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// What the previous sensor had counted when it stopped with
    /// `--keep-state`, if it did and its state was adopted.
    #[must_use]
    pub(crate) fn kept_counts(&self) -> Option<KeptCounts> {
        (self.origin == Origin::Adopted)
            .then(|| self.previous.as_ref()?.kept)
            .flatten()
    }

    /// Pins fresh state maps (before any of them is taken by a thread), so
    /// a crash of this sensor leaves them for the next. Best effort: an
    /// unpinned map is only not adopted later.
    fn pin_fresh_maps(&mut self) {
        let Some(pins) = &self.pins else { return };
        for name in STATE_MAPS {
            let path = pins.map(name);
            let result = self
                .ebpf
                .map(name)
                .ok_or(SensorError::MissingMap { name })
                .and_then(|m| {
                    m.pin(&path).map_err(|e| SensorError::Pin {
                        path: path.clone(),
                        source: std::io::Error::other(e),
                    })
                });
            if let Err(e) = result {
                warn!(error = %e, "could not pin a state map; a restarted sensor will not adopt it");
            }
        }
    }

    /// Attaches the loaded program to the interface. When the previous
    /// sensor's XDP link is pinned (and has the requested mode), the
    /// program is replaced through it atomically: the old program counts
    /// every packet until the new one does. Otherwise the program is
    /// attached afresh and its link pinned. Then writes the liveness record
    /// for `sensor stats` (see [`crate::capture::pins`]).
    ///
    /// # Errors
    /// Native mode unsupported (with the `--mode skb` hint), an XDP program
    /// already attached, or another attach failure.
    pub fn attach(&mut self) -> Result<(), SensorError> {
        let mode = self.opts.mode;
        let iface = self.opts.iface.clone();
        let replaced = self.replace_through_pinned_link()?;
        let was_replaced = replaced.is_some();
        let id = match replaced {
            Some(id) => id,
            None => self.attach_fresh()?,
        };
        if xdp_links_supported() {
            let link = self.take_fd_link(id)?;
            let link = match self.pins.as_ref().map(PinDir::link) {
                Some(path) if !path.exists() => match link.pin(&path) {
                    Ok(pinned) => FdLink::from(pinned),
                    Err(e) => {
                        // A failed pin dropped the link, and so detached
                        // the program: attach it again, unpinned.
                        warn!(path = %path.display(), error = %e, "could not pin the XDP link; a restarted sensor cannot replace the program atomically");
                        let id = self.attach_fresh()?;
                        self.take_fd_link(id)?
                    }
                },
                _ => link,
            };
            self.link = Some(Attachment::Link(link));
        } else {
            if self.pins.is_some() {
                warn!(
                    "this kernel attaches XDP without links (before Linux 5.9): the program cannot be replaced atomically and detaches when the sensor exits"
                );
            }
            self.link = Some(Attachment::Netlink(id));
        }
        if was_replaced {
            info!(iface = %iface, mode = mode.name(), "XDP program replaced through the pinned link");
        } else {
            info!(iface = %iface, mode = mode.name(), "XDP program attached");
        }
        self.write_liveness(None);
        Ok(())
    }

    fn attach_fresh(&mut self) -> Result<XdpLinkId, SensorError> {
        let (mode, if_index) = (self.opts.mode, self.if_index);
        let iface = self.opts.iface.clone();
        // A previous sensor's link whose pin was just removed is released
        // by the kernel asynchronously (a deferred work item): until then
        // the interface still holds it, and an attach finds it there. Retry
        // for a bounded time when such a link was released.
        let deadline = self
            .released_link
            .then(|| std::time::Instant::now() + LINK_RELEASE_WAIT);
        loop {
            match xdp_program(&mut self.ebpf)?.attach_to_if_index(if_index, mode.xdp_mode()) {
                Ok(id) => return Ok(id),
                Err(source)
                    if find_errno(&source) == Some(libc::EEXIST)
                        && deadline.is_some_and(|d| std::time::Instant::now() < d) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(source) => return Err(attach_error(&iface, mode, source)),
            }
        }
    }

    /// Takes the link out of the program, so dropping the program leaves
    /// a pinned link attached.
    fn take_fd_link(&mut self, id: XdpLinkId) -> Result<FdLink, SensorError> {
        let program_err = |source: ProgramError| SensorError::Program {
            name: XDP_PROGRAM_NAME,
            source: Box::new(source),
        };
        let link = xdp_program(&mut self.ebpf)?
            .take_link(id)
            .map_err(program_err)?;
        FdLink::try_from(link).map_err(|source| SensorError::Link {
            iface: self.opts.iface.clone(),
            what: "taking",
            source: Box::new(source),
        })
    }

    /// Replaces the previous sensor's program through its pinned link, if
    /// there is one this sensor can use. A link in another mode, or one the
    /// kernel no longer accepts (its interface is gone), is removed, with a
    /// log line, and `None` returned.
    fn replace_through_pinned_link(&mut self) -> Result<Option<XdpLinkId>, SensorError> {
        let Some(pins) = self.pins.clone() else {
            return Ok(None);
        };
        let path = pins.link();
        if !path.exists() {
            return Ok(None);
        }
        let mode = self.opts.mode.name();
        let recorded = self.previous.as_ref().map(|r| r.mode.as_str());
        let reason = match PinnedLink::from_pin(&path) {
            Ok(pinned) if recorded == Some(mode) => {
                // The pin stays: it now refers to the same link running the
                // new program.
                match XdpLink::try_from(FdLink::from(pinned)) {
                    Ok(link) => match xdp_program(&mut self.ebpf)?.attach_to_link(link) {
                        Ok(id) => return Ok(Some(id)),
                        Err(e) => format!("the kernel refused the replacement: {e}"),
                    },
                    Err(e) => format!("it is not an XDP link: {e}"),
                }
            }
            Ok(_) => format!(
                "it was attached in {} mode, this sensor asks for {mode}",
                recorded.filter(|m| !m.is_empty()).unwrap_or("an unknown")
            ),
            Err(e) => format!("it cannot be opened: {e}"),
        };
        warn!(
            path = %path.display(),
            %reason,
            "detaching the previous sensor's program before attaching; packets in between are not counted"
        );
        // Removing the pin drops the last reference once no fd is open.
        if let Err(source) = std::fs::remove_file(&path)
            && source.kind() != std::io::ErrorKind::NotFound
        {
            return Err(SensorError::Pin { path, source });
        }
        self.released_link = true;
        Ok(None)
    }

    /// Writes the liveness record (with `kept` at a stop that keeps the
    /// state). Best effort: without it `sensor stats` does not see the run.
    fn write_liveness(&mut self, kept: Option<KeptCounts>) {
        let Some(pins) = self.pins.clone() else {
            return;
        };
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            let prog_id = xdp_program(&mut self.ebpf)?.info()?.id();
            let netns = crate::capture::pins::current_netns()?;
            let mut record = Liveness::of_self(
                &self.opts.iface,
                self.if_index,
                prog_id,
                netns,
                self.opts.mode.name(),
            )?;
            record.kept = kept;
            pins.write_liveness(&record)?;
            Ok(())
        })();
        match result {
            Ok(()) => debug!(dir = %pins.path().display(), "liveness record written"),
            Err(e) => {
                warn!(dir = %pins.path().display(), error = %e, "could not write the liveness record; `sensor stats` will not see this run");
            }
        }
    }

    /// Ends the sensor's hold on the interface. With `keep`, the program
    /// stays attached through its pinned link and the state maps stay
    /// pinned, for the next sensor to adopt (`counters` go into the record,
    /// so it can tell what was counted in between); without, the program is
    /// detached and the pins removed, and packets then flow without it.
    /// Idempotent; drop calls it without `keep`.
    pub(crate) fn release(&mut self, keep: Option<KeptCounts>) {
        if self.released {
            return;
        }
        self.released = true;
        let attached = self.link.is_some();
        if let Some(kept) = keep
            && attached
            && self.pins.is_some()
            && matches!(self.link, Some(Attachment::Link(_)))
        {
            self.write_liveness(Some(kept));
            // Closing our fd leaves the pinned link attached.
            self.link = None;
            info!(iface = %self.opts.iface, "XDP program left attached with its state pinned, for the next sensor to adopt");
            return;
        }
        if keep.is_some() {
            warn!(iface = %self.opts.iface, "cannot keep the state: no pinned XDP link; detaching");
        }
        if let Some(pins) = self.pins.take() {
            let result = if attached {
                pins.remove()
            } else if self.origin == Origin::Fresh {
                // A failed start: only the maps pinned at load are ours;
                // a previous sensor's link and record stay as they were.
                pins.remove_maps().map(|()| pins.remove_if_empty())
            } else {
                Ok(())
            };
            if let Err(e) = result {
                warn!(dir = %pins.path().display(), error = %e, "could not remove the pins");
            }
        }
        match self.link.take() {
            None => {}
            Some(Attachment::Link(link)) => {
                // The pin is gone: closing the last fd detaches.
                drop(link);
                info!(iface = %self.opts.iface, "XDP program detached");
            }
            Some(Attachment::Netlink(id)) => match xdp_program(&mut self.ebpf) {
                Ok(prog) => match prog.detach(id) {
                    Ok(()) => info!(iface = %self.opts.iface, "XDP program detached"),
                    Err(e) => warn!(error = %e, "detaching the XDP program failed"),
                },
                Err(e) => warn!(error = %e, "detaching the XDP program failed"),
            },
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

    /// The pin directory this sensor holds, if it pinned its state.
    #[must_use]
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(PinDir::path)
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
        self.release(None);
    }
}

/// Whether the kernel attaches XDP through `bpf_link` (Linux 5.9), which a
/// pin can keep and a later program can replace atomically.
fn xdp_links_supported() -> bool {
    use aya::util::KernelVersion;
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(5, 9, 0))
}

/// Loads the object with its maps sized, adopting the pinned state maps in
/// `adopt` (whose layouts the caller checked) instead of creating them.
fn load_object(opts: &LoadOptions, adopt: Option<&PinDir>) -> Result<Ebpf, SensorError> {
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
    if let Some(pins) = adopt {
        for name in STATE_MAPS {
            loader.map_pin_path(name, pins.map(name));
        }
    }
    loader.load(crate::capture::XDP_OBJECT).map_err(|source| {
        if find_errno(&source) == Some(libc::EPERM) {
            SensorError::PermissionDenied {
                source: Box::new(source),
            }
        } else {
            SensorError::Load {
                source: Box::new(source),
            }
        }
    })
}

/// The pin directory of interface `if_index` in this network namespace and
/// the record of the sensor whose state is there, with foreign pins and
/// earlier versions' pins removed. `None` (the sensor runs unpinned, with a
/// warning) when there is no BPF filesystem or the directory cannot be
/// made. When `/sys/fs/bpf` is not a BPF filesystem (a host whose init does
/// not mount it, or `ip netns exec`, which remounts `/sys`), mounts one
/// there first, as bpftool does; it stays mounted for later runs and
/// `sensor stats`.
fn claim_pins(
    iface: &str,
    if_index: u32,
) -> Result<Option<(PinDir, Option<Liveness>)>, SensorError> {
    if !ensure_bpffs(Path::new("/sys/fs/bpf")) {
        return Ok(None);
    }
    remove_legacy_pins(Path::new(crate::capture::pins::PIN_ROOT));
    let claimed = PinDir::here(if_index).and_then(|dir| {
        let previous = dir.claim(iface, current_netns_cookie())?;
        Ok((dir, previous))
    });
    match claimed {
        Ok(c) => Ok(Some(c)),
        Err(e @ SensorError::AlreadyRunning { .. }) => Err(e),
        Err(e) => {
            warn!(error = %e, "could not prepare the pins; `sensor stats` will not see this run and a restart will not adopt its state");
            Ok(None)
        }
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
            enforce: EnforceMode::Off,
            allow: Vec::new(),
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
