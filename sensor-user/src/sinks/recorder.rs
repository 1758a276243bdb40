//! `sensor run --record-out FILE`: every scored row, as one CSV line, for
//! labelled datasets (`cargo xtask lab record`) and offline evaluation.
//!
//! The recorder sits between the scoring workers and the alert stage, on its
//! own thread: workers send rows exactly as in a live run (same pipelines,
//! same models), the recorder writes each row and hands it on to the alert
//! stage. Workers never wait for the disk; if the recorder falls behind, its
//! channel fills and the workers shed rows, which the pipelines count
//! (`shed`) and the run summary reports as rows lost to the recording. The
//! recorder never blocks on the alert stage either: a row the alert stage
//! has no room for is still recorded, and counted in `forward_shed`.
//!
//! Format (documented in docs/lab.md): a header line, then one line per row:
//!
//! ```text
//! event_ts_ns,src,dst,sport,dport,proto,<feature names in schema order>,
//! p_benign,p_flood,p_scan,p_bruteforce,p_anomaly,anomaly_score
//! ```
//!
//! `event_ts_ns` is the `CLOCK_MONOTONIC` time of the kernel event behind the
//! row; feature names come from [`crate::features::SCHEMA`] at run time, so
//! the header always matches the vector; `anomaly_score` is empty when the
//! row was not escalated to the autoencoder.

use std::{
    fmt::Write as _,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    thread::JoinHandle,
};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::{
    features::SCHEMA,
    files::{OUTPUT_MODE, PendingFile},
    model::row::{AttackClass, RowBatch, ScoredRow},
};

/// Columns before the features.
pub const KEY_COLUMNS: [&str; 6] = ["event_ts_ns", "src", "dst", "sport", "dport", "proto"];

/// Column holding the autoencoder's score (last column).
pub(crate) const ANOMALY_COLUMN: &str = "anomaly_score";

/// Why recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The output file could not be created.
    #[error("cannot create the recording {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a row (or flushing at the end) failed; rows after it are lost.
    #[error("cannot write the recording {} after {rows} rows", path.display())]
    Write {
        path: PathBuf,
        rows: u64,
        #[source]
        source: std::io::Error,
    },
    /// The recorder thread could not start.
    #[error("cannot start the recorder thread")]
    Spawn {
        #[source]
        source: std::io::Error,
    },
    /// The recorder thread panicked.
    #[error("the recorder thread panicked")]
    Panicked,
}

/// What the recorder did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSummary {
    pub path: PathBuf,
    /// Rows written to the file.
    pub rows_written: u64,
    /// Rows the alert stage had no room for (recorded all the same).
    pub forward_shed: u64,
}

/// The header line (without newline): key columns, the schema's feature
/// names, one probability per class, the anomaly score.
#[must_use]
pub fn header() -> String {
    let mut h = KEY_COLUMNS.join(",");
    for f in &SCHEMA {
        h.push(',');
        h.push_str(f.name);
    }
    for c in AttackClass::ALL {
        h.push_str(",p_");
        h.push_str(c.name());
    }
    h.push(',');
    h.push_str(ANOMALY_COLUMN);
    h
}

/// Appends one row's line (with newline) to `out`.
pub(crate) fn format_row(out: &mut String, row: &ScoredRow) {
    let _ = write!(
        out,
        "{},{},{},{},{},{}",
        row.event_ts_ns, row.src, row.dst, row.sport, row.dport, row.proto
    );
    let n = usize::from(row.n_features).min(row.features.len());
    for v in &row.features[..n] {
        let _ = write!(out, ",{v}");
    }
    for p in &row.class_probs {
        let _ = write!(out, ",{p}");
    }
    out.push(',');
    if !row.anomaly_score.is_nan() {
        let _ = write!(out, "{}", row.anomaly_score);
    }
    out.push('\n');
}

/// The running recorder.
pub struct RecorderHandle {
    thread: JoinHandle<Result<RecordSummary, RecordError>>,
}

