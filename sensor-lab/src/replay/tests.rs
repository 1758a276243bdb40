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
    // Gaps over 1 ms shortened: the whole capture fits in the 0.1 s bound
    // that cut it above only if the bound applies to the shortened timeline.
    let (paced, shortened) = compress_gaps(&cap.offsets_ns().0, Some(Duration::from_millis(1)));
    assert!(shortened > 0);
    let paced_span = Duration::from_nanos(*paced.last().unwrap());
    let rep = tx
        .replay(
            &cap,
            &AttackRule::None,
            ReplayOptions {
                max_duration: paced_span + Duration::from_millis(1),
                max_gap: Some(Duration::from_millis(1)),
                ..ReplayOptions::default()
            },
        )
        .unwrap();
    assert!(!rep.truncated, "{rep:?}");
    assert_eq!(rep.gaps_shortened, shortened);
    assert_eq!(rep.capture_span, cap.duration());
    assert!(rep.elapsed < cap.duration(), "{:?}", rep.elapsed);
}

#[test]
fn long_gaps_are_shortened_and_short_ones_kept() {
    let ms = |x: u64| x * 1_000_000;
    let offsets = [
        0,
        ms(1),
        ms(2),
        ms(5_002),
        ms(5_003),
        ms(65_003),
        ms(65_003),
    ];
    let (out, n) = compress_gaps(&offsets, Some(Duration::from_secs(1)));
    assert_eq!(
        out,
        [0, ms(1), ms(2), ms(1_002), ms(1_003), ms(2_003), ms(2_003)]
    );
    assert_eq!(n, 2);
    // A gap exactly at the limit is kept; no limit keeps everything.
    let (out, n) = compress_gaps(&offsets, Some(Duration::from_secs(5)));
    assert_eq!((out[3], n), (ms(5_002), 1));
    assert_eq!(compress_gaps(&offsets, None), (offsets.to_vec(), 0));
    assert_eq!(compress_gaps(&[], Some(Duration::ZERO)), (vec![], 0));
    let (out, _) = compress_gaps(&offsets, Some(Duration::ZERO));
    assert!(out.iter().all(|&o| o == 0));
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

#[test]
fn raw_ip_and_linux_cooked_frames_get_an_ethernet_header() {
    let mut out = Vec::new();
    // A real IPv4 frame without its Ethernet header.
    let cap = Capture::load(&data("scan/evilfingers_nmap/TCP_SYN_SCAN.pcap")).unwrap();
    let eth = cap.frame(0);
    let v4 = &eth[ETH_HLEN..];
    Framing::RawIp.frame(v4, &mut out).unwrap();
    assert_eq!(&out[..6], &SYNTH_DST_MAC);
    assert_eq!(&out[6..12], &SYNTH_SRC_MAC);
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    assert_eq!(&out[ETH_HLEN..], v4);
    assert!(ip_pair(eth).is_some());
    assert_eq!(ip_pair(&out), ip_pair(eth));
    let mut v6 = [0u8; 40];
    v6[0] = 0x60;
    Framing::RawIp.frame(&v6, &mut out).unwrap();
    assert_eq!(&out[12..14], &[0x86, 0xdd]);
    assert!(Framing::RawIp.frame(&[0x00, 1, 2], &mut out).is_err());
    assert!(Framing::RawIp.frame(&[], &mut out).is_err());
    // SLL: packet type, ARPHRD, address length 6, address (8 bytes), protocol.
    let mut sll = vec![
        0, 4, 0, 1, 0, 6, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0, 0, 0x08, 0x00,
    ];
    sll.extend_from_slice(v4);
    Framing::LinuxSll.frame(&sll, &mut out).unwrap();
    assert_eq!(&out[6..12], &[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    assert_eq!(&out[ETH_HLEN..], v4);
    sll[5] = 0;
    Framing::LinuxSll.frame(&sll, &mut out).unwrap();
    assert_eq!(&out[6..12], &SYNTH_SRC_MAC);
    assert!(Framing::LinuxSll.frame(&sll[..10], &mut out).is_err());
    Framing::Ethernet.frame(&sll, &mut out).unwrap();
    assert_eq!(out, sll);
    assert_eq!(Framing::of(DataLink::IEEE802_11), None);
}

#[test]
fn an_unsupported_link_type_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("replay-link-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("wifi.pcap");
    let mut bytes = std::fs::read(data("scan/evilfingers_nmap/TCP_SYN_SCAN.pcap")).unwrap();
    // Link type field of the pcap header (little-endian file): 802.11.
    bytes[20..24].copy_from_slice(&105u32.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let e = Capture::load(&p).unwrap_err().to_string();
    assert!(e.contains("wifi.pcap") && e.contains("IEEE802_11"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn arp_requests_and_cooked_captures_name_their_hosts() {
    // An ARP scan: the prober asks for every address of its /24.
    let c = Capture::load(&data("scan/sgr_hs-arpScan.pcap")).unwrap();
    let prober: IpAddr = "10.0.0.128".parse().unwrap();
    let asked: BTreeSet<IpAddr> = (0..c.len())
        .filter_map(|i| ip_pair(c.frame(i)))
        .filter(|(s, _)| *s == prober)
        .map(|(_, d)| d)
        .collect();
    assert!(asked.len() >= 250, "{}", asked.len());
    // A Linux cooked capture replays as Ethernet frames carrying its IP packets.
    let c = Capture::load(&data("anomaly/ndpi_log4j-webapp-exploit.pcap")).unwrap();
    assert_eq!(c.len(), 426);
    let victim: IpAddr = "10.10.10.31".parse().unwrap();
    assert!(
        (0..c.len()).any(|i| ip_pair(c.frame(i)).is_some_and(|(s, d)| s == victim || d == victim))
    );
}
