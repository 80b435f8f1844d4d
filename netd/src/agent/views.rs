//! What others read of a pass: the monitor's directory of endpoints,
//! services and policies, and the gauges' view of the model.

use std::collections::BTreeMap;

use crate::{
    control::Model,
    dataplane::{maps::MapState, reconcile::HostLink},
    metrics::ModelSizes,
    model::Endpoint,
};

/// Local endpoints by host veth, services and policies by index: what the
/// monitor names an event's endpoint, service and rule by.
pub(super) fn directory(
    model: &Model,
    links: &BTreeMap<String, HostLink>,
) -> crate::monitor::Directory {
    let linked: Vec<(&Endpoint, u32, String)> = model
        .endpoints
        .iter()
        .filter_map(|e| {
            let link = links.get(&e.id)?;
            let network = model
                .networks
                .iter()
                .find(|n| n.id == e.network)
                .map_or_else(|| e.network.clone(), |n| n.name.clone());
            Some((e, link.ifindex, network))
        })
        .collect();
    crate::monitor::Directory {
        by_ifindex: linked
            .iter()
            .map(|(e, ifindex, network)| (*ifindex, (e.name.clone(), network.clone())))
            .collect(),
        services: crate::dataplane::conntrack::service_names(&model.services),
        policies: model
            .policies
            .iter()
            .map(|p| (p.index, (p.name.clone(), p.rule_counts())))
            .collect(),
    }
}

/// The gauges' view of the model: backends are counted as this host's
/// maps hold them (reachable from here).
pub(super) fn model_sizes(model: &Model, desired: &MapState) -> ModelSizes {
    let mut counts: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for (key, entry) in desired.iter(crate::dataplane::tables::NETD_BACKENDS) {
        let c = counts.entry(key.table).or_default();
        if entry.state == netd_common::service::BACKEND_DRAINING {
            c.1 += 1;
        } else {
            c.0 += 1;
        }
    }
    ModelSizes {
        networks: model.networks.len(),
        endpoints: model.endpoints.len(),
        backends: model
            .services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    counts.get(&s.index).copied().unwrap_or_default(),
                )
            })
            .collect(),
    }
}
