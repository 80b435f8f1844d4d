//! Policy on crafted packets through the endpoint program: allow and deny
//! by label, by CIDR, by port range and by ICMP type; the rules' counters
//! and the `policy_denied` drops; a reply let through by the policy's
//! conntrack; an audit rule that drops nothing; the verdict events a
//! monitor gets. The policy maps are
//! written from a model by `compile_policies`, as the reconciler does.
//!
//! BPF_PROG_TEST_RUN runs TC programs on the loopback device, so the
//! sending endpoint is the one at ifindex 1 ("here").

use std::collections::BTreeMap;

use etherparse::PacketBuilder;
use netd::dataplane::conntrack::{monotonic_ns, ConntrackConfig};
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    events::{EventKind, MonitorConfig},
    policy::{rule_id, RuleHits, RULE_DEFAULT_DENY},
    program_names::TC_ENDPOINT,
};
use netd_tests::{
    fixture::{assert_counted, Fixture, Slot},
    policy_fixture::{
        fixture, mac, model, place, policy, segment, tcp, write_policies, API_IP, HOST_MAC, WEB_IP,
    },
};

const TC_ACT_OK: i64 = 0;
const TC_ACT_SHOT: i64 = 2;
const TC_ACT_REDIRECT: i64 = 7;
const HOOK: Hook = Hook::TcEndpoint;

fn icmp(src: [u8; 4], dst: [u8; 4], kind: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac(src), HOST_MAC)
        .ipv4(src, dst, 64)
        .icmpv4_raw(kind, 0, [0, 1, 0, 1]);
    let mut out = Vec::new();
    b.write(&mut out, &[]).expect("packet");
    out
}

/// Runs `packet` from ifindex 1; the verdict, checking the counters moved
/// for exactly that verdict (and the drop reason).
fn send(f: &mut Fixture, packet: &[u8], expect: i64, what: &str) {
    let before = f.snapshot();
    let run = f.run_tc(TC_ENDPOINT, packet).expect("test run");
    assert_eq!(run.verdict, expect, "{what}: verdict");
    let slots: Vec<Slot> = match expect {
        TC_ACT_SHOT => vec![
            Slot::Verdict(HOOK, Verdict::Drop),
            Slot::Drop(HOOK, DropReason::PolicyDenied),
        ],
        TC_ACT_REDIRECT => vec![Slot::Verdict(HOOK, Verdict::Redirect)],
        _ => vec![Slot::Verdict(HOOK, Verdict::Pass)],
    };
    assert_counted(&before, &f.snapshot(), &slots, packet.len() as u64, what);
    if expect != TC_ACT_SHOT {
        // Delivery addresses the frame to the peer's MAC; nothing else changes.
        assert_eq!(
            run.output[6..],
            packet[6..],
            "{what}: policy rewrites nothing"
        );
    }
}

fn hits(f: &mut Fixture) -> BTreeMap<u32, RuleHits> {
    f.datapath.take_policy_state().expect("policy maps").hits()
}

#[test]
fn by_label_and_port_only_the_allowed_pair_passes_and_the_rest_is_counted() {
    let (networks, _) = model();
    let api = policy(
        &networks,
        1,
        "api",
        Some(&["allow from tier=web tcp/8080"]),
        None,
    );
    let mut f = fixture(&[api]);
    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40000, 8080, false),
        TC_ACT_REDIRECT,
        "web→api:8080",
    );
    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40001, 8081, false),
        TC_ACT_SHOT,
        "web→api:8081",
    );
    let h = hits(&mut f);
    let rule = h.get(&rule_id(1, 0)).expect("the rule counted");
    assert_eq!((rule.allowed_packets, rule.denied_packets), (1, 0));
    assert_eq!(h.len(), 1, "the default deny has no rule: {h:?}");
}

#[test]
fn a_deny_rule_wins_over_an_allow_and_its_counter_moves() {
    let (networks, _) = model();
    let api = policy(
        &networks,
        2,
        "api",
        Some(&["allow from tier=web tcp", "deny from tier=web tcp/22"]),
        None,
    );
    let mut f = fixture(&[api]);
    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40000, 22, false),
        TC_ACT_SHOT,
        "ssh",
    );
    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40001, 443, false),
        TC_ACT_REDIRECT,
        "https",
    );
    let h = hits(&mut f);
    assert_eq!(h[&rule_id(2, 1)].denied_packets, 1);
    assert!(h[&rule_id(2, 1)].denied_bytes > 0);
    assert_eq!(h[&rule_id(2, 0)].allowed_packets, 1);
}

