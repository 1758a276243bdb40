//! Emission: the EVE records of alerts and incidents (the schema is in the
//! types: `schemas/eve-alert.schema.json` checks their output), the alert
//! record log's records, and the output they are written to.
//!
//! Field order: the envelope keeps Suricata's order so lines read like
//! Suricata's; the `xdp_sensor` objects list their fields alphabetically,
//! as they have always been printed.

use std::{borrow::Cow, net::IpAddr};

use sensor_common::{EnforceMode, records::community_id};
use serde::{Deserialize, Serialize};

use super::{
    AlertOutput,
    config::AlertSettings,
    dedup::Aggregate,
    detect::threshold_of,
    eve::{self, ClockMap},
    feedback::{AlertRecord, RecordKind, Verdict},
    incidents::Incident,
    inventory::Inventory,
    open_alert::OpenAlert,
};
use crate::{capture::collector::FlowOrigin, model::row::Entity};

/// Where an alert or an incident is in its life, as its records say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The first record.
    Open,
    /// A later record while it stays open.
    Update,
    /// The last record.
    Closed,
}

/// Why an alert or an incident closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloseReason {
    /// Nothing new for the quiet period (incidents: the incident window).
    Quiet,
    /// Made room at the cap on open alerts or incidents.
    Evicted,
    /// The sensor stopped.
    Shutdown,
    /// A flood alert on a host, taken into the alert on the network around
    /// it when the volume rule found the flood spread over that network
    /// (its count moves there).
    Merged,
}

/// The `block` object of an alert record.
#[derive(Serialize)]
struct BlockFields {
    mode: &'static str,
    start: String,
    end: String,
}

/// The EVE envelope of alert records, fields in Suricata's order so lines
/// read the same as Suricata's in a terminal.
///
/// `src_ip`/`src_port` and `dest_ip`/`dest_port` are the endpoints the
/// alert names ([`OpenAlert::endpoints`]): an aggregated side (`many`) is
/// left out rather than filled with the first address seen there, which a
/// spoofing sender chooses. `flow_id` and `community_id` are present when
/// both are, i.e. when the alert is about one flow.
#[derive(Serialize)]
pub(super) struct EveAlertRecord<'a> {
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    in_iface: Option<&'a str>,
    event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dest_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dest_port: Option<u16>,
    proto: Cow<'static, str>,
    /// Community ID (v1) of the flow, to pivot to Zeek and Suricata records.
    #[serde(skip_serializing_if = "Option::is_none")]
    community_id: Option<String>,
    alert: EveAlert,
    host: &'a str,
    xdp_sensor: AlertFields<'a>,
}

#[derive(Serialize)]
struct EveAlert {
    action: &'static str,
    gid: u32,
    signature_id: u32,
    rev: u32,
    signature: &'static str,
    category: &'static str,
    severity: u8,
}

/// The `xdp_sensor` object of an alert record.
#[derive(Serialize)]
struct AlertFields<'a> {
    alert_id: &'a str,
    /// The attacker's address, or `many` when aggregated.
    attacker: String,
    attacker_asset: AssetFields<'a>,
    class: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_reason: Option<CloseReason>,
    count: u64,
    /// The rule the peak detection came from (`beacon`, `volume`), absent
    /// for a model.
    #[serde(skip_serializing_if = "Option::is_none")]
    detector: Option<&'static str>,
    duration_s: f64,
    /// When this record was produced, on the clock packets are stamped
    /// with: the one wall-clock reading of the stage, taken only when a
    /// record is written, so consumers can measure detection latency (event
    /// time alone cannot show queueing).
    emitted_mono_ns: u64,
    entity: &'static str,
    first_seen: String,
    /// The router that exported the flow records behind the alert, and
    /// the interfaces the flow crossed there (`sensor collect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    flow_source: Option<FlowOrigin>,
    incident_id: String,
    interface: &'a str,
    last_seen: String,
    models: Models<'a>,
    peak_pps: f64,
    raw_score: f64,
    score: f64,
    sensor: &'a str,
    severity: u8,
    /// The aggregated sources (victim-keyed alerts).
    #[serde(skip_serializing_if = "Option::is_none")]
    sources: Option<Peers>,
    state: AlertState,
    /// The aggregated targets (attacker-keyed alerts).
    #[serde(skip_serializing_if = "Option::is_none")]
    targets: Option<Peers>,
    threshold: f64,
    top_features: Vec<TopFeature<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict: Option<Verdict>,
    /// The victim's address, or `many` when aggregated; a network's
    /// address when the victim is a prefix.
    victim: String,
    victim_asset: AssetFields<'a>,
    /// The victim network (`address/length`) of a flood spread over it.
    #[serde(skip_serializing_if = "Option::is_none")]
    victim_prefix: Option<String>,
    /// The block this alert put on its attacker: `on` (dropped) or
    /// `dry-run` (counted as would-drop), from when until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    block: Option<BlockFields>,
}

