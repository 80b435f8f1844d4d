//! Upgrades that keep pinned state. Before netd loads its object (and so
//! before any live link gets a new program), every pinned map is checked
//! against its declaration in [`super::tables`]:
//!
//! - the same type, key and value size and max_entries: reused as it is;
//! - a map that can be carried over (another max_entries, layout 1's
//!   packed counters, layout 2's local endpoints without their flags, or
//!   a packet's scratch of another shape, made afresh): its pin is set aside under `carry/`, the loader makes the
//!   new map, [`Upgrade::finish`] copies what carries over and removes
//!   the old pin, and only then are the programs swapped into the links;
//! - anything else: netd refuses to start, names the map and what differs,
//!   and leaves the running datapath alone.
//!
//! A netd killed half way finds the pin under `carry/` at its next start
//! and copies again.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, MapData, MapError, MapInfo, PerCpuArray, PerCpuValues};
use netd_common::{
    counters::{layout_v1, Counter},
    map_names,
    maps::{layout_v2, LocalEndpointEntry, LAYOUT_VERSION},
};
use tracing::{info, warn};

use super::{
    owner,
    pins::open_pinned_map,
    tables::{MapKind, Owner, Sizes, TableDecl, TABLES},
    PinLayout,
};

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(
        "pinned map {path} is {found}; this netd needs {want} and cannot carry it over. \
         Nothing was changed: the running datapath goes on. Run the netd that made it, or \
         `netd teardown --pin-path {root}` to start afresh (this drops every pinned entry and \
         counter)"
    )]
    Incompatible {
        path: PathBuf,
        root: PathBuf,
        found: String,
        want: String,
    },
    #[error(
        "the pins under {root} are layout {found}, newer than this netd's {LAYOUT_VERSION}: \
         downgrading is not supported. Nothing was changed; run a netd of layout {found} or newer"
    )]
    Newer { root: PathBuf, found: u32 },
    #[error("reading pinned map {path}")]
    Map {
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error("setting pinned map {path} aside")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Owner(#[from] owner::OwnerError),
}

/// How one map is carried over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// Same kind, key and value: every entry is copied.
    Entries,
    /// Layout 1's 26 packed counter slots, each to its slot now.
    CountersV1,
    /// Layout 2's local endpoints, each with no `LOCAL_*` flags (every
    /// stage looks until the first pass writes them).
    LocalEndpointsV2,
    /// Scratch of another shape: a new, empty map.
    Fresh,
}

/// What the check found: the layout of the pins and the maps to carry over.
#[derive(Debug, Default)]
pub struct Upgrade {
    /// `None`: nothing pinned yet. `Some(1)`: pins without `NETD_META`.
    pub from_layout: Option<u32>,
    pub carried: Vec<(&'static TableDecl, Carry)>,
}

fn describe(kind: u32, key: u32, value: u32, max: u32) -> String {
    format!("type {kind}, key {key} B, value {value} B, {max} entries")
}

/// Where a map being carried over is pinned meanwhile (bpffs allows no
/// dot in a name, so a directory of its own).
fn old_pin(layout: &PinLayout, name: &str) -> PathBuf {
    layout.carry().join(name)
}

/// What should happen to the pinned `decl` whose kernel info is `info`.
fn carry_for(decl: &TableDecl, info: &MapInfo, sizes: &Sizes) -> Option<Option<Carry>> {
    let kind = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
    let (key, value, max) = (info.key_size(), info.value_size(), info.max_entries());
    let same_shape = kind == decl.kind as u32 && key == decl.key_size && value == decl.value_size;
    if same_shape && max == sizes.max_entries(decl) {
        return Some(None);
    }
    if decl.name == map_names::NETD_COUNTERS && same_shape && max == layout_v1::SLOTS {
        return Some(Some(Carry::CountersV1));
    }
    if decl.name == map_names::NETD_LOCAL_EPS
        && kind == decl.kind as u32
        && key == decl.key_size
        && value as usize == std::mem::size_of::<layout_v2::LocalEndpointEntry>()
    {
        return Some(Some(Carry::LocalEndpointsV2));
    }
    if decl.owner == Owner::Scratch && kind == decl.kind as u32 {
        return Some(Some(Carry::Fresh));
    }
    let copyable = matches!(
        decl.kind,
        MapKind::Hash | MapKind::Array | MapKind::LruHash | MapKind::LpmTrie
    ) && decl.open.is_some();
    (same_shape && copyable).then_some(Some(Carry::Entries))
}

impl Upgrade {
    /// Checks that the pins are this store's (`cluster_id`) and every
    /// pinned map; refuses before anything is changed.
    pub fn check(
        layout: &PinLayout,
        cluster_id: &str,
        sizes: &Sizes,
    ) -> Result<Self, UpgradeError> {
        let meta = owner::read_meta(layout)?;
        owner::check_owner(layout, meta.as_ref(), cluster_id)?;
        let mut upgrade = Upgrade::default();
        if let Some(meta) = meta {
            if meta.layout > LAYOUT_VERSION {
                return Err(UpgradeError::Newer {
                    root: layout.root().to_path_buf(),
                    found: meta.layout,
                });
            }
            upgrade.from_layout = Some(meta.layout);
        }
        for decl in TABLES {
            let set_aside = old_pin(layout, decl.name);
            let path = if set_aside.exists() {
                set_aside // an upgrade that was cut short: carry from there
            } else {
                layout.map(decl.name)
            };
            if !path.exists() {
                continue;
            }
            upgrade.from_layout.get_or_insert(1);
            let info = MapInfo::from_pin(&path).map_err(|source| UpgradeError::Map {
                path: path.clone(),
                source,
            })?;
            match carry_for(decl, &info, sizes) {
                Some(None) if path == layout.map(decl.name) => {}
                Some(None) => upgrade.carried.push((decl, Carry::Entries)),
                Some(Some(carry)) => upgrade.carried.push((decl, carry)),
                None => {
                    return Err(UpgradeError::Incompatible {
                        path,
                        root: layout.root().to_path_buf(),
                        found: describe(
                            info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
                            info.key_size(),
                            info.value_size(),
                            info.max_entries(),
                        ),
                        want: describe(
                            decl.kind as u32,
                            decl.key_size,
                            decl.value_size,
                            sizes.max_entries(decl),
                        ),
                    })
                }
            }
        }
        Ok(upgrade)
    }

