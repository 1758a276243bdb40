//! The alert stage's state machine: threshold, dedup, correlate, rank,
//! enrich, emit. Driven by row timestamps and explicit ticks, never by the
//! wall clock, so tests replay hours of traffic in microseconds.
//!
//! Each step's rules live in their own module (`detect`, `guards`,
//! `beacon`, `dedup`, `incidents`, `emit`); this one holds the state and
//! moves alerts through open, update and close.

use std::{net::IpAddr, sync::Arc};

use super::{
    AlertFigures, AlertMetrics, AlertOutput, AlertsError, Control,
    beacon::{self, BeaconRule},
    block::Blocker,
    config::{AlertSettings, Thresholds, secs_to_ns},
    dedup::{Aggregate, DedupKey, dedup_key},
    detect::{Detection, Rule, detect},
    drift::{DriftFields, DriftFinding, DriftMonitor, DriftWrapper, EveDriftRecord, MovedFeature},
    emit::{AlertState, CloseReason, Context, Emitter},
    eve::ClockMap,
    feedback::{RecordKind, Verdict, VerdictRecord},
    guards::{self, Corroboration, Evidence},
    incidents::{CORR_PEERS_PER_ALERT, Incidents},
    inventory::{Inventory, canonical},
    logins::LoginRule,
    open_alert::{OpenAlert, OpenAlerts, Tuple},
    store::LogWriter,
    volume::{self, VolumeFinding},
};
use crate::{
    capture::gateway::GatewayView,
    features::RowFacts,
    model::row::{AttackClass, Entity, MAX_FEATURES, ModelVersion, N_CLASSES, ScoredRow, Window},
};
use sensor_common::ipproto;

/// How often (event time) open alerts are checked for updates and closing.
const SWEEP_NS: u64 = 1_000_000_000;
/// Open alerts sampled when one must be evicted (approximate LRU, as Redis
/// does): exact LRU would cost an ordered index update on every row.
const EVICTION_SAMPLES: usize = 8;

/// Read-only view of an open alert (tests, control thread, debugging).
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAlertInfo {
    pub alert_id: String,
    pub incident_id: String,
    pub class: AttackClass,
    pub attacker: Option<IpAddr>,
    pub victim: Option<IpAddr>,
    pub count: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub peak_pps: f32,
    pub peak_score: f32,
    /// Estimated distinct peers on the aggregated side, if any.
    pub distinct_peers: Option<u64>,
    pub severity: u8,
}

/// What records are built from, borrowed field by field so the stage's
/// output stays free to write them.
macro_rules! context {
    ($stage:expr) => {
        Context {
            settings: &$stage.settings,
            inventory: &$stage.inventory,
            clock: $stage.clock,
            now_ns: $stage.now_ns,
        }
    };
}

/// All alert state; owned by one thread.
pub struct AlertStage {
    settings: AlertSettings,
    inventory: Inventory,
    out: Emitter,
    clock: ClockMap,
    alert_log: Option<LogWriter>,
    run_id: String,
    now_ns: u64,
    next_sweep_ns: u64,
    quiet_ns: u64,
    update_ns: u64,
    incident_ns: u64,
    alerts: OpenAlerts,
    /// Detections not yet corroborated.
    pending: Corroboration,
    /// Upload-heavy connections per (client, server), for the beacon rule.
    beacons: BeaconRule,
    logins: LoginRule,
    incidents: Incidents,
    next_alert_seq: u64,
    metrics: AlertMetrics,
    /// Alerts opened by class and severity, and their event→alert latency.
    figures: AlertFigures,
    rng: u64,
    /// Feature names of the alert record log, for the last row width seen.
    feature_names: Vec<String>,
    /// Keys of the open flood alerts whose victim is a network: a flood
    /// row on a host inside one belongs to that alert.
    prefix_floods: Vec<DedupKey>,
    /// Where alerts at their class's block bar put their attacker.
    blocker: Blocker,
    /// Hosts the volume rule found flooded while a scan alert probes them:
    /// the epoch of the last finding and the new flows summed over
    /// consecutive epochs (see [`SCAN_MAX_PROBES`]).
    scanned_floods: std::collections::HashMap<IpAddr, (u64, f64)>,
    /// Feature drift against the classifier card's baseline.
    drift: DriftMonitor,
}

