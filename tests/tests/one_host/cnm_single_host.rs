//! The CNM on one host, end to end: a netd in a "host" namespace the test
//! creates, sandboxes as further namespaces, everything through the CLI.

use std::{process::Command, time::Duration};

use netd_tests::{
    fixture::TempPins,
    netns::{send_raw_frame, within, NetNs},
    process::{metric, Netd},
    traffic::{ping, tcp},
};

struct Host {
    ns: NetNs,
    netd: Netd,
    _pins: TempPins,
}

fn host() -> Host {
    host_with(&[])
}

fn host_with(extra: &[&str]) -> Host {
    let ns = NetNs::new("ndH");
    let pins = TempPins::new();
    let mut netd = Netd::start(&ns, pins.layout.root(), netd_tests::free_port(), extra);
    netd.wait_ready(&ns);
    Host {
        ns,
        netd,
        _pins: pins,
    }
}

impl Host {
    fn endpoint(&self, name: &str, network: &str, sandbox: &NetNs, extra: &[&str]) -> String {
        self.netd.endpoint(name, network, sandbox, extra)
    }

    fn scrape(&self) -> String {
        self.netd.scrape(&self.ns).expect("metrics")
    }

    fn drops(&self, reason: &str) -> u64 {
        metric(
            &self.scrape(),
            &format!("netd_drops_total{{hook=\"tc_endpoint\",reason=\"{reason}\"}}"),
        )
        .expect("drop counter")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Endpoint veths live in the host namespace and go with it; the
        // sandboxes are dropped by their own guards.
        let _ = self.netd.stop();
    }
}

#[test]
fn two_networks_three_sandboxes_each_talk_within_and_never_across() {
    let h = host();
    h.netd
        .ok(&["network", "create", "n1", "--subnet", "10.11.0.0/24"]);
    h.netd
        .ok(&["network", "create", "n2", "--subnet", "10.12.0.0/24"]);
    let a: Vec<NetNs> = (0..3).map(|_| NetNs::new("ndSa")).collect();
    let b: Vec<NetNs> = (0..3).map(|_| NetNs::new("ndSb")).collect();
    let a_ip: Vec<String> = a
        .iter()
        .enumerate()
        .map(|(i, s)| h.endpoint(&format!("a{i}"), "n1", s, &[]))
        .collect();
    let b_ip: Vec<String> = b
        .iter()
        .enumerate()
        .map(|(i, s)| h.endpoint(&format!("b{i}"), "n2", s, &[]))
        .collect();
    let both = NetNs::new("ndSab");
    let both_a = h.endpoint("both-a", "n1", &both, &[]);
    let both_b = h.endpoint("both-b", "n2", &both, &["--ifname", "eth1"]);

    for (sandboxes, ips) in [(&a, &a_ip), (&b, &b_ip)] {
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    assert!(
                        ping(&sandboxes[i], &ips[j], 2),
                        "ping {} -> {}",
                        ips[i],
                        ips[j]
                    );
                    assert!(
                        tcp(&sandboxes[i], &sandboxes[j], &ips[j], 256 << 10),
                        "tcp {} -> {}",
                        ips[i],
                        ips[j]
                    );
                }
            }
        }
    }

    let before = h.drops("isolation");
    for i in 0..3 {
        assert!(!ping(&a[i], &b_ip[i], 1), "a{i} reached n2");
        assert!(!ping(&b[i], &a_ip[i], 1), "b{i} reached n1");
    }
    let after = h.drops("isolation");
    assert!(
        after >= before + 6,
        "isolation drops moved by {}",
        after - before
    );

    // The sandbox on both networks reaches both, each through its own interface.
    assert!(
        ping(&both, &a_ip[0], 2) && tcp(&both, &a[0], &a_ip[0], 64 << 10),
        "both -> n1"
    );
    assert!(
        ping(&both, &b_ip[0], 2) && tcp(&both, &b[0], &b_ip[0], 64 << 10),
        "both -> n2"
    );
    assert!(
        ping(&a[1], &both_a, 2) && ping(&b[1], &both_b, 2),
        "n1 and n2 -> both"
    );
    assert!(!ping(&a[1], &both_b, 1), "n1 reached both's n2 address");
}

