//! `netd run`: load, attach, reconcile the store into the kernel, serve
//! the control API and metrics, stop on SIGINT/SIGTERM.
//!
//! Stopping leaves the pinned programs, maps and links in place, so
//! forwarding goes on while netd is down or restarting; `netd teardown`
//! removes them.

use std::{net::Ipv4Addr, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::broadcast::error::RecvError,
};
use tracing::{info, warn};

use crate::{
    agent::Agent,
    api,
    config::{RunConfig, StoreSpec},
    control::{Control, Limits, PREFIX},
    dataplane::{
        conntrack::ConntrackConfig, loader, owner, tables::Sizes, upgrade::Upgrade, uplink,
        Datapath, PinLayout, PinLock,
    },
    logging::{self, chain},
    metrics::{self, Metrics},
    plugin,
    store::{EmbeddedStore, EtcdStore, Store, WatchEvent},
    system,
};
use netd_common::maps::{OverlayConfig, LAYOUT_VERSION, VXLAN_OVERHEAD};

/// A full pass even without changes: repairs what someone else broke
/// (a deleted veth, a planted map entry).
const RESYNC_EVERY: Duration = Duration::from_secs(30);

pub async fn run(config: RunConfig) -> anyhow::Result<()> {
    system::require_root()?;
    for name in &config.uplinks {
        system::ifindex(name).context("checking --uplink")?;
    }
    // Checked before anything is pinned, loaded or attached.
    let publish = publish_addresses(&config).await?;
    let egress = egress(&config).await?;
    if system::ensure_bpffs(&config.pin_path)? {
        warn!(
            "mounted bpffs on /sys/fs/bpf: none was there. Under `ip netns exec` (which remounts \
             /sys) that bpffs is private to this process, so the pins and attachments vanish \
             when netd exits; use `nsenter --net=/run/netns/NAME` instead"
        );
    }
    let layout = PinLayout::new(&config.pin_path);
    let _lock = PinLock::acquire(&layout)?;

    match &config.store {
        StoreSpec::Embedded => {
            let store = EmbeddedStore::open(&config.state_dir)
                .with_context(|| format!("opening the store in {}", config.state_dir.display()))?;
            serve(store, &config, &layout, publish, egress.clone()).await
        }
        StoreSpec::Etcd(endpoints) => {
            let store = EtcdStore::connect(endpoints, PREFIX)
                .await
                .context("connecting to etcd")?;
            info!(etcd = %endpoints.join(","), "cluster state in etcd");
            serve(store, &config, &layout, publish, egress.clone()).await
        }
    }
}

