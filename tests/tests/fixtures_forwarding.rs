//! The endpoint program's forwarding on crafted packets: local delivery,
//! isolation, anti-spoofing and ARP answers, with the maps set up the way
//! the reconciler writes them.
//!
//! BPF_PROG_TEST_RUN runs TC programs on an skb of the loopback device,
//! so the sending endpoint's host veth is ifindex 1 here.

use netd::dataplane::{
    maps::{MapOp, MapWriter},
    tables,
};
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    maps::NetworkEntry,
    program_names::TC_ENDPOINT,
};
use netd_tests::fixture::{assert_counted, local_endpoint, Fixture, Slot};
use testpkt::{arp, ipv4_udp_between};

const TC_ACT_OK: i64 = 0;
const TC_ACT_SHOT: i64 = 2;
const TC_ACT_REDIRECT: i64 = 7;

const HERE: u32 = 1; // loopback: where test runs come in
const PEER_IF: u32 = 50;
const OTHER_NET_IF: u32 = 60;

const A_IP: [u8; 4] = [10, 1, 0, 2];
const A_MAC: [u8; 6] = [0x02, 0x6e, 10, 1, 0, 2];
const A_HOST_MAC: [u8; 6] = [0x0a, 0, 0, 0, 0, 1];
const B_IP: [u8; 4] = [10, 1, 0, 3];
const B_MAC: [u8; 6] = [0x02, 0x6e, 10, 1, 0, 3];
const C_IP: [u8; 4] = [10, 2, 0, 2];
const C_MAC: [u8; 6] = [0x02, 0x6e, 10, 2, 0, 2];
const GATEWAY: [u8; 4] = [10, 1, 0, 1];

/// Network 1 holds A (here) and B; network 2 holds C.
fn fixture() -> Fixture {
    let mut f = Fixture::load();
    let mut ops = vec![
        MapOp::put(
            tables::NETD_NETWORKS,
            1,
            NetworkEntry {
                gateway: GATEWAY,
                vni: 0,
            },
        ),
        MapOp::put(
            tables::NETD_NETWORKS,
            2,
            NetworkEntry {
                gateway: [10, 2, 0, 1],
                vni: 0,
            },
        ),
    ];
    ops.extend(local_endpoint(HERE, 1, A_IP, A_MAC, A_HOST_MAC));
    ops.extend(local_endpoint(
        PEER_IF,
        1,
        B_IP,
        B_MAC,
        [0x0a, 0, 0, 0, 0, 2],
    ));
    ops.extend(local_endpoint(
        OTHER_NET_IF,
        2,
        C_IP,
        C_MAC,
        [0x0a, 0, 0, 0, 0, 3],
    ));
    for op in &ops {
        f.maps.apply(op).expect("map write");
    }
    f
}

fn run(
    f: &mut Fixture,
    packet: &[u8],
) -> (
    i64,
    Vec<u8>,
    netd::dataplane::CounterSnapshot,
    netd::dataplane::CounterSnapshot,
) {
    let before = f.snapshot();
    let run = f.run_tc(TC_ENDPOINT, packet).expect("test run");
    (run.verdict, run.output, before, f.snapshot())
}

const HOOK: Hook = Hook::TcEndpoint;

#[test]
fn same_network_is_delivered_into_the_peer_addressed_to_its_mac() {
    let mut f = fixture();
    // Sent to the gateway's MAC: netd still delivers to B's own MAC.
    let packet = ipv4_udp_between(A_MAC, A_IP, A_HOST_MAC, B_IP);
    let (verdict, out, before, after) = run(&mut f, &packet);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let mut expected = packet.clone();
    expected[..6].copy_from_slice(&B_MAC);
    assert_eq!(out, expected);
    assert_counted(
        &before,
        &after,
        &[Slot::Verdict(HOOK, Verdict::Redirect)],
        packet.len() as u64,
        "local forward",
    );
}

#[test]
fn another_network_is_dropped_as_isolation() {
    let mut f = fixture();
    let packet = ipv4_udp_between(A_MAC, A_IP, A_HOST_MAC, C_IP);
    assert_dropped(&mut f, "isolation", &packet, DropReason::Isolation);
}

/// `packet` is dropped untouched, counted as a drop for `reason`.
fn assert_dropped(f: &mut Fixture, what: &str, packet: &[u8], reason: DropReason) {
    let (verdict, out, before, after) = run(f, packet);
    assert_eq!(verdict, TC_ACT_SHOT, "{what}");
    assert_eq!(out, packet, "{what}");
    assert_counted(
        &before,
        &after,
        &[Slot::Verdict(HOOK, Verdict::Drop), Slot::Drop(HOOK, reason)],
        packet.len() as u64,
        what,
    );
}

