//! What a sensor leaves in the BPF filesystem for other processes and for
//! the next sensor: one directory per attachment,
//! `/sys/fs/bpf/xdp-sensor/net<N>-if<I>`, named by the network namespace's
//! inode `N` and the interface index `I` (an interface name alone is not
//! unique across namespaces), holding the state the program keeps
//! ([`STATE_MAPS`]: flow table, sketches, counters), the program's XDP link
//! and a liveness record.
//!
//! The state and the link outlive the process that pinned them: after a
//! crash or a stop with `--keep-state` the program stays attached and keeps
//! counting, and the next sensor on the interface adopts the maps and
//! replaces the program through the link (see `capture::loader`).
//!
//! The BPF filesystem holds only pins, directories and symbolic links, so the
//! liveness record is the target of a symbolic link named `liveness`: one
//! JSON object ([`Liveness`]), created under a temporary name and renamed, so
//! a reader never sees half of it. It lives and dies with the pins it
//! describes, also when `ip netns exec` gives a sensor a BPF filesystem of
//! its own.
//!
//! A record says a sensor is alive when its process still exists with the
//! recorded start time (a recycled pid has another) and its XDP program is
//! still loaded (the link holds the program's only reference, so a program
//! whose link was removed is gone). A dead sensor's program may well still
//! be loaded and counting: its pinned link keeps it attached.

use std::{
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use sensor_common::map_names;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::capture::error::SensorError;

/// Where running sensors keep their per-attachment directories.
pub(crate) const PIN_ROOT: &str = "/sys/fs/bpf/xdp-sensor";

/// The name of the liveness record in an attachment's directory.
const LIVENESS: &str = "liveness";

/// The name of the pinned XDP link in an attachment's directory.
const XDP_LINK: &str = "XDP_LINK";

/// The maps whose contents are the sensor's history, pinned under their
/// own names and adopted by the next sensor when their layout matches.
/// Rings are not among them: a ring's events belong to the process that
/// reads it, and `SENSOR_CONFIG` is each sensor's own. The source lists
/// are, so blocks outlive a restart and `sensor block` reaches them.
pub(crate) const STATE_MAPS: [&str; 13] = [
    map_names::FLOW_TABLE,
    map_names::SRC_PACKETS_CMS,
    map_names::SRC_BYTES_CMS,
    map_names::SRC_DISTINCT_HLL,
    map_names::DST_VOLUME,
    map_names::GLOBAL_COUNTERS,
    map_names::BLOCK_V4,
    map_names::BLOCK_V6,
    map_names::ALLOW_V4,
    map_names::ALLOW_V6,
    map_names::LIST_SIZES,
    map_names::PROTECTED,
    map_names::KNOWN_SOURCES,
];

/// The directory of one attachment: a network namespace and an interface
/// index in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PinDir {
    dir: PathBuf,
}

impl PinDir {
    /// The directory of interface `if_index` in the network namespace
    /// whose `/proc/self/ns/net` inode is `netns`.
    #[must_use]
    pub(crate) fn new(netns: u64, if_index: u32) -> Self {
        Self::under(Path::new(PIN_ROOT), netns, if_index)
    }

    fn under(root: &Path, netns: u64, if_index: u32) -> Self {
        Self {
            dir: root.join(format!("net{netns}-if{if_index}")),
        }
    }

    /// The directory of interface `if_index` in the caller's own network
    /// namespace.
    ///
    /// # Errors
    /// `/proc/self/ns/net` cannot be examined.
    pub(crate) fn here(if_index: u32) -> Result<Self, SensorError> {
        Ok(Self::new(current_netns()?, if_index))
    }

    /// The directory itself.
    #[must_use]
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// The pin of `GLOBAL_COUNTERS`.
    #[must_use]
    pub(crate) fn counters(&self) -> PathBuf {
        self.map(map_names::GLOBAL_COUNTERS)
    }

    /// The pin of map `name` (one of [`STATE_MAPS`]).
    #[must_use]
    pub(crate) fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The pin of the XDP link.
    #[must_use]
    pub(crate) fn link(&self) -> PathBuf {
        self.dir.join(XDP_LINK)
    }

    fn liveness(&self) -> PathBuf {
        self.dir.join(LIVENESS)
    }

    /// Reads the liveness record; `None` when there is none or it does not
    /// parse (a record is written whole, so that is a foreign file).
    #[must_use]
    pub(crate) fn read_liveness(&self) -> Option<Liveness> {
        let target = std::fs::read_link(self.liveness()).ok()?;
        serde_json::from_str(target.to_str()?).ok()
    }

