//! Every pinned map of the datapath, declared once.
//!
//! [`for_each_table!`] holds the one list: each map's name, kind, key and
//! value types, capacity, flags, owner (with its place in the write order)
//! and the setting that sizes it. Three places expand it, so no name, type
//! or size is written twice:
//! - here, into [`MapDecl`]s (plain data, tested on the host);
//! - netd-ebpf's `maps.rs`, into the `#[map]` statics the programs use;
//! - netd's `dataplane/tables.rs`, into typed handles and `TABLES`.
//!
//! An entry reads
//! `/// doc` `NAME: Kind<Key, Value>, capacity, flags, Owner, Sizing;`
//! where `Kind` is a [`MapKind`] (an `LpmTrie`'s key is its data, without
//! the prefix length), `Owner` an [`Owner`] (`Control(order)` for desired
//! state) and `Sizing` a [`Sizing`].

/// The kernel's map types netd uses (`bpf_map_type` numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash = 1,
    Array = 2,
    /// Programs to tail-call, by slot.
    ProgArray = 3,
    PerCpuHash = 5,
    PerCpuArray = 6,
    LruHash = 9,
    LruPerCpuHash = 10,
    /// Longest-prefix match; keys are a prefix length and the data.
    LpmTrie = 11,
    /// An outer map whose values are inner maps (one per key), each a
    /// table of its own named `OUTER/<key as hex>`. The reconciler
    /// supports it; no map of the list is one yet.
    HashOfMaps = 13,
    /// A ring buffer; its "entries" are its size in bytes.
    RingBuf = 27,
}

impl MapKind {
    /// The kernel's key size for a key (an LPM trie's: its data) of
    /// `size` bytes.
    pub const fn key_size(self, size: usize) -> u32 {
        match self {
            MapKind::LpmTrie => 4 + size as u32,
            _ => size as u32,
        }
    }

    /// The flags the kernel reports for a map declared with `flags`: an
    /// LPM trie cannot be preallocated, and aya-ebpf always says so.
    pub const fn kernel_flags(self, flags: u32) -> u32 {
        match self {
            MapKind::LpmTrie => flags | NO_PREALLOC,
            _ => flags,
        }
    }
}

/// `BPF_F_NO_PREALLOC`: entries are allocated when made, not at load.
pub const NO_PREALLOC: u32 = 1;

/// Who writes a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Desired state, diffed by the reconciler; lower `order` is written
    /// first and deleted last (a map comes after the maps its entries
    /// point at).
    Control { order: u8 },
    /// Written by the programs; read and swept by netd.
    Datapath,
    /// Written by netd at start.
    Netd,
    /// A packet's scratch, written and read within one program run: an
    /// upgrade that changes its shape makes it afresh, carrying nothing.
    Scratch,
}

/// What sets a map's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizing {
    /// Its declared capacity.
    Fixed,
    /// `[conntrack] max-entries` (`--conntrack-max-entries`).
    Conntrack,
    /// `max-endpoints` (`--max-endpoints`): every endpoint a host forwards
    /// to, its own and every overlay endpoint of the cluster's.
    Endpoints,
    /// `max-endpoints` plus [`IPCACHE_CIDRS`]: every endpoint's identity
    /// and the CIDRs policies name.
    Ipcache,
    /// `max-hosts` (`--max-hosts`): the other hosts of the cluster.
    Hosts,
}

/// Endpoints a host's maps hold by default, cluster-wide (Cilium's
/// default too). 16,384 until layout 3.
pub const DEFAULT_MAX_ENDPOINTS: u32 = 65_536;
/// Other hosts a host's maps hold by default.
pub const DEFAULT_MAX_HOSTS: u32 = 4096;
/// Room in `NETD_IPCACHE` beside the endpoints: policies' CIDR prefixes.
pub const IPCACHE_CIDRS: u32 = 16_384;

/// One pinned map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapDecl {
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    /// The declared capacity; a [`Sizing::Conntrack`] map takes the
    /// setting's instead, and a migrated map keeps its own until the next
    /// upgrade (read the kernel's for the truth).
    pub max_entries: u32,
    /// As declared (see [`MapKind::kernel_flags`]).
    pub flags: u32,
    pub owner: Owner,
    pub sizing: Sizing,
}

