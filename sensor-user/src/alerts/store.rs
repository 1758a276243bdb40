//! Append-only, checksummed JSON-lines logs: the verdict store and the alert
//! record log.
//!
//! Why not SQLite: the store is written a few times a day by an operator and
//! read incrementally by a poller, so an append-only file needs no schema
//! migrations, no C dependency and can be inspected with `jq`. Durability comes
//! from one `write(2)` per record on an `O_APPEND` descriptor under `flock`,
//! followed by `fsync`; crash safety from a CRC-32 per record: a line torn by a
//! crash (no trailing newline, or a checksum mismatch) is skipped and reported,
//! and the next writer cuts a torn tail off before appending.
//!
//! Line format (valid JSON, fixed layout so the checksummed bytes are exactly
//! the bytes of `record`):
//!
//! ```text
//! {"crc32":"1a2b3c4d","record":{...}}\n
//! ```

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom, Write},
    os::{fd::AsRawFd, unix::fs::FileExt},
    path::{Path, PathBuf},
};

use serde::{Serialize, de::DeserializeOwned};

use super::AlertsError;

const PREFIX: &[u8] = b"{\"crc32\":\"";
const MIDDLE: &[u8] = b"\",\"record\":";
/// Bytes before the record: prefix, 8 hex digits, middle.
const HEADER_LEN: usize = PREFIX.len() + 8 + MIDDLE.len();

/// Encodes one record as a checksummed line (with its trailing newline).
///
/// # Errors
/// When the record cannot be serialised.
pub(crate) fn encode_line<T: Serialize>(
    record: &T,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    out.clear();
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(b"00000000");
    out.extend_from_slice(MIDDLE);
    serde_json::to_writer(&mut *out, record)?;
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    let hex = format!("{crc:08x}");
    out[PREFIX.len()..PREFIX.len() + 8].copy_from_slice(hex.as_bytes());
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// Checks one line (without its newline) and returns the record bytes.
fn decode_line(line: &[u8]) -> Option<&[u8]> {
    if line.len() < HEADER_LEN + 1
        || !line.starts_with(PREFIX)
        || &line[PREFIX.len() + 8..HEADER_LEN] != MIDDLE
        || line[line.len() - 1] != b'}'
    {
        return None;
    }
    let hex = std::str::from_utf8(&line[PREFIX.len()..PREFIX.len() + 8]).ok()?;
    let want = u32::from_str_radix(hex, 16).ok()?;
    let record = &line[HEADER_LEN..line.len() - 1];
    (crc32fast::hash(record) == want).then_some(record)
}

/// Holds an exclusive `flock` for as long as it lives.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn exclusive(file: &'a File, path: &Path) -> Result<Self, AlertsError> {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(AlertsError::Io {
                path: path.to_path_buf(),
                action: "lock",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above; unlocking cannot fail in a way we could handle.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Appends checksummed records to a log file.
pub struct LogWriter {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    /// Torn tails cut off by this writer (a crashed writer left half a line).
    pub torn_tails_repaired: u64,
}

impl LogWriter {
    /// Opens (creating it and its directory if needed) the log at `path`.
    ///
    /// # Errors
    /// When the file cannot be created or opened.
    pub fn open(path: &Path) -> Result<Self, AlertsError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| AlertsError::Io {
                path: dir.to_path_buf(),
                action: "create directory",
                source,
            })?;
        }
        // Verdicts and alert records name hosts: the owner only.
        let file = crate::files::open_append(path, crate::files::PRIVATE_MODE, true).map_err(
            |source| AlertsError::Io {
                path: path.to_path_buf(),
                action: "open",
                source,
            },
        )?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            buf: Vec::with_capacity(512),
            torn_tails_repaired: 0,
        })
    }

    /// Cuts a torn last line (no trailing newline) so the next record starts
    /// on a line of its own. Called under the lock.
    fn repair_tail(&mut self) -> std::io::Result<()> {
        let len = self.file.metadata()?.len();
        if len == 0 {
            return Ok(());
        }
        let mut last = [0u8; 1];
        self.file.read_exact_at(&mut last, len - 1)?;
        if last[0] == b'\n' {
            return Ok(());
        }
        // Scan backwards in chunks for the last newline.
        let mut end = len;
        let mut cut = 0u64;
        let mut chunk = vec![0u8; 4096];
        while end > 0 {
            let start = end.saturating_sub(chunk.len() as u64);
            let n = usize::try_from(end - start).unwrap_or(chunk.len());
            self.file.read_exact_at(&mut chunk[..n], start)?;
            if let Some(pos) = chunk[..n].iter().rposition(|&b| b == b'\n') {
                cut = start + pos as u64 + 1;
                break;
            }
            end = start;
        }
        self.file.set_len(cut)?;
        self.torn_tails_repaired += 1;
        Ok(())
    }

    /// Appends one record; with `sync`, returns only once it is on disk.
    ///
    /// # Errors
    /// When serialisation, locking, writing or syncing fails.
    pub fn append<T: Serialize>(&mut self, record: &T, sync: bool) -> Result<(), AlertsError> {
        let mut buf = std::mem::take(&mut self.buf);
        encode_line(record, &mut buf).map_err(|source| AlertsError::Encode {
            path: self.path.clone(),
            source,
        })?;
        let file = self.file.try_clone().map_err(|source| AlertsError::Io {
            path: self.path.clone(),
            action: "clone descriptor",
            source,
        })?;
        let result = {
            let _lock = FileLock::exclusive(&file, &self.path)?;
            self.repair_tail()
                .and_then(|()| (&self.file).write_all(&buf))
                .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) })
        };
        self.buf = buf;
        result.map_err(|source| AlertsError::Io {
            path: self.path.clone(),
            action: "append",
            source,
        })
    }

    /// Makes every appended record durable.
    ///
    /// # Errors
    /// When `fsync` fails.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Path of the log.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a read found besides good records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Good records returned.
    pub records: u64,
    /// Complete lines whose checksum or JSON did not verify (skipped).
    pub corrupt_lines: u64,
    /// The file ends in a partial line (a writer died mid-record); it is
    /// left for the next writer to cut and not returned.
    pub torn_tail: bool,
}

