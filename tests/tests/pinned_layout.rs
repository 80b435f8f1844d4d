//! The pinned maps as the kernel holds them, against netd's one list of
//! declarations (`netd::dataplane::tables::TABLES`).

use aya::maps::{MapData, MapInfo};
use netd::dataplane::tables::TABLES;
use netd_tests::fixture::Fixture;

#[test]
fn tables_match_the_object() {
    let f = Fixture::load();
    let layout = f.datapath.layout().clone();
    let pinned: Vec<String> = std::fs::read_dir(layout.maps())
        .expect("maps dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for t in TABLES {
        let info = MapInfo::from_pin(layout.map(t.name))
            .unwrap_or_else(|e| panic!("{} is declared but not pinned: {e}", t.name));
        assert_eq!(
            (
                info.map_type().map(|m| m as u32).ok(),
                info.key_size(),
                info.value_size(),
                info.max_entries(),
                info.map_flags()
            ),
            (
                Some(t.kind as u32),
                t.key_size,
                t.value_size,
                t.max_entries,
                t.kind.kernel_flags(t.flags)
            ),
            "{} differs from its declaration",
            t.name
        );
    }
    for name in &pinned {
        assert!(
            TABLES.iter().any(|t| t.name == name),
            "{name} is pinned by the object but not declared in TABLES"
        );
    }
    // Opened the way netd opens them.
    drop(MapData::from_pin(layout.map(TABLES[0].name)).expect("open"));
}
