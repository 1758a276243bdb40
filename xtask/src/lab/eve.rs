//! The sensor's EVE lines as the lab reads them: the fields it shows, and
//! which scenario (or background role) each alert belongs to.

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use sensor_common::clock::{monotonic_ns, realtime_ns};
use sensor_lab::lab::AddressPlan;
use sensor_lab::lab::scenario::{Label, ScenarioOutcome};

use super::TAIL_NS;

/// One line of the sensor's EVE output: the fields the lab shows and
/// attributes.
pub(crate) struct EveAlert {
    /// `alert` with state `open` (not an update or a close).
    pub(crate) opened: bool,
    /// `alert_closed`.
    pub(crate) closed: bool,
    pub(crate) alert_id: String,
    pub(crate) class: String,
    /// The sensor's 0-100 severity.
    pub(crate) severity: u64,
    /// EVE's 1-3 severity.
    pub(crate) eve_severity: u64,
    /// As printed: an address or `many`.
    pub(crate) attacker: String,
    pub(crate) victim: String,
    /// Absent when the alert names no single destination (a scan's targets).
    pub(crate) dest_port: Option<u64>,
    pub(crate) score: f64,
    pub(crate) incident: String,
    /// Most active sources of an alert that aggregates its attackers
    /// (`many -> victim`, e.g. a flood), most rows first; empty otherwise.
    pub(crate) top_sources: Vec<(IpAddr, u64)>,
    /// Last row of the alert so far, on `CLOCK_MONOTONIC`.
    pub(crate) last_seen_ns: Option<u64>,
    /// The attacker, or for a many-source alert its most active listed
    /// source (on an opening record: the first row's, counted once).
    pub(crate) src: Option<IpAddr>,
    /// The victim, or for a many-target alert its most active listed target.
    pub(crate) dst: Option<IpAddr>,
    /// The line's timestamp (an opening alert: its first row) on
    /// `CLOCK_MONOTONIC`, the scenarios' clock.
    pub(crate) mono_ns: Option<u64>,
}

impl EveAlert {
    /// The victim as printed: `address:port`, or `many` / the address alone
    /// when the alert names no single destination port.
    pub(crate) fn victim_side(&self) -> String {
        match self.dest_port {
            Some(port) => format!("{}:{port}", self.victim),
            None => self.victim.clone(),
        }
    }

    /// Parses an EVE line; `clock_offset_ns` is [`clock_offset_ns`].
    pub(crate) fn parse(line: &str, clock_offset_ns: u64) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("EVE line is not JSON: {line}"))?;
        let x = &v["xdp_sensor"];
        let text = |j: &serde_json::Value| j.as_str().unwrap_or("?").to_owned();
        // An aggregated side has no envelope address: its first listed
        // peer stands in for the lab's attribution.
        let ip = |own: &serde_json::Value, peers: &serde_json::Value| {
            own.as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| peers["top"][0]["ip"].as_str().and_then(|s| s.parse().ok()))
        };
        let mono = |j: &serde_json::Value| {
            j.as_str()
                .and_then(eve_unix_ns)
                .map(|t| t.saturating_sub(clock_offset_ns))
        };
        let top_sources = x["sources"]["top"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| Some((e["ip"].as_str()?.parse().ok()?, e["count"].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            opened: v["event_type"] == "alert" && x["state"] == "open",
            closed: v["event_type"] == "alert_closed",
            alert_id: text(&x["alert_id"]),
            class: text(&x["class"]),
            severity: x["severity"].as_u64().unwrap_or(0),
            eve_severity: v["alert"]["severity"].as_u64().unwrap_or(0),
            attacker: text(&x["attacker"]),
            victim: text(&x["victim"]),
            dest_port: v["dest_port"].as_u64(),
            score: x["score"].as_f64().unwrap_or(f64::NAN),
            incident: text(&x["incident_id"]),
            top_sources,
            last_seen_ns: mono(&x["last_seen"]),
            src: ip(&x["attacker"], &x["sources"]),
            dst: ip(&x["victim"], &x["targets"]),
            mono_ns: mono(&v["timestamp"]),
        })
    }
}

/// Whom an alert belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// `outcomes[i]`.
    Scenario(usize),
    /// No scenario matches; the role of the alert's source in the plan.
    Unmatched(&'static str),
}

impl Owner {
    /// The scenario's name, or `<role>: no scenario running`.
    pub(crate) fn describe(self, outcomes: &[ScenarioOutcome]) -> String {
        match self {
            Owner::Scenario(i) => outcomes[i].name.clone(),
            Owner::Unmatched(role) => format!("{role}: no scenario running"),
        }
    }
}

/// The scenario an alert (or rows of one) from `src` to `dst` at `t`
/// (`CLOCK_MONOTONIC`) belongs to: the one running at `t` whose traffic it
/// is, else one that ended at most `2 * TAIL_NS` earlier. An attack scenario's traffic is its senders'
/// (spoofed sources included) and the replies to them; a benign
/// scenario's is everything between lab addresses other than the
/// attacker. A scenario still running can be passed with `end_mono_ns =
/// u64::MAX`.
pub(crate) fn attribute(
    plan: &AddressPlan,
    outcomes: &[ScenarioOutcome],
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    t: Option<u64>,
) -> Owner {
    let attacker = IpAddr::from(plan.attacker);
    let ends = [src, dst];
    let hostile = ends
        .iter()
        .flatten()
        .any(|&a| a == attacker || !plan.contains(a));
    let owns = |o: &ScenarioOutcome| {
        if o.label == Label::Benign {
            !hostile
        } else {
            ends.iter().flatten().any(|&a| o.sources.matches(plan, a))
        }
    };
    let unmatched = Owner::Unmatched(src.or(dst).map_or("?", |a| role(plan, a)));
    let Some(t) = t else {
        return unmatched;
    };
    [0, 2 * TAIL_NS]
        .iter()
        .find_map(|&tail| {
            // Benign scenarios share their clients with the background, so
            // only their own window counts.
            outcomes.iter().position(|o| {
                let tail = if o.label == Label::Benign { 0 } else { tail };
                o.in_window(t, tail) && owns(o)
            })
        })
        .map_or(unmatched, Owner::Scenario)
}

/// What an address is in the lab plan.
fn role(plan: &AddressPlan, a: IpAddr) -> &'static str {
    if a == IpAddr::from(plan.attacker) {
        "attacker"
    } else if plan.is_client(a) {
        "client"
    } else if plan.contains(a) {
        "server side"
    } else {
        "spoofed source"
    }
}

/// `CLOCK_REALTIME` minus `CLOCK_MONOTONIC`: turns EVE's wall-clock timestamps
/// into the scenarios' clock.
pub(crate) fn clock_offset_ns() -> u64 {
    realtime_ns().saturating_sub(monotonic_ns())
}

/// Parses an EVE timestamp (`2026-11-22T06:40:44.055992+0000`) to Unix ns.
pub(super) fn eve_unix_ns(ts: &str) -> Option<u64> {
    let (date, rest) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (time, zone) = rest.split_at(rest.find(['+', '-', 'Z'])?);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    let off_min = match zone.as_bytes().first()? {
        b'Z' => 0,
        sign => {
            let z = &zone[1..];
            let v = z.get(..2)?.parse::<i64>().ok()? * 60 + z.get(2..4)?.parse::<i64>().ok()?;
            if *sign == b'-' { -v } else { v }
        }
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 - off_min * 60;
    let ns = secs as f64 * 1e9 + sec * 1e9;
    (ns >= 0.0).then_some(ns as u64)
}
