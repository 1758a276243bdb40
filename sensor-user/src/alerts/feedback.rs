//! The feedback loop: analysts' verdicts (`sensor feedback`), threshold
//! tuning from them (`sensor tune`), labelled training rows
//! (`sensor export-training`), and the poller that hands new verdicts and
//! retuned thresholds to the running stage.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use super::{
    AlertsError, Control,
    config::{
        AlertSettings, DEFAULT_ALERT_LOG, DEFAULT_CONFIG_PATH, DEFAULT_VERDICT_STORE, SensorFile,
    },
    store::{LogReader, LogWriter, ReadReport, read_all},
};
use crate::model::{card::threshold_range, row::AttackClass};

/// An analyst's judgement of one alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// True positive: a real attack.
    Tp,
    /// False positive: benign traffic.
    Fp,
}

impl Verdict {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Tp => "tp",
            Verdict::Fp => "fp",
        }
    }
}

/// One record of the verdict store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    pub alert_id: String,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When the verdict was recorded (ms since the Unix epoch).
    pub unix_ms: i64,
    /// Who recorded it (`$SUDO_USER` or `$USER`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// When an alert record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// The alert opened.
    Open,
    /// The alert closed.
    Close,
}

impl RecordKind {
    /// The name the log uses.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordKind::Open => "open",
            RecordKind::Close => "close",
        }
    }
}

/// One record of the alert record log: what tuning and training export need
/// about an alert. Written when an alert opens and when it closes (the close
/// record carries the peak score and the feature row behind it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub kind: RecordKind,
    pub alert_id: String,
    pub incident_id: String,
    pub class: String,
    /// Confidence 0..=1 (peak so far).
    pub score: f32,
    /// Peak score in the threshold's unit (probability, or reconstruction
    /// error for `anomaly`).
    pub raw_score: f32,
    /// Threshold in force when the record was written.
    pub threshold: f32,
    pub count: u64,
    pub feature_names: Vec<String>,
    /// The feature row behind the peak score (`null` for non-finite values).
    pub features: Vec<Option<f32>>,
    pub classifier_version: String,
    pub autoencoder_version: String,
    pub unix_ms: i64,
    /// `beacon` when the peak came from the beacon rule rather than a
    /// model: its raw score is no model score, so tuning leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<String>,
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Paths of the store and the alert log: explicit flags, else the config
/// file's `[alerts]`, else the built-in defaults.
fn resolve_paths(
    config: Option<&Path>,
    paths: &LogPaths,
) -> Result<(PathBuf, PathBuf), AlertsError> {
    let (store, alert_log) = (paths.store.as_deref(), paths.alert_log.as_deref());
    let file = match config {
        Some(p) => Some(SensorFile::load(p)?),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Some(SensorFile::load(Path::new(DEFAULT_CONFIG_PATH))?)
        }
        None => None,
    };
    let from_file =
        |f: fn(&SensorFile) -> PathBuf, d: &str| file.as_ref().map_or_else(|| PathBuf::from(d), f);
    Ok((
        store.map_or_else(
            || from_file(|f| f.alerts.verdict_store.clone(), DEFAULT_VERDICT_STORE),
            Path::to_path_buf,
        ),
        alert_log.map_or_else(
            || from_file(|f| f.alerts.alert_log.clone(), DEFAULT_ALERT_LOG),
            Path::to_path_buf,
        ),
    ))
}

/// `sensor feedback <alert-id> --tp|--fp`: record a verdict on an alert.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("verdict").required(true).args(["tp", "fp"])))]
pub struct FeedbackArgs {
    /// Alert id as printed in `xdp_sensor.alert_id`.
    pub alert_id: String,
    /// The alert was a real attack.
    #[arg(long)]
    pub tp: bool,
    /// The alert was benign traffic.
    #[arg(long)]
    pub fp: bool,
    /// Free-text note kept with the verdict.
    #[arg(long)]
    pub note: Option<String>,
    #[command(flatten)]
    pub paths: LogPaths,
    /// Sensor configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `--store` / `--alert-log`, shared by the feedback subcommands; each
/// defaults to the config's `[alerts]` entry.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogPaths {
    /// Verdict store (default: `[alerts] verdict_store` of the config).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Alert record log: scores and features of every alert (default:
    /// `[alerts] alert_log` of the config).
    #[arg(long)]
    pub alert_log: Option<PathBuf>,
}

