//! Policy at scale: one policy of 10,000 rules, 1,000 of them CIDRs (one
//! with an exception), on one endpoint, loaded the way a user would
//! (`netd policy create -f`) into etcd; a sample of its rules enforced on
//! real traffic, across a kill -9, and all of it gone with `policy rm`.
//!
//! Ingress of `api`: rule i (0..9000) is `allow from tier=web tcp/10000+i`,
//! every hundredth a deny instead. Egress: rule i (0..1000) allows
//! `10.(200+i/256).(i%256).0/24` on tcp/7000+(i%10), which the host's own
//! addresses on its loopback answer.

use std::{
    sync::{atomic::AtomicBool, Arc},
    time::Instant,
};

use netd_tests::{
    etcd::Etcd,
    fixture::TempPins,
    netns::NetNs,
    policy::{echo_on, opens, tier, Held},
    process::Netd,
};
use serde_json::{json, Value};

const PORT_RULES: usize = 9_000;
const CIDR_RULES: usize = 1_000;
const FIRST_PORT: usize = 10_000;
/// Rule 500's CIDR, 10.201.244.0/24, leaves this out.
const EXCEPTED: &str = "10.201.244.128/25";

fn cidr_of(i: usize) -> String {
    format!("10.{}.{}.0/24", 200 + i / 256, i % 256)
}

fn cidr_port(i: usize) -> u16 {
    7000 + (i % 10) as u16
}

fn big_policy() -> Value {
    let ingress: Vec<Value> = (0..PORT_RULES)
        .map(|i| {
            json!({
                "action": if i % 100 == 99 { "deny" } else { "allow" },
                "peers": [{"selector": "tier=web"}],
                "proto": "tcp",
                "ports": [(FIRST_PORT + i).to_string()],
            })
        })
        .collect();
    let egress: Vec<Value> = (0..CIDR_RULES)
        .map(|i| {
            let except: Vec<&str> = if i == 500 { vec![EXCEPTED] } else { vec![] };
            json!({
                "action": "allow",
                "peers": [{"cidr": cidr_of(i), "except": except}],
                "proto": "tcp",
                "ports": [cidr_port(i).to_string()],
            })
        })
        .collect();
    json!({"selector": "tier=api", "ingress": ingress, "egress": egress})
}

#[test]
fn ten_thousand_rules_and_a_thousand_cidrs_load_and_a_sample_is_enforced() {
    let host = NetNs::new("ndH");
    let etcd = Etcd::start_in(&host, "127.0.0.1");
    let store = format!("--store=etcd://{}", etcd.endpoint());
    let pins = TempPins::new();
    let mut netd = Netd::start(
        &host,
        pins.layout.root(),
        netd_tests::free_port(),
        &[&store],
    );
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "n1", "--subnet", "10.34.0.0/24"]);
    let web = tier(&netd, "web", "n1");
    let api = tier(&netd, "api", "n1");
    let stop = Arc::new(AtomicBool::new(false));
    let sampled_ports = [10_000, 14_321, 18_998, 10_099, 19_500];
    for port in sampled_ports {
        echo_on(&api.ns, port, stop.clone());
    }
    // The world api's egress reaches: addresses of the host's own (on lo).
    for addr in [
        "10.200.0.1",
        "10.203.231.1",
        "10.201.244.1",
        "10.201.244.200",
        "10.250.0.1",
    ] {
        host.ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
    }
    for port in [7000, 7001, 7009] {
        echo_on(&host, port, stop.clone());
    }

    let file = tempfile::NamedTempFile::new().expect("temp file");
    let text = serde_json::to_string(&big_policy()).expect("json");
    std::fs::write(file.path(), &text).expect("write policy");
    let path = file.path().to_str().expect("path");
    let t = Instant::now();
    netd.ok(&["policy", "create", "big", "-f", path]);
    println!(
        "10,000 rules ({} KB of JSON) stored and enforced in {:?}",
        text.len() / 1024,
        t.elapsed()
    );
    let inspect: Value =
        serde_json::from_str(&netd.ok(&["policy", "inspect", "big"])).expect("inspect json");
    let rules = |d: &str| inspect[d].as_array().map_or(0, Vec::len);
    assert_eq!(
        (rules("ingress"), rules("egress")),
        (PORT_RULES, CIDR_RULES),
        "{}",
        &inspect.to_string()[..200]
    );
    let policy_entries = netd.map_entries("NETD_POLICY");
    let ipcache = netd.map_entries("NETD_IPCACHE");
    println!("NETD_POLICY {policy_entries} entries, NETD_IPCACHE {ipcache}");
    assert!(policy_entries >= 10_000, "NETD_POLICY: {policy_entries}");
    assert!(ipcache >= 1_001 + 2, "NETD_IPCACHE: {ipcache}");

    let sample = |when: &str| {
        for (port, open) in [
            (10_000, true),
            (14_321, true),
            (18_998, true),
            (10_099, false),
            (19_500, false),
        ] {
            assert_eq!(
                opens(&web.ns, &api.ip, port),
                open,
                "{when}: web→api:{port}"
            );
        }
        for (addr, port, open) in [
            ("10.200.0.1", cidr_port(0), true),
            ("10.203.231.1", cidr_port(999), true),
            ("10.201.244.1", cidr_port(500), true),
            ("10.200.0.1", 7001, false),
            ("10.201.244.200", cidr_port(500), false),
            ("10.250.0.1", 7000, false),
        ] {
            assert_eq!(
                opens(&api.ns, addr, port),
                open,
                "{when}: api→{addr}:{port}"
            );
        }
    };
    sample("loaded");

    let mut held = Held::open(&web.ns, &api.ip, 14_321);
    netd.kill();
    assert!(held.echoes(), "after kill -9");
    let t = Instant::now();
    netd.restart(&host);
    println!("restarted with 10,000 rules in {:?}", t.elapsed());
    assert!(held.echoes(), "after the restart");
    sample("after kill -9 and a restart");

    netd.ok(&["policy", "rm", "big"]);
    assert_eq!(
        netd.map_entries("NETD_POLICY"),
        0,
        "policy rm leaves nothing"
    );
    assert!(opens(&web.ns, &api.ip, 10_099), "open again");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    netd.stop();
}
