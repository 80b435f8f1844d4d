//! The routing mesh's XDP program on crafted packets: a new flow to a
//! published port on this host's uplink address DNATed into a local
//! backend or tunnelled to a remote one (the client's address kept,
//! checksums checked by etherparse and an independent sum), conntrack and
//! the client's next hop recorded, what is not published passed untouched,
//! and the counted drops.

use netd_common::{
    counters::{DropReason, Hook, Verdict},
    map_names,
    mesh::MeshNeighbour,
    program_names::XDP_UPLINK,
    service::CtEntry,
    vxlan,
};
use netd_tests::{
    fixture::{addresses, assert_counted, Slot},
    mesh_fixture::*,
    overlay_fixture as o,
};

const XDP_DROP: i64 = 1;
const XDP_PASS: i64 = 2;
const XDP_TX: i64 = 3;
const XDP_REDIRECT: i64 = 4;
const HOOK: Hook = Hook::XdpUplink;

/// The value at `key` in the datapath's map `name`.
fn lookup<K: aya::Pod, V: aya::Pod>(
    f: &mut netd_tests::fixture::Fixture,
    name: &str,
    key: &K,
) -> Option<V> {
    let map = f.datapath.ebpf_mut().map(name).expect("the map");
    let hash: aya::maps::HashMap<_, K, V> = aya::maps::HashMap::try_from(map).expect("a hash map");
    hash.get(key, 0).ok()
}

#[test]
fn a_new_flow_to_a_published_port_is_dnated_into_the_local_backend_keeping_the_client() {
    let mut f = published_fixture(o::B_IP, 2);
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

    let ct: CtEntry = lookup(&mut f, map_names::NETD_CT, &flow()).expect("tracked");
    assert_eq!((ct.backend_ip, ct.table), (o::B_IP, TABLE));
    let next_hop: MeshNeighbour =
        lookup(&mut f, map_names::NETD_MESH_NEIGH, &CLIENT).expect("the client's next hop");
    assert_eq!((next_hop.next_hop, next_hop.own), (ROUTER_MAC, UPLINK_MAC));
}

#[test]
fn a_new_flow_to_a_remote_backend_is_tunnelled_to_its_host_keeping_the_client() {
    let mut f = published_fixture(o::A_IP, 1);
    let underlay = Underlay::new(&mut f);
    let own_mac = underlay.mac();
    let packet = syn_to(PUBLISHED);
    let before = f.snapshot();
    let run = underlay
        .run(|| f.run_xdp(XDP_UPLINK, &packet))
        .expect("run");
    let after = f.snapshot();
    // The test run arrives on loopback; the tunnel leaves by up0.
    assert_counted(
        &before,
        &after,
        &[Slot::Verdict(HOOK, Verdict::Redirect)],
        packet.len() as u64,
        "mesh tunnel to a remote backend",
    );
    assert_eq!(run.verdict, XDP_REDIRECT);
    let out = run.output;
    assert_eq!(out.len(), packet.len() + 50, "50 bytes of outer headers");
    assert_eq!(&out[..6], &PEER_MAC, "to host 7's underlay neighbour");
    assert_eq!(&out[6..12], &own_mac, "from the uplink");
    let ip = &out[14..34];
    assert_eq!((ip[0], ip[9]), (0x45, 17), "outer IPv4 carrying UDP");
    assert_eq!(&ip[12..16], &o::HERE_UNDERLAY, "outer source");
    assert_eq!(&ip[16..20], &o::PEER_UNDERLAY, "outer destination");
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        out.len() - 14,
        "outer total length"
    );
    assert_eq!(
        testpkt::internet_checksum(ip),
        0,
        "outer IPv4 checksum (summed independently)"
    );
    let udp = &out[34..42];
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4789, "VXLAN port");
    assert_eq!(
        &out[42..46],
        &[0x08, 0, 0, vxlan::MESH_INGRESS],
        "VXLAN flags, marked as the routing mesh's"
    );
    assert_eq!(
        u32::from_be_bytes([0, out[46], out[47], out[48]]),
        o::VNI,
        "the network's VNI"
    );
    let (dst_mac, src, dst) = addresses(&out[50..]);
    assert_eq!(dst_mac, o::A_MAC, "inner frame addressed to the backend");
    assert_eq!(src, (CLIENT, CLIENT_PORT), "the client's own address");
    assert_eq!(dst, (o::A_IP, TARGET));
    let ct: CtEntry = lookup(&mut f, map_names::NETD_CT, &flow()).expect("tracked");
    assert_eq!((ct.backend_ip, ct.table), (o::A_IP, TABLE));
}

