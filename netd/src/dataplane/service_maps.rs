//! Services compiled into map entries: for each VIP service its VIP, its
//! ports, its backends and its Maglev table. Part of `compile`: the same
//! desired state, the same diff, the same writes.

use std::collections::{BTreeMap, BTreeSet};

use netd_common::{
    maglev,
    mesh::{published_port_bit, PublishAllowKey, PublishedKey, HOST_MODE_TABLE, PORTS_WRITTEN},
    service::{
        BackendEntry, BackendKey, MaglevTable, ServiceEntry, ServiceKey, VipEntry, BACKEND_ACTIVE,
        BACKEND_DRAINING, SERVICE_AFFINITY, SERVICE_SOURCE_RANGES,
    },
};
use tracing::warn;

use super::{maps::MapState, tables};
use crate::model::{
    Affinity, Backend, Endpoint, Mode, Network, PublishMode, PublishedPort, Service,
};

/// Adds every VIP service's entries to `state`, its published ports
/// included. A backend counts only if this host can reach it: `reachable`
/// holds the addresses `state`'s NETD_ENDPOINTS has (a local endpoint with
/// a link, a remote one on a live host), `local` those on this host.
pub fn compile_services(
    state: &mut MapState,
    networks: &[Network],
    endpoints: &[Endpoint],
    services: &[Service],
    reachable: &BTreeSet<[u8; 4]>,
    local: &BTreeSet<[u8; 4]>,
) {
    // Services with the same backends and weights share one table: at
    // 10,000 services over a few backend sets, one computation per set.
    let mut computed: BTreeMap<Vec<(u32, u32)>, Option<MaglevTable>> = BTreeMap::new();
    for service in services {
        if service.mode != Mode::Vip {
            continue;
        }
        let Some(network) = networks.iter().find(|n| n.id == service.network) else {
            continue;
        };
        let table = service.index;
        let all = service.backends_in(endpoints);
        let backends: Vec<&Backend> = all
            .iter()
            .filter(|b| reachable.contains(&b.ip.octets()))
            .collect();
        let active = compile_table(state, service, table, &backends, &mut computed);
        put_published(state, service, PublishMode::Ingress, table, active);
        if service
            .published
            .iter()
            .any(|p| p.mode == PublishMode::Host)
        {
            compile_host_mode(state, service, &backends, local, &mut computed);
        }
        // A service with published ports only has no VIP.
        let Some(vip) = service.vip else {
            continue;
        };
        for port in &service.ports {
            state.put(
                tables::NETD_SERVICES,
                ServiceKey {
                    vip: vip.octets(),
                    port: port.port.to_be_bytes(),
                    proto: port.protocol.number(),
                    _pad: 0,
                },
                service_entry(service, table, active, port.target_port),
            );
        }
        state.put(
            tables::NETD_VIPS,
            vip.octets(),
            VipEntry {
                network: network.index,
                table,
            },
        );
    }
}

/// The Maglev table of a service's ports published with `mode=host`:
/// [`HOST_MODE_TABLE`] | its index, over this host's own active backends.
/// Without one here, the port is not published here at all.
fn compile_host_mode(
    state: &mut MapState,
    service: &Service,
    backends: &[&Backend],
    local: &BTreeSet<[u8; 4]>,
    computed: &mut BTreeMap<Vec<(u32, u32)>, Option<MaglevTable>>,
) {
    let table = HOST_MODE_TABLE | service.index;
    let here: Vec<&Backend> = backends
        .iter()
        .copied()
        .filter(|b| local.contains(&b.ip.octets()))
        .collect();
    if here.is_empty() {
        return;
    }
    let active = compile_table(state, service, table, &here, computed);
    put_published(state, service, PublishMode::Host, table, active);
}

/// The `NETD_PUBLISHED` entries of the ports `service` publishes in
/// `mode`, each pointing at Maglev table `table`.
fn put_published(
    state: &mut MapState,
    service: &Service,
    mode: PublishMode,
    table: u32,
    active: u32,
) {
    for port in service.published.iter().filter(|p| p.mode == mode) {
        let mut entry = service_entry(service, table, active, port.target_port);
        if !port.allow.is_empty() {
            entry.flags |= SERVICE_SOURCE_RANGES;
        }
        for net in &port.allow {
            state.put(
                tables::NETD_PUBLISH_ALLOW,
                PublishAllowKey::range(
                    port.published,
                    port.protocol.number(),
                    net.network().octets(),
                    net.prefix_len(),
                ),
                1u32,
            );
        }
        state.put(tables::NETD_PUBLISHED, published_key(port), entry);
        if let Some((word, bit)) = published_port_bit(port.published, port.protocol.number()) {
            let bits = state.get(tables::NETD_PUBLISHED_PORTS, &word).unwrap_or(0);
            state.put(tables::NETD_PUBLISHED_PORTS, word, bits | bit);
            // The bitmap speaks once a port is in it: without published
            // ports the map stays empty (an emptied datapath is empty)
            // and the uplink asks the empty NETD_PUBLISHED as before.
            state.put(tables::NETD_PUBLISHED_PORTS, PORTS_WRITTEN, 1u64);
        }
    }
}

