//! Where alert records go: stdout, a size-rotated file, a Unix datagram or
//! stream socket, or memory (tests, embedding). Each record is one JSON line.
//!
//! Sinks never stop the alert stage: a failing sink counts the error and drops
//! the line, and the socket sinks reconnect by themselves.

pub mod recorder;

use std::{
    fs::File,
    io::{BufWriter, Write},
    os::unix::net::{UnixDatagram, UnixStream},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::alerts::{AlertOutput, AlertsError, config::SinkConfig};

/// One destination for JSON lines.
pub trait Sink: Send {
    /// Writes one record (`line` has no trailing newline).
    ///
    /// # Errors
    /// When the record could not be delivered; the caller counts it.
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()>;

    /// Pushes buffered records out (called when the stage is idle and at exit).
    ///
    /// # Errors
    /// As `write_line`.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Standard output, buffered (flushed when the stage goes idle).
pub(crate) struct StdoutSink {
    out: BufWriter<std::io::Stdout>,
}

impl StdoutSink {
    #[must_use]
    pub(crate) fn new() -> Self {
        Self {
            out: BufWriter::new(std::io::stdout()),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.out.write_all(line)?;
        self.out.write_all(b"\n")
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A file rotated by size: when the next line would take `path` past
/// `max_bytes`, `path.(k-1)` → `path.k` … `path` → `path.1`, keeping `keep`
/// files in all (the live one included).
pub(crate) struct RotatingFileSink {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    out: BufWriter<File>,
    size: u64,
    /// Rotations performed.
    pub rotations: u64,
}

impl RotatingFileSink {
    /// Opens (appending to) `path`.
    ///
    /// # Errors
    /// When the file or its directory cannot be created.
    pub(crate) fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<Self, AlertsError> {
        let io = |action, source| AlertsError::Io {
            path: path.to_path_buf(),
            action,
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
        }
        let file = Self::open_file(path).map_err(|e| io("open", e))?;
        let size = file.metadata().map_err(|e| io("stat", e))?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep: keep.max(1),
            out: BufWriter::new(file),
            size,
            rotations: 0,
        })
    }

    fn open_file(path: &Path) -> std::io::Result<File> {
        crate::files::open_append(path, crate::files::LOG_MODE, false)
    }

    fn numbered(&self, k: usize) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{k}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.keep == 1 {
            self.out = BufWriter::new(crate::files::create_truncated(
                &self.path,
                crate::files::LOG_MODE,
            )?);
        } else {
            let _ = std::fs::remove_file(self.numbered(self.keep - 1));
            for k in (1..self.keep - 1).rev() {
                let from = self.numbered(k);
                if from.exists() {
                    std::fs::rename(&from, self.numbered(k + 1))?;
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
            self.out = BufWriter::new(Self::open_file(&self.path)?);
        }
        self.size = 0;
        self.rotations += 1;
        Ok(())
    }
}

impl Sink for RotatingFileSink {
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let n = line.len() as u64 + 1;
        if self.size > 0 && self.size + n > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line)?;
        self.out.write_all(b"\n")?;
        self.size += n;
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// How long a socket sink waits before trying to reconnect.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// A socket a sink reconnects by itself: one attempt at most every
/// [`RECONNECT_EVERY`], so a missing reader costs one syscall a second.
struct Reconnecting<S> {
    path: PathBuf,
    sock: Option<S>,
    last_try: Option<Instant>,
}

impl<S> Reconnecting<S> {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            sock: None,
            last_try: None,
        }
    }

    /// The connected socket, opening it with `open` when due.
    fn get(&mut self, open: impl FnOnce(&Path) -> std::io::Result<S>) -> std::io::Result<&mut S> {
        if self.sock.is_none() {
            if self.last_try.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "waiting to reconnect",
                ));
            }
            self.last_try = Some(Instant::now());
            self.sock = Some(open(&self.path)?);
        }
        Ok(self.sock.as_mut().expect("connected above"))
    }

    /// Forgets the socket after an error; the next write reconnects.
    fn drop_socket(&mut self) {
        self.sock = None;
    }
}

/// A Unix datagram socket: one record per datagram, sent without blocking;
/// reconnects at most once a second after an error.
pub(crate) struct UnixDatagramSink {
    conn: Reconnecting<UnixDatagram>,
    buf: Vec<u8>,
}

impl UnixDatagramSink {
    #[must_use]
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            conn: Reconnecting::new(path),
            buf: Vec::new(),
        }
    }
}

impl Sink for UnixDatagramSink {
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(line);
        buf.push(b'\n');
        let r = self
            .conn
            .get(|path| {
                let s = UnixDatagram::unbound()?;
                s.connect(path)?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .and_then(|s| s.send(&buf).map(|_| ()));
        if let Err(e) = &r
            && e.kind() != std::io::ErrorKind::WouldBlock
        {
            self.conn.drop_socket();
        }
        self.buf = buf;
        r
    }
}

/// A Unix stream socket: newline-delimited records; on error the connection
/// is dropped and retried at most once a second, records meanwhile dropped.
pub(crate) struct UnixStreamSink {
    conn: Reconnecting<BufWriter<UnixStream>>,
}

impl UnixStreamSink {
    #[must_use]
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            conn: Reconnecting::new(path),
        }
    }
}