/// What the inventory says about an address (`many` for an aggregated side).
#[derive(Serialize)]
struct AssetFields<'a> {
    criticality: u8,
    name: &'a str,
    owner: &'a str,
    subnet: &'a str,
    tags: &'a [String],
}

#[derive(Serialize)]
struct Models<'a> {
    autoencoder: &'a str,
    classifier: &'a str,
}

/// The aggregated side of an alert: distinct count and heavy hitters.
#[derive(Serialize)]
struct Peers {
    distinct: u64,
    top: Vec<PeerCount>,
}

/// A heavy hitter: `count` is an upper bound of its rows, `error` how much
/// of it may be other addresses' (the true count is `count - error` or more).
#[derive(Serialize)]
struct PeerCount {
    count: u64,
    error: u64,
    ip: IpAddr,
}

#[derive(Serialize)]
struct TopFeature<'a> {
    name: &'a str,
    value: f64,
    /// Robust z-score against the model card's baseline, two decimals.
    z: f64,
}

#[derive(Serialize)]
pub(super) struct EveIncidentRecord<'a> {
    timestamp: String,
    event_type: &'static str,
    host: &'a str,
    xdp_sensor: IncidentWrapper<'a>,
}

#[derive(Serialize)]
struct IncidentWrapper<'a> {
    incident: IncidentFields<'a>,
}

/// The `xdp_sensor.incident` object of an incident record.
#[derive(Serialize)]
struct IncidentFields<'a> {
    alert_count: u64,
    /// The first alerts' ids (capped).
    alert_ids: Vec<&'a str>,
    /// Attackers' addresses, and `many` when an alert aggregates them.
    attackers: Vec<String>,
    classes: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_reason: Option<CloseReason>,
    eve_severity: u8,
    first_seen: String,
    incident_id: &'a str,
    last_seen: String,
    open_alerts: u32,
    sensor: &'a str,
    severity: u8,
    state: AlertState,
    victims: Vec<IpAddr>,
}

/// What a record is built from besides the alert or incident itself.
pub(super) struct Context<'a> {
    pub(super) settings: &'a AlertSettings,
    pub(super) inventory: &'a Inventory,
    pub(super) clock: ClockMap,
    /// The stage's event time.
    pub(super) now_ns: u64,
}

impl<'a> Context<'a> {
    fn wall(&self, ns: u64) -> String {
        eve::timestamp(self.clock.wall_ns(ns))
    }

