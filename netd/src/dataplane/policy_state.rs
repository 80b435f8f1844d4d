//! What the datapath writes for policy: the flows it let through
//! (`NETD_POLICY_CT`), swept here with conntrack's timeouts, and each
//! rule's hits (`NETD_RULE_HITS`), read for `netd policy ls` and the
//! metrics and forgotten when their policy goes.

use std::{collections::BTreeMap, time::Duration};

use aya::maps::{HashMap, Map, MapData, PerCpuHashMap};
use netd_common::{
    policy::{rule_of, PolicyCtEntry, RuleHits},
    service::{CtEntry, CtTuple},
};

use super::conntrack::{timeout, ConntrackConfig, ConntrackError};

pub struct PolicyState {
    flows: HashMap<MapData, CtTuple, PolicyCtEntry>,
    hits: PerCpuHashMap<MapData, u32, RuleHits>,
}

fn err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ConntrackError {
    move |source| ConntrackError { map, source }
}

impl PolicyState {
    pub fn new(flows: Map, hits: Map) -> Result<Self, ConntrackError> {
        Ok(Self {
            flows: HashMap::try_from(flows).map_err(err("NETD_POLICY_CT"))?,
            hits: PerCpuHashMap::try_from(hits).map_err(err("NETD_RULE_HITS"))?,
        })
    }

    /// Removes the flows idle past conntrack's timeout for their state;
    /// how many went and how many stay.
    pub fn sweep(&mut self, timeouts: &ConntrackConfig, now: u64) -> (usize, usize) {
        let flows: Vec<(CtTuple, PolicyCtEntry)> =
            self.flows.iter().filter_map(Result::ok).collect();
        let mut expired = 0;
        for (tuple, entry) in &flows {
            // Conntrack's states: the same flags, the same meaning.
            let as_ct = CtEntry {
                flags: entry.flags,
                ..CtEntry::default()
            };
            let idle = Duration::from_nanos(now.saturating_sub(entry.last_seen));
            if idle > timeout(timeouts, tuple, &as_ct) {
                let _ = self.flows.remove(tuple);
                expired += 1;
            }
        }
        (expired, flows.len() - expired)
    }

    /// Every rule's hits, summed over the CPUs.
    pub fn hits(&self) -> BTreeMap<u32, RuleHits> {
        let mut out = BTreeMap::new();
        for (rule, per_cpu) in self.hits.iter().filter_map(Result::ok) {
            let mut sum = RuleHits::default();
            for h in per_cpu.iter() {
                sum.add(h);
            }
            out.insert(rule, sum);
        }
        out
    }

    /// Drops the counters of rules of policies `live` does not know: a
    /// new policy may take a removed one's index.
    pub fn forget_rules(&mut self, live: impl Fn(u32) -> bool) {
        let stale: Vec<u32> = self
            .hits
            .keys()
            .filter_map(Result::ok)
            .filter(|rule| !live(rule_of(*rule).0))
            .collect();
        for rule in stale {
            let _ = self.hits.remove(&rule);
        }
    }
}