#[test]
fn ipv6_from_an_endpoint_is_dropped_and_counted_never_passed_to_the_host() {
    let mut f = fixture();
    for (what, mut packet) in [
        ("IPv6 TCP", testpkt::ipv6_tcp()),
        ("ICMPv6", testpkt::ipv6_icmp_echo()),
        (
            "IPv6 behind hop-by-hop options",
            testpkt::ipv6_hopopts_udp(),
        ),
    ] {
        // From A's own MAC: the MAC check alone used to let it through.
        packet[6..12].copy_from_slice(&A_MAC);
        assert_dropped(&mut f, what, &packet, DropReason::Ipv6);
    }
}

#[test]
fn spoofed_source_ip_or_mac_is_dropped() {
    let mut f = fixture();
    let cases = [
        (
            "source IP of B",
            ipv4_udp_between(A_MAC, B_IP, A_HOST_MAC, B_IP),
        ),
        (
            "source IP outside",
            ipv4_udp_between(A_MAC, [192, 0, 2, 1], A_HOST_MAC, B_IP),
        ),
        (
            "source MAC of B",
            ipv4_udp_between(B_MAC, A_IP, A_HOST_MAC, B_IP),
        ),
        (
            "ARP claiming B's IP",
            arp(1, A_MAC, [0xff; 6], (A_MAC, B_IP), ([0; 6], GATEWAY)),
        ),
        (
            "ARP with another sender MAC",
            arp(1, A_MAC, [0xff; 6], (C_MAC, A_IP), ([0; 6], GATEWAY)),
        ),
    ];
    for (what, packet) in cases {
        assert_dropped(&mut f, what, &packet, DropReason::Spoofed);
    }
}

#[test]
fn arp_for_a_peer_and_for_the_gateway_is_answered_in_place() {
    let mut f = fixture();
    for (target_ip, answer_mac) in [(B_IP, B_MAC), (GATEWAY, A_HOST_MAC)] {
        let request = arp(1, A_MAC, [0xff; 6], (A_MAC, A_IP), ([0; 6], target_ip));
        let (verdict, out, before, after) = run(&mut f, &request);
        assert_eq!(verdict, TC_ACT_REDIRECT, "who-has {target_ip:?}");
        let reply = arp(2, answer_mac, A_MAC, (answer_mac, target_ip), (A_MAC, A_IP));
        assert_eq!(out, reply, "who-has {target_ip:?}: reply bytes");
        assert_counted(
            &before,
            &after,
            &[Slot::Verdict(HOOK, Verdict::Tx)],
            request.len() as u64,
            "arp reply",
        );
    }
}

#[test]
fn arp_for_another_network_or_an_unknown_address_gets_no_answer() {
    let mut f = fixture();
    for target in [C_IP, [10, 1, 0, 77]] {
        let request = arp(1, A_MAC, [0xff; 6], (A_MAC, A_IP), ([0; 6], target));
        let (verdict, out, before, after) = run(&mut f, &request);
        assert_eq!(verdict, TC_ACT_OK, "who-has {target:?}");
        assert_eq!(out, request);
        assert_counted(
            &before,
            &after,
            &[Slot::Verdict(HOOK, Verdict::Pass)],
            request.len() as u64,
            "arp pass",
        );
    }
}

#[test]
fn other_destinations_go_to_the_host_untouched() {
    let mut f = fixture();
    let packet = ipv4_udp_between(A_MAC, A_IP, A_HOST_MAC, [192, 0, 2, 10]);
    let (verdict, out, before, after) = run(&mut f, &packet);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, packet);
    assert_counted(
        &before,
        &after,
        &[Slot::Verdict(HOOK, Verdict::Pass)],
        packet.len() as u64,
        "to host",
    );
}

#[test]
fn a_stale_address_entry_is_not_delivered() {
    let mut f = fixture();
    // B's veth is gone (its local entry removed) but the address entry lingers.
    f.maps
        .apply(&MapOp::delete(tables::NETD_LOCAL_EPS, PEER_IF))
        .expect("delete");
    let packet = ipv4_udp_between(A_MAC, A_IP, A_HOST_MAC, B_IP);
    let (verdict, out, ..) = run(&mut f, &packet);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, packet);
}

