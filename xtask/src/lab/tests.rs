use super::eve::eve_unix_ns;
use super::*;
use sensor_lab::lab::scenario::SourceRule;

#[test]
fn interleave_takes_chunks_in_turn_and_keeps_every_row() {
    let mut b: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    b.insert("a", (0..5).map(|i| format!("a{i}\n")).collect());
    b.insert("b", (0..2).map(|i| format!("b{i}\n")).collect());
    let mut out = String::new();
    interleave(&mut out, b, 2);
    assert_eq!(out, "a0\na1\nb0\nb1\na2\na3\na4\n");
}

fn outcome(name: &str, label: Label, sources: SourceRule, start: u64, end: u64) -> ScenarioOutcome {
    ScenarioOutcome {
        first_packet_mono_ns: Some(start),
        end_mono_ns: end,
        ..ScenarioOutcome::started(name, label, scenario::Origin::Attacker, sources, start)
    }
}

#[test]
fn alerts_are_attributed_by_window_and_endpoints() {
    let plan = AddressPlan::default();
    let (att, client, server) = (
        plan.attacker.to_string(),
        plan.clients[0].to_string(),
        plan.server.to_string(),
    );
    let s = 1_000 * TAIL_NS;
    let o = vec![
        outcome(
            "dns",
            Label::Benign,
            SourceRule::Addresses(vec![plan.clients[0].into()]),
            s,
            s + 5 * TAIL_NS,
        ),
        outcome(
            "flood",
            Label::Flood,
            SourceRule::AddressesAndSpoofed(vec![plan.attacker.into()]),
            s + 7 * TAIL_NS,
            u64::MAX,
        ),
    ];
    let a = |src: &str, dst: &str, t: u64| {
        attribute(&plan, &o, src.parse().ok(), dst.parse().ok(), Some(t))
    };
    let (att, client, server) = (att.as_str(), client.as_str(), server.as_str());
    let (benign, attack) = (Owner::Scenario(0), Owner::Scenario(1));
    let unmatched = Owner::Unmatched("client");
    // (source, destination, time, owner, why)
    #[rustfmt::skip]
    let cases = [
        (client, server, s + TAIL_NS, benign, ""),
        (server, client, s + TAIL_NS, benign, "reply"),
        (client, server, s + 6 * TAIL_NS, unmatched, "no tail for benign scenarios: the background shares their clients"),
        (att, server, s + 7 * TAIL_NS + 1, attack, ""),
        (att, server, s + TAIL_NS, Owner::Unmatched("attacker"), ""),
        (att, server, s + 8 * TAIL_NS, attack, "still running"),
        ("198.51.100.7", server, s + 8 * TAIL_NS, attack, ""),
        (server, att, s + 8 * TAIL_NS, attack, "reply"),
        (client, server, s + 8 * TAIL_NS, unmatched, "benign traffic during an attack is not the attack's"),
        (client, server, s - TAIL_NS, unmatched, ""),
    ];
    for (src, dst, t, owner, why) in cases {
        assert_eq!(a(src, dst, t), owner, "{src} -> {dst} at {t}: {why}");
    }
    assert_eq!(
        attribute(&plan, &o, att.parse().ok(), server.parse().ok(), None),
        Owner::Unmatched("attacker")
    );
}

#[test]
fn eve_timestamps_parse_to_unix_time() {
    assert_eq!(
        eve_unix_ns("1970-01-01T00:00:01.5+0000"),
        Some(1_500_000_000)
    );
    // 2026-11-22 06:40:44 UTC = 1795329644.
    let t = eve_unix_ns("2026-11-22T06:40:44.000000+0000").unwrap();
    assert_eq!(t / 1_000_000_000, 1_795_329_644);
    let east = eve_unix_ns("2026-11-22T07:40:44.000000+0100").unwrap();
    assert_eq!(east, t);
    assert_eq!(eve_unix_ns("garbage"), None);
}
