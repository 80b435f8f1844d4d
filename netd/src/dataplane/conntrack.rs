//! netd's conntrack (`NETD_CT`, `NETD_REV_NAT`, and client affinity in
//! `NETD_AFFINITY`): written by the datapath for every flow to a VIP,
//! read, swept and flushed here. An entry's timeout depends on its
//! protocol and on what the datapath saw of it (a reply, a FIN, a RST);
//! the pure part is [`timeout`]. An affinity entry lasts its service's
//! affinity timeout after the client's last new flow.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData, MapError};
use netd_common::service::{
    AffinityEntry, AffinityKey, CtEntry, CtTuple, RevNatEntry, CT_HAIRPIN, CT_SEEN_FIN,
    CT_SEEN_REPLY, CT_SEEN_RST, HAIRPIN_IP, PROTO_TCP,
};
use serde::{Deserialize, Serialize};

use crate::model::Service;

/// `[conntrack]`: how long an idle entry lives, by state, and how many
/// the maps hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConntrackConfig {
    /// TCP that saw a reply and no FIN/RST. Long: an idle database or SSH
    /// connection must not be cut (IPVS's 900 s does that).
    #[serde(default = "defaults::tcp_established")]
    pub tcp_established: u64,
    /// TCP with no reply yet (a SYN that went unanswered).
    #[serde(default = "defaults::tcp_opening")]
    pub tcp_opening: u64,
    /// TCP after a FIN or a RST.
    #[serde(default = "defaults::tcp_closing")]
    pub tcp_closing: u64,
    /// UDP that saw a reply.
    #[serde(default = "defaults::udp")]
    pub udp: u64,
    /// UDP with no reply yet.
    #[serde(default = "defaults::udp_unreplied")]
    pub udp_unreplied: u64,
    /// Flows conntrack holds (and as many reverse entries) before its LRU
    /// evicts the least recently used. A change carries the entries over
    /// into maps of the new size at the next start.
    #[serde(default = "defaults::max_entries")]
    pub max_entries: u32,
}

mod defaults {
    pub fn tcp_established() -> u64 {
        6 * 3600
    }
    pub fn tcp_opening() -> u64 {
        60
    }
    pub fn tcp_closing() -> u64 {
        30
    }
    pub fn udp() -> u64 {
        120
    }
    pub fn udp_unreplied() -> u64 {
        30
    }
    pub fn max_entries() -> u32 {
        netd_common::service::DEFAULT_CT_ENTRIES
    }
}

/// The sizes `[conntrack] max-entries` accepts.
pub const MAX_ENTRIES: std::ops::RangeInclusive<u32> = 64..=16_777_216;

impl Default for ConntrackConfig {
    fn default() -> Self {
        Self {
            tcp_established: defaults::tcp_established(),
            tcp_opening: defaults::tcp_opening(),
            tcp_closing: defaults::tcp_closing(),
            udp: defaults::udp(),
            udp_unreplied: defaults::udp_unreplied(),
            max_entries: defaults::max_entries(),
        }
    }
}

impl ConntrackConfig {
    /// The longest of them: what a reverse entry whose flow is gone lives.
    fn longest(&self) -> u64 {
        [
            self.tcp_established,
            self.tcp_opening,
            self.tcp_closing,
            self.udp,
            self.udp_unreplied,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }
}

/// The state an entry is in, as `conntrack ls` shows it.
pub fn state(tuple: &CtTuple, entry: &CtEntry) -> &'static str {
    let replied = entry.flags & CT_SEEN_REPLY != 0;
    if tuple.proto == PROTO_TCP {
        if entry.flags & (CT_SEEN_FIN | CT_SEEN_RST) != 0 {
            "closing"
        } else if replied {
            "established"
        } else {
            "opening"
        }
    } else if replied {
        "replied"
    } else {
        "unreplied"
    }
}

/// How long `entry` may stay idle.
pub fn timeout(t: &ConntrackConfig, tuple: &CtTuple, entry: &CtEntry) -> Duration {
    Duration::from_secs(match state(tuple, entry) {
        "closing" => t.tcp_closing,
        "established" => t.tcp_established,
        "opening" => t.tcp_opening,
        "replied" => t.udp,
        _ => t.udp_unreplied,
    })
}