async fn serve<S: Store>(
    store: S,
    config: &RunConfig,
    layout: &PinLayout,
    publish: Vec<std::net::Ipv4Addr>,
    egress: Egress,
) -> anyhow::Result<()> {
    let metrics_listener = metrics::bind(config.metrics_addr)
        .await
        .with_context(|| format!("cannot serve metrics on {}", config.metrics_addr))?;
    let api_listener = api::bind(&config.socket, api::SOCKET_FIX).await?;
    let plugin_listener = match &config.docker_plugin_socket {
        Some(path) => Some(plugin::bind(path).await?),
        None => None,
    };
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let sizes = Sizes {
        conntrack: config.conntrack.max_entries,
        endpoints: config.max_endpoints,
        hosts: config.max_hosts,
    };
    // Admission checks requests against the maps this host runs with.
    let control =
        Arc::new(Control::on_host(store, &config.host_name).with_limits(Limits::of(&sizes)));
    let cluster_id = control
        .cluster_id()
        .await
        .context("reading the store's id")?;
    let mut datapath = load_keeping_state(layout, &cluster_id, &sizes)?;
    datapath.write_meta(&owner::meta_for(&cluster_id))?;
    // Before the uplinks' programs run: an upgrade's new program must find
    // the addresses its ports are published on.
    datapath.write_publish_addresses(&publish)?;
    datapath.write_egress(egress.config, &egress.ifindexes)?;
    let attached = uplink::attach_uplinks(
        &mut datapath,
        &uplink_facts(config, &egress.host.devices).await?,
        config.uplink_mode,
    )?;
    if attached.is_empty() {
        info!("no uplink configured: serving this host only");
    }
    for a in &attached {
        info!(uplink = %a.ifname, hook = %a.hook, why = %a.why, replaced = a.replaced, "uplink attached");
    }
    attach_host_local(&mut datapath);
    let counters = datapath.take_counters()?;
    let metrics = Arc::new(Metrics::new()?);

    // VXLAN needs an address to send from and an uplink to send through.
    let underlay = underlay(config, &attached).await?;
    if !publish.is_empty() {
        info!(
            addresses = %publish.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            "published ports are taken on these addresses"
        );
    }
    let agent = Arc::new(
        Agent::new(
            control,
            &cluster_id,
            datapath,
            metrics.clone(),
            underlay.overlay,
            underlay.overlay_mtu,
            Duration::from_secs(config.host_grace),
        )?
        .with_uplinks(attached)
        .with_publish_addresses(publish.clone())
        .with_egress(egress.host.clone()),
    );
    // Watch before the first pass, so a change committed during it is seen.
    let events = agent.control().watch();
    let me = crate::model::Host {
        name: config.host_name.clone(),
        underlay_ip: underlay.ip,
        external: false,
        index: 0,
        alive: true,
    };
    let me = agent
        .control()
        .join(&me)
        .await
        .context("joining the cluster")?;
    info!(host = %me.name, index = me.index, "member of the cluster");
    let report = agent.reconcile().await.context("first reconcile")?;
    info!(
        map_writes = report.map_writes,
        links_created = report.links_created,
        links_removed = report.links_removed,
        failures = report.failures.len(),
        "converged to the store"
    );
    let follower = tokio::spawn(follow_store(agent.clone(), events, report.next_expiry));
    let ring_reader = tokio::spawn(agent.monitor().read_ring());
    let dns = config.dns.as_ref().map(|dns| {
        let upstreams = if dns.upstreams.is_empty() {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            crate::dns::upstream::from_resolv_conf(&text)
        } else {
            dns.upstreams.clone()
        };
        if upstreams.is_empty() {
            warn!("DNS: no upstream resolver (none in /etc/resolv.conf, no --dns-upstream): names netd does not have get SERVFAIL");
        }
        tokio::spawn(crate::dns::server::serve(agent.names(), upstreams))
    });
    let registration = tokio::spawn(agent.control().keep_registered(&me, config.host_lease_ttl));
    let nat_drops = crate::dataplane::CountersReader::open_pinned(
        &layout.map(netd_common::map_names::NETD_COUNTERS),
    )
    .map_err(|e| warn!(error = %chain(&e), "masquerading's drops will not be logged"))
    .ok();
    let sweeper = tokio::spawn(sweep_conntrack(agent.clone(), config.conntrack, nat_drops));

    info!(
        pin_path = %config.pin_path.display(),
        socket = %config.socket.display(),
        docker_plugin = %config
            .docker_plugin_socket
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "off".into()),
        metrics = %format!("http://{}/metrics", config.metrics_addr),
        "netd running"
    );
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut stop_api = stop_tx.subscribe();
    let api_server =
        axum::serve(api_listener, api::router(agent.clone())).with_graceful_shutdown(async move {
            let _ = stop_api.recv().await;
        });
    let mut stop_plugin = stop_tx.subscribe();
    let plugin_agent = agent.clone();
    let docker_api_socket = config.docker_api_socket.clone();
    let plugin_server = async move {
        match plugin_listener {
            Some(listener) => {
                axum::serve(
                    listener,
                    plugin::router(plugin_agent, Some(docker_api_socket)),
                )
                .with_graceful_shutdown(async move {
                    let _ = stop_plugin.recv().await;
                })
                .await
            }
            None => Ok(()),
        }
    };
    let mut stop_metrics = stop_tx.subscribe();
    let metrics_server = metrics::serve(
        metrics_listener,
        metrics,
        counters,
        agent.traffic(),
        agent.monitor(),
        async move {
            let _ = stop_metrics.recv().await;
        },
    );
    let signals = async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM: stopping"),
            _ = interrupt.recv() => info!("SIGINT: stopping"),
        }
        let _ = stop_tx.send(());
    };
    let (api_result, plugin_result, metrics_result, ()) =
        tokio::join!(api_server, plugin_server, metrics_server, signals);
    follower.abort();
    ring_reader.abort();
    if let Some(dns) = dns {
        dns.abort();
    }
    registration.abort();
    sweeper.abort();
    // A clean stop says so at once instead of leaving the lease to run out.
    match tokio::time::timeout(Duration::from_secs(2), agent.control().unregister(&me.name)).await {
        Ok(Ok(())) => info!(host = %me.name, "registration ended"),
        Ok(Err(e)) => {
            warn!(error = %chain(&e), "cannot end the registration; it ends with its lease")
        }
        Err(_) => warn!("the store did not answer; the registration ends with its lease"),
    }
    api_result.context("control API")?;
    plugin_result.context("Docker plugin")?;
    metrics_result.context("metrics")?;
    let _ = std::fs::remove_file(&config.socket);
    if let Some(path) = &config.docker_plugin_socket {
        let _ = std::fs::remove_file(path);
    }
    info!(
        pin_path = %config.pin_path.display(),
        "stopped; programs stay attached (netd teardown removes them)"
    );
    Ok(())
}

