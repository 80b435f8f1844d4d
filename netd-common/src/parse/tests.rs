use super::*;
use testpkt::*;

fn ok(pkt: &[u8]) -> Headers {
    match parse(pkt) {
        Ok(h) => h,
        Err(e) => panic!("parse failed with {e:?} on {pkt:02x?}"),
    }
}

#[test]
fn ipv4_tcp_fields() {
    let h = ok(&ipv4_tcp());
    assert_eq!(h.vlan_tags, 0);
    assert_eq!(h.l3_offset, 14);
    assert_eq!(
        h.l3,
        L3::Ipv4(Ipv4 {
            src: IP4_A,
            dst: IP4_B,
            protocol: IPPROTO_TCP,
            fragmented: false
        })
    );
    assert_eq!(h.l4_offset, 34);
    assert_eq!(
        h.l4,
        L4::Tcp {
            src_port: PORT_A.to_be_bytes(),
            dst_port: PORT_B.to_be_bytes(),
            flags: 0x02
        }
    );
}

#[test]
fn ipv4_udp_and_icmp_fields() {
    let h = ok(&ipv4_udp());
    assert_eq!(
        h.l4,
        L4::Udp {
            src_port: PORT_A.to_be_bytes(),
            dst_port: PORT_B.to_be_bytes()
        }
    );
    let h = ok(&ipv4_icmp_echo());
    assert_eq!(h.l4, L4::Icmp { kind: 8, code: 0 });
}

#[test]
fn ipv4_options_move_the_transport_header() {
    let h = ok(&ipv4_options_tcp());
    assert_eq!(h.l4_offset, 14 + 24);
    assert!(matches!(h.l4, L4::Tcp { dst_port, .. } if dst_port == PORT_B.to_be_bytes()));
}

#[test]
fn ipv6_fields_and_extension_headers() {
    let h = ok(&ipv6_tcp());
    assert_eq!(
        h.l3,
        L3::Ipv6(Ipv6 {
            src: IP6_A,
            dst: IP6_B,
            next_header: IPPROTO_TCP,
            fragmented: false
        })
    );
    assert_eq!(h.l4_offset, 54);
    let h = ok(&ipv6_icmp_echo());
    assert_eq!(h.l4, L4::Icmpv6 { kind: 128, code: 0 });
    let h = ok(&ipv6_hopopts_udp());
    assert_eq!(h.l4_offset, 54 + 8);
    assert_eq!(
        h.l4,
        L4::Udp {
            src_port: PORT_A.to_be_bytes(),
            dst_port: PORT_B.to_be_bytes()
        }
    );
}

#[test]
fn arp_request_fields() {
    let h = ok(&arp_request());
    assert_eq!(
        h.l3,
        L3::Arp(Arp {
            op: 1,
            sender_mac: MAC_A,
            sender_ip: IP4_A,
            target_ip: IP4_B
        })
    );
    assert_eq!(h.l4, L4::None);
}

#[test]
fn vlan_tags_are_skipped() {
    let h = ok(&vlan_ipv4_udp());
    assert_eq!(h.vlan_tags, 1);
    assert_eq!(h.l3_offset, 18);
    assert!(matches!(h.l4, L4::Udp { .. }));
    let h = ok(&qinq_ipv4_tcp());
    assert_eq!(h.vlan_tags, 2);
    assert_eq!(h.l3_offset, 22);
    assert!(matches!(h.l4, L4::Tcp { .. }));
}

#[test]
fn three_vlan_tags_are_refused() {
    let mut pkt = qinq_ipv4_tcp();
    pkt.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    assert_eq!(parse(&pkt[..]), Err(ParseError::TooManyVlanTags));
}

#[test]
fn every_truncation_of_every_sample_is_refused_as_truncated() {
    for (name, pkt) in samples() {
        for len in 0..pkt.len() {
            assert_eq!(
                parse(&pkt[..len]),
                Err(ParseError::Truncated),
                "{name} cut to {len} of {} bytes",
                pkt.len()
            );
        }
        assert!(parse(&pkt[..]).is_ok(), "{name} whole");
    }
}

#[test]
fn ethernet_padding_after_the_ip_packet_is_accepted() {
    let mut pkt = ipv4_udp();
    pkt.extend_from_slice(&[0; 12]);
    assert!(matches!(ok(&pkt).l4, L4::Udp { .. }));
}

#[test]
fn ihl_below_five_is_bad() {
    for ihl in 0..5 {
        assert_eq!(
            parse(&with_ihl(ipv4_tcp(), ihl)[..]),
            Err(ParseError::BadIhl),
            "ihl {ihl}"
        );
    }
}

