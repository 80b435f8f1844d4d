//! The reconciler: the only code that writes links and maps. Each pass
//! reads the model from the store and brings this host to it — links for
//! every endpoint, none for others, maps to match — in an order that
//! never points a map at something that is not there yet.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::{
    control::{Control, ControlError, Model},
    dataplane::{
        conntrack::{
            monotonic_ns, service_names, Conntrack, ConntrackConfig, FlowFilter, FlowView, Swept,
        },
        endpoint_attach::{detach_endpoint, pinned_endpoint_links},
        maps::{fill, KernelMaps, MapFill, MapState, MapWriteError, MapWriter},
        policy_maps::compile_policies,
        policy_state::PolicyState,
        reconcile::{compile, reconcile_from, Cluster, HostLink},
        service_traffic::{ServiceTraffic, Traffic, TrafficKey},
        Datapath,
    },
    logging::chain,
    metrics::{Metrics, ModelSizes},
    model::{Endpoint, Host, Manager, Network, HOST_IFNAME_PREFIX},
    netlink::{create_endpoint_link, create_veth_pair, EndpointLinkSpec, LinkFacts, Netlink},
    store::Store,
};

/// MTU of endpoint veths on a single host.
pub const ENDPOINT_MTU: u32 = 1500;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Maps(#[from] MapWriteError),
    #[error(transparent)]
    Link(#[from] crate::netlink::LinkError),
    #[error(transparent)]
    Load(#[from] crate::dataplane::LoadError),
    #[error(
        "the change was committed (store revision {revision}) but this host's datapath has not \
         applied it within {seconds} s; it will, at the next pass (see netd's log)"
    )]
    NotApplied { revision: u64, seconds: u64 },
}

/// How long an API call waits for its change to reach this host's datapath.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the latest pass applied: the store revision it read, and the
/// endpoints whose link it could not make (with the reason).
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub revision: u64,
    pub failures: BTreeMap<String, String>,
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct Report {
    /// Endpoints whose link could not be made, with the reason.
    pub failures: BTreeMap<String, String>,
    pub map_writes: usize,
    /// Map writes that failed (a full map, ...): the next pass retries them.
    pub map_failures: usize,
    pub links_created: usize,
    pub links_removed: usize,
    /// When the next host in its grace period runs out of it: a pass is
    /// due then even if nothing changes.
    pub next_expiry: Option<Instant>,
}

struct State {
    datapath: Datapath,
    maps: KernelMaps,
    conntrack: Conntrack,
    policy: PolicyState,
    endpoint_stats: crate::dataplane::endpoint_stats::EndpointStatsMap,
    /// What the control maps hold as of the last pass that wrote every op
    /// it meant to: the next pass diffs against it instead of reading
    /// every map back. None: read the kernel (start, a failed write, the
    /// periodic resync that repairs what someone else changed).
    written: Option<MapState>,
    traffic: ServiceTraffic,
    /// Conntrack was at least 90% full at the last sweep (logged once).
    conntrack_nearly_full: bool,
    /// Host veths whose TC link already runs this process's program.
    attached: BTreeSet<String>,
    /// Hosts whose netd's registration ended, and since when (as seen by
    /// this netd): they stay in the maps for the grace period.
    departed: BTreeMap<String, Departure>,
    /// Hosts' underlay addresses that have a managed neighbour entry on
    /// the uplink (or need none: behind a router).
    neighbours: BTreeSet<std::net::Ipv4Addr>,
}

struct Departure {
    since: Instant,
    /// Its grace period is over (and that was logged).
    over: bool,
}

