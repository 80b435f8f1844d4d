//! Services: a VIP and ports on one network, load-balanced across the
//! endpoints a selector (or a list) names. Pure: the checks and the
//! backend set are computed here and unit-tested; the store and the maps
//! come after.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use super::{check_name, new_id, Endpoint, ModelError, Network};

/// Weights a backend may have (Maglev turns per round).
pub const MAX_WEIGHT: u32 = netd_common::maglev::MAX_WEIGHT;
/// Ports one service may have.
pub const MAX_PORTS_PER_SERVICE: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => netd_common::service::PROTO_TCP,
            Protocol::Udp => netd_common::service::PROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One port of a service: clients reach `port`, backends listen on
/// `target_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServicePort {
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: u16,
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.port, self.target_port, self.protocol)
    }
}

/// `PORT[:TARGET][/tcp|/udp]`, as Docker writes published ports.
impl FromStr for ServicePort {
    type Err = ModelError;

    fn from_str(text: &str) -> Result<Self, ModelError> {
        let bad = |why: &str| {
            ModelError::invalid(
                "ports",
                format!("{text:?} {why} (PORT[:TARGET][/tcp|/udp], e.g. 80:8080/tcp)"),
            )
        };
        let (ports, protocol) = match text.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some(_) => return Err(bad("has a protocol other than tcp or udp")),
            None => (text, Protocol::Tcp),
        };
        let number = |t: &str| match t.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad("is not a port from 1 to 65535")),
            Ok(p) => Ok(p),
        };
        let (port, target_port) = match ports.split_once(':') {
            Some((p, t)) => (number(p)?, number(t)?),
            None => (number(ports)?, number(ports)?),
        };
        Ok(ServicePort {
            protocol,
            port,
            target_port,
        })
    }
}

/// Where a published port is accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// On every host's uplink, balanced over the backends of every host
    /// (swarm's routing mesh).
    #[default]
    Ingress,
    /// Only on hosts that have a backend, balanced over that host's own
    /// backends (swarm's `mode=host`).
    Host,
}

/// A port of the service published on the hosts' uplink addresses:
/// clients outside the cluster reach `published`, backends listen on
/// `target_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PublishedPort {
    pub protocol: Protocol,
    pub published: u16,
    pub target_port: u16,
    #[serde(default)]
    pub mode: PublishMode,
}

impl fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}/{}",
            self.published, self.target_port, self.protocol
        )?;
        if self.mode == PublishMode::Host {
            f.write_str("(host)")?;
        }
        Ok(())
    }
}

/// Docker's two ways of writing it: `PUBLISHED[:TARGET][/PROTO]`, or
/// `published=P,target=T[,protocol=tcp|udp][,mode=ingress|host]`.
impl FromStr for PublishedPort {
    type Err = ModelError;

    fn from_str(text: &str) -> Result<Self, ModelError> {
        let bad = |why: &str| {
            ModelError::invalid(
                "publish",
                format!(
                    "{text:?} {why} (PUBLISHED[:TARGET][/tcp|/udp], or \
                     published=P,target=T[,protocol=tcp|udp][,mode=ingress|host])"
                ),
            )
        };
        if !text.contains('=') {
            let short = text
                .parse::<ServicePort>()
                .map_err(|_| bad("is not a port mapping"))?;
            return Ok(PublishedPort {
                protocol: short.protocol,
                published: short.port,
                target_port: short.target_port,
                mode: PublishMode::Ingress,
            });
        }
        let number = |t: &str| match t.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad("has a port that is not 1 to 65535")),
            Ok(p) => Ok(p),
        };
        let (mut published, mut target) = (None, None);
        let (mut protocol, mut mode) = (Protocol::Tcp, PublishMode::Ingress);
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("published", v)) => published = Some(number(v)?),
                Some(("target", v)) => target = Some(number(v)?),
                Some(("protocol", "tcp")) => protocol = Protocol::Tcp,
                Some(("protocol", "udp")) => protocol = Protocol::Udp,
                Some(("mode", "ingress")) => mode = PublishMode::Ingress,
                Some(("mode", "host")) => mode = PublishMode::Host,
                _ => return Err(bad(&format!("has {part:?}, which is not understood"))),
            }
        }
        let published = published.ok_or_else(|| bad("has no published="))?;
        Ok(PublishedPort {
            protocol,
            published,
            target_port: target.unwrap_or(published),
            mode,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A virtual IP load-balanced in the datapath.
    #[default]
    Vip,
    /// No VIP: name resolution hands out the backends' addresses.
    Dnsrr,
}

/// Session affinity: whether a client's new flows go to the backend its
/// last one had.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", rename_all_fields = "kebab-case")]
pub enum Affinity {
    #[default]
    None,
    /// For `timeout_secs` after the client's last new flow, while that
    /// backend takes new flows.
    ClientIp { timeout_secs: u32 },
}

impl Affinity {
    /// Kubernetes' default for `sessionAffinity: ClientIP`.
    pub const DEFAULT_TIMEOUT_SECS: u32 = 10_800;
    /// Kubernetes' limit, and the longest a client keeps a backend.
    pub const MAX_TIMEOUT_SECS: u32 = 86_400;
}

impl fmt::Display for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Affinity::None => f.write_str("none"),
            Affinity::ClientIp { timeout_secs } => write!(f, "client-ip:{timeout_secs}s"),
        }
    }
}