#[test]
fn a_port_range_allows_its_ends_and_nothing_past_them() {
    let (networks, _) = model();
    let api = policy(&networks, 3, "api", Some(&["allow tcp/8000-8100"]), None);
    let mut f = fixture(&[api]);
    for (port, verdict) in [
        (7999, TC_ACT_SHOT),
        (8000, TC_ACT_REDIRECT),
        (8100, TC_ACT_REDIRECT),
        (8101, TC_ACT_SHOT),
    ] {
        send(
            &mut f,
            &tcp(WEB_IP, API_IP, 41000 + port, port, false),
            verdict,
            &format!("port {port}"),
        );
    }
}

#[test]
fn egress_by_cidr_with_an_exception() {
    let (networks, _) = model();
    let web = policy(
        &networks,
        4,
        "web",
        None,
        Some(&["allow to cidr:192.0.2.0/24,except:192.0.2.128/25 tcp/443"]),
    );
    let mut f = fixture(&[web]);
    // Out to the host (and beyond): passes, or is dropped.
    send(
        &mut f,
        &tcp(WEB_IP, [192, 0, 2, 10], 40000, 443, false),
        TC_ACT_OK,
        "in the CIDR",
    );
    send(
        &mut f,
        &tcp(WEB_IP, [192, 0, 2, 200], 40001, 443, false),
        TC_ACT_SHOT,
        "in the exception",
    );
    send(
        &mut f,
        &tcp(WEB_IP, [198, 51, 100, 1], 40002, 443, false),
        TC_ACT_SHOT,
        "outside",
    );
    // web's ingress is not governed, api has no policy: open.
    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40003, 80, false),
        TC_ACT_SHOT,
        "egress to api not allowed",
    );
}

#[test]
fn by_icmp_type_echo_passes_and_timestamp_does_not() {
    let (networks, _) = model();
    let api = policy(
        &networks,
        5,
        "api",
        Some(&["allow from tier=web icmp/8"]),
        None,
    );
    let mut f = fixture(&[api]);
    send(
        &mut f,
        &icmp(WEB_IP, API_IP, 8),
        TC_ACT_REDIRECT,
        "echo request",
    );
    send(
        &mut f,
        &icmp(WEB_IP, API_IP, 13),
        TC_ACT_SHOT,
        "timestamp request",
    );
}

#[test]
fn a_reply_passes_on_conntrack_and_a_new_flow_back_does_not() {
    let (networks, _) = model();
    // api: ingress only from web on 8080, egress nowhere.
    let api = policy(
        &networks,
        6,
        "api",
        Some(&["allow from tier=web tcp/8080"]),
        Some(&[]),
    );
    let mut f = fixture(&[api]);
    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40000, 8080, false),
        TC_ACT_REDIRECT,
        "SYN",
    );
    place(&mut f, API_IP);
    send(
        &mut f,
        &tcp(API_IP, WEB_IP, 8080, 40000, true),
        TC_ACT_REDIRECT,
        "SYN-ACK",
    );
    send(
        &mut f,
        &tcp(API_IP, WEB_IP, 8080, 40001, false),
        TC_ACT_SHOT,
        "api opening to web",
    );
}

#[test]
fn an_audit_rule_counts_what_it_would_drop_and_drops_nothing() {
    let (networks, _) = model();
    let api = policy(
        &networks,
        7,
        "api",
        Some(&["allow from tier=web tcp", "log from tier=web tcp/9000"]),
        None,
    );
    let mut f = fixture(&[api]);
    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40000, 9000, false),
        TC_ACT_REDIRECT,
        "audited",
    );
    let h = hits(&mut f);
    let audit = h[&rule_id(7, 1)];
    assert_eq!((audit.audited_packets, audit.denied_packets), (1, 0));
}

#[test]
fn an_endpoint_no_policy_selects_stays_open() {
    let (networks, _) = model();
    // Only web is selected (egress to anything): api's ingress is open.
    let web = policy(&networks, 8, "web", None, Some(&["allow"]));
    let mut f = fixture(&[web]);
    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40000, 1234, false),
        TC_ACT_REDIRECT,
        "web→api",
    );
    place(&mut f, API_IP);
    send(
        &mut f,
        &tcp(API_IP, WEB_IP, 5555, 80, false),
        TC_ACT_REDIRECT,
        "api→web",
    );
}

