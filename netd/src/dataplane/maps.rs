//! The forwarding maps as one value ([`MapState`]) and a [`MapWriter`]
//! that reads and changes them: the aya-backed one for the kernel, an
//! in-memory one for tests of the reconciler.

use std::collections::BTreeMap;

use aya::maps::{Array, HashMap, MapData, MapError};
use netd_common::{
    map_names,
    maps::{EndpointEntry, HostEntry, LocalEndpointEntry, NetworkEntry, OverlayConfig},
};

/// Contents of the forwarding maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapState {
    pub networks: BTreeMap<u32, NetworkEntry>,
    pub endpoints: BTreeMap<[u8; 4], EndpointEntry>,
    pub local: BTreeMap<u32, LocalEndpointEntry>,
    /// Other hosts by local index.
    pub hosts: BTreeMap<u32, HostEntry>,
    /// Host index by underlay address.
    pub host_by_ip: BTreeMap<[u8; 4], u32>,
    /// Network index by VNI.
    pub vnis: BTreeMap<u32, u32>,
    /// This host's underlay side (all zero: no overlay).
    pub overlay: OverlayConfig,
}

impl MapState {
    /// Entries in the hash maps.
    pub fn len(&self) -> usize {
        self.networks.len()
            + self.endpoints.len()
            + self.local.len()
            + self.hosts.len()
            + self.host_by_ip.len()
            + self.vnis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One change to one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    PutNetwork(u32, NetworkEntry),
    PutVni(u32, u32),
    PutHost(u32, HostEntry),
    PutHostIp([u8; 4], u32),
    SetOverlay(OverlayConfig),
    PutLocal(u32, LocalEndpointEntry),
    PutEndpoint([u8; 4], EndpointEntry),
    DeleteEndpoint([u8; 4]),
    DeleteLocal(u32),
    DeleteHostIp([u8; 4]),
    DeleteHost(u32),
    DeleteVni(u32),
    DeleteNetwork(u32),
}

#[derive(Debug, thiserror::Error)]
pub enum MapWriteError {
    #[error("map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {map} is full ({max} entries)")]
    Full { map: &'static str, max: u32 },
}

pub trait MapWriter {
    fn read(&self) -> Result<MapState, MapWriteError>;
    fn apply(&mut self, op: &MapOp) -> Result<(), MapWriteError>;
}

/// The kernel's maps, taken from the loaded (pinned) object.
pub struct ForwardingMaps {
    networks: HashMap<MapData, u32, NetworkEntry>,
    endpoints: HashMap<MapData, [u8; 4], EndpointEntry>,
    local: HashMap<MapData, u32, LocalEndpointEntry>,
    hosts: HashMap<MapData, u32, HostEntry>,
    host_by_ip: HashMap<MapData, [u8; 4], u32>,
    vnis: HashMap<MapData, u32, u32>,
    overlay: Array<MapData, OverlayConfig>,
}

/// How many entries the map named `map` holds (netd-ebpf's declarations).
fn capacity(map: &str) -> u32 {
    use netd_common::maps::{MAX_ENDPOINTS, MAX_HOSTS, MAX_NETWORKS};
    match map {
        map_names::NETWORKS | map_names::VNIS => MAX_NETWORKS,
        map_names::HOSTS | map_names::HOST_BY_IP => MAX_HOSTS,
        map_names::OVERLAY => 1,
        _ => MAX_ENDPOINTS,
    }
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> MapWriteError {
    move |source| match &source {
        MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
            MapWriteError::Full {
                map,
                max: capacity(map),
            }
        }
        _ => MapWriteError::Map { map, source },
    }
}

impl ForwardingMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, MapWriteError> {
        fn take<K: aya::Pod, V: aya::Pod>(
            ebpf: &mut aya::Ebpf,
            name: &'static str,
        ) -> Result<HashMap<MapData, K, V>, MapWriteError> {
            let map = ebpf.take_map(name).ok_or(MapWriteError::Map {
                map: name,
                source: MapError::InvalidName {
                    name: name.to_string(),
                },
            })?;
            HashMap::try_from(map).map_err(map_err(name))
        }
        Ok(Self {
            networks: take(ebpf, map_names::NETWORKS)?,
            endpoints: take(ebpf, map_names::ENDPOINTS)?,
            local: take(ebpf, map_names::LOCAL_ENDPOINTS)?,
            hosts: take(ebpf, map_names::HOSTS)?,
            host_by_ip: take(ebpf, map_names::HOST_BY_IP)?,
            vnis: take(ebpf, map_names::VNIS)?,
            overlay: {
                let name = map_names::OVERLAY;
                let map = ebpf.take_map(name).ok_or(MapWriteError::Map {
                    map: name,
                    source: MapError::InvalidName {
                        name: name.to_string(),
                    },
                })?;
                Array::try_from(map).map_err(map_err(name))?
            },
        })
    }
}

impl MapWriter for ForwardingMaps {
    fn read(&self) -> Result<MapState, MapWriteError> {
        let mut state = MapState::default();
        for item in self.networks.iter() {
            let (k, v) = item.map_err(map_err(map_names::NETWORKS))?;
            state.networks.insert(k, v);
        }
        for item in self.endpoints.iter() {
            let (k, v) = item.map_err(map_err(map_names::ENDPOINTS))?;
            state.endpoints.insert(k, v);
        }
        for item in self.local.iter() {
            let (k, v) = item.map_err(map_err(map_names::LOCAL_ENDPOINTS))?;
            state.local.insert(k, v);
        }
        for item in self.hosts.iter() {
            let (k, v) = item.map_err(map_err(map_names::HOSTS))?;
            state.hosts.insert(k, v);
        }
        for item in self.host_by_ip.iter() {
            let (k, v) = item.map_err(map_err(map_names::HOST_BY_IP))?;
            state.host_by_ip.insert(k, v);
        }
        for item in self.vnis.iter() {
            let (k, v) = item.map_err(map_err(map_names::VNIS))?;
            state.vnis.insert(k, v);
        }
        state.overlay = self
            .overlay
            .get(&0, 0)
            .map_err(map_err(map_names::OVERLAY))?;
        Ok(state)
    }

