//! The four kinds of record kept by name and id, each under its own
//! prefix: one way to list them and one to find one by name or id.

use std::collections::BTreeMap;

use super::{keys, Control, ControlError};
use crate::{
    model::{Endpoint, ModelError, Network, Policy, Service},
    store::{Store, Versioned},
};

/// A record kept under `PREFIX` + its id, and named.
pub(super) trait Record: serde::de::DeserializeOwned {
    /// What a user calls it ("no network named ...").
    const KIND: &'static str;
    const PREFIX: &'static str;
    fn name(&self) -> &str;
    fn id(&self) -> &str;
}

macro_rules! record {
    ($t:ty, $kind:literal, $prefix:expr) => {
        impl Record for $t {
            const KIND: &'static str = $kind;
            const PREFIX: &'static str = $prefix;
            fn name(&self) -> &str {
                &self.name
            }
            fn id(&self) -> &str {
                &self.id
            }
        }
    };
}

record!(Network, "network", keys::NETWORKS);
record!(Endpoint, "endpoint", keys::ENDPOINTS);
record!(Service, "service", keys::SERVICES);
record!(Policy, "policy", keys::POLICIES);

impl<S: Store> Control<S> {
    /// Every record of a kind, by name.
    pub(super) async fn all<T: Record>(&self) -> Result<Vec<T>, ControlError> {
        let entries = self.store.list(T::PREFIX).await?;
        Ok(self.all_in(&entries))
    }

    /// Every record of a kind in `entries`, by name.
    pub(super) fn all_in<T: Record>(&self, entries: &BTreeMap<String, Versioned>) -> Vec<T> {
        let mut list: Vec<T> = self.decode_all(T::PREFIX, entries);
        list.sort_by(|a, b| a.name().cmp(b.name()));
        list
    }

    /// The record named or identified by `name_or_id`, or "no `kind`
    /// named ...".
    pub(super) async fn one<T: Record>(&self, name_or_id: &str) -> Result<T, ControlError> {
        self.all::<T>()
            .await?
            .into_iter()
            .find(|r| r.name() == name_or_id || r.id() == name_or_id)
            .ok_or_else(|| {
                ModelError::NotFound {
                    kind: T::KIND,
                    name: name_or_id.to_string(),
                }
                .into()
            })
    }
}
