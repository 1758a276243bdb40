//! `sensor top`: a live terminal view of a running sensor, read from its
//! `--metrics-addr` endpoint (the same figures Prometheus scrapes), never
//! from another process's maps.
//!
//! Each refresh is one HTTP GET; rates are the difference of two scrapes
//! over the time between them. Rendering is a pure function of a
//! [`Snapshot`], so it is tested with ratatui's `TestBackend`.

pub mod exposition;

use std::{
    fmt::Write as _,
    io::{IsTerminal as _, Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    time::{Duration, Instant},
};

use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Paragraph},
};

use self::exposition::{Exposition, buckets, quantile_bound};
use crate::{capture::error::SensorError, ops::metrics::PREFIX};

/// How long one scrape may take (connect, send, read) before the view says
/// the sensor did not answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest exposition read (ours is some tens of kilobytes).
const MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// Drifted features listed, highest PSI first.
const TOP_DRIFT: usize = 5;

/// Where to GET the exposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    pub path: String,
}

impl Target {
    /// `ADDR:PORT`, `http://ADDR:PORT` or `http://ADDR:PORT/path`; the path
    /// defaults to `/metrics`.
    ///
    /// # Errors
    /// An `https://` URL or one without a port.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with("https://") {
            return Err(format!(
                "{s}: https is not read; give the plain http endpoint"
            ));
        }
        let rest = s.strip_prefix("http://").unwrap_or(s);
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!(
                "{s}: expected ADDR:PORT or http://ADDR:PORT/metrics"
            ));
        }
        Ok(Self {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// One GET, bounded by [`SCRAPE_TIMEOUT`]; the body of a 200 answer.
    ///
    /// # Errors
    /// The reason there is no body, in a few words.
    pub fn fetch(&self) -> Result<String, String> {
        let addr = self
            .authority
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("the address resolves to nothing")?;
        let mut stream =
            TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(SCRAPE_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(SCRAPE_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        write!(
            stream,
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
            self.path, self.authority
        )
        .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8(raw).map_err(|_| "the answer is not UTF-8".to_owned())?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or("the answer has no HTTP head")?;
        let status = head.lines().next().unwrap_or_default();
        if status.split_ascii_whitespace().nth(1) != Some("200") {
            return Err(format!("the answer is {status:?}"));
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Err("chunked answers are not read".to_owned());
        }
        Ok(body.to_owned())
    }
}

/// One scrape and when it was taken.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub exp: Exposition,
    pub at: Instant,
}

/// A figure: its total and, after two scrapes, its rate per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figure {
    pub total: f64,
    pub per_s: Option<f64>,
}

/// One worker's line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerRow {
    pub worker: String,
    pub events: Figure,
    pub scored: Figure,
    pub shed: f64,
    /// Event to score, upper bounds of the p50 and p99 buckets (seconds).
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// Everything the view shows, built from the last two scrapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// What the title names: the endpoint, and the interface if given.
    pub source: String,
    pub iface: Option<String>,
    /// Why the last scrape failed (the figures are then the last good ones).
    pub error: Option<String>,
    /// Malformed exposition lines in the last scrape, and the first.
    pub malformed: Option<String>,
    /// How long the last scrape took.
    pub scrape_time: Option<Duration>,
    pub scraped: bool,
    pub packets: Figure,
    /// Bytes; shown as bits/s.
    pub bytes: Figure,
    pub events_emitted: Figure,
    pub events_lost: Figure,
    pub events_sampled_out: Figure,
    pub workers: Vec<WorkerRow>,
    pub open_alerts: Option<f64>,
    pub open_incidents: Option<f64>,
    /// `(class, severity, total)` of alerts opened, non-zero ones.
    pub alerts_opened: Vec<(String, String, f64)>,
    pub alerts_per_s: Option<f64>,
    pub alert_rows_shed: Option<f64>,
    /// `(role, version)`.
    pub models: Vec<(String, String)>,
    /// `(outcome, count)`.
    pub model_reloads: Vec<(String, f64)>,
    pub config_reloads: Vec<(String, f64)>,
    pub drift_events: Option<f64>,
    /// `(feature, psi)`, highest first, at most [`TOP_DRIFT`].
    pub drift: Vec<(String, f64)>,
}

