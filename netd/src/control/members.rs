//! The cluster's hosts: netds that join with their underlay address and
//! keep a registration alive under a lease, and external hosts (no netd,
//! VXLAN all the same) added by hand. Each has an index of its own, kept
//! until `netd host rm`.

use std::collections::{BTreeMap, BTreeSet};

use super::{decode, keys::*, to_json, Attempt, Control, ControlError};
use crate::{
    model::{check_name, Host, ModelError},
    store::{Store, StoreError, Txn, Versioned},
};

impl<S: Store> Control<S> {
    /// Ends this host's registration at once (a clean stop): the other
    /// hosts start its grace period now, and `host rm` can follow.
    pub async fn unregister(&self, name: &str) -> Result<(), ControlError> {
        self.commit(Txn::new().delete(host_key(name))).await?;
        Ok(())
    }

    /// Keeps this host registered (alive) for as long as the future runs.
    pub fn keep_registered(
        &self,
        me: &Host,
        ttl_secs: u64,
    ) -> impl std::future::Future<Output = ()> + Send + 'static + use<'_, S> {
        self.store
            .keep_registered(host_key(&me.name), to_json(me), ttl_secs)
    }

    /// Every host of the cluster, each marked alive when its netd holds its
    /// registration (external hosts always are).
    pub async fn hosts(&self) -> Result<Vec<Host>, ControlError> {
        let mut entries = self.store.list(MEMBERS).await?;
        entries.extend(self.store.list(HOSTS).await?);
        Ok(self.members_in(&entries))
    }

    /// The members in `entries`, sorted by name, each marked alive when
    /// `entries` also holds its registration (external hosts always are).
    pub(super) fn members_in(&self, entries: &BTreeMap<String, Versioned>) -> Vec<Host> {
        let mut hosts: Vec<Host> = self.decode_all(MEMBERS, entries);
        for host in &mut hosts {
            host.alive = host.external || entries.contains_key(&host_key(&host.name));
        }
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        hosts
    }

    /// Records this netd's host as a member of the cluster (once: its
    /// index is kept across restarts), or updates its underlay address.
    /// Also moves external hosts recorded by netd before members existed.
    pub async fn join(&self, me: &Host) -> Result<Host, ControlError> {
        self.adopt_legacy_external_hosts().await?;
        self.transact(|| async move {
            let key = member_key(&me.name);
            Ok(match self.store.get(&key).await? {
                Some(stored) => {
                    let mut host: Host = decode(&key, &stored.value)?;
                    if host.external {
                        return Err(ModelError::invalid(
                            "host-name",
                            format!("{:?} is an external host: `netd host rm` it first", me.name),
                        )
                        .into());
                    }
                    if host.underlay_ip == me.underlay_ip {
                        return Ok(Attempt::Done(host));
                    }
                    host.underlay_ip = me.underlay_ip;
                    let txn = Txn::new()
                        .unchanged(key.clone(), stored.mod_revision)
                        .put(key, to_json(&host));
                    Attempt::Commit(txn, host)
                }
                None => {
                    let hosts = self.hosts().await?;
                    self.limits.hosts(&hosts)?;
                    let host = Host {
                        index: free_host_index(&hosts),
                        external: false,
                        alive: false,
                        ..me.clone()
                    };
                    Attempt::Commit(self.new_member_txn(&host), host)
                }
            })
        })
        .await
    }

    /// The transaction that records a new member under a free index.
    fn new_member_txn(&self, host: &Host) -> Txn {
        Txn::new()
            .absent(member_key(&host.name))
            .absent(host_index_key(host.index))
            .put(member_key(&host.name), to_json(host))
            .put(host_index_key(host.index), host.name.clone())
    }