/// Confidence of a sweep's scan alert: the scan rule's bar passed by
/// probes no model flagged (between a bare threshold's ½ and a model's
/// certainty).
const SWEEP_SCORE: f32 = 0.75;

/// New flows to one host, over consecutive flooded epochs, beyond which a
/// scan alert no longer explains them: three probes for every TCP and UDP
/// port. A scan probes each port about once; a flood hammers on.
const SCAN_MAX_PROBES: f64 = 3.0 * 65_536.0;

impl AlertStage {
    /// Builds the stage. `clock` maps row timestamps to wall-clock time.
    ///
    /// # Errors
    /// When the alert record log cannot be opened.
    pub fn new(
        settings: AlertSettings,
        inventory: Inventory,
        sinks: impl AlertOutput + 'static,
        clock: ClockMap,
    ) -> Result<Self, AlertsError> {
        let alert_log = if settings.alerts.alert_log.as_os_str().is_empty() {
            None
        } else {
            Some(LogWriter::open(&settings.alerts.alert_log)?)
        };
        let wall_s = sensor_common::clock::realtime_ns() / 1_000_000_000;
        let run_id = format!("{wall_s:x}{:04x}", std::process::id() & 0xffff);
        Ok(Self {
            quiet_ns: secs_to_ns(settings.alerts.quiet_period_s),
            pending: Corroboration::new(secs_to_ns(settings.alerts.corroborate_window_s)),
            update_ns: secs_to_ns(settings.alerts.update_interval_s),
            incident_ns: secs_to_ns(settings.alerts.incident_window_s),
            settings,
            inventory,
            out: Emitter::new(Box::new(sinks)),
            clock,
            alert_log,
            run_id,
            now_ns: 0,
            next_sweep_ns: 0,
            alerts: OpenAlerts::default(),
            beacons: BeaconRule::default(),
            logins: LoginRule::default(),
            incidents: Incidents::new(),
            next_alert_seq: 1,
            metrics: AlertMetrics::default(),
            figures: AlertFigures::default(),
            rng: 0x9e37_79b9_7f4a_7c15,
            feature_names: Vec::new(),
            prefix_floods: Vec::new(),
            scanned_floods: std::collections::HashMap::new(),
            blocker: Blocker::new(None),
            drift: DriftMonitor::new(),
        })
    }

    /// Blocks go to `lists` instead of the pinned lists of the interface
    /// (tests, or a caller that holds the program's maps).
    pub fn set_block_lists(&mut self, lists: crate::capture::blocklist::Lists) {
        self.blocker = Blocker::new(Some(lists));
    }

    /// Judges drift on the bin counts the scoring pipelines add to `tally`
    /// (see `model::drift`).
    pub fn set_drift_tally(&mut self, tally: Arc<crate::model::drift::DriftTally>) {
        self.drift.attach(tally);
    }

    /// Counters now (`rows_shed` as last set by the owner).
    #[must_use]
    pub fn metrics(&self) -> AlertMetrics {
        let mut m = self.metrics;
        m.open_alerts = self.alerts.len() as u64;
        m.open_incidents = self.incidents.len() as u64;
        m.sink_errors = self.out.errors();
        m.drift_events = self.drift.events;
        m
    }

    /// Alerts opened by class and severity, and their latency, so far.
    #[must_use]
    pub fn figures(&self) -> &AlertFigures {
        &self.figures
    }

    pub(crate) fn set_rows_shed(&mut self, n: u64) {
        self.metrics.rows_shed = n;
    }

    /// Thresholds in force.
    #[must_use]
    pub fn thresholds(&self) -> Thresholds {
        self.settings.thresholds
    }

