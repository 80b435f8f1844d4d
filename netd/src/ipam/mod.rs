//! IPv4 address management for one network: which addresses an endpoint
//! may get. Pure, so a Docker IPAM driver can call the same rules later.

use std::{collections::BTreeSet, net::Ipv4Addr};

use crate::model::Network;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("address {ip} is outside the subnet {subnet} of network {network:?}")]
    OutsidePool {
        ip: Ipv4Addr,
        subnet: String,
        network: String,
    },
    #[error("address {ip} is reserved in network {network:?} ({what})")]
    Reserved {
        ip: Ipv4Addr,
        network: String,
        what: String,
    },
    #[error("address {ip} is already in use in network {network:?}")]
    Taken { ip: Ipv4Addr, network: String },
    #[error("network {network:?} has no free address left in {pool} ({in_use} in use)")]
    Exhausted {
        network: String,
        pool: String,
        in_use: usize,
    },
}

/// Why `ip` can never be handed out in `network`, if it cannot.
fn reserved(network: &Network, ip: Ipv4Addr) -> Option<String> {
    if ip == network.subnet.network() {
        return Some("network address".into());
    }
    if ip == network.subnet.broadcast() {
        return Some("broadcast address".into());
    }
    if ip == network.gateway {
        return Some("gateway".into());
    }
    network
        .aux_addresses
        .iter()
        .find(|(_, aux)| **aux == ip)
        .map(|(name, _)| format!("aux-address {name}"))
}

