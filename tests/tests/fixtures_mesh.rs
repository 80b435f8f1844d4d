//! The routing mesh's XDP program on crafted packets: a new flow to a
//! published port on this host's uplink address DNATed into a local
//! backend (the client's address kept, checksums checked by etherparse),
//! conntrack and the client's next hop recorded, what is not published
//! passed untouched, and the counted drops.

use netd::dataplane::{
    maps::{MapOp, MapWriter},
    tables,
};
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    map_names,
    maps::EndpointEntry,
    mesh::{MeshNeighbour, PublishedKey},
    program_names::XDP_UPLINK,
    service::{
        BackendEntry, BackendKey, CtEntry, CtTuple, MaglevTable, ServiceEntry, BACKEND_ACTIVE,
        PROTO_TCP,
    },
};
use netd_tests::{
    fixture::{addresses, assert_counted, local_endpoint, Fixture, Slot},
    overlay_fixture as o,
};

const XDP_DROP: i64 = 1;
const XDP_PASS: i64 = 2;
const XDP_REDIRECT: i64 = 4;
const HOOK: Hook = Hook::XdpUplink;

const CLIENT: [u8; 4] = [198, 51, 100, 9];
const CLIENT_PORT: u16 = 40000;
const ROUTER_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 1];
const UPLINK_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 2];
const PUBLISHED: u16 = 30080;
const TARGET: u16 = 8080;
const TABLE: u32 = 1;
const B_IF: u32 = 50;

/// This host (192.0.2.1) publishes 30080/tcp for a service whose Maglev
/// table holds only `backend`: B, local behind veth 50, or A, on host 7.
fn world(backend: [u8; 4], active: u32) -> Fixture {
    let mut f = Fixture::load();
    o::set_overlay(&mut f);
    let mut ops: Vec<MapOp> = local_endpoint(B_IF, 1, o::B_IP, o::B_MAC, o::HOST_MAC).into();
    ops.push(MapOp::put(
        tables::ENDPOINTS,
        o::A_IP,
        EndpointEntry {
            ifindex: 0,
            network: 1,
            mac: o::A_MAC,
            host: o::PEER_HOST,
        },
    ));
    for ip in [o::A_IP, o::B_IP] {
        ops.push(MapOp::put(
            tables::BACKENDS,
            BackendKey { table: TABLE, ip },
            BackendEntry {
                state: BACKEND_ACTIVE,
                weight: 1,
            },
        ));
    }
    let mut table = MaglevTable::default();
    table.slots.fill(u32::from_ne_bytes(backend));
    ops.push(MapOp::put(tables::MAGLEV, TABLE, table));
    ops.push(MapOp::put(
        tables::PUBLISHED,
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
    f
}

/// A SYN from the client, through its router, to this host's `port`.
fn syn_to(port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(ROUTER_MAC, UPLINK_MAC)
        .ipv4(CLIENT, o::HERE_UNDERLAY, 60)
        .tcp(CLIENT_PORT, port, 7, 64240)
        .syn()
        .write(&mut out, b"hello")
        .expect("packet");
    out
}

fn flow() -> CtTuple {
    CtTuple {
        src: CLIENT,
        dst: o::HERE_UNDERLAY,
        src_port: CLIENT_PORT.to_be_bytes(),
        dst_port: PUBLISHED.to_be_bytes(),
        proto: PROTO_TCP,
        _pad: [0; 3],
    }
}

/// The value at `key` in the datapath's map `name`.
fn lookup<K: aya::Pod, V: aya::Pod>(f: &mut Fixture, name: &str, key: &K) -> Option<V> {
    let map = f.datapath.ebpf_mut().map(name).expect("the map");
    let hash: aya::maps::HashMap<_, K, V> = aya::maps::HashMap::try_from(map).expect("a hash map");
    hash.get(key, 0).ok()
}

#[test]
fn a_new_flow_to_a_published_port_is_dnated_into_the_local_backend_keeping_the_client() {
    let mut f = world(o::B_IP, 2);
    let packet = syn_to(PUBLISHED);
    let before = f.snapshot();
    let run = f.run_xdp(XDP_UPLINK, &packet).expect("run");
    let after = f.snapshot();
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_counted(
        &before,
        &after,
        &[Slot::Verdict(HOOK, Verdict::Redirect)],
        packet.len() as u64,
        "mesh to a local backend",
    );
    let (dst_mac, src, dst) = addresses(&run.output);
    assert_eq!(dst_mac, o::B_MAC, "addressed to the backend");
    assert_eq!(&run.output[6..12], &o::HOST_MAC, "from its gateway");
    assert_eq!(src, (CLIENT, CLIENT_PORT), "the client's own address");
    assert_eq!(dst, (o::B_IP, TARGET));

    let ct: CtEntry = lookup(&mut f, map_names::CT, &flow()).expect("tracked");
    assert_eq!((ct.backend_ip, ct.table), (o::B_IP, TABLE));
    let next_hop: MeshNeighbour =
        lookup(&mut f, map_names::MESH_NEIGH, &CLIENT).expect("the client's next hop");
    assert_eq!((next_hop.next_hop, next_hop.own), (ROUTER_MAC, UPLINK_MAC));
}

#[test]
fn what_is_not_published_passes_untouched() {
    let mut f = world(o::B_IP, 2);
    for port in [PUBLISHED + 1, 22] {
        let packet = syn_to(port);
        let run = f.run_xdp(XDP_UPLINK, &packet).expect("run");
        assert_eq!(run.verdict, XDP_PASS, "port {port}");
        assert_eq!(run.output, packet, "port {port} untouched");
    }
}

#[test]
fn a_published_port_without_backends_or_a_route_is_a_counted_drop() {
    let packet = syn_to(PUBLISHED);
    // No active backend; and a remote backend whose host has no route
    // here: the tunnel cannot be built, and nothing is sent.
    for (backend, active, reason, what) in [
        (o::B_IP, 0, DropReason::NoBackend, "no backend"),
        (
            o::A_IP,
            1,
            DropReason::EncapFailed,
            "no route to the backend's host",
        ),
    ] {
        let mut f = world(backend, active);
        let before = f.snapshot();
        assert_eq!(
            f.run_xdp(XDP_UPLINK, &packet).expect("run").verdict,
            XDP_DROP,
            "{what}"
        );
        let after = f.snapshot();
        assert_counted(
            &before,
            &after,
            &[Slot::Verdict(HOOK, Verdict::Drop), Slot::Drop(HOOK, reason)],
            packet.len() as u64,
            what,
        );
    }
}
