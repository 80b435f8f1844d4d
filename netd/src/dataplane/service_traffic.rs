//! Per service and backend traffic, from conntrack: each sweep sees every
//! flow's packet and byte counts (client to service), and what grew since
//! the previous sweep is added to counters. A flow never seen before is a
//! new connection. Flows are told apart by what the client asked for: the
//! service's VIP, or a published port on this host's uplink (the routing
//! mesh, which tracks its flows in the same conntrack). Pure; the agent
//! feeds it and exports the sums.
//!
//! What a flow did between its last sweep and its removal by the LRU is
//! not counted (at most one sweep interval of an evicted flow); flows netd
//! removes itself are counted up to their removal.

use std::collections::{BTreeMap, HashMap};

use netd_common::{
    mesh::HOST_MODE_TABLE,
    service::{CtEntry, CtTuple},
};

/// Where a set of flows went: the service (its index, whichever of its
/// Maglev tables chose), the backend, and the address and port the client
/// asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TrafficKey {
    pub service: u32,
    pub backend: [u8; 4],
    pub to: [u8; 4],
    pub to_port: u16,
}

impl TrafficKey {
    fn of(tuple: &CtTuple, e: &CtEntry) -> Self {
        Self {
            service: e.table & !HOST_MODE_TABLE,
            backend: e.backend_ip,
            to: tuple.dst,
            to_port: u16::from_be_bytes(tuple.dst_port),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub connections: u64,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub struct ServiceTraffic {
    /// Each flow's (created, packets, bytes) at the previous sweep.
    previous: HashMap<CtTuple, (u64, u64, u64)>,
}

impl ServiceTraffic {
    /// What grew, per backend, between the previous sweep and `flows`.
    pub fn observe(&mut self, flows: &[(CtTuple, CtEntry)]) -> BTreeMap<TrafficKey, Traffic> {
        let mut grew: BTreeMap<TrafficKey, Traffic> = BTreeMap::new();
        let mut now = HashMap::with_capacity(flows.len());
        for (tuple, e) in flows {
            let t = grew.entry(TrafficKey::of(tuple, e)).or_default();
            match self.previous.get(tuple) {
                // The same flow (same creation time): what it added.
                Some(&(created, packets, bytes)) if created == e.created => {
                    t.packets += e.packets.saturating_sub(packets);
                    t.bytes += e.bytes.saturating_sub(bytes);
                }
                _ => {
                    t.connections += 1;
                    t.packets += e.packets;
                    t.bytes += e.bytes;
                }
            }
            now.insert(*tuple, (e.created, e.packets, e.bytes));
        }
        self.previous = now;
        grew
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(backend: u8) -> TrafficKey {
        TrafficKey {
            service: 1,
            backend: [10, 0, 0, backend],
            to: [10, 0, 0, 100],
            to_port: 80,
        }
    }

    fn flow(port: u8, backend: u8, created: u64, packets: u64) -> (CtTuple, CtEntry) {
        (
            CtTuple {
                src: [10, 0, 0, 2],
                dst: [10, 0, 0, 100],
                src_port: [0, port],
                dst_port: [0, 80],
                proto: 6,
                _pad: [0; 3],
            },
            CtEntry {
                backend_ip: [10, 0, 0, backend],
                table: 1,
                created,
                packets,
                bytes: packets * 100,
                ..Default::default()
            },
        )
    }

    #[test]
    fn new_flows_count_once_and_packets_count_what_grew() {
        let mut t = ServiceTraffic::default();
        let first = t.observe(&[flow(1, 5, 10, 3), flow(2, 6, 11, 1)]);
        assert_eq!(
            first[&key(5)],
            Traffic {
                connections: 1,
                packets: 3,
                bytes: 300
            }
        );
        // Flow 1 grew by 2; flow 2 is gone; flow 3 is new; flow 1's port
        // reused by a new flow later (another creation time) is new again.
        let second = t.observe(&[flow(1, 5, 10, 5), flow(3, 6, 12, 4)]);
        assert_eq!(
            second[&key(5)],
            Traffic {
                connections: 0,
                packets: 2,
                bytes: 200
            }
        );
        assert_eq!(second[&key(6)].connections, 1);
        let third = t.observe(&[flow(1, 5, 99, 1)]);
        assert_eq!(third[&key(5)].connections, 1);
    }

    #[test]
    fn published_flows_are_told_from_vip_flows_and_host_mode_counts_as_its_service() {
        let mut t = ServiceTraffic::default();
        let (vip_tuple, vip_entry) = flow(1, 5, 10, 3);
        let mut published_tuple = vip_tuple;
        published_tuple.dst = [10, 96, 0, 1];
        published_tuple.dst_port = 30080u16.to_be_bytes();
        let published_entry = CtEntry {
            table: HOST_MODE_TABLE | 1,
            ..vip_entry
        };
        let grew = t.observe(&[(vip_tuple, vip_entry), (published_tuple, published_entry)]);
        assert_eq!(grew.len(), 2);
        assert_eq!(grew[&key(5)].connections, 1);
        let published = TrafficKey {
            to: [10, 96, 0, 1],
            to_port: 30080,
            ..key(5)
        };
        assert_eq!(grew[&published].packets, 3);
    }
}
