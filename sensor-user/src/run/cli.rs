//! Command line. One `Command` variant per subcommand, each with its own
//! `Args` struct, so a new subcommand is one variant and one struct.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    capture::blocklist::{DEFAULT_BLOCK_TTL, Prefix},
    capture::error::SensorError,
    capture::loader::{
        AttachMode, DEFAULT_FLOW_TABLE_SIZE, DEFAULT_RING_BYTES, EnforceMode, LoadOptions,
    },
    capture::privileges::Account,
    capture::workers::default_workers,
    ops::block::BlockOp,
};

/// XDP/eBPF network threat sensor.
#[derive(Debug, Parser)]
#[command(name = "sensor", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to an interface and observe traffic until SIGINT/SIGTERM or
    /// --duration.
    Run(RunArgs),
    /// Receive NetFlow v5/v9 and IPFIX from routers and score their flow
    /// records as `sensor run` scores the XDP program's events.
    Collect(CollectArgs),
    /// Print the live counters of a running `sensor run` as one JSON line.
    Stats(StatsArgs),
    /// A live terminal view of a running `sensor run`: packets/s, bits/s,
    /// workers, alerts, models and drift, read from its `--metrics-addr`
    /// endpoint (never from its maps). `q` quits.
    Top(TopArgs),
    /// Add, remove or list blocked source prefixes of the sensor on an
    /// interface (dropped while it runs with `--enforce on`).
    Block(BlockArgs),
    /// Protect a victim under a spoofed flood on the sensor's interface:
    /// sources without a completed exchange share a token bucket, known
    /// clients pass (with `--enforce on`).
    Protect(ProtectArgs),
    /// Record an operator's verdict (true or false positive) on an alert.
    Feedback(crate::alerts::FeedbackArgs),
    /// Recompute per-class alert thresholds from the recorded verdicts.
    Tune(crate::alerts::TuneArgs),
    /// Write the feature rows behind verdicts as labelled training data.
    ExportTraining(crate::alerts::ExportTrainingArgs),
    /// Score a CSV of feature rows with a model, as the workers would.
    Score(crate::model::offline::ScoreArgs),
    /// The versioned model registry: list versions, promote one, put one in
    /// shadow.
    Models(crate::model::registry::ModelsArgs),
    /// Print a shell completion script, e.g. `sensor completions bash >
    /// /etc/bash_completion.d/sensor`.
    Completions(CompletionsArgs),
    /// Write the manual pages (sensor.1, sensor-run.1, …) into a directory;
    /// `cargo xtask install` runs it.
    #[command(hide = true)]
    ManPages(ManPagesArgs),
}

/// `sensor collect`.
#[derive(Debug, Clone, Args)]
pub struct CollectArgs {
    /// UDP address and port to receive NetFlow v5, v9 and IPFIX datagrams
    /// on, e.g. 0.0.0.0:2055.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Worker threads scoring the records (flows are spread over them by
    /// a hash of their endpoints).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub workers: u32,
    /// Stop after this many seconds (fractions allowed) instead of waiting for
    /// SIGINT/SIGTERM.
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Write the flows' totals at exit, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub flows_out: Option<PathBuf>,
    /// Write the collector's counters (datagrams, records, templates,
    /// malformed input by reason) and the workers' statistics at exit.
    #[arg(long, value_name = "FILE")]
    pub stats_out: Option<PathBuf>,
    /// Decode and count only: no features, models or alerts.
    #[arg(long)]
    pub no_score: bool,
    /// As for `sensor run`.
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// As for `sensor run`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// As for `sensor run`.
    #[arg(long, value_name = "FILE")]
    pub eve_out: Option<PathBuf>,
    /// As for `sensor run`.
    #[arg(long, value_name = "FILE", conflicts_with = "no_score")]
    pub record_out: Option<PathBuf>,
    /// As for `sensor run`.
    #[arg(long, value_name = "US", default_value_t = 200)]
    pub batch_deadline_us: u64,
}

/// `sensor completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `sensor man-pages`.
#[derive(Debug, Clone, Args)]
pub struct ManPagesArgs {
    /// Directory to write the pages into (it must exist).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `sensor stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// Interface the running sensor is attached to.
    #[arg(long, value_name = "IF")]
    pub iface: String,
}