#[test]
fn a_full_map_is_a_clear_error_and_keeps_what_it_had() {
    let mut f = Fixture::load();
    let max = netd_common::tables::decl::NETD_NETWORKS.max_entries;
    for i in 0..max {
        f.maps
            .apply(&MapOp::put(
                tables::NETD_NETWORKS,
                i,
                NetworkEntry {
                    gateway: [10, 0, 0, 1],
                    vni: 0,
                },
            ))
            .expect("room left");
    }
    let e = f
        .maps
        .apply(&MapOp::put(
            tables::NETD_NETWORKS,
            max,
            NetworkEntry {
                gateway: [10, 0, 0, 1],
                vni: 0,
            },
        ))
        .expect_err("one too many");
    assert_eq!(
        e.to_string(),
        format!("map NETD_NETWORKS is full ({max} entries)")
    );
    assert_eq!(
        f.maps
            .read()
            .expect("read")
            .count(tables::NETD_NETWORKS.name),
        max as usize
    );
}

/// The reconciler deletes what its state says is there; an entry already
/// gone (evicted, removed by hand, never written after a failure) must not
/// turn that into a write failure, whatever the map type reports.
#[test]
fn deleting_an_entry_that_is_not_there_is_done_in_every_control_map() {
    let mut f = Fixture::load();
    for t in tables::control_tables() {
        let mut key = vec![0xab; t.key_size as usize];
        match t.kind {
            // A whole-length prefix: a valid key no one wrote.
            tables::MapKind::LpmTrie => {
                key[..4].copy_from_slice(&((t.key_size - 4) * 8).to_ne_bytes())
            }
            // Slot 0 of an array is always there; deleting zeroes it.
            tables::MapKind::Array | tables::MapKind::PerCpuArray => key.fill(0),
            _ => {}
        }
        f.maps
            .apply(&MapOp::Delete {
                table: t.name.into(),
                key,
            })
            .unwrap_or_else(|e| panic!("{}: {}", t.name, netd::logging::chain(&e)));
    }
}

#[test]
fn each_endpoint_counts_what_it_received_and_its_drops_by_reason() {
    let mut f = fixture();
    let mut stats = f.datapath.take_endpoint_stats().expect("NETD_EP_STATS");
    // Entries for A (here) and B, as netd makes them for its links; none
    // for C, which is counted nowhere.
    stats.sync(&[HERE, PEER_IF].into()).expect("entries");

    let to_b = ipv4_udp_between(A_MAC, A_IP, A_HOST_MAC, B_IP);
    let to_c = ipv4_udp_between(A_MAC, A_IP, A_HOST_MAC, C_IP);
    let spoofed = ipv4_udp_between(A_MAC, [10, 1, 0, 99], A_HOST_MAC, B_IP);
    for _ in 0..3 {
        assert_eq!(run(&mut f, &to_b).0, TC_ACT_REDIRECT);
    }
    for _ in 0..2 {
        assert_eq!(run(&mut f, &to_c).0, TC_ACT_SHOT);
    }
    assert_eq!(run(&mut f, &spoofed).0, TC_ACT_SHOT);
    // ARP answered back to A: neither delivered anywhere nor dropped.
    run(
        &mut f,
        &arp(1, A_MAC, [0xff; 6], (A_MAC, A_IP), ([0; 6], B_IP)),
    );

    let read = stats.read();
    let (a, b) = (read[&HERE], read[&PEER_IF]);
    let len = to_b.len() as u64;
    assert_eq!(a.received.packets, 0, "the ARP answer is no delivery");
    assert_eq!(
        (b.received.packets, b.received.bytes),
        (3, 3 * len),
        "delivered into B"
    );
    assert_eq!(a.drops[DropReason::Isolation as usize], 2);
    assert_eq!(a.drops[DropReason::Spoofed as usize], 1);
    assert_eq!(a.dropped(), 3);
    assert_eq!(b.dropped(), 0);
    assert_eq!(read.len(), 2, "no entry made by the datapath: {read:?}");

    // B leaves: its entry goes, and a packet to it counts nowhere; A's
    // drops go on being counted.
    let synced = stats.sync(&[HERE].into()).expect("sync");
    assert_eq!((synced.added, synced.removed), (0, 1));
    assert_eq!(run(&mut f, &to_b).0, TC_ACT_REDIRECT);
    assert_eq!(run(&mut f, &to_c).0, TC_ACT_SHOT);
    let read = stats.read();
    assert_eq!(read.keys().copied().collect::<Vec<_>>(), [HERE]);
    assert_eq!(read[&HERE].drops[DropReason::Isolation as usize], 3);
}
