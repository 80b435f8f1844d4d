//! Docker's side of the model: networks and endpoints keyed by Docker's
//! own ids, containers' published ports, and the IPAM driver's pools and
//! addresses. The same records and compares as the CLI's operations.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;

use super::*;

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
        let mut attempt = 0;
        loop {
            let Some(mut network) = self
                .networks()
                .await?
                .into_iter()
                .find(|n| n.subnet == subnet)
            else {
                return Ok(None);
            };
            if let Some(why) = overlay_conflict(&network, spec, &self.host)? {
                return Err(ModelError::invalid("network", why).into());
            }
            let revision = self.network_revision(&network.id).await?;
            network
                .docker
                .insert(docker_id.to_string(), self.host.clone());
            match self.commit(rewrite_network(&network, revision)).await {
                Ok(_) => return Ok(Some(network)),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
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
        let mut attempt = 0;
        loop {
            let Ok(mut network) = self.docker_network(docker_id).await else {
                return Ok(None);
            };
            if !network.docker.keys().any(|id| id != docker_id) {
                return self.delete_network(&network.id).await.map(Some);
            }
            let revision = self.network_revision(&network.id).await?;
            self.refuse_if_used("network", &network.name, |e| {
                e.network == network.id && e.host == self.host
            })
            .await?;
            network.docker.remove(docker_id);
            match self.commit(rewrite_network(&network, revision)).await {
                Ok(_) => return Ok(Some(network)),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
    }

    /// Docker's name for network `docker_id` (read from dockerd's API
    /// after CreateNetwork): a network still under its provisional name
    /// takes it. `Some(why)` when the network keeps the name it has.
    pub async fn name_docker_network(
        &self,
        docker_id: &str,
        name: &str,
    ) -> Result<Option<String>, ControlError> {
        let mut attempt = 0;
        loop {
            let mut network = self.docker_network(docker_id).await?;
            if network.name == name {
                return Ok(None);
            }
            let provisional = std::iter::once(&network.id)
                .chain(network.docker.keys())
                .any(|id| network.name == provisional_name(id));
            if !provisional {
                return Ok(Some(format!(
                    "Docker calls it {name:?} here, netd knows it as {:?}",
                    network.name
                )));
            }
            if let Err(e) = check_name(name) {
                return Ok(Some(format!("{name:?} cannot name a netd network: {e}")));
            }
            if let Ok(other) = self.network(name).await {
                return Ok(Some(format!(
                    "netd already has a network {name:?}, on {} (two Docker networks of one \
                     name must have one subnet to be one network)",
                    other.subnet
                )));
            }
            let revision = self.network_revision(&network.id).await?;
            let old = std::mem::replace(&mut network.name, name.to_string());
            let txn = rewrite_network(&network, revision)
                .absent(network_name_key(name))
                .delete(network_name_key(&old))
                .put(network_name_key(name), network.id.clone());
            match self.commit(txn).await {
                Ok(_) => return Ok(None),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
    }

    /// CreateEndpoint from Docker (idempotent: Docker retries).
    pub async fn create_docker_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
        ip: Option<std::net::Ipv4Addr>,
        mac: Option<crate::model::Mac>,
    ) -> Result<Endpoint, ControlError> {
        let network = self.docker_network(network_id).await?;
        if let Ok(existing) = self.endpoint(endpoint_id).await {
            if existing.network == network.id && ip.is_none_or(|ip| ip == existing.ipv4) {
                return Ok(existing);
            }
        }
        // Every endpoint creation rewrites its network's record: on a busy
        // network (containers starting on several hosts at once) the
        // compare fails and the creation runs again on what is there now.
        let mut attempt = 0;
        loop {
            let endpoints = self.endpoints().await?;
            let mut endpoint = Endpoint::for_docker(endpoint_id, &network, &endpoints, ip, mac)?;
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
            match self.commit(txn).await {
                Ok(_) => return Ok(endpoint),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
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

/// Docker's `-p`: a container's published ports are a service named
/// after its endpoint, with that endpoint as its one backend, publishing
/// them with mode=host and no VIP. The same model, checks and datapath as
/// `netd service create --publish`.
impl<S: Store> Control<S> {
    /// ProgramExternalConnectivity (idempotent: Docker replays it).
    /// `ports` empty unpublishes.
    pub async fn publish_docker_endpoint(
        &self,
        endpoint_id: &str,
        ports: &[crate::model::PublishedPort],
    ) -> Result<Option<Service>, ControlError> {
        if ports.is_empty() {
            self.unpublish_docker_endpoint(endpoint_id).await?;
            return Ok(None);
        }
        let endpoint = self.endpoint(endpoint_id).await?;
        let texts: Vec<String> = ports
            .iter()
            .map(|p| {
                format!(
                    "published={},target={},protocol={},mode=host",
                    p.published, p.target_port, p.protocol
                )
            })
            .collect();
        let mut wanted = ports.to_vec();
        wanted.sort();
        match self.service(&endpoint.name).await {
            Ok(current) if current.published == wanted => Ok(Some(current)),
            Ok(current) => {
                let update = ServiceUpdate {
                    publish: Some(texts),
                    ..Default::default()
                };
                Ok(Some(self.update_service(&current.id, &update).await?))
            }
            Err(_) => {
                let spec = ServiceSpec {
                    name: endpoint.name.clone(),
                    network: endpoint.network.clone(),
                    backends: vec![endpoint.name.clone()],
                    publish: texts,
                    ..Default::default()
                };
                Ok(Some(self.create_service(&spec).await?))
            }
        }
    }

    /// RevokeExternalConnectivity, and DeleteEndpoint for one Docker did
    /// not revoke: the endpoint's published ports go (idempotent).
    pub async fn unpublish_docker_endpoint(&self, endpoint_id: &str) -> Result<(), ControlError> {
        let Ok(endpoint) = self.endpoint(endpoint_id).await else {
            return Ok(());
        };
        match self.service(&endpoint.name).await {
            Ok(service) if service.endpoints == [endpoint.name.clone()] => {
                self.delete_service(&service.id).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Docker's IPAM driver: address pools, and addresses of the one
/// registry netd's own endpoints use (`/netd/addresses/<network>/<ip>`).
/// An address Docker asks for is claimed there until its endpoint takes
/// it over (CreateEndpoint) or Docker releases it.
impl<S: Store> Control<S> {
    /// A pool for `subnet`. Docker hosts of one cluster that create the
    /// same network share its pool: each request counts for its host, each
    /// ReleasePool uncounts one, and the last release drops it.
    pub async fn request_pool(
        &self,
        subnet: Ipv4Net,
        sub_pool: Option<Ipv4Net>,
    ) -> Result<Pool, ControlError> {
        if let Some(range) = sub_pool {
            if !subnet.contains(&range) {
                return Err(ModelError::invalid(
                    "ip-range",
                    format!("{range} is not inside the subnet {subnet}"),
                )
                .into());
            }
        }
        let id = pool_id(&subnet);
        let overlaps = |other: &Ipv4Net| {
            other.contains(&subnet.network()) || subnet.contains(&other.network())
        };
        let mut attempt = 0;
        loop {
            let pools: Vec<Pool> = self.load(POOLS).await?;
            if let Some(other) = pools.iter().find(|p| p.id != id && overlaps(&p.subnet)) {
                return Err(ModelError::invalid(
                    "subnet",
                    format!("{subnet} overlaps pool {}", other.subnet),
                )
                .into());
            }
            let known = pools.into_iter().find(|p| p.id == id);
            if known.is_none() {
                if let Some(n) = self.networks().await?.iter().find(|n| overlaps(&n.subnet)) {
                    return Err(ModelError::invalid(
                        "subnet",
                        format!("{subnet} overlaps network {:?} ({})", n.name, n.subnet),
                    )
                    .into());
                }
            }
            let key = pool_key(&id);
            let (mut pool, txn) = match known {
                Some(pool) => {
                    if pool.sub_pool != sub_pool {
                        let show = |r: Option<Ipv4Net>| r.map_or("none".into(), |r| r.to_string());
                        return Err(ModelError::invalid(
                            "ip-range",
                            format!(
                                "pool {subnet} has ip-range {} in the cluster, this request {}: \
                                 give every host the same --ip-range",
                                show(pool.sub_pool),
                                show(sub_pool)
                            ),
                        )
                        .into());
                    }
                    let revision = self.stored(&key, "pool", &id).await?.mod_revision;
                    (pool, Txn::new().unchanged(key.clone(), revision))
                }
                None => {
                    let pool = Pool {
                        id: id.clone(),
                        subnet,
                        sub_pool,
                        users: BTreeMap::new(),
                    };
                    (pool, Txn::new().absent(key.clone()))
                }
            };
            *pool.users.entry(self.host.clone()).or_default() += 1;
            match self.commit(txn.put(key, to_json(&pool))).await {
                Ok(_) => return Ok(pool),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
    }

    pub async fn pool(&self, id: &str) -> Result<Pool, ControlError> {
        let key = pool_key(id);
        let stored = self.store.get(&key).await?.ok_or_else(|| {
            ModelError::invalid(
                "PoolID",
                format!("no address pool {id:?} (was it released?)"),
            )
        })?;
        decode(&key, &stored.value)
    }

    /// The ip-range Docker gave for `subnet` (`--ip-range`), if netd's IPAM holds it.
    pub async fn sub_pool_of(&self, subnet: &Ipv4Net) -> Option<Ipv4Net> {
        self.pool(&pool_id(subnet)).await.ok()?.sub_pool
    }

    /// One release of this host's: the last one drops the pool and the
    /// claims no endpoint took over (idempotent once it is gone).
    pub async fn release_pool(&self, id: &str) -> Result<(), ControlError> {
        let mut attempt = 0;
        loop {
            let key = pool_key(id);
            let Some(stored) = self.store.get(&key).await? else {
                return Ok(());
            };
            let mut pool: Pool = decode(&key, &stored.value)?;
            if let Some(count) = pool.users.get_mut(&self.host) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    pool.users.remove(&self.host);
                }
            }
            let mut txn = Txn::new().unchanged(key.clone(), stored.mod_revision);
            if pool.users.is_empty() {
                txn = txn.delete(key);
                for (claim, held) in self.store.list(&addresses_of(id)).await? {
                    if held.value == IPAM_CLAIM {
                        txn = txn
                            .unchanged(claim.clone(), held.mod_revision)
                            .delete(claim);
                    }
                }
            } else {
                txn = txn.put(key, to_json(&pool));
            }
            match self.commit(txn).await {
                Ok(_) => return Ok(()),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
    }

    /// An address of pool `id`, claimed in the pool's registry, which the
    /// network made from the pool shares: a container's address until its
    /// endpoint takes it over, the gateway and auxiliary addresses Docker
    /// asks for before it creates the network (replays allowed).
    pub async fn request_address(
        &self,
        id: &str,
        requested: Option<Ipv4Addr>,
        gateway: bool,
    ) -> Result<Ipv4Addr, ControlError> {
        let pool = self.pool(id).await?;
        let key_of = |ip| address_key(&pool.id, ip);
        if gateway {
            let gw = requested
                .or_else(|| pool.subnet.hosts().next())
                .ok_or_else(|| ModelError::invalid("gateway", "the subnet has no host address"))?;
            if !pool.subnet.contains(&gw) {
                return Err(ModelError::invalid(
                    "gateway",
                    format!("{gw} is outside the subnet {}", pool.subnet),
                )
                .into());
            }
            self.commit(Txn::new().put(key_of(gw), IPAM_CLAIM)).await?;
            return Ok(gw);
        }
        let mut attempt = 0;
        loop {
            // The network made from the pool, or the pool seen as one whose
            // reserved addresses are the ones handed out.
            let network = match self
                .networks()
                .await?
                .into_iter()
                .find(|n| n.ipam_pool.as_deref() == Some(&pool.id))
            {
                Some(network) => network,
                None => Network {
                    id: pool.id.clone(),
                    name: pool.subnet.to_string(),
                    index: 0,
                    subnet: pool.subnet,
                    gateway: pool.subnet.network(),
                    ip_range: pool.sub_pool,
                    aux_addresses: Default::default(),
                    labels: Default::default(),
                    vni: None,
                    ipam_pool: Some(pool.id.clone()),
                    default_deny: false,
                    docker: BTreeMap::new(),
                },
            };
            let taken = self.addresses_taken(&pool.id).await?;
            let ip =
                crate::ipam::allocate(&network, &taken, requested).map_err(ModelError::from)?;
            let txn = Txn::new().absent(key_of(ip)).put(key_of(ip), IPAM_CLAIM);
            match self.commit(txn).await {
                Ok(_) => return Ok(ip),
                Err(StoreError::Conflict(_)) if requested.is_some() => {
                    return Err(ModelError::from(crate::ipam::IpamError::Taken {
                        ip,
                        network: network.name.clone(),
                    })
                    .into())
                }
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
    }

    /// Gives back an address Docker claimed and no endpoint holds.
    pub async fn release_address(&self, id: &str, ip: Ipv4Addr) -> Result<(), ControlError> {
        let key = address_key(id, ip);
        match self.store.get(&key).await? {
            Some(claim) if claim.value == IPAM_CLAIM => {
                let txn = Txn::new()
                    .unchanged(key.clone(), claim.mod_revision)
                    .delete(key);
                match self.commit(txn).await {
                    Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            _ => Ok(()),
        }
    }

    /// The compare an endpoint's address needs: free, or claimed by Docker's
    /// IPAM for it (then the endpoint takes the claim over).
    async fn claim_address(
        &self,
        txn: Txn,
        network: &str,
        ip: Ipv4Addr,
    ) -> Result<Txn, ControlError> {
        let key = address_key(network, ip);
        Ok(match self.store.get(&key).await? {
            Some(claim) if claim.value == IPAM_CLAIM => txn.unchanged(key, claim.mod_revision),
            _ => txn.absent(key),
        })
    }
}

/// What Docker's IPAM leaves in the address registry until an endpoint
/// takes the address.
const IPAM_CLAIM: &str = "ipam";
const POOLS: &str = "/netd/ipam/pools/";

/// An address pool of Docker's IPAM driver.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pool {
    pub id: String,
    pub subnet: Ipv4Net,
    pub sub_pool: Option<Ipv4Net>,
    /// RequestPools not yet released, per host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, u32>,
}

pub fn pool_id(subnet: &Ipv4Net) -> String {
    format!("netd-{}", subnet.to_string().replace('/', "-"))
}

fn pool_key(id: &str) -> String {
    format!("{POOLS}{id}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::{block, ep};
    use super::*;
    use crate::store::EmbeddedStore;

    #[test]
    fn docker_ipam_claims_live_in_the_networks_one_address_registry() {
        const E1: &str = "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1";
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let c = Control::new(EmbeddedStore::open(dir.path()).expect("store"));
            let subnet: Ipv4Net = "10.5.0.0/24".parse().expect("subnet");
            let pool = c.request_pool(subnet, None).await.expect("pool");
            let gw = c
                .request_address(&pool.id, None, true)
                .await
                .expect("gateway");
            let network = c
                .create_docker_network(
                    "0123456789abcdef",
                    NetworkSpec {
                        subnet: subnet.to_string(),
                        gateway: Some(gw.to_string()),
                        ..Default::default()
                    },
                )
                .await
                .expect("network");
            assert_eq!(network.address_registry(), pool.id);
            let ip = c.request_address(&pool.id, None, false).await.expect("ip");
            let e = c
                .create_docker_endpoint(&network.id, E1, Some(ip), None)
                .await
                .expect("the endpoint takes the claim over");
            assert_eq!(e.ipv4, ip);
            let stored = c
                .store()
                .get(&address_key(&pool.id, ip))
                .await
                .expect("get")
                .expect("held");
            assert_eq!(stored.value, E1, "one record, now the endpoint's");
            // Held by the endpoint: neither handed out again nor released.
            let next = c
                .request_address(&pool.id, None, false)
                .await
                .expect("next");
            assert_ne!(next, ip);
            let again = c.request_address(&pool.id, Some(ip), false).await;
            assert!(again.is_err_and(|e| e.to_string().contains("already in use")));
            c.release_address(&pool.id, ip).await.expect("release");
            assert!(c
                .store()
                .get(&address_key(&pool.id, ip))
                .await
                .expect("get")
                .is_some());
            // An endpoint cannot take an address another one holds.
            let taken = c
                .create_docker_endpoint(&network.id, "e2", Some(ip), None)
                .await;
            assert!(taken.is_err(), "{taken:?}");
            // A netd endpoint on that network skips the claimed address.
            let cli = c
                .create_endpoint(&ep("cli", &network.id, "/run/netns/cli"))
                .await
                .expect("cli endpoint");
            assert!(
                cli.ipv4 != ip && cli.ipv4 != next && cli.ipv4 != gw,
                "{}",
                cli.ipv4
            );
            c.delete_endpoint("cli").await.expect("cli gone");
            // Released claims and the pool's leftovers go.
            c.release_address(&pool.id, next).await.expect("release");
            assert!(c
                .store()
                .get(&address_key(&pool.id, next))
                .await
                .expect("get")
                .is_none());
            c.delete_endpoint(E1).await.expect("e1 gone");
            c.delete_network(&network.id).await.expect("network gone");
            c.release_pool(&pool.id).await.expect("pool gone");
            assert!(c
                .store()
                .list(&addresses_of(&pool.id))
                .await
                .expect("list")
                .is_empty());
        });
    }

    const DA: &str = "aaaa0000aaaa0000aaaa0000aaaa0000";
    const DB: &str = "bbbb0000bbbb0000bbbb0000bbbb0000";

    /// Two hosts' Controls over one store, as two netds over one etcd.
    fn two_hosts(
        dir: &std::path::Path,
    ) -> (Control<Arc<EmbeddedStore>>, Control<Arc<EmbeddedStore>>) {
        let store = Arc::new(EmbeddedStore::open(dir).expect("store"));
        (
            Control::on_host(store.clone(), "host-a"),
            Control::on_host(store, "host-b"),
        )
    }

    /// What the plugin makes of `docker network create -d netd --ipam-driver
    /// netd -o netd.overlay=true [-o KEY=VALUE] --subnet SUBNET`.
    async fn docker_create<S: Store>(
        c: &Control<S>,
        docker_id: &str,
        subnet: &str,
        options: &[(&str, &str)],
    ) -> Result<Network, ControlError> {
        let net: Ipv4Net = subnet.parse().expect("subnet");
        let pool = c.request_pool(net, None).await?;
        let gateway = c.request_address(&pool.id, None, true).await?;
        let mut labels = BTreeMap::from([("netd.overlay".to_string(), "true".to_string())]);
        labels.extend(options.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let made = c
            .create_docker_network(
                docker_id,
                NetworkSpec {
                    subnet: subnet.into(),
                    gateway: Some(gateway.to_string()),
                    labels,
                    overlay: true,
                    ..Default::default()
                },
            )
            .await;
        if made.is_err() {
            // As Docker does after a refused CreateNetwork.
            c.release_pool(&pool.id).await?;
        }
        made
    }

    /// What the plugin makes of `docker network rm`.
    async fn docker_rm<S: Store>(c: &Control<S>, docker_id: &str, subnet: &str) {
        c.delete_docker_network(docker_id).await.expect("rm");
        let net: Ipv4Net = subnet.parse().expect("subnet");
        c.release_pool(&pool_id(&net)).await.expect("release");
    }

    #[test]
    fn docker_hosts_creating_one_overlay_share_one_network_until_the_last_leaves() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let (a, b) = two_hosts(dir.path());
            let on_a = docker_create(&a, DA, "10.60.0.0/24", &[]).await.expect("a");
            let on_b = docker_create(&b, DB, "10.60.0.0/24", &[])
                .await
                .expect("b joins");
            assert_eq!(on_a.id, on_b.id, "one network");
            assert!(on_a.vni.is_some());
            let one = a.docker_network(DB).await.expect("B's id finds it");
            assert_eq!(
                one.docker,
                BTreeMap::from([
                    (DA.to_string(), "host-a".to_string()),
                    (DB.to_string(), "host-b".to_string())
                ])
            );
            assert_eq!(a.networks().await.expect("ls").len(), 1);

            // Addresses come from one registry, whichever host asks.
            let pool = pool_id(&"10.60.0.0/24".parse().expect("net"));
            let x = a.request_address(&pool, None, false).await.expect("x");
            let y = b.request_address(&pool, None, false).await.expect("y");
            assert_ne!(x, y);
            let on_b = b
                .create_docker_endpoint(DB, "e2e2e2e2e2e2e2e2e2e2", Some(y), None)
                .await
                .expect("B's endpoint");
            assert_eq!(
                (on_b.network.as_str(), on_b.host.as_str()),
                (one.id.as_str(), "host-b")
            );

            // A leaves: B keeps the network, the pool and its endpoint.
            a.release_address(&pool, x).await.expect("release x");
            docker_rm(&a, DA, "10.60.0.0/24").await;
            let left = b.docker_network(DB).await.expect("still B's");
            assert_eq!(left.docker.len(), 1);
            assert!(a.docker_network(DA).await.is_err());
            assert!(b.pool(&pool).await.is_ok(), "the pool stays B's");
            // B cannot leave while its endpoint is there.
            let busy = b.delete_docker_network(DB).await;
            assert!(busy.is_err_and(|e| e.to_string().contains("endpoint")));
            b.delete_endpoint("e2e2e2e2e2e2e2e2e2e2")
                .await
                .expect("ep gone");
            docker_rm(&b, DB, "10.60.0.0/24").await;
            assert!(b.networks().await.expect("ls").is_empty());
            assert!(
                b.pool(&pool).await.is_err(),
                "the last release drops the pool"
            );
            for prefix in [
                "/netd/subnets/",
                "/netd/vni/",
                "/netd/names/",
                "/netd/addresses/",
            ] {
                let left = b.store().list(prefix).await.expect("list");
                assert!(left.is_empty(), "{prefix}: {left:?}");
            }
        });
    }

    #[test]
    fn a_conflicting_docker_overlay_is_refused_with_the_difference_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let (a, b) = two_hosts(dir.path());
            docker_create(&a, DA, "10.61.0.0/24", &[]).await.expect("a");
            let before = a.store().list("/netd/").await.expect("list");
            let options =
                docker_create(&b, DB, "10.61.0.0/24", &[("netd.policy", "default-deny")]).await;
            let why = options.expect_err("other options").to_string();
            assert!(
                why.contains("netd.policy") && why.contains("same --subnet and options"),
                "{why}"
            );
            let overlapping = docker_create(&b, DB, "10.61.0.0/16", &[]).await;
            assert!(overlapping
                .expect_err("overlap")
                .to_string()
                .contains("overlaps"));
            let twice = docker_create(&a, "cccc0000cccc0000cccc", "10.61.0.0/24", &[]).await;
            assert!(twice
                .expect_err("twice")
                .to_string()
                .contains("already Docker network"));
            let after = a.store().list("/netd/").await.expect("list");
            let values = |m: &BTreeMap<String, crate::store::Versioned>| -> Vec<(String, String)> {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.value.clone()))
                    .collect()
            };
            assert_eq!(values(&before), values(&after), "nothing changed");
        });
    }

    #[test]
    fn two_docker_hosts_creating_one_overlay_at_once_make_one_network() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let (a, b) = two_hosts(dir.path());
            let (x, y) = tokio::join!(
                docker_create(&a, DA, "10.62.0.0/24", &[]),
                docker_create(&b, DB, "10.62.0.0/24", &[])
            );
            let (x, y) = (x.expect("a"), y.expect("b"));
            assert_eq!(x.id, y.id);
            let all = a.networks().await.expect("ls");
            assert_eq!(all.len(), 1, "{all:?}");
            assert_eq!(all[0].docker.len(), 2);
        });
    }

    #[test]
    fn a_docker_network_takes_its_docker_name_unless_netd_has_that_name() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let (a, b) = two_hosts(dir.path());
            let made = docker_create(&a, DA, "10.63.0.0/24", &[]).await.expect("a");
            assert_eq!(made.name, "docker-aaaa0000aaaa");
            assert_eq!(
                a.name_docker_network(DA, "shared").await.expect("name"),
                None
            );
            docker_create(&b, DB, "10.63.0.0/24", &[]).await.expect("b");
            assert_eq!(
                b.name_docker_network(DB, "shared").await.expect("same"),
                None
            );
            assert_eq!(b.network("shared").await.expect("by name").docker.len(), 2);
            let other = b.name_docker_network(DB, "elsewise").await.expect("kept");
            assert!(other.is_some_and(|w| w.contains("\"shared\"")));
            // One name on another subnet is another network, named apart.
            let c = Control::on_host(a.store().clone(), "host-c");
            const DC: &str = "cccc0000cccc0000cccc0000";
            docker_create(&c, DC, "10.64.0.0/24", &[]).await.expect("c");
            let why = c.name_docker_network(DC, "shared").await.expect("kept");
            assert!(why.is_some_and(|w| w.contains("10.63.0.0/24")));
            assert!(c
                .store()
                .get(&network_name_key("docker-cccc0000cccc"))
                .await
                .expect("get")
                .is_some());
        });
    }
}