/// `sensor top`.
#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// The running sensor's metrics endpoint (`sensor run --metrics-addr`):
    /// ADDR:PORT, or a URL such as `http://127.0.0.1:9641/metrics`. This is
    /// the view's only data source.
    #[arg(long, value_name = "URL_OR_ADDR")]
    pub metrics: String,
    /// Interface the sensor runs on, shown in the title only (the figures
    /// come from the metrics endpoint).
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// Seconds between refreshes (fractions allowed).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_duration)]
    pub interval: Duration,
}

/// `sensor block`.
#[derive(Debug, Clone, Args)]
pub struct BlockArgs {
    #[command(subcommand)]
    pub action: BlockAction,
}

impl BlockArgs {
    /// The interface and the operation to run on its lists.
    #[must_use]
    pub fn op(&self) -> (&str, BlockOp) {
        match &self.action {
            BlockAction::Add {
                prefix,
                ttl,
                reason,
                iface,
            } => (
                iface,
                BlockOp::Add {
                    prefix: *prefix,
                    ttl: *ttl,
                    reason: reason.clone(),
                },
            ),
            BlockAction::Del { prefix, iface } => (iface, BlockOp::Del { prefix: *prefix }),
            BlockAction::List { iface } => (iface, BlockOp::List),
        }
    }
}

/// What `sensor block` does.
#[derive(Debug, Clone, Subcommand)]
pub enum BlockAction {
    /// Block a source prefix (or address): replaces and renews an entry of
    /// the same prefix.
    Add {
        /// `10.0.0.0/8`, `2001:db8::/32` or an address.
        #[arg(value_name = "PREFIX")]
        prefix: Prefix,
        /// Seconds the entry blocks; 0: until removed.
        #[arg(long, value_name = "S", default_value_t = DEFAULT_BLOCK_TTL.as_secs())]
        ttl: u64,
        /// A note kept with the entry (its first 32 bytes).
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
        /// Interface the sensor is attached to.
        #[arg(long, value_name = "IF")]
        iface: String,
    },
    /// Remove the entry of exactly this prefix.
    Del {
        #[arg(value_name = "PREFIX")]
        prefix: Prefix,
        /// Interface the sensor is attached to.
        #[arg(long, value_name = "IF")]
        iface: String,
    },
    /// Print every entry as one JSON object per line.
    List {
        /// Interface the sensor is attached to.
        #[arg(long, value_name = "IF")]
        iface: String,
    },
}

/// `--enforce` as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum EnforceArg {
    /// Blocklists are not consulted.
    #[default]
    Off,
    /// Count what would be dropped; drop nothing.
    DryRun,
    /// Drop blocklisted sources.
    On,
}

impl From<EnforceArg> for EnforceMode {
    fn from(m: EnforceArg) -> Self {
        match m {
            EnforceArg::Off => EnforceMode::Off,
            EnforceArg::DryRun => EnforceMode::DryRun,
            EnforceArg::On => EnforceMode::On,
        }
    }
}

/// `sensor protect`.
#[derive(Debug, Clone, Args)]
pub struct ProtectArgs {
    #[command(subcommand)]
    pub action: ProtectAction,
}

/// What `sensor protect` does.
#[derive(Debug, Clone, Subcommand)]
pub enum ProtectAction {
    /// Protect a victim address (replaces and renews its protection).
    Add {
        #[arg(value_name = "VICTIM")]
        victim: std::net::IpAddr,
        /// Packets per second per CPU let through from sources without a
        /// completed exchange (the victim's normal rate of new clients).
        #[arg(long, value_name = "PPS")]
        rate: u64,
        /// Largest burst of such packets.
        #[arg(long, value_name = "N", default_value_t = 64)]
        burst: u64,
        /// Seconds the protection lasts; 0: until removed.
        #[arg(long, value_name = "S", default_value_t = DEFAULT_BLOCK_TTL.as_secs())]
        ttl: u64,
        /// Interface the sensor is attached to.
        #[arg(long, value_name = "IF")]
        iface: String,
    },
    /// End a victim's protection.
    Del {
        #[arg(value_name = "VICTIM")]
        victim: std::net::IpAddr,
        /// Interface the sensor is attached to.
        #[arg(long, value_name = "IF")]
        iface: String,
    },
    /// Print every protected victim as one JSON object per line.
    List {
        /// Interface the sensor is attached to.
        #[arg(long, value_name = "IF")]
        iface: String,
    },
}

impl ProtectArgs {
    /// The interface and the operation to run on its lists.
    #[must_use]
    pub fn op(&self) -> (&str, BlockOp) {
        match &self.action {
            ProtectAction::Add {
                victim,
                rate,
                burst,
                ttl,
                iface,
            } => (
                iface,
                BlockOp::Protect {
                    victim: *victim,
                    rate: *rate,
                    burst: *burst,
                    ttl: *ttl,
                },
            ),
            ProtectAction::Del { victim, iface } => (iface, BlockOp::Unprotect { victim: *victim }),
            ProtectAction::List { iface } => (iface, BlockOp::ListProtected),
        }
    }
}