    /// The open alerts.
    #[must_use]
    pub fn open_alerts(&self) -> Vec<OpenAlertInfo> {
        self.alerts
            .iter()
            .map(|a| OpenAlertInfo {
                alert_id: a.id.to_string(),
                incident_id: self.incidents.id_of(a.incident),
                class: a.key.class,
                attacker: a.key.attacker,
                victim: a.key.victim,
                count: a.count,
                first_seen_ns: a.first_seen_ns,
                last_seen_ns: a.last_seen_ns,
                peak_pps: a.peak_pps,
                peak_score: a.peak_score,
                distinct_peers: a.aggregate.as_ref().map(Aggregate::distinct),
                severity: a.severity().0,
            })
            .collect()
    }

    /// Number of open incidents.
    #[must_use]
    pub fn open_incident_count(&self) -> usize {
        self.incidents.len()
    }

    /// Handles a control message from the feedback poller.
    pub fn control(&mut self, c: Control) {
        match c {
            Control::Verdict(v) => self.apply_verdict(&v),
            Control::Thresholds(t) => {
                if t != self.settings.thresholds {
                    tracing::info!(?t, "alert thresholds reloaded");
                    self.settings.thresholds = t;
                    self.metrics.threshold_reloads += 1;
                }
            }
            Control::Reload(r) => self.reload(*r),
        }
    }

    /// Applies a reloaded configuration: thresholds, timings, the
    /// inventory and (when given) the sinks take effect for the next row. The files the stage holds
    /// open (alert record log, verdict store) keep their paths until the
    /// next start, with a warning when the new configuration moves them.
    pub fn reload(&mut self, r: super::Reloaded) {
        let super::Reloaded {
            mut settings,
            inventory,
            sinks,
        } = r;
        if let Some(sinks) = sinks {
            self.out.replace_sinks(sinks);
            tracing::info!("alert sinks replaced");
        }
        // What the running sensor cannot change: where it writes (files it
        // holds open) and the prefixes the kernel keys its destination
        // sketch with. The rest reloads.
        let (old, volume) = (&self.settings.alerts, &self.settings.volume);
        keep_until_restart(
            "[alerts] alert_log",
            &mut settings.alerts.alert_log,
            &old.alert_log,
        );
        keep_until_restart(
            "[alerts] verdict_store",
            &mut settings.alerts.verdict_store,
            &old.verdict_store,
        );
        keep_until_restart(
            "[volume] prefix_v4",
            &mut settings.volume.prefix_v4,
            &volume.prefix_v4,
        );
        keep_until_restart(
            "[volume] prefix_v6",
            &mut settings.volume.prefix_v6,
            &volume.prefix_v6,
        );
        // `--enforce` is the command line's, not the file's.
        settings.enforce = self.settings.enforce;
        if settings.thresholds != self.settings.thresholds {
            tracing::info!(thresholds = ?settings.thresholds, "alert thresholds reloaded");
            self.metrics.threshold_reloads += 1;
        }
        self.quiet_ns = secs_to_ns(settings.alerts.quiet_period_s);
        self.update_ns = secs_to_ns(settings.alerts.update_interval_s);
        self.incident_ns = secs_to_ns(settings.alerts.incident_window_s);
        self.settings = settings;
        self.inventory = inventory;
    }

    /// Attaches an analyst's verdict to the alert if it is still open: a
    /// false positive stops its update records (the closing record still
    /// comes, carrying the verdict).
    pub fn apply_verdict(&mut self, v: &VerdictRecord) {
        self.metrics.verdicts_applied += 1;
        if let Some(a) = self.alerts.iter_mut().find(|a| *a.id == *v.alert_id) {
            a.verdict = Some(v.verdict);
        }
    }

    /// Advances the stage clock (`CLOCK_MONOTONIC` ns) without a row: closes
    /// quiet alerts and emits due updates.
    pub fn tick(&mut self, now_ns: u64) {
        if now_ns > self.now_ns {
            self.now_ns = now_ns;
        }
        if self.now_ns >= self.next_sweep_ns {
            self.sweep();
        }
        let judged = self.drift.judged;
        if let Some(f) = self.drift.tick(self.now_ns, &self.settings.drift) {
            self.emit_drift(&f);
        }
        if self.drift.judged != judged {
            self.figures.drift_psi = self.drift.latest();
        }
    }

