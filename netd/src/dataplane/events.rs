//! The daemon's side of the datapath's events: the ring buffer they
//! arrive in, the switch that turns emission on and off, and each CPU's
//! tallies (emitted, suppressed by the budget, lost to a full ring).

use aya::maps::{Array, Map, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf};
use netd_common::events::{EmitBudget, Event, MonitorConfig, Pending};

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("counting the CPUs ({0})")]
    Cpus(std::io::Error),
}

pub struct Events {
    ring: RingBuf<MapData>,
    monitor: Array<MapData, MonitorConfig>,
    emit: PerCpuArray<MapData, EmitBudget>,
    pending: PerCpuArray<MapData, Pending>,
}

impl Events {
    pub fn new(ring: Map, monitor: Map, emit: Map, pending: Map) -> Result<Self, MapError> {
        Ok(Self {
            ring: RingBuf::try_from(ring)?,
            monitor: Array::try_from(monitor)?,
            emit: PerCpuArray::try_from(emit)?,
            pending: PerCpuArray::try_from(pending)?,
        })
    }

    /// Emits the event kinds in `config` (kinds 0: none, the programs'
    /// cost is one array read). Notes left by an earlier listener are
    /// dropped first, so none is emitted with another packet's bytes.
    pub fn set(&mut self, config: MonitorConfig) -> Result<(), EventsError> {
        if config.kinds != 0 {
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| EventsError::Cpus(e))?;
            let clear = PerCpuValues::try_from(vec![Pending::default(); cpus])
                .map_err(EventsError::Cpus)?;
            self.pending.set(0, clear, 0)?;
        }
        Ok(self.monitor.set(0, config, 0)?)
    }

    /// What the programs emit now.
    pub fn config(&self) -> Result<MonitorConfig, MapError> {
        self.monitor.get(&0, 0)
    }

    /// The next event in the ring, if there is one.
    pub fn next_event(&mut self) -> Option<Event> {
        let item = self.ring.next()?;
        (item.len() >= std::mem::size_of::<Event>())
            .then(|| bytemuck::pod_read_unaligned(&item[..std::mem::size_of::<Event>()]))
    }

    /// Every CPU's tallies, summed.
    pub fn tallies(&self) -> Result<EmitBudget, MapError> {
        let per_cpu = self.emit.get(&0, 0)?;
        let mut sum = EmitBudget::default();
        for b in per_cpu.iter() {
            sum.emitted += b.emitted;
            sum.suppressed += b.suppressed;
            sum.lost += b.lost;
        }
        Ok(sum)
    }

    /// The ring's descriptor, to wait on for events.
    pub fn ring(&self) -> &RingBuf<MapData> {
        &self.ring
    }
}
