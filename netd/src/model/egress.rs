//! A network's way out of the host, with Docker's bridge options: masquerade
//! (on by default), internal, the destinations reached unmasqueraded, the
//! endpoints' MTU and the address to masquerade to.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::ModelError;

/// At most this many unmasqueraded CIDRs per network.
pub const MAX_NO_MASQUERADE: usize = 64;

/// The smallest MTU IPv4 allows a link (RFC 791).
pub const MIN_MTU: u32 = 68;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Egress {
    /// Nothing leaves the host (Docker's `--internal`); endpoints still
    /// reach each other, services and this host itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Packets to the world leave with the uplink's address (Docker's
    /// `com.docker.network.bridge.enable_ip_masquerade`, on by default);
    /// off, the host routes them with the endpoint's own.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub masquerade: bool,
    /// Destinations reached with the endpoint's own address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_masquerade: Vec<Ipv4Net>,
    /// The endpoints' MTU (Docker's `com.docker.network.driver.mtu`);
    /// None: netd's default for the network's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The address to masquerade to, where the host has several; None:
    /// the uplink's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_ip: Option<Ipv4Addr>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for Egress {
    fn default() -> Self {
        Egress {
            internal: false,
            masquerade: true,
            no_masquerade: Vec::new(),
            mtu: None,
            egress_ip: None,
        }
    }
}

/// What a user asks for, as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressSpec<'a> {
    pub internal: bool,
    pub masquerade: Option<bool>,
    pub no_masquerade: &'a [String],
    pub mtu: Option<u32>,
    pub egress_ip: Option<&'a str>,
}

impl Egress {
    pub fn from_spec(spec: &EgressSpec<'_>) -> Result<Self, ModelError> {
        if spec.internal {
            let pointless = if spec.masquerade == Some(true) {
                Some("masquerade")
            } else if spec.egress_ip.is_some() {
                Some("egress-ip")
            } else if !spec.no_masquerade.is_empty() {
                Some("no-masquerade")
            } else {
                None
            };
            if let Some(field) = pointless {
                return Err(ModelError::invalid(
                    field,
                    "an internal network has no way out: nothing of it leaves the host",
                ));
            }
        }
        let masquerade = !spec.internal && spec.masquerade.unwrap_or(true);
        if !masquerade && !spec.internal && spec.egress_ip.is_some() {
            return Err(ModelError::invalid(
                "egress-ip",
                "the network does not masquerade (--masquerade=false): its endpoints leave with their own addresses",
            ));
        }
        if spec.no_masquerade.len() > MAX_NO_MASQUERADE {
            return Err(ModelError::invalid(
                "no-masquerade",
                format!("at most {MAX_NO_MASQUERADE} CIDRs"),
            ));
        }
        let no_masquerade = spec
            .no_masquerade
            .iter()
            .map(|text| {
                let net: Ipv4Net = text.trim().parse().map_err(|_| {
                    ModelError::invalid(
                        "no-masquerade",
                        format!("{text:?} is not an IPv4 CIDR such as 10.0.0.0/8"),
                    )
                })?;
                if net.addr() != net.network() {
                    return Err(ModelError::invalid(
                        "no-masquerade",
                        format!("{text} has host bits set; did you mean {}?", net.trunc()),
                    ));
                }
                Ok(net)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(mtu) = spec.mtu {
            if !(MIN_MTU..=65535).contains(&mtu) {
                return Err(ModelError::invalid(
                    "mtu",
                    format!("{mtu} is outside {MIN_MTU}..65535"),
                ));
            }
        }
        let egress_ip = spec
            .egress_ip
            .map(|text| {
                text.trim().parse::<Ipv4Addr>().map_err(|_| {
                    ModelError::invalid("egress-ip", format!("{text:?} is not an IPv4 address"))
                })
            })
            .transpose()?;
        Ok(Egress {
            internal: spec.internal,
            masquerade,
            no_masquerade,
            mtu: spec.mtu,
            egress_ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_is_the_default_and_internal_has_no_way_out() {
        let e = Egress::from_spec(&EgressSpec::default()).expect("default");
        assert_eq!(e, Egress::default());
        assert!(e.masquerade && !e.internal);
        let internal = Egress::from_spec(&EgressSpec {
            internal: true,
            ..EgressSpec::default()
        })
        .expect("internal");
        assert!(internal.internal && !internal.masquerade);
    }

    #[test]
    fn contradictions_and_bad_values_name_their_field() {
        let cidrs = ["10.0.0.0/8".to_string()];
        for (spec, field) in [
            (
                EgressSpec {
                    internal: true,
                    masquerade: Some(true),
                    ..EgressSpec::default()
                },
                "masquerade",
            ),
            (
                EgressSpec {
                    internal: true,
                    no_masquerade: &cidrs,
                    ..EgressSpec::default()
                },
                "no-masquerade",
            ),
            (
                EgressSpec {
                    masquerade: Some(false),
                    egress_ip: Some("192.0.2.1"),
                    ..EgressSpec::default()
                },
                "egress-ip",
            ),
            (
                EgressSpec {
                    mtu: Some(40),
                    ..EgressSpec::default()
                },
                "mtu",
            ),
            (
                EgressSpec {
                    egress_ip: Some("nope"),
                    ..EgressSpec::default()
                },
                "egress-ip",
            ),
        ] {
            let e = Egress::from_spec(&spec).expect_err(field).to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        let host_bits = ["10.0.0.1/8".to_string()];
        let e = Egress::from_spec(&EgressSpec {
            no_masquerade: &host_bits,
            ..EgressSpec::default()
        })
        .expect_err("host bits")
        .to_string();
        assert!(e.contains("10.0.0.0/8"), "{e}");
    }

    #[test]
    fn a_network_stored_before_egress_options_masquerades() {
        let e: Egress = serde_json::from_str("{}").expect("empty");
        assert_eq!(e, Egress::default());
        assert_eq!(serde_json::to_string(&e).expect("json"), "{}");
    }
}