    fn emit_drift(&mut self, f: &DriftFinding) {
        tracing::info!(
            state = ?f.state,
            moved = ?f.moved,
            rows = f.rows,
            "feature drift against {}",
            f.baseline
        );
        let models = [&self.settings.classifier, &self.settings.autoencoder]
            .into_iter()
            .flatten()
            .map(|c| format!("{}@{}", c.name, c.version))
            .collect();
        let rec = EveDriftRecord {
            timestamp: super::eve::timestamp(self.clock.wall_ns(self.now_ns)),
            event_type: "drift",
            host: &self.settings.sensor_name,
            xdp_sensor: DriftWrapper {
                drift: DriftFields {
                    state: f.state,
                    baseline: &f.baseline,
                    models,
                    window_s: f.window_s,
                    rows: f.rows,
                    threshold: f.threshold,
                    max_psi: f.max_psi,
                    features: f
                        .moved
                        .iter()
                        .map(|(name, psi)| MovedFeature { name, psi: *psi })
                        .collect(),
                },
            },
        };
        self.out.write(&rec);
    }

    /// Flushes buffered sink output and the alert log.
    pub fn flush(&mut self) {
        self.out.flush(false);
    }

    /// Handles one scored row. No I/O unless an alert opens or escalates.
    pub fn process(&mut self, row: &ScoredRow) {
        self.metrics.rows_in += 1;
        self.tick(row.event_ts_ns);
        if let Some(c) = row.facts.closed {
            // The connection rules' own bars (that many regular uploads,
            // that many short logins) are their corroboration.
            let (now, a) = (self.now_ns, &self.settings.alerts);
            let server_port = if c.client_is_src {
                row.dport
            } else {
                row.sport
            };
            let login = self.settings.logins.ports.contains(&server_port);
            if let Some(det) = self
                .beacons
                .observe(row, (c, login), now, a, &mut self.metrics)
            {
                self.metrics.beacon_detections += 1;
                let r = beacon::client_row(row, c);
                let key = dedup_key(&r, AttackClass::Anomaly);
                self.apply(&r, key, det, false);
            }
            let l = &self.settings.logins;
            if let Some(det) = self.logins.observe(row, c, l, &mut self.metrics) {
                self.metrics.login_detections += 1;
                let r = beacon::client_row(row, c);
                let key = dedup_key(&r, AttackClass::BruteForce);
                self.apply(&r, key, det, false);
            }
        }
        // ARP requests are no IP traffic the models learnt: only the scan
        // rule reads them, as discovery probes.
        let model = if ipproto::is_arp(row.proto, row.sport) {
            None
        } else {
            detect(row, &self.settings.thresholds)
        };
        let screen = |stage: &mut Self, det| {
            guards::screen(
                row,
                det,
                &stage.settings,
                &stage.alerts,
                &stage.logins,
                &mut stage.metrics,
            )
        };
        let screened = model.and_then(|d| screen(self, d));
        let det = match screened {
            Some(d) => d,
            // A discovery probe the models pass over, or whose detection
            // the guards dropped (a probe flagged as a flood at no flood's
            // volume): the scan rule still counts its target (a sweep is
            // many such probes, each ordinary on its own).
            None if row.facts.discovery_probe => {
                self.metrics.discovery_probes += 1;
                let probe = Detection {
                    class: AttackClass::Scan,
                    score: SWEEP_SCORE,
                    raw: 1.0,
                    rule: Rule::Sweep,
                };
                let Some(d) = screen(self, probe) else {
                    return;
                };
                d
            }
            None => {
                if model.is_none() {
                    self.metrics.rows_below_threshold += 1;
                }
                return;
            }
        };
        let mut key = dedup_key(row, det.class);
        if det.class == AttackClass::Flood
            && let Some(k) = self.prefix_flood_of(canonical(row.dst))
        {
            key = k;
        }
        self.apply(row, key, det, true);
    }

