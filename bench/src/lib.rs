//! What the bench binaries share: a pair of sandboxes and the traffic
//! measured between them (iperf3 throughput, request/response latency).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    process::Command,
    time::Duration,
};

pub mod connections;
pub mod cpu;
pub mod report;

use anyhow::{bail, Context};
use netd_tests::netns::NetNs;
use serde::Serialize;

#[derive(Serialize)]
pub struct Setup {
    pub name: &'static str,
    pub throughput_gbit_s: f64,
    pub rr_mean_us: f64,
    pub rr_p50_us: f64,
    pub rr_p99_us: f64,
}

/// Two sandboxes that can reach each other, and the server's address.
pub struct Pair {
    pub client: NetNs,
    pub server: NetNs,
    pub server_ip: String,
}

pub fn iperf3(pair: &Pair, seconds: u32) -> anyhow::Result<f64> {
    iperf3_between(&pair.client, &pair.server, &pair.server_ip, seconds)
}

/// Gbit/s from `client` to an iperf3 server in `server` at `server_ip`.
pub fn iperf3_between(
    client: &NetNs,
    server: &NetNs,
    server_ip: &str,
    seconds: u32,
) -> anyhow::Result<f64> {
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &server.name,
            "iperf3",
            "-s",
            "-1",
            "-B",
            server_ip,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("iperf3 server (is iperf3 installed? cargo xtask setup installs it)")?;
    std::thread::sleep(Duration::from_millis(500));
    let out = client.exec(
        "iperf3",
        &["-c", server_ip, "-t", &seconds.to_string(), "-J"],
    );
    let _ = server.wait();
    if !out.status.success() {
        bail!(
            "iperf3 client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .context("iperf3 report has no sum_received")
}

/// 1-byte request, 1-byte response over one TCP connection; µs per round trip.
pub fn request_response(pair: &Pair, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let addr: SocketAddr = format!("{}:5401", pair.server_ip).parse()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let server = pair.server.run(move || -> std::io::Result<()> {
        let listener = TcpListener::bind(addr)?;
        let _ = tx.send(());
        let (mut conn, _) = listener.accept()?;
        conn.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while conn.read_exact(&mut b).is_ok() {
            conn.write_all(&b)?;
        }
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(5))
        .context("rr server")?;
    let samples = connections::round_trips(&pair.client, addr, rounds)?;
    let _ = server.join();
    Ok(samples)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// A program path's cost from single runs (each its own BPF_PROG_TEST_RUN,
/// for paths that rewrite the packet), beside the do-nothing program of
/// its hook run the same way.
#[derive(Serialize)]
pub struct PathCost {
    pub path: &'static str,
    pub median_ns: f64,
    pub p99_ns: f64,
    /// Against the do-nothing program of the same hook, also run singly.
    pub ratio_to_noop: f64,
}

impl PathCost {
    /// `path`'s cost from `samples` (ns, in any order), against the
    /// no-op's median `noop_ns`.
    pub fn of(path: &'static str, mut samples: Vec<f64>, noop_ns: f64) -> Self {
        samples.sort_by(|a, b| a.total_cmp(b));
        let median_ns = percentile(&samples, 0.5);
        Self {
            path,
            median_ns,
            p99_ns: percentile(&samples, 0.99),
            ratio_to_noop: median_ns / noop_ns,
        }
    }
}

/// The median of `samples`, in any order.
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    percentile(&sorted, 0.5)
}

/// The table of [`PathCost`]s.
pub fn print_path_costs(costs: &[PathCost]) {
    let title = "program path (one run each)";
    let width = costs
        .iter()
        .map(|c| c.path.len())
        .fold(title.len(), usize::max);
    println!(
        "{title:<width$} {:>10} {:>10} {:>9}",
        "median ns", "p99 ns", "vs no-op"
    );
    for c in costs {
        println!(
            "{:<width$} {:>10.0} {:>10.0} {:>8.2}x",
            c.path, c.median_ns, c.p99_ns, c.ratio_to_noop
        );
    }
}

/// Throughput over `seconds` of iperf3, then `round_trips` request/response
/// round trips.
pub fn measure(
    name: &'static str,
    pair: &Pair,
    seconds: u32,
    round_trips: usize,
) -> anyhow::Result<Setup> {
    eprintln!("{name}: iperf3 {seconds} s");
    let throughput = iperf3(pair, seconds)?;
    eprintln!("{name}: {round_trips} request/response round trips");
    let mut rr = request_response(pair, round_trips)?;
    rr.sort_by(|a, b| a.total_cmp(b));
    Ok(Setup {
        name,
        throughput_gbit_s: throughput,
        rr_mean_us: rr.iter().sum::<f64>() / rr.len() as f64,
        rr_p50_us: percentile(&rr, 0.5),
        rr_p99_us: percentile(&rr, 0.99),
    })
}

/// Prints `ours` beside `theirs` (throughput and latency) and their ratios.
pub fn print_comparison(title: &str, theirs: &Setup, ours: &Setup) {
    println!(
        "{title:<22} {:>12} {:>10} {:>10} {:>10}",
        "TCP Gbit/s", "RR mean", "RR p50", "RR p99"
    );
    for s in [theirs, ours] {
        println!(
            "{:<22} {:>12.2} {:>9.1}us {:>9.1}us {:>9.1}us",
            s.name, s.throughput_gbit_s, s.rr_mean_us, s.rr_p50_us, s.rr_p99_us
        );
    }
    println!(
        "{} / {}: throughput {:.2}x, RR mean {:.2}x, p99 {:.2}x",
        ours.name,
        theirs.name,
        ours.throughput_gbit_s / theirs.throughput_gbit_s,
        ours.rr_mean_us / theirs.rr_mean_us,
        ours.rr_p99_us / theirs.rr_p99_us
    );
}

/// Loads `rules` into `host` with `tool` (`iptables-restore`, `nft -f`)
/// from a file, as kube-proxy and Docker hand them over; how long it took.
pub fn load_rules(
    host: &NetNs,
    tool: &str,
    args: &[&str],
    rules: &str,
) -> anyhow::Result<Duration> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), rules)?;
    let path = file.path().to_str().context("path")?;
    let mut all = args.to_vec();
    all.push(path);
    let t = std::time::Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &host.name, tool])
        .args(&all)
        .output()?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!("{tool}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

/// Drops every IPv4 packet at the sink's `eth0` ingress with the
/// do-nothing-but-drop TC program; ARP still passes, so the container's
/// neighbours resolve.
pub fn attach_sink(sink: &NetNs) {
    let mut fixture = netd_tests::fixture::Fixture::load();
    let pin = fixture.pin_root().join("tc_sink");
    fixture.pin_tc(netd_common::program_names::TC_SINK, &pin);
    let pin_arg = pin.to_string_lossy().into_owned();
    // From a thread in the sink, not `ip netns exec`: that remounts /sys,
    // and the pin is on this mount namespace's bpffs.
    netd_tests::netns::within(sink, || {
        netd_tests::netns::sh("tc", &["qdisc", "replace", "dev", "eth0", "clsact"]);
        netd_tests::netns::sh(
            "tc",
            &[
                "filter", "replace", "dev", "eth0", "ingress", "protocol", "ip", "prio", "1",
                "bpf", "da", "pinned", &pin_arg,
            ],
        );
    });
    let _ = std::fs::remove_file(&pin);
}

/// trafgen in `ns` out of `dev` with `config` for `run_for`, started again whenever it gives up on a full
/// socket buffer (its TX ring's flush fails with EAGAIN when the veth
/// pushes back, and it cannot raise the buffer from inside a namespace).
pub fn trafgen_for(
    ns: &NetNs,
    dev: &str,
    config: &std::path::Path,
    run_for: Duration,
) -> anyhow::Result<()> {
    let until = std::time::Instant::now() + run_for;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left < Duration::from_millis(100) {
            return Ok(());
        }
        let out = Command::new("timeout")
            .args(["-s", "INT", &format!("{:.1}", left.as_secs_f64())])
            .args(["ip", "netns", "exec", &ns.name, "trafgen", "--dev", dev])
            .arg("--conf")
            .arg(config)
            .args(["-Q", "-C"])
            .output()
            .context("trafgen (netsniff-ng; `cargo xtask setup` installs it)")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            // Ended by the SIGINT of `timeout`.
            Some(0 | 124) => return Ok(()),
            _ if stderr.contains("Resource temporarily unavailable") => continue,
            _ => bail!("trafgen failed ({}): {stderr}", out.status),
        }
    }
}