/// A SYN from the client to the published port carrying `payload` bytes,
/// with DF set or not.
fn big_syn(df: bool, payload: usize) -> Vec<u8> {
    let mut ip =
        etherparse::Ipv4Header::new(0, 60, etherparse::IpNumber::TCP, CLIENT, o::HERE_UNDERLAY)
            .expect("header");
    ip.dont_fragment = df;
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(ROUTER_MAC, UPLINK_MAC)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .tcp(CLIENT_PORT, PUBLISHED, 7, 64240)
        .syn()
        .write(&mut out, &vec![0x33; payload])
        .expect("packet");
    out
}

#[test]
fn a_packet_the_tunnel_would_make_too_big_gets_fragmentation_needed_if_it_forbids_fragments() {
    let mut f = published_fixture(o::A_IP, 1);
    let underlay = Underlay::new(&mut f);
    underlay.ns.ip(&["link", "set", "up0", "mtu", "1000"]);
    // 1040 bytes of IP, 1090 once wrapped: over up0's 1000.
    let packet = big_syn(true, 1000);
    let before = f.snapshot();
    let run = underlay
        .run(|| f.run_xdp(XDP_UPLINK, &packet))
        .expect("run");
    let after = f.snapshot();
    assert_counted(
        &before,
        &after,
        &[
            Slot::Verdict(HOOK, Verdict::Drop),
            Slot::Drop(HOOK, DropReason::TooBig),
        ],
        packet.len() as u64,
        "too big for the tunnel",
    );
    assert_eq!(
        run.verdict, XDP_TX,
        "the answer goes back out of the uplink"
    );
    let out = run.output;
    assert_eq!(out.len(), 14 + 20 + 8 + 28, "IPv4, ICMP, the quote");
    assert_eq!(&out[..6], &ROUTER_MAC, "to the MAC the packet came from");
    assert_eq!(&out[6..12], &UPLINK_MAC);
    let ip = &out[14..34];
    assert_eq!(
        testpkt::internet_checksum(ip),
        0,
        "IPv4 checksum (summed independently)"
    );
    assert_eq!(
        (ip[9], &ip[12..16], &ip[16..20]),
        (1, &o::HERE_UNDERLAY[..], &CLIENT[..])
    );
    let icmp = &out[34..];
    assert_eq!(
        testpkt::internet_checksum(icmp),
        0,
        "ICMP checksum (summed independently)"
    );
    assert_eq!(
        (icmp[0], icmp[1]),
        (3, 4),
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(
        u16::from_be_bytes([icmp[6], icmp[7]]),
        1000 - 50,
        "the MTU left inside the tunnel"
    );
    assert_eq!(
        &icmp[8..36],
        &packet[14..42],
        "the packet as the client sent it, quoted"
    );

    // Without DF nothing is sent back: fragments are not made here.
    let packet = big_syn(false, 1000);
    let run = underlay
        .run(|| f.run_xdp(XDP_UPLINK, &packet))
        .expect("run");
    assert_eq!(run.verdict, XDP_DROP);
}

#[test]
fn what_is_not_published_passes_untouched() {
    let mut f = published_fixture(o::B_IP, 2);
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
        let mut f = published_fixture(backend, active);
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