#[test]
fn an_opening_syn_is_always_judged_and_a_fin_puts_its_flow_on_the_closing_timeout() {
    let (networks, _) = model();
    let rule = |action: &str| {
        let text = format!("{action} from tier=web tcp/8080");
        policy(&networks, 1, "api", Some(&[text.as_str()]), None)
    };
    let mut f = fixture(&[rule("allow")]);
    for port in [40200, 40201] {
        let syn = tcp(WEB_IP, API_IP, port, 8080, false);
        send(&mut f, &syn, TC_ACT_REDIRECT, "web→api:8080 allowed");
    }
    place(&mut f, API_IP);
    for port in [40200, 40201] {
        let reply = tcp(API_IP, WEB_IP, 8080, port, true);
        send(&mut f, &reply, TC_ACT_REDIRECT, "api's SYN-ACK");
    }
    let fin = segment(API_IP, WEB_IP, 8080, 40200, true);
    send(&mut f, &fin, TC_ACT_REDIRECT, "api closes :40200");
    place(&mut f, WEB_IP);

    // The rule turns into a deny, as `policy rm` and a new policy would.
    write_policies(&mut f, &[rule("deny")]);
    let ack = segment(WEB_IP, API_IP, 40201, 8080, false);
    send(
        &mut f,
        &ack,
        TC_ACT_REDIRECT,
        "an established connection outlives its rule",
    );
    for (port, what) in [
        (40200, "a new connection on a closed one's tuple"),
        (40201, "a SYN on a live one's tuple"),
    ] {
        let syn = tcp(WEB_IP, API_IP, port, 8080, false);
        send(&mut f, &syn, TC_ACT_SHOT, what);
    }

    // The sweeper: past the closing timeout, the closed flow is gone and
    // the established one stays.
    let timeouts = ConntrackConfig::default();
    let later = monotonic_ns() + (timeouts.tcp_closing + 1) * 1_000_000_000;
    assert!(timeouts.tcp_closing + 1 < timeouts.tcp_established);
    let mut state = f.datapath.take_policy_state().expect("policy maps");
    assert_eq!(state.sweep(&timeouts, later), (1, 1), "(expired, live)");
}

/// Emission of `kinds`, within a budget no test reaches.
fn monitoring(events: &mut netd::dataplane::events::Events, kinds: &[EventKind]) {
    events
        .set(MonitorConfig {
            kinds: kinds.iter().fold(0, |bits, k| bits | k.bit()),
            rate: 1_000_000,
            burst: 10_000,
            _pad: 0,
        })
        .expect("monitor on");
}

/// The events emitted so far: (kind, reason, allowed, rule) of each.
fn verdicts(events: &mut netd::dataplane::events::Events) -> Vec<(u8, u8, u8, u32)> {
    std::iter::from_fn(|| events.next_event())
        .map(|e| {
            (
                e.header.kind,
                e.header.reason,
                e.header.allowed,
                e.header.object,
            )
        })
        .collect()
}

#[test]
fn a_new_flows_verdict_is_an_event_naming_its_rule_and_a_denial_is_a_drop_that_names_it() {
    let (networks, _) = model();
    let api = policy(
        &networks,
        4,
        "api",
        Some(&["allow from tier=web tcp/8080", "deny from tier=web tcp/22"]),
        None,
    );
    let mut f = fixture(&[api]);
    let mut events = f.datapath.take_events().expect("the monitor's maps");
    monitoring(&mut events, &[EventKind::Drop, EventKind::Policy]);
    let (policy, drop) = (EventKind::Policy as u8, EventKind::Drop as u8);
    let denied = DropReason::PolicyDenied as u8;

    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40000, 8080, false),
        TC_ACT_REDIRECT,
        "allowed",
    );
    assert_eq!(verdicts(&mut events), [(policy, 0, 1, rule_id(4, 0))]);
    // The flow's next segment passes on the policy's conntrack: no verdict.
    send(
        &mut f,
        &segment(WEB_IP, API_IP, 40000, 8080, false),
        TC_ACT_REDIRECT,
        "the next segment",
    );
    assert_eq!(verdicts(&mut events), []);

    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40001, 22, false),
        TC_ACT_SHOT,
        "by the deny rule",
    );
    assert_eq!(verdicts(&mut events), [(drop, denied, 0, rule_id(4, 1))]);
    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40002, 9999, false),
        TC_ACT_SHOT,
        "by no rule",
    );
    assert_eq!(
        verdicts(&mut events),
        [(drop, denied, 0, RULE_DEFAULT_DENY)]
    );

    // A monitor of verdicts only: the denial is a verdict, still naming
    // its rule (netd monitor shows both as a policy_denied drop).
    monitoring(&mut events, &[EventKind::Policy]);
    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40003, 22, false),
        TC_ACT_SHOT,
        "verdicts only",
    );
    assert_eq!(verdicts(&mut events), [(policy, 0, 0, rule_id(4, 1))]);
    // And of drops only: the allowed flow is no event.
    monitoring(&mut events, &[EventKind::Drop]);
    send(
        &mut f,
        &tcp(WEB_IP, API_IP, 40004, 8080, false),
        TC_ACT_REDIRECT,
        "drops only",
    );
    assert_eq!(verdicts(&mut events), []);
}
