//! The two worlds the bench compares, on one topology: netd's cluster
//! and Docker's way (iptables DNAT, a bridge, a kernel VXLAN overlay).

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(super) enum System {
    /// netd with its uplinks at XDP, on an underlay made to act like NICs
    /// (the client finishes its checksums, the bridge's ports flush XDP_TX).
    #[serde(rename = "netd-xdp")]
    NetdXdp,
    /// netd with its uplinks at TC (`auto` on a veth), on the plain lab:
    /// the client's veth with its default offloads, a plain bridge.
    #[serde(rename = "netd-tc")]
    NetdTc,
    #[serde(rename = "docker-iptables")]
    DockerIptables,
}

impl System {
    pub(super) fn name(self) -> &'static str {
        match self {
            System::NetdXdp => "netd-xdp",
            System::NetdTc => "netd-tc",
            System::DockerIptables => "docker-iptables",
        }
    }
}

/// What both worlds give the measurements.
pub(super) struct World {
    pub(super) system: System,
    pub(super) hosts: Hosts,
    pub(super) client: NetNs,
    /// The container whose `eth0` drops what it gets.
    pub(super) sink: NetNs,
    pub(super) stop: Arc<AtomicBool>,
    /// Kept for their lifetime: the other containers.
    pub(super) _keep: Vec<NetNs>,
    pub(super) underlay: NetNs,
}

pub(super) enum Hosts {
    Netd { hosts: Vec<Host>, _etcd: Etcd },
    Kernel(Vec<NetNs>),
}

impl World {
    /// Host 0, where every measured packet comes in.
    pub(super) fn ingress(&self) -> &NetNs {
        match &self.hosts {
            Hosts::Netd { hosts, .. } => &hosts[0].ns,
            Hosts::Kernel(hosts) => &hosts[0],
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(120));
    }
}

/// netd at XDP on the NIC-like underlay.
pub(super) fn netd_xdp_world() -> anyhow::Result<World> {
    netd_world(System::NetdXdp)
}

/// netd at TC on the plain lab.
pub(super) fn netd_tc_world() -> anyhow::Result<World> {
    netd_world(System::NetdTc)
}

