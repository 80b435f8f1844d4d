//! The control maps as one value ([`MapState`]: table name → key bytes →
//! value bytes, typed through [`Table`]), one change ([`MapOp`]), and a
//! [`MapWriter`] that reads and changes them: [`KernelMaps`] for the
//! kernel, [`FakeMaps`] (with capacities) for tests of the reconciler.

use std::collections::BTreeMap;

use aya::maps::{
    lpm_trie::{Key as LpmKey, LpmTrie},
    Array, HashMap, Map, MapData, MapError,
};

use super::tables::{self, MapKind, Table, TableDecl};

/// What a map key or value is: plain bytes for aya and for bytemuck.
pub trait Plain: aya::Pod + bytemuck::Pod + Send + Sync {}
impl<T: aya::Pod + bytemuck::Pod + Send + Sync> Plain for T {}

/// One table's entries: key bytes → value bytes.
pub type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// Contents of the control maps, by table name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapState {
    tables: BTreeMap<String, Entries>,
}

impl MapState {
    pub fn put<K: bytemuck::Pod, V: bytemuck::Pod>(
        &mut self,
        table: Table<K, V>,
        key: K,
        value: V,
    ) {
        self.put_bytes(
            table.name,
            bytemuck::bytes_of(&key).to_vec(),
            bytemuck::bytes_of(&value).to_vec(),
        );
    }

    pub fn put_bytes(&mut self, table: &str, key: Vec<u8>, value: Vec<u8>) {
        self.tables
            .entry(table.to_string())
            .or_default()
            .insert(key, value);
    }

    pub fn remove<K: bytemuck::Pod, V>(&mut self, table: Table<K, V>, key: &K) {
        if let Some(entries) = self.tables.get_mut(table.name) {
            entries.remove(bytemuck::bytes_of(key));
        }
    }

    pub fn get<K: bytemuck::Pod, V: bytemuck::Pod>(
        &self,
        table: Table<K, V>,
        key: &K,
    ) -> Option<V> {
        self.entries(table.name)?
            .get(bytemuck::bytes_of(key))
            .and_then(|v| bytemuck::try_pod_read_unaligned(v).ok())
    }

    /// A table's entries, typed (entries of the wrong size are skipped).
    pub fn iter<K: bytemuck::Pod, V: bytemuck::Pod>(
        &self,
        table: Table<K, V>,
    ) -> impl Iterator<Item = (K, V)> + '_ {
        self.entries(table.name)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                Some((
                    bytemuck::try_pod_read_unaligned(k).ok()?,
                    bytemuck::try_pod_read_unaligned(v).ok()?,
                ))
            })
    }

    pub fn entries(&self, table: &str) -> Option<&Entries> {
        self.tables.get(table)
    }

    pub fn count(&self, table: &str) -> usize {
        self.entries(table).map_or(0, BTreeMap::len)
    }

    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// Entries over every table.
    pub fn len(&self) -> usize {
        self.tables.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One change to one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    Put {
        table: String,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: String,
        key: Vec<u8>,
    },
}

impl MapOp {
    pub fn put<K: bytemuck::Pod, V: bytemuck::Pod>(table: Table<K, V>, key: K, value: V) -> Self {
        MapOp::Put {
            table: table.name.to_string(),
            key: bytemuck::bytes_of(&key).to_vec(),
            value: bytemuck::bytes_of(&value).to_vec(),
        }
    }

    pub fn delete<K: bytemuck::Pod, V>(table: Table<K, V>, key: K) -> Self {
        MapOp::Delete {
            table: table.name.to_string(),
            key: bytemuck::bytes_of(&key).to_vec(),
        }
    }

    pub fn table(&self) -> &str {
        match self {
            MapOp::Put { table, .. } | MapOp::Delete { table, .. } => table,
        }
    }