    /// The open spread-flood alert whose network holds `dst`, if any.
    fn prefix_flood_of(&self, dst: IpAddr) -> Option<DedupKey> {
        self.prefix_floods.iter().copied().find(|k| {
            k.victim
                .zip(k.victim_prefix)
                .is_some_and(|(net, len)| sensor_common::ip_in_prefix(dst, net, len))
        })
    }

    /// Handles one epoch of the kernel's sketches (the volume rule): each
    /// flooded destination opens or updates its flood alert, at once (the
    /// sketch counted every packet: nothing to corroborate). A host that an
    /// open scan alert probes is left to that alert (a fast vertical scan
    /// is also many new single-packet flows to one host) until its new
    /// flows, summed over consecutive epochs, pass [`SCAN_MAX_PROBES`]:
    /// then it is hammered, not probed, and the flood opens too.
    pub fn process_gateway(&mut self, view: &GatewayView, now_ns: u64) {
        self.metrics.gateway_views += 1;
        self.tick(now_ns);
        let epoch_s = view.epoch_ns as f64 / 1e9;
        // A host not found flooded in the previous epoch starts over.
        self.scanned_floods
            .retain(|_, (seq, _)| *seq + 1 >= view.seq);
        for f in volume::findings(view, &self.settings.volume) {
            self.metrics.volume_findings += 1;
            if f.prefix_len.is_none() && self.scan_targets(f.victim) {
                let e = self
                    .scanned_floods
                    .entry(f.victim)
                    .or_insert((view.seq, 0.0));
                e.0 = view.seq;
                e.1 += f.new_flows_per_s * epoch_s;
                if e.1 <= SCAN_MAX_PROBES {
                    self.metrics.volume_scan_targets += 1;
                    continue;
                }
            }
            let row = volume_row(&f, self.now_ns);
            let key = DedupKey {
                class: AttackClass::Flood,
                attacker: None,
                victim: Some(f.victim),
                victim_prefix: f.prefix_len,
            };
            let key = match f.prefix_len {
                None => self.prefix_flood_of(f.victim).unwrap_or(key),
                Some(_) => key,
            };
            let bar = self.settings.volume.min_new_flows_per_s;
            let det = Detection {
                class: AttackClass::Flood,
                // ½ at the bar, → 1 as the rate grows (as for anomalies).
                score: (1.0 - 0.5 * bar / f.new_flows_per_s.max(bar)).clamp(0.5, 1.0) as f32,
                raw: f.new_flows_per_s as f32,
                rule: Rule::Volume,
            };
            self.apply(&row, key, det, false);
        }
    }

    /// Whether an open scan alert names `host` as its target, or as its
    /// scanner (the probes' answers: RSTs and ICMP errors, each a new
    /// single-packet flow to it).
    fn scan_targets(&self, host: IpAddr) -> bool {
        self.alerts.iter().any(|a| {
            a.key.class == AttackClass::Scan
                && (a.key.attacker == Some(host)
                    || a.tuple.dst == host
                    || a.aggregate.as_ref().is_some_and(|g| g.tracks(host)))
        })
    }