/// `none`, `client-ip` or `client-ip:TIMEOUT` (seconds, or with an `s`,
/// `m` or `h` suffix).
impl FromStr for Affinity {
    type Err = ModelError;

    fn from_str(text: &str) -> Result<Self, ModelError> {
        let bad = |why: String| {
            ModelError::invalid(
                "affinity",
                format!("{text:?} {why} (none, client-ip or client-ip:TIMEOUT, e.g. client-ip:3h)"),
            )
        };
        let (mode, timeout) = match text.split_once(':') {
            Some((mode, timeout)) => (mode, Some(timeout)),
            None => (text, None),
        };
        match (mode, timeout) {
            ("none", None) => return Ok(Affinity::None),
            ("client-ip", _) => {}
            _ => return Err(bad("is not an affinity".into())),
        }
        let Some(timeout) = timeout else {
            return Ok(Affinity::ClientIp {
                timeout_secs: Self::DEFAULT_TIMEOUT_SECS,
            });
        };
        let (digits, unit) = match timeout.strip_suffix(['s', 'm', 'h']) {
            Some(d) => (d, &timeout[d.len()..]),
            None => (timeout, "s"),
        };
        let scale = match unit {
            "h" => 3600,
            "m" => 60,
            _ => 1,
        };
        let secs = digits
            .parse::<u32>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .filter(|n| (1..=Self::MAX_TIMEOUT_SECS).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "has a timeout that is not 1 s to {} s",
                    Self::MAX_TIMEOUT_SECS
                ))
            })?;
        Ok(Affinity::ClientIp { timeout_secs: secs })
    }
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

/// `key=value[,key=value...]`.
pub fn parse_selector(text: &str) -> Result<BTreeMap<String, String>, ModelError> {
    let mut labels = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(ModelError::invalid(
                "selector",
                format!("{part:?} is not key=value (e.g. app=web,tier=front)"),
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || !k.chars().all(label_char) || !v.chars().all(label_char) {
            return Err(ModelError::invalid(
                "selector",
                format!("{part:?}: keys and values are letters, digits, '_', '.', '-', '/'"),
            ));
        }
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ModelError::invalid(
                "selector",
                format!("{k:?} is given twice"),
            ));
        }
    }
    Ok(labels)
}

fn label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')
}

fn parse_ports(texts: &[String]) -> Result<Vec<ServicePort>, ModelError> {
    let mut ports: Vec<ServicePort> = texts.iter().map(|t| t.parse()).collect::<Result<_, _>>()?;
    if ports.len() > MAX_PORTS_PER_SERVICE {
        return Err(ModelError::invalid(
            "ports",
            format!(
                "{} ports; a service has at most {MAX_PORTS_PER_SERVICE}",
                ports.len()
            ),
        ));
    }
    ports.sort();
    for pair in ports.windows(2) {
        if (pair[0].port, pair[0].protocol) == (pair[1].port, pair[1].protocol) {
            return Err(ModelError::invalid(
                "ports",
                format!("{}/{} is given twice", pair[0].port, pair[0].protocol),
            ));
        }
    }
    Ok(ports)
}

