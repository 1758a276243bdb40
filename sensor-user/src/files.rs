//! Files the sensor creates. Every mode is set explicitly with `fchmod`
//! (the umask never decides who can read a store or a log), and outputs are
//! written to a temporary file beside their target and renamed into place
//! when complete: a failed start leaves the previous file untouched, and a
//! crash leaves at most a hidden `.NAME.XXXXXX.tmp`, never a truncated file.

use std::{
    fs::{File, OpenOptions, Permissions},
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// The verdict store, the alert record log and configuration files: the
/// owner only.
pub const PRIVATE_MODE: u32 = 0o600;
/// EVE and other log files: the owner writes, its group (a log shipper) reads.
pub const LOG_MODE: u32 = 0o640;
/// End-of-run outputs and recordings: as logs.
pub const OUTPUT_MODE: u32 = 0o640;
/// Documentation the sensor writes (manual pages): anyone reads.
pub const PUBLIC_MODE: u32 = 0o644;

/// Opens `path` for appending (and reading, when `read`), creating it with
/// `mode` when it does not exist. An existing file keeps its mode: an
/// operator may have widened or narrowed it on purpose.
///
/// # Errors
/// The file cannot be opened or created, or its mode cannot be set.
pub fn open_append(path: &Path, mode: u32, read: bool) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.append(true).read(read);
    match opts.clone().create_new(true).open(path) {
        Ok(file) => {
            file.set_permissions(Permissions::from_mode(mode))?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => opts.open(path),
        Err(e) => Err(e),
    }
}

/// Creates (or truncates) `path` with exactly `mode`, for a file that is
/// rewritten from the start in place (a rotated log of one file).
///
/// # Errors
/// The file cannot be created or its mode cannot be set.
pub fn create_truncated(path: &Path, mode: u32) -> io::Result<File> {
    let file = File::create(path)?;
    file.set_permissions(Permissions::from_mode(mode))?;
    Ok(file)
}

/// A file written at a temporary path in its target's directory (so the
/// rename stays on one filesystem) and renamed over the target by
/// [`PendingFile::commit`]. Dropped uncommitted, the temporary file is
/// removed and the target is untouched.
#[derive(Debug)]
pub struct PendingFile {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl PendingFile {
    /// Creates the temporary file beside `target`, with `mode`.
    ///
    /// # Errors
    /// The directory does not exist or is not writable.
    pub fn create(target: &Path, mode: u32) -> io::Result<Self> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)?;
        tmp.as_file()
            .set_permissions(Permissions::from_mode(mode))?;
        Ok(Self {
            tmp,
            target: target.to_owned(),
        })
    }

    /// The path the file will have once committed.
    #[must_use]
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The open temporary file, read-only access (its metadata, owner).
    #[must_use]
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// The open temporary file.
    pub fn file_mut(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Flushes the file to disk and renames it over the target.
    ///
    /// # Errors
    /// Syncing or renaming failed (the target is then untouched).
    pub fn commit(self) -> io::Result<()> {
        self.tmp.as_file().sync_all()?;
        let dir = self.tmp.path().parent().map(Path::to_owned);
        self.tmp.persist(&self.target).map_err(|e| e.error)?;
        // Make the rename itself durable; a directory that cannot be opened
        // for syncing still has the file.
        if let Some(dir) = dir
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Replaces `path` with `bytes` atomically, the new file having `mode`.
///
/// # Errors
/// As [`PendingFile::create`], writing, and [`PendingFile::commit`].
pub fn write_atomic(path: &Path, mode: u32, bytes: &[u8]) -> io::Result<()> {
    let mut f = PendingFile::create(path, mode)?;
    f.file_mut().write_all(bytes)?;
    f.commit()
}

/// The permission bits of an existing file (`None` when it does not exist).
///
/// # Errors
/// The file exists but cannot be examined.
pub fn existing_mode(path: &Path) -> io::Result<Option<u32>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.permissions().mode() & 0o7777)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A fresh, empty directory for a unit test: `sensor-<name>-<pid>` under the
/// system's temporary directory.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sensor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        test_dir(&format!("files-{name}"))
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn pending_file_replaces_only_on_commit() {
        let d = tmpdir("pending");
        let target = d.join("stats.json");
        std::fs::write(&target, b"old").unwrap();
        let mut f = PendingFile::create(&target, OUTPUT_MODE).unwrap();
        f.file_mut().write_all(b"new").unwrap();
        drop(f);
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"old",
            "dropped: untouched"
        );
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "temp file removed"
        );
        write_atomic(&target, OUTPUT_MODE, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(mode(&target), OUTPUT_MODE);
    }

    #[test]
    fn append_sets_the_mode_of_new_files_only() {
        let d = tmpdir("append");
        let p = d.join("store.jsonl");
        drop(open_append(&p, PRIVATE_MODE, true).unwrap());
        assert_eq!(mode(&p), PRIVATE_MODE);
        std::fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        drop(open_append(&p, PRIVATE_MODE, true).unwrap());
        assert_eq!(mode(&p), 0o644, "an existing file keeps its mode");
        assert_eq!(existing_mode(&p).unwrap(), Some(0o644));
        assert_eq!(existing_mode(&d.join("none")).unwrap(), None);
    }
}