    pub fn is_put(&self) -> bool {
        matches!(self, MapOp::Put { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MapWriteError {
    #[error("map {map}")]
    Map {
        map: String,
        #[source]
        source: MapError,
    },
    #[error("map {map} is full ({max} entries)")]
    Full { map: String, max: u32 },
    #[error("map {map}: no such map in this netd's tables")]
    Unknown { map: String },
    #[error("map {map}: an entry of {got} bytes where {want} are declared")]
    Size { map: String, got: usize, want: u32 },
}

pub trait MapWriter {
    fn read(&self) -> Result<MapState, MapWriteError>;
    fn apply(&mut self, op: &MapOp) -> Result<(), MapWriteError>;
    /// How many entries `table` holds at most (the kernel's max_entries).
    fn capacity(&self, table: &str) -> Option<u32>;
    /// The declarations this writer holds, for the write order.
    fn tables(&self) -> &[TableDecl] {
        tables::TABLES
    }
}

/// A kernel map seen as bytes: what the reconciler needs of any map.
pub trait KernelTable: Send + Sync {
    fn read(&self) -> Result<Entries, MapError>;
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), MapError>;
    fn delete(&mut self, key: &[u8]) -> Result<(), MapError>;
    fn max_entries(&self) -> u32;
}

/// The kernel's max_entries of a map (0 when it cannot be read).
pub fn max_entries_of(map: &Map) -> u32 {
    let data = match map {
        Map::HashMap(data)
        | Map::Array(data)
        | Map::PerCpuArray(data)
        | Map::LruHashMap(data)
        | Map::LpmTrie(data)
        | Map::PerCpuHashMap(data)
        | Map::PerCpuLruHashMap(data)
        | Map::HashOfMaps(data)
        | Map::ProgramArray(data)
        | Map::RingBuf(data) => data,
        _ => return 0,
    };
    data.info().map(|i| i.max_entries()).unwrap_or(0)
}

/// How full one control map is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapFill {
    pub name: String,
    pub entries: usize,
    pub capacity: u32,
}

/// Fill of every control map in `state`, against `writer`'s capacities.
pub fn fill(state: &MapState, writer: &impl MapWriter) -> Vec<MapFill> {
    tables::control_tables()
        .map(|t| MapFill {
            name: t.name.to_string(),
            entries: state.count(t.name),
            capacity: writer.capacity(t.name).unwrap_or(t.max_entries),
        })
        .collect()
}

fn pod<T: bytemuck::Pod>(bytes: &[u8]) -> Result<T, MapError> {
    bytemuck::try_pod_read_unaligned(bytes).map_err(|_| MapError::InvalidKeySize {
        size: bytes.len(),
        expected: core::mem::size_of::<T>(),
    })
}

struct HashTable<K: aya::Pod, V: aya::Pod> {
    map: HashMap<MapData, K, V>,
    max_entries: u32,
}

pub fn open_hash<K, V>(map: Map) -> Result<Box<dyn KernelTable>, MapError>
where
    K: Plain,
    V: Plain,
{
    let max_entries = max_entries_of(&map);
    let map: HashMap<MapData, K, V> = HashMap::try_from(map)?;
    Ok(Box::new(HashTable { map, max_entries }))
}

impl<K, V> KernelTable for HashTable<K, V>
where
    K: Plain,
    V: Plain,
{
    fn read(&self) -> Result<Entries, MapError> {
        let mut entries = Entries::new();
        for item in self.map.iter() {
            let (k, v) = item?;
            entries.insert(
                bytemuck::bytes_of(&k).to_vec(),
                bytemuck::bytes_of(&v).to_vec(),
            );
        }
        Ok(entries)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), MapError> {
        self.map.insert(pod::<K>(key)?, pod::<V>(value)?, 0)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), MapError> {
        already_gone(self.map.remove(&pod::<K>(key)?))
    }

    fn max_entries(&self) -> u32 {
        self.max_entries
    }
}

/// A delete of an entry that is not there is done: aya reports it as
/// `KeyNotFound` or as the syscall's ENOENT, depending on the map type.
fn already_gone(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// An LPM trie: its key bytes are the prefix length (native order) then
/// the data `D`, as the kernel and `netd_common::policy`'s keys have them.
struct LpmTable<D: aya::Pod, V: aya::Pod> {
    map: LpmTrie<MapData, D, V>,
    max_entries: u32,
}

pub fn open_lpm<D, V>(map: Map) -> Result<Box<dyn KernelTable>, MapError>
where
    D: Plain,
    V: Plain,
{
    let max_entries = max_entries_of(&map);
    let map: LpmTrie<MapData, D, V> = LpmTrie::try_from(map)?;
    Ok(Box::new(LpmTable { map, max_entries }))
}

fn lpm_key<D: Plain>(bytes: &[u8]) -> Result<LpmKey<D>, MapError> {
    let (prefix, data) = bytes.split_at_checked(4).ok_or(MapError::KeyNotFound)?;
    let prefix: [u8; 4] = prefix.try_into().map_err(|_| MapError::KeyNotFound)?;
    Ok(LpmKey::new(u32::from_ne_bytes(prefix), pod::<D>(data)?))
}

impl<D: Plain, V: Plain> KernelTable for LpmTable<D, V> {
    fn read(&self) -> Result<Entries, MapError> {
        let mut entries = Entries::new();
        for item in self.map.iter() {
            let (k, v) = item?;
            let mut key = k.prefix_len().to_ne_bytes().to_vec();
            key.extend_from_slice(bytemuck::bytes_of(&k.data()));
            entries.insert(key, bytemuck::bytes_of(&v).to_vec());
        }
        Ok(entries)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), MapError> {
        self.map.insert(&lpm_key::<D>(key)?, pod::<V>(value)?, 0)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), MapError> {
        already_gone(self.map.remove(&lpm_key::<D>(key)?))
    }

    fn max_entries(&self) -> u32 {
        self.max_entries
    }
}

/// An array seen as a table: an all-zero value is no entry, and deleting
/// writes zeros.
struct ArrayTable<V: aya::Pod> {
    map: Array<MapData, V>,
}

pub fn open_array<V>(map: Map) -> Result<Box<dyn KernelTable>, MapError>
where
    V: Plain,
{
    let map: Array<MapData, V> = Array::try_from(map)?;
    Ok(Box::new(ArrayTable { map }))
}

impl<V: Plain> KernelTable for ArrayTable<V> {
    fn read(&self) -> Result<Entries, MapError> {
        let mut entries = Entries::new();
        for (index, value) in self.map.iter().enumerate() {
            let value = value?;
            let bytes = bytemuck::bytes_of(&value);
            if bytes.iter().any(|b| *b != 0) {
                entries.insert((index as u32).to_ne_bytes().to_vec(), bytes.to_vec());
            }
        }
        Ok(entries)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), MapError> {
        self.map.set(pod::<u32>(key)?, pod::<V>(value)?, 0)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), MapError> {
        self.map.set(pod::<u32>(key)?, V::zeroed(), 0)
    }

    fn max_entries(&self) -> u32 {
        self.map.len()
    }
}

fn map_err(map: &str, max: u32) -> impl Fn(MapError) -> MapWriteError + '_ {
    move |source| match &source {
        MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
            MapWriteError::Full {
                map: map.to_string(),
                max,
            }
        }
        _ => MapWriteError::Map {
            map: map.to_string(),
            source,
        },
    }
}

/// The kernel's control maps, taken from the loaded (pinned) object.
pub struct KernelMaps {
    tables: BTreeMap<&'static str, Box<dyn KernelTable>>,
}

impl KernelMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, MapWriteError> {
        let mut tables = BTreeMap::new();
        for decl in tables::control_tables() {
            let Some(open) = decl.open else { continue };
            let map = ebpf.take_map(decl.name).ok_or(MapWriteError::Unknown {
                map: decl.name.to_string(),
            })?;
            tables.insert(decl.name, open(map).map_err(map_err(decl.name, 0))?);
        }
        Ok(Self { tables })
    }

