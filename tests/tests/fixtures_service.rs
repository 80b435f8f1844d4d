//! The service path of the endpoint program on crafted packets: DNAT of a
//! packet to a VIP, reverse NAT of the reply, conntrack keeping a flow on
//! its backend, hairpin, the refusals of a port without backends (RST,
//! ICMP port unreachable), ICMP errors translated, counted drops, and the
//! translation events a monitor gets.
//! Checksums of the output are checked by etherparse, not by netd's code.
//!
//! BPF_PROG_TEST_RUN runs TC programs on an skb of the loopback device, so
//! the sending endpoint's host veth is ifindex 1 here.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use netd::dataplane::{
    conntrack::monotonic_ns,
    maps::{MapOp, MapWriter},
    tables,
};
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    events::{EventKind, MonitorConfig},
    map_names,
    maps::{NetworkEntry, PROG_SERVICE},
    program_names::{TC_ENDPOINT, XDP_UPLINK},
    service::{
        AffinityEntry, AffinityKey, BackendEntry, BackendKey, CtEntry, CtTuple, RevNatEntry,
        ServiceEntry, ServiceKey, VipEntry, BACKEND_ACTIVE, BACKEND_DRAINING, HAIRPIN_IP,
        PROTO_TCP, PROTO_UDP, SERVICE_AFFINITY,
    },
};
use netd_tests::{
    fixture::{
        active_backend, addresses, assert_counted, local_endpoint, maglev_all_to, Endpoint,
        Fixture, Slot,
    },
    overlay_fixture as o,
};

const TC_ACT_SHOT: i64 = 2;
const TC_ACT_REDIRECT: i64 = 7;
const XDP_REDIRECT: i64 = 4;
const HOOK: Hook = Hook::TcEndpoint;

const HERE: u32 = 1;
const B_IF: u32 = 50;
const D_IF: u32 = 70;

const A_IP: [u8; 4] = [10, 1, 0, 2];
const A_MAC: [u8; 6] = [0x02, 0x6e, 10, 1, 0, 2];
const HOST_MAC: [u8; 6] = [0x0a, 0, 0, 0, 0, 1];
const B_IP: [u8; 4] = [10, 1, 0, 3];
const B_MAC: [u8; 6] = [0x02, 0x6e, 10, 1, 0, 3];
const D_IP: [u8; 4] = [10, 1, 0, 4];
const D_MAC: [u8; 6] = [0x02, 0x6e, 10, 1, 0, 4];
const VIP: [u8; 4] = [10, 1, 0, 100];

const TABLE: u32 = 1;
const TARGET: u16 = 8080;

struct World {
    f: Fixture,
}

/// Network 1: A (the client, here), B and D (backends); a service at
/// VIP:80/tcp and VIP:53/udp, both to port 8080 of its backends.
fn world(backend: [u8; 4]) -> World {
    let mut f = Fixture::load();
    let mut ops = vec![MapOp::put(
        tables::NETD_NETWORKS,
        1,
        NetworkEntry {
            gateway: [10, 1, 0, 1],
            vni: 0,
        },
    )];
    for (ifindex, ip, mac) in [
        (HERE, A_IP, A_MAC),
        (B_IF, B_IP, B_MAC),
        (D_IF, D_IP, D_MAC),
    ] {
        ops.extend(local_endpoint(ifindex, 1, ip, mac, HOST_MAC));
    }
    ops.extend([B_IP, D_IP, A_IP].map(|ip| active_backend(TABLE, ip)));
    ops.push(MapOp::put(
        tables::NETD_MAGLEV,
        TABLE,
        maglev_all_to(backend),
    ));
    ops.extend(service_ports(1));
    ops.push(MapOp::put(
        tables::NETD_VIPS,
        VIP,
        VipEntry {
            network: 1,
            table: TABLE,
        },
    ));
    for op in &ops {
        f.maps.apply(op).expect("map write");
    }
    World { f }
}

/// The service's two ports (VIP:80/tcp, VIP:53/udp, both to TARGET), with
/// `active` backends taking new flows.
fn service_ports(active: u32) -> Vec<MapOp> {
    service_ports_with(active, 0)
}

