//! VXLAN in netd's programs on crafted packets: the encapsulation written
//! by the endpoint program (every header field checked), and what the
//! uplink program does with VXLAN from the underlay (delivery and each
//! drop reason).

use netd::dataplane::{
    maps::{MapOp, MapWriter},
    tables,
};
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    map_names,
    maps::{EndpointEntry, XDP_PROG_DECAP},
    program_names::{TC_ENDPOINT, XDP_UPLINK},
};
use netd_tests::{
    fixture::{assert_counted, Fixture, Slot},
    overlay_fixture::*,
};
use testpkt::{ipv4_udp_between, vxlan, with_ethertype};

const TC_ACT_REDIRECT: i64 = 7;
const XDP_DROP: i64 = 1;
const XDP_PASS: i64 = 2;
const XDP_REDIRECT: i64 = 4;

fn checksum_ok(header: &[u8]) -> bool {
    testpkt::internet_checksum(header) == 0
}

#[test]
fn encapsulation_writes_every_header_field() {
    let mut f = encap_fixture();
    let inner = ipv4_udp_between(A_MAC, A_IP, HOST_MAC, B_IP);
    let before = f.snapshot();
    let run = f.run_tc(TC_ENDPOINT, &inner).expect("run");
    let after = f.snapshot();
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_counted(
        &before,
        &after,
        &[Slot::Verdict(Hook::TcEndpoint, Verdict::Redirect)],
        inner.len() as u64,
        "encap",
    );

    let out = run.output;
    assert_eq!(out.len(), inner.len() + 50, "50 bytes of outer headers");
    assert_eq!(&out[12..14], &[0x08, 0x00], "outer EtherType");
    let ip = &out[14..34];
    assert_eq!(ip[0], 0x45, "IPv4, IHL 5");
    assert_eq!(
        u16::from_be_bytes([ip[2], ip[3]]) as usize,
        out.len() - 14,
        "outer total length"
    );
    assert_eq!(ip[8], 64, "TTL");
    assert_eq!(ip[6] & 0x40, 0x40, "DF set");
    assert_eq!(ip[6] & 0x1f | ip[7], 0, "not a fragment");
    assert_eq!(ip[9], 17, "UDP");
    assert_eq!(&ip[12..16], &HERE_UNDERLAY, "outer source");
    assert_eq!(&ip[16..20], &PEER_UNDERLAY, "outer destination");
    assert!(checksum_ok(ip), "outer IPv4 checksum");
    let udp = &out[34..42];
    assert!(
        u16::from_be_bytes([udp[0], udp[1]]) >= 0xc000,
        "source port from the flow hash"
    );
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4789, "VXLAN port");
    assert_eq!(
        u16::from_be_bytes([udp[4], udp[5]]) as usize,
        out.len() - 34,
        "UDP length"
    );
    assert_eq!(&udp[6..8], &[0, 0], "no UDP checksum (allowed over IPv4)");
    assert_eq!(
        &out[42..50],
        &[0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0],
        "VXLAN flags and VNI 4096"
    );
    let mut expected_inner = inner.clone();
    expected_inner[..6].copy_from_slice(&B_MAC);
    assert_eq!(
        &out[50..],
        &expected_inner[..],
        "inner frame, addressed to B"
    );
    // etherparse decodes the whole thing, inner frame included.
    let sliced = etherparse::SlicedPacket::from_ethernet(&out).expect("outer decodes");
    let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
        panic!("outer UDP")
    };
    let inner_sliced =
        etherparse::SlicedPacket::from_ethernet(&udp.payload()[8..]).expect("inner decodes");
    assert!(matches!(
        inner_sliced.transport,
        Some(etherparse::TransportSlice::Udp(_))
    ));
}

#[test]
fn each_encapsulated_packet_gets_its_own_ip_id() {
    let mut f = encap_fixture();
    let pkt = ipv4_udp_between(A_MAC, A_IP, HOST_MAC, B_IP);
    let ids: std::collections::BTreeSet<u16> = (0..8)
        .map(|_| {
            let out = f.run_tc(TC_ENDPOINT, &pkt).expect("run").output;
            u16::from_be_bytes([out[18], out[19]])
        })
        .collect();
    assert!(ids.len() > 4, "8 packets share {} IDs: {ids:?}", ids.len());
}