pub struct Agent<S> {
    control: Arc<Control<S>>,
    host: Netlink,
    metrics: Arc<Metrics>,
    pin_path: String,
    /// The alias this netd puts on the links it makes: it removes no others.
    owner: String,
    /// This host's underlay side (all zero: no overlay here).
    overlay: netd_common::maps::OverlayConfig,
    /// MTU of endpoints on overlay networks: the uplink's minus VXLAN's 50.
    overlay_mtu: u32,
    /// How long a host whose netd is gone stays in the maps.
    host_grace: Duration,
    /// The latest pass's outcome, for callers waiting on their change.
    applied: tokio::sync::watch::Sender<Applied>,
    /// The names DNS answers, from the model the latest pass applied.
    names: tokio::sync::watch::Sender<Arc<crate::dns::Names>>,
    /// Local endpoints by host veth, for the monitor's events.
    directory: tokio::sync::watch::Sender<Arc<crate::monitor::Directory>>,
    monitor: Arc<crate::monitor::Hub>,
    traffic: Arc<crate::endpoint_traffic::TrafficSource>,
    state: Mutex<State>,
}

impl<S: Store> Agent<S> {
    /// `cluster_id` is the store's ([`Control::cluster_id`]): with the pin
    /// path it makes the mark on this netd's links.
    pub fn new(
        control: Arc<Control<S>>,
        cluster_id: &str,
        mut datapath: Datapath,
        metrics: Arc<Metrics>,
        overlay: netd_common::maps::OverlayConfig,
        overlay_mtu: u32,
        host_grace: Duration,
    ) -> Result<Self, AgentError> {
        let maps = datapath.take_forwarding_maps()?;
        let conntrack = datapath.take_conntrack()?;
        let policy = datapath.take_policy_state()?;
        let events = datapath.take_events()?;
        let endpoint_stats = datapath.take_endpoint_stats()?;
        let directory = tokio::sync::watch::Sender::new(Arc::default());
        let monitor = Arc::new(crate::monitor::Hub::new(events, directory.subscribe()));
        let host = Netlink::here()?;
        let traffic = Arc::new(crate::endpoint_traffic::TrafficSource::new(
            crate::dataplane::endpoint_stats::EndpointStatsMap::open_pinned(
                &datapath.layout().map(netd_common::map_names::NETD_EP_STATS),
            )
            .map_err(crate::dataplane::LoadError::EndpointStats)?,
            host.clone(),
            directory.subscribe(),
        ));
        let pin_path = datapath.layout().root().display().to_string();
        Ok(Self {
            control,
            host,
            metrics,
            owner: owner_mark(cluster_id, &pin_path),
            pin_path,
            overlay,
            overlay_mtu,
            host_grace,
            applied: tokio::sync::watch::Sender::new(Applied::default()),
            names: tokio::sync::watch::Sender::new(Arc::default()),
            directory,
            monitor,
            traffic,
            state: Mutex::new(State {
                datapath,
                maps,
                conntrack,
                policy,
                endpoint_stats,
                written: None,
                traffic: ServiceTraffic::default(),
                conntrack_nearly_full: false,
                attached: BTreeSet::new(),
                departed: BTreeMap::new(),
                neighbours: BTreeSet::new(),
            }),
        })
    }

    pub fn control(&self) -> &Control<S> {
        &self.control
    }

    /// The datapath's events, for `netd monitor`.
    pub fn monitor(&self) -> Arc<crate::monitor::Hub> {
        self.monitor.clone()
    }

    /// Each local endpoint's traffic, for the API and the metrics.
    pub fn traffic(&self) -> Arc<crate::endpoint_traffic::TrafficSource> {
        self.traffic.clone()
    }

    /// The names DNS answers, as each pass leaves them.
    pub fn names(&self) -> tokio::sync::watch::Receiver<Arc<crate::dns::Names>> {
        self.names.subscribe()
    }

    /// Waits until this host's datapath has applied the latest commit made
    /// through this netd's Control (or a later revision), and returns what
    /// that pass reported. The follower does the pass: a change is applied
    /// once, by the one path every change takes.
    pub async fn settle(&self) -> Result<Applied, AgentError> {
        let revision = self.control.last_commit();
        let mut applied = self.applied.subscribe();
        let waited =
            tokio::time::timeout(SETTLE_TIMEOUT, applied.wait_for(|a| a.revision >= revision))
                .await
                .map(|done| done.map(|a| a.clone()));
        match waited {
            Ok(Ok(done)) => Ok(done),
            _ => Err(AgentError::NotApplied {
                revision,
                seconds: SETTLE_TIMEOUT.as_secs(),
            }),
        }
    }