/// Records a verdict durably (fsync'd before returning) and reports to `out`.
///
/// # Errors
/// When the config or store cannot be read or written.
pub fn run_feedback(
    args: &FeedbackArgs,
    out: &mut dyn Write,
) -> Result<VerdictRecord, AlertsError> {
    let (store, alert_log) = resolve_paths(args.config.as_deref(), &args.paths)?;
    let rec = VerdictRecord {
        alert_id: args.alert_id.clone(),
        verdict: if args.tp { Verdict::Tp } else { Verdict::Fp },
        note: args.note.clone(),
        unix_ms: now_unix_ms(),
        user: std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .ok(),
    };
    let known = read_all::<AlertRecord>(&alert_log)
        .is_ok_and(|(r, _)| r.iter().any(|a| a.alert_id == rec.alert_id));
    let mut w = LogWriter::open(&store)?;
    w.append(&rec, true)?;
    let _ = writeln!(
        out,
        "recorded {} for alert {} in {}{}",
        rec.verdict.name(),
        rec.alert_id,
        store.display(),
        if known {
            String::new()
        } else {
            format!(" (note: alert not found in {})", alert_log.display())
        }
    );
    if w.torn_tails_repaired > 0 {
        let _ = writeln!(out, "repaired a torn record left by an interrupted writer");
    }
    Ok(rec)
}

/// `sensor tune`: recompute per-class thresholds from verdicts.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    /// Write the new thresholds into the config (`[thresholds]`); without it
    /// only print them.
    #[arg(long)]
    pub apply: bool,
    /// Sensor configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Models whose cards give the thresholds the config does not set, as
    /// for `sensor run` [default: found as `sensor run` finds them].
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    #[command(flatten)]
    pub paths: LogPaths,
}

/// Tuning outcome for one class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassTuning {
    pub class: AttackClass,
    pub tp: usize,
    pub fp: usize,
    pub old: f32,
    pub new: f32,
    /// Expected change in false positives / false negatives among the
    /// verdicted alerts if `new` had been in force.
    pub fp_change: i64,
    pub fn_change: i64,
    pub cost_change: f64,
}

/// Latest verdict per alert id.
/// Every alert's latest verdict and peak record, from the verdict store and
/// the alert record log; damaged lines are reported to `out` and skipped.
type Judged = (HashMap<String, VerdictRecord>, HashMap<String, AlertRecord>);

fn read_judged(out: &mut dyn Write, store: &Path, alert_log: &Path) -> Result<Judged, AlertsError> {
    let (verdicts, vrep) = read_all::<VerdictRecord>(store)?;
    let (records, arep) = read_all::<AlertRecord>(alert_log)?;
    report_damage(out, store, vrep);
    report_damage(out, alert_log, arep);
    Ok((latest_verdicts(verdicts), peak_records(records)))
}

fn latest_verdicts(recs: Vec<VerdictRecord>) -> HashMap<String, VerdictRecord> {
    let mut m: HashMap<String, VerdictRecord> = HashMap::new();
    for r in recs {
        m.insert(r.alert_id.clone(), r);
    }
    m
}

/// Peak record per alert id (highest raw score; close records win ties).
fn peak_records(recs: Vec<AlertRecord>) -> HashMap<String, AlertRecord> {
    let mut m: HashMap<String, AlertRecord> = HashMap::new();
    for r in recs {
        match m.get(&r.alert_id) {
            Some(old) if old.raw_score > r.raw_score => {}
            _ => {
                m.insert(r.alert_id.clone(), r);
            }
        }
    }
    m
}