/// XDP attach mode as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ModeArg {
    /// In the driver: fastest; needs driver support.
    #[default]
    Native,
    /// Generic XDP: any interface, slower.
    Skb,
}

impl From<ModeArg> for AttachMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Native => AttachMode::Native,
            ModeArg::Skb => AttachMode::Skb,
        }
    }
}

/// `sensor run`.
#[derive(Debug, Clone, Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "command-line switches: each bool is one independent flag"
)]
pub struct RunArgs {
    /// Interface to attach to.
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Native)]
    pub mode: ModeArg,
    /// Mirror/SPAN port: drop every packet after observing it.
    #[arg(long)]
    pub mirror: bool,
    /// Drop packets from blocklisted sources (`sensor block`, alerts at
    /// their class's block threshold): `off`, `dry-run` (count what would
    /// be dropped, drop nothing) or `on` (refused with --mirror).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = EnforceArg::Off)]
    pub enforce: EnforceArg,
    /// A source prefix never blocked (repeatable); the interface's own
    /// addresses never are either.
    #[arg(long = "allow", value_name = "PREFIX")]
    pub allow: Vec<Prefix>,
    /// Worker threads, one ring each [default: available cores, at most 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub workers: Option<u32>,
    /// Stop after this many seconds (fractions allowed) instead of waiting for
    /// SIGINT/SIGTERM.
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Write the flow table at exit, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub flows_out: Option<PathBuf>,
    /// Write counters and worker statistics at exit, one JSON object.
    #[arg(long, value_name = "FILE")]
    pub stats_out: Option<PathBuf>,
    /// Write sketch totals and per-source estimates at exit, one JSON object.
    #[arg(long, value_name = "FILE")]
    pub sketch_out: Option<PathBuf>,
    /// Flow table capacity (entries per CPU).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FLOW_TABLE_SIZE)]
    pub flow_table_size: u32,
    /// Bytes of each worker ring: a power of two, at least the page size.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RING_BYTES)]
    pub ring_bytes: u32,
    /// Observe only: no feature extraction, models or alerts.
    #[arg(long)]
    pub no_score: bool,
    /// At SIGINT/SIGTERM or the end of --duration, leave the XDP program
    /// attached and its flow table, sketches and counters pinned, so packets
    /// are still counted while no sensor runs and the next `sensor run` on
    /// the interface adopts them (restart or upgrade without forgetting).
    /// Without it a stop detaches the program and removes the pins.
    #[arg(long)]
    pub keep_state: bool,
    /// Directory holding flow-classifier.onnx and flow-autoencoder.onnx, each
    /// with its model card (`<name>.card.json`) [default: beside an installed
    /// or copied binary (`../share/xdp-sensor/models`, `./models`), else the
    /// source tree's `models/`].
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Sensor configuration (TOML): alert thresholds, inventory, sinks,
    /// feedback store; see config/sensor.example.toml. Without it alerts go
    /// to stdout (or --eve-out) with the model cards' thresholds.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write alerts as EVE JSON lines to this file (rotated at 100 MiB, five kept).
    #[arg(long, value_name = "FILE")]
    pub eve_out: Option<PathBuf>,
    /// Record every scored row (no emit floor) as CSV: event time, flow key,
    /// the schema's features, class probabilities and anomaly score; see
    /// docs/lab.md. Rows the recorder could not keep up with are counted.
    #[arg(long, value_name = "FILE", conflicts_with = "no_score")]
    pub record_out: Option<PathBuf>,
    /// A batch of feature rows is scored when full or when its oldest row
    /// has waited this long (microseconds).
    #[arg(long, value_name = "US", default_value_t = 200)]
    pub batch_deadline_us: u64,
    /// Keep a batch open until it is full or its deadline passes, even when
    /// the ring is empty. By default a batch is scored as soon as the worker
    /// has drained its ring: lower latency, at the cost of more (smaller)
    /// batches, so more CPU per row, at moderate load.
    #[arg(long)]
    pub hold_batches: bool,
    /// Once attached, run as this account, with no capability left (as
    /// Suricata's --user). The account must be able to write the output
    /// files' directories and read the configuration and models; see
    /// docs/sensor-run.md.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Group to run as with --user [default: the user's primary group].
    #[arg(long, value_name = "NAME", requires = "user")]
    pub group: Option<String>,
    /// Also receive NetFlow v5/v9 and IPFIX on this UDP address and port
    /// and score the flow records beside the interface's packets, on one
    /// more worker (as `sensor collect` does alone).
    #[arg(long, value_name = "ADDR:PORT")]
    pub collect: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (e.g.
    /// 127.0.0.1:9640); off by default. Bound before the program attaches.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("`{s}` must be a positive number of seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

impl RunArgs {
    /// `--models-dir`, or where the running binary finds its models.
    #[must_use]
    pub fn models_dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(crate::model::default_models_dir)
    }

    /// The `--user` account (with `--group`), checked to exist and to be
    /// reachable: the process must be root to switch.
    ///
    /// # Errors
    /// [`SensorError::Privileges`].
    pub(crate) fn account(&self) -> Result<Option<Account>, SensorError> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        let account = Account::resolve(user, self.group.as_deref())?;
        Account::check_can_switch()?;
        Ok(Some(account))
    }

    /// The directories outputs are renamed into or rotated in, each with
    /// the option that names it: the `--user` account must write them.
    #[must_use]
    pub(crate) fn output_dirs(&self) -> Vec<(&'static str, PathBuf)> {
        [
            ("--flows-out", &self.flows_out),
            ("--stats-out", &self.stats_out),
            ("--sketch-out", &self.sketch_out),
            ("--eve-out", &self.eve_out),
            ("--record-out", &self.record_out),
        ]
        .into_iter()
        .filter_map(|(option, path)| {
            let dir = match path.as_deref()?.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            };
            Some((option, dir))
        })
        .collect()
    }

    /// The loader's view of these options.
    ///
    /// # Errors
    /// An option is out of range.
    pub(crate) fn load_options(&self) -> Result<LoadOptions, SensorError> {
        // The kernel keys its destination sketch with the volume rule's
        // prefix lengths, so they come from the same config file.
        let dst_prefix = match &self.config {
            Some(path) => crate::alerts::config::SensorFile::load(path)
                .map_err(|e| SensorError::InvalidConfig {
                    what: "--config",
                    reason: e.to_string(),
                })?
                .volume
                .dst_prefix(),
            None => sensor_common::sketch::DST_PREFIX_DEFAULT,
        };
        let opts = LoadOptions {
            iface: self.iface.clone(),
            mode: self.mode.into(),
            mirror: self.mirror,
            n_workers: self.workers.unwrap_or_else(default_workers),
            flow_table_size: self.flow_table_size,
            ring_bytes: self.ring_bytes,
            dst_prefix,
            enforce: self.enforce.into(),
            allow: self.allow.clone(),
        };
        opts.validate()?;
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sensor").chain(args.iter().copied()))
    }

    fn run(args: &[&str]) -> RunArgs {
        match parse(args).unwrap().command {
            Command::Run(r) => r,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn stats_needs_an_interface() {
        assert!(parse(&["stats"]).is_err());
        match parse(&["stats", "--iface", "eth0"]).unwrap().command {
            Command::Stats(s) => assert_eq!(s.iface, "eth0"),
            other => panic!("not stats: {other:?}"),
        }
    }

    #[test]
    fn feedback_subcommands_parse() {
        match parse(&["feedback", "a-1", "--fp"]).unwrap().command {
            Command::Feedback(f) => assert_eq!(f.alert_id, "a-1"),
            other => panic!("not feedback: {other:?}"),
        }
        assert!(matches!(
            parse(&["tune"]).unwrap().command,
            Command::Tune(_)
        ));
        assert!(matches!(
            parse(&["export-training", "--out", "x.csv"])
                .unwrap()
                .command,
            Command::ExportTraining(_)
        ));
    }

    #[test]
    fn collect_parses_and_run_takes_a_collector() {
        match parse(&["collect", "--listen", "127.0.0.1:2055"])
            .unwrap()
            .command
        {
            Command::Collect(c) => {
                assert_eq!(c.listen, "127.0.0.1:2055".parse().unwrap());
                assert_eq!(c.workers, 1);
                assert!(!c.no_score);
            }
            other => panic!("not collect: {other:?}"),
        }
        assert!(parse(&["collect"]).is_err(), "--listen is required");
        assert!(
            parse(&["collect", "--listen", "2055"]).is_err(),
            "an address and a port"
        );
        assert!(parse(&["collect", "--listen", "[::]:2055", "--workers", "9"]).is_err());
        let r = run(&["run", "--iface", "eth0", "--collect", "[::]:4739"]);
        assert_eq!(r.collect, Some("[::]:4739".parse().unwrap()));
        assert_eq!(run(&["run", "--iface", "eth0"]).collect, None);
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults() {
        let r = run(&["run", "--iface", "eth0"]);
        assert_eq!(r.iface, "eth0");
        assert_eq!(r.mode, ModeArg::Native);
        assert!(!r.mirror);
        assert_eq!(r.workers, None);
        assert_eq!(r.duration, None);
        assert_eq!(r.flow_table_size, 65_536);
        assert_eq!(r.ring_bytes, 4 << 20);
        assert!(
            !r.keep_state,
            "a stop detaches unless asked to keep the state"
        );
        assert!(run(&["run", "--iface", "eth0", "--keep-state"]).keep_state);
        let o = r.load_options().unwrap();
        assert!((1..=8).contains(&o.n_workers));
        assert_eq!(o.mode, AttachMode::Native);
    }

    #[test]
    fn run_all_options() {
        let r = run(&[
            "run",
            "--iface",
            "veth0",
            "--mode",
            "skb",
            "--mirror",
            "--workers",
            "2",
            "--duration",
            "1.5",
            "--flows-out",
            "/tmp/f.json",
            "--stats-out",
            "/tmp/s.json",
            "--sketch-out",
            "/tmp/k.json",
            "--flow-table-size",
            "1024",
            "--ring-bytes",
            "65536",
            "--record-out",
            "/tmp/r.csv",
        ]);
        assert_eq!(r.mode, ModeArg::Skb);
        assert_eq!(
            r.record_out.as_deref(),
            Some(std::path::Path::new("/tmp/r.csv"))
        );
        assert!(r.mirror);
        assert_eq!(r.workers, Some(2));
        assert_eq!(r.duration, Some(Duration::from_millis(1500)));
        assert_eq!(
            r.flows_out.as_deref(),
            Some(std::path::Path::new("/tmp/f.json"))
        );
        assert_eq!(
            r.stats_out.as_deref(),
            Some(std::path::Path::new("/tmp/s.json"))
        );
        assert_eq!(
            r.sketch_out.as_deref(),
            Some(std::path::Path::new("/tmp/k.json"))
        );
        let o = r.load_options().unwrap();
        assert_eq!(
            (o.n_workers, o.flow_table_size, o.ring_bytes),
            (2, 1024, 65536)
        );
        assert_eq!(o.mode, AttachMode::Skb);
        assert!(o.mirror);
        assert_eq!(
            r.output_dirs(),
            [
                ("--flows-out", PathBuf::from("/tmp")),
                ("--stats-out", PathBuf::from("/tmp")),
                ("--sketch-out", PathBuf::from("/tmp")),
                ("--record-out", PathBuf::from("/tmp")),
            ]
        );
        assert_eq!(
            run(&["run", "--iface", "x", "--eve-out", "eve.json"]).output_dirs(),
            [("--eve-out", PathBuf::from("."))],
            "a bare file name is in the working directory"
        );
        let u = run(&[
            "run", "--iface", "x", "--user", "nobody", "--group", "nogroup",
        ]);
        assert_eq!(
            (u.user.as_deref(), u.group.as_deref()),
            (Some("nobody"), Some("nogroup"))
        );
        assert_eq!(
            run(&["run", "--iface", "x", "--duration", "5"]).duration,
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn run_rejects_bad_values() {
        assert!(parse(&["run"]).is_err(), "--iface is required");
        assert!(parse(&["run", "--iface", "x", "--mode", "hw"]).is_err());
        assert!(parse(&["run", "--iface", "x", "--workers", "0"]).is_err());
        assert!(parse(&["run", "--iface", "x", "--workers", "9"]).is_err());
        assert!(parse(&["run", "--iface", "x", "--duration", "0"]).is_err());
        assert!(parse(&["run", "--iface", "x", "--duration", "-1"]).is_err());
        assert!(parse(&["run", "--iface", "x", "--duration", "abc"]).is_err());
        assert!(
            parse(&["run", "--iface", "x", "--no-score", "--record-out", "r.csv"]).is_err(),
            "recording needs scoring"
        );
        assert!(
            parse(&["run", "--iface", "x", "--group", "nogroup"]).is_err(),
            "--group needs --user"
        );
        let r = run(&["run", "--iface", "x", "--ring-bytes", "3000"]);
        assert!(r.load_options().is_err());
    }
}