    fn apply(&mut self, op: &MapOp) -> Result<(), MapWriteError> {
        let ignore_missing = |r: Result<(), MapError>, map: &'static str| match r {
            Err(MapError::KeyNotFound) => Ok(()),
            other => other.map_err(map_err(map)),
        };
        match op {
            MapOp::PutNetwork(k, v) => self
                .networks
                .insert(k, v, 0)
                .map_err(map_err(map_names::NETWORKS)),
            MapOp::PutLocal(k, v) => self
                .local
                .insert(k, v, 0)
                .map_err(map_err(map_names::LOCAL_ENDPOINTS)),
            MapOp::PutEndpoint(k, v) => self
                .endpoints
                .insert(k, v, 0)
                .map_err(map_err(map_names::ENDPOINTS)),
            MapOp::PutVni(k, v) => self.vnis.insert(k, v, 0).map_err(map_err(map_names::VNIS)),
            MapOp::PutHost(k, v) => self
                .hosts
                .insert(k, v, 0)
                .map_err(map_err(map_names::HOSTS)),
            MapOp::PutHostIp(k, v) => self
                .host_by_ip
                .insert(k, v, 0)
                .map_err(map_err(map_names::HOST_BY_IP)),
            MapOp::SetOverlay(v) => self
                .overlay
                .set(0, v, 0)
                .map_err(map_err(map_names::OVERLAY)),
            MapOp::DeleteHostIp(k) => {
                ignore_missing(self.host_by_ip.remove(k), map_names::HOST_BY_IP)
            }
            MapOp::DeleteHost(k) => ignore_missing(self.hosts.remove(k), map_names::HOSTS),
            MapOp::DeleteVni(k) => ignore_missing(self.vnis.remove(k), map_names::VNIS),
            MapOp::DeleteEndpoint(k) => {
                ignore_missing(self.endpoints.remove(k), map_names::ENDPOINTS)
            }
            MapOp::DeleteLocal(k) => {
                ignore_missing(self.local.remove(k), map_names::LOCAL_ENDPOINTS)
            }
            MapOp::DeleteNetwork(k) => ignore_missing(self.networks.remove(k), map_names::NETWORKS),
        }
    }
}

/// An in-memory writer that records every op (tests of the reconciler),
/// optionally failing from the n-th write on.
#[derive(Debug, Default)]
pub struct FakeMaps {
    pub state: MapState,
    pub log: Vec<MapOp>,
    pub fail_after: Option<usize>,
}

impl MapWriter for FakeMaps {
    fn read(&self) -> Result<MapState, MapWriteError> {
        Ok(self.state.clone())
    }

    fn apply(&mut self, op: &MapOp) -> Result<(), MapWriteError> {
        if self.fail_after.is_some_and(|n| self.log.len() >= n) {
            return Err(MapWriteError::Full {
                map: "fake",
                max: 0,
            });
        }
        self.log.push(op.clone());
        let s = &mut self.state;
        match op {
            MapOp::PutNetwork(k, v) => drop(s.networks.insert(*k, *v)),
            MapOp::PutLocal(k, v) => drop(s.local.insert(*k, *v)),
            MapOp::PutEndpoint(k, v) => drop(s.endpoints.insert(*k, *v)),
            MapOp::PutVni(k, v) => drop(s.vnis.insert(*k, *v)),
            MapOp::PutHost(k, v) => drop(s.hosts.insert(*k, *v)),
            MapOp::PutHostIp(k, v) => drop(s.host_by_ip.insert(*k, *v)),
            MapOp::SetOverlay(v) => s.overlay = *v,
            MapOp::DeleteHostIp(k) => drop(s.host_by_ip.remove(k)),
            MapOp::DeleteHost(k) => drop(s.hosts.remove(k)),
            MapOp::DeleteVni(k) => drop(s.vnis.remove(k)),
            MapOp::DeleteEndpoint(k) => drop(s.endpoints.remove(k)),
            MapOp::DeleteLocal(k) => drop(s.local.remove(k)),
            MapOp::DeleteNetwork(k) => drop(s.networks.remove(k)),
        }
        Ok(())
    }
}
