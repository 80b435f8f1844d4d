//! Services on one host, end to end through the CLI: a netd in a "host"
//! namespace the test creates, three labelled backends and a client, each
//! a namespace of its own. Real TCP connections and UDP flows to the VIP.

use std::{
    collections::BTreeMap,
    io::ErrorKind,
    net::{SocketAddr, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use netd_common::{
    map_names,
    service::{AffinityEntry, AffinityKey},
};
use netd_tests::{
    fixture::TempPins,
    netns::NetNs,
    process::{metric, Netd},
    services::{
        ask, backend_of, connect, serve, shares, tcp_connections, udp_ask, udp_connected,
        udp_flows, Talker,
    },
};

struct Host {
    ns: NetNs,
    netd: Netd,
    pins: TempPins,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.netd.stop();
    }
}

/// A backend: its sandbox, and servers that answer with its name and the
/// address they saw the client at, until the backend is dropped.
struct Backend {
    name: String,
    ns: NetNs,
    ip: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn host() -> Host {
    host_with(&[])
}

fn host_with(extra: &[&str]) -> Host {
    let ns = NetNs::new("ndH");
    let pins = TempPins::new();
    let mut netd = Netd::start(&ns, pins.layout.root(), netd_tests::free_port(), extra);
    netd.wait_ready(&ns);
    netd.ok(&["network", "create", "n1", "--subnet", "10.31.0.0/24"]);
    Host { ns, netd, pins }
}

fn backend(h: &Host, name: &str, labels: &[&str]) -> Backend {
    let ns = NetNs::new("ndB");
    let mut extra = Vec::new();
    for l in labels {
        extra.extend(["--label", *l]);
    }
    let ip = h.netd.endpoint(name, "n1", &ns, &extra);
    let stop = Arc::new(AtomicBool::new(false));
    serve(&ns, name, stop.clone());
    Backend {
        name: name.to_string(),
        ns,
        ip,
        stop,
    }
}

/// Creates service `name` (selector app=web unless `extra` says more) and
/// returns its VIP.
fn service(h: &Host, name: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "service",
        "create",
        name,
        "--network",
        "n1",
        "--port",
        "80:8080/tcp",
        "--port",
        "53:5353/udp",
    ];
    args.extend_from_slice(extra);
    let out = h.netd.ok(&args);
    out.split_whitespace()
        .nth(1)
        .expect("VIP printed")
        .to_string()
}

/// Every backend's share of `answers` is within 10 points of 1/n.
fn assert_balanced(what: &str, answers: &[String], backends: &[&Backend]) {
    let count = shares(answers);
    println!("{what}: {count:?}");
    let total = answers.len() as f64;
    for b in backends {
        let share = *count.get(&b.name).unwrap_or(&0) as f64 / total;
        let want = 1.0 / backends.len() as f64;
        assert!(
            (share - want).abs() <= 0.10,
            "{what}: {} got {:.1}% (want {:.1}% ± 10): {count:?}",
            b.name,
            share * 100.0,
            want * 100.0
        );
    }
}

#[test]
fn a_vip_balances_tcp_and_udp_over_three_backends_that_see_the_client() {
    let h = host();
    let backends: Vec<Backend> = (0..3)
        .map(|i| backend(&h, &format!("web{i}"), &["app=web"]))
        .collect();
    let client = NetNs::new("ndC");
    let client_ip = h.netd.endpoint("client", "n1", &client, &[]);
    let vip = service(&h, "web", &["--selector", "app=web"]);

    let tcp = tcp_connections(&client, &vip, 300);
    let udp = udp_flows(&client, &vip, 300);
    let all: Vec<&Backend> = backends.iter().collect();
    assert_balanced("300 TCP connections", &tcp, &all);
    assert_balanced("300 UDP flows", &udp, &all);
    for answer in tcp.iter().chain(&udp) {
        assert!(
            answer.ends_with(&format!(":{client_ip}")),
            "the backend sees the client's own address: {answer}"
        );
    }

    let listed = h.netd.ok(&["service", "ls"]);
    assert!(
        listed.contains("web") && listed.contains(&vip) && listed.contains("3/3"),
        "{listed}"
    );
    let scrape = h.netd.scrape(&h.ns).expect("metrics");
    assert_eq!(metric(&scrape, "netd_services"), Some(1), "{scrape}");
    assert_eq!(
        metric(
            &scrape,
            "netd_service_backends{service=\"web\",state=\"active\"}"
        ),
        Some(3)
    );
}

#[test]
fn established_flows_keep_their_backend_through_adds_and_drains_and_move_on_removal() {
    let h = host();
    let web0 = backend(&h, "web0", &["app=web"]);
    let web1 = backend(&h, "web1", &["app=web"]);
    let client = NetNs::new("ndC");
    h.netd.endpoint("client", "n1", &client, &[]);
    let vip = service(&h, "web", &["--selector", "app=web"]);

    // One established connection per backend.
    let mut open: BTreeMap<String, TcpStream> = BTreeMap::new();
    while open.len() < 2 {
        let (conn, greeting) = connect(&client, &vip);
        let name = backend_of(&greeting).to_string();
        open.entry(name).or_insert(conn);
    }

    // Added backends take no established connection.
    let web2 = backend(&h, "web2", &["app=web"]);
    for (name, conn) in &open {
        assert_eq!(&ask(conn).expect("still open"), name, "after an add");
    }

    // A drained backend keeps its connection and gets no new one.
    h.netd.ok(&["service", "update", "web", "--drain", "web0"]);
    assert_eq!(ask(&open["web0"]).expect("still open"), "web0");
    let fresh = tcp_connections(&client, &vip, 60);
    let count = shares(&fresh);
    assert!(!count.contains_key("web0"), "a drained backend: {count:?}");
    assert!(count.contains_key("web1") && count.contains_key("web2"));
    let inspect = h.netd.ok(&["service", "inspect", "web"]);
    assert!(inspect.contains("\"draining\": true"), "{inspect}");

    // A removed backend's TCP flow is balanced again on its next packet;
    // the new backend does not know the connection and resets it, so the
    // client hears at once instead of hanging.
    let addr: SocketAddr = format!("{vip}:53").parse().expect("address");
    let (socket, first) = client
        .run(move || {
            // A UDP flow that lands on web1.
            loop {
                let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                s.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                let got = udp_ask(&s, addr).expect("answer");
                if got.starts_with("web1:") {
                    return (s, got);
                }
            }
        })
        .join()
        .expect("client thread");
    assert!(first.starts_with("web1:"));
    h.netd.ok(&["endpoint", "rm", "web1"]);
    drop(web1);
    let moved = udp_ask(&socket, addr).expect("the same UDP flow is answered");
    assert!(moved.starts_with("web2:"), "the UDP flow moved: {moved}");
    match ask(&open["web1"]) {
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
            ),
            "{e}"
        ),
        Ok(name) => panic!("the removed backend's connection answered as {name}"),
    }
    drop((web0, web2));
}