    /// External hosts used to live beside the registrations; they become
    /// members with an index of their own.
    async fn adopt_legacy_external_hosts(&self) -> Result<(), ControlError> {
        for (key, stored) in self.store.list(HOSTS).await? {
            let Ok(host) = serde_json::from_str::<Host>(&stored.value) else {
                continue;
            };
            if !host.external {
                continue;
            }
            let hosts = self.hosts().await?;
            let member = Host {
                index: free_host_index(&hosts),
                ..host
            };
            let txn = self
                .new_member_txn(&member)
                .unchanged(key.clone(), stored.mod_revision)
                .delete(key);
            if let Err(e) = self.commit(txn).await {
                tracing::warn!(host = %member.name, error = %e, "external host not moved yet");
            }
        }
        Ok(())
    }

    // External hosts: hosts without netd that speak VXLAN, added by hand.

    /// The external host `name` and the revision it was stored at.
    pub(super) async fn external_host(&self, name: &str) -> Result<(Host, u64), ControlError> {
        let (host, revision) = self.member(name).await?;
        if !host.external {
            return Err(ModelError::invalid(
                "host",
                format!("{name:?} runs netd: create its endpoints through its own netd"),
            )
            .into());
        }
        Ok((host, revision))
    }

    /// The member `name` and the revision it was stored at.
    async fn member(&self, name: &str) -> Result<(Host, u64), ControlError> {
        let key = member_key(name);
        let stored = self.stored(&key, "host", name).await?;
        let host: Host = decode(&key, &stored.value)?;
        Ok((host, stored.mod_revision))
    }

    /// Adds `name` at `underlay_ip` as an external host: it has no lease and
    /// stays until [`Control::remove_host`].
    pub async fn add_external_host(
        &self,
        name: &str,
        underlay_ip: std::net::Ipv4Addr,
    ) -> Result<Host, ControlError> {
        check_name(name)?;
        if underlay_ip.is_unspecified() || underlay_ip.is_broadcast() || underlay_ip.is_multicast()
        {
            return Err(ModelError::invalid(
                "underlay-ip",
                format!("{underlay_ip} is not a host address"),
            )
            .into());
        }
        let hosts = self.hosts().await?;
        self.limits.hosts(&hosts)?;
        if let Some(other) = hosts.iter().find(|h| h.underlay_ip == Some(underlay_ip)) {
            return Err(ModelError::invalid(
                "underlay-ip",
                format!("{underlay_ip} is already host {:?}'s", other.name),
            )
            .into());
        }
        let host = Host {
            name: name.to_string(),
            underlay_ip: Some(underlay_ip),
            external: true,
            index: free_host_index(&hosts),
            alive: true,
        };
        match self.commit(self.new_member_txn(&host)).await {
            Ok(_) => Ok(host),
            Err(StoreError::Conflict(_)) => Err(ModelError::Exists {
                kind: "host",
                name: name.to_string(),
            }
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a host that has no endpoints left: an external one, or one
    /// whose netd has stopped (a planned exit: the other hosts drop it at
    /// once instead of after the grace period). Its index is free again.
    pub async fn remove_host(&self, name: &str) -> Result<Host, ControlError> {
        self.transact(|| async move {
            let (host, revision) = self.member(name).await?;
            if !host.external && self.store.get(&host_key(name)).await?.is_some() {
                return Err(ModelError::invalid(
                    "host",
                    format!("the netd of {name:?} is running: stop it first, then remove the host"),
                )
                .into());
            }
            self.refuse_if_used("host", &host.name, |e| e.host == host.name)
                .await?;
            // An endpoint created meanwhile rewrites the host, and a netd
            // starting meanwhile registers: then look again.
            let txn = Txn::new()
                .unchanged(member_key(&host.name), revision)
                .absent(host_key(&host.name))
                .delete(member_key(&host.name))
                .delete(host_index_key(host.index));
            Ok(Attempt::Commit(txn, host))
        })
        .await
    }
}

/// The lowest index no host has (indexes start at 1).
fn free_host_index(hosts: &[Host]) -> u32 {
    let used: BTreeSet<u32> = hosts.iter().map(|h| h.index).collect();
    (1..).find(|i| !used.contains(i)).unwrap_or(u32::MAX)
}
