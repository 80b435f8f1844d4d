//! Docker's side of the model: networks and endpoints keyed by Docker's
//! own ids, the same records and compares as the CLI's operations.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use super::{decode, ipam::pool_id, keys::*, to_json, Attempt, Control, ControlError};
use crate::{
    model::{check_name, Endpoint, ModelError, Network, NetworkSpec},
    store::{Store, Txn},
};

/// Docker's side: networks and endpoints keyed by Docker's own ids.
impl<S: Store> Control<S> {
    /// CreateNetwork from Docker. A network takes the creating Docker's id
    /// and a provisional name (`docker-` + 12 hex digits) until dockerd's
    /// API gives its real one ([`Control::name_docker_network`]).
    ///
    /// With `spec.overlay`, Docker hosts of one cluster that create the
    /// same network (same subnet, same options) share one netd network:
    /// the first creates it, the others join it, and one whose subnet
    /// overlaps it or whose options differ is refused with the difference.
    /// The subnet is what they meet on: the plugin protocol does not carry
    /// a network's name, and netd's IPAM keeps subnets unique cluster-wide.
    pub async fn create_docker_network(
        &self,
        docker_id: &str,
        mut spec: NetworkSpec,
    ) -> Result<Network, ControlError> {
        check_docker_id("NetworkID", docker_id)?;
        if let Ok(existing) = self.docker_network(docker_id).await {
            return Ok(existing);
        }
        spec.name = provisional_name(docker_id);
        if spec.overlay {
            if let Some(joined) = self.join_docker_overlay(docker_id, &spec).await? {
                return Ok(joined);
            }
        }
        // Made from a pool of netd's IPAM: it shares that pool's registry.
        let pool = match spec.subnet.parse::<Ipv4Net>() {
            Ok(subnet) => self.pool(&pool_id(&subnet)).await.ok().map(|p| p.id),
            Err(_) => None,
        };
        let made = self
            .insert_network(spec.overlay, |existing, index| {
                let mut network = Network::from_spec(&spec, existing, index)?;
                network.id = docker_id.to_string();
                network.ipam_pool = pool.clone();
                network
                    .docker
                    .insert(docker_id.to_string(), self.host.clone());
                Ok(network)
            })
            .await;
        match made {
            // Another Docker host made it meanwhile: join that one.
            Err(e) if spec.overlay => match self.join_docker_overlay(docker_id, &spec).await? {
                Some(joined) => Ok(joined),
                None => Err(e),
            },
            other => other,
        }
    }

    /// Joins the network of `spec`'s subnet as Docker network `docker_id`
    /// of this host; None if there is no such network yet.
    async fn join_docker_overlay(
        &self,
        docker_id: &str,
        spec: &NetworkSpec,
    ) -> Result<Option<Network>, ControlError> {
        let Ok(subnet) = spec.subnet.parse::<Ipv4Net>() else {
            return Ok(None);
        };
        self.transact(|| async move {
            let Some(mut network) = self
                .networks()
                .await?
                .into_iter()
                .find(|n| n.subnet == subnet)
            else {
                return Ok(Attempt::Done(None));
            };
            if let Some(why) = overlay_conflict(&network, spec, &self.host)? {
                return Err(ModelError::invalid("network", why).into());
            }
            let revision = self.network_revision(&network.id).await?;
            network
                .docker
                .insert(docker_id.to_string(), self.host.clone());
            Ok(Attempt::Commit(
                rewrite_network(&network, revision),
                Some(network),
            ))
        })
        .await
    }

    /// The network Docker knows as `docker_id` on this or any host. (A
    /// network keeps its first Docker id as its own after that Docker
    /// left; records from before `docker` was kept have only their id.)
    pub async fn docker_network(&self, docker_id: &str) -> Result<Network, ControlError> {
        self.networks()
            .await?
            .into_iter()
            .find(|n| {
                n.docker.contains_key(docker_id) || (n.docker.is_empty() && n.id == docker_id)
            })
            .ok_or_else(|| {
                ModelError::NotFound {
                    kind: "network",
                    name: docker_id.to_string(),
                }
                .into()
            })
    }