#[test]
fn a_backend_reaching_its_own_service_is_answered_by_itself() {
    let h = host();
    let web0 = backend(&h, "web0", &[]);
    let vip = service(&h, "solo", &["--backend", "web0"]);
    let (conn, greeting) = connect(&web0.ns, &vip);
    assert_eq!(
        greeting, "web0:169.254.42.1",
        "hairpin: SNAT to the hairpin address"
    );
    assert_eq!(ask(&conn).expect("open"), "web0");
    // The client's own address is never the one it talks to.
    assert_ne!(web0.ip, vip);
}

#[test]
fn bad_service_requests_are_refused_with_the_reason_and_change_nothing() {
    let h = host();
    let _web0 = backend(&h, "web0", &["app=web"]);
    let vip = service(
        &h,
        "web",
        &["--selector", "app=web", "--vip", "10.31.0.100"],
    );
    assert_eq!(vip, "10.31.0.100");
    let before = h.netd.ok(&["service", "ls", "--json"]);
    for (args, expected) in [
        (
            vec!["--vip", "10.31.0.100"],
            "vip: address 10.31.0.100 is already in use",
        ),
        (vec!["--vip", "10.99.0.1"], "outside the subnet"),
        (vec!["--port", "80"], "80/tcp is given twice"),
        (
            vec!["--selector", "app"],
            "selector: \"app\" is not key=value",
        ),
        (vec!["--weight", "web0=0"], "weights: web0=0"),
        (vec!["--backend", "ghost"], "no endpoint named \"ghost\""),
    ] {
        let mut all = vec![
            "service",
            "create",
            "other",
            "--network",
            "n1",
            "--port",
            "80",
        ];
        all.extend(args);
        let (ok, _, err) = h.netd.cli(&all);
        assert!(!ok && err.contains(expected), "{all:?}: {err}");
    }
    let (ok, _, err) = h.netd.cli(&[
        "service",
        "create",
        "x",
        "--network",
        "nope",
        "--port",
        "80",
    ]);
    assert!(!ok && err.contains("no network named \"nope\""), "{err}");
    // The VIP is no endpoint's to take.
    let sandbox = NetNs::new("ndS");
    let (ok, _, err) = h.netd.cli(&[
        "endpoint",
        "create",
        "squatter",
        "--network",
        "n1",
        "--netns",
        sandbox.path().to_str().expect("path"),
        "--ip",
        "10.31.0.100",
    ]);
    assert!(
        !ok && err.contains("is the VIP of service \"web\""),
        "{err}"
    );
    let (ok, _, err) = h.netd.cli(&["network", "rm", "n1"]);
    assert!(!ok && err.contains("still has"), "{err}");
    assert_eq!(h.netd.ok(&["service", "ls", "--json"]), before);
    h.netd.ok(&["service", "rm", "web"]);
    assert_eq!(h.netd.ok(&["service", "ls", "--json"]).trim(), "[]");
}

