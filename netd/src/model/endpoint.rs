use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{check_name, new_id, Mac, ModelError, Network};
use crate::{config::valid_ifname, ipam};

pub const DEFAULT_IFNAME: &str = "eth0";
/// Host ends of endpoint veths are named this plus 12 hex digits of the id.
pub const HOST_IFNAME_PREFIX: &str = "ndh";

/// `netd endpoint create NAME --network NET --netns PATH [--ip IP] [--ifname IF]
/// [--mac MAC]`, or `... --external-host HOST [--ip IP] [--mac MAC]` for an
/// endpoint on a host without netd.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EndpointSpec {
    pub name: String,
    /// Network name or id.
    pub network: String,
    /// The sandbox: a network namespace path such as /var/run/netns/NAME
    /// or /proc/PID/ns/net. Empty for an endpoint on an external host.
    #[serde(default)]
    pub netns: PathBuf,
    /// An external host the endpoint lives on (see [`Endpoint::external`]).
    #[serde(default)]
    pub external_host: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub ifname: Option<String>,
    /// The endpoint's MAC; by default 02:6e and the IPv4 address.
    #[serde(default)]
    pub mac: Option<String>,
    /// KEY=VALUE labels (what service selectors match). Left out of the
    /// JSON when empty, so this CLI still talks to a netd from before
    /// labels (mid-upgrade), which refuses fields it does not know.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// An endpoint: one interface of one sandbox on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Endpoint {
    pub id: String,
    pub name: String,
    /// The network's id.
    pub network: String,
    pub sandbox: PathBuf,
    pub ipv4: Ipv4Addr,
    pub mac: Mac,
    /// Interface name inside the sandbox.
    pub ifname: String,
    /// The veth end that stays on the host (carries the TC program).
    pub host_ifname: String,
    /// Who moves the veth into the sandbox and configures it there.
    #[serde(default)]
    pub managed_by: Manager,
    /// The host (netd) the endpoint lives on; only that netd makes its link.
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Docker: the container's name, from the Docker API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// Who configures the sandbox side of an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Manager {
    /// netd moves the veth in and sets name, MAC, address and routes.
    #[default]
    Netd,
    /// Docker does (libnetwork remote driver): netd only makes the veth
    /// pair, and the endpoint has no sandbox until Join.
    Docker,
    /// Nobody here: the endpoint is on an external host (no netd there)
    /// and is only published so that netd hosts reach it over VXLAN.
    External,
}

impl Endpoint {
    /// Name of the peer end while it is still on the host.
    pub fn peer_ifname(&self) -> String {
        format!("ndp{}", &self.host_ifname[HOST_IFNAME_PREFIX.len()..])
    }

    /// Whether the endpoint is in a sandbox yet (Docker endpoints join
    /// later; an external host's endpoints are in one we do not see).
    pub fn joined(&self) -> bool {
        self.managed_by == Manager::External || !self.sandbox.as_os_str().is_empty()
    }

    /// An endpoint on `host`, an external host: a container behind a kernel
    /// VXLAN device, say. It takes an address of the overlay network and
    /// the container's MAC (`spec.mac`, or the one netd derives, which the
    /// container must then use); netd makes no link for it.
    pub fn external(
        spec: &EndpointSpec,
        host: &str,
        networks: &[Network],
        endpoints: &[Endpoint],
    ) -> Result<Self, ModelError> {
        let network = find_new(spec, networks, endpoints)?;
        if network.vni.is_none() {
            return Err(ModelError::invalid(
                "network",
                format!(
                    "{:?} is not an overlay network; only overlay networks reach other hosts",
                    network.name
                ),
            ));
        }
        if !spec.netns.as_os_str().is_empty() || spec.ifname.is_some() {
            return Err(ModelError::invalid(
                "netns",
                "an endpoint on an external host has no sandbox or interface here",
            ));
        }
        let ipv4 = allocate(network, endpoints, requested_ip(spec)?)?;
        Ok(Endpoint {
            id: new_id(),
            name: spec.name.clone(),
            network: network.id.clone(),
            sandbox: PathBuf::new(),
            ipv4,
            mac: chosen_mac(spec, ipv4, network, endpoints)?,
            ifname: String::new(),
            host_ifname: String::new(),
            managed_by: Manager::External,
            host: host.to_string(),
            labels: checked_labels(spec)?,
            container: None,
        })
    }

