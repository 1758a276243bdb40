//! Least privilege: `sensor run --user NAME [--group NAME]` gives up root
//! once the XDP program is attached, as Suricata's `--user` does.
//!
//! What needs privileges is done before the switch: loading the program and
//! creating its maps (`CAP_BPF`, `CAP_PERFMON`, `CAP_SYS_ADMIN`), attaching it
//! (`CAP_NET_ADMIN`), pinning the counters in bpffs and opening the output
//! files. After it, the process keeps only file descriptors, and none of
//! them needs a capability on a kernel of 6.5 or later (where
//! `kernel.unprivileged_bpf_disabled` gates only creating maps and loading
//! programs): ring buffers are read through their mappings, maps are read
//! and the epoch flipped through their fds, outputs are written through
//! open files and renamed in directories the account may write, and the
//! XDP link is a file descriptor whose closing detaches the program.
//!
//! The switch is `setgroups`, then `setresgid`, then `setresuid`, each for
//! real, effective and saved ids: once all three uids are non-zero the
//! kernel clears the permitted, effective and ambient capability sets, so
//! no `setuid(0)` can bring root back. glibc applies each call to every
//! thread of the process (the workers, control and alert threads started
//! before the attach), and [`Account::switch`] checks every thread in
//! `/proc/self/task` afterwards rather than trusting it.
//!
//! What an operator gives up: the counters' pin directory in bpffs belongs
//! to root, so a sensor that ran as another account cannot remove it at
//! exit. It is left with a liveness record naming a process that no longer
//! exists: `sensor stats` reports that sensor as not running, and the next
//! start on the interface removes the stale pins.

use std::{
    fs::File,
    io,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use nix::unistd::{
    AccessFlags, Gid, Group, Uid, User, access, geteuid, setgroups, setresgid, setresuid,
};

/// Why `--user`/`--group` could not be honoured. The run stops before
/// attaching for the first three, and detaches for the others.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// `--user` names no account in the user database.
    #[error("--user `{name}`: no such user")]
    UnknownUser { name: String },
    /// `--group` names no group in the group database.
    #[error("--group `{name}`: no such group")]
    UnknownGroup { name: String },
    /// The user or group database could not be read.
    #[error("looking up `{name}` in the user or group database")]
    Lookup {
        name: String,
        #[source]
        source: io::Error,
    },
    /// `--user root` (uid 0) would keep every capability.
    #[error(
        "--user `{name}` is root (uid 0): nothing would be given up; name an unprivileged account"
    )]
    RootAccount { name: String },
    /// Only root can switch to another account.
    #[error("--user needs the sensor to start as root (it runs as uid {uid})")]
    NotRoot { uid: u32 },
    /// An output file could not be handed to the account.
    #[error("giving {} to user `{user}`", path.display())]
    Chown {
        path: PathBuf,
        user: String,
        #[source]
        source: io::Error,
    },
    /// A directory the run writes into after the switch is not writable by
    /// the account.
    #[error("{option}: directory {} is not writable by user `{user}`; give the account write access or choose another directory", dir.display())]
    Unwritable {
        option: &'static str,
        dir: PathBuf,
        user: String,
    },
    /// A `set*id` call failed.
    #[error("{call} to user `{user}` failed")]
    Switch {
        call: &'static str,
        user: String,
        #[source]
        source: io::Error,
    },
    /// After the switch, a thread still has root's ids or a capability.
    #[error("thread {tid} kept privileges after switching to user `{user}`: {detail}")]
    Kept {
        tid: String,
        user: String,
        detail: String,
    },
}

/// The account `sensor run` switches to after attaching.
#[derive(Debug, Clone)]
pub struct Account {
    user: String,
    uid: Uid,
    gid: Gid,
}

impl Account {
    /// Looks `user` up, and `group` (default: the user's primary group).
    ///
    /// # Errors
    /// Unknown user or group, a database that cannot be read, or root.
    pub fn resolve(user: &str, group: Option<&str>) -> Result<Self, PrivilegeError> {
        let lookup = |source: nix::Error| PrivilegeError::Lookup {
            name: user.to_owned(),
            source: source.into(),
        };
        let found =
            User::from_name(user)
                .map_err(lookup)?
                .ok_or_else(|| PrivilegeError::UnknownUser {
                    name: user.to_owned(),
                })?;
        if found.uid.is_root() {
            return Err(PrivilegeError::RootAccount {
                name: user.to_owned(),
            });
        }
        let gid = match group {
            None => found.gid,
            Some(name) => {
                Group::from_name(name)
                    .map_err(|source| PrivilegeError::Lookup {
                        name: name.to_owned(),
                        source: source.into(),
                    })?
                    .ok_or_else(|| PrivilegeError::UnknownGroup {
                        name: name.to_owned(),
                    })?
                    .gid
            }
        };
        Ok(Self {
            user: user.to_owned(),
            uid: found.uid,
            gid,
        })
    }

