//! Where a bench's threads run, and how busy a core and how many packets
//! a link saw.

use anyhow::{bail, Context};
use netd_tests::netns::NetNs;

/// Pins the calling thread (and the threads it starts after) to `cpu`.
pub fn pin_this_thread(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and
    // sched_setaffinity (0: this thread) only touch `set`.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A core's time in ticks (/proc/stat), busy and in all.
#[derive(Clone, Copy, Debug)]
pub struct CpuTicks {
    pub busy: u64,
    pub total: u64,
}

impl CpuTicks {
    pub fn read(cpu: usize) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat
            .lines()
            .find(|l| l.starts_with(&format!("cpu{cpu} ")))
            .context("no cpu line in /proc/stat")?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq
        let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6];
        Ok(CpuTicks {
            busy,
            total: busy + ticks[3] + ticks[4],
        })
    }

    /// The share of the time from `self` to `later` the core was busy.
    pub fn busy_until(&self, later: &CpuTicks) -> f64 {
        (later.busy - self.busy) as f64 / (later.total - self.total).max(1) as f64
    }
}

/// Packets `dev` in `ns` has counted in direction `dir` (`rx`, `tx`).
pub fn link_packets(ns: &NetNs, dev: &str, dir: &str) -> anyhow::Result<u64> {
    let out = ns.ip(&["-j", "-s", "link", "show", dev]);
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    links[0]["stats64"][dir]["packets"]
        .as_u64()
        .with_context(|| format!("{dir} packets of {dev}"))
}

/// sysfs as `ns` sees it: `ip netns exec` mounts that namespace's /sys.
pub fn write_sysfs(ns: &NetNs, path: &str, value: &str) -> anyhow::Result<()> {
    let out = ns.exec("sh", &["-c", &format!("echo {value} > {path}")]);
    if !out.status.success() {
        bail!("{path}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Puts `dev`'s receive path in `ns` on `cpu`: it polls in NAPI (XDP needs
/// it; `gro` turns GRO on for a device without XDP, as on a NIC), made a
/// kernel thread pinned there; what the veth hands to the backlog instead
/// is steered there by RPS. A veth has no interrupt moderation, so each
/// packet would wake the thread: the kernel's own deferral
/// (napi_defer_hard_irqs, gro_flush_timeout) stands in for a NIC's.
pub fn steer_receive_path(ns: &NetNs, dev: &str, cpu: usize, gro: bool) -> anyhow::Result<()> {
    if gro {
        let out = ns.exec("ethtool", &["-K", dev, "gro", "on"]);
        if !out.status.success() {
            bail!("GRO on {dev}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let sys = format!("/sys/class/net/{dev}");
    write_sysfs(
        ns,
        &format!("{sys}/queues/rx-0/rps_cpus"),
        &format!("{:x}", 1u64 << cpu),
    )?;
    let before = napi_threads(dev);
    write_sysfs(ns, &format!("{sys}/threaded"), "1")?;
    write_sysfs(ns, &format!("{sys}/napi_defer_hard_irqs"), "100")?;
    write_sysfs(ns, &format!("{sys}/gro_flush_timeout"), "50000")?;
    let new: Vec<u32> = napi_threads(dev)
        .into_iter()
        .filter(|pid| !before.contains(pid))
        .collect();
    if new.is_empty() {
        bail!("no NAPI thread appeared for {dev}");
    }
    for pid in new {
        netd_tests::netns::sh("taskset", &["-pc", &cpu.to_string(), &pid.to_string()]);
    }
    Ok(())
}

/// The kernel threads polling a device called `dev`, in any namespace.
pub fn napi_threads(dev: &str) -> Vec<u32> {
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