/// As [`service_ports`], with client affinity for `affinity_secs` (0: none).
fn service_ports_with(active: u32, affinity_secs: u32) -> Vec<MapOp> {
    [(80u16, PROTO_TCP), (53, PROTO_UDP)]
        .into_iter()
        .map(|(port, proto)| {
            MapOp::put(
                tables::NETD_SERVICES,
                ServiceKey {
                    vip: VIP,
                    port: port.to_be_bytes(),
                    proto,
                    _pad: 0,
                },
                ServiceEntry {
                    table: TABLE,
                    active,
                    target_port: TARGET.to_be_bytes(),
                    flags: if affinity_secs > 0 {
                        SERVICE_AFFINITY
                    } else {
                        0
                    },
                    affinity_secs,
                },
            )
        })
        .collect()
}

/// What the client's TC program records when `client`:40000 sends to
/// VIP:53/udp and `backend`:TARGET is picked: a reply from `backend` to
/// `to` (the client, or the hairpin address) goes back as from VIP:53.
fn record_udp_reply(f: &mut Fixture, backend: [u8; 4], to: [u8; 4], client: [u8; 4]) {
    let reply = CtTuple {
        src: backend,
        dst: to,
        src_port: TARGET.to_be_bytes(),
        dst_port: 40000u16.to_be_bytes(),
        proto: PROTO_UDP,
        _pad: [0; 3],
    };
    let entry = RevNatEntry {
        vip: VIP,
        vip_port: 53u16.to_be_bytes(),
        client,
        ..Default::default()
    };
    record_reply(f, reply, entry);
}

/// Records in NETD_REV_NAT what a client's TC program records when it
/// sends a new flow: `reply` (the backend's answer) becomes `entry`.
fn record_reply(f: &mut Fixture, reply: CtTuple, entry: RevNatEntry) {
    let map = f
        .datapath
        .ebpf_mut()
        .map_mut(map_names::NETD_REV_NAT)
        .expect("NETD_REV_NAT in the object");
    let mut rev: aya::maps::HashMap<_, CtTuple, RevNatEntry> =
        aya::maps::HashMap::try_from(map).expect("a hash map");
    rev.insert(reply, entry, 0).expect("insert");
}

/// An ICMP port unreachable from `from` to `to` in a frame between `macs`
/// (source, destination), quoting the datagram `quoted.0:40000 →
/// quoted.1:quoted.2` whole, as Linux does.
fn port_unreachable(
    macs: ([u8; 6], [u8; 6]),
    from: [u8; 4],
    to: [u8; 4],
    quoted: ([u8; 4], [u8; 4], u16),
) -> Vec<u8> {
    let mut body = Vec::new();
    etherparse::PacketBuilder::ipv4(quoted.0, quoted.1, 63)
        .udp(40000, quoted.2)
        .write(&mut body, b"query")
        .expect("udp");
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(from, to, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut out, &body)
        .expect("icmp");
    out
}

fn tcp(src: ([u8; 4], u16), dst: ([u8; 4], u16), src_mac: [u8; 6]) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(src_mac, HOST_MAC)
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, 1000, 64240)
        .syn()
        .write(&mut out, b"hello")
        .expect("tcp");
    out
}

fn udp(src: ([u8; 4], u16), dst: ([u8; 4], u16), src_mac: [u8; 6]) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(src_mac, HOST_MAC)
        .ipv4(src.0, dst.0, 64)
        .udp(src.1, dst.1)
        .write(&mut out, b"query")
        .expect("udp");
    out
}

fn run(w: &mut World, packet: &[u8]) -> (i64, Vec<u8>) {
    let run = w.f.run_tc(TC_ENDPOINT, packet).expect("test run");
    (run.verdict, run.output)
}

fn conntrack(w: &mut World) -> Vec<(CtTuple, CtEntry)> {
    let map =
        w.f.datapath
            .ebpf_mut()
            .map(map_names::NETD_CT)
            .expect("NETD_CT in the object");
    let ct: aya::maps::HashMap<_, CtTuple, CtEntry> =
        aya::maps::HashMap::try_from(map).expect("a hash map");
    ct.iter().map(|e| e.expect("read NETD_CT")).collect()
}