/// The log level is the daemon's alone. A per-packet log line in the
/// programs once took the service program past the verifier's stack
/// limit, but only at debug, so `netd run --log-level debug` did not start.
#[test]
fn at_the_most_verbose_log_level_netd_loads_and_forwards() {
    let h = host_with(&["--log-level", "trace"]);
    h.netd
        .ok(&["network", "create", "n1", "--subnet", "10.13.0.0/24"]);
    let a = NetNs::new("ndSa");
    let b = NetNs::new("ndSb");
    h.endpoint("a", "n1", &a, &[]);
    let b_ip = h.endpoint("b", "n1", &b, &[]);
    assert!(ping(&a, &b_ip, 2) && tcp(&a, &b, &b_ip, 64 << 10), "a -> b");
    assert!(
        h.netd.log().contains("TRACE"),
        "netd logged nothing at trace"
    );
}

#[test]
fn spoofed_source_ip_and_mac_are_dropped_and_counted() {
    let h = host();
    h.netd
        .ok(&["network", "create", "n1", "--subnet", "10.13.0.0/24"]);
    let s1 = NetNs::new("ndSp");
    let s2 = NetNs::new("ndSp");
    let ip1 = h.endpoint("s1", "n1", &s1, &[]);
    let ip2 = h.endpoint("s2", "n1", &s2, &[]);
    assert!(ping(&s1, &ip2, 1));
    let mac1: [u8; 6] = netd::model::Mac::for_ipv4(ip1.parse().expect("ip")).0;
    let mac2: [u8; 6] = netd::model::Mac::for_ipv4(ip2.parse().expect("ip")).0;
    let ip1: [u8; 4] = ip1.parse::<std::net::Ipv4Addr>().expect("ip").octets();
    let ip2: [u8; 4] = ip2.parse::<std::net::Ipv4Addr>().expect("ip").octets();

    let before = h.drops("spoofed");
    let spoofed_ip = testpkt::ipv4_udp_between(mac1, [10, 13, 0, 99], mac2, ip2);
    let spoofed_mac = testpkt::ipv4_udp_between([0x02, 0x99, 0, 0, 0, 1], ip1, mac2, ip2);
    let honest = testpkt::ipv4_udp_between(mac1, ip1, mac2, ip2);
    within(&s1, || {
        send_raw_frame("eth0", &spoofed_ip);
        send_raw_frame("eth0", &spoofed_mac);
        send_raw_frame("eth0", &honest);
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(h.drops("spoofed") - before, 2, "spoofed frames dropped");
}

#[test]
fn an_endpoint_with_a_chosen_mac_has_it_in_its_sandbox_and_talks() {
    let h = host();
    h.netd
        .ok(&["network", "create", "n1", "--subnet", "10.14.0.0/24"]);
    let s1 = NetNs::new("ndSm");
    let s2 = NetNs::new("ndSm");
    let ip1 = h.endpoint("m1", "n1", &s1, &["--mac", "52:54:00:12:34:56"]);
    let ip2 = h.endpoint("m2", "n1", &s2, &[]);
    let link = String::from_utf8_lossy(&s1.ip(&["link", "show", "eth0"]).stdout).into_owned();
    assert!(link.contains("link/ether 52:54:00:12:34:56"), "{link}");
    // Both ways: m2's ARP for m1 is answered with the chosen MAC.
    assert!(ping(&s2, &ip1, 2), "m2 -> m1");
    assert!(ping(&s1, &ip2, 2), "m1 -> m2");
    let neigh = String::from_utf8_lossy(&s2.ip(&["neigh", "show", &ip1]).stdout).into_owned();
    assert!(neigh.contains("52:54:00:12:34:56"), "{neigh}");
}

#[test]
fn refused_requests_say_why_and_change_nothing() {
    let h = host();
    h.netd.ok(&[
        "network",
        "create",
        "n1",
        "--subnet",
        "10.14.0.0/24",
        "--aux-address",
        "r=10.14.0.5",
    ]);
    let s1 = NetNs::new("ndSr");
    let ip = h.endpoint("e1", "n1", &s1, &[]);
    let state = |h: &Host| {
        let maps: Vec<String> = ["NETD_NETWORKS", "NETD_ENDPOINTS", "NETD_LOCAL_EPS"]
            .iter()
            .map(|m| {
                let out = Command::new("bpftool")
                    .args(["map", "dump", "pinned"])
                    .arg(h._pins.layout.map(m))
                    .output()
                    .expect("bpftool");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .collect();
        (
            h.netd.ok(&["network", "ls", "--json"]),
            h.netd.ok(&["endpoint", "ls", "--json"]),
            h.netd.ok(&["status", "--json"]),
            maps,
        )
    };
    let before = state(&h);
    let s2 = NetNs::new("ndSr");
    let s2_path = s2.path().display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["network", "create", "x", "--subnet", "10.99.0.0"],
            "subnet: \"10.99.0.0\" is not an IPv4 CIDR",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.14.0.0/16"],
            "subnet: 10.14.0.0/16 overlaps network \"n1\"",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.15.0.0/24",
                "--gateway",
                "10.16.0.1",
            ],
            "gateway: 10.16.0.1 is outside the subnet",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.15.0.0/24",
                "--ip-range",
                "10.16.0.0/28",
            ],
            "ip-range: 10.16.0.0/28 is not inside the subnet",
        ),
        (
            vec!["network", "create", "n1", "--subnet", "10.15.0.0/24"],
            "network \"n1\" already exists",
        ),
        (
            vec!["network", "rm", "n1"],
            "network \"n1\" still has endpoints: e1",
        ),
        (vec!["network", "rm", "nope"], "no network named \"nope\""),
        (
            vec![
                "endpoint",
                "create",
                "e2",
                "--network",
                "nope",
                "--netns",
                &s2_path,
            ],
            "no network named \"nope\"",
        ),
        (
            vec![
                "endpoint",
                "create",
                "e2",
                "--network",
                "n1",
                "--netns",
                &s2_path,
                "--ip",
                &ip,
            ],
            "is already in use",
        ),
        (
            vec![
                "endpoint",
                "create",
                "e2",
                "--network",
                "n1",
                "--netns",
                &s2_path,
                "--ip",
                "10.20.0.9",
            ],
            "outside the subnet 10.14.0.0/24",
        ),
        (
            vec![
                "endpoint",
                "create",
                "e2",
                "--network",
                "n1",
                "--netns",
                &s2_path,
                "--ip",
                "10.14.0.5",
            ],
            "reserved in network \"n1\" (aux-address r)",
        ),
        (
            vec![
                "endpoint",
                "create",
                "e2",
                "--network",
                "n1",
                "--netns",
                "/run/netns/no-such-sandbox",
            ],
            "does not exist",
        ),
        (
            vec![
                "endpoint",
                "create",
                "e1",
                "--network",
                "n1",
                "--netns",
                &s2_path,
            ],
            "endpoint \"e1\" already exists",
        ),
        (vec!["endpoint", "rm", "nope"], "no endpoint named \"nope\""),
    ];
    for (args, expected) in cases {
        let (ok, _, stderr) = h.netd.cli(&args);
        assert!(!ok, "{args:?} was accepted");
        assert!(
            stderr.contains(expected),
            "{args:?}: {stderr:?} lacks {expected:?}"
        );
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: more than one line: {stderr}"
        );
    }
    assert_eq!(
        state(&h),
        before,
        "a refused request changed the model or the maps"
    );
    let links = Command::new("ip")
        .args(["-n", &h.ns.name, "-o", "link"])
        .output()
        .expect("ip link");
    let count = String::from_utf8_lossy(&links.stdout)
        .matches("ndh")
        .count();
    assert_eq!(count, 1, "a refused endpoint left a veth behind");
}