    /// One full pass over one snapshot of the model, diffed against the
    /// maps as the kernel has them. Per-endpoint link failures are
    /// reported, not fatal: the rest of the host converges.
    pub async fn reconcile(&self) -> Result<Report, AgentError> {
        self.reconcile_from(MapSource::Kernel).await
    }

    /// A pass after a change of the model: diffed against what the last
    /// pass wrote when it wrote everything (at 10,000 services, reading
    /// every map back costs more than the rest of the pass).
    pub async fn reconcile_change(&self) -> Result<Report, AgentError> {
        self.reconcile_from(MapSource::LastWritten).await
    }

    async fn reconcile_from(&self, source: MapSource) -> Result<Report, AgentError> {
        let started = Instant::now();
        let mut state = self.state.lock().await;
        let Model {
            revision,
            networks,
            endpoints,
            hosts: members,
            services,
            policies,
        } = self.control.model().await?;
        let (networks, endpoints) = (&networks, &endpoints);
        let mut report = Report::default();

        // 1. Links for every endpoint (make before the maps point at them).
        let mut links = BTreeMap::new();
        let here = |e: &&Endpoint| e.joined() && self.control.is_local(e);
        for endpoint in endpoints.iter().filter(here) {
            match self
                .ensure_link(&mut state, networks, endpoint, &mut report)
                .await
            {
                Ok(link) => {
                    links.insert(endpoint.id.clone(), link);
                }
                Err(reason) => {
                    warn!(endpoint = %endpoint.name, %reason, "endpoint link failed");
                    report.failures.insert(endpoint.id.clone(), reason);
                }
            }
        }

        // 2. Maps, including removal of whatever is stale.
        let hosts = self.hosts_to_forward_to(&mut state, members, &mut report);
        let cluster = Cluster {
            me: self.control.host(),
            hosts: &hosts,
            overlay: self.overlay,
        };
        let read = started.elapsed();
        let mut desired = compile(networks, endpoints, &services, &links, &cluster);
        compile_policies(
            &mut desired,
            networks,
            endpoints,
            &services,
            &policies,
            |e| links.contains_key(&e.id),
        );
        let compiled = started.elapsed();
        let current = match (source, state.written.take()) {
            (MapSource::LastWritten, Some(written)) => written,
            _ => state.maps.read()?,
        };
        let applied = reconcile_from(&mut state.maps, &current, &desired);
        drop(current);
        let written = started.elapsed();
        report.map_writes = applied.writes;
        for (op, error) in applied.failed {
            warn!(map = op.table(), put = op.is_put(), error = %chain(&error), "map write failed; retried next pass");
            report.map_failures += 1;
        }
        self.metrics
            .update_pass(self.control.bad_records(), report.map_failures);
        self.keep_neighbours(&mut state, &hosts).await;

        // 3. Links this netd made that its store has forgotten, and TC pins
        //    nobody owns any more. Links of another netd (another pin path
        //    or store), or of no netd, are not ours to remove.
        let wanted: BTreeSet<&str> = endpoints
            .iter()
            .filter(|e| e.joined())
            .map(|e| e.host_ifname.as_str())
            .collect();
        for link in self.host.links_named(HOST_IFNAME_PREFIX).await? {
            if !wanted.contains(link.name.as_str())
                && is_host_ifname(&link.name)
                && link.alias.as_deref() == Some(self.owner.as_str())
            {
                self.host.delete(&link.name).await?;
                report.links_removed += 1;
            }
        }
        for name in pinned_endpoint_links(state.datapath.layout()) {
            if !wanted.contains(name.as_str()) {
                detach_endpoint(state.datapath.layout(), &name);
                state.attached.remove(&name);
            }
        }

        // 4. Counters for each endpoint linked here, and none for the rest.
        let linked: BTreeSet<u32> = links.values().map(|l| l.ifindex).collect();
        if let Err(e) = state.endpoint_stats.sync(&linked) {
            warn!(error = %chain(&e), "the endpoints' counters were not brought up to date; retried next pass");
        }
        self.metrics.update_model(
            &model_sizes(networks, endpoints, &services, &desired),
            &fill(&desired, &state.maps),
        );
        if report.map_failures == 0 {
            state.written = Some(desired);
        }
        if report.map_writes + report.links_created + report.links_removed > 0 {
            info!(
                map_writes = report.map_writes,
                links_created = report.links_created,
                links_removed = report.links_removed,
                model_ms = read.as_millis() as u64,
                compile_ms = (compiled - read).as_millis() as u64,
                diff_and_write_ms = (written - compiled).as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "reconciled"
            );
        }
        let names =
            crate::dns::Names::build(networks, endpoints, &services, |e| self.control.is_local(e));
        let linked_endpoints: Vec<(&Endpoint, u32, String)> = endpoints
            .iter()
            .filter_map(|e| {
                let link = links.get(&e.id)?;
                let network = networks
                    .iter()
                    .find(|n| n.id == e.network)
                    .map_or_else(|| e.network.clone(), |n| n.name.clone());
                Some((e, link.ifindex, network))
            })
            .collect();
        let directory = crate::monitor::Directory {
            by_ifindex: linked_endpoints
                .iter()
                .map(|(e, ifindex, network)| (*ifindex, (e.name.clone(), network.clone())))
                .collect(),
            services: crate::dataplane::conntrack::service_names(&services),
            policies: policies
                .iter()
                .map(|p| (p.index, (p.name.clone(), p.rule_counts())))
                .collect(),
        };
        self.directory.send_if_modified(|current| {
            let changed = **current != directory;
            if changed {
                *current = Arc::new(directory);
            }
            changed
        });
        self.names.send_if_modified(|current| {
            let changed = **current != names;
            if changed {
                *current = Arc::new(names);
            }
            changed
        });
        self.applied.send_replace(Applied {
            revision,
            failures: report.failures.clone(),
        });
        Ok(report)
    }

