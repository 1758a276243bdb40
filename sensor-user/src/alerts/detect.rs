//! Threshold: whether a scored row is a detection, of which class, and how
//! confident.

use super::config::{AlertSettings, Thresholds};
use crate::model::row::{AttackClass, ScoredRow};

/// A detection: the class that fired, its confidence in 0..=1 (for severity)
/// and the raw score in the threshold's unit (for tuning).
#[derive(Clone, Copy, Debug)]
pub(super) struct Detection {
    pub(super) class: AttackClass,
    pub(super) score: f32,
    pub(super) raw: f32,
    /// What raised it: a model, or a rule whose raw score has its own unit.
    pub(super) rule: Rule,
}

/// Which detector raised a detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rule {
    /// The classifier or the autoencoder (raw score: probability or
    /// reconstruction error).
    Model,
    /// The beacon rule: an `anomaly` whose raw score is the intervals'
    /// relative jitter.
    Beacon,
    /// The beacon rule's check-ins: an `anomaly` whose raw score is the
    /// intervals' relative jitter, for connections of a steady size.
    Checkin,
    /// The volume rule: a `flood` whose raw score is the victim's new flows
    /// per second in the kernel's destination sketch.
    Volume,
    /// The login rule: a `bruteforce` whose raw score is the client's
    /// short connections to login services in the window.
    Logins,
    /// An echo request to a new host, a host discovery probe: a `scan`
    /// probe that the scan rule's distinct-host bar must corroborate.
    Sweep,
}

impl Rule {
    /// The `detector` an alert record names, `None` for a model.
    pub(super) fn name(self) -> Option<&'static str> {
        match self {
            Rule::Model => None,
            Rule::Beacon => Some("beacon"),
            Rule::Checkin => Some("checkin"),
            Rule::Volume => Some("volume"),
            Rule::Sweep => Some("sweep"),
            Rule::Logins => Some("logins"),
        }
    }
}

/// Classifier first: the alert's class is the most probable attack class and
/// its score the attack probability `1 − P(benign)` (the model card's
/// `attack_score`), compared with that class's threshold. Probability mass
/// split between attack classes still counts as attack. Failing that, the
/// autoencoder fires `anomaly` when its reconstruction error reaches the
/// anomaly threshold; its confidence is `1 − ½·threshold/error`: ½ at the
/// threshold, → 1 as the error grows.
pub(super) fn detect(row: &ScoredRow, t: &Thresholds) -> Option<Detection> {
    detect_except(row, t, None)
}

/// [`detect`] with one classifier class ruled out (a flood the victim's
/// volume refutes): the next most probable attack class takes its place.
pub(super) fn detect_except(
    row: &ScoredRow,
    t: &Thresholds,
    ruled_out: Option<AttackClass>,
) -> Option<Detection> {
    let mut top: Option<(AttackClass, f32)> = None;
    for class in [
        AttackClass::Flood,
        AttackClass::Scan,
        AttackClass::BruteForce,
    ] {
        if Some(class) == ruled_out {
            continue;
        }
        let p = row.class_probs[class as usize];
        if p > 0.0 && top.is_none_or(|(_, q)| p > q) {
            top = Some((class, p));
        }
    }
    if let Some((class, _)) = top {
        let attack = 1.0 - row.class_probs[AttackClass::Benign as usize];
        if attack >= t.get(class) {
            return Some(Detection {
                class,
                score: attack.clamp(0.0, 1.0),
                raw: attack,
                rule: Rule::Model,
            });
        }
    }
    let e = row.anomaly_score;
    let th = t.get(AttackClass::Anomaly);
    if e.is_finite() && th.is_finite() && e >= th {
        let score = if e > 0.0 && th > 0.0 {
            1.0 - 0.5 * th / e
        } else {
            1.0
        };
        return Some(Detection {
            class: AttackClass::Anomaly,
            score: score.clamp(0.5, 1.0),
            raw: e,
            rule: Rule::Model,
        });
    }
    None
}

/// The bar a detection of `class` had to pass: a rule's own bar in its
/// unit (the beacon rule's jitter bound, the volume rule's new flows per
/// second), else the class's score threshold.
pub(super) fn threshold_of(settings: &AlertSettings, class: AttackClass, rule: Rule) -> f32 {
    match rule {
        Rule::Model => settings.thresholds.get(class),
        Rule::Beacon => settings.alerts.beacon_max_jitter as f32,
        Rule::Checkin => settings.alerts.beacon_checkin_jitter as f32,
        Rule::Volume => settings.volume.min_new_flows_per_s as f32,
        Rule::Sweep => settings.alerts.scan_hosts as f32,
        Rule::Logins => settings.logins.attempts as f32,
    }
}
