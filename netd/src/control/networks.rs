//! Networks: a name, a subnet, an index (their map entries) and, for an
//! overlay, a VNI, each unique by compare. A network is removed only when
//! nothing uses it.

use std::collections::BTreeSet;

use super::{keys::*, to_json, Attempt, Control, ControlError};
use crate::{
    model::{ModelError, Network, NetworkSpec},
    store::{Store, Txn},
};

/// VNIs netd hands out: from 4096 up, leaving the low ones to hand-made
/// kernel VXLAN devices on the same underlay.
pub const FIRST_VNI: u32 = 4096;
pub const LAST_VNI: u32 = (1 << 24) - 1;

impl<S: Store> Control<S> {
    pub async fn networks(&self) -> Result<Vec<Network>, ControlError> {
        self.all().await
    }

    pub async fn network(&self, name_or_id: &str) -> Result<Network, ControlError> {
        self.one(name_or_id).await
    }

    pub async fn create_network(&self, spec: &NetworkSpec) -> Result<Network, ControlError> {
        self.insert_network(spec.overlay, |existing, index| {
            Network::from_spec(spec, existing, index)
        })
        .await
    }

    /// Builds a network against the current ones with the lowest free map
    /// index and commits it, retrying when another writer got there first.
    pub(super) async fn insert_network(
        &self,
        overlay: bool,
        build: impl Fn(&[Network], u32) -> Result<Network, ModelError>,
    ) -> Result<Network, ControlError> {
        let build = &build;
        self.transact(|| async move {
            let existing = self.networks().await?;
            self.limits.networks(&existing)?;
            let used: BTreeSet<u32> = existing.iter().map(|n| n.index).collect();
            let index = (1..).find(|i| !used.contains(i)).unwrap_or(u32::MAX);
            let mut network = build(&existing, index)?;
            let mut txn = Txn::new();
            if overlay {
                let taken: BTreeSet<u32> = existing.iter().filter_map(|n| n.vni).collect();
                let vni = (FIRST_VNI..=LAST_VNI)
                    .find(|v| !taken.contains(v))
                    .ok_or_else(|| {
                        ModelError::invalid("overlay", "no VXLAN network identifier left")
                    })?;
                network.vni = Some(vni);
                txn = txn
                    .absent(vni_key(vni))
                    .put(vni_key(vni), network.id.clone());
            }
            let txn = txn
                .absent(network_key(&network.id))
                .absent(network_name_key(&network.name))
                .absent(network_index_key(index))
                .absent(subnet_key(&network.subnet))
                .put(subnet_key(&network.subnet), network.id.clone())
                .put(network_key(&network.id), to_json(&network))
                .put(network_name_key(&network.name), network.id.clone())
                .put(network_index_key(index), network.id.clone());
            Ok(Attempt::Commit(txn, network))
        })
        .await
    }

    /// Removes a network that has no endpoints. Every endpoint creation
    /// rewrites its network's record, so one landing meanwhile fails this
    /// compare and the check runs again.
    pub async fn delete_network(&self, name_or_id: &str) -> Result<Network, ControlError> {
        self.transact(|| async move {
            let network = self.network(name_or_id).await?;
            let revision = self.network_revision(&network.id).await?;
            self.refuse_if_used("network", &network.name, |e| e.network == network.id)
                .await?;
            let services: Vec<String> = self
                .services()
                .await?
                .into_iter()
                .filter(|s| s.network == network.id)
                .map(|s| s.name)
                .collect();
            if !services.is_empty() {
                return Err(ModelError::invalid(
                    "network",
                    format!(
                        "{:?} still has services: {}; remove them first",
                        network.name,
                        services.join(", ")
                    ),
                )
                .into());
            }
            let mut txn = Txn::new()
                .unchanged(network_key(&network.id), revision)
                .delete(network_key(&network.id))
                .delete(network_name_key(&network.name))
                .delete(network_index_key(network.index))
                .delete(subnet_key(&network.subnet));
            if let Some(vni) = network.vni {
                txn = txn.delete(vni_key(vni));
            }
            Ok(Attempt::Commit(txn, network))
        })
        .await
    }

    /// The revision network `id` was last written at.
    pub(super) async fn network_revision(&self, id: &str) -> Result<u64, ControlError> {
        let stored = self.stored(&network_key(id), "network", id).await?;
        Ok(stored.mod_revision)
    }

    /// Adds to `txn` the guard every endpoint creation carries: its
    /// network is still there, unchanged, and is rewritten so that a
    /// concurrent deletion of it fails its own compare.
    pub(super) async fn guard_network(
        &self,
        txn: Txn,
        network_id: &str,
    ) -> Result<Txn, ControlError> {
        let key = network_key(network_id);
        let stored = self.stored(&key, "network", network_id).await?;
        Ok(txn
            .unchanged(key.clone(), stored.mod_revision)
            .put(key, stored.value))
    }
}

/// The address registry of network `id` (its own id if it is not known).
pub(super) fn registry_of<'a>(networks: &'a [Network], id: &'a str) -> &'a str {
    networks
        .iter()
        .find(|n| n.id == id)
        .map_or(id, Network::address_registry)
}