    /// An endpoint Docker asked for (CreateEndpoint): its id is Docker's,
    /// its address the one Docker's IPAM gave (or a fresh one), its MAC
    /// Docker's or derived from the address; the sandbox comes at Join.
    pub fn for_docker(
        id: &str,
        network: &Network,
        endpoints: &[Endpoint],
        ip: Option<Ipv4Addr>,
        mac: Option<Mac>,
    ) -> Result<Self, ModelError> {
        if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ModelError::invalid(
                "EndpointID",
                format!("{id:?} is not a Docker endpoint id"),
            ));
        }
        if endpoints.iter().any(|e| e.id == id) {
            return Err(ModelError::Exists {
                kind: "endpoint",
                name: id.to_string(),
            });
        }
        let ipv4 = allocate(network, endpoints, ip)?;
        Ok(Endpoint {
            id: id.to_string(),
            name: format!("docker-{}", &id[..12]),
            network: network.id.clone(),
            sandbox: PathBuf::new(),
            ipv4,
            mac: mac.unwrap_or_else(|| Mac::for_ipv4(ipv4)),
            ifname: DEFAULT_IFNAME.to_string(),
            host_ifname: format!("{HOST_IFNAME_PREFIX}{}", &id[..12]),
            managed_by: Manager::Docker,
            host: String::new(),
            labels: BTreeMap::new(),
            container: None,
        })
    }
}

impl Endpoint {
    /// Validates `spec` against the model and allocates the address.
    pub fn from_spec(
        spec: &EndpointSpec,
        networks: &[Network],
        endpoints: &[Endpoint],
    ) -> Result<Self, ModelError> {
        let network = find_new(spec, networks, endpoints)?;
        if spec.netns.as_os_str().is_empty() {
            return Err(ModelError::invalid(
                "netns",
                "the endpoint needs a sandbox (a network namespace path)",
            ));
        }
        if !spec.netns.is_absolute() {
            return Err(ModelError::invalid(
                "netns",
                format!(
                    "{} is not an absolute path (e.g. /var/run/netns/NAME)",
                    spec.netns.display()
                ),
            ));
        }
        let ifname = spec
            .ifname
            .clone()
            .unwrap_or_else(|| DEFAULT_IFNAME.to_string());
        if !valid_ifname(&ifname) {
            return Err(ModelError::invalid(
                "ifname",
                format!("{ifname:?} is not a valid interface name"),
            ));
        }
        let in_sandbox: Vec<&Endpoint> = endpoints
            .iter()
            .filter(|e| same_sandbox(&e.sandbox, &spec.netns))
            .collect();
        if let Some(e) = in_sandbox.iter().find(|e| e.ifname == ifname) {
            return Err(ModelError::invalid(
                "ifname",
                format!(
                    "{ifname} is already used in sandbox {} by endpoint {:?}",
                    spec.netns.display(),
                    e.name
                ),
            ));
        }
        if let Some(e) = in_sandbox.iter().find(|e| e.network == network.id) {
            return Err(ModelError::invalid(
                "network",
                format!(
                    "sandbox {} is already on network {:?} through endpoint {:?}",
                    spec.netns.display(),
                    network.name,
                    e.name
                ),
            ));
        }
        let ipv4 = allocate(network, endpoints, requested_ip(spec)?)?;
        let id = new_id();
        let host_ifname = format!("{HOST_IFNAME_PREFIX}{}", &id[..12]);
        Ok(Endpoint {
            id,
            name: spec.name.clone(),
            network: network.id.clone(),
            sandbox: spec.netns.clone(),
            ipv4,
            mac: chosen_mac(spec, ipv4, network, endpoints)?,
            ifname,
            host_ifname,
            managed_by: Manager::Netd,
            host: String::new(),
            labels: checked_labels(spec)?,
            container: None,
        })
    }
}