/// Maglev table `table` of `service` over `backends`: their entries, and
/// the table itself unless none takes new flows. How many do.
fn compile_table(
    state: &mut MapState,
    service: &Service,
    table: u32,
    backends: &[&Backend],
    computed: &mut BTreeMap<Vec<(u32, u32)>, Option<MaglevTable>>,
) -> u32 {
    let mut turns = Vec::new();
    for b in backends {
        state.put(
            tables::NETD_BACKENDS,
            BackendKey {
                table,
                ip: b.ip.octets(),
            },
            BackendEntry {
                state: if b.draining {
                    BACKEND_DRAINING
                } else {
                    BACKEND_ACTIVE
                },
                weight: b.weight,
            },
        );
        if !b.draining {
            turns.push(maglev::Backend {
                id: u32::from(b.ip),
                weight: b.weight,
            });
        }
    }
    let mut set: Vec<(u32, u32)> = turns.iter().map(|b| (b.id, b.weight)).collect();
    set.sort_unstable();
    let slots = computed.entry(set).or_insert_with(|| {
        maglev_table(&turns).unwrap_or_else(|e| {
            warn!(service = %service.name, error = %e, "no Maglev table: new flows are refused");
            None
        })
    });
    match slots {
        Some(slots) => {
            state.put(tables::NETD_MAGLEV, table, *slots);
            turns.len() as u32
        }
        None => 0,
    }
}

fn service_entry(service: &Service, table: u32, active: u32, target_port: u16) -> ServiceEntry {
    let (flags, affinity_secs) = match service.affinity {
        Affinity::None => (0, 0),
        Affinity::ClientIp { timeout_secs } => (SERVICE_AFFINITY, timeout_secs),
    };
    ServiceEntry {
        table,
        active,
        target_port: target_port.to_be_bytes(),
        flags,
        affinity_secs,
    }
}

fn published_key(port: &PublishedPort) -> PublishedKey {
    PublishedKey {
        port: port.published.to_be_bytes(),
        proto: port.protocol.number(),
        _pad: 0,
    }
}

/// The datapath's table for `turns` (backends in any order), slots
/// holding backend addresses as the wire has them; None without any.
fn maglev_table(turns: &[maglev::Backend]) -> Result<Option<MaglevTable>, maglev::MaglevError> {
    if turns.is_empty() {
        return Ok(None);
    }
    let mut sorted = turns.to_vec();
    sorted.sort_by_key(|b| b.id);
    let mut table = MaglevTable::default();
    let mut next = vec![0; sorted.len()];
    maglev::populate(&sorted, &mut next, &mut table.slots)?;
    for slot in table.slots.iter_mut() {
        *slot = u32::from_ne_bytes(slot.to_be_bytes());
    }
    Ok(Some(table))
}

#[cfg(test)]
mod tests {
    use netd_common::service::SERVICE_TABLE_SIZE;

    use super::*;

    #[test]
    fn slots_hold_wire_addresses_and_every_host_builds_the_same_table() {
        let a = |ip: [u8; 4]| maglev::Backend {
            id: u32::from_be_bytes(ip),
            weight: 1,
        };
        let turns = [a([10, 1, 0, 3]), a([10, 1, 0, 2])];
        let t = maglev_table(&turns).expect("built").expect("some");
        let reversed = [turns[1], turns[0]];
        assert_eq!(t, maglev_table(&reversed).expect("built").expect("some"));
        let ips: BTreeSet<[u8; 4]> = t.slots.iter().map(|s| s.to_ne_bytes()).collect();
        assert_eq!(ips, [[10, 1, 0, 2], [10, 1, 0, 3]].into_iter().collect());
        assert_eq!(t.slots.len(), SERVICE_TABLE_SIZE);
        assert!(maglev_table(&[]).expect("ok").is_none());
    }
}
