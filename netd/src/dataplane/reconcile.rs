//! The one path that writes the forwarding maps: desired state (compiled
//! from the model) → diff against what the maps hold → ordered writes.
//!
//! Order is make-before-break: networks, then the entries a packet *from*
//! an endpoint needs (local), then those a packet *to* it needs
//! (endpoints, whose ingress check reads local); deletions go the other
//! way round. Re-running after a failure converges, since every op is
//! idempotent and the diff is taken from the maps themselves.

use std::collections::BTreeMap;

use netd_common::maps::{
    EndpointEntry, HostEntry, LocalEndpointEntry, NetworkEntry, OverlayConfig,
};

use super::maps::{MapOp, MapState, MapWriteError, MapWriter};
use crate::model::{Endpoint, Host, Mac, Network};

/// What the kernel knows of an endpoint's host veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostLink {
    pub ifindex: u32,
    pub mac: Mac,
}

/// The maps this host should hold. Endpoints whose veth does not exist
/// (yet) are left out: there is nowhere to deliver to.
/// What this host knows of the cluster.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cluster<'a> {
    /// This host's name (endpoints of other hosts are remote).
    pub me: &'a str,
    /// Registered hosts (this one included or not).
    pub hosts: &'a [Host],
    /// This host's underlay side; all zero when there is no overlay here.
    pub overlay: OverlayConfig,
}

pub fn compile(
    networks: &[Network],
    endpoints: &[Endpoint],
    links: &BTreeMap<String, HostLink>,
    cluster: &Cluster<'_>,
) -> MapState {
    let mut state = MapState {
        overlay: cluster.overlay,
        ..MapState::default()
    };
    // Other hosts get local indexes by name; a change of index is safe
    // because host entries are written before and removed after the
    // endpoint entries that point at them.
    let mut host_index = BTreeMap::new();
    for host in cluster.hosts.iter().filter(|h| h.name != cluster.me) {
        let Some(ip) = host.underlay_ip else { continue };
        let index = host_index.len() as u32 + 1;
        host_index.insert(host.name.as_str(), index);
        state.hosts.insert(
            index,
            HostEntry {
                underlay: ip.octets(),
                _reserved: 0,
            },
        );
        state.host_by_ip.insert(ip.octets(), index);
    }
    let overlay_here = cluster.overlay.underlay != [0; 4];
    let mut index_of = BTreeMap::new();
    for n in networks {
        index_of.insert(n.id.as_str(), n.index);
        if let (Some(vni), true) = (n.vni, overlay_here) {
            state.vnis.insert(vni, n.index);
        }
        state.networks.insert(
            n.index,
            NetworkEntry {
                gateway: n.gateway.octets(),
                vni: n.vni.unwrap_or(0),
            },
        );
    }
    let overlay_networks: BTreeMap<&str, bool> = networks
        .iter()
        .map(|n| (n.id.as_str(), n.vni.is_some()))
        .collect();
    for e in endpoints {
        let remote = !e.host.is_empty() && e.host != cluster.me;
        if remote {
            // Reachable over VXLAN: an overlay network, a joined endpoint,
            // a live host with an underlay address, and an overlay here.
            let (Some(network), Some(host)) = (
                index_of.get(e.network.as_str()),
                host_index.get(e.host.as_str()),
            ) else {
                continue;
            };
            if overlay_here && e.joined() && overlay_networks.get(e.network.as_str()) == Some(&true)
            {
                state.endpoints.insert(
                    e.ipv4.octets(),
                    EndpointEntry {
                        ifindex: 0,
                        network: *network,
                        mac: e.mac.0,
                        host: *host as u16,
                    },
                );
            }
            continue;
        }
        let (Some(network), Some(link)) = (index_of.get(e.network.as_str()), links.get(&e.id))
        else {
            continue;
        };
        state.local.insert(
            link.ifindex,
            LocalEndpointEntry {
                ipv4: e.ipv4.octets(),
                network: *network,
                mac: e.mac.0,
                host_mac: link.mac.0,
            },
        );
        state.endpoints.insert(
            e.ipv4.octets(),
            EndpointEntry {
                ifindex: link.ifindex,
                network: *network,
                mac: e.mac.0,
                host: 0,
            },
        );
    }
    state
}