    /// The account's name.
    #[must_use]
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The account's user id.
    #[must_use]
    pub fn uid(&self) -> u32 {
        self.uid.as_raw()
    }

    /// The group the sensor runs as.
    #[must_use]
    pub fn gid(&self) -> u32 {
        self.gid.as_raw()
    }

    /// Fails unless the process can switch accounts: it must start as root.
    ///
    /// # Errors
    /// [`PrivilegeError::NotRoot`].
    pub fn check_can_switch() -> Result<(), PrivilegeError> {
        let uid = geteuid();
        if uid.is_root() {
            Ok(())
        } else {
            Err(PrivilegeError::NotRoot { uid: uid.as_raw() })
        }
    }

    /// Makes a file the process created (an output written at exit) owned
    /// by the account, so the account owns what it writes.
    ///
    /// # Errors
    /// [`PrivilegeError::Chown`].
    pub fn hand_over(&self, file: &File, path: &Path) -> Result<(), PrivilegeError> {
        nix::unistd::fchown(file.as_fd(), Some(self.uid), Some(self.gid)).map_err(|e| {
            PrivilegeError::Chown {
                path: path.to_owned(),
                user: self.user.clone(),
                source: e.into(),
            }
        })
    }

    /// Gives the account the sensor's pin directory, so that, unprivileged,
    /// it still removes its pins at a clean stop (which detaches the
    /// program: its link is pinned there) or rewrites its liveness record
    /// for `--keep-state`. Removing and creating entries needs write access
    /// to the directory only, no capability and no ownership of the pins.
    ///
    /// # Errors
    /// [`PrivilegeError::Chown`].
    pub fn give_dir(&self, dir: &Path) -> Result<(), PrivilegeError> {
        nix::unistd::chown(dir, Some(self.uid), Some(self.gid)).map_err(|e| PrivilegeError::Chown {
            path: dir.to_owned(),
            user: self.user.clone(),
            source: e.into(),
        })
    }

    /// Switches every thread of the process to the account, for good, and
    /// checks that no thread kept root's ids or any capability. Then
    /// checks that the account can write into each of `dirs` (the option
    /// that names it, the directory), where outputs are renamed into place
    /// or rotated.
    ///
    /// # Errors
    /// A switch call failed, a thread kept privileges, or a directory is
    /// not writable by the account.
    pub fn switch(&self, dirs: &[(&'static str, PathBuf)]) -> Result<(), PrivilegeError> {
        let fail = |call: &'static str| {
            move |e: nix::Error| PrivilegeError::Switch {
                call,
                user: self.user.clone(),
                source: e.into(),
            }
        };
        // Groups first: once the uid changes, CAP_SETGID is gone.
        setgroups(&[self.gid]).map_err(fail("setgroups"))?;
        setresgid(self.gid, self.gid, self.gid).map_err(fail("setresgid"))?;
        setresuid(self.uid, self.uid, self.uid).map_err(fail("setresuid"))?;
        self.check_every_thread()?;
        // No way back: without CAP_SETUID the kernel refuses root.
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(PrivilegeError::Kept {
                tid: "*".into(),
                user: self.user.clone(),
                detail: "setuid(0) succeeded".into(),
            });
        }
        for (option, dir) in dirs {
            // `access` checks the real ids, which are now the account's.
            if access(dir.as_path(), AccessFlags::W_OK | AccessFlags::X_OK).is_err() {
                return Err(PrivilegeError::Unwritable {
                    option,
                    dir: dir.clone(),
                    user: self.user.clone(),
                });
            }
        }
        Ok(())
    }

