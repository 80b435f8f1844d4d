//! netd as Docker's network and IPAM driver, driven by a real dockerd the
//! test starts (its own roots and socket; containers from an imported
//! busybox). One test: dockerd finds plugins at one fixed path,
//! /run/docker/plugins/netd.sock, so only one netd can serve it at a time.

use std::{process::Command, time::Duration};

use netd_tests::{
    docker::{Docker, IMAGE},
    fixture::TempPins,
    netns::NetNs,
    process::{metric, Netd},
};

const PLUGIN_FLAG: &str = "--docker-plugin-socket=/run/docker/plugins/netd.sock";

const UPLINK_IP: &str = "10.99.0.1";
/// An address only the client namespace has: "the world", with a web
/// server and a resolver that names it `outside.test`.
const WORLD: &str = "203.0.113.30";
const CLIENT_IP: &str = "10.99.0.2";
const PUBLISHED: u16 = 28080;

/// The client's connection to the published port: what the container
/// said, and the container's view of who connected.
fn connect_published(docker: &Docker, client: &NetNs) -> (String, String) {
    connect_published_at(docker, client, UPLINK_IP)
}

fn connect_published_at(docker: &Docker, client: &NetNs, ip: &str) -> (String, String) {
    docker.published_answer(client, ip, PUBLISHED, "web")
}

/// `docker run -p` on a netd network: published at the uplink by netd's
/// XDP with mode=host, the client's address kept, no iptables or nft rule
/// and no docker-proxy.
fn publishes_with_docker_run_p(docker: &Docker, netd: &Netd, client: &NetNs) {
    let rules_before = netd_tests::firewall();
    let refused = docker.run(&[
        "run",
        "-d",
        "--name",
        "web-any",
        "--network",
        "n1",
        "-p",
        "80",
        IMAGE,
        "/bin/sleep",
        "600",
    ]);
    assert!(
        !refused.status.success(),
        "-p without a host port was accepted"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("fixed host ports only"), "{stderr}");
    let _ = docker.run(&["rm", "-f", "web-any"]);

    let serve = "while true; do echo hello-from-web | nc -l -p 80; done";
    run_container_cmd(
        docker,
        "web",
        "n1",
        &["-p", &format!("{PUBLISHED}:80")],
        &["/bin/sh", "-c", serve],
    );
    let web = docker.ip("web", "n1");
    let services = netd.ok(&["service", "ls"]);
    assert!(
        services.contains(&format!("{PUBLISHED}:80/tcp(host)")),
        "{services}"
    );
    let (said, peers) = connect_published(docker, client);
    assert_eq!(said, "hello-from-web", "the published port");
    assert!(
        peers.contains(&format!("{web}:80")) && peers.contains(&format!("{CLIENT_IP}:")),
        "the container sees the client's own address:\n{peers}"
    );
    // What Docker shows: the daemon reads a driver's port map only as its
    // own Go types, which a remote driver's JSON never decodes to, so
    // `docker port` is empty; the container's config keeps the request.
    assert_eq!(docker.ok(&["port", "web"]), "");
    let bindings = docker.ok(&["inspect", "-f", "{{json .HostConfig.PortBindings}}", "web"]);
    assert!(
        bindings.contains(&format!("\"HostPort\":\"{PUBLISHED}\"")),
        "{bindings}"
    );

    // From the host itself too, on loopback and on its uplink address.
    let host = NetNs::host();
    for ip in ["127.0.0.1", UPLINK_IP] {
        let (said, _) = connect_published_at(docker, &host, ip);
        assert_eq!(said, "hello-from-web", "from the host to {ip}:{PUBLISHED}");
    }

    assert_eq!(
        netd_tests::firewall(),
        rules_before,
        "iptables or nft rules were made"
    );
    let proxies = Command::new("pgrep")
        .arg("docker-proxy")
        .output()
        .expect("pgrep");
    assert!(proxies.stdout.is_empty(), "a docker-proxy runs");

    // A stopped container unpublishes; started again, it publishes again.
    docker.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(netd.ok(&["service", "ls", "--json"]).trim(), "[]");
    let (said, _) = connect_published(docker, client);
    assert!(
        said.starts_with("no answer"),
        "a stopped container answered: {said}"
    );
    docker.ok(&["start", "web"]);
    let (said, _) = connect_published(docker, client);
    assert_eq!(said, "hello-from-web", "published again after a start");
    docker.ok(&["rm", "-f", "web"]);
    assert_eq!(netd.ok(&["service", "ls", "--json"]).trim(), "[]");
}

