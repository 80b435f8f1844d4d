//! Masquerading's host side: the source ports it hands out and the
//! devices its flows leave by (their replies are taken there by the uplink
//! program), both fixed at start.
//!
//! The port range is kept disjoint from the host's own
//! `net.ipv4.ip_local_port_range`: nf_nat can keep any free port because
//! conntrack sees every host connection too; netd's datapath does not see
//! a host socket that connects later, so it hands out only ports the host
//! never picks by itself (Cilium reserves its NodePort range the same
//! way). The default is the larger stretch of 1024–65535 outside the
//! host's range: 1024–32767 with Linux's default 32768–60999.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// `--masquerade-ports MIN-MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl PortRange {
    pub fn ports(&self) -> u32 {
        u32::from(self.max) - u32::from(self.min) + 1
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// The larger stretch of 1024–65535 outside the host's ephemeral
    /// range `host`.
    pub fn default_beside(host: PortRange) -> Option<PortRange> {
        let below = (host.min > 1024).then(|| PortRange {
            min: 1024,
            max: host.min - 1,
        });
        let above = (host.max < 65535).then(|| PortRange {
            min: host.max + 1,
            max: 65535,
        });
        match (below, above) {
            (Some(b), Some(a)) if a.ports() > b.ports() => Some(a),
            (Some(b), _) => Some(b),
            (None, a) => a,
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("port range {s:?} is not MIN-MAX with 1 <= MIN <= MAX <= 65535");
        let (min, max) = s.split_once('-').ok_or_else(bad)?;
        let (min, max): (u16, u16) = (
            min.trim().parse().map_err(|_| bad())?,
            max.trim().parse().map_err(|_| bad())?,
        );
        if min == 0 || min > max {
            return Err(bad());
        }
        Ok(PortRange { min, max })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("reading the host's ephemeral ports ({path})")]
    ReadRange {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} reads {text:?}, not two port numbers")]
    BadRange { path: &'static str, text: String },
    #[error(
        "--masquerade-ports {ours} overlaps the host's own ephemeral ports {host} \
         (net.ipv4.ip_local_port_range): a host connection could take a masqueraded flow's \
         port; choose a range outside it, or narrow the host's"
    )]
    Overlap { ours: PortRange, host: PortRange },
    #[error(
        "the host's ephemeral ports {0} leave no room for masquerading's; give --masquerade-ports"
    )]
    NoRoom(PortRange),
}

const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The host's `ip_local_port_range`.
pub fn host_ephemeral_ports() -> Result<PortRange, EgressError> {
    let text =
        std::fs::read_to_string(LOCAL_PORT_RANGE).map_err(|source| EgressError::ReadRange {
            path: LOCAL_PORT_RANGE,
            source,
        })?;
    let bad = || EgressError::BadRange {
        path: LOCAL_PORT_RANGE,
        text: text.clone(),
    };
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(min)), Some(Ok(max))) if min <= max => Ok(PortRange { min, max }),
        _ => Err(bad()),
    }
}

/// The range masquerading uses: `wanted`, checked against the host's, or
/// the default beside it.
pub fn masquerade_ports(
    wanted: Option<PortRange>,
    host: PortRange,
) -> Result<PortRange, EgressError> {
    match wanted {
        Some(ours) if ours.overlaps(&host) => Err(EgressError::Overlap { ours, host }),
        Some(ours) => Ok(ours),
        None => PortRange::default_beside(host).ok_or(EgressError::NoRoom(host)),
    }
}

/// `--egress-device`: where masqueraded flows may leave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EgressDevices {
    /// The uplinks, and the devices of the host's IPv4 default routes.
    #[default]
    Auto,
    /// Nowhere: every network's packets to the world are routed by the
    /// host with their own addresses.
    None,
    Named(Vec<String>),
}

impl EgressDevices {
    pub fn from_flags(flags: &[String]) -> Self {
        match flags {
            [] => EgressDevices::Auto,
            [one] if one == "none" => EgressDevices::None,
            [one] if one == "auto" => EgressDevices::Auto,
            named => EgressDevices::Named(named.to_vec()),
        }
    }
}

/// The devices to take replies on: the named ones, or the uplinks and the
/// default routes' devices, each once, uplinks first.
pub fn devices(
    wanted: &EgressDevices,
    uplinks: &[String],
    default_routes: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |name: &String| {
        if !out.contains(name) {
            out.push(name.clone());
        }
    };
    match wanted {
        EgressDevices::None => {}
        EgressDevices::Named(names) => names.iter().for_each(&mut add),
        EgressDevices::Auto => uplinks.iter().chain(default_routes).for_each(&mut add),
    }
    out
}

/// Masquerading's side of this host, fixed at start; `netd status`
/// shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEgress {
    /// The devices masqueraded flows leave by.
    pub devices: Vec<String>,
    /// The source ports handed out.
    pub ports: Option<PortRange>,
    /// CIDRs every network reaches unmasqueraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_masquerade: Vec<ipnet::Ipv4Net>,
    /// The largest endpoint MTU a network without VXLAN may ask for: the
    /// smallest of the devices' (None: no device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mtu: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> PortRange {
        s.parse().expect("range")
    }

    #[test]
    fn the_default_range_is_the_larger_stretch_beside_the_hosts() {
        assert_eq!(
            PortRange::default_beside(range("32768-60999")),
            Some(range("1024-32767"))
        );
        assert_eq!(
            PortRange::default_beside(range("1024-40000")),
            Some(range("40001-65535"))
        );
        assert_eq!(PortRange::default_beside(range("1024-65535")), None);
    }

    #[test]
    fn a_range_overlapping_the_hosts_is_refused_with_both() {
        let e = masquerade_ports(Some(range("60000-61000")), range("32768-60999"))
            .expect_err("overlap");
        let text = e.to_string();
        assert!(
            text.contains("60000-61000") && text.contains("32768-60999"),
            "{text}"
        );
        assert_eq!(
            masquerade_ports(Some(range("61000-61009")), range("32768-60999")).ok(),
            Some(range("61000-61009"))
        );
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in ["", "5", "0-10", "10-5", "1-70000", "a-b"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn devices_are_the_uplinks_and_default_routes_once_unless_named() {
        let up = vec!["uplink0".to_string()];
        let routes = vec!["eth0".to_string(), "uplink0".to_string()];
        assert_eq!(
            devices(&EgressDevices::Auto, &up, &routes),
            vec!["uplink0".to_string(), "eth0".to_string()]
        );
        assert!(devices(&EgressDevices::None, &up, &routes).is_empty());
        assert_eq!(
            devices(&EgressDevices::from_flags(&["out0".into()]), &up, &routes),
            vec!["out0".to_string()]
        );
        assert_eq!(
            EgressDevices::from_flags(&["none".into()]),
            EgressDevices::None
        );
    }
}