fn name(suffix: &str) -> String {
    format!("{PREFIX}_{suffix}")
}

fn figure(cur: &Scrape, prev: Option<&Scrape>, get: impl Fn(&Exposition) -> Option<f64>) -> Figure {
    let total = get(&cur.exp).unwrap_or_default();
    let per_s = prev.and_then(|p| {
        let dt = cur.at.duration_since(p.at).as_secs_f64();
        let before = get(&p.exp)?;
        // A counter that went down is a restarted sensor: no rate this time.
        (dt > 0.0 && total >= before).then(|| (total - before) / dt)
    });
    Figure { total, per_s }
}

impl Snapshot {
    /// The view of `cur`, with rates against `prev`.
    #[must_use]
    pub fn new(source: &str, iface: Option<&str>, cur: &Scrape, prev: Option<&Scrape>) -> Self {
        let kernel = |c: &str| {
            let n = name(&format!("kernel_{c}_total"));
            figure(cur, prev, move |e| e.sum(&n))
        };
        let e = &cur.exp;
        let mut workers: Vec<String> = e
            .all(&name("worker_events_total"))
            .filter_map(|s| s.label("worker").map(str::to_owned))
            .collect();
        workers.dedup();
        let workers = workers
            .into_iter()
            .map(|w| {
                let by = |metric: &str| {
                    let n = name(metric);
                    let w = w.clone();
                    move |e: &Exposition| e.with_label(&n, "worker", &w)
                };
                let latency = buckets(e, &name("event_to_score_seconds"), |s| {
                    s.label("worker") == Some(w.as_str())
                });
                WorkerRow {
                    events: figure(cur, prev, by("worker_events_total")),
                    scored: figure(cur, prev, by("rows_scored_total")),
                    shed: by("rows_shed_total")(e).unwrap_or_default(),
                    p50: quantile_bound(&latency, 0.5),
                    p99: quantile_bound(&latency, 0.99),
                    worker: w,
                }
            })
            .collect();
        let opened = name("alerts_opened_total");
        let alerts_opened = e
            .all(&opened)
            .filter(|s| s.value > 0.0)
            .map(|s| {
                (
                    s.label("class").unwrap_or("?").to_owned(),
                    s.label("severity").unwrap_or("?").to_owned(),
                    s.value,
                )
            })
            .collect();
        let outcomes = |metric: &str| -> Vec<(String, f64)> {
            e.all(&name(metric))
                .map(|s| (s.label("outcome").unwrap_or("?").to_owned(), s.value))
                .collect()
        };
        let mut drift: Vec<(String, f64)> = e
            .all(&name("feature_psi"))
            .filter(|s| s.value.is_finite())
            .map(|s| (s.label("feature").unwrap_or("?").to_owned(), s.value))
            .collect();
        drift.sort_by(|a, b| b.1.total_cmp(&a.1));
        drift.truncate(TOP_DRIFT);
        Self {
            source: source.to_owned(),
            iface: iface.map(str::to_owned),
            error: None,
            malformed: e
                .first_error
                .as_ref()
                .map(|l| format!("{} malformed lines, first {l}", e.malformed)),
            scrape_time: None,
            scraped: true,
            packets: kernel("packets_seen"),
            bytes: kernel("bytes_seen"),
            events_emitted: kernel("events_emitted"),
            events_lost: kernel("events_lost"),
            events_sampled_out: kernel("events_sampled_out"),
            workers,
            open_alerts: e.sum(&name("open_alerts")),
            open_incidents: e.sum(&name("open_incidents")),
            alerts_opened,
            alerts_per_s: figure(cur, prev, |e| e.sum(&opened)).per_s,
            alert_rows_shed: e.sum(&name("alert_rows_shed_total")),
            models: e
                .all(&name("model_info"))
                .map(|s| {
                    (
                        s.label("role").unwrap_or("?").to_owned(),
                        s.label("version").unwrap_or("?").to_owned(),
                    )
                })
                .collect(),
            model_reloads: outcomes("model_reloads_total"),
            config_reloads: outcomes("config_reloads_total"),
            drift_events: e.sum(&name("drift_events_total")),
            drift,
        }
    }
}

