//! Several netd sharing one real etcd: hosts simulated as namespaces on an
//! underlay namespace (a bridge there stands for the physical network),
//! etcd serving inside the underlay. The model is cluster-wide; each netd
//! makes links only for the endpoints of its own host.

use std::time::{Duration, Instant};

use netd_tests::{
    cluster::{cluster, Host, UNDERLAY_PREFIX},
    netns::NetNs,
    traffic::ping,
};

fn host_veths(ns: &NetNs) -> usize {
    String::from_utf8_lossy(&ns.ip(&["-o", "link"]).stdout)
        .matches(": ndh")
        .count()
}

#[test]
fn hosts_share_the_model_through_etcd_and_keep_forwarding_while_it_is_away() {
    let (_underlay, mut etcd, mut hosts) = cluster(2, |i| {
        vec![
            format!("--underlay-ip={UNDERLAY_PREFIX}.{}", i + 1),
            "--host-lease-ttl=2".into(),
        ]
    });
    let (a, b) = (&hosts[0], &hosts[1]);
    let hosts_seen = |h: &Host| {
        let list: serde_json::Value =
            serde_json::from_str(&h.netd.ok(&["host", "ls", "--json"])).expect("json");
        list.as_array()
            .expect("list")
            .iter()
            .map(|h| {
                format!(
                    "{}={}{}",
                    h["name"].as_str().unwrap_or("?"),
                    h["underlay-ip"].as_str().unwrap_or("-"),
                    if h["alive"].as_bool() == Some(true) {
                        ""
                    } else {
                        " down"
                    }
                )
            })
            .collect::<Vec<_>>()
    };
    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(Instant::now() < deadline, "{what} did not happen in 20 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for("both hosts registered", &|| {
        let seen = hosts_seen(b);
        seen == ["host-0=10.96.0.1", "host-1=10.96.0.2"]
    });

    a.netd
        .ok(&["network", "create", "n1", "--subnet", "10.91.0.0/24"]);
    assert!(
        b.netd.ok(&["network", "ls"]).contains("10.91.0.0/24"),
        "host-1 does not see n1"
    );
    // Names are cluster-wide.
    let (ok, _, err) = b
        .netd
        .cli(&["network", "create", "n1", "--subnet", "10.92.0.0/24"]);
    assert!(
        !ok && err.contains("network \"n1\" already exists"),
        "{err}"
    );

    let sa1 = NetNs::new("ndSc");
    let sa2 = NetNs::new("ndSc");
    let sb = NetNs::new("ndSc");
    let create = |h: &Host, name: &str, s: &NetNs| h.netd.endpoint(name, "n1", s, &[]);
    let ip_a1 = create(a, "a1", &sa1);
    let _ip_a2 = create(a, "a2", &sa2);
    let ip_b = create(b, "b1", &sb);
    assert_ne!(ip_a1, ip_b);
    let listing = b.netd.ok(&["endpoint", "ls"]);
    assert!(
        listing.contains("a1") && listing.contains("host-0") && listing.contains("host-1"),
        "{listing}"
    );
    // Each netd made the links of its own host only.
    assert_eq!((host_veths(&a.ns), host_veths(&b.ns)), (2, 1));
    assert!(ping(&sa2, &ip_a1, 2), "same-host forwarding on host-0");

    // etcd away: local forwarding goes on, changes are refused with the cause.
    etcd.stop();
    assert!(ping(&sa2, &ip_a1, 3), "forwarding while etcd is down");
    let (ok, _, err) = a
        .netd
        .cli(&["network", "create", "n2", "--subnet", "10.93.0.0/24"]);
    assert!(!ok && err.contains("etcd"), "{err}");

    // etcd back: a change made now reaches every host.
    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, _, err) = a
            .netd
            .cli(&["network", "create", "n2", "--subnet", "10.93.0.0/24"]);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "etcd not usable again: {err}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        b.netd.ok(&["network", "ls"]).contains("10.93.0.0/24"),
        "host-1 does not see n2"
    );
    assert!(ping(&sa2, &ip_a1, 2), "forwarding after etcd returned");

    // A host whose netd dies is down when its lease ends (it stays a
    // member, with its index), and is up again with its netd.
    hosts[1].netd.kill();
    let t = Instant::now();
    wait_for("host-1 down", &|| {
        hosts_seen(&hosts[0]) == ["host-0=10.96.0.1", "host-1=10.96.0.2 down"]
    });
    let gone_after = t.elapsed();
    assert!(
        gone_after >= Duration::from_secs(1),
        "host-1 left before its lease could end: {gone_after:?}"
    );
    let Host { ns, netd, .. } = &mut hosts[1];
    netd.restart(ns);
    wait_for("host-1 up again", &|| {
        hosts_seen(&hosts[0]) == ["host-0=10.96.0.1", "host-1=10.96.0.2"]
    });
    eprintln!("host-1 left {gone_after:?} after its netd was killed (lease 2 s)");
}
