//! What the datapath writes for the routing mesh, swept here:
//! - `NETD_MESH_NEIGH` (each client's next hop, on the host that took it
//!   in) goes with the client's last flow in conntrack: no reply needs it
//!   any more;
//! - `NETD_MESH_RETURN` (on a backend's host, the host each tunnelled flow
//!   came in on) goes once idle past conntrack's timeout for its protocol
//!   and state: a stale UDP entry cannot pull a later direct flow's
//!   replies through the host an earlier flow came in on;
//! - `NETD_SOCK_REVNAT` (the address each of the host's own sockets
//!   dialled) goes with its socket.
//!
//! Each map's snapshot is taken before what it is judged by, so an entry
//! made meanwhile is never judged by a view older than itself.

use std::{collections::BTreeSet, time::Duration};

use aya::maps::{HashMap, Map, MapData};
use netd_common::{
    mesh::{MeshNeighbour, SockRevNatEntry, SockRevNatKey, TunnelReturn, RETURN_OPENING},
    service::{CtEntry, CtTuple, PROTO_TCP},
};

use netd_common::map_names::{NETD_MESH_NEIGH, NETD_MESH_RETURN, NETD_SOCK_REVNAT};

use super::{
    conntrack::{ConntrackConfig, ConntrackError},
    maps::{max_entries_of, MapFill},
};

pub struct MeshState {
    neighbours: HashMap<MapData, [u8; 4], MeshNeighbour>,
    returns: HashMap<MapData, CtTuple, TunnelReturn>,
    sockets: HashMap<MapData, SockRevNatKey, SockRevNatEntry>,
    /// Each map's capacity, in the order above.
    capacities: [u32; 3],
}

/// What a sweep removed and kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshSwept {
    pub neighbours: (usize, usize),
    pub returns: (usize, usize),
    pub sockets: (usize, usize),
}

/// The clients' next hops, read first: see [`MeshState::sweep_neighbours`].
pub struct NeighbourSnapshot(Vec<[u8; 4]>);

fn err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ConntrackError {
    move |source| ConntrackError { map, source }
}

/// How long a tunnelled flow's return entry lives idle: conntrack's
/// timeout for a flow in the same state (an opening TCP flow's, an
/// established one's, UDP's).
pub fn return_timeout(t: &ConntrackConfig, reply: &CtTuple, entry: &TunnelReturn) -> Duration {
    let secs = if reply.proto != PROTO_TCP {
        t.udp
    } else if entry.flags & RETURN_OPENING != 0 {
        t.tcp_opening
    } else {
        t.tcp_established
    };
    Duration::from_secs(secs)
}

impl MeshState {
    pub fn new(neighbours: Map, returns: Map, sockets: Map) -> Result<Self, ConntrackError> {
        let capacities = [&neighbours, &returns, &sockets].map(max_entries_of);
        Ok(Self {
            capacities,
            neighbours: HashMap::try_from(neighbours).map_err(err(NETD_MESH_NEIGH))?,
            returns: HashMap::try_from(returns).map_err(err(NETD_MESH_RETURN))?,
            sockets: HashMap::try_from(sockets).map_err(err(NETD_SOCK_REVNAT))?,
        })
    }

    /// How full each map is, for `netd status`.
    pub fn fill(&self) -> Vec<MapFill> {
        let counts = [
            self.neighbours.keys().count(),
            self.returns.keys().count(),
            self.sockets.keys().count(),
        ];
        [NETD_MESH_NEIGH, NETD_MESH_RETURN, NETD_SOCK_REVNAT]
            .into_iter()
            .zip(counts)
            .zip(self.capacities)
            .map(|((name, entries), capacity)| MapFill {
                name: name.to_string(),
                entries,
                capacity,
            })
            .collect()
    }

    /// The clients with a next hop now; to be judged by conntrack's flows
    /// read after it.
    pub fn neighbours(&self) -> NeighbourSnapshot {
        NeighbourSnapshot(self.neighbours.keys().filter_map(Result::ok).collect())
    }

    /// Removes the next hops of `snapshot`'s clients that no flow of
    /// `flows` (read after the snapshot) comes from.
    pub fn sweep_neighbours(
        &mut self,
        snapshot: NeighbourSnapshot,
        flows: &[(CtTuple, CtEntry)],
    ) -> (usize, usize) {
        let clients: BTreeSet<[u8; 4]> = flows.iter().map(|(t, _)| t.src).collect();
        let mut gone = 0;
        for client in &snapshot.0 {
            if !clients.contains(client) {
                let _ = self.neighbours.remove(client);
                gone += 1;
            }
        }
        (gone, snapshot.0.len() - gone)
    }

    /// Removes the return entries idle past their timeout at `now` (ns).
    pub fn sweep_returns(&mut self, timeouts: &ConntrackConfig, now: u64) -> (usize, usize) {
        let entries: Vec<(CtTuple, TunnelReturn)> =
            self.returns.iter().filter_map(Result::ok).collect();
        let mut gone = 0;
        for (reply, entry) in &entries {
            let idle = Duration::from_nanos(now.saturating_sub(entry.last_seen));
            if idle > return_timeout(timeouts, reply, entry) {
                let _ = self.returns.remove(reply);
                gone += 1;
            }
        }
        (gone, entries.len() - gone)
    }

    /// The sockets with a reverse entry now; to be judged by the sockets
    /// alive after it.
    pub fn socket_entries(&self) -> Vec<SockRevNatKey> {
        self.sockets.keys().filter_map(Result::ok).collect()
    }

    /// Removes the entries of `snapshot` whose socket is not in `alive`
    /// (cookies read after the snapshot).
    pub fn sweep_sockets(
        &mut self,
        snapshot: Vec<SockRevNatKey>,
        alive: &BTreeSet<u64>,
    ) -> (usize, usize) {
        let mut gone = 0;
        for key in &snapshot {
            if !alive.contains(&key.cookie) {
                let _ = self.sockets.remove(key);
                gone += 1;
            }
        }
        (gone, snapshot.len() - gone)
    }
}

#[cfg(test)]
mod tests {
    use netd_common::service::PROTO_UDP;

    use super::*;

    #[test]
    fn a_return_entry_lives_as_long_as_conntrack_keeps_a_flow_in_its_state() {
        let t = ConntrackConfig {
            udp: 7,
            ..ConntrackConfig::default()
        };
        let reply = |proto| CtTuple {
            proto,
            ..CtTuple::default()
        };
        let entry = |flags| TunnelReturn {
            flags,
            ..TunnelReturn::default()
        };
        let secs = |proto, flags| return_timeout(&t, &reply(proto), &entry(flags)).as_secs();
        assert_eq!(secs(PROTO_UDP, 0), 7, "UDP: conntrack's udp timeout");
        assert_eq!(secs(PROTO_TCP, RETURN_OPENING), t.tcp_opening);
        assert_eq!(secs(PROTO_TCP, 0), t.tcp_established);
    }
}
