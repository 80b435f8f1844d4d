//! Upgrades keep pinned state: a netd of the previous layout, and one of
//! the services release before client affinity (both built by `cargo xtask
//! test` from the commits named in xtask), is replaced under traffic, and
//! maps that cannot be carried over stop the start, not the datapath.

use std::{
    path::PathBuf,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use netd_tests::{
    fixture::TempPins,
    free_port,
    netns::NetNs,
    process::{built_by_xtask, metric, netd_bin, Netd},
    services::{connect, serve, shares, tcp_connections, Talker},
    traffic::{ping, PingUnderway},
};

fn old_netd() -> PathBuf {
    built_by_xtask("NETD_UPGRADE_FROM_BIN", "the last layout-1 commit")
}

fn services_netd() -> PathBuf {
    built_by_xtask(
        "NETD_UPGRADE_FROM_SERVICES_BIN",
        "the services release before client affinity",
    )
}

const REDIRECTED: &str = "netd_packets_total{hook=\"tc_endpoint\",verdict=\"redirect\"}";

/// Packets the endpoint program has delivered so far.
fn redirected(netd: &Netd, ns: &NetNs) -> u64 {
    metric(&netd.scrape(ns).expect("metrics"), REDIRECTED).expect("redirect counter")
}

struct World {
    host: NetNs,
    s1: NetNs,
    _s2: NetNs,
    a2: String,
    netd: Netd,
    pins: TempPins,
}

fn world(bin: &std::path::Path) -> World {
    let host = NetNs::new("ndHu");
    let (s1, s2) = (NetNs::new("ndS1"), NetNs::new("ndS2"));
    let pins = TempPins::new();
    let mut netd = Netd::start_bin(bin, &host, pins.layout.root(), free_port(), &[]);
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "n1", "--subnet", "10.41.0.0/24"]);
    netd.endpoint("a1", "n1", &s1, &[]);
    let a2 = netd.endpoint("a2", "n1", &s2, &[]);
    assert!(ping(&s1, &a2, 3), "a1 -> a2");
    World {
        host,
        s1,
        _s2: s2,
        a2,
        netd,
        pins,
    }
}

#[test]
fn an_upgrade_from_layout_1_under_traffic_loses_no_ping_and_keeps_the_counters() {
    let mut w = world(&old_netd());
    let before = redirected(&w.netd, &w.host);
    assert!(before >= 6, "the old netd counted {before} redirects");

    let traffic = PingUnderway::start(&w.s1, &w.a2, 400);
    std::thread::sleep(Duration::from_millis(500));
    w.netd.kill();
    w.netd.switch_binary(&netd_bin());
    w.netd.restart(&w.host);
    let after_upgrade = redirected(&w.netd, &w.host);
    let (sent, received) = traffic.finish();
    assert_eq!(
        received,
        sent,
        "pings lost across the upgrade:\n{}",
        w.netd.log()
    );
    assert!(
        w.netd.log().contains("upgrading the pinned maps"),
        "{}",
        w.netd.log()
    );
    assert!(
        after_upgrade >= before,
        "counters went back from {before} to {after_upgrade}: not carried over"
    );
    let after = redirected(&w.netd, &w.host);
    assert!(
        after >= before + u64::from(sent),
        "{before} + {sent} > {after}"
    );
    // The old netd's links (no mark) are marked as the new netd's.
    let links = String::from_utf8_lossy(&w.host.ip(&["-o", "link", "show"]).stdout).into_owned();
    let marked = links
        .lines()
        .filter(|l| l.contains(": ndh") && l.contains("alias netd:"))
        .count();
    assert_eq!(marked, 2, "{links}");
    assert!(
        !w.pins.layout.carry().exists(),
        "old maps left under {}",
        w.pins.layout.carry().display()
    );

    // The new layout is kept by the next start: nothing more to carry.
    w.netd.stop();
    w.netd.restart(&w.host);
    assert!(ping(&w.s1, &w.a2, 2));
}

