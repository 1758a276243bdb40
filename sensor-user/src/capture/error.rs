//! Errors of the sensor library. Each variant's message is one line a network
//! engineer can act on without reading the source; the underlying cause stays
//! attached as `source` for `RUST_LOG=debug` and for callers that want it.

use std::{io, path::PathBuf};

use aya::{EbpfError, maps::MapError, programs::ProgramError};

/// Everything that can go wrong while loading, attaching, running or
/// reporting.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The interface name does not resolve to an interface index.
    #[error("no such network interface `{iface}` (see `ip link`)")]
    NoSuchInterface { iface: String },

    /// The kernel refused to create maps or load the program: not root, or
    /// missing capabilities.
    #[error(
        "permission denied loading the XDP program: run as root or grant \
         CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
    )]
    PermissionDenied {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The eBPF object could not be loaded for another reason (verifier
    /// rejection, map creation failure, BTF problem).
    #[error("loading the XDP program failed")]
    Load {
        #[source]
        source: Box<EbpfError>,
    },

    /// The program inside the object failed to load (verifier) or is missing.
    #[error("loading program `{name}` failed")]
    Program {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },

    /// The program's XDP link could not be taken over.
    #[error("{what} the XDP link on `{iface}`")]
    Link {
        iface: String,
        what: &'static str,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },

    /// The object was built without the XDP program.
    #[error(
        "the XDP object has no program `{name}` (rebuild sensor-ebpf and sensor-user together)"
    )]
    MissingProgram { name: &'static str },

    /// The object was built without a map the user side needs: the eBPF and
    /// user crates are out of step.
    #[error("the XDP object has no map `{name}` (rebuild sensor-ebpf and sensor-user together)")]
    MissingMap { name: &'static str },

    /// A map exists but has the wrong type or key/value layout.
    #[error("map `{name}` has an unexpected type or layout")]
    MapType {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },

    /// A map read or write failed at run time.
    #[error("{op} map `{name}` failed")]
    MapAccess {
        name: &'static str,
        op: &'static str,
        #[source]
        source: Box<MapError>,
    },

    /// The driver has no native XDP support; generic (skb) mode works
    /// everywhere.
    #[error("interface `{iface}` does not support native XDP; try --mode skb")]
    NativeXdpUnsupported {
        iface: String,
        #[source]
        source: Box<ProgramError>,
    },

    /// Another XDP program already owns the interface.
    #[error(
        "interface `{iface}` already has an XDP program attached; remove it with \
         `ip link set dev {iface} xdp off`"
    )]
    XdpAlreadyAttached {
        iface: String,
        #[source]
        source: Box<ProgramError>,
    },

    /// Attaching failed for another reason.
    #[error("attaching XDP to `{iface}` in {mode} mode failed{hint}")]
    Attach {
        iface: String,
        mode: &'static str,
        /// Empty, or a suggestion such as "; try --mode skb".
        hint: &'static str,
        #[source]
        source: Box<ProgramError>,
    },

    /// `sensor stats` found no pinned counters: no sensor runs on the
    /// interface, or it runs without a BPF filesystem.
    #[error(
        "no running sensor on `{iface}` (nothing pinned at {}; is `sensor run --iface {iface}` running in this mount namespace?)",
        path.display()
    )]
    NotRunning { iface: String, path: PathBuf },

    /// `sensor stats` found the pins of a sensor that has died (killed, or
    /// its program detached): its counters no longer move.
    #[error(
        "the sensor on {iface} (pid {pid}) is not running; its state waits for the next `sensor run` to adopt it"
    )]
    StaleCounters { iface: String, pid: u32 },

    /// Another live sensor already holds the interface's pins.
    #[error("a sensor (pid {pid}) is already running on `{iface}`")]
    AlreadyRunning { iface: String, pid: u32 },

    /// The pin directory or liveness record could not be made or removed.
    #[error("cannot manage the sensor's pins at {}", path.display())]
    Pin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `sensor block del` named a prefix the blocklist does not hold.
    #[error(
        "{prefix} is not in the blocklist of `{iface}` (see `sensor block list --iface {iface}`)"
    )]
    NotBlocked { prefix: String, iface: String },

    /// A command-line or configuration value is out of range.
    #[error("invalid {what}: {reason}")]
    InvalidConfig { what: &'static str, reason: String },

    /// An output file could not be written.
    #[error("cannot write {}", path.display())]
    WriteOutput {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `--user`/`--group` could not be honoured.
    #[error(transparent)]
    Privileges(#[from] crate::capture::privileges::PrivilegeError),

    /// `--metrics-addr` cannot be listened on (in use, not local, port
    /// below 1024 without privilege).
    #[error("cannot listen on --metrics-addr {addr}")]
    MetricsAddr {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },

    /// A system call the runtime needs (signals, threads, poll) failed.
    #[error("{what} failed")]
    System {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl SensorError {
    /// Shorthand for [`SensorError::System`] from a `nix` errno.
    #[must_use]
    pub fn system(what: &'static str, errno: nix::errno::Errno) -> Self {
        Self::System {
            what,
            source: io::Error::from(errno),
        }
    }
}

/// The first OS error number found while walking `err`'s source chain. aya
/// nests the errno a few levels down (`EbpfError` → `MapError` →
/// `io::Error`), and the user-facing diagnosis depends only on it.
#[must_use]
pub(crate) fn find_errno(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            return Some(code);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_is_found_through_nested_sources() {
        let inner = io::Error::from_raw_os_error(libc::EPERM);
        let map = MapError::CreateError {
            name: "FLOW_TABLE".into(),
            io_error: inner,
        };
        let ebpf = EbpfError::MapError(map);
        assert_eq!(find_errno(&ebpf), Some(libc::EPERM));
    }

    #[test]
    fn messages_are_single_lines() {
        let e = SensorError::NoSuchInterface {
            iface: "nope0".into(),
        };
        assert_eq!(
            e.to_string(),
            "no such network interface `nope0` (see `ip link`)"
        );
        let e = SensorError::InvalidConfig {
            what: "--ring-bytes",
            reason: "must be a power of two".into(),
        };
        assert!(!e.to_string().contains('\n'));
    }
}
