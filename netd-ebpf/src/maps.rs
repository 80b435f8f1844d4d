//! Every map of the datapath, one line each on what it holds. All are
//! pinned by name, so they outlive netd restarts and the programs keep
//! forwarding with the state they have.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap,
        ProgramArray, RingBuf,
    },
};
use netd_common::{
    counters::{Counter, COUNTER_SLOTS},
    endpoint_stats::EndpointStats,
    events::{EmitBudget, MonitorConfig, Pending, EVENTS_RING_BYTES},
    maps::{
        EndpointEntry, HostEntry, LocalEndpointEntry, NetworkEntry, OverlayConfig, PinMeta,
        MAX_ENDPOINTS, MAX_HOSTS, MAX_NETWORKS, MAX_PROGS, MAX_XDP_PROGS,
    },
    mesh::{
        MeshNeighbour, PublishedKey, SockRevNatEntry, SockRevNatKey, TunnelReturn,
        MAX_MESH_NEIGHBOURS, MAX_PUBLISHED, MAX_SOCK_REVNAT,
    },
    policy::{
        PolicyCtEntry, PolicyMatch, PolicyVerdict, RuleHits, MAX_IPCACHE, MAX_POLICY_CT,
        MAX_POLICY_ENTRIES, MAX_RULE_COUNTERS,
    },
    service::{
        AffinityEntry, AffinityKey, BackendEntry, BackendKey, CtEntry, CtTuple, MaglevTable,
        RevNatEntry, ServiceEntry, ServiceKey, VipEntry, DEFAULT_CT_ENTRIES, MAX_AFFINITY,
        MAX_BACKENDS, MAX_SERVICES, MAX_SERVICE_PORTS, MAX_VIPS,
    },
};

/// Packets and bytes per (hook, verdict) and per (hook, drop reason).
#[map(name = "NETD_COUNTERS")]
pub static NETD_COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(COUNTER_SLOTS, 0);

/// Events for `netd monitor` (see `events.rs`).
#[map(name = "NETD_EVENTS")]
pub static NETD_EVENTS: RingBuf = RingBuf::pinned(EVENTS_RING_BYTES, 0);

/// What the monitors want (one entry; `kinds` 0 while none listens).
#[map(name = "NETD_MONITOR")]
pub static NETD_MONITOR: Array<MonitorConfig> = Array::pinned(1, 0);

/// Each CPU's emission budget and its tallies.
#[map(name = "NETD_EMIT")]
pub static NETD_EMIT: PerCpuArray<EmitBudget> = PerCpuArray::pinned(1, 0);

/// Each CPU's event noted by a stage, for its entry point to emit.
#[map(name = "NETD_PENDING")]
pub static NETD_PENDING: PerCpuArray<Pending> = PerCpuArray::pinned(1, 0);

/// Each local endpoint's traffic, per CPU, by its host veth's ifindex:
/// entries made by netd (allocated then, not up front: an entry is 272
/// bytes on every CPU), counted into by the programs.
#[map(name = "NETD_EP_STATS")]
pub static NETD_EP_STATS: PerCpuHashMap<u32, EndpointStats> =
    PerCpuHashMap::pinned(MAX_ENDPOINTS, BPF_F_NO_PREALLOC);

/// Endpoints on this host by IPv4 address: where a packet to them goes.
#[map(name = "NETD_ENDPOINTS")]
pub static NETD_ENDPOINTS: HashMap<[u8; 4], EndpointEntry> = HashMap::pinned(MAX_ENDPOINTS, 0);

/// Endpoints by the ifindex of their host veth: what a packet from them must carry.
#[map(name = "NETD_LOCAL_EPS")]
pub static NETD_LOCAL_EPS: HashMap<u32, LocalEndpointEntry> = HashMap::pinned(MAX_ENDPOINTS, 0);

/// Networks by index: their gateway address.
#[map(name = "NETD_NETWORKS")]
pub static NETD_NETWORKS: HashMap<u32, NetworkEntry> = HashMap::pinned(MAX_NETWORKS, 0);

/// Other hosts of the cluster by index: their underlay address.
#[map(name = "NETD_HOSTS")]
pub static NETD_HOSTS: HashMap<u32, HostEntry> = HashMap::pinned(MAX_HOSTS, 0);

/// Host index by underlay address: who may send us VXLAN.
#[map(name = "NETD_HOST_BY_IP")]
pub static NETD_HOST_BY_IP: HashMap<[u8; 4], u32> = HashMap::pinned(MAX_HOSTS, 0);

/// Network index by VXLAN network identifier.
#[map(name = "NETD_VNIS")]
pub static NETD_VNIS: HashMap<u32, u32> = HashMap::pinned(MAX_NETWORKS, 0);

/// This host's side of the underlay (one entry).
#[map(name = "NETD_OVERLAY")]
pub static NETD_OVERLAY: Array<OverlayConfig> = Array::pinned(1, 0);

/// Whose pins these are and their layout version: read and written by netd only.
#[map(name = "NETD_META")]
pub static NETD_META: Array<PinMeta> = Array::pinned(1, 0);

/// Service ports by (VIP, port, protocol): the service's table and target port.
#[map(name = "NETD_SERVICES")]
pub static NETD_SERVICES: HashMap<ServiceKey, ServiceEntry> = HashMap::pinned(MAX_SERVICE_PORTS, 0);

/// VIPs: their network (isolation, ARP).
#[map(name = "NETD_VIPS")]
pub static NETD_VIPS: HashMap<[u8; 4], VipEntry> = HashMap::pinned(MAX_VIPS, 0);

