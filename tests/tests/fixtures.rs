//! netd's programs on crafted packets through BPF_PROG_TEST_RUN: verdict,
//! output bytes and the counter that moved, for every case.

use netd_common::{
    counters::{DropReason, Hook, Verdict},
    program_names::{TC_ENDPOINT, XDP_UPLINK},
};
use netd_tests::fixture::{assert_counted, Fixture, Slot};
use testpkt::*;

const XDP_PASS: i64 = 2;
const XDP_DROP: i64 = 1;
const TC_ACT_OK: i64 = 0;
const TC_ACT_SHOT: i64 = 2;
const ETH_HLEN: usize = 14;

/// What a program should do with one packet.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Pass,
    Drop(DropReason),
}

fn check(f: &mut Fixture, hook: Hook, what: &str, packet: &[u8], expect: Expect) {
    let before = f.snapshot();
    let run = match hook {
        Hook::XdpUplink => f.run_xdp(XDP_UPLINK, packet),
        Hook::TcEndpoint => f.run_tc(TC_ENDPOINT, packet),
    }
    .unwrap_or_else(|e| panic!("{what}: run: {e}"));
    let after = f.snapshot();
    let bytes = packet.len() as u64;
    let (pass, drop) = match hook {
        Hook::XdpUplink => (XDP_PASS, XDP_DROP),
        Hook::TcEndpoint => (TC_ACT_OK, TC_ACT_SHOT),
    };
    match expect {
        Expect::Pass => {
            assert_eq!(run.verdict, pass, "{what} at {hook:?}: verdict");
            assert_counted(
                &before,
                &after,
                &[Slot::Verdict(hook, Verdict::Pass)],
                bytes,
                what,
            );
        }
        Expect::Drop(reason) => {
            assert_eq!(run.verdict, drop, "{what} at {hook:?}: verdict");
            assert_counted(
                &before,
                &after,
                &[Slot::Verdict(hook, Verdict::Drop), Slot::Drop(hook, reason)],
                bytes,
                what,
            );
        }
    }
    // The skeleton never rewrites a packet: what leaves is what came in.
    assert_eq!(run.output, packet, "{what} at {hook:?}: output bytes");
}

fn check_xdp(f: &mut Fixture, what: &str, packet: &[u8], expect: Expect) {
    check(f, Hook::XdpUplink, what, packet, expect);
}

fn check_tc(f: &mut Fixture, what: &str, packet: &[u8], expect: Expect) {
    check(f, Hook::TcEndpoint, what, packet, expect);
}

