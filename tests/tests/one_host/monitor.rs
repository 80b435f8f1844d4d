//! `netd monitor` against real traffic between namespaces: drops reported
//! with their reason, endpoint, network and flow (`--json`), a pcap file
//! tcpdump reads, filters that refuse what netd has not, and the datapath
//! quiet again once nobody listens.

use std::process::Command;

use netd_common::events::MonitorConfig;
use netd_tests::{
    cluster::eventually,
    fixture::TempPins,
    monitor::Monitor,
    netns::{send_raw_frame, within, NetNs},
    process::Netd,
    traffic::ping,
};
use serde_json::Value;

#[test]
fn monitor_reports_drops_as_json_and_pcap_and_stops_the_datapath_when_gone() {
    let host = NetNs::new("ndH");
    let pins = TempPins::new();
    let mut netd = Netd::start(&host, pins.layout.root(), netd_tests::free_port(), &[]);
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "n1", "--subnet", "10.41.0.0/24"]);
    netd.ok(&["network", "create", "n2", "--subnet", "10.42.0.0/24"]);
    let a = NetNs::new("ndSa");
    let b = NetNs::new("ndSb");
    let a_ip = netd.endpoint("a", "n1", &a, &[]);
    let b_ip = netd.endpoint("b", "n2", &b, &[]);

    // Isolation: a pings b, on another network. (Filtered by address: the
    // sandboxes' own IPv6 router solicitations are `ipv6` drops meanwhile.)
    let monitor = Monitor::start(
        &netd,
        &[
            "--json",
            "--type",
            "drop",
            "--address",
            &b_ip,
            "--count",
            "1",
        ],
    );
    let lines = monitor.collect(1, || {
        ping(&a, &b_ip, 1);
    });
    let event: Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    assert_eq!(event["type"], "drop");
    assert_eq!(event["hook"], "tc_endpoint");
    assert_eq!(event["reason"], "isolation");
    assert_eq!(event["endpoint"], "a");
    assert_eq!(event["network"], "n1");
    assert_eq!(event["src"], a_ip.as_str());
    assert_eq!(event["dst"], b_ip.as_str());
    assert_eq!(event["proto"], "icmp");
    assert!(monitor.wait().success(), "--count 1 stops it");

    // Spoofing, as a pcap file that tcpdump reads, filtered by address.
    let pcap = tempfile::NamedTempFile::new().expect("pcap file");
    let path = pcap.path().to_str().expect("path").to_string();
    let monitor = Monitor::start(
        &netd,
        &[
            "--reason",
            "spoofed",
            "--address",
            "10.41.0.99",
            "--pcap",
            &path,
            "--count",
            "1",
        ],
    );
    // A second monitor at the same time, of drops only, as JSON: both see
    // the spoofed packet.
    let second = Monitor::start(
        &netd,
        &[
            "--json",
            "--type",
            "drop",
            "--address",
            "10.41.0.99",
            "--count",
            "1",
        ],
    );
    let mac_a = netd::model::Mac::for_ipv4(a_ip.parse().expect("ip")).0;
    let spoofed =
        testpkt::ipv4_udp_between(mac_a, [10, 41, 0, 99], [2, 0, 0, 0, 0, 1], [10, 41, 0, 1]);
    let provoke = || {
        ping(&a, &b_ip, 1); // isolation: filtered out
        within(&a, || send_raw_frame("eth0", &spoofed));
    };
    let lines = monitor.collect(1, provoke);
    assert!(
        lines[0].contains("drop spoofed") && lines[0].contains("endpoint a (n1)"),
        "{}",
        lines[0]
    );
    assert!(monitor.wait().success());
    let also = second.collect(1, provoke);
    let event: Value = serde_json::from_str(&also[0]).expect("a JSON line");
    assert_eq!(
        (&event["reason"], &event["src"]),
        (&Value::from("spoofed"), &Value::from("10.41.0.99"))
    );
    assert!(second.wait().success());
    let read = Command::new("tcpdump")
        .args(["-nr", &path])
        .output()
        .expect("tcpdump");
    let text = String::from_utf8_lossy(&read.stdout);
    assert!(
        read.status.success() && text.contains("10.41.0.99") && text.contains("UDP"),
        "tcpdump -r: {text} {}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_eq!(text.lines().count(), 1, "one packet: {text}");

    // Filters that name nothing netd has are refused with the choices.
    let (ok, _, err) = netd.cli(&["monitor", "--reason", "nope"]);
    assert!(!ok && err.contains("isolation"), "{err}");

    // Nobody listening: emission is switched off (netd sees a listener
    // gone when the next event finds its connection closed), and traffic
    // flows as before.
    let kinds = || {
        let data = aya::maps::MapData::from_pin(pins.layout.map("NETD_MONITOR")).expect("pinned");
        let map: aya::maps::Array<_, MonitorConfig> =
            aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("an array");
        map.get(&0, 0).expect("its entry").kinds
    };
    eventually("emission off once the monitors are gone", || {
        ping(&a, &b_ip, 1);
        kinds() == 0
    });
    let c = NetNs::new("ndSc");
    let c_ip = netd.endpoint("c", "n1", &c, &[]);
    assert!(ping(&a, &c_ip, 2), "traffic flows");
    netd.stop();
}