    /// Writes the liveness record: a symbolic link whose target is the JSON
    /// object, made under a temporary name and renamed over the old one.
    ///
    /// # Errors
    /// The link cannot be created or renamed.
    pub(crate) fn write_liveness(&self, record: &Liveness) -> io::Result<()> {
        let text = serde_json::to_string(record).map_err(io::Error::other)?;
        // bpffs refuses names with a dot: the temporary name has none.
        let tmp = self
            .dir
            .join(format!("{LIVENESS}-new-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(text, &tmp)?;
        std::fs::rename(&tmp, self.liveness())
    }

    /// Removes the attachment's pins, its record and the directory, then the
    /// root when no other attachment uses it. Missing pieces are fine.
    ///
    /// # Errors
    /// A pin exists but cannot be removed.
    pub(crate) fn remove(&self) -> io::Result<()> {
        self.remove_maps()?;
        for path in [self.link(), self.liveness()] {
            remove_pin(&path)?;
        }
        // Leftovers of a crash while writing the record, then the directory;
        // whatever else is there (nothing we made) keeps it.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{LIVENESS}-new-"))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(root) = self.dir.parent() {
            let _ = std::fs::remove_dir(root);
        }
        Ok(())
    }

    /// Removes the pins of the [`STATE_MAPS`] only (a fresh start that
    /// keeps the link to replace the program through it). Missing pins are
    /// fine.
    ///
    /// # Errors
    /// A pin exists but cannot be removed.
    pub(crate) fn remove_maps(&self) -> io::Result<()> {
        for name in STATE_MAPS {
            remove_pin(&self.map(name))?;
        }
        Ok(())
    }

    /// Removes the directory if nothing is left in it.
    pub(crate) fn remove_if_empty(&self) {
        if std::fs::remove_dir(&self.dir).is_ok()
            && let Some(root) = self.dir.parent()
        {
            let _ = std::fs::remove_dir(root);
        }
    }

    /// Makes the directory ready for a sensor about to start on `iface` in
    /// the network namespace with cookie `netns_cookie`, and returns the
    /// record of the sensor that left its state there, for the caller to
    /// adopt. A live sensor is an error. Pins without a record, or whose
    /// record names another network namespace (a namespace that was deleted
    /// and whose inode was reused), are removed.
    ///
    /// # Errors
    /// [`SensorError::AlreadyRunning`] when a live sensor holds the
    /// directory; [`SensorError::Pin`] when foreign pins cannot be removed or
    /// the directory cannot be made.
    pub(crate) fn claim(
        &self,
        iface: &str,
        netns_cookie: Option<u64>,
    ) -> Result<Option<Liveness>, SensorError> {
        let pin_err = |source| SensorError::Pin {
            path: self.dir.clone(),
            source,
        };
        if let Some(root) = self.dir.parent() {
            std::fs::create_dir_all(root).map_err(pin_err)?;
            check_root_owned(root).map_err(pin_err)?;
        }
        let mut previous = None;
        if self.dir.exists() {
            match self.read_liveness() {
                Some(rec) if rec.pid != std::process::id() && rec.state() == State::Alive => {
                    return Err(SensorError::AlreadyRunning {
                        iface: iface.to_owned(),
                        pid: rec.pid,
                    });
                }
                Some(rec)
                    if rec.netns_cookie.is_some()
                        && netns_cookie.is_some()
                        && rec.netns_cookie != netns_cookie =>
                {
                    info!(
                        dir = %self.dir.display(),
                        pid = rec.pid,
                        "removing the pins of a sensor in a network namespace that no longer exists"
                    );
                    self.remove().map_err(pin_err)?;
                }
                Some(rec) => previous = Some(rec),
                None => {
                    info!(dir = %self.dir.display(), "removing pins without a liveness record");
                    self.remove().map_err(pin_err)?;
                }
            }
        }
        std::fs::create_dir_all(&self.dir).map_err(pin_err)?;
        Ok(previous)
    }
}

/// The directory that holds every sensor's pins must be this process's
/// (root's) and writable by nobody else: `/sys/fs/bpf` is often world
/// writable (sticky), and a directory another account made there first
/// would let it plant the maps and link a sensor adopts.
fn check_root_owned(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::symlink_metadata(root)?;
    let euid = nix::unistd::geteuid().as_raw();
    if !m.is_dir() || m.uid() != euid || m.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is owned by uid {} with mode {:o}, not by this process's uid {euid} and writable by it alone: remove it (another account may have made it)",
                root.display(),
                m.uid(),
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

fn remove_pin(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes what sensors of earlier versions pinned per interface name
/// (`<root>/<iface>/GLOBAL_COUNTERS`): nothing reads those pins any more,
/// and they would hold a counters map until the next reboot. Returns the
/// directories removed.
pub(crate) fn remove_legacy_pins(root: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dir = e.path();
        if parse_dir_name(&name).is_some() || !dir.is_dir() {
            continue;
        }
        let counters = dir.join(map_names::GLOBAL_COUNTERS);
        if counters.exists()
            && std::fs::remove_file(&counters).is_ok()
            && std::fs::remove_dir(&dir).is_ok()
        {
            info!(dir = %dir.display(), "removed the counters pin of an earlier sensor version (pinned by interface name)");
            removed.push(dir);
        }
    }
    removed
}

/// `(netns, ifindex)` of a directory named `net<N>-if<I>`.
fn parse_dir_name(name: &str) -> Option<(u64, u32)> {
    let (net, ifx) = name.strip_prefix("net")?.split_once("-if")?;
    Some((net.parse().ok()?, ifx.parse().ok()?))
}

/// The cookie of the caller's network namespace (`SO_NETNS_COOKIE`, Linux
/// 5.14): unlike the namespace's inode it is never reused while the system
/// runs, so it tells a deleted namespace's pins from ours. `None` on older
/// kernels.
#[must_use]
pub(crate) fn current_netns_cookie() -> Option<u64> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    use std::os::fd::AsRawFd as _;
    // Any socket of the namespace tells its cookie; an unbound one needs
    // no address (a new namespace's loopback is down).
    let socket = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let mut cookie: u64 = 0;
    let mut len = libc::socklen_t::try_from(size_of::<u64>()).ok()?;
    // SAFETY: the socket is open, and `cookie`/`len` describe a valid u64
    // buffer the kernel writes at most `len` bytes to.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &raw mut len,
        )
    };
    (rc == 0).then_some(cookie)
}