/// Chooses a class threshold minimising `fp_cost·FP + fn_cost·FN` over
/// verdicted alerts. An alert with peak score `s` fires under threshold `t`
/// iff `s ≥ t`: an FP alert below `t` is an FP avoided, a TP alert below `t`
/// a new FN. Candidates are `old` and the midpoints between consecutive
/// distinct scores at or above `old` (nothing is known about rows below the
/// old threshold, which never became alerts, so tuning never lowers it);
/// ties keep the lower threshold. Every candidate is clamped into the
/// class's range ([`threshold_range`]): above a top score of 1.0 a
/// probability threshold cannot go, and `--apply` must never write a
/// threshold the sensor then refuses to start with.
#[must_use]
pub(crate) fn tune_class(
    class: AttackClass,
    scores: &[(f32, Verdict)],
    old: f32,
    fp_cost: f64,
    fn_cost: f64,
) -> (f32, i64, i64, f64) {
    let cost_at = |t: f32| {
        let mut fp = 0i64;
        let mut fnn = 0i64;
        for &(s, v) in scores {
            match v {
                Verdict::Fp if s >= t => fp += 1,
                Verdict::Tp if s < t => fnn += 1,
                _ => {}
            }
        }
        (fp, fnn, fp as f64 * fp_cost + fnn as f64 * fn_cost)
    };
    let mut xs: Vec<f32> = scores
        .iter()
        .map(|s| s.0)
        .filter(|s| s.is_finite() && *s >= old)
        .collect();
    xs.sort_by(f32::total_cmp);
    xs.dedup();
    let range = threshold_range(class);
    let clamp = |t: f32| t.clamp(*range.start(), *range.end());
    let mut candidates = vec![old];
    candidates.extend(xs.windows(2).map(|w| clamp(w[0] + (w[1] - w[0]) / 2.0)));
    if let Some(&max) = xs.last() {
        // Above every score: silences the class if it only ever raised FPs.
        candidates.push(clamp(max + (max.abs() * 0.01).max(1e-3)));
    }
    let (fp0, fn0, c0) = cost_at(old);
    let mut best = (old, fp0, fn0, c0);
    for t in candidates {
        let (fp, fnn, c) = cost_at(t);
        if c < best.3 - 1e-9 {
            best = (t, fp, fnn, c);
        }
    }
    (best.0, best.1 - fp0, best.2 - fn0, best.3 - c0)
}

/// Recomputes thresholds, prints old/new and the expected FP/FN change, and
/// with `--apply` writes `[thresholds]` into the config, keeping the rest of
/// the file (comments included) as it was.
///
/// # Errors
/// When the config, store or log cannot be read, or the config not written.
pub fn run_tune(args: &TuneArgs, out: &mut dyn Write) -> Result<Vec<ClassTuning>, AlertsError> {
    let mut file = SensorFile::load(&args.config)?;
    let models_dir = args
        .models_dir
        .clone()
        .unwrap_or_else(crate::model::default_models_dir);
    file.models.default_cards_from(&models_dir);
    let settings = AlertSettings::from_file(&file, Some(&args.config))?;
    let store = args
        .paths
        .store
        .clone()
        .unwrap_or_else(|| file.alerts.verdict_store.clone());
    let alert_log = args
        .paths
        .alert_log
        .clone()
        .unwrap_or_else(|| file.alerts.alert_log.clone());
    let (verdicts, records) = read_judged(out, &store, &alert_log)?;
    let mut by_class: BTreeMap<AttackClass, Vec<(f32, Verdict)>> = BTreeMap::new();
    let mut unmatched = 0usize;
    for (id, v) in &verdicts {
        let record = records.get(id);
        // A rule's detections carry no model score to tune.
        if record.is_some_and(|r| r.detector.is_some()) {
            continue;
        }
        match record.and_then(|r| AttackClass::by_name(&r.class).map(|c| (c, r.raw_score))) {
            Some((c, s)) => by_class.entry(c).or_default().push((s, v.verdict)),
            None => unmatched += 1,
        }
    }
    if unmatched > 0 {
        let _ = writeln!(
            out,
            "{unmatched} verdict(s) name alerts missing from {}",
            alert_log.display()
        );
    }
    let mut result = Vec::new();
    let _ = writeln!(
        out,
        "{:<11} {:>4} {:>4} {:>10} {:>10} {:>8} {:>8} {:>10}",
        "class", "tp", "fp", "old", "new", "d_fp", "d_fn", "d_cost"
    );
    for class in [
        AttackClass::Flood,
        AttackClass::Scan,
        AttackClass::BruteForce,
        AttackClass::Anomaly,
    ] {
        let scores = by_class.get(&class).map(Vec::as_slice).unwrap_or_default();
        let old = settings.thresholds.get(class);
        let tp = scores.iter().filter(|s| s.1 == Verdict::Tp).count();
        let fp = scores.len() - tp;
        let (new, fp_change, fn_change, cost_change) =
            if scores.len() < file.tuning.min_verdicts.max(1) || !old.is_finite() {
                (old, 0, 0, 0.0)
            } else {
                tune_class(class, scores, old, file.tuning.fp_cost, file.tuning.fn_cost)
            };
        let _ = writeln!(
            out,
            "{:<11} {tp:>4} {fp:>4} {old:>10.4} {new:>10.4} {fp_change:>+8} {fn_change:>+8} {cost_change:>+10.1}",
            class.name()
        );
        result.push(ClassTuning {
            class,
            tp,
            fp,
            old,
            new,
            fp_change,
            fn_change,
            cost_change,
        });
    }
    let changed: Vec<&ClassTuning> = result.iter().filter(|t| t.new != t.old).collect();
    if args.apply && !changed.is_empty() {
        apply_thresholds(&args.config, &changed)?;
        let _ = writeln!(
            out,
            "wrote {} threshold(s) to {}",
            changed.len(),
            args.config.display()
        );
    } else if args.apply {
        let _ = writeln!(
            out,
            "no threshold changed; {} left as it was",
            args.config.display()
        );
    } else if !changed.is_empty() {
        let _ = writeln!(out, "dry run: pass --apply to write these thresholds");
    }
    Ok(result)
}

