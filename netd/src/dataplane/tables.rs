//! Every pinned map of the datapath, declared once: name, key and value
//! types, kind, declared size, owner and place in the write order.
//!
//! - **Control** maps are desired state: `compile` fills them from the
//!   model, the reconciler diffs them against the kernel and writes the
//!   difference, deletes in reverse `order`, then puts in `order` (a map is
//!   written after the maps its entries point at).
//! - **Datapath** maps are written by the programs (counters; conntrack and
//!   NAT to come): netd reads and sweeps them, never diffs them.
//! - **Netd** maps are written by netd once at start (`NETD_META`).
//!
//! Adding a map: its `#[map]` in netd-ebpf, one `Table` const and its line
//! in [`TABLES`] here, and its line in `compile`. The fixture test
//! `tables_match_the_object` checks this list against the loaded object.

use std::marker::PhantomData;

use netd_common::{
    counters::{Counter, COUNTER_SLOTS},
    map_names,
    maps::{
        EndpointEntry, HostEntry, LocalEndpointEntry, NetworkEntry, OverlayConfig, PinMeta,
        MAX_ENDPOINTS, MAX_HOSTS, MAX_NETWORKS, MAX_PROGS, MAX_XDP_PROGS,
    },
    mesh::{
        MeshNeighbour, PublishedKey, SockRevNatEntry, SockRevNatKey, TunnelReturn,
        MAX_MESH_NEIGHBOURS, MAX_PUBLISHED, MAX_SOCK_REVNAT,
    },
    policy::{
        IpcacheKey, PolicyCtEntry, PolicyKey, PolicyMatch, PolicyVerdict, RuleHits, MAX_IPCACHE,
        MAX_POLICY_CT, MAX_POLICY_ENTRIES, MAX_RULE_COUNTERS,
    },
    service::{
        AffinityEntry, AffinityKey, BackendEntry, BackendKey, CtEntry, CtTuple, MaglevTable,
        RevNatEntry, ServiceEntry, ServiceKey, VipEntry, DEFAULT_CT_ENTRIES, MAX_AFFINITY,
        MAX_BACKENDS, MAX_SERVICES, MAX_SERVICE_PORTS, MAX_VIPS,
    },
};

use super::maps::{open_array, open_hash, open_lpm, KernelTable, Plain};

/// The kernel's map types netd uses (`bpf_map_type` numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash = 1,
    Array = 2,
    PerCpuHash = 5,
    PerCpuArray = 6,
    LruHash = 9,
    /// Programs to tail-call, by slot.
    ProgArray = 3,
    LruPerCpuHash = 10,
    /// Longest-prefix match; keys are a prefix length and the data.
    LpmTrie = 11,
    /// A ring buffer; its "entries" are its size in bytes.
    RingBuf = 27,
    /// An outer map whose values are inner maps (one per key), each a
    /// table of its own named `OUTER/<key as hex>`.
    HashOfMaps = 13,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Desired state, diffed; lower `order` is written first, deleted last.
    Control { order: u8 },
    /// Written by the programs; read and swept by netd.
    Datapath,
    /// Written by netd at start.
    Netd,
    /// A packet's scratch, written and read within one program run: an
    /// upgrade that changes its shape makes it afresh, carrying nothing.
    Scratch,
}

pub type Opener = fn(aya::maps::Map) -> Result<Box<dyn KernelTable>, aya::maps::MapError>;

/// One pinned map.
#[derive(Clone, Copy, Debug)]
pub struct TableDecl {
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    /// What netd-ebpf declares; the kernel's real max_entries is read from
    /// the map itself (a migrated map may differ until the next upgrade).
    pub max_entries: u32,
    pub owner: Owner,
    /// How the reconciler opens it (control maps only).
    pub open: Option<Opener>,
}

impl TableDecl {
    pub fn order(&self) -> Option<u8> {
        match self.owner {
            Owner::Control { order } => Some(order),
            _ => None,
        }
    }
}