    /// Managed neighbour entries for the other hosts on the uplink, so the
    /// routing mesh's XDP tunnel finds their MACs. A failure is logged and
    /// tried again next pass; the mesh counts `no_neighbour` meanwhile.
    async fn keep_neighbours(&self, state: &mut State, hosts: &[Host]) {
        let uplink = self.overlay.uplink_ifindex;
        if self.overlay.underlay == [0; 4] || uplink == 0 {
            return;
        }
        for host in hosts.iter().filter(|h| h.name != self.control.host()) {
            let Some(ip) = host.underlay_ip else { continue };
            if state.neighbours.contains(&ip) {
                continue;
            }
            let done = match self.host.on_link(uplink, ip).await {
                Ok(false) => Ok(()),
                Ok(true) => self.host.ensure_managed_neighbour(uplink, ip).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => {
                    state.neighbours.insert(ip);
                }
                Err(e) => warn!(host = %host.name, %ip, error = %chain(&e), "no managed neighbour"),
            }
        }
    }

    /// The hosts whose endpoints go into the maps: alive, external, or
    /// gone for less than the grace period (their pinned datapath still
    /// forwards while their netd restarts or is upgraded).
    fn hosts_to_forward_to(
        &self,
        state: &mut State,
        members: Vec<Host>,
        report: &mut Report,
    ) -> Vec<Host> {
        let now = Instant::now();
        state
            .departed
            .retain(|name, _| members.iter().any(|h| &h.name == name && !h.alive));
        let mut kept = Vec::with_capacity(members.len());
        for host in members {
            if host.alive || host.name == self.control.host() {
                kept.push(host);
                continue;
            }
            let departure = state.departed.entry(host.name.clone()).or_insert_with(|| {
                warn!(
                    host = %host.name,
                    grace_secs = self.host_grace.as_secs(),
                    "the host's netd is gone; forwarding to it for the grace period"
                );
                Departure {
                    since: now,
                    over: false,
                }
            });
            let until = departure.since + self.host_grace;
            if now < until {
                report.next_expiry = Some(report.next_expiry.map_or(until, |t| t.min(until)));
                kept.push(host);
            } else if !departure.over {
                departure.over = true;
                info!(host = %host.name, "grace period over: the host leaves the maps");
            }
        }
        kept
    }