fn report_damage(out: &mut dyn Write, path: &Path, r: ReadReport) {
    if r.corrupt_lines > 0 {
        let _ = writeln!(
            out,
            "{}: skipped {} corrupt record(s)",
            path.display(),
            r.corrupt_lines
        );
    }
    if r.torn_tail {
        let _ = writeln!(
            out,
            "{}: ignored a torn last record (interrupted writer)",
            path.display()
        );
    }
}

/// Rewrites `[thresholds]` entries with `toml_edit`, so comments, order and
/// every other section survive; the file is replaced atomically (rename).
fn apply_thresholds(path: &Path, changes: &[&ClassTuning]) -> Result<(), AlertsError> {
    let text = std::fs::read_to_string(path).map_err(|source| AlertsError::Io {
        path: path.to_path_buf(),
        action: "read",
        source,
    })?;
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| AlertsError::Config {
                path: path.to_path_buf(),
                line: e.span().map(|s| super::config::line_of(&text, s.start)),
                message: e.message().to_string(),
            })?;
    if !doc.contains_key("thresholds") {
        doc["thresholds"] = toml_edit::table();
    }
    for c in changes {
        let v = (f64::from(c.new) * 1e6).round() / 1e6;
        doc["thresholds"][c.class.name()] = toml_edit::value(v);
    }
    // The new file keeps the old one's mode (a 0600 config stays 0600).
    let write = || -> std::io::Result<()> {
        let mode = crate::files::existing_mode(path)?.unwrap_or(crate::files::PRIVATE_MODE);
        crate::files::write_atomic(path, mode, doc.to_string().as_bytes())
    };
    write().map_err(|source| AlertsError::Io {
        path: path.to_path_buf(),
        action: "write",
        source,
    })
}

/// `sensor export-training`: labelled feature rows behind verdicts, as CSV.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportTrainingArgs {
    /// Output CSV file.
    #[arg(long)]
    pub out: PathBuf,
    /// Sensor configuration file (for the store and log paths).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub paths: LogPaths,
}