fn flows(h: &Host, filter: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["conntrack", "ls", "--json"];
    args.extend_from_slice(filter);
    serde_json::from_str(&h.netd.ok(&args)).expect("JSON")
}

#[test]
fn conntrack_lists_filters_expires_and_flushes_flows_without_breaking_them() {
    let config = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(config.path(), "[conntrack]\nudp = 1\nudp-unreplied = 1\n").expect("write");
    let h = host_with(&["--config", config.path().to_str().expect("path")]);
    let web0 = backend(&h, "web0", &["app=web"]);
    let client = NetNs::new("ndC");
    let client_ip = h.netd.endpoint("client", "n1", &client, &[]);
    let vip = service(&h, "web", &["--selector", "app=web"]);
    let (conn, _) = connect(&client, &vip);
    assert_eq!(ask(&conn).expect("open"), "web0");
    udp_flows(&client, &vip, 2);

    let all = flows(&h, &[]);
    assert_eq!(all.len(), 3, "{all:?}");
    let tcp: Vec<&serde_json::Value> = all.iter().filter(|f| f["protocol"] == "tcp").collect();
    assert_eq!(tcp.len(), 1);
    assert_eq!(tcp[0]["state"], "established");
    assert_eq!(tcp[0]["service"], "web");
    assert_eq!(tcp[0]["vip"], format!("{vip}:80"));
    assert_eq!(tcp[0]["backend"], format!("{}:8080", web0.ip));
    assert!(tcp[0]["client"]
        .as_str()
        .is_some_and(|c| c.starts_with(&client_ip)));
    assert_eq!(flows(&h, &["--backend", "web0"]).len(), 3);
    assert_eq!(flows(&h, &["--backend", "10.31.0.250"]).len(), 0);
    let (ok, _, err) = h.netd.cli(&["conntrack", "flush", "--service", "nope"]);
    assert!(!ok && err.contains("no service named \"nope\""), "{err}");

    // UDP idles out after 1 s (swept every 5 s); established TCP stays.
    netd_tests::cluster::eventually("UDP flows expire", || flows(&h, &[]).len() == 1);
    let scrape = h.netd.scrape(&h.ns).expect("metrics");
    assert!(
        metric(&scrape, "netd_conntrack_removed_total{reason=\"expired\"}").unwrap_or(0) >= 2,
        "{scrape}"
    );
    assert_eq!(metric(&scrape, "netd_conntrack_entries"), Some(1));
    assert!(metric(&scrape, "netd_conntrack_capacity").unwrap_or(0) > 0);
    // Per service and backend, from the sweeps: 1 TCP + 2 UDP flows, and
    // at least their first packets.
    let labels = format!("{{backend=\"{}\",service=\"web\"}}", web0.ip);
    assert_eq!(
        metric(&scrape, &format!("netd_service_connections_total{labels}")),
        Some(3),
        "{scrape}"
    );
    assert!(metric(&scrape, &format!("netd_service_packets_total{labels}")).unwrap_or(0) >= 3);
    assert!(metric(&scrape, &format!("netd_service_bytes_total{labels}")).unwrap_or(0) > 0);

    // A flushed flow is balanced again on its next packet: with one
    // backend, to the same one, and the connection goes on.
    assert!(h
        .netd
        .ok(&["conntrack", "flush", "--service", "web"])
        .starts_with("1 "));
    assert!(flows(&h, &[]).is_empty());
    assert_eq!(ask(&conn).expect("still open"), "web0");
    assert_eq!(flows(&h, &[]).len(), 1, "tracked again");
}

