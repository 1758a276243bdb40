//! The feedback loop end to end: alerts from the stage, verdicts through
//! `sensor feedback`, thresholds through `sensor tune --apply`, labelled rows
//! through `sensor export-training`, and a verdict store that survives a
//! writer killed with SIGKILL.

mod alerts_util;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use alerts_util::*;
use sensor::{
    alerts::{
        AlertSettings, AlertStage, ExportTrainingArgs, FeedbackArgs, Inventory, LogPaths,
        SensorFile, TuneArgs, Verdict, VerdictRecord, run_export_training, run_feedback, run_tune,
        store::{LogWriter, read_all},
    },
    model::row::{AttackClass, Entity},
    sinks::{MemorySink, SinkSet},
};

const CONFIG: &str = r#"# Sensor configuration (test)
[sensor]
name = "gw-tune"   # shown as `host`

[[sinks]]
# Not a threshold: must survive `tune --apply` untouched.
kind = "file"
path = "eve.json"

[alerts]
verdict_store = "verdicts.jsonl"
alert_log = "alerts.jsonl"

[thresholds]
# Lowered during a pilot.
scan = 0.6

[tuning]
fp_cost = 1.0
fn_cost = 100.0
min_verdicts = 3
"#;

/// Runs scan alerts through a stage configured by `cfg`: `scores` gives one
/// alert per score, each from its own attacker.
fn raise_scan_alerts(cfg: &Path, scores: &[f32]) -> Vec<String> {
    let settings = AlertSettings::load(cfg).unwrap();
    let mem = MemorySink::new();
    let mut stage = AlertStage::new(
        settings,
        Inventory::default(),
        SinkSet::new().with(mem.clone()),
        CLOCK,
    )
    .unwrap();
    for (i, &p) in scores.iter().enumerate() {
        let attacker = ip(&format!("198.51.{i}.7"));
        for k in 0..5u64 {
            let mut r = row(
                AttackClass::Scan,
                p,
                attacker,
                ip("10.0.0.1"),
                22 + k as u16,
                SEC + k,
            );
            r.entity = Entity::SrcHost;
            stage.process(&r);
        }
    }
    stage.shutdown();
    let recs = parse(&mem.take());
    of_type(&recs, "alert")
        .iter()
        .map(|r| r["xdp_sensor"]["alert_id"].as_str().unwrap().to_string())
        .collect()
}

fn feedback(cfg: &Path, id: &str, tp: bool) -> String {
    let mut out = Vec::new();
    run_feedback(
        &FeedbackArgs {
            alert_id: id.into(),
            tp,
            fp: !tp,
            note: Some("triaged".into()),
            paths: LogPaths::default(),
            config: Some(cfg.to_path_buf()),
        },
        &mut out,
    )
    .unwrap();
    String::from_utf8(out).unwrap()
}

fn tune(cfg: &Path, apply: bool) -> (Vec<sensor::alerts::feedback::ClassTuning>, String) {
    let mut out = Vec::new();
    let r = run_tune(
        &TuneArgs {
            apply,
            config: cfg.to_path_buf(),
            models_dir: None,
            paths: LogPaths::default(),
        },
        &mut out,
    )
    .unwrap();
    (r, String::from_utf8(out).unwrap())
}

/// `sensor export-training --config CFG --out CSV`; returns the rows written.
fn export_training(cfg: &Path, csv: &Path) -> usize {
    run_export_training(
        &ExportTrainingArgs {
            out: csv.to_path_buf(),
            config: Some(cfg.to_path_buf()),
            paths: LogPaths::default(),
        },
        &mut Vec::new(),
    )
    .unwrap()
}