    async fn ensure_link(
        &self,
        state: &mut State,
        networks: &[Network],
        endpoint: &Endpoint,
        report: &mut Report,
    ) -> Result<HostLink, String> {
        let existing = self
            .host
            .link_facts(&endpoint.host_ifname)
            .await
            .map_err(|e| chain(&e))?;
        let (ifindex, mac) = match existing {
            Some(found) => {
                self.claim(&endpoint.host_ifname, &found).await?;
                (found.index, found.mac)
            }
            None if endpoint.managed_by == Manager::Docker => {
                let made = create_veth_pair(
                    &self.host,
                    &endpoint.host_ifname,
                    &self.owner,
                    &endpoint.peer_ifname(),
                    ENDPOINT_MTU,
                )
                .await
                .map_err(|e| chain(&e))?;
                report.links_created += 1;
                state.attached.remove(&endpoint.host_ifname);
                self.host
                    .route_to_endpoint(endpoint.ipv4, made.0)
                    .await
                    .map_err(|e| chain(&e))?;
                made
            }
            None => {
                let network = networks
                    .iter()
                    .find(|n| n.id == endpoint.network)
                    .ok_or_else(|| {
                        format!("network {} of the endpoint is gone", endpoint.network)
                    })?;
                let spec = EndpointLinkSpec {
                    host_ifname: &endpoint.host_ifname,
                    owner: &self.owner,
                    sandbox: &endpoint.sandbox,
                    ifname: &endpoint.ifname,
                    mac: endpoint.mac,
                    ipv4: endpoint.ipv4,
                    prefix_len: network.subnet.prefix_len(),
                    gateway: network.gateway,
                    mtu: if network.vni.is_some() {
                        self.overlay_mtu
                    } else {
                        ENDPOINT_MTU
                    },
                };
                let made = create_endpoint_link(&self.host, &spec)
                    .await
                    .map_err(|e| chain(&e))?;
                report.links_created += 1;
                state.attached.remove(&endpoint.host_ifname);
                made
            }
        };
        if !state.attached.contains(&endpoint.host_ifname) {
            if let Err(e) = state.datapath.attach_endpoint(&endpoint.host_ifname) {
                return Err(chain(&e));
            }
            if let Some(network) = networks.iter().find(|n| n.id == endpoint.network) {
                self.host
                    .ensure_gateway_address(ifindex, network.gateway)
                    .await
                    .map_err(|e| chain(&e))?;
            }
            state.attached.insert(endpoint.host_ifname.clone());
        }
        Ok(HostLink { ifindex, mac })
    }

    /// Marks an existing link the store names as this netd's (links made
    /// before links were marked), unless another netd's mark is on it.
    async fn claim(&self, ifname: &str, link: &LinkFacts) -> Result<(), String> {
        match &link.alias {
            Some(mark) if *mark == self.owner => Ok(()),
            Some(mark) if mark.starts_with(OWNER_PREFIX) => Err(format!(
                "link {ifname} belongs to another netd ({mark:?}), not this one ({:?})",
                self.owner
            )),
            _ => {
                info!(link = ifname, mark = %self.owner, "marking an endpoint link as this netd's");
                self.host
                    .set_alias(link.index, &self.owner)
                    .await
                    .map_err(|e| chain(&e))
            }
        }
    }

    pub fn pin_path(&self) -> String {
        self.pin_path.clone()
    }

