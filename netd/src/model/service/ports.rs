//! A service's ports: `PORT[:TARGET][/PROTO]` on its VIP, and the ports
//! it publishes on every host (Docker's two `--publish` syntaxes).

use std::{fmt, str::FromStr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{Mode, MAX_PORTS_PER_SERVICE};
use crate::model::ModelError;

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
/// `target_port`. With `allow` ranges, only sources in them open flows.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PublishedPort {
    pub protocol: Protocol,
    pub published: u16,
    pub target_port: u16,
    #[serde(default)]
    pub mode: PublishMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Ipv4Net>,
}

/// How many source ranges one published port takes.
pub const MAX_ALLOW_PER_PORT: usize = 64;

/// A source range as `--publish ...,allow=` takes it: a CIDR, or an
/// address (a /32). Host bits are cleared.
pub fn parse_allow(text: &str) -> Result<Ipv4Net, String> {
    let net = if text.contains('/') {
        text.parse::<Ipv4Net>().map_err(|_| ())
    } else {
        text.parse::<std::net::Ipv4Addr>()
            .map(Ipv4Net::from)
            .map_err(|_| ())
    };
    net.map(|n| n.trunc())
        .map_err(|()| format!("allow={text:?} is not an IPv4 address or CIDR (e.g. 10.0.0.0/8)"))
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
        for net in &self.allow {
            write!(f, ",allow={net}")?;
        }
        Ok(())
    }
}

/// Docker's two ways of writing it: `PUBLISHED[:TARGET][/PROTO]`, or
/// `published=P,target=T[,protocol=tcp|udp][,mode=ingress|host]`; either
/// followed by `,allow=CIDR` (repeatable) for the sources it takes.
impl FromStr for PublishedPort {
    type Err = ModelError;

    fn from_str(text: &str) -> Result<Self, ModelError> {
        let bad = |why: &str| {
            ModelError::invalid(
                "publish",
                format!(
                    "{text:?} {why} (PUBLISHED[:TARGET][/tcp|/udp], or \
                     published=P,target=T[,protocol=tcp|udp][,mode=ingress|host]; \
                     then ,allow=CIDR for each source range it takes)"
                ),
            )
        };
        let number = |t: &str| match t.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad("has a port that is not 1 to 65535")),
            Ok(p) => Ok(p),
        };
        let mut parts = text.split(',').peekable();
        let (mut published, mut target, mut protocol) = (None, None, Protocol::Tcp);
        if let Some(short) = parts.next_if(|p| !p.contains('=')) {
            let short = short
                .parse::<ServicePort>()
                .map_err(|_| bad("is not a port mapping"))?;
            (published, target, protocol) =
                (Some(short.port), Some(short.target_port), short.protocol);
        }
        let short = published.is_some();
        let (mut mode, mut allow) = (PublishMode::Ingress, Vec::new());
        for part in parts {
            match part.split_once('=') {
                Some(("published", v)) if !short => published = Some(number(v)?),
                Some(("target", v)) if !short => target = Some(number(v)?),
                Some(("protocol", "tcp")) if !short => protocol = Protocol::Tcp,
                Some(("protocol", "udp")) if !short => protocol = Protocol::Udp,
                Some(("mode", "ingress")) => mode = PublishMode::Ingress,
                Some(("mode", "host")) => mode = PublishMode::Host,
                Some(("allow", v)) => allow.push(parse_allow(v).map_err(|why| bad(&why))?),
                _ => return Err(bad(&format!("has {part:?}, which is not understood"))),
            }
        }
        let published = published.ok_or_else(|| bad("has no published="))?;
        if allow.len() > MAX_ALLOW_PER_PORT {
            return Err(bad(&format!(
                "has {} source ranges; a port takes at most {MAX_ALLOW_PER_PORT}",
                allow.len()
            )));
        }
        allow.sort();
        allow.dedup();
        Ok(PublishedPort {
            protocol,
            published,
            target_port: target.unwrap_or(published),
            mode,
            allow,
        })
    }
}

pub(super) fn parse_ports(texts: &[String]) -> Result<Vec<ServicePort>, ModelError> {
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

pub(super) fn parse_published(
    texts: &[String],
    mode: Mode,
) -> Result<Vec<PublishedPort>, ModelError> {
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
