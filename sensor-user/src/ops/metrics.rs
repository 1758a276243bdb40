//! `--metrics-addr`: the running sensor's figures in the Prometheus text
//! exposition format, for a Prometheus server to scrape.
//!
//! The exposition is `prometheus-client`'s; one custom collector reads, at
//! each scrape, what the stages published for other threads (the kernel's
//! per-CPU counters through a descriptor of their own, each worker's counters
//! at its tick, each pipeline's counters and histograms every 10 ms, the
//! alert stage's once a second). So the per-event path takes no lock and
//! updates no shared counter; a scrape copies some tens of kilobytes.
//!
//! The HTTP side is a loop on one thread that answers `GET /metrics` (and
//! 404 to anything else), one connection at a time: a scrape every few
//! seconds needs no HTTP library and no async runtime.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};
use sensor_common::{
    Counter,
    records::{ConfigReloads, LatencyReport, ModelReloads, WorkerLatency},
};
use tracing::{debug, info, warn};

use crate::{
    alerts::{AlertReader, EVE_SEVERITIES},
    capture::{
        error::SensorError,
        live::{LatencyHistogram, Published},
        workers::LiveWorkers,
    },
    model::{
        pipeline::{BATCH_SIZE_BOUNDS, PipelineLive},
        row::AttackClass,
    },
    ops::report::CountersReader,
};

/// Prefix of every metric name.
pub const PREFIX: &str = "xdp_sensor";

/// A counter family: name, help, and how to read it from a stage's figures.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Upper bounds (seconds) of the latency histograms: the design's event to
/// score budget is p99 < 1 ms, p99.9 < 2 ms, so the buckets are finest there.
const LATENCY_BOUNDS_S: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.05,
    0.1, 1.0, 10.0,
];

/// How long a scrape may take to send its request before it is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request head read.
const MAX_REQUEST_BYTES: usize = 8192;
/// How often the serving thread looks at its stop flag.
const STOP_POLL_MS: u16 = 100;

/// What the scoring side of a run publishes (absent with `--no-score`).
#[derive(Debug, Clone, Default)]
pub(crate) struct ScoringFigures {
    /// One per worker, in worker order.
    pub pipelines: Vec<Arc<Published<PipelineLive>>>,
    pub alerts: Option<AlertReader>,
    pub models: Arc<Published<ModelsInUse>>,
    /// The model registry the run loaded from (watched for promotions).
    pub models_dir: Option<std::path::PathBuf>,
}

/// The models a run scores with, and its model reloads so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelsInUse {
    /// `(model role, name@version)` of each model in use.
    pub ids: Vec<(&'static str, String)>,
    pub reloads: ModelReloads,
}

impl ScoringFigures {
    /// The latencies for `--stats-out`, as last published (`None` without
    /// scoring).
    pub(crate) fn latency_report(&self) -> Option<LatencyReport> {
        if self.pipelines.is_empty() {
            return None;
        }
        Some(LatencyReport {
            event_to_score: self
                .pipelines
                .iter()
                .enumerate()
                .map(|(worker, p)| WorkerLatency {
                    worker,
                    latency: p.read().score_latency.summary(),
                })
                .collect(),
            event_to_alert: self
                .alerts
                .as_ref()
                .map(|a| a.figures().alert_latency.summary())
                .unwrap_or_default(),
        })
    }

    /// Drift monitoring's figures for `--stats-out`, as last published
    /// (`None` without the alert stage).
    pub(crate) fn drift_report(&self) -> Option<sensor_common::records::DriftReport> {
        let a = self.alerts.as_ref()?;
        Some(sensor_common::records::DriftReport {
            events: a.counters().drift_events,
            psi: a.figures().drift_psi.into_iter().collect(),
        })
    }
}

/// Everything one scrape reads.
#[derive(Debug)]
pub(crate) struct MetricSources {
    pub kernel: CountersReader,
    pub workers: LiveWorkers,
    pub scoring: ScoringFigures,
    pub reloads: Arc<Published<ConfigReloads>>,
}

