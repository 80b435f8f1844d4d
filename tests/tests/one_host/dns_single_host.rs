//! netd's DNS on one host, asked from sandboxes with busybox nslookup (and
//! raw queries where nslookup cannot show the detail): services, tasks,
//! endpoint names, scope by network, forwarding to an upstream resolver of
//! the test's own, DNS errors for bad queries, TCP, and a kill -9.

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use hickory_proto::op::ResponseCode;
use netd_tests::{
    cluster::eventually,
    dns::{addresses, ask_tcp, ask_udp, nslookup, query, Upstream},
    fixture::TempPins,
    netns::{veth_between, NetNs},
    process::Netd,
    traffic::ping,
};

const UPSTREAM: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const N1_GATEWAY: &str = "10.31.0.1";
const N2_GATEWAY: &str = "10.32.0.1";

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("an address")
}

#[test]
fn sandboxes_resolve_their_networks_names_and_the_rest_upstream() {
    let rules_before = netd_tests::firewall();
    let host = NetNs::new("ndH");
    let upstream_ns = NetNs::new("ndUp");
    veth_between(
        &host,
        "up0",
        "10.98.0.1/24",
        &upstream_ns,
        "up1",
        "10.98.0.2/24",
    );
    let upstream = Upstream::start(&upstream_ns, UPSTREAM, &[("outside.test", OUTSIDE)]);
    let pins = TempPins::new();
    let mut netd = Netd::start(
        &host,
        pins.layout.root(),
        netd_tests::free_port(),
        &["--dns-upstream", "10.98.0.2"],
    );
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "n1", "--subnet", "10.31.0.0/24"]);
    netd.ok(&["network", "create", "n2", "--subnet", "10.32.0.0/24"]);
    let client = NetNs::new("ndSc");
    let web0 = NetNs::new("ndSw");
    let web1 = NetNs::new("ndSw");
    let both = NetNs::new("ndSb");
    let db = NetNs::new("ndSd");
    netd.endpoint("client", "n1", &client, &[]);
    let web0_ip = ip(&netd.endpoint("web0", "n1", &web0, &["--label", "app=web"]));
    let web1_ip = ip(&netd.endpoint("web1", "n1", &web1, &["--label", "app=web"]));
    netd.endpoint("both-a", "n1", &both, &[]);
    netd.endpoint("both-b", "n2", &both, &["--ifname", "eth1"]);
    let db_ip = ip(&netd.endpoint("db", "n2", &db, &[]));
    let created = netd.ok(&[
        "service",
        "create",
        "web",
        "--network",
        "n1",
        "--selector",
        "app=web",
        "--port",
        "80:8080/tcp",
    ]);
    let vip = ip(created.split_whitespace().nth(1).expect("VIP"));

    // The gateway answers, and its address is no stranger to ping.
    assert!(ping(&client, N1_GATEWAY, 2), "the gateway answers ping");
    assert_eq!(nslookup(&client, "web", N1_GATEWAY), Some(vec![vip]));
    assert_eq!(
        nslookup(&client, "tasks.web", N1_GATEWAY),
        Some(vec![web0_ip, web1_ip])
    );
    assert_eq!(nslookup(&client, "web1", N1_GATEWAY), Some(vec![web1_ip]));
    // db is on n2, which the client is not on: not netd's to answer, and
    // the upstream does not know it.
    let asked = upstream.asked.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(nslookup(&client, "db", N1_GATEWAY), None);
    assert!(upstream.asked.load(std::sync::atomic::Ordering::SeqCst) > asked);
    // A sandbox on both networks resolves both, whichever gateway it asks.
    assert_eq!(nslookup(&both, "db", N1_GATEWAY), Some(vec![db_ip]));
    assert_eq!(nslookup(&both, "web", N2_GATEWAY), Some(vec![vip]));
    // The rest is the upstream's.
    assert_eq!(
        nslookup(&client, "outside.test", N1_GATEWAY),
        Some(vec![OUTSIDE])
    );

    // Answers: short-lived, authoritative, in shuffled order, over UDP and TCP.
    let gw = ip(N1_GATEWAY);
    let mut orders = BTreeSet::new();
    for id in 0..30 {
        let m = ask_udp(&client, gw, query("tasks.web.", id)).expect("an answer");
        assert!(m.authoritative() && m.answers().iter().all(|r| r.ttl() <= 5));
        orders.insert(addresses(&m));
    }
    assert_eq!(orders.len(), 2, "both orders of two backends: {orders:?}");
    let m = ask_tcp(&client, gw, query("web.", 99)).expect("a TCP answer");
    assert_eq!(addresses(&m), vec![vip]);

    // Bad queries get DNS errors and break nothing.
    let mut garbage = vec![0xab, 0xcd];
    garbage.extend([0x5a; 40]);
    let m = ask_udp(&client, gw, garbage).expect("an error answer");
    assert_eq!((m.id(), m.response_code()), (0xabcd, ResponseCode::FormErr));
    let mut oversized = vec![0x11, 0x22];
    oversized.extend(vec![0xee; 3000]);
    let m = ask_udp(&client, gw, oversized).expect("an error answer");
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    assert_eq!(nslookup(&client, "web", N1_GATEWAY), Some(vec![vip]));

    // A backend gone is gone from tasks at once (TTL 5 s bounds caches).
    netd.ok(&["endpoint", "rm", "web1"]);
    let took = eventually("web1 leaves tasks.web", || {
        nslookup(&client, "tasks.web", N1_GATEWAY) == Some(vec![web0_ip])
    });
    assert!(took < Duration::from_secs(5), "{took:?}");

    // kill -9: DNS comes back with netd, with the same answers.
    netd.kill();
    netd.restart(&host);
    eventually("DNS answers after a restart", || {
        nslookup(&client, "web", N1_GATEWAY) == Some(vec![vip])
    });
    assert_eq!(
        netd_tests::firewall(),
        rules_before,
        "iptables or nft rules were made"
    );
}