#[test]
fn flows_get_different_source_ports_but_one_flow_keeps_its_port() {
    let mut f = encap_fixture();
    let port = |f: &mut Fixture, sport: u16| {
        let mut pkt = ipv4_udp_between(A_MAC, A_IP, HOST_MAC, B_IP);
        pkt[34..36].copy_from_slice(&sport.to_be_bytes());
        let out = f.run_tc(TC_ENDPOINT, &pkt).expect("run").output;
        u16::from_be_bytes([out[34], out[35]])
    };
    assert_eq!(port(&mut f, 1000), port(&mut f, 1000));
    let ports: std::collections::BTreeSet<u16> = (0..16).map(|i| port(&mut f, 2000 + i)).collect();
    assert!(
        ports.len() > 8,
        "16 flows share {} source ports",
        ports.len()
    );
}

#[test]
fn a_remote_endpoint_without_a_known_host_is_an_encap_failure() {
    let mut f = encap_fixture();
    f.maps
        .apply(&MapOp::put(
            tables::NETD_ENDPOINTS,
            B_IP,
            EndpointEntry {
                ifindex: 0,
                network: 1,
                mac: B_MAC,
                host: 99,
            },
        ))
        .expect("map");
    let pkt = ipv4_udp_between(A_MAC, A_IP, HOST_MAC, B_IP);
    let before = f.snapshot();
    let run = f.run_tc(TC_ENDPOINT, &pkt).expect("run");
    assert_eq!(run.verdict, 2, "TC_ACT_SHOT");
    assert_counted(
        &before,
        &f.snapshot(),
        &[
            Slot::Verdict(Hook::TcEndpoint, Verdict::Drop),
            Slot::Drop(Hook::TcEndpoint, DropReason::EncapFailed),
        ],
        pkt.len() as u64,
        "unknown host",
    );
}

#[test]
fn vxlan_for_this_host_without_the_decap_program_is_a_counted_drop() {
    let mut f = decap_fixture();
    f.empty_slot(map_names::NETD_XDP_PROGS, XDP_PROG_DECAP);
    let packet = vxlan(
        PEER_UNDERLAY,
        HERE_UNDERLAY,
        VNI,
        0x08,
        &ipv4_udp_between(A_MAC, A_IP, B_MAC, B_IP),
    );
    let before = f.snapshot();
    let run = f.run_xdp(XDP_UPLINK, &packet).expect("run");
    assert_eq!(run.verdict, XDP_DROP);
    assert_counted(
        &before,
        &f.snapshot(),
        &[
            Slot::Verdict(Hook::XdpUplink, Verdict::Drop),
            Slot::Drop(Hook::XdpUplink, DropReason::NoServiceProgram),
        ],
        packet.len() as u64,
        "no decap program",
    );
}

#[test]
fn decapsulation_delivers_the_inner_frame() {
    let mut f = decap_fixture();
    let inner = ipv4_udp_between(A_MAC, A_IP, B_MAC, B_IP);
    let packet = vxlan(PEER_UNDERLAY, HERE_UNDERLAY, VNI, 0x08, &inner);
    let before = f.snapshot();
    let run = f.run_xdp(XDP_UPLINK, &packet).expect("run");
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_eq!(run.output, inner, "outer headers stripped");
    assert_counted(
        &before,
        &f.snapshot(),
        &[Slot::Verdict(Hook::XdpUplink, Verdict::Redirect)],
        packet.len() as u64,
        "decap",
    );
}