impl MapDecl {
    /// Its place in the write order, for a control map.
    pub const fn order(&self) -> Option<u8> {
        match self.owner {
            Owner::Control { order } => Some(order),
            _ => None,
        }
    }
}

/// Hands the list of every pinned map to `$then!`, a macro of the caller's
/// (see the module docs for an entry's shape). Types are written with
/// `$crate` paths so that every crate reads them the same.
#[macro_export]
macro_rules! for_each_table {
    ($then:ident) => {
        $then! {
            // --- Control maps: desired state, in write order. ---

            /// Destinations reached with a container's own address, by
            /// (network, address prefix); network 0: every network. Every
            /// netd subnet is here, and the CIDRs left unmasqueraded.
            NETD_NO_MASQ: LpmTrie<$crate::masquerade::NoMasqKey, u32>, 16384, 0, Control(0), Fixed;
            /// Each network's way out, by index: masquerade or internal
            /// (absent: routed as it is). After what it must not translate.
            NETD_EGRESS: Hash<u32, $crate::masquerade::EgressEntry>, 1024, 0, Control(1), Fixed;
            /// Networks by index: their gateway and VNI.
            NETD_NETWORKS: Hash<u32, $crate::maps::NetworkEntry>, 1024, 0, Control(0), Fixed;
            /// Network index by VXLAN network identifier.
            NETD_VNIS: Hash<u32, u32>, 1024, 0, Control(1), Fixed;
            /// Other hosts of the cluster by index: their underlay address.
            NETD_HOSTS: Hash<u32, $crate::maps::HostEntry>, $crate::tables::DEFAULT_MAX_HOSTS, 0,
                Control(1), Hosts;
            /// Host index by underlay address: who may send us VXLAN.
            NETD_HOST_BY_IP: Hash<[u8; 4], u32>, $crate::tables::DEFAULT_MAX_HOSTS, 0, Control(2),
                Hosts;
            /// This host's side of the underlay (one entry).
            NETD_OVERLAY: Array<u32, $crate::maps::OverlayConfig>, 1, 0, Control(2), Fixed;
            /// Endpoints by the ifindex of their host veth: what a packet
            /// from them must carry.
            NETD_LOCAL_EPS: Hash<u32, $crate::maps::LocalEndpointEntry>, 16384, 0, Control(3), Fixed;
            /// Endpoints by IPv4 address: where a packet to them goes (this
            /// host's and every overlay endpoint of the others).
            NETD_ENDPOINTS: Hash<[u8; 4], $crate::maps::EndpointEntry>,
                $crate::tables::DEFAULT_MAX_ENDPOINTS, 0, Control(4), Endpoints;
            /// Backends by (service, address): their state. 10,000 services
            /// of 10 backends fit with room to spare; not preallocated.
            NETD_BACKENDS: Hash<$crate::service::BackendKey, $crate::service::BackendEntry>,
                262_144, $crate::tables::NO_PREALLOC, Control(5), Fixed;
            /// Each service's Maglev table, by service index. Not
            /// preallocated: a table costs memory only while its service exists.
            NETD_MAGLEV: Hash<u32, $crate::service::MaglevTable>,
                16384, $crate::tables::NO_PREALLOC, Control(6), Fixed;
            /// Service ports by (VIP, port, protocol): the service's table
            /// and target port.
            NETD_SERVICES: Hash<$crate::service::ServiceKey, $crate::service::ServiceEntry>,
                65536, 0, Control(7), Fixed;
            /// Ports published by the routing mesh, by (port, protocol): the
            /// service entry new flows to them are balanced by.
            NETD_PUBLISHED: Hash<$crate::mesh::PublishedKey, $crate::service::ServiceEntry>,
                4096, 0, Control(7), Fixed;
            /// A bit per published (port, protocol), and the word that says
            /// it is written (`mesh::published_port_bit`): the uplink asks
            /// it before `NETD_PUBLISHED`. Written before the ports.
            NETD_PUBLISHED_PORTS: Array<u32, u64>, $crate::mesh::PUBLISHED_PORTS_WORDS, 0,
                Control(6), Fixed;
            /// The sources each published port with ranges lets in, by
            /// (port, protocol) and then the source as a prefix. Written
            /// before the ports that check them.
            NETD_PUBLISH_ALLOW: LpmTrie<$crate::mesh::PublishAllow, u32>,
                16384, 0, Control(6), Fixed;
            /// VIPs: their network (isolation, ARP). Written last, once
            /// their ports lead somewhere.
            NETD_VIPS: Hash<[u8; 4], $crate::service::VipEntry>, 16384, 0, Control(8), Fixed;
            /// Policy verdicts by (local endpoint, direction, peer identity)
            /// and then protocol and port as a prefix. Verdicts and
            /// identities come before the flags that make an endpoint
            /// default-deny: it is never enforced before what allows its traffic.
            NETD_POLICY: LpmTrie<$crate::policy::PolicyMatch, $crate::policy::PolicyVerdict>,
                262_144, 0, Control(9), Fixed;
            /// Peer identities by address prefix: every endpoint of the
            /// cluster as /32, CIDR peers as their prefixes.
            NETD_IPCACHE: LpmTrie<[u8; 4], u32>,
                $crate::tables::DEFAULT_MAX_ENDPOINTS + $crate::tables::IPCACHE_CIDRS, 0,
                Control(10), Ipcache;
            /// Local endpoints some policy selects, by address: the
            /// `ENFORCE_*` directions that are default-deny. Absent: open.
            NETD_POLICY_EPS: Hash<[u8; 4], u32>, 16384, 0, Control(11), Fixed;

            // --- Datapath maps: written by the programs, swept by netd. ---

            /// Conntrack: the backend each client flow to a VIP was given.
            NETD_CT: LruHash<$crate::service::CtTuple, $crate::service::CtEntry>,
                $crate::service::DEFAULT_CT_ENTRIES, 0, Datapath, Conntrack;
            /// Reverse NAT: what a reply from a backend is rewritten to.
            NETD_REV_NAT: LruHash<$crate::service::CtTuple, $crate::service::RevNatEntry>,
                $crate::service::DEFAULT_CT_ENTRIES, 0, Datapath, Conntrack;
            /// Client affinity: the backend each client of a service with
            /// affinity last got.
            NETD_AFFINITY: LruHash<$crate::service::AffinityKey, $crate::service::AffinityEntry>,
                65536, 0, Datapath, Fixed;
            /// The routing mesh's clients, by address: the uplink and MACs
            /// their requests came with, which their replies leave with.
            NETD_MESH_NEIGH: LruHash<[u8; 4], $crate::mesh::MeshNeighbour>,
                65536, 0, Datapath, Fixed;
            /// On a backend's host, the routing mesh's flows by reply tuple:
            /// the host they came in on, which replies are tunnelled back to.
            NETD_MESH_RETURN: LruHash<$crate::service::CtTuple, $crate::mesh::TunnelReturn>,
                $crate::service::DEFAULT_CT_ENTRIES, 0, Datapath, Conntrack;
            /// The host's own UDP sockets balanced at `sendmsg`, by socket
            /// cookie and backend: the address the application sent to,
            /// which `recvmsg` puts back as the answers' source.
            NETD_SOCK_REVNAT: LruHash<$crate::mesh::SockRevNatKey, $crate::mesh::SockRevNatEntry>,
                65536, 0, Datapath, Fixed;
            /// Masqueraded flows by the container's tuple: the source they
            /// leave with and the device they leave by. Not an LRU: a full
            /// table refuses new flows (counted) and never evicts a live one.
            NETD_SNAT: Hash<$crate::service::CtTuple, $crate::masquerade::SnatEntry>,
                $crate::service::DEFAULT_CT_ENTRIES, 0, Datapath, Conntrack;
            /// Masqueraded flows by their replies' tuple: the container
            /// they go back to. Its insert claims the port.
            NETD_SNAT_REV: Hash<$crate::service::CtTuple, $crate::masquerade::RevSnatEntry>,
                $crate::service::DEFAULT_CT_ENTRIES, 0, Datapath, Conntrack;
            /// Flows policy let through, by their first packet's tuple: the
            /// rest of the flow and its replies pass on it.
            NETD_POLICY_CT: LruHash<$crate::service::CtTuple, $crate::policy::PolicyCtEntry>,
                262_144, 0, Datapath, Fixed;
            /// Each rule's packets and bytes allowed, dropped and audited,
            /// by rule id (a rule not hit for long may lose its count when full).
            NETD_RULE_HITS: LruPerCpuHash<u32, $crate::policy::RuleHits>,
                65_536, 0, Datapath, Fixed;
            /// Packets and bytes per (hook, verdict) and per (hook, drop reason).
            NETD_COUNTERS: PerCpuArray<u32, $crate::counters::Counter>,
                $crate::counters::COUNTER_SLOTS, 0, Datapath, Fixed;
            /// Each local endpoint's traffic, per CPU, by its host veth's
            /// ifindex: entries made by netd (allocated then, not up front:
            /// an entry is 272 bytes on every CPU), counted into by the programs.
            NETD_EP_STATS: PerCpuHash<u32, $crate::endpoint_stats::EndpointStats>,
                16384, $crate::tables::NO_PREALLOC, Datapath, Fixed;
            /// Events for `netd monitor`: about 6,000 a reader has not taken yet.
            NETD_EVENTS: RingBuf<(), ()>, $crate::events::EVENTS_RING_BYTES, 0, Datapath, Fixed;
            /// Each CPU's emission budget and its tallies.
            NETD_EMIT: PerCpuArray<u32, $crate::events::EmitBudget>, 1, 0, Datapath, Fixed;
            /// Each CPU's event noted by a stage, for its entry point to emit.
            NETD_PENDING: PerCpuArray<u32, $crate::events::Pending>, 1, 0, Scratch, Fixed;

            // --- Netd's own: written at start or by the monitor. ---

            /// Whose pins these are and their layout version.
            NETD_META: Array<u32, $crate::maps::PinMeta>, 1, 0, Netd, Fixed;
            /// What the monitors want (one entry; `kinds` 0 while none listens).
            NETD_MONITOR: Array<u32, $crate::events::MonitorConfig>, 1, 0, Netd, Fixed;
            /// Programs the endpoint program tail-calls, by `PROG_*` slot:
            /// filled at load, before anything is attached. Pinned, so the
            /// slots outlive a netd that dies (a prog array is emptied when
            /// its last user reference goes).
            NETD_PROGS: ProgArray<u32, u32>, 4, 0, Netd, Fixed;
            /// Programs the uplink program tail-calls, by `XDP_PROG_*` slot,
            /// filled and pinned like `NETD_PROGS`.
            NETD_XDP_PROGS: ProgArray<u32, u32>, 4, 0, Netd, Fixed;
            /// The addresses published ports are taken on (the uplinks' by
            /// default, `--publish-address`), by address: written at start,
            /// before the uplinks' programs run.
            NETD_PUBLISH_ADDRS: Hash<[u8; 4], u32>, 64, 0, Netd, Fixed;
            /// The source ports masquerading hands out (one entry).
            NETD_MASQ_CONFIG: Array<u32, $crate::masquerade::MasqConfig>, 1, 0, Netd, Fixed;
            /// The devices masqueraded flows leave by, by ifindex: their
            /// replies are taken there by the uplink program.
            NETD_EGRESS_DEVS: Hash<u32, u32>, 64, 0, Netd, Fixed;
            /// Programs the TC uplink program tail-calls, by `UPLINK_PROG_*`
            /// slot, filled and pinned like `NETD_PROGS`.
            NETD_UPLINK_PROGS: ProgArray<u32, u32>, 4, 0, Netd, Fixed;
        }
    };
}

