//! One simulated routing-mesh host for the uplink fixtures and the bench:
//! this host (the overlay fixture's 192.0.2.1, its one published address)
//! publishes 30080/tcp for a service
//! whose Maglev table holds one backend, B (local, behind veth 50) or A (on
//! host 7). A client outside the cluster reaches it through its router.
//!
//! The tunnel to host 7 asks the FIB for the next hop, so a run that takes
//! that path needs [`Underlay`]: a namespace where 192.0.2.7 is resolved.

use netd::dataplane::{
    maps::{MapOp, MapWriter},
    tables,
};
use netd_common::{
    maps::{EndpointEntry, OverlayConfig},
    mesh::PublishedKey,
    service::{CtTuple, ServiceEntry, PROTO_TCP},
};

use crate::{
    fixture::{active_backend, local_endpoint, maglev_all_to, Fixture},
    netns::{within, NetNs},
    overlay_fixture as o,
};

pub const CLIENT: [u8; 4] = [198, 51, 100, 9];
pub const CLIENT_PORT: u16 = 40000;
pub const ROUTER_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 1];
pub const UPLINK_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 2];
/// Host 7's MAC as this host's underlay neighbour.
pub const PEER_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 7];
pub const PUBLISHED: u16 = 30080;
pub const TARGET: u16 = 8080;
pub const TABLE: u32 = 1;
pub const B_IF: u32 = 50;

/// The published service with `backend` in every Maglev slot and `active`
/// backends counted.
pub fn published_fixture(backend: [u8; 4], active: u32) -> Fixture {
    let mut f = Fixture::load();
    o::set_overlay(&mut f);
    let mut ops: Vec<MapOp> = local_endpoint(B_IF, 1, o::B_IP, o::B_MAC, o::HOST_MAC).into();
    ops.push(MapOp::put(
        tables::NETD_ENDPOINTS,
        o::A_IP,
        EndpointEntry {
            ifindex: 0,
            network: 1,
            mac: o::A_MAC,
            host: o::PEER_HOST,
        },
    ));
    ops.extend([o::A_IP, o::B_IP].map(|ip| active_backend(TABLE, ip)));
    ops.push(MapOp::put(
        tables::NETD_MAGLEV,
        TABLE,
        maglev_all_to(backend),
    ));
    ops.push(MapOp::put(
        tables::NETD_PUBLISHED,
        PublishedKey {
            port: PUBLISHED.to_be_bytes(),
            proto: PROTO_TCP,
            _pad: 0,
        },
        ServiceEntry {
            table: TABLE,
            active,
            target_port: TARGET.to_be_bytes(),
            flags: 0,
            affinity_secs: 0,
        },
    ));
    for op in &ops {
        f.maps.apply(op).expect("map write");
    }
    f.datapath
        .write_publish_addresses(&[o::HERE_UNDERLAY.into()])
        .expect("published address");
    f
}

/// A TCP segment from the client, through its router, to this host's
/// `port`: the SYN that opens a flow, or the ACK that follows.
pub fn segment_to(port: u16, from_port: u16, syn: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let builder = etherparse::PacketBuilder::ethernet2(ROUTER_MAC, UPLINK_MAC)
        .ipv4(CLIENT, o::HERE_UNDERLAY, 60)
        .tcp(from_port, port, 7, 64240);
    let builder = if syn { builder.syn() } else { builder.ack(1) };
    builder.write(&mut out, b"hello").expect("packet");
    out
}

pub fn syn_to(port: u16) -> Vec<u8> {
    segment_to(port, CLIENT_PORT, true)
}

/// The conntrack key of the client's flow to the published port.
pub fn flow() -> CtTuple {
    CtTuple {
        src: CLIENT,
        dst: o::HERE_UNDERLAY,
        src_port: CLIENT_PORT.to_be_bytes(),
        dst_port: PUBLISHED.to_be_bytes(),
        proto: PROTO_TCP,
        _pad: [0; 3],
    }
}

/// A namespace whose `up0` holds this host's underlay address with host 7
/// a permanent neighbour, and the fixture's uplink pointed at it: program
/// runs made in it ([`Underlay::run`]) find the tunnel's next hop.
pub struct Underlay {
    pub ns: NetNs,
    pub ifindex: u32,
}

impl Underlay {
    pub fn new(f: &mut Fixture) -> Self {
        let ns = NetNs::new("ndMx");
        ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
        let here = std::net::Ipv4Addr::from(o::HERE_UNDERLAY).to_string();
        ns.ip(&["addr", "add", &format!("{here}/24"), "dev", "up0"]);
        for dev in ["up0", "up1"] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        let peer = std::net::Ipv4Addr::from(o::PEER_UNDERLAY).to_string();
        let mac = PEER_MAC
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        ns.ip(&[
            "neigh",
            "replace",
            &peer,
            "lladdr",
            &mac,
            "dev",
            "up0",
            "nud",
            "permanent",
        ]);
        // As netd does to its uplink: the kernel answers FIB lookups only
        // for a device that forwards.
        let sysctl = ns.exec("sysctl", &["-qw", "net.ipv4.conf.up0.forwarding=1"]);
        assert!(sysctl.status.success(), "forwarding on up0");
        // SAFETY: if_nametoindex reads a NUL-terminated name.
        let ifindex = within(&ns, || unsafe { libc::if_nametoindex(c"up0".as_ptr()) });
        assert_ne!(ifindex, 0, "up0 exists");
        f.maps
            .apply(&MapOp::put(
                tables::NETD_OVERLAY,
                0,
                OverlayConfig {
                    underlay: o::HERE_UNDERLAY,
                    uplink_ifindex: ifindex,
                },
            ))
            .expect("map write");
        Self { ns, ifindex }
    }

    /// up0's MAC: the tunnel's outer source.
    pub fn mac(&self) -> [u8; 6] {
        self.ns.mac("up0")
    }

    /// `run` from a thread in the namespace, where the FIB lookups are made.
    pub fn run<T: Send>(&self, run: impl FnOnce() -> T + Send) -> T {
        within(&self.ns, run)
    }
}

/// Writes `NETD_PUBLISHED_PORTS` as netd's pass does with TCP `ports`
/// published: a bit for each, and the word that says it is written.
pub fn write_published_port_bits(f: &mut Fixture, ports: &[u16]) {
    use netd_common::mesh::{published_port_bit, PORTS_WRITTEN};
    let mut ops = vec![MapOp::put(
        tables::NETD_PUBLISHED_PORTS,
        PORTS_WRITTEN,
        1u64,
    )];
    for &port in ports {
        let (word, bit) = published_port_bit(port, PROTO_TCP).expect("tcp");
        ops.push(MapOp::put(tables::NETD_PUBLISHED_PORTS, word, bit));
    }
    for op in &ops {
        f.maps.apply(op).expect("map write");
    }
}