/// Loads the object over the pinned maps: checks first that they are this
/// store's and what each holds, carries over what has another shape,
/// refuses what cannot be (nothing changed).
fn load_keeping_state(
    layout: &PinLayout,
    cluster_id: &str,
    sizes: &Sizes,
) -> anyhow::Result<Datapath> {
    let upgrade = Upgrade::check(layout, cluster_id, sizes)?;
    if let Some(from) = upgrade.from_layout.filter(|l| *l != LAYOUT_VERSION) {
        info!(
            from,
            to = LAYOUT_VERSION,
            carried = upgrade.carried.len(),
            "upgrading the pinned maps"
        );
    }
    upgrade.set_aside(layout)?;
    let datapath = match Datapath::load_sized(layout, sizes) {
        Ok(datapath) => datapath,
        Err(e) => {
            upgrade.restore(layout);
            return Err(e.into());
        }
    };
    upgrade.finish(layout)?;
    Ok(datapath)
}

/// The addresses published ports are taken on: `--publish-address`, each
/// of which must be an address of an uplink (the uplink's program is where
/// packets to it are seen), or every IPv4 address of every uplink.
async fn publish_addresses(config: &RunConfig) -> anyhow::Result<Vec<std::net::Ipv4Addr>> {
    let links = crate::netlink::Netlink::here()?;
    let mut on_uplinks = Vec::new();
    for uplink in &config.uplinks {
        for ip in links
            .ipv4s(uplink)
            .await
            .with_context(|| format!("reading the addresses of uplink {uplink}"))?
        {
            on_uplinks.push((uplink.as_str(), ip));
        }
    }
    if config.publish_addresses.is_empty() {
        return Ok(on_uplinks.into_iter().map(|(_, ip)| ip).collect());
    }
    for wanted in &config.publish_addresses {
        if !on_uplinks.iter().any(|(_, ip)| ip == wanted) {
            let known = on_uplinks
                .iter()
                .map(|(uplink, ip)| format!("{uplink} {ip}"))
                .collect::<Vec<_>>()
                .join(", ");
            anyhow::bail!(
                "--publish-address {wanted} is no address of an uplink ({}): published ports \
                 are taken where the uplinks' program sees them",
                if known.is_empty() {
                    "there is no --uplink".to_string()
                } else {
                    known
                }
            );
        }
    }
    Ok(config.publish_addresses.clone())
}

/// What each uplink is, for the choice of its hook: the uplinks, then
/// the egress devices that are not one (they get the same program, for
/// masqueraded flows' replies).
async fn uplink_facts(
    config: &RunConfig,
    egress_devices: &[String],
) -> anyhow::Result<Vec<uplink::UplinkFacts>> {
    let links = crate::netlink::Netlink::here()?;
    let mut facts = Vec::with_capacity(config.uplinks.len());
    let extra = egress_devices
        .iter()
        .filter(|d| !config.uplinks.contains(d));
    for ifname in config.uplinks.iter().chain(extra) {
        // The error a user knows for a name that is not there.
        crate::system::ifindex(ifname)?;
        facts.push(uplink::UplinkFacts {
            ifname: ifname.clone(),
            veth: links.is_veth(ifname).await?,
        });
    }
    Ok(facts)
}

/// Masquerading's side of this host, settled before anything is attached.
#[derive(Clone)]
struct Egress {
    host: crate::dataplane::egress::HostEgress,
    config: netd_common::masquerade::MasqConfig,
    ifindexes: Vec<u32>,
}