impl RecorderHandle {
    /// Waits until every sender of the recorder's input is dropped and the
    /// file is flushed.
    ///
    /// # Errors
    /// A write failed or the thread panicked.
    pub fn join(self) -> Result<RecordSummary, RecordError> {
        self.thread.join().map_err(|_| RecordError::Panicked)?
    }
}

/// The schema sidecar of a recording: `rows.csv` → `rows.schema.json`.
#[must_use]
pub fn schema_path(path: &Path) -> PathBuf {
    path.with_extension("schema.json")
}

/// The feature schema as JSON (`{"version", "features": [{"name", "unit"}]}`),
/// the form training tools copy into model cards.
#[must_use]
pub(crate) fn schema_json() -> serde_json::Value {
    serde_json::json!({
        "version": crate::features::SCHEMA_VERSION,
        "features": SCHEMA
            .iter()
            .map(|f| serde_json::json!({"name": f.name, "unit": f.unit}))
            .collect::<Vec<_>>(),
    })
}

/// Creates `path` (and its schema sidecar, see [`schema_path`]) as temporary
/// files renamed into place at the end, writes the header and starts the recorder: it reads rows
/// from `rows` until every sender is dropped, writes each, and offers it to
/// `forward` (the alert stage) without blocking. Dropping `forward` at the
/// end lets the alert stage finish.
///
/// # Errors
/// The file cannot be created or the thread cannot start.
pub fn spawn(
    path: &Path,
    rows: Receiver<RowBatch>,
    forward: Sender<RowBatch>,
) -> Result<RecorderHandle, RecordError> {
    let create = |p: &Path| {
        PendingFile::create(p, OUTPUT_MODE).map_err(|source| RecordError::Create {
            path: p.to_owned(),
            source,
        })
    };
    // Both files are written beside their paths and renamed into place when
    // the run ends: a failed start leaves a previous recording untouched.
    let file = create(path)?;
    let sidecar = create(&schema_path(path))?;
    let thread = std::thread::Builder::new()
        .name("recorder".into())
        .spawn(move || record_loop(file, sidecar, &rows, &forward))
        .map_err(|source| RecordError::Spawn { source })?;
    Ok(RecorderHandle { thread })
}

