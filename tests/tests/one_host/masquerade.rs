//! A way out: endpoints reach an "outside" namespace behind the host's
//! uplink (a plain veth, default offloads) through netd's masquerading,
//! with the uplink's address; the host's own connections to the same
//! server go on beside them; Docker's network options (internal,
//! masquerade off, unmasqueraded CIDRs, MTU) each checked with traffic.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use netd_tests::{
    fixture::TempPins,
    free_port,
    netns::{veth_between, NetNs},
    process::{metric, Netd},
    traffic::{echo_server, ping, StreamUnderway},
};

const HOST: &str = "10.99.0.1";
const OUTSIDE: &str = "10.99.0.2";
/// An address only the outside namespace has, behind the host's default
/// route: "the world".
const WORLD: &str = "203.0.113.10";
const WHO_PORT: u16 = 7070;
const UDP_PORT: u16 = 7071;
const ECHO_PORT: u16 = 7072;

pub struct World {
    pub host: NetNs,
    pub outside: NetNs,
    pub netd: Netd,
    _pins: TempPins,
}

/// A host whose `uplink0` is a plain veth to `outside`, its default route
/// through it; the outside answers TCP on 7070 with the address it sees,
/// echoes UDP on 7071 with that address, echoes TCP on 7072, and pings.
pub fn world(args: &[&str]) -> World {
    world_of(&netd_tests::process::netd_bin(), args)
}

/// The same world, served by the netd binary at `bin`.
pub fn world_of(bin: &std::path::Path, args: &[&str]) -> World {
    let host = NetNs::new("ndHm");
    let outside = NetNs::new("ndOm");
    veth_between(
        &host,
        "uplink0",
        &format!("{HOST}/24"),
        &outside,
        "eth0",
        &format!("{OUTSIDE}/24"),
    );
    host.ip(&["route", "add", "default", "via", OUTSIDE]);
    outside.ip(&["addr", "add", &format!("{WORLD}/32"), "dev", "lo"]);
    who_server(&outside, WHO_PORT);
    udp_who_server(&outside, OUTSIDE, UDP_PORT);
    udp_who_server(&outside, WORLD, UDP_PORT);
    echo_server(&outside, ECHO_PORT);
    let pins = TempPins::new();
    let mut all = vec!["--uplink", "uplink0"];
    all.extend(args);
    let mut netd = Netd::start_bin(bin, &host, pins.layout.root(), free_port(), &all);
    netd.wait_ready(&host);
    World {
        host,
        outside,
        netd,
        _pins: pins,
    }
}

/// Answers each TCP connection on `port` with the peer's address.
fn who_server(ns: &NetNs, port: u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.run(move || {
        let listener = TcpListener::bind(("0.0.0.0", port)).expect("listen");
        tx.send(()).expect("ready");
        for mut conn in listener.incoming().map_while(Result::ok) {
            if let Ok(peer) = conn.peer_addr() {
                let _ = conn.write_all(peer.to_string().as_bytes());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("server ready");
}

/// Answers each UDP datagram to `ip:port` with the sender's address (from
/// `ip`: a socket bound to 0.0.0.0 would answer from its route's source).
fn udp_who_server(ns: &NetNs, ip: &'static str, port: u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.run(move || {
        let socket = UdpSocket::bind((ip, port)).expect("bind");
        tx.send(()).expect("ready");
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(from.to_string().as_bytes(), from);
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("server ready");
}

/// The address the outside saw a TCP connection from `ns` come from, the
/// connection bound to `source_port` (0: any).
pub fn seen_over_tcp(ns: &NetNs, to: &str, source_port: u16) -> Option<SocketAddr> {
    let addr: SocketAddr = format!("{to}:{WHO_PORT}").parse().expect("address");
    ns.run(move || {
        let conn = if source_port == 0 {
            TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?
        } else {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )
            .ok()?;
            socket.set_reuse_address(true).ok()?;
            socket
                .bind(&SocketAddr::from(([0, 0, 0, 0], source_port)).into())
                .ok()?;
            socket
                .connect_timeout(&addr.into(), Duration::from_secs(3))
                .ok()?;
            socket.into()
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
        let mut text = String::new();
        (&conn).read_to_string(&mut text).ok()?;
        text.parse().ok()
    })
    .join()
    .expect("client thread")
}

/// The address the outside saw a UDP datagram from `ns` come from.
pub fn seen_over_udp(ns: &NetNs, to: &str) -> Option<SocketAddr> {
    let addr: SocketAddr = format!("{to}:{UDP_PORT}").parse().expect("address");
    ns.run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            socket.send_to(b"who", addr).ok()?;
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                return std::str::from_utf8(&buf[..n]).ok()?.parse().ok();
            }
        }
        None
    })
    .join()
    .expect("client thread")
}