/// Reads a log incrementally: each call returns records appended since the
/// previous call. Only complete lines are consumed, so a record being written
/// concurrently is picked up by a later call.
pub(crate) struct LogReader {
    path: PathBuf,
    offset: u64,
    pending: Vec<u8>,
}

impl LogReader {
    #[must_use]
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            pending: Vec::new(),
        }
    }

    /// Appends new good records to `out`. A missing file reads as empty.
    ///
    /// # Errors
    /// When the file exists but cannot be read.
    pub(crate) fn read_new<T: DeserializeOwned>(
        &mut self,
        out: &mut Vec<T>,
    ) -> Result<ReadReport, AlertsError> {
        let io_err = |source| AlertsError::Io {
            path: self.path.clone(),
            action: "read",
            source,
        };
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadReport::default()),
            Err(e) => return Err(io_err(e)),
        };
        let len = file.metadata().map_err(io_err)?.len();
        if len < self.offset {
            // Replaced or truncated by hand: start over.
            self.offset = 0;
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(io_err)?;
        self.pending.clear();
        file.read_to_end(&mut self.pending).map_err(io_err)?;
        let mut report = ReadReport::default();
        let complete = match self.pending.iter().rposition(|&b| b == b'\n') {
            Some(p) => p + 1,
            None => 0,
        };
        report.torn_tail = complete < self.pending.len();
        for line in self.pending[..complete].split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            match decode_line(line).and_then(|rec| serde_json::from_slice::<T>(rec).ok()) {
                Some(rec) => {
                    out.push(rec);
                    report.records += 1;
                }
                None => report.corrupt_lines += 1,
            }
        }
        self.offset += complete as u64;
        Ok(report)
    }
}

/// Reads every good record of a log.
///
/// # Errors
/// When the file exists but cannot be read.
pub fn read_all<T: DeserializeOwned>(path: &Path) -> Result<(Vec<T>, ReadReport), AlertsError> {
    let mut out = Vec::new();
    let report = LogReader::new(path).read_new(&mut out)?;
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Rec {
        n: u32,
        s: String,
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sensor-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("log.jsonl")
    }

    #[test]
    fn lines_round_trip_and_bit_flips_are_caught() {
        let mut line = Vec::new();
        encode_line(
            &Rec {
                n: 7,
                s: "x\"y".into(),
            },
            &mut line,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["record"]["n"], 7);
        let body = &line[..line.len() - 1];
        assert!(decode_line(body).is_some());
        let mut bad = body.to_vec();
        let i = HEADER_LEN + 5;
        bad[i] ^= 1;
        assert!(decode_line(&bad).is_none());
    }

    #[test]
    fn torn_tail_is_reported_then_cut_by_next_writer() {
        let path = tmp("torn");
        let mut w = LogWriter::open(&path).unwrap();
        for n in 0..3 {
            w.append(&Rec { n, s: "ok".into() }, true).unwrap();
        }
        // A crashed writer left half a record.
        let mut half = Vec::new();
        encode_line(
            &Rec {
                n: 99,
                s: "torn".into(),
            },
            &mut half,
        )
        .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&half[..half.len() / 2])
            .unwrap();
        let (recs, report) = read_all::<Rec>(&path).unwrap();
        assert_eq!(recs.len(), 3);
        assert!(report.torn_tail);
        let mut w2 = LogWriter::open(&path).unwrap();
        w2.append(
            &Rec {
                n: 3,
                s: "after".into(),
            },
            true,
        )
        .unwrap();
        assert_eq!(w2.torn_tails_repaired, 1);
        let (recs, report) = read_all::<Rec>(&path).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.n).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            report,
            ReadReport {
                records: 4,
                corrupt_lines: 0,
                torn_tail: false
            }
        );
    }

    #[test]
    fn reader_is_incremental_and_skips_corrupt_lines() {
        let path = tmp("incr");
        let mut w = LogWriter::open(&path).unwrap();
        let mut r = LogReader::new(&path);
        let mut out: Vec<Rec> = Vec::new();
        assert_eq!(r.read_new(&mut out).unwrap().records, 0);
        w.append(
            &Rec {
                n: 1,
                s: String::new(),
            },
            false,
        )
        .unwrap();
        assert_eq!(r.read_new(&mut out).unwrap().records, 1);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"crc32\":\"00000000\",\"record\":{\"n\":5,\"s\":\"\"}}\n")
            .unwrap();
        w.append(
            &Rec {
                n: 2,
                s: String::new(),
            },
            false,
        )
        .unwrap();
        let rep = r.read_new(&mut out).unwrap();
        assert_eq!((rep.records, rep.corrupt_lines), (1, 1));
        assert_eq!(out.iter().map(|r| r.n).collect::<Vec<_>>(), vec![1, 2]);
    }
}