/// Three backends, a client, service "web", and one connection whose
/// backend (`first`) is then drained: only conntrack keeps the connection
/// there, so a lost or evicted conntrack entry would reset it.
struct Pinned {
    backends: Vec<Backend>,
    client: NetNs,
    vip: String,
    conn: TcpStream,
    first: String,
}

fn pinned_connection(h: &Host) -> Pinned {
    let backends: Vec<Backend> = (0..3)
        .map(|i| backend(h, &format!("web{i}"), &["app=web"]))
        .collect();
    let client = NetNs::new("ndC");
    h.netd.endpoint("client", "n1", &client, &[]);
    let vip = service(h, "web", &["--selector", "app=web"]);
    let (conn, greeting) = connect(&client, &vip);
    let first = backend_of(&greeting).to_string();
    h.netd.ok(&["service", "update", "web", "--drain", &first]);
    Pinned {
        backends,
        client,
        vip,
        conn,
        first,
    }
}

#[test]
fn a_connection_through_the_vip_survives_netd_restarts_and_kill_9() {
    let mut h = host();
    let Pinned {
        backends,
        client,
        vip,
        conn,
        first,
    } = pinned_connection(&h);

    // The client talks every 20 ms while netd is restarted, then killed.
    let talker = Talker::start(&conn);
    std::thread::sleep(Duration::from_millis(300));
    h.netd.stop();
    std::thread::sleep(Duration::from_millis(300));
    h.netd.restart(&h.ns);
    std::thread::sleep(Duration::from_millis(300));
    h.netd.kill();
    // With no netd at all, a new flow still finds the service program
    // through the pinned tail-call slots.
    let while_dead = connect(&client, &vip).1;
    std::thread::sleep(Duration::from_millis(300));
    h.netd.restart(&h.ns);
    std::thread::sleep(Duration::from_millis(300));
    let answers = talker.finish();
    assert!(answers.len() > 40, "{} exchanges", answers.len());
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(
            a.as_deref(),
            Ok(first.as_str()),
            "exchange {i} of {}",
            answers.len()
        );
    }
    // The flow is still tracked to its backend (beside the closed one made
    // while netd was dead), and new ones still work.
    let tracked = flows(&h, &["--service", "web"]);
    let open: Vec<_> = tracked
        .iter()
        .filter(|f| f["state"] == "established")
        .collect();
    assert_eq!(open.len(), 1, "{tracked:?}");
    let fresh = tcp_connections(&client, &vip, 30);
    assert!(shares(&fresh).len() >= 2, "{:?}", shares(&fresh));
    assert!(
        backends.iter().any(|b| backend_of(&while_dead) == b.name),
        "a new connection while netd was dead: {while_dead}"
    );
    drop(backends);
}

#[test]
fn a_full_conntrack_evicts_idle_flows_warns_and_keeps_active_ones_across_a_resize() {
    let mut h = host_with(&["--conntrack-max-entries", "1024"]);
    let Pinned {
        backends,
        client,
        vip,
        conn,
        first,
    } = pinned_connection(&h);

    // 3,000 new UDP flows through a map of 1,024: every one is answered,
    // and the connection, used between them, keeps its backend.
    for round in 0..60 {
        assert_eq!(udp_flows(&client, &vip, 50).len(), 50);
        assert_eq!(
            ask(&conn).map_err(|e| e.to_string()).as_deref(),
            Ok(first.as_str()),
            "after {} flows",
            (round + 1) * 50
        );
    }
    // A full LRU shows most of its entries, not all: each CPU keeps some
    // free, evicting to refill them.
    netd_tests::cluster::eventually("the fill is reported", || {
        let scrape = h.netd.scrape(&h.ns).unwrap_or_default();
        metric(&scrape, "netd_conntrack_capacity") == Some(1024)
            && metric(&scrape, "netd_conntrack_entries").is_some_and(|n| n >= 768)
    });
    netd_tests::cluster::eventually("a warning in the log", || {
        h.netd.log().contains("conntrack is at least 90% full")
    });

    // A bigger conntrack at the next start: the flows are carried over.
    h.netd.stop();
    h.netd.set_flag("--conntrack-max-entries", "4096");
    h.netd.restart(&h.ns);
    assert_eq!(ask(&conn).expect("open after the resize"), first);
    netd_tests::cluster::eventually("the new capacity", || {
        let scrape = h.netd.scrape(&h.ns).unwrap_or_default();
        metric(&scrape, "netd_conntrack_capacity") == Some(4096)
    });
    drop(backends);
}