#[test]
fn kill_9_does_not_stop_forwarding_and_a_restart_converges() {
    let mut h = host();
    h.netd
        .ok(&["network", "create", "n1", "--subnet", "10.17.0.0/24"]);
    let s1 = NetNs::new("ndSk");
    let s2 = NetNs::new("ndSk");
    h.endpoint("e1", "n1", &s1, &[]);
    let ip2 = h.endpoint("e2", "n1", &s2, &[]);
    let status_before = h.netd.ok(&["status", "--json"]);

    // 40 pings over 2 s; netd dies with SIGKILL in the middle.
    let pinger = {
        let ip2 = ip2.clone();
        let s1_name = s1.name.clone();
        std::thread::spawn(move || {
            Command::new("ip")
                .args([
                    "netns", "exec", &s1_name, "ping", "-c", "40", "-i", "0.05", "-W", "1", "-q",
                    &ip2,
                ])
                .output()
                .expect("ping")
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    h.netd.kill();
    let pinged = pinger.join().expect("pinger");
    assert!(
        pinged.status.success(),
        "pings lost while netd was dead: {}",
        String::from_utf8_lossy(&pinged.stdout)
    );

    // A stale entry appears while netd is down.
    let map = h._pins.layout.map("NETD_ENDPOINTS");
    let planted = Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(&map)
        .args([
            "key", "10", "9", "9", "9", "value", "99", "0", "0", "0", "7", "0", "0", "0", "2", "2",
            "2", "2", "2", "2", "0", "0",
        ])
        .output()
        .expect("bpftool");
    assert!(
        planted.status.success(),
        "{}",
        String::from_utf8_lossy(&planted.stderr)
    );
    let dump = || {
        let out = Command::new("bpftool")
            .args(["map", "dump", "pinned"])
            .arg(&map)
            .output()
            .expect("bpftool");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    const STALE_KEY: &str = "key: 0a 09 09 09";
    assert!(
        dump().contains(STALE_KEY),
        "the planted entry is not in the map:\n{}",
        dump()
    );

    h.netd.restart(&h.ns);
    assert_eq!(
        h.netd.ok(&["status", "--json"]),
        status_before,
        "state after restart"
    );
    assert!(
        !dump().contains(STALE_KEY),
        "stale entry survived the restart:\n{}",
        dump()
    );
    assert_eq!(
        dump().matches("key:").count(),
        2,
        "the two endpoints' entries:\n{}",
        dump()
    );
    assert!(ping(&s1, &ip2, 2), "forwarding after restart");
}

#[test]
fn removing_endpoints_and_networks_leaves_nothing_behind() {
    let h = host();
    h.netd
        .ok(&["network", "create", "n1", "--subnet", "10.18.0.0/24"]);
    let s1 = NetNs::new("ndSd");
    h.endpoint("e1", "n1", &s1, &[]);
    let host_if = h.netd.ok(&["endpoint", "inspect", "e1"]);
    let host_if: serde_json::Value = serde_json::from_str(&host_if).expect("json");
    let host_if = host_if["host-ifname"]
        .as_str()
        .expect("host ifname")
        .to_string();
    assert!(
        h.ns.exec("ip", &["link", "show", &host_if])
            .status
            .success(),
        "host veth missing"
    );
    assert!(
        s1.exec("ip", &["link", "show", "eth0"]).status.success(),
        "eth0 missing in the sandbox"
    );

    h.netd.ok(&["endpoint", "rm", "e1"]);
    assert!(
        !h.ns
            .exec("ip", &["link", "show", &host_if])
            .status
            .success(),
        "host veth left"
    );
    assert!(
        !s1.exec("ip", &["link", "show", "eth0"]).status.success(),
        "eth0 left in the sandbox"
    );
    h.netd.ok(&["network", "rm", "n1"]);
    assert_eq!(h.netd.ok(&["endpoint", "ls", "--json"]).trim(), "[]");
    assert_eq!(h.netd.ok(&["network", "ls", "--json"]).trim(), "[]");
    let status: serde_json::Value =
        serde_json::from_str(&h.netd.ok(&["status", "--json"])).expect("json");
    let entries: Vec<u64> = status["maps"]
        .as_array()
        .expect("maps")
        .iter()
        .map(|m| m["entries"].as_u64().expect("n"))
        .collect();
    assert!(
        entries.len() >= 7 && entries.iter().all(|n| *n == 0),
        "{status}"
    );
    // Each map's capacity is the kernel's, LPM tries included.
    for m in status["maps"].as_array().expect("maps") {
        let name = m["name"].as_str().expect("name");
        let kernel = aya::maps::MapInfo::from_pin(h._pins.layout.map(name))
            .expect("pinned")
            .max_entries();
        assert_eq!(m["capacity"].as_u64(), Some(u64::from(kernel)), "{m}");
    }
    assert!(
        !h._pins
            .layout
            .links()
            .join(format!("tc-{host_if}"))
            .exists(),
        "TC link pin left"
    );
}