#[test]
fn ihl_past_total_length_is_bad() {
    // 60-byte header claimed, but the whole datagram is 57 bytes.
    assert_eq!(
        parse(&with_ihl(ipv4_tcp(), 15)[..]),
        Err(ParseError::BadTotalLength)
    );
}

#[test]
fn total_length_beyond_the_frame_is_truncated() {
    let pkt = ipv4_udp();
    let claimed = (pkt.len() - 14 + 1) as u16;
    assert_eq!(
        parse(&with_ipv4_total_len(pkt, claimed)[..]),
        Err(ParseError::Truncated)
    );
}

#[test]
fn total_length_zero_means_the_whole_frame() {
    let h = ok(&with_ipv4_total_len(ipv4_udp(), 0));
    assert!(matches!(h.l4, L4::Udp { .. }));
}

#[test]
fn wrong_ip_version_is_bad() {
    let mut pkt = ipv4_tcp();
    pkt[14] = 0x65;
    assert_eq!(parse(&pkt[..]), Err(ParseError::BadIpVersion));
    let mut pkt = ipv6_tcp();
    pkt[14] = 0x45;
    assert_eq!(parse(&pkt[..]), Err(ParseError::BadIpVersion));
}

#[test]
fn tcp_data_offset_below_five_is_bad() {
    let mut pkt = ipv4_tcp();
    pkt[34 + 12] = 0x40;
    assert_eq!(parse(&pkt[..]), Err(ParseError::BadTcpOffset));
}

#[test]
fn first_fragment_with_full_transport_header_parses() {
    let h = ok(&with_fragment(ipv4_udp(), 0, true));
    assert!(matches!(
        h.l3,
        L3::Ipv4(Ipv4 {
            fragmented: true,
            ..
        })
    ));
    assert!(matches!(h.l4, L4::Udp { .. }));
}

#[test]
fn later_fragments_have_no_transport_header() {
    let h = ok(&with_fragment(ipv4_udp(), 185, false));
    assert!(matches!(
        h.l3,
        L3::Ipv4(Ipv4 {
            fragmented: true,
            ..
        })
    ));
    assert_eq!(h.l4, L4::LaterFragment);
    // Offset 1 is only an attack for TCP (it reaches the flags).
    assert_eq!(
        ok(&with_fragment(ipv4_udp(), 1, true)).l4,
        L4::LaterFragment
    );
}

#[test]
fn tiny_and_overlapping_fragments_are_refused() {
    for l4_bytes in 0..20 {
        assert_eq!(
            parse(&ipv4_tiny_first_fragment(l4_bytes)[..]),
            Err(ParseError::TinyFragment),
            "{l4_bytes} bytes of TCP"
        );
    }
    assert_eq!(
        parse(&with_fragment(ipv4_tcp(), 1, false)[..]),
        Err(ParseError::OverlappingFragment)
    );
    assert_eq!(ParseError::TinyFragment.drop_reason(), DropReason::Fragment);
    assert_eq!(ParseError::Truncated.drop_reason(), DropReason::Malformed);
}

#[test]
fn unknown_ethertype_is_reported_not_refused() {
    let h = ok(&with_ethertype(ipv4_tcp(), 0x88cc));
    assert_eq!(h.l3, L3::Other(0x88cc));
    assert_eq!(h.l4, L4::None);
}

#[test]
fn too_many_ipv6_extension_headers_are_refused() {
    let mut pkt = ipv6_udp();
    let n = MAX_IPV6_EXT_HEADERS + 1;
    let mut exts = Vec::new();
    for i in 0..n {
        let next = if i + 1 == n {
            IPPROTO_UDP
        } else {
            IPPROTO_DSTOPTS
        };
        exts.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    pkt[14 + 6] = IPPROTO_DSTOPTS;
    pkt.splice(54..54, exts);
    let payload = u16::from_be_bytes([pkt[18], pkt[19]]) + 8 * n as u16;
    pkt[18..20].copy_from_slice(&payload.to_be_bytes());
    assert_eq!(parse(&pkt[..]), Err(ParseError::TooManyExtHeaders));
}

#[test]
fn only_errors_the_host_would_also_reject_count_as_invalid_for_every_receiver() {
    assert!(ParseError::Truncated.invalid_for_every_receiver());
    assert!(ParseError::BadIhl.invalid_for_every_receiver());
    assert!(!ParseError::TooManyVlanTags.invalid_for_every_receiver());
    assert!(!ParseError::TooManyExtHeaders.invalid_for_every_receiver());
    assert!(!ParseError::TinyFragment.invalid_for_every_receiver());
}