/// Makes the endpoint behind the test runs' interface (ifindex 1) the one
/// at `ip`/`mac` (a backend answering, say), and A's veth another one.
fn sending_as(w: &mut World, ip: [u8; 4], mac: [u8; 6], a_if: u32) {
    for op in local_endpoint(HERE, 1, ip, mac, HOST_MAC)
        .iter()
        .chain(&local_endpoint(a_if, 1, A_IP, A_MAC, HOST_MAC))
    {
        w.f.maps.apply(op).expect("map write");
    }
}

#[test]
fn a_packet_to_the_vip_is_dnated_to_the_backend_with_valid_checksums() {
    let mut w = world(B_IP);
    for (what, packet) in [
        ("tcp", tcp((A_IP, 40000), (VIP, 80), A_MAC)),
        ("udp", udp((A_IP, 40001), (VIP, 53), A_MAC)),
    ] {
        let before = w.f.snapshot();
        let (verdict, out) = run(&mut w, &packet);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{what}");
        let (mac, src, dst) = addresses(&out);
        assert_eq!(mac, B_MAC, "{what}: addressed to the backend");
        assert_eq!(src, (A_IP, if what == "tcp" { 40000 } else { 40001 }));
        assert_eq!(dst, (B_IP, TARGET), "{what}: DNATed");
        assert_eq!(out.len(), packet.len());
        assert_counted(
            &before,
            &w.f.snapshot(),
            &[Slot::Verdict(HOOK, Verdict::Redirect)],
            packet.len() as u64,
            what,
        );
    }
    let flows = conntrack(&mut w);
    assert_eq!(flows.len(), 2, "one conntrack entry per flow: {flows:?}");
    assert!(flows
        .iter()
        .all(|(t, e)| t.src == A_IP && t.dst == VIP && e.backend_ip == B_IP && e.packets == 1));
}