/// The ops that turn `current` into `desired`, in a safe order.
pub fn diff(current: &MapState, desired: &MapState) -> Vec<MapOp> {
    let mut ops = Vec::new();
    for (k, v) in &desired.networks {
        if current.networks.get(k) != Some(v) {
            ops.push(MapOp::PutNetwork(*k, *v));
        }
    }
    for (k, v) in &desired.vnis {
        if current.vnis.get(k) != Some(v) {
            ops.push(MapOp::PutVni(*k, *v));
        }
    }
    for (k, v) in &desired.hosts {
        if current.hosts.get(k) != Some(v) {
            ops.push(MapOp::PutHost(*k, *v));
        }
    }
    for (k, v) in &desired.host_by_ip {
        if current.host_by_ip.get(k) != Some(v) {
            ops.push(MapOp::PutHostIp(*k, *v));
        }
    }
    if current.overlay != desired.overlay {
        ops.push(MapOp::SetOverlay(desired.overlay));
    }
    for (k, v) in &desired.local {
        if current.local.get(k) != Some(v) {
            ops.push(MapOp::PutLocal(*k, *v));
        }
    }
    for (k, v) in &desired.endpoints {
        if current.endpoints.get(k) != Some(v) {
            ops.push(MapOp::PutEndpoint(*k, *v));
        }
    }
    for k in current
        .endpoints
        .keys()
        .filter(|k| !desired.endpoints.contains_key(*k))
    {
        ops.push(MapOp::DeleteEndpoint(*k));
    }
    for k in current
        .local
        .keys()
        .filter(|k| !desired.local.contains_key(*k))
    {
        ops.push(MapOp::DeleteLocal(*k));
    }
    for k in current
        .host_by_ip
        .keys()
        .filter(|k| !desired.host_by_ip.contains_key(*k))
    {
        ops.push(MapOp::DeleteHostIp(*k));
    }
    for k in current
        .hosts
        .keys()
        .filter(|k| !desired.hosts.contains_key(*k))
    {
        ops.push(MapOp::DeleteHost(*k));
    }
    for k in current
        .vnis
        .keys()
        .filter(|k| !desired.vnis.contains_key(*k))
    {
        ops.push(MapOp::DeleteVni(*k));
    }
    for k in current
        .networks
        .keys()
        .filter(|k| !desired.networks.contains_key(*k))
    {
        ops.push(MapOp::DeleteNetwork(*k));
    }
    ops
}

