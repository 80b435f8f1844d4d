//! One core for the path, one for the generator: the path's interrupts
//! and NAPI threads steered to its core, and its busy time read.

use super::*;

/// Puts host 0's receive path on [`PATH_CPU`], the same way in every
/// world: its uplink polls in NAPI (netd's XDP needs it; for Docker's way
/// and netd at TC GRO turns it on, as on a NIC), made a kernel thread
/// pinned there; what
/// the veth hands to the backlog instead (trafgen's packets when the
/// uplink has no XDP) is steered there by RPS. A veth has no interrupt
/// moderation, so each packet would wake the thread: the kernel's own
/// deferral (napi_defer_hard_irqs, gro_flush_timeout) stands in for a
/// NIC's, as the backlog batches by itself.
pub(super) fn steer_to_path_cpu(w: &World) -> anyhow::Result<()> {
    let host = w.ingress();
    if w.system != System::NetdXdp {
        let out = host.exec("ethtool", &["-K", "uplink0", "gro", "on"]);
        if !out.status.success() {
            bail!("GRO on uplink0: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let mask = format!("{:x}", 1u64 << PATH_CPU);
    write_sysfs(host, "/sys/class/net/uplink0/queues/rx-0/rps_cpus", &mask)?;
    let before = napi_threads("uplink0");
    write_sysfs(host, "/sys/class/net/uplink0/threaded", "1")?;
    write_sysfs(host, "/sys/class/net/uplink0/napi_defer_hard_irqs", "100")?;
    write_sysfs(host, "/sys/class/net/uplink0/gro_flush_timeout", "50000")?;
    let new: Vec<u32> = napi_threads("uplink0")
        .into_iter()
        .filter(|pid| !before.contains(pid))
        .collect();
    if new.is_empty() {
        bail!("no NAPI thread appeared for host 0's uplink0");
    }
    for pid in new {
        sh("taskset", &["-pc", &PATH_CPU.to_string(), &pid.to_string()]);
    }
    Ok(())
}

/// The kernel threads polling a device called `dev`, in any namespace.
pub(super) fn napi_threads(dev: &str) -> Vec<u32> {
    let prefix = format!("napi/{dev}-");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(&prefix))
        })
        .collect()
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
