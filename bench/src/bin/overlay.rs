//! Two hosts joined by an overlay network, measured in one run:
//! - cross-host TCP throughput (iperf3) and request/response latency through
//!   netd's VXLAN in BPF versus kernel VXLAN devices and bridges on the same
//!   simulated underlay (the way Docker's overlay driver builds it);
//! - ns/packet of netd's encap (TC) and decap (XDP) beside the do-nothing
//!   programs, each timed one run at a time because both rewrite the
//!   packet (a repeated run would measure a different path);
//! - convergence: an endpoint created on one host until its first reply
//!   to a ping from the other, over many trials.

use std::{
    net::{Ipv4Addr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::Parser;
use netd_bench::{
    measure, median, percentile, print_comparison, print_path_costs, Pair, PathCost, Setup,
};
use netd_common::program_names::{TC_BASELINE, TC_ENDPOINT, XDP_BASELINE, XDP_UPLINK};
use netd_tests::{
    cluster::{cluster, kernel_vxlan_bridge, plug_into_underlay, uplink_acts_as_nic, Host},
    etcd::Etcd,
    netns::{sh, veth_between, NetNs},
    overlay_fixture::*,
};
use serde::Serialize;
use testpkt::{ipv4_udp_between, vxlan};

#[derive(Parser)]
struct Args {
    /// Seconds of iperf3 per setup.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Request/response round trips per setup.
    #[arg(long, default_value_t = 20_000)]
    round_trips: usize,
    /// Single program runs per path for the encap/decap costs.
    #[arg(long, default_value_t = 20_000)]
    runs: usize,
    /// Convergence trials (endpoint created → first reply).
    #[arg(long, default_value_t = 50)]
    trials: usize,
    #[arg(long, default_value = "target/bench/overlay.json")]
    json: PathBuf,
}

const KERNEL_VNI: &str = "42";
const ECHO_PORT: u16 = 7;

/// Two hosts on an underlay bridge, each with a kernel VXLAN device and a
/// bridge holding one sandbox; flooding to the other host by a static
/// all-zero FDB entry, MACs learned by the bridges.
fn kernel_vxlan_pair() -> (Pair, Vec<NetNs>) {
    let underlay = NetNs::new("bkU");
    underlay.ip(&["link", "add", "br0", "type", "bridge"]);
    underlay.ip(&["link", "set", "br0", "up"]);
    let mut keep = Vec::new();
    let mut sandboxes = Vec::new();
    for i in 0..2 {
        let host = NetNs::new("bkH");
        let me = format!("10.96.0.{}", i + 1);
        let other = format!("10.96.0.{}", 2 - i);
        plug_into_underlay(&underlay, &host, &me);
        // What netd does to its own veth uplink, so both setups pay alike.
        uplink_acts_as_nic(&host);
        kernel_vxlan_bridge(&host, KERNEL_VNI, &me, &other, "br0");
        let sandbox = NetNs::new("bkS");
        veth_between(
            &sandbox,
            "eth0",
            &format!("10.43.0.{}/24", i + 2),
            &host,
            "c0",
            "10.96.2.99/32",
        );
        sandbox.ip(&["link", "set", "eth0", "mtu", "1450"]);
        host.ip(&["addr", "flush", "dev", "c0"]);
        host.ip(&["link", "set", "c0", "master", "br0"]);
        keep.push(host);
        sandboxes.push(sandbox);
    }
    keep.push(underlay);
    let server = sandboxes.pop().expect("two sandboxes");
    let client = sandboxes.pop().expect("two sandboxes");
    (
        Pair {
            client,
            server,
            server_ip: "10.43.0.3".into(),
        },
        keep,
    )
}

/// netd on two hosts sharing an etcd; the client sandbox on host-0, the
/// server on host-1, on one overlay network.
struct NetdOverlay {
    pair: Pair,
    hosts: Vec<Host>,
    _etcd: Etcd,
    _underlay: NetNs,
}

fn netd_overlay() -> NetdOverlay {
    let (underlay, etcd, hosts) = cluster(2, |_| {
        vec!["--uplink=uplink0".into(), "--log-level=warn".into()]
    });
    hosts[0].netd.ok(&[
        "network",
        "create",
        "bench",
        "--overlay",
        "--subnet",
        "10.44.0.0/24",
    ]);
    let client = NetNs::new("bnC");
    let server = NetNs::new("bnS");
    hosts[0].endpoint("client", "bench", &client);
    let server_ip = hosts[1].endpoint("server", "bench", &server);
    NetdOverlay {
        pair: Pair {
            client,
            server,
            server_ip,
        },
        hosts,
        _etcd: etcd,
        _underlay: underlay,
    }
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Encap and decap timed one run at a time, interleaved with the
/// do-nothing programs run the same way.
fn program_costs(runs: usize) -> anyhow::Result<Vec<PathCost>> {
    let mut encap = encap_fixture();
    encap.load_baselines();
    let to_b = ipv4_udp_between(A_MAC, A_IP, HOST_MAC, B_IP);
    let run = encap.run_tc(TC_ENDPOINT, &to_b)?;
    if run.verdict != 7 || run.output.len() != to_b.len() + 50 {
        bail!(
            "the encap path did not encapsulate (verdict {})",
            run.verdict
        );
    }
    let mut decap = decap_fixture();
    let from_a = vxlan(
        PEER_UNDERLAY,
        HERE_UNDERLAY,
        VNI,
        0x08,
        &ipv4_udp_between(A_MAC, A_IP, B_MAC, B_IP),
    );
    let run = decap.run_xdp(XDP_UPLINK, &from_a)?;
    if run.verdict != 4 || run.output.len() + 50 != from_a.len() {
        bail!(
            "the decap path did not decapsulate (verdict {})",
            run.verdict
        );
    }
    let mut samples: [Vec<f64>; 4] = Default::default();
    for _ in 0..runs {
        samples[0].push(encap.time_tc(TC_BASELINE, &to_b, 1));
        samples[1].push(encap.time_tc(TC_ENDPOINT, &to_b, 1));
        samples[2].push(encap.time_xdp(XDP_BASELINE, &from_a, 1));
        samples[3].push(decap.time_xdp(XDP_UPLINK, &from_a, 1));
    }
    let [tc_noop, enc, xdp_noop, dec] = samples;
    let (tc0, xdp0) = (median(&tc_noop), median(&xdp_noop));
    Ok(vec![
        PathCost::of("tc no-op (single runs)", tc_noop, tc0),
        PathCost::of("tc encap to a remote endpoint", enc, tc0),
        PathCost::of("xdp no-op (single runs)", xdp_noop, xdp0),
        PathCost::of("xdp decap to a local endpoint", dec, xdp0),
    ])
}

#[derive(Serialize)]
struct Convergence {
    trials: usize,
    /// `netd endpoint create` on host-0 until it returned (link made,
    /// maps written there), included in the samples.
    create_call_p50_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Each trial: host-1's prober sends a UDP probe every millisecond to an
/// address that does not exist yet (errors while it is unknown are
/// ignored); the endpoint is created on host-0 with that address, in a
/// sandbox whose echo server is already waiting; the time until the first
/// echo is the sample.
fn convergence(o: &NetdOverlay, trials: usize) -> anyhow::Result<Convergence> {
    let (host0, host1) = (&o.hosts[0], &o.hosts[1]);
    let prober = NetNs::new("bnP");
    host1.endpoint("prober", "bench", &prober);
    // Retry an unanswered ARP every 10 ms, not every second.
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &prober.name,
            "sysctl",
            "-qw",
            "net.ipv4.neigh.eth0.retrans_time_ms=10",
        ],
    );
    let mut samples = Vec::with_capacity(trials);
    let mut create_call = Vec::with_capacity(trials);
    let mut sandboxes = Vec::new();
    for i in 0..trials {
        let sandbox = NetNs::new("bnT");
        let ip: Ipv4Addr = format!("10.44.0.{}", 100 + i).parse()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let echo = sandbox.run(move || -> std::io::Result<()> {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, ECHO_PORT))?;
            socket.set_read_timeout(Some(Duration::from_secs(15)))?;
            let _ = ready_tx.send(());
            let mut buf = [0u8; 16];
            let (n, from) = socket.recv_from(&mut buf)?;
            socket.send_to(&buf[..n], from)?;
            Ok(())
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("echo server")?;
        let probe = prober.run(move || -> std::io::Result<Option<Instant>> {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.connect((ip, ECHO_PORT))?;
            socket.set_read_timeout(Some(Duration::from_millis(1)))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut buf = [0u8; 16];
            while Instant::now() < deadline {
                // Unreachable / refused while the address is unknown: go on.
                let _ = socket.send(b"probe");
                if socket.recv(&mut buf).is_ok() {
                    return Ok(Some(Instant::now()));
                }
            }
            Ok(None)
        });
        let t = Instant::now();
        host0.netd.endpoint(
            &format!("t{i}"),
            "bench",
            &sandbox,
            &["--ip", &ip.to_string()],
        );
        let returned = t.elapsed();
        let answered = probe
            .join()
            .map_err(|_| anyhow::anyhow!("prober panicked"))??;
        let _ = echo.join();
        let Some(at) = answered else {
            bail!(
                "trial {i}: {ip} did not answer in 10 s; host-1's endpoints:\n{}",
                host1.netd.ok(&["endpoint", "ls"])
            );
        };
        samples.push(at.duration_since(t).as_secs_f64() * 1e3);
        create_call.push(returned.as_secs_f64() * 1e3);
        sandboxes.push(sandbox);
        if (i + 1) % 10 == 0 {
            eprintln!("convergence: {}/{trials} trials", i + 1);
        }
    }
    let samples = sorted(samples);
    let create_call = sorted(create_call);
    Ok(Convergence {
        trials,
        create_call_p50_ms: percentile(&create_call, 0.5),
        p50_ms: percentile(&samples, 0.5),
        p99_ms: percentile(&samples, 0.99),
        max_ms: samples.last().copied().unwrap_or(0.0),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sh("which", &["iperf3"]);

    let (pair, _kernel_world) = kernel_vxlan_pair();
    let kernel = measure("kernel vxlan+bridge", &pair, args.seconds, args.round_trips)?;
    drop(pair);
    drop(_kernel_world);

    let overlay = netd_overlay();
    let netd: Setup = measure("netd", &overlay.pair, args.seconds, args.round_trips)?;
    eprintln!("convergence: {} trials", args.trials);
    let converged = convergence(&overlay, args.trials)?;
    drop(overlay);

    eprintln!("encap/decap: {} single runs per path", args.runs);
    let costs = program_costs(args.runs)?;

    print_comparison("cross-host", &kernel, &netd);
    println!();
    print_path_costs(&costs);
    println!(
        "\nconvergence (created on host-0 -> first reply from host-1), {} trials: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (the create call itself: p50 {:.1} ms)",
        converged.trials, converged.p50_ms, converged.p99_ms, converged.max_ms, converged.create_call_p50_ms
    );
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let report = serde_json::json!({
        "cross_host": [&kernel, &netd],
        "programs": &costs,
        "convergence": &converged,
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", args.json.display());
    let mut charts = netd_bench::report::setup_charts(
        "cross-host",
        &[&kernel, &netd],
        &costs
            .iter()
            .map(|c| (c.path.to_string(), c.median_ns))
            .collect::<Vec<_>>(),
    );
    charts.push(netd_bench::report::Bars {
        title: format!("convergence over {} trials", converged.trials),
        unit: "ms",
        bars: vec![
            ("p50".into(), converged.p50_ms),
            ("p99".into(), converged.p99_ms),
            ("max".into(), converged.max_ms),
            ("create call p50".into(), converged.create_call_p50_ms),
        ],
    });
    netd_bench::report::write_html(
        &args.json.with_extension("html"),
        "netd overlay against kernel VXLAN and bridges",
        &[
            "Two hosts as namespaces on one underlay bridge, built in the same run.".into(),
            netd_bench::report::comparison_line(&kernel, &netd),
        ],
        &charts,
    )?;
    Ok(())
}
