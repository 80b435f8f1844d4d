//! Services: a VIP (an address of the network's registry, so no endpoint
//! takes it) and an index (its Maglev table), both unique by compare, and
//! the ports they publish on every host.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::Ipv4Addr,
};

use super::{keys::*, networks::registry_of, to_json, Attempt, Control, ControlError};
use crate::{
    model::{ModelError, PublishedPort, Service, ServiceSpec, ServiceUpdate},
    store::{Store, Txn},
};

impl<S: Store> Control<S> {
    pub async fn services(&self) -> Result<Vec<Service>, ControlError> {
        self.all().await
    }

    pub async fn service(&self, name_or_id: &str) -> Result<Service, ControlError> {
        self.one(name_or_id).await
    }

    pub async fn create_service(&self, spec: &ServiceSpec) -> Result<Service, ControlError> {
        let mut created = self.create_services(std::slice::from_ref(spec)).await?;
        created.pop().ok_or_else(|| {
            ControlError::Model(ModelError::NotFound {
                kind: "service",
                name: spec.name.clone(),
            })
        })
    }

    /// Creates every service of `specs` in one transaction, or none: what
    /// a batch (a migration, `service create --file`) needs. Each is
    /// checked against the ones before it. (etcd caps the operations of
    /// one transaction, 128 by default: a larger batch there is refused
    /// whole by etcd; the embedded store has no cap.)
    pub async fn create_services(
        &self,
        specs: &[ServiceSpec],
    ) -> Result<Vec<Service>, ControlError> {
        self.transact(|| async move {
            let networks = self.networks().await?;
            let endpoints = self.endpoints().await?;
            let mut services = self.services().await?;
            let mut used: BTreeSet<u32> = services.iter().map(|s| s.index).collect();
            let mut taken: BTreeMap<String, BTreeSet<Ipv4Addr>> = Default::default();
            let mut txn = Txn::new();
            let mut created = Vec::with_capacity(specs.len());
            let mut guarded = BTreeSet::new();
            let mut names: HashSet<String> = services.iter().map(|s| s.name.clone()).collect();
            let mut cursor: BTreeMap<String, Ipv4Addr> = Default::default();
            let mut next_index = 1;
            for (i, spec) in specs.iter().enumerate() {
                // Indexes, like VIPs, are searched from the last one found.
                let index = (next_index..)
                    .find(|i| !used.contains(i))
                    .unwrap_or(u32::MAX);
                next_index = index.saturating_add(1);
                if !names.insert(spec.name.clone()) {
                    return Err(ModelError::Exists {
                        kind: "service",
                        name: spec.name.clone(),
                    }
                    .into());
                }
                let network = networks
                    .iter()
                    .find(|n| n.name == spec.network || n.id == spec.network);
                let registry = network
                    .map(|n| n.address_registry().to_string())
                    .unwrap_or_default();
                if !taken.contains_key(&registry) {
                    let held = self.addresses_taken(&registry).await?;
                    taken.insert(registry.clone(), held);
                }
                let held = taken.entry(registry.clone()).or_default();
                // The next free address, found from where the last one was.
                let mut spec = std::borrow::Cow::Borrowed(spec);
                let publish_only = spec.ports.is_empty() && !spec.publish.is_empty();
                if let (None, crate::model::Mode::Vip, Some(network), false) =
                    (&spec.vip, spec.mode, network, publish_only)
                {
                    let after = cursor.get(&registry).copied();
                    if let Ok(ip) = crate::ipam::allocate_after(network, held, after) {
                        spec.to_mut().vip = Some(ip.to_string());
                    }
                }
                let in_batch = |e| in_batch(specs.len(), i, &spec.name, e);
                let service = Service::from_spec(&spec, &networks, &[], &endpoints, held, index)
                    .map_err(in_batch)?;
                self.limits.service(&service, &services).map_err(in_batch)?;
                if guarded.insert(service.network.clone()) {
                    txn = self.guard_network(txn, &service.network).await?;
                }
                txn = publish(txn, &service, &[], &services).map_err(in_batch)?;
                txn = txn
                    .absent(service_name_key(&service.name))
                    .absent(service_index_key(index))
                    .put(service_key(&service.id), to_json(&service))
                    .put(service_name_key(&service.name), service.id.clone())
                    .put(service_index_key(index), service.id.clone());
                if let Some(vip) = service.vip {
                    let address = address_key(&registry, vip);
                    txn = txn
                        .absent(address.clone())
                        .put(address, vip_holder(&service.id));
                    held.insert(vip);
                    cursor.insert(registry.clone(), vip);
                }
                used.insert(index);
                services.push(service.clone());
                created.push(service);
            }
            Ok(Attempt::Commit(txn, created))
        })
        .await
    }

