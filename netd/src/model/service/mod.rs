//! Services: a VIP and ports on one network, load-balanced across the
//! endpoints a selector (or a list) names. Pure: the checks and the
//! backend set are computed here and unit-tested; the store and the maps
//! come after. Port syntax in `ports`, affinity in `affinity`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};

use super::{check_name, labels::parse_selector, new_id, Endpoint, ModelError, Network};

mod affinity;
mod ports;
#[cfg(test)]
mod tests;

pub use affinity::Affinity;
pub use ports::{
    parse_allow, Protocol, PublishMode, PublishedPort, ServicePort, MAX_ALLOW_PER_PORT,
};

use affinity::parse_affinity;
use ports::{parse_ports, parse_published};

/// Weights a backend may have (Maglev turns per round).
pub const MAX_WEIGHT: u32 = netd_common::maglev::MAX_WEIGHT;
/// Ports one service may have.
pub const MAX_PORTS_PER_SERVICE: usize = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A virtual IP load-balanced in the datapath.
    #[default]
    Vip,
    /// No VIP: name resolution hands out the backends' addresses.
    Dnsrr,
}

/// `netd service create NAME --network NET [--vip IP] --port 80:8080/tcp
/// [--selector k=v,...] [--backend EP] [--weight EP=N] [--drain EP] [--mode dnsrr]
/// [--affinity client-ip[:TIMEOUT]]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceSpec {
    pub name: String,
    pub network: String,
    #[serde(default)]
    pub vip: Option<String>,
    /// `PORT[:TARGET][/PROTO]` each.
    #[serde(default)]
    pub ports: Vec<String>,
    /// `key=value[,key=value...]`: endpoints with all these labels.
    #[serde(default)]
    pub selector: Option<String>,
    /// Endpoints by name, besides the selector's.
    #[serde(default)]
    pub backends: Vec<String>,
    /// Endpoint name → weight (1 to 256; default 1).
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// Endpoints that keep their flows and get no new one.
    #[serde(default)]
    pub draining: BTreeSet<String>,
    #[serde(default)]
    pub mode: Mode,
    /// `none`, `client-ip` or `client-ip:TIMEOUT`. Left out when unset, so
    /// a netd from before affinity still takes the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// Ports published on every host's uplink, as [`PublishedPort`]
    /// parses them. Left out when empty, like `affinity`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
}

/// `netd service update NAME ...`: what is given replaces what was.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceUpdate {
    #[serde(default)]
    pub ports: Option<Vec<String>>,
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default)]
    pub backends: Option<Vec<String>>,
    /// Merged into the weights.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// Endpoints to start draining.
    #[serde(default)]
    pub drain: BTreeSet<String>,
    /// Endpoints to take new flows again.
    #[serde(default)]
    pub undrain: BTreeSet<String>,
    /// As in [`ServiceSpec::affinity`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// Replaces the published ports (an empty list unpublishes them all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
}

/// A service as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Service {
    pub id: String,
    pub name: String,
    /// The network's id.
    pub network: String,
    /// None in dnsrr mode.
    pub vip: Option<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    pub selector: BTreeMap<String, String>,
    /// Endpoints named as backends (by name), besides the selector's.
    pub endpoints: Vec<String>,
    pub weights: BTreeMap<String, u32>,
    pub draining: BTreeSet<String>,
    pub mode: Mode,
    /// Stored services from before affinity have none.
    #[serde(default)]
    pub affinity: Affinity,
    /// Stored services from before the routing mesh have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<PublishedPort>,
    /// Its number in the maps (Maglev table, metrics), the same on every
    /// host, kept while it exists.
    pub index: u32,
}

/// A backend as the service has it now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Backend {
    pub endpoint: String,
    pub ip: Ipv4Addr,
    pub host: String,
    pub weight: u32,
    pub draining: bool,
}

fn check_weights(weights: &BTreeMap<String, u32>) -> Result<(), ModelError> {
    match weights.iter().find(|(_, w)| !(1..=MAX_WEIGHT).contains(*w)) {
        Some((name, w)) => Err(ModelError::invalid(
            "weights",
            format!(
                "{name}={w}: a weight is 1 to {MAX_WEIGHT} (drain a backend to stop new flows)"
            ),
        )),
        None => Ok(()),
    }
}

/// Named backends must be endpoints of the service's network.
fn check_named(
    names: &[String],
    network: &Network,
    endpoints: &[Endpoint],
) -> Result<(), ModelError> {
    for name in names {
        let Some(e) = endpoints.iter().find(|e| &e.name == name) else {
            return Err(ModelError::NotFound {
                kind: "endpoint",
                name: name.clone(),
            });
        };
        if e.network != network.id {
            return Err(ModelError::invalid(
                "backends",
                format!(
                    "endpoint {name:?} is not on network {:?}; a service's backends are on its network",
                    network.name
                ),
            ));
        }
    }
    Ok(())
}

