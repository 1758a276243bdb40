//! Judging the sensor's alerts against ground truth: which alerts are
//! correct detections and which are false, and running a capture through a
//! sensor to get them.
//!
//! A correct detection is an alert of the expected class whose named sides
//! play those roles in the attack: its attacker (unless `many`) is an
//! attacker and its victim (unless `many`) a victim of the attack traffic.
//! Every other alert is false: any alert when the expected class is
//! `benign`, an alert of another class, or one naming a host outside its
//! role (a flood "on" the attacker, from the victims' replies, is false).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::lab::scenario::{self, Label, ScenarioOutcome, ScenarioSpec, SourceRule};
use crate::lab::{AddressPlan, TrafficLab};
use crate::replay::{AttackRoles, AttackRule, Capture, ReplayOptions, ReplayReport, Replayer};
use crate::sensor::{SensorOutput, SensorRun, TempDir};

/// An alert as opened by the sensor (its EVE `alert` record in state `open`).
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAlert {
    pub alert_id: String,
    /// The incident the stage grouped the alert into.
    pub incident_id: String,
    /// `flood`, `scan`, `bruteforce` or `anomaly`.
    pub class: String,
    /// `None` when the record says `many` (aggregated side).
    pub attacker: Option<IpAddr>,
    pub victim: Option<IpAddr>,
    /// `xdp_sensor.victim_prefix`: the victim network of a flood spread
    /// over it (`victim` is then its network address).
    pub victim_prefix: Option<u8>,
    /// `xdp_sensor.emitted_mono_ns`: `CLOCK_MONOTONIC` when the alert stage
    /// wrote the record.
    pub emitted_mono_ns: Option<u64>,
}

impl OpenAlert {
    /// Whether the alert's victim side covers only victims: its host is
    /// one, or its network holds one (a spread flood), or it is `many`.
    fn victim_ok(&self, roles: &AttackRoles) -> bool {
        match (self.victim, self.victim_prefix) {
            (None, _) => true,
            (Some(h), None) => roles.victims.contains(&h),
            (Some(net), Some(len)) => roles
                .victims
                .iter()
                .any(|&v| sensor_common::ip_in_prefix(v, net, len)),
        }
    }
}

impl std::fmt::Display for OpenAlert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |x: Option<IpAddr>| x.map_or_else(|| "many".to_owned(), |a| a.to_string());
        let len = self
            .victim_prefix
            .map(|l| format!("/{l}"))
            .unwrap_or_default();
        write!(
            f,
            "{} {}->{}{len}",
            self.class,
            side(self.attacker),
            side(self.victim)
        )
    }
}

/// The opened alerts of an EVE file, in order. A missing file means no
/// alert (the sink creates it on its first record).
///
/// # Errors
/// The file cannot be read or a line is not JSON.
pub fn read_open_alerts(eve: &Path) -> Result<Vec<OpenAlert>> {
    let text = match std::fs::read_to_string(eve) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LabError::Read {
                path: eve.to_owned(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|source| LabError::Parse {
                path: eve.to_owned(),
                line: i + 1,
                source,
            })?;
        let x = &v["xdp_sensor"];
        if v["event_type"] != "alert" || x["state"] != "open" {
            continue;
        }
        let ip = |k: &str| x[k].as_str().and_then(|s| s.parse().ok());
        out.push(OpenAlert {
            alert_id: x["alert_id"].as_str().unwrap_or_default().to_owned(),
            incident_id: x["incident_id"].as_str().unwrap_or_default().to_owned(),
            class: x["class"].as_str().unwrap_or("?").to_owned(),
            attacker: ip("attacker"),
            victim: ip("victim"),
            victim_prefix: x["victim_prefix"]
                .as_str()
                .and_then(|p| p.rsplit_once('/'))
                .and_then(|(_, len)| len.parse().ok()),
            emitted_mono_ns: x["emitted_mono_ns"].as_u64(),
        });
    }
    Ok(out)
}

