//! Endpoints: a name and an address of their network's registry, unique
//! by compare; each lives on one host (this netd's, or an external one).

use std::{collections::BTreeSet, net::Ipv4Addr};

use super::{keys::*, networks::registry_of, to_json, Attempt, Control, ControlError};
use crate::{
    model::{Endpoint, EndpointSpec, ModelError, Network},
    store::{Store, Txn},
};

impl<S: Store> Control<S> {
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, ControlError> {
        self.all().await
    }

    pub async fn endpoint(&self, name_or_id: &str) -> Result<Endpoint, ControlError> {
        self.one(name_or_id).await
    }

    pub async fn create_endpoint(&self, spec: &EndpointSpec) -> Result<Endpoint, ControlError> {
        self.transact(|| async move {
            let networks = self.networks().await?;
            let endpoints = self.endpoints().await?;
            let spec = &self.skip_claimed(spec, &networks, &endpoints).await?;
            let (endpoint, external) = match &spec.external_host {
                Some(name) => {
                    let (host, revision) = self.external_host(name).await?;
                    let e = Endpoint::external(spec, &host.name, &networks, &endpoints)?;
                    (e, Some((host, revision)))
                }
                None => {
                    let mut e = Endpoint::from_spec(spec, &networks, &endpoints)?;
                    e.host = self.host.clone();
                    (e, None)
                }
            };
            self.limits
                .endpoint(&endpoint.host, &endpoint.network, &networks, &endpoints)?;
            let mut txn = Txn::new();
            if let Some((host, revision)) = external {
                // The host must still be there when the endpoint lands, and
                // rewriting it makes a concurrent removal see the change.
                txn = txn
                    .unchanged(member_key(&host.name), revision)
                    .put(member_key(&host.name), to_json(&host));
            }
            let address = address_key(registry_of(&networks, &endpoint.network), endpoint.ipv4);
            let txn = self
                .guard_network(txn, &endpoint.network)
                .await?
                .absent(endpoint_name_key(&endpoint.name))
                .absent(address.clone())
                .put(endpoint_key(&endpoint.id), to_json(&endpoint))
                .put(endpoint_name_key(&endpoint.name), endpoint.id.clone())
                .put(address, endpoint.id.clone());
            Ok(Attempt::Commit(txn, endpoint))
        })
        .await
    }

    /// On a network whose addresses Docker's IPAM also hands out, an
    /// endpoint with no address asked for gets one that neither an endpoint
    /// nor a claim holds (endpoints alone do not show the claims).
    async fn skip_claimed(
        &self,
        spec: &EndpointSpec,
        networks: &[Network],
        endpoints: &[Endpoint],
    ) -> Result<EndpointSpec, ControlError> {
        let network = networks
            .iter()
            .find(|n| n.name == spec.network || n.id == spec.network);
        let (Some(network), None) = (network, &spec.external_host) else {
            return Ok(spec.clone());
        };
        let registry = network.address_registry();
        if let Some(ip) = spec.ip.as_deref().and_then(|t| t.parse::<Ipv4Addr>().ok()) {
            // An address a VIP holds is refused by name, not by a compare
            // that fails on every retry.
            if let Some(held) = self.store.get(&address_key(registry, ip)).await? {
                if let Some(id) = held.value.strip_prefix("service:") {
                    let name = self.service(id).await.map_or(id.to_string(), |s| s.name);
                    return Err(ModelError::invalid(
                        "ip",
                        format!("{ip} is the VIP of service {name:?}"),
                    )
                    .into());
                }
            }
            return Ok(spec.clone());
        }
        let mut taken = self.addresses_taken(registry).await?;
        taken.extend(
            endpoints
                .iter()
                .filter(|e| e.network == network.id)
                .map(|e| e.ipv4),
        );
        let ip = crate::ipam::allocate(network, &taken, None).map_err(ModelError::from)?;
        Ok(EndpointSpec {
            ip: Some(ip.to_string()),
            ..spec.clone()
        })
    }

    /// Addresses held in `registry`: endpoints' and claims.
    pub(super) async fn addresses_taken(
        &self,
        registry: &str,
    ) -> Result<BTreeSet<Ipv4Addr>, ControlError> {
        let prefix = addresses_of(registry);
        let prefix = prefix.as_str();
        Ok(self
            .store
            .list(prefix)
            .await?
            .keys()
            .filter_map(|k| k[prefix.len()..].parse().ok())
            .collect())
    }

    pub async fn delete_endpoint(&self, name_or_id: &str) -> Result<Endpoint, ControlError> {
        let endpoint = self.endpoint(name_or_id).await?;
        let networks = self.networks().await?;
        let registry = registry_of(&networks, &endpoint.network);
        self.commit(
            Txn::new()
                .delete(endpoint_key(&endpoint.id))
                .delete(endpoint_name_key(&endpoint.name))
                .delete(address_key(registry, endpoint.ipv4)),
        )
        .await?;
        Ok(endpoint)
    }
}
