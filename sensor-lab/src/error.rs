//! Errors of the lab. Each says which command or system call failed and why,
//! so a failing network test points at its cause.

use std::path::PathBuf;

/// Everything that can go wrong while building a lab, sending traffic or
/// driving the sensor.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command could not be started at all (binary missing, not executable).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Sys {
        call: String,
        #[source]
        source: std::io::Error,
    },
    /// A frame could not be built (payload too large for the header format).
    #[error("cannot build frame: {reason}")]
    Frame { reason: String },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A sensor output file is not the expected JSON.
    #[error("{}: line {line}: {source}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// A capture file is unusable (format, link type, truncation).
    #[error("capture {}: {reason}", path.display())]
    Capture { path: PathBuf, reason: String },
    /// The capture manifest is malformed or disagrees with the files.
    #[error("manifest {}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    /// A tool a lab scenario needs is not installed.
    #[error(
        "`{tool}` is not installed: install the Debian package `{package}` (or run `cargo xtask setup`)"
    )]
    MissingTool { tool: String, package: String },
    /// A scenario name that the catalogue does not have.
    #[error("unknown scenario `{name}` (`cargo xtask lab list` shows them)")]
    UnknownScenario { name: String },
    /// Waiting for something (XDP attach, process exit) took too long.
    #[error("timed out after {seconds:.1} s waiting for {what}")]
    Timeout { what: String, seconds: f64 },
}

impl LabError {
    /// Wraps the current `errno` for the named call.
    pub(crate) fn last_os(call: impl Into<String>) -> Self {
        Self::Sys {
            call: call.into(),
            source: std::io::Error::last_os_error(),
        }
    }
}

/// Result with a [`LabError`].
pub type Result<T, E = LabError> = std::result::Result<T, E>;
