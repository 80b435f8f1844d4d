//! Endpoints on different hosts of one overlay network talk through
//! netd's VXLAN (encap in the endpoint program, decap in XDP on the
//! uplink). Hosts are namespaces on an underlay namespace with a bridge;
//! one etcd serves inside the underlay.

use std::time::{Duration, Instant};

use netd_tests::{
    etcd::Etcd,
    fixture::TempPins,
    netns::{veth_between, NetNs},
    process::{metric, Netd},
    traffic::{ping, tcp},
};

struct Host {
    ns: NetNs,
    netd: Netd,
    _pins: TempPins,
}

fn cluster(n: usize) -> (NetNs, Etcd, Vec<Host>) {
    let underlay = NetNs::new("ndU");
    underlay.ip(&["link", "add", "br0", "type", "bridge"]);
    underlay.ip(&["addr", "add", "10.96.0.254/24", "dev", "br0"]);
    underlay.ip(&["link", "set", "br0", "up"]);
    let etcd = Etcd::start_in(&underlay, "10.96.0.254");
    let store = format!("--store=etcd://{}", etcd.endpoint());
    let mut hosts = Vec::new();
    for i in 0..n {
        let ns = NetNs::new("ndHo");
        let outer = netd_tests::unique_name("ul");
        veth_between(
            &ns,
            "uplink0",
            &format!("10.96.0.{}/24", i + 1),
            &underlay,
            &outer,
            "10.96.1.99/32",
        );
        underlay.ip(&["addr", "flush", "dev", &outer]);
        underlay.ip(&["link", "set", &outer, "master", "br0"]);
        let pins = TempPins::new();
        let mut netd = Netd::start(
            &ns,
            pins.layout.root(),
            19964,
            &[
                &store,
                &format!("--host-name=host-{i}"),
                "--uplink=uplink0",
                "--host-lease-ttl=3",
            ],
        );
        netd.wait_ready(&ns);
        hosts.push(Host {
            ns,
            netd,
            _pins: pins,
        });
    }
    (underlay, etcd, hosts)
}

fn endpoint(h: &Host, name: &str, network: &str, sandbox: &NetNs) -> String {
    let out = h.netd.ok(&[
        "endpoint",
        "create",
        name,
        "--network",
        network,
        "--netns",
        sandbox.path().to_str().unwrap_or_default(),
    ]);
    out.split_whitespace().nth(1).expect("address").to_string()
}

fn eventually(what: &str, check: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !check() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what} did not happen in 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t.elapsed()
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
    let ip0 = endpoint(&hosts[0], "e0", "o1", &s0);
    let ip1 = endpoint(&hosts[1], "e1", "o1", &s1);
    let took = eventually("e1 reachable from host-0", || ping(&s0, &ip1, 1));
    eprintln!("e1 answered e0 {took:?} after it was created");
    assert!(ping(&s1, &ip0, 3), "host-1 -> host-0");
    assert!(tcp(&s0, &s1, &ip1, 256 << 10), "TCP across hosts");
    let scrape = hosts[1].netd.scrape(&hosts[1].ns).expect("metrics");
    let decapped = metric(
        &scrape,
        "netd_packets_total{hook=\"xdp_uplink\",verdict=\"redirect\"}",
    )
    .expect("counter");
    assert!(decapped >= 3, "host-1 decapsulated {decapped} packets");
}