/// Writes one row per verdicted alert: its peak feature row and a label, the
/// alert's class for a true positive, `benign` for a false positive. Header:
/// the feature names recorded with the alerts, then `label`. Alerts recorded
/// under a different feature schema than the first are skipped (counted).
/// Returns the number of rows written.
///
/// # Errors
/// When inputs cannot be read, nothing can be exported, or the file not written.
pub fn run_export_training(
    args: &ExportTrainingArgs,
    out: &mut dyn Write,
) -> Result<usize, AlertsError> {
    let (store, alert_log) = resolve_paths(args.config.as_deref(), &args.paths)?;
    let (verdicts, records) = read_judged(out, &store, &alert_log)?;
    let mut ids: Vec<&String> = verdicts
        .keys()
        .filter(|id| records.contains_key(*id))
        .collect();
    ids.sort();
    let Some(first) = ids.first().and_then(|id| records.get(*id)) else {
        return Err(AlertsError::Invalid {
            message: format!(
                "no verdict in {} matches an alert in {}",
                store.display(),
                alert_log.display()
            ),
        });
    };
    let names = first.feature_names.clone();
    let mut csv = String::new();
    for n in &names {
        csv.push_str(&csv_field(n));
        csv.push(',');
    }
    csv.push_str("label\n");
    let (mut rows, mut skipped) = (0usize, 0usize);
    for id in ids {
        let r = &records[id];
        if r.feature_names != names || r.features.len() != names.len() {
            skipped += 1;
            continue;
        }
        for x in &r.features {
            if let Some(x) = x {
                csv.push_str(&x.to_string());
            }
            csv.push(',');
        }
        csv.push_str(match verdicts[id].verdict {
            Verdict::Tp => &r.class,
            Verdict::Fp => AttackClass::Benign.name(),
        });
        csv.push('\n');
        rows += 1;
    }
    crate::files::write_atomic(&args.out, crate::files::OUTPUT_MODE, csv.as_bytes()).map_err(
        |source| AlertsError::Io {
            path: args.out.clone(),
            action: "write",
            source,
        },
    )?;
    let _ = writeln!(
        out,
        "wrote {rows} labelled row(s) to {}",
        args.out.display()
    );
    if skipped > 0 {
        let _ = writeln!(
            out,
            "skipped {skipped} alert(s) recorded under another feature schema"
        );
    }
    Ok(rows)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Body of the feedback poller thread: every `poll`, forwards new verdicts
/// and, when the config file changed, the thresholds it now resolves to.
/// Returns when `stop` disconnects or the stage is gone.
pub(crate) fn poll_loop(
    store: &Path,
    config: Option<&Path>,
    poll: Duration,
    tx: &Sender<Control>,
    stop: &Receiver<()>,
) {
    let mut reader = (!store.as_os_str().is_empty()).then(|| LogReader::new(store));
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last_mtime = config.and_then(mtime);
    let mut buf: Vec<VerdictRecord> = Vec::new();
    let mut reported_torn = false;
    loop {
        if let Some(r) = reader.as_mut() {
            buf.clear();
            match r.read_new(&mut buf) {
                Ok(rep) => {
                    if rep.corrupt_lines > 0 {
                        tracing::warn!(path = %store.display(), n = rep.corrupt_lines, "corrupt verdict records skipped");
                    }
                    if rep.torn_tail && !reported_torn {
                        tracing::warn!(path = %store.display(), "verdict store ends in a torn record");
                    }
                    reported_torn = rep.torn_tail;
                }
                Err(e) => tracing::warn!(error = %e, "cannot read verdict store"),
            }
            for v in buf.drain(..) {
                if tx.send(Control::Verdict(v)).is_err() {
                    return;
                }
            }
        }
        if let Some(cfg) = config {
            let m = mtime(cfg);
            if m != last_mtime {
                last_mtime = m;
                match AlertSettings::load(cfg) {
                    Ok(s) => {
                        if tx.send(Control::Thresholds(s.thresholds)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "config changed but is invalid; thresholds kept");
                    }
                }
            }
        }
        if super::stopped(stop, poll) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::card::threshold_problem;

    #[test]
    fn tuning_raises_threshold_above_false_positives() {
        let scores = [
            (0.62, Verdict::Fp),
            (0.65, Verdict::Fp),
            (0.70, Verdict::Fp),
            (0.93, Verdict::Tp),
            (0.97, Verdict::Tp),
        ];
        let (t, dfp, dfn, dc) = tune_class(AttackClass::Scan, &scores, 0.6, 1.0, 100.0);
        assert!(t > 0.70 && t <= 0.93, "{t}");
        assert_eq!((dfp, dfn), (-3, 0));
        assert!(dc < 0.0);
        // One FN costs 100 FPs: a TP among the FPs pins the threshold.
        let scores = [
            (0.62, Verdict::Fp),
            (0.65, Verdict::Tp),
            (0.70, Verdict::Fp),
        ];
        let (t, _, dfn, _) = tune_class(AttackClass::Scan, &scores, 0.6, 1.0, 100.0);
        assert!(t <= 0.65 && dfn == 0, "{t}");
        // Never lowered below the old threshold.
        assert_eq!(
            tune_class(AttackClass::Scan, &[(0.9, Verdict::Tp)], 0.8, 1.0, 100.0).0,
            0.8
        );
    }

    /// Found by the `feedback_store` fuzz target (its corpus keeps the
    /// input): a false positive at the top score made tuning propose a
    /// probability threshold above 1, which `--apply` wrote and the next
    /// start refused.
    #[test]
    fn tuning_stays_in_the_class_range() {
        let fp_at_top = [(1.0, Verdict::Fp)];
        let (t, dfp, _, _) = tune_class(AttackClass::Scan, &fp_at_top, 0.8, 1.0, 100.0);
        assert!(threshold_problem(AttackClass::Scan, t).is_none(), "{t}");
        // 1.0 still fires on a score of 1.0: nothing gained, nothing changed.
        assert_eq!((t, dfp), (0.8, 0));
        let (t, dfp, _, _) =
            tune_class(AttackClass::Scan, &[(0.995, Verdict::Fp)], 0.8, 1.0, 100.0);
        assert_eq!((t, dfp), (1.0, -1));
        let huge = [(f32::MAX, Verdict::Fp), (f32::MAX / 2.0, Verdict::Fp)];
        let (t, _, _, _) = tune_class(AttackClass::Anomaly, &huge, 0.05, 1.0, 100.0);
        assert!(threshold_problem(AttackClass::Anomaly, t).is_none(), "{t}");
        // Scores outside a probability's range (a damaged log) do not leak
        // out; no threshold in range avoids them, so the old one stays.
        let (t, _, _, _) = tune_class(
            AttackClass::Flood,
            &[(7.0, Verdict::Fp), (9.0, Verdict::Fp)],
            0.5,
            1.0,
            100.0,
        );
        assert_eq!(t, 0.5);
    }

    #[test]
    fn args_work_as_subcommands() {
        use clap::{Parser, Subcommand};
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: Cmd,
        }
        #[derive(Subcommand)]
        enum Cmd {
            Feedback(FeedbackArgs),
            Tune(TuneArgs),
            ExportTraining(ExportTrainingArgs),
        }
        let c =
            Cli::try_parse_from(["sensor", "tune", "--apply", "--config", "/tmp/s.toml"]).unwrap();
        assert!(
            matches!(c.cmd, Cmd::Tune(TuneArgs { apply: true, ref config, .. }) if config == Path::new("/tmp/s.toml"))
        );
        let c = Cli::try_parse_from(["sensor", "tune"]).unwrap();
        assert!(
            matches!(c.cmd, Cmd::Tune(TuneArgs { apply: false, ref config, .. }) if config == Path::new(DEFAULT_CONFIG_PATH))
        );
        let c = Cli::try_parse_from(["sensor", "export-training", "--out", "rows.csv"]).unwrap();
        assert!(
            matches!(c.cmd, Cmd::ExportTraining(ExportTrainingArgs { ref out, .. }) if out == Path::new("rows.csv"))
        );
        assert!(Cli::try_parse_from(["sensor", "export-training"]).is_err());
        let c = Cli::try_parse_from(["sensor", "feedback", "a-1f-7", "--tp", "--store", "/tmp/v"])
            .unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Feedback(FeedbackArgs { tp: true, .. })
        ));
    }

    #[test]
    fn feedback_args_require_exactly_one_verdict() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: FeedbackArgs,
        }
        assert!(Cli::try_parse_from(["sensor", "a-1"]).is_err());
        assert!(Cli::try_parse_from(["sensor", "a-1", "--tp", "--fp"]).is_err());
        let c = Cli::try_parse_from(["sensor", "a-1", "--fp", "--note", "backup job"]).unwrap();
        assert!(c.a.fp && !c.a.tp);
        assert_eq!(c.a.note.as_deref(), Some("backup job"));
    }
}