/// A typed handle on a table, for `compile` and the tests.
pub struct Table<K, V> {
    pub name: &'static str,
    _kv: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for Table<K, V> {}

const fn size<T>() -> u32 {
    core::mem::size_of::<T>() as u32
}

impl<K: Plain, V: Plain> Table<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _kv: PhantomData,
        }
    }

    pub const fn hash(self, max_entries: u32, owner: Owner) -> TableDecl {
        TableDecl {
            name: self.name,
            kind: MapKind::Hash,
            key_size: size::<K>(),
            value_size: size::<V>(),
            max_entries,
            owner,
            open: Some(open_hash::<K, V>),
        }
    }

    /// Written by the programs (conntrack): evicts the least recently used
    /// entry when full.
    pub const fn lru_hash(self, max_entries: u32) -> TableDecl {
        TableDecl {
            kind: MapKind::LruHash,
            ..self.hash(max_entries, Owner::Datapath)
        }
    }
}

impl<K: Plain, V: Plain> Table<K, V> {
    /// An LPM trie whose key `K` is a prefix length then the data `D`.
    pub const fn lpm<D: Plain>(self, max_entries: u32, owner: Owner) -> TableDecl {
        TableDecl {
            kind: MapKind::LpmTrie,
            open: Some(open_lpm::<D, V>),
            ..self.hash(max_entries, owner)
        }
    }

    /// Per-CPU counters the programs create, evicting the least used.
    pub const fn lru_per_cpu_hash(self, max_entries: u32) -> TableDecl {
        TableDecl {
            kind: MapKind::LruPerCpuHash,
            open: None,
            ..self.hash(max_entries, Owner::Datapath)
        }
    }
}

impl<V: Plain> Table<u32, V> {
    pub const fn array(self, max_entries: u32, owner: Owner) -> TableDecl {
        TableDecl {
            name: self.name,
            kind: MapKind::Array,
            key_size: 4,
            value_size: size::<V>(),
            max_entries,
            owner,
            open: Some(open_array::<V>),
        }
    }

    /// Per-CPU values the programs count into, under keys netd makes.
    pub const fn per_cpu_hash(self, max_entries: u32) -> TableDecl {
        TableDecl {
            name: self.name,
            kind: MapKind::PerCpuHash,
            key_size: 4,
            value_size: size::<V>(),
            max_entries,
            owner: Owner::Datapath,
            open: None,
        }
    }

    pub const fn per_cpu_array(self, max_entries: u32, owner: Owner) -> TableDecl {
        TableDecl {
            name: self.name,
            kind: MapKind::PerCpuArray,
            key_size: 4,
            value_size: size::<V>(),
            max_entries,
            owner,
            open: None,
        }
    }
}

/// Networks by index: gateway and VNI.
pub const NETWORKS: Table<u32, NetworkEntry> = Table::new(map_names::NETWORKS);
/// Network index by VNI.
pub const VNIS: Table<u32, u32> = Table::new(map_names::VNIS);
/// Other hosts by index: their underlay address.
pub const HOSTS: Table<u32, HostEntry> = Table::new(map_names::HOSTS);
/// Host index by underlay address: who may send VXLAN here.
pub const HOST_BY_IP: Table<[u8; 4], u32> = Table::new(map_names::HOST_BY_IP);
/// This host's underlay side (index 0).
pub const OVERLAY: Table<u32, OverlayConfig> = Table::new(map_names::OVERLAY);
/// Local endpoints by host veth ifindex: what a packet from them must carry.
pub const LOCAL_ENDPOINTS: Table<u32, LocalEndpointEntry> = Table::new(map_names::LOCAL_ENDPOINTS);
/// Endpoints by IPv4: where a packet to them goes.
pub const ENDPOINTS: Table<[u8; 4], EndpointEntry> = Table::new(map_names::ENDPOINTS);
/// Per-CPU packets and bytes per (hook, verdict or drop reason).
pub const COUNTERS: Table<u32, Counter> = Table::new(map_names::COUNTERS);
/// Owner and layout of the pins.
pub const META: Table<u32, PinMeta> = Table::new(map_names::META);

/// Service ports by (VIP, port, protocol).
pub const SERVICES: Table<ServiceKey, ServiceEntry> = Table::new(map_names::SERVICES);
/// VIPs: their network.
pub const VIPS: Table<[u8; 4], VipEntry> = Table::new(map_names::VIPS);
/// Backends by (service index, address).
pub const BACKENDS: Table<BackendKey, BackendEntry> = Table::new(map_names::BACKENDS);
/// Maglev tables by service index.
pub const MAGLEV: Table<u32, MaglevTable> = Table::new(map_names::MAGLEV);
/// Conntrack: the backend of each client flow.
pub const CT: Table<CtTuple, CtEntry> = Table::new(map_names::CT);
/// Reverse NAT, by the reply's tuple.
pub const REV_NAT: Table<CtTuple, RevNatEntry> = Table::new(map_names::REV_NAT);

