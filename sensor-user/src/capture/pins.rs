//! What a running sensor leaves in the BPF filesystem for other processes:
//! one directory per attachment, `/sys/fs/bpf/xdp-sensor/net<N>-if<I>`,
//! named by the network namespace's inode `N` and the interface index `I`
//! (an interface name alone is not unique across namespaces), holding the
//! pinned `GLOBAL_COUNTERS` and a liveness record.
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
//! still loaded: the attachment holds the program's only reference, so a
//! detached program is gone.

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
        self.dir.join(map_names::GLOBAL_COUNTERS)
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
        for path in [self.counters(), self.liveness()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
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

    /// Makes the directory ready for a sensor about to attach on `iface`:
    /// the pins of a dead sensor are removed (never adopted), a live one is
    /// an error.
    ///
    /// # Errors
    /// [`SensorError::AlreadyRunning`] when a live sensor holds the
    /// directory; [`SensorError::Pin`] when stale pins cannot be removed or
    /// the directory cannot be made.
    pub(crate) fn claim(&self, iface: &str) -> Result<(), SensorError> {
        let pin_err = |source| SensorError::Pin {
            path: self.dir.clone(),
            source,
        };
        if self.dir.exists() {
            match self.read_liveness() {
                Some(rec) if rec.pid != std::process::id() && rec.state() == State::Alive => {
                    return Err(SensorError::AlreadyRunning {
                        iface: iface.to_owned(),
                        pid: rec.pid,
                    });
                }
                Some(rec) => info!(
                    dir = %self.dir.display(),
                    pid = rec.pid,
                    "removing the pins of a sensor that is no longer running"
                ),
                None => info!(dir = %self.dir.display(), "removing pins without a liveness record"),
            }
            self.remove().map_err(pin_err)?;
        }
        std::fs::create_dir_all(&self.dir).map_err(pin_err)
    }
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
        assert_eq!(dir.read_liveness(), Some(rec));
        // The record of a dead sensor is removed, with the empty root.
        dir.claim("eth0").unwrap();
        assert_eq!(dir.read_liveness(), None);
        assert!(dir.path().is_dir(), "claimed afresh");
        dir.remove().unwrap();
        assert!(!root.exists());
    }
}