    /// Names of the pinned links (what the programs are attached to).
    pub fn attachments(&self) -> Vec<String> {
        let links = std::path::Path::new(&self.pin_path).join("links");
        let mut names: Vec<String> = std::fs::read_dir(links)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Removes idle conntrack entries; logs once when the map nears full
    /// (the LRU then evicts the least recently used flows).
    pub async fn sweep_conntrack(&self, timeouts: &ConntrackConfig) -> Swept {
        let (swept, grew) = {
            let mut state = self.state.lock().await;
            let swept = state.conntrack.sweep(timeouts, monotonic_ns());
            let (_, policy_flows) = state.policy.sweep(timeouts, monotonic_ns());
            self.metrics.update_policy_flows(policy_flows);
            let grew = state.traffic.observe(&swept.seen);
            let capacity = state.conntrack.capacity();
            self.metrics.update_conntrack(&swept, capacity);
            // A full LRU never shows all its entries: each CPU keeps up to
            // 128 free ones in reserve, and it evicts to refill them.
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
            let nearly_full =
                (swept.live as u64 + LRU_RESERVE * cpus) * 10 >= u64::from(capacity) * 9;
            if nearly_full && !state.conntrack_nearly_full {
                warn!(
                    entries = swept.live,
                    capacity,
                    "conntrack is at least 90% full (counting the LRU's per-CPU reserve): the \
                     least recently used flows are evicted to make room (their connections are \
                     balanced again on their next packet)"
                );
            } else if !nearly_full && state.conntrack_nearly_full {
                info!(
                    entries = swept.live,
                    capacity, "conntrack is below 90% again"
                );
            }
            state.conntrack_nearly_full = nearly_full;
            (swept, grew)
        };
        if let Ok(policies) = self.control.policies().await {
            if !policies.is_empty() {
                let hits = self.rule_hits(&policies).await;
                self.metrics
                    .update_rule_hits(&label_rules(&policies, &hits));
            }
        }
        let grew: Vec<_> = grew
            .into_iter()
            .filter(|(_, t)| *t != Traffic::default())
            .collect();
        // Names for the traffic counters, read only when there is traffic;
        // without the store, this sweep's traffic goes uncounted.
        if !grew.is_empty() {
            if let Ok(services) = self.control.services().await {
                let (to_vips, to_published) = label_traffic(&services, grew);
                self.metrics.add_service_traffic(&to_vips);
                self.metrics
                    .add_published_traffic(self.control.host(), &to_published);
            }
        }
        swept
    }

    /// Each rule's hits on this host; the counters of removed policies go.
    pub async fn rule_hits(
        &self,
        policies: &[crate::model::Policy],
    ) -> BTreeMap<u32, netd_common::policy::RuleHits> {
        let mut state = self.state.lock().await;
        let live: BTreeSet<u32> = policies.iter().map(|p| p.index).collect();
        state.policy.forget_rules(|index| live.contains(&index));
        state.policy.hits()
    }

    /// Conntrack's flows that match `filter`, for `netd conntrack ls`.
    pub async fn conntrack(&self, filter: &FlowFilter) -> Result<Vec<FlowView>, AgentError> {
        let names = service_names(&self.control.services().await?);
        let state = self.state.lock().await;
        let now = monotonic_ns();
        Ok(state
            .conntrack
            .flows()
            .into_iter()
            .filter(|(_, e)| filter.matches(&names, e))
            .map(|(t, e)| FlowView::of(&names, &t, &e, now))
            .collect())
    }

    /// Removes the flows that match `filter`; how many.
    pub async fn flush_conntrack(&self, filter: &FlowFilter) -> Result<usize, AgentError> {
        let names = service_names(&self.control.services().await?);
        let mut state = self.state.lock().await;
        let mut flushed = 0;
        for (t, e) in state.conntrack.flows() {
            if filter.matches(&names, &e) {
                state.conntrack.remove(&t, &e);
                flushed += 1;
            }
        }
        // Clients stuck to a flushed backend would go back to it.
        for (key, a) in state.conntrack.affinities() {
            if filter.takes(&names, key.table, a.backend) {
                state.conntrack.remove_affinity(&key);
            }
        }
        self.metrics.count_flushed(flushed);
        Ok(flushed)
    }

    /// How full each control map is now, against the kernel's capacities.
    pub async fn map_fill(&self) -> Result<Vec<MapFill>, AgentError> {
        let state = self.state.lock().await;
        Ok(fill(&state.maps.read()?, &state.maps))
    }
}

/// Each counted rule as (policy, direction, number from 1, hits).
pub fn label_rules(
    policies: &[crate::model::Policy],
    hits: &BTreeMap<u32, netd_common::policy::RuleHits>,
) -> Vec<(String, &'static str, usize, netd_common::policy::RuleHits)> {
    let by_index: BTreeMap<u32, &crate::model::Policy> =
        policies.iter().map(|p| (p.index, p)).collect();
    hits.iter()
        .filter_map(|(id, h)| {
            let (index, position) = netd_common::policy::rule_of(*id);
            let p = by_index.get(&index)?;
            let (direction, number) = p.rule_label(position)?;
            Some((p.name.clone(), direction, number, *h))
        })
        .collect()
}

/// Labels for what grew: flows to a service's VIP (service, backend), and
/// flows to a published port on this host (service, port, backend).
#[allow(clippy::type_complexity)]
fn label_traffic(
    services: &[crate::model::Service],
    grew: Vec<(TrafficKey, Traffic)>,
) -> (
    Vec<(String, String, Traffic)>,
    Vec<(String, u16, String, Traffic)>,
) {
    let by_index: BTreeMap<u32, &crate::model::Service> =
        services.iter().map(|s| (s.index, s)).collect();
    let (mut to_vips, mut to_published) = (Vec::new(), Vec::new());
    for (key, t) in grew {
        let Some(service) = by_index.get(&key.service) else {
            continue;
        };
        let backend = std::net::Ipv4Addr::from(key.backend).to_string();
        if service.vip == Some(std::net::Ipv4Addr::from(key.to)) {
            to_vips.push((service.name.clone(), backend, t));
        } else {
            to_published.push((service.name.clone(), key.to_port, backend, t));
        }
    }
    (to_vips, to_published)
}

/// The gauges' view of the model: backends are counted as this host's
/// maps hold them (reachable from here).
fn model_sizes(
    networks: &[Network],
    endpoints: &[Endpoint],
    services: &[crate::model::Service],
    desired: &MapState,
) -> ModelSizes {
    let mut counts: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for (key, entry) in desired.iter(crate::dataplane::tables::NETD_BACKENDS) {
        let c = counts.entry(key.table).or_default();
        if entry.state == netd_common::service::BACKEND_DRAINING {
            c.1 += 1;
        } else {
            c.0 += 1;
        }
    }
    ModelSizes {
        networks: networks.len(),
        endpoints: endpoints.len(),
        backends: services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    counts.get(&s.index).copied().unwrap_or_default(),
                )
            })
            .collect(),
    }
}

/// Free entries the kernel's LRU hash keeps per CPU (LOCAL_FREE_TARGET).
const LRU_RESERVE: u64 = 128;

#[derive(Clone, Copy, PartialEq, Eq)]
enum MapSource {
    Kernel,
    LastWritten,
}

const OWNER_PREFIX: &str = "netd:";

/// The alias on every link a netd makes: its store's id and its pin path.
/// Two netds on one host differ in one or the other.
pub fn owner_mark(cluster_id: &str, pin_path: &str) -> String {
    format!("{OWNER_PREFIX}{cluster_id}:{pin_path}")
}

fn is_host_ifname(name: &str) -> bool {
    name.strip_prefix(HOST_IFNAME_PREFIX)
        .is_some_and(|rest| rest.len() == 12 && rest.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_netd_names_count_as_endpoint_links() {
        assert!(super::is_host_ifname("ndh0123456789ab"));
        assert!(!super::is_host_ifname("ndhx"));
        assert!(!super::is_host_ifname("ndh0123456789abc"));
        assert!(!super::is_host_ifname("eth0"));
    }
}