/// Alerts split into correct detections and false ones.
#[derive(Clone, Debug, Default)]
pub struct Judgement {
    pub correct: Vec<OpenAlert>,
    pub false_alerts: Vec<OpenAlert>,
}

impl Judgement {
    /// Earliest emission time of a correct detection.
    #[must_use]
    pub fn first_detection_mono_ns(&self) -> Option<u64> {
        self.correct.iter().filter_map(|a| a.emitted_mono_ns).min()
    }

    /// Milliseconds from `first_attack_mono_ns` to the first correct
    /// detection.
    #[must_use]
    pub fn time_to_detect_ms(&self, first_attack_mono_ns: Option<u64>) -> Option<f64> {
        let d = self.first_detection_mono_ns()?;
        let a = first_attack_mono_ns?;
        Some((d as f64 - a as f64) / 1e6)
    }
}

/// Splits `alerts` for a case whose attack is `expected_class` (or
/// `benign`) with the given roles.
#[must_use]
pub fn judge(alerts: &[OpenAlert], expected_class: &str, roles: &AttackRoles) -> Judgement {
    let mut j = Judgement::default();
    for a in alerts {
        let attacker_ok = a.attacker.is_none_or(|h| roles.is_attacker(h));
        let victim_ok = a.victim_ok(roles);
        let named = a.attacker.is_some() || a.victim.is_some();
        if expected_class != "benign"
            && a.class == expected_class
            && named
            && attacker_ok
            && victim_ok
        {
            j.correct.push(a.clone());
        } else {
            j.false_alerts.push(a.clone());
        }
    }
    j
}

/// What [`run_capture`] observed.
#[derive(Debug)]
pub struct CaptureRun {
    pub replay: ReplayReport,
    pub alerts: Vec<OpenAlert>,
    /// Attackers and victims of the capture's attack traffic.
    pub roles: AttackRoles,
    pub output: SensorOutput,
}

/// Starts the sensor (`bin run --mirror --eve-out … <extra>`) on the
/// gateway end of `lab`, replays `cap` from the sender end, waits `settle`
/// for the last rows to be scored, stops the sensor and returns its alerts.
///
/// # Errors
/// Any step fails; errors carry the sensor's stderr where relevant.
pub fn run_capture(
    lab: &crate::Lab,
    bin: &Path,
    extra: &[&str],
    cap: &Capture,
    rule: &AttackRule,
    opts: ReplayOptions,
    settle: Duration,
) -> Result<CaptureRun> {
    let dir = TempDir::new("capture")?;
    let eve = dir.path().join("eve.json");
    let eve_arg = eve.to_string_lossy().into_owned();
    let mut args = vec!["--mirror", "--eve-out", &eve_arg, "--duration", "300"];
    args.extend_from_slice(extra);
    let mut run = SensorRun::start(&lab.gateway, bin, &lab.link.b, dir.path(), &args)?;
    run.wait_attached(
        &lab.gateway,
        Duration::from_secs(30),
        Duration::from_millis(500),
    )?;
    let replay = Replayer::open(&lab.sender, &lab.link.a)?.replay(cap, rule, opts)?;
    std::thread::sleep(settle);
    let output = run.stop(Duration::from_secs(20))?;
    Ok(CaptureRun {
        replay,
        alerts: read_open_alerts(&eve)?,
        roles: cap.attack_roles(rule),
        output,
    })
}

/// Attackers and victims of a lab scenario: for an attack, the attacker's
/// address (and, when it spoofs, any address outside the lab's plan)
/// attacks, and the server side (main server, sweep targets, exfiltration
/// sink, gateway) is attacked; a benign scenario has no roles.
#[must_use]
pub fn scenario_roles(plan: &AddressPlan, o: &ScenarioOutcome) -> AttackRoles {
    let mut roles = AttackRoles::default();
    if o.label == Label::Benign {
        return roles;
    }
    let known = plan.all();
    let (SourceRule::Addresses(a) | SourceRule::AddressesAndSpoofed(a)) = &o.sources;
    roles.attackers.extend(a.iter().copied());
    roles.victims = known
        .iter()
        .copied()
        .filter(|h| !plan.is_client(*h) && *h != IpAddr::from(plan.attacker))
        .collect();
    if matches!(o.sources, SourceRule::AddressesAndSpoofed(_)) {
        roles.spoofed_outside = Some(known);
    }
    roles
}