#[test]
fn the_reply_is_reverse_natted_to_the_vip() {
    let mut w = world(B_IP);
    let (verdict, _) = run(&mut w, &tcp((A_IP, 40000), (VIP, 80), A_MAC));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    // B answers, from its own veth, straight to A's MAC.
    sending_as(&mut w, B_IP, B_MAC, 80);
    let mut reply = tcp((B_IP, TARGET), (A_IP, 40000), B_MAC);
    reply[..6].copy_from_slice(&A_MAC);
    let (verdict, out) = run(&mut w, &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (mac, src, dst) = addresses(&out);
    assert_eq!((mac, src, dst), (A_MAC, (VIP, 80), (A_IP, 40000)));
    // Another of B's flows, that no client opened through the VIP, is
    // left alone.
    let mut other = tcp((B_IP, TARGET), (A_IP, 40999), B_MAC);
    other[..6].copy_from_slice(&A_MAC);
    let (_, out) = run(&mut w, &other);
    assert_eq!(addresses(&out).1, (B_IP, TARGET));
}

#[test]
fn conntrack_keeps_a_flow_on_its_backend_and_new_flows_follow_the_table() {
    let mut w = world(B_IP);
    let flow = tcp((A_IP, 40000), (VIP, 80), A_MAC);
    run(&mut w, &flow);
    // The table now sends everything to D: the flow stays on B...
    w.f.maps
        .apply(&MapOp::put(tables::NETD_MAGLEV, TABLE, maglev_all_to(D_IP)))
        .expect("map write");
    let (_, out) = run(&mut w, &flow);
    assert_eq!(addresses(&out).2, (B_IP, TARGET), "an established flow");
    // ...and a new one goes to D.
    let (_, out) = run(&mut w, &tcp((A_IP, 40002), (VIP, 80), A_MAC));
    assert_eq!(addresses(&out).2, (D_IP, TARGET), "a new flow");
    // The port's target moves: tracked flows keep theirs (as the kernel's
    // conntrack does under kube-proxy), new flows get the new one.
    let retarget = |target: u16| {
        MapOp::put(
            tables::NETD_SERVICES,
            ServiceKey {
                vip: VIP,
                port: 80u16.to_be_bytes(),
                proto: PROTO_TCP,
                _pad: 0,
            },
            ServiceEntry {
                table: TABLE,
                active: 1,
                target_port: target.to_be_bytes(),
                flags: 0,
                affinity_secs: 0,
            },
        )
    };
    w.f.maps.apply(&retarget(9090)).expect("map write");
    let (_, out) = run(&mut w, &flow);
    assert_eq!(addresses(&out).2, (B_IP, TARGET), "a tracked flow");
    let (_, out) = run(&mut w, &tcp((A_IP, 40003), (VIP, 80), A_MAC));
    assert_eq!(addresses(&out).2, (D_IP, 9090), "a new flow, new target");
    w.f.maps.apply(&retarget(TARGET)).expect("map write");
    // Once B is gone, its flow is balanced again.
    w.f.maps
        .apply(&MapOp::delete(
            tables::NETD_BACKENDS,
            BackendKey {
                table: TABLE,
                ip: B_IP,
            },
        ))
        .expect("map write");
    let (_, out) = run(&mut w, &flow);
    assert_eq!(
        addresses(&out).2,
        (D_IP, TARGET),
        "a removed backend's flow"
    );
}

#[test]
fn a_client_that_is_its_own_backend_is_snatted_to_the_hairpin_address() {
    let mut w = world(A_IP);
    let (verdict, out) = run(&mut w, &tcp((A_IP, 40000), (VIP, 80), A_MAC));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (mac, src, dst) = addresses(&out);
    assert_eq!(
        (mac, src, dst),
        (A_MAC, (HAIRPIN_IP, 40000), (A_IP, TARGET))
    );
    // A's answer to the hairpin address comes back as from the VIP.
    let reply = tcp((A_IP, TARGET), (HAIRPIN_IP, 40000), A_MAC);
    let (verdict, out) = run(&mut w, &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (_, src, dst) = addresses(&out);
    assert_eq!((src, dst), ((VIP, 80), (A_IP, 40000)));
}

fn assert_dropped(w: &mut World, what: &str, packet: &[u8], reason: DropReason) {
    let before = w.f.snapshot();
    let (verdict, out) = run(w, packet);
    assert_eq!(verdict, TC_ACT_SHOT, "{what}");
    assert_eq!(out, packet, "{what}: untouched");
    assert_counted(
        &before,
        &w.f.snapshot(),
        &[Slot::Verdict(HOOK, Verdict::Drop), Slot::Drop(HOOK, reason)],
        packet.len() as u64,
        what,
    );
}

#[test]
fn a_port_the_service_lacks_is_a_counted_drop() {
    let mut w = world(B_IP);
    assert_dropped(
        &mut w,
        "unknown port",
        &tcp((A_IP, 40000), (VIP, 81), A_MAC),
        DropReason::NoServicePort,
    );
    assert_dropped(
        &mut w,
        "udp to the tcp port",
        &udp((A_IP, 40000), (VIP, 80), A_MAC),
        DropReason::NoServicePort,
    );
    assert!(conntrack(&mut w).is_empty(), "nothing tracked for drops");
}

/// The refusal of `packet` (to a port without backends): sent back to the
/// client as a counted `no_backend` drop, nothing tracked.
fn refused(w: &mut World, what: &str, packet: &[u8]) -> Vec<u8> {
    let before = w.f.snapshot();
    let (verdict, out) = run(w, packet);
    assert_eq!(verdict, TC_ACT_REDIRECT, "{what}: sent back");
    assert_counted(
        &before,
        &w.f.snapshot(),
        &[
            Slot::Verdict(HOOK, Verdict::Drop),
            Slot::Drop(HOOK, DropReason::NoBackend),
        ],
        packet.len() as u64,
        what,
    );
    assert_eq!(&out[..6], &A_MAC, "{what}: addressed to the client");
    assert_eq!(&out[6..12], &HOST_MAC, "{what}: from the gateway");
    out
}

fn without_backends(w: &mut World) {
    for op in service_ports(0) {
        w.f.maps.apply(&op).expect("map write");
    }
}

/// The RST a refused TCP segment got, its checksums checked by etherparse.
fn reset_of(out: &[u8]) -> etherparse::TcpHeader {
    let (_, src, dst) = addresses(out);
    assert_eq!((src, dst), ((VIP, 80), (A_IP, 40000)), "from the VIP port");
    let p = SlicedPacket::from_ethernet(out).expect("parses");
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        panic!("not TCP")
    };
    assert!(t.payload().is_empty(), "a RST carries no data");
    t.to_header()
}

#[test]
fn a_new_flow_without_the_service_program_is_a_counted_drop() {
    let mut w = world(B_IP);
    w.f.empty_slot(map_names::NETD_PROGS, PROG_SERVICE);
    assert_dropped(
        &mut w,
        "no service program",
        &tcp((A_IP, 40000), (VIP, 80), A_MAC),
        DropReason::NoServiceProgram,
    );
}

#[test]
fn a_service_without_backends_answers_a_rst_or_a_port_unreachable() {
    let mut w = world(B_IP);
    without_backends(&mut w);
    // A SYN carrying 5 bytes at sequence 1000: RST+ACK acknowledging 1006.
    let syn = tcp((A_IP, 40000), (VIP, 80), A_MAC);
    let h = reset_of(&refused(&mut w, "tcp", &syn));
    assert!(h.rst && h.ack && !h.syn, "RST+ACK");
    assert_eq!((h.sequence_number, h.acknowledgment_number), (0, 1006));

    let datagram = udp((A_IP, 40000), (VIP, 53), A_MAC);
    let out = refused(&mut w, "udp", &datagram);
    let p = SlicedPacket::from_ethernet(&out).expect("parses");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let header = ip.header().to_header();
    assert_eq!(header.header_checksum, header.calc_header_checksum());
    assert_eq!(
        (ip.header().source(), ip.header().destination()),
        (VIP, A_IP)
    );
    let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
        panic!("not ICMP")
    };
    assert!(matches!(
        icmp.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port
        )
    ));
    let again = etherparse::Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
    assert_eq!(icmp.checksum(), again.checksum, "ICMP checksum");
    assert_eq!(
        icmp.payload(),
        &datagram[14..14 + 28],
        "quotes the datagram's IP header and 8 bytes"
    );
    assert_eq!(out.len(), 14 + 20 + 8 + 28, "nothing more");

    // A RST is never answered: dropped, counted.
    let mut rst = Vec::new();
    etherparse::PacketBuilder::ethernet2(A_MAC, HOST_MAC)
        .ipv4(A_IP, VIP, 64)
        .tcp(40000, 80, 1000, 0)
        .rst()
        .write(&mut rst, b"")
        .expect("tcp");
    assert_dropped(&mut w, "a RST", &rst, DropReason::NoBackend);
    assert!(conntrack(&mut w).is_empty(), "nothing tracked for refusals");
}