/// `-o netd.publish-allow=` on a network: the `-p` ports of its
/// containers take only those sources; others are dropped and counted.
fn a_networks_publish_allow_guards_its_p_ports(docker: &Docker, netd: &Netd, client: &NetNs) {
    const GUARDED: u16 = 28082;
    let bad = docker.create_netd_network(
        "nope",
        "10.75.0.0/24",
        &["-o", "netd.publish-allow=nonsense"],
    );
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success()
            && why.contains("netd.publish-allow")
            && why.contains("not an IPv4 address or CIDR"),
        "{why}"
    );
    let serve = "while true; do echo hello-from-guarded | nc -l -p 80; done";
    for (network, subnet, allow, answers) in [
        ("elsewhere", "10.74.0.0/24", "192.0.2.0/24", false),
        ("ours", "10.76.0.0/24", CLIENT_IP, true),
    ] {
        docker.netd_network(
            network,
            subnet,
            &["-o", &format!("netd.publish-allow={allow}")],
        );
        run_container_cmd(
            docker,
            "guarded",
            network,
            &["-p", &format!("{GUARDED}:80")],
            &["/bin/sh", "-c", serve],
        );
        let services = netd.ok(&["service", "ls"]);
        assert!(
            services.contains(&format!("{GUARDED}:80/tcp(host),allow={allow}")),
            "{services}"
        );
        let host = NetNs::host();
        let refused_before = metric(
            &netd.scrape(&host).expect("metrics"),
            "netd_drops_total{hook=\"tc_uplink\",reason=\"source_refused\"}",
        )
        .unwrap_or(0);
        let (said, _) = docker.published_answer(client, UPLINK_IP, GUARDED, "guarded");
        let refused_after = metric(
            &netd.scrape(&host).expect("metrics"),
            "netd_drops_total{hook=\"tc_uplink\",reason=\"source_refused\"}",
        )
        .unwrap_or(0);
        if answers {
            assert_eq!(said, "hello-from-guarded", "allow={allow}");
        } else {
            assert!(said.starts_with("no answer"), "allow={allow}: {said}");
            assert!(refused_after > refused_before, "the refusal is counted");
        }
        docker.ok(&["rm", "-f", "guarded"]);
        docker.network_rm(network);
    }
}

fn run_container_cmd(docker: &Docker, name: &str, network: &str, extra: &[&str], cmd: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name, "--network", network];
    args.extend_from_slice(extra);
    args.push(IMAGE);
    args.extend_from_slice(cmd);
    docker.ok(&args);
}

fn run_container(docker: &Docker, name: &str, network: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name, "--network", network];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "/bin/sleep", "600"]);
    docker.ok(&args);
}

fn pings(docker: &Docker, from: &str, ip: &str) -> bool {
    docker
        .run(&["exec", from, "ping", "-c", "2", "-W", "1", ip])
        .status
        .success()
}