/// `1234567` as `1.23 M`.
fn si(v: f64) -> String {
    let a = v.abs();
    let (d, p) = if a >= 1e9 {
        (1e9, " G")
    } else if a >= 1e6 {
        (1e6, " M")
    } else if a >= 1e3 {
        (1e3, " k")
    } else {
        return format!("{v:.0}");
    };
    format!("{:.2}{p}", v / d)
}

fn rate(f: Option<f64>) -> String {
    f.map_or_else(|| "-".to_owned(), si)
}

fn seconds(s: Option<f64>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) if s.is_infinite() => "> 10 s".to_owned(),
        Some(s) if s < 1e-3 => format!("<= {:.0} us", s * 1e6),
        Some(s) if s < 1.0 => format!("<= {:.0} ms", s * 1e3),
        Some(s) => format!("<= {s:.0} s"),
    }
}

fn count(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

fn bold(s: &str) -> ratatui::text::Span<'_> {
    ratatui::text::Span::styled(s, Style::default().add_modifier(Modifier::BOLD))
}

/// Draws `snap` on the whole frame.
pub fn render(frame: &mut Frame<'_>, snap: &Snapshot) {
    let mut title = format!(" sensor top  {}", snap.source);
    if let Some(i) = &snap.iface {
        let _ = write!(title, "  iface {i}");
    }
    title.push_str("  (q quits) ");
    let status = match (&snap.error, snap.scrape_time) {
        (Some(e), _) => format!("no answer from {}: {e}", snap.source),
        (None, Some(t)) => format!("scraped in {:.1} ms", t.as_secs_f64() * 1e3),
        (None, None) => "waiting for the first scrape".to_owned(),
    };
    let mut status_lines = vec![Line::from(status)];
    if let Some(m) = &snap.malformed {
        status_lines.push(Line::from(m.as_str()));
    }

    let traffic = vec![
        Line::from(vec![
            bold("packets/s "),
            rate(snap.packets.per_s).into(),
            bold("   bits/s "),
            rate(snap.bytes.per_s.map(|b| b * 8.0)).into(),
            bold("   events/s "),
            rate(snap.events_emitted.per_s).into(),
        ]),
        Line::from(format!(
            "packets {:.0} total   bytes {:.0} total   events {:.0}   lost {:.0}   sampled out {:.0}",
            snap.packets.total,
            snap.bytes.total,
            snap.events_emitted.total,
            snap.events_lost.total,
            snap.events_sampled_out.total,
        )),
    ];

    let mut workers = vec![Line::from(bold(
        "worker  events/s   events      scored/s   shed rows   event->score p50   p99",
    ))];
    for w in &snap.workers {
        workers.push(Line::from(format!(
            "{:<7} {:<10} {:<11} {:<10} {:<11} {:<18} {}",
            w.worker,
            rate(w.events.per_s),
            format!("{:.0}", w.events.total),
            rate(w.scored.per_s),
            format!("{:.0}", w.shed),
            seconds(w.p50),
            seconds(w.p99),
        )));
    }

    let mut alerts = vec![Line::from(format!(
        "open alerts {}   open incidents {}   alerts/s {}   alert rows shed {}",
        count(snap.open_alerts),
        count(snap.open_incidents),
        rate(snap.alerts_per_s),
        count(snap.alert_rows_shed),
    ))];
    if snap.alerts_opened.is_empty() {
        alerts.push(Line::from("no alert opened"));
    }
    for (class, sev, n) in &snap.alerts_opened {
        alerts.push(Line::from(format!(
            "opened  {class:<20} severity {sev}  {n:.0}"
        )));
    }

    let mut models: Vec<Line> = snap
        .models
        .iter()
        .map(|(role, v)| Line::from(format!("{role:<12} {v}")))
        .collect();
    if models.is_empty() {
        models.push(Line::from("no model in use (--no-score?)"));
    }
    let reloads = |what: &str, r: &[(String, f64)]| {
        let mut s = format!("{what} reloads:");
        for (o, n) in r {
            let _ = write!(s, " {o} {n:.0}");
        }
        Line::from(s)
    };
    if !snap.model_reloads.is_empty() {
        models.push(reloads("model", &snap.model_reloads));
    }
    models.push(reloads("config", &snap.config_reloads));

    let mut drift = vec![Line::from(format!(
        "drift records {}",
        count(snap.drift_events)
    ))];
    for (f, psi) in &snap.drift {
        drift.push(Line::from(format!("{f:<28} PSI {psi:.3}")));
    }

    let h = |lines: &[Line]| {
        Constraint::Length(
            u16::try_from(lines.len())
                .unwrap_or(u16::MAX)
                .saturating_add(2),
        )
    };
    let sections = [
        (title.as_str(), status_lines),
        (" traffic ", traffic),
        (" workers ", workers),
        (" alerts ", alerts),
        (" models ", models),
        (" drift (PSI, highest first) ", drift),
    ];
    let constraints: Vec<Constraint> = sections.iter().map(|(_, l)| h(l)).collect();
    let areas = Layout::vertical(constraints).split(frame.area());
    for ((name, lines), area) in sections.into_iter().zip(areas.iter()) {
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(name)),
            *area,
        );
    }
}

