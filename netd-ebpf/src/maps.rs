//! Every map of the datapath. The pinned ones come from the one list in
//! `netd_common::tables` (each with its line on what it holds): they
//! outlive netd restarts, so the programs keep forwarding with the state
//! they have. Below them, the maps only the programs of one load share.

use aya_ebpf::{
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap,
        ProgramArray, RingBuf,
    },
};

use crate::types::{Delivering, MasqDecision, MeshAction, Plan, UplinkAction};

/// The aya-ebpf type of a map of `netd_common::tables::MapKind` `$kind`.
macro_rules! bpf_map_type {
    (Hash, $k:ty, $v:ty) => { HashMap<$k, $v> };
    (LruHash, $k:ty, $v:ty) => { LruHashMap<$k, $v> };
    (PerCpuHash, $k:ty, $v:ty) => { PerCpuHashMap<$k, $v> };
    (LruPerCpuHash, $k:ty, $v:ty) => { LruPerCpuHashMap<$k, $v> };
    (Array, $k:ty, $v:ty) => { Array<$v> };
    (PerCpuArray, $k:ty, $v:ty) => { PerCpuArray<$v> };
    (LpmTrie, $k:ty, $v:ty) => { LpmTrie<$k, $v> };
    (RingBuf, $k:ty, $v:ty) => { RingBuf };
    (ProgArray, $k:ty, $v:ty) => { ProgramArray };
}

/// One pinned `#[map]` static per entry of the list, named as pinned.
macro_rules! pinned_maps {
    ($(
        $(#[$doc:meta])*
        $name:ident : $kind:ident < $key:ty , $value:ty > ,
            $size:expr , $flags:expr , $owner:ident $(($order:literal))? , $sizing:ident ;
    )*) => {
        $(
            $(#[$doc])*
            #[map]
            pub static $name: bpf_map_type!($kind, $key, $value) =
                <bpf_map_type!($kind, $key, $value)>::pinned($size, $flags);
        )*
    };
}

netd_common::for_each_table!(pinned_maps);

/// One per CPU: the packet the decap or mesh program (XDP or TC) hands the
/// delivery program it tail-calls. Not pinned: only programs of one object
/// share it.
#[map]
pub static NETD_DELIVERY: PerCpuArray<Delivering> = PerCpuArray::with_max_entries(1, 0);

/// One per CPU: the TC decap program's decision, made in a frame of its
/// own and read in place, so the writes' frames have the stack. Not
/// pinned.
#[map]
pub static NETD_DECAP: PerCpuArray<UplinkAction> = PerCpuArray::with_max_entries(1, 0);

/// One per CPU: the TC mesh program's plan, likewise. Not pinned.
#[map]
pub static NETD_MESH_PLAN: PerCpuArray<Plan<MeshAction>> = PerCpuArray::with_max_entries(1, 0);

/// One per CPU: the masquerade program's decision, likewise. Not pinned.
#[map]
pub static NETD_MASQ_PLAN: PerCpuArray<MasqDecision> = PerCpuArray::with_max_entries(1, 0);
