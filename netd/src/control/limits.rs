//! Admission: what every host's maps can hold, checked before anything
//! is written.

use std::collections::BTreeSet;

use crate::model::{Endpoint, Host, ModelError, Network, Policy, Service};

/// What every host's maps can hold: a request that would take one past
/// its capacity is refused up front, naming the limit, and writes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// NETD_NETWORKS (and NETD_VNIS).
    pub networks: u32,
    /// NETD_ENDPOINTS: a host's own endpoints plus every overlay endpoint
    /// of the other hosts.
    pub endpoints: u32,
    /// NETD_HOSTS: the other hosts.
    pub hosts: u32,
    /// NETD_MAGLEV (and NETD_VIPS): services.
    pub services: u32,
    /// NETD_SERVICES: the ports of all services.
    pub service_ports: u32,
    /// NETD_POLICY: what the rules selecting a host's endpoints compile to.
    pub policy_entries: u32,
    /// NETD_IPCACHE: every endpoint with an identity and every CIDR named.
    pub ipcache: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self::of(&crate::dataplane::tables::Sizes::default())
    }
}

impl Limits {
    /// What maps of `sizes` hold: every host is taken to run with this
    /// host's settings (set them alike across a cluster).
    pub fn of(sizes: &crate::dataplane::tables::Sizes) -> Self {
        use crate::dataplane::tables;
        let max = |name| tables::decl(name).map_or(0, |t| sizes.max_entries(t));
        Self {
            networks: max(tables::NETD_NETWORKS.name),
            endpoints: max(tables::NETD_ENDPOINTS.name),
            hosts: max(tables::NETD_HOSTS.name),
            services: max(tables::NETD_MAGLEV.name).min(max(tables::NETD_VIPS.name)),
            service_ports: max(tables::NETD_SERVICES.name),
            policy_entries: max(tables::NETD_POLICY.name),
            ipcache: max(tables::NETD_IPCACHE.name),
        }
    }

    pub(super) fn networks(&self, existing: &[Network]) -> Result<(), ModelError> {
        if existing.len() < self.networks as usize {
            return Ok(());
        }
        Err(ModelError::Full {
            what: "network",
            map: "NETD_NETWORKS",
            host: "every host".into(),
            limit: self.networks,
            have: existing.len(),
        })
    }

    /// Whether one more endpoint of `network` on `host` fits every host.
    pub(super) fn endpoint(
        &self,
        host: &str,
        network: &str,
        networks: &[Network],
        existing: &[Endpoint],
    ) -> Result<(), ModelError> {
        let overlay = |id: &str| networks.iter().any(|n| n.id == id && n.vni.is_some());
        let mut hosts: BTreeSet<&str> = existing.iter().map(|e| e.host.as_str()).collect();
        hosts.insert(host);
        // A host with no endpoint of its own still holds every overlay one.
        hosts.insert("\0any other host");
        for h in hosts {
            let held = |e: &Endpoint| e.host == h || overlay(&e.network);
            let have = existing.iter().filter(|e| held(e)).count();
            let adds = h == host || overlay(network);
            if adds && have >= self.endpoints as usize {
                return Err(ModelError::Full {
                    what: "endpoint",
                    map: "NETD_ENDPOINTS",
                    host: if h.starts_with('\0') {
                        "every host".into()
                    } else {
                        format!("host {h:?}")
                    },
                    limit: self.endpoints,
                    have,
                });
            }
        }
        Ok(())
    }

    /// Whether `service` fits beside `others` (itself left out of them).
    pub(super) fn service(&self, service: &Service, others: &[Service]) -> Result<(), ModelError> {
        if others.len() >= self.services as usize {
            return Err(ModelError::Full {
                what: "service",
                map: "NETD_MAGLEV",
                host: "every host".into(),
                limit: self.services,
                have: others.len(),
            });
        }
        let have: usize = others.iter().map(|s| s.ports.len()).sum();
        if have + service.ports.len() > self.service_ports as usize {
            return Err(ModelError::Full {
                what: "service port",
                map: "NETD_SERVICES",
                host: "every host".into(),
                limit: self.service_ports,
                have,
            });
        }
        Ok(())
    }

    /// Whether the policy maps compiled from `policies` (`name` among
    /// them) fit on every host: compiled as each host compiles them.
    pub(super) fn policies(
        &self,
        name: &str,
        networks: &[Network],
        endpoints: &[Endpoint],
        services: &[Service],
        policies: &[Policy],
    ) -> Result<(), ModelError> {
        use crate::dataplane::{maps::MapState, policy_maps::compile_policies, tables};
        let mut hosts: BTreeSet<&str> = endpoints.iter().map(|e| e.host.as_str()).collect();
        if hosts.is_empty() {
            // No endpoints: the CIDRs still go into every host's ipcache.
            hosts.insert("");
        }
        for host in hosts {
            let mut state = MapState::default();
            compile_policies(&mut state, networks, endpoints, services, policies, |e| {
                e.host == host
            });
            for (map, limit, whose) in [
                (
                    tables::NETD_POLICY.name,
                    self.policy_entries,
                    format!("host {host:?}"),
                ),
                (
                    tables::NETD_IPCACHE.name,
                    self.ipcache,
                    "every host".to_string(),
                ),
            ] {
                let need = state.count(map);
                if need > limit as usize {
                    return Err(ModelError::Overflows {
                        what: format!("policy {name:?}"),
                        map,
                        host: whose,
                        limit,
                        need,
                    });
                }
            }
        }
        Ok(())
    }

    pub(super) fn hosts(&self, existing: &[Host]) -> Result<(), ModelError> {
        if existing.len() < self.hosts as usize {
            return Ok(());
        }
        Err(ModelError::Full {
            what: "host",
            map: "NETD_HOSTS",
            host: "every host".into(),
            limit: self.hosts,
            have: existing.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::tables::Sizes;

    #[test]
    fn limits_follow_the_cluster_size_settings() {
        let sizes = Sizes {
            endpoints: 200_000,
            hosts: 1000,
            ..Sizes::default()
        };
        let limits = Limits::of(&sizes);
        assert_eq!((limits.endpoints, limits.hosts), (200_000, 1000));
        assert_eq!(limits.ipcache, 200_000 + netd_common::tables::IPCACHE_CIDRS);
        let default = Limits::default();
        assert_eq!((default.endpoints, default.hosts), (65_536, 4096));
        assert_eq!(default.services, limits.services, "not a setting");
    }
}