impl Collector for MetricSources {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_kernel(&mut enc)?;
        self.encode_workers(&mut enc)?;
        self.encode_scoring(&mut enc)?;
        let r = self.reloads.read();
        let mut m = enc.encode_descriptor(
            "config_reloads",
            "Configuration reloads (SIGHUP) by outcome: applied, or rejected with the previous configuration kept.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, v) in [("applied", r.applied), ("rejected", r.rejected)] {
            m.encode_family(&[("outcome", outcome)])?
                .encode_counter::<NoLabelSet, u64, u64>(&v, None)?;
        }
        Ok(())
    }
}

impl MetricSources {
    fn encode_kernel(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = match self.kernel.read() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "metrics: the kernel counters could not be read; this scrape leaves them out");
                return Ok(());
            }
        };
        for c in Counter::ALL {
            let help = format!(
                "Kernel counter {} of the XDP program, summed over CPUs.",
                c.name()
            );
            enc.encode_descriptor(
                &format!("kernel_{}", c.name()),
                &help,
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, u64, u64>(&counters[c as usize], None)?;
        }
        Ok(())
    }

    fn encode_workers(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let workers: Vec<_> = self.workers.iter().map(Published::read).collect();
        let families: [Family<crate::capture::workers::WorkerCounters>; 4] = [
            (
                "worker_events",
                "Flow events a worker read from its ring.",
                |c| c.events,
            ),
            (
                "worker_decode_errors",
                "Ring records a worker could not decode as an event (counted and skipped).",
                |c| c.decode_errors,
            ),
            (
                "worker_untracked_events",
                "Events of flows a worker could not track because its flow map was full.",
                |c| c.untracked,
            ),
            (
                "worker_wakeups",
                "Times a worker slept in ppoll on an empty ring and woke up.",
                |c| c.wakeups,
            ),
        ];
        for (name, help, get) in families {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (i, c) in workers.iter().enumerate() {
                m.encode_family(&[("worker", i.to_string())])?
                    .encode_counter::<NoLabelSet, u64, u64>(&get(c), None)?;
            }
        }
        Ok(())
    }

    fn encode_scoring(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.scoring;
        let pipes: Vec<PipelineLive> = s.pipelines.iter().map(|p| p.read()).collect();
        let families: [Family<PipelineLive>; 6] = [
            (
                "rows_scored",
                "Feature rows a worker's pipeline scored with the classifier.",
                |p| p.counters.rows_scored,
            ),
            (
                "rows_escalated",
                "Rows also scored by the autoencoder.",
                |p| p.counters.escalated,
            ),
            ("rows_emitted", "Rows sent to the alert stage.", |p| {
                p.counters.emitted
            }),
            (
                "rows_shed",
                "Rows shed because the alert stage's queue was full (a worker never blocks).",
                |p| p.counters.shed,
            ),
            (
                "rows_below_floor",
                "Rows scored but not sent: far below every alert threshold.",
                |p| p.counters.below_floor,
            ),
            (
                "inference_errors",
                "Batches lost to an inference error.",
                |p| p.counters.inference_errors,
            ),
        ];
        for (name, help, get) in families {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (i, p) in pipes.iter().enumerate() {
                m.encode_family(&[("worker", i.to_string())])?
                    .encode_counter::<NoLabelSet, u64, u64>(&get(p), None)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "batch_size_rows",
            "Rows per scored micro-batch.",
            None,
            MetricType::Histogram,
        )?;
        for (i, p) in pipes.iter().enumerate() {
            let buckets: Vec<(f64, u64)> = BATCH_SIZE_BOUNDS
                .iter()
                .zip(p.batch_sizes)
                .map(|(&b, n)| (b as f64, n))
                .collect();
            m.encode_family(&[("worker", i.to_string())])?
                .encode_histogram::<NoLabelSet>(
                    p.batch_rows as f64,
                    p.counters.batches,
                    &buckets,
                    None,
                )?;
        }
        let mut m = enc.encode_descriptor(
            "event_to_score_seconds",
            "From a flow event's kernel timestamp to the end of its row's inference, per worker.",
            None,
            MetricType::Histogram,
        )?;
        for (i, p) in pipes.iter().enumerate() {
            let labels = [("worker", i.to_string())];
            let mut fam = m.encode_family(&labels)?;
            encode_latency(&mut fam, &p.score_latency)?;
        }
        if let Some(alerts) = &s.alerts {
            let a = alerts.counters();
            let f = alerts.figures();
            let mut m = enc.encode_descriptor(
                "alerts_opened",
                "Alerts opened, by attack class and EVE severity (1 = highest).",
                None,
                MetricType::Counter,
            )?;
            for (class, row) in AttackClass::ALL.into_iter().zip(&f.opened) {
                if class == AttackClass::Benign {
                    continue;
                }
                for (sev, n) in row.iter().enumerate().take(EVE_SEVERITIES) {
                    m.encode_family(&[
                        ("class", class.name().to_owned()),
                        ("severity", (sev + 1).to_string()),
                    ])?
                    .encode_counter::<NoLabelSet, u64, u64>(n, None)?;
                }
            }
            let mut m = enc.encode_descriptor(
                "event_to_alert_seconds",
                "From the kernel timestamp of the event whose row opened an alert to the opening.",
                None,
                MetricType::Histogram,
            )?;
            encode_latency(&mut m, &f.alert_latency)?;
            for (name, help, v) in [
                (
                    "alert_rows",
                    "Scored rows the alert stage received.",
                    a.rows_in,
                ),
                (
                    "alert_rows_shed",
                    "Rows the alert stage lost because its queue was full.",
                    a.rows_shed,
                ),
                ("alerts_updated", "Alert updates written.", a.alerts_updated),
                ("alerts_closed", "Alerts closed.", a.alerts_closed),
                ("incidents_opened", "Incidents opened.", a.incidents_opened),
                (
                    "drift_events",
                    "Drift records written (start, update, end): feature distributions moved from the model card's baseline.",
                    a.drift_events,
                ),
            ] {
                enc.encode_descriptor(name, help, None, MetricType::Counter)?
                    .encode_counter::<NoLabelSet, u64, u64>(&v, None)?;
            }
            if !f.drift_psi.is_empty() {
                let mut m = enc.encode_descriptor(
                    "feature_psi",
                    "Population stability index of each feature over the drift window against the model card's baseline, as last judged.",
                    None,
                    MetricType::Gauge,
                )?;
                for (feature, psi) in &f.drift_psi {
                    m.encode_family(&[("feature", feature.as_str())])?
                        .encode_gauge(psi)?;
                }
            }
            for (name, help, v) in [
                ("open_alerts", "Alerts open now.", a.open_alerts),
                ("open_incidents", "Incidents open now.", a.open_incidents),
            ] {
                enc.encode_descriptor(name, help, None, MetricType::Gauge)?
                    .encode_gauge(&v)?;
            }
        }
        let models = s.models.read();
        let mut m = enc.encode_descriptor(
            "model",
            "The models in use, by role and version.",
            None,
            MetricType::Info,
        )?;
        for (role, version) in &models.ids {
            m.encode_info(&[("role", *role), ("version", version.as_str())])?;
        }
        if s.models_dir.is_some() {
            let r = models.reloads;
            let mut m = enc.encode_descriptor(
                "model_reloads",
                "Model reloads by outcome: applied (every worker swapped), rejected (the running models kept), unchanged.",
                None,
                MetricType::Counter,
            )?;
            for (outcome, v) in [
                ("applied", r.applied),
                ("rejected", r.rejected),
                ("unchanged", r.unchanged),
            ] {
                m.encode_family(&[("outcome", outcome)])?
                    .encode_counter::<NoLabelSet, u64, u64>(&v, None)?;
            }
            enc.encode_descriptor(
                "model_reload_last_seconds",
                "How long the last applied model reload took, from reading the registry until every worker had swapped.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(r.last_latency_us as f64 / 1e6))?;
        }
        Ok(())
    }
}

/// One latency histogram in [`LATENCY_BOUNDS_S`] buckets.
fn encode_latency(
    m: &mut prometheus_client::encoding::MetricEncoder,
    h: &LatencyHistogram,
) -> Result<(), std::fmt::Error> {
    let mut below = 0;
    let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_S
        .iter()
        .map(|&le| {
            let at_or_below = h.count_at_or_below((le * 1e9) as u64);
            let n = at_or_below.saturating_sub(below);
            below = at_or_below;
            (le, n)
        })
        .collect();
    m.encode_histogram::<NoLabelSet>(h.sum_seconds(), h.count(), &buckets, None)
}

/// The exposition of `sources` now.
pub(crate) fn render(sources: &Arc<MetricSources>) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(Arc::clone(sources)));
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        warn!(error = %e, "metrics: encoding failed");
    }
    out
}

