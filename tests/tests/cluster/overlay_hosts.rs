//! Endpoints on different hosts of one overlay network talk through
//! netd's VXLAN (encap in the endpoint program, decap in XDP on the
//! uplink). Hosts are namespaces on an underlay namespace with a bridge;
//! one etcd serves inside the underlay.

use std::time::{Duration, Instant};

use netd_tests::{
    cluster::{eventually, Host},
    etcd::Etcd,
    netns::NetNs,
    process::metric,
    traffic::{ping, tcp},
};

fn cluster(n: usize) -> (NetNs, Etcd, Vec<Host>) {
    netd_tests::cluster::cluster(n, |_| {
        vec!["--uplink=uplink0".into(), "--host-lease-ttl=3".into()]
    })
}

#[test]
fn endpoints_on_two_hosts_talk_over_vxlan() {
    let (_underlay, _etcd, hosts) = cluster(2);
    hosts[0].netd.ok(&[
        "network",
        "create",
        "o1",
        "--overlay",
        "--subnet",
        "10.97.0.0/24",
    ]);
    let s0 = NetNs::new("ndSo");
    let s1 = NetNs::new("ndSo");
    let ip0 = hosts[0].endpoint("e0", "o1", &s0);
    let ip1 = hosts[1].endpoint("e1", "o1", &s1);
    let took = eventually("e1 reachable from host-0", || ping(&s0, &ip1, 1));
    eprintln!("e1 answered e0 {took:?} after it was created");
    assert!(ping(&s1, &ip0, 3), "host-1 -> host-0");
    assert!(tcp(&s0, &s1, &ip1, 256 << 10), "TCP across hosts");
    let scrape = hosts[1].netd.scrape(&hosts[1].ns).expect("metrics");
    let uplink = hosts[1].netd.uplink_counters("uplink0");
    let decapped = metric(
        &scrape,
        &format!("netd_packets_total{{hook=\"{uplink}\",verdict=\"redirect\"}}"),
    )
    .expect("counter");
    assert!(decapped >= 3, "host-1 decapsulated {decapped} packets");
}

#[test]
fn the_largest_packet_that_fits_crosses_and_one_byte_more_fails_cleanly() {
    let (_underlay, _etcd, hosts) = cluster(2);
    hosts[0].netd.ok(&[
        "network",
        "create",
        "o1",
        "--overlay",
        "--subnet",
        "10.98.0.0/24",
    ]);
    let s0 = NetNs::new("ndSm");
    let s1 = NetNs::new("ndSm");
    hosts[0].endpoint("e0", "o1", &s0);
    let ip1 = hosts[1].endpoint("e1", "o1", &s1);
    eventually("e1 reachable", || ping(&s0, &ip1, 1));
    // Uplink MTU 1500 - 50 of VXLAN = 1450 for the endpoint: 1422 bytes of
    // ICMP payload + 28 of headers fill it exactly.
    let mtu =
        String::from_utf8_lossy(&s0.exec("ip", &["link", "show", "eth0"]).stdout).into_owned();
    assert!(mtu.contains("mtu 1450"), "{mtu}");
    let fits = s0.exec(
        "ping",
        &["-c", "2", "-W", "1", "-M", "do", "-s", "1422", &ip1],
    );
    assert!(
        fits.status.success(),
        "{}",
        String::from_utf8_lossy(&fits.stdout)
    );
    let too_big = s0.exec(
        "ping",
        &["-c", "1", "-W", "1", "-M", "do", "-s", "1423", &ip1],
    );
    assert!(
        !too_big.status.success(),
        "a packet over the MTU was sent with DF"
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&too_big.stdout),
        String::from_utf8_lossy(&too_big.stderr)
    );
    assert!(
        said.contains("message too long") || said.contains("mtu = 1450"),
        "{said}"
    );
}

#[test]
fn cross_host_traffic_keeps_flowing_while_etcd_is_stopped_for_10_s() {
    let (_underlay, mut etcd, hosts) = cluster(2);
    hosts[0].netd.ok(&[
        "network",
        "create",
        "o1",
        "--overlay",
        "--subnet",
        "10.99.0.0/24",
    ]);
    let s0 = NetNs::new("ndSe");
    let s1 = NetNs::new("ndSe");
    hosts[0].endpoint("e0", "o1", &s0);
    let ip1 = hosts[1].endpoint("e1", "o1", &s1);
    eventually("e1 reachable", || ping(&s0, &ip1, 1));

    etcd.stop();
    let stopped = Instant::now();
    // 50 pings over 10 s while etcd is away: none may be lost.
    let out = s0.exec("ping", &["-c", "50", "-i", "0.2", "-W", "1", "-q", &ip1]);
    assert!(
        out.status.success(),
        "pings lost while etcd was down: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stopped.elapsed() >= Duration::from_secs(9));
    etcd.restart();

    // A change made after etcd returns reaches the other host.
    let s2 = NetNs::new("ndSe");
    let t = Instant::now();
    let ip2 = loop {
        let (ok, out, err) = hosts[1].netd.cli(&[
            "endpoint",
            "create",
            "e2",
            "--network",
            "o1",
            "--netns",
            s2.path().to_str().unwrap_or_default(),
        ]);
        if ok {
            break out.split_whitespace().nth(1).expect("address").to_string();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "etcd not usable again: {err}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    eventually("e2 reachable from host-0", || ping(&s0, &ip2, 1));
}

/// Each host masquerades its own endpoints out of its own uplink, as
/// swarm's docker_gwbridge does: a server outside the cluster sees the
/// address of the host each endpoint lives on.
#[test]
fn each_host_masquerades_its_own_endpoints_out_of_its_own_uplink() {
    let (underlay, _etcd, hosts) = cluster(2);
    hosts[0].netd.ok(&[
        "network",
        "create",
        "o1",
        "--overlay",
        "--subnet",
        "10.99.0.0/24",
    ]);
    let outside = netd_tests::cluster::plain_client(&underlay, "ndOo", "10.96.0.200");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    netd_tests::services::serve(&outside, "outside", stop.clone());
    let sandboxes = [NetNs::new("ndSo"), NetNs::new("ndSo")];
    for (i, s) in sandboxes.iter().enumerate() {
        hosts[i].endpoint(&format!("e{i}"), "o1", s);
    }
    for (i, s) in sandboxes.iter().enumerate() {
        let (_, greeting) = netd_tests::services::connect_at(s, "10.96.0.200", 8080);
        assert_eq!(
            greeting,
            format!("outside:10.96.0.{}", i + 1),
            "host-{i}'s endpoint leaves by host-{i}'s uplink"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}
