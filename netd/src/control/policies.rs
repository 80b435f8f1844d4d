//! Policies: a name and an index (its rules' counters), unique by compare.
//! A policy is replaced by removing it and creating it again.

use std::collections::BTreeSet;

use super::{keys::*, to_json, Attempt, Control, ControlError};
use crate::{
    model::{ModelError, Policy, PolicySpec},
    store::{Store, Txn},
};

/// A policy is one store value, written in one request: etcd's default
/// limit on a request is 1.5 MiB, and the transaction carries two small
/// keys besides.
pub const MAX_STORED_POLICY: usize = 1_400_000;

impl<S: Store> Control<S> {
    pub async fn policies(&self) -> Result<Vec<Policy>, ControlError> {
        self.all().await
    }

    pub async fn policy(&self, name_or_id: &str) -> Result<Policy, ControlError> {
        self.one(name_or_id).await
    }

    pub async fn create_policy(&self, spec: &PolicySpec) -> Result<Policy, ControlError> {
        self.transact(|| async move {
            let networks = self.networks().await?;
            let services = self.services().await?;
            let policies = self.policies().await?;
            if policies.iter().any(|p| p.name == spec.name) {
                return Err(ModelError::Exists {
                    kind: "policy",
                    name: spec.name.clone(),
                }
                .into());
            }
            let used: BTreeSet<u32> = policies.iter().map(|p| p.index).collect();
            // Rule ids are `index << 16 | position`, within 32 bits.
            let Some(index) = (1..=u32::from(u16::MAX)).find(|i| !used.contains(i)) else {
                return Err(ModelError::invalid("name", "65535 policies exist already").into());
            };
            let policy = Policy::from_spec(spec, &networks, &services, index)?;
            let endpoints = self.endpoints().await?;
            let mut all = policies.clone();
            all.push(policy.clone());
            self.limits
                .policies(&policy.name, &networks, &endpoints, &services, &all)?;
            let stored = to_json(&policy);
            if stored.len() > MAX_STORED_POLICY {
                return Err(ModelError::invalid(
                    "ingress",
                    format!(
                        "{} rules take {} bytes in the store, over the {MAX_STORED_POLICY} a policy may take \
                         (etcd refuses requests over 1.5 MiB): split them across policies that select \
                         the same endpoints",
                        policy.ingress.as_ref().map_or(0, Vec::len)
                            + policy.egress.as_ref().map_or(0, Vec::len),
                        stored.len()
                    ),
                )
                .into());
            }
            let txn = Txn::new()
                .absent(policy_name_key(&policy.name))
                .absent(policy_index_key(index))
                .put(policy_key(&policy.id), stored)
                .put(policy_name_key(&policy.name), policy.id.clone())
                .put(policy_index_key(index), policy.id.clone());
            Ok(Attempt::Commit(txn, policy))
        })
        .await
    }

    pub async fn delete_policy(&self, name_or_id: &str) -> Result<Policy, ControlError> {
        let policy = self.policy(name_or_id).await?;
        let txn = Txn::new()
            .delete(policy_key(&policy.id))
            .delete(policy_name_key(&policy.name))
            .delete(policy_index_key(policy.index));
        self.commit(txn).await?;
        Ok(policy)
    }
}