    /// The EVE record of alert `a` in `state` (`reason` only when closed).
    pub(super) fn alert(
        &self,
        a: &'a OpenAlert,
        state: AlertState,
        reason: Option<CloseReason>,
        incident_id: String,
    ) -> EveAlertRecord<'a> {
        let s = self.settings;
        let (sev, eve_sev) = a.severity();
        let (sid, sig, cat) = eve::signature(a.key.class);
        let ends = a.endpoints();
        let flow = ends.flow();
        let ts = match state {
            AlertState::Open => a.first_seen_ns,
            AlertState::Closed => self.now_ns.max(a.last_seen_ns),
            AlertState::Update => a.last_seen_ns,
        };
        let peers = a.aggregate.as_ref().map(peers);
        let (sources, targets) = if a.key.attacker.is_none() {
            (peers, None)
        } else {
            (None, peers)
        };
        let ip_or_many =
            |x: Option<IpAddr>| x.map_or_else(|| "many".to_string(), |a| a.to_string());
        let xdp_sensor = AlertFields {
            alert_id: &a.id,
            attacker: ip_or_many(a.key.attacker),
            attacker_asset: self.asset(a.key.attacker),
            class: a.key.class.name(),
            close_reason: (state == AlertState::Closed)
                .then_some(reason.unwrap_or(CloseReason::Quiet)),
            count: a.count,
            detector: a.peak_rule.name(),
            duration_s: (a.last_seen_ns.saturating_sub(a.first_seen_ns) as f64 / 1e9 * 1000.0)
                .round()
                / 1000.0,
            emitted_mono_ns: sensor_common::clock::monotonic_ns(),
            entity: match a.entity {
                Entity::Flow => "flow",
                Entity::SrcHost => "src_host",
                Entity::DstHost => "dst_host",
            },
            first_seen: self.wall(a.first_seen_ns),
            flow_source: a.origin,
            incident_id,
            interface: &s.interface,
            last_seen: self.wall(a.last_seen_ns),
            models: Models {
                autoencoder: &a.autoencoder_version,
                classifier: &a.classifier_version,
            },
            peak_pps: shortest(a.peak_pps),
            raw_score: round4(a.peak_raw),
            score: round4(a.peak_score),
            sensor: &s.sensor_name,
            severity: sev,
            sources,
            state,
            targets,
            threshold: round4(threshold_of(s, a.key.class, a.peak_rule)),
            top_features: self.top_features(a),
            verdict: a.verdict,
            victim: ip_or_many(a.key.victim),
            victim_asset: self.asset(a.key.victim),
            victim_prefix: a
                .key
                .victim
                .zip(a.key.victim_prefix)
                .map(|(ip, len)| format!("{ip}/{len}")),
            block: a.block.map(|b| BlockFields {
                mode: if s.enforce == EnforceMode::On {
                    "on"
                } else {
                    "dry-run"
                },
                start: self.wall(b.start_ns),
                end: self.wall(b.end_ns),
            }),
        };
        EveAlertRecord {
            timestamp: self.wall(ts),
            flow_id: flow.map(|f| eve::flow_id(f.src, f.sport, f.dst, f.dport, f.proto)),
            in_iface: (!s.interface.is_empty()).then_some(s.interface.as_str()),
            event_type: if state == AlertState::Closed {
                "alert_closed"
            } else {
                "alert"
            },
            src_ip: ends.src.map(|e| e.0),
            src_port: ends.src.map(|e| e.1),
            dest_ip: ends.dst.map(|e| e.0),
            dest_port: ends.dst.map(|e| e.1),
            proto: if ends.arp {
                "ARP".into()
            } else {
                eve::proto_name(ends.proto)
            },
            community_id: flow.and_then(|f| community_id(f.src, f.dst, f.sport, f.dport, f.proto)),
            alert: EveAlert {
                action: if a.block.is_some() && s.enforce == EnforceMode::On {
                    "blocked"
                } else {
                    "allowed"
                },
                gid: 1,
                signature_id: sid,
                rev: 1,
                signature: sig,
                category: cat,
                severity: eve_sev,
            },
            host: &s.sensor_name,
            xdp_sensor,
        }
    }

    /// The EVE record of incident `inc` in `state` (`reason` only when closed).
    pub(super) fn incident(
        &self,
        inc: &'a Incident,
        state: AlertState,
        reason: Option<CloseReason>,
    ) -> EveIncidentRecord<'a> {
        let mut attackers: Vec<String> = inc.attackers.iter().map(ToString::to_string).collect();
        if inc.aggregated_attackers {
            attackers.push("many".into());
        }
        let eve_severity = match inc.max_severity {
            70.. => 1,
            40.. => 2,
            _ => 3,
        };
        let ts = if state == AlertState::Closed {
            self.now_ns.max(inc.last_seen_ns)
        } else {
            inc.last_seen_ns
        };
        EveIncidentRecord {
            timestamp: self.wall(ts),
            event_type: "incident",
            host: &self.settings.sensor_name,
            xdp_sensor: IncidentWrapper {
                incident: IncidentFields {
                    alert_count: inc.n_alerts,
                    alert_ids: inc.alert_ids.iter().map(|s| &**s).collect(),
                    attackers,
                    classes: inc.classes.iter().map(|c| c.name()).collect(),
                    close_reason: reason,
                    eve_severity,
                    first_seen: self.wall(inc.first_seen_ns),
                    incident_id: &inc.id,
                    last_seen: self.wall(inc.last_seen_ns),
                    open_alerts: inc.open_alerts,
                    sensor: &self.settings.sensor_name,
                    severity: inc.max_severity,
                    state,
                    victims: inc.victims.clone(),
                },
            },
        }
    }

    /// The alert record log's record of `a` (`feature_names` name its
    /// peak feature row).
    pub(super) fn alert_log(
        &self,
        a: &OpenAlert,
        kind: RecordKind,
        incident_id: String,
        feature_names: &[String],
    ) -> AlertRecord {
        let class = a.key.class;
        AlertRecord {
            kind,
            alert_id: a.id.to_string(),
            incident_id,
            class: class.name().to_string(),
            score: a.peak_score,
            raw_score: a.peak_raw,
            threshold: threshold_of(self.settings, class, a.peak_rule),
            detector: a.peak_rule.name().map(str::to_string),
            count: a.count,
            feature_names: feature_names.to_vec(),
            features: a
                .peak_features()
                .iter()
                .map(|x| x.is_finite().then_some(*x))
                .collect(),
            classifier_version: a.classifier_version.to_string(),
            autoencoder_version: a.autoencoder_version.to_string(),
            unix_ms: i64::try_from(self.clock.wall_ns(self.now_ns) / 1_000_000).unwrap_or(0),
        }
    }

    fn asset(&self, addr: Option<IpAddr>) -> AssetFields<'a> {
        match addr {
            Some(a) => {
                let x = self.inventory.lookup(a);
                AssetFields {
                    criticality: x.criticality,
                    name: &x.name,
                    owner: &x.owner,
                    subnet: &x.subnet,
                    tags: &x.tags,
                }
            }
            None => AssetFields {
                criticality: 0,
                name: "many",
                owner: "many",
                subnet: "many",
                tags: &[],
            },
        }
    }

    /// The features of the peak row furthest from the model card's baseline
    /// (robust z-score: (x − median) / (IQR / 1.349)).
    fn top_features(&self, a: &OpenAlert) -> Vec<TopFeature<'a>> {
        let s = self.settings;
        let Some(card) = [s.classifier.as_ref(), s.autoencoder.as_ref()]
            .into_iter()
            .flatten()
            .find(|c| c.baseline.iter().any(Option::is_some))
        else {
            return Vec::new();
        };
        let x = a.peak_features();
        let mut z: Vec<(usize, f32)> = (0..x.len())
            .filter_map(|i| {
                let b = card.baseline.get(i).copied().flatten()?;
                x[i].is_finite().then(|| (i, (x[i] - b.center) / b.scale))
            })
            .collect();
        z.sort_by(|x, y| y.1.abs().total_cmp(&x.1.abs()));
        z.truncate(s.alerts.top_features);
        z.into_iter()
            .map(|(i, zv)| TopFeature {
                name: &card.feature_names[i],
                value: shortest(x[i]),
                z: (f64::from(zv) * 100.0).round() / 100.0,
            })
            .collect()
    }
}

