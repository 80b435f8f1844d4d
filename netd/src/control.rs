//! Model operations over the store: every request (CLI, API, later the
//! Docker plugin) becomes one of these, checked against the model and
//! committed in one transaction whose compares keep names, addresses and
//! map indexes unique even with several writers. Nothing here touches the
//! kernel: the reconciler follows the store.

use std::collections::BTreeSet;

use crate::{
    model::{check_name, Endpoint, EndpointSpec, Host, ModelError, Network, NetworkSpec},
    store::{Store, StoreError, Txn},
};

pub const PREFIX: &str = "/netd/";
const NETWORKS: &str = "/netd/networks/";
const ENDPOINTS: &str = "/netd/endpoints/";

/// Registrations of running netds, under a lease: a key per live host.
pub const HOSTS: &str = "/netd/hosts/";
/// Every host of the cluster, netd or external, with its index; kept
/// until `netd host rm`.
const MEMBERS: &str = "/netd/members/";

/// The key a running netd keeps alive under its lease.
pub fn host_key(name: &str) -> String {
    format!("{HOSTS}{name}")
}
fn member_key(name: &str) -> String {
    format!("{MEMBERS}{name}")
}
fn host_index_key(index: u32) -> String {
    format!("/netd/host-index/{index}")
}

/// One id per store, made by the first netd that opens it: what links and
/// pins are marked with, so a netd never takes another store's for its own.
const CLUSTER_ID: &str = "/netd/cluster-id";

fn network_key(id: &str) -> String {
    format!("{NETWORKS}{id}")
}
fn network_name_key(name: &str) -> String {
    format!("/netd/names/network/{name}")
}
fn vni_key(vni: u32) -> String {
    format!("/netd/vni/{vni}")
}

/// VNIs netd hands out: from 4096 up, leaving the low ones to hand-made
/// kernel VXLAN devices on the same underlay.
pub const FIRST_VNI: u32 = 4096;
pub const LAST_VNI: u32 = (1 << 24) - 1;

fn network_index_key(index: u32) -> String {
    format!("/netd/network-index/{index}")
}
fn endpoint_key(id: &str) -> String {
    format!("{ENDPOINTS}{id}")
}
fn endpoint_name_key(name: &str) -> String {
    format!("/netd/names/endpoint/{name}")
}
fn address_key(network_id: &str, ip: std::net::Ipv4Addr) -> String {
    format!("/netd/addresses/{network_id}/{ip}")
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored record {key} cannot be read: {reason}")]
    Record { key: String, reason: String },
}

/// How often a transaction is retried when another writer got there first.
/// Every round at least one of the colliding writers wins, so N writers at once
/// need at most N attempts; 100 covers a burst of 100.
const RETRIES: usize = 100;

/// After a failed commit: a conflict within the retry budget waits (see
/// [`back_off`]) and says "go again"; anything else is the answer.
async fn retry_after(error: StoreError, attempt: &mut usize) -> Result<(), ControlError> {
    match error {
        StoreError::Conflict(_) if *attempt < RETRIES => {
            *attempt += 1;
            back_off(*attempt).await;
            Ok(())
        }
        other => Err(other.into()),
    }
}

/// Waits a random moment that grows with the attempt, so writers that
/// collided do not collide again in lockstep.
async fn back_off(attempt: usize) {
    let id = crate::model::new_id();
    let noise = u64::from_str_radix(&id[..4], 16).unwrap_or(0);
    let ceiling_ms = 1u64 << attempt.min(6);
    tokio::time::sleep(std::time::Duration::from_micros(
        noise % (ceiling_ms * 1000),
    ))
    .await;
}

/// What every host's maps can hold: a request that would take one past
/// its capacity is refused up front, naming the limit, and writes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// NETD_NETWORKS (and NETD_VNIS).
    pub networks: u32,
    /// NETD_ENDPOINTS: a host's own endpoints plus every overlay endpoint
    /// of the other hosts.
    pub endpoints: u32,
    /// NETD_HOSTS: the other hosts.
    pub hosts: u32,
}