    fn table(&mut self, name: &str) -> Result<&mut Box<dyn KernelTable>, MapWriteError> {
        self.tables.get_mut(name).ok_or(MapWriteError::Unknown {
            map: name.to_string(),
        })
    }
}

impl MapWriter for KernelMaps {
    fn read(&self) -> Result<MapState, MapWriteError> {
        let mut state = MapState::default();
        for (name, table) in &self.tables {
            let entries = table.read().map_err(map_err(name, table.max_entries()))?;
            for (k, v) in entries {
                state.put_bytes(name, k, v);
            }
        }
        Ok(state)
    }

    fn apply(&mut self, op: &MapOp) -> Result<(), MapWriteError> {
        let name = op.table().to_string();
        let table = self.table(&name)?;
        let max = table.max_entries();
        match op {
            MapOp::Put { key, value, .. } => table.put(key, value),
            MapOp::Delete { key, .. } => table.delete(key),
        }
        .map_err(map_err(&name, max))
    }

    fn capacity(&self, table: &str) -> Option<u32> {
        self.tables.get(table).map(|t| t.max_entries())
    }
}

/// An in-memory writer with the declared capacities (or those a test
/// sets), recording every op; it can fail from the n-th write on.
#[derive(Debug)]
pub struct FakeMaps {
    pub state: MapState,
    pub log: Vec<MapOp>,
    pub fail_after: Option<usize>,
    pub capacities: BTreeMap<String, u32>,
    pub tables: Vec<TableDecl>,
}