/// CLOCK_MONOTONIC in ns: the clock the datapath reads (as of its last
/// tick, `bpf_ktime_get_coarse_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The reverse entry a flow's replies are found by.
pub fn reply_tuple(tuple: &CtTuple, entry: &CtEntry) -> CtTuple {
    let to = if entry.flags & CT_HAIRPIN != 0 {
        HAIRPIN_IP
    } else {
        tuple.src
    };
    tuple.reply(entry.backend_ip, entry.backend_port, to)
}

/// Which flows `conntrack ls` / `flush` take: all, or those of a
/// service (by name) and/or to a backend address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FlowFilter {
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub backend: Option<Ipv4Addr>,
}

/// Service names by index (a conntrack entry's `table`), looked up once
/// per listing rather than once per flow.
pub type ServiceNames = BTreeMap<u32, String>;

pub fn service_names(services: &[Service]) -> ServiceNames {
    // A host-mode published port's flows carry its own table's number.
    services
        .iter()
        .flat_map(|s| {
            [
                (s.index, s.name.clone()),
                (netd_common::mesh::HOST_MODE_TABLE | s.index, s.name.clone()),
            ]
        })
        .collect()
}

impl FlowFilter {
    pub fn matches(&self, names: &ServiceNames, entry: &CtEntry) -> bool {
        self.takes(names, entry.table, entry.backend_ip)
    }

    /// Whether a client's affinity to `backend` of service `table` goes
    /// with the flows a flush takes.
    pub fn takes(&self, names: &ServiceNames, table: u32, backend: [u8; 4]) -> bool {
        let service_ok = self
            .service
            .as_ref()
            .is_none_or(|name| names.get(&table) == Some(name));
        let backend_ok = self.backend.is_none_or(|ip| ip.octets() == backend);
        service_ok && backend_ok
    }
}

/// A flow as `netd conntrack ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FlowView {
    pub protocol: String,
    pub client: SocketAddrV4,
    pub vip: SocketAddrV4,
    pub backend: SocketAddrV4,
    /// The service's name ("?" when it is gone).
    pub service: String,
    pub state: String,
    pub idle_secs: u64,
    pub age_secs: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl FlowView {
    pub fn of(names: &ServiceNames, tuple: &CtTuple, entry: &CtEntry, now: u64) -> Self {
        let addr = |ip: [u8; 4], port: [u8; 2]| {
            SocketAddrV4::new(Ipv4Addr::from(ip), u16::from_be_bytes(port))
        };
        FlowView {
            protocol: if tuple.proto == PROTO_TCP {
                "tcp"
            } else {
                "udp"
            }
            .into(),
            client: addr(tuple.src, tuple.src_port),
            vip: addr(tuple.dst, tuple.dst_port),
            backend: addr(entry.backend_ip, entry.backend_port),
            service: names.get(&entry.table).map_or("?".into(), Clone::clone),
            state: state(tuple, entry).into(),
            idle_secs: now.saturating_sub(entry.last_seen) / 1_000_000_000,
            age_secs: now.saturating_sub(entry.created) / 1_000_000_000,
            packets: entry.packets,
            bytes: entry.bytes,
        }
    }
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Entries left.
    pub live: usize,
    /// Flows removed because they were idle past their timeout.
    pub expired: usize,
    /// Reverse entries removed whose flow was gone (evicted by the LRU).
    pub orphans: usize,
    /// Client-affinity entries left, and removed past their timeout.
    pub affinity_live: usize,
    pub affinity_expired: usize,
    /// Every flow as the sweep found it (expired ones included, with
    /// their last counts).
    pub seen: Vec<(CtTuple, CtEntry)>,
}

pub struct Conntrack {
    flows: HashMap<MapData, CtTuple, CtEntry>,
    replies: HashMap<MapData, CtTuple, RevNatEntry>,
    affinity: HashMap<MapData, AffinityKey, AffinityEntry>,
    capacity: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("conntrack map {map}")]
pub struct ConntrackError {
    pub(super) map: &'static str,
    #[source]
    pub(super) source: MapError,
}

fn err(map: &'static str) -> impl Fn(MapError) -> ConntrackError {
    move |source| ConntrackError { map, source }
}