impl Default for Limits {
    fn default() -> Self {
        use crate::dataplane::tables;
        let max = |name| tables::decl(name).map_or(0, |t| t.max_entries);
        Self {
            networks: max(tables::NETWORKS.name),
            endpoints: max(tables::ENDPOINTS.name),
            hosts: max(tables::HOSTS.name),
        }
    }
}

impl Limits {
    fn networks(&self, existing: &[Network]) -> Result<(), ModelError> {
        if existing.len() < self.networks as usize {
            return Ok(());
        }
        Err(ModelError::Full {
            what: "network",
            map: "NETD_NETWORKS",
            host: "every host".into(),
            limit: self.networks,
            have: existing.len(),
        })
    }

    /// Whether one more endpoint of `network` on `host` fits every host.
    fn endpoint(
        &self,
        host: &str,
        network: &str,
        networks: &[Network],
        existing: &[Endpoint],
    ) -> Result<(), ModelError> {
        let overlay = |id: &str| networks.iter().any(|n| n.id == id && n.vni.is_some());
        let mut hosts: BTreeSet<&str> = existing.iter().map(|e| e.host.as_str()).collect();
        hosts.insert(host);
        // A host with no endpoint of its own still holds every overlay one.
        hosts.insert("\0any other host");
        for h in hosts {
            let held = |e: &Endpoint| e.host == h || overlay(&e.network);
            let have = existing.iter().filter(|e| held(e)).count();
            let adds = h == host || overlay(network);
            if adds && have >= self.endpoints as usize {
                return Err(ModelError::Full {
                    what: "endpoint",
                    map: "NETD_ENDPOINTS",
                    host: if h.starts_with('\0') {
                        "every host".into()
                    } else {
                        format!("host {h:?}")
                    },
                    limit: self.endpoints,
                    have,
                });
            }
        }
        Ok(())
    }

    fn hosts(&self, existing: &[Host]) -> Result<(), ModelError> {
        if existing.len() < self.hosts as usize {
            return Ok(());
        }
        Err(ModelError::Full {
            what: "host",
            map: "NETD_HOSTS",
            host: "every host".into(),
            limit: self.hosts,
            have: existing.len(),
        })
    }
}

pub struct Control<S> {
    store: S,
    /// This netd's host name: endpoints it creates live here.
    host: String,
    limits: Limits,
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