fn parse_published(texts: &[String], mode: Mode) -> Result<Vec<PublishedPort>, ModelError> {
    let mut ports: Vec<PublishedPort> =
        texts.iter().map(|t| t.parse()).collect::<Result<_, _>>()?;
    if !ports.is_empty() && mode == Mode::Dnsrr {
        return Err(ModelError::invalid(
            "publish",
            "a dnsrr service has no load balancer to publish; publish a port of a VIP service",
        ));
    }
    if ports.len() > MAX_PORTS_PER_SERVICE {
        return Err(ModelError::invalid(
            "publish",
            format!("a service publishes at most {MAX_PORTS_PER_SERVICE} ports"),
        ));
    }
    ports.sort();
    for pair in ports.windows(2) {
        if (pair[0].published, pair[0].protocol) == (pair[1].published, pair[1].protocol) {
            return Err(ModelError::invalid(
                "publish",
                format!(
                    "{}/{} is published twice",
                    pair[0].published, pair[0].protocol
                ),
            ));
        }
    }
    Ok(ports)
}

fn parse_affinity(text: Option<&str>, mode: Mode) -> Result<Affinity, ModelError> {
    let affinity = text.map(str::parse).transpose()?.unwrap_or_default();
    if mode == Mode::Dnsrr && affinity != Affinity::None {
        return Err(ModelError::invalid(
            "affinity",
            "a dnsrr service has no VIP to keep a client on one backend",
        ));
    }
    Ok(affinity)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointSpec, NetworkSpec};

    fn net(name: &str, subnet: &str, index: u32) -> Network {
        let spec = NetworkSpec {
            name: name.into(),
            subnet: subnet.into(),
            ..Default::default()
        };
        Network::from_spec(&spec, &[], index).expect("network")
    }

    fn endpoint(name: &str, network: &Network, ip: &str, labels: &[(&str, &str)]) -> Endpoint {
        let spec = EndpointSpec {
            name: name.into(),
            network: network.name.clone(),
            netns: format!("/run/netns/{name}").into(),
            ip: Some(ip.into()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        Endpoint::from_spec(&spec, std::slice::from_ref(network), &[]).expect("endpoint")
    }

    fn spec(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            network: "n1".into(),
            ports: vec!["80:8080".into()],
            selector: Some("app=web".into()),
            ..Default::default()
        }
    }

    #[test]
    fn published_ports_parse_both_of_dockers_syntaxes() {
        let p = |t: &str| t.parse::<PublishedPort>();
        let ingress = |published, target_port, protocol| PublishedPort {
            protocol,
            published,
            target_port,
            mode: PublishMode::Ingress,
        };
        assert_eq!(
            p("8080:80").expect("short"),
            ingress(8080, 80, Protocol::Tcp)
        );
        assert_eq!(p("53/udp").expect("short"), ingress(53, 53, Protocol::Udp));
        assert_eq!(
            p("published=8080,target=80,mode=host,protocol=udp").expect("long"),
            PublishedPort {
                mode: PublishMode::Host,
                ..ingress(8080, 80, Protocol::Udp)
            }
        );
        assert_eq!(
            p("published=9000").expect("long"),
            ingress(9000, 9000, Protocol::Tcp)
        );
        for bad in [
            "",
            "0:80",
            "8080:80/sctp",
            "target=80",
            "published=8080,mode=global",
            "published=0",
            "published=8080,target=x",
        ] {
            let e = p(bad).expect_err(bad).to_string();
            assert!(e.contains("published="), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_service_publishes_each_port_once_and_only_with_a_vip() {
        let n1 = net("n1", "10.1.0.0/24", 1);
        let make = |publish: &[&str], mode| {
            let spec = ServiceSpec {
                publish: publish.iter().map(|t| t.to_string()).collect(),
                mode,
                ports: if mode == Mode::Vip {
                    vec!["80".into()]
                } else {
                    vec![]
                },
                ..spec("s")
            };
            Service::from_spec(
                &spec,
                std::slice::from_ref(&n1),
                &[],
                &[],
                &BTreeSet::new(),
                1,
            )
        };
        let s = make(&["8080:80", "53/udp"], Mode::Vip).expect("published");
        assert_eq!(s.published.len(), 2);
        let e = make(&["8080:80", "published=8080,target=81"], Mode::Vip)
            .expect_err("twice")
            .to_string();
        assert!(e.contains("8080/tcp is published twice"), "{e}");
        make(&["8080:80", "8080:80/udp"], Mode::Vip).expect("tcp and udp are two ports");
        let e = make(&["8080:80"], Mode::Dnsrr)
            .expect_err("dnsrr")
            .to_string();
        assert!(e.contains("dnsrr"), "{e}");
    }

    #[test]
    fn a_service_may_publish_ports_without_a_vip() {
        let n1 = net("n1", "10.1.0.0/24", 1);
        let make = |spec: ServiceSpec| {
            Service::from_spec(
                &spec,
                std::slice::from_ref(&n1),
                &[],
                &[],
                &BTreeSet::new(),
                1,
            )
        };
        let only = ServiceSpec {
            ports: vec![],
            publish: vec!["published=8080,target=80,mode=host".into()],
            ..spec("docker-1")
        };
        let s = make(only.clone()).expect("published only");
        assert_eq!((s.vip, s.ports.len(), s.published.len()), (None, 0, 1));
        let e = make(ServiceSpec {
            vip: Some("10.1.0.9".into()),
            ..only.clone()
        })
        .expect_err("a VIP with no port")
        .to_string();
        assert!(e.contains("published ports only has no VIP"), "{e}");
        let e = s
            .updated(
                &ServiceUpdate {
                    ports: Some(vec!["80".into()]),
                    ..Default::default()
                },
                std::slice::from_ref(&n1),
                &[],
            )
            .expect_err("VIP ports on a service without a VIP")
            .to_string();
        assert!(e.contains("has no VIP"), "{e}");
        let e = s
            .updated(
                &ServiceUpdate {
                    publish: Some(vec![]),
                    ..Default::default()
                },
                std::slice::from_ref(&n1),
                &[],
            )
            .expect_err("nothing left")
            .to_string();
        assert!(e.contains("must publish a port"), "{e}");
    }

    #[test]
    fn ports_parse_like_docker_publishes_them() {
        let p = |t: &str| t.parse::<ServicePort>();
        assert_eq!(p("80").expect("80").to_string(), "80:80/tcp");
        assert_eq!(p("53/udp").expect("53").to_string(), "53:53/udp");
        assert_eq!(p("80:8080/tcp").expect("80").to_string(), "80:8080/tcp");
        for bad in ["", "0", "80:", "x", "80/sctp", "70000", "80:8080:1"] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_service_gets_a_free_vip_and_selects_labelled_endpoints_of_its_network() {
        let n1 = net("n1", "10.1.0.0/24", 1);
        let n2 = net("n2", "10.2.0.0/24", 2);
        let web1 = endpoint("web1", &n1, "10.1.0.2", &[("app", "web")]);
        let db = endpoint("db", &n1, "10.1.0.3", &[("app", "db")]);
        let other = endpoint("web-elsewhere", &n2, "10.2.0.2", &[("app", "web")]);
        let endpoints = vec![web1.clone(), db.clone(), other];
        let taken = [web1.ipv4, db.ipv4].into_iter().collect();
        let nets = [n1, n2];
        let s = Service::from_spec(&spec("web"), &nets, &[], &endpoints, &taken, 1).expect("valid");
        assert_eq!(s.vip, Some(Ipv4Addr::new(10, 1, 0, 4)));
        let names: Vec<String> = s
            .backends_in(&endpoints)
            .into_iter()
            .map(|b| b.endpoint)
            .collect();
        assert_eq!(names, ["web1"]);

        let named = ServiceSpec {
            backends: vec!["db".into()],
            weights: [("db".to_string(), 3)].into(),
            draining: ["web1".to_string()].into(),
            ..spec("web2")
        };
        let s = Service::from_spec(&named, &nets, &[], &endpoints, &taken, 2).expect("valid");
        let got = s.backends_in(&endpoints);
        assert_eq!(
            got.iter()
                .map(|b| (b.endpoint.as_str(), b.weight, b.draining))
                .collect::<Vec<_>>(),
            [("web1", 1, true), ("db", 3, false)]
        );
    }

    #[test]
    fn bad_requests_name_the_field_and_the_reason() {
        let n1 = net("n1", "10.1.0.0/24", 1);
        let web1 = endpoint("web1", &n1, "10.1.0.2", &[]);
        let n2 = net("n2", "10.2.0.0/24", 2);
        let far = endpoint("far", &n2, "10.2.0.2", &[]);
        let nets = [n1, n2];
        let endpoints = [web1.clone(), far];
        let existing = Service::from_spec(
            &spec("taken"),
            &nets,
            &[],
            &endpoints,
            &[web1.ipv4].into_iter().collect(),
            1,
        )
        .expect("valid");
        let mut taken: BTreeSet<Ipv4Addr> = [web1.ipv4].into_iter().collect();
        taken.extend(existing.vip);
        let cases = [
            (
                ServiceSpec {
                    name: "taken".into(),
                    ..spec("x")
                },
                "service \"taken\" already exists",
            ),
            (
                ServiceSpec {
                    network: "nope".into(),
                    ..spec("x")
                },
                "no network named \"nope\"",
            ),
            (
                ServiceSpec {
                    vip: Some("10.9.0.1".into()),
                    ..spec("x")
                },
                "vip: address 10.9.0.1 is outside the subnet",
            ),
            (
                ServiceSpec {
                    vip: Some("10.1.0.2".into()),
                    ..spec("x")
                },
                "vip: address 10.1.0.2 is already in use",
            ),
            (
                ServiceSpec {
                    vip: Some("10.1.0.1".into()),
                    ..spec("x")
                },
                "vip: address 10.1.0.1 is reserved",
            ),
            (
                ServiceSpec {
                    vip: Some("ten".into()),
                    ..spec("x")
                },
                "vip: \"ten\" is not an IPv4 address",
            ),
            (
                ServiceSpec {
                    ports: vec!["80".into(), "80:81".into()],
                    ..spec("x")
                },
                "ports: 80/tcp is given twice",
            ),
            (
                ServiceSpec {
                    ports: vec![],
                    ..spec("x")
                },
                "ports: a VIP service needs at least one port",
            ),
            (
                ServiceSpec {
                    ports: vec!["http".into()],
                    ..spec("x")
                },
                "ports: \"http\" is not a port",
            ),
            (
                ServiceSpec {
                    selector: Some("app".into()),
                    ..spec("x")
                },
                "selector: \"app\" is not key=value",
            ),
            (
                ServiceSpec {
                    selector: Some("a=b,a=c".into()),
                    ..spec("x")
                },
                "selector: \"a\" is given twice",
            ),
            (
                ServiceSpec {
                    weights: [("web1".to_string(), 0)].into(),
                    ..spec("x")
                },
                "weights: web1=0: a weight is 1 to 256",
            ),
            (
                ServiceSpec {
                    weights: [("web1".to_string(), 257)].into(),
                    ..spec("x")
                },
                "weights: web1=257",
            ),
            (
                ServiceSpec {
                    backends: vec!["ghost".into()],
                    ..spec("x")
                },
                "no endpoint named \"ghost\"",
            ),
            (
                ServiceSpec {
                    backends: vec!["far".into()],
                    ..spec("x")
                },
                "backends: endpoint \"far\" is not on network \"n1\"",
            ),
            (
                ServiceSpec {
                    mode: Mode::Dnsrr,
                    vip: Some("10.1.0.9".into()),
                    ..spec("x")
                },
                "vip: a dnsrr service has no VIP",
            ),
            (
                ServiceSpec {
                    name: "a b".into(),
                    ..spec("x")
                },
                "name: \"a b\" is not a valid name",
            ),
            (
                ServiceSpec {
                    affinity: Some("sticky".into()),
                    ..spec("x")
                },
                "affinity: \"sticky\" is not an affinity",
            ),
            (
                ServiceSpec {
                    affinity: Some("client-ip:2d".into()),
                    ..spec("x")
                },
                "affinity: \"client-ip:2d\" has a timeout that is not 1 s to 86400 s",
            ),
            (
                ServiceSpec {
                    mode: Mode::Dnsrr,
                    ports: vec![],
                    affinity: Some("client-ip".into()),
                    ..spec("x")
                },
                "affinity: a dnsrr service has no VIP",
            ),
        ];
        for (s, expected) in cases {
            let e = Service::from_spec(
                &s,
                &nets,
                std::slice::from_ref(&existing),
                &endpoints,
                &taken,
                2,
            )
            .expect_err("refused")
            .to_string();
            assert!(e.contains(expected), "{s:?}: {e:?}");
        }
    }

    #[test]
    fn affinity_parses_with_kubernetes_defaults_and_limits() {
        let a = |t: &str| t.parse::<Affinity>();
        let secs = |timeout_secs| Affinity::ClientIp { timeout_secs };
        assert_eq!(a("none").expect("none"), Affinity::None);
        assert_eq!(a("client-ip").expect("default"), secs(10_800));
        assert_eq!(a("client-ip:90").expect("secs"), secs(90));
        assert_eq!(a("client-ip:90s").expect("secs"), secs(90));
        assert_eq!(a("client-ip:5m").expect("mins"), secs(300));
        assert_eq!(a("client-ip:24h").expect("hours"), secs(86_400));
        for bad in [
            "",
            "client",
            "none:5",
            "client-ip:",
            "client-ip:0",
            "client-ip:25h",
            "client-ip:5x",
            "client-ip:99999999999h",
        ] {
            assert!(a(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            secs(300).to_string().parse::<Affinity>().expect("again"),
            secs(300)
        );
        let json = serde_json::to_string(&secs(60)).expect("json");
        assert_eq!(json, r#"{"client-ip":{"timeout-secs":60}}"#);
    }

    #[test]
    fn a_service_stored_before_affinity_has_none_and_the_request_leaves_it_out() {
        let n1 = net("n1", "10.1.0.0/24", 1);
        let s =
            Service::from_spec(&spec("web"), &[n1], &[], &[], &BTreeSet::new(), 1).expect("valid");
        let mut old = serde_json::to_value(&s).expect("json");
        old.as_object_mut().expect("object").remove("affinity");
        let read: Service = serde_json::from_value(old).expect("old record");
        assert_eq!(read.affinity, Affinity::None);
        let request = serde_json::to_value(spec("web")).expect("json");
        assert!(request.get("affinity").is_none(), "{request}");
    }

    #[test]
    fn an_update_replaces_what_it_gives_and_drains_by_name() {
        let n1 = net("n1", "10.1.0.0/24", 1);
        let endpoints = [endpoint("web1", &n1, "10.1.0.2", &[("app", "web")])];
        let nets = [n1];
        let s = Service::from_spec(&spec("web"), &nets, &[], &endpoints, &BTreeSet::new(), 1)
            .expect("valid");
        let drained = s
            .updated(
                &ServiceUpdate {
                    drain: ["web1".to_string()].into(),
                    weights: [("web1".to_string(), 5)].into(),
                    ports: Some(vec!["443:8443".into()]),
                    ..Default::default()
                },
                &nets,
                &endpoints,
            )
            .expect("valid");
        let b = &drained.backends_in(&endpoints)[0];
        assert!(b.draining && b.weight == 5);
        assert_eq!(drained.ports[0].to_string(), "443:8443/tcp");
        assert_eq!((drained.vip, drained.index), (s.vip, s.index));
        let back = drained
            .updated(
                &ServiceUpdate {
                    undrain: ["web1".to_string()].into(),
                    ..Default::default()
                },
                &nets,
                &endpoints,
            )
            .expect("valid");
        assert!(!back.backends_in(&endpoints)[0].draining);
        assert_eq!(back.affinity, Affinity::None, "kept when not given");
        let sticky = back
            .updated(
                &ServiceUpdate {
                    affinity: Some("client-ip:10m".into()),
                    ..Default::default()
                },
                &nets,
                &endpoints,
            )
            .expect("valid");
        assert_eq!(sticky.affinity, Affinity::ClientIp { timeout_secs: 600 });
        let e = s
            .updated(
                &ServiceUpdate {
                    selector: Some("=x".into()),
                    ..Default::default()
                },
                &nets,
                &endpoints,
            )
            .expect_err("refused");
        assert!(e.to_string().starts_with("selector:"), "{e}");
    }
}