#[test]
fn the_clusters_map_sizes_are_settings_a_change_carries_the_entries_over() {
    let mut h = host_with(&["--max-endpoints", "2048", "--max-hosts", "64"]);
    let Pinned {
        backends,
        client,
        vip,
        conn,
        first,
    } = pinned_connection(&h);
    let capacities = |h: &Host| {
        [
            "NETD_ENDPOINTS",
            "NETD_IPCACHE",
            "NETD_HOSTS",
            "NETD_HOST_BY_IP",
        ]
        .map(|m| h.netd.map_capacity(m))
    };
    assert_eq!(capacities(&h), [2048, 2048 + 16_384, 64, 64]);
    let endpoints = h.netd.map_entries("NETD_ENDPOINTS");
    assert_eq!(endpoints, 4, "three backends and the client");

    // Bigger at the next start: the entries are carried over, and the
    // connection keeps its backend.
    h.netd.stop();
    h.netd.set_flag("--max-endpoints", "8192");
    h.netd.restart(&h.ns);
    assert_eq!(ask(&conn).expect("open after the resize"), first);
    assert_eq!(capacities(&h), [8192, 8192 + 16_384, 64, 64]);
    assert_eq!(h.netd.map_entries("NETD_ENDPOINTS"), endpoints);
    assert!(shares(&tcp_connections(&client, &vip, 30)).len() >= 2);

    // Out of range: refused with the range, the datapath left running.
    h.netd.stop();
    h.netd.set_flag("--max-endpoints", "100");
    h.netd.respawn();
    assert!(!h.netd.wait_exit(Duration::from_secs(20)).success());
    assert!(
        h.netd
            .log()
            .contains("max-endpoints = 100: from 1024 to 4194304"),
        "{}",
        h.netd.log()
    );
    assert_eq!(ask(&conn).expect("open while netd is down"), first);
    h.netd.set_flag("--max-endpoints", "8192");
    h.netd.restart(&h.ns);
    drop(backends);
}

#[test]
fn a_port_without_backends_is_refused_and_a_backends_icmp_error_reaches_the_client() {
    let h = host();
    let client = NetNs::new("ndC");
    h.netd.endpoint("client", "n1", &client, &[]);
    let empty = service(&h, "empty", &["--selector", "app=none"]);

    // No backend: TCP is reset at once and UDP gets a port unreachable,
    // where a silent drop would leave both to time out.
    let addr: SocketAddr = format!("{empty}:80").parse().expect("address");
    let tcp = client
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(|_| ()))
        .join()
        .expect("client thread");
    assert_eq!(
        tcp.map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused),
        "TCP to a port without backends"
    );
    assert_eq!(
        udp_connected(&client, &empty, 53),
        Err(ErrorKind::ConnectionRefused),
        "UDP to a port without backends"
    );
    let scrape = h.netd.scrape(&h.ns).expect("metrics");
    let refused = "netd_drops_total{hook=\"tc_endpoint\",reason=\"no_backend\"}";
    assert!(metric(&scrape, refused).unwrap_or(0) >= 2, "{refused}");

    // A backend with nothing on the target port answers with its own
    // port unreachable, about `client → backend:5999`: it reaches the
    // client's socket only if translated back to `client → VIP:54`.
    let web0 = backend(&h, "web0", &["app=web"]);
    let vip = h
        .netd
        .ok(&[
            "service",
            "create",
            "closed",
            "--network",
            "n1",
            "--port",
            "54:5999/udp",
            "--port",
            "53:5353/udp",
            "--selector",
            "app=web",
        ])
        .split_whitespace()
        .nth(1)
        .expect("VIP printed")
        .to_string();
    assert!(
        udp_connected(&client, &vip, 53).is_ok_and(|a| a.starts_with("web0:")),
        "the open port answers"
    );
    assert_eq!(
        udp_connected(&client, &vip, 54),
        Err(ErrorKind::ConnectionRefused),
        "the backend's ICMP error, translated"
    );
    // The backend as its own client (hairpin): its own port unreachable,
    // sent to the hairpin address, comes back about `web0 → VIP:54`.
    assert_eq!(
        udp_connected(&web0.ns, &vip, 54),
        Err(ErrorKind::ConnectionRefused),
        "a hairpin flow's ICMP error, translated"
    );
}