/// The devices masqueraded flows leave by and the ports they get: a
/// named device that is not there, or a range that overlaps the host's
/// own, stops the start.
async fn egress(config: &RunConfig) -> anyhow::Result<Egress> {
    use crate::dataplane::egress;
    let links = crate::netlink::Netlink::here()?;
    let mut routes = Vec::new();
    if config.egress_devices == egress::EgressDevices::Auto {
        for index in links.default_route_devices().await? {
            if let Some(name) = links.name_of(index).await? {
                routes.push(name);
            }
        }
    }
    let devices = egress::devices(&config.egress_devices, &config.uplinks, &routes);
    let mut ifindexes = Vec::with_capacity(devices.len());
    let mut max_mtu: Option<u32> = None;
    for name in &devices {
        ifindexes.push(system::ifindex(name).context("checking --egress-device")?);
        let mtu = links.mtu(name).await?;
        max_mtu = Some(max_mtu.map_or(mtu, |m| m.min(mtu)));
    }
    let host_ports = egress::host_ephemeral_ports()?;
    let ports = egress::masquerade_ports(config.masquerade_ports, host_ports)?;
    if devices.is_empty() {
        info!("masquerading: no egress device (none given, no default route): networks' packets to the world are routed by the host as they are");
    } else {
        info!(
            devices = %devices.join(","),
            ports = %ports,
            host_ports = %host_ports,
            "masquerading out of these devices, on source ports outside the host's own"
        );
    }
    Ok(Egress {
        host: egress::HostEgress {
            devices,
            ports: Some(ports),
            no_masquerade: config.no_masquerade.clone(),
            max_mtu,
        },
        config: netd_common::masquerade::MasqConfig {
            port_min: ports.min,
            port_max: ports.max,
            _pad: 0,
        },
        ifindexes,
    })
}

/// This host's side of VXLAN.
struct Underlay {
    /// The address other hosts send VXLAN to: `--underlay-ip`, or the
    /// first uplink's.
    ip: Option<Ipv4Addr>,
    /// What the programs need to encapsulate: all zero without an uplink
    /// or an address.
    overlay: OverlayConfig,
    /// Endpoint MTU on overlay networks: 50 bytes under the uplink's.
    overlay_mtu: u32,
}

/// The routing mesh's XDP tunnel asks the kernel's FIB for the next hop
/// toward a backend's host, and the kernel answers only for an interface
/// with IPv4 forwarding on (`bpf_fib_lookup` checks it even for output
/// lookups). Docker turns forwarding on for the whole host; netd turns it
/// on for the uplink only, and says so.
fn enable_forwarding_lookups(uplink: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{uplink}/forwarding");
    let now = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    if now.trim() != "1" {
        std::fs::write(&path, "1").with_context(|| format!("writing 1 to {path}"))?;
        info!(%uplink, "IPv4 forwarding turned on for the uplink (the routing mesh's FIB lookups need it)");
    }
    Ok(())
}

async fn underlay(
    config: &RunConfig,
    attached: &[uplink::UplinkAttachment],
) -> anyhow::Result<Underlay> {
    let Some(uplink) = config.uplinks.first() else {
        return Ok(Underlay {
            ip: config.underlay_ip,
            overlay: OverlayConfig::default(),
            overlay_mtu: crate::agent::ENDPOINT_MTU - VXLAN_OVERHEAD,
        });
    };
    let links = crate::netlink::Netlink::here()?;
    let overlay_mtu = links.mtu(uplink).await? - VXLAN_OVERHEAD;
    let ip = match config.underlay_ip {
        Some(ip) => Some(ip),
        None => links
            .first_ipv4(uplink)
            .await
            .with_context(|| format!("reading the address of uplink {uplink}"))?,
    };
    let Some(address) = ip else {
        return Ok(Underlay {
            ip,
            overlay: OverlayConfig::default(),
            overlay_mtu,
        });
    };
    // A veth made to act like a NIC (its hook XDP, which sees neither
    // partial checksums nor the skb) finishes its checksums on transmit
    // as a NIC would, for its peers' XDP. At TC every receiver takes a
    // partial checksum, and the veth keeps its offloads (TSO with them:
    // without, every segment is made and summed in software, which halved
    // a container's TCP throughput to the outside).
    let at_xdp = attached
        .iter()
        .any(|a| &a.ifname == uplink && a.hook.starts_with("xdp"));
    if at_xdp && links.is_veth(uplink).await? {
        crate::netlink::finish_checksums_on_transmit(Path::new("/proc/self/ns/net"), uplink)
            .with_context(|| format!("turning transmit checksum offload off on {uplink}"))?;
        info!(%uplink, "a veth uplink at XDP: checksums are finished on transmit, as a NIC would");
    }
    enable_forwarding_lookups(uplink)?;
    Ok(Underlay {
        ip,
        overlay: OverlayConfig {
            underlay: address.octets(),
            uplink_ifindex: system::ifindex(uplink)?,
        },
        overlay_mtu,
    })
}

/// How often idle conntrack entries are looked for: well under the
/// shortest timeout, and one map walk costs little at the default size.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

