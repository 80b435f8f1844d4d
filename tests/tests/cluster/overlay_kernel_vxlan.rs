//! netd speaks standard VXLAN: a host with a kernel VXLAN device and a
//! bridge (the way Docker's overlay driver and flannel build it), set up
//! by hand with static FDB and neighbour entries, exchanges ping and TCP
//! with a netd endpoint, and tcpdump decodes what crosses the underlay as
//! VXLAN with the network's VNI and good checksums.

use std::process::{Child, Command, Stdio};

use netd_tests::{
    cluster::{cluster, eventually, plug_into_underlay, uplink_acts_as_nic, UNDERLAY_PREFIX},
    netns::{sh, veth_between, NetNs},
    process::metric,
    traffic::{ping, tcp},
};

/// A capture of one interface into a pcap file, stopped on drop.
struct Capture {
    child: Child,
    file: tempfile::NamedTempFile,
}

impl Capture {
    fn start(ns: &NetNs, ifname: &str) -> Self {
        let file = tempfile::NamedTempFile::new().expect("pcap file");
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "tcpdump", "-i", ifname, "-nn", "-U",
            ])
            .arg("-w")
            .arg(file.path())
            .args(["udp", "port", "4789"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump (apt install tcpdump; `cargo xtask setup` does)");
        // tcpdump writes the pcap header once it listens.
        eventually("tcpdump listening", || {
            file.path().metadata().is_ok_and(|m| m.len() > 0)
        });
        Self { child, file }
    }

    /// tcpdump's verbose decoding of what was captured, a packet (from its
    /// timestamp to the next) per element.
    fn decode(&mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let out = sh(
            "tcpdump",
            &[
                "-r",
                self.file.path().to_str().unwrap_or_default(),
                "-nn",
                "-vv",
            ],
        );
        let mut packets: Vec<String> = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            match packets.last_mut() {
                Some(p) if !line.starts_with(|c: char| c.is_ascii_digit()) => {
                    p.push('\n');
                    p.push_str(line);
                }
                _ => packets.push(line.to_string()),
            }
        }
        packets
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_kernel_vxlan_host_and_a_netd_endpoint_talk_standard_vxlan() {
    let (underlay, _etcd, hosts) = cluster(1, |_| {
        vec!["--uplink=uplink0".into(), "--host-lease-ttl=3".into()]
    });
    let netd = &hosts[0].netd;
    netd.ok(&[
        "network",
        "create",
        "o1",
        "--overlay",
        "--subnet",
        "10.95.0.0/24",
    ]);
    let inspect: serde_json::Value =
        serde_json::from_str(&netd.ok(&["network", "inspect", "o1"])).expect("json");
    let vni = inspect["vni"].as_u64().expect("overlay network has a VNI");
    let netd_ip = format!("{UNDERLAY_PREFIX}.1");
    let kernel_ip = format!("{UNDERLAY_PREFIX}.9");

    // The kernel host: vx0 (VNI of o1, port 4789, no learning) and a
    // container on a bridge with it, as libnetwork's overlay driver does.
    let kh = NetNs::new("ndKh");
    plug_into_underlay(&underlay, &kh, &kernel_ip);
    uplink_acts_as_nic(&kh);
    let vni_text = vni.to_string();
    kh.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        &vni_text,
        "dstport",
        "4789",
        "local",
        &kernel_ip,
        "dev",
        "uplink0",
        "nolearning",
    ]);
    kh.ip(&["link", "add", "br0", "type", "bridge"]);
    kh.ip(&["link", "set", "vx0", "master", "br0"]);
    kh.ip(&["link", "set", "vx0", "up"]);
    kh.ip(&["link", "set", "br0", "up"]);

    // A container already there, with the MAC the kernel gave it.
    let k1_ip = "10.95.0.50".to_string();
    let kc = NetNs::new("ndKc");
    veth_between(
        &kc,
        "eth0",
        &format!("{k1_ip}/24"),
        &kh,
        "kc0",
        "10.96.2.99/32",
    );
    kh.ip(&["addr", "flush", "dev", "kc0"]);
    kh.ip(&["link", "set", "kc0", "master", "br0"]);
    kc.ip(&["link", "set", "eth0", "mtu", "1450"]);
    let link: serde_json::Value =
        serde_json::from_slice(&kc.ip(&["-j", "link", "show", "eth0"]).stdout).expect("json");
    let k1_mac = link[0]["address"].as_str().expect("mac").to_string();

    // netd learns of the kernel host and of its container, address and MAC.
    netd.ok(&["host", "add", "kernel-1", "--underlay-ip", &kernel_ip]);
    let out = netd.ok(&[
        "endpoint",
        "create",
        "k1",
        "--network",
        "o1",
        "--external-host",
        "kernel-1",
        "--ip",
        &k1_ip,
        "--mac",
        &k1_mac,
    ]);
    assert!(
        out.trim_end().ends_with(&format!("{k1_ip} {k1_mac}")),
        "{out}"
    );

    let s0 = NetNs::new("ndSk");
    let e0_ip = hosts[0].endpoint("e0", "o1", &s0);
    let e0: serde_json::Value =
        serde_json::from_str(&netd.ok(&["endpoint", "inspect", "e0"])).expect("json");
    let e0_mac = e0["mac"].as_str().expect("mac").to_string();
    // Static FDB and neighbour entries: no flooding, no learning.
    sh(
        "bridge",
        &[
            "-n",
            &kh.name,
            "fdb",
            "add",
            &e0_mac,
            "dev",
            "vx0",
            "dst",
            &netd_ip,
            "self",
            "permanent",
        ],
    );
    kc.ip(&[
        "neigh",
        "add",
        &e0_ip,
        "lladdr",
        &e0_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);

    // On the kernel host's uplink: netd's own uplink hands decapsulated
    // packets on in XDP, before any capture would see them.
    let mut capture = Capture::start(&kh, "uplink0");
    eventually("k1 reachable from e0", || ping(&s0, &k1_ip, 1));
    assert!(ping(&kc, &e0_ip, 3), "kernel VXLAN host -> netd endpoint");
    assert!(tcp(&s0, &kc, &k1_ip, 256 << 10), "TCP netd -> kernel VXLAN");
    assert!(tcp(&kc, &s0, &e0_ip, 256 << 10), "TCP kernel VXLAN -> netd");

    let packets = capture.decode();
    let all = packets.join("\n");
    let vxlan = format!("VXLAN, flags [I] (0x08), vni {vni}");
    for (from, to) in [(&netd_ip, &kernel_ip), (&kernel_ip, &netd_ip)] {
        let path = format!("{from}.");
        let seen = packets
            .iter()
            .filter(|p| p.contains(&path) && p.contains(&format!("> {to}.4789")))
            .filter(|p| p.contains(&vxlan) && p.contains("ICMP echo"))
            .count();
        assert!(
            seen > 0,
            "no ICMP in VXLAN vni {vni} from {from} to {to} decoded:\n{all}"
        );
    }
    // Outer IPv4 and UDP (when not 0) and inner IPv4 and ICMP checksums.
    // An inner TCP segment may carry a partial checksum: netd's veth uplink
    // at TC keeps its transmit offload, the kernel host takes it as
    // verified, and a capture on a veth shows it as "incorrect", as it does
    // any local TCP (on a NIC the hardware finishes it before the wire).
    for bad in ["bad cksum", "bad udp cksum", "malformed"] {
        assert!(!all.contains(bad), "{bad} in:\n{all}");
    }
    let wrong: Vec<&String> = packets
        .iter()
        .filter(|p| p.contains("incorrect") && !p.contains("Flags ["))
        .collect();
    assert!(wrong.is_empty(), "incorrect checksums but TCP's: {wrong:?}");

    // Removing the external host: refused while it has endpoints; once
    // gone, its VXLAN is not netd's any more: passed to the host stack
    // (where no device takes it), never delivered to the endpoint.
    let (ok, _, err) = netd.cli(&["host", "rm", "kernel-1"]);
    assert!(
        !ok && err.contains("host \"kernel-1\" still has endpoints: k1"),
        "{err}"
    );
    netd.ok(&["endpoint", "rm", "k1"]);
    netd.ok(&["host", "rm", "kernel-1"]);
    assert!(!netd.ok(&["host", "ls"]).contains("kernel-1"));
    let passed = format!(
        "netd_packets_total{{hook=\"{}\",verdict=\"pass\"}}",
        netd.uplink_counters("uplink0")
    );
    let before = metric(&netd.scrape(&hosts[0].ns).expect("metrics"), &passed).unwrap_or(0);
    assert!(
        !ping(&kc, &e0_ip, 2),
        "a removed host's VXLAN was delivered"
    );
    let after = metric(&netd.scrape(&hosts[0].ns).expect("metrics"), &passed).unwrap_or(0);
    assert!(
        after >= before + 2,
        "the uplink passed {} packets",
        after - before
    );
}

