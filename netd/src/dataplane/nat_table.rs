//! Masquerading's state (`NETD_SNAT`, `NETD_SNAT_REV`): written by the
//! datapath for every flow to the world, swept of idle flows and listed
//! here. Timeouts are conntrack's, by the same states (an ICMP echo's are
//! UDP's).

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData};
use netd_common::{
    masquerade::{RevSnatEntry, SnatEntry},
    policy::PROTO_ICMP,
    service::{CtEntry, CtTuple, PROTO_TCP},
};
use serde::{Deserialize, Serialize};

use super::conntrack::{state, timeout, ConntrackConfig, ConntrackError};

/// The reverse entry a masqueraded flow's replies are found by.
pub fn reply_tuple(tuple: &CtTuple, entry: &SnatEntry) -> CtTuple {
    CtTuple {
        src: tuple.dst,
        dst: entry.to_ip,
        src_port: tuple.dst_port,
        dst_port: entry.to_port,
        proto: tuple.proto,
        _pad: [0; 3],
    }
}

/// Conntrack's view of a masqueraded flow, for its state and timeout.
fn as_ct(entry: &SnatEntry) -> CtEntry {
    CtEntry {
        flags: entry.flags,
        ..CtEntry::default()
    }
}

/// A masqueraded flow as `netd conntrack ls --nat` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NatView {
    pub protocol: String,
    /// The endpoint's address and port (an echo's identifier).
    pub endpoint: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// What the world sees.
    pub translated: SocketAddrV4,
    pub state: String,
    pub idle_secs: u64,
    pub age_secs: u64,
}

impl NatView {
    pub fn of(tuple: &CtTuple, entry: &SnatEntry, reply_seen: u64, now: u64) -> Self {
        let addr = |ip: [u8; 4], port: [u8; 2]| {
            SocketAddrV4::new(Ipv4Addr::from(ip), u16::from_be_bytes(port))
        };
        NatView {
            protocol: match tuple.proto {
                PROTO_TCP => "tcp",
                PROTO_ICMP => "icmp",
                _ => "udp",
            }
            .into(),
            endpoint: addr(tuple.src, tuple.src_port),
            remote: addr(tuple.dst, tuple.dst_port),
            translated: addr(entry.to_ip, entry.to_port),
            state: state(tuple, &as_ct(entry)).into(),
            idle_secs: now.saturating_sub(entry.last_seen.max(reply_seen)) / 1_000_000_000,
            age_secs: now.saturating_sub(entry.created) / 1_000_000_000,
        }
    }
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatSwept {
    pub live: usize,
    pub expired: usize,
    /// Reverse entries without their flow (a new flow that found the
    /// table full), removed once idle.
    pub orphans: usize,
}

pub struct NatTable {
    flows: HashMap<MapData, CtTuple, SnatEntry>,
    replies: HashMap<MapData, CtTuple, RevSnatEntry>,
    capacity: u32,
}

fn err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ConntrackError {
    move |source| ConntrackError { map, source }
}

impl NatTable {
    pub fn new(flows: Map, replies: Map) -> Result<Self, ConntrackError> {
        let capacity = super::maps::max_entries_of(&flows);
        Ok(Self {
            flows: HashMap::try_from(flows).map_err(err("NETD_SNAT"))?,
            replies: HashMap::try_from(replies).map_err(err("NETD_SNAT_REV"))?,
            capacity,
        })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Every flow now, with when its last reply came (0: none).
    pub fn flows(&self) -> Vec<(CtTuple, SnatEntry, u64)> {
        self.flows
            .iter()
            .filter_map(Result::ok)
            .map(|(t, e)| {
                let seen = self
                    .replies
                    .get(&reply_tuple(&t, &e), 0)
                    .map_or(0, |r| r.last_seen);
                (t, e, seen)
            })
            .collect()
    }

    /// Removes what has been idle past its timeout at `now` (ns), either
    /// way: a flow whose replies still come is live.
    pub fn sweep(&mut self, timeouts: &ConntrackConfig, now: u64) -> NatSwept {
        let mut swept = NatSwept::default();
        let mut live_replies = BTreeSet::new();
        for (tuple, entry, reply_seen) in self.flows() {
            let last = entry.last_seen.max(reply_seen);
            let idle = Duration::from_nanos(now.saturating_sub(last));
            let reply = reply_tuple(&tuple, &entry);
            if idle > timeout(timeouts, &tuple, &as_ct(&entry)) {
                // The reverse entry last: a reply meanwhile finds nothing
                // rather than a flow half gone.
                let _ = self.flows.remove(&tuple);
                let _ = self.replies.remove(&reply);
                swept.expired += 1;
            } else {
                live_replies.insert(reply);
                swept.live += 1;
            }
        }
        // A reverse entry is made just before its flow's: one without a
        // flow is left alone until it has been idle a while.
        let grace = Duration::from_secs(timeouts.udp_unreplied);
        let orphans: Vec<CtTuple> = self
            .replies
            .iter()
            .filter_map(Result::ok)
            .filter(|(t, r)| {
                !live_replies.contains(t)
                    && Duration::from_nanos(now.saturating_sub(r.last_seen)) > grace
            })
            .map(|(t, _)| t)
            .collect();
        for t in &orphans {
            let _ = self.replies.remove(t);
        }
        swept.orphans = orphans.len();
        swept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flows_reply_tuple_is_the_remote_to_the_translated_source() {
        let t = CtTuple {
            src: [10, 1, 0, 2],
            dst: [192, 0, 2, 1],
            src_port: 40000u16.to_be_bytes(),
            dst_port: 80u16.to_be_bytes(),
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        let e = SnatEntry {
            to_ip: [198, 51, 100, 1],
            to_port: 1024u16.to_be_bytes(),
            ..SnatEntry::default()
        };
        let r = reply_tuple(&t, &e);
        assert_eq!(
            (r.src, r.src_port, r.dst, r.dst_port),
            (t.dst, t.dst_port, e.to_ip, e.to_port)
        );
        let view = NatView::of(&t, &e, 0, 3_000_000_000);
        assert_eq!(view.translated.to_string(), "198.51.100.1:1024");
        assert_eq!(view.state, "opening");
        assert_eq!(view.idle_secs, 3);
    }
}