/// The listening socket, bound before the sensor attaches so a bad or busy
/// address stops the start.
#[derive(Debug)]
pub(crate) struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsListener {
    /// Binds `addr`.
    ///
    /// # Errors
    /// [`SensorError::MetricsAddr`] when it cannot be bound.
    pub(crate) fn bind(addr: SocketAddr) -> Result<Self, SensorError> {
        let err = |source| SensorError::MetricsAddr { addr, source };
        let listener = TcpListener::bind(addr).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        Ok(Self { listener, addr })
    }

    /// Starts answering scrapes from `sources` on a thread of its own.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub(crate) fn serve(self, sources: MetricSources) -> Result<MetricsServer, SensorError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let sources = Arc::new(sources);
        let addr = self.addr;
        let thread = std::thread::Builder::new()
            .name("sensor-metrics".into())
            .spawn(move || serve_loop(&self.listener, &sources, &stop2))
            .map_err(|source| SensorError::System {
                what: "spawning the metrics thread",
                source,
            })?;
        info!(%addr, "metrics served at http://{addr}/metrics");
        Ok(MetricsServer { stop, thread })
    }
}

/// The running endpoint.
pub(crate) struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl MetricsServer {
    /// Stops answering (within [`STOP_POLL_MS`]) and joins the thread.
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Release);
        if self.thread.join().is_err() {
            warn!("the metrics thread panicked");
        }
    }
}