/// Backend A (behind the test runs' interface) cannot deliver a datagram
/// that client B sent to VIP:53: its ICMP port unreachable quotes
/// `B → A:8080`, and leaves quoting `B → VIP:53`, from the VIP.
#[test]
fn an_icmp_error_about_a_translated_flow_is_translated_back() {
    // A is the endpoint behind HERE; B's veth is B_IF.
    let mut w = world(B_IP);
    record_udp_reply(&mut w.f, A_IP, B_IP, B_IP);
    let error = |quoted_dst: [u8; 4], port: u16, from: [u8; 4]| {
        port_unreachable((A_MAC, HOST_MAC), from, B_IP, (B_IP, quoted_dst, port))
    };
    let (verdict, out) = run(&mut w, &error(A_IP, TARGET, A_IP));
    assert_eq!(verdict, TC_ACT_REDIRECT, "delivered to the client");
    let want = error(VIP, 53, VIP);
    // The whole expected packet, checksums and all, built by etherparse.
    assert_eq!(&out[12..], &want[12..], "translated, checksums right");
    assert_eq!(&out[..6], &B_MAC, "to the client");

    // An error about a flow netd never translated goes on untouched.
    let other = error(D_IP, TARGET, A_IP);
    let (verdict, out) = run(&mut w, &other);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[12..], &other[12..], "untouched");
}