    /// Reads `/proc/self/task/*/status`: every thread must have the
    /// account's ids and empty permitted, effective and ambient sets.
    fn check_every_thread(&self) -> Result<(), PrivilegeError> {
        let kept = |tid: &str, detail: String| PrivilegeError::Kept {
            tid: tid.to_owned(),
            user: self.user.clone(),
            detail,
        };
        let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| kept("*", e.to_string()))?;
        for task in tasks {
            let task = task.map_err(|e| kept("*", e.to_string()))?;
            let tid = task.file_name().to_string_lossy().into_owned();
            let status = match std::fs::read_to_string(task.path().join("status")) {
                Ok(s) => s,
                // A thread that ended meanwhile holds nothing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(kept(&tid, e.to_string())),
            };
            let creds = ThreadCreds::parse(&status).ok_or_else(|| {
                kept(
                    &tid,
                    "unreadable /proc status (no Uid/Gid/Cap lines)".into(),
                )
            })?;
            if let Some(detail) = creds.differs_from(self.uid(), self.gid()) {
                return Err(kept(&tid, detail));
            }
        }
        Ok(())
    }
}

/// The identity lines of one `/proc/<pid>/task/<tid>/status`.
#[derive(Debug, PartialEq, Eq)]
pub struct ThreadCreds {
    /// Real, effective, saved and filesystem uids.
    pub uids: [u32; 4],
    /// Real, effective, saved and filesystem gids.
    pub gids: [u32; 4],
    /// Permitted, effective and ambient capability sets (bit masks).
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_amb: u64,
}

impl ThreadCreds {
    /// Parses the `Uid`, `Gid`, `CapPrm`, `CapEff` and `CapAmb` lines.
    #[must_use]
    pub fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let ids = |name: &str| -> Option<[u32; 4]> {
            let v: Vec<u32> = field(name)?
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            v.try_into().ok()
        };
        let caps = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
        Some(Self {
            uids: ids("Uid")?,
            gids: ids("Gid")?,
            cap_prm: caps("CapPrm")?,
            cap_eff: caps("CapEff")?,
            cap_amb: caps("CapAmb")?,
        })
    }

    /// What differs from "all ids are `uid`/`gid`, no capability", if
    /// anything.
    #[must_use]
    pub fn differs_from(&self, uid: u32, gid: u32) -> Option<String> {
        if self.uids.iter().any(|&u| u != uid) {
            return Some(format!("uids {:?}", self.uids));
        }
        if self.gids.iter().any(|&g| g != gid) {
            return Some(format!("gids {:?}", self.gids));
        }
        if self.cap_prm | self.cap_eff | self.cap_amb != 0 {
            return Some(format!(
                "capabilities permitted {:#x}, effective {:#x}, ambient {:#x}",
                self.cap_prm, self.cap_eff, self.cap_amb
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsensor\nUmask:\t0022\nState:\tS (sleeping)\n\
        Uid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n\
        CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
        CapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";

    #[test]
    fn status_lines_parse() {
        let c = ThreadCreds::parse(STATUS).unwrap();
        assert_eq!(c.uids, [65534; 4]);
        assert_eq!(c.gids, [65534; 4]);
        assert_eq!((c.cap_prm, c.cap_eff, c.cap_amb), (0, 0, 0));
        assert_eq!(c.differs_from(65534, 65534), None);
        assert!(c.differs_from(0, 65534).unwrap().contains("uids"));
        assert!(c.differs_from(65534, 0).unwrap().contains("gids"));
        let root = STATUS.replace("CapEff:\t0000000000000000", "CapEff:\t000001ffffffffff");
        let detail = ThreadCreds::parse(&root)
            .unwrap()
            .differs_from(65534, 65534)
            .unwrap();
        assert!(detail.contains("effective 0x1ffffffffff"), "{detail}");
        assert_eq!(ThreadCreds::parse("Name:\tx\n"), None);
    }

    #[test]
    fn accounts_are_checked_before_anything_runs() {
        let e = Account::resolve("no-such-user-xdp-sensor", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--user `no-such-user-xdp-sensor`: no such user"
        );
        let e = Account::resolve("root", None).unwrap_err();
        assert!(matches!(e, PrivilegeError::RootAccount { .. }), "{e}");
        let e = Account::resolve("nobody", Some("no-such-group-xdp-sensor")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--group `no-such-group-xdp-sensor`: no such group"
        );
        let nobody = Account::resolve("nobody", None).unwrap();
        assert_ne!(nobody.uid(), 0);
        assert_eq!(nobody.user(), "nobody");
    }
}