    /// Opens (after corroboration, if `corroborate`) or updates the alert of
    /// `key` with detection `det` on `row`.
    fn apply(&mut self, row: &ScoredRow, key: DedupKey, det: Detection, corroborate: bool) {
        let Some(i) = self.alerts.position(&key) else {
            if !corroborate
                || self.pending.corroborated(
                    key,
                    row.event_ts_ns,
                    self.now_ns,
                    Evidence::of(row, &det),
                    &self.settings.alerts,
                    &self.beacons,
                    &mut self.metrics,
                )
            {
                self.open(row, key, det);
            }
            return;
        };
        let a = &mut self.alerts[i];
        a.count += 1;
        a.last_seen_ns = a.last_seen_ns.max(row.event_ts_ns);
        a.origin = a.origin.or(row.origin);
        let mut peak = false;
        if row.packets_per_s > a.peak_pps {
            a.peak_pps = row.packets_per_s;
            peak = true;
        }
        if det.score > a.peak_score {
            a.peak_score = det.score;
            a.peak_raw = det.raw;
            a.peak_rule = det.rule;
            a.peak_features = row.features;
            a.n_features = row.n_features;
            peak = true;
        }
        let peer = key.peer_of(row);
        if let Some(agg) = a.aggregate.as_mut().filter(|_| !peer.is_unspecified())
            && let Some(peer) = agg.insert(peer)
            && a.peers_indexed < CORR_PEERS_PER_ALERT
        {
            // At most CORR_PEERS_PER_ALERT times per alert: off the steady path.
            a.peers_indexed += 1;
            let incident = a.incident;
            self.incidents
                .index_peer(incident, peer, key.peers_are_targets(), &mut self.metrics);
        }
        let a = &self.alerts[i];
        // Escalation to a higher EVE level is news now, not at the next update.
        if peak && a.verdict != Some(Verdict::Fp) && a.severity().1 < a.emitted_eve_severity {
            self.emit_alert(i, AlertState::Update, None);
        }
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn open(&mut self, row: &ScoredRow, key: DedupKey, det: Detection) {
        if self.alerts.len() >= self.settings.alerts.max_open_alerts.max(1) {
            let mut victim = usize::MAX;
            for _ in 0..EVICTION_SAMPLES {
                let j = (self.next_rand() % self.alerts.len() as u64) as usize;
                if victim == usize::MAX
                    || self.alerts[j].last_seen_ns < self.alerts[victim].last_seen_ns
                {
                    victim = j;
                }
            }
            self.metrics.alerts_evicted += 1;
            self.close_alert(victim, CloseReason::Evicted);
        }
        let (aggregate, first_peer) = if key.is_aggregated() {
            let mut agg = Aggregate::new();
            // A rule's row about a destination (the volume rule's) names
            // no source: nothing to count.
            let peer = Some(key.peer_of(row))
                .filter(|p| !p.is_unspecified())
                .and_then(|p| agg.insert(p));
            (Some(agg), peer)
        } else {
            (None, None)
        };
        let incident = self.assign_incident(&key, first_peer, row.event_ts_ns);
        let seq = self.next_alert_seq;
        self.next_alert_seq += 1;
        let id: Arc<str> = format!("a-{}-{seq}", self.run_id).into();
        let victim_criticality = self.inventory.lookup(canonical(row.dst)).criticality;
        let mut a = OpenAlert {
            id: Arc::clone(&id),
            key,
            entity: row.entity,
            incident,
            tuple: Tuple {
                src: canonical(row.src),
                dst: canonical(row.dst),
                sport: row.sport,
                dport: row.dport,
                proto: row.proto,
            },
            first_seen_ns: row.event_ts_ns,
            last_seen_ns: row.event_ts_ns,
            last_emit_ns: row.event_ts_ns,
            count: 1,
            emitted_count: 0,
            peak_pps: row.packets_per_s.max(0.0),
            peak_score: det.score,
            peak_raw: det.raw,
            peak_rule: det.rule,
            peak_features: row.features,
            n_features: row.n_features,
            aggregate,
            peers_indexed: u8::from(first_peer.is_some()),
            victim_criticality,
            emitted_eve_severity: 4,
            classifier_version: row.classifier_version,
            autoencoder_version: row.autoencoder_version,
            verdict: None,
            origin: row.origin,
            block: None,
        };
        if !a.peak_pps.is_finite() {
            a.peak_pps = 0.0;
        }
        if let (Some(net), Some(len)) = (key.victim, key.victim_prefix) {
            // The hosts' flood alerts opened before the spread showed are
            // this attack: one alert on the network, not one per host.
            let mut j = self.alerts.len();
            while j > 0 {
                j -= 1;
                let o = &self.alerts[j];
                if o.key.class == AttackClass::Flood
                    && o.key.victim_prefix.is_none()
                    && o.key
                        .victim
                        .is_some_and(|v| sensor_common::ip_in_prefix(v, net, len))
                {
                    a.count += o.count;
                    a.first_seen_ns = a.first_seen_ns.min(o.first_seen_ns);
                    self.metrics.alerts_merged += 1;
                    self.close_alert(j, CloseReason::Merged);
                }
            }
            self.prefix_floods.push(key);
        }
        let (sev, eve_sev) = a.severity();
        let i = self.alerts.push(a);
        self.metrics.alerts_opened += 1;
        self.figures.opened[key.class as usize][usize::from(eve_sev.clamp(1, 3) - 1)] += 1;
        self.figures
            .alert_latency
            .record(row.event_ts_ns, sensor_common::clock::monotonic_ns());
        if let Some(inc) = self.incidents.get_mut(incident) {
            inc.add_alert(id, &key, row.event_ts_ns, sev);
        }
        self.log_alert(i, RecordKind::Open);
        self.emit_alert(i, AlertState::Open, None);
        let state = if self
            .incidents
            .get(incident)
            .is_some_and(|x| x.n_alerts == 1)
        {
            AlertState::Open
        } else {
            AlertState::Update
        };
        self.emit_incident(incident, state, None);
    }

    /// Finds the active incident sharing an address or subnet with the
    /// alert (its labelled sides and the first address of its aggregated
    /// side), or opens one. Joining the oldest match (rather than merging
    /// several incidents) keeps ids stable for consumers.
    fn assign_incident(&mut self, key: &DedupKey, first_peer: Option<IpAddr>, ts: u64) -> u64 {
        let keys = self.incidents.alert_keys(key, first_peer);
        let seq = if let Some(seq) = self.incidents.find(&keys) {
            seq
        } else {
            if self.incidents.len() >= self.settings.alerts.max_incidents.max(1)
                && let Some(old) = self.incidents.eviction_candidate()
            {
                self.metrics.incidents_evicted += 1;
                self.close_incident(old, CloseReason::Evicted);
            }
            self.metrics.incidents_opened += 1;
            self.incidents.create(&self.run_id, ts)
        };
        self.incidents.index_keys(seq, &keys, &mut self.metrics);
        if let Some(p) = first_peer {
            self.incidents.note_target(seq, p, key.peers_are_targets());
        }
        self.incidents.recycle(keys);
        seq
    }

    fn sweep(&mut self) {
        self.blocker.sweep(self.now_ns);
        let now = self.now_ns;
        let mut i = self.alerts.len();
        while i > 0 {
            i -= 1;
            let a = &self.alerts[i];
            if now.saturating_sub(a.last_seen_ns) >= self.quiet_ns {
                self.close_alert(i, CloseReason::Quiet);
                continue;
            }
            if let Some(inc) = self.incidents.get_mut(a.incident) {
                inc.last_seen_ns = inc.last_seen_ns.max(a.last_seen_ns);
            }
            if a.count > a.emitted_count
                && a.verdict != Some(Verdict::Fp)
                && now.saturating_sub(a.last_emit_ns) >= self.update_ns
            {
                self.emit_alert(i, AlertState::Update, None);
            }
        }
        for s in self.incidents.due(now, self.incident_ns) {
            self.close_incident(s, CloseReason::Quiet);
        }
        self.next_sweep_ns = now + SWEEP_NS.min(self.quiet_ns.max(1));
        if let Some(log) = self.alert_log.as_mut() {
            // Records are appended unsynced; make them durable once a sweep.
            let _ = log.sync();
        }
    }

    fn close_alert(&mut self, i: usize, reason: CloseReason) {
        self.log_alert(i, RecordKind::Close);
        self.emit_alert(i, AlertState::Closed, Some(reason));
        let a = self.alerts.swap_remove(i);
        self.prefix_floods.retain(|k| *k != a.key);
        self.metrics.alerts_closed += 1;
        if let Some(inc) = self.incidents.get_mut(a.incident) {
            inc.open_alerts = inc.open_alerts.saturating_sub(1);
            inc.last_seen_ns = inc.last_seen_ns.max(a.last_seen_ns);
        }
    }

    fn close_incident(&mut self, seq: u64, reason: CloseReason) {
        self.emit_incident(seq, AlertState::Closed, Some(reason));
        if self.incidents.remove(seq) {
            self.metrics.incidents_closed += 1;
        }
    }

    /// Closes every open alert and incident (at exit) and flushes.
    pub fn shutdown(&mut self) {
        while !self.alerts.is_empty() {
            let i = self.alerts.len() - 1;
            self.close_alert(i, CloseReason::Shutdown);
        }
        for s in self.incidents.all() {
            self.close_incident(s, CloseReason::Shutdown);
        }
        if let Some(log) = self.alert_log.as_mut() {
            let _ = log.sync();
        }
        self.out.flush(true);
    }

    fn emit_alert(&mut self, i: usize, state: AlertState, reason: Option<CloseReason>) {
        if state != AlertState::Closed {
            let a = &self.alerts[i];
            let facts = (a.key.class, a.severity().1, a.peak_score);
            // Critical assets of the inventory are never blocked.
            let attacker = a.key.attacker.filter(|ip| {
                self.inventory.lookup(*ip).criticality < super::block::NEVER_BLOCKED_CRITICALITY
            });
            let (id, prev) = (a.id.clone(), a.block);
            let span = self.blocker.apply(
                &self.settings.block,
                self.settings.enforce,
                &self.settings.interface,
                facts,
                attacker,
                &id,
                self.now_ns,
                prev,
            );
            self.alerts[i].block = span;
        }
        let a = &self.alerts[i];
        let (sev, eve_sev) = a.severity();
        let incident_id = self.incidents.id_of(a.incident);
        let rec = context!(self).alert(a, state, reason, incident_id);
        self.out.write(&rec);
        let now = self.now_ns;
        let a = &mut self.alerts[i];
        a.last_emit_ns = now.max(a.last_emit_ns);
        a.emitted_count = a.count;
        a.emitted_eve_severity = eve_sev;
        let inc_seq = a.incident;
        if state == AlertState::Update {
            self.metrics.alerts_updated += 1;
        }
        if let Some(inc) = self.incidents.get_mut(inc_seq) {
            inc.max_severity = inc.max_severity.max(sev);
        }
    }

    fn emit_incident(&mut self, seq: u64, state: AlertState, reason: Option<CloseReason>) {
        let Some(inc) = self.incidents.get(seq) else {
            return;
        };
        let rec = context!(self).incident(inc, state, reason);
        self.out.write(&rec);
    }

    fn log_alert(&mut self, i: usize, kind: RecordKind) {
        if self.alert_log.is_none() {
            return;
        }
        let a = &self.alerts[i];
        let n = usize::from(a.n_features).min(MAX_FEATURES);
        if self.feature_names.len() != n {
            self.feature_names = self.settings.feature_names(n);
        }
        let incident_id = self.incidents.id_of(a.incident);
        let rec = context!(self).alert_log(a, kind, incident_id, &self.feature_names);
        if let Some(log) = self.alert_log.as_mut()
            && log.append(&rec, false).is_err()
        {
            self.metrics.alert_log_errors += 1;
        }
    }
}

/// Keeps the running value of a setting a reload cannot change, saying so
/// when the new file changes it.
fn keep_until_restart<T: PartialEq + Clone + std::fmt::Debug>(what: &str, new: &mut T, old: &T) {
    if new != old {
        tracing::warn!(
            setting = what,
            "changes at the next start; the running sensor keeps {old:?}"
        );
        new.clone_from(old);
    }
}

/// The row the volume rule's finding stands for: a destination's view
/// (its source unknown, so unspecified), with the sketch's volume.
fn volume_row(f: &VolumeFinding, now_ns: u64) -> ScoredRow {
    let unspecified = match f.victim {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let none = ModelVersion::intern("none");
    ScoredRow {
        entity: Entity::DstHost,
        window: Window::OneSecond,
        src: unspecified,
        dst: f.victim,
        sport: 0,
        dport: 0,
        proto: 0,
        event_ts_ns: now_ns,
        scored_ts_ns: now_ns,
        features: [0.0; MAX_FEATURES],
        n_features: 0,
        class_probs: [0.0; N_CLASSES],
        anomaly_score: f32::NAN,
        packets_per_s: f.packets_per_s as f32,
        bytes: f.bytes,
        packets: f.packets,
        facts: RowFacts::default(),
        origin: None,
        classifier_version: none,
        autoencoder_version: none,
    }
}