fn drops(w: &World, reason: &str) -> u64 {
    metric(
        &w.netd.scrape(&w.host).expect("metrics"),
        &format!("netd_drops_total{{hook=\"tc_endpoint\",reason=\"{reason}\"}}"),
    )
    .unwrap_or(0)
}

/// TCP, UDP and ping from two endpoints reach the outside, which sees the
/// uplink's address; `netd status` and `conntrack ls --nat` say so.
#[test]
fn endpoints_reach_the_outside_with_the_uplinks_address() {
    let w = world(&[]);
    w.netd
        .ok(&["network", "create", "n1", "--subnet", "10.44.0.0/24"]);
    let (a, b) = (NetNs::new("ndAm"), NetNs::new("ndBm"));
    w.netd.endpoint("a", "n1", &a, &[]);
    w.netd.endpoint("b", "n1", &b, &[]);
    let status = w.netd.ok(&["status"]);
    assert!(status.contains("masquerade out of uplink0"), "{status}");
    for to in [OUTSIDE, WORLD] {
        let seen = seen_over_tcp(&a, to, 0).expect("TCP to the outside");
        assert_eq!(seen.ip().to_string(), HOST, "TCP to {to}");
        let seen = seen_over_udp(&b, to).expect("UDP to the outside");
        assert_eq!(seen.ip().to_string(), HOST, "UDP to {to}");
        assert!(ping(&a, to, 2), "ping {to}");
    }
    let nat = w.netd.ok(&["conntrack", "ls", "--nat"]);
    for proto in ["tcp", "udp", "icmp"] {
        assert!(nat.contains(proto), "{proto} in\n{nat}");
    }
    assert!(nat.contains(&format!("{HOST}:")), "{nat}");
}

/// Opens a TCP connection from `ns` to the outside's echo server, bound
/// to `source_port` (0: any), and keeps it.
fn hold_echo(ns: &NetNs, source_port: u16) -> TcpStream {
    let addr: SocketAddr = format!("{WORLD}:{ECHO_PORT}").parse().expect("address");
    ns.run(move || {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("socket");
        socket.set_reuse_address(true).expect("reuse");
        socket
            .bind(&SocketAddr::from(([0, 0, 0, 0], source_port)).into())
            .expect("bind");
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(3))
            .expect("connect to the outside's echo");
        let conn: TcpStream = socket.into();
        conn.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        conn
    })
    .join()
    .expect("client thread")
}

fn echoes(mut conn: &TcpStream, what: &str) {
    conn.write_all(what.as_bytes()).expect("send");
    let mut back = vec![0u8; what.len()];
    conn.read_exact(&mut back).expect("echo");
    assert_eq!(back, what.as_bytes());
}