    /// Moves the pins of the maps to carry over aside, so the loader makes
    /// new ones; the running programs keep using the old maps meanwhile.
    pub fn set_aside(&self, layout: &PinLayout) -> Result<(), UpgradeError> {
        if !self.carried.is_empty() {
            fs::create_dir_all(layout.carry()).map_err(|source| UpgradeError::Io {
                path: layout.carry(),
                source,
            })?;
        }
        for (decl, _) in &self.carried {
            let (from, to) = (layout.map(decl.name), old_pin(layout, decl.name));
            if to.exists() {
                continue;
            }
            fs::rename(&from, &to).map_err(|source| UpgradeError::Io { path: from, source })?;
            info!(map = decl.name, "pinned map set aside to carry over");
        }
        Ok(())
    }

    /// Puts the old pins back (the new object did not load).
    pub fn restore(&self, layout: &PinLayout) {
        for (decl, _) in &self.carried {
            let (old, new) = (old_pin(layout, decl.name), layout.map(decl.name));
            if old.exists() {
                let _ = fs::remove_file(&new);
                let _ = fs::rename(&old, &new);
            }
        }
    }

    /// Copies what carries over into the new maps, then drops the old pins.
    /// Run after loading, before any program is attached or swapped in.
    pub fn finish(&self, layout: &PinLayout) -> Result<(), UpgradeError> {
        for (decl, carry) in &self.carried {
            let old = old_pin(layout, decl.name);
            let new = layout.map(decl.name);
            let copied = match carry {
                Carry::Entries => copy_entries(decl, &old, &new),
                Carry::CountersV1 => copy_counters_v1(&old, &new),
                Carry::LocalEndpointsV2 => copy_local_endpoints_v2(&old, &new),
                Carry::Fresh => Ok(0),
            }
            .map_err(|source| UpgradeError::Map {
                path: old.clone(),
                source,
            })?;
            if *carry == Carry::Fresh {
                info!(map = decl.name, "scratch map of another shape made afresh");
            } else {
                info!(
                    map = decl.name,
                    entries = copied,
                    "carried over into the new map"
                );
            }
            if let Err(e) = fs::remove_file(&old) {
                warn!(path = %old.display(), error = %e, "cannot remove the old pin");
            }
        }
        let _ = fs::remove_dir(layout.carry());
        Ok(())
    }
}

/// Every entry of `old` into `new` (which may be smaller: what does not
/// fit is left to the reconciler, which reports it).
fn copy_entries(decl: &TableDecl, old: &Path, new: &Path) -> Result<usize, MapError> {
    let Some(opener) = decl.open else {
        return Ok(0);
    };
    let from = opener(open_pinned_map(old)?)?;
    let mut to = opener(open_pinned_map(new)?)?;
    let mut copied = 0;
    for (k, v) in from.read()? {
        match to.put(&k, &v) {
            Ok(()) => copied += 1,
            Err(e) => warn!(map = decl.name, error = %e, "an entry did not carry over"),
        }
    }
    Ok(copied)
}

fn copy_local_endpoints_v2(old: &Path, new: &Path) -> Result<usize, MapError> {
    let from: HashMap<MapData, u32, layout_v2::LocalEndpointEntry> =
        HashMap::try_from(open_pinned_map(old)?)?;
    let mut to: HashMap<MapData, u32, LocalEndpointEntry> =
        HashMap::try_from(open_pinned_map(new)?)?;
    let mut copied = 0;
    for entry in from.iter() {
        let (ifindex, v2) = entry?;
        to.insert(ifindex, v2.now(), 0)?;
        copied += 1;
    }
    Ok(copied)
}

fn copy_counters_v1(old: &Path, new: &Path) -> Result<usize, MapError> {
    let from: PerCpuArray<MapData, Counter> = PerCpuArray::try_from(open_pinned_map(old)?)?;
    let mut to: PerCpuArray<MapData, Counter> = PerCpuArray::try_from(open_pinned_map(new)?)?;
    for slot in 0..layout_v1::SLOTS {
        let values = from.get(&slot, 0)?;
        let per_cpu: Vec<Counter> = values.iter().copied().collect();
        to.set(
            layout_v1::slot_now(slot),
            PerCpuValues::try_from(per_cpu)?,
            0,
        )?;
    }
    Ok(layout_v1::SLOTS as usize)
}