/// What [`run_scenario`] returns.
#[derive(Debug)]
pub struct ScenarioRun {
    pub outcome: ScenarioOutcome,
    pub alerts: Vec<OpenAlert>,
    pub roles: AttackRoles,
    pub output: SensorOutput,
}

/// Builds a fresh traffic lab, starts the sensor (`bin run --mirror
/// --eve-out … <extra>`) on its monitor port, plays `spec`, waits `settle`
/// for the last rows to be scored, stops the sensor and removes the lab.
///
/// # Errors
/// Any step fails; errors carry the sensor's stderr where relevant.
pub fn run_scenario(
    bin: &Path,
    extra: &[&str],
    spec: &ScenarioSpec,
    settle: Duration,
) -> Result<ScenarioRun> {
    let mut run = run_sequence(bin, extra, std::slice::from_ref(spec), settle)?;
    Ok(ScenarioRun {
        outcome: run.outcomes.remove(0),
        roles: run.roles.remove(0),
        alerts: run.alerts,
        output: run.output,
    })
}

/// Scenarios played one after another against one lab and one sensor.
pub struct SequenceRun {
    pub outcomes: Vec<ScenarioOutcome>,
    /// Each scenario's roles, in order.
    pub roles: Vec<AttackRoles>,
    /// Every alert the sensor opened during the sequence.
    pub alerts: Vec<OpenAlert>,
    pub output: SensorOutput,
}

