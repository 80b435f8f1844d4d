//! One simulated overlay for the VXLAN fixtures and the bench: this host
//! (underlay 192.0.2.1) and host 7 (192.0.2.7) on network 1 with VNI 4096;
//! endpoint A (10.1.0.2) and B (10.1.0.3).

use netd::dataplane::{
    maps::{MapOp, MapWriter},
    tables,
};
use netd_common::maps::{EndpointEntry, HostEntry, NetworkEntry, OverlayConfig};

use crate::fixture::{local_endpoint, Fixture};

pub const VNI: u32 = 4096;
pub const HERE_UNDERLAY: [u8; 4] = [192, 0, 2, 1];
pub const PEER_UNDERLAY: [u8; 4] = [192, 0, 2, 7];
pub const PEER_HOST: u16 = 7;
pub const A_IP: [u8; 4] = [10, 1, 0, 2];
pub const A_MAC: [u8; 6] = [0x02, 0x6e, 10, 1, 0, 2];
pub const B_IP: [u8; 4] = [10, 1, 0, 3];
pub const B_MAC: [u8; 6] = [0x02, 0x6e, 10, 1, 0, 3];
pub const HOST_MAC: [u8; 6] = [0x0a, 0, 0, 0, 0, 1];

/// The maps of both sides: the peer host, the VNI, this host's underlay
/// and network 1.
pub fn set_overlay(f: &mut Fixture) {
    for op in [
        MapOp::put(
            tables::NETD_HOSTS,
            u32::from(PEER_HOST),
            HostEntry {
                underlay: PEER_UNDERLAY,
                _reserved: 0,
            },
        ),
        MapOp::put(tables::NETD_HOST_BY_IP, PEER_UNDERLAY, u32::from(PEER_HOST)),
        MapOp::put(tables::NETD_VNIS, VNI, 1),
        MapOp::put(
            tables::NETD_OVERLAY,
            0,
            OverlayConfig {
                underlay: HERE_UNDERLAY,
                uplink_ifindex: 1,
            },
        ),
        MapOp::put(
            tables::NETD_NETWORKS,
            1,
            NetworkEntry {
                gateway: [10, 1, 0, 1],
                vni: VNI,
            },
        ),
    ] {
        f.maps.apply(&op).expect("map write");
    }
}

/// Endpoint program side: A is here (ifindex 1, where test runs arrive),
/// B lives on host 7.
pub fn encap_fixture() -> Fixture {
    let mut f = Fixture::load();
    set_overlay(&mut f);
    for op in [MapOp::put(
        tables::NETD_ENDPOINTS,
        B_IP,
        EndpointEntry {
            ifindex: 0,
            network: 1,
            mac: B_MAC,
            host: PEER_HOST,
        },
    )]
    .into_iter()
    .chain(local_endpoint(1, 1, A_IP, A_MAC, HOST_MAC))
    {
        f.maps.apply(&op).expect("map write");
    }
    f
}

/// Uplink side: B lives here behind host veth 50; A is on host 7.
pub fn decap_fixture() -> Fixture {
    let mut f = Fixture::load();
    set_overlay(&mut f);
    for op in [MapOp::put(
        tables::NETD_ENDPOINTS,
        A_IP,
        EndpointEntry {
            ifindex: 0,
            network: 1,
            mac: A_MAC,
            host: PEER_HOST,
        },
    )]
    .into_iter()
    .chain(local_endpoint(50, 1, B_IP, B_MAC, HOST_MAC))
    {
        f.maps.apply(&op).expect("map write");
    }
    f
}