#[test]
fn each_bad_vxlan_packet_is_dropped_for_its_reason() {
    let mut f = decap_fixture();
    let inner = ipv4_udp_between(A_MAC, A_IP, B_MAC, B_IP);
    // C: an endpoint of network 1 on host 8, not the sender (host 7).
    f.maps
        .apply(&MapOp::put(
            tables::NETD_ENDPOINTS,
            [10, 1, 0, 9],
            EndpointEntry {
                ifindex: 0,
                network: 1,
                mac: [2, 0x6e, 10, 1, 0, 9],
                host: 8,
            },
        ))
        .expect("map");
    let from = |src: [u8; 4]| {
        vxlan(
            PEER_UNDERLAY,
            HERE_UNDERLAY,
            VNI,
            0x08,
            &ipv4_udp_between(A_MAC, src, B_MAC, B_IP),
        )
    };
    let cases = [
        (
            "inner source of another host's endpoint",
            from([10, 1, 0, 9]),
            DropReason::Spoofed,
        ),
        (
            "inner source that is no endpoint",
            from([10, 1, 0, 200]),
            DropReason::Spoofed,
        ),
        (
            "inner source of an endpoint of this host",
            from(B_IP),
            DropReason::Spoofed,
        ),
        (
            "no VNI flag",
            vxlan(PEER_UNDERLAY, HERE_UNDERLAY, VNI, 0x00, &inner),
            DropReason::Malformed,
        ),
        (
            "inner destination not here",
            vxlan(
                PEER_UNDERLAY,
                HERE_UNDERLAY,
                VNI,
                0x08,
                &ipv4_udp_between(A_MAC, A_IP, B_MAC, [10, 1, 0, 77]),
            ),
            DropReason::NotHere,
        ),
        (
            "inner not IPv4",
            vxlan(
                PEER_UNDERLAY,
                HERE_UNDERLAY,
                VNI,
                0x08,
                &with_ethertype(inner.clone(), 0x0806),
            ),
            DropReason::UnknownL3,
        ),
        (
            "truncated inner frame",
            vxlan(PEER_UNDERLAY, HERE_UNDERLAY, VNI, 0x08, &inner[..20]),
            DropReason::Malformed,
        ),
    ];
    for (what, packet, reason) in cases {
        let before = f.snapshot();
        let run = f.run_xdp(XDP_UPLINK, &packet).expect("run");
        assert_eq!(run.verdict, XDP_DROP, "{what}");
        assert_counted(
            &before,
            &f.snapshot(),
            &[
                Slot::Verdict(Hook::XdpUplink, Verdict::Drop),
                Slot::Drop(Hook::XdpUplink, reason),
            ],
            packet.len() as u64,
            what,
        );
    }
}

#[test]
fn vxlan_not_for_this_host_or_port_is_the_hosts_business() {
    let mut f = decap_fixture();
    let inner = ipv4_udp_between(A_MAC, A_IP, B_MAC, B_IP);
    let mut other_port = vxlan(PEER_UNDERLAY, HERE_UNDERLAY, VNI, 0x08, &inner);
    other_port[36..38].copy_from_slice(&4790u16.to_be_bytes());
    for (what, packet) in [
        (
            "to another address",
            vxlan(PEER_UNDERLAY, [192, 0, 2, 2], VNI, 0x08, &inner),
        ),
        ("to another port", other_port),
        // A kernel VXLAN device or another overlay may own these.
        (
            "from a sender that is no host of the cluster",
            vxlan([192, 0, 2, 99], HERE_UNDERLAY, VNI, 0x08, &inner),
        ),
        (
            "with a VNI of no network here",
            vxlan(PEER_UNDERLAY, HERE_UNDERLAY, VNI + 1, 0x08, &inner),
        ),
    ] {
        let run = f.run_xdp(XDP_UPLINK, &packet).expect("run");
        assert_eq!(run.verdict, XDP_PASS, "{what}");
        assert_eq!(run.output, packet, "{what}");
    }
}

/// A's identity in the ipcache, and B's ingress rule letting A in on any
/// port of `proto` (rule 0 of policy 1).
fn a_allowed_into_b(proto: u8) -> [MapOp; 2] {
    use netd_common::policy::{
        rule_id, IpcacheKey, PolicyKey, PolicyMatch, PolicyVerdict, ACTION_ALLOW, INGRESS,
        PROTO_BITS,
    };
    const A_IDENTITY: u32 = 300;
    [
        MapOp::put(
            tables::NETD_IPCACHE,
            IpcacheKey {
                prefixlen: 32,
                ip: A_IP,
            },
            A_IDENTITY,
        ),
        MapOp::put(
            tables::NETD_POLICY,
            PolicyKey {
                prefixlen: PROTO_BITS,
                data: PolicyMatch {
                    endpoint: B_IP,
                    direction: INGRESS,
                    identity: A_IDENTITY.to_be_bytes(),
                    proto,
                    port: [0; 2],
                },
            },
            PolicyVerdict {
                rule: rule_id(1, 0),
                action: ACTION_ALLOW,
                _pad: [0; 3],
            },
        ),
    ]
}