    pub fn store(&self) -> &S {
        &self.store
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
            match self.store.commit(txn).await {
                Ok(_) | Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn load<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<T>, ControlError> {
        let mut out = Vec::new();
        for (key, v) in self.store.list(prefix).await? {
            out.push(decode(&key, &v.value)?);
        }
        Ok(out)
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

    /// Every host of the cluster, each marked alive when its netd holds its
    /// registration (external hosts always are).
    pub async fn hosts(&self) -> Result<Vec<Host>, ControlError> {
        let registered: BTreeSet<String> = self
            .store
            .list(HOSTS)
            .await?
            .into_keys()
            .map(|key| key[HOSTS.len()..].to_string())
            .collect();
        let mut list: Vec<Host> = self.load(MEMBERS).await?;
        for host in &mut list {
            host.alive = host.external || registered.contains(&host.name);
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    /// Records this netd's host as a member of the cluster (once: its
    /// index is kept across restarts), or updates its underlay address.
    /// Also moves external hosts recorded by netd before members existed.
    pub async fn join(&self, me: &Host) -> Result<Host, ControlError> {
        self.adopt_legacy_external_hosts().await?;
        let mut attempt = 0;
        loop {
            let key = member_key(&me.name);
            let txn = match self.store.get(&key).await? {
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
                        return Ok(host);
                    }
                    host.underlay_ip = me.underlay_ip;
                    Txn::new()
                        .unchanged(key.clone(), stored.mod_revision)
                        .put(key, to_json(&host))
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
                    self.new_member_txn(&host)
                }
            };
            match self.store.commit(txn).await {
                Ok(_) => {}
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
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
            if let Err(e) = self.store.commit(txn).await {
                tracing::warn!(host = %member.name, error = %e, "external host not moved yet");
            }
        }
        Ok(())
    }

    pub async fn networks(&self) -> Result<Vec<Network>, ControlError> {
        let mut list: Vec<Network> = self.load(NETWORKS).await?;
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, ControlError> {
        let mut list: Vec<Endpoint> = self.load(ENDPOINTS).await?;
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    pub async fn network(&self, name_or_id: &str) -> Result<Network, ControlError> {
        self.networks()
            .await?
            .into_iter()
            .find(|n| n.name == name_or_id || n.id == name_or_id)
            .ok_or_else(|| {
                ModelError::NotFound {
                    kind: "network",
                    name: name_or_id.to_string(),
                }
                .into()
            })
    }

    pub async fn endpoint(&self, name_or_id: &str) -> Result<Endpoint, ControlError> {
        self.endpoints()
            .await?
            .into_iter()
            .find(|e| e.name == name_or_id || e.id == name_or_id)
            .ok_or_else(|| {
                ModelError::NotFound {
                    kind: "endpoint",
                    name: name_or_id.to_string(),
                }
                .into()
            })
    }

    pub async fn create_network(&self, spec: &NetworkSpec) -> Result<Network, ControlError> {
        self.insert_network(spec.overlay, |existing, index| {
            Network::from_spec(spec, existing, index)
        })
        .await
    }

    /// Builds a network against the current ones with the lowest free map
    /// index and commits it, retrying when another writer got there first.
    async fn insert_network(
        &self,
        overlay: bool,
        build: impl Fn(&[Network], u32) -> Result<Network, ModelError>,
    ) -> Result<Network, ControlError> {
        let mut attempt = 0;
        loop {
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
                .put(network_key(&network.id), to_json(&network))
                .put(network_name_key(&network.name), network.id.clone())
                .put(network_index_key(index), network.id.clone());
            match self.store.commit(txn).await {
                Ok(_) => return Ok(network),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
    }

    pub async fn delete_network(&self, name_or_id: &str) -> Result<Network, ControlError> {
        let network = self.network(name_or_id).await?;
        self.refuse_if_used("network", &network.name, |e| e.network == network.id)
            .await?;
        let mut txn = Txn::new()
            .delete(network_key(&network.id))
            .delete(network_name_key(&network.name))
            .delete(network_index_key(network.index));
        if let Some(vni) = network.vni {
            txn = txn.delete(vni_key(vni));
        }
        self.store.commit(txn).await?;
        Ok(network)
    }

    pub async fn create_endpoint(&self, spec: &EndpointSpec) -> Result<Endpoint, ControlError> {
        let mut attempt = 0;
        loop {
            let networks = self.networks().await?;
            let endpoints = self.endpoints().await?;
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
            let txn = txn
                .absent(endpoint_name_key(&endpoint.name))
                .absent(address_key(&endpoint.network, endpoint.ipv4))
                .put(endpoint_key(&endpoint.id), to_json(&endpoint))
                .put(endpoint_name_key(&endpoint.name), endpoint.id.clone())
                .put(
                    address_key(&endpoint.network, endpoint.ipv4),
                    endpoint.id.clone(),
                );
            match self.store.commit(txn).await {
                Ok(_) => return Ok(endpoint),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
    }

    pub async fn delete_endpoint(&self, name_or_id: &str) -> Result<Endpoint, ControlError> {
        let endpoint = self.endpoint(name_or_id).await?;
        self.store
            .commit(
                Txn::new()
                    .delete(endpoint_key(&endpoint.id))
                    .delete(endpoint_name_key(&endpoint.name))
                    .delete(address_key(&endpoint.network, endpoint.ipv4)),
            )
            .await?;
        Ok(endpoint)
    }
}

/// External hosts: hosts without netd that speak VXLAN, added by hand.
impl<S: Store> Control<S> {
    /// The external host `name` and the revision it was stored at.
    async fn external_host(&self, name: &str) -> Result<(Host, u64), ControlError> {
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
        let stored = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ModelError::NotFound {
                kind: "host",
                name: name.to_string(),
            })?;
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
        match self.store.commit(self.new_member_txn(&host)).await {
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
        let mut attempt = 0;
        loop {
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
            match self.store.commit(txn).await {
                Ok(_) => return Ok(host),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
    }
}

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
        self.insert_network(false, |existing, index| {
            let mut network = Network::from_spec(&spec, existing, index)?;
            network.id = docker_id.to_string();
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
        self.store
            .commit(
                Txn::new()
                    .absent(endpoint_key(&endpoint.id))
                    .absent(address_key(&endpoint.network, endpoint.ipv4))
                    .put(endpoint_key(&endpoint.id), to_json(&endpoint))
                    .put(endpoint_name_key(&endpoint.name), endpoint.id.clone())
                    .put(
                        address_key(&endpoint.network, endpoint.ipv4),
                        endpoint.id.clone(),
                    ),
            )
            .await?;
        Ok(endpoint)
    }

    /// Join (a sandbox path) or Leave (an empty path).
    pub async fn set_sandbox(
        &self,
        endpoint_id: &str,
        sandbox: std::path::PathBuf,
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
        endpoint.sandbox = sandbox;
        self.store
            .commit(Txn {
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

/// The lowest index no host has (indexes start at 1).
fn free_host_index(hosts: &[Host]) -> u32 {
    let used: BTreeSet<u32> = hosts.iter().map(|h| h.index).collect();
    (1..).find(|i| !used.contains(i)).unwrap_or(u32::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::Manager, store::EmbeddedStore};

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn net(name: &str, subnet: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            subnet: subnet.into(),
            ..Default::default()
        }
    }

    /// Each request was refused, saying its expected words.
    fn assert_refused(refusals: &[Option<String>], expected: &[&str]) {
        assert_eq!(refusals.len(), expected.len());
        for (got, want) in refusals.iter().zip(expected) {
            assert!(
                got.as_deref().is_some_and(|g| g.contains(want)),
                "{got:?} lacks {want:?}"
            );
        }
    }

    fn ep(name: &str, network: &str, netns: &str) -> EndpointSpec {
        EndpointSpec {
            name: name.into(),
            network: network.into(),
            netns: netns.into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_list_delete_and_refusals_change_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let c = Control::new(EmbeddedStore::open(dir.path()).expect("store"));
            let n1 = c
                .create_network(&net("n1", "10.1.0.0/24"))
                .await
                .expect("n1");
            let n2 = c
                .create_network(&net("n2", "10.2.0.0/24"))
                .await
                .expect("n2");
            assert_eq!((n1.index, n2.index), (1, 2));
            let e1 = c
                .create_endpoint(&ep("e1", "n1", "/run/netns/a"))
                .await
                .expect("e1");
            let before = c.store().list(PREFIX).await.expect("list");

            let refusals = [
                c.create_network(&net("n3", "10.1.0.0/16"))
                    .await
                    .err()
                    .map(|e| e.to_string()),
                c.create_network(&net("n1", "10.3.0.0/24"))
                    .await
                    .err()
                    .map(|e| e.to_string()),
                c.create_endpoint(&ep("e1", "n1", "/run/netns/b"))
                    .await
                    .err()
                    .map(|e| e.to_string()),
                c.create_endpoint(&EndpointSpec {
                    ip: Some("10.1.0.2".into()),
                    ..ep("e2", "n1", "/run/netns/b")
                })
                .await
                .err()
                .map(|e| e.to_string()),
                c.delete_network("n1").await.err().map(|e| e.to_string()),
                c.delete_endpoint("nope").await.err().map(|e| e.to_string()),
            ];
            let expected = [
                "overlaps network \"n1\"",
                "network \"n1\" already exists",
                "endpoint \"e1\" already exists",
                "address 10.1.0.2 is already in use",
                "network \"n1\" still has endpoints: e1; remove them first",
                "no endpoint named \"nope\"",
            ];
            assert_refused(&refusals, &expected);
            assert_eq!(
                c.store().list(PREFIX).await.expect("list"),
                before,
                "a refusal changed the store"
            );

            c.delete_endpoint("e1").await.expect("delete e1");
            // Its address is free again.
            let again = c
                .create_endpoint(&ep("e3", "n1", "/run/netns/c"))
                .await
                .expect("e3");
            assert_eq!(again.ipv4, e1.ipv4);
            c.delete_endpoint("e3").await.expect("delete e3");
            c.delete_network("n1").await.expect("delete n1");
            // Its index is reused by the next network.
            assert_eq!(
                c.create_network(&net("n4", "10.4.0.0/24"))
                    .await
                    .expect("n4")
                    .index,
                1
            );
        });
    }

    #[test]
    fn a_host_keeps_the_index_it_joined_with_until_it_is_removed() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let c = Control::on_host(EmbeddedStore::open(dir.path()).expect("store"), "b");
            let host = |name: &str, last: u8| Host {
                name: name.into(),
                underlay_ip: Some(std::net::Ipv4Addr::new(192, 0, 2, last)),
                external: false,
                index: 0,
                alive: true,
            };
            assert_eq!(c.join(&host("b", 2)).await.expect("b").index, 1);
            assert_eq!(c.join(&host("a", 1)).await.expect("a").index, 2);
            // Again, or with a new address: the same index.
            assert_eq!(c.join(&host("b", 2)).await.expect("b").index, 1);
            let moved = c.join(&host("b", 9)).await.expect("b moved");
            assert_eq!(
                (moved.index, moved.underlay_ip),
                (1, host("b", 9).underlay_ip)
            );
            // a is running (registered): not removable; once down, it is.
            c.store()
                .commit(Txn::new().put(host_key("a"), "{}"))
                .await
                .expect("register");
            let refused = c.remove_host("a").await.expect_err("running");
            assert!(refused.to_string().contains("is running"), "{refused}");
            let listed = c.hosts().await.expect("hosts");
            assert_eq!(
                listed
                    .iter()
                    .map(|h| (h.name.as_str(), h.alive))
                    .collect::<Vec<_>>(),
                [("a", true), ("b", false)]
            );
            c.store()
                .commit(Txn::new().delete(host_key("a")))
                .await
                .expect("lease ends");
            c.remove_host("a").await.expect("removed");
            assert_eq!(
                c.join(&host("c", 3)).await.expect("c").index,
                2,
                "a's index is free"
            );
        });
    }

    #[test]
    fn a_request_past_a_maps_capacity_is_refused_with_the_limit_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let limits = Limits {
                networks: 2,
                endpoints: 3,
                hosts: 1,
            };
            let mut c = Control::on_host(EmbeddedStore::open(dir.path()).expect("store"), "a")
                .with_limits(limits);
            let a = &c;
            a.create_network(&NetworkSpec {
                overlay: true,
                ..net("o1", "10.1.0.0/24")
            })
            .await
            .expect("o1");
            a.create_network(&net("l1", "10.2.0.0/24"))
                .await
                .expect("l1");
            for (name, network) in [("o-a1", "o1"), ("l-a1", "l1")] {
                a.create_endpoint(&ep(name, network, &format!("/run/netns/{name}")))
                    .await
                    .expect(name);
            }
            a.add_external_host("k1", std::net::Ipv4Addr::new(192, 0, 2, 9))
                .await
                .expect("k1");
            // Host b's overlay endpoint lands in a's map too: a holds 3.
            c.host = "b".into();
            c.create_endpoint(&ep("o-b1", "o1", "/run/netns/y"))
                .await
                .expect("o-b1");
            // b's local-only endpoints stay on b (b holds o-a1, o-b1 and these).
            c.create_endpoint(&ep("l-b1", "l1", "/run/netns/z"))
                .await
                .expect("l-b1");
            let before = c.store().list(PREFIX).await.expect("list");
            let from_b = c
                .create_endpoint(&ep("o-b2", "o1", "/run/netns/v"))
                .await
                .err();
            c.host = "a".into();
            let refusals = [
                c.create_network(&net("n3", "10.3.0.0/24")).await.err(),
                c.create_endpoint(&ep("l-a2", "l1", "/run/netns/w"))
                    .await
                    .err(),
                from_b,
                c.add_external_host("k2", std::net::Ipv4Addr::new(192, 0, 2, 10))
                    .await
                    .err(),
            ];
            let expected = [
                "the NETD_NETWORKS map of every host holds at most 2 entries and 2 are already there",
                "the NETD_ENDPOINTS map of host \"a\" holds at most 3 entries and 3",
                "the NETD_ENDPOINTS map of host \"a\" holds at most 3 entries",
                "the NETD_HOSTS map of every host holds at most 1 entries",
            ];
            assert_refused(&refusals.map(|r| r.map(|e| e.to_string())), &expected);
            assert_eq!(c.store().list(PREFIX).await.expect("list"), before);
        });
    }

    #[test]
    fn external_hosts_hold_endpoints_of_overlay_networks_and_leave_only_when_empty() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let c = Control::on_host(EmbeddedStore::open(dir.path()).expect("store"), "node-a");
            let ip = std::net::Ipv4Addr::new(192, 0, 2, 9);
            c.create_network(&NetworkSpec {
                overlay: true,
                ..net("o1", "10.7.0.0/24")
            })
            .await
            .expect("o1");
            c.create_network(&net("local", "10.8.0.0/24"))
                .await
                .expect("local");
            let h = c.add_external_host("kernel-1", ip).await.expect("add");
            assert!(h.external);
            let spec = EndpointSpec {
                name: "k1".into(),
                network: "o1".into(),
                external_host: Some("kernel-1".into()),
                ip: Some("10.7.0.50".into()),
                ..Default::default()
            };
            let k1 = c.create_endpoint(&spec).await.expect("k1");
            assert_eq!(
                (
                    k1.host.as_str(),
                    k1.managed_by,
                    k1.joined(),
                    c.is_local(&k1)
                ),
                ("kernel-1", Manager::External, true, false)
            );
            assert_eq!(k1.mac.to_string(), "02:6e:0a:07:00:32");
            let before = c.store().list(PREFIX).await.expect("list");

            let refusals = [
                c.add_external_host("kernel-1", std::net::Ipv4Addr::new(192, 0, 2, 10))
                    .await
                    .err(),
                c.add_external_host("kernel-2", ip).await.err(),
                c.add_external_host("kernel-3", std::net::Ipv4Addr::UNSPECIFIED)
                    .await
                    .err(),
                c.create_endpoint(&EndpointSpec {
                    name: "k2".into(),
                    network: "local".into(),
                    ..spec.clone()
                })
                .await
                .err(),
                c.create_endpoint(&EndpointSpec {
                    name: "k3".into(),
                    external_host: Some("nope".into()),
                    ip: None,
                    ..spec.clone()
                })
                .await
                .err(),
                c.create_endpoint(&EndpointSpec {
                    name: "k4".into(),
                    netns: "/run/netns/x".into(),
                    ip: None,
                    ..spec.clone()
                })
                .await
                .err(),
                c.create_endpoint(&ep("e1", "o1", "")).await.err(),
                c.remove_host("kernel-1").await.err(),
            ];
            let expected = [
                "host \"kernel-1\" already exists",
                "192.0.2.9 is already host \"kernel-1\"'s",
                "0.0.0.0 is not a host address",
                "\"local\" is not an overlay network",
                "no host named \"nope\"",
                "has no sandbox or interface here",
                "needs a sandbox",
                "host \"kernel-1\" still has endpoints: k1; remove them first",
            ];
            let refusals = refusals.map(|r| r.map(|e| e.to_string()));
            assert_refused(&refusals, &expected);
            assert_eq!(
                c.store().list(PREFIX).await.expect("list"),
                before,
                "a refusal changed the store"
            );
            c.delete_endpoint("k1").await.expect("delete k1");
            c.remove_host("kernel-1").await.expect("remove");
            assert!(c.hosts().await.expect("hosts").is_empty());
        });
    }
}