/// The backend addresses `client`'s affinities name
/// in the pinned `NETD_AFFINITY`, read from the pin as any tool would.
fn pinned_affinity(h: &Host, client: &str) -> Vec<String> {
    let map = aya::maps::MapData::from_pin(h.pins.layout.map(map_names::NETD_AFFINITY))
        .expect("NETD_AFFINITY is pinned");
    let map = aya::maps::Map::HashMap(map);
    let affinity: aya::maps::HashMap<_, AffinityKey, AffinityEntry> =
        aya::maps::HashMap::try_from(map).expect("a hash map");
    let client: std::net::Ipv4Addr = client.parse().expect("address");
    affinity
        .iter()
        .flatten()
        .filter(|(k, _)| k.client == client.octets())
        .map(|(_, a)| std::net::Ipv4Addr::from(a.backend).to_string())
        .collect()
}

#[test]
fn client_ip_affinity_keeps_a_clients_connections_on_one_backend_through_kill_9_until_turned_off() {
    let mut h = host();
    let backends: Vec<Backend> = (0..3)
        .map(|i| backend(&h, &format!("web{i}"), &["app=web"]))
        .collect();
    let client = NetNs::new("ndC");
    let client_ip = h.netd.endpoint("client", "n1", &client, &[]);
    let vip = service(
        &h,
        "web",
        &["--selector", "app=web", "--affinity", "client-ip:1m"],
    );
    let listed = h.netd.ok(&["service", "ls"]);
    assert!(listed.contains("client-ip:60s"), "{listed}");

    let answers: Vec<String> = tcp_connections(&client, &vip, 30)
        .into_iter()
        .chain(udp_flows(&client, &vip, 30))
        .collect();
    let count = shares(&answers);
    assert_eq!(count.len(), 1, "60 flows, one backend: {count:?}");
    let sticky = count.keys().next().expect("a backend").clone();
    let sticky_ip = backends
        .iter()
        .find(|b| b.name == sticky)
        .map(|b| b.ip.clone())
        .expect("one of ours");
    assert_eq!(pinned_affinity(&h, &client_ip), [sticky_ip.as_str()]);

    // netd killed, then started again: the affinity is pinned state.
    h.netd.kill();
    let while_dead = shares(&tcp_connections(&client, &vip, 10));
    h.netd.restart(&h.ns);
    let after = shares(&tcp_connections(&client, &vip, 10));
    assert_eq!(
        while_dead.keys().collect::<Vec<_>>(),
        [&sticky],
        "netd dead"
    );
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        [&sticky],
        "netd restarted"
    );
    assert_eq!(pinned_affinity(&h, &client_ip), [sticky_ip.as_str()]);

    // Its backend drains: the client moves to one other backend, now for
    // 1 s at a time.
    h.netd.ok(&[
        "service",
        "update",
        "web",
        "--drain",
        &sticky,
        "--affinity",
        "client-ip:1",
    ]);
    let moved = shares(&tcp_connections(&client, &vip, 30));
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(!moved.contains_key(&sticky), "{moved:?}");

    // Idle past its 1 s, the client's affinity is swept.
    netd_tests::cluster::eventually("the affinity is swept", || {
        pinned_affinity(&h, &client_ip).is_empty()
    });
    let scrape = h.netd.scrape(&h.ns).expect("metrics");
    assert!(
        metric(
            &scrape,
            "netd_conntrack_removed_total{reason=\"affinity_expired\"}"
        )
        .unwrap_or(0)
            >= 1,
        "{scrape}"
    );

    // Turned off, the client's connections are balanced again.
    h.netd.ok(&[
        "service",
        "update",
        "web",
        "--affinity",
        "none",
        "--undrain",
        &sticky,
    ]);
    let tcp = tcp_connections(&client, &vip, 300);
    let all: Vec<&Backend> = backends.iter().collect();
    assert_balanced("300 connections without affinity", &tcp, &all);
    let (ok, _, err) = h
        .netd
        .cli(&["service", "update", "web", "--affinity", "client-ip:0"]);
    assert!(!ok && err.contains("affinity:"), "{err}");
}