#[test]
fn an_upgrade_from_the_services_release_keeps_a_connection_through_the_vip_and_adds_affinity() {
    let host = NetNs::new("ndHv");
    let pins = TempPins::new();
    let mut netd = Netd::start_bin(
        &services_netd(),
        &host,
        pins.layout.root(),
        free_port(),
        &[],
    );
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "n1", "--subnet", "10.42.0.0/24"]);
    let stop = Arc::new(AtomicBool::new(false));
    let backends: Vec<NetNs> = (0..2)
        .map(|i| {
            let ns = NetNs::new("ndB");
            let name = format!("web{i}");
            netd.endpoint(&name, "n1", &ns, &["--label", "app=web"]);
            serve(&ns, &name, stop.clone());
            ns
        })
        .collect();
    let client = NetNs::new("ndC");
    netd.endpoint("client", "n1", &client, &[]);
    let created = netd.ok(&[
        "service",
        "create",
        "web",
        "--network",
        "n1",
        "--port",
        "80:8080/tcp",
        "--selector",
        "app=web",
    ]);
    let vip = created.split_whitespace().nth(1).expect("VIP").to_string();
    let (conn, first) = connect(&client, &vip);
    let first = first.split(':').next().expect("name").to_string();
    // Drained: only the old netd's conntrack entry keeps the connection on
    // its backend, so an entry lost in the upgrade would break it.
    netd.ok(&["service", "update", "web", "--drain", &first]);

    let talker = Talker::start(&conn);
    std::thread::sleep(Duration::from_millis(300));
    netd.kill();
    netd.switch_binary(&netd_bin());
    netd.restart(&host);
    std::thread::sleep(Duration::from_millis(300));
    let answers = talker.finish();
    assert!(answers.len() > 10, "{} exchanges", answers.len());
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(
            a.as_deref(),
            Ok(first.as_str()),
            "exchange {i}:\n{}",
            netd.log()
        );
    }
    let flows = netd.ok(&["conntrack", "ls", "--service", "web"]);
    assert!(flows.contains("established"), "{flows}");

    // The new netd's map (client affinity) works on the upgraded pins.
    netd.ok(&[
        "service",
        "update",
        "web",
        "--undrain",
        &first,
        "--affinity",
        "client-ip",
    ]);
    let sticky = shares(&tcp_connections(&client, &vip, 20));
    assert_eq!(sticky.len(), 1, "{sticky:?}");
    stop.store(true, Ordering::SeqCst);
    drop(backends);
}

fn bpftool(args: &[&str]) {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_map_that_cannot_be_carried_over_or_a_newer_layout_refuses_the_start_and_changes_nothing() {
    let mut w = world(&netd_bin());
    w.netd.stop();
    let hosts = w.pins.layout.map("NETD_HOSTS");
    let hosts = hosts.to_str().expect("path");

    // NETD_HOSTS with another key size, as some other build might leave it.
    std::fs::remove_file(hosts).expect("unpin");
    bpftool(&[
        "map",
        "create",
        hosts,
        "type",
        "hash",
        "key",
        "8",
        "value",
        "8",
        "entries",
        "16",
        "name",
        "NETD_HOSTS",
    ]);
    w.netd.respawn();
    assert!(!w.netd.wait_exit(Duration::from_secs(20)).success());
    let log = w.netd.log();
    assert!(
        log.contains("NETD_HOSTS") && log.contains("cannot carry it over"),
        "{log}"
    );
    assert!(ping(&w.s1, &w.a2, 2), "the running datapath was touched");
    assert!(std::path::Path::new(hosts).exists());
    std::fs::remove_file(hosts).expect("unpin");

    // Pins of a newer layout.
    let meta = w.pins.layout.map("NETD_META");
    let mut value = vec!["99", "0", "0", "0"];
    value.extend(std::iter::repeat_n("0", 36));
    let mut args = vec!["map", "update", "pinned", meta.to_str().expect("path")];
    args.extend(["key", "0", "0", "0", "0", "value"]);
    args.extend(value);
    bpftool(&args);
    w.netd.respawn();
    assert!(!w.netd.wait_exit(Duration::from_secs(20)).success());
    assert!(
        w.netd.log().contains("newer than this netd's"),
        "{}",
        w.netd.log()
    );
    assert!(ping(&w.s1, &w.a2, 2), "the running datapath was touched");
}

/// The value size of a pinned map, as bpftool shows it.
fn value_size(path: &std::path::Path) -> u64 {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(path)
        .output()
        .expect("bpftool");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool -j");
    info["bytes_value"].as_u64().expect("bytes_value")
}

#[test]
fn a_packets_scratch_map_of_another_shape_is_made_afresh_under_traffic() {
    let mut w = world(&netd_bin());
    let pending = w.pins.layout.map("NETD_PENDING");
    let want = value_size(&pending);

    // NETD_PENDING as the first monitor release pinned it (8-byte notes).
    w.netd.stop();
    std::fs::remove_file(&pending).expect("unpin");
    bpftool(&[
        "map",
        "create",
        pending.to_str().expect("path"),
        "type",
        "percpu_array",
        "key",
        "4",
        "value",
        "8",
        "entries",
        "1",
        "name",
        "NETD_PENDING",
    ]);
    let traffic = PingUnderway::start(&w.s1, &w.a2, 200);
    std::thread::sleep(Duration::from_millis(300));
    w.netd.restart(&w.host);
    let (sent, received) = traffic.finish();
    assert_eq!(received, sent, "pings lost:\n{}", w.netd.log());
    assert_eq!(value_size(&pending), want, "{}", w.netd.log());
    assert!(
        w.netd.log().contains("NETD_PENDING"),
        "the log does not say what was made afresh:\n{}",
        w.netd.log()
    );
    assert!(!w.pins.layout.carry().exists());
}
