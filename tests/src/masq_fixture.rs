//! Masquerading's fixture state, for the fixture tests and the bench:
//! endpoint A (behind ifindex 1, where BPF_PROG_TEST_RUN's skbs come
//! from) on a network that masquerades, with a flow to `REMOTE:443`
//! translated to this host's `HERE:GIVEN`; endpoint B (behind veth 50)
//! with flows to `REMOTE` whose replies come back to `HERE:GIVEN`.

use netd::dataplane::{maps::MapOp, tables};
use netd_common::{
    map_names,
    masquerade::{EgressEntry, MasqConfig, RevSnatEntry, SnatEntry},
    policy::PROTO_ICMP,
    service::{CtTuple, PROTO_TCP, PROTO_UDP},
};

use crate::{
    fixture::{local_endpoint, Fixture},
    overlay_fixture as o,
};

pub const REMOTE: [u8; 4] = [203, 0, 113, 10];
pub const ROUTER_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 1];
pub const UPLINK_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 2];
/// The endpoint's own port, and the one it was given.
pub const OWN: u16 = 40000;
pub const GIVEN: u16 = 1024;
pub const B_IF: u32 = 50;
/// The endpoint program's runs come from ifindex 1 (loopback).
pub const A_IF: u32 = 1;

pub fn fixture() -> Fixture {
    let mut f = Fixture::load();
    f.datapath
        .write_egress(
            MasqConfig {
                port_min: 1024,
                port_max: 32767,
                _pad: 0,
            },
            &[],
        )
        .expect("masquerading's settings");
    f
}

pub fn tuple(proto: u8, src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> CtTuple {
    CtTuple {
        src: src.0,
        dst: dst.0,
        src_port: src.1.to_be_bytes(),
        dst_port: dst.1.to_be_bytes(),
        proto,
        _pad: [0; 3],
    }
}

/// Puts `key → value` in the datapath's hash map `name` (its state maps
/// are the programs', not the reconciler's).
pub fn put<K: aya::Pod, V: aya::Pod>(f: &mut Fixture, name: &str, key: K, value: V) {
    let map = f.datapath.ebpf_mut().map_mut(name).expect("the map");
    let mut hash: aya::maps::HashMap<_, K, V> =
        aya::maps::HashMap::try_from(map).expect("a hash map");
    hash.insert(key, value, 0).expect("insert");
}

/// Endpoint B (behind veth 50) has flows to `REMOTE` translated to
/// `HERE:GIVEN`: TCP to 443, UDP to 53, an echo; and `HERE:GIVEN+2`
/// belongs to an endpoint no longer here.
pub fn b_flows(f: &mut Fixture) {
    let back = |ip| RevSnatEntry {
        ip,
        port: OWN.to_be_bytes(),
        flags: 0,
        last_seen: 0,
    };
    for (proto, rport) in [(PROTO_TCP, 443), (PROTO_UDP, 53), (PROTO_ICMP, 0)] {
        let reply = tuple(proto, (REMOTE, rport), (o::HERE_UNDERLAY, GIVEN));
        put(f, map_names::NETD_SNAT_REV, reply, back(o::B_IP));
    }
    let gone = tuple(PROTO_TCP, (REMOTE, 443), (o::HERE_UNDERLAY, GIVEN + 2));
    put(f, map_names::NETD_SNAT_REV, gone, back([10, 1, 0, 99]));
}

pub fn b_here() -> Vec<MapOp> {
    local_endpoint(B_IF, 1, o::B_IP, o::B_MAC, o::HOST_MAC).into()
}

pub fn from_remote(
    build: impl FnOnce(etherparse::PacketBuilderStep<etherparse::IpHeaders>) -> Vec<u8>,
) -> Vec<u8> {
    build(
        etherparse::PacketBuilder::ethernet2(ROUTER_MAC, UPLINK_MAC).ipv4(
            REMOTE,
            o::HERE_UNDERLAY,
            60,
        ),
    )
}

pub fn tcp_reply(to_port: u16) -> Vec<u8> {
    from_remote(|b| {
        let mut out = Vec::new();
        b.tcp(443, to_port, 9, 64240)
            .ack(1)
            .write(&mut out, b"reply")
            .expect("packet");
        out
    })
}

pub fn udp_reply(to_port: u16) -> Vec<u8> {
    from_remote(|b| {
        let mut out = Vec::new();
        b.udp(53, to_port)
            .write(&mut out, b"answer")
            .expect("packet");
        out
    })
}

/// An echo reply from the remote with identifier `id`, to `to` (MACs as
/// delivery writes them when `delivered`).
pub fn echo_reply(to: [u8; 4], id: u16, delivered: bool) -> Vec<u8> {
    let (dst, src) = if delivered {
        (o::B_MAC, o::HOST_MAC)
    } else {
        (UPLINK_MAC, ROUTER_MAC)
    };
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(src, dst)
        .ipv4(REMOTE, to, 60)
        .icmpv4_echo_reply(id, 3)
        .write(&mut out, b"pong")
        .expect("packet");
    out
}

/// Port unreachable from the remote about B's datagram as it left
/// (`HERE:GIVEN → REMOTE:53`), or as B sent it (`B:OWN → REMOTE:53`) to B.
pub fn port_unreachable(delivered: bool) -> Vec<u8> {
    let (from, sport, to, dst_mac, src_mac) = if delivered {
        (o::B_IP, OWN, o::B_IP, o::B_MAC, o::HOST_MAC)
    } else {
        (
            o::HERE_UNDERLAY,
            GIVEN,
            o::HERE_UNDERLAY,
            UPLINK_MAC,
            ROUTER_MAC,
        )
    };
    let mut quoted = Vec::new();
    etherparse::PacketBuilder::ipv4(from, REMOTE, 63)
        .udp(sport, 53)
        .write(&mut quoted, b"query")
        .expect("quote");
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(REMOTE, to, 60)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut out, &quoted)
        .expect("packet");
    out
}

/// A's packet as it leaves its container, to the gateway's MAC.
pub fn from_a(ttl: u8) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(o::A_MAC, o::HOST_MAC)
        .ipv4(o::A_IP, REMOTE, ttl)
        .tcp(OWN, 443, 7, 64240)
        .ack(1)
        .write(&mut out, b"request")
        .expect("packet");
    out
}

pub fn a_state(flags: u32) -> Vec<MapOp> {
    let mut ops: Vec<MapOp> = local_endpoint(A_IF, 1, o::A_IP, o::A_MAC, o::HOST_MAC).into();
    ops.push(MapOp::put(
        tables::NETD_EGRESS,
        1u32,
        EgressEntry {
            flags,
            egress_ip: [0; 4],
        },
    ));
    ops
}

/// A's flow to `REMOTE:443`, translated to `HERE:GIVEN`.
pub fn a_flow(f: &mut Fixture) {
    put(
        f,
        map_names::NETD_SNAT,
        tuple(PROTO_TCP, (o::A_IP, OWN), (REMOTE, 443)),
        SnatEntry {
            to_ip: o::HERE_UNDERLAY,
            to_port: GIVEN.to_be_bytes(),
            ifindex: 7,
            ..SnatEntry::default()
        },
    );
}
