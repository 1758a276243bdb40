//! The record that crosses from the scoring workers to the alert stage: one
//! scored feature row. Defined here, between `model` and `alerts`, so neither
//! stage depends on the other's internals.

use crate::{capture::collector::FlowOrigin, features::RowFacts};
use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Mutex, OnceLock},
};

pub use crate::features::schema::MAX_FEATURES;

/// What a row describes. Both directions are kept so the alert stage can name
/// attacker and victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entity {
    /// One unidirectional flow (5-tuple).
    Flow,
    /// A source host's behaviour over a window (scanner, brute-forcer, flooder).
    SrcHost,
    /// A destination host's view over a window (the victim: many sources, SYN rate).
    DstHost,
}

/// The time window a row's statistics cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// The flow's lifetime so far.
    Flow,
    OneSecond,
    FiveMinutes,
    OneHour,
}

/// Attack classes the models speak of. `Benign` is never alerted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum AttackClass {
    Benign = 0,
    /// Volume attack: SYN/UDP/ICMP flood, reflection/amplification.
    Flood = 1,
    /// Port scan or host sweep.
    Scan = 2,
    /// Repeated short connections to one service (SSH, HTTP login).
    BruteForce = 3,
    /// Not a known class, but far from benign (autoencoder only).
    Anomaly = 4,
}

/// Number of [`AttackClass`] values; class probabilities are indexed by the value.
pub const N_CLASSES: usize = 5;

impl AttackClass {
    pub const ALL: [AttackClass; N_CLASSES] = [
        AttackClass::Benign,
        AttackClass::Flood,
        AttackClass::Scan,
        AttackClass::BruteForce,
        AttackClass::Anomaly,
    ];

    /// The class with this stable name.
    #[must_use]
    pub(crate) fn by_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Stable lowercase name used in JSON, config and model cards.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            AttackClass::Benign => "benign",
            AttackClass::Flood => "flood",
            AttackClass::Scan => "scan",
            AttackClass::BruteForce => "bruteforce",
            AttackClass::Anomaly => "anomaly",
        }
    }
}

/// A model's `name@version`, interned: a `Copy` handle to one string per
/// distinct version loaded in this process. Every scored row carries two, and
/// the worker building a row and the stage dropping it run on different
/// cores: a reference-counted string would bounce its counter's cache line
/// between them twice per row; a `&'static str` costs nothing to copy or drop.
/// The strings live for the process, one per version ever loaded (a few).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelVersion(&'static str);

impl ModelVersion {
    /// The handle for `id`, the same for equal strings.
    #[must_use]
    pub fn intern(id: &str) -> Self {
        static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
        let mut seen = SEEN
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = seen.get(id) {
            return Self(s);
        }
        let s: &'static str = Box::leak(id.to_owned().into_boxed_str());
        seen.insert(s);
        Self(s)
    }

    /// The version string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::ops::Deref for ModelVersion {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl std::fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::fmt::Debug for ModelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0, f)
    }
}

/// One scored row. Built without allocation on the worker.
#[derive(Clone, Debug)]
pub struct ScoredRow {
    pub entity: Entity,
    pub window: Window,
    /// Source of the flow, or the host itself for `SrcHost`; for `DstHost`, the
    /// most recent source seen talking to it.
    pub src: IpAddr,
    /// Destination of the flow, or the host itself for `DstHost`; for `SrcHost`,
    /// the most recent destination it talked to.
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// `CLOCK_MONOTONIC` ns of the kernel event that produced this row.
    pub event_ts_ns: u64,
    /// `CLOCK_MONOTONIC` ns when scoring finished.
    pub scored_ts_ns: u64,
    /// Feature vector as fed to the models (first `n_features` used).
    pub features: [f32; MAX_FEATURES],
    pub n_features: u8,
    /// Classifier probabilities, indexed by `AttackClass as usize`.
    pub class_probs: [f32; N_CLASSES],
    /// Autoencoder reconstruction error (higher = more unusual); NaN if the
    /// row was not escalated to the autoencoder.
    pub anomaly_score: f32,
    /// Volume behind the row, for severity: packets per second and bytes.
    pub packets_per_s: f32,
    pub bytes: u64,
    pub packets: u64,
    /// What the feature extractor learnt about the row's event beyond its
    /// features (responder, solicited, closed connection, victim rate): the
    /// facts the alert stage's guards and rules read. A row whose
    /// `facts.closed` is set is always sent to the alert stage, whatever its
    /// score (the beacon and login rules count connections, not scores).
    pub facts: RowFacts,
    /// The exporter and interfaces of the flow record behind the row
    /// (`sensor collect`); `None` for the XDP program's events.
    pub origin: Option<FlowOrigin>,
    pub classifier_version: ModelVersion,
    pub autoencoder_version: ModelVersion,
}

/// The rows one worker sends from one micro-batch, as one channel message:
/// one channel operation and at most one wake-up of the alert stage per
/// batch, not per row (per row they cost the worker about a tenth of its
/// time when most rows are sent, as under attack).
pub type RowBatch = Vec<ScoredRow>;

impl ScoredRow {}
