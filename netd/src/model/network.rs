use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{check_name, new_id, Egress, EgressSpec, ModelError};

/// What a user asks for: `netd network create NAME --subnet ... [--gateway ...]
/// [--ip-range ...] [--aux-address NAME=IP]...`. Text fields are parsed here,
/// so a bad value is refused with the field it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub ip_range: Option<String>,
    /// NAME=IP: addresses IPAM must never hand out.
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A cluster-wide network joined across hosts by VXLAN (etcd store).
    #[serde(default)]
    pub overlay: bool,
    /// Every endpoint's ingress and egress are default-deny: only what a
    /// policy allows passes. Left out when false, so this CLI still talks
    /// to a netd from before policy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default_deny: bool,
    /// No way out of the host (Docker's `--internal`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Masquerade packets to the world [default: true] (Docker's
    /// `com.docker.network.bridge.enable_ip_masquerade`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<bool>,
    /// CIDRs reached with the endpoints' own addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_masquerade: Vec<String>,
    /// The endpoints' MTU (Docker's `com.docker.network.driver.mtu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The address to masquerade to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_ip: Option<String>,
}

/// A network: one IPv4 subnet whose endpoints talk freely among
/// themselves and to no other network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Network {
    pub id: String,
    pub name: String,
    /// Small number naming the network in the BPF maps (never reused while
    /// the network exists).
    pub index: u32,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ip_range: Option<Ipv4Net>,
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    pub labels: BTreeMap<String, String>,
    /// VXLAN network identifier of an overlay network (allocated cluster-wide).
    #[serde(default)]
    pub vni: Option<u32>,
    /// The netd IPAM pool Docker made it from: its addresses are kept in
    /// that pool's registry, where Docker's IPAM calls claim them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_pool: Option<String>,
    /// See [`NetworkSpec::default_deny`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default_deny: bool,
    /// The Docker networks this one is: each dockerd gives a network its
    /// own id, so a multi-host one has an id per Docker host (id → host).
    /// The last one removed removes the network.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub docker: BTreeMap<String, String>,
    /// Its way out of the host.
    #[serde(flatten)]
    pub egress: Egress,
}

impl Network {
    /// Whose address registry this network's addresses are in.
    pub fn address_registry(&self) -> &str {
        self.ipam_pool.as_deref().unwrap_or(&self.id)
    }
}

fn parse_net(field: &'static str, text: &str) -> Result<Ipv4Net, ModelError> {
    let net: Ipv4Net = text.parse().map_err(|_| {
        ModelError::invalid(
            field,
            format!("{text:?} is not an IPv4 CIDR such as 10.1.0.0/24"),
        )
    })?;
    if net.addr() != net.network() {
        return Err(ModelError::invalid(
            field,
            format!("{text} has host bits set; did you mean {}?", net.trunc()),
        ));
    }
    Ok(net)
}

fn parse_ip(field: &'static str, text: &str) -> Result<Ipv4Addr, ModelError> {
    text.parse()
        .map_err(|_| ModelError::invalid(field, format!("{text:?} is not an IPv4 address")))
}

impl Network {
    /// Validates `spec` against the networks that exist and builds the
    /// network. `index` is the map index the caller allocated.
    pub fn from_spec(
        spec: &NetworkSpec,
        existing: &[Network],
        index: u32,
    ) -> Result<Self, ModelError> {
        check_name(&spec.name)?;
        if existing.iter().any(|n| n.name == spec.name) {
            return Err(ModelError::Exists {
                kind: "network",
                name: spec.name.clone(),
            });
        }
        let subnet = parse_net("subnet", &spec.subnet)?;
        if subnet.prefix_len() > 30 {
            return Err(ModelError::invalid(
                "subnet",
                format!("{subnet} is too small: a network needs at least a /30"),
            ));
        }
        if let Some(other) = existing
            .iter()
            .find(|n| n.subnet.contains(&subnet.network()) || subnet.contains(&n.subnet.network()))
        {
            return Err(ModelError::invalid(
                "subnet",
                format!(
                    "{subnet} overlaps network {:?} ({})",
                    other.name, other.subnet
                ),
            ));
        }
        let usable = |field: &'static str, ip: Ipv4Addr| -> Result<Ipv4Addr, ModelError> {
            if !subnet.contains(&ip) {
                return Err(ModelError::invalid(
                    field,
                    format!("{ip} is outside the subnet {subnet}"),
                ));
            }
            if ip == subnet.network() || ip == subnet.broadcast() {
                return Err(ModelError::invalid(
                    field,
                    format!("{ip} is the network or broadcast address of {subnet}"),
                ));
            }
            Ok(ip)
        };
        let gateway = match &spec.gateway {
            Some(text) => usable("gateway", parse_ip("gateway", text)?)?,
            None => subnet
                .hosts()
                .next()
                .ok_or_else(|| ModelError::invalid("subnet", "no host addresses"))?,
        };
        let ip_range = match &spec.ip_range {
            Some(text) => {
                let range = parse_net("ip-range", text)?;
                if !subnet.contains(&range) {
                    return Err(ModelError::invalid(
                        "ip-range",
                        format!("{range} is not inside the subnet {subnet}"),
                    ));
                }
                Some(range)
            }
            None => None,
        };
        let mut aux_addresses = BTreeMap::new();
        for (name, text) in &spec.aux_addresses {
            if name.is_empty() {
                return Err(ModelError::invalid(
                    "aux-address",
                    format!("{text}: the name before '=' is empty"),
                ));
            }
            let ip = usable("aux-address", parse_ip("aux-address", text)?)?;
            if ip == gateway {
                return Err(ModelError::invalid(
                    "aux-address",
                    format!("{name}={ip} is the gateway"),
                ));
            }
            aux_addresses.insert(name.clone(), ip);
        }
        Ok(Network {
            id: new_id(),
            name: spec.name.clone(),
            index,
            subnet,
            gateway,
            ip_range,
            aux_addresses,
            labels: spec.labels.clone(),
            vni: None,
            ipam_pool: None,
            default_deny: spec.default_deny,
            docker: BTreeMap::new(),
            egress: Egress::from_spec(&EgressSpec {
                internal: spec.internal,
                masquerade: spec.masquerade,
                no_masquerade: &spec.no_masquerade,
                mtu: spec.mtu,
                egress_ip: spec.egress_ip.as_deref(),
            })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, subnet: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            subnet: subnet.into(),
            ..Default::default()
        }
    }