/// [`run_scenario`] for several scenarios in turn (one second apart), as
/// an attacker doing several things against one network plays them.
///
/// # Errors
/// Any step fails; errors carry the sensor's stderr where relevant.
pub fn run_sequence(
    bin: &Path,
    extra: &[&str],
    specs: &[ScenarioSpec],
    settle: Duration,
) -> Result<SequenceRun> {
    let lab = TrafficLab::new()?;
    let dir = TempDir::new("scenario")?;
    let eve = dir.path().join("eve.json");
    let eve_arg = eve.to_string_lossy().into_owned();
    let mut args = vec!["--mirror", "--eve-out", &eve_arg, "--duration", "300"];
    args.extend_from_slice(extra);
    let mut run = SensorRun::start(&lab.sensor_ns, bin, lab.monitor_iface(), dir.path(), &args)?;
    run.wait_attached(
        &lab.sensor_ns,
        Duration::from_secs(30),
        Duration::from_millis(500),
    )?;
    let mut outcomes = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        outcomes.push(scenario::run(&lab, spec)?);
    }
    std::thread::sleep(settle);
    let output = run.stop(Duration::from_secs(20))?;
    Ok(SequenceRun {
        roles: outcomes
            .iter()
            .map(|o| scenario_roles(lab.plan(), o))
            .collect(),
        outcomes,
        alerts: read_open_alerts(&eve)?,
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn alert(class: &str, attacker: Option<&str>, victim: Option<&str>, t: u64) -> OpenAlert {
        OpenAlert {
            alert_id: String::new(),
            incident_id: String::new(),
            class: class.into(),
            attacker: attacker.map(ip),
            victim: victim.map(ip),
            victim_prefix: None,
            emitted_mono_ns: Some(t),
        }
    }

    #[test]
    fn a_prefix_victim_counts_when_it_holds_a_victim() {
        let roles = AttackRoles {
            victims: [ip("10.20.0.2")].into(),
            ..AttackRoles::default()
        };
        let mut a = alert("flood", None, Some("10.20.0.0"), 1);
        a.victim_prefix = Some(24);
        assert!(a.victim_ok(&roles));
        assert_eq!(a.to_string(), "flood many->10.20.0.0/24");
        a.victim = Some(ip("10.21.0.0"));
        a.victim_prefix = Some(16);
        assert!(!a.victim_ok(&roles));
        a.victim_prefix = Some(8);
        assert!(a.victim_ok(&roles));
    }

    #[test]
    fn alerts_are_judged_by_class_and_role() {
        const ATT: &str = "172.16.0.5";
        const VIC: &str = "192.168.50.4";
        let mut roles = AttackRoles {
            attackers: [ip(ATT)].into(),
            victims: [ip(VIC)].into(),
            spoofed_outside: None,
        };
        let alerts = [
            alert("flood", None, Some(VIC), 1_250_000_000),
            alert("flood", None, Some(VIC), 1_100_000_000),
            alert("flood", Some(ATT), Some(VIC), 1_300_000_000),
            // Right class, but on a bystander; on the attacker (backscatter);
            // attacker and victim swapped; right hosts, wrong class.
            alert("flood", None, Some("10.0.0.9"), 1_050_000_000),
            alert("flood", None, Some(ATT), 1_050_000_000),
            alert("flood", Some(VIC), Some(ATT), 1_050_000_000),
            alert("scan", Some(ATT), None, 1_010_000_000),
            // Names nobody.
            alert("flood", None, None, 1_010_000_000),
        ];
        let j = judge(&alerts, "flood", &roles);
        assert_eq!((j.correct.len(), j.false_alerts.len()), (3, 5));
        assert_eq!(j.time_to_detect_ms(Some(1_000_000_000)), Some(100.0));
        assert_eq!(j.time_to_detect_ms(None), None);
        assert_eq!(j.false_alerts[3].to_string(), "scan 172.16.0.5->many");
        let j = judge(&alerts, "scan", &roles);
        assert_eq!(j.correct.len(), 1);
        // On a benign case every alert is false.
        let j = judge(&alerts, "benign", &roles);
        assert_eq!((j.correct.len(), j.false_alerts.len()), (0, 8));
        assert_eq!(j.first_detection_mono_ns(), None);
        // Spoofed sources: any address outside the known ones attacks.
        let spoofed = [alert("flood", Some("203.0.113.9"), Some(VIC), 1)];
        assert!(judge(&spoofed, "flood", &roles).correct.is_empty());
        roles.spoofed_outside = Some([ip(ATT), ip(VIC), ip("10.0.0.9")].into());
        assert_eq!(judge(&spoofed, "flood", &roles).correct.len(), 1);
        let bystander = [alert("flood", Some("10.0.0.9"), Some(VIC), 1)];
        assert!(judge(&bystander, "flood", &roles).correct.is_empty());
    }

    #[test]
    fn open_records_are_read_from_eve() {
        let dir = TempDir::new("detection-read").unwrap();
        let p = dir.path().join("eve.json");
        assert!(read_open_alerts(&p).unwrap().is_empty());
        std::fs::write(
            &p,
            concat!(
                r#"{"event_type":"alert","xdp_sensor":{"state":"open","alert_id":"a-1","class":"scan","attacker":"10.0.0.1","victim":"many","emitted_mono_ns":5}}"#,
                "\n",
                r#"{"event_type":"alert","xdp_sensor":{"state":"update","class":"scan","attacker":"10.0.0.1","victim":"many"}}"#,
                "\n",
                r#"{"event_type":"incident","xdp_sensor":{"incident":{}}}"#,
                "\n"
            ),
        )
        .unwrap();
        let a = read_open_alerts(&p).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].alert_id, "a-1");
        assert_eq!(a[0].attacker, Some(ip("10.0.0.1")));
        assert_eq!(a[0].victim, None);
        assert_eq!(a[0].emitted_mono_ns, Some(5));
        std::fs::write(&p, "{}\nnot json\n").unwrap();
        let e = read_open_alerts(&p).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
