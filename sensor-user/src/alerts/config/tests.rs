use super::*;

fn parse_err(text: &str) -> String {
    parse_toml::<SensorFile>(Path::new("sensor.toml"), text)
        .expect_err(text)
        .to_string()
}

#[test]
fn thresholds_out_of_range_are_refused_with_their_line() {
    for (text, needle) in [
        ("[thresholds]\nflood = nan\n", "threshold `flood` = NaN"),
        ("[thresholds]\nflood = 1.5\n", "threshold `flood` = 1.5"),
        ("[thresholds]\nscan = -1.0\n", "threshold `scan` = -1"),
        ("[thresholds]\nanomaly = inf\n", "threshold `anomaly` = inf"),
        ("[thresholds]\nbenign = 0.5\n", "unknown class `benign`"),
    ] {
        let e = parse_err(text);
        assert!(e.starts_with("sensor.toml:"), "{e}");
        assert!(e.contains(needle), "{text:?}: {e}");
    }
    let ok: SensorFile =
        parse_toml(Path::new("s"), "[thresholds]\nflood = 1.0\nanomaly = 7.5\n").unwrap();
    assert_eq!(ok.thresholds["anomaly"], 7.5);
}

#[test]
fn numbers_out_of_range_are_refused_with_their_line() {
    let d = std::env::temp_dir().join(format!("sensor-ranges-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join("sensor.toml");
    for (text, needle, line) in [
        (
            "[alerts]\n\nquiet_period_s = -5\n",
            "[alerts] quiet_period_s = -5",
            3,
        ),
        (
            "[alerts]\nbeacon_max_jitter = nan\n",
            "beacon_max_jitter = NaN",
            2,
        ),
        ("[alerts]\nmax_open_alerts = 0\n", "max_open_alerts = 0", 2),
        (
            "[alerts]\nbeacon_connections = 2\n",
            "0 (off) or from 3 to 32",
            2,
        ),
        ("[tuning]\nfn_cost = 0\n", "[tuning] fn_cost = 0", 2),
        (
            "[volume]\nprefix_v4 = [24, 20]\n",
            "[volume] prefix_v4 = [24, 20]",
            2,
        ),
        (
            "[volume]\nmin_single_share = 1.5\n",
            "[volume] min_single_share = 1.5",
            2,
        ),
        ("[volume]\nmin_pps = 0\n", "[volume] min_pps = 0", 2),
        ("[drift]\nwindow_s = 0.5\n", "[drift] window_s = 0.5", 2),
        ("[drift]\n\nthreshold = -1\n", "[drift] threshold = -1", 3),
        ("[drift]\nmin_rows = 0\n", "[drift] min_rows = 0", 2),
        (
            "[drift]\nignore = [\"flow_bytes\", \"flow_byte\"]\n",
            "[drift] ignore = flow_byte",
            2,
        ),
        (
            "[[sinks]]\nkind = \"file\"\npath = \"e\"\nkeep = 0\n",
            "[sinks] keep = 0",
            4,
        ),
    ] {
        std::fs::write(&p, text).unwrap();
        let e = SensorFile::load(&p).expect_err(text).to_string();
        assert!(e.contains(needle), "{text:?}: {e}");
        assert!(e.contains(&format!("sensor.toml:{line}:")), "{text:?}: {e}");
    }
    assert!(SensorFile::default().check_ranges().is_ok());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_misspelt_section_is_refused() {
    for (text, needle) in [
        ("[threshold]\nflood = 0.5\n", "threshold"),
        ("[alert]\nquiet_period_s = 5.0\n", "alert"),
        ("[alerts]\nquiet_period = 5.0\n", "quiet_period"),
    ] {
        let e = parse_err(text);
        assert!(
            e.contains("unknown field") && e.contains(needle),
            "{text:?}: {e}"
        );
        assert!(
            e.starts_with("sensor.toml:1") || e.starts_with("sensor.toml:2"),
            "{e}"
        );
    }
}

#[test]
fn card_thresholds_out_of_range_are_refused() {
    for v in [
        serde_json::json!({"thresholds": {"attack_score": 1.5}}),
        serde_json::json!({"thresholds": {"scan": -0.1}}),
        serde_json::json!({"thresholds": {"anomaly_score": -1.0}}),
        serde_json::json!({"anomaly_threshold": 1e40}),
    ] {
        assert!(ModelCard::from_json(&v).is_err(), "{v}");
    }
}

#[test]
fn card_shapes_are_accepted() {
    let v = serde_json::json!({
        "name": "clf", "version": 3,
        "features": ["a", {"name": "b"}, "c"],
        "thresholds": {"flood": 0.8, "scan": 0.7},
        "anomaly_threshold": 0.05,
        "baseline": {"a": {"p25": 1.0, "p50": 2.0, "p75": 3.349}, "b": {"mean": 5.0, "std": 2.0}}
    });
    let c = ModelCard::from_json(&v).unwrap();
    assert_eq!(c.version, "3");
    assert_eq!(c.feature_names, ["a", "b", "c"]);
    assert_eq!(c.baseline[0].unwrap().center, 2.0);
    assert!((c.baseline[0].unwrap().scale - 1.742_031).abs() < 1e-3);
    assert_eq!(c.baseline[1].unwrap().scale, 2.0);
    assert!(c.baseline[2].is_none());
    let mut o = BTreeMap::new();
    o.insert("scan".to_string(), 0.95);
    let t = Thresholds::resolve(Some(&c), None, &o);
    assert_eq!(t.get(AttackClass::Flood), 0.8);
    assert_eq!(t.get(AttackClass::Scan), 0.95);
    assert_eq!(t.get(AttackClass::BruteForce), BUILTIN_CLASS_THRESHOLD);
    assert_eq!(t.get(AttackClass::Anomaly), 0.05);
    assert!(ModelCard::from_json(&serde_json::json!({"thresholds": {"benign": 1}})).is_err());
    assert!(ModelCard::from_json(&serde_json::json!({"thresholds": {"scan": "high"}})).is_err());
}

#[test]
fn training_script_card_shape_is_accepted() {
    let v = serde_json::json!({
        "name": "flow-classifier", "kind": "classifier", "version": "3.0.0+abc",
        "schema": {"version": 3, "features": [{"name": "syn_ratio", "unit": "ratio"}, {"name": "pkts", "unit": "1/s"}]},
        "thresholds": {"attack_score": 0.7, "attack_score_definition": "1 - P(benign)",
                       "chosen_by": "min cost", "validation_cost": 12.0, "scan": 0.8},
        "baseline_quantiles": {"quantiles": [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99],
            "benign_train": {"syn_ratio": [0.0, 0.0, 0.0, 0.0, 0.0, 0.329, 0.5],
                             "pkts": [1.0, 2.0, 3.0, 5.0, 4.349, 9.0, 20.0]},
            "benign_train_cdf": {"syn_ratio": [0.8, 0.8, 0.8, 0.8, 0.8, 0.95, 0.99]}}
    });
    let c = ModelCard::from_json(&v).unwrap();
    assert_eq!(c.feature_names, ["syn_ratio", "pkts"]);
    let q = c.quantiles.as_ref().unwrap();
    assert_eq!(q.levels.len(), 7);
    assert_eq!(q.cdf[0].as_deref().map(<[f64]>::len), Some(7));
    assert_eq!(q.cdf[1], None);
    assert_eq!(c.thresholds[&AttackClass::Flood], 0.7);
    assert_eq!(c.thresholds[&AttackClass::Scan], 0.8);
    let b = c.baseline[0].unwrap();
    assert_eq!(b.center, 0.0);
    assert!(
        (b.scale - 0.1).abs() < 1e-6,
        "IQR 0: falls back to the 5-95 range"
    );
    assert_eq!(c.baseline[1].unwrap().center, 5.0);
    let ae = ModelCard::from_json(
        &serde_json::json!({"thresholds": {"anomaly_score": 0.04, "chosen_by": "q"}}),
    )
    .unwrap();
    assert_eq!(ae.anomaly_threshold, Some(0.04));
}
