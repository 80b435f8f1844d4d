//! Each drop reason a sandbox can cause, provoked through real namespaces
//! and reported by `netd monitor --json` with the fields that say why:
//! the endpoint and network it came from, its flow, the policy rule that
//! denied it, the service that had no backend. Verdicts and translations
//! of new flows likewise.

use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    time::Duration,
};

use netd_tests::{
    fixture::TempPins,
    monitor::Monitor,
    netns::{send_raw_frame, within, NetNs},
    process::Netd,
    traffic::ping,
};
use serde_json::Value;

/// The first event of endpoint a that `netd monitor --json ARGS --count 1`
/// prints while `provoke` runs again and again (the sandboxes' own IPv6
/// chatter is dropped meanwhile: filters keep it out).
fn first_event(netd: &Netd, args: &[&str], provoke: impl Fn()) -> Value {
    let mut all = vec!["--json", "--count", "1", "--endpoint", "a"];
    all.extend_from_slice(args);
    let monitor = Monitor::start(netd, &all);
    let lines = monitor.collect(1, provoke);
    assert!(monitor.wait().success(), "--count 1 stops it");
    serde_json::from_str(&lines[0]).expect("a JSON line")
}

fn connect(from: &NetNs, to: &str, port: u16) {
    let to: Ipv4Addr = to.parse().expect("address");
    within(from, || {
        let _ = TcpStream::connect_timeout(
            &SocketAddrV4::new(to, port).into(),
            Duration::from_millis(300),
        );
    });
}

/// A frame from `mac`/`ip` (the sandbox's own) to the gateway's MAC.
fn frame_from(mac: [u8; 6], ip: [u8; 4], to: [u8; 4]) -> Vec<u8> {
    testpkt::ipv4_udp_between(mac, ip, [2, 0, 0, 0, 0, 1], to)
}

