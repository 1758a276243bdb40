//! Real tools against the real sensor: frames sent by hping3 through the
//! sender's own IP stack are counted exactly.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sensor_lab::netns::run;
use sensor_lab::sensor::{OBSERVE, SensorRun, TempDir, exclusive};
use sensor_lab::{Lab, require, require_root};

const SENSOR: &str = env!("CARGO_BIN_EXE_sensor");

fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn hping3_syns_are_counted_exactly() {
    const TEST: &str = "hping3_syns_are_counted_exactly";
    const COUNT: u64 = 300;
    // `cargo xtask setup` installs hping3; CI therefore always runs this.
    if !require_root(TEST) || !require(TEST, "hping3", has("hping3")) {
        return;
    }
    let _serial = exclusive();
    let lab = Lab::sender_gateway().expect("lab");
    // An address on the sender and a permanent neighbour entry for the
    // target: the stack sends exactly hping3's packets, no ARP.
    lab.sender
        .add_addr(&lab.link.a, "10.203.0.1/24")
        .expect("addr");
    let mac = lab
        .gateway_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    lab.sender
        .ip(&[
            "neigh",
            "replace",
            "10.203.0.2",
            "lladdr",
            &mac,
            "dev",
            &lab.link.a,
            "nud",
            "permanent",
        ])
        .expect("neighbour");

    let dir = TempDir::new("hping3").expect("temp dir");
    let mut sensor = SensorRun::start(
        &lab.gateway,
        Path::new(SENSOR),
        &lab.link.b,
        dir.path(),
        OBSERVE,
    )
    .expect("start sensor");
    sensor.wait_ready(&lab.gateway).expect("attach");
    let count = COUNT.to_string();
    run(lab.sender.command("timeout").args([
        "30",
        "hping3",
        "-q",
        "-c",
        &count,
        "-i",
        "u2000",
        "-S",
        "-p",
        "80",
        "-s",
        "40000",
        "-k",
        "10.203.0.2",
    ]))
    .or_else(|e| match e {
        // hping3 exits 1 when no reply came back, which is the case here.
        sensor_lab::LabError::Command { status, .. } if status.code() == Some(1) => {
            Ok(String::new())
        }
        other => Err(other),
    })
    .expect("hping3");
    std::thread::sleep(Duration::from_millis(300));
    let out = sensor.stop(Duration::from_secs(15)).expect("stop");

    assert_eq!(
        out.stats.counter("packets_seen"),
        COUNT,
        "{:?}",
        out.stats.counters
    );
    assert_eq!(out.flows.len(), 1, "{:?}", out.flows);
    let f = &out.flows[0];
    assert_eq!(f.src.to_string(), "10.203.0.1");
    assert_eq!(f.dst.to_string(), "10.203.0.2");
    assert_eq!((f.sport, f.dport, f.proto), (40_000, 80, 6));
    assert_eq!(
        (
            f.packets,
            u64::from(f.syn),
            u64::from(f.synack),
            u64::from(f.fin),
            u64::from(f.rst)
        ),
        (COUNT, COUNT, 0, 0, 0)
    );
    // 14 Ethernet + 20 IPv4 + 20 TCP, no payload.
    assert_eq!(f.bytes, COUNT * 54);
}
