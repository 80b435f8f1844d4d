//! The endpoints' links: each endpoint's veth made (or found and marked
//! as this netd's) with netd's program attached, the links this netd made
//! that its store no longer names removed, and managed neighbours for the
//! other hosts on the uplink. Another netd's links, or no netd's, are
//! never touched.

use std::collections::BTreeSet;

use tracing::{info, warn};

use super::{Agent, AgentError, Report, State, ENDPOINT_MTU, OWNER_PREFIX};
use crate::{
    dataplane::{
        endpoint_attach::{detach_endpoint, pinned_endpoint_links},
        reconcile::HostLink,
    },
    logging::chain,
    model::{Endpoint, Host, Manager, Network, HOST_IFNAME_PREFIX},
    netlink::{create_endpoint_link, create_veth_pair, EndpointLinkSpec, LinkFacts},
    store::Store,
};

impl<S: Store> Agent<S> {
    pub(super) async fn ensure_link(
        &self,
        state: &mut State,
        networks: &[Network],
        endpoint: &Endpoint,
        report: &mut Report,
    ) -> Result<HostLink, String> {
        let existing = self
            .host
            .link_facts(&endpoint.host_ifname)
            .await
            .map_err(|e| chain(&e))?;
        let (ifindex, mac) = match existing {
            Some(found) => {
                self.claim(&endpoint.host_ifname, &found).await?;
                (found.index, found.mac)
            }
            None if endpoint.managed_by == Manager::Docker => {
                let mtu = networks
                    .iter()
                    .find(|n| n.id == endpoint.network)
                    .map_or(ENDPOINT_MTU, |n| self.endpoint_mtu(n));
                let made = create_veth_pair(
                    &self.host,
                    &endpoint.host_ifname,
                    &self.owner,
                    &endpoint.peer_ifname(),
                    mtu,
                )
                .await
                .map_err(|e| chain(&e))?;
                report.links_created += 1;
                state.attached.remove(&endpoint.host_ifname);
                self.host
                    .route_to_endpoint(endpoint.ipv4, made.0)
                    .await
                    .map_err(|e| chain(&e))?;
                made
            }
            None => {
                let network = networks
                    .iter()
                    .find(|n| n.id == endpoint.network)
                    .ok_or_else(|| {
                        format!("network {} of the endpoint is gone", endpoint.network)
                    })?;
                let spec = EndpointLinkSpec {
                    host_ifname: &endpoint.host_ifname,
                    owner: &self.owner,
                    sandbox: &endpoint.sandbox,
                    ifname: &endpoint.ifname,
                    mac: endpoint.mac,
                    ipv4: endpoint.ipv4,
                    prefix_len: network.subnet.prefix_len(),
                    gateway: network.gateway,
                    mtu: self.endpoint_mtu(network),
                };
                let made = create_endpoint_link(&self.host, &spec)
                    .await
                    .map_err(|e| chain(&e))?;
                report.links_created += 1;
                state.attached.remove(&endpoint.host_ifname);
                made
            }
        };
        if !state.attached.contains(&endpoint.host_ifname) {
            if let Err(e) = state.datapath.attach_endpoint(&endpoint.host_ifname) {
                return Err(chain(&e));
            }
            if let Some(network) = networks.iter().find(|n| n.id == endpoint.network) {
                self.host
                    .ensure_gateway_address(ifindex, network.gateway)
                    .await
                    .map_err(|e| chain(&e))?;
            }
            // The masquerade program asks the FIB how the host would
            // forward the endpoint's packets: the kernel answers only for a
            // device that forwards. netd made the veth; the host's other
            // devices keep their settings.
            crate::system::enable_forwarding(&endpoint.host_ifname).map_err(|e| chain(&e))?;
            state.attached.insert(endpoint.host_ifname.clone());
        }
        Ok(HostLink { ifindex, mac })
    }

    /// The MTU of `network`'s endpoints: its own, else 1500, or the
    /// uplink's less VXLAN's overhead on an overlay network.
    pub(super) fn endpoint_mtu(&self, network: &Network) -> u32 {
        network.egress.mtu.unwrap_or(if network.vni.is_some() {
            self.overlay_mtu
        } else {
            ENDPOINT_MTU
        })
    }

