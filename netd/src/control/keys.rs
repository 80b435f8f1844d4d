//! Where each record lives in the store, and the keys whose compares
//! keep names, indexes, subnets, VNIs, published ports and addresses
//! unique across every writer.

pub const PREFIX: &str = "/netd/";
pub(super) const NETWORKS: &str = "/netd/networks/";
pub(super) const ENDPOINTS: &str = "/netd/endpoints/";
pub(super) const SERVICES: &str = "/netd/services/";
pub(super) const POLICIES: &str = "/netd/policies/";

/// Registrations of running netds, under a lease: a key per live host.
pub const HOSTS: &str = "/netd/hosts/";
/// Every host of the cluster, netd or external, with its index; kept
/// until `netd host rm`.
pub(super) const MEMBERS: &str = "/netd/members/";

/// The key a running netd keeps alive under its lease.
pub fn host_key(name: &str) -> String {
    format!("{HOSTS}{name}")
}
pub(super) fn member_key(name: &str) -> String {
    format!("{MEMBERS}{name}")
}
pub(super) fn host_index_key(index: u32) -> String {
    format!("/netd/host-index/{index}")
}

/// One id per store, made by the first netd that opens it: what links and
/// pins are marked with, so a netd never takes another store's for its own.
pub(super) const CLUSTER_ID: &str = "/netd/cluster-id";

pub(super) fn network_key(id: &str) -> String {
    format!("{NETWORKS}{id}")
}
pub(super) fn network_name_key(name: &str) -> String {
    format!("/netd/names/network/{name}")
}
/// Held by the network with that subnet: two writers creating networks
/// of one subnet at once (two Docker hosts, say) cannot both succeed.
pub(super) fn subnet_key(subnet: &ipnet::Ipv4Net) -> String {
    format!("/netd/subnets/{}", subnet.to_string().replace('/', "-"))
}
pub(super) fn vni_key(vni: u32) -> String {
    format!("/netd/vni/{vni}")
}

pub(super) fn network_index_key(index: u32) -> String {
    format!("/netd/network-index/{index}")
}
pub(super) fn endpoint_key(id: &str) -> String {
    format!("{ENDPOINTS}{id}")
}
pub(super) fn endpoint_name_key(name: &str) -> String {
    format!("/netd/names/endpoint/{name}")
}
pub(super) fn service_key(id: &str) -> String {
    format!("{SERVICES}{id}")
}
pub(super) fn service_name_key(name: &str) -> String {
    format!("/netd/names/service/{name}")
}
/// Held by the service that publishes (port, protocol): on every host at
/// once, so two services can never take the same one.
pub(super) fn published_key(port: &crate::model::PublishedPort) -> String {
    format!("/netd/published/{}/{}", port.protocol, port.published)
}
pub(super) fn policy_key(id: &str) -> String {
    format!("{POLICIES}{id}")
}
pub(super) fn policy_name_key(name: &str) -> String {
    format!("/netd/policy-names/{name}")
}
pub(super) fn policy_index_key(index: u32) -> String {
    format!("/netd/policy-index/{index}")
}

pub(super) fn service_index_key(index: u32) -> String {
    format!("/netd/service-index/{index}")
}
/// What a VIP's entry in the address registry holds.
pub(super) fn vip_holder(service_id: &str) -> String {
    format!("service:{service_id}")
}

/// The one address registry: who holds each address of a network.
pub(super) fn addresses_of(network_id: &str) -> String {
    format!("/netd/addresses/{network_id}/")
}
pub(super) fn address_key(network_id: &str, ip: std::net::Ipv4Addr) -> String {
    format!("{}{ip}", addresses_of(network_id))
}
