//! Docker on two hosts of one netd cluster (etcd): the same `docker network
//! create -o netd.overlay=true` on both is one network, containers on
//! either host talk, addresses are unique cluster-wide even when both hosts
//! hand them out at once, labelled containers of both hosts are one
//! service's backends (published through either host to both), `docker
//! run -p` publishes at its host's address, and the network stays until
//! the last host removes it.
//!
//! The lab is the plain one users build first: veths with their default
//! offloads and a plain bridge, so the uplinks take TC.
//!
//! Each host is a namespace on the underlay with its netd and its own
//! dockerd. The simulated hosts share one filesystem, where dockerd finds
//! plugins by socket name, so host i's netd serves its Docker as driver
//! `netd-hi` (on real hosts every netd is `netd`).

use netd_tests::{
    cluster::{cluster, eventually, plain_client, Host, UNDERLAY_PREFIX},
    dns::{parse_nslookup, Upstream},
    docker::{Docker, IMAGE},
    etcd::Etcd,
    netns::NetNs,
};
use serde_json::Value;

const SUBNET: &str = "10.57.0.0/24";
const CLIENT: &str = "10.96.0.100";
const PUBLISHED: u16 = 28081;
/// The labelled containers' service, published in ingress mode.
const WEB_PUBLISHED: u16 = 30090;
const GATEWAY: &str = "10.57.0.1";
const OUTSIDE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 7);

fn host_address(i: usize) -> String {
    format!("{UNDERLAY_PREFIX}.{}", i + 1)
}

/// `docker run -d --name NAME --network shared EXTRA.. busybox CMD..`.
fn run(docker: &Docker, name: &str, extra: &[&str], cmd: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name, "--network", "shared"];
    args.extend_from_slice(extra);
    args.push(IMAGE);
    args.extend_from_slice(cmd);
    docker.ok(&args);
}

fn sleeper(docker: &Docker, name: &str, extra: &[&str]) {
    run(docker, name, extra, &["sleep", "600"]);
}

/// Answers `hello-NAME` to every connection on 8080.
fn greeter(docker: &Docker, name: &str, extra: &[&str]) {
    let serve = format!("while true; do echo hello-{name} | nc -l -p 8080; done");
    run(docker, name, extra, &["sh", "-c", &serve]);
}

fn pings(docker: &Docker, from: &str, ip: &str) -> bool {
    docker
        .run(&["exec", from, "ping", "-c", "2", "-W", "1", ip])
        .status
        .success()
}

/// What `from` reads from `ip:8080` (a greeter's line), retried while
/// the greeter's nc is between connections.
fn greeting(docker: &Docker, from: &str, ip: &str) -> String {
    let mut said = String::new();
    for _ in 0..20 {
        let out = docker.run(&["exec", from, "nc", "-w", "1", ip, "8080"]);
        said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !said.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    said
}

/// The line a greeter sends to a connection from `client` to `ip:port`
/// (empty while its nc is between connections).
fn greeting_at(client: &NetNs, ip: &str, port: u16) -> String {
    use std::io::Read;
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().expect("address");
    let said = client
        .run(move || {
            let mut conn =
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))
                    .ok()?;
            conn.set_read_timeout(Some(std::time::Duration::from_secs(3)))
                .ok()?;
            let mut line = String::new();
            conn.read_to_string(&mut line).ok()?;
            Some(line.trim().to_string())
        })
        .join()
        .expect("client thread");
    if said.is_none() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    said.unwrap_or_default()
}

/// `busybox nslookup NAME` in `container`, through its resolv.conf.
fn lookup(docker: &Docker, container: &str, name: &str) -> Option<Vec<std::net::Ipv4Addr>> {
    let out = docker.run(&["exec", container, "nslookup", name]);
    parse_nslookup(&String::from_utf8_lossy(&out.stdout))
}

