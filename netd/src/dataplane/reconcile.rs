//! The one path that writes the control maps: desired state (compiled
//! from the model) → diff against what the maps hold → ordered writes.
//!
//! A pass first deletes what is stale, map by map in reverse write order
//! (an entry goes before what it points at), then puts what is new or
//! changed in write order (what an entry points at goes first; see
//! [`super::tables`]). Deleting first lets a full map converge as soon as
//! its stale entries leave. A failed write is reported and the rest go on;
//! the next pass retries it, since the diff is taken from the maps.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet},
};

use netd_common::{
    maps::{
        EndpointEntry, HostEntry, LocalEndpointEntry, NetworkEntry, OverlayConfig, LOCAL_NO_POLICY,
        LOCAL_NO_SERVICE,
    },
    service::BackendKey,
};

use super::service_maps::compile_services;
use super::{
    maps::{MapOp, MapState, MapWriteError, MapWriter},
    tables::{self, TableDecl},
};
use crate::model::{Endpoint, Host, Mac, Network, Service};

/// What the kernel knows of an endpoint's host veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostLink {
    pub ifindex: u32,
    pub mac: Mac,
}

/// What this host knows of the cluster.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cluster<'a> {
    /// This host's name (endpoints of other hosts are remote).
    pub me: &'a str,
    /// The hosts to forward to (this one included or not), each with its
    /// index from the store: alive, external, or still in their grace.
    pub hosts: &'a [Host],
    /// This host's underlay side; all zero when there is no overlay here.
    pub overlay: OverlayConfig,
}

