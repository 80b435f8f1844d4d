//! Simulated hosts for the multi-host tests: namespaces on an underlay
//! namespace whose bridge stands for the physical network, one etcd
//! serving inside the underlay, one netd per host.

use std::time::{Duration, Instant};

use crate::{
    etcd::Etcd,
    fixture::{Fixture, TempPins},
    netns::{sh, veth_between, within, NetNs},
    process::Netd,
};

/// The underlay subnet; host `i` is `.{i + 1}` on its `uplink0`, etcd `.254`.
pub const UNDERLAY_PREFIX: &str = "10.96.0";

pub struct Host {
    pub ns: NetNs,
    pub netd: Netd,
    _pins: TempPins,
}

impl Host {
    /// Where this host's netd pins its datapath.
    pub fn pins(&self) -> &netd::dataplane::PinLayout {
        &self._pins.layout
    }

    /// Creates endpoint `name` of `network` in `sandbox` on this host;
    /// returns its address.
    pub fn endpoint(&self, name: &str, network: &str, sandbox: &NetNs) -> String {
        self.netd.endpoint(name, network, sandbox, &[])
    }
}

/// Waits up to 20 s for `check`; returns how long it took.
pub fn eventually(what: &str, check: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !check() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what} did not happen in 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

/// Gives `host` an `uplink0` at `address` (/24) on the underlay's bridge.
pub fn plug_into_underlay(underlay: &NetNs, host: &NetNs, address: &str) {
    let outer = crate::unique_name("ul");
    veth_between(
        host,
        "uplink0",
        &format!("{address}/24"),
        underlay,
        &outer,
        "10.96.1.99/32",
    );
    // The underlay end is a bridge port, not an addressed interface.
    underlay.ip(&["addr", "flush", "dev", &outer]);
    underlay.ip(&["link", "set", &outer, "master", "br0"]);
}

/// Frames a host's XDP sends back out of its uplink (XDP_TX: the routing
/// mesh's tunnel and its replies) land in the veth peer's XDP ring, and the
/// kernel wakes that ring only when the peer has an XDP program of its own
/// (`veth_xdp_flush`); without one they wait for the next frame the peer
/// happens to receive. A switch port takes any frame, so every port of the
/// underlay's bridge gets the do-nothing XDP program, attached the way
/// iproute2 does it (by netlink, held by the device, gone with it).
pub fn underlay_takes_xdp_tx(underlay: &NetNs) {
    let mut fixture = Fixture::load();
    fixture.load_baselines();
    let pin = fixture.pin_root().join("xdp_pass");
    fixture.pin_xdp(netd_common::program_names::XDP_BASELINE, &pin);
    let pin_arg = pin.to_string_lossy().into_owned();
    let ports =
        String::from_utf8_lossy(&underlay.ip(&["-o", "link", "show", "master", "br0"]).stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .collect::<Vec<_>>();
    assert!(!ports.is_empty(), "the underlay bridge has ports");
    // From a thread in the underlay, not `ip -n`: that remounts /sys, and
    // the pin is on this mount namespace's bpffs.
    within(underlay, || {
        for port in &ports {
            sh(
                "ip",
                &["link", "set", "dev", port, "xdpdrv", "pinned", &pin_arg],
            );
        }
    });
    std::fs::remove_file(&pin).expect("unpin the do-nothing program");
}

/// For a host without netd, as libnetwork's overlay driver builds one: a
/// kernel VXLAN device `vx0` (VNI `vni`, port 4789, from `local` on
/// `uplink0`) in a new bridge `bridge`, both up, flooding to `peer` by an
/// all-zero FDB entry and learning MACs.
pub fn kernel_vxlan_bridge(host: &NetNs, vni: &str, local: &str, peer: &str, bridge: &str) {
    host.ip(&[
        "link", "add", "vx0", "type", "vxlan", "id", vni, "dstport", "4789", "local", local, "dev",
        "uplink0",
    ]);
    let ns = host.name.as_str();
    sh(
        "bridge",
        &[
            "-n",
            ns,
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dev",
            "vx0",
            "dst",
            peer,
        ],
    );
    host.ip(&["link", "add", bridge, "type", "bridge"]);
    host.ip(&["link", "set", "vx0", "master", bridge]);
    for dev in ["vx0", bridge] {
        host.ip(&["link", "set", dev, "up"]);
    }
}

/// A client outside the cluster on the underlay at `address`, a plain
/// veth with its default offloads: its TCP and UDP checksums arrive
/// partial, as from any veth.
pub fn plain_client(underlay: &NetNs, prefix: &str, address: &str) -> NetNs {
    let client = NetNs::new(prefix);
    plug_into_underlay(underlay, &client, address);
    client
}

/// A client outside the cluster on the underlay at `address`, its frames
/// arriving with whole checksums, as from a NIC.
pub fn outside_client(underlay: &NetNs, prefix: &str, address: &str) -> NetNs {
    let client = NetNs::new(prefix);
    plug_into_underlay(underlay, &client, address);
    uplink_acts_as_nic(&client);
    client
}

/// For a host without netd: its `uplink0` finishes checksums on transmit,
/// as a NIC does before the wire; netd does the same to a veth uplink of
/// its own, with this same call.
pub fn uplink_acts_as_nic(host: &NetNs) {
    netd::netlink::finish_checksums_on_transmit(&host.path(), "uplink0")
        .expect("transmit checksum offload off on uplink0");
}

/// `n` hosts named `host-0`.. with netd on the shared etcd; `extra(i)` adds
/// arguments to host `i`'s `netd run`. The underlay is returned so it
/// outlives the hosts.
pub fn cluster(n: usize, extra: impl Fn(usize) -> Vec<String>) -> (NetNs, Etcd, Vec<Host>) {
    let underlay = NetNs::new("ndU");
    underlay.ip(&["link", "add", "br0", "type", "bridge"]);
    underlay.ip(&[
        "addr",
        "add",
        &format!("{UNDERLAY_PREFIX}.254/24"),
        "dev",
        "br0",
    ]);
    underlay.ip(&["link", "set", "br0", "up"]);
    let etcd = Etcd::start_in(&underlay, &format!("{UNDERLAY_PREFIX}.254"));
    let store = format!("--store=etcd://{}", etcd.endpoint());
    let mut hosts = Vec::new();
    for i in 0..n {
        let ns = NetNs::new("ndHc");
        plug_into_underlay(&underlay, &ns, &format!("{UNDERLAY_PREFIX}.{}", i + 1));
        let pins = TempPins::new();
        let mut args = vec![store.clone(), format!("--host-name=host-{i}")];
        args.extend(extra(i));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut netd = Netd::start(&ns, pins.layout.root(), 19964, &args);
        netd.wait_ready(&ns);
        hosts.push(Host {
            ns,
            netd,
            _pins: pins,
        });
    }
    (underlay, etcd, hosts)
}
