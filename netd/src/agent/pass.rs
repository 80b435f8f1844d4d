//! One reconcile pass, as named steps over one snapshot of the model:
//! links first (make before the maps point at them), then the maps,
//! then what is stale, then the counters, and last what others read of
//! the pass (metrics, DNS names, the monitor's directory, the revision
//! callers wait for).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use tracing::{info, warn};

use super::{views, Agent, AgentError, Applied, MapSource, Report, State};
use crate::{
    control::Model,
    dataplane::{
        maps::{fill, MapState, MapWriter},
        policy_maps::compile_policies,
        reconcile::{compile, mark_skippable_stages, reconcile_from, Cluster, HostLink},
    },
    logging::chain,
    model::{Endpoint, Host},
    store::Store,
};

/// When each step of a pass ended, for the log.
struct Timings {
    started: Instant,
    read: std::time::Duration,
    compiled: std::time::Duration,
    written: std::time::Duration,
}

impl<S: Store> Agent<S> {
    pub(super) async fn pass(&self, source: MapSource) -> Result<Report, AgentError> {
        let started = Instant::now();
        let mut state = self.state.lock().await;
        let model = self.control.model().await?;
        let mut report = Report::default();
        let links = self.ensure_links(&mut state, &model, &mut report).await;
        let hosts = self.hosts_to_forward_to(&mut state, model.hosts.clone(), &mut report);
        let read = started.elapsed();
        let desired = self.compile_maps(&model, &links, &hosts);
        let compiled = started.elapsed();
        self.write_maps(&mut state, source, &desired, &mut report)?;
        let written = started.elapsed();
        self.keep_neighbours(&mut state, &hosts).await;
        self.remove_stale_links(&mut state, &model.endpoints, &mut report)
            .await?;
        Self::sync_endpoint_counters(&mut state, &links);
        self.metrics.update_model(
            &views::model_sizes(&model, &desired),
            &fill(&desired, &state.maps),
        );
        if report.map_failures == 0 {
            state.written = Some(desired);
        }
        log_pass(
            &report,
            &Timings {
                started,
                read,
                compiled,
                written,
            },
        );
        self.publish_views(&model, &links);
        self.applied.send_replace(Applied {
            revision: model.revision,
            failures: report.failures.clone(),
        });
        Ok(report)
    }

    /// A link for every endpoint of this host that has joined a sandbox;
    /// one that fails is reported, and the rest of the host converges.
    async fn ensure_links(
        &self,
        state: &mut State,
        model: &Model,
        report: &mut Report,
    ) -> BTreeMap<String, HostLink> {
        let mut links = BTreeMap::new();
        let here = |e: &&Endpoint| e.joined() && self.control.is_local(e);
        for endpoint in model.endpoints.iter().filter(here) {
            match self
                .ensure_link(state, &model.networks, endpoint, report)
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
        links
    }

    /// What the control maps must hold for `model` on this host.
    fn compile_maps(
        &self,
        model: &Model,
        links: &BTreeMap<String, HostLink>,
        hosts: &[Host],
    ) -> MapState {
        let cluster = Cluster {
            me: self.control.host(),
            hosts,
            overlay: self.overlay,
        };
        let (networks, endpoints) = (&model.networks, &model.endpoints);
        let mut desired = compile(networks, endpoints, &model.services, links, &cluster);
        crate::dataplane::egress_maps::compile_egress(
            &mut desired,
            networks,
            &self.egress().no_masquerade,
        );
        compile_policies(
            &mut desired,
            networks,
            endpoints,
            &model.services,
            &model.policies,
            |e| links.contains_key(&e.id),
        );
        mark_skippable_stages(&mut desired);
        desired
    }

    /// The difference between `desired` and what the maps hold (as the
    /// last pass left them, or read back), written in order; a failed
    /// write is counted and retried by the next pass.
    fn write_maps(
        &self,
        state: &mut State,
        source: MapSource,
        desired: &MapState,
        report: &mut Report,
    ) -> Result<(), AgentError> {
        let current = match (source, state.written.take()) {
            (MapSource::LastWritten, Some(written)) => written,
            _ => state.maps.read()?,
        };
        let applied = reconcile_from(&mut state.maps, &current, desired);
        report.map_writes = applied.writes;
        for (op, error) in applied.failed {
            warn!(map = op.table(), put = op.is_put(), error = %chain(&error), "map write failed; retried next pass");
            report.map_failures += 1;
        }
        self.metrics
            .update_pass(self.control.bad_records(), report.map_failures);
        Ok(())
    }

    /// Counters for each endpoint linked here, and none for the rest.
    fn sync_endpoint_counters(state: &mut State, links: &BTreeMap<String, HostLink>) {
        let linked: BTreeSet<u32> = links.values().map(|l| l.ifindex).collect();
        if let Err(e) = state.endpoint_stats.sync(&linked) {
            warn!(error = %chain(&e), "the endpoints' counters were not brought up to date; retried next pass");
        }
    }

    /// What DNS answers and what the monitor names endpoints by, as of
    /// this pass.
    fn publish_views(&self, model: &Model, links: &BTreeMap<String, HostLink>) {
        let names =
            crate::dns::Names::build(&model.networks, &model.endpoints, &model.services, |e| {
                self.control.is_local(e)
            });
        let directory = views::directory(model, links);
        self.directory.send_if_modified(|current| {
            let changed = **current != directory;
            if changed {
                *current = std::sync::Arc::new(directory);
            }
            changed
        });
        self.names.send_if_modified(|current| {
            let changed = **current != names;
            if changed {
                *current = std::sync::Arc::new(names);
            }
            changed
        });
    }
}

/// A pass that changed something, with how long each step took.
fn log_pass(report: &Report, t: &Timings) {
    if report.map_writes + report.links_created + report.links_removed == 0 {
        return;
    }
    info!(
        map_writes = report.map_writes,
        links_created = report.links_created,
        links_removed = report.links_removed,
        model_ms = t.read.as_millis() as u64,
        compile_ms = (t.compiled - t.read).as_millis() as u64,
        diff_and_write_ms = (t.written - t.compiled).as_millis() as u64,
        total_ms = t.started.elapsed().as_millis() as u64,
        "reconciled"
    );
}