/// The network a new endpoint named `spec.name` joins, once the name is
/// known to be valid and free.
fn find_new<'n>(
    spec: &EndpointSpec,
    networks: &'n [Network],
    endpoints: &[Endpoint],
) -> Result<&'n Network, ModelError> {
    check_name(&spec.name)?;
    if endpoints.iter().any(|e| e.name == spec.name) {
        return Err(ModelError::Exists {
            kind: "endpoint",
            name: spec.name.clone(),
        });
    }
    networks
        .iter()
        .find(|n| n.name == spec.network || n.id == spec.network)
        .ok_or_else(|| ModelError::NotFound {
            kind: "network",
            name: spec.network.clone(),
        })
}

/// The requested MAC if it is a unicast address no other endpoint of the
/// network has, or the one derived from the address.
fn chosen_mac(
    spec: &EndpointSpec,
    ipv4: Ipv4Addr,
    network: &Network,
    endpoints: &[Endpoint],
) -> Result<Mac, ModelError> {
    let Some(text) = &spec.mac else {
        return Ok(Mac::for_ipv4(ipv4));
    };
    let mac: Mac = text.parse().map_err(|e| ModelError::invalid("mac", e))?;
    if !mac.is_unicast() {
        return Err(ModelError::invalid(
            "mac",
            format!("{mac} is not a unicast address"),
        ));
    }
    if let Some(other) = endpoints
        .iter()
        .find(|e| e.network == network.id && e.mac == mac)
    {
        return Err(ModelError::invalid(
            "mac",
            format!("{mac} is already endpoint {:?}'s", other.name),
        ));
    }
    Ok(mac)
}

fn checked_labels(spec: &EndpointSpec) -> Result<BTreeMap<String, String>, ModelError> {
    let text: Vec<String> = spec
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    super::labels::parse_selector(&text.join(",")).map_err(|e| match e {
        ModelError::Invalid { reason, .. } => ModelError::invalid("labels", reason),
        other => other,
    })
}

fn requested_ip(spec: &EndpointSpec) -> Result<Option<Ipv4Addr>, ModelError> {
    spec.ip
        .as_deref()
        .map(|text| {
            text.parse::<Ipv4Addr>()
                .map_err(|_| ModelError::invalid("ip", format!("{text:?} is not an IPv4 address")))
        })
        .transpose()
}

