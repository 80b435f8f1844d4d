//! Each local endpoint's counters (`NETD_EP_STATS`): netd keeps an entry
//! for every endpoint link it attached and none for anything else; the
//! programs count into them. Read, summed over the CPUs, for the metrics,
//! `netd endpoint ls` and `netd status`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use aya::{
    maps::{Map, MapData, MapError, PerCpuHashMap, PerCpuValues},
    util::nr_cpus,
};
use netd_common::endpoint_stats::EndpointStats;

#[derive(Debug, thiserror::Error)]
pub enum EndpointStatsError {
    #[error("the endpoints' counters map (NETD_EP_STATS)")]
    Map(#[from] MapError),
    #[error("counting the CPUs for the endpoints' counters")]
    Cpus(#[source] std::io::Error),
}

pub struct EndpointStatsMap {
    map: PerCpuHashMap<MapData, u32, EndpointStats>,
}

/// What one pass changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub added: usize,
    pub removed: usize,
}

impl EndpointStatsMap {
    pub fn new(map: Map) -> Result<Self, EndpointStatsError> {
        Ok(Self {
            map: PerCpuHashMap::try_from(map)?,
        })
    }

    /// Opens the map pinned at `path`, to read it beside the agent's handle.
    pub fn open_pinned(path: &Path) -> Result<Self, EndpointStatsError> {
        let data = MapData::from_pin(path)?;
        Self::new(Map::from_map_data(data)?)
    }

    /// An entry for each of `ifindexes`, made at zero where missing (an
    /// existing one keeps counting: a restart loses nothing), and none for
    /// any other ifindex: an endpoint that left takes its counters along.
    pub fn sync(&mut self, ifindexes: &BTreeSet<u32>) -> Result<Synced, EndpointStatsError> {
        let present: BTreeSet<u32> = self.map.keys().filter_map(Result::ok).collect();
        let mut synced = Synced::default();
        for gone in present.difference(ifindexes) {
            match self.map.remove(gone) {
                Ok(()) => synced.removed += 1,
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let cpus = nr_cpus().map_err(|(_, e)| EndpointStatsError::Cpus(e))?;
        for new in ifindexes.difference(&present) {
            let zeros = PerCpuValues::try_from(vec![EndpointStats::default(); cpus])
                .map_err(EndpointStatsError::Cpus)?;
            self.map.insert(new, zeros, 0)?;
            synced.added += 1;
        }
        Ok(synced)
    }

    /// Every endpoint's counters, by host veth ifindex, summed over the CPUs.
    pub fn read(&self) -> BTreeMap<u32, EndpointStats> {
        self.map
            .iter()
            .filter_map(Result::ok)
            .map(|(ifindex, per_cpu)| {
                let mut sum = EndpointStats::default();
                for s in per_cpu.iter() {
                    sum.add(s);
                }
                (ifindex, sum)
            })
            .collect()
    }
}