impl Default for FakeMaps {
    fn default() -> Self {
        Self::with_tables(tables::TABLES)
    }
}

impl FakeMaps {
    pub fn with_tables(tables: &[TableDecl]) -> Self {
        Self {
            state: MapState::default(),
            log: Vec::new(),
            fail_after: None,
            capacities: tables
                .iter()
                .map(|t| (t.name.to_string(), t.max_entries))
                .collect(),
            tables: tables.to_vec(),
        }
    }

    /// The declaration `table` falls under: its own, or its outer map's
    /// for an inner table (`OUTER/<key>`).
    fn decl_of(&self, table: &str) -> Option<&TableDecl> {
        let (outer, _) = tables::outer_of(table);
        self.tables.iter().find(|t| t.name == outer)
    }
}

impl MapWriter for FakeMaps {
    fn read(&self) -> Result<MapState, MapWriteError> {
        Ok(self.state.clone())
    }

    fn apply(&mut self, op: &MapOp) -> Result<(), MapWriteError> {
        if self.fail_after.is_some_and(|n| self.log.len() >= n) {
            return Err(MapWriteError::Full {
                map: op.table().to_string(),
                max: 0,
            });
        }
        let name = op.table().to_string();
        let decl = *self
            .decl_of(&name)
            .ok_or(MapWriteError::Unknown { map: name.clone() })?;
        let sized = !tables::outer_of(&name).1 && decl.kind != MapKind::HashOfMaps;
        match op {
            MapOp::Put { key, value, .. } => {
                if sized && value.len() as u32 != decl.value_size {
                    return Err(MapWriteError::Size {
                        map: name,
                        got: value.len(),
                        want: decl.value_size,
                    });
                }
                let max = self.capacity(&name).unwrap_or(0);
                let entries = self.state.entries(&name);
                let present = entries.is_some_and(|e| e.contains_key(key));
                if !present && self.state.count(&name) as u32 >= max {
                    return Err(MapWriteError::Full { map: name, max });
                }
                self.state.put_bytes(&name, key.clone(), value.clone());
            }
            MapOp::Delete { key, .. } => {
                if let Some(entries) = self.state.tables.get_mut(&name) {
                    entries.remove(key);
                    if entries.is_empty() {
                        self.state.tables.remove(&name);
                    }
                }
            }
        }
        self.log.push(op.clone());
        Ok(())
    }

    fn capacity(&self, table: &str) -> Option<u32> {
        self.capacities.get(table).copied().or_else(|| {
            // Inner tables: the inner declaration's size, named OUTER/*.
            match tables::outer_of(table) {
                (outer, true) => self.capacities.get(&format!("{outer}/*")).copied(),
                _ => None,
            }
        })
    }

    fn tables(&self) -> &[TableDecl] {
        &self.tables
    }
}
