use std::{io::Write as _, net::TcpListener};

use ratatui::{Terminal, backend::TestBackend};

use super::*;

const FIRST: &str = "\
# TYPE xdp_sensor_kernel_packets_seen counter
xdp_sensor_kernel_packets_seen_total 1000
xdp_sensor_kernel_bytes_seen_total 100000
xdp_sensor_kernel_events_emitted_total 50
xdp_sensor_worker_events_total{worker=\"0\"} 20
xdp_sensor_worker_events_total{worker=\"1\"} 30
xdp_sensor_rows_shed_total{worker=\"0\"} 0
xdp_sensor_rows_shed_total{worker=\"1\"} 7
xdp_sensor_alerts_opened_total{class=\"PortScan\",severity=\"2\"} 1
xdp_sensor_alerts_opened_total{class=\"DoS\",severity=\"1\"} 0
";

const SECOND: &str = "\
xdp_sensor_kernel_packets_seen_total 3000
xdp_sensor_kernel_bytes_seen_total 350000
xdp_sensor_kernel_events_emitted_total 150
xdp_sensor_worker_events_total{worker=\"0\"} 60
xdp_sensor_worker_events_total{worker=\"1\"} 90
xdp_sensor_rows_shed_total{worker=\"0\"} 0
xdp_sensor_rows_shed_total{worker=\"1\"} 9
xdp_sensor_event_to_score_seconds_bucket{worker=\"0\",le=\"0.0001\"} 50
xdp_sensor_event_to_score_seconds_bucket{worker=\"0\",le=\"0.001\"} 60
xdp_sensor_event_to_score_seconds_bucket{worker=\"0\",le=\"+Inf\"} 60
xdp_sensor_alerts_opened_total{class=\"PortScan\",severity=\"2\"} 3
xdp_sensor_alerts_opened_total{class=\"DoS\",severity=\"1\"} 0
xdp_sensor_open_alerts 2
xdp_sensor_open_incidents 1
xdp_sensor_model_info{role=\"classifier\",version=\"flow-mlp@7\"} 1
xdp_sensor_model_reloads_total{outcome=\"applied\"} 1
xdp_sensor_config_reloads_total{outcome=\"applied\"} 0
xdp_sensor_drift_events_total 4
xdp_sensor_feature_psi{feature=\"pkt_len_mean\"} 0.05
xdp_sensor_feature_psi{feature=\"iat_mean\"} 0.41
broken line here
";

fn scrapes() -> (Scrape, Scrape) {
    let t0 = Instant::now();
    (
        Scrape {
            exp: Exposition::parse(FIRST),
            at: t0,
        },
        Scrape {
            exp: Exposition::parse(SECOND),
            at: t0 + Duration::from_secs(2),
        },
    )
}

fn screen(snap: &Snapshot) -> String {
    let mut t = Terminal::new(TestBackend::new(120, 50)).expect("test terminal");
    t.draw(|f| render(f, snap)).expect("draw");
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

#[test]
fn rates_are_differences_over_the_time_between_scrapes() {
    let (a, b) = scrapes();
    let s = Snapshot::new("127.0.0.1:9641", Some("eth0"), &b, Some(&a));
    assert_eq!(s.packets.total, 3000.0);
    assert_eq!(s.packets.per_s, Some(1000.0));
    assert_eq!(s.bytes.per_s, Some(125_000.0));
    assert_eq!(s.workers.len(), 2);
    assert_eq!(s.workers[1].events.per_s, Some(30.0));
    assert_eq!(s.workers[1].shed, 9.0);
    assert_eq!(s.workers[0].p50, Some(0.0001));
    assert_eq!(s.workers[0].p99, Some(0.001));
    assert_eq!(s.workers[1].p50, None);
    assert_eq!(s.alerts_per_s, Some(1.0));
    assert_eq!(s.alerts_opened, vec![("PortScan".into(), "2".into(), 3.0)]);
    assert_eq!(s.open_alerts, Some(2.0));
    assert_eq!(s.models, vec![("classifier".into(), "flow-mlp@7".into())]);
    assert_eq!(s.drift[0], ("iat_mean".into(), 0.41));
    assert!(
        s.malformed
            .as_deref()
            .is_some_and(|m| m.contains("line 21")),
        "{:?}",
        s.malformed
    );
    // The first scrape has totals but no rates.
    let first = Snapshot::new("x:1", None, &a, None);
    assert_eq!(first.packets.total, 1000.0);
    assert_eq!(first.packets.per_s, None);
    // A counter that went down (a restarted sensor) gives no rate.
    let back = Snapshot::new("x:1", None, &a, Some(&b));
    assert_eq!(back.packets.per_s, None);
}

#[test]
fn the_view_shows_the_figures() {
    let (a, b) = scrapes();
    let mut s = Snapshot::new("127.0.0.1:9641", Some("eth0"), &b, Some(&a));
    s.scrape_time = Some(Duration::from_micros(1500));
    let out = screen(&s);
    for want in [
        "127.0.0.1:9641",
        "iface eth0",
        "scraped in 1.5 ms",
        "packets/s 1.00 k",
        "bits/s 1.00 M",
        "packets 3000 total",
        "open alerts 2",
        "open incidents 1",
        "PortScan",
        "flow-mlp@7",
        "model reloads: applied 1",
        "iat_mean",
        "PSI 0.410",
        "<= 100 us",
        "1 malformed lines",
    ] {
        assert!(out.contains(want), "{want:?} not in\n{out}");
    }
    assert!(
        out.find("iat_mean") < out.find("pkt_len_mean"),
        "drift is not highest first\n{out}"
    );
}

#[test]
fn a_failed_scrape_says_so_and_keeps_the_last_figures() {
    let (a, b) = scrapes();
    let mut s = Snapshot::new("127.0.0.1:9641", None, &b, Some(&a));
    s.error = Some("Connection refused (os error 111)".into());
    let out = screen(&s);
    assert!(
        out.contains("no answer from 127.0.0.1:9641: Connection refused"),
        "{out}"
    );
    assert!(out.contains("packets 3000 total"), "{out}");
}

#[test]
fn targets_parse_from_an_address_or_a_url() {
    let t = Target::parse("127.0.0.1:9641").expect("addr");
    assert_eq!(
        (t.authority.as_str(), t.path.as_str()),
        ("127.0.0.1:9641", "/metrics")
    );
    let t = Target::parse("http://[::1]:80/m").expect("url");
    assert_eq!((t.authority.as_str(), t.path.as_str()), ("[::1]:80", "/m"));
    for bad in ["https://a:1/metrics", "127.0.0.1", "host:99999", ":80"] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
}

/// Serves one canned answer on a loopback port.
fn serve_once(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut req = [0u8; 1024];
        let n = std::io::Read::read(&mut s, &mut req).expect("read");
        s.write_all(answer.as_bytes()).expect("write");
        String::from_utf8_lossy(&req[..n]).into_owned()
    });
    (addr, h)
}

#[test]
fn fetch_reads_a_200_body_and_reports_anything_else() {
    let (addr, h) =
        serve_once("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nx 1\n");
    let body = Target::parse(&addr).expect("target").fetch().expect("body");
    assert_eq!(body, "x 1\n");
    let req = h.join().expect("server");
    assert!(req.starts_with("GET /metrics HTTP/1.1\r\n"), "{req}");

    let (addr, h) = serve_once("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let err = Target::parse(&addr)
        .expect("target")
        .fetch()
        .expect_err("404");
    assert!(err.contains("404"), "{err}");
    h.join().expect("server");

    // Nothing listens on a port just released.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .to_string();
    let err = Target::parse(&addr)
        .expect("target")
        .fetch()
        .expect_err("refused");
    assert!(err.to_lowercase().contains("refused"), "{err}");
}
