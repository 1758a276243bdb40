//! The login rule: many short connections from one client to a login
//! service of one server, as password guessing makes them. Each guess (or
//! each few, as a server allows) is a TCP connection that is answered (so
//! its client is no spoofed address), exchanges a banner, a key exchange
//! and a failure, and closes. The rule counts such connections on their
//! close, whatever the models scored their rows: a guesser that scanned and
//! flooded the same server first has a history that makes its rows look
//! like the flood, and its guesses must still be an alert of their own.
//! Zeek's SSH brute-force detection has the same shape (failed logins per
//! client over a window); counting connections needs no decryption.

use std::{collections::HashMap, net::IpAddr};

use serde::Deserialize;

use super::{
    AlertMetrics,
    beacon::ConnStarts,
    config::{OutOfRange, range, secs_to_ns},
    detect::{Detection, Rule},
    guards::evict_in_bulk,
    inventory::canonical,
};
use crate::{
    features::ClosedConn,
    model::row::{AttackClass, ScoredRow},
};

/// (client, server) pairs the rule tracks at most; when full, expired
/// pairs go, or all of them if that frees less than an eighth.
const LOGIN_PAIRS: usize = 16_384;

/// `[logins]`: which services are login services and how many short
/// connections to them make a brute force.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginsSection {
    /// TCP ports of login services: FTP, SSH, Telnet, mail submission and
    /// retrieval, LDAP, SMB, database servers, remote desktops (RDP, VNC)
    /// and Redis, with and without TLS where it has its own port. Web
    /// logins share their port with every page fetch, so they stay the
    /// models'.
    pub ports: Vec<u16>,
    /// A brute-force alert opens when one client's short connections to
    /// one server's login services reach this many within `window_s`
    /// (from 3 to 32); 0 turns the rule off.
    pub attempts: u32,
    /// Window for `attempts`, seconds.
    pub window_s: f64,
    /// A connection counts when it lasted at most this long, seconds…
    pub max_duration_s: f64,
    /// … and neither side sent more than this many bytes (frames): a
    /// session that carried a transfer or a shell was a login that worked,
    /// not a guess.
    pub max_bytes: u64,
}

impl Default for LoginsSection {
    fn default() -> Self {
        Self {
            ports: vec![
                21, 22, 23, 110, 143, 389, 445, 465, 587, 636, 993, 995, 1433, 1521, 3306, 3389,
                5432, 5900, 6379,
            ],
            attempts: 20,
            window_s: 60.0,
            max_duration_s: 30.0,
            max_bytes: 64 * 1024,
        }
    }
}

impl LoginsSection {
    /// Every value in its range; the first one out of range otherwise.
    pub(super) fn check_ranges(&self) -> Result<(), OutOfRange> {
        let pos = |x: f64| x.is_finite() && x > 0.0;
        range(
            "logins",
            "attempts",
            self.attempts,
            self.attempts == 0 || (3..=ConnStarts::CAPACITY as u32).contains(&self.attempts),
            "0 (off) or from 3 to 32 connections",
        )?;
        range(
            "logins",
            "window_s",
            self.window_s,
            pos(self.window_s),
            "a positive number of seconds",
        )?;
        range(
            "logins",
            "max_duration_s",
            self.max_duration_s,
            pos(self.max_duration_s),
            "a positive number of seconds",
        )?;
        range(
            "logins",
            "max_bytes",
            self.max_bytes,
            self.max_bytes > 0,
            "a positive number of bytes",
        )?;
        range(
            "logins",
            "ports",
            format!("{:?}", self.ports),
            !self.ports.contains(&0),
            "TCP ports from 1 to 65535",
        )
    }
}

/// Short login connections per (client, server).
#[derive(Default)]
pub(super) struct LoginRule {
    pairs: HashMap<(IpAddr, IpAddr), ConnStarts>,
}

impl LoginRule {
    /// Records a closed client connection (the event of `row` closed it) and
    /// returns a `bruteforce` detection once the client's short connections
    /// to this server's login services reach `attempts` within the window.
    /// Confidence: ½ at the bar, more as the connections in the window
    /// grow past it. Its raw score is that number of connections.
    pub(super) fn observe(
        &mut self,
        row: &ScoredRow,
        c: ClosedConn,
        s: &LoginsSection,
        metrics: &mut AlertMetrics,
    ) -> Option<Detection> {
        if s.attempts == 0 {
            return None;
        }
        let (client, server, port) = if c.client_is_src {
            (row.src, row.dst, row.dport)
        } else {
            (row.dst, row.src, row.sport)
        };
        let short = row.event_ts_ns.saturating_sub(c.start_ns) <= secs_to_ns(s.max_duration_s)
            && c.bytes_out <= s.max_bytes
            && c.bytes_in <= s.max_bytes;
        if !short || !s.ports.contains(&port) {
            return None;
        }
        metrics.login_connections += 1;
        let window = secs_to_ns(s.window_s);
        let now = row.event_ts_ns;
        let pair = (canonical(client), canonical(server));
        if !self.pairs.contains_key(&pair) && self.pairs.len() >= LOGIN_PAIRS {
            metrics.login_pairs_evicted += evict_in_bulk(&mut self.pairs, LOGIN_PAIRS, |p| {
                now.saturating_sub(p.last_ns()) < window
            });
        }
        let p = self.pairs.entry(pair).or_insert_with(ConnStarts::new);
        p.add(&c, now);
        let n = p.recent(now, window);
        if n < s.attempts as usize {
            return None;
        }
        let score = 1.0 - 0.5 * f64::from(s.attempts) / n as f64;
        Some(Detection {
            class: AttackClass::BruteForce,
            score: (score as f32).clamp(0.5, 1.0),
            raw: n as f32,
            rule: Rule::Logins,
        })
    }

    /// Whether the client of `row` (its source) made short connections to a
    /// login service of its destination within the window: its next
    /// connection's first packets, before the answer makes it a known
    /// exchange, are one more guess.
    pub(super) fn is_guessing(&self, row: &ScoredRow, s: &LoginsSection) -> bool {
        self.pairs
            .get(&(canonical(row.src), canonical(row.dst)))
            .is_some_and(|p| p.recent(row.event_ts_ns, secs_to_ns(s.window_s)) > 0)
    }
}