/// A backend on another host answers a client here: the uplink program
/// decapsulates the reply and turns its source back into the VIP, with the
/// inner checksums updated (XDP writes them itself).
#[test]
fn a_hairpin_clients_own_icmp_error_comes_back_from_the_vip_about_the_vip() {
    // A reached itself through VIP:53 (SNATed to the hairpin address), and
    // nothing listens on TARGET: its stack answers the hairpin address.
    let mut w = world(A_IP);
    record_udp_reply(&mut w.f, A_IP, HAIRPIN_IP, A_IP);
    let error = |from: [u8; 4], to: [u8; 4], quoted: ([u8; 4], [u8; 4], u16)| {
        port_unreachable((A_MAC, HOST_MAC), from, to, quoted)
    };
    let seen = error(A_IP, HAIRPIN_IP, (HAIRPIN_IP, A_IP, TARGET));
    let (verdict, out) = run(&mut w, &seen);
    assert_eq!(verdict, TC_ACT_REDIRECT, "back to the client");
    // From the VIP to A, quoting A:40000 → VIP:53: what A sent. The whole
    // packet, checksums and all, built by etherparse.
    let want = error(VIP, A_IP, (A_IP, VIP, 53));
    assert_eq!(&out[12..], &want[12..], "translated, checksums right");
    assert_eq!(&out[..6], &A_MAC, "to the client");
}

#[test]
fn a_reply_decapsulated_at_xdp_is_reverse_natted_to_the_vip() {
    let mut f = decap_with_recorded_flow();
    let mut inner = Vec::new();
    etherparse::PacketBuilder::ethernet2(o::A_MAC, o::B_MAC)
        .ipv4(o::A_IP, o::B_IP, 64)
        .udp(TARGET, 40000)
        .write(&mut inner, b"answer")
        .expect("udp");
    let packet = testpkt::vxlan(o::PEER_UNDERLAY, o::HERE_UNDERLAY, o::VNI, 0x08, &inner);
    let run = f.run_xdp(XDP_UPLINK, &packet).expect("run");
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_eq!(run.output.len(), inner.len(), "outer headers stripped");
    let (mac, src, dst) = addresses(&run.output);
    assert_eq!((mac, src, dst), (o::B_MAC, (VIP, 53), (o::B_IP, 40000)));
}

#[test]
fn a_backends_icmp_error_decapsulated_at_xdp_is_translated_back() {
    let mut f = decap_with_recorded_flow();
    // Backend A (on host 7) answers the datagram it got as B:40000 →
    // A:TARGET with a port unreachable quoting it.
    let error = |quoted_dst: [u8; 4], port: u16, from: [u8; 4]| {
        port_unreachable(
            (o::A_MAC, o::B_MAC),
            from,
            o::B_IP,
            (o::B_IP, quoted_dst, port),
        )
    };
    let inner = error(o::A_IP, TARGET, o::A_IP);
    let packet = testpkt::vxlan(o::PEER_UNDERLAY, o::HERE_UNDERLAY, o::VNI, 0x08, &inner);
    let run = f.run_xdp(XDP_UPLINK, &packet).expect("run");
    assert_eq!(run.verdict, XDP_REDIRECT);
    // The whole expected packet, checksums and all, built by etherparse:
    // from the VIP, quoting B:40000 → VIP:53.
    let want = error(VIP, 53, VIP);
    assert_eq!(run.output, want, "translated, checksums right");

    // An error about a flow this host never translated goes on untouched.
    let other = error(o::A_IP, 9999, o::A_IP);
    let packet = testpkt::vxlan(o::PEER_UNDERLAY, o::HERE_UNDERLAY, o::VNI, 0x08, &other);
    let run = f.run_xdp(XDP_UPLINK, &packet).expect("run");
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_eq!(run.output, other, "untouched");
}

/// The overlay's decap fixture, with what the client's TC program
/// recorded when it sent B:40000 → VIP:53 to backend A (on host 7).
fn decap_with_recorded_flow() -> Fixture {
    let mut f = o::decap_fixture();
    record_udp_reply(&mut f, o::A_IP, o::B_IP, o::B_IP);
    f
}