fn setup() -> (PathBuf, PathBuf, Vec<String>) {
    let d = tmpdir("tune");
    let cfg = d.join("sensor.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    // Four alerts an analyst dismisses, two real scans.
    let scores = [0.62, 0.64, 0.66, 0.70, 0.93, 0.97];
    let ids = raise_scan_alerts(&cfg, &scores);
    assert_eq!(ids.len(), 6);
    for (id, p) in ids.iter().zip(scores) {
        let out = feedback(&cfg, id, p > 0.9);
        assert!(
            out.contains("recorded") && !out.contains("not found"),
            "{out}"
        );
    }
    (d, cfg, ids)
}

#[test]
fn fp_verdicts_raise_the_class_threshold_through_tune_apply() {
    let (_d, cfg, _ids) = setup();
    let (dry, out) = tune(&cfg, false);
    let scan = dry.iter().find(|t| t.class == AttackClass::Scan).unwrap();
    assert_eq!((scan.tp, scan.fp), (2, 4));
    assert_eq!(scan.old, 0.6);
    assert!(scan.new > 0.70 && scan.new < 0.93, "{scan:?}");
    assert_eq!((scan.fp_change, scan.fn_change), (-4, 0));
    assert!(out.contains("scan") && out.contains("dry run"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        CONFIG,
        "dry run must not write"
    );
    // Classes without verdicts keep their thresholds.
    let flood = dry.iter().find(|t| t.class == AttackClass::Flood).unwrap();
    assert_eq!(flood.new, flood.old);
    // The config names no cards: tuning starts from the thresholds the
    // running sensor uses, those of its models' cards (not the built-in 0.9).
    let card = sensor::model::ModelCard::from_json(
        &serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../models/flow-classifier.card.json"
            ))
            .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(flood.old, card.thresholds[&AttackClass::Flood]);
    assert!(flood.old < 0.9, "{flood:?}");

    let (applied, out) = tune(&cfg, true);
    assert!(out.contains("wrote 1 threshold"), "{out}");
    let text = std::fs::read_to_string(&cfg).unwrap();
    for kept in [
        "# Sensor configuration (test)",
        "# Not a threshold",
        "path = \"eve.json\"",
        "# Lowered during a pilot.",
        "fn_cost = 100.0",
    ] {
        assert!(text.contains(kept), "lost `{kept}`:\n{text}");
    }
    let file = SensorFile::load(&cfg).unwrap();
    let new = applied
        .iter()
        .find(|t| t.class == AttackClass::Scan)
        .unwrap()
        .new;
    assert!((file.thresholds["scan"] - new).abs() < 1e-5);
    // The running stage's loader sees it: a 0.66 scan no longer alerts.
    let settings = AlertSettings::load(&cfg).unwrap();
    assert!((settings.thresholds.get(AttackClass::Scan) - new).abs() < 1e-5);
    let mut stage = AlertStage::new(settings, Inventory::default(), SinkSet::new(), CLOCK).unwrap();
    let mut r = row(
        AttackClass::Scan,
        0.66,
        ip("192.0.2.1"),
        ip("10.0.0.1"),
        22,
        SEC,
    );
    r.entity = Entity::SrcHost;
    stage.process(&r);
    assert_eq!(stage.metrics().rows_below_threshold, 1);
    // Tuning again with the same verdicts changes nothing.
    let (again, out) = tune(&cfg, true);
    assert!(again.iter().all(|t| t.new == t.old), "{out}");
}

/// The mode bits of `p`.
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn files_take_explicit_modes_whatever_the_umask() {
    // SAFETY: umask(2) only changes this process's file-creation mask; each
    // test runs in a process of its own under nextest.
    unsafe { libc::umask(0) };
    let (d, cfg, _ids) = setup();
    assert_eq!(mode(&d.join("verdicts.jsonl")), 0o600, "verdict store");
    assert_eq!(mode(&d.join("alerts.jsonl")), 0o600, "alert record log");
    // An operator's 0600 config stays 0600 through `tune --apply`.
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (_, out) = tune(&cfg, true);
    assert!(out.contains("wrote 1 threshold"), "{out}");
    assert_eq!(mode(&cfg), 0o600, "tuned config");
    let csv = d.join("train.csv");
    export_training(&cfg, &csv);
    assert_eq!(mode(&csv), 0o640, "exported rows");
    // Nothing but what was asked for is left in the directory.
    let mut names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["alerts.jsonl", "sensor.toml", "train.csv", "verdicts.jsonl"]
    );
}

#[test]
fn export_training_writes_labelled_feature_rows() {
    let (d, cfg, _ids) = setup();
    let csv = d.join("train.csv");
    assert_eq!(export_training(&cfg, &csv), 6);
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "f0,f1,f2,f3,f4,f5,f6,f7,label");
    assert_eq!(lines.len(), 7);
    let labels: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    assert_eq!(labels.iter().filter(|l| **l == "scan").count(), 2);
    assert_eq!(labels.iter().filter(|l| **l == "benign").count(), 4);
    // The row behind a 0.97 scan: feature i = i · 0.97.
    assert!(
        lines.iter().any(|l| l.starts_with("0,0.97,1.94,")),
        "{text}"
    );
    // A later verdict on the same alert wins.
    let (recs, _) = read_all::<VerdictRecord>(&d.join("verdicts.jsonl")).unwrap();
    let first_fp = recs.iter().find(|r| r.verdict == Verdict::Fp).unwrap();
    feedback(&cfg, &first_fp.alert_id, true);
    export_training(&cfg, &csv);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().filter(|l| l.ends_with(",scan")).count(), 3);
}

#[test]
fn feedback_on_unknown_alert_is_recorded_with_a_note() {
    let d = tmpdir("unknown");
    let cfg = d.join("sensor.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let out = feedback(&cfg, "a-nope-1", false);
    assert!(out.contains("not found"), "{out}");
    let (recs, _) = read_all::<VerdictRecord>(&d.join("verdicts.jsonl")).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].note.as_deref(), Some("triaged"));
}

