//! Each endpoint's counters where users look: Prometheus series per
//! endpoint that appear with it, survive a kill -9 and go with it; `netd
//! endpoint ls` and `netd status` with traffic and top drop reasons. And a
//! flood of a million drops under a listening monitor: forwarding goes
//! on, the budget's suppressed count moves, netd's memory stays put.

use netd_tests::{
    fixture::TempPins,
    monitor::Monitor,
    netns::{send_raw_frames, within, NetNs},
    process::{metric, Netd},
    traffic::{ping, PingUnderway},
};

struct World {
    host: NetNs,
    netd: Netd,
    a: NetNs,
    b: NetNs,
    _c: NetNs,
    a_ip: String,
    b_ip: String,
    c_ip: String,
    _pins: TempPins,
}

/// a and b on n1, c on n2.
fn world() -> World {
    let host = NetNs::new("ndHe");
    let pins = TempPins::new();
    let mut netd = Netd::start(&host, pins.layout.root(), netd_tests::free_port(), &[]);
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "n1", "--subnet", "10.45.0.0/24"]);
    netd.ok(&["network", "create", "n2", "--subnet", "10.46.0.0/24"]);
    let (a, b, c) = (NetNs::new("ndEa"), NetNs::new("ndEb"), NetNs::new("ndEc"));
    let a_ip = netd.endpoint("a", "n1", &a, &[]);
    let b_ip = netd.endpoint("b", "n1", &b, &[]);
    let c_ip = netd.endpoint("c", "n2", &c, &[]);
    World {
        host,
        netd,
        a,
        b,
        _c: c,
        a_ip,
        b_ip,
        c_ip,
        _pins: pins,
    }
}