/// The ifindex, in the other namespace, of the other end of veth `dev` in
/// `ns`.
pub fn veth_peer(ns: &NetNs, dev: &str) -> anyhow::Result<u32> {
    let out = ns.ip(&["-j", "link", "show", dev]);
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let index = links[0]["link_index"]
        .as_u64()
        .with_context(|| format!("{dev} is a veth with a peer"))?;
    Ok(u32::try_from(index)?)
}

/// From a thread in `ns` pinned to `cpu`: `packets` as live frames (an
/// XDP_TX program under BPF_PROG_TEST_RUN, the facility xdp-trafficgen
/// drives) bounced out of `ns`'s device `ifindex`, so they arrive on its
/// veth peer as from a wire; `offered` counts them.
pub fn live_frames(
    ns: &NetNs,
    ifindex: u32,
    cpu: usize,
    packets: &[netd_common::maps::BenchFrame],
    run_for: Duration,
    offered: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<()> {
    // One run costs milliseconds of setup whatever its length: long runs
    // (about 0.15 s each at 7 Mpps) keep that out of the rate.
    const REPEAT: u32 = 1 << 20;
    let mut generator = netd_tests::fixture::Fixture::load();
    generator.set_bench_frames(packets);
    netd_tests::netns::within(ns, || -> anyhow::Result<()> {
        cpu::pin_this_thread(cpu)?;
        let until = std::time::Instant::now() + run_for;
        while std::time::Instant::now() < until {
            // The program writes the frames; this one only sizes them.
            generator.live_frames(
                netd_common::program_names::XDP_GENERATOR,
                &packets[0].0,
                ifindex,
                REPEAT,
            )?;
            offered.fetch_add(u64::from(REPEAT), std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    })
}

/// A process's resident memory, from /proc (MiB); `None` once it is gone.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