fn peers(agg: &Aggregate) -> Peers {
    Peers {
        distinct: agg.distinct(),
        top: agg
            .top()
            .into_iter()
            .map(|p| PeerCount {
                count: p.count,
                error: p.error,
                ip: p.ip,
            })
            .collect(),
    }
}

/// The f64 that prints like the f32 does (`0.98`, not `0.9800000190734863`).
fn shortest(x: f32) -> f64 {
    if x.is_finite() {
        x.to_string().parse().unwrap_or(0.0)
    } else {
        0.0
    }
}

fn round4(x: f32) -> f64 {
    if x.is_finite() {
        (f64::from(x) * 10_000.0).round() / 10_000.0
    } else {
        0.0
    }
}

/// The stage's output: serialises records into one reused buffer and
/// hands each line to the sinks.
pub(super) struct Emitter {
    sinks: Box<dyn AlertOutput>,
    line: Vec<u8>,
    /// Lines written since the last flush.
    dirty: bool,
    /// Delivery errors of sinks replaced by a reload.
    replaced_errors: u64,
}

impl Emitter {
    pub(super) fn new(sinks: Box<dyn AlertOutput>) -> Self {
        Self {
            sinks,
            line: Vec::with_capacity(2048),
            dirty: false,
            replaced_errors: 0,
        }
    }

