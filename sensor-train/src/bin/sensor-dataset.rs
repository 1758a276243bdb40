//! Builds the labelled training set from the traffic simulator: simulated
//! episodes → kernel event model → the live feature extractor → CSV
//! (header = schema names + `label`). Also writes the small recorded event
//! fixture and its expected rows used by the tests.
//!
//! The data is simulated; see `sensor_train::sim` for what is modelled.

use std::{fs, io::Write as _, path::PathBuf};

use anyhow::Context as _;
use clap::Parser;
use sensor::features::{
    FeatureConfig, FeatureExtractor, FeatureVec, N_FEATURES, SCHEMA, SCHEMA_VERSION,
    schema::csv_header, write_csv_row,
};
use sensor_train::sim::{EpisodeConfig, SimEvent, SimItem, build_episode};

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Generate the simulated, labelled training set")]
struct Args {
    /// Output CSV.
    #[arg(long, default_value = "target/dataset/flows.csv")]
    out: PathBuf,
    /// Number of episodes.
    #[arg(long, default_value_t = 10)]
    episodes: u64,
    /// Base seed; episode `i` uses `seed + i`.
    #[arg(long, default_value_t = 20_261_122)]
    seed: u64,
    /// Length of each episode in simulated seconds.
    #[arg(long, default_value_t = 300)]
    secs: u64,
    /// Benign clients per episode.
    #[arg(long, default_value_t = 16)]
    clients: u8,
    /// Attacks per episode.
    #[arg(long, default_value_t = 4)]
    attacks: u32,
    /// Most rows written per scenario instance (the rest are thinned evenly,
    /// after every event has updated the features).
    #[arg(long, default_value_t = 3000)]
    rows_per_scenario: u64,
    /// Also write the recorded-event fixture (`events.bin`, `rows.csv`) here.
    #[arg(long)]
    fixture_dir: Option<PathBuf>,
}

/// Runs a stream through a fresh extractor (installing gateway views as a
/// worker's tick would), calling `keep` on each event's row.
fn extract(items: &[SimItem], mut keep: impl FnMut(&SimEvent, &FeatureVec)) {
    let mut fx = FeatureExtractor::new(FeatureConfig::default());
    let mut row = [0f32; N_FEATURES];
    for it in items {
        match it {
            SimItem::Gateway(g) => fx.set_gateway_view(std::sync::Arc::clone(g)),
            SimItem::Event(e) => {
                if fx.process(&e.ev, &mut row).is_some() {
                    keep(e, &row);
                }
            }
        }
    }
}

fn events(items: &[SimItem]) -> impl Iterator<Item = &SimEvent> {
    items.iter().filter_map(|it| match it {
        SimItem::Event(e) => Some(e),
        SimItem::Gateway(_) => None,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.fixture_dir {
        write_fixture(dir)?;
    }
    if let Some(p) = args.out.parent() {
        fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    }
    let mut out = String::with_capacity(64 << 20);
    // `group` names the scenario instance of a row, so training can count a
    // missed attack per instance rather than per row.
    let header = csv_header();
    let (features, _) = header.rsplit_once(',').expect("header ends with label");
    out.push_str(features);
    out.push_str(",group,label\n");
    let mut per_class = [0u64; 4];
    for i in 0..args.episodes {
        let cfg = EpisodeConfig {
            seed: args.seed + i,
            secs: args.secs,
            clients: args.clients,
            // One calm episode in five; the rest get attacks.
            attacks: if i % 5 == 4 { 0 } else { args.attacks },
            intensity: [0.5, 1.0, 2.0, 4.0][(i % 4) as usize],
        };
        let (items, scenarios) = build_episode(&cfg).into_stream(2);
        let mut counts = vec![0u64; scenarios.len()];
        let mut n_events = 0usize;
        for e in events(&items) {
            counts[e.scenario as usize] += 1;
            n_events += 1;
        }
        let stride: Vec<u64> = counts
            .iter()
            .map(|&n| n.div_ceil(args.rows_per_scenario).max(1))
            .collect();
        let mut seen = vec![0u64; scenarios.len()];
        extract(&items, |e, row| {
            let s = e.scenario as usize;
            seen[s] += 1;
            if (seen[s] - 1) % stride[s] == 0 {
                per_class[e.label as usize] += 1;
                let tag = format!("e{i}s{},{}", e.scenario, e.label.name());
                write_csv_row(&mut out, row, &tag);
            }
        });
        eprintln!(
            "episode {i}: seed {} {} events, {} scenarios",
            cfg.seed,
            n_events,
            scenarios.len()
        );
    }
    fs::write(&args.out, &out).with_context(|| format!("writing {}", args.out.display()))?;
    // The schema (defined once, in the sensor) and how the data was made,
    // for the training script to copy into each model card.
    let meta = serde_json::json!({
        "schema": {
            "version": SCHEMA_VERSION,
            "features": SCHEMA.iter().map(|f| serde_json::json!({"name": f.name, "unit": f.unit})).collect::<Vec<_>>(),
        },
        "dataset": {
            "simulated": true,
            "generator": "sensor-dataset (sensor_train::sim), kernel export model + live feature extractor",
            "seed": args.seed,
            "episodes": args.episodes,
            "episode_secs": args.secs,
            "clients_per_episode": args.clients,
            "attacks_per_episode": args.attacks,
            "rows_per_scenario_cap": args.rows_per_scenario,
            "rows_per_class": {
                "benign": per_class[0], "flood": per_class[1], "scan": per_class[2], "bruteforce": per_class[3],
            },
            "command": format!(
                "sensor-dataset --out {} --episodes {} --seed {} --secs {} --clients {} --attacks {} --rows-per-scenario {}",
                args.out.display(), args.episodes, args.seed, args.secs, args.clients, args.attacks, args.rows_per_scenario
            ),
        },
    });
    let mp = args.out.with_extension("meta.json");
    fs::write(&mp, serde_json::to_string_pretty(&meta)?)
        .with_context(|| format!("writing {}", mp.display()))?;
    eprintln!(
        "wrote {}: benign {} flood {} scan {} bruteforce {}",
        args.out.display(),
        per_class[0],
        per_class[1],
        per_class[2],
        per_class[3]
    );
    Ok(())
}

/// A short episode with every kind of traffic, small enough to commit: the
/// recorded stream (`sensor_train::fixture`: events and gateway views)
/// and the rows the extractor makes of it.
fn write_fixture(dir: &PathBuf) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (items, _) = sensor_train::sim::fixture_episode().into_stream(2);
    let mut rows = csv_header();
    rows.push('\n');
    extract(&items, |e, row| {
        write_csv_row(&mut rows, row, e.label.name());
    });
    sensor_train::fixture::write(dir, &items)
        .with_context(|| format!("writing the fixture in {}", dir.display()))?;
    let events = events(&items).count();
    let p = dir.join("rows.csv");
    let mut f = fs::File::create(&p).with_context(|| format!("writing {}", p.display()))?;
    f.write_all(rows.as_bytes())?;
    eprintln!("fixture: {events} events in {}", dir.display());
    Ok(())
}
