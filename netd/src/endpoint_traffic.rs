//! Each local endpoint's traffic as users see it: named, with its drops by
//! reason. What it sent is its host veth's received count (the kernel's);
//! what it received and its drops, the datapath's per-endpoint counters.
//! For the metrics, `netd endpoint ls` and `netd status`.

use std::{collections::BTreeMap, sync::Arc};

use netd_common::endpoint_stats::EndpointStats;
use serde::{Deserialize, Serialize};

use crate::{dataplane::endpoint_stats::EndpointStatsMap, monitor::Directory};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointTraffic {
    pub endpoint: String,
    pub network: String,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub received_packets: u64,
    pub received_bytes: u64,
    /// Its packets netd dropped, by reason (`netd_drops_total`'s reason
    /// label), most first.
    pub drops: Vec<(String, u64)>,
}

impl EndpointTraffic {
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }

    /// The first `n` drop reasons as `reason:count`, or `-`.
    pub fn top_drops(&self, n: usize) -> String {
        if self.drops.is_empty() {
            return "-".into();
        }
        self.drops
            .iter()
            .take(n)
            .map(|(reason, count)| format!("{reason}:{count}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The counters of the endpoints `directory` names, by endpoint name, from
/// the datapath's `stats` and the host veths' `sent` (packets, bytes) by
/// ifindex. Counters of an ifindex it does not name are left out: a link
/// netd is still making, or one it is removing.
pub fn named(
    directory: &Directory,
    stats: &BTreeMap<u32, EndpointStats>,
    sent: &BTreeMap<u32, (u64, u64)>,
) -> BTreeMap<String, EndpointTraffic> {
    stats
        .iter()
        .filter_map(|(ifindex, s)| {
            let (endpoint, network) = directory.by_ifindex.get(ifindex)?;
            let (sent_packets, sent_bytes) = sent.get(ifindex).copied().unwrap_or_default();
            Some((
                endpoint.clone(),
                EndpointTraffic {
                    endpoint: endpoint.clone(),
                    network: network.clone(),
                    sent_packets,
                    sent_bytes,
                    received_packets: s.received.packets,
                    received_bytes: s.received.bytes,
                    drops: s
                        .top_drops()
                        .map(|(reason, n)| (reason.name().to_string(), n))
                        .collect(),
                },
            ))
        })
        .collect()
}

/// The counters read afresh at each call, named as the last reconcile
/// pass left the directory (for each Prometheus scrape and `GET /traffic`),
/// through a map handle of its own: a reader never waits for a pass.
pub struct TrafficSource {
    map: EndpointStatsMap,
    links: crate::netlink::Netlink,
    directory: tokio::sync::watch::Receiver<Arc<Directory>>,
}

impl TrafficSource {
    pub fn new(
        map: EndpointStatsMap,
        links: crate::netlink::Netlink,
        directory: tokio::sync::watch::Receiver<Arc<Directory>>,
    ) -> Self {
        Self {
            map,
            links,
            directory,
        }
    }

    /// Each local endpoint's traffic and drops, by endpoint name.
    pub async fn read(&self) -> BTreeMap<String, EndpointTraffic> {
        let sent = sent_by_host_veths(&self.links).await;
        let directory = self.directory.borrow().clone();
        named(&directory, &self.map.read(), &sent)
    }
}

/// What each endpoint sent, as its host veth counted it (empty, and
/// logged, if the links cannot be listed).
async fn sent_by_host_veths(links: &crate::netlink::Netlink) -> BTreeMap<u32, (u64, u64)> {
    links
        .received_by(crate::model::HOST_IFNAME_PREFIX)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %crate::logging::chain(&e), "reading the host veths' counters");
            BTreeMap::new()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netd_common::counters::DropReason;

    #[test]
    fn counters_are_named_by_their_link_and_unknown_links_are_left_out() {
        let directory = Directory {
            by_ifindex: [(7, ("web".to_string(), "n1".to_string()))].into(),
            ..Default::default()
        };
        let mut web = EndpointStats::default();
        web.received.bytes = 900;
        web.drops[DropReason::Spoofed as usize] = 2;
        web.drops[DropReason::Isolation as usize] = 5;
        let stats = [(7, web), (8, EndpointStats::default())].into();
        let named = named(&directory, &stats, &[(7, (10, 1000))].into());
        assert_eq!(named.len(), 1);
        let t = &named["web"];
        assert_eq!(
            (t.network.as_str(), t.sent_packets, t.received_bytes),
            ("n1", 10, 900)
        );
        assert_eq!(t.dropped(), 7);
        assert_eq!(t.top_drops(1), "isolation:5");
        assert_eq!(t.top_drops(3), "isolation:5,spoofed:2");
        assert_eq!(EndpointTraffic::default().top_drops(3), "-");
    }
}
