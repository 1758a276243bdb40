//! The real `sensor collect` binary on loopback: damaged datagrams of every
//! kind are counted by reason in `--stats-out`, and a good datagram sent
//! after them is still decoded. Needs no root: it only binds a UDP port on
//! 127.0.0.1 (port 0, the one chosen is read from its first line).

use std::{
    io::{BufRead, BufReader},
    net::UdpSocket,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sensor_common::records::CollectStats;

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");

/// A NetFlow v5 datagram of `count` records (48 bytes each) from 10.0.0.1.
fn v5(count: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&5u16.to_be_bytes());
    v.extend_from_slice(&count.to_be_bytes());
    v.extend_from_slice(&[0; 20]);
    for _ in 0..count {
        let mut r = [0u8; 48];
        r[..4].copy_from_slice(&[10, 0, 0, 1]);
        r[4..8].copy_from_slice(&[10, 0, 0, 2]);
        r[16..20].copy_from_slice(&3u32.to_be_bytes());
        r[20..24].copy_from_slice(&120u32.to_be_bytes());
        r[38] = 17;
        v.extend_from_slice(&r);
    }
    v
}

#[test]
fn damaged_datagrams_are_counted_by_reason_and_decoding_goes_on() {
    let dir = std::env::temp_dir().join(format!("collect-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stats = dir.join("stats.json");
    let mut child = Command::new(SENSOR)
        .args(["collect", "--listen", "127.0.0.1:0", "--no-score"])
        .args(["--duration", "60", "--stats-out"])
        .arg(&stats)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting sensor collect");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("sensor: collecting flow records on udp ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_owned();

    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bad_v5 = v5(2);
    bad_v5[3] = 9; // promises 9 records, holds 2
    let mut bad_ipfix = vec![0, 10, 0, 200];
    bad_ipfix.extend_from_slice(&[0; 12]); // length 200 > 16 bytes
    // A v9 template set whose only field has length 0.
    let mut bad_template = vec![0, 9, 0, 1];
    bad_template.extend_from_slice(&[0; 16]);
    bad_template.extend_from_slice(&[0, 0, 0, 12, 1, 0, 0, 1, 0, 8, 0, 0]);
    // A v9 flowset running past the datagram.
    let mut bad_set = vec![0, 9, 0, 1];
    bad_set.extend_from_slice(&[0; 16]);
    bad_set.extend_from_slice(&[1, 0, 0, 100, 0, 0]);
    for d in [
        vec![0u8],
        vec![0, 7, 0, 0, 0, 0],
        bad_v5,
        bad_ipfix,
        bad_template,
        bad_set,
        v5(3),
    ] {
        tx.send_to(&d, &addr).unwrap();
        // Loopback: nothing is lost, but keep the order.
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "sensor collect did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert!(status.success(), "{first}{rest}");
    let s: CollectStats = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let c = s.collector;
    assert_eq!(c.received, 7, "{c:?}");
    assert_eq!(c.truncated_header, 1, "{c:?}");
    assert_eq!(c.unknown_version, 1, "{c:?}");
    assert_eq!(c.bad_length, 2, "{c:?}");
    assert_eq!(c.bad_template, 1, "{c:?}");
    assert_eq!(c.truncated_set, 1, "{c:?}");
    // The 2 records the short v5 datagram held, and the good datagram's 3.
    assert_eq!(c.records, 5, "{c:?}");
    assert_eq!(s.workers.iter().map(|w| w.events).sum::<u64>(), 5);
    assert!(rest.contains("malformed 6 "), "{rest}");
    let _ = std::fs::remove_dir_all(&dir);
}