/// An address for a new endpoint of `network`, given the addresses its
/// endpoints already hold. A requested address must be in the subnet,
/// not reserved and free; otherwise the lowest free address of the
/// ip-range (or the subnet) is chosen.
pub fn allocate(
    network: &Network,
    taken: &BTreeSet<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, IpamError> {
    if let Some(ip) = requested {
        if !network.subnet.contains(&ip) {
            return Err(IpamError::OutsidePool {
                ip,
                subnet: network.subnet.to_string(),
                network: network.name.clone(),
            });
        }
        if let Some(what) = reserved(network, ip) {
            return Err(IpamError::Reserved {
                ip,
                network: network.name.clone(),
                what,
            });
        }
        if taken.contains(&ip) {
            return Err(IpamError::Taken {
                ip,
                network: network.name.clone(),
            });
        }
        return Ok(ip);
    }
    let pool = network.ip_range.unwrap_or(network.subnet);
    pool.hosts()
        .chain([pool.network(), pool.broadcast()])
        .find(|ip| {
            network.subnet.contains(ip) && reserved(network, *ip).is_none() && !taken.contains(ip)
        })
        .ok_or_else(|| IpamError::Exhausted {
            network: network.name.clone(),
            pool: pool.to_string(),
            in_use: taken.len(),
        })
}

/// The first free address after `after` (or from the start), for a batch
/// that hands out many at once: each search starts where the last ended
/// instead of at the start of the pool. Wraps around once.
pub fn allocate_after(
    network: &Network,
    taken: &BTreeSet<Ipv4Addr>,
    after: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, IpamError> {
    let pool = network.ip_range.unwrap_or(network.subnet);
    let (first, last) = (u32::from(pool.network()), u32::from(pool.broadcast()));
    let start = after
        .map_or(first, |a| u32::from(a).saturating_add(1))
        .max(first);
    let free = |n: u32| {
        let ip = Ipv4Addr::from(n);
        (network.subnet.contains(&ip) && reserved(network, ip).is_none() && !taken.contains(&ip))
            .then_some(ip)
    };
    (start..=last)
        .find_map(free)
        .map_or_else(|| allocate(network, taken, None), Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NetworkSpec;

    fn network(subnet: &str, range: Option<&str>, aux: &[(&str, &str)]) -> Network {
        let spec = NetworkSpec {
            name: "n1".into(),
            subnet: subnet.into(),
            ip_range: range.map(Into::into),
            aux_addresses: aux
                .iter()
                .map(|(n, ip)| (n.to_string(), ip.to_string()))
                .collect(),
            ..Default::default()
        };
        Network::from_spec(&spec, &[], 1).expect("valid network")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_batch_continues_where_the_last_address_was_found() {
        let n = network("10.1.0.0/24", None, &[]);
        let mut taken: BTreeSet<Ipv4Addr> = [ip("10.1.0.2"), ip("10.1.0.4")].into();
        assert_eq!(allocate_after(&n, &taken, None), Ok(ip("10.1.0.3")));
        assert_eq!(
            allocate_after(&n, &taken, Some(ip("10.1.0.3"))),
            Ok(ip("10.1.0.5"))
        );
        // Past the end it starts over from the start of the pool.
        taken.remove(&ip("10.1.0.2"));
        assert_eq!(
            allocate_after(&n, &taken, Some(ip("10.1.0.254"))),
            Ok(ip("10.1.0.2"))
        );
    }

    #[test]
    fn skips_network_gateway_and_aux_addresses() {
        let n = network("10.1.0.0/24", None, &[("r", "10.1.0.2")]);
        let mut taken = BTreeSet::new();
        let first = allocate(&n, &taken, None).expect("free");
        assert_eq!(first, ip("10.1.0.3"));
        taken.insert(first);
        assert_eq!(allocate(&n, &taken, None), Ok(ip("10.1.0.4")));
    }

    #[test]
    fn allocates_inside_the_ip_range_only() {
        let n = network("10.1.0.0/24", Some("10.1.0.128/30"), &[]);
        let mut taken = BTreeSet::new();
        // A /30 range: its network and broadcast are ordinary hosts of the /24.
        for expected in ["10.1.0.129", "10.1.0.130", "10.1.0.128", "10.1.0.131"] {
            let got = allocate(&n, &taken, None).expect("free");
            assert_eq!(got, ip(expected));
            taken.insert(got);
        }
        let e = allocate(&n, &taken, None).expect_err("exhausted");
        assert_eq!(
            e.to_string(),
            "network \"n1\" has no free address left in 10.1.0.128/30 (4 in use)"
        );
    }

    #[test]
    fn released_addresses_are_reused() {
        let n = network("10.1.0.0/29", None, &[]);
        let mut taken: BTreeSet<Ipv4Addr> = ["10.1.0.2", "10.1.0.3", "10.1.0.4"].map(ip).into();
        taken.remove(&ip("10.1.0.3"));
        assert_eq!(allocate(&n, &taken, None), Ok(ip("10.1.0.3")));
    }

    #[test]
    fn static_requests_are_honoured_or_refused_with_the_reason() {
        let n = network("10.1.0.0/24", Some("10.1.0.128/25"), &[("r", "10.1.0.2")]);
        let taken: BTreeSet<Ipv4Addr> = [ip("10.1.0.7")].into();
        assert_eq!(
            allocate(&n, &taken, Some(ip("10.1.0.9"))),
            Ok(ip("10.1.0.9"))
        );
        let cases = [
            (
                "10.2.0.9",
                "address 10.2.0.9 is outside the subnet 10.1.0.0/24 of network \"n1\"",
            ),
            (
                "10.1.0.1",
                "address 10.1.0.1 is reserved in network \"n1\" (gateway)",
            ),
            (
                "10.1.0.2",
                "address 10.1.0.2 is reserved in network \"n1\" (aux-address r)",
            ),
            ("10.1.0.0", "(network address)"),
            ("10.1.0.255", "(broadcast address)"),
            (
                "10.1.0.7",
                "address 10.1.0.7 is already in use in network \"n1\"",
            ),
        ];
        for (request, expected) in cases {
            let e = allocate(&n, &taken, Some(ip(request))).expect_err("refused");
            assert!(e.to_string().contains(expected), "{request}: {e}");
        }
    }

    #[test]
    fn a_slash_30_has_one_address_for_endpoints() {
        let n = network("10.9.0.0/30", None, &[]);
        let first = allocate(&n, &BTreeSet::new(), None).expect("one free");
        assert_eq!(first, ip("10.9.0.2"));
        assert!(allocate(&n, &[first].into(), None).is_err());
    }
}
