//! Which hosts' endpoints go into the maps: every live or external one,
//! and for a grace period those whose netd went away (their pinned
//! datapath still forwards while their netd restarts or is upgraded).

use std::time::Instant;

use tracing::{info, warn};

use super::{Agent, Departure, Report, State};
use crate::{model::Host, store::Store};

impl<S: Store> Agent<S> {
    /// The hosts whose endpoints go into the maps: alive, external, or
    /// gone for less than the grace period (their pinned datapath still
    /// forwards while their netd restarts or is upgraded).
    pub(super) fn hosts_to_forward_to(
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
}