/// The inode of the caller's network namespace (`/proc/self/ns/net`), the
/// number `ip netns identify` and `lsns` show.
///
/// # Errors
/// [`SensorError::Pin`] when the namespace cannot be examined.
pub(crate) fn current_netns() -> Result<u64, SensorError> {
    let path = Path::new("/proc/self/ns/net");
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|source| SensorError::Pin {
            path: path.to_owned(),
            source,
        })
}

/// When process `pid` started, in clock ticks after boot (field 22 of
/// `/proc/<pid>/stat`); `None` when there is no such process.
#[must_use]
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: count fields after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether BPF program `id` is loaded; `None` when the kernel does not let
/// us enumerate programs (then only the process is checked).
fn program_loaded(id: u32) -> Option<bool> {
    let mut any = false;
    for p in aya::programs::loaded_programs() {
        match p {
            Ok(p) if p.id() == id => return Some(true),
            Ok(_) => any = true,
            Err(e) => {
                debug!(error = %e, "cannot enumerate BPF programs");
                if !any {
                    return None;
                }
            }
        }
    }
    Some(false)
}

/// Who holds an attachment's pins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// The sensor's process id.
    pub pid: u32,
    /// Its start time, in clock ticks after boot (`/proc/<pid>/stat`).
    pub start_time: u64,
    /// The id of its attached XDP program (`bpftool prog show id N`).
    pub prog_id: u32,
    /// The interface's name when the sensor started.
    pub iface: String,
    /// The interface's index.
    pub ifindex: u32,
    /// The network namespace's inode.
    pub netns: u64,
    /// The network namespace's cookie, when the kernel tells it.
    #[serde(default)]
    pub netns_cookie: Option<u64>,
    /// The attach mode (`native` or `skb`): the link keeps it, so a sensor
    /// asking for another mode cannot replace the program through it.
    #[serde(default)]
    pub mode: String,
    /// What the program had counted when the sensor stopped with
    /// `--keep-state`: the next sensor tells what was counted while no
    /// sensor ran.
    #[serde(default)]
    pub kept: Option<KeptCounts>,
}

/// Counters at a stop that kept the program attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptCounts {
    /// `packets_seen` at the stop.
    pub packets_seen: u64,
    /// `events_emitted` at the stop: events after it went to rings no
    /// process read.
    pub events_emitted: u64,
}

/// Whether a recorded sensor still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Alive,
    /// The process is gone (or the pid now names another process).
    ProcessGone,
    /// The process exists but its program is no longer loaded.
    ProgramGone,
}

