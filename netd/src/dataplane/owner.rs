//! Who owns a pin path. `NETD_META` names the store whose datapath the pins
//! are; a netd on another store (a wrong `--store`, an empty `--state-dir`)
//! would compile an empty model into them and cut every container off, so
//! it refuses to start instead, before it touches a map or a link.

use aya::maps::{Array, MapData, MapError};
use netd_common::{
    map_names,
    maps::{PinMeta, LAYOUT_VERSION},
};

use super::PinLayout;

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(
        "pin path {path} holds the datapath of another store (id {theirs}); this netd's store \
         has id {ours}. Start netd with the store that made it (--store/--state-dir), give this \
         one its own --pin-path, or remove the old datapath with `netd teardown --pin-path {path}`"
    )]
    Another {
        path: String,
        theirs: String,
        ours: String,
    },
    #[error("reading {path}")]
    Map {
        path: String,
        #[source]
        source: MapError,
    },
}

/// What `NETD_META` says, if it is there.
pub fn read_meta(layout: &PinLayout) -> Result<Option<PinMeta>, OwnerError> {
    let path = layout.map(map_names::NETD_META);
    if !path.exists() {
        return Ok(None);
    }
    let err = |source| OwnerError::Map {
        path: path.display().to_string(),
        source,
    };
    let map = super::pins::open_pinned_map(&path).map_err(err)?;
    let meta: Array<MapData, PinMeta> = Array::try_from(map).map_err(err)?;
    meta.get(&0, 0).map(Some).map_err(err)
}

/// Refuses a pin path whose datapath another store made. Pins that name no
/// owner (new, or made before owners were recorded) are anyone's.
pub fn check_owner(
    layout: &PinLayout,
    meta: Option<&PinMeta>,
    cluster_id: &str,
) -> Result<(), OwnerError> {
    let Some(meta) = meta else {
        return Ok(());
    };
    let theirs = owner_id(meta);
    if theirs.is_empty() || theirs == cluster_id {
        return Ok(());
    }
    Err(OwnerError::Another {
        path: layout.root().display().to_string(),
        theirs,
        ours: cluster_id.to_string(),
    })
}

/// The meta this netd writes once its object is loaded.
pub fn meta_for(cluster_id: &str) -> PinMeta {
    let mut meta = PinMeta {
        layout: LAYOUT_VERSION,
        ..PinMeta::default()
    };
    let id = cluster_id.as_bytes();
    let n = id.len().min(meta.owner.len());
    meta.owner[..n].copy_from_slice(&id[..n]);
    meta
}

pub fn owner_id(meta: &PinMeta) -> String {
    let end = meta
        .owner
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(meta.owner.len());
    String::from_utf8_lossy(&meta.owner[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_owner_round_trips_through_the_meta() {
        let meta = super::meta_for("0123456789abcdef");
        assert_eq!(super::owner_id(&meta), "0123456789abcdef");
        assert_eq!(meta.layout, netd_common::maps::LAYOUT_VERSION);
        assert_eq!(super::owner_id(&Default::default()), "");
    }
}