fn record_loop(
    mut file: PendingFile,
    mut sidecar: PendingFile,
    rows: &Receiver<RowBatch>,
    forward: &Sender<RowBatch>,
) -> Result<RecordSummary, RecordError> {
    let path = file.target().to_owned();
    let mut out = BufWriter::with_capacity(1 << 20, file.file_mut());
    let mut summary = RecordSummary {
        path,
        ..RecordSummary::default()
    };
    let fail = |s: &RecordSummary, source| RecordError::Write {
        path: s.path.clone(),
        rows: s.rows_written,
        source,
    };
    let mut line = header();
    line.push('\n');
    out.write_all(line.as_bytes())
        .map_err(|e| fail(&summary, e))?;
    // Rows are formatted into one reused buffer and written in chunks.
    let mut buf = String::with_capacity(1 << 16);
    while let Ok(first) = rows.recv() {
        for batch in std::iter::once(first).chain(rows.try_iter().take(64)) {
            for row in &batch {
                format_row(&mut buf, row);
            }
            summary.rows_written += batch.len() as u64;
            match forward.try_send(batch) {
                // Sent, or the alert stage is gone (it only stops when we
                // drop `forward`): keep recording.
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(b)) => summary.forward_shed += b.len() as u64,
            }
        }
        out.write_all(buf.as_bytes())
            .map_err(|e| fail(&summary, e))?;
        buf.clear();
        if rows.is_empty() {
            // Idle: hand what was recorded to the kernel.
            out.flush().map_err(|e| fail(&summary, e))?;
        }
    }
    out.flush().map_err(|e| fail(&summary, e))?;
    drop(out);
    file.commit().map_err(|e| fail(&summary, e))?;
    let schema_err = |source| RecordError::Create {
        path: schema_path(&summary.path),
        source,
    };
    sidecar
        .file_mut()
        .write_all(format!("{:#}\n", schema_json()).as_bytes())
        .map_err(schema_err)?;
    sidecar.commit().map_err(schema_err)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::{
        features::RowFacts,
        model::row::{Entity, MAX_FEATURES, N_CLASSES, Window},
    };

    fn row(i: u64, anomaly: f32) -> ScoredRow {
        let mut features = [0f32; MAX_FEATURES];
        for (k, f) in features.iter_mut().enumerate() {
            *f = k as f32 + 0.5;
        }
        let v = crate::model::row::ModelVersion::intern("v1");
        ScoredRow {
            origin: None,
            facts: RowFacts {
                victim_pps: 1e6,
                ..RowFacts::default()
            },
            entity: Entity::Flow,
            window: Window::Flow,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            sport: 1234,
            dport: 80,
            proto: 6,
            event_ts_ns: 1_000 + i,
            scored_ts_ns: 2_000 + i,
            features,
            n_features: SCHEMA.len() as u8,
            class_probs: [0.25, 0.5, 0.125, 0.125, 0.0],
            anomaly_score: anomaly,
            packets_per_s: 1.0,
            bytes: 60,
            packets: 1,
            classifier_version: v,
            autoencoder_version: v,
        }
    }

    #[test]
    fn header_names_every_schema_feature_in_order() {
        let h = header();
        let cols: Vec<&str> = h.split(',').collect();
        assert_eq!(cols.len(), 6 + SCHEMA.len() + N_CLASSES + 1);
        assert_eq!(&cols[..6], &KEY_COLUMNS);
        for (i, f) in SCHEMA.iter().enumerate() {
            assert_eq!(cols[6 + i], f.name);
        }
        assert_eq!(cols[6 + SCHEMA.len()], "p_benign");
        assert_eq!(*cols.last().unwrap(), ANOMALY_COLUMN);
    }

    #[test]
    fn rows_are_written_forwarded_and_counted() {
        let dir = std::env::temp_dir().join(format!("recorder-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rows.csv");
        let (tx, rx) = crossbeam_channel::bounded(16);
        // Room for one batch only: the second is recorded but not forwarded.
        let (fwd_tx, fwd_rx) = crossbeam_channel::bounded(1);
        let rec = spawn(&path, rx, fwd_tx).unwrap();
        tx.send(vec![row(0, f32::NAN), row(1, 0.75)]).unwrap();
        tx.send(vec![row(2, f32::NAN)]).unwrap();
        drop(tx);
        let s = rec.join().unwrap();
        assert_eq!(s.rows_written, 3);
        assert_eq!(s.forward_shed, 1);
        assert_eq!(fwd_rx.try_iter().map(|b| b.len()).sum::<usize>(), 2);
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(schema_path(&path)).unwrap()).unwrap();
        assert_eq!(schema["features"].as_array().unwrap().len(), SCHEMA.len());
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], header());
        let ncols = lines[0].split(',').count();
        for l in &lines[1..] {
            assert_eq!(l.split(',').count(), ncols, "{l}");
        }
        assert!(lines[1].starts_with("1000,10.0.0.1,10.0.0.2,1234,80,6,0.5,1.5,"));
        assert!(
            lines[1].ends_with(",0.25,0.5,0.125,0.125,0,"),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with(",0.75"), "{}", lines[2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_path_is_refused_with_its_name() {
        let (_tx, rx) = crossbeam_channel::bounded(1);
        let (fwd, _frx) = crossbeam_channel::bounded(1);
        let Err(e) = spawn(Path::new("/nonexistent-dir/rows.csv"), rx, fwd) else {
            panic!("created a file in a missing directory");
        };
        assert!(e.to_string().contains("/nonexistent-dir/rows.csv"), "{e}");
    }
}
