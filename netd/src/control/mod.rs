//! Model operations over the store: every request (CLI, API, the Docker
//! plugin) becomes one of these, checked against the model and
//! committed in one transaction whose compares keep names, addresses and
//! map indexes unique even with several writers. Nothing here touches the
//! kernel: the reconciler follows the store.
//!
//! One room per kind of record (`networks`, `endpoints`, `services`,
//! `policies`, `members`), Docker's side (`docker`, `docker_ports`,
//! `ipam`), and what they share: the store's keys (`keys`), admission
//! (`limits`), listing by name (`records`) and the commit-retry loop
//! (`retry`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{
    model::{Endpoint, Host, ModelError, Network, Policy, Service},
    store::{Store, StoreError, Txn},
};

mod docker;
mod docker_ports;
mod endpoints;
mod ipam;
mod keys;
mod limits;
mod members;
mod networks;
mod policies;
mod records;
mod retry;
mod services;
#[cfg(test)]
mod tests;

pub use ipam::{pool_id, Pool};
pub use keys::{host_key, HOSTS, PREFIX};
pub use limits::Limits;
pub use networks::{FIRST_VNI, LAST_VNI};
pub use policies::MAX_STORED_POLICY;

use keys::CLUSTER_ID;
use retry::Attempt;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored record {key} cannot be read: {reason}")]
    Record { key: String, reason: String },
}

pub struct Control<S> {
    store: S,
    /// This netd's host name: endpoints it creates live here.
    host: String,
    limits: Limits,
    /// The revision of the latest commit made here: a caller waits for the
    /// datapath to apply at least this one.
    last_commit: AtomicU64,
    /// Stored records that could not be read, skipped (a metric).
    bad_records: AtomicU64,
}

/// The whole model as of one store revision: what one reconcile pass reads.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub revision: u64,
    pub networks: Vec<Network>,
    pub endpoints: Vec<Endpoint>,
    /// Every member, marked alive or not.
    pub hosts: Vec<Host>,
    pub services: Vec<Service>,
    pub policies: Vec<Policy>,
}

impl<S: Store> Control<S> {
    pub fn new(store: S) -> Self {
        Self::on_host(store, "")
    }

    /// Model operations made by the netd of `host`.
    pub fn on_host(store: S, host: &str) -> Self {
        Self {
            store,
            host: host.to_string(),
            limits: Limits::default(),
            last_commit: AtomicU64::new(0),
            bad_records: AtomicU64::new(0),
        }
    }

    /// The same with other capacities (tests of admission).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether `endpoint` lives on this netd's host.
    pub fn is_local(&self, endpoint: &Endpoint) -> bool {
        endpoint.host.is_empty() || endpoint.host == self.host
    }

    /// The store itself, for tests only: every change goes through the
    /// operations here.
    #[cfg(test)]
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Changes to the model from now on.
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<crate::store::WatchEvent> {
        self.store.watch()
    }

    /// This store's id, made on first use (one transaction, so two netds
    /// opening a new etcd at once agree on it).
    pub async fn cluster_id(&self) -> Result<String, ControlError> {
        loop {
            if let Some(found) = self.store.get(CLUSTER_ID).await? {
                return Ok(found.value);
            }
            let txn = Txn::new()
                .absent(CLUSTER_ID)
                .put(CLUSTER_ID, crate::model::new_id());
            match self.commit(txn).await {
                Ok(_) | Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Commits `txn` and remembers its revision.
    async fn commit(&self, txn: Txn) -> Result<u64, StoreError> {
        let revision = self.store.commit(txn).await?;
        self.last_commit.fetch_max(revision, Ordering::SeqCst);
        Ok(revision)
    }

    /// The revision of the latest commit this Control made.
    pub fn last_commit(&self) -> u64 {
        self.last_commit.load(Ordering::SeqCst)
    }

    /// Stored records skipped so far because they could not be read.
    pub fn bad_records(&self) -> u64 {
        self.bad_records.load(Ordering::Relaxed)
    }

    /// Every record under `prefix` in `entries`. One that cannot be read is
    /// logged, counted and skipped: it must not take the rest with it.
    fn decode_all<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        entries: &std::collections::BTreeMap<String, crate::store::Versioned>,
    ) -> Vec<T> {
        entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(key, v)| match decode(key, &v.value) {
                Ok(record) => Some(record),
                Err(e) => {
                    self.bad_records.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "skipping a stored record");
                    None
                }
            })
            .collect()
    }

    /// The model as of one revision.
    pub async fn model(&self) -> Result<Model, ControlError> {
        let snapshot = self.store.snapshot(PREFIX).await?;
        let entries = &snapshot.entries;
        Ok(Model {
            revision: snapshot.revision,
            networks: self.all_in(entries),
            endpoints: self.all_in(entries),
            hosts: self.members_in(entries),
            services: self.all_in(entries),
            policies: self.all_in(entries),
        })
    }

    /// Refuses to remove `kind` `name` while endpoints `of` it exist.
    async fn refuse_if_used(
        &self,
        kind: &'static str,
        name: &str,
        of: impl Fn(&Endpoint) -> bool,
    ) -> Result<(), ControlError> {
        let users: Vec<String> = self
            .endpoints()
            .await?
            .into_iter()
            .filter(|e| of(e))
            .map(|e| e.name)
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        Err(ModelError::InUse {
            kind,
            name: name.to_string(),
            endpoints: users.join(", "),
        }
        .into())
    }

    /// The record at `key`, or "no `kind` named `name`".
    async fn stored(
        &self,
        key: &str,
        kind: &'static str,
        name: &str,
    ) -> Result<crate::store::Versioned, ControlError> {
        self.store.get(key).await?.ok_or_else(|| {
            ModelError::NotFound {
                kind,
                name: name.to_string(),
            }
            .into()
        })
    }
}

/// A stored record read back; the error names its key.
fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &str) -> Result<T, ControlError> {
    serde_json::from_str(value).map_err(|e| ControlError::Record {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Model types are plain data: serialising them cannot fail.
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
