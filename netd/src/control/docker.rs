//! Docker's side of the model: networks and endpoints keyed by Docker's
//! own ids, containers' published ports, and the IPAM driver's pools and
//! addresses. The same records and compares as the CLI's operations.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;

use super::*;

/// Docker's side: networks and endpoints keyed by Docker's own ids.
impl<S: Store> Control<S> {
    /// CreateNetwork from Docker: the network takes Docker's id, and a name
    /// derived from it (`docker-` + 12 hex digits).
    pub async fn create_docker_network(
        &self,
        docker_id: &str,
        mut spec: NetworkSpec,
    ) -> Result<Network, ControlError> {
        if docker_id.len() < 12 || !docker_id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ModelError::invalid(
                "NetworkID",
                format!("{docker_id:?} is not a Docker network id"),
            )
            .into());
        }
        if let Ok(existing) = self.network(docker_id).await {
            return Ok(existing);
        }
        spec.name = format!("docker-{}", &docker_id[..12]);
        // Made from a pool of netd's IPAM: it shares that pool's registry.
        let pool = match spec.subnet.parse::<Ipv4Net>() {
            Ok(subnet) => self.pool(&pool_id(&subnet)).await.ok().map(|p| p.id),
            Err(_) => None,
        };
        self.insert_network(false, |existing, index| {
            let mut network = Network::from_spec(&spec, existing, index)?;
            network.id = docker_id.to_string();
            network.ipam_pool = pool.clone();
            Ok(network)
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
        if let Ok(existing) = self.endpoint(endpoint_id).await {
            if existing.network == network_id && ip.is_none_or(|ip| ip == existing.ipv4) {
                return Ok(existing);
            }
        }
        let network = self.network(network_id).await?;
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
        self.commit(txn).await?;
        Ok(endpoint)
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
    /// A pool for `subnet` (idempotent: Docker replays requests).
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
        let pools: Vec<Pool> = self.load(POOLS).await?;
        if let Some(other) = pools.iter().find(|p| p.id != id && overlaps(&p.subnet)) {
            return Err(ModelError::invalid(
                "subnet",
                format!("{subnet} overlaps pool {}", other.subnet),
            )
            .into());
        }
        // A replayed request finds its pool, and the network made from it.
        let known = pools.iter().any(|p| p.id == id);
        if let Some(n) = self.networks().await?.iter().find(|n| overlaps(&n.subnet)) {
            if !known {
                return Err(ModelError::invalid(
                    "subnet",
                    format!("{subnet} overlaps network {:?} ({})", n.name, n.subnet),
                )
                .into());
            }
        }
        let pool = Pool {
            id: id.clone(),
            subnet,
            sub_pool,
        };
        self.commit(Txn::new().put(pool_key(&id), to_json(&pool)))
            .await?;
        Ok(pool)
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

    /// Drops the pool and the claims no endpoint took over.
    pub async fn release_pool(&self, id: &str) -> Result<(), ControlError> {
        let mut txn = Txn::new().delete(pool_key(id));
        for (key, held) in self.store.list(&addresses_of(id)).await? {
            if held.value == IPAM_CLAIM {
                txn = txn.unchanged(key.clone(), held.mod_revision).delete(key);
            }
        }
        self.commit(txn).await?;
        Ok(())
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
}

pub fn pool_id(subnet: &Ipv4Net) -> String {
    format!("netd-{}", subnet.to_string().replace('/', "-"))
}

fn pool_key(id: &str) -> String {
    format!("{POOLS}{id}")
}

#[cfg(test)]
mod tests {
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
}
