//! `sensor score`: scores a CSV of feature rows with the same loading,
//! schema check, planned batch sizes, padding and [`Runner`] the workers use.
//! Training runs it on the validation rows to report how far tract's scores
//! are from ONNX Runtime's; operators use it to re-score rows recorded with
//! `sensor run --record-out` under another model.

use std::{
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
};

use clap::Args;

use super::{DEFAULT_BATCH_SIZES, Model, ModelError, RunError, card::card_path};
use crate::features::{FeatureVec, N_FEATURES, SCHEMA};

/// `sensor score`.
#[derive(Debug, Clone, Args)]
pub struct ScoreArgs {
    /// ONNX model; its card (`<name>.card.json`) is read from beside it.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// CSV of feature rows. Header: the feature schema's names in order;
    /// further columns after them (such as `group`, `label`) are ignored.
    #[arg(long, value_name = "FILE")]
    pub rows: PathBuf,
    /// Output CSV [default: standard output]: header = the classes (a
    /// classifier) or `anomaly_score` (an autoencoder), one line per row.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Rows per batch, at most the largest planned batch size (256); the
    /// last batch is padded to a planned size, as in the workers.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub batch: u16,
}

/// Why `sensor score` failed.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The model or its card was refused.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The card names a kind this build cannot score.
    #[error("model card {path}: unknown kind {kind:?} (expected classifier or autoencoder)")]
    Kind { path: PathBuf, kind: String },
    /// A file could not be read or written.
    #[error("{path}: {what}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The rows file is not in the expected format.
    #[error("{path}:{line}: {reason}")]
    Format {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// tract failed on a batch.
    #[error("{path}: scoring rows from line {line}: {reason}")]
    Run {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Scores `args.rows` with `args.model`; returns the number of rows scored.
///
/// # Errors
/// A refused model, an unreadable or malformed rows file, a failed batch or
/// an unwritable output.
pub fn run_score(args: &ScoreArgs) -> Result<usize, ScoreError> {
    let cpath = card_path(&args.model);
    let card = super::ModelCard::load(&cpath)?;
    let kind: &'static str = match card.kind.as_str() {
        "classifier" => "classifier",
        "autoencoder" => "autoencoder",
        _ => {
            return Err(ScoreError::Kind {
                path: cpath,
                kind: card.kind,
            });
        }
    };
    let model = Model::load(&args.model, kind, &DEFAULT_BATCH_SIZES)?;
    let header: Vec<String> = match kind {
        "classifier" => model.card().classes.clone(),
        _ => vec!["anomaly_score".to_owned()],
    };
    let io = |path: &Path, what| {
        let path = path.to_owned();
        move |source| ScoreError::Io { path, what, source }
    };
    let input = File::open(&args.rows).map_err(io(&args.rows, "cannot open"))?;
    let score_into = |out: &mut dyn Write, out_path: &Path| {
        let mut out = BufWriter::new(out);
        let n = score_stream(
            &model,
            BufReader::new(input),
            &args.rows,
            usize::from(args.batch),
            &header,
            &mut out,
        )
        .map_err(|e| e.at_output(out_path))?;
        out.flush().map_err(io(out_path, "cannot write"))?;
        Ok::<_, ScoreError>(n)
    };
    match &args.out {
        // Written beside the target and renamed into place when complete,
        // with an explicit mode: a failed run leaves a previous file whole.
        Some(p) => {
            let mut pending = crate::files::PendingFile::create(p, crate::files::OUTPUT_MODE)
                .map_err(io(p, "cannot create"))?;
            let n = score_into(pending.file_mut(), p)?;
            pending.commit().map_err(io(p, "cannot write"))?;
            Ok(n)
        }
        None => score_into(&mut std::io::stdout().lock(), Path::new("<stdout>")),
    }
}

impl ScoreError {
    /// Names the output file in a write error (the streaming part does not
    /// know it).
    fn at_output(self, out_path: &Path) -> Self {
        match self {
            Self::Io { what, source, .. } if what == WRITE => Self::Io {
                path: out_path.to_owned(),
                what,
                source,
            },
            e => e,
        }
    }
}

const WRITE: &str = "cannot write";

/// The streaming part of [`run_score`]: reads rows, scores them `batch` at a
/// time and writes one line per row (Rust's shortest round-trip `f32` text).
fn score_stream(
    model: &Model,
    input: impl BufRead,
    path: &Path,
    batch: usize,
    header: &[String],
    out: &mut impl Write,
) -> Result<usize, ScoreError> {
    let fmt = |line, reason: String| ScoreError::Format {
        path: path.to_owned(),
        line,
        reason,
    };
    let write_err = |source| ScoreError::Io {
        path: PathBuf::new(),
        what: WRITE,
        source,
    };
    let mut lines = input.lines();
    let first = match lines.next() {
        Some(l) => l.map_err(|source| ScoreError::Io {
            path: path.to_owned(),
            what: "cannot read",
            source,
        })?,
        None => return Err(fmt(1, "empty file, expected a header".into())),
    };
    let names: Vec<&str> = first.trim_end().split(',').collect();
    for (i, f) in SCHEMA.iter().enumerate() {
        match names.get(i) {
            Some(n) if *n == f.name => {}
            found => {
                return Err(fmt(
                    1,
                    format!(
                        "column {} is {:?}, the model's schema has {:?} there",
                        i + 1,
                        found.copied().unwrap_or("<missing>"),
                        f.name
                    ),
                ));
            }
        }
    }
    writeln!(out, "{}", header.join(",")).map_err(write_err)?;
    let mut runner = model.runner().map_err(|e| ScoreError::Run {
        path: path.to_owned(),
        line: 1,
        reason: e.to_string(),
    })?;
    let width = model.out_width();
    let mut rows: Vec<FeatureVec> = Vec::with_capacity(batch);
    let mut scores = vec![0f32; batch * width];
    let mut total = 0usize;
    let mut batch_line = 2;
    let mut flush = |rows: &mut Vec<FeatureVec>, first_line: usize, out: &mut dyn Write| {
        let n = rows.len();
        runner
            .run(rows, &mut scores[..n * width])
            .map_err(|e| ScoreError::Run {
                path: path.to_owned(),
                line: first_line,
                reason: match e {
                    RunError::Tract(e) => e.to_string(),
                    RunError::Shape { expected, found } => {
                        format!("output shape {found:?}, expected {expected:?}")
                    }
                },
            })?;
        let mut text = String::with_capacity(n * width * 12);
        for r in scores[..n * width].chunks(width) {
            for (j, v) in r.iter().enumerate() {
                use std::fmt::Write as _;
                let sep = if j + 1 == width { '\n' } else { ',' };
                let _ = write!(text, "{v}{sep}");
            }
        }
        out.write_all(text.as_bytes()).map_err(write_err)?;
        rows.clear();
        Ok::<_, ScoreError>(n)
    };
    for (i, line) in lines.enumerate() {
        let lineno = i + 2;
        let line = line.map_err(|source| ScoreError::Io {
            path: path.to_owned(),
            what: "cannot read",
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let mut row = [0f32; N_FEATURES];
        let mut fields = line.split(',');
        for (j, v) in row.iter_mut().enumerate() {
            let text = fields.next().ok_or_else(|| {
                fmt(
                    lineno,
                    format!("{j} columns, expected at least {N_FEATURES}"),
                )
            })?;
            *v = text.trim().parse().map_err(|_| {
                fmt(
                    lineno,
                    format!(
                        "column {} ({}): {text:?} is not a number",
                        j + 1,
                        SCHEMA[j].name
                    ),
                )
            })?;
        }
        if rows.is_empty() {
            batch_line = lineno;
        }
        rows.push(row);
        if rows.len() == batch {
            total += flush(&mut rows, batch_line, out)?;
        }
    }
    if !rows.is_empty() {
        total += flush(&mut rows, batch_line, out)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn models_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
    }

    fn classifier() -> Model {
        Model::load(
            &models_dir().join("flow-classifier.onnx"),
            "classifier",
            &DEFAULT_BATCH_SIZES,
        )
        .expect("committed classifier loads")
    }

    /// The error `score_stream` gives for `csv` (file name `x.csv`).
    fn refusal(m: &Model, csv: &str) -> String {
        score_stream(
            m,
            csv.as_bytes(),
            Path::new("x.csv"),
            8,
            &[],
            &mut Vec::new(),
        )
        .unwrap_err()
        .to_string()
    }

    fn header_line() -> String {
        SCHEMA.iter().map(|f| f.name).collect::<Vec<_>>().join(",")
    }

    #[test]
    fn scores_rows_like_the_runner_and_ignores_trailing_columns() {
        let m = classifier();
        let rows: Vec<FeatureVec> = (0..300)
            .map(|i| std::array::from_fn(|j| ((i * 7 + j * 3) % 11) as f32 * 0.5))
            .collect();
        let mut csv = format!("{},group,label\n", header_line());
        for r in &rows {
            let cols: Vec<String> = r.iter().map(ToString::to_string).collect();
            let _ = writeln!(csv, "{},g,benign", cols.join(","));
        }
        let header: Vec<String> = m.card().classes.clone();
        let mut out = Vec::new();
        // 300 rows = a full batch of 256 and a tail padded to 64, as the
        // worker's runner splits them.
        let n = score_stream(
            &m,
            csv.as_bytes(),
            Path::new("rows.csv"),
            256,
            &header,
            &mut out,
        )
        .expect("scores");
        assert_eq!(n, 300);
        let mut expect = vec![0f32; rows.len() * m.out_width()];
        m.runner().unwrap().run(&rows, &mut expect).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), header.join(","));
        let got: Vec<f32> = lines
            .flat_map(|l| {
                l.split(',')
                    .map(|v| v.parse::<f32>().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(got, expect, "same bits as the worker's runner");
    }

    #[test]
    fn refuses_a_header_that_is_not_the_schema() {
        let m = classifier();
        let mut names: Vec<&str> = SCHEMA.iter().map(|f| f.name).collect();
        names.swap(2, 3);
        let csv = format!("{}\n", names.join(","));
        let err = refusal(&m, &csv);
        assert!(err.starts_with("x.csv:1: column 3 is"), "{err}");
        assert!(err.contains(SCHEMA[2].name), "{err}");
    }

    #[test]
    fn names_the_line_and_column_of_a_bad_value() {
        let m = classifier();
        let mut row = vec!["0".to_owned(); N_FEATURES];
        row[5] = "nan?".into();
        let csv = format!(
            "{}\n{}\n{}\n",
            header_line(),
            vec!["1"; N_FEATURES].join(","),
            row.join(",")
        );
        let err = refusal(&m, &csv);
        assert!(err.starts_with("x.csv:3: column 6"), "{err}");
        let short = format!("{}\n1,2\n", header_line());
        let err = refusal(&m, &short);
        assert!(err.contains("x.csv:2: 2 columns"), "{err}");
    }

    #[test]
    fn out_file_is_written_whole_or_not_at_all() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = crate::files::test_dir("score-out");
        let (rows, out) = (d.join("rows.csv"), d.join("scores.csv"));
        std::fs::write(&out, "previous\n").unwrap();
        let args = ScoreArgs {
            model: models_dir().join("flow-classifier.onnx"),
            rows: rows.clone(),
            out: Some(out.clone()),
            batch: 256,
        };
        // A malformed rows file: the previous output stays as it was.
        std::fs::write(&rows, format!("{}\n1,2\n", header_line())).unwrap();
        assert!(run_score(&args).is_err());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous\n");
        // A good one: replaced whole, with the output mode.
        let zeros = vec!["0"; N_FEATURES].join(",");
        std::fs::write(&rows, format!("{}\n{zeros}\n", header_line())).unwrap();
        assert_eq!(run_score(&args).unwrap(), 1);
        assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2);
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, crate::files::OUTPUT_MODE);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