impl Service {
    /// Validates `spec`; `vip` is the address the caller allocated (or the
    /// one asked for, checked against `taken`: every address of the
    /// network held by an endpoint, a claim or another VIP).
    pub fn from_spec(
        spec: &ServiceSpec,
        networks: &[Network],
        services: &[Service],
        endpoints: &[Endpoint],
        taken: &BTreeSet<Ipv4Addr>,
        index: u32,
    ) -> Result<Self, ModelError> {
        check_name(&spec.name)?;
        if services.iter().any(|s| s.name == spec.name) {
            return Err(ModelError::Exists {
                kind: "service",
                name: spec.name.clone(),
            });
        }
        let network = networks
            .iter()
            .find(|n| n.name == spec.network || n.id == spec.network)
            .ok_or_else(|| ModelError::NotFound {
                kind: "network",
                name: spec.network.clone(),
            })?;
        let ports = parse_ports(&spec.ports)?;
        let vip = match spec.mode {
            Mode::Dnsrr => {
                if spec.vip.is_some() {
                    return Err(ModelError::invalid(
                        "vip",
                        "a dnsrr service has no VIP; names resolve to its backends",
                    ));
                }
                None
            }
            // Published ports alone need no VIP: nothing inside the
            // network dials one (Docker's `-p` is such a service).
            Mode::Vip if ports.is_empty() && !spec.publish.is_empty() => {
                if spec.vip.is_some() {
                    return Err(ModelError::invalid(
                        "vip",
                        "a service with published ports only has no VIP; give --port for one",
                    ));
                }
                None
            }
            Mode::Vip => {
                if ports.is_empty() {
                    return Err(ModelError::invalid(
                        "ports",
                        "a VIP service needs at least one port (e.g. --port 80:8080/tcp), \
                         or --publish alone for one reached from outside only",
                    ));
                }
                let requested = spec
                    .vip
                    .as_deref()
                    .map(|t| {
                        t.parse::<Ipv4Addr>().map_err(|_| {
                            ModelError::invalid("vip", format!("{t:?} is not an IPv4 address"))
                        })
                    })
                    .transpose()?;
                let ip = crate::ipam::allocate(network, taken, requested).map_err(|e| match e {
                    crate::ipam::IpamError::Exhausted { .. } => ModelError::from(e),
                    other => ModelError::invalid("vip", other.to_string()),
                })?;
                Some(ip)
            }
        };
        let selector = match &spec.selector {
            Some(text) => parse_selector(text)?,
            None => BTreeMap::new(),
        };
        check_named(&spec.backends, network, endpoints)?;
        check_weights(&spec.weights)?;
        let affinity = parse_affinity(spec.affinity.as_deref(), spec.mode)?;
        let published = parse_published(&spec.publish, spec.mode)?;
        Ok(Service {
            id: new_id(),
            name: spec.name.clone(),
            network: network.id.clone(),
            vip,
            ports,
            selector,
            endpoints: spec.backends.clone(),
            weights: spec.weights.clone(),
            draining: spec.draining.clone(),
            mode: spec.mode,
            affinity,
            published,
            index,
        })
    }

    /// This service with `update` applied, checked like a new one.
    pub fn updated(
        &self,
        update: &ServiceUpdate,
        networks: &[Network],
        endpoints: &[Endpoint],
    ) -> Result<Self, ModelError> {
        let mut next = self.clone();
        if let Some(ports) = &update.ports {
            next.ports = parse_ports(ports)?;
            match (next.mode, next.vip, next.ports.is_empty()) {
                (Mode::Vip, Some(_), true) => {
                    return Err(ModelError::invalid(
                        "ports",
                        "a VIP service needs at least one port",
                    ))
                }
                (Mode::Vip, None, false) => {
                    return Err(ModelError::invalid(
                        "ports",
                        "this service was made with published ports only and has no VIP; \
                         make a service with --port to have one",
                    ))
                }
                _ => {}
            }
        }
        if let Some(text) = &update.selector {
            next.selector = parse_selector(text)?;
        }
        if let Some(names) = &update.backends {
            let network = networks
                .iter()
                .find(|n| n.id == self.network)
                .ok_or_else(|| ModelError::NotFound {
                    kind: "network",
                    name: self.network.clone(),
                })?;
            check_named(names, network, endpoints)?;
            next.endpoints = names.clone();
        }
        check_weights(&update.weights)?;
        next.weights.extend(update.weights.clone());
        if let Some(both) = update.drain.intersection(&update.undrain).next() {
            return Err(ModelError::invalid(
                "drain",
                format!("{both:?} is both drained and undrained"),
            ));
        }
        next.draining.extend(update.drain.iter().cloned());
        next.draining.retain(|n| !update.undrain.contains(n));
        if let Some(text) = &update.affinity {
            next.affinity = parse_affinity(Some(text), next.mode)?;
        }
        if let Some(texts) = &update.publish {
            next.published = parse_published(texts, next.mode)?;
            if next.mode == Mode::Vip && next.vip.is_none() && next.published.is_empty() {
                return Err(ModelError::invalid(
                    "publish",
                    "a service without a VIP must publish a port; delete the service instead",
                ));
            }
        }
        Ok(next)
    }

    /// Whether `endpoint` is one of this service's backends.
    pub fn selects(&self, endpoint: &Endpoint) -> bool {
        if endpoint.network != self.network {
            return false;
        }
        let by_selector = !self.selector.is_empty()
            && self
                .selector
                .iter()
                .all(|(k, v)| endpoint.labels.get(k) == Some(v));
        by_selector || self.endpoints.contains(&endpoint.name)
    }

    /// The backends now, in address order.
    pub fn backends_in(&self, endpoints: &[Endpoint]) -> Vec<Backend> {
        let mut list: Vec<Backend> = endpoints
            .iter()
            .filter(|e| self.selects(e))
            .map(|e| Backend {
                endpoint: e.name.clone(),
                ip: e.ipv4,
                host: e.host.clone(),
                weight: self.weights.get(&e.name).copied().unwrap_or(1),
                draining: self.draining.contains(&e.name),
            })
            .collect();
        list.sort_by_key(|b| b.ip);
        list
    }
}
