//! Prometheus metrics: the datapath counters summed over CPUs, refreshed
//! from the map on every scrape.

use crate::endpoint_traffic::TrafficSource;
use std::{net::SocketAddr, sync::Arc};

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use netd_common::counters::{DropReason, Hook, Verdict};
use netd_common::policy::RuleHits;
use prometheus::{
    GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tracing::warn;

use crate::dataplane::{
    conntrack::Swept, maps::MapFill, service_traffic::Traffic, CounterSnapshot, CountersReader,
};

/// What the model holds, for the gauges.
#[derive(Debug, Default)]
pub struct ModelSizes {
    pub networks: usize,
    pub endpoints: usize,
    /// Per service by name: backends in the maps, (active, draining).
    pub backends: std::collections::BTreeMap<String, (usize, usize)>,
}

pub struct Metrics {
    registry: Registry,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    drops: IntCounterVec,
    networks: IntGauge,
    endpoints: IntGauge,
    services: IntGauge,
    service_backends: IntGaugeVec,
    map_entries: IntGaugeVec,
    map_fill: GaugeVec,
    bad_records: IntCounter,
    map_write_failures: IntCounter,
    conntrack_entries: IntGauge,
    conntrack_capacity: IntGauge,
    nat_entries: IntGauge,
    nat_capacity: IntGauge,
    conntrack_gc: IntCounterVec,
    service_connections: IntCounterVec,
    service_packets: IntCounterVec,
    service_bytes: IntCounterVec,
    published_connections: IntCounterVec,
    published_packets: IntCounterVec,
    published_bytes: IntCounterVec,
    rule_packets: IntCounterVec,
    rule_bytes: IntCounterVec,
    policy_flows: IntGauge,
    endpoint_packets: IntCounterVec,
    endpoint_bytes: IntCounterVec,
    endpoint_drops: IntCounterVec,
    monitor_events: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let packets = IntCounterVec::new(
            Opts::new(
                "netd_packets_total",
                "Packets seen by netd's programs, by hook and verdict.",
            ),
            &["hook", "verdict"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "netd_bytes_total",
                "Bytes seen by netd's programs, by hook and verdict.",
            ),
            &["hook", "verdict"],
        )?;
        let drops = IntCounterVec::new(
            Opts::new(
                "netd_drops_total",
                "Packets dropped by netd's programs, by hook and reason.",
            ),
            &["hook", "reason"],
        )?;
        let networks = IntGauge::new("netd_networks", "Networks in the model.")?;
        let endpoints = IntGauge::new("netd_endpoints", "Endpoints in the model.")?;
        let services = IntGauge::new("netd_services", "Services in the model.")?;
        let service_backends = IntGaugeVec::new(
            Opts::new(
                "netd_service_backends",
                "Backends this host's maps hold for each service, by state (active, draining).",
            ),
            &["service", "state"],
        )?;
        registry.register(Box::new(services.clone()))?;
        registry.register(Box::new(service_backends.clone()))?;
        let map_entries = IntGaugeVec::new(
            Opts::new("netd_map_entries", "Entries in each forwarding map."),
            &["map"],
        )?;
        let map_fill = GaugeVec::new(
            Opts::new(
                "netd_map_fill_ratio",
                "Entries over capacity of each forwarding map.",
            ),
            &["map"],
        )?;
        registry.register(Box::new(packets.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(drops.clone()))?;
        registry.register(Box::new(networks.clone()))?;
        registry.register(Box::new(endpoints.clone()))?;
        registry.register(Box::new(map_entries.clone()))?;
        let bad_records = IntCounter::new(
            "netd_store_bad_records_total",
            "Stored records a reconcile pass could not read and skipped.",
        )?;
        let map_write_failures = IntCounter::new(
            "netd_map_write_failures_total",
            "Map writes that failed (a full map, ...); the next pass retries them.",
        )?;
        let conntrack_entries = IntGauge::new(
            "netd_conntrack_entries",
            "Flows in conntrack (NETD_CT) at the last sweep.",
        )?;
        let conntrack_capacity = IntGauge::new(
            "netd_conntrack_capacity",
            "Flows conntrack holds before its LRU evicts the least recently used.",
        )?;
        let nat_entries = IntGauge::new(
            "netd_nat_entries",
            "Masqueraded flows (NETD_SNAT) at the last sweep.",
        )?;
        let nat_capacity = IntGauge::new(
            "netd_nat_capacity",
            "Masqueraded flows the NAT table holds; when full, new flows are dropped \
             (drop reason nat_table_full).",
        )?;
        let conntrack_gc = IntCounterVec::new(
            Opts::new(
                "netd_conntrack_removed_total",
                "Conntrack entries netd removed, by why: expired (idle past its timeout), \
                 orphan (a reverse entry whose flow the LRU evicted), flushed, \
                 affinity_expired (a client's affinity past its service's timeout).",
            ),
            &["reason"],
        )?;
        for reason in ["expired", "orphan", "flushed", "affinity_expired"] {
            conntrack_gc.with_label_values(&[reason]);
        }
        let per_backend = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["service", "backend"])
        };
        let service_connections = per_backend(
            "netd_service_connections_total",
            "New flows from this host's clients, by service and backend (seen by the conntrack sweep).",
        )?;
        let service_packets = per_backend(
            "netd_service_packets_total",
            "Packets from this host's clients to a service, by backend (from conntrack, every sweep).",
        )?;
        let service_bytes = per_backend(
            "netd_service_bytes_total",
            "Bytes from this host's clients to a service, by backend (from conntrack, every sweep).",
        )?;
        let per_published = |name: &str, help: &str| {
            IntCounterVec::new(
                Opts::new(name, help),
                &["service", "port", "ingress_host", "backend"],
            )
        };
        let published_connections = per_published(
            "netd_published_connections_total",
            "New flows that came in on this host's uplink to a published port, by service, \
             port and backend (seen by the conntrack sweep).",
        )?;
        let published_packets = per_published(
            "netd_published_packets_total",
            "Packets from outside clients to a published port on this host, by service, port \
             and backend (from conntrack, every sweep).",
        )?;
        let published_bytes = per_published(
            "netd_published_bytes_total",
            "Bytes from outside clients to a published port on this host, by service, port \
             and backend (from conntrack, every sweep).",
        )?;
        let per_rule = |name: &str, help: &str| {
            IntCounterVec::new(
                Opts::new(name, help),
                &["policy", "direction", "rule", "verdict"],
            )
        };
        let rule_packets = per_rule(
            "netd_policy_rule_packets_total",
            "Packets each policy rule decided on this host, by verdict: allowed, denied, \
             audited (a log rule: would have been dropped, was not). Read every sweep.",
        )?;
        let rule_bytes = per_rule(
            "netd_policy_rule_bytes_total",
            "Bytes each policy rule decided on this host, by verdict (see the packets).",
        )?;
        let policy_flows = IntGauge::new(
            "netd_policy_flows",
            "Flows policy let through that this host tracks (NETD_POLICY_CT) at the last sweep.",
        )?;
        let per_endpoint = |name: &str, help: &str, last: &str| {
            IntCounterVec::new(Opts::new(name, help), &["endpoint", "network", last])
        };
        let endpoint_packets = per_endpoint(
            "netd_endpoint_packets_total",
            "Packets of each endpoint on this host: sent (handed to netd by its veth) and \
             received (delivered into it by netd). Series go with their endpoint.",
            "direction",
        )?;
        let endpoint_bytes = per_endpoint(
            "netd_endpoint_bytes_total",
            "Bytes of each endpoint on this host, sent and received (see the packets).",
            "direction",
        )?;
        let endpoint_drops = per_endpoint(
            "netd_endpoint_drops_total",
            "Packets each endpoint on this host sent that netd dropped, by reason (a reason \
             appears with its first drop). Series go with their endpoint.",
            "reason",
        )?;
        let monitor_events = IntCounterVec::new(
            Opts::new(
                "netd_monitor_events_total",
                "Events the datapath had for netd monitor while one listened: emitted to the \
                 ring, suppressed by the per-CPU budget, or lost to a full ring.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(monitor_events.clone()))?;
        registry.register(Box::new(endpoint_packets.clone()))?;
        registry.register(Box::new(endpoint_bytes.clone()))?;
        registry.register(Box::new(endpoint_drops.clone()))?;
        registry.register(Box::new(rule_packets.clone()))?;
        registry.register(Box::new(rule_bytes.clone()))?;
        registry.register(Box::new(policy_flows.clone()))?;
        registry.register(Box::new(published_connections.clone()))?;
        registry.register(Box::new(published_packets.clone()))?;
        registry.register(Box::new(published_bytes.clone()))?;
        registry.register(Box::new(service_connections.clone()))?;
        registry.register(Box::new(service_packets.clone()))?;
        registry.register(Box::new(service_bytes.clone()))?;
        registry.register(Box::new(conntrack_entries.clone()))?;
        registry.register(Box::new(conntrack_capacity.clone()))?;
        registry.register(Box::new(nat_entries.clone()))?;
        registry.register(Box::new(nat_capacity.clone()))?;
        registry.register(Box::new(conntrack_gc.clone()))?;
        registry.register(Box::new(map_fill.clone()))?;
        registry.register(Box::new(bad_records.clone()))?;
        registry.register(Box::new(map_write_failures.clone()))?;
        Ok(Self {
            registry,
            packets,
            bytes,
            drops,
            networks,
            endpoints,
            services,
            service_backends,
            map_entries,
            map_fill,
            bad_records,
            map_write_failures,
            conntrack_entries,
            conntrack_capacity,
            nat_entries,
            nat_capacity,
            conntrack_gc,
            service_connections,
            service_packets,
            service_bytes,
            published_connections,
            published_packets,
            published_bytes,
            rule_packets,
            rule_bytes,
            policy_flows,
            endpoint_packets,
            endpoint_bytes,
            endpoint_drops,
            monitor_events,
        })
    }

    /// The monitor's emission tallies, as the datapath keeps them.
    pub fn update_monitor(&self, tallies: &netd_common::events::EmitBudget) {
        for (outcome, n) in [
            ("emitted", tallies.emitted),
            ("suppressed", tallies.suppressed),
            ("lost", tallies.lost),
        ] {
            set_total(&self.monitor_events.with_label_values(&[outcome]), n);
        }
    }

    /// The endpoints' counters as the datapath has them now: one series
    /// set per endpoint that exists, none for one that went (each update
    /// starts afresh, so the series cannot outlive their endpoint).
    pub fn update_endpoints(
        &self,
        traffic: &std::collections::BTreeMap<String, crate::endpoint_traffic::EndpointTraffic>,
    ) {
        self.endpoint_packets.reset();
        self.endpoint_bytes.reset();
        self.endpoint_drops.reset();
        for t in traffic.values() {
            let (e, n) = (t.endpoint.as_str(), t.network.as_str());
            for (direction, packets, bytes) in [
                ("sent", t.sent_packets, t.sent_bytes),
                ("received", t.received_packets, t.received_bytes),
            ] {
                self.endpoint_packets
                    .with_label_values(&[e, n, direction])
                    .inc_by(packets);
                self.endpoint_bytes
                    .with_label_values(&[e, n, direction])
                    .inc_by(bytes);
            }
            for (reason, count) in &t.drops {
                self.endpoint_drops
                    .with_label_values(&[e, n, reason.as_str()])
                    .inc_by(*count);
            }
        }
    }

    pub fn update_policy_flows(&self, flows: usize) {
        self.policy_flows.set(flows as i64);
    }

    /// Each rule's totals on this host: (policy, direction, rule number
    /// within its direction from 1, hits).
    pub fn update_rule_hits(&self, rules: &[(String, &'static str, usize, RuleHits)]) {
        for (policy, direction, rule, h) in rules {
            let rule = rule.to_string();
            for (verdict, packets, bytes) in [
                ("allowed", h.allowed_packets, h.allowed_bytes),
                ("denied", h.denied_packets, h.denied_bytes),
                ("audited", h.audited_packets, h.audited_bytes),
            ] {
                let labels = [policy.as_str(), direction, rule.as_str(), verdict];
                set_total(&self.rule_packets.with_label_values(&labels), packets);
                set_total(&self.rule_bytes.with_label_values(&labels), bytes);
            }
        }
    }

    /// After each pass: records skipped so far (a total kept by Control)
    /// and the map writes this pass could not make.
    pub fn update_pass(&self, bad_records_total: u64, map_write_failures: usize) {
        set_total(&self.bad_records, bad_records_total);
        self.map_write_failures.inc_by(map_write_failures as u64);
    }

    /// After each conntrack sweep.
    pub fn update_conntrack(&self, swept: &Swept, capacity: u32) {
        self.conntrack_entries.set(swept.live as i64);
        self.conntrack_capacity.set(i64::from(capacity));
        for (reason, n) in [
            ("expired", swept.expired),
            ("orphan", swept.orphans),
            ("affinity_expired", swept.affinity_expired),
        ] {
            self.conntrack_gc
                .with_label_values(&[reason])
                .inc_by(n as u64);
        }
    }

    /// After each sweep of masquerading's flows.
    pub fn update_nat(&self, live: usize, capacity: u32) {
        self.nat_entries.set(live as i64);
        self.nat_capacity.set(i64::from(capacity));
    }

    /// Adds what each (service, backend) did since the last sweep.
    pub fn add_service_traffic(&self, grew: &[(String, String, Traffic)]) {
        for (service, backend, t) in grew {
            let labels = [service.as_str(), backend.as_str()];
            self.service_connections
                .with_label_values(&labels)
                .inc_by(t.connections);
            self.service_packets
                .with_label_values(&labels)
                .inc_by(t.packets);
            self.service_bytes
                .with_label_values(&labels)
                .inc_by(t.bytes);
        }
    }

    /// Adds what each (service, published port, backend) did since the
    /// last sweep, with this host as the ingress.
    pub fn add_published_traffic(&self, host: &str, grew: &[(String, u16, String, Traffic)]) {
        for (service, port, backend, t) in grew {
            let port = port.to_string();
            let labels = [service.as_str(), port.as_str(), host, backend.as_str()];
            self.published_connections
                .with_label_values(&labels)
                .inc_by(t.connections);
            self.published_packets
                .with_label_values(&labels)
                .inc_by(t.packets);
            self.published_bytes
                .with_label_values(&labels)
                .inc_by(t.bytes);
        }
    }

    pub fn count_flushed(&self, n: usize) {
        self.conntrack_gc
            .with_label_values(&["flushed"])
            .inc_by(n as u64);
    }

    /// Model sizes and map fill, after each reconcile.
    pub fn update_model(&self, sizes: &ModelSizes, fill: &[MapFill]) {
        self.networks.set(sizes.networks as i64);
        self.endpoints.set(sizes.endpoints as i64);
        self.services.set(sizes.backends.len() as i64);
        self.service_backends.reset();
        for (service, (active, draining)) in &sizes.backends {
            for (state, n) in [("active", active), ("draining", draining)] {
                self.service_backends
                    .with_label_values(&[service.as_str(), state])
                    .set(*n as i64);
            }
        }
        for map in fill {
            self.map_entries
                .with_label_values(&[map.name.as_str()])
                .set(map.entries as i64);
            self.map_fill
                .with_label_values(&[map.name.as_str()])
                .set(map.entries as f64 / f64::from(map.capacity.max(1)));
        }
    }

    /// Brings the counters to the kernel's totals. Every label pair is
    /// exported, zero included, so a rate() works from the first scrape.
    pub fn update(&self, snapshot: &CounterSnapshot) {
        for hook in Hook::ALL {
            for verdict in Verdict::ALL {
                let c = snapshot.verdict(hook, verdict);
                let labels = [hook.name(), verdict.name()];
                set_total(&self.packets.with_label_values(&labels), c.packets);
                set_total(&self.bytes.with_label_values(&labels), c.bytes);
            }
            for reason in DropReason::ALL {
                let c = snapshot.drops(hook, reason);
                set_total(
                    &self.drops.with_label_values(&[hook.name(), reason.name()]),
                    c.packets,
                );
            }
        }
    }

    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

/// Moves a counter to the kernel's total. The kernel's counters only grow
/// while their map lives; if the map was recreated, the counter restarts,
/// which Prometheus reads as a counter reset.
fn set_total(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total >= current {
        counter.inc_by(total - current);
    } else {
        counter.reset();
        counter.inc_by(total);
    }
}

struct Scrape {
    metrics: Arc<Metrics>,
    counters: CountersReader,
    endpoints: Arc<TrafficSource>,
    monitor: Arc<crate::monitor::Hub>,
    /// One scrape at a time: the endpoints' series are rebuilt by each.
    one_at_a_time: tokio::sync::Mutex<()>,
}

async fn metrics_handler(State(scrape): State<Arc<Scrape>>) -> impl IntoResponse {
    let body = {
        let _only = scrape.one_at_a_time.lock().await;
        match scrape.counters.snapshot() {
            Ok(snapshot) => scrape.metrics.update(&snapshot),
            Err(e) => {
                warn!(error = %crate::logging::chain(&e), "reading the counters map failed; serving the last values")
            }
        }
        scrape
            .metrics
            .update_endpoints(&scrape.endpoints.read().await);
        if let Some(tallies) = scrape.monitor.tallies() {
            scrape.metrics.update_monitor(&tallies);
        }
        scrape.metrics.render()
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Binds the metrics listener (so a taken port fails start-up, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves /metrics until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    counters: CountersReader,
    endpoints: Arc<TrafficSource>,
    monitor: Arc<crate::monitor::Hub>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let scrape = Arc::new(Scrape {
        metrics,
        counters,
        endpoints,
        monitor,
        one_at_a_time: tokio::sync::Mutex::new(()),
    });
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/", get(|| async { "netd: metrics at /metrics\n" }))
        .with_state(scrape);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netd_common::counters::{drop_slot, verdict_slot, Counter, COUNTER_SLOTS};

    fn snapshot(entries: &[(u32, u64, u64)]) -> CounterSnapshot {
        let mut slots = vec![Counter::default(); COUNTER_SLOTS as usize];
        for (slot, packets, bytes) in entries {
            slots[*slot as usize] = Counter {
                packets: *packets,
                bytes: *bytes,
            };
        }
        CounterSnapshot::from_slots(slots)
    }

    #[test]
    fn exports_every_label_pair_with_kernel_totals() {
        let m = Metrics::new().expect("registry");
        m.update(&snapshot(&[
            (verdict_slot(Hook::XdpUplink, Verdict::Pass), 10, 1500),
            (drop_slot(Hook::TcEndpoint, DropReason::Malformed), 3, 90),
        ]));
        let text = m.render();
        assert!(
            text.contains("netd_packets_total{hook=\"xdp_uplink\",verdict=\"pass\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("netd_bytes_total{hook=\"xdp_uplink\",verdict=\"pass\"} 1500"),
            "{text}"
        );
        assert!(
            text.contains("netd_drops_total{hook=\"tc_endpoint\",reason=\"malformed\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("netd_drops_total{hook=\"xdp_uplink\",reason=\"fragment\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn follows_growth_and_resets() {
        let m = Metrics::new().expect("registry");
        let slot = verdict_slot(Hook::TcEndpoint, Verdict::Drop);
        m.update(&snapshot(&[(slot, 5, 50)]));
        m.update(&snapshot(&[(slot, 8, 80)]));
        assert!(m
            .render()
            .contains("netd_packets_total{hook=\"tc_endpoint\",verdict=\"drop\"} 8"));
        m.update(&snapshot(&[(slot, 2, 20)]));
        assert!(m
            .render()
            .contains("netd_packets_total{hook=\"tc_endpoint\",verdict=\"drop\"} 2"));
    }
}