/// Backends by (service, address): their state.
#[map(name = "NETD_BACKENDS")]
pub static NETD_BACKENDS: HashMap<BackendKey, BackendEntry> =
    HashMap::pinned(MAX_BACKENDS, BPF_F_NO_PREALLOC);

/// Each service's Maglev table, by service index. Not preallocated: a
/// table costs memory only while its service exists.
#[map(name = "NETD_MAGLEV")]
pub static NETD_MAGLEV: HashMap<u32, MaglevTable> =
    HashMap::pinned(MAX_SERVICES, BPF_F_NO_PREALLOC);

/// Conntrack: the backend each client flow to a VIP was given. Written
/// here, swept by netd.
#[map(name = "NETD_CT")]
pub static NETD_CT: LruHashMap<CtTuple, CtEntry> = LruHashMap::pinned(DEFAULT_CT_ENTRIES, 0);

/// Reverse NAT: what a reply from a backend is rewritten to.
#[map(name = "NETD_REV_NAT")]
pub static NETD_REV_NAT: LruHashMap<CtTuple, RevNatEntry> =
    LruHashMap::pinned(DEFAULT_CT_ENTRIES, 0);

/// Client affinity: the backend each client of a service with affinity
/// last got. Written by the service program, swept by netd.
#[map(name = "NETD_AFFINITY")]
pub static NETD_AFFINITY: LruHashMap<AffinityKey, AffinityEntry> =
    LruHashMap::pinned(MAX_AFFINITY, 0);

/// Ports published by the routing mesh, by (port, protocol): the service
/// entry new flows to them are balanced by (its Maglev table, the port on
/// the backends).
#[map(name = "NETD_PUBLISHED")]
pub static NETD_PUBLISHED: HashMap<PublishedKey, ServiceEntry> = HashMap::pinned(MAX_PUBLISHED, 0);

/// The routing mesh's clients, by address: the uplink and MACs their
/// requests came with, which their replies leave with. Written by the mesh
/// program on a new flow.
#[map(name = "NETD_MESH_NEIGH")]
pub static NETD_MESH_NEIGH: LruHashMap<[u8; 4], MeshNeighbour> =
    LruHashMap::pinned(MAX_MESH_NEIGHBOURS, 0);

/// On a backend's host, the routing mesh's flows by reply tuple: the host
/// they came in on, which replies are tunnelled back to.
#[map(name = "NETD_MESH_RETURN")]
pub static NETD_MESH_RETURN: LruHashMap<CtTuple, TunnelReturn> =
    LruHashMap::pinned(DEFAULT_CT_ENTRIES, 0);

/// The host's own UDP sockets balanced at `sendmsg` (or `connect`), by
/// socket cookie and backend address: the address the application sent
/// to, which `recvmsg` puts back as the answers' source.
#[map(name = "NETD_SOCK_REVNAT")]
pub static NETD_SOCK_REVNAT: LruHashMap<SockRevNatKey, SockRevNatEntry> =
    LruHashMap::pinned(MAX_SOCK_REVNAT, 0);

/// Policy verdicts by (local endpoint, direction, peer identity) and then
/// protocol and port as a prefix. Written by netd.
#[map(name = "NETD_POLICY")]
pub static NETD_POLICY: LpmTrie<PolicyMatch, PolicyVerdict> =
    LpmTrie::pinned(MAX_POLICY_ENTRIES, 0);

/// Peer identities by address prefix: endpoints as /32, CIDR peers.
#[map(name = "NETD_IPCACHE")]
pub static NETD_IPCACHE: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(MAX_IPCACHE, 0);

/// Local endpoints some policy selects, by address: the directions that
/// are default-deny. Absent: open, as without policy.
#[map(name = "NETD_POLICY_EPS")]
pub static NETD_POLICY_EPS: HashMap<[u8; 4], u32> = HashMap::pinned(MAX_ENDPOINTS, 0);

/// Flows policy let through, by their first packet's tuple: the rest of
/// the flow and its replies pass on it. Written here, swept by netd.
#[map(name = "NETD_POLICY_CT")]
pub static NETD_POLICY_CT: LruHashMap<CtTuple, PolicyCtEntry> =
    LruHashMap::pinned(MAX_POLICY_CT, 0);

/// Each rule's packets and bytes allowed, dropped and audited, by rule id.
#[map(name = "NETD_RULE_HITS")]
pub static NETD_RULE_HITS: LruPerCpuHashMap<u32, RuleHits> =
    LruPerCpuHashMap::pinned(MAX_RULE_COUNTERS, 0);

/// One per CPU: the packet the decap or mesh program hands the delivery
/// program it tail-calls. Not pinned: only programs of one object share it.
#[map(name = "NETD_XDP_DELIVERY")]
pub static NETD_XDP_DELIVERY: PerCpuArray<crate::uplink::XdpDelivery> =
    PerCpuArray::with_max_entries(1, 0);

/// Programs the endpoint program tail-calls (`PROG_SERVICE`): filled by
/// netd at load, before any program is attached. Pinned, so the slots
/// outlive a netd that dies (a prog array is emptied when its last user
/// reference goes).
#[map(name = "NETD_PROGS")]
pub static NETD_PROGS: ProgramArray = ProgramArray::pinned(MAX_PROGS, 0);

/// Programs the uplink program tail-calls (`XDP_PROG_DECAP`): filled by
/// netd at load, before anything is attached, and pinned like `NETD_PROGS`.
#[map(name = "NETD_XDP_PROGS")]
pub static NETD_XDP_PROGS: ProgramArray = ProgramArray::pinned(MAX_XDP_PROGS, 0);