/// Restores the terminal however the view ends.
struct RestoreTerminal;

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Scrapes `target` once and folds the answer into the view.
fn refresh(target: &Target, args: &TopOptions<'_>, prev: &mut Option<Scrape>, snap: &mut Snapshot) {
    let t = Instant::now();
    match target.fetch() {
        Ok(body) => {
            let cur = Scrape {
                exp: Exposition::parse(&body),
                at: Instant::now(),
            };
            *snap = Snapshot::new(args.metrics, args.iface, &cur, prev.as_ref());
            snap.scrape_time = Some(t.elapsed());
            *prev = Some(cur);
        }
        Err(e) => snap.error = Some(e),
    }
}

/// What `sensor top` was asked to show.
#[derive(Debug, Clone, Copy)]
pub struct TopOptions<'a> {
    /// `--metrics`: the endpoint, the view's only data source.
    pub metrics: &'a str,
    /// `--iface`: shown in the title.
    pub iface: Option<&'a str>,
    pub interval: Duration,
}

/// Runs the view until `q`, Esc or Ctrl-C.
///
/// # Errors
/// A bad `--metrics` value, or the terminal could not be driven.
pub fn run_top(args: &TopOptions<'_>) -> Result<(), SensorError> {
    let target = Target::parse(args.metrics).map_err(|e| SensorError::System {
        what: "reading --metrics",
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    if !std::io::stdout().is_terminal() {
        return Err(SensorError::System {
            what: "sensor top",
            source: std::io::Error::other(
                "stdout is not a terminal; for one reading use `curl http://ADDR:PORT/metrics`",
            ),
        });
    }
    let term_err = |source| SensorError::System {
        what: "driving the terminal",
        source,
    };
    let mut terminal = ratatui::try_init().map_err(term_err)?;
    let _restore = RestoreTerminal;
    let mut prev = None;
    let mut snap = Snapshot {
        source: args.metrics.to_owned(),
        iface: args.iface.map(str::to_owned),
        ..Snapshot::default()
    };
    loop {
        refresh(&target, args, &mut prev, &mut snap);
        terminal.draw(|f| render(f, &snap)).map_err(term_err)?;
        let next = Instant::now() + args.interval;
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            if !event::poll(left).map_err(term_err)? {
                break;
            }
            match event::read().map_err(term_err)? {
                Event::Key(k) if k.kind == KeyEventKind::Press => {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(());
                    }
                }
                Event::Resize(..) => {
                    terminal.draw(|f| render(f, &snap)).map_err(term_err)?;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
