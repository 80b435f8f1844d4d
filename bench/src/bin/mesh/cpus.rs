//! One core for the path, one for the generator: the path's interrupts
//! and NAPI threads steered to its core, and its busy time read.

use super::*;

/// Puts host 0's receive path on [`PATH_CPU`], the same way in every
/// world (`netd_bench::cpu::steer_receive_path`); netd's XDP needs NAPI
/// already, for Docker's way and netd at TC GRO turns it on, as on a NIC.
pub(super) fn steer_to_path_cpu(w: &World) -> anyhow::Result<()> {
    steer_receive_path(
        w.ingress(),
        "uplink0",
        PATH_CPU,
        w.system != System::NetdXdp,
    )
}

/// One reading of what the packet rate is computed from.
pub(super) struct Reading {
    pub(super) cpu: CpuTicks,
    pub(super) sent: u64,
    pub(super) delivered: u64,
}

pub(super) fn read_counters(w: &World, sent: u64) -> anyhow::Result<Reading> {
    Ok(Reading {
        cpu: CpuTicks::read(PATH_CPU)?,
        sent,
        delivered: link_packets(&w.sink, "eth0", "rx")?,
    })
}

pub(super) fn busy_fraction(a: &Reading, b: &Reading) -> f64 {
    a.cpu.busy_until(&b.cpu)
}
