//! The flows the datapath tracks: conntrack and policy's flows swept of
//! idle entries, listed and flushed for `netd conntrack`, and what they
//! tell the metrics (each rule's hits, each service's traffic).

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};

use super::{Agent, AgentError};
use crate::{
    dataplane::{
        conntrack::{monotonic_ns, service_names, ConntrackConfig, FlowFilter, FlowView, Swept},
        mesh_state::MeshSwept,
        nat_table::{NatSwept, NatView},
        service_traffic::{Traffic, TrafficKey},
    },
    store::Store,
};

/// Free entries the kernel's LRU hash keeps per CPU (LOCAL_FREE_TARGET).
const LRU_RESERVE: u64 = 128;

/// What a sweep found.
pub struct Sweep {
    pub swept: Swept,
    /// The routing mesh's maps: (removed, kept) each.
    pub mesh: MeshSwept,
    /// Policy's flows still tracked.
    pub policy_flows: usize,
    /// Conntrack's capacity.
    pub capacity: u32,
    /// Masquerading's flows, and its table's capacity.
    pub nat: NatSwept,
    pub nat_capacity: u32,
    /// What each service's flows carried since the last sweep.
    pub grew: Vec<(TrafficKey, Traffic)>,
}

impl<S: Store> Agent<S> {
    /// Removes idle conntrack and policy flows; logs once when conntrack
    /// nears full (the LRU then evicts the least recently used flows).
    /// [`Agent::publish_sweep`] counts what it found.
    pub async fn sweep_conntrack(&self, timeouts: &ConntrackConfig) -> Sweep {
        // The host's own sockets' entries, judged by the sockets alive
        // after they were read (the socket list is a syscall: outside the lock).
        let socket_entries = self.state.lock().await.mesh.socket_entries();
        let alive = tokio::task::spawn_blocking(crate::netlink::sockets::ipv4_socket_cookies)
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let mut state = self.state.lock().await;
        let mut mesh = MeshSwept::default();
        match alive {
            Ok(alive) => mesh.sockets = state.mesh.sweep_sockets(socket_entries, &alive),
            Err(error) => {
                warn!(%error, "cannot list the host's sockets: their reverse entries stay")
            }
        }
        // Clients' next hops first, then the flows that judge them.
        let neighbours = state.mesh.neighbours();
        let swept = state.conntrack.sweep(timeouts, monotonic_ns());
        mesh.neighbours = state.mesh.sweep_neighbours(neighbours, &swept.seen);
        mesh.returns = state.mesh.sweep_returns(timeouts, monotonic_ns());
        let (_, policy_flows) = state.policy.sweep(timeouts, monotonic_ns());
        let nat = state.nat.sweep(timeouts, monotonic_ns());
        let nat_capacity = state.nat.capacity();
        // Not an LRU: a full table refuses new flows (counted as
        // `nat_table_full`) and keeps the ones it has.
        let nat_nearly_full = nat.live as u64 * 10 >= u64::from(nat_capacity) * 9;
        if nat_nearly_full && !state.nat_nearly_full {
            warn!(
                entries = nat.live,
                capacity = nat_capacity,
                "masquerading's NAT table is at least 90% full: when full, new flows to the                  world are dropped (counted as nat_table_full) and established ones go on;                  raise --conntrack-max-entries"
            );
        } else if !nat_nearly_full && state.nat_nearly_full {
            info!(
                entries = nat.live,
                capacity = nat_capacity,
                "masquerading's NAT table is below 90% again"
            );
        }
        state.nat_nearly_full = nat_nearly_full;
        let grew = state.traffic.observe(&swept.seen);
        let capacity = state.conntrack.capacity();
        // A full LRU never shows all its entries: each CPU keeps up to
        // 128 free ones in reserve, and it evicts to refill them.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let nearly_full = (swept.live as u64 + LRU_RESERVE * cpus) * 10 >= u64::from(capacity) * 9;
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
        Sweep {
            swept,
            mesh,
            policy_flows,
            capacity,
            nat,
            nat_capacity,
            grew: grew
                .into_iter()
                .filter(|(_, t)| *t != Traffic::default())
                .collect(),
        }
    }

    /// The metrics of a sweep: conntrack's and policy's flows, each rule's
    /// hits, and the traffic each service's flows carried since the last.
    pub async fn publish_sweep(&self, sweep: &Sweep) {
        self.metrics.update_policy_flows(sweep.policy_flows);
        self.metrics.update_conntrack(&sweep.swept, sweep.capacity);
        self.metrics.update_nat(sweep.nat.live, sweep.nat_capacity);
        if let Ok(policies) = self.control.policies().await {
            if !policies.is_empty() {
                let hits = self.rule_hits(&policies).await;
                self.metrics
                    .update_rule_hits(&label_rules(&policies, &hits));
            }
        }
        // Names for the traffic counters, read only when there is traffic;
        // without the store, this sweep's traffic goes uncounted.
        if !sweep.grew.is_empty() {
            if let Ok(services) = self.control.services().await {
                let (to_vips, to_published) = label_traffic(&services, &sweep.grew);
                self.metrics.add_service_traffic(&to_vips);
                self.metrics
                    .add_published_traffic(self.control.host(), &to_published);
            }
        }
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

    /// Masquerading's flows, for `netd conntrack ls --nat`.
    pub async fn nat_flows(&self) -> Vec<NatView> {
        let now = monotonic_ns();
        let state = self.state.lock().await;
        state
            .nat
            .flows()
            .iter()
            .map(|(t, e, reply_seen)| NatView::of(t, e, *reply_seen, now))
            .collect()
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
    grew: &[(TrafficKey, Traffic)],
) -> (
    Vec<(String, String, Traffic)>,
    Vec<(String, u16, String, Traffic)>,
) {
    let by_index: BTreeMap<u32, &crate::model::Service> =
        services.iter().map(|s| (s.index, s)).collect();
    let (mut to_vips, mut to_published) = (Vec::new(), Vec::new());
    for &(key, t) in grew {
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