fn set_backend(w: &mut World, ip: [u8; 4], state: u32) {
    w.f.maps
        .apply(&MapOp::put(
            tables::NETD_BACKENDS,
            BackendKey { table: TABLE, ip },
            BackendEntry { state, weight: 1 },
        ))
        .expect("map write");
}

#[test]
fn a_draining_backend_keeps_its_flows_and_takes_no_new_one() {
    let mut w = world(B_IP);
    let flow = tcp((A_IP, 40000), (VIP, 80), A_MAC);
    run(&mut w, &flow);
    set_backend(&mut w, B_IP, BACKEND_DRAINING);
    let (_, out) = run(&mut w, &flow);
    assert_eq!(addresses(&out).2, (B_IP, TARGET), "the established flow");
    // A table still pointing at it (netd never writes one) does not give
    // it a new flow: the new flow is refused as having no backend.
    let before = w.f.snapshot();
    let (verdict, out) = run(&mut w, &tcp((A_IP, 40001), (VIP, 80), A_MAC));
    assert_eq!(verdict, TC_ACT_REDIRECT, "a new flow to a draining backend");
    let p = SlicedPacket::from_ethernet(&out).expect("parses");
    assert!(
        matches!(p.transport, Some(TransportSlice::Tcp(ref t)) if t.rst()),
        "answered with a RST"
    );
    assert_counted(
        &before,
        &w.f.snapshot(),
        &[
            Slot::Verdict(HOOK, Verdict::Drop),
            Slot::Drop(HOOK, DropReason::NoBackend),
        ],
        flow.len() as u64,
        "new flow",
    );
}

fn affinity_map(
    w: &mut World,
) -> aya::maps::HashMap<&mut aya::maps::MapData, AffinityKey, AffinityEntry> {
    let map =
        w.f.datapath
            .ebpf_mut()
            .map_mut(map_names::NETD_AFFINITY)
            .expect("NETD_AFFINITY in the object");
    aya::maps::HashMap::try_from(map).expect("a hash map")
}

fn affinity_of(w: &mut World, client: [u8; 4]) -> Option<AffinityEntry> {
    let key = AffinityKey {
        table: TABLE,
        client,
    };
    affinity_map(w).get(&key, 0).ok()
}

fn new_flow_goes_to(w: &mut World, src_port: u16) -> Endpoint {
    let (verdict, out) = run(w, &tcp((A_IP, src_port), (VIP, 80), A_MAC));
    assert_eq!(verdict, TC_ACT_REDIRECT, "new flow from port {src_port}");
    addresses(&out).2
}