/// Client affinity: each client's backend, per service with affinity.
pub const AFFINITY: Table<AffinityKey, AffinityEntry> = Table::new(map_names::AFFINITY);

/// The routing mesh's published ports, by (port, protocol).
pub const PUBLISHED: Table<PublishedKey, ServiceEntry> = Table::new(map_names::PUBLISHED);
/// The routing mesh's clients' next hops, by client address.
pub const MESH_NEIGH: Table<[u8; 4], MeshNeighbour> = Table::new(map_names::MESH_NEIGH);
/// On a backend's host, the ingress host of each mesh flow, by reply tuple.
pub const MESH_RETURN: Table<CtTuple, TunnelReturn> = Table::new(map_names::MESH_RETURN);
/// The host's own UDP sockets balanced at `sendmsg`: the address each
/// backend's answers must seem to come from.
pub const SOCK_REVNAT: Table<SockRevNatKey, SockRevNatEntry> = Table::new(map_names::SOCK_REVNAT);

/// Policy verdicts by (endpoint, direction, identity, protocol/port prefix).
pub const POLICY: Table<PolicyKey, PolicyVerdict> = Table::new(map_names::POLICY);
/// Identities by address prefix.
pub const IPCACHE: Table<IpcacheKey, u32> = Table::new(map_names::IPCACHE);
/// The default-deny directions of each local endpoint some policy selects.
pub const POLICY_EPS: Table<[u8; 4], u32> = Table::new(map_names::POLICY_EPS);
/// Flows policy let through.
pub const POLICY_CT: Table<CtTuple, PolicyCtEntry> = Table::new(map_names::POLICY_CT);
/// Per-rule hits, per CPU.
pub const RULE_HITS: Table<u32, RuleHits> = Table::new(map_names::RULE_HITS);

/// Programs the endpoint program tail-calls, filled by netd at load.
pub const PROGS: TableDecl = prog_array(map_names::PROGS, MAX_PROGS);

/// Programs the uplink program tail-calls, filled by netd at load.
pub const XDP_PROGS: TableDecl = prog_array(map_names::XDP_PROGS, MAX_XDP_PROGS);

/// `netd monitor`'s events, written by the programs.
pub const EVENTS: TableDecl = TableDecl {
    name: map_names::EVENTS,
    kind: MapKind::RingBuf,
    key_size: 0,
    value_size: 0,
    max_entries: netd_common::events::EVENTS_RING_BYTES,
    owner: Owner::Datapath,
    open: None,
};
/// What the monitors want, written by netd.
pub const MONITOR: Table<u32, netd_common::events::MonitorConfig> = Table::new(map_names::MONITOR);
/// Each CPU's emission budget and tallies.
pub const EMIT: Table<u32, netd_common::events::EmitBudget> = Table::new(map_names::EMIT);
/// Each local endpoint's traffic and drops, per CPU, by host veth ifindex.
pub const ENDPOINT_STATS: Table<u32, netd_common::endpoint_stats::EndpointStats> =
    Table::new(map_names::ENDPOINT_STATS);
/// Each CPU's event noted for its entry point.
pub const PENDING: Table<u32, netd_common::events::Pending> = Table::new(map_names::PENDING);

/// A prog array: slot → program fd, filled by netd before it attaches.
const fn prog_array(name: &'static str, max_entries: u32) -> TableDecl {
    TableDecl {
        name,
        kind: MapKind::ProgArray,
        key_size: 4,
        value_size: 4,
        max_entries,
        owner: Owner::Netd,
        open: None,
    }
}