const CHILD_ENV: &str = "SENSOR_TEST_VERDICT_WRITER_STORE";

/// Not a test on its own: the body of the child process that
/// `verdicts_survive_sigkill_of_a_writer` spawns (with `--ignored --exact`)
/// and kills. Run any other way it fails.
#[test]
#[ignore = "the child process of verdicts_survive_sigkill_of_a_writer; fails when run on its own"]
fn verdict_writer_child() {
    let store = std::env::var(CHILD_ENV).unwrap_or_else(|_| {
        panic!(
            "verdict_writer_child runs only as the child of \
             verdicts_survive_sigkill_of_a_writer, which sets {CHILD_ENV}"
        )
    });
    let mut w = LogWriter::open(Path::new(&store)).unwrap();
    for i in 0..1_000_000u64 {
        // Records of varying size, some large, so a kill can land mid-write.
        let note = "n".repeat(((i * 7919) % 64) as usize * 1024);
        w.append(
            &VerdictRecord {
                alert_id: format!("a-child-{i}"),
                verdict: if i % 2 == 0 { Verdict::Fp } else { Verdict::Tp },
                note: Some(note),
                unix_ms: i as i64,
                user: None,
            },
            true,
        )
        .unwrap();
        // Acknowledged only after fsync returned; the parent reads stdout.
        #[expect(clippy::print_stdout, reason = "the parent process reads the acks")]
        {
            println!("ack {i}");
        }
    }
}

/// The record number a line of the writer acknowledges. The first ack shares
/// its line with the harness's `test verdict_writer_child ... `.
fn ack(line: &str) -> Option<u64> {
    let (_, n) = line.rsplit_once("ack ")?;
    Some(n.parse().unwrap())
}

#[test]
fn verdicts_survive_sigkill_of_a_writer() {
    let d = tmpdir("kill");
    let store = d.join("verdicts.jsonl");
    let child_stderr = d.join("child.stderr");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "verdict_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &store)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&child_stderr).unwrap())
        .spawn()
        .unwrap();
    let mut acked = BTreeSet::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 200 {
        let Some(line) = lines.next() else {
            let status = child.wait().unwrap();
            panic!(
                "the writer stopped after {} acks ({status}): {}",
                acked.len(),
                std::fs::read_to_string(&child_stderr).unwrap_or_default()
            );
        };
        acked.extend(ack(&line.unwrap()));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    // Killed while still writing: neither finished nor failed by itself.
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "writer exit {status}: {}",
        std::fs::read_to_string(&child_stderr).unwrap_or_default()
    );
    // Acks still in the pipe were written before the kill, too.
    acked.extend(lines.map_while(Result::ok).filter_map(|l| ack(&l)));

    let (recs, report) = read_all::<VerdictRecord>(&store).unwrap();
    assert_eq!(report.corrupt_lines, 0, "{report:?}");
    let ids: BTreeSet<u64> = recs
        .iter()
        .map(|r| {
            r.alert_id
                .strip_prefix("a-child-")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.len(), recs.len(), "no duplicates");
    let missing: Vec<_> = acked.difference(&ids).collect();
    assert!(
        missing.is_empty(),
        "acknowledged verdicts lost: {missing:?}"
    );
    // At most the one record in flight at the kill is beyond the acks.
    assert!(
        recs.len() <= acked.len() + 1,
        "{} stored, {} acknowledged",
        recs.len(),
        acked.len()
    );
    for r in &recs {
        let i: u64 = r
            .alert_id
            .strip_prefix("a-child-")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            r.note.as_ref().unwrap().len(),
            ((i * 7919) % 64) as usize * 1024
        );
    }

    // The store still takes writes, and a torn tail (if the kill made one)
    // is cut so the new record is intact.
    let mut w = LogWriter::open(&store).unwrap();
    w.append(
        &VerdictRecord {
            alert_id: "a-after-kill".into(),
            verdict: Verdict::Tp,
            note: None,
            unix_ms: 0,
            user: None,
        },
        true,
    )
    .unwrap();
    let (recs2, report2) = read_all::<VerdictRecord>(&store).unwrap();
    assert_eq!(recs2.len(), recs.len() + 1);
    assert_eq!(recs2.last().unwrap().alert_id, "a-after-kill");
    assert!(
        !report2.torn_tail && report2.corrupt_lines == 0,
        "{report2:?}"
    );
    eprintln!(
        "sigkill test: {} acked, {} stored, torn tail before repair: {}",
        acked.len(),
        recs.len(),
        report.torn_tail
    );
}
