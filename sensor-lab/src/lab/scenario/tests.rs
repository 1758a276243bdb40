use super::*;

fn outcome(label: Label, rule: SourceRule, start: u64, end: u64) -> ScenarioOutcome {
    ScenarioOutcome {
        first_packet_mono_ns: Some(start),
        end_mono_ns: end,
        ..ScenarioOutcome::started("x", label, Origin::Attacker, rule, start)
    }
}

#[test]
fn names_are_unique_and_tools_have_packages() {
    let c = catalogue();
    for (i, a) in c.iter().enumerate() {
        assert!(c[i + 1..].iter().all(|b| b.name != a.name), "{}", a.name);
        for t in a.tools {
            assert_ne!(super::super::package_of(t), "?", "{t}");
        }
        assert!(a.max_seconds > 0 && a.max_seconds <= 60);
    }
    for l in [
        Label::Benign,
        Label::Flood,
        Label::Scan,
        Label::Bruteforce,
        Label::Anomaly,
    ] {
        assert!(c.iter().any(|s| s.label == l), "{l:?}");
    }
}

#[test]
fn rows_are_labelled_by_source_and_window() {
    let plan = AddressPlan::default();
    let att: IpAddr = plan.attacker.into();
    let client: IpAddr = plan.clients[0].into();
    let server: IpAddr = plan.server.into();
    let spoof: IpAddr = "203.0.113.9".parse().unwrap();
    let o = vec![
        outcome(Label::Scan, SourceRule::Addresses(vec![att]), 100, 200),
        outcome(
            Label::Flood,
            SourceRule::AddressesAndSpoofed(vec![att]),
            300,
            400,
        ),
    ];
    let l = |src, ts| label_row(&plan, &o, 10, src, ts);
    assert_eq!(l(att, 150), RowLabel::Attack(0));
    assert_eq!(l(att, 205), RowLabel::Attack(0), "tail");
    assert_eq!(l(att, 250), RowLabel::Unattributed);
    assert_eq!(l(server, 150), RowLabel::Benign, "replies are benign");
    assert_eq!(l(client, 150), RowLabel::Benign);
    assert_eq!(l(spoof, 150), RowLabel::Unattributed, "scan does not spoof");
    assert_eq!(l(spoof, 350), RowLabel::Attack(1));
    assert_eq!(l(att, 350), RowLabel::Attack(1));
    assert_eq!(l(client, 350), RowLabel::Benign);
    // A lab host whose interface is coming up sends IGMP from 0.0.0.0:
    // its own traffic, not a spoofed source, even in a spoofing window.
    let unaddressed = IpAddr::from([0u8, 0, 0, 0]);
    assert_eq!(l(unaddressed, 150), RowLabel::Benign);
    assert_eq!(l(unaddressed, 350), RowLabel::Benign);
}
