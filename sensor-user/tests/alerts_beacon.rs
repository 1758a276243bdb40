//! The beacon rule's check-ins: the same exchange with one server on a
//! jittered timer, whichever way its bytes go, is a beacon; sessions that
//! vary, tools hammering a service and logins are not.

mod alerts_util;

use alerts_util::*;
use sensor::{
    alerts::AlertStage,
    features::ClosedConn,
    model::row::{AttackClass::Benign, ScoredRow},
};

const IMPLANT: &str = "10.10.0.66";
const C2: &str = "203.0.113.80";

/// A benign-scored row closing a connection from `client` to `server:port`
/// that started at `start`, with `out` bytes sent and `inb` received.
fn closed(client: &str, server: &str, port: u16, start: u64, out: u64, inb: u64) -> ScoredRow {
    let mut r = row(Benign, 0.0, client, server, port, start + 30_000_000);
    r.class_probs[0] = 1.0;
    r.facts.established = true;
    r.facts.closed = Some(ClosedConn {
        start_ns: start,
        bytes_out: out,
        bytes_in: inb,
        client_is_src: true,
    });
    r
}

/// Deterministic uniform numbers in [0, 1).
struct Uniform(u64);

impl Uniform {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` connections from `client` to `server:port`, a sleep of `period_s`
/// jittered by ±`jitter` apart; `size(i)` gives the i-th one's bytes out
/// and in.
fn sleepy(
    stage: &mut AlertStage,
    (client, server, port): (&str, &str, u16),
    n: u64,
    (period_s, jitter): (f64, f64),
    size: impl Fn(u64) -> (u64, u64),
) {
    let mut rng = Uniform(0x9e37_79b9_7f4a_7c15);
    let mut t = SEC;
    for i in 0..n {
        let (out, inb) = size(i);
        stage.process(&closed(client, server, port, t, out, inb));
        let sleep = period_s * (1.0 + jitter * (2.0 * rng.next() - 1.0));
        t += (sleep * SEC as f64) as u64;
    }
}

#[test]
fn jittered_get_checkins_open_one_anomaly_alert() {
    let (mut stage, mem) = stage();
    // An implant polling for tasks: a small GET out, the same "no task"
    // page back (download-heavy), every 60 s ± 30 %. The bytes out at the
    // close vary by the acknowledgements it caught (404–618 in the lab).
    sleepy(&mut stage, (IMPLANT, C2, 443), 40, (60.0, 0.3), |i| {
        (404 + [0, 8, 140, 214][i as usize % 4], 2_639)
    });
    let m = stage.metrics();
    assert_eq!(m.upload_connections, 0, "no upload-heavy connection");
    assert!(m.beacon_detections >= 20, "{}", m.beacon_detections);
    let open = stage.open_alerts();
    assert_eq!(open.len(), 1, "{open:?}");
    let mut a = take_of_type(&mem, "alert");
    a.retain(|a| a["xdp_sensor"]["state"] == "open");
    assert_eq!(a.len(), 1);
    let x = &a[0]["xdp_sensor"];
    assert_eq!(x["class"], "anomaly");
    assert_eq!(x["detector"], "checkin");
    assert_eq!(x["attacker"], IMPLANT);
    assert_eq!(x["victim"], C2);
    assert_eq!(x["threshold"], 0.2);
    assert!(x["raw_score"].as_f64().unwrap() <= 0.2, "{x}");
}

#[test]
fn varying_sessions_tools_and_logins_are_no_checkins() {
    let (mut stage, _mem) = stage();
    let rules = settings();
    assert!(rules.logins.ports.contains(&22));
    // The same timer, but a person's exchanges: sizes vary.
    sleepy(&mut stage, ("10.10.0.11", C2, 443), 40, (60.0, 0.3), |i| {
        (400 + (i * 7_919) % 3_000, 2_000 + (i * 104_729) % 90_000)
    });
    // The same exchange, but a tool working through a list: 50 ms apart.
    sleepy(
        &mut stage,
        ("10.10.0.12", C2, 8080),
        40,
        (0.05, 0.3),
        |_| (420, 1_800),
    );
    // The same exchange on a timer to a login service: the login rule's.
    sleepy(&mut stage, ("10.10.0.13", C2, 22), 40, (60.0, 0.3), |_| {
        (2_100, 2_600)
    });
    // Steady sizes at random times (exponential gaps) do not keep a clock.
    let mut rng = Uniform(0x2545_f491_4f6c_dd1d);
    let mut t = SEC;
    for _ in 0..40 {
        stage.process(&closed("10.10.0.14", C2, 443, t, 420, 1_800));
        t += (-(1.0 - rng.next()).ln() * 60.0 * SEC as f64) as u64;
    }
    assert_eq!(stage.metrics().beacon_detections, 0);
    assert!(stage.open_alerts().is_empty(), "{:?}", stage.open_alerts());
}

#[test]
fn checkins_can_be_turned_off_alone() {
    let (mut stage, _mem) = stage_tuned(|s| s.alerts.beacon_checkin_jitter = 0.0);
    sleepy(&mut stage, (IMPLANT, C2, 443), 40, (60.0, 0.3), |_| {
        (420, 1_800)
    });
    assert_eq!(stage.metrics().beacon_detections, 0);
}