/// A container on a netd network reaches a server in the world by name:
/// Docker's resolver asks the world's resolver (given with `--dns`), both
/// masqueraded to the uplink's address, which the server sees. On an
/// `--internal` network neither leaves (counted); `-o
/// com.docker.network.driver.mtu` sets the containers' MTU.
fn containers_reach_the_world_unless_internal(docker: &Docker, netd: &Netd, client: &NetNs) {
    let world: std::net::Ipv4Addr = WORLD.parse().expect("address");
    let _resolver = netd_tests::dns::Upstream::start(client, world, &[("outside.test", world)]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    netd_tests::services::serve(client, "outside", stop.clone());
    let fetch = |network: &str| {
        docker.run(&[
            "run",
            "--rm",
            "--network",
            network,
            "--dns",
            WORLD,
            IMAGE,
            "/bin/sh",
            "-c",
            "echo | nc -w 3 outside.test 8080",
        ])
    };
    let out = fetch("n1");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let said = stdout.lines().next().unwrap_or_default();
    assert_eq!(
        said,
        format!("outside:{UPLINK_IP}"),
        "the world answers the uplink's address: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nat = netd.ok(&["conntrack", "ls", "--nat"]);
    assert!(
        nat.contains(&format!("{WORLD}:53")),
        "the resolver's query:\n{nat}"
    );

    docker.netd_network(
        "n5",
        "10.75.0.0/24",
        &["--internal", "-o", "com.docker.network.driver.mtu=1400"],
    );
    let out = fetch("n5");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("outside:"),
        "an internal network reached the world"
    );
    let internal = "netd_drops_total{hook=\"tc_endpoint\",reason=\"internal\"}";
    let dropped = metric(&netd.scrape(&NetNs::host()).expect("metrics"), internal).unwrap_or(0);
    assert!(dropped >= 1, "internal drops {dropped}");
    let mtu = docker.run(&[
        "run",
        "--rm",
        "--network",
        "n5",
        IMAGE,
        "cat",
        "/sys/class/net/eth0/mtu",
    ]);
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1400");
    docker.network_rm("n5");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn host_veths() -> usize {
    let out = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .matches(": ndh")
        .count()
}

#[test]
fn docker_networks_through_netd() {
    let _docker = netd_tests::docker::exclusive();
    let host = NetNs::host();
    let pins = TempPins::new();
    let port = netd_tests::free_port();
    // The host's uplink: a veth to a client namespace outside the host.
    let client = NetNs::new("ndDc");
    let uplink = netd_tests::unique_name("ndDu");
    netd_tests::netns::sh(
        "ip",
        &[
            "link",
            "add",
            &uplink,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &client.name,
        ],
    );
    host.ip(&["addr", "add", &format!("{UPLINK_IP}/24"), "dev", &uplink]);
    host.ip(&["link", "set", &uplink, "up"]);
    client.ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"]);
    // A plain veth: its checksums arrive partial, and the uplink takes TC.
    client.ip(&["link", "set", "eth0", "up"]);
    let uplink_flag = format!("--uplink={uplink}");
    // Masquerading out of that uplink only (never the machine's own NIC);
    // "the world" is an address of the client's, routed through it.
    let egress_flag = format!("--egress-device={uplink}");
    client.ip(&["addr", "add", &format!("{WORLD}/32"), "dev", "lo"]);
    host.ip(&["route", "add", WORLD, "via", CLIENT_IP, "dev", &uplink]);
    let mut netd = Netd::start(
        &host,
        pins.layout.root(),
        port,
        &[PLUGIN_FLAG, &uplink_flag, &egress_flag],
    );
    netd.wait_ready(&host);
    let veths_before = host_veths();
    let mut docker = Docker::start();
    docker.import_busybox();

    docker.netd_network("n1", "10.71.0.0/24", &[]);
    docker.netd_network(
        "n2",
        "10.72.0.0/24",
        &[
            "--ip-range",
            "10.72.0.128/25",
            "--aux-address",
            "router=10.72.0.129",
            "-o",
            "team=blue",
        ],
    );
    // Docker's networks are netd's networks, with the options honoured.
    let nets: serde_json::Value =
        serde_json::from_str(&netd.ok(&["network", "ls", "--json"])).expect("json");
    let n2 = nets
        .as_array()
        .expect("list")
        .iter()
        .find(|n| n["subnet"] == "10.72.0.0/24")
        .expect("n2 in netd")
        .clone();
    assert_eq!(n2["ip-range"], "10.72.0.128/25");
    assert_eq!(n2["aux-addresses"]["router"], "10.72.0.129");
    assert_eq!(n2["labels"]["team"], "blue");
    let bridge = docker.create_netd_network(
        "n3",
        "10.73.0.0/24",
        &["-o", "com.docker.network.bridge.name=br9"],
    );
    assert!(
        !bridge.status.success(),
        "an unsupported driver option was accepted"
    );
    assert!(String::from_utf8_lossy(&bridge.stderr)
        .contains("option com.docker.network.bridge.name is not supported by the netd driver"));
    // A bad subnet never reaches netd's model.
    let bad = docker.create_netd_network("n4", "10.71.0.0/16", &[]);
    assert!(!bad.status.success(), "an overlapping subnet was accepted");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("overlaps"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&netd.ok(&["network", "ls", "--json"]))
            .expect("json")
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    run_container(&docker, "c1", "n1", &[]);
    run_container(&docker, "c2", "n1", &[]);
    run_container(&docker, "c3", "n2", &[]);
    let (c1, c2, c3) = (
        docker.ip("c1", "n1"),
        docker.ip("c2", "n1"),
        docker.ip("c3", "n2"),
    );
    assert_eq!(
        c3, "10.72.0.130",
        "n2 allocates inside its ip-range (.129 up), skipping the aux address .129"
    );

    assert!(pings(&docker, "c1", &c2), "c1 -> c2 on n1");
    docker.ok(&[
        "exec",
        "-d",
        "c2",
        "/bin/sh",
        "-c",
        "nc -l -p 5000 > /tmp/got",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    docker.ok(&[
        "exec",
        "c1",
        "/bin/sh",
        "-c",
        &format!("echo hello-from-c1 | nc {c2} 5000"),
    ]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        docker.ok(&["exec", "c2", "cat", "/tmp/got"]),
        "hello-from-c1",
        "TCP c1 -> c2"
    );

    let isolation = "netd_drops_total{hook=\"tc_endpoint\",reason=\"isolation\"}";
    let before = metric(&netd.scrape(&host).expect("metrics"), isolation).expect("counter");
    assert!(!pings(&docker, "c3", &c1), "c3 (n2) reached c1 (n1)");
    let after = metric(&netd.scrape(&host).expect("metrics"), isolation).expect("counter");
    assert!(
        after >= before + 2,
        "isolation drops moved by {}",
        after - before
    );

    docker.ok(&["network", "connect", "n2", "c1"]);
    assert!(pings(&docker, "c1", &c3), "c1 on both networks reaches n2");
    assert!(
        pings(&docker, "c1", &c2),
        "c1 on both networks still reaches n1"
    );
    docker.ok(&["network", "disconnect", "n2", "c1"]);
    assert!(
        !pings(&docker, "c1", &c3),
        "c1 still reaches n2 after disconnect"
    );

    run_container(&docker, "c4", "n1", &["--ip", "10.71.0.50"]);
    assert_eq!(docker.ip("c4", "n1"), "10.71.0.50");
    let taken = docker.run(&[
        "run",
        "-d",
        "--name",
        "c5",
        "--network",
        "n1",
        "--ip",
        "10.71.0.50",
        IMAGE,
        "/bin/sleep",
        "600",
    ]);
    assert!(!taken.status.success(), "a taken --ip was accepted");
    let stderr = String::from_utf8_lossy(&taken.stderr);
    assert!(stderr.contains("10.71.0.50 is already in use"), "{stderr}");
    let _ = docker.run(&["rm", "-f", "c5"]);

    // netd restarts (even killed) while containers run: traffic goes on,
    // and dockerd keeps working with the plugin.
    let pinger = docker.run(&[
        "exec",
        "-d",
        "c1",
        "/bin/sh",
        "-c",
        &format!("ping -c 40 -i 0.05 {c2} > /tmp/ping 2>&1"),
    ]);
    assert!(pinger.status.success());
    std::thread::sleep(Duration::from_millis(300));
    netd.kill();
    netd.restart(&host);
    std::thread::sleep(Duration::from_secs(3));
    let ping_log = docker.ok(&["exec", "c1", "cat", "/tmp/ping"]);
    assert!(
        ping_log.contains("40 packets received"),
        "pings lost over a netd restart:\n{ping_log}"
    );
    run_container(&docker, "c6", "n1", &[]);
    assert!(
        pings(&docker, "c6", &c1),
        "a container started after the netd restart"
    );

    // dockerd restarts: its containers stop, its networks still work.
    docker.restart_daemon();
    for c in ["c1", "c2"] {
        docker.ok(&["start", c]);
    }
    let c2 = docker.ip("c2", "n1");
    assert!(pings(&docker, "c1", &c2), "n1 after a dockerd restart");

    publishes_with_docker_run_p(&docker, &netd, &client);
    a_networks_publish_allow_guards_its_p_ports(&docker, &netd, &client);
    containers_reach_the_world_unless_internal(&docker, &netd, &client);

    // Removing everything leaves netd with nothing of it.
    for c in ["c1", "c2", "c3", "c4", "c6"] {
        docker.ok(&["rm", "-f", c]);
    }
    docker.ok(&["network", "rm", "n1", "n2"]);
    assert_eq!(netd.ok(&["network", "ls", "--json"]).trim(), "[]");
    assert_eq!(netd.ok(&["endpoint", "ls", "--json"]).trim(), "[]");
    assert_eq!(
        host_veths(),
        veths_before,
        "endpoint veths left on the host"
    );
    let status: serde_json::Value =
        serde_json::from_str(&netd.ok(&["status", "--json"])).expect("json");
    // The maps of the model: NETD_OVERLAY holds this host's own uplink
    // settings, not Docker's, and what the datapath wrote (a client's next
    // hop) goes with its flows, swept when they idle out.
    let of_the_model = |name: &str| {
        name != "NETD_OVERLAY"
            && netd_common::tables::find(name)
                .is_some_and(|t| matches!(t.owner, netd_common::tables::Owner::Control { .. }))
    };
    let entries: Vec<u64> = status["maps"]
        .as_array()
        .expect("maps")
        .iter()
        .filter(|m| m["name"].as_str().is_some_and(of_the_model))
        .map(|m| m["entries"].as_u64().expect("n"))
        .collect();
    assert!(
        entries.len() >= 7 && entries.iter().all(|n| *n == 0),
        "{status}"
    );
    drop(docker);
    let _ = netd.stop();
}