/// Every pinned map. Control maps in write order: what an entry points at
/// comes before it (endpoints point at networks, hosts and local entries;
/// a service port at its table, whose slots point at backends; a VIP is
/// written last, once its ports lead somewhere).
pub const TABLES: &[TableDecl] = &[
    NETWORKS.hash(MAX_NETWORKS, Owner::Control { order: 0 }),
    VNIS.hash(MAX_NETWORKS, Owner::Control { order: 1 }),
    HOSTS.hash(MAX_HOSTS, Owner::Control { order: 1 }),
    HOST_BY_IP.hash(MAX_HOSTS, Owner::Control { order: 2 }),
    OVERLAY.array(1, Owner::Control { order: 2 }),
    LOCAL_ENDPOINTS.hash(MAX_ENDPOINTS, Owner::Control { order: 3 }),
    ENDPOINTS.hash(MAX_ENDPOINTS, Owner::Control { order: 4 }),
    BACKENDS.hash(MAX_BACKENDS, Owner::Control { order: 5 }),
    MAGLEV.hash(MAX_SERVICES, Owner::Control { order: 6 }),
    SERVICES.hash(MAX_SERVICE_PORTS, Owner::Control { order: 7 }),
    VIPS.hash(MAX_VIPS, Owner::Control { order: 8 }),
    PUBLISHED.hash(MAX_PUBLISHED, Owner::Control { order: 7 }),
    // Verdicts and identities before the flags that make an endpoint
    // default-deny: it is never enforced before what allows its traffic.
    POLICY.lpm::<PolicyMatch>(MAX_POLICY_ENTRIES, Owner::Control { order: 9 }),
    IPCACHE.lpm::<[u8; 4]>(MAX_IPCACHE, Owner::Control { order: 10 }),
    POLICY_EPS.hash(MAX_ENDPOINTS, Owner::Control { order: 11 }),
    POLICY_CT.lru_hash(MAX_POLICY_CT),
    RULE_HITS.lru_per_cpu_hash(MAX_RULE_COUNTERS),
    CT.lru_hash(DEFAULT_CT_ENTRIES),
    REV_NAT.lru_hash(DEFAULT_CT_ENTRIES),
    AFFINITY.lru_hash(MAX_AFFINITY),
    MESH_NEIGH.lru_hash(MAX_MESH_NEIGHBOURS),
    MESH_RETURN.lru_hash(DEFAULT_CT_ENTRIES),
    SOCK_REVNAT.lru_hash(MAX_SOCK_REVNAT),
    COUNTERS.per_cpu_array(COUNTER_SLOTS, Owner::Datapath),
    ENDPOINT_STATS.per_cpu_hash(MAX_ENDPOINTS),
    META.array(1, Owner::Netd),
    EVENTS,
    MONITOR.array(1, Owner::Netd),
    EMIT.per_cpu_array(1, Owner::Datapath),
    PENDING.per_cpu_array(1, Owner::Scratch),
    PROGS,
    XDP_PROGS,
];

/// An inner table of a map of maps is named `OUTER/<key as hex>`, and its
/// declaration `OUTER/*`. The outer map's name, and whether `table` is an
/// inner table.
pub fn outer_of(table: &str) -> (&str, bool) {
    match table.split_once('/') {
        Some((outer, _)) => (outer, true),
        None => (table, false),
    }
}

/// The sizes a netd is run with where they differ from the declarations:
/// conntrack's maps (both ways, and the mesh's return entries) take
/// `[conntrack] max-entries`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub conntrack: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            conntrack: DEFAULT_CT_ENTRIES,
        }
    }
}

impl Sizes {
    /// The max_entries `decl`'s map is loaded with.
    pub fn max_entries(&self, decl: &TableDecl) -> u32 {
        if [CT.name, REV_NAT.name, MESH_RETURN.name].contains(&decl.name) {
            self.conntrack
        } else {
            decl.max_entries
        }
    }
}

pub fn decl(name: &str) -> Option<&'static TableDecl> {
    TABLES.iter().find(|t| t.name == name)
}

/// The control maps in write order.
pub fn control_tables() -> impl DoubleEndedIterator<Item = &'static TableDecl> {
    let mut tables: Vec<&'static TableDecl> =
        TABLES.iter().filter(|t| t.order().is_some()).collect();
    tables.sort_by_key(|t| t.order());
    tables.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_control_maps_can_be_opened() {
        for (i, t) in TABLES.iter().enumerate() {
            assert!(
                !TABLES[..i].iter().any(|o| o.name == t.name),
                "{} twice",
                t.name
            );
            assert!(t.order().is_none() || t.open.is_some(), "{}", t.name);
        }
    }

    #[test]
    fn entries_come_after_what_they_point_at() {
        let order = |name| decl(name).and_then(TableDecl::order).expect(name);
        assert!(order(map_names::NETWORKS) < order(map_names::ENDPOINTS));
        assert!(order(map_names::HOSTS) < order(map_names::ENDPOINTS));
        assert!(order(map_names::LOCAL_ENDPOINTS) < order(map_names::ENDPOINTS));
        assert!(order(map_names::NETWORKS) < order(map_names::VNIS));
    }
}