    /// Flushes the sinks and replaces them (a reloaded configuration);
    /// their delivery errors stay counted.
    pub(super) fn replace_sinks(&mut self, sinks: Box<dyn AlertOutput>) {
        self.flush(true);
        self.replaced_errors += self.sinks.errors();
        self.sinks = sinks;
    }

    /// Writes one record as a line; a record that cannot be serialised is
    /// not written.
    pub(super) fn write(&mut self, rec: &impl Serialize) {
        self.line.clear();
        if serde_json::to_writer(&mut self.line, rec).is_ok() {
            self.sinks.write_line(&self.line);
            self.dirty = true;
        }
    }

    /// Flushes the sinks if anything was written since the last flush
    /// (`force`: in any case).
    pub(super) fn flush(&mut self, force: bool) {
        if self.dirty || force {
            self.sinks.flush();
            self.dirty = false;
        }
    }

    /// Lines the sinks failed to deliver.
    pub(super) fn errors(&self) -> u64 {
        self.replaced_errors + self.sinks.errors()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        alerts::{dedup::DedupKey, open_alert::Tuple},
        model::row::{AttackClass, MAX_FEATURES, ModelVersion},
    };

    fn schema() -> serde_json::Value {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/eve-alert.schema.json"
        );
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    /// Property names of the schema object at `path`, sorted.
    fn properties(schema: &serde_json::Value, path: &str) -> Vec<String> {
        schema
            .pointer(path)
            .and_then(serde_json::Value::as_object)
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    fn keys(v: &serde_json::Value) -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    /// A closed aggregated beacon alert with a verdict: every optional
    /// field of the `xdp_sensor` object present.
    fn alert() -> OpenAlert {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut aggregate = Aggregate::new();
        aggregate.insert(ip("10.1.2.3"));
        OpenAlert {
            id: Arc::from("a-test-1"),
            key: DedupKey {
                class: AttackClass::Anomaly,
                attacker: Some(ip("198.51.100.7")),
                victim: None,
                victim_prefix: None,
            },
            entity: Entity::SrcHost,
            incident: 1,
            tuple: Tuple {
                src: ip("198.51.100.7"),
                dst: ip("10.1.2.3"),
                sport: 40_000,
                dport: 443,
                proto: 6,
            },
            first_seen_ns: 1_000_000_000,
            last_seen_ns: 3_500_000_000,
            last_emit_ns: 1_000_000_000,
            count: 7,
            emitted_count: 1,
            peak_pps: 12.5,
            peak_score: 0.9,
            peak_raw: 0.02,
            peak_rule: crate::alerts::detect::Rule::Beacon,
            peak_features: [0.5; MAX_FEATURES],
            n_features: 8,
            aggregate: Some(aggregate),
            peers_indexed: 1,
            victim_criticality: 3,
            emitted_eve_severity: 2,
            classifier_version: ModelVersion::intern("clf-1"),
            autoencoder_version: ModelVersion::intern("ae-1"),
            verdict: Some(Verdict::Tp),
            origin: Some(crate::capture::collector::FlowOrigin {
                exporter: "192.0.2.1".parse().unwrap(),
                domain: 7,
                version: 10,
                in_if: 3,
                out_if: 4,
            }),
            block: Some(super::super::block::BlockSpan {
                start_ns: 1_000,
                end_ns: 600_000_001_000,
            }),
        }
    }

    fn schema_and_validator() -> (serde_json::Value, jsonschema::Validator) {
        let schema = schema();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        (schema, validator)
    }

    fn context<'a>(settings: &'a AlertSettings, inventory: &'a Inventory) -> Context<'a> {
        Context {
            settings,
            inventory,
            clock: ClockMap { offset_ns: 0 },
            now_ns: 4_000_000_000,
        }
    }

    #[test]
    fn a_spread_flood_names_its_network_and_no_source() {
        let (_, validator) = schema_and_validator();
        let (settings, inventory) = (AlertSettings::defaults(), Inventory::default());
        let cx = context(&settings, &inventory);
        let net: IpAddr = "192.0.2.0".parse().unwrap();
        let mut a = alert();
        a.key = DedupKey {
            class: AttackClass::Flood,
            attacker: None,
            victim: Some(net),
            victim_prefix: Some(24),
        };
        a.peak_rule = crate::alerts::detect::Rule::Volume;
        a.peak_raw = 5000.0;
        a.tuple = Tuple {
            src: "0.0.0.0".parse().unwrap(),
            dst: net,
            sport: 0,
            dport: 0,
            proto: 0,
        };
        a.aggregate = Some(Aggregate::new());
        let v = serde_json::to_value(cx.alert(&a, AlertState::Open, None, "i-1".into())).unwrap();
        let x = &v["xdp_sensor"];
        assert_eq!(x["victim"], "192.0.2.0");
        assert_eq!(x["victim_prefix"], "192.0.2.0/24");
        assert_eq!(x["attacker"], "many");
        assert_eq!(x["detector"], "volume");
        assert_eq!(x["threshold"], settings.volume.min_new_flows_per_s);
        assert!(v.get("src_ip").is_none(), "{v}");
        assert_eq!(v["dest_ip"], "192.0.2.0");
        assert!(validator.is_valid(&v), "{v}");
    }

    #[test]
    fn alert_fields_are_the_schemas_and_validate() {
        let (schema, validator) = schema_and_validator();
        let (settings, inventory) = (AlertSettings::defaults(), Inventory::default());
        let cx = context(&settings, &inventory);
        let a = alert();
        let closed = cx.alert(
            &a,
            AlertState::Closed,
            Some(CloseReason::Evicted),
            "i-test-1".into(),
        );
        let v = serde_json::to_value(&closed).unwrap();
        assert_eq!(v["xdp_sensor"]["state"], "closed");
        assert_eq!(v["xdp_sensor"]["close_reason"], "evicted");
        assert_eq!(v["xdp_sensor"]["detector"], "beacon");
        assert_eq!(v["xdp_sensor"]["targets"]["top"][0]["ip"], "10.1.2.3");
        assert_eq!(v["xdp_sensor"]["targets"]["top"][0]["error"], 0);
        let mut want = properties(
            &schema,
            "/$defs/alert_record/properties/xdp_sensor/properties",
        );
        // Every property the schema knows, except the other aggregated side
        // and the victim network (a victim-keyed flood's, tested below).
        want.retain(|k| k != "sources" && k != "victim_prefix");
        assert_eq!(keys(&v["xdp_sensor"]), want);
        assert!(validator.is_valid(&v), "{v}");
        let open =
            serde_json::to_value(cx.alert(&a, AlertState::Open, None, "i-test-1".into())).unwrap();
        assert!(open["xdp_sensor"].get("close_reason").is_none());
        assert!(validator.is_valid(&open), "{open}");
        // The schema ties the state to the event type.
        let mut bad = v.clone();
        bad["xdp_sensor"]["state"] = "update".into();
        assert!(!validator.is_valid(&bad));
    }

    /// The envelope names the sides the key names, and the schema holds
    /// records to it: a flood record naming a source fails.
    #[test]
    fn envelope_names_only_the_keys_sides_and_the_schema_checks_it() {
        let (schema, validator) = schema_and_validator();
        let (settings, inventory) = (AlertSettings::defaults(), Inventory::default());
        let cx = context(&settings, &inventory);
        let envelope = properties(&schema, "/$defs/alert_record/properties");
        let mut a = alert();
        let named = |v: &serde_json::Value| {
            let mut k: Vec<String> = keys(v)
                .into_iter()
                .filter(|k| k.contains("ip") || k.contains("port") || k.ends_with("_id"))
                .collect();
            k.sort();
            k
        };
        let record = |a: &OpenAlert| {
            serde_json::to_value(cx.alert(a, AlertState::Open, None, "i-test-1".into())).unwrap()
        };
        // Attacker-keyed (scan-like): the scanner only.
        let scan = record(&a);
        assert_eq!(named(&scan), ["src_ip", "src_port"]);
        assert!(validator.is_valid(&scan), "{scan}");
        // Victim-keyed (flood): the victim only.
        a.key = DedupKey {
            class: AttackClass::Flood,
            attacker: None,
            victim: Some(a.tuple.dst),
            victim_prefix: None,
        };
        let flood = record(&a);
        assert_eq!(named(&flood), ["dest_ip", "dest_port"]);
        assert_eq!(flood["dest_ip"], "10.1.2.3");
        assert!(validator.is_valid(&flood), "{flood}");
        let mut spoofed = flood.clone();
        spoofed["src_ip"] = "10.20.5.1".into();
        spoofed["src_port"] = 1234.into();
        assert!(!validator.is_valid(&spoofed), "a flood naming a source");
        // One flow: both ends, its flow_id and Community ID.
        a.key.attacker = Some(a.tuple.src);
        let flow = record(&a);
        assert_eq!(
            named(&flow),
            [
                "community_id",
                "dest_ip",
                "dest_port",
                "flow_id",
                "src_ip",
                "src_port"
            ]
        );
        assert!(envelope.contains(&"community_id".to_string()));
        assert_eq!(
            flow["community_id"].as_str(),
            community_id(a.tuple.src, a.tuple.dst, 40_000, 443, 6).as_deref()
        );
        assert!(validator.is_valid(&flow), "{flow}");
        let mut no_id = flow.clone();
        no_id.as_object_mut().unwrap().remove("community_id");
        assert!(
            !validator.is_valid(&no_id),
            "one flow without its Community ID"
        );
    }

    #[test]
    fn incident_fields_are_the_schemas_and_validate() {
        let (schema, validator) = schema_and_validator();
        let (settings, inventory) = (AlertSettings::defaults(), Inventory::default());
        let cx = context(&settings, &inventory);
        let mut incidents = super::super::incidents::Incidents::new();
        let seq = incidents.create("test", 1_000_000_000);
        let a = alert();
        incidents
            .get_mut(seq)
            .unwrap()
            .add_alert(Arc::clone(&a.id), &a.key, a.last_seen_ns, 75);
        let inc = incidents.get(seq).unwrap();
        let v =
            serde_json::to_value(cx.incident(inc, AlertState::Closed, Some(CloseReason::Quiet)))
                .unwrap();
        assert_eq!(
            keys(&v["xdp_sensor"]["incident"]),
            properties(
                &schema,
                "/$defs/incident_record/properties/xdp_sensor/properties/incident/properties"
            )
        );
        assert_eq!(v["xdp_sensor"]["incident"]["eve_severity"], 1);
        assert!(validator.is_valid(&v), "{v}");
        let mut bad = v.clone();
        bad["xdp_sensor"]["incident"]["state"] = "gone".into();
        assert!(!validator.is_valid(&bad));
    }
}