    fn refused(spec: &NetworkSpec, existing: &[Network]) -> String {
        Network::from_spec(spec, existing, 9)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn defaults_gateway_to_the_first_host() {
        let n = Network::from_spec(&spec("n1", "10.1.0.0/24"), &[], 1).expect("valid");
        assert_eq!(n.gateway, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(n.index, 1);
        assert_eq!(n.id.len(), 16);
    }

    #[test]
    fn every_bad_request_names_its_field() {
        let n1 = Network::from_spec(&spec("n1", "10.1.0.0/24"), &[], 1).expect("valid");
        let existing = [n1];
        let mut s = spec("n2", "10.2.0.0/24");
        let cases: Vec<(NetworkSpec, &str)> = vec![
            (spec("n1", "10.3.0.0/24"), "network \"n1\" already exists"),
            (
                spec("bad name", "10.3.0.0/24"),
                "name: \"bad name\" is not a valid name",
            ),
            (
                spec("n2", "10.2.0.0"),
                "subnet: \"10.2.0.0\" is not an IPv4 CIDR",
            ),
            (
                spec("n2", "10.2.0.0/33"),
                "subnet: \"10.2.0.0/33\" is not an IPv4 CIDR",
            ),
            (
                spec("n2", "10.2.0.5/24"),
                "subnet: 10.2.0.5/24 has host bits set; did you mean 10.2.0.0/24?",
            ),
            (
                spec("n2", "10.1.0.0/16"),
                "subnet: 10.1.0.0/16 overlaps network \"n1\" (10.1.0.0/24)",
            ),
            (spec("n2", "10.1.0.128/25"), "overlaps network \"n1\""),
            (
                spec("n2", "10.2.0.0/31"),
                "subnet: 10.2.0.0/31 is too small",
            ),
            (
                {
                    s.gateway = Some("10.9.0.1".into());
                    s.clone()
                },
                "gateway: 10.9.0.1 is outside the subnet 10.2.0.0/24",
            ),
            (
                {
                    s.gateway = Some("10.2.0.255".into());
                    s.clone()
                },
                "gateway: 10.2.0.255 is the network or broadcast address",
            ),
            (
                {
                    s.gateway = Some("nope".into());
                    s.clone()
                },
                "gateway: \"nope\" is not an IPv4 address",
            ),
            (
                {
                    s.gateway = None;
                    s.ip_range = Some("10.3.0.0/28".into());
                    s.clone()
                },
                "ip-range: 10.3.0.0/28 is not inside the subnet 10.2.0.0/24",
            ),
            (
                {
                    s.ip_range = None;
                    s.aux_addresses.insert("r".into(), "10.2.0.1".into());
                    s.clone()
                },
                "aux-address: r=10.2.0.1 is the gateway",
            ),
            (
                {
                    s.aux_addresses.insert("r".into(), "10.5.0.1".into());
                    s.clone()
                },
                "aux-address: 10.5.0.1 is outside the subnet",
            ),
        ];
        for (spec, expected) in cases {
            let message = refused(&spec, &existing);
            assert!(
                message.contains(expected),
                "{spec:?}: {message:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn full_spec_is_kept() {
        let mut s = spec("n2", "10.2.0.0/24");
        s.gateway = Some("10.2.0.254".into());
        s.ip_range = Some("10.2.0.128/25".into());
        s.aux_addresses.insert("router".into(), "10.2.0.2".into());
        s.labels.insert("team".into(), "a".into());
        let n = Network::from_spec(&s, &[], 2).expect("valid");
        assert_eq!(n.gateway, Ipv4Addr::new(10, 2, 0, 254));
        assert_eq!(n.ip_range, Some("10.2.0.128/25".parse().expect("net")));
        assert_eq!(n.aux_addresses["router"], Ipv4Addr::new(10, 2, 0, 2));
        assert_eq!(n.labels["team"], "a");
    }
}