/// The maps this host should hold. Endpoints whose veth does not exist
/// (yet) are left out: there is nowhere to deliver to.
pub fn compile(
    networks: &[Network],
    endpoints: &[Endpoint],
    services: &[Service],
    links: &BTreeMap<String, HostLink>,
    cluster: &Cluster<'_>,
) -> MapState {
    let mut state = MapState::default();
    if cluster.overlay != OverlayConfig::default() {
        state.put(tables::NETD_OVERLAY, 0, cluster.overlay);
    }

    // Each host's index is the store's, the same on every host and kept
    // while the host is a member: one joining or leaving rewrites no other
    // host's entries.
    let mut host_index = BTreeMap::new();
    for host in cluster.hosts.iter().filter(|h| h.name != cluster.me) {
        let (Some(ip), index @ 1..) = (host.underlay_ip, host.index) else {
            continue;
        };
        host_index.insert(host.name.as_str(), index);
        state.put(
            tables::NETD_HOSTS,
            index,
            HostEntry {
                underlay: ip.octets(),
                _reserved: 0,
            },
        );
        state.put(tables::NETD_HOST_BY_IP, ip.octets(), index);
    }
    let overlay_here = cluster.overlay.underlay != [0; 4];
    let mut index_of = BTreeMap::new();
    for n in networks {
        index_of.insert(n.id.as_str(), n.index);
        if let (Some(vni), true) = (n.vni, overlay_here) {
            state.put(tables::NETD_VNIS, vni, n.index);
        }
        state.put(
            tables::NETD_NETWORKS,
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
    let mut local_ips = BTreeSet::new();
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
                state.put(
                    tables::NETD_ENDPOINTS,
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
        local_ips.insert(e.ipv4.octets());
        state.put(
            tables::NETD_LOCAL_EPS,
            link.ifindex,
            LocalEndpointEntry {
                ipv4: e.ipv4.octets(),
                network: *network,
                mac: e.mac.0,
                host_mac: link.mac.0,
                flags: 0,
            },
        );
        state.put(
            tables::NETD_ENDPOINTS,
            e.ipv4.octets(),
            EndpointEntry {
                ifindex: link.ifindex,
                network: *network,
                mac: e.mac.0,
                host: 0,
            },
        );
    }
    let reachable = state
        .entries(tables::NETD_ENDPOINTS.name)
        .map(|e| {
            e.keys()
                .filter_map(|k| k.as_slice().try_into().ok())
                .collect()
        })
        .unwrap_or_default();
    compile_services(
        &mut state, networks, endpoints, services, &reachable, &local_ips,
    );
    state
}

/// Marks each local endpoint with the stages its packets can skip
/// (`LOCAL_*`): no policy when `NETD_POLICY_EPS` has no entry for it, no
/// service replies when no `NETD_BACKENDS` entry is its. Run on the whole
/// desired state, once services and policies are compiled into it.
pub fn mark_skippable_stages(state: &mut MapState) {
    let backends: BTreeSet<[u8; 4]> = state
        .iter(tables::NETD_BACKENDS)
        .map(|(key, _): (BackendKey, _)| key.ip)
        .collect();
    let marked: Vec<(u32, LocalEndpointEntry)> = state
        .iter(tables::NETD_LOCAL_EPS)
        .map(|(ifindex, mut entry): (u32, LocalEndpointEntry)| {
            entry.flags = 0;
            if state.get(tables::NETD_POLICY_EPS, &entry.ipv4).is_none() {
                entry.flags |= LOCAL_NO_POLICY;
            }
            if !backends.contains(&entry.ipv4) {
                entry.flags |= LOCAL_NO_SERVICE;
            }
            (ifindex, entry)
        })
        .collect();
    for (ifindex, entry) in marked {
        state.put(tables::NETD_LOCAL_EPS, ifindex, entry);
    }
}

/// Where `table` sits in the write order: its declaration's order, and
/// for an inner table (`OUTER/<key>`) just before its outer map, which
/// points at it. `None` for a table that is not declared.
fn write_rank(tables: &[TableDecl], table: &str) -> Option<(u8, bool)> {
    let (outer, inner) = tables::outer_of(table);
    let order = tables.iter().find(|t| t.name == outer)?.order()?;
    Some((order, !inner))
}

/// The ops that turn `current` into `desired`: every delete, in reverse
/// write order, then every put, in write order. Tables with no control
/// declaration are left alone.
pub fn diff(current: &MapState, desired: &MapState, tables: &[TableDecl]) -> Vec<MapOp> {
    let mut names: Vec<(u8, bool, &str)> = current
        .table_names()
        .chain(desired.table_names())
        .filter_map(|name| write_rank(tables, name).map(|(o, outer)| (o, outer, name)))
        .collect();
    names.sort();
    names.dedup();
    let empty = Default::default();
    let mut ops = Vec::new();
    let mut by_delete_order = names.clone();
    by_delete_order.sort_by_key(|(o, outer, name)| (Reverse(*o), Reverse(*outer), *name));
    for (_, _, name) in by_delete_order {
        let (have, want) = (current.entries(name), desired.entries(name));
        for side in sorted_sides(have.unwrap_or(&empty), want.unwrap_or(&empty)) {
            if let Side::Have(key) = side {
                ops.push(MapOp::Delete {
                    table: name.to_string(),
                    key: key.clone(),
                });
            }
        }
    }
    for (_, _, name) in names {
        let (have, want) = (current.entries(name), desired.entries(name));
        for side in sorted_sides(have.unwrap_or(&empty), want.unwrap_or(&empty)) {
            let (key, value) = match side {
                Side::Want(key, value) => (key, value),
                Side::Both(key, had, value) if had != value => (key, value),
                _ => continue,
            };
            ops.push(MapOp::Put {
                table: name.to_string(),
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    ops
}

/// A key of two tables walked together.
enum Side<'a> {
    Have(&'a Vec<u8>),
    Want(&'a Vec<u8>, &'a Vec<u8>),
    /// The key, what `have` holds, what `want` holds.
    Both(&'a Vec<u8>, &'a Vec<u8>, &'a Vec<u8>),
}

/// Both tables' keys in order, in one walk: at 10,000 services a lookup
/// per key cost a pass about 20% of its time in key comparisons.
fn sorted_sides<'a>(
    have: &'a super::maps::Entries,
    want: &'a super::maps::Entries,
) -> impl Iterator<Item = Side<'a>> {
    let (mut have, mut want) = (have.iter().peekable(), want.iter().peekable());
    std::iter::from_fn(move || {
        let side = match (have.peek(), want.peek()) {
            (None, None) => return None,
            (Some(_), None) => Side::Have(have.next()?.0),
            (None, Some(_)) => {
                let (k, v) = want.next()?;
                Side::Want(k, v)
            }
            (Some((hk, _)), Some((wk, _))) => match hk.cmp(wk) {
                std::cmp::Ordering::Less => Side::Have(have.next()?.0),
                std::cmp::Ordering::Greater => {
                    let (k, v) = want.next()?;
                    Side::Want(k, v)
                }
                std::cmp::Ordering::Equal => {
                    let (k, had) = have.next()?;
                    let (_, v) = want.next()?;
                    Side::Both(k, had, v)
                }
            },
        };
        Some(side)
    })
}

/// What one pass wrote, and what it could not.
#[derive(Debug, Default)]
pub struct Applied {
    pub writes: usize,
    pub failed: Vec<(MapOp, MapWriteError)>,
}

/// Brings the maps towards `desired`. Only reading them is fatal; a write
/// that fails is reported in [`Applied::failed`] and the others go on.
pub fn reconcile(
    writer: &mut impl MapWriter,
    desired: &MapState,
) -> Result<Applied, MapWriteError> {
    let current = writer.read()?;
    Ok(reconcile_from(writer, &current, desired))
}

/// The same, from `current`: what the maps are known to hold.
pub fn reconcile_from(
    writer: &mut impl MapWriter,
    current: &MapState,
    desired: &MapState,
) -> Applied {
    let ops = diff(current, desired, writer.tables());
    let mut applied = Applied::default();
    for op in ops {
        match writer.apply(&op) {
            Ok(()) => applied.writes += 1,
            Err(e) => applied.failed.push((op, e)),
        }
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dataplane::{
            maps::FakeMaps,
            tables::{MapKind, Owner, Table},
        },
        model::testing,
    };

    /// Index of the first put (or delete) on `table` in `ops`.
    fn first(ops: &[MapOp], put: bool, table: &str) -> usize {
        ops.iter()
            .position(|o| o.is_put() == put && o.table() == table)
            .unwrap_or_else(|| {
                panic!(
                    "no {} on {table} in {ops:?}",
                    if put { "put" } else { "delete" }
                )
            })
    }

    fn world() -> (Vec<Network>, Vec<Endpoint>, BTreeMap<String, HostLink>) {
        let n1 = testing::network("n1", "10.1.0.0/24", &[]);
        let n2 = testing::network("n2", "10.2.0.0/24", std::slice::from_ref(&n1));
        let networks = vec![n1, n2];
        let mut endpoints = Vec::new();
        for (name, net) in [("a", "n1"), ("b", "n1"), ("c", "n2")] {
            let e = testing::endpoint(name, net, &[], None, &networks, &endpoints);
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
        let state = compile(&networks, &endpoints, &[], &links, &Cluster::default());
        assert_eq!(state.count(tables::NETD_NETWORKS.name), 2);
        assert_eq!(state.count(tables::NETD_ENDPOINTS.name), 3);
        let a = state
            .get(tables::NETD_ENDPOINTS, &endpoints[0].ipv4.octets())
            .expect("a");
        assert_eq!((a.ifindex, a.network, a.mac), (10, 1, endpoints[0].mac.0));
        let local = |i: u32| state.get(tables::NETD_LOCAL_EPS, &i).expect("local");
        assert_eq!(local(12).network, 2);
        assert_eq!(local(10).host_mac, [2, 0, 0, 0, 0, 0]);
        links.remove(&endpoints[1].id);
        let fewer = compile(&networks, &endpoints, &[], &links, &Cluster::default());
        assert_eq!(fewer.count(tables::NETD_ENDPOINTS.name), 2);
    }

    #[test]
    fn each_local_endpoint_says_which_stages_it_skips() {
        use netd_common::service::{BackendEntry, BACKEND_DRAINING};
        let (networks, endpoints, links) = world();
        let mut state = compile(&networks, &endpoints, &[], &links, &Cluster::default());
        let ip = |i: usize| endpoints[i].ipv4.octets();
        // a: a policy selects it; b: a draining backend (its flows live
        // on); c: neither.
        state.put(tables::NETD_POLICY_EPS, ip(0), 1u32);
        state.put(
            tables::NETD_BACKENDS,
            BackendKey {
                table: 7,
                ip: ip(1),
            },
            BackendEntry {
                state: BACKEND_DRAINING,
                weight: 0,
            },
        );
        mark_skippable_stages(&mut state);
        let flags = |s: &MapState, i: u32| s.get(tables::NETD_LOCAL_EPS, &i).expect("local").flags;
        assert_eq!(flags(&state, 10), LOCAL_NO_SERVICE, "a: policy asked");
        assert_eq!(flags(&state, 11), LOCAL_NO_POLICY, "b: replies probed");
        assert_eq!(flags(&state, 12), LOCAL_NO_POLICY | LOCAL_NO_SERVICE);
        // Policy and service gone: marked again, nothing else touched.
        state.remove(tables::NETD_POLICY_EPS, &ip(0));
        state.remove(
            tables::NETD_BACKENDS,
            &BackendKey {
                table: 7,
                ip: ip(1),
            },
        );
        mark_skippable_stages(&mut state);
        for i in 10..13 {
            assert_eq!(flags(&state, i), LOCAL_NO_POLICY | LOCAL_NO_SERVICE);
        }
        let a = state.get(tables::NETD_LOCAL_EPS, &10).expect("a");
        assert_eq!((a.ipv4, a.network), (ip(0), 1));
    }

    #[test]
    fn converges_with_minimal_ordered_writes_and_then_writes_nothing() {
        let (networks, endpoints, links) = world();
        let desired = compile(&networks, &endpoints, &[], &links, &Cluster::default());
        let mut maps = FakeMaps::default();
        let applied = reconcile(&mut maps, &desired).expect("reconcile");
        assert_eq!((applied.writes, applied.failed.len()), (desired.len(), 0));
        assert_eq!(maps.state, desired);
        // Networks, then local, then endpoints.
        let rank = |op: &MapOp| match op.table() {
            "NETD_NETWORKS" => 0,
            "NETD_LOCAL_EPS" => 1,
            "NETD_ENDPOINTS" => 2,
            _ => 9,
        };
        let kinds: Vec<u8> = maps.log.iter().map(rank).collect();
        assert!(kinds.windows(2).all(|w| w[0] <= w[1]), "{kinds:?}");
        assert_eq!(reconcile(&mut maps, &desired).expect("again").writes, 0);
    }

    #[test]
    fn the_diff_deletes_what_only_the_maps_hold_and_puts_what_is_new_or_changed() {
        let net = |vni| NetworkEntry {
            gateway: [10, 0, 0, 1],
            vni,
        };
        let state = |entries: &[(u32, u32)]| {
            let mut s = MapState::default();
            for &(k, vni) in entries {
                s.put(tables::NETD_NETWORKS, k, net(vni));
            }
            s
        };
        let current = state(&[(1, 10), (2, 20), (4, 40), (6, 60), (9, 90)]);
        let desired = state(&[(0, 1), (2, 20), (3, 30), (4, 41), (7, 70), (9, 90)]);
        let ops = diff(&current, &desired, tables::TABLES);
        let key = |op: &MapOp| match op {
            MapOp::Put { key, .. } | MapOp::Delete { key, .. } => {
                u32::from_ne_bytes(key[..4].try_into().expect("u32 key"))
            }
        };
        let deleted: Vec<u32> = ops.iter().filter(|o| !o.is_put()).map(key).collect();
        let put: Vec<u32> = ops.iter().filter(|o| o.is_put()).map(key).collect();
        assert_eq!(deleted, [1, 6]);
        assert_eq!(put, [0, 3, 4, 7], "new or changed, never the same");
        let mut maps = FakeMaps {
            state: current.clone(),
            ..Default::default()
        };
        reconcile(&mut maps, &desired).expect("reconcile");
        assert_eq!(maps.state, desired);
        assert!(diff(&desired, &desired, tables::TABLES).is_empty());
        assert_eq!(
            diff(&MapState::default(), &desired, tables::TABLES).len(),
            6
        );
        assert_eq!(
            diff(&current, &MapState::default(), tables::TABLES).len(),
            5
        );
    }

    #[test]
    fn removes_stale_entries_before_any_put_endpoints_before_what_they_point_at() {
        let (networks, endpoints, links) = world();
        let full = compile(&networks, &endpoints, &[], &links, &Cluster::default());
        let mut maps = FakeMaps {
            state: full.clone(),
            ..Default::default()
        };
        // A stale entry planted by hand.
        maps.state.put(
            tables::NETD_ENDPOINTS,
            [10, 9, 9, 9],
            EndpointEntry {
                ifindex: 99,
                network: 7,
                mac: [2; 6],
                host: 0,
            },
        );
        let fewer = compile(
            &networks[..1],
            &endpoints[..1],
            &[],
            &links,
            &Cluster::default(),
        );
        reconcile(&mut maps, &fewer).expect("reconcile");
        assert_eq!(maps.state, fewer);
        let first_local_delete = first(&maps.log, false, tables::NETD_LOCAL_EPS.name);
        let last_endpoint_delete = maps
            .log
            .iter()
            .rposition(|op| !op.is_put() && op.table() == tables::NETD_ENDPOINTS.name);
        assert!(
            last_endpoint_delete < Some(first_local_delete),
            "{:?}",
            maps.log
        );
        assert!(maps
            .log
            .contains(&MapOp::delete(tables::NETD_ENDPOINTS, [10, 9, 9, 9])));
        let last_delete = maps.log.iter().rposition(|op| !op.is_put());
        let first_put = maps.log.iter().position(MapOp::is_put);
        assert!(
            first_put.is_none() || last_delete < first_put,
            "{:?}",
            maps.log
        );
    }

    #[test]
    fn a_full_map_holding_stale_entries_converges_in_one_pass() {
        let (networks, endpoints, links) = world();
        let desired = compile(&networks, &endpoints, &[], &links, &Cluster::default());
        let mut maps = FakeMaps::default();
        // Room for exactly the three endpoints, all taken by stale ones.
        maps.capacities
            .insert(tables::NETD_ENDPOINTS.name.into(), 3);
        for i in 0..3u8 {
            maps.state.put(
                tables::NETD_ENDPOINTS,
                [10, 9, 9, i],
                EndpointEntry::default(),
            );
        }
        let applied = reconcile(&mut maps, &desired).expect("reconcile");
        assert!(applied.failed.is_empty(), "{:?}", applied.failed);
        assert_eq!(maps.state, desired);
    }

    #[test]
    fn a_write_that_fails_is_reported_the_rest_land_and_the_next_pass_finishes() {
        let (networks, endpoints, links) = world();
        let desired = compile(&networks, &endpoints, &[], &links, &Cluster::default());
        let mut maps = FakeMaps::default();
        // Room for two of three endpoints: one put fails, everything else lands.
        maps.capacities
            .insert(tables::NETD_ENDPOINTS.name.into(), 2);
        let applied = reconcile(&mut maps, &desired).expect("reconcile");
        assert_eq!(applied.failed.len(), 1);
        let (op, error) = &applied.failed[0];
        assert_eq!(op.table(), tables::NETD_ENDPOINTS.name);
        assert_eq!(error.to_string(), "map NETD_ENDPOINTS is full (2 entries)");
        assert_eq!(applied.writes, desired.len() - 1);
        assert_eq!(maps.state.count(tables::NETD_LOCAL_EPS.name), 3);
        // Room again (say an endpoint elsewhere left): the next pass finishes.
        maps.capacities
            .insert(tables::NETD_ENDPOINTS.name.into(), 3);
        let again = reconcile(&mut maps, &desired).expect("again");
        assert_eq!((again.writes, again.failed.len()), (1, 0));
        assert_eq!(maps.state, desired);
    }

    #[test]
    fn a_map_of_maps_writes_each_inner_table_before_the_outer_entry_and_removes_it_after() {
        // A Maglev-like table: service id -> an inner array of backend ids.
        const SERVICES: Table<u32, u32> = Table::new("SVC_TABLES");
        let outer = TableDecl {
            kind: MapKind::HashOfMaps,
            ..SERVICES.hash(16, Owner::Control { order: 5 })
        };
        let inner = TableDecl {
            name: "SVC_TABLES/*",
            ..SERVICES.hash(4, Owner::Control { order: 5 })
        };
        let decls = [tables::TABLES, &[outer, inner]].concat();
        let inner_of = |service: u32| format!("SVC_TABLES/{service:08x}");
        let mut desired = MapState::default();
        for service in [1u32, 2] {
            for slot in 0..4u32 {
                desired.put_bytes(
                    &inner_of(service),
                    slot.to_ne_bytes().to_vec(),
                    (service * 10 + slot % 2).to_ne_bytes().to_vec(),
                );
            }
            desired.put_bytes(
                "SVC_TABLES",
                service.to_ne_bytes().to_vec(),
                inner_of(service).into_bytes(),
            );
        }
        let mut maps = FakeMaps::with_tables(&decls);
        let applied = reconcile(&mut maps, &desired).expect("reconcile");
        assert!(applied.failed.is_empty(), "{:?}", applied.failed);
        assert_eq!(maps.state, desired);
        let inner_put = first(&maps.log, true, &inner_of(2));
        let outer_put = first(&maps.log, true, "SVC_TABLES");
        assert!(inner_put < outer_put, "{:?}", maps.log);

        // Service 2 goes, service 1's table changes by one slot.
        let mut fewer = MapState::default();
        for (k, v) in desired.entries(&inner_of(1)).expect("inner") {
            fewer.put_bytes(&inner_of(1), k.clone(), v.clone());
        }
        fewer.put_bytes(
            &inner_of(1),
            3u32.to_ne_bytes().to_vec(),
            99u32.to_ne_bytes().to_vec(),
        );
        fewer.put_bytes(
            "SVC_TABLES",
            1u32.to_ne_bytes().to_vec(),
            inner_of(1).into_bytes(),
        );
        maps.log.clear();
        reconcile(&mut maps, &fewer).expect("reconcile");
        assert_eq!(maps.state, fewer);
        let outer_delete = first(&maps.log, false, "SVC_TABLES");
        let inner_delete = first(&maps.log, false, &inner_of(2));
        assert!(outer_delete < inner_delete, "{:?}", maps.log);
        assert_eq!(
            maps.log.iter().filter(|o| o.is_put()).count(),
            1,
            "{:?}",
            maps.log
        );
        // An inner table holds only what its declaration allows.
        let mut too_big = fewer.clone();
        too_big.put_bytes(
            &inner_of(1),
            4u32.to_ne_bytes().to_vec(),
            1u32.to_ne_bytes().to_vec(),
        );
        let applied = reconcile(&mut maps, &too_big).expect("reconcile");
        assert_eq!(applied.failed.len(), 1, "{:?}", applied.failed);
    }

    #[test]
    fn remote_endpoints_of_overlay_networks_point_at_their_host() {
        use std::net::Ipv4Addr;
        let (mut networks, mut endpoints, links) = world();
        networks[0].vni = Some(4096); // n1 is an overlay network, n2 is not
        endpoints[1].host = "host-b".into(); // b (n1) lives on host-b
        endpoints[2].host = "host-b".into(); // c (n2) too, on a local-only network
        let host = |name: &str, ip: Option<Ipv4Addr>, index| Host {
            name: name.into(),
            underlay_ip: ip,
            external: false,
            index,
            alive: true,
        };
        let hosts = [
            host("host-a", Some(Ipv4Addr::new(192, 0, 2, 1)), 1),
            host("host-b", Some(Ipv4Addr::new(192, 0, 2, 2)), 5),
            host("host-c", None, 3),
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
        let state = compile(&networks, &endpoints, &[], &links, &cluster);

        assert_eq!(
            state.count(tables::NETD_HOSTS.name),
            1,
            "host-a is this host, host-c has no underlay"
        );
        assert_eq!(
            state.get(tables::NETD_HOSTS, &5).map(|h| h.underlay),
            Some([192, 0, 2, 2]),
            "the store's index"
        );
        assert_eq!(state.get(tables::NETD_HOST_BY_IP, &[192, 0, 2, 2]), Some(5));
        assert_eq!(state.get(tables::NETD_VNIS, &4096), Some(networks[0].index));
        assert_eq!(
            state
                .get(tables::NETD_NETWORKS, &networks[0].index)
                .map(|n| n.vni),
            Some(4096)
        );
        assert_eq!(state.get(tables::NETD_OVERLAY, &0), Some(overlay));
        let b = state
            .get(tables::NETD_ENDPOINTS, &endpoints[1].ipv4.octets())
            .expect("b");
        assert_eq!((b.ifindex, b.host, b.mac), (0, 5, endpoints[1].mac.0));
        assert!(
            state
                .get(tables::NETD_ENDPOINTS, &endpoints[2].ipv4.octets())
                .is_none(),
            "remote on a local-only network"
        );
        assert!(
            !state
                .iter(tables::NETD_LOCAL_EPS)
                .any(|(_, l)| l.ipv4 == endpoints[1].ipv4.octets()),
            "no local entry for a remote one"
        );

        // A host joining (whatever its name sorts as) only adds its own
        // entries: nobody else's index moves.
        let mut more = hosts.to_vec();
        more.push(host("host-0", Some(Ipv4Addr::new(192, 0, 2, 7)), 2));
        let joined = compile(
            &networks,
            &endpoints,
            &[],
            &links,
            &Cluster {
                hosts: &more,
                ..cluster
            },
        );
        let ops = diff(&state, &joined, tables::TABLES);
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert!(ops.contains(&MapOp::put(
            tables::NETD_HOSTS,
            2,
            HostEntry {
                underlay: [192, 0, 2, 7],
                _reserved: 0
            }
        )));
        assert!(ops.contains(&MapOp::put(tables::NETD_HOST_BY_IP, [192, 0, 2, 7], 2)));

        // Without an overlay here, nothing remote is reachable.
        let alone = compile(
            &networks,
            &endpoints,
            &[],
            &links,
            &Cluster {
                overlay: OverlayConfig::default(),
                ..cluster
            },
        );
        assert_eq!(alone.count(tables::NETD_VNIS.name), 0);
        assert!(alone
            .get(tables::NETD_ENDPOINTS, &endpoints[1].ipv4.octets())
            .is_none());

        // Hosts are written before the endpoints that point at them, and removed after.
        let ops = diff(&MapState::default(), &state, tables::TABLES);
        let put_host = first(&ops, true, tables::NETD_HOSTS.name);
        let put_remote = first(&ops, true, tables::NETD_ENDPOINTS.name);
        assert!(put_host < put_remote, "{ops:?}");
        let ops = diff(&state, &MapState::default(), tables::TABLES);
        let del_remote = first(&ops, false, tables::NETD_ENDPOINTS.name);
        let del_host = first(&ops, false, tables::NETD_HOSTS.name);
        assert!(del_remote < del_host, "{ops:?}");
    }
}
