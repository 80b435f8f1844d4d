//! The policy fixture: web and api on network n1 (labels `tier=web` and
//! `tier=api`), the datapath loaded with one of them at ifindex 1, where
//! BPF_PROG_TEST_RUN's TC runs come in, and the policy maps written from a
//! model by `compile_policies`, as the reconciler writes them, and each
//! endpoint's `LOCAL_*` flags marked from them as netd's pass marks them.
//! Shared by the policy fixtures and the policy bench.

use std::collections::BTreeMap;

use etherparse::PacketBuilder;
use netd::{
    dataplane::{
        maps::{MapOp, MapState, MapWriter},
        policy_maps::compile_policies,
        tables,
    },
    model::{parse_rule, Endpoint, EndpointSpec, Network, NetworkSpec, Policy, PolicySpec},
};
use netd_common::maps::NetworkEntry;

use crate::fixture::{local_endpoint, Fixture};

pub const HERE: u32 = 1;
pub const ELSEWHERE: u32 = 50;
pub const WEB_IP: [u8; 4] = [10, 1, 0, 2];
pub const API_IP: [u8; 4] = [10, 1, 0, 3];
pub const HOST_MAC: [u8; 6] = [0x0a, 0, 0, 0, 0, 1];

pub fn mac(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0x6e, ip[0], ip[1], ip[2], ip[3]]
}

/// web and api on network n1, with labels tier=web and tier=api.
pub fn model() -> (Vec<Network>, Vec<Endpoint>) {
    let net = Network::from_spec(
        &NetworkSpec {
            name: "n1".into(),
            subnet: "10.1.0.0/24".into(),
            ..Default::default()
        },
        &[],
        1,
    )
    .expect("network");
    let networks = vec![net];
    let mut endpoints = Vec::new();
    for (name, ip) in [("web", WEB_IP), ("api", API_IP)] {
        let spec = EndpointSpec {
            name: name.into(),
            network: "n1".into(),
            netns: format!("/run/netns/{name}").into(),
            ip: Some(std::net::Ipv4Addr::from(ip).to_string()),
            labels: BTreeMap::from([("tier".into(), name.into())]),
            ..Default::default()
        };
        endpoints.push(Endpoint::from_spec(&spec, &networks, &endpoints).expect("endpoint"));
    }
    (networks, endpoints)
}

/// A policy `index` selecting `tier`, with these rules (None: the
/// direction is not governed).
pub fn policy(
    networks: &[Network],
    index: u32,
    tier: &str,
    ingress: Option<&[&str]>,
    egress: Option<&[&str]>,
) -> Policy {
    let rules = |list: Option<&[&str]>| {
        list.map(|l| l.iter().map(|r| parse_rule(r).expect("rule")).collect())
    };
    let spec = PolicySpec {
        name: format!("p{index}"),
        selector: Some(format!("tier={tier}")),
        ingress: rules(ingress),
        egress: rules(egress),
        ..Default::default()
    };
    Policy::from_spec(&spec, networks, &[], index).expect("policy")
}

/// The datapath with web at `sender` (ifindex 1) or api there, and the
/// policy maps compiled from `policies`.
pub fn fixture(policies: &[Policy]) -> Fixture {
    let mut f = Fixture::load();
    f.maps
        .apply(&MapOp::put(
            tables::NETD_NETWORKS,
            1,
            NetworkEntry {
                gateway: [10, 1, 0, 1],
                vni: 0,
            },
        ))
        .expect("network");
    place(&mut f, WEB_IP);
    write_policies(&mut f, policies);
    f
}

/// Writes the policy maps compiled from `policies` over what is there, as
/// the reconciler's puts do (entries the new ones leave out stay).
pub fn write_policies(f: &mut Fixture, policies: &[Policy]) {
    let (networks, endpoints) = model();
    let mut state = MapState::default();
    compile_policies(&mut state, &networks, &endpoints, &[], policies, |_| true);
    for table in [
        tables::NETD_POLICY.name,
        tables::NETD_IPCACHE.name,
        tables::NETD_POLICY_EPS.name,
    ] {
        for (key, value) in state.entries(table).into_iter().flatten() {
            f.maps
                .apply(&MapOp::Put {
                    table: table.into(),
                    key: key.clone(),
                    value: value.clone(),
                })
                .expect("policy map write");
        }
    }
    f.mark_endpoints();
}

/// Puts `sender` at ifindex 1 (where test runs come in), the other
/// endpoint elsewhere.
pub fn place(f: &mut Fixture, sender: [u8; 4]) {
    let other = if sender == WEB_IP { API_IP } else { WEB_IP };
    for op in local_endpoint(HERE, 1, sender, mac(sender), HOST_MAC)
        .into_iter()
        .chain(local_endpoint(
            ELSEWHERE,
            1,
            other,
            mac(other),
            [0x0a, 0, 0, 0, 0, 2],
        ))
    {
        f.maps.apply(&op).expect("endpoint");
    }
    f.mark_endpoints();
}

pub fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, syn_ack: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac(src), HOST_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 1024);
    let b = if syn_ack { b.syn().ack(1) } else { b.syn() };
    let mut out = Vec::new();
    b.write(&mut out, &[]).expect("packet");
    out
}

/// A segment of an established connection: ACK, with FIN when `fin`.
pub fn segment(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, fin: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac(src), HOST_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 2, 1024)
        .ack(1);
    let b = if fin { b.fin() } else { b };
    let mut out = Vec::new();
    b.write(&mut out, &[]).expect("packet");
    out
}