impl Sink for UnixStreamSink {
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let s = self.conn.get(|path| {
            let s = UnixStream::connect(path)?;
            // A stuck reader must not stall the stage for long.
            s.set_write_timeout(Some(Duration::from_millis(100)))?;
            Ok(BufWriter::new(s))
        })?;
        let r = s.write_all(line).and_then(|()| s.write_all(b"\n"));
        if r.is_err() {
            self.conn.drop_socket();
        }
        r
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.conn.sock.as_mut().map_or(Ok(()), Write::flush);
        if r.is_err() {
            self.conn.drop_socket();
        }
        r
    }
}

/// Keeps every line in memory; clones share the buffer. For tests and for
/// embedding the stage in another program.
#[derive(Clone, Default)]
pub struct MemorySink {
    lines: Arc<Mutex<Vec<String>>>,
}

impl MemorySink {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the lines written so far.
    #[must_use]
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().expect("memory sink lock"))
    }

    /// Copies the lines written so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("memory sink lock").clone()
    }
}

impl Sink for MemorySink {
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.lines
            .lock()
            .expect("memory sink lock")
            .push(String::from_utf8_lossy(line).into_owned());
        Ok(())
    }
}

/// All configured sinks; counts lines each failed to take.
#[derive(Default)]
pub struct SinkSet {
    sinks: Vec<Box<dyn Sink>>,
    /// Lines a sink failed to deliver (summed over sinks).
    pub errors: u64,
}

impl SinkSet {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sink.
    #[must_use]
    pub fn with(mut self, sink: impl Sink + 'static) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Builds the sinks a config lists (stdout when it lists none).
    ///
    /// # Errors
    /// When a file sink cannot be opened (socket sinks connect lazily).
    pub(crate) fn from_config(configs: &[SinkConfig]) -> Result<Self, AlertsError> {
        let mut set = Self::new();
        if configs.is_empty() {
            return Ok(set.with(StdoutSink::new()));
        }
        for c in configs {
            set = match c {
                SinkConfig::Stdout => set.with(StdoutSink::new()),
                SinkConfig::File {
                    path,
                    max_bytes,
                    keep,
                } => set.with(RotatingFileSink::open(path, *max_bytes, *keep)?),
                SinkConfig::UnixDatagram { path } => set.with(UnixDatagramSink::new(path)),
                SinkConfig::UnixStream { path } => set.with(UnixStreamSink::new(path)),
            };
        }
        Ok(set)
    }

    /// Sends one line to every sink.
    pub(crate) fn write_line(&mut self, line: &[u8]) {
        for s in &mut self.sinks {
            if s.write_line(line).is_err() {
                self.errors += 1;
            }
        }
    }

    /// Flushes every sink.
    pub fn flush(&mut self) {
        for s in &mut self.sinks {
            if s.flush().is_err() {
                self.errors += 1;
            }
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }
}

impl AlertOutput for SinkSet {
    fn write_line(&mut self, line: &[u8]) {
        SinkSet::write_line(self, line);
    }
    fn flush(&mut self) {
        SinkSet::flush(self);
    }
    fn errors(&self) -> u64 {
        self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        crate::files::test_dir(&format!("sinks-{name}"))
    }

    #[test]
    fn file_rotates_by_size_and_keeps_n_files() {
        let d = tmpdir("rot");
        let p = d.join("eve.json");
        let mut s = RotatingFileSink::open(&p, 100, 3).unwrap();
        let line = [b'x'; 39]; // 40 bytes with newline: 2 lines per file
        for _ in 0..9 {
            s.write_line(&line).unwrap();
        }
        s.flush().unwrap();
        assert_eq!(s.rotations, 4);
        let len = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert_eq!(len(&p), 40);
        assert_eq!(len(&d.join("eve.json.1")), 80);
        assert_eq!(len(&d.join("eve.json.2")), 80);
        assert!(!d.join("eve.json.3").exists());
    }

    #[test]
    fn unix_sockets_deliver_and_survive_absent_reader() {
        let d = tmpdir("sock");
        let dp = d.join("dgram.sock");
        let mut ds = UnixDatagramSink::new(&dp);
        assert!(ds.write_line(b"{}").is_err(), "nobody listens yet");
        let rx = UnixDatagram::bind(&dp).unwrap();
        ds.conn.last_try = None;
        ds.write_line(b"{\"a\":1}").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"{\"a\":1}\n");

        let sp = d.join("stream.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sp).unwrap();
        let mut ss = UnixStreamSink::new(&sp);
        ss.write_line(b"{\"b\":2}").unwrap();
        ss.flush().unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        drop(ss);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut conn, &mut got).unwrap();
        assert_eq!(got, "{\"b\":2}\n");
    }
}
