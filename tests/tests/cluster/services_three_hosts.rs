//! A service across three hosts on etcd: backends on hosts 1 and 2, a
//! client on every host. Each client reaches both backends through the
//! VIP, over VXLAN or not, and each backend sees the client's own address;
//! a backend's ICMP error comes back over VXLAN translated at XDP.

use std::sync::{atomic::AtomicBool, Arc};

use netd_tests::{
    cluster::{cluster, eventually},
    netns::NetNs,
    services::{serve, shares, tcp_connections, udp_connected, udp_flows},
};

#[test]
fn every_client_on_every_host_reaches_every_backend_through_the_vip() {
    let (_underlay, _etcd, hosts) = cluster(3, |_| vec!["--uplink=uplink0".into()]);
    hosts[0].netd.ok(&[
        "network",
        "create",
        "o1",
        "--subnet",
        "10.95.0.0/24",
        "--overlay",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut backends = Vec::new();
    for (name, host) in [("web1", 1), ("web2", 2)] {
        let ns = NetNs::new("ndB3");
        hosts[host]
            .netd
            .endpoint(name, "o1", &ns, &["--label", "app=web"]);
        serve(&ns, name, stop.clone());
        backends.push(ns);
    }
    let clients: Vec<(NetNs, String)> = (0..3)
        .map(|i| {
            let ns = NetNs::new("ndC3");
            let ip = hosts[i].endpoint(&format!("client{i}"), "o1", &ns);
            (ns, ip)
        })
        .collect();
    let out = hosts[0].netd.ok(&[
        "service",
        "create",
        "web",
        "--network",
        "o1",
        "--port",
        "80:8080/tcp",
        "--port",
        "53:5353/udp",
        "--port",
        "54:5999/udp",
        "--selector",
        "app=web",
    ]);
    let vip = out.split_whitespace().nth(1).expect("VIP").to_string();
    // Every host has the service once its netd has seen it in etcd.
    for h in &hosts {
        eventually("the service on every host", || {
            h.netd
                .ok(&["service", "ls"])
                .lines()
                .any(|l| l.contains(&vip) && l.contains("2/2"))
        });
    }
    for (i, (ns, ip)) in clients.iter().enumerate() {
        let tcp = tcp_connections(ns, &vip, 40);
        let udp = udp_flows(ns, &vip, 40);
        for (what, answers) in [("tcp", &tcp), ("udp", &udp)] {
            let count = shares(answers);
            println!("client{i} on host-{i}, {what}: {count:?}");
            assert_eq!(
                count.keys().collect::<Vec<_>>(),
                ["web1", "web2"],
                "client{i} {what}"
            );
            for a in answers.iter() {
                assert!(
                    a.ends_with(&format!(":{ip}")),
                    "the backend sees client{i}'s own address: {a}"
                );
            }
        }
    }
    // Nothing listens on 5999: the remote backend's port unreachable,
    // decapsulated at host-0's XDP, reaches client0's socket only if its
    // quote reads `client0 → VIP:54` again.
    assert_eq!(
        udp_connected(&clients[0].0, &vip, 54),
        Err(std::io::ErrorKind::ConnectionRefused),
        "a remote backend's ICMP error"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}