/// netd on two hosts sharing etcd; `near` and the sink on host 0, `far` on
/// host 1, each published on every host.
fn netd_world(system: System) -> anyhow::Result<World> {
    let (underlay, etcd, hosts) = cluster(2, |_| {
        let mut args = vec!["--uplink=uplink0".into(), "--log-level=warn".into()];
        if system == System::NetdXdp {
            args.push("--uplink-mode=xdp".into());
        }
        args
    });
    let client = if system == System::NetdXdp {
        underlay_takes_xdp_tx(&underlay);
        outside_client(&underlay, "bmC", CLIENT)
    } else {
        plain_client(&underlay, "bmC", CLIENT)
    };
    let hook = if system == System::NetdXdp {
        "xdp native"
    } else {
        "tc"
    };
    if hosts[0].netd.uplink_hook("uplink0") != hook {
        bail!("{}: host 0's uplink is not at {hook}", system.name());
    }
    hosts[0].netd.ok(&[
        "network",
        "create",
        "o1",
        "--subnet",
        "10.94.0.0/24",
        "--overlay",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut keep = Vec::new();
    for (name, host) in [("near", 0), ("far", 1)] {
        let ns = NetNs::new("bmB");
        hosts[host]
            .netd
            .endpoint(name, "o1", &ns, &["--label", &format!("app={name}")]);
        serve_bytes(&ns, TARGET, stop.clone());
        keep.push(ns);
    }
    let sink = NetNs::new("bmS");
    hosts[0]
        .netd
        .endpoint("sink", "o1", &sink, &["--label", "app=sink"]);
    for (name, publish) in [
        ("near", format!("{LOCAL}:{TARGET}/tcp")),
        ("far", format!("{REMOTE}:{TARGET}/tcp")),
        ("sink", format!("{SINK}:{SINK_TARGET}/udp")),
    ] {
        hosts[0].netd.ok(&[
            "service",
            "create",
            name,
            "--network",
            "o1",
            "--selector",
            &format!("app={name}"),
            "--publish",
            &publish,
        ]);
    }
    // The daemons' own work stays off the measured core.
    for h in &hosts {
        if let Some(pid) = h.netd.pid() {
            let _ = Command::new("taskset")
                .args(["-a", "-pc", &GENERATOR_CPU.to_string(), &pid.to_string()])
                .stdout(Stdio::null())
                .status();
        }
    }
    Ok(World {
        system,
        hosts: Hosts::Netd { hosts, _etcd: etcd },
        client,
        sink,
        stop,
        _keep: keep,
        underlay,
    })
}

pub(super) const OVERLAY_VNI: &str = "42";
/// Docker's default bridge network on host 0.
pub(super) const BRIDGE_GATEWAY: &str = "172.18.0.1";
pub(super) const NEAR_IP: &str = "172.18.0.2";
pub(super) const SINK_IP: &str = "172.18.0.3";
/// The swarm-style overlay between the hosts (kernel VXLAN and bridges).
pub(super) const INGRESS_SNAT: &str = "10.43.0.1";
pub(super) const FAR_IP: &str = "10.43.0.3";

/// Docker's way: host 0 with a bridge of containers (near, the sink) and
/// the published ports in iptables; host 1 with `far` on a kernel VXLAN
/// overlay that host 0 shares.
pub(super) fn docker_world() -> anyhow::Result<World> {
    let underlay = NetNs::new("bmU");
    underlay.ip(&["link", "add", "br0", "type", "bridge"]);
    underlay.ip(&["link", "set", "br0", "up"]);
    let mut hosts = Vec::new();
    for i in 0..2 {
        let host = NetNs::new("bmH");
        plug_into_underlay(&underlay, &host, &host_address(i));
        uplink_acts_as_nic(&host);
        kernel_vxlan_bridge(
            &host,
            OVERLAY_VNI,
            &host_address(i),
            &host_address(1 - i),
            "ov0",
        );
        let own = if i == 0 { INGRESS_SNAT } else { "10.43.0.254" };
        host.ip(&["addr", "add", &format!("{own}/24"), "dev", "ov0"]);
        hosts.push(host);
    }
    let client = outside_client(&underlay, "bmC", CLIENT);

    let host0 = &hosts[0];
    host0.ip(&["link", "add", "br0", "type", "bridge"]);
    host0.ip(&["addr", "add", &format!("{BRIDGE_GATEWAY}/16"), "dev", "br0"]);
    host0.ip(&["link", "set", "br0", "up"]);
    let stop = Arc::new(AtomicBool::new(false));
    let near = NetNs::new("bmB");
    let sink = NetNs::new("bmS");
    for (ns, ip, port) in [(&near, NEAR_IP, "vnear"), (&sink, SINK_IP, "vsink")] {
        veth_between(
            ns,
            "eth0",
            &format!("{ip}/16"),
            host0,
            port,
            "192.168.250.1/32",
        );
        host0.ip(&["addr", "flush", "dev", port]);
        host0.ip(&["link", "set", port, "master", "br0"]);
        ns.ip(&["route", "add", "default", "via", BRIDGE_GATEWAY]);
    }
    let far = NetNs::new("bmB");
    veth_between(
        &far,
        "eth0",
        &format!("{FAR_IP}/24"),
        &hosts[1],
        "vfar",
        "192.168.250.1/32",
    );
    far.ip(&["link", "set", "eth0", "mtu", "1450"]);
    hosts[1].ip(&["addr", "flush", "dev", "vfar"]);
    hosts[1].ip(&["link", "set", "vfar", "master", "ov0"]);
    for ns in [&near, &far] {
        serve_bytes(ns, TARGET, stop.clone());
    }
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.bridge.bridge-nf-call-iptables", "1"),
    ] {
        let out = host0.exec("sysctl", &["-qw", &format!("{key}={value}")]);
        if !out.status.success() {
            eprintln!("sysctl {key}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    iptables_restore(host0, &docker_rules())?;
    Ok(World {
        system: System::DockerIptables,
        hosts: Hosts::Kernel(hosts),
        client,
        sink,
        stop,
        _keep: vec![near, far],
        underlay,
    })
}
