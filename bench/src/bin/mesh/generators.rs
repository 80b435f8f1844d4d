//! The packet generators (trafgen from the client, BPF_PROG_TEST_RUN
//! live frames into the uplink) and the packet rate each gets through.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(super) enum Generator {
    /// trafgen from netsniff-ng on the client: AF_PACKET, one packet per
    /// send, about 0.35 Mpps on one core of this VM.
    Trafgen,
    /// BPF_PROG_TEST_RUN live frames of an XDP_TX program on host 0's
    /// uplink's peer, the facility xdp-trafficgen drives (xdp-tools
    /// 1.3.1's xdp-trafficgen does not load on this kernel: its
    /// xdp_redirect_map_err tracepoint is gone). Fast enough to saturate
    /// the path.
    LiveFrames,
}

#[derive(Serialize)]
pub(super) struct PacketRate {
    pub(super) system: System,
    pub(super) generator: Generator,
    pub(super) seconds: u64,
    /// What the generator offered.
    pub(super) sent_pps: f64,
    /// What reached the container's `eth0`.
    pub(super) delivered_pps: f64,
    /// CPU 0 busy with the traffic: its busy share minus the share it had
    /// without traffic.
    pub(super) path_cpu_share: f64,
    pub(super) idle_cpu_share: f64,
    /// Packets delivered per busy second of one core.
    pub(super) mpps_per_core: f64,
}

/// The 64-byte UDP packet of flow `i` (of 64) from the client to host 0's
/// published `SINK` port.
pub(super) fn sink_packet(w: &World, flow: u16) -> anyhow::Result<Vec<u8>> {
    let ip = |s: &str| -> anyhow::Result<[u8; 4]> { Ok(s.parse::<std::net::Ipv4Addr>()?.octets()) };
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(w.client.mac("uplink0"), w.ingress().mac("uplink0"))
        .ipv4(ip(CLIENT)?, ip(&host_address(0))?, 64)
        .udp(10_000 + flow % 64, SINK)
        .write(&mut out, &[0x41; 22])?;
    Ok(out)
}

/// The same packets, as trafgen's configuration (it writes the lengths and
/// checksums).
pub(super) fn trafgen_config(w: &World) -> anyhow::Result<tempfile::NamedTempFile> {
    let text = |mac: [u8; 6]| {
        mac.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let config = format!(
        "cpu({GENERATOR_CPU}): {{ eth(da={}, sa={}), ipv4(saddr={CLIENT}, daddr={}, ttl=64), \
         udp(sp=dinc(10000, 10063), dp={SINK}), fill(0x41, 22) }}\n",
        text(w.ingress().mac("uplink0")),
        text(w.client.mac("uplink0")),
        host_address(0),
    );
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), config)?;
    Ok(file)
}

/// 64 UDP flows of 60-byte packets to host 0's published `SINK` port for
/// `seconds`, from `generator`.
pub(super) fn packet_rate(
    w: &World,
    seconds: u64,
    generator: Generator,
) -> anyhow::Result<PacketRate> {
    // The neighbours and the underlay bridge learn both ends.
    let ping = w
        .client
        .exec("ping", &["-c", "2", "-i", "0.2", &host_address(0)]);
    if !ping.status.success() {
        bail!("the client cannot ping host 0");
    }
    let offered = Arc::new(AtomicU64::new(0));
    let sent = || -> anyhow::Result<u64> {
        match generator {
            Generator::Trafgen => link_packets(&w.client, "uplink0", "tx"),
            Generator::LiveFrames => Ok(offered.load(Ordering::Relaxed)),
        }
    };
    let quiet = read_counters(w, sent()?)?;
    std::thread::sleep(Duration::from_secs(2));
    let idle = busy_fraction(&quiet, &read_counters(w, sent()?)?);
    let run_for = Duration::from_secs(seconds) + Duration::from_millis(2500);
    let (a, b) = std::thread::scope(|scope| -> anyhow::Result<(Reading, Reading)> {
        let generating = match generator {
            Generator::Trafgen => {
                let config = trafgen_config(w)?;
                scope.spawn(move || trafgen_for(w, &config, run_for))
            }
            Generator::LiveFrames => {
                let packets = (0..64)
                    .map(|i| {
                        let packet = sink_packet(w, i)?;
                        Ok(BenchFrame(packet.as_slice().try_into()?))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let offered = offered.clone();
                let underlay = &w.underlay;
                let peer = uplink_peer(w.ingress())?;
                scope.spawn(move || live_frames(underlay, peer, &packets, run_for, &offered))
            }
        };
        std::thread::sleep(Duration::from_millis(1500));
        let a = read_counters(w, sent()?)?;
        std::thread::sleep(Duration::from_secs(seconds));
        let b = read_counters(w, sent()?)?;
        generating
            .join()
            .map_err(|_| anyhow::anyhow!("the generator panicked"))??;
        Ok((a, b))
    })?;
    let secs = seconds as f64;
    let delivered_pps = (b.delivered - a.delivered) as f64 / secs;
    if delivered_pps < 1000.0 {
        bail!(
            "{} with {generator:?}: only {delivered_pps:.0} packets/s reached the container",
            w.system.name()
        );
    }
    let share = (busy_fraction(&a, &b) - idle).max(0.01);
    Ok(PacketRate {
        system: w.system,
        generator,
        seconds,
        sent_pps: (b.sent - a.sent) as f64 / secs,
        delivered_pps,
        path_cpu_share: share,
        idle_cpu_share: idle,
        mpps_per_core: delivered_pps / share / 1e6,
    })
}

/// trafgen from the client's uplink0 for `run_for`.
pub(super) fn trafgen_for(
    w: &World,
    config: &tempfile::NamedTempFile,
    run_for: Duration,
) -> anyhow::Result<()> {
    netd_bench::trafgen_for(&w.client, "uplink0", config.path(), run_for)
}

/// The ifindex, in the underlay, of the other end of `host`'s uplink.
pub(super) fn uplink_peer(host: &NetNs) -> anyhow::Result<u32> {
    netd_bench::veth_peer(host, "uplink0")
}

/// From a thread in the underlay pinned to [`GENERATOR_CPU`]: `packets`
/// as live frames bounced out of the underlay's end of host 0's uplink, so
/// they arrive on host 0's uplink as from a wire.
pub(super) fn live_frames(
    underlay: &NetNs,
    peer: u32,
    packets: &[BenchFrame],
    run_for: Duration,
    offered: &AtomicU64,
) -> anyhow::Result<()> {
    netd_bench::live_frames(underlay, peer, GENERATOR_CPU, packets, run_for, offered)
}
