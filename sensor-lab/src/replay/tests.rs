use super::*;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/pcaps")
        .join(rel)
}

#[test]
fn rules_parse_and_match() {
    let r: AttackRule = "between 172.16.0.5 192.168.50.1,192.168.50.4"
        .parse()
        .unwrap();
    let a: IpAddr = "172.16.0.5".parse().unwrap();
    let v: IpAddr = "192.168.50.4".parse().unwrap();
    let o: IpAddr = "192.168.50.9".parse().unwrap();
    assert!(r.is_attack(a, v));
    assert!(r.is_attack(v, a));
    assert!(!r.is_attack(a, o));
    assert!(!r.is_attack(v, o));
    assert_eq!(
        "all".parse::<AttackRule>(),
        Ok(AttackRule::All(Side::Unknown))
    );
    assert_eq!(
        "all attacker 10.0.0.1,10.0.0.2".parse::<AttackRule>(),
        Ok(AttackRule::All(Side::Attackers(vec![
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap()
        ])))
    );
    assert_eq!(
        "all victim ::1".parse::<AttackRule>(),
        Ok(AttackRule::All(Side::Victims(vec!["::1".parse().unwrap()])))
    );
    for text in [
        "all",
        "none",
        "all attacker 10.0.0.1,10.0.0.2",
        "all victim ::1",
        "between 172.16.0.5 192.168.50.1,192.168.50.4",
    ] {
        assert_eq!(text.parse::<AttackRule>().unwrap().to_string(), text);
    }
    assert!("all attacker".parse::<AttackRule>().is_err());
    assert!("all victim 1.2.3".parse::<AttackRule>().is_err());
    assert_eq!("none".parse::<AttackRule>(), Ok(AttackRule::None));
    assert!("between 1.2.3.4".parse::<AttackRule>().is_err());
    assert!("between x 1.2.3.4".parse::<AttackRule>().is_err());
    assert!("some".parse::<AttackRule>().is_err());
}

#[test]
fn pcap_and_pcapng_load_with_right_counts_and_spans() {
    // Packet counts and durations as listed in the manifest (computed
    // there with other tools).
    for (rel, packets, span_us) in [
        ("flood/cicddos2019_SynFlood.pcap", 26_316, 687_350),
        // Named .pcapng, classic pcap inside.
        ("flood/stopddos_amp.UDP.snmp.src161.pcapng", 4_373, 23_497),
        ("benign/ppa3_http_espn.pcapng", 956, 2_047_482),
        ("scan/ppa3_synscan.pcapng", 2_011, 23_085_343),
    ] {
        let c = Capture::load(&data(rel)).unwrap();
        assert_eq!(c.len(), packets, "{rel}");
        let first = c.timestamp_ns(0);
        let last = (0..c.len()).map(|i| c.timestamp_ns(i)).max().unwrap();
        assert_eq!((last - first) / 1000, span_us, "{rel}");
        assert!(c.duration().as_micros() <= u128::from(span_us));
        assert!(ip_pair(c.frame(0)).is_some() || c.frame(0).len() >= ETH_HLEN);
    }
}

#[test]
fn pcapng_timestamps_are_wall_clock_microseconds() {
    // 2010-04-07 17:29:29.782934 UTC, as the manifest lists it.
    let c = Capture::load(&data("benign/ppa3_http_espn.pcapng")).unwrap();
    assert_eq!(c.timestamp_ns(0) / 1000, 1_270_661_369_782_934);
}

#[test]
fn out_of_order_timestamps_are_clamped() {
    let mut c = Capture {
        path: PathBuf::new(),
        frames: FrameBuf::default(),
        ts_ns: Vec::new(),
    };
    for ts in [100, 300, 200, 250, 400] {
        c.push(ts, &[0; 60]);
    }
    let (off, clamped) = c.offsets_ns();
    assert_eq!(off, [0, 200, 200, 200, 300]);
    assert_eq!(clamped, 2);
}