async fn sweep_conntrack<S: Store>(
    agent: Arc<Agent<S>>,
    timeouts: ConntrackConfig,
    nat_drops: Option<crate::dataplane::CountersReader>,
) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    let mut dropped = NatDrops::default();
    loop {
        tick.tick().await;
        if let Some(counters) = &nat_drops {
            dropped.log_growth(counters);
        }
        let sweep = agent.sweep_conntrack(&timeouts).await;
        agent.publish_sweep(&sweep).await;
        let swept = &sweep.swept;
        if swept.expired + swept.orphans > 0 {
            tracing::debug!(
                expired = swept.expired,
                orphans = swept.orphans,
                live = swept.live,
                "conntrack swept"
            );
        }
        let mesh = &sweep.mesh;
        if mesh.neighbours.0 + mesh.returns.0 + mesh.sockets.0 > 0 {
            tracing::debug!(
                neighbours = mesh.neighbours.0,
                returns = mesh.returns.0,
                sockets = mesh.sockets.0,
                "the routing mesh's idle entries swept"
            );
        }
    }
}

/// Masquerading's drops of new flows, as last logged: a log line each
/// sweep they grew in.
#[derive(Default)]
struct NatDrops {
    table_full: Option<u64>,
    ports_exhausted: Option<u64>,
}

impl NatDrops {
    fn log_growth(&mut self, counters: &crate::dataplane::CountersReader) {
        use netd_common::counters::{DropReason, Hook};
        let Ok(now) = counters.snapshot() else {
            return;
        };
        let full = now
            .drops(Hook::TcEndpoint, DropReason::NatTableFull)
            .packets;
        let exhausted = now
            .drops(Hook::TcEndpoint, DropReason::NatPortsExhausted)
            .packets;
        if let Some(before) = self.table_full.filter(|b| full > *b) {
            warn!(
                dropped = full - before,
                "masquerading's NAT table is full: new flows to the world were dropped \
                 (established ones go on); raise --conntrack-max-entries"
            );
        }
        if let Some(before) = self.ports_exhausted.filter(|b| exhausted > *b) {
            warn!(
                dropped = exhausted - before,
                "masquerading found no free source port toward a destination: new flows were \
                 dropped (established ones go on); widen --masquerade-ports or add egress addresses"
            );
        }
        self.table_full = Some(full);
        self.ports_exhausted = Some(exhausted);
    }
}

/// Reconciles on every store change under netd's prefix and every
/// RESYNC_EVERY; a lagging watch just triggers a full pass.
async fn follow_store<S: Store>(
    agent: Arc<Agent<S>>,
    mut events: tokio::sync::broadcast::Receiver<WatchEvent>,
    mut next_expiry: Option<std::time::Instant>,
) {
    let mut tick = tokio::time::interval(RESYNC_EVERY);
    tick.tick().await;
    loop {
        // A host's grace period ending is a change nobody writes.
        let expiry = async {
            match next_expiry {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        // The resync reads the maps back from the kernel (and repairs what
        // someone else changed); a change diffs against the last pass.
        let (changed, resync) = tokio::select! {
            event = events.recv() => match event {
                Ok(WatchEvent::Put { key, .. } | WatchEvent::Delete { key, .. }) => (key.starts_with(PREFIX), false),
                Err(RecvError::Lagged(_)) => (true, false),
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => (true, true),
            () = expiry => (true, false),
        };
        if changed {
            // One transaction is several events: take them all, then one pass.
            while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                events.try_recv()
            {}
            let pass = if resync {
                agent.reconcile().await
            } else {
                agent.reconcile_change().await
            };
            match pass {
                Ok(report) => next_expiry = report.next_expiry,
                Err(e) => {
                    warn!(error = %chain(&e), "reconcile failed; retrying at the next change or resync")
                }
            }
        }
    }
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

/// Published ports for the host's own connections. Without a cgroup2
/// hierarchy (or with a kernel that refuses the hook) they still work
/// from everywhere else, so this warns instead of failing the start.
fn attach_host_local(datapath: &mut crate::dataplane::Datapath) {
    use crate::dataplane::host_local;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let Some(root) = host_local::cgroup2_root(&mounts) else {
        warn!("no cgroup2 hierarchy is mounted: this host's own connections to published ports are not balanced (other hosts and clients are)");
        return;
    };
    match host_local::attach(datapath, &root) {
        Ok(replaced) => {
            info!(cgroup = %root.display(), replaced, "published ports reachable from this host itself")
        }
        Err(e) => {
            warn!(error = %logging::chain(&e), "this host's own connections to published ports are not balanced")
        }
    }
}