impl Liveness {
    /// The record of this process, attached on `iface` with program
    /// `prog_id`.
    ///
    /// # Errors
    /// [`SensorError::Pin`] when `/proc` cannot tell this process's start
    /// time or namespace.
    pub(crate) fn of_self(
        iface: &str,
        ifindex: u32,
        prog_id: u32,
        netns: u64,
        mode: &str,
    ) -> Result<Self, SensorError> {
        let pid = std::process::id();
        let start_time = process_start_time(pid).ok_or_else(|| SensorError::Pin {
            path: PathBuf::from(format!("/proc/{pid}/stat")),
            source: io::Error::new(io::ErrorKind::InvalidData, "no start time"),
        })?;
        Ok(Self {
            pid,
            start_time,
            prog_id,
            iface: iface.to_owned(),
            ifindex,
            netns,
            netns_cookie: current_netns_cookie(),
            mode: mode.to_owned(),
            kept: None,
        })
    }

    /// Whether the recorded sensor still runs.
    #[must_use]
    pub(crate) fn state(&self) -> State {
        if process_start_time(self.pid) != Some(self.start_time) {
            return State::ProcessGone;
        }
        if program_loaded(self.prog_id) == Some(false) {
            return State::ProgramGone;
        }
        State::Alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, start_time: u64) -> Liveness {
        Liveness {
            pid,
            start_time,
            prog_id: 0,
            iface: "eth0".into(),
            ifindex: 2,
            netns: 4_026_531_840,
            netns_cookie: Some(1),
            mode: "skb".into(),
            kept: None,
        }
    }

    #[test]
    fn own_process_has_a_start_time_and_a_namespace() {
        let me = std::process::id();
        let t = process_start_time(me).expect("own start time");
        assert_eq!(process_start_time(me), Some(t), "stable");
        assert!(process_start_time(u32::MAX).is_none());
        let ns = current_netns().unwrap();
        assert!(PinDir::new(ns, 7).path().ends_with(format!("net{ns}-if7")));
    }

    #[test]
    fn a_dead_or_recycled_process_is_not_alive() {
        let me = std::process::id();
        let t = process_start_time(me).unwrap();
        assert_eq!(record(u32::MAX, t).state(), State::ProcessGone);
        assert_eq!(
            record(me, t + 1).state(),
            State::ProcessGone,
            "recycled pid"
        );
    }

    #[test]
    fn record_round_trips_through_a_symlink() {
        // Any directory takes symlinks; bpffs is not needed for the format.
        let root = std::env::temp_dir().join(format!("sensor-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = PinDir::under(&root, 1, 2);
        std::fs::create_dir_all(dir.path()).unwrap();
        assert_eq!(dir.read_liveness(), None);
        let rec = record(u32::MAX, 7);
        dir.write_liveness(&rec).unwrap();
        dir.write_liveness(&rec).unwrap();
        assert_eq!(dir.read_liveness(), Some(rec.clone()));
        // The record of a dead sensor is handed over for adoption...
        assert_eq!(dir.claim("eth0", Some(1)).unwrap(), Some(rec.clone()));
        assert_eq!(dir.read_liveness(), Some(rec.clone()));
        // ...unless it comes from another (deleted) network namespace.
        assert_eq!(dir.claim("eth0", Some(2)).unwrap(), None);
        assert_eq!(dir.read_liveness(), None);
        assert!(dir.path().is_dir(), "claimed afresh");
        dir.remove().unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn a_record_without_the_newer_fields_still_parses() {
        let old = r#"{"pid":1,"start_time":2,"prog_id":3,"iface":"eth0","ifindex":2,"netns":4}"#;
        let rec: Liveness = serde_json::from_str(old).unwrap();
        assert_eq!(
            (rec.netns_cookie, rec.mode.as_str(), rec.kept),
            (None, "", None)
        );
    }

    #[test]
    fn legacy_pins_by_interface_name_are_removed() {
        let root = std::env::temp_dir().join(format!("sensor-legacy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let legacy = root.join("eth0");
        let current = root.join("net7-if2");
        for d in [&legacy, &current] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join(map_names::GLOBAL_COUNTERS), b"").unwrap();
        }
        assert_eq!(remove_legacy_pins(&root), vec![legacy.clone()]);
        assert!(!legacy.exists());
        assert!(current.join(map_names::GLOBAL_COUNTERS).exists(), "kept");
        assert_eq!(parse_dir_name("net7-if2"), Some((7, 2)));
        assert_eq!(parse_dir_name("eth0"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_netns_cookie_is_stable() {
        if let Some(c) = current_netns_cookie() {
            assert_eq!(current_netns_cookie(), Some(c));
        }
    }

    #[test]
    fn a_pin_root_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = crate::files::test_dir("pin-root");
        check_root_owned(&d).expect("a private directory is fine");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_root_owned(&d).expect_err("world-writable");
        assert!(e.to_string().contains("mode 777"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