/// The peers the outside's echo server has connections with.
fn echo_peers(w: &World) -> Vec<String> {
    let out = w
        .outside
        .exec("ss", &["-Htn", "state", "established", "( sport = :7072 )"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

/// Two endpoints on the same source port and a process of the host
/// itself talk to one outside server at once: three connections from the
/// uplink's address, on three ports, each echoing its own bytes.
#[test]
fn two_endpoints_on_one_source_port_and_the_host_share_an_outside_server() {
    let w = world(&[]);
    w.netd
        .ok(&["network", "create", "n1", "--subnet", "10.44.0.0/24"]);
    let (a, b) = (NetNs::new("ndAm"), NetNs::new("ndBm"));
    w.netd.endpoint("a", "n1", &a, &[]);
    w.netd.endpoint("b", "n1", &b, &[]);
    let from_a = hold_echo(&a, 40000);
    let from_b = hold_echo(&b, 40000);
    let from_host = hold_echo(&w.host, 0);
    let peers = echo_peers(&w);
    assert_eq!(peers.len(), 3, "{peers:?}");
    assert!(
        peers.iter().all(|p| p.starts_with(&format!("{HOST}:"))),
        "{peers:?}"
    );
    let distinct: std::collections::BTreeSet<&String> = peers.iter().collect();
    assert_eq!(distinct.len(), 3, "{peers:?}");
    for (conn, what) in [
        (&from_a, "from a"),
        (&from_b, "from b"),
        (&from_host, "from the host"),
    ] {
        echoes(conn, what);
    }
}

/// 10,000 UDP flows from one endpoint to one outside server at once, each
/// answered; the NAT table and its metric count them.
#[test]
fn ten_thousand_concurrent_flows_are_each_answered() {
    const FLOWS: usize = 10_000;
    let w = world(&[]);
    w.netd
        .ok(&["network", "create", "n1", "--subnet", "10.44.0.0/24"]);
    let a = NetNs::new("ndAm");
    w.netd.endpoint("a", "n1", &a, &[]);
    let to: SocketAddr = format!("{WORLD}:{UDP_PORT}").parse().expect("address");
    let answered = a
        .run(move || {
            raise_open_files(FLOWS as u64 + 1024);
            let sockets: Vec<UdpSocket> = (0..FLOWS)
                .map(|_| {
                    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    s.set_nonblocking(true).expect("nonblocking");
                    s
                })
                .collect();
            let mut answered = vec![false; FLOWS];
            let mut buf = [0u8; 64];
            for _round in 0..5 {
                for (i, s) in sockets.iter().enumerate() {
                    if !answered[i] {
                        let _ = s.send_to(b"who", to);
                    }
                    // Paced: the server answers one at a time.
                    if i % 500 == 499 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
                for (i, s) in sockets.iter().enumerate() {
                    while let Ok((n, _)) = s.recv_from(&mut buf) {
                        answered[i] |= buf[..n].starts_with(HOST.as_bytes());
                    }
                }
                if answered.iter().all(|a| *a) {
                    break;
                }
            }
            answered.iter().filter(|a| **a).count()
        })
        .join()
        .expect("client thread");
    assert_eq!(answered, FLOWS, "flows answered");
    let json = w.netd.ok(&["conntrack", "ls", "--nat", "--json"]);
    let flows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("json");
    assert!(flows.len() >= FLOWS, "{} NAT flows", flows.len());
    netd_tests::cluster::eventually("the NAT metric counts the flows", || {
        metric(
            &w.netd.scrape(&w.host).unwrap_or_default(),
            "netd_nat_entries",
        )
        .is_some_and(|n| n >= FLOWS as u64)
    });
}

fn raise_open_files(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// With four ports to hand out, four flows to one server get them; the
/// fifth is a counted drop with a log line, and the four go on.
#[test]
fn exhausted_ports_are_a_counted_drop_and_established_flows_live_on() {
    let w = world(&["--masquerade-ports", "61000-61003"]);
    w.netd
        .ok(&["network", "create", "n1", "--subnet", "10.44.0.0/24"]);
    let a = NetNs::new("ndAm");
    w.netd.endpoint("a", "n1", &a, &[]);
    let to: SocketAddr = format!("{WORLD}:{UDP_PORT}").parse().expect("address");
    let (kept, fifth) = a
        .run(move || {
            let ask = |s: &UdpSocket| {
                s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
                let mut buf = [0u8; 64];
                for _ in 0..3 {
                    s.send_to(b"who", to).ok()?;
                    if let Ok((n, _)) = s.recv_from(&mut buf) {
                        return String::from_utf8(buf[..n].to_vec()).ok();
                    }
                }
                None
            };
            let four: Vec<UdpSocket> = (0..4)
                .map(|_| UdpSocket::bind("0.0.0.0:0").expect("bind"))
                .collect();
            let seen: Vec<Option<String>> = four.iter().map(&ask).collect();
            let fifth = ask(&UdpSocket::bind("0.0.0.0:0").expect("bind"));
            let again: Vec<Option<String>> = four.iter().map(&ask).collect();
            ((seen, again), fifth)
        })
        .join()
        .expect("client thread");
    let (seen, again) = kept;
    for s in seen.iter().chain(&again) {
        let s = s.as_deref().expect("an established flow is answered");
        let port: u16 = s
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        assert!((61000..=61003).contains(&port), "{s}");
    }
    assert_eq!(fifth, None, "a fifth flow found a port");
    assert!(drops(&w, "nat_ports_exhausted") >= 1);
    netd_tests::cluster::eventually("a log line on the exhausted ports", || {
        w.netd.log().contains("no free source port")
    });
}

/// A transfer to the outside stays whole through a restart and a kill -9
/// of netd: the flow's NAT entries are pinned.
#[test]
fn a_transfer_to_the_outside_survives_restarts_and_kill_9() {
    let mut w = world(&[]);
    w.netd
        .ok(&["network", "create", "n1", "--subnet", "10.44.0.0/24"]);
    let a = NetNs::new("ndAm");
    w.netd.endpoint("a", "n1", &a, &[]);
    let addr: SocketAddr = format!("{WORLD}:{ECHO_PORT}").parse().expect("address");
    let stream = StreamUnderway::start(&a, addr);
    let pause = || std::thread::sleep(Duration::from_millis(400));
    pause();
    assert!(w.netd.stop().success(), "{}", w.netd.log());
    pause();
    w.netd.restart(&w.host);
    pause();
    w.netd.kill();
    pause();
    w.netd.restart(&w.host);
    pause();
    let moved = stream.finish();
    assert!(
        moved.exact && moved.echoed == moved.sent && moved.sent > 1 << 20,
        "{moved:?}"
    );
    assert_eq!(echo_peers(&w).len(), 0, "the connection closed");
}

/// `--internal`: nothing leaves (a counted drop), while the network's
/// endpoints still reach each other and the host itself.
#[test]
fn an_internal_network_has_no_way_out() {
    let w = world(&[]);
    w.netd.ok(&[
        "network",
        "create",
        "inner",
        "--subnet",
        "10.45.0.0/24",
        "--internal",
    ]);
    let (a, b) = (NetNs::new("ndAm"), NetNs::new("ndBm"));
    w.netd.endpoint("a", "inner", &a, &[]);
    let b_ip = w.netd.endpoint("b", "inner", &b, &[]);
    assert_eq!(seen_over_tcp(&a, WORLD, 0), None, "TCP left");
    assert!(!ping(&a, OUTSIDE, 1), "ping left");
    assert!(drops(&w, "internal") >= 2);
    assert!(ping(&a, &b_ip, 2), "to its own network");
    assert!(ping(&a, "10.45.0.1", 2), "to its gateway (the host)");
    assert!(ping(&a, HOST, 2), "to the host's own address");
}

/// Routed by the host with the endpoint's own address: a network with
/// masquerading off, and a CIDR left unmasqueraded (the outside knows the
/// way back to the networks, as a router would).
#[test]
fn masquerade_off_and_unmasqueraded_cidrs_leave_with_the_endpoints_address() {
    let w = world(&[]);
    w.outside.ip(&["route", "add", "10.46.0.0/16", "via", HOST]);
    w.netd.ok(&[
        "network",
        "create",
        "plain",
        "--subnet",
        "10.46.1.0/24",
        "--masquerade=false",
    ]);
    w.netd.ok(&[
        "network",
        "create",
        "some",
        "--subnet",
        "10.46.2.0/24",
        "--no-masquerade",
        &format!("{OUTSIDE}/32"),
    ]);
    let (a, b) = (NetNs::new("ndAm"), NetNs::new("ndBm"));
    let a_ip = w.netd.endpoint("a", "plain", &a, &[]);
    let b_ip = w.netd.endpoint("b", "some", &b, &[]);
    let seen = seen_over_tcp(&a, WORLD, 0).expect("routed");
    assert_eq!(seen.ip().to_string(), a_ip, "masquerade off");
    let seen = seen_over_tcp(&b, OUTSIDE, 0).expect("unmasqueraded");
    assert_eq!(seen.ip().to_string(), b_ip, "an unmasqueraded CIDR");
    let seen = seen_over_tcp(&b, WORLD, 0).expect("masqueraded");
    assert_eq!(seen.ip().to_string(), HOST, "anywhere else");
    let ls = w.netd.ok(&["network", "ls"]);
    assert!(ls.contains("routed") && ls.contains("masquerade"), "{ls}");
}

/// `--mtu`: the endpoints' interfaces get it; one above the uplink's is
/// refused with the limit.
#[test]
fn a_networks_mtu_is_its_endpoints_and_is_checked_against_the_uplink() {
    let w = world(&[]);
    let (ok, _, err) = w.netd.cli(&[
        "network",
        "create",
        "big",
        "--subnet",
        "10.47.1.0/24",
        "--mtu",
        "9000",
    ]);
    assert!(!ok, "an MTU above the uplink's was accepted");
    assert!(err.contains("mtu") && err.contains("1500"), "{err}");
    w.netd.ok(&[
        "network",
        "create",
        "small",
        "--subnet",
        "10.47.0.0/24",
        "--mtu",
        "1400",
    ]);
    let a = NetNs::new("ndAm");
    w.netd.endpoint("a", "small", &a, &[]);
    let link = String::from_utf8_lossy(&a.ip(&["-o", "link", "show", "eth0"]).stdout).to_string();
    assert!(link.contains("mtu 1400"), "{link}");
    let (whole, mss) = netd_tests::traffic::echo_both_ways(
        &a,
        format!("{WORLD}:{ECHO_PORT}").parse().expect("address"),
        1 << 20,
    );
    assert!(whole, "a transfer through the smaller MTU");
    // TCP_MAXSEG leaves out the timestamps option's 12 bytes.
    assert!(
        (1400 - 40 - 12..=1400 - 40).contains(&mss),
        "the MSS follows the endpoint's MTU: {mss}"
    );
}

/// An address one more hop out, behind the outside namespace (a router
/// now) on a link of `mtu` bytes, with an echo server.
const FAR: &str = "203.0.113.20";

fn far_behind(w: &World, mtu: u32) -> NetNs {
    let far = NetNs::new("ndFm");
    veth_between(
        &w.outside,
        "far0",
        "10.98.5.1/24",
        &far,
        "eth0",
        "10.98.5.2/24",
    );
    for (ns, dev) in [(&w.outside, "far0"), (&far, "eth0")] {
        ns.ip(&["link", "set", dev, "mtu", &mtu.to_string()]);
    }
    far.ip(&["addr", "add", &format!("{FAR}/32"), "dev", "lo"]);
    far.ip(&["route", "add", "default", "via", "10.98.5.1"]);
    w.outside.ip(&["route", "add", FAR, "via", "10.98.5.2"]);
    let forward = w.outside.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    assert!(forward.status.success(), "the outside forwards");
    echo_server(&far, ECHO_PORT);
    far
}

/// The error a connected UDP socket in `ns` gets after sending to `to`
/// with `ttl`, errors asked for (IP_RECVERR), or None for an answer or
/// silence.
fn udp_error(ns: &NetNs, to: SocketAddr, ttl: u32) -> Option<std::io::ErrorKind> {
    ns.run(move || {
        use std::os::fd::AsRawFd;
        let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.connect(to).ok()?;
        socket.set_ttl(ttl).ok()?;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads one int from `on`.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_RECVERR,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        socket.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            socket.send(b"anyone?").ok()?;
            match socket.recv(&mut buf) {
                Ok(_) => return None,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) => return Some(e.kind()),
            }
        }
        None
    })
    .join()
    .expect("client thread")
}

/// ICMP errors about masqueraded packets reach the endpoint translated
/// back: port unreachable (a closed port), time exceeded (a TTL that runs
/// out one router past the host: traceroute), and fragmentation needed
/// (a smaller link further out), after which a TCP transfer adapts.
#[test]
fn icmp_errors_about_masqueraded_packets_reach_the_endpoint() {
    let w = world(&[]);
    w.netd
        .ok(&["network", "create", "n1", "--subnet", "10.44.0.0/24"]);
    let a = NetNs::new("ndAm");
    w.netd.endpoint("a", "n1", &a, &[]);
    let _far = far_behind(&w, 1200);
    let closed: SocketAddr = format!("{WORLD}:9").parse().expect("address");
    assert_eq!(
        udp_error(&a, closed, 64),
        Some(std::io::ErrorKind::ConnectionRefused),
        "port unreachable"
    );
    let far: SocketAddr = format!("{FAR}:{UDP_PORT}").parse().expect("address");
    assert_eq!(
        udp_error(&a, far, 2),
        Some(std::io::ErrorKind::HostUnreachable),
        "time exceeded at the router past the host"
    );
    let (whole, mss) = netd_tests::traffic::echo_both_ways(
        &a,
        format!("{FAR}:{ECHO_PORT}").parse().expect("address"),
        1 << 20,
    );
    assert!(whole, "a transfer through the smaller link (mss {mss})");
    let nat = w.netd.ok(&["conntrack", "ls", "--nat"]);
    assert!(nat.contains(&format!("{FAR}:{ECHO_PORT}")), "{nat}");
}

/// Docker's own way on the same uplink, set up as dockerd does it (a
/// bridge, forwarding, an iptables MASQUERADE rule): its container and
/// netd's endpoint reach the same outside server at once, each
/// translated by its own NAT, and netd leaves the rule and the bridge be.
#[test]
fn dockers_bridge_and_its_masquerade_rule_keep_working_beside_netd() {
    let w = world(&[]);
    let docker0 = NetNs::new("ndDb");
    w.host.ip(&["link", "add", "docker0", "type", "bridge"]);
    w.host
        .ip(&["addr", "add", "172.17.0.1/16", "dev", "docker0"]);
    w.host.ip(&["link", "set", "docker0", "up"]);
    veth_between(
        &w.host,
        "vethd0",
        "172.17.255.254/32",
        &docker0,
        "eth0",
        "172.17.0.2/16",
    );
    w.host.ip(&["addr", "flush", "dev", "vethd0"]);
    w.host.ip(&["link", "set", "vethd0", "master", "docker0"]);
    docker0.ip(&["route", "add", "default", "via", "172.17.0.1"]);
    for cmd in [
        vec!["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        vec![
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "172.17.0.0/16",
            "!",
            "-o",
            "docker0",
            "-j",
            "MASQUERADE",
        ],
    ] {
        let out = w.host.exec(cmd[0], &cmd[1..]);
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The rules, without iptables-save's comments (they carry the time).
    let rules = || {
        String::from_utf8_lossy(&w.host.exec("iptables-save", &["-t", "nat"]).stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = rules();
    w.netd
        .ok(&["network", "create", "n1", "--subnet", "10.44.0.0/24"]);
    let a = NetNs::new("ndAm");
    w.netd.endpoint("a", "n1", &a, &[]);
    let from_docker = hold_echo(&docker0, 0);
    let from_netd = hold_echo(&a, 0);
    let peers = echo_peers(&w);
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert!(
        peers.iter().all(|p| p.starts_with(&format!("{HOST}:"))),
        "{peers:?}"
    );
    echoes(&from_docker, "through Docker's NAT");
    echoes(&from_netd, "through netd's");
    assert_eq!(
        seen_over_udp(&docker0, WORLD).map(|s| s.ip().to_string()),
        Some(HOST.to_string()),
        "UDP through Docker's NAT"
    );
    assert_eq!(rules(), before, "netd changed the NAT rules");
}

/// From the release before masquerading, under a download the host routes
/// with the endpoint's own address (the outside routes the network back,
/// as a router would): the upgraded netd leaves that flow as it began, and
/// it stays whole through the upgrade, a restart and a kill -9; a new
/// connection after is masqueraded.
#[test]
fn an_upgrade_from_the_release_before_masquerading_keeps_a_download_whole() {
    let old = netd_tests::process::built_by_xtask(
        "NETD_UPGRADE_FROM_BEFORE_MASQUERADE_BIN",
        "the last release before masquerading",
    );
    let mut w = world_of(&old, &[]);
    let forward = w.host.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    assert!(
        forward.status.success(),
        "the host forwards (the old release routes)"
    );
    w.outside.ip(&["route", "add", "10.44.0.0/24", "via", HOST]);
    w.netd
        .ok(&["network", "create", "n1", "--subnet", "10.44.0.0/24"]);
    let a = NetNs::new("ndAm");
    let a_ip = w.netd.endpoint("a", "n1", &a, &[]);
    let routed = seen_over_tcp(&a, WORLD, 0).expect("routed by the old release");
    assert_eq!(routed.ip().to_string(), a_ip);
    let addr: SocketAddr = format!("{WORLD}:{ECHO_PORT}").parse().expect("address");
    let stream = StreamUnderway::start(&a, addr);
    let pause = || std::thread::sleep(Duration::from_millis(400));
    pause();
    assert!(w.netd.stop().success(), "{}", w.netd.log());
    w.netd.switch_binary(&netd_tests::process::netd_bin());
    w.netd.restart(&w.host);
    pause();
    w.netd.kill();
    pause();
    w.netd.restart(&w.host);
    pause();
    let moved = stream.finish();
    assert!(
        moved.exact && moved.echoed == moved.sent && moved.sent > 1 << 20,
        "{moved:?}"
    );
    let seen = seen_over_tcp(&a, WORLD, 0).expect("masqueraded after the upgrade");
    assert_eq!(seen.ip().to_string(), HOST);
}

/// On an uplink at XDP (the outside finishing its checksums, as a NIC's
/// frames arrive), replies are turned back at XDP: TCP, UDP and ping.
#[test]
fn at_an_xdp_uplink_replies_are_turned_back_at_xdp() {
    let w = world(&["--uplink-mode", "xdp"]);
    netd::netlink::finish_checksums_on_transmit(&w.outside.path(), "eth0")
        .expect("the outside finishes its checksums");
    assert_eq!(w.netd.uplink_hook("uplink0"), "xdp native");
    w.netd
        .ok(&["network", "create", "n1", "--subnet", "10.44.0.0/24"]);
    let a = NetNs::new("ndAm");
    w.netd.endpoint("a", "n1", &a, &[]);
    let seen = seen_over_tcp(&a, WORLD, 0).expect("TCP");
    assert_eq!(seen.ip().to_string(), HOST);
    let seen = seen_over_udp(&a, WORLD).expect("UDP");
    assert_eq!(seen.ip().to_string(), HOST);
    assert!(ping(&a, WORLD, 2), "ping");
    let redirected = metric(
        &w.netd.scrape(&w.host).expect("metrics"),
        "netd_packets_total{hook=\"xdp_uplink\",verdict=\"redirect\"}",
    )
    .unwrap_or(0);
    assert!(redirected >= 4, "xdp_uplink redirected {redirected}");
}