fn serve_loop(listener: &TcpListener, sources: &Arc<MetricSources>, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(STOP_POLL_MS)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "metrics: poll failed; the endpoint stops");
                return;
            }
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = answer(stream, sources) {
                    debug!(%peer, error = %e, "metrics: a scrape failed");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => debug!(error = %e, "metrics: accept failed"),
        }
    }
}

/// Reads one request head and answers it; the connection then closes.
fn answer(mut stream: TcpStream, sources: &Arc<MetricSources>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, ctype, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            render(sources),
        ),
        (Some(b"GET"), _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only /metrics is served here\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics is served here\n".to_owned(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct One(LatencyHistogram);

    impl Collector for One {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let mut m = enc.encode_descriptor("t_seconds", "t", None, MetricType::Histogram)?;
            encode_latency(&mut m, &self.0)
        }
    }

    #[test]
    fn latency_buckets_are_per_bucket_counts() {
        let mut h = LatencyHistogram::default();
        h.record(0, 20_000); // 20 us
        h.record(0, 700_000); // 700 us
        h.record(0, 3_000_000_000); // 3 s
        let mut out = String::new();
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(One(h)));
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("xdp_sensor_t_seconds_bucket{le=\"1e-05\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("xdp_sensor_t_seconds_bucket{le=\"2.5e-05\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("xdp_sensor_t_seconds_bucket{le=\"0.001\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("xdp_sensor_t_seconds_bucket{le=\"1\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("xdp_sensor_t_seconds_bucket{le=\"10\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("xdp_sensor_t_seconds_bucket{le=\"+Inf\"} 3"),
            "{out}"
        );
        assert!(out.contains("xdp_sensor_t_seconds_count 3"), "{out}");
    }
}