    /// Marks an existing link the store names as this netd's (links made
    /// before links were marked), unless another netd's mark is on it.
    async fn claim(&self, ifname: &str, link: &LinkFacts) -> Result<(), String> {
        match &link.alias {
            Some(mark) if *mark == self.owner => Ok(()),
            Some(mark) if mark.starts_with(OWNER_PREFIX) => Err(format!(
                "link {ifname} belongs to another netd ({mark:?}), not this one ({:?})",
                self.owner
            )),
            _ => {
                info!(link = ifname, mark = %self.owner, "marking an endpoint link as this netd's");
                self.host
                    .set_alias(link.index, &self.owner)
                    .await
                    .map_err(|e| chain(&e))
            }
        }
    }

    /// Links this netd made that its store has forgotten, and TC pins
    /// nobody owns any more. Links of another netd (another pin path or
    /// store), or of no netd, are not ours to remove.
    pub(super) async fn remove_stale_links(
        &self,
        state: &mut State,
        endpoints: &[Endpoint],
        report: &mut Report,
    ) -> Result<(), AgentError> {
        let wanted: BTreeSet<&str> = endpoints
            .iter()
            .filter(|e| e.joined())
            .map(|e| e.host_ifname.as_str())
            .collect();
        for link in self.host.links_named(HOST_IFNAME_PREFIX).await? {
            if !wanted.contains(link.name.as_str())
                && is_host_ifname(&link.name)
                && link.alias.as_deref() == Some(self.owner.as_str())
            {
                self.host.delete(&link.name).await?;
                report.links_removed += 1;
            }
        }
        for name in pinned_endpoint_links(state.datapath.layout()) {
            if !wanted.contains(name.as_str()) {
                detach_endpoint(state.datapath.layout(), &name);
                state.attached.remove(&name);
            }
        }
        Ok(())
    }

    /// Managed neighbour entries for the other hosts on the uplink, so the
    /// routing mesh's tunnel finds their MACs; a host that left (past its
    /// grace) loses the one netd made for it. A failure is logged and
    /// tried again next pass; the mesh counts `no_neighbour` meanwhile.
    pub(super) async fn keep_neighbours(&self, state: &mut State, hosts: &[Host]) {
        let uplink = self.overlay.uplink_ifindex;
        if self.overlay.underlay == [0; 4] || uplink == 0 {
            return;
        }
        let current: BTreeSet<std::net::Ipv4Addr> =
            hosts.iter().filter_map(|h| h.underlay_ip).collect();
        let gone: Vec<std::net::Ipv4Addr> =
            state.neighbours.difference(&current).copied().collect();
        for ip in gone {
            match self.host.remove_managed_neighbour(uplink, ip).await {
                Ok(removed) => {
                    state.neighbours.remove(&ip);
                    if removed {
                        info!(%ip, "the managed neighbour of a host that left removed");
                    }
                }
                Err(e) => warn!(%ip, error = %chain(&e), "cannot remove a managed neighbour"),
            }
        }
        for host in hosts.iter().filter(|h| h.name != self.control.host()) {
            let Some(ip) = host.underlay_ip else { continue };
            if state.neighbours.contains(&ip) {
                continue;
            }
            let done = match self.host.on_link(uplink, ip).await {
                Ok(false) => Ok(()),
                Ok(true) => self.host.ensure_managed_neighbour(uplink, ip).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => {
                    state.neighbours.insert(ip);
                }
                Err(e) => warn!(host = %host.name, %ip, error = %chain(&e), "no managed neighbour"),
            }
        }
    }
}

fn is_host_ifname(name: &str) -> bool {
    name.strip_prefix(HOST_IFNAME_PREFIX)
        .is_some_and(|rest| rest.len() == 12 && rest.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_netd_names_count_as_endpoint_links() {
        assert!(super::is_host_ifname("ndh0123456789ab"));
        assert!(!super::is_host_ifname("ndhx"));
        assert!(!super::is_host_ifname("ndh0123456789abc"));
        assert!(!super::is_host_ifname("eth0"));
    }
}
