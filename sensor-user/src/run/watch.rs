//! Watches the model registry's state file, so a promotion (`sensor models
//! promote`, which renames a new `registry.json` into place) reaches a
//! running sensor without a signal. inotify (through `notify`) reports the
//! change on a thread of its own; that thread writes one byte to a socket
//! pair whose other end the signal loop polls beside its `signalfd`.

use std::{
    ffi::OsStr,
    io::{Read as _, Write as _},
    os::{
        fd::{AsFd, BorrowedFd},
        unix::net::UnixStream,
    },
    path::Path,
};

use notify::{EventKind, RecursiveMode, Watcher as _};

use crate::{capture::error::SensorError, model::registry::REGISTRY_FILE};

/// A running watch on one models directory.
pub(crate) struct RegistryWatch {
    _watcher: notify::RecommendedWatcher,
    wake: UnixStream,
}

impl RegistryWatch {
    /// Starts watching `dir` for changes to its `registry.json`.
    ///
    /// # Errors
    /// The socket pair or the inotify watch cannot be set up.
    pub(crate) fn start(dir: &Path) -> Result<Self, SensorError> {
        let sys = |what, source| SensorError::System { what, source };
        let (wake, notifier) =
            UnixStream::pair().map_err(|e| sys("creating the registry watch's socket pair", e))?;
        wake.set_nonblocking(true)
            .and_then(|()| notifier.set_nonblocking(true))
            .map_err(|e| sys("setting up the registry watch's socket pair", e))?;
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else { return };
            let relevant = !matches!(ev.kind, EventKind::Access(_))
                && ev
                    .paths
                    .iter()
                    .any(|p| p.file_name() == Some(OsStr::new(REGISTRY_FILE)));
            if relevant {
                // A full socket already holds a wake-up: nothing is lost.
                let _ = (&notifier).write(&[1]);
            }
        })
        .map_err(|e| sys("starting the registry watch", std::io::Error::other(e)))?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| sys("watching the models directory", std::io::Error::other(e)))?;
        Ok(Self {
            _watcher: watcher,
            wake,
        })
    }

    /// The descriptor that becomes readable when the registry changed.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Consumes the pending wake-ups (several events of one change are one
    /// reload).
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }
}