    /// Applies `update` to the service as stored, unless it changed meanwhile.
    pub async fn update_service(
        &self,
        name_or_id: &str,
        update: &ServiceUpdate,
    ) -> Result<Service, ControlError> {
        self.transact(|| async move {
            let current = self.service(name_or_id).await?;
            let key = service_key(&current.id);
            let stored = self.stored(&key, "service", name_or_id).await?;
            let networks = self.networks().await?;
            let endpoints = self.endpoints().await?;
            let next = current.updated(update, &networks, &endpoints)?;
            let others: Vec<Service> = self
                .services()
                .await?
                .into_iter()
                .filter(|s| s.id != current.id)
                .collect();
            self.limits.service(&next, &others)?;
            let txn = publish(Txn::new(), &next, &current.published, &others)?;
            let txn = txn
                .unchanged(key.clone(), stored.mod_revision)
                .put(key, to_json(&next));
            Ok(Attempt::Commit(txn, next))
        })
        .await
    }

    pub async fn delete_service(&self, name_or_id: &str) -> Result<Service, ControlError> {
        let service = self.service(name_or_id).await?;
        let networks = self.networks().await?;
        let mut txn = Txn::new()
            .delete(service_key(&service.id))
            .delete(service_name_key(&service.name))
            .delete(service_index_key(service.index));
        for port in &service.published {
            txn = txn.delete(published_key(port));
        }
        if let Some(vip) = service.vip {
            txn = txn.delete(address_key(registry_of(&networks, &service.network), vip));
        }
        self.commit(txn).await?;
        Ok(service)
    }
}

/// `txn` taking the ports `service` publishes now and had not before
/// (`before`), and letting go of those it no longer does. A port another
/// service holds, or that this host cannot take, is refused with the cause.
fn publish(
    mut txn: Txn,
    service: &Service,
    before: &[PublishedPort],
    others: &[Service],
) -> Result<Txn, ModelError> {
    let same = |a: &PublishedPort, b: &PublishedPort| {
        (a.published, a.protocol) == (b.published, b.protocol)
    };
    for port in before {
        if !service.published.iter().any(|p| same(p, port)) {
            txn = txn.delete(published_key(port));
        }
    }
    for port in &service.published {
        if before.iter().any(|p| same(p, port)) {
            continue;
        }
        if let Some(other) = others
            .iter()
            .find(|o| o.published.iter().any(|p| same(p, port)))
        {
            return Err(ModelError::invalid(
                "publish",
                format!(
                    "{}/{} is published by service {:?} already",
                    port.published, port.protocol, other.name
                ),
            ));
        }
        crate::host_ports::check(port)?;
        let key = published_key(port);
        txn = txn.absent(key.clone()).put(key, service.id.clone());
    }
    Ok(txn)
}

/// A refusal inside a batch of several names the service it came from.
fn in_batch(len: usize, position: usize, name: &str, e: ModelError) -> ModelError {
    match e {
        ModelError::Invalid { field, reason } if len > 1 => ModelError::Invalid {
            field,
            reason: format!(
                "{reason} (service {name:?}, #{} of the batch; nothing was created)",
                position + 1
            ),
        },
        other => other,
    }
}