    /// DeleteNetwork from Docker (idempotent). A network other Docker
    /// hosts still have stays theirs; the last one removes it. Refused
    /// while this host has endpoints on it.
    pub async fn delete_docker_network(
        &self,
        docker_id: &str,
    ) -> Result<Option<Network>, ControlError> {
        self.transact(|| async move {
            let Ok(mut network) = self.docker_network(docker_id).await else {
                return Ok(Attempt::Done(None));
            };
            if !network.docker.keys().any(|id| id != docker_id) {
                return self
                    .delete_network(&network.id)
                    .await
                    .map(|n| Attempt::Done(Some(n)));
            }
            let revision = self.network_revision(&network.id).await?;
            self.refuse_if_used("network", &network.name, |e| {
                e.network == network.id && e.host == self.host
            })
            .await?;
            network.docker.remove(docker_id);
            Ok(Attempt::Commit(
                rewrite_network(&network, revision),
                Some(network),
            ))
        })
        .await
    }

    /// Docker's name for network `docker_id` (read from dockerd's API
    /// after CreateNetwork): a network still under its provisional name
    /// takes it. `Some(why)` when the network keeps the name it has.
    pub async fn name_docker_network(
        &self,
        docker_id: &str,
        name: &str,
    ) -> Result<Option<String>, ControlError> {
        self.transact(|| async move {
            let mut network = self.docker_network(docker_id).await?;
            if network.name == name {
                return Ok(Attempt::Done(None));
            }
            let provisional = std::iter::once(&network.id)
                .chain(network.docker.keys())
                .any(|id| network.name == provisional_name(id));
            if !provisional {
                return Ok(Attempt::Done(Some(format!(
                    "Docker calls it {name:?} here, netd knows it as {:?}",
                    network.name
                ))));
            }
            if let Err(e) = check_name(name) {
                return Ok(Attempt::Done(Some(format!(
                    "{name:?} cannot name a netd network: {e}"
                ))));
            }
            if let Ok(other) = self.network(name).await {
                return Ok(Attempt::Done(Some(format!(
                    "netd already has a network {name:?}, on {} (two Docker networks of one \
                     name must have one subnet to be one network)",
                    other.subnet
                ))));
            }
            let revision = self.network_revision(&network.id).await?;
            let old = std::mem::replace(&mut network.name, name.to_string());
            let txn = rewrite_network(&network, revision)
                .absent(network_name_key(name))
                .delete(network_name_key(&old))
                .put(network_name_key(name), network.id.clone());
            Ok(Attempt::Commit(txn, None))
        })
        .await
    }

    /// CreateEndpoint from Docker (idempotent: Docker retries).
    pub async fn create_docker_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
        ip: Option<std::net::Ipv4Addr>,
        mac: Option<crate::model::Mac>,
    ) -> Result<Endpoint, ControlError> {
        let network = &self.docker_network(network_id).await?;
        if let Ok(existing) = self.endpoint(endpoint_id).await {
            if existing.network == network.id && ip.is_none_or(|ip| ip == existing.ipv4) {
                return Ok(existing);
            }
        }
        // Every endpoint creation rewrites its network's record: on a busy
        // network (containers starting on several hosts at once) the
        // compare fails and the creation runs again on what is there now.
        self.transact(|| async move {
            let endpoints = self.endpoints().await?;
            let mut endpoint = Endpoint::for_docker(endpoint_id, network, &endpoints, ip, mac)?;
            endpoint.host = self.host.clone();
            self.limits.endpoint(
                &endpoint.host,
                &endpoint.network,
                &self.networks().await?,
                &endpoints,
            )?;
            let txn = self
                .guard_network(Txn::new(), &endpoint.network)
                .await?
                .absent(endpoint_key(&endpoint.id));
            let registry = network.address_registry();
            let txn = self
                .claim_address(txn, registry, endpoint.ipv4)
                .await?
                .put(endpoint_key(&endpoint.id), to_json(&endpoint))
                .put(endpoint_name_key(&endpoint.name), endpoint.id.clone())
                .put(address_key(registry, endpoint.ipv4), endpoint.id.clone());
            Ok(Attempt::Commit(txn, endpoint))
        })
        .await
    }

    /// Join (a sandbox path) or Leave (an empty path).
    pub async fn set_sandbox(
        &self,
        endpoint_id: &str,
        sandbox: std::path::PathBuf,
    ) -> Result<Endpoint, ControlError> {
        self.update_endpoint(endpoint_id, |e| e.sandbox = sandbox)
            .await
    }

    /// After Join: the container's name and labels, from the Docker API
    /// (those a selector can name; the keys of the rest are logged).
    pub async fn set_container(
        &self,
        endpoint_id: &str,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Endpoint, ControlError> {
        let (labels, left_out) = crate::model::selectable_labels(labels);
        if !left_out.is_empty() {
            tracing::info!(endpoint = %endpoint_id, labels = ?left_out, "container labels no selector can name, left out");
        }
        self.update_endpoint(endpoint_id, |e| {
            e.container = Some(name.to_string());
            e.labels = labels;
        })
        .await
    }

    /// Reads an endpoint, changes it, and writes it back if nobody wrote
    /// it meanwhile.
    async fn update_endpoint(
        &self,
        endpoint_id: &str,
        change: impl FnOnce(&mut Endpoint),
    ) -> Result<Endpoint, ControlError> {
        let key = endpoint_key(endpoint_id);
        let current = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ModelError::NotFound {
                kind: "endpoint",
                name: endpoint_id.to_string(),
            })?;
        let mut endpoint: Endpoint = decode(&key, &current.value)?;
        change(&mut endpoint);
        self.commit(Txn {
            compares: vec![crate::store::Compare::Revision(
                key.clone(),
                current.mod_revision,
            )],
            puts: vec![(key, to_json(&endpoint))],
            deletes: vec![],
        })
        .await?;
        Ok(endpoint)
    }
}