/// Frames the kernel's BPF_PROG_TEST_RUN refuses before any program runs:
/// under 14 bytes for both hooks, and for skb programs an IPv4 or IPv6
/// EtherType without a whole IP header (bpf_prog_test_run_skb pulls it).
fn kernel_refuses(hook: Hook, frame: &[u8]) -> bool {
    if frame.len() < ETH_HLEN {
        return true;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    hook == Hook::TcEndpoint
        && ((ethertype == 0x0800 && frame.len() < ETH_HLEN + 20)
            || (ethertype == 0x86dd && frame.len() < ETH_HLEN + 40))
}

/// Every truncation of every sample: dropped as malformed, or refused by
/// the kernel before the program runs (and then nothing is counted).
fn every_truncation_is_malformed(hook: Hook) {
    let mut f = Fixture::load();
    let mut ran = 0;
    for (name, packet) in samples() {
        for len in 0..packet.len() {
            let cut = &packet[..len];
            let what = format!("{name} cut to {len}");
            if kernel_refuses(hook, cut) {
                let before = f.snapshot();
                let refused = match hook {
                    Hook::XdpUplink => f.run_xdp(XDP_UPLINK, cut).is_err(),
                    Hook::TcEndpoint => f.run_tc(TC_ENDPOINT, cut).is_err(),
                };
                assert!(refused, "{what}: the kernel ran it");
                assert_eq!(before, f.snapshot(), "{what}: counters moved without a run");
                continue;
            }
            check(
                &mut f,
                hook,
                &what,
                cut,
                Expect::Drop(DropReason::Malformed),
            );
            ran += 1;
        }
    }
    assert!(ran > 300, "only {ran} truncations reached the program");
}

#[test]
fn xdp_uplink_passes_every_valid_packet_untouched() {
    let mut f = Fixture::load();
    for (name, packet) in samples() {
        check_xdp(&mut f, name, &packet, Expect::Pass);
    }
}

#[test]
fn tc_endpoint_passes_every_valid_packet_untouched() {
    let mut f = Fixture::load();
    for (name, packet) in samples() {
        check_tc(&mut f, name, &packet, Expect::Pass);
    }
}

#[test]
fn xdp_uplink_drops_every_truncation_as_malformed() {
    every_truncation_is_malformed(Hook::XdpUplink);
}

#[test]
fn tc_endpoint_drops_every_truncation_as_malformed() {
    every_truncation_is_malformed(Hook::TcEndpoint);
}

#[test]
fn bad_ihl_is_dropped_on_both_hooks() {
    let mut f = Fixture::load();
    // 0, 1, 4: below the 20-byte minimum. 15: 60 bytes of header in a 57-byte datagram.
    for ihl in [0u8, 1, 4, 15] {
        let packet = with_ihl(ipv4_tcp(), ihl);
        check_xdp(
            &mut f,
            &format!("ihl {ihl}"),
            &packet,
            Expect::Drop(DropReason::Malformed),
        );
        check_tc(
            &mut f,
            &format!("ihl {ihl}"),
            &packet,
            Expect::Drop(DropReason::Malformed),
        );
    }
}

#[test]
fn ipv4_fragments() {
    let mut f = Fixture::load();
    let first = with_fragment(ipv4_udp_with_payload(&[7; 64]), 0, true);
    let later = with_fragment(ipv4_udp_with_payload(&[7; 64]), 9, false);
    let tiny = ipv4_tiny_first_fragment(8);
    let overlapping = with_fragment(ipv4_tcp(), 1, true);

    // Ordinary fragments go on: forwarding decisions are made at L3.
    check_xdp(&mut f, "first fragment", &first, Expect::Pass);
    check_tc(&mut f, "first fragment", &first, Expect::Pass);
    check_xdp(&mut f, "later fragment", &later, Expect::Pass);
    check_tc(&mut f, "later fragment", &later, Expect::Pass);

    // RFC 1858 attacks: refused from containers; on the uplink they are
    // the host's business (the host reassembles and judges them).
    check_tc(
        &mut f,
        "tiny fragment",
        &tiny,
        Expect::Drop(DropReason::Fragment),
    );
    check_tc(
        &mut f,
        "overlapping fragment",
        &overlapping,
        Expect::Drop(DropReason::Fragment),
    );
    check_xdp(&mut f, "tiny fragment", &tiny, Expect::Pass);
    check_xdp(&mut f, "overlapping fragment", &overlapping, Expect::Pass);
}

#[test]
fn unknown_ethertype_passes_the_uplink_but_not_an_endpoint() {
    let mut f = Fixture::load();
    let lldp = with_ethertype(ipv4_tcp(), 0x88cc);
    check_xdp(&mut f, "lldp", &lldp, Expect::Pass);
    check_tc(&mut f, "lldp", &lldp, Expect::Drop(DropReason::UnknownL3));
}

#[test]
fn three_vlan_tags_pass_the_uplink_but_not_an_endpoint() {
    let mut f = Fixture::load();
    let mut packet = qinq_ipv4_tcp();
    packet.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    check_xdp(&mut f, "three tags", &packet, Expect::Pass);
    check_tc(
        &mut f,
        "three tags",
        &packet,
        Expect::Drop(DropReason::Malformed),
    );
}

#[test]
fn bad_tcp_offset_and_ip_version_are_malformed_everywhere() {
    let mut f = Fixture::load();
    let mut bad_doff = ipv4_tcp();
    bad_doff[14 + 20 + 12] = 0x40;
    let mut bad_version = ipv4_tcp();
    bad_version[14] = 0x65;
    for (what, packet) in [
        ("tcp doff 4", bad_doff),
        ("ip version 6 in ipv4", bad_version),
    ] {
        check_xdp(&mut f, what, &packet, Expect::Drop(DropReason::Malformed));
        check_tc(&mut f, what, &packet, Expect::Drop(DropReason::Malformed));
    }
}

#[test]
fn counters_sum_many_runs() {
    let mut f = Fixture::load();
    let packet = ipv4_udp();
    let before = f.snapshot();
    for _ in 0..100 {
        f.run_xdp(XDP_UPLINK, &packet).expect("run");
    }
    let after = f.snapshot();
    let b = before.verdict(Hook::XdpUplink, Verdict::Pass);
    let a = after.verdict(Hook::XdpUplink, Verdict::Pass);
    assert_eq!(a.packets - b.packets, 100);
    assert_eq!(a.bytes - b.bytes, 100 * packet.len() as u64);
}