/// Ingress policy on the decap path: the receiver's rules decide, by the
/// remote sender's identity (found from its address), in the delivery
/// program the decap program tail-calls.
#[test]
fn decapsulation_is_judged_by_the_receivers_ingress_policy() {
    use netd_common::policy::ENFORCE_INGRESS;
    let mut f = decap_fixture();
    f.maps
        .apply(&MapOp::put(tables::NETD_POLICY_EPS, B_IP, ENFORCE_INGRESS))
        .expect("map");
    let packet = vxlan(
        PEER_UNDERLAY,
        HERE_UNDERLAY,
        VNI,
        0x08,
        &ipv4_udp_between(A_MAC, A_IP, B_MAC, B_IP),
    );
    let before = f.snapshot();
    let run = f.run_xdp(XDP_UPLINK, &packet).expect("run");
    assert_eq!(run.verdict, XDP_DROP, "default-deny, nothing allows A");
    assert_counted(
        &before,
        &f.snapshot(),
        &[
            Slot::Verdict(Hook::XdpUplink, Verdict::Drop),
            Slot::Drop(Hook::XdpUplink, DropReason::PolicyDenied),
        ],
        packet.len() as u64,
        "denied",
    );
    // A's identity, and B letting it in on any UDP port.
    let allow = a_allowed_into_b(17);
    for op in &allow {
        f.maps.apply(op).expect("map");
    }
    let run = f.run_xdp(XDP_UPLINK, &packet).expect("run");
    assert_eq!(run.verdict, XDP_REDIRECT, "allowed by the rule");
}

#[test]
fn at_the_decap_an_opening_syn_is_judged_again_and_a_fin_is_seen() {
    use netd::dataplane::conntrack::{monotonic_ns, ConntrackConfig};
    use netd_common::policy::ENFORCE_INGRESS;
    let mut f = decap_fixture();
    // B lets A in on any TCP port.
    let [identity, rule] = a_allowed_into_b(6);
    for op in [
        MapOp::put(tables::NETD_POLICY_EPS, B_IP, ENFORCE_INGRESS),
        identity,
        rule.clone(),
    ] {
        f.maps.apply(&op).expect("map");
    }
    let segment = |sport: u16, syn: bool, fin: bool| {
        let b = etherparse::PacketBuilder::ethernet2(A_MAC, B_MAC)
            .ipv4(A_IP, B_IP, 64)
            .tcp(sport, 80, 1, 1024);
        let b = match (syn, fin) {
            (true, _) => b.syn(),
            (false, true) => b.ack(1).fin(),
            (false, false) => b.ack(1),
        };
        let mut inner = Vec::new();
        b.write(&mut inner, &[]).expect("segment");
        vxlan(PEER_UNDERLAY, HERE_UNDERLAY, VNI, 0x08, &inner)
    };
    let expect = |f: &mut Fixture, packet: Vec<u8>, verdict: i64, what: &str| {
        let run = f.run_xdp(XDP_UPLINK, &packet).expect("run");
        assert_eq!(run.verdict, verdict, "{what}");
    };
    expect(
        &mut f,
        segment(41000, true, false),
        XDP_REDIRECT,
        "SYN :41000 allowed",
    );
    expect(
        &mut f,
        segment(41001, true, false),
        XDP_REDIRECT,
        "SYN :41001 allowed",
    );
    expect(
        &mut f,
        segment(41000, false, true),
        XDP_REDIRECT,
        "FIN :41000 tracked",
    );
    let MapOp::Put { table, key, .. } = rule else {
        unreachable!("a put")
    };
    f.maps
        .apply(&MapOp::Delete { table, key })
        .expect("rule removed");
    expect(
        &mut f,
        segment(41001, false, false),
        XDP_REDIRECT,
        "ACK :41001 tracked",
    );
    expect(
        &mut f,
        segment(41001, true, false),
        XDP_DROP,
        "a SYN on a tracked tuple is judged again",
    );
    // Past the closing timeout and short of the opening one: the flow
    // that saw a FIN is gone, the one that saw none stays.
    let timeouts = ConntrackConfig::default();
    assert!(timeouts.tcp_closing + 1 < timeouts.tcp_opening);
    let later = monotonic_ns() + (timeouts.tcp_closing + 1) * 1_000_000_000;
    let mut state = f.datapath.take_policy_state().expect("policy maps");
    assert_eq!(state.sweep(&timeouts, later), (1, 1), "(expired, live)");
}