/// `network` written back over its record as read at `revision`.
fn rewrite_network(network: &Network, revision: u64) -> Txn {
    let key = network_key(&network.id);
    Txn::new()
        .unchanged(key.clone(), revision)
        .put(key, to_json(network))
}

/// Docker's network ids: 12 or more hex digits.
fn check_docker_id(field: &'static str, id: &str) -> Result<(), ModelError> {
    if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ModelError::invalid(
            field,
            format!("{id:?} is not a Docker network id"),
        ));
    }
    Ok(())
}

/// What a Docker network is called until its name is read from dockerd.
fn provisional_name(docker_id: &str) -> String {
    format!("docker-{}", &docker_id[..12.min(docker_id.len())])
}

/// Why a Docker network of `spec` cannot join `network` (the one on its
/// subnet) on `host`, naming what differs; None if it can.
fn overlay_conflict(
    network: &Network,
    spec: &NetworkSpec,
    host: &str,
) -> Result<Option<String>, ModelError> {
    let theirs = format!(
        "the cluster's network {:?} ({})",
        network.name, network.subnet
    );
    if network.vni.is_none() {
        return Ok(Some(format!(
            "{theirs} is not an overlay network: a Docker network joins only one created with \
             -o netd.overlay=true"
        )));
    }
    if network.docker.is_empty() {
        return Ok(Some(format!(
            "{theirs} was made with `netd network create`; Docker networks join only networks \
             Docker made"
        )));
    }
    if let Some(id) = network
        .docker
        .iter()
        .find_map(|(id, h)| (h == host).then_some(id))
    {
        return Ok(Some(format!(
            "{theirs} is already Docker network {} on this host",
            &id[..12.min(id.len())]
        )));
    }
    let mine = Network::from_spec(spec, &[], network.index)?;
    let mut differ = Vec::new();
    if mine.gateway != network.gateway {
        differ.push(format!(
            "gateway {} here, {} there",
            mine.gateway, network.gateway
        ));
    }
    if mine.ip_range != network.ip_range {
        let show = |r: Option<Ipv4Net>| r.map_or("none".to_string(), |r| r.to_string());
        differ.push(format!(
            "ip-range {} here, {} there",
            show(mine.ip_range),
            show(network.ip_range)
        ));
    }
    if mine.aux_addresses != network.aux_addresses {
        differ.push(format!(
            "aux-addresses {:?} here, {:?} there",
            mine.aux_addresses, network.aux_addresses
        ));
    }
    if mine.labels != network.labels {
        differ.push(format!(
            "options {:?} here, {:?} there",
            mine.labels, network.labels
        ));
    }
    if differ.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "{theirs} differs: {}; create it with the same --subnet and options on every host",
        differ.join("; ")
    )))
}