#[test]
fn every_drop_reason_a_sandbox_can_cause_is_reported_with_what_caused_it() {
    let host = NetNs::new("ndHr");
    let pins = TempPins::new();
    let mut netd = Netd::start(&host, pins.layout.root(), netd_tests::free_port(), &[]);
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "n1", "--subnet", "10.43.0.0/24"]);
    netd.ok(&["network", "create", "n2", "--subnet", "10.44.0.0/24"]);
    let (a, b, c) = (NetNs::new("ndRa"), NetNs::new("ndRb"), NetNs::new("ndRc"));
    let a_ip = netd.endpoint("a", "n1", &a, &[]);
    let b_ip = netd.endpoint("b", "n1", &b, &["--label", "app=api"]);
    let c_ip = netd.endpoint("c", "n2", &c, &[]);
    // a's own IPv6 chatter (MLD, router solicitations) would be dropped
    // as `ipv6` too: only the test's frame is to be.
    let quiet = a.exec("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    assert!(quiet.status.success(), "{quiet:?}");
    let a_addr: Ipv4Addr = a_ip.parse().expect("ip");
    let a_mac = netd::model::Mac::for_ipv4(a_addr).0;
    let a_ref = &a;
    let raw = move |frame: Vec<u8>| move || within(a_ref, || send_raw_frame("eth0", &frame));
    let from_a = |event: &Value| {
        assert_eq!(event["type"], "drop", "{event}");
        assert_eq!(event["hook"], "tc_endpoint", "{event}");
        assert_eq!(
            (&event["endpoint"], &event["network"]),
            (&Value::from("a"), &Value::from("n1")),
            "{event}"
        );
    };

    // Isolation, with the flow.
    let e = first_event(&netd, &["--reason", "isolation"], || {
        ping(&a, &c_ip, 1);
    });
    from_a(&e);
    assert_eq!(
        (&e["src"], &e["dst"]),
        (&Value::from(a_ip.as_str()), &Value::from(c_ip.as_str()))
    );
    assert_eq!(e["proto"], "icmp");

    // What the parser refuses: a cut TCP header, an unknown EtherType, a
    // first fragment too short for its ports, and IPv6.
    let mut cut = testpkt::ipv4_tcp();
    cut.truncate(40);
    for (reason, frame) in [
        ("malformed", cut),
        (
            "unknown_l3",
            testpkt::with_ethertype(testpkt::ipv4_udp(), 0x88b5),
        ),
        ("fragment", testpkt::ipv4_tiny_first_fragment(8)),
        ("ipv6", testpkt::ipv6_udp()),
    ] {
        let e = first_event(&netd, &["--reason", reason], raw(frame.clone()));
        from_a(&e);
        assert_eq!(e["reason"], reason);
        assert_eq!(e["len"], frame.len(), "{reason}: {e}");
    }

    // Spoofing: a source address that is not a's.
    let e = first_event(
        &netd,
        &["--reason", "spoofed"],
        raw(frame_from(a_mac, [10, 43, 0, 99], [10, 43, 0, 1])),
    );
    from_a(&e);
    assert_eq!(e["src"], "10.43.0.99");

    // Services: one with a backend (b), one with none; a new flow's
    // translation names the service and the backend, a refusal the
    // service, a port the service lacks is a drop of its own.
    let vip = |out: String| out.split_whitespace().nth(1).expect("VIP").to_string();
    let api = vip(netd.ok(&[
        "service",
        "create",
        "api",
        "--network",
        "n1",
        "--port",
        "80:8080/tcp",
        "--selector",
        "app=api",
    ]));
    let empty = vip(netd.ok(&[
        "service",
        "create",
        "empty",
        "--network",
        "n1",
        "--port",
        "80/tcp",
        "--selector",
        "app=none",
    ]));
    let e = first_event(
        &netd,
        &["--type", "translation", "--service", "api"],
        || connect(&a, &api, 80),
    );
    assert_eq!(e["type"], "translation");
    assert_eq!(
        (&e["service"], &e["backend"]),
        (&Value::from("api"), &Value::from(b_ip.as_str()))
    );
    assert_eq!(
        (&e["dst"], &e["dport"]),
        (&Value::from(api.as_str()), &Value::from(80)),
        "the packet as a sent it"
    );
    let e = first_event(&netd, &["--reason", "no_backend"], || {
        connect(&a, &empty, 80)
    });
    from_a(&e);
    assert_eq!(e["service"], "empty");
    assert_eq!(
        (&e["dst"], &e["proto"]),
        (&Value::from(empty.as_str()), &Value::from("tcp"))
    );
    let e = first_event(&netd, &["--reason", "no_service_port"], || {
        connect(&a, &api, 81)
    });
    from_a(&e);
    assert_eq!(e["dport"], 81);

    // Policy: b takes TCP 8080 and nothing else, and refuses ICMP by a
    // rule of its own. A verdict names the rule either way.
    netd.ok(&[
        "policy",
        "create",
        "guard",
        "--select",
        "app=api",
        "--ingress",
        "allow tcp/8080",
        "--ingress",
        "deny icmp",
    ]);
    let e = first_event(&netd, &["--reason", "policy_denied"], || {
        ping(&a, &b_ip, 1);
    });
    from_a(&e);
    assert_eq!(
        (&e["verdict"], &e["rule"]),
        (&Value::from("denied"), &Value::from("guard ingress rule 2"))
    );
    let e = first_event(
        &netd,
        &[
            "--type",
            "policy",
            "--address",
            &b_ip,
            "--reason",
            "policy_denied",
        ],
        || connect(&a, &b_ip, 9999),
    );
    assert_eq!(e["rule"], "default deny", "{e}");
    let e = first_event(&netd, &["--type", "policy"], || connect(&a, &b_ip, 8080));
    assert_eq!(e["type"], "policy");
    assert_eq!(
        (&e["verdict"], &e["rule"]),
        (
            &Value::from("allowed"),
            &Value::from("guard ingress rule 1")
        )
    );
    assert_eq!(e["dport"], 8080);
    netd.stop();
}

