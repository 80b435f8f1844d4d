//! Policies: which endpoints a policy selects, and the ordered ingress and
//! egress rules it gives them. Pure: the refusals are unit-tested here;
//! `dataplane::policy_maps` compiles them into map entries.
//!
//! Semantics (as Kubernetes NetworkPolicy, plus deny and audit):
//! - An endpoint no policy selects in a direction is open in it.
//! - A policy with `ingress` (even empty) makes its endpoints default-deny
//!   for ingress: only what a rule allows passes. Likewise `egress`.
//! - Deny wins over audit, audit over allow, whatever the rules' order or
//!   policy; a rule's ports and peers only decide whether it matches.
//! - An audit (`log`) rule counts what it matches as "would drop" and lets
//!   it through.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use netd_common::policy::{ACTION_ALLOW, ACTION_AUDIT, ACTION_DENY, MAX_RULES_PER_POLICY};
use serde::{Deserialize, Serialize};

use super::{check_name, new_id, parse_selector, ModelError, Network, Service};

/// `netd policy create` / `POST /policies`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicySpec {
    /// Optional in `netd policy create NAME -f FILE`, which gives it.
    #[serde(default)]
    pub name: String,
    /// Only endpoints of this network (name or id); all of them when
    /// there is no selector.
    #[serde(default)]
    pub network: Option<String>,
    /// `key=value[,key=value...]`: endpoints with all these labels.
    #[serde(default)]
    pub selector: Option<String>,
    /// Present (even empty): the selected endpoints' ingress is
    /// default-deny, open only to these rules.
    #[serde(default)]
    pub ingress: Option<Vec<RuleSpec>>,
    #[serde(default)]
    pub egress: Option<Vec<RuleSpec>>,
}

/// One rule as given: `netd policy create --ingress 'allow from app=web tcp/8080'`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleSpec {
    pub action: Action,
    /// None: any peer.
    #[serde(default)]
    pub peers: Vec<PeerSpec>,
    #[serde(default)]
    pub proto: Proto,
    /// `PORT` or `LOW-HIGH`; none: every port. TCP and UDP only.
    #[serde(default)]
    pub ports: Vec<String>,
    /// ICMP only: the type, and optionally the code.
    #[serde(default)]
    pub icmp_type: Option<u8>,
    #[serde(default)]
    pub icmp_code: Option<u8>,
}

/// One peer: exactly one of the fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeerSpec {
    /// `key=value[,...]`: endpoints with these labels.
    #[serde(default)]
    pub selector: Option<String>,
    /// Every endpoint of a network.
    #[serde(default)]
    pub network: Option<String>,
    /// The backends of a service.
    #[serde(default)]
    pub service: Option<String>,
    /// Addresses outside the cluster's endpoints.
    #[serde(default)]
    pub cidr: Option<String>,
    /// Prefixes of `cidr` left out.
    #[serde(default)]
    pub except: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    /// Counts what it would drop, drops nothing.
    Log,
}

