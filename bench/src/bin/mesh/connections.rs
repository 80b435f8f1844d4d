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
    let mut costs = hook_costs(runs, Hook::Xdp)?;
    costs.extend(hook_costs(runs, Hook::Tc)?);
    Ok(costs)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Xdp,
    Tc,
}

/// The mesh's paths at one hook, beside that hook's do-nothing program.
fn hook_costs(runs: usize, hook: Hook) -> anyhow::Result<Vec<PathCost>> {
    let (uplink, baseline, redirect) = match hook {
        Hook::Xdp => (XDP_UPLINK, XDP_BASELINE, 4),
        Hook::Tc => (TC_UPLINK, TC_BASELINE, 7),
    };
    let time = |f: &mut Fixture, program: &str, packet: &[u8]| match hook {
        Hook::Xdp => f.time_xdp(program, packet, 1),
        Hook::Tc => f.time_tc(program, packet, 1),
    };
    let mut local = published_fixture(o::B_IP, 1);
    local.load_baselines();
    let mut tunnel = published_fixture(o::A_IP, 1);
    let underlay = Underlay::new(&mut tunnel);
    let established = segment_to(PUBLISHED, 9999, false);
    for (f, what) in [(&mut local, "local DNAT"), (&mut tunnel, "tunnel")] {
        let syn = segment_to(PUBLISHED, 9999, true);
        let run = underlay.run(|| match hook {
            Hook::Xdp => f.run_xdp(uplink, &syn),
            Hook::Tc => f.run_tc(uplink, &syn),
        })?;
        if run.verdict != redirect {
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
            samples[0].push(time(&mut local, baseline, &established));
            samples[1].push(time(&mut local, uplink, &fresh));
            samples[2].push(time(&mut local, uplink, &established));
            samples[3].push(time(&mut tunnel, uplink, &fresh));
            samples[4].push(time(&mut tunnel, uplink, &established));
        }
    });
    let names = match hook {
        Hook::Xdp => [
            "xdp no-op (single runs)",
            "xdp: mesh DNAT to a local backend, new flow",
            "xdp: mesh DNAT to a local backend, established",
            "xdp: mesh tunnel to a remote backend, new flow",
            "xdp: mesh tunnel to a remote backend, established",
        ],
        Hook::Tc => [
            "tc no-op (single runs)",
            "tc: mesh DNAT to a local backend, new flow",
            "tc: mesh DNAT to a local backend, established",
            "tc: mesh tunnel to a remote backend, new flow",
            "tc: mesh tunnel to a remote backend, established",
        ],
    };
    let noop = median(&samples[0]);
    Ok(names
        .into_iter()
        .zip(samples)
        .map(|(path, v)| PathCost::of(path, v, noop))
        .collect())
}
