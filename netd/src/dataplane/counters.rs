//! Reads the per-CPU counters map and sums it over the CPUs.

use std::path::Path;

use aya::maps::{MapData, PerCpuArray};
use netd_common::counters::{
    drop_slot, verdict_slot, Counter, DropReason, Hook, Verdict, COUNTER_SLOTS,
};

#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    #[error("counters map")]
    Map(#[from] aya::maps::MapError),
    #[error("counters map has {found} slots, this netd expects {COUNTER_SLOTS}")]
    WrongSize { found: u32 },
}

/// Totals over all CPUs, one [`Counter`] per slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterSnapshot {
    slots: Vec<Counter>,
}

impl CounterSnapshot {
    pub fn from_slots(slots: Vec<Counter>) -> Self {
        Self { slots }
    }

    fn slot(&self, index: u32) -> Counter {
        self.slots.get(index as usize).copied().unwrap_or_default()
    }

    pub fn verdict(&self, hook: Hook, verdict: Verdict) -> Counter {
        self.slot(verdict_slot(hook, verdict))
    }

    pub fn drops(&self, hook: Hook, reason: DropReason) -> Counter {
        self.slot(drop_slot(hook, reason))
    }

    /// Every packet `hook` saw, whatever its verdict.
    pub fn seen(&self, hook: Hook) -> Counter {
        let mut total = Counter::default();
        for verdict in Verdict::ALL {
            total.add(&self.verdict(hook, verdict));
        }
        total
    }
}

pub struct CountersReader {
    map: PerCpuArray<MapData, Counter>,
}

impl CountersReader {
    pub fn new(map: PerCpuArray<MapData, Counter>) -> Result<Self, CountersError> {
        let found = map.len();
        if found != COUNTER_SLOTS {
            return Err(CountersError::WrongSize { found });
        }
        Ok(Self { map })
    }

    /// Opens the map pinned at `path` (e.g. by a running netd).
    pub fn open_pinned(path: &Path) -> Result<Self, CountersError> {
        let data = MapData::from_pin(path)?;
        let map = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))?;
        Self::new(map)
    }

    pub fn snapshot(&self) -> Result<CounterSnapshot, CountersError> {
        let mut slots = Vec::with_capacity(COUNTER_SLOTS as usize);
        for index in 0..COUNTER_SLOTS {
            let per_cpu = self.map.get(&index, 0)?;
            let mut total = Counter::default();
            for value in per_cpu.iter() {
                total.add(value);
            }
            slots.push(total);
        }
        Ok(CounterSnapshot { slots })
    }
}