impl Action {
    pub fn code(self) -> u8 {
        match self {
            Action::Allow => ACTION_ALLOW,
            Action::Deny => ACTION_DENY,
            Action::Log => ACTION_AUDIT,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    /// The IP protocol number; none for any.
    pub fn number(self) -> Option<u8> {
        match self {
            Proto::Any => None,
            Proto::Tcp => Some(6),
            Proto::Udp => Some(17),
            Proto::Icmp => Some(1),
        }
    }
}

/// A stored policy: names resolved to ids, everything checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Policy {
    pub id: String,
    pub name: String,
    /// Store-allocated, unique: the high half of its rules' ids.
    pub index: u32,
    /// The network's id.
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub ingress: Option<Vec<Rule>>,
    #[serde(default)]
    pub egress: Option<Vec<Rule>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Rule {
    pub action: Action,
    /// Empty: any peer.
    pub peers: Vec<Peer>,
    pub proto: Proto,
    /// Inclusive ranges; empty: every port (or every ICMP message).
    pub ports: Vec<(u16, u16)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<(u8, Option<u8>)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    Labels(BTreeMap<String, String>),
    /// A network's id.
    Network(String),
    /// A service's id.
    Service(String),
    Cidr {
        net: Ipv4Net,
        except: Vec<Ipv4Net>,
    },
}

impl Policy {
    pub fn from_spec(
        spec: &PolicySpec,
        networks: &[Network],
        services: &[Service],
        index: u32,
    ) -> Result<Self, ModelError> {
        check_name(&spec.name)?;
        let network = spec
            .network
            .as_deref()
            .map(|n| network_id(n, networks, "network"))
            .transpose()?;
        let selector = match spec.selector.as_deref() {
            Some(text) => parse_selector(text)?,
            None => BTreeMap::new(),
        };
        if spec.ingress.is_none() && spec.egress.is_none() {
            return Err(ModelError::invalid(
                "ingress",
                "a policy needs ingress or egress rules (an empty list denies that direction)",
            ));
        }
        let count =
            spec.ingress.as_ref().map_or(0, Vec::len) + spec.egress.as_ref().map_or(0, Vec::len);
        if count >= MAX_RULES_PER_POLICY {
            return Err(ModelError::invalid(
                "ingress",
                format!(
                    "{count} rules; a policy holds at most {}",
                    MAX_RULES_PER_POLICY - 1
                ),
            ));
        }
        let rules = |field: &'static str, list: &Option<Vec<RuleSpec>>| {
            list.as_ref()
                .map(|list| {
                    list.iter()
                        .enumerate()
                        .map(|(i, r)| {
                            Rule::from_spec(r, networks, services).map_err(|e| match e {
                                ModelError::Invalid { reason, .. } => {
                                    ModelError::invalid(field, format!("rule {}: {reason}", i + 1))
                                }
                                other => other,
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()
        };
        Ok(Policy {
            id: new_id(),
            name: spec.name.clone(),
            index,
            network,
            selector,
            ingress: rules("ingress", &spec.ingress)?,
            egress: rules("egress", &spec.egress)?,
        })
    }

    /// Whether it selects an endpoint with `labels` on `network` (an id).
    pub fn selects(&self, network: &str, labels: &BTreeMap<String, String>) -> bool {
        self.network.as_deref().is_none_or(|n| n == network)
            && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Its rules with their positions: ingress first, then egress.
    pub fn rules(&self) -> impl Iterator<Item = (u32, Direction, &Rule)> {
        let ingress = self
            .ingress
            .iter()
            .flatten()
            .map(|r| (Direction::Ingress, r));
        let egress = self.egress.iter().flatten().map(|r| (Direction::Egress, r));
        ingress
            .chain(egress)
            .enumerate()
            .map(|(i, (d, r))| (i as u32, d, r))
    }
}

impl Policy {
    /// How many rules it has each way.
    pub fn rule_counts(&self) -> RuleCounts {
        RuleCounts {
            ingress: self.ingress.as_ref().map_or(0, Vec::len),
            egress: self.egress.as_ref().map_or(0, Vec::len),
        }
    }

    /// Where rule `position` is: its direction, and its number there from 1.
    pub fn rule_label(&self, position: u32) -> Option<(&'static str, usize)> {
        self.rule_counts().label(position)
    }
}

/// A policy's rule counts: rule positions number its ingress rules, then
/// its egress ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounts {
    pub ingress: usize,
    pub egress: usize,
}

impl RuleCounts {
    /// Where rule `position` is: its direction, and its number there from 1.
    pub fn label(self, position: u32) -> Option<(&'static str, usize)> {
        let p = position as usize;
        if p < self.ingress {
            Some(("ingress", p + 1))
        } else if p < self.ingress + self.egress {
            Some(("egress", p - self.ingress + 1))
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Rule {
    fn from_spec(
        spec: &RuleSpec,
        networks: &[Network],
        services: &[Service],
    ) -> Result<Self, ModelError> {
        let mut ports = Vec::new();
        for text in &spec.ports {
            if !matches!(spec.proto, Proto::Tcp | Proto::Udp) {
                return Err(ModelError::invalid("ports", "ports need proto tcp or udp"));
            }
            ports.push(port_range(text)?);
        }
        let icmp = match (spec.icmp_type, spec.icmp_code) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ModelError::invalid(
                    "icmp-code",
                    "an ICMP code needs an ICMP type",
                ))
            }
            (Some(t), code) if spec.proto == Proto::Icmp => Some((t, code)),
            (Some(_), _) => {
                return Err(ModelError::invalid(
                    "icmp-type",
                    "an ICMP type needs proto icmp",
                ))
            }
        };
        let peers = spec
            .peers
            .iter()
            .map(|p| Peer::from_spec(p, networks, services))
            .collect::<Result<_, _>>()?;
        Ok(Rule {
            action: spec.action,
            peers,
            proto: spec.proto,
            ports,
            icmp,
        })
    }
}

impl Peer {
    fn from_spec(
        spec: &PeerSpec,
        networks: &[Network],
        services: &[Service],
    ) -> Result<Self, ModelError> {
        let given = [
            spec.selector.is_some(),
            spec.network.is_some(),
            spec.service.is_some(),
            spec.cidr.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ModelError::invalid(
                "peers",
                "each peer is one of selector, network, service or cidr",
            ));
        }
        if !spec.except.is_empty() && spec.cidr.is_none() {
            return Err(ModelError::invalid("except", "except goes with a cidr"));
        }
        if let Some(text) = &spec.selector {
            return Ok(Peer::Labels(parse_selector(text)?));
        }
        if let Some(name) = &spec.network {
            return Ok(Peer::Network(network_id(name, networks, "peers")?));
        }
        if let Some(name) = &spec.service {
            return services
                .iter()
                .find(|s| &s.name == name || &s.id == name)
                .map(|s| Peer::Service(s.id.clone()))
                .ok_or_else(|| ModelError::invalid("peers", format!("no service named {name:?}")));
        }
        let net = cidr(spec.cidr.as_deref().unwrap_or_default())?;
        let except = spec
            .except
            .iter()
            .map(|text| {
                let e = cidr(text)?;
                if !net.contains(&e) {
                    return Err(ModelError::invalid(
                        "except",
                        format!("{e} is not inside {net}"),
                    ));
                }
                Ok(e)
            })
            .collect::<Result<_, _>>()?;
        Ok(Peer::Cidr { net, except })
    }
}

fn network_id(name: &str, networks: &[Network], field: &'static str) -> Result<String, ModelError> {
    networks
        .iter()
        .find(|n| n.name == name || n.id == name)
        .map(|n| n.id.clone())
        .ok_or_else(|| ModelError::invalid(field, format!("no network named {name:?}")))
}

fn cidr(text: &str) -> Result<Ipv4Net, ModelError> {
    let net: Ipv4Net = text
        .parse()
        .or_else(|_| text.parse::<Ipv4Addr>().map(Ipv4Net::from))
        .map_err(|_| ModelError::invalid("cidr", format!("{text:?} is not an IPv4 prefix")))?;
    if net != net.trunc() {
        return Err(ModelError::invalid(
            "cidr",
            format!("{text} has host bits set (did you mean {}?)", net.trunc()),
        ));
    }
    Ok(net)
}

fn port_range(text: &str) -> Result<(u16, u16), ModelError> {
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ModelError::invalid("ports", format!("{text:?}: ports are 1 to 65535")))
    };
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => (port(text)?, port(text)?),
    };
    if lo > hi {
        return Err(ModelError::invalid(
            "ports",
            format!("{text:?}: the range runs backwards"),
        ));
    }
    Ok((lo, hi))
}

/// The CLI's form of a rule: `ACTION [from|to PEER]... [PROTO[/PORTS]]`,
/// where PEER is `key=value[,...]`, `network:NAME`, `service:NAME` or
/// `cidr:PREFIX[,except:PREFIX...]`, and PORTS `80,8000-8100` (TCP, UDP)
/// or `TYPE[:CODE]` (ICMP). E.g. `allow from tier=web tcp/8080`,
/// `deny to cidr:0.0.0.0/0,except:10.0.0.0/8`, `allow icmp/8`.
pub fn parse_rule(text: &str) -> Result<RuleSpec, ModelError> {
    let bad = |reason: String| ModelError::invalid("rule", format!("{text:?}: {reason}"));
    let mut words = text.split_whitespace();
    let action = match words.next() {
        Some("allow") => Action::Allow,
        Some("deny") => Action::Deny,
        Some("log") | Some("audit") => Action::Log,
        other => {
            return Err(bad(format!(
                "starts with {other:?}; a rule starts with allow, deny or log"
            )))
        }
    };
    let mut rule = RuleSpec {
        action,
        ..RuleSpec::default()
    };
    let mut proto_given = false;
    while let Some(word) = words.next() {
        if word == "from" || word == "to" {
            let peer = words
                .next()
                .ok_or_else(|| bad(format!("{word} needs a peer")))?;
            rule.peers
                .push(peer_text(peer).map_err(|e| bad(e.to_string()))?);
            continue;
        }
        if proto_given {
            return Err(bad(format!("{word:?} after the protocol")));
        }
        proto_given = true;
        let (proto, ports) = match word.split_once('/') {
            Some((p, rest)) => (p, Some(rest)),
            None => (word, None),
        };
        rule.proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "icmp" => Proto::Icmp,
            "any" => Proto::Any,
            other => {
                return Err(bad(format!(
                    "{other:?} is no protocol (tcp, udp, icmp, any)"
                )))
            }
        };
        match (rule.proto, ports) {
            (_, None) => {}
            (Proto::Icmp, Some(t)) => {
                let (kind, code) = match t.split_once(':') {
                    Some((k, c)) => (k, Some(c)),
                    None => (t, None),
                };
                let num = |s: &str| {
                    s.parse::<u8>()
                        .map_err(|_| bad(format!("{s:?} is no ICMP type or code")))
                };
                rule.icmp_type = Some(num(kind)?);
                rule.icmp_code = code.map(num).transpose()?;
            }
            (Proto::Any, Some(_)) => return Err(bad("ports need tcp or udp".into())),
            (_, Some(list)) => rule.ports = list.split(',').map(str::to_string).collect(),
        }
    }
    Ok(rule)
}

fn peer_text(text: &str) -> Result<PeerSpec, ModelError> {
    if let Some(name) = text.strip_prefix("network:") {
        return Ok(PeerSpec {
            network: Some(name.into()),
            ..PeerSpec::default()
        });
    }
    if let Some(name) = text.strip_prefix("service:") {
        return Ok(PeerSpec {
            service: Some(name.into()),
            ..PeerSpec::default()
        });
    }
    if let Some(rest) = text.strip_prefix("cidr:") {
        let mut parts = rest.split(',');
        let cidr = parts.next().unwrap_or_default().to_string();
        let except = parts
            .map(|p| {
                p.strip_prefix("except:")
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ModelError::invalid(
                            "peers",
                            format!("{p:?}: after a cidr, only except:PREFIX"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        return Ok(PeerSpec {
            cidr: Some(cidr),
            except,
            ..PeerSpec::default()
        });
    }
    if text.contains('=') {
        return Ok(PeerSpec {
            selector: Some(text.into()),
            ..PeerSpec::default()
        });
    }
    Err(ModelError::invalid(
        "peers",
        format!("{text:?} is no peer (key=value, network:NAME, service:NAME, cidr:PREFIX)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ingress: Vec<RuleSpec>) -> PolicySpec {
        PolicySpec {
            name: "p".into(),
            selector: Some("tier=api".into()),
            ingress: Some(ingress),
            ..PolicySpec::default()
        }
    }

    #[test]
    fn the_cli_form_reads_every_kind_of_rule() {
        let r = parse_rule("allow from tier=web tcp/8080,9000-9010").unwrap();
        assert_eq!(r.action, Action::Allow);
        assert_eq!(r.peers[0].selector.as_deref(), Some("tier=web"));
        assert_eq!(r.proto, Proto::Tcp);
        assert_eq!(r.ports, vec!["8080", "9000-9010"]);
        let r = parse_rule("deny to cidr:10.0.0.0/8,except:10.1.0.0/16 udp").unwrap();
        assert_eq!(r.peers[0].cidr.as_deref(), Some("10.0.0.0/8"));
        assert_eq!(r.peers[0].except, vec!["10.1.0.0/16"]);
        let r = parse_rule("log icmp/3:4").unwrap();
        assert_eq!(
            (r.action, r.icmp_type, r.icmp_code),
            (Action::Log, Some(3), Some(4))
        );
        let r = parse_rule("allow from network:n1 from service:db").unwrap();
        assert_eq!(r.peers.len(), 2);
        assert_eq!(r.proto, Proto::Any);
    }

    #[test]
    fn bad_rules_name_what_is_wrong() {
        for (text, says) in [
            ("permit tcp", "allow, deny or log"),
            ("allow sctp", "no protocol"),
            ("allow from", "needs a peer"),
            ("allow from nobody tcp", "is no peer"),
            ("allow any/80", "need tcp or udp"),
            ("allow tcp udp", "after the protocol"),
        ] {
            let e = parse_rule(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_policy_is_checked_rule_by_rule() {
        let ok = Policy::from_spec(
            &spec(vec![parse_rule("allow from tier=web tcp/8080").unwrap()]),
            &[],
            &[],
            3,
        )
        .unwrap();
        assert_eq!(ok.ingress.as_ref().unwrap()[0].ports, vec![(8080, 8080)]);
        assert!(ok.egress.is_none());
        for (rule, says) in [
            ("allow tcp/0", "rule 1: \"0\": ports are 1 to 65535"),
            ("allow tcp/90-80", "runs backwards"),
            ("allow from cidr:10.0.0.1/8", "host bits set"),
            (
                "allow from cidr:10.0.0.0/8,except:11.0.0.0/16",
                "not inside",
            ),
            ("allow from network:nope", "no network named"),
            ("allow from service:nope", "no service named"),
        ] {
            let e = Policy::from_spec(&spec(vec![parse_rule(rule).unwrap()]), &[], &[], 1)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{rule}: {e}");
            assert!(
                e.starts_with("ingress: rule 1") || e.contains("rule 1"),
                "{rule}: {e}"
            );
        }
        let none = PolicySpec {
            name: "p".into(),
            ..PolicySpec::default()
        };
        assert!(Policy::from_spec(&none, &[], &[], 1)
            .unwrap_err()
            .to_string()
            .contains("needs ingress or egress"));
    }

    #[test]
    fn selection_needs_every_label_and_the_network() {
        let p = Policy::from_spec(&spec(vec![]), &[], &[], 1).unwrap();
        let mut labels = BTreeMap::from([("tier".to_string(), "api".to_string())]);
        assert!(p.selects("net1", &labels));
        labels.insert("tier".into(), "web".into());
        assert!(!p.selects("net1", &labels));
        let scoped = Policy {
            network: Some("net2".into()),
            ..p
        };
        assert!(!scoped.selects("net1", &BTreeMap::from([("tier".into(), "api".into())])));
    }

    #[test]
    fn rule_positions_run_through_ingress_then_egress() {
        let mut s = spec(vec![RuleSpec::default(), RuleSpec::default()]);
        s.egress = Some(vec![RuleSpec::default()]);
        let p = Policy::from_spec(&s, &[], &[], 1).unwrap();
        let order: Vec<(u32, Direction)> = p.rules().map(|(i, d, _)| (i, d)).collect();
        assert_eq!(
            order,
            vec![
                (0, Direction::Ingress),
                (1, Direction::Ingress),
                (2, Direction::Egress)
            ]
        );
    }
}
