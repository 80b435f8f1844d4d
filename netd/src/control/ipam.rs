//! Docker's IPAM driver: address pools, and addresses of the one
//! registry netd's own endpoints use (`/netd/addresses/<network>/<ip>`).
//! An address Docker asks for is claimed there until its endpoint takes
//! it over (CreateEndpoint) or Docker releases it.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;

use super::{decode, keys::*, to_json, Attempt, Control, ControlError};
use crate::{
    model::{ModelError, Network},
    store::{Store, StoreError, Txn},
};

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
        let id = &pool_id(&subnet);
        let overlaps = &|other: &Ipv4Net| {
            other.contains(&subnet.network()) || subnet.contains(&other.network())
        };
        self.transact(|| async move {
            let pools: Vec<Pool> = self.decode_all(POOLS, &self.store.list(POOLS).await?);
            if let Some(other) = pools.iter().find(|p| p.id != *id && overlaps(&p.subnet)) {
                return Err(ModelError::invalid(
                    "subnet",
                    format!("{subnet} overlaps pool {}", other.subnet),
                )
                .into());
            }
            let known = pools.into_iter().find(|p| p.id == *id);
            if known.is_none() {
                if let Some(n) = self.networks().await?.iter().find(|n| overlaps(&n.subnet)) {
                    return Err(ModelError::invalid(
                        "subnet",
                        format!("{subnet} overlaps network {:?} ({})", n.name, n.subnet),
                    )
                    .into());
                }
            }
            let key = pool_key(id);
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
                    let revision = self.stored(&key, "pool", id).await?.mod_revision;
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
            Ok(Attempt::Commit(txn.put(key, to_json(&pool)), pool))
        })
        .await
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
        self.transact(|| async move {
            let key = pool_key(id);
            let Some(stored) = self.store.get(&key).await? else {
                return Ok(Attempt::Done(()));
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
            Ok(Attempt::Commit(txn, ()))
        })
        .await
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
        let pool = &self.pool(id).await?;
        let key_of = &|ip| address_key(&pool.id, ip);
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
        self.transact(|| async move {
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
                    egress: Default::default(),
                },
            };
            let taken = self.addresses_taken(&pool.id).await?;
            let ip =
                crate::ipam::allocate(&network, &taken, requested).map_err(ModelError::from)?;
            let txn = Txn::new().absent(key_of(ip)).put(key_of(ip), IPAM_CLAIM);
            // A requested address another writer took meanwhile is refused
            // by the next attempt's allocation, which sees it taken.
            Ok(Attempt::Commit(txn, ip))
        })
        .await
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
    pub(super) async fn claim_address(
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
