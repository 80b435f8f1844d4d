//! The daemon's side of every pinned map, expanded from the one list in
//! `netd_common::tables` (`for_each_table!`): a typed handle per map
//! (`NETD_ENDPOINTS: Table<[u8; 4], EndpointEntry>`, for `compile` and the
//! tests), and [`TABLES`], each declaration with how the reconciler opens
//! it.
//!
//! - **Control** maps are desired state: `compile` fills them from the
//!   model, the reconciler diffs them against the kernel and writes the
//!   difference, deletes in reverse `order`, then puts in `order` (a map is
//!   written after the maps its entries point at).
//! - **Datapath** maps are written by the programs (counters, conntrack,
//!   NAT): netd reads and sweeps them, never diffs them.
//! - **Netd** maps are written by netd itself (`NETD_META` at start, the
//!   monitor's wishes, the tail-call slots).
//!
//! docs/architecture.md walks through every edit a new map takes.

use std::marker::PhantomData;

pub use netd_common::tables::{MapDecl, MapKind, Owner, Sizing};

use super::maps::{open_array, open_hash, open_lpm, KernelTable, Plain};

pub type Opener = fn(aya::maps::Map) -> Result<Box<dyn KernelTable>, aya::maps::MapError>;

/// One pinned map: its declaration, and how the reconciler opens it
/// (control maps only).
#[derive(Clone, Copy, Debug)]
pub struct TableDecl {
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    /// The declared capacity; the kernel's real max_entries is read from
    /// the map itself (a migrated map may differ until the next upgrade).
    pub max_entries: u32,
    pub flags: u32,
    pub owner: Owner,
    pub sizing: Sizing,
    pub open: Option<Opener>,
}

impl TableDecl {
    pub const fn new(map: MapDecl, open: Option<Opener>) -> Self {
        Self {
            name: map.name,
            kind: map.kind,
            key_size: map.key_size,
            value_size: map.value_size,
            max_entries: map.max_entries,
            flags: map.flags,
            owner: map.owner,
            sizing: map.sizing,
            open,
        }
    }

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

impl<K, V> Table<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _kv: PhantomData,
        }
    }
}

impl<K: Plain, V: Plain> Table<K, V> {
    /// A hash map outside the list: for tests of the reconciler.
    pub const fn hash(self, max_entries: u32, owner: Owner) -> TableDecl {
        TableDecl {
            name: self.name,
            kind: MapKind::Hash,
            key_size: core::mem::size_of::<K>() as u32,
            value_size: core::mem::size_of::<V>() as u32,
            max_entries,
            flags: 0,
            owner,
            sizing: Sizing::Fixed,
            open: Some(open_hash::<K, V>),
        }
    }
}

/// The typed handle of a map of kind `$kind` (an LPM trie's key is the
/// whole key userspace reads: prefix length, then the data).
macro_rules! table_type {
    (LpmTrie, $k:ty, $v:ty) => { Table<<$k as netd_common::tables::LpmData>::Key, $v> };
    ($kind:ident, $k:ty, $v:ty) => { Table<$k, $v> };
}

/// How the reconciler opens a map of kind `$kind`: control maps only.
macro_rules! opener {
    (Hash, $k:ty, $v:ty) => {
        Some(open_hash::<$k, $v>)
    };
    (LruHash, $k:ty, $v:ty) => {
        Some(open_hash::<$k, $v>)
    };
    (Array, $k:ty, $v:ty) => {
        Some(open_array::<$v>)
    };
    (LpmTrie, $k:ty, $v:ty) => {
        Some(open_lpm::<$k, $v>)
    };
    ($kind:ident, $k:ty, $v:ty) => {
        None
    };
}

macro_rules! daemon_tables {
    ($(
        $(#[$doc:meta])*
        $name:ident : $kind:ident < $key:ty , $value:ty > ,
            $size:expr , $flags:expr , $owner:ident $(($order:literal))? , $sizing:ident ;
    )*) => {
        $(
            $(#[$doc])*
            pub const $name: table_type!($kind, $key, $value) = Table::new(stringify!($name));
        )*

        /// Every pinned map, as the list declares them.
        pub const TABLES: &[TableDecl] = &[$(
            TableDecl::new(netd_common::tables::decl::$name, opener!($kind, $key, $value))
        ),*];
    };
}

netd_common::for_each_table!(daemon_tables);

/// The sizes a netd is run with, for the maps whose [`Sizing`] is a
/// setting: conntrack's, and the cluster's endpoints and hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub conntrack: u32,
    /// `--max-endpoints`.
    pub endpoints: u32,
    /// `--max-hosts`.
    pub hosts: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            conntrack: netd_common::service::DEFAULT_CT_ENTRIES,
            endpoints: netd_common::tables::DEFAULT_MAX_ENDPOINTS,
            hosts: netd_common::tables::DEFAULT_MAX_HOSTS,
        }
    }
}

impl Sizes {
    /// The max_entries `decl`'s map is loaded with.
    pub fn max_entries(&self, decl: &TableDecl) -> u32 {
        match decl.sizing {
            Sizing::Conntrack => self.conntrack,
            Sizing::Endpoints => self.endpoints,
            Sizing::Ipcache => self
                .endpoints
                .saturating_add(netd_common::tables::IPCACHE_CIDRS),
            Sizing::Hosts => self.hosts,
            Sizing::Fixed => decl.max_entries,
        }
    }
}

/// An inner table of a map of maps is named `OUTER/<key as hex>`, and its
/// declaration `OUTER/*`. The outer map's name, and whether `table` is an
/// inner table. (The reconciler supports maps of maps; no map is one yet.)
pub fn outer_of(table: &str) -> (&str, bool) {
    match table.split_once('/') {
        Some((outer, _)) => (outer, true),
        None => (table, false),
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
    fn every_control_map_can_be_opened_and_matches_its_declaration() {
        assert_eq!(TABLES.len(), netd_common::tables::ALL.len());
        for (t, d) in TABLES.iter().zip(netd_common::tables::ALL) {
            assert_eq!(TableDecl::new(*d, t.open).name, t.name);
            assert!(t.order().is_none() || t.open.is_some(), "{}", t.name);
        }
    }

    #[test]
    fn typed_handles_have_the_declared_sizes() {
        fn sizes<K, V>(_: Table<K, V>) -> (u32, u32) {
            (
                core::mem::size_of::<K>() as u32,
                core::mem::size_of::<V>() as u32,
            )
        }
        let d = decl(NETD_POLICY.name).expect("declared");
        assert_eq!(sizes(NETD_POLICY), (d.key_size, d.value_size));
        let d = decl(NETD_ENDPOINTS.name).expect("declared");
        assert_eq!(sizes(NETD_ENDPOINTS), (d.key_size, d.value_size));
    }
}