/// Brings the maps to `desired`; returns how many writes it took.
pub fn reconcile(writer: &mut impl MapWriter, desired: &MapState) -> Result<usize, MapWriteError> {
    let ops = diff(&writer.read()?, desired);
    for op in &ops {
        writer.apply(op)?;
    }
    Ok(ops.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dataplane::maps::FakeMaps,
        model::{EndpointSpec, NetworkSpec},
    };

    fn world() -> (Vec<Network>, Vec<Endpoint>, BTreeMap<String, HostLink>) {
        let n1 = Network::from_spec(
            &NetworkSpec {
                name: "n1".into(),
                subnet: "10.1.0.0/24".into(),
                ..Default::default()
            },
            &[],
            1,
        )
        .expect("n1");
        let n2 = Network::from_spec(
            &NetworkSpec {
                name: "n2".into(),
                subnet: "10.2.0.0/24".into(),
                ..Default::default()
            },
            std::slice::from_ref(&n1),
            2,
        )
        .expect("n2");
        let networks = vec![n1, n2];
        let mut endpoints = Vec::new();
        for (name, net, ns) in [
            ("a", "n1", "/run/netns/a"),
            ("b", "n1", "/run/netns/b"),
            ("c", "n2", "/run/netns/c"),
        ] {
            let spec = EndpointSpec {
                name: name.into(),
                network: net.into(),
                netns: ns.into(),
                ..Default::default()
            };
            let e = Endpoint::from_spec(&spec, &networks, &endpoints).expect("endpoint");
            endpoints.push(e);
        }
        let links = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    e.id.clone(),
                    HostLink {
                        ifindex: 10 + i as u32,
                        mac: Mac([2, 0, 0, 0, 0, i as u8]),
                    },
                )
            })
            .collect();
        (networks, endpoints, links)
    }

    #[test]
    fn compiles_every_endpoint_with_a_link() {
        let (networks, endpoints, mut links) = world();
        let state = compile(&networks, &endpoints, &links, &Cluster::default());
        assert_eq!(state.networks.len(), 2);
        assert_eq!(state.endpoints.len(), 3);
        let a = &state.endpoints[&endpoints[0].ipv4.octets()];
        assert_eq!((a.ifindex, a.network, a.mac), (10, 1, endpoints[0].mac.0));
        assert_eq!(state.local[&12].network, 2);
        assert_eq!(state.local[&10].host_mac, [2, 0, 0, 0, 0, 0]);
        links.remove(&endpoints[1].id);
        assert_eq!(
            compile(&networks, &endpoints, &links, &Cluster::default())
                .endpoints
                .len(),
            2
        );
    }

    #[test]
    fn converges_with_minimal_ordered_writes_and_then_writes_nothing() {
        let (networks, endpoints, links) = world();
        let desired = compile(&networks, &endpoints, &links, &Cluster::default());
        let mut maps = FakeMaps::default();
        let writes = reconcile(&mut maps, &desired).expect("reconcile");
        assert_eq!(writes, desired.len());
        assert_eq!(maps.state, desired);
        // Networks, then local, then endpoints.
        let kinds: Vec<u8> = maps
            .log
            .iter()
            .map(|op| match op {
                MapOp::PutNetwork(..) => 0,
                MapOp::PutLocal(..) => 1,
                MapOp::PutEndpoint(..) => 2,
                _ => 9,
            })
            .collect();
        assert!(kinds.windows(2).all(|w| w[0] <= w[1]), "{kinds:?}");
        assert_eq!(reconcile(&mut maps, &desired).expect("again"), 0);
    }

    #[test]
    fn removes_stale_entries_endpoints_before_what_they_point_at() {
        let (networks, endpoints, links) = world();
        let full = compile(&networks, &endpoints, &links, &Cluster::default());
        let mut maps = FakeMaps {
            state: full.clone(),
            ..Default::default()
        };
        // A stale entry planted by hand.
        maps.state.endpoints.insert(
            [10, 9, 9, 9],
            EndpointEntry {
                ifindex: 99,
                network: 7,
                mac: [2; 6],
                host: 0,
            },
        );
        let fewer = compile(&networks[..1], &endpoints[..1], &links, &Cluster::default());
        reconcile(&mut maps, &fewer).expect("reconcile");
        assert_eq!(maps.state, fewer);
        let first_local_delete = maps
            .log
            .iter()
            .position(|op| matches!(op, MapOp::DeleteLocal(_)));
        let last_endpoint_delete = maps
            .log
            .iter()
            .rposition(|op| matches!(op, MapOp::DeleteEndpoint(_)));
        assert!(last_endpoint_delete < first_local_delete, "{:?}", maps.log);
        assert!(maps.log.contains(&MapOp::DeleteEndpoint([10, 9, 9, 9])));
    }

    #[test]
    fn a_failed_write_is_finished_by_the_next_reconcile() {
        let (networks, endpoints, links) = world();
        let desired = compile(&networks, &endpoints, &links, &Cluster::default());
        let mut maps = FakeMaps {
            fail_after: Some(3),
            ..Default::default()
        };
        assert!(reconcile(&mut maps, &desired).is_err());
        maps.fail_after = None;
        reconcile(&mut maps, &desired).expect("second pass");
        assert_eq!(maps.state, desired);
    }

    #[test]
    fn remote_endpoints_of_overlay_networks_point_at_their_host() {
        use std::net::Ipv4Addr;
        let (mut networks, mut endpoints, links) = world();
        networks[0].vni = Some(4096); // n1 is an overlay network, n2 is not
        endpoints[1].host = "host-b".into(); // b (n1) lives on host-b
        endpoints[2].host = "host-b".into(); // c (n2) too, on a local-only network
        let hosts = [
            Host {
                name: "host-a".into(),
                underlay_ip: Some(Ipv4Addr::new(192, 0, 2, 1)),
                external: false,
            },
            Host {
                name: "host-b".into(),
                underlay_ip: Some(Ipv4Addr::new(192, 0, 2, 2)),
                external: false,
            },
            Host {
                name: "host-c".into(),
                underlay_ip: None,
                external: false,
            },
        ];
        let overlay = OverlayConfig {
            underlay: [192, 0, 2, 1],
            uplink_ifindex: 3,
        };
        let cluster = Cluster {
            me: "host-a",
            hosts: &hosts,
            overlay,
        };
        let state = compile(&networks, &endpoints, &links, &cluster);

        assert_eq!(
            state.hosts.len(),
            1,
            "host-a is this host, host-c has no underlay"
        );
        assert_eq!(state.hosts[&1].underlay, [192, 0, 2, 2]);
        assert_eq!(state.host_by_ip[&[192, 0, 2, 2]], 1);
        assert_eq!(state.vnis[&4096], networks[0].index);
        assert_eq!(state.networks[&networks[0].index].vni, 4096);
        assert_eq!(state.overlay, overlay);
        let b = state.endpoints[&endpoints[1].ipv4.octets()];
        assert_eq!((b.ifindex, b.host, b.mac), (0, 1, endpoints[1].mac.0));
        assert!(
            !state.endpoints.contains_key(&endpoints[2].ipv4.octets()),
            "remote on a local-only network"
        );
        assert!(
            !state
                .local
                .values()
                .any(|l| l.ipv4 == endpoints[1].ipv4.octets()),
            "no local entry for a remote one"
        );

        // Without an overlay here, nothing remote is reachable.
        let alone = compile(
            &networks,
            &endpoints,
            &links,
            &Cluster {
                overlay: OverlayConfig::default(),
                ..cluster
            },
        );
        assert!(alone.vnis.is_empty());
        assert!(!alone.endpoints.contains_key(&endpoints[1].ipv4.octets()));

        // Hosts are written before the endpoints that point at them, and removed after.
        let ops = diff(&MapState::default(), &state);
        let put_host = ops
            .iter()
            .position(|o| matches!(o, MapOp::PutHost(..)))
            .expect("host put");
        let put_remote = ops
            .iter()
            .position(|o| matches!(o, MapOp::PutEndpoint(_, e) if e.ifindex == 0))
            .expect("remote put");
        assert!(put_host < put_remote, "{ops:?}");
        let ops = diff(&state, &MapState::default());
        let del_remote = ops
            .iter()
            .position(|o| matches!(o, MapOp::DeleteEndpoint(_)))
            .expect("delete");
        let del_host = ops
            .iter()
            .position(|o| matches!(o, MapOp::DeleteHost(_)))
            .expect("host delete");
        assert!(del_remote < del_host, "{ops:?}");
    }
}