#[test]
fn with_client_affinity_new_flows_keep_the_clients_backend_until_it_drains_or_times_out() {
    let mut w = world(B_IP);
    for op in service_ports_with(1, 60) {
        w.f.maps.apply(&op).expect("map write");
    }
    let before = monotonic_ns();
    assert_eq!(new_flow_goes_to(&mut w, 40000), (B_IP, TARGET), "Maglev");
    let a = affinity_of(&mut w, A_IP).expect("the client's affinity is recorded");
    assert_eq!((a.backend, a.timeout_secs), (B_IP, 60));
    // The datapath reads the clock as of the last tick (at most 10 ms old).
    assert!(a.last_seen + 10_000_000 >= before && a.last_seen <= monotonic_ns());

    // The table now sends everything to D; A's new flows stay on B, by
    // TCP and by UDP alike (affinity is per service, not per port).
    w.f.maps
        .apply(&MapOp::put(tables::NETD_MAGLEV, TABLE, maglev_all_to(D_IP)))
        .expect("map write");
    assert_eq!(new_flow_goes_to(&mut w, 40001), (B_IP, TARGET), "sticky");
    let (_, out) = run(&mut w, &udp((A_IP, 40002), (VIP, 53), A_MAC));
    assert_eq!(addresses(&out).2, (B_IP, TARGET), "sticky over UDP");
    // Another client has no affinity yet: Maglev's choice.
    sending_as(&mut w, B_IP, B_MAC, 80);
    let (_, out) = run(&mut w, &tcp((B_IP, 40003), (VIP, 80), B_MAC));
    assert_eq!(addresses(&out).2, (D_IP, TARGET), "another client");
    for op in local_endpoint(HERE, 1, A_IP, A_MAC, HOST_MAC)
        .iter()
        .chain(&local_endpoint(B_IF, 1, B_IP, B_MAC, HOST_MAC))
    {
        w.f.maps.apply(op).expect("map write");
    }

    // B drains: A moves to D, and stays there.
    set_backend(&mut w, B_IP, BACKEND_DRAINING);
    assert_eq!(new_flow_goes_to(&mut w, 40004), (D_IP, TARGET), "B drains");
    assert_eq!(affinity_of(&mut w, A_IP).map(|a| a.backend), Some(D_IP));
    set_backend(&mut w, B_IP, BACKEND_ACTIVE);

    // An affinity older than its timeout no longer holds.
    let stale = AffinityEntry {
        backend: B_IP,
        timeout_secs: 60,
        last_seen: monotonic_ns().saturating_sub(61_000_000_000),
    };
    let key = AffinityKey {
        table: TABLE,
        client: A_IP,
    };
    affinity_map(&mut w).insert(key, stale, 0).expect("insert");
    assert_eq!(new_flow_goes_to(&mut w, 40005), (D_IP, TARGET), "expired");
    let fresh = affinity_of(&mut w, A_IP).expect("rewritten");
    assert_eq!(fresh.backend, D_IP);
    assert!(fresh.last_seen > stale.last_seen + 60_000_000_000);

    // Without affinity, a fresh entry is ignored and nothing is recorded.
    affinity_map(&mut w)
        .insert(
            key,
            AffinityEntry {
                last_seen: monotonic_ns(),
                ..stale
            },
            0,
        )
        .expect("insert");
    for op in service_ports_with(1, 0) {
        w.f.maps.apply(&op).expect("map write");
    }
    assert_eq!(
        new_flow_goes_to(&mut w, 40006),
        (D_IP, TARGET),
        "no affinity"
    );
    assert_eq!(affinity_of(&mut w, A_IP).map(|a| a.backend), Some(B_IP));
}

#[test]
fn a_new_flows_translation_is_an_event_and_a_refusal_is_a_drop_naming_the_service() {
    let mut w = world(B_IP);
    let mut events = w.f.datapath.take_events().expect("the monitor's maps");
    events
        .set(MonitorConfig {
            kinds: EventKind::Drop.bit() | EventKind::Translation.bit(),
            rate: 1_000_000,
            burst: 10_000,
            _pad: 0,
        })
        .expect("monitor on");
    let mut drain = || std::iter::from_fn(|| events.next_event()).collect::<Vec<_>>();

    let syn = tcp((A_IP, 40000), (VIP, 80), A_MAC);
    assert_eq!(run(&mut w, &syn).0, TC_ACT_REDIRECT);
    let got = drain();
    assert_eq!(got.len(), 1, "{got:?}");
    let h = got[0].header;
    assert_eq!(
        (h.kind, h.hook, h.object, h.backend),
        (EventKind::Translation as u8, HOOK as u8, TABLE, B_IP)
    );
    assert_eq!(&got[0].packet[..syn.len()], &syn[..], "the client's packet");
    // Its next packet is tracked: no new translation.
    assert_eq!(run(&mut w, &syn).0, TC_ACT_REDIRECT);
    assert!(drain().is_empty());

    without_backends(&mut w);
    let other = tcp((A_IP, 40001), (VIP, 80), A_MAC);
    refused(&mut w, "tcp", &other);
    let got = drain();
    assert_eq!(got.len(), 1, "{got:?}");
    let h = got[0].header;
    assert_eq!(
        (h.kind, h.reason, h.object, h.backend),
        (
            EventKind::Drop as u8,
            DropReason::NoBackend as u8,
            TABLE,
            [0; 4]
        )
    );
    assert_eq!(
        &got[0].packet[..other.len()],
        &other[..],
        "the client's packet, not the RST it became"
    );
}
