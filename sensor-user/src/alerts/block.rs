//! The block rule: an alert at or above its class's block bar (config
//! `[block]`) puts its attacker in the XDP program's blocklist, renewed with
//! each record while the alert stays open, so the block ends `ttl_s` after
//! the alert's last record. Only alerts that name one attacker block: an
//! aggregated side (a spoofed flood's sources) is not an address to drop.

use std::{net::IpAddr, time::Duration};

use sensor_common::{BlockReason, EnforceMode};
use tracing::{info, warn};

use super::config::BlockSection;
use crate::{
    capture::{
        blocklist::{Lists, Prefix},
        loader::if_index,
        pins::PinDir,
    },
    model::row::AttackClass,
};

/// Inventory criticality (1–5) from which an address is never blocked by
/// an alert.
pub(super) const NEVER_BLOCKED_CRITICALITY: u8 = 5;

/// How often (stage time) expired entries are removed from the lists, so
/// the program's lookups skip lists that only held expired entries.
const SWEEP_EXPIRED_NS: u64 = 10_000_000_000;

/// When an alert's block started and when it ends (stage clock, ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BlockSpan {
    pub(super) start_ns: u64,
    pub(super) end_ns: u64,
}

/// The blocklists the rule writes to: handed in, or opened from the pins
/// of the interface on first use (the sensor pins them once loaded).
pub(super) struct Blocker {
    lists: Option<Lists>,
    /// Opening the pins failed once: not retried for every alert.
    unavailable: bool,
    /// Stage time of the last removal of expired entries.
    last_sweep_ns: u64,
}

impl Blocker {
    pub(super) fn new(lists: Option<Lists>) -> Self {
        Self {
            lists,
            unavailable: false,
            last_sweep_ns: 0,
        }
    }

    /// Removes expired entries (operators' and alerts') every
    /// [`SWEEP_EXPIRED_NS`], once the lists are open.
    pub(super) fn sweep(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_sweep_ns) < SWEEP_EXPIRED_NS {
            return;
        }
        self.last_sweep_ns = now_ns;
        if let Some(lists) = self.lists.as_mut() {
            match lists.remove_expired() {
                Ok(0) => {}
                Ok(n) => info!(entries = n, "removed expired blocklist entries"),
                Err(e) => warn!(error = %e, "could not remove expired blocklist entries"),
            }
        }
    }

    fn lists(&mut self, iface: &str) -> Option<&mut Lists> {
        if self.lists.is_none() && !self.unavailable {
            let opened = if_index(iface)
                .ok_or_else(|| format!("no interface `{iface}`"))
                .and_then(|i| PinDir::here(i).map_err(|e| e.to_string()))
                .and_then(|p| Lists::from_pins(&p).map_err(|e| e.to_string()));
            match opened {
                Ok(l) => self.lists = Some(l),
                Err(e) => {
                    warn!(%iface, error = %e, "alerts cannot block: the blocklists are not reachable");
                    self.unavailable = true;
                }
            }
        }
        self.lists.as_mut()
    }

    /// Blocks or renews `attacker` for the alert `alert_id` when `mode`
    /// enforces and the alert reaches its bar; returns the span the block
    /// covers now (`prev` extended), `None` when it does not block.
    #[expect(clippy::too_many_arguments, reason = "the facts of one decision")]
    pub(super) fn apply(
        &mut self,
        rule: &BlockSection,
        mode: EnforceMode,
        iface: &str,
        (class, eve_severity, peak_score): (AttackClass, u8, f32),
        attacker: Option<IpAddr>,
        alert_id: &str,
        now_ns: u64,
        prev: Option<BlockSpan>,
    ) -> Option<BlockSpan> {
        // A NaN score never reaches a bar.
        let reaches = peak_score >= rule.bar(class);
        if mode == EnforceMode::Off || eve_severity > rule.max_severity || !reaches {
            return prev;
        }
        let attacker = attacker?;
        let prefix = Prefix::new(attacker, if attacker.is_ipv4() { 32 } else { 128 })?;
        let lists = self.lists(iface)?;
        let ttl = Duration::from_secs(rule.ttl_s);
        if let Err(e) = lists.block(prefix, Some(ttl), BlockReason::Alert, alert_id) {
            warn!(%prefix, error = %e, "could not block an alert's attacker");
            return prev;
        }
        if prev.is_none() {
            info!(%prefix, alert = alert_id, ?mode, "blocking an alert's attacker");
        }
        let end_ns = now_ns.saturating_add(rule.ttl_s.saturating_mul(1_000_000_000));
        Some(BlockSpan {
            start_ns: prev.map_or(now_ns, |p| p.start_ns),
            end_ns,
        })
    }
}
