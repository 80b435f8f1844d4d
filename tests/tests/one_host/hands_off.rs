//! netd touches only what it made: a second netd on the same host (its own
//! pin path and store) and a netd started on another store leave the first
//! one's containers, links and pins alone.

use std::time::Duration;

use netd_tests::{fixture::TempPins, free_port, netns::NetNs, process::Netd, traffic::ping};

/// Names of the links in `ns` whose name starts with `ndh`, sorted.
fn endpoint_links(ns: &NetNs) -> Vec<String> {
    let out = ns.ip(&["-o", "link", "show"]);
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("ndh"))
        .collect();
    names.sort();
    names
}

/// A netd on `ns` with network n1 and two endpoints that ping each other.
fn first_netd(ns: &NetNs, pins: &TempPins, s1: &NetNs, s2: &NetNs) -> (Netd, String) {
    let mut a = Netd::start(ns, pins.layout.root(), free_port(), &[]);
    a.wait_ready(ns);
    a.ok(&["network", "create", "n1", "--subnet", "10.31.0.0/24"]);
    a.endpoint("a1", "n1", s1, &[]);
    let a2 = a.endpoint("a2", "n1", s2, &[]);
    assert!(ping(s1, &a2, 2), "a1 -> a2 before");
    (a, a2)
}

#[test]
fn a_second_netd_on_the_same_host_removes_nothing_of_the_first() {
    let host = NetNs::new("ndHo");
    let (s1, s2, s3) = (NetNs::new("ndS1"), NetNs::new("ndS2"), NetNs::new("ndS3"));
    let pins_a = TempPins::new();
    let (_a, a2) = first_netd(&host, &pins_a, &s1, &s2);
    // A link named like netd's that no netd made.
    host.ip(&[
        "link",
        "add",
        "ndh0123456789ab",
        "type",
        "veth",
        "peer",
        "name",
        "ndxpeer",
    ]);
    let before = endpoint_links(&host);
    assert_eq!(before.len(), 3, "{before:?}");

    // B: its own pin path and an empty store; its passes run on start, on
    // each change and on the first resync.
    let pins_b = TempPins::new();
    let mut b = Netd::start(&host, pins_b.layout.root(), free_port(), &[]);
    b.wait_ready(&host);
    b.ok(&["network", "create", "m1", "--subnet", "10.32.0.0/24"]);
    b.endpoint("b1", "m1", &s3, &[]);
    let with_b = endpoint_links(&host);
    assert_eq!(with_b.len(), 4, "{with_b:?}");
    b.ok(&["endpoint", "rm", "b1"]);
    std::thread::sleep(Duration::from_secs(1));

    assert_eq!(
        endpoint_links(&host),
        before,
        "B removed a link it did not make, or kept its own"
    );
    assert!(ping(&s1, &a2, 2), "a1 -> a2 while B runs");
    b.stop();
    assert_eq!(endpoint_links(&host), before);
}

#[test]
fn a_netd_on_another_store_refuses_the_pin_path_and_leaves_it_forwarding() {
    let host = NetNs::new("ndHw");
    let (s1, s2) = (NetNs::new("ndS1"), NetNs::new("ndS2"));
    let pins = TempPins::new();
    let (mut a, a2) = first_netd(&host, &pins, &s1, &s2);
    let links = endpoint_links(&host);
    a.stop();

    // Same pin path, a new (empty) state dir: another store.
    let mut wrong = Netd::start(&host, pins.layout.root(), free_port(), &[]).borrowing_pins();
    let status = wrong.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "a netd on another store started");
    let log = wrong.log();
    assert!(
        log.contains("holds the datapath of another store") && log.contains("netd teardown"),
        "{log}"
    );
    assert_eq!(endpoint_links(&host), links);
    assert!(ping(&s1, &a2, 2), "a1 -> a2 after the refused start");

    // Its own store takes it back.
    a.restart(&host);
    assert!(ping(&s1, &a2, 2), "a1 -> a2 after A's restart");
}
