//! The lab itself: namespaces appear and disappear, and every frame the
//! generator reports as sent arrives on the other end of the veth.

use std::time::Duration;

use sensor_lab::generator::{Frames, Pacing, PacketCounter, Sender, mixed_flows};
use sensor_lab::{Lab, require_root};

fn namespace_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

#[test]
fn namespaces_are_removed_on_drop_even_after_panic() {
    if !require_root("namespaces_are_removed_on_drop_even_after_panic") {
        return;
    }
    let lab = Lab::sender_gateway().expect("lab");
    let names = [lab.sender.name().to_owned(), lab.gateway.name().to_owned()];
    assert!(names.iter().all(|n| namespace_exists(n)));
    assert!(lab.link.a.len() <= 15 && lab.link.b.len() <= 15);
    drop(lab);
    assert!(names.iter().all(|n| !namespace_exists(n)));

    let seen = std::sync::Mutex::new(Vec::new());
    let r = std::panic::catch_unwind(|| {
        let lab = Lab::sender_gateway().expect("lab");
        seen.lock().unwrap().push(lab.gateway.name().to_owned());
        panic!("test failure inside a lab");
    });
    assert!(r.is_err());
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(!namespace_exists(&seen[0]), "{} left behind", seen[0]);
}

#[test]
fn every_sent_frame_arrives() {
    if !require_root("every_sent_frame_arrives") {
        return;
    }
    let lab = Lab::sender_gateway().expect("lab");
    let mut counter = PacketCounter::open(&lab.gateway, &lab.link.b).expect("counter");
    let frames =
        Frames::spread(lab.sender_mac, lab.gateway_mac, &mixed_flows(64), 20_000).expect("frames");
    let sender = Sender::open(&lab.sender, &lab.link.a).expect("sender");
    let report = sender
        .send(
            &frames,
            Pacing {
                time_limit: Duration::from_secs(10),
                ..Pacing::default()
            },
        )
        .expect("send");
    assert_eq!(report.sent, frames.len());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(counter.received().expect("stats"), frames.len() as u64);
    eprintln!(
        "sent {} frames at {:.0} pps, {} retries",
        report.sent,
        report.pps(),
        report.retries
    );
}