/// Expands the list into one [`MapDecl`] per map (`decl::NAME`), the
/// names (`NAME`) and [`ALL`].
macro_rules! declare {
    ($(
        $(#[$doc:meta])*
        $name:ident : $kind:ident < $key:ty , $value:ty > ,
            $size:expr , $flags:expr , $owner:ident $(($order:literal))? , $sizing:ident ;
    )*) => {
        /// Each map's pinned name.
        pub mod names {
            $( $(#[$doc])* pub const $name: &str = stringify!($name); )*
        }

        /// Each map's declaration.
        pub mod decl {
            use super::*;
            $(
                $(#[$doc])*
                pub const $name: MapDecl = MapDecl {
                    name: stringify!($name),
                    kind: MapKind::$kind,
                    key_size: MapKind::$kind.key_size(core::mem::size_of::<$key>()),
                    value_size: core::mem::size_of::<$value>() as u32,
                    max_entries: $size,
                    flags: $flags,
                    owner: declare!(@owner $owner $(($order))?),
                    sizing: Sizing::$sizing,
                };
            )*
        }

        /// Every pinned map, in the list's order.
        pub const ALL: &[MapDecl] = &[$(decl::$name),*];
    };
    (@owner Control($order:literal)) => { Owner::Control { order: $order } };
    (@owner $owner:ident) => { Owner::$owner };
}

for_each_table!(declare);

/// The declaration of the map pinned as `name`.
pub fn find(name: &str) -> Option<&'static MapDecl> {
    ALL.iter().find(|t| t.name == name)
}

/// An LPM trie's key data and the whole key (prefix length, then the
/// data) that userspace reads and writes.
pub trait LpmData {
    type Key: Copy;
}

impl LpmData for crate::policy::PolicyMatch {
    type Key = crate::policy::PolicyKey;
}

impl LpmData for crate::mesh::PublishAllow {
    type Key = crate::mesh::PublishAllowKey;
}

impl LpmData for crate::masquerade::NoMasqKey {
    type Key = crate::masquerade::NoMasqFullKey;
}

impl LpmData for [u8; 4] {
    type Key = crate::policy::IpcacheKey;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed() {
        for (i, t) in ALL.iter().enumerate() {
            assert!(t.name.starts_with("NETD_"), "{}", t.name);
            assert!(
                !ALL[..i].iter().any(|o| o.name == t.name),
                "{} twice",
                t.name
            );
        }
    }

    #[test]
    fn entries_come_after_what_they_point_at() {
        let order = |name| find(name).and_then(MapDecl::order).expect(name);
        assert!(order(names::NETD_NETWORKS) < order(names::NETD_ENDPOINTS));
        assert!(order(names::NETD_HOSTS) < order(names::NETD_ENDPOINTS));
        assert!(order(names::NETD_LOCAL_EPS) < order(names::NETD_ENDPOINTS));
        assert!(order(names::NETD_NETWORKS) < order(names::NETD_VNIS));
        assert!(order(names::NETD_BACKENDS) < order(names::NETD_MAGLEV));
        assert!(order(names::NETD_MAGLEV) < order(names::NETD_SERVICES));
        assert!(order(names::NETD_SERVICES) < order(names::NETD_VIPS));
        assert!(order(names::NETD_POLICY) < order(names::NETD_POLICY_EPS));
        assert!(order(names::NETD_IPCACHE) < order(names::NETD_POLICY_EPS));
        assert!(order(names::NETD_NO_MASQ) < order(names::NETD_EGRESS));
        // An endpoint's `LOCAL_*` flags are cleared before what makes the
        // stage apply: a backend entry, an enforced policy.
        assert!(order(names::NETD_LOCAL_EPS) < order(names::NETD_BACKENDS));
        assert!(order(names::NETD_LOCAL_EPS) < order(names::NETD_POLICY_EPS));
    }

    #[test]
    fn an_lpm_keys_size_is_its_data_and_a_prefix_length() {
        use core::mem::size_of;
        assert_eq!(
            decl::NETD_POLICY.key_size as usize,
            size_of::<crate::policy::PolicyKey>()
        );
        assert_eq!(
            decl::NETD_IPCACHE.key_size as usize,
            size_of::<crate::policy::IpcacheKey>()
        );
        assert_eq!(decl::NETD_EVENTS.key_size, 0);
        assert_eq!(decl::NETD_EVENTS.value_size, 0);
    }
}