/// The requested address if it is free in `network`, or the first free one.
fn allocate(
    network: &Network,
    endpoints: &[Endpoint],
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, ModelError> {
    let taken: BTreeSet<Ipv4Addr> = endpoints
        .iter()
        .filter(|e| e.network == network.id)
        .map(|e| e.ipv4)
        .collect();
    Ok(ipam::allocate(network, &taken, requested)?)
}

fn same_sandbox(a: &Path, b: &Path) -> bool {
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::network;

    fn spec(name: &str, network: &str, netns: &str) -> EndpointSpec {
        EndpointSpec {
            name: name.into(),
            network: network.into(),
            netns: netns.into(),
            ..Default::default()
        }
    }

    #[test]
    fn gets_an_address_mac_and_host_interface() {
        let n1 = network("n1", "10.1.0.0/24", &[]);
        let e = Endpoint::from_spec(
            &spec("e1", "n1", "/var/run/netns/s1"),
            std::slice::from_ref(&n1),
            &[],
        )
        .expect("valid");
        assert_eq!(e.ipv4, Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(e.mac.to_string(), "02:6e:0a:01:00:02");
        assert_eq!(e.ifname, "eth0");
        assert_eq!(e.network, n1.id);
        assert!(e.host_ifname.len() <= 15 && e.host_ifname.starts_with("ndh"));
    }

    #[test]
    fn a_spec_without_labels_is_json_a_netd_without_labels_reads() {
        let json = serde_json::to_string(&spec("e1", "n1", "/run/netns/s")).expect("json");
        assert!(!json.contains("labels"), "{json}");
    }

    #[test]
    fn a_requested_mac_is_used() {
        let n1 = network("n1", "10.1.0.0/24", &[]);
        let e = Endpoint::from_spec(
            &EndpointSpec {
                mac: Some("52:54:00:12:34:56".into()),
                ..spec("e1", "n1", "/run/netns/s")
            },
            std::slice::from_ref(&n1),
            &[],
        )
        .expect("valid");
        assert_eq!(e.mac.to_string(), "52:54:00:12:34:56");
    }

    #[test]
    fn a_sandbox_may_join_several_networks_once_each() {
        let n1 = network("n1", "10.1.0.0/24", &[]);
        let n2 = network("n2", "10.2.0.0/24", std::slice::from_ref(&n1));
        let nets = [n1, n2];
        let e1 = Endpoint::from_spec(&spec("e1", "n1", "/run/netns/s"), &nets, &[]).expect("first");
        let mut second = spec("e2", "n2", "/run/netns/s");
        second.ifname = Some("eth1".into());
        let e2 =
            Endpoint::from_spec(&second, &nets, std::slice::from_ref(&e1)).expect("second network");
        assert_eq!(e2.ipv4, Ipv4Addr::new(10, 2, 0, 2));

        let existing = [e1, e2];
        let cases = [
            (spec("e1", "n1", "/run/netns/t"), "endpoint \"e1\" already exists"),
            (spec("e3", "n3", "/run/netns/t"), "no network named \"n3\""),
            (spec("e3", "n1", "relative"), "netns: relative is not an absolute path"),
            (spec("e3", "n1", "/run/netns/s"), "ifname: eth0 is already used in sandbox /run/netns/s by endpoint \"e1\""),
            (
                EndpointSpec { ifname: Some("eth9".into()), ..spec("e3", "n1", "/run/netns/s") },
                "network: sandbox /run/netns/s is already on network \"n1\" through endpoint \"e1\"",
            ),
            (EndpointSpec { ip: Some("10.1.0.2".into()), ..spec("e3", "n1", "/run/netns/t") }, "address 10.1.0.2 is already in use"),
            (EndpointSpec { ip: Some("10.2.0.9".into()), ..spec("e3", "n1", "/run/netns/t") }, "outside the subnet 10.1.0.0/24"),
            (EndpointSpec { ip: Some("ten".into()), ..spec("e3", "n1", "/run/netns/t") }, "ip: \"ten\" is not an IPv4 address"),
            (EndpointSpec { ifname: Some("a/b".into()), ..spec("e3", "n1", "/run/netns/t") }, "ifname: \"a/b\" is not a valid interface name"),
            (EndpointSpec { mac: Some("02:6e:0a:01:00:02".into()), ..spec("e3", "n1", "/run/netns/t") }, "mac: 02:6e:0a:01:00:02 is already endpoint \"e1\"'s"),
            (EndpointSpec { mac: Some("01:00:5e:00:00:01".into()), ..spec("e3", "n1", "/run/netns/t") }, "mac: 01:00:5e:00:00:01 is not a unicast address"),
            (EndpointSpec { mac: Some("02:6e".into()), ..spec("e3", "n1", "/run/netns/t") }, "is not a MAC address"),
        ];
        for (s, expected) in cases {
            let e = Endpoint::from_spec(&s, &nets, &existing)
                .expect_err("refused")
                .to_string();
            assert!(e.contains(expected), "{s:?}: {e:?}");
        }
    }
}