/// `ip link add NAME type vxlan id VNI ...` between two underlay addresses.
fn kernel_vxlan(ns: &NetNs, name: &str, vni: &str, local: &str, remote: &str, address: &str) {
    ns.ip(&[
        "link", "add", name, "type", "vxlan", "id", vni, "dstport", "4789", "local", local,
        "remote", remote, "dev", "uplink0",
    ]);
    ns.ip(&["addr", "add", address, "dev", name]);
    ns.ip(&["link", "set", name, "up"]);
}

#[test]
fn a_kernel_vxlan_device_beside_netd_on_its_uplink_keeps_working() {
    let (underlay, _etcd, hosts) = cluster(1, |_| vec!["--uplink=uplink0".into()]);
    let netd_ip = format!("{UNDERLAY_PREFIX}.1");
    let other_ip = format!("{UNDERLAY_PREFIX}.9");
    // Another VXLAN user on the netd host (say Docker's overlay), VNI 42,
    // to a peer that is no netd host.
    let peer = NetNs::new("ndKv");
    plug_into_underlay(&underlay, &peer, &other_ip);
    kernel_vxlan(
        &hosts[0].ns,
        "vx42",
        "42",
        &netd_ip,
        &other_ip,
        "10.242.0.1/24",
    );
    kernel_vxlan(&peer, "vx42", "42", &other_ip, &netd_ip, "10.242.0.2/24");

    let uplink = hosts[0].netd.uplink_counters("uplink0");
    let pass = format!("netd_packets_total{{hook=\"{uplink}\",verdict=\"pass\"}}");
    let scrape = || hosts[0].netd.scrape(&hosts[0].ns).expect("metrics");
    let before = metric(&scrape(), &pass).expect("pass counter");
    assert!(
        ping(&hosts[0].ns, "10.242.0.2", 3) && ping(&peer, "10.242.0.1", 3),
        "the kernel VXLAN device stopped working with netd on the uplink"
    );
    let after = metric(&scrape(), &pass).expect("pass counter");
    assert!(
        after >= before + 6,
        "netd's uplink program saw {} of its packets",
        after - before
    );
    let unknown = format!("netd_drops_total{{hook=\"{uplink}\",reason=\"unknown_host\"}}");
    assert_eq!(metric(&scrape(), &unknown), Some(0));
}
