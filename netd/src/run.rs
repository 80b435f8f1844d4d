//! `netd run`: load, attach, serve metrics, stop on SIGINT/SIGTERM.
//!
//! Stopping leaves the pinned programs, maps and links in place, so
//! forwarding goes on while netd is down or restarting; `netd teardown`
//! removes them.

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, level_filters::LevelFilter, warn};

use crate::{
    config::RunConfig,
    dataplane::{loader, uplink, Datapath, PinLayout, PinLock},
    logging, metrics, system,
};

pub async fn run(config: RunConfig, log_level: LevelFilter) -> anyhow::Result<()> {
    system::require_root()?;
    for name in &config.uplinks {
        system::ifindex(name).context("checking --uplink")?;
    }
    if system::ensure_bpffs(&config.pin_path)? {
        warn!(
            "mounted bpffs on /sys/fs/bpf: none was there. Under `ip netns exec` (which remounts \
             /sys) that bpffs is private to this process, so the pins and attachments vanish \
             when netd exits; use `nsenter --net=/run/netns/NAME` instead"
        );
    }
    let layout = PinLayout::new(&config.pin_path);
    let _lock = PinLock::acquire(&layout)?;

    let listener = metrics::bind(config.metrics_addr)
        .await
        .with_context(|| format!("cannot serve metrics on {}", config.metrics_addr))?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let mut datapath = Datapath::load(&layout, logging::bpf_log_level(log_level))?;
    logging::forward_bpf_logs(datapath.ebpf_mut());
    let attached = uplink::attach_uplinks(&mut datapath, &config.uplinks)?;
    if attached.is_empty() {
        info!("no uplink configured: serving this host only");
    }
    for a in &attached {
        info!(uplink = %a.ifname, mode = a.mode, replaced = a.replaced, "XDP attached");
    }
    let counters = datapath.take_counters()?;

    info!(
        pin_path = %config.pin_path.display(),
        metrics = %format!("http://{}/metrics", config.metrics_addr),
        "netd running"
    );
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM: stopping"),
            _ = interrupt.recv() => info!("SIGINT: stopping"),
        }
    };
    metrics::serve(listener, counters, shutdown).await?;
    info!(
        pin_path = %config.pin_path.display(),
        "stopped; programs stay attached (netd teardown removes them)"
    );
    Ok(())
}

/// `netd teardown`: detach everything and remove the pins.
pub fn teardown(layout: &PinLayout) -> anyhow::Result<()> {
    system::require_root()?;
    if !layout.root().exists() {
        info!(pin_path = %layout.root().display(), "nothing pinned there");
        return Ok(());
    }
    let lock = PinLock::acquire(layout)?;
    let removed = loader::remove_pins(layout)
        .with_context(|| format!("removing pins under {}", layout.root().display()))?;
    drop(lock);
    std::fs::remove_dir(layout.root())
        .with_context(|| format!("removing {}", layout.root().display()))?;
    info!(removed = removed.len(), pin_path = %layout.root().display(), "netd removed");
    Ok(())
}