fn networks(host: &Host) -> Vec<Value> {
    let text = host.netd.ok(&["network", "ls", "--json"]);
    serde_json::from_str::<Value>(&text)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn backends(host: &Host) -> String {
    host.netd
        .ok(&["service", "ls"])
        .lines()
        .find(|l| l.starts_with("web"))
        .unwrap_or_default()
        .to_string()
}

/// Dropped in this order: the dockerds first, while the netds their
/// plugin calls go to still run.
struct World {
    dockers: Vec<Docker>,
    hosts: Vec<Host>,
    _upstream: Upstream,
    client: NetNs,
    _etcd: Etcd,
    _underlay: NetNs,
}

fn world() -> World {
    let mut dockers: Vec<Docker> = (0..2)
        .map(|i| Docker::prepare().with_driver(&format!("netd-h{i}")))
        .collect();
    let (underlay, etcd, hosts) = cluster(2, |i| {
        vec![
            "--uplink=uplink0".to_string(),
            dockers[i].plugin_flag(),
            dockers[i].api_flag(),
            format!("--dns-upstream={CLIENT}"),
        ]
    });
    // dockerd in its host's namespace: it finds the interfaces netd makes
    // there, as on a real host.
    for (d, h) in dockers.iter_mut().zip(&hosts) {
        d.start_in(&h.ns);
    }
    std::thread::scope(|s| {
        for d in &dockers {
            s.spawn(|| d.import_busybox());
        }
    });
    let client = plain_client(&underlay, "ndDc", CLIENT);
    // The cluster's upstream resolver, outside it on the underlay.
    let upstream = Upstream::start(
        &client,
        CLIENT.parse().expect("ip"),
        &[("outside.test", OUTSIDE)],
    );
    World {
        dockers,
        hosts,
        _upstream: upstream,
        client,
        _etcd: etcd,
        _underlay: underlay,
    }
}

#[test]
fn two_docker_hosts_share_one_overlay_network() {
    let _docker = netd_tests::docker::exclusive();
    let mut w = world();
    let (dockers, client) = (&w.dockers, &w.client);
    let (a, b) = (&dockers[0], &dockers[1]);
    let overlay = ["-o", "netd.overlay=true"];

    // Host A creates it; host B's conflicting creates are refused with the
    // cause, and its matching one joins.
    a.netd_network("shared", SUBNET, &overlay);
    let options = b.create_netd_network(
        "shared",
        SUBNET,
        &["-o", "netd.overlay=true", "-o", "netd.policy=default-deny"],
    );
    let why = String::from_utf8_lossy(&options.stderr);
    assert!(
        !options.status.success() && why.contains("netd.policy") && why.contains("differs"),
        "other options on host B: {why}"
    );
    let overlapping = b.create_netd_network("shared", "10.57.0.0/16", &overlay);
    let why = String::from_utf8_lossy(&overlapping.stderr);
    assert!(
        !overlapping.status.success() && why.contains("overlaps"),
        "an overlapping subnet on host B: {why}"
    );
    b.netd_network("shared", SUBNET, &overlay);
    eventually("one netd network named shared, of both hosts", || {
        let nets = networks(&w.hosts[1]);
        nets.len() == 1
            && nets[0]["name"] == "shared"
            && nets[0]["docker"].as_object().is_some_and(|d| d.len() == 2)
    });

    // Containers on different hosts talk. (`--dns`: Docker's own resolver
    // answers its containers' names and asks netd the rest.)
    greeter(a, "c1", &["--dns", GATEWAY]);
    greeter(b, "c2", &["--dns", GATEWAY]);
    let (ip1, ip2) = (a.ip("c1", "shared"), b.ip("c2", "shared"));
    assert_ne!(ip1, ip2);
    assert!(pings(a, "c1", &ip2), "c1 -> c2 across hosts");
    assert!(pings(b, "c2", &ip1), "c2 -> c1 across hosts");
    assert_eq!(greeting(a, "c1", &ip2), "hello-c2", "TCP c1 -> c2");
    assert_eq!(greeting(b, "c2", &ip1), "hello-c1", "TCP c2 -> c1");

    // kill -9 of host B's netd under a ping from A to B: the datapath goes
    // on, and the restarted netd serves B's Docker again.
    let pinger = std::thread::scope(|s| {
        let pinger = s.spawn(|| a.run(&["exec", "c1", "ping", "-c", "20", "-i", "0.2", &ip2]));
        std::thread::sleep(std::time::Duration::from_millis(800));
        let h = &mut w.hosts[1];
        h.netd.kill();
        std::thread::sleep(std::time::Duration::from_millis(1000));
        h.netd.restart(&h.ns);
        pinger.join().expect("pinger")
    });
    let said = String::from_utf8_lossy(&pinger.stdout);
    assert!(
        said.contains("20 packets received"),
        "ping across the kill -9:\n{said}"
    );
    sleeper(b, "after-restart", &[]);
    assert!(
        pings(a, "c1", &b.ip("after-restart", "shared")),
        "a container started after the restart"
    );
    b.ok(&["rm", "-f", "after-restart"]);

    // 20 containers started on both hosts at once: 20 distinct addresses.
    std::thread::scope(|s| {
        for (h, d) in dockers.iter().enumerate() {
            for i in 0..10 {
                s.spawn(move || sleeper(d, &format!("m{h}-{i}"), &[]));
            }
        }
    });
    let mut addresses: Vec<String> = (0..20)
        .map(|n| dockers[n / 10].ip(&format!("m{}-{}", n / 10, n % 10), "shared"))
        .collect();
    addresses.extend([ip1.clone(), ip2.clone()]);
    let distinct: std::collections::BTreeSet<&String> = addresses.iter().collect();
    assert_eq!(distinct.len(), 22, "{addresses:?}");
    assert!(
        pings(b, "m1-9", &a.ip("m0-9", "shared")),
        "the last ones started talk too"
    );
    std::thread::scope(|s| {
        for (h, d) in dockers.iter().enumerate() {
            for i in 0..10 {
                s.spawn(move || d.ok(&["rm", "-f", &format!("m{h}-{i}")]));
            }
        }
    });

    // Labelled containers on both hosts are one service's backends, and
    // leave it with their containers.
    let created = w.hosts[0].netd.ok(&[
        "service",
        "create",
        "web",
        "--network",
        "shared",
        "--selector",
        "app=web",
        "--port",
        "80:8080/tcp",
        "--publish",
        &format!("{WEB_PUBLISHED}:8080/tcp"),
    ]);
    let vip = created.split_whitespace().nth(1).expect("VIP").to_string();
    greeter(a, "w0", &["--label", "app=web"]);
    greeter(b, "w1", &["--label", "app=web"]);
    eventually("w0 and w1 are web's backends", || {
        backends(&w.hosts[1]).contains("2/2")
    });
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let out = a.run(&["exec", "c1", "nc", "-w", "1", &vip, "80"]);
        seen.insert(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert!(
        seen.contains("hello-w0") && seen.contains("hello-w1"),
        "the VIP reaches backends on both hosts: {seen:?}"
    );
    // Published: through host A's address, from the client outside the
    // cluster, to A's own backend and to B's.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        if seen.len() == 2 {
            break;
        }
        let said = greeting_at(client, &host_address(0), WEB_PUBLISHED);
        if !said.is_empty() {
            seen.insert(said);
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["hello-w0", "hello-w1"],
        "web's published port through host A"
    );
    // Names, from a container through Docker's resolver to netd's.
    let w_ips = {
        let mut v = vec![
            a.ip("w0", "shared").parse().expect("ip"),
            b.ip("w1", "shared").parse().expect("ip"),
        ];
        v.sort();
        v
    };
    assert_eq!(
        lookup(a, "c1", "web"),
        Some(vec![vip.parse().expect("vip")])
    );
    assert_eq!(lookup(a, "c1", "tasks.web"), Some(w_ips));
    assert_eq!(
        lookup(a, "c1", "c2"),
        Some(vec![ip2.parse().expect("ip")]),
        "a container on the other host, by its name"
    );
    assert_eq!(
        lookup(a, "c1", "outside.test"),
        Some(vec![OUTSIDE]),
        "forwarded upstream"
    );
    a.netd_network("private", "10.56.0.0/24", &[]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        "hidden",
        "--network",
        "private",
        IMAGE,
        "sleep",
        "600",
    ]);
    eventually("hidden is named in netd", || {
        w.hosts[0]
            .netd
            .ok(&["endpoint", "ls", "--json"])
            .contains("\"hidden\"")
    });
    assert_eq!(
        lookup(a, "c1", "hidden"),
        None,
        "a name of a network c1 is not on"
    );
    a.ok(&["rm", "-f", "hidden"]);
    a.ok(&["network", "rm", "private"]);

    b.ok(&["rm", "-f", "w1"]);
    eventually("w1 leaves web with its container", || {
        backends(&w.hosts[0]).contains("1/1")
    });

    // `docker run -p` on host A: at host A's address, from outside the
    // cluster, the client's address kept, and no firewall rule made.
    let rules_before = netd_tests::firewall();
    let serve = "while true; do echo hello-from-pub | nc -l -p 80; done";
    run(
        a,
        "pub",
        &["-p", &format!("{PUBLISHED}:80")],
        &["sh", "-c", serve],
    );
    let (said, peers) = a.published_answer(client, &host_address(0), PUBLISHED, "pub");
    assert_eq!(said, "hello-from-pub", "host A's published port");
    assert!(
        peers.contains(&format!("{CLIENT}:")),
        "the container sees the client's own address:\n{peers}"
    );
    assert_eq!(
        netd_tests::firewall(),
        rules_before,
        "iptables or nft rules were made"
    );

    // rm on A: B keeps the network and its containers keep talking.
    for c in ["c1", "w0", "pub"] {
        a.ok(&["rm", "-f", c]);
    }
    w.hosts[0].netd.ok(&["service", "rm", "web"]);
    a.network_rm("shared");
    let nets = networks(&w.hosts[0]);
    assert_eq!(nets.len(), 1, "B's network stays: {nets:?}");
    assert_eq!(nets[0]["docker"].as_object().map(|d| d.len()), Some(1));
    greeter(b, "c3", &[]);
    assert_eq!(
        greeting(b, "c3", &ip2),
        "hello-c2",
        "B's containers talk after A left"
    );

    // rm on B, the last: nothing is left, so the subnet is free again.
    for c in ["c2", "c3"] {
        b.ok(&["rm", "-f", c]);
    }
    b.network_rm("shared");
    assert!(networks(&w.hosts[0]).is_empty(), "the network is gone");
    a.netd_network("wider", "10.57.0.0/16", &overlay);
    a.ok(&["network", "rm", "wider"]);
    assert!(networks(&w.hosts[1]).is_empty());
}
