//! Model operations over the store: every request (CLI, API, the Docker
//! plugin) becomes one of these, checked against the model and
//! committed in one transaction whose compares keep names, addresses and
//! map indexes unique even with several writers. Nothing here touches the
//! kernel: the reconciler follows the store.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::{
    model::{
        check_name, Endpoint, EndpointSpec, Host, ModelError, Network, NetworkSpec, Policy,
        PolicySpec, Service, ServiceSpec, ServiceUpdate,
    },
    store::{Store, StoreError, Txn},
};

mod docker;

pub use docker::{pool_id, Pool};

pub const PREFIX: &str = "/netd/";
const NETWORKS: &str = "/netd/networks/";
const ENDPOINTS: &str = "/netd/endpoints/";
const SERVICES: &str = "/netd/services/";
const POLICIES: &str = "/netd/policies/";

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
/// Held by the network with that subnet: two writers creating networks
/// of one subnet at once (two Docker hosts, say) cannot both succeed.
fn subnet_key(subnet: &ipnet::Ipv4Net) -> String {
    format!("/netd/subnets/{}", subnet.to_string().replace('/', "-"))
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
fn service_key(id: &str) -> String {
    format!("{SERVICES}{id}")
}
fn service_name_key(name: &str) -> String {
    format!("/netd/names/service/{name}")
}
/// Held by the service that publishes (port, protocol): on every host at
/// once, so two services can never take the same one.
fn published_key(port: &crate::model::PublishedPort) -> String {
    format!("/netd/published/{}/{}", port.protocol, port.published)
}
/// A policy is one store value, written in one request: etcd's default
/// limit on a request is 1.5 MiB, and the transaction carries two small
/// keys besides.
pub const MAX_STORED_POLICY: usize = 1_400_000;

fn policy_key(id: &str) -> String {
    format!("{POLICIES}{id}")
}
fn policy_name_key(name: &str) -> String {
    format!("/netd/policy-names/{name}")
}
fn policy_index_key(index: u32) -> String {
    format!("/netd/policy-index/{index}")
}

fn service_index_key(index: u32) -> String {
    format!("/netd/service-index/{index}")
}
/// What a VIP's entry in the address registry holds.
fn vip_holder(service_id: &str) -> String {
    format!("service:{service_id}")
}

/// The one address registry: who holds each address of a network.
fn addresses_of(network_id: &str) -> String {
    format!("/netd/addresses/{network_id}/")
}
fn address_key(network_id: &str, ip: std::net::Ipv4Addr) -> String {
    format!("{}{ip}", addresses_of(network_id))
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
    /// NETD_MAGLEV (and NETD_VIPS): services.
    pub services: u32,
    /// NETD_SERVICES: the ports of all services.
    pub service_ports: u32,
    /// NETD_POLICY: what the rules selecting a host's endpoints compile to.
    pub policy_entries: u32,
    /// NETD_IPCACHE: every endpoint with an identity and every CIDR named.
    pub ipcache: u32,
}

impl Default for Limits {
    fn default() -> Self {
        use crate::dataplane::tables;
        let max = |name| tables::decl(name).map_or(0, |t| t.max_entries);
        Self {
            networks: max(tables::NETD_NETWORKS.name),
            endpoints: max(tables::NETD_ENDPOINTS.name),
            hosts: max(tables::NETD_HOSTS.name),
            services: max(tables::NETD_MAGLEV.name).min(max(tables::NETD_VIPS.name)),
            service_ports: max(tables::NETD_SERVICES.name),
            policy_entries: max(tables::NETD_POLICY.name),
            ipcache: max(tables::NETD_IPCACHE.name),
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

    /// Whether `service` fits beside `others` (itself left out of them).
    fn service(&self, service: &Service, others: &[Service]) -> Result<(), ModelError> {
        if others.len() >= self.services as usize {
            return Err(ModelError::Full {
                what: "service",
                map: "NETD_MAGLEV",
                host: "every host".into(),
                limit: self.services,
                have: others.len(),
            });
        }
        let have: usize = others.iter().map(|s| s.ports.len()).sum();
        if have + service.ports.len() > self.service_ports as usize {
            return Err(ModelError::Full {
                what: "service port",
                map: "NETD_SERVICES",
                host: "every host".into(),
                limit: self.service_ports,
                have,
            });
        }
        Ok(())
    }

    /// Whether the policy maps compiled from `policies` (`name` among
    /// them) fit on every host: compiled as each host compiles them.
    fn policies(
        &self,
        name: &str,
        networks: &[Network],
        endpoints: &[Endpoint],
        services: &[Service],
        policies: &[Policy],
    ) -> Result<(), ModelError> {
        use crate::dataplane::{maps::MapState, policy_maps::compile_policies, tables};
        let mut hosts: BTreeSet<&str> = endpoints.iter().map(|e| e.host.as_str()).collect();
        if hosts.is_empty() {
            // No endpoints: the CIDRs still go into every host's ipcache.
            hosts.insert("");
        }
        for host in hosts {
            let mut state = MapState::default();
            compile_policies(&mut state, networks, endpoints, services, policies, |e| {
                e.host == host
            });
            for (map, limit, whose) in [
                (
                    tables::NETD_POLICY.name,
                    self.policy_entries,
                    format!("host {host:?}"),
                ),
                (
                    tables::NETD_IPCACHE.name,
                    self.ipcache,
                    "every host".to_string(),
                ),
            ] {
                let need = state.count(map);
                if need > limit as usize {
                    return Err(ModelError::Overflows {
                        what: format!("policy {name:?}"),
                        map,
                        host: whose,
                        limit,
                        need,
                    });
                }
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

    async fn load<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<T>, ControlError> {
        Ok(self.decode_all(prefix, &self.store.list(prefix).await?))
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
        let mut networks: Vec<Network> = self.decode_all(NETWORKS, entries);
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        let mut endpoints: Vec<Endpoint> = self.decode_all(ENDPOINTS, entries);
        endpoints.sort_by(|a, b| a.name.cmp(&b.name));
        let mut services: Vec<Service> = self.decode_all(SERVICES, entries);
        services.sort_by(|a, b| a.name.cmp(&b.name));
        let mut policies: Vec<Policy> = self.decode_all(POLICIES, entries);
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Model {
            revision: snapshot.revision,
            networks,
            endpoints,
            hosts: self.members_in(entries),
            services,
            policies,
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

    /// Every host of the cluster, each marked alive when its netd holds its
    /// registration (external hosts always are).
    pub async fn hosts(&self) -> Result<Vec<Host>, ControlError> {
        let mut entries = self.store.list(MEMBERS).await?;
        entries.extend(self.store.list(HOSTS).await?);
        Ok(self.members_in(&entries))
    }

    /// The members in `entries`, sorted by name, each marked alive when
    /// `entries` also holds its registration (external hosts always are).
    fn members_in(
        &self,
        entries: &std::collections::BTreeMap<String, crate::store::Versioned>,
    ) -> Vec<Host> {
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
            match self.commit(txn).await {
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
            if let Err(e) = self.commit(txn).await {
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
        let list = self.networks().await?;
        by_name_or_id(list, "network", name_or_id, |n| (&n.name, &n.id))
    }

    pub async fn endpoint(&self, name_or_id: &str) -> Result<Endpoint, ControlError> {
        let list = self.endpoints().await?;
        by_name_or_id(list, "endpoint", name_or_id, |e| (&e.name, &e.id))
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
                .absent(subnet_key(&network.subnet))
                .put(subnet_key(&network.subnet), network.id.clone())
                .put(network_key(&network.id), to_json(&network))
                .put(network_name_key(&network.name), network.id.clone())
                .put(network_index_key(index), network.id.clone());
            match self.commit(txn).await {
                Ok(_) => return Ok(network),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
    }

    /// Removes a network that has no endpoints. Every endpoint creation
    /// rewrites its network's record, so one landing meanwhile fails this
    /// compare and the check runs again.
    pub async fn delete_network(&self, name_or_id: &str) -> Result<Network, ControlError> {
        let mut attempt = 0;
        loop {
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
            match self.commit(txn).await {
                Ok(_) => return Ok(network),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
    }

    /// The revision network `id` was last written at.
    async fn network_revision(&self, id: &str) -> Result<u64, ControlError> {
        let stored = self.stored(&network_key(id), "network", id).await?;
        Ok(stored.mod_revision)
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

    /// Adds to `txn` the guard every endpoint creation carries: its
    /// network is still there, unchanged, and is rewritten so that a
    /// concurrent deletion of it fails its own compare.
    async fn guard_network(&self, txn: Txn, network_id: &str) -> Result<Txn, ControlError> {
        let key = network_key(network_id);
        let stored = self.stored(&key, "network", network_id).await?;
        Ok(txn
            .unchanged(key.clone(), stored.mod_revision)
            .put(key, stored.value))
    }

    pub async fn create_endpoint(&self, spec: &EndpointSpec) -> Result<Endpoint, ControlError> {
        let mut attempt = 0;
        loop {
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
            match self.commit(txn).await {
                Ok(_) => return Ok(endpoint),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
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
    async fn addresses_taken(&self, registry: &str) -> Result<BTreeSet<Ipv4Addr>, ControlError> {
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

/// Policies: a name and an index (its rules' counters), unique by compare.
/// A policy is replaced by removing it and creating it again.
impl<S: Store> Control<S> {
    pub async fn policies(&self) -> Result<Vec<Policy>, ControlError> {
        let mut list: Vec<Policy> = self.load(POLICIES).await?;
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    pub async fn policy(&self, name_or_id: &str) -> Result<Policy, ControlError> {
        let list = self.policies().await?;
        by_name_or_id(list, "policy", name_or_id, |p| (&p.name, &p.id))
    }

    pub async fn create_policy(&self, spec: &PolicySpec) -> Result<Policy, ControlError> {
        let mut attempt = 0;
        loop {
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
            match self.commit(txn).await {
                Ok(_) => return Ok(policy),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
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

/// Services: a VIP (an address of the network's registry, so no endpoint
/// takes it) and an index (its Maglev table), both unique by compare.
impl<S: Store> Control<S> {
    pub async fn services(&self) -> Result<Vec<Service>, ControlError> {
        let mut list: Vec<Service> = self.load(SERVICES).await?;
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    pub async fn service(&self, name_or_id: &str) -> Result<Service, ControlError> {
        let list = self.services().await?;
        by_name_or_id(list, "service", name_or_id, |s| (&s.name, &s.id))
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
        let mut attempt = 0;
        loop {
            let networks = self.networks().await?;
            let endpoints = self.endpoints().await?;
            let mut services = self.services().await?;
            let mut used: BTreeSet<u32> = services.iter().map(|s| s.index).collect();
            let mut taken: std::collections::BTreeMap<String, BTreeSet<Ipv4Addr>> =
                Default::default();
            let mut txn = Txn::new();
            let mut created = Vec::with_capacity(specs.len());
            let mut guarded = BTreeSet::new();
            let mut names: std::collections::HashSet<String> =
                services.iter().map(|s| s.name.clone()).collect();
            let mut cursor: std::collections::BTreeMap<String, Ipv4Addr> = Default::default();
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
            match self.commit(txn).await {
                Ok(_) => return Ok(created),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
    }

    /// Applies `update` to the service as stored, unless it changed meanwhile.
    pub async fn update_service(
        &self,
        name_or_id: &str,
        update: &ServiceUpdate,
    ) -> Result<Service, ControlError> {
        let mut attempt = 0;
        loop {
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
            match self.commit(txn).await {
                Ok(_) => return Ok(next),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
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
    before: &[crate::model::PublishedPort],
    others: &[Service],
) -> Result<Txn, ModelError> {
    let same = |a: &crate::model::PublishedPort, b: &crate::model::PublishedPort| {
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
            match self.commit(txn).await {
                Ok(_) => return Ok(host),
                Err(e) => retry_after(e, &mut attempt).await?,
            }
        }
    }
}

/// The address registry of network `id` (its own id if it is not known).
fn registry_of<'a>(networks: &'a [Network], id: &'a str) -> &'a str {
    networks
        .iter()
        .find(|n| n.id == id)
        .map_or(id, Network::address_registry)
}

/// The lowest index no host has (indexes start at 1).
fn free_host_index(hosts: &[Host]) -> u32 {
    let used: BTreeSet<u32> = hosts.iter().map(|h| h.index).collect();
    (1..).find(|i| !used.contains(i)).unwrap_or(u32::MAX)
}

/// The record of `list` named or identified by `name_or_id`, or "no
/// `kind` named ...".
fn by_name_or_id<T>(
    list: Vec<T>,
    kind: &'static str,
    name_or_id: &str,
    name_and_id: impl Fn(&T) -> (&str, &str),
) -> Result<T, ControlError> {
    list.into_iter()
        .find(|r| {
            let (name, id) = name_and_id(r);
            name == name_or_id || id == name_or_id
        })
        .ok_or_else(|| {
            ModelError::NotFound {
                kind,
                name: name_or_id.to_string(),
            }
            .into()
        })
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

    pub(super) fn block<F: std::future::Future>(f: F) -> F::Output {
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

    pub(super) fn ep(name: &str, network: &str, netns: &str) -> EndpointSpec {
        EndpointSpec {
            name: name.into(),
            network: network.into(),
            netns: netns.into(),
            ..Default::default()
        }
    }

    /// `count` rules allowing `tier=web` on a port each.
    fn port_rules(count: usize) -> Vec<crate::model::RuleSpec> {
        (0..count)
            .map(|i| crate::model::RuleSpec {
                peers: vec![crate::model::PeerSpec {
                    selector: Some("tier=web".into()),
                    ..Default::default()
                }],
                proto: crate::model::Proto::Tcp,
                ports: vec![(1000 + i).to_string()],
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn a_policy_too_large_for_one_store_value_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let c = Control::new(EmbeddedStore::open(dir.path()).expect("store"));
            let big = |name: &str, count| PolicySpec {
                name: name.into(),
                selector: Some("tier=api".into()),
                ingress: Some(port_rules(count)),
                ..Default::default()
            };
            c.create_policy(&big("ten-thousand", 10_000))
                .await
                .expect("10,000 rules fit");
            let before = c.store().list(PREFIX).await.expect("list");
            let err = c
                .create_policy(&big("too-big", 30_000))
                .await
                .expect_err("30,000 rules do not")
                .to_string();
            assert!(
                err.contains("30000 rules take") && err.contains("split them"),
                "{err}"
            );
            assert_eq!(c.store().list(PREFIX).await.expect("list"), before);
        });
    }

    #[test]
    fn a_policy_past_the_policy_maps_capacity_is_refused_with_the_limit_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let limits = Limits {
                policy_entries: 10,
                ipcache: 4,
                ..Limits::default()
            };
            let c = Control::on_host(EmbeddedStore::open(dir.path()).expect("store"), "a")
                .with_limits(limits);
            c.create_network(&net("n1", "10.1.0.0/24"))
                .await
                .expect("n1");
            c.create_endpoint(&EndpointSpec {
                labels: [("tier".to_string(), "api".to_string())].into(),
                ..ep("api", "n1", "/run/netns/api")
            })
            .await
            .expect("api");
            let spec = |name: &str, ingress| PolicySpec {
                name: name.into(),
                selector: Some(
                    if name == "cidrs" {
                        "tier=none"
                    } else {
                        "tier=api"
                    }
                    .into(),
                ),
                ingress: Some(ingress),
                ..Default::default()
            };
            let rules = |texts: Vec<String>| -> Vec<crate::model::RuleSpec> {
                texts
                    .iter()
                    .map(|t| crate::model::parse_rule(t))
                    .collect::<Result<_, _>>()
                    .expect("rules")
            };
            // From any peer: one entry a port.
            let any_peer_rules = |first: usize, count: usize| {
                rules(
                    (first..first + count)
                        .map(|port| format!("allow tcp/{port}"))
                        .collect(),
                )
            };
            let cidr_rules = |count: usize| {
                rules(
                    (0..count)
                        .map(|i| format!("allow from cidr:10.9.{i}.0/24 tcp/80"))
                        .collect(),
                )
            };
            c.create_policy(&spec("nine", any_peer_rules(1000, 9)))
                .await
                .expect("9 entries fit in 10");
            let before = c.store().list(PREFIX).await.expect("list");
            let refusals = [
                c.create_policy(&spec("two", any_peer_rules(2000, 2)))
                    .await
                    .err(),
                c.create_policy(&spec("cidrs", cidr_rules(4))).await.err(),
            ];
            // "cidrs" selects no endpoint, so it adds no NETD_POLICY entry;
            // the endpoint's identity plus its 4 CIDRs: 5 ipcache entries.
            assert_refused(
                &refusals.map(|r| r.map(|e| e.to_string())),
                &[
                    "policy \"two\": it would take 11 entries in the NETD_POLICY map of host \"a\", which holds at most 10",
                    "policy \"cidrs\": it would take 5 entries in the NETD_IPCACHE map of every host, which holds at most 4",
                ],
            );
            assert_eq!(c.store().list(PREFIX).await.expect("list"), before);
        });
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
    fn an_endpoint_landing_while_its_network_is_deleted_makes_the_delete_look_again() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let c = Control::new(EmbeddedStore::open(dir.path()).expect("store"));
            let n1 = c
                .create_network(&net("n1", "10.1.0.0/24"))
                .await
                .expect("n1");
            // The delete read the network (no endpoints yet) at this revision...
            let seen = c.network_revision(&n1.id).await.expect("revision");
            // ...then an endpoint lands: it rewrites the network record.
            c.create_endpoint(&ep("e1", "n1", "/run/netns/a"))
                .await
                .expect("e1");
            assert_ne!(c.network_revision(&n1.id).await.expect("revision"), seen);
            let stale = Txn::new()
                .unchanged(network_key(&n1.id), seen)
                .delete(network_key(&n1.id));
            assert!(matches!(
                c.commit(stale).await,
                Err(StoreError::Conflict(_))
            ));
            // Looking again, the delete sees the endpoint.
            let refused = c.delete_network("n1").await.expect_err("in use");
            assert!(
                refused.to_string().contains("still has endpoints: e1"),
                "{refused}"
            );
            // And an endpoint on a network deleted meanwhile is refused.
            c.delete_endpoint("e1").await.expect("e1 gone");
            let guard = c.guard_network(Txn::new(), &n1.id).await.expect("guard");
            c.delete_network("n1").await.expect("n1 gone");
            assert!(matches!(
                c.commit(guard).await,
                Err(StoreError::Conflict(_))
            ));
        });
    }

    #[test]
    fn a_record_that_cannot_be_read_is_counted_and_skipped_not_fatal() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let c = Control::new(EmbeddedStore::open(dir.path()).expect("store"));
            c.create_network(&net("n1", "10.1.0.0/24"))
                .await
                .expect("n1");
            c.commit(Txn::new().put(format!("{NETWORKS}garbage"), "{not json"))
                .await
                .expect("plant");
            let model = c.model().await.expect("model");
            assert_eq!(model.networks.len(), 1);
            assert_eq!(c.networks().await.expect("list").len(), 1);
            assert_eq!(c.bad_records(), 2);
            assert!(model.revision >= c.last_commit());
            c.create_network(&net("n2", "10.2.0.0/24"))
                .await
                .expect("n2 still works");
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

    fn svc(name: &str, vip: Option<&str>) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            network: "n1".into(),
            vip: vip.map(Into::into),
            ports: vec!["80:8080".into()],
            selector: Some("app=web".into()),
            ..Default::default()
        }
    }

    #[test]
    fn services_take_unique_vips_and_indexes_and_a_batch_is_all_or_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let c = Control::new(EmbeddedStore::open(dir.path()).expect("store"));
            c.create_network(&net("n1", "10.1.0.0/24"))
                .await
                .expect("n1");
            let one = c.create_service(&svc("one", None)).await.expect("one");
            let batch = c
                .create_services(&[svc("two", None), svc("three", Some("10.1.0.50"))])
                .await
                .expect("batch");
            let vips: BTreeSet<Ipv4Addr> = std::iter::once(&one)
                .chain(&batch)
                .filter_map(|s| s.vip)
                .collect();
            assert_eq!(vips.len(), 3, "distinct VIPs");
            let indexes: BTreeSet<u32> = std::iter::once(&one)
                .chain(&batch)
                .map(|s| s.index)
                .collect();
            assert_eq!(indexes, [1, 2, 3].into_iter().collect());

            // One bad service in a batch: none is created, and the error
            // names it.
            let e = c
                .create_services(&[svc("four", None), svc("five", Some("10.1.0.50"))])
                .await
                .expect_err("refused")
                .to_string();
            assert!(e.contains("\"five\", #2 of the batch"), "{e}");
            assert_eq!(c.services().await.expect("list").len(), 3);

            // An endpoint never gets a VIP, asked for or not.
            let first = c
                .create_endpoint(&ep("e1", "n1", "/run/netns/x"))
                .await
                .expect("endpoint");
            assert!(!vips.contains(&first.ipv4), "{}", first.ipv4);
            let taken = c
                .create_endpoint(&EndpointSpec {
                    ip: Some("10.1.0.50".into()),
                    ..ep("e2", "n1", "/run/netns/y")
                })
                .await
                .expect_err("a VIP")
                .to_string();
            assert!(taken.contains("is the VIP of service \"three\""), "{taken}");

            // The network stays while it has services; a removed service
            // frees its VIP and index.
            let e = c
                .delete_network("n1")
                .await
                .expect_err("in use")
                .to_string();
            assert!(e.contains("still has"), "{e}");
            c.delete_service("three").await.expect("rm");
            let again = c
                .create_service(&svc("six", Some("10.1.0.50")))
                .await
                .expect("six");
            assert_eq!(again.index, 3);
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
                ..Limits::default()
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