/// A series as Prometheus's text format writes it: labels by name.
fn series(endpoint: &str, network: &str, name: &str, last: &str) -> String {
    let mut labels = [
        format!("endpoint=\"{endpoint}\""),
        format!("network=\"{network}\""),
        last.to_string(),
    ];
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

fn sent(endpoint: &str) -> String {
    series(
        endpoint,
        "n1",
        "netd_endpoint_packets_total",
        "direction=\"sent\"",
    )
}

fn received(endpoint: &str) -> String {
    series(
        endpoint,
        "n1",
        "netd_endpoint_packets_total",
        "direction=\"received\"",
    )
}

fn dropped(endpoint: &str, reason: &str) -> String {
    series(
        endpoint,
        "n1",
        "netd_endpoint_drops_total",
        &format!("reason=\"{reason}\""),
    )
}

#[test]
fn a_quiet_endpoint_has_no_ipv6_and_drops_nothing() {
    let w = world();
    // Long enough for an interface with IPv6 to send its duplicate
    // address probe, MLD reports and router solicitations.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let scrape = w.netd.scrape(&w.host).expect("metrics");
    assert!(
        !scrape.contains("netd_endpoint_drops_total{"),
        "a quiet endpoint dropped something:\n{scrape}"
    );
    // NAME NETWORK IPV4 MAC IFNAME HOST SENT RECEIVED DROPPED SANDBOX
    let ls = w.netd.ok(&["endpoint", "ls"]);
    for row in ls.lines().skip(1) {
        let dropped = row.split_whitespace().nth(8);
        assert_eq!(dropped, Some("0"), "{ls}");
    }
    // As Docker leaves a container's interface on a network without IPv6.
    for ns in [&w.a, &w.b] {
        let out = ns.exec("cat", &["/proc/sys/net/ipv6/conf/eth0/disable_ipv6"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
        let addrs = ns.exec("ip", &["-6", "addr", "show", "dev", "eth0"]);
        assert!(addrs.stdout.is_empty(), "{addrs:?}");
    }
}

#[test]
fn endpoint_series_appear_with_traffic_survive_a_kill_and_go_with_their_endpoint() {
    let mut w = world();
    assert!(ping(&w.a, &w.b_ip, 3), "a -> b");
    assert!(!ping(&w.a, &w.c_ip, 2), "a -> c is isolated");
    let scrape = w.netd.scrape(&w.host).expect("metrics");
    let a_sent = metric(&scrape, &sent("a")).expect("a's sent packets");
    assert!(a_sent >= 5, "{a_sent}");
    assert!(metric(&scrape, &received("b")).expect("b's received") >= 3);
    assert!(
        metric(&scrape, &received("a")).expect("a's received") >= 3,
        "b's replies"
    );
    assert_eq!(metric(&scrape, &dropped("a", "isolation")), Some(2));
    assert_eq!(metric(&scrape, &dropped("b", "isolation")), None);
    // Five pings of 98 bytes at least, besides ARP and IPv6 chatter.
    let a_bytes = metric(
        &scrape,
        &series("a", "n1", "netd_endpoint_bytes_total", "direction=\"sent\""),
    )
    .expect("a's bytes");
    assert!(a_bytes >= 5 * 98 && a_bytes <= a_sent * 1514, "{a_bytes}");

    // Where users look: the tables.
    let ls = w.netd.ok(&["endpoint", "ls"]);
    let row = |name: &str| {
        ls.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in:\n{ls}"))
            .to_string()
    };
    assert!(row("a").contains("isolation:2"), "{ls}");
    assert!(!row("b").contains("isolation"), "{ls}");
    let status = w.netd.ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("a ") && l.contains("isolation:2")),
        "{status}"
    );

    // kill -9 and a restart: the counts carry on from where they were.
    w.netd.kill();
    w.netd.restart(&w.host);
    assert!(ping(&w.a, &w.b_ip, 1));
    let scrape = w.netd.scrape(&w.host).expect("metrics");
    assert!(metric(&scrape, &sent("a")).expect("a's sent") > a_sent);
    assert_eq!(metric(&scrape, &dropped("a", "isolation")), Some(2));

    // b goes, and its series with it; a's stay.
    w.netd.ok(&["endpoint", "rm", "b"]);
    let scrape = w.netd.scrape(&w.host).expect("metrics");
    assert!(
        !scrape.contains("endpoint=\"b\""),
        "b's series outlived it:\n{}",
        scrape
            .lines()
            .filter(|l| l.contains("endpoint=\"b\""))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metric(&scrape, &sent("a")).is_some());
    w.netd.stop();
}

/// netd's resident memory, in KiB.
fn rss_kib(netd: &Netd) -> u64 {
    let pid = netd.pid().expect("netd runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_million_drops_under_a_listening_monitor_leave_forwarding_and_netd_memory_alone() {
    let w = world();
    let scrape = || w.netd.scrape(&w.host).expect("metrics");
    let suppressed = |s: &str| metric(s, "netd_monitor_events_total{outcome=\"suppressed\"}");

    // A monitor that reads everything it is sent, as fast as it can.
    let monitor = Monitor::start(&w.netd, &["--json", "--reason", "malformed"]);
    let mut cut = testpkt::ipv4_tcp();
    cut.truncate(40);
    monitor.collect(1, || {
        within(&w.a, || send_raw_frames("eth0", &cut, 1));
    });
    let before = scrape();
    let rss_before = rss_kib(&w.netd);

    // b pings a all along (10 ms apart); a floods its veth with a
    // million malformed frames from two threads meanwhile.
    let ping = PingUnderway::start(&w.b, &w.a_ip, 300);
    let flooded: u64 = std::thread::scope(|scope| {
        let flooders: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| within(&w.a, || send_raw_frames("eth0", &cut, 500_000))))
            .collect();
        flooders
            .into_iter()
            .map(|t| t.join().expect("flooder"))
            .sum()
    });
    let (pinged, answered) = ping.finish();
    let after = scrape();
    let rss_after = rss_kib(&w.netd);
    drop(monitor);

    assert!(flooded >= 1_000_000, "the kernel took {flooded} frames");
    let drops = |s: &str| metric(s, &dropped("a", "malformed")).unwrap_or(0);
    assert!(
        drops(&after) - drops(&before) >= flooded,
        "{} drops counted for {flooded} frames",
        drops(&after) - drops(&before)
    );
    assert_eq!(answered, pinged, "pings lost during the flood");
    assert!(pinged >= 100, "{pinged} pings");
    let moved = suppressed(&after).unwrap_or(0) - suppressed(&before).unwrap_or(0);
    assert!(
        moved >= flooded / 2,
        "the budget suppressed only {moved} of {flooded} events"
    );
    eprintln!(
        "{flooded} drops; {moved} events suppressed; netd RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "netd grew from {rss_before} to {rss_after} KiB"
    );
}
