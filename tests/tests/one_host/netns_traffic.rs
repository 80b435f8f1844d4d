//! netd run on a real veth between two namespaces the test creates: real
//! ping and TCP pass unharmed, /metrics counts them, bpftool sees the
//! programs, and the start-up errors a user can hit are clear.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use netd_tests::{
    fixture::TempPins,
    free_port,
    netns::{veth_between, within, NetNs},
    process::{metric, netd_bin, Netd},
    unique_name,
};

const A_ADDR: &str = "10.201.0.1";
const B_ADDR: &str = "10.201.0.2";

struct World {
    a: NetNs,
    b: NetNs,
    a_if: String,
    b_if: String,
}

fn world() -> World {
    let a = NetNs::new("ndA");
    let b = NetNs::new("ndB");
    let a_if = unique_name("va");
    let b_if = unique_name("vb");
    veth_between(
        &a,
        &a_if,
        &format!("{A_ADDR}/24"),
        &b,
        &b_if,
        &format!("{B_ADDR}/24"),
    );
    World { a, b, a_if, b_if }
}

/// Sends `len` bytes from B to A over TCP; returns what A received.
fn tcp_transfer(w: &World, len: usize) -> Vec<u8> {
    let port = 5201;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = w.a.run(move || {
        let listener = TcpListener::bind((A_ADDR, port)).expect("listen in A");
        ready_tx.send(()).expect("signal ready");
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("read");
        got
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    let data = pattern(len);
    let client = w.b.run(move || {
        let mut conn =
            TcpStream::connect_timeout(&(A_ADDR, port).into_addr(), Duration::from_secs(5))
                .expect("connect from B");
        conn.write_all(&data).expect("send");
    });
    client.join().expect("client");
    server.join().expect("server")
}

trait IntoAddr {
    fn into_addr(self) -> std::net::SocketAddr;
}

impl IntoAddr for (&str, u16) {
    fn into_addr(self) -> std::net::SocketAddr {
        format!("{}:{}", self.0, self.1).parse().expect("address")
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// How a hook shows on the uplink, to `ip` and `bpftool`.
struct HookSeen {
    /// `--uplink-mode`.
    mode: &'static str,
    /// What `netd status` names it.
    status: &'static str,
    /// The counters' label.
    counters: &'static str,
    program: &'static str,
}

const TC_HOOK: HookSeen = HookSeen {
    mode: "auto",
    status: "tc",
    counters: "tc_uplink",
    program: "netd_tc_uplink",
};

const XDP_HOOK: HookSeen = HookSeen {
    mode: "xdp",
    status: "xdp native",
    counters: "xdp_uplink",
    program: "netd_xdp_uplink",
};

/// Whether `program` is attached to `ifname` in `ns`: XDP as `ip -d link`
/// shows it, TCX as the kernel lists the device's ingress programs.
fn attached(ns: &NetNs, ifname: &str, program: &str) -> bool {
    use aya::programs::{SchedClassifier, TcAttachType};
    if program.contains("xdp") {
        let link = ns.ip(&["-d", "link", "show", ifname]);
        let link = String::from_utf8_lossy(&link.stdout);
        return link.contains("prog/xdp") && link.contains(program);
    }
    within(ns, || {
        SchedClassifier::query_tcx(ifname, TcAttachType::Ingress)
    })
    .map(|(_, progs)| progs.iter().any(|p| p.name_as_str() == Some(program)))
    .unwrap_or(false)
}

#[test]
fn on_a_veth_uplink_netd_takes_tc_and_traffic_passes_unharmed_and_counted() {
    passes_unharmed_and_counted(&TC_HOOK);
}

#[test]
fn with_uplink_mode_xdp_a_veth_uplink_takes_xdp_and_traffic_passes_unharmed_and_counted() {
    passes_unharmed_and_counted(&XDP_HOOK);
}

fn passes_unharmed_and_counted(hook: &HookSeen) {
    let w = world();
    let pins = TempPins::new();
    let mut netd = Netd::start(
        &w.a,
        pins.layout.root(),
        free_port(),
        &["--uplink", &w.a_if, "--uplink-mode", hook.mode],
    );
    netd.wait_ready(&w.a);

    // The hook netd says it took is the one attached, and bpftool sees it.
    assert_eq!(netd.uplink_hook(&w.a_if), hook.status);
    let status = netd.ok(&["status"]);
    assert!(
        status.contains(&format!("uplink     {}: {} (", w.a_if, hook.status)),
        "{status}"
    );
    assert!(
        attached(&w.a, &w.a_if, hook.program),
        "{} not on {}",
        hook.program,
        w.a_if
    );
    let prog = pins.layout.progs().join(hook.program);
    let bpftool = Command::new("bpftool")
        .args(["prog", "show", "pinned"])
        .arg(&prog)
        .output()
        .expect("bpftool");
    let listed = String::from_utf8_lossy(&bpftool.stdout);
    assert!(
        bpftool.status.success() && listed.contains(hook.program),
        "{listed}"
    );

    let before = netd.scrape(&w.a).expect("scrape");
    let pass = format!(
        "netd_packets_total{{hook=\"{}\",verdict=\"pass\"}}",
        hook.counters
    );
    let pass_bytes = format!(
        "netd_bytes_total{{hook=\"{}\",verdict=\"pass\"}}",
        hook.counters
    );
    let drops = format!(
        "netd_packets_total{{hook=\"{}\",verdict=\"drop\"}}",
        hook.counters
    );

    let ping =
        w.b.exec("ping", &["-c", "5", "-i", "0.2", "-W", "2", A_ADDR]);
    assert!(
        ping.status.success(),
        "ping B -> A: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let mid = netd.scrape(&w.a).expect("scrape");
    let pinged =
        metric(&mid, &pass).expect("pass counter") - metric(&before, &pass).expect("pass counter");
    assert!(
        pinged >= 5,
        "5 echo requests reached A but the pass counter moved by {pinged}"
    );

    const LEN: usize = 4 << 20;
    let got = tcp_transfer(&w, LEN);
    assert_eq!(got.len(), LEN, "bytes received");
    assert!(got == pattern(LEN), "TCP data arrived changed");

    let after = netd.scrape(&w.a).expect("scrape");
    let bytes =
        metric(&after, &pass_bytes).expect("bytes") - metric(&mid, &pass_bytes).expect("bytes");
    let packets = metric(&after, &pass).expect("pass") - metric(&mid, &pass).expect("pass");
    assert!(
        bytes >= LEN as u64,
        "{LEN} bytes sent through the uplink, pass bytes moved by {bytes}"
    );
    assert!(
        packets >= (LEN / 65536) as u64,
        "pass packets moved by only {packets}"
    );
    assert_eq!(
        metric(&after, &drops),
        Some(0),
        "no drops expected:\n{after}"
    );

    // SIGTERM: a clean exit that leaves the datapath attached...
    let status = netd.stop();
    assert!(status.success(), "netd exit {status}:\n{}", netd.log());
    assert!(
        attached(&w.a, &w.a_if, hook.program),
        "{} gone after stop",
        hook.program
    );
    let ping =
        w.b.exec("ping", &["-c", "2", "-i", "0.2", "-W", "2", A_ADDR]);
    assert!(ping.status.success(), "ping while netd is stopped");

    // ...until teardown, which detaches it.
    let out = netd.teardown();
    assert!(
        out.status.success(),
        "teardown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !attached(&w.a, &w.a_if, hook.program),
        "{} left after teardown",
        hook.program
    );
    assert!(!pins.layout.root().exists(), "pins left after teardown");
}

/// Started with the other mode, a netd moves the uplink to the other
/// hook: the new one attached before the old one goes, traffic passing
/// throughout, and nothing of the old hook left.
#[test]
fn a_netd_restarted_with_another_uplink_mode_moves_the_uplink_to_that_hook() {
    let w = world();
    let pins = TempPins::new();
    let mut netd = Netd::start(
        &w.a,
        pins.layout.root(),
        free_port(),
        &["--uplink", &w.a_if, "--uplink-mode", "xdp"],
    );
    netd.wait_ready(&w.a);
    assert!(attached(&w.a, &w.a_if, XDP_HOOK.program));
    assert!(netd.stop().success());
    netd.set_flag("--uplink-mode", "tc");
    netd.restart(&w.a);
    assert_eq!(netd.uplink_hook(&w.a_if), "tc");
    assert!(attached(&w.a, &w.a_if, TC_HOOK.program));
    assert!(
        !attached(&w.a, &w.a_if, XDP_HOOK.program),
        "the XDP hook stayed beside TC"
    );
    let ping =
        w.b.exec("ping", &["-c", "2", "-i", "0.2", "-W", "2", A_ADDR]);
    assert!(ping.status.success(), "ping after the move");
    assert!(netd.stop().success());
}

#[test]
fn a_restarted_netd_swaps_its_program_in_and_keeps_the_counters() {
    let w = world();
    let pins = TempPins::new();
    let mut first = Netd::start(
        &w.a,
        pins.layout.root(),
        free_port(),
        &["--uplink", &w.a_if],
    );
    first.wait_ready(&w.a);
    let ping =
        w.b.exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", A_ADDR]);
    assert!(ping.status.success());
    let pass = "netd_packets_total{hook=\"tc_uplink\",verdict=\"pass\"}";
    let counted = metric(&first.scrape(&w.a).expect("scrape"), pass).expect("pass");
    assert!(first.stop().success());

    // The same netd (pins and store) started again.
    first.restart(&w.a);
    assert!(first.log().contains("replaced=true"), "{}", first.log());
    let still = metric(&first.scrape(&w.a).expect("scrape"), pass).expect("pass");
    assert!(still >= counted, "counters restarted: {still} < {counted}");
    let ping =
        w.b.exec("ping", &["-c", "2", "-i", "0.2", "-W", "2", A_ADDR]);
    assert!(ping.status.success(), "ping after restart");
    assert!(first.stop().success());
}

#[test]
fn a_second_netd_on_the_same_pin_path_refuses_to_start() {
    let w = world();
    let pins = TempPins::new();
    let mut first = Netd::start(&w.a, pins.layout.root(), free_port(), &[]);
    first.wait_ready(&w.a);
    let mut second = Netd::start(&w.a, pins.layout.root(), free_port(), &[]);
    let status = second.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(
        second
            .log()
            .contains("another netd is already running with pin path"),
        "{}",
        second.log()
    );
    // The first one is untouched.
    assert!(first.scrape(&w.a).is_some(), "first netd stopped serving");
    assert!(first.stop().success());
}

#[test]
fn start_up_errors_are_one_clear_line_and_a_failure_exit() {
    let w = world();
    let cases: [(&[&str], &str); 3] = [
        (
            &["--uplink", "nonesuch0"],
            "interface \"nonesuch0\" does not exist",
        ),
        (&["--uplink", "eth/0"], "not a valid interface name"),
        (&["--metrics-addr", "nonsense"], "invalid value 'nonsense'"),
    ];
    for (args, expected) in cases {
        let pins = TempPins::new();
        let out = Command::new("nsenter")
            .arg(format!("--net={}", w.a.path().display()))
            .arg(netd_bin())
            .args(["run", "--pin-path"])
            .arg(pins.layout.root())
            .args(args)
            .output()
            .expect("run netd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!pins.layout.root().exists(), "{args:?} left pins behind");
    }
}

#[test]
fn netd_run_as_a_normal_user_says_it_needs_root() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(netd_bin())
        .args(["run", "--pin-path", "/sys/fs/bpf/netd-not-root"])
        .output()
        .expect("run netd as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("netd must run as root"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.contains("error")).count(),
        1,
        "{stderr}"
    );
}

/// The endpoint program on live traffic: attached (TC ingress) to A's end
/// of the veth, which is made B's endpoint veth, it sees what B sends as
/// it sees what a container sends. Ping and TCP pass; a frame of an
/// EtherType netd does not forward is dropped and counted.
#[test]
fn endpoint_program_passes_real_traffic_and_drops_unknown_ethertypes() {
    use aya::programs::{tc, TcAttachType};
    use netd_common::{
        counters::{DropReason, Hook, Verdict},
        program_names::TC_ENDPOINT,
    };
    use netd_tests::{
        fixture::Fixture,
        netns::{send_raw_frame, within},
    };

    let w = world();
    let mut f = Fixture::load();
    let a_if = w.a_if.clone();
    within(&w.a, || {
        let _ = tc::qdisc_add_clsact(&a_if);
        f.tc(TC_ENDPOINT)
            .attach(&a_if, TcAttachType::Ingress)
            .expect("attach TC");
    });
    // B is an endpoint behind A's end, as netd writes one (a veth that
    // is no endpoint's is not judged at all).
    {
        use netd::dataplane::maps::MapWriter;
        let a_index = within(&w.a, || netd::system::ifindex(&a_if)).expect("A's ifindex");
        let b_ip: std::net::Ipv4Addr = B_ADDR.parse().expect("B's address");
        let b_mac = w.b.mac(&w.b_if);
        let a_mac = w.a.mac(&w.a_if);
        for op in &netd_tests::fixture::local_endpoint(a_index, 1, b_ip.octets(), b_mac, a_mac) {
            f.maps.apply(op).expect("B's endpoint");
        }
    }
    let before = f.snapshot();

    let ping =
        w.b.exec("ping", &["-c", "5", "-i", "0.2", "-W", "2", A_ADDR]);
    assert!(ping.status.success(), "ping through the endpoint program");
    const LEN: usize = 1 << 20;
    assert!(
        tcp_transfer(&w, LEN) == pattern(LEN),
        "TCP data through the endpoint program"
    );
    let mid = f.snapshot();
    let passed = mid.verdict(Hook::TcEndpoint, Verdict::Pass).bytes
        - before.verdict(Hook::TcEndpoint, Verdict::Pass).bytes;
    assert!(passed >= LEN as u64, "pass bytes moved by {passed}");
    // B's stack also sends IPv6 (router solicitations, MLD), which an
    // endpoint may not: those are the only drops.
    assert_eq!(
        mid.verdict(Hook::TcEndpoint, Verdict::Drop).packets
            - mid.drops(Hook::TcEndpoint, DropReason::Ipv6).packets,
        0,
        "drops other than IPv6's"
    );

    // A frame with a local-experimental EtherType, from B's end of the veth.
    let b_if = w.b_if.clone();
    let frame = testpkt::with_ethertype(testpkt::ipv4_udp(), 0x88b5);
    within(&w.b, || {
        for _ in 0..3 {
            send_raw_frame(&b_if, &frame);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = f.snapshot();
        let dropped = now.drops(Hook::TcEndpoint, DropReason::UnknownL3).packets;
        if dropped == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "unknown_l3 drops: {dropped}, want 3"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