impl Conntrack {
    pub fn new(flows: Map, replies: Map, affinity: Map) -> Result<Self, ConntrackError> {
        let capacity = super::maps::max_entries_of(&flows);
        Ok(Self {
            flows: HashMap::try_from(flows).map_err(err("NETD_CT"))?,
            replies: HashMap::try_from(replies).map_err(err("NETD_REV_NAT"))?,
            affinity: HashMap::try_from(affinity).map_err(err("NETD_AFFINITY"))?,
            capacity,
        })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Every flow now (entries that vanish while read are skipped).
    pub fn flows(&self) -> Vec<(CtTuple, CtEntry)> {
        self.flows.iter().filter_map(Result::ok).collect()
    }

    /// Removes a flow and its reverse entry.
    pub fn remove(&mut self, tuple: &CtTuple, entry: &CtEntry) {
        let _ = self.replies.remove(&reply_tuple(tuple, entry));
        let _ = self.flows.remove(tuple);
    }

    /// Every client's affinity now.
    pub fn affinities(&self) -> Vec<(AffinityKey, AffinityEntry)> {
        self.affinity.iter().filter_map(Result::ok).collect()
    }

    pub fn remove_affinity(&mut self, key: &AffinityKey) {
        let _ = self.affinity.remove(key);
    }

    /// Removes what has been idle past its timeout at `now` (ns).
    pub fn sweep(&mut self, timeouts: &ConntrackConfig, now: u64) -> Swept {
        let mut swept = Swept::default();
        let flows = self.flows();
        let mut live_replies = std::collections::BTreeSet::new();
        for (tuple, entry) in &flows {
            let idle = Duration::from_nanos(now.saturating_sub(entry.last_seen));
            if idle > timeout(timeouts, tuple, entry) {
                self.remove(tuple, entry);
                swept.expired += 1;
            } else {
                live_replies.insert(reply_tuple(tuple, entry));
                swept.live += 1;
            }
        }
        swept.seen = flows;
        let longest = Duration::from_secs(timeouts.longest());
        let replies: Vec<(CtTuple, RevNatEntry)> =
            self.replies.iter().filter_map(Result::ok).collect();
        for (tuple, entry) in replies {
            let idle = Duration::from_nanos(now.saturating_sub(entry.last_seen));
            if !live_replies.contains(&tuple) && idle > longest {
                let _ = self.replies.remove(&tuple);
                swept.orphans += 1;
            }
        }
        for (key, entry) in self.affinities() {
            if entry.holds(entry.timeout_secs, now) {
                swept.affinity_live += 1;
            } else {
                self.remove_affinity(&key);
                swept.affinity_expired += 1;
            }
        }
        swept
    }
}

#[cfg(test)]
mod tests {
    use netd_common::service::PROTO_UDP;

    use super::*;

    fn flow(proto: u8) -> CtTuple {
        CtTuple {
            src: [10, 0, 0, 2],
            dst: [10, 0, 0, 100],
            src_port: [0x9c, 0x40],
            dst_port: [0, 80],
            proto,
            _pad: [0; 3],
        }
    }

    fn entry(flags: u16) -> CtEntry {
        CtEntry {
            backend_ip: [10, 0, 0, 5],
            backend_port: [0x1f, 0x90],
            flags,
            ..Default::default()
        }
    }

    #[test]
    fn established_tcp_lives_hours_and_closing_or_unanswered_flows_are_short() {
        let t = ConntrackConfig::default();
        let tcp = flow(PROTO_TCP);
        let udp = flow(PROTO_UDP);
        let secs = |tuple: &CtTuple, flags| timeout(&t, tuple, &entry(flags)).as_secs();
        assert_eq!(secs(&tcp, CT_SEEN_REPLY), 21_600);
        assert_eq!(secs(&tcp, 0), 60);
        assert_eq!(secs(&tcp, CT_SEEN_REPLY | CT_SEEN_FIN), 30);
        assert_eq!(secs(&tcp, CT_SEEN_RST), 30);
        assert_eq!(secs(&udp, CT_SEEN_REPLY), 120);
        assert_eq!(secs(&udp, 0), 30);
        assert!(secs(&tcp, CT_SEEN_REPLY) > 900, "longer than IPVS's 900 s");
    }

    #[test]
    fn the_reply_tuple_is_the_one_the_datapath_writes() {
        let tcp = flow(PROTO_TCP);
        let r = reply_tuple(&tcp, &entry(0));
        assert_eq!((r.src, r.dst), ([10, 0, 0, 5], [10, 0, 0, 2]));
        let hairpin = reply_tuple(&tcp, &entry(CT_HAIRPIN));
        assert_eq!(hairpin.dst, HAIRPIN_IP);
    }

    #[test]
    fn timeouts_read_from_toml_keep_defaults_for_what_is_missing() {
        let t: ConntrackConfig = toml::from_str("tcp-established = 86400").expect("toml");
        assert_eq!(t.tcp_established, 86_400);
        assert_eq!(t.udp, 120);
    }
}