#[test]
fn cicddos_attack_hosts_follow_the_rule() {
    let c = Capture::load(&data("flood/cicddos2019_SynFlood.pcap")).unwrap();
    let rule: AttackRule = "between 172.16.0.5 192.168.50.1,192.168.50.4"
        .parse()
        .unwrap();
    let roles = c.attack_roles(&rule);
    let attacker: IpAddr = "172.16.0.5".parse().unwrap();
    assert_eq!(roles.attackers, [attacker].into());
    assert!(
        roles
            .victims
            .contains(&"192.168.50.4".parse::<IpAddr>().unwrap())
    );
    assert!(!roles.victims.contains(&attacker) && roles.victims.len() <= 2);
    let all = c.attack_roles(&AttackRule::All(Side::Unknown));
    assert!(all.attackers.contains(&attacker) && all.victims.contains(&attacker));
    let named = c.attack_roles(&AttackRule::All(Side::Attackers(vec![attacker])));
    assert_eq!(named.attackers, [attacker].into());
    assert!(!named.victims.contains(&attacker) && !named.victims.is_empty());
    let named = c.attack_roles(&AttackRule::All(Side::Victims(vec![attacker])));
    assert_eq!(named.victims, [attacker].into());
    assert!(!named.attackers.contains(&attacker) && !named.attackers.is_empty());
    assert_eq!(c.attack_roles(&AttackRule::None), AttackRoles::default());
    assert_eq!(c.first_attack(&AttackRule::None), None);
    assert!(c.first_attack(&rule).is_some());
}

#[test]
fn replay_delivers_every_frame_at_the_recorded_pace() {
    let Some(net) = crate::sensor::net_test("replay_delivers_every_frame_at_the_recorded_pace")
    else {
        return;
    };
    let lab = &net.lab;
    let cap = Capture::load(&data("benign/ppa3_http_espn.pcapng")).unwrap();
    let mut rx = crate::generator::PacketCounter::open(&lab.gateway, &lab.link.b).unwrap();
    let tx = Replayer::open(&lab.sender, &lab.link.a).unwrap();
    assert_eq!(tx.mtu(), 1500);
    let rep = tx
        .replay(
            &cap,
            &AttackRule::All(Side::Unknown),
            ReplayOptions {
                speed: 4.0,
                ..ReplayOptions::default()
            },
        )
        .unwrap();
    let too_large = (0..cap.len())
        .filter(|&i| cap.frame(i).len() > 1514)
        .count() as u64;
    assert_eq!(rep.skipped_too_large, too_large);
    assert_eq!(rep.sent + too_large, cap.len() as u64);
    assert!(!rep.truncated);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rx.received().unwrap(), rep.sent);
    // Paced: never faster than the capture (÷4); the upper bound only
    // catches a replay that ignores the speed factor (2 s at 1x).
    let want = cap.duration().as_secs_f64() / 4.0;
    let got = rep.elapsed.as_secs_f64();
    assert!(
        got >= want * 0.99 && got < want + 1.0,
        "{got} s vs {want} s"
    );
    let (first, attack) = (rep.first_packet_mono_ns.unwrap(), rep.first_attack_mono_ns);
    assert_eq!(attack, Some(first));

    // Bounds: 100 packets at most; then 0.1 s of capture time at most.
    let rep = tx
        .replay(
            &cap,
            &AttackRule::None,
            ReplayOptions {
                max_packets: 100,
                ..ReplayOptions::default()
            },
        )
        .unwrap();
    assert!(rep.truncated);
    assert_eq!(rep.sent + rep.skipped_too_large, 100);
    assert_eq!(rep.first_attack_mono_ns, None);
    let rep = tx
        .replay(
            &cap,
            &AttackRule::All(Side::Unknown),
            ReplayOptions {
                max_duration: Duration::from_millis(100),
                ..ReplayOptions::default()
            },
        )
        .unwrap();
    assert!(rep.truncated && rep.capture_span <= Duration::from_millis(100));
    assert!(rep.elapsed < Duration::from_secs(1), "{:?}", rep.elapsed);
}

#[test]
fn bad_files_are_rejected_with_the_path() {
    let dir = std::env::temp_dir().join(format!("replay-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("x.pcap");
    std::fs::write(&p, b"hello world, not a capture").unwrap();
    let e = Capture::load(&p).unwrap_err().to_string();
    assert!(e.contains("x.pcap") && e.contains("not a pcap"), "{e}");
    // A truncated real capture: header fine, last packet cut.
    let full = std::fs::read(data("scan/evilfingers_nmap/TCP_SYN_SCAN.pcap")).unwrap();
    std::fs::write(&p, &full[..full.len() - 7]).unwrap();
    assert!(Capture::load(&p).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
