//! New connections per second and request/response latency to each
//! backend, and the XDP paths' cost per packet.

use super::*;

#[derive(Serialize)]
pub(super) struct Connections {
    pub(super) system: System,
    /// "local" (on the ingress host) or "remote" (on host 1).
    pub(super) backend: &'static str,
    pub(super) connections_per_sec: f64,
    pub(super) rr_p50_us: f64,
    pub(super) rr_p99_us: f64,
}

pub(super) fn connections(w: &World, args: &Args) -> anyhow::Result<Vec<Connections>> {
    let mut out = Vec::new();
    for (backend, port) in [("local", LOCAL), ("remote", REMOTE)] {
        let addr: SocketAddr = format!("{}:{port}", host_address(0)).parse()?;
        eprintln!("{}: connections to a {backend} backend", w.system.name());
        let rate = median_rate(
            &w.client,
            addr,
            args.conn_seconds,
            args.threads,
            args.rounds,
        )?;
        let mut rr = round_trips(&w.client, addr, args.round_trips)?;
        rr.sort_by(|a, b| a.total_cmp(b));
        out.push(Connections {
            system: w.system,
            backend,
            connections_per_sec: rate,
            rr_p50_us: percentile(&rr, 0.5),
            rr_p99_us: percentile(&rr, 0.99),
        });
    }
    Ok(out)
}

/// Each path timed one run at a time (the mesh rewrites the packet, so a
/// repeated run would time another path), interleaved with the XDP no-op
/// run the same way. A new flow is a SYN from a port not seen before; an
/// established one the ACK of a flow already tracked.
pub(super) fn path_costs(runs: usize) -> anyhow::Result<Vec<PathCost>> {
    let mut local = published_fixture(o::B_IP, 1);
    local.load_baselines();
    let mut tunnel = published_fixture(o::A_IP, 1);
    let underlay = Underlay::new(&mut tunnel);
    let established = segment_to(PUBLISHED, 9999, false);
    for (f, want, what) in [(&mut local, 4, "local DNAT"), (&mut tunnel, 4, "tunnel")] {
        let run = underlay.run(|| f.run_xdp(XDP_UPLINK, &segment_to(PUBLISHED, 9999, true)))?;
        if run.verdict != want {
            bail!(
                "the {what} path did not take the flow (verdict {})",
                run.verdict
            );
        }
    }
    let mut samples: [Vec<f64>; 5] = Default::default();
    underlay.run(|| {
        for i in 0..runs {
            let fresh = segment_to(PUBLISHED, 10_000 + (i % 50_000) as u16, true);
            samples[0].push(local.time_xdp(XDP_BASELINE, &established, 1));
            samples[1].push(local.time_xdp(XDP_UPLINK, &fresh, 1));
            samples[2].push(local.time_xdp(XDP_UPLINK, &established, 1));
            samples[3].push(tunnel.time_xdp(XDP_UPLINK, &fresh, 1));
            samples[4].push(tunnel.time_xdp(XDP_UPLINK, &established, 1));
        }
    });
    let names = [
        "xdp no-op (single runs)",
        "mesh DNAT to a local backend, new flow",
        "mesh DNAT to a local backend, established",
        "mesh tunnel to a remote backend, new flow",
        "mesh tunnel to a remote backend, established",
    ];
    let noop = median(&samples[0]);
    Ok(names
        .into_iter()
        .zip(samples)
        .map(|(path, v)| PathCost::of(path, v, noop))
        .collect())
}
