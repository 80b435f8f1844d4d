//! The reconciler: the only code that writes links and maps. Each pass
//! reads the model from the store and brings this host to it — links for
//! every endpoint, none for others, maps to match — in an order that
//! never points a map at something that is not there yet.
//!
//! `pass` is one pass as named steps; `links` the endpoints' links,
//! `hosts` which hosts' endpoints are forwarded to, `flows` conntrack's
//! and policy's flows, `views` what others read of a pass.

mod flows;
mod hosts;
mod links;
mod pass;
mod views;

pub use flows::{label_rules, Sweep};

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

use crate::{
    control::{Control, ControlError},
    dataplane::{
        conntrack::Conntrack,
        maps::{fill, KernelMaps, MapFill, MapState, MapWriteError, MapWriter},
        policy_state::PolicyState,
        service_traffic::ServiceTraffic,
        Datapath,
    },
    metrics::Metrics,
    netlink::Netlink,
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
    mesh: crate::dataplane::mesh_state::MeshState,
    /// Masquerading's flows.
    nat: crate::dataplane::nat_table::NatTable,
    /// Whether the NAT table was nearly full at the last sweep.
    nat_nearly_full: bool,
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
    /// Each uplink's hook and why, as attached at start.
    uplinks: Vec<crate::dataplane::uplink::UplinkAttachment>,
    /// The addresses published ports are taken on.
    publish_addresses: Vec<std::net::Ipv4Addr>,
    /// Masquerading's side of this host, as set at start.
    egress: crate::dataplane::egress::HostEgress,
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
        let mesh = datapath.take_mesh_state()?;
        let nat = datapath.take_nat_table()?;
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
            uplinks: Vec::new(),
            publish_addresses: Vec::new(),
            egress: Default::default(),
            state: Mutex::new(State {
                datapath,
                maps,
                conntrack,
                policy,
                mesh,
                nat,
                endpoint_stats,
                written: None,
                traffic: ServiceTraffic::default(),
                conntrack_nearly_full: false,
                nat_nearly_full: false,
                attached: BTreeSet::new(),
                departed: BTreeMap::new(),
                neighbours: BTreeSet::new(),
            }),
        })
    }

    /// The same, knowing how the uplinks were attached.
    pub fn with_uplinks(
        mut self,
        uplinks: Vec<crate::dataplane::uplink::UplinkAttachment>,
    ) -> Self {
        self.uplinks = uplinks;
        self
    }

    pub fn control(&self) -> &Control<S> {
        &self.control
    }

    /// Each uplink's hook and why.
    pub fn uplinks(&self) -> &[crate::dataplane::uplink::UplinkAttachment] {
        &self.uplinks
    }

    /// The same, taking published ports on `addresses`.
    pub fn with_publish_addresses(mut self, addresses: Vec<std::net::Ipv4Addr>) -> Self {
        self.publish_addresses = addresses;
        self
    }

    /// The addresses published ports are taken on.
    pub fn publish_addresses(&self) -> &[std::net::Ipv4Addr] {
        &self.publish_addresses
    }

    /// The same, with masquerading's devices, ports and host-wide
    /// unmasqueraded CIDRs.
    pub fn with_egress(mut self, egress: crate::dataplane::egress::HostEgress) -> Self {
        self.egress = egress;
        self
    }

    /// Refuses an endpoint MTU the way out cannot carry: above the
    /// overlay's (the uplink's less VXLAN's overhead) on an overlay
    /// network, above the smallest egress device's on any other.
    pub fn check_mtu(
        &self,
        mtu: Option<u32>,
        overlay: bool,
    ) -> Result<(), crate::model::ModelError> {
        let Some(mtu) = mtu else {
            return Ok(());
        };
        let (limit, what) = if overlay {
            (
                self.overlay_mtu,
                "the overlay's (the uplink's MTU less VXLAN's 50 bytes)",
            )
        } else {
            match self.egress.max_mtu {
                Some(limit) => (limit, "the smallest egress device's"),
                None => return Ok(()),
            }
        };
        if mtu > limit {
            return Err(crate::model::ModelError::invalid(
                "mtu",
                format!("{mtu} is above {what}, {limit}: full-size packets would not leave"),
            ));
        }
        Ok(())
    }

    /// Masquerading's side of this host.
    pub fn egress(&self) -> &crate::dataplane::egress::HostEgress {
        &self.egress
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
        self.pass(MapSource::Kernel).await
    }

    /// A pass after a change of the model: diffed against what the last
    /// pass wrote when it wrote everything (at 10,000 services, reading
    /// every map back costs more than the rest of the pass).
    pub async fn reconcile_change(&self) -> Result<Report, AgentError> {
        self.pass(MapSource::LastWritten).await
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

    /// How full each control map and the routing mesh's maps are now,
    /// against the kernel's capacities.
    pub async fn map_fill(&self) -> Result<Vec<MapFill>, AgentError> {
        let state = self.state.lock().await;
        let mut maps = fill(&state.maps.read()?, &state.maps);
        maps.extend(state.mesh.fill());
        Ok(maps)
    }
}

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
