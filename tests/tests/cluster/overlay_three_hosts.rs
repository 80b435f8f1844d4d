//! Three hosts, two overlay networks: every pair on a network talks
//! whichever hosts they are on, networks stay apart across hosts, a
//! same-host pair never touches the underlay, and a host whose netd dies
//! leaves everyone's maps when its lease ends and comes back with it.

use std::time::{Duration, Instant};

use netd_tests::{
    cluster::{cluster, eventually, Host},
    netns::NetNs,
    process::metric,
    traffic::{ping, tcp, PingUnderway},
};

struct Member {
    name: &'static str,
    host: usize,
    sandbox: NetNs,
    ip: String,
}

fn member(hosts: &[Host], name: &'static str, network: &str, host: usize) -> Member {
    let sandbox = NetNs::new("ndS3");
    let ip = hosts[host].endpoint(name, network, &sandbox);
    Member {
        name,
        host,
        sandbox,
        ip,
    }
}

fn uplink_tx_packets(h: &Host) -> u64 {
    let out =
        h.ns.exec("cat", &["/sys/class/net/uplink0/statistics/tx_packets"]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("tx_packets")
}

fn isolation_drops(h: &Host) -> u64 {
    let scrape = h.netd.scrape(&h.ns).expect("metrics");
    metric(
        &scrape,
        "netd_drops_total{hook=\"tc_endpoint\",reason=\"isolation\"}",
    )
    .unwrap_or(0)
}

/// Entries of NETD_ENDPOINTS on `h`, from `netd status`.
fn endpoint_entries(h: &Host) -> u64 {
    h.netd.map_entries("NETD_ENDPOINTS")
}

#[test]
fn two_overlay_networks_over_three_hosts() {
    let (_underlay, _etcd, mut hosts) = cluster(3, |_| {
        vec![
            "--uplink=uplink0".into(),
            "--host-lease-ttl=2".into(),
            format!("--host-grace={GRACE_SECS}"),
        ]
    });
    for (name, subnet) in [("o1", "10.93.0.0/24"), ("o2", "10.94.0.0/24")] {
        hosts[0]
            .netd
            .ok(&["network", "create", name, "--overlay", "--subnet", subnet]);
    }
    let o1 = [
        member(&hosts, "a0", "o1", 0),
        member(&hosts, "a0b", "o1", 0),
        member(&hosts, "a1", "o1", 1),
        member(&hosts, "a2", "o1", 2),
    ];
    let o2 = [
        member(&hosts, "b0", "o2", 0),
        member(&hosts, "b1", "o2", 1),
        member(&hosts, "b2", "o2", 2),
    ];

    // Every pair of a network, both ways, whatever hosts they are on.
    for net in [&o1[..], &o2[..]] {
        for (i, from) in net.iter().enumerate() {
            for to in net.iter().filter(|to| to.name != from.name) {
                eventually(&format!("{} -> {}", from.name, to.name), || {
                    ping(&from.sandbox, &to.ip, 1)
                });
            }
            for to in &net[i + 1..] {
                assert!(
                    tcp(&from.sandbox, &to.sandbox, &to.ip, 64 << 10),
                    "TCP {} -> {}",
                    from.name,
                    to.name
                );
            }
        }
    }

    // Across networks: dropped on the sender's host and counted there.
    for (from, to) in [
        (&o1[0], &o2[1]),
        (&o1[2], &o2[2]),
        (&o1[3], &o2[0]),
        (&o2[0], &o1[0]),
    ] {
        let sender = &hosts[from.host];
        let before = isolation_drops(sender);
        assert!(
            !ping(&from.sandbox, &to.ip, 2),
            "{} (o1/o2) reached {} on the other network",
            from.name,
            to.name
        );
        let dropped = isolation_drops(sender) - before;
        assert!(
            dropped >= 2,
            "{} -> {}: {dropped} isolation drops counted on host-{}",
            from.name,
            to.name,
            from.host
        );
    }

    // A same-host pair goes the local path: 50 pings each way add almost
    // nothing to the uplink (etcd's keepalives do a few).
    let tx = uplink_tx_packets(&hosts[0]);
    let out = o1[0]
        .sandbox
        .exec("ping", &["-c", "50", "-i", "0.01", "-q", &o1[1].ip]);
    assert!(out.status.success(), "a0 -> a0b");
    let sent = uplink_tx_packets(&hosts[0]) - tx;
    assert!(
        sent < 25,
        "{sent} packets left host-0's uplink for 100 same-host ones"
    );

    // An endpoint created on host-0 is reached from host-2 in bounded time.
    let late = member(&hosts, "a0late", "o1", 0);
    let took = eventually("a0late reachable from host-2", || {
        ping(&o1[3].sandbox, &late.ip, 1)
    });
    eprintln!("an endpoint on host-0 answered host-2 {took:?} after it was created");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // host-2's netd is away for longer than its lease (an upgrade, a crash
    // and restart) but less than the grace period: its pinned datapath goes
    // on forwarding, the others keep its entries, and no ping is lost.
    let full = endpoint_entries(&hosts[0]);
    let traffic = PingUnderway::start(&o1[0].sandbox, &o1[3].ip, 400);
    hosts[2].netd.kill();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        endpoint_entries(&hosts[0]),
        full,
        "host-2 left within its grace"
    );
    let Host { ns, netd, .. } = &mut hosts[2];
    netd.restart(ns);
    let (sent, received) = traffic.finish();
    assert_eq!(
        received, sent,
        "a0 -> a2 lost pings while host-2's netd was away 3 s"
    );

    // Away for good: when its lease and grace are over, the others drop its
    // endpoints (a2 and b2) from their maps; its own datapath keeps its pins.
    hosts[2].netd.kill();
    let t = Instant::now();
    eventually("host-2's endpoints leaving host-0's map", || {
        endpoint_entries(&hosts[0]) == full - 2
    });
    let gone = t.elapsed();
    eprintln!(
        "host-2 left host-0's maps {gone:?} after its netd died (lease 2 s, grace {GRACE_SECS} s)"
    );
    assert!(
        gone >= Duration::from_secs(GRACE_SECS),
        "{gone:?}: before its grace was over"
    );
    eventually("host-2's endpoints leaving host-1's map", || {
        endpoint_entries(&hosts[1]) == full - 2
    });
    assert!(!ping(&o1[0].sandbox, &o1[3].ip, 1), "a2 still reached");
    assert!(ping(&o1[0].sandbox, &o1[2].ip, 1), "a0 -> a1 broken");

    // Back: it registers again, everyone resyncs, and traffic returns.
    let Host { ns, netd, .. } = &mut hosts[2];
    netd.restart(ns);
    let t = Instant::now();
    eventually("a0 -> a2 again", || ping(&o1[0].sandbox, &o1[3].ip, 1));
    eventually("b1 -> b2 again", || ping(&o2[1].sandbox, &o2[2].ip, 1));
    eprintln!(
        "traffic to host-2 returned {:?} after its netd restarted",
        t.elapsed()
    );
    assert!(ping(&o1[3].sandbox, &late.ip, 2), "a2 -> a0late");
    assert!(
        tcp(&o2[2].sandbox, &o2[0].sandbox, &o2[0].ip, 64 << 10),
        "TCP b2 -> b0"
    );

    // A planned exit: host-2's netd stops, its endpoints go, and `host rm`
    // takes it out of every map at once, with no grace.
    let (ok, _, err) = hosts[0].netd.cli(&["host", "rm", "host-2"]);
    assert!(!ok && err.contains("is running: stop it first"), "{err}");
    hosts[2].netd.stop();
    // A clean stop ends its registration at once, not when the lease runs out.
    assert!(
        hosts[0]
            .netd
            .ok(&["host", "ls"])
            .lines()
            .any(|l| l.starts_with("host-2") && l.ends_with("down")),
        "host-2 still up right after its netd stopped"
    );
    let (ok, _, err) = hosts[0].netd.cli(&["host", "rm", "host-2"]);
    assert!(!ok && err.contains("still has endpoints: a2, b2"), "{err}");
    hosts[0].netd.ok(&["endpoint", "rm", "a2"]);
    hosts[0].netd.ok(&["endpoint", "rm", "b2"]);
    assert_eq!(hosts[1].netd.map_entries("NETD_HOSTS"), 2);
    hosts[0].netd.ok(&["host", "leave", "host-2"]);
    let t = Instant::now();
    eventually("host-2 leaving host-1's NETD_HOSTS", || {
        hosts[1].netd.map_entries("NETD_HOSTS") == 1
    });
    assert!(
        t.elapsed() < Duration::from_secs(GRACE_SECS),
        "{:?}",
        t.elapsed()
    );
    assert!(!hosts[1].netd.ok(&["host", "ls"]).contains("host-2"));
}

const GRACE_SECS: u64 = 6;
