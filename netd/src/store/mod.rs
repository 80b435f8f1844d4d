//! Where the model lives. One trait, so the single-host embedded store
//! and etcd (for clusters) are interchangeable: versioned values,
//! transactions with compares (so two writers cannot both take a name or
//! an address), and a watch of changes.

mod embedded;
mod etcd;

use std::{collections::BTreeMap, future::Future};

pub use embedded::EmbeddedStore;
pub use etcd::{EtcdStore, RESYNC_KEY};
use tokio::sync::broadcast;

/// A value and the store revision that last wrote it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Versioned {
    pub value: String,
    pub mod_revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key must not exist.
    Absent(String),
    /// The key must exist with this mod revision.
    Revision(String, u64),
}

/// All-or-nothing: if every compare holds, every put and delete happens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub puts: Vec<(String, String)>,
    pub deletes: Vec<String>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn absent(mut self, key: impl Into<String>) -> Self {
        self.compares.push(Compare::Absent(key.into()));
        self
    }

    pub fn unchanged(mut self, key: impl Into<String>, mod_revision: u64) -> Self {
        self.compares
            .push(Compare::Revision(key.into(), mod_revision));
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.puts.push((key.into(), value.into()));
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.deletes.push(key.into());
        self
    }
}

/// Keys under a prefix, all read at `revision`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: u64,
    pub entries: BTreeMap<String, Versioned>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    Put { key: String, revision: u64 },
    Delete { key: String, revision: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a compare failed on {0}: someone changed it first")]
    Conflict(String),
    #[error("store file {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd at {endpoints}: {reason}")]
    Etcd { endpoints: String, reason: String },
    #[error("store file {path} is corrupt: {reason}; it was left as it is")]
    Corrupt { path: String, reason: String },
}

pub trait Store: Send + Sync + 'static {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send;
    /// Every key under `prefix`, in key order.
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, Versioned>, StoreError>> + Send;
    /// Every key under `prefix` as of one revision, and that revision: what
    /// one reconcile pass reads, so it never mixes two states of the model.
    fn snapshot(&self, prefix: &str) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;
    /// Applies `txn` atomically; returns the new revision.
    fn commit(&self, txn: Txn) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Changes from now on (all keys; callers filter by prefix).
    fn watch(&self) -> broadcast::Receiver<WatchEvent>;

    /// Keeps `key` = `value` alive for as long as the returned future runs
    /// (spawn it): in etcd under a lease of `ttl_secs` that is kept alive,
    /// so the key vanishes when this process does. Never returns.
    fn keep_registered(
        &self,
        key: String,
        value: String,
        ttl_secs: u64,
    ) -> impl Future<Output = ()> + Send + 'static;
}

/// One store shared by several holders: in a test, the Controls of several
/// hosts over one store, as netds over one etcd.
impl<T: Store> Store for std::sync::Arc<T> {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send {
        (**self).get(key)
    }
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, Versioned>, StoreError>> + Send {
        (**self).list(prefix)
    }
    fn snapshot(&self, prefix: &str) -> impl Future<Output = Result<Snapshot, StoreError>> + Send {
        (**self).snapshot(prefix)
    }
    fn commit(&self, txn: Txn) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).commit(txn)
    }
    fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        (**self).watch()
    }
    fn keep_registered(
        &self,
        key: String,
        value: String,
        ttl_secs: u64,
    ) -> impl Future<Output = ()> + Send + 'static {
        (**self).keep_registered(key, value, ttl_secs)
    }
}