/// VXLAN at a host's uplink: for no endpoint of that network here, it is
/// a `not_here` drop at XDP, which the monitor shows with the outer
/// packet; one for an endpoint here is delivered and counted received.
#[test]
fn vxlan_for_no_endpoint_here_is_reported_at_xdp_and_one_for_an_endpoint_is_counted() {
    use netd_tests::cluster::{cluster, UNDERLAY_PREFIX};
    let (_underlay, _etcd, hosts) = cluster(2, |_| vec!["--uplink=uplink0".into()]);
    hosts[0].netd.ok(&[
        "network",
        "create",
        "o1",
        "--overlay",
        "--subnet",
        "10.99.0.0/24",
    ]);
    let (s0, s1) = (NetNs::new("ndRx"), NetNs::new("ndRx"));
    let e0: Ipv4Addr = hosts[0].endpoint("e0", "o1", &s0).parse().expect("ip");
    let e0_mac = netd::model::Mac::for_ipv4(e0).0;
    let e1 = hosts[1].endpoint("e1", "o1", &s1);
    let inspect: Value =
        serde_json::from_str(&hosts[1].netd.ok(&["network", "inspect", "o1"])).expect("json");
    let vni = inspect["vni"].as_u64().expect("a VNI") as u32;
    let from: [u8; 4] = format!("{UNDERLAY_PREFIX}.1")
        .parse::<Ipv4Addr>()
        .expect("ip")
        .octets();
    let to: [u8; 4] = format!("{UNDERLAY_PREFIX}.2")
        .parse::<Ipv4Addr>()
        .expect("ip")
        .octets();
    let e1_ip: Ipv4Addr = e1.parse().expect("ip");
    let e1_mac = netd::model::Mac::for_ipv4(e1_ip).0;
    // From e0, on host 0: what host 0's own encapsulation would send.
    let inner =
        |dst: [u8; 4], mac: [u8; 6]| testpkt::ipv4_udp_between(e0_mac, e0.octets(), mac, dst);
    let send = |frame: Vec<u8>| {
        within(&hosts[0].ns, || send_raw_frame("uplink0", &frame));
    };

    let nobody = testpkt::vxlan(
        from,
        to,
        vni,
        0x08,
        &inner([10, 99, 0, 77], [2, 0, 0, 0, 0, 7]),
    );
    // An inner source that is no endpoint of the sending host: spoofed.
    let forged = testpkt::vxlan(
        from,
        to,
        vni,
        0x08,
        &testpkt::ipv4_udp_between(e0_mac, [10, 99, 0, 200], e1_mac, e1_ip.octets()),
    );
    let monitor = Monitor::start(
        &hosts[1].netd,
        &["--json", "--count", "1", "--reason", "spoofed"],
    );
    let lines = monitor.collect(1, || send(forged.clone()));
    assert!(monitor.wait().success());
    let e: Value = serde_json::from_str(&lines[0]).expect("json");
    let uplink = hosts[1].netd.uplink_counters("uplink0");
    assert_eq!(e["hook"], uplink, "{e}");
    assert_eq!(e["len"], forged.len());

    let monitor = Monitor::start(
        &hosts[1].netd,
        &["--json", "--count", "1", "--reason", "not_here"],
    );
    let lines = monitor.collect(1, || send(nobody.clone()));
    assert!(monitor.wait().success());
    let e: Value = serde_json::from_str(&lines[0]).expect("json");
    assert_eq!(
        (&e["type"], &e["hook"]),
        (&Value::from("drop"), &Value::from(uplink))
    );
    assert_eq!(
        (&e["src"], &e["dst"], &e["dport"]),
        (
            &Value::from(format!("{UNDERLAY_PREFIX}.1")),
            &Value::from(format!("{UNDERLAY_PREFIX}.2")),
            &Value::from(4789)
        ),
        "the packet as it came in: {e}"
    );
    assert_eq!(e["len"], nobody.len());

    // Into e1: delivered at XDP, counted as e1's.
    let received = || {
        let scrape = hosts[1].netd.scrape(&hosts[1].ns).expect("metrics");
        netd_tests::process::metric(
            &scrape,
            "netd_endpoint_packets_total{direction=\"received\",endpoint=\"e1\",network=\"o1\"}",
        )
        .unwrap_or(0)
    };
    let before = received();
    for _ in 0..5 {
        send(testpkt::vxlan(
            from,
            to,
            vni,
            0x08,
            &inner(e1_ip.octets(), e1_mac),
        ));
    }
    netd_tests::cluster::eventually("e1's received count", || received() >= before + 5);
}
