//! Services: netd against kube-proxy's two dataplanes, iptables (a nat
//! chain per service, statistic-mode random jumps to its endpoints, a
//! Linux bridge with br_netfilter, conntrack) and nftables (a verdict map
//! of VIPs, numgen to the endpoints), on the same topology in the same
//! run: one client and ten backends, each a namespace.
//!
//! For 1, 1,000 and 10,000 services of 10 backends each:
//! - new TCP connections per second to one VIP (connect, 1-byte request,
//!   1-byte response, close);
//! - the time to program them from an empty host, and one backend change
//!   at that size;
//! - netd's RSS.
//!
//! And the cost of the LB path in the endpoint program (BPF_PROG_TEST_RUN):
//! a flow's first packet and an established one, beside the do-nothing TC
//! program.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::Parser;
use netd::dataplane::{
    maps::{MapOp, MapWriter},
    tables,
};
use netd_bench::{
    connections::{self, serve_bytes},
    load_rules,
};
use netd_common::{
    maps::{NetworkEntry, LOCAL_NO_POLICY, LOCAL_NO_SERVICE},
    program_names::{TC_BASELINE, TC_ENDPOINT},
    service::{MaglevTable, ServiceEntry, ServiceKey, VipEntry, PROTO_TCP},
};
use netd_tests::{
    fixture::{active_backend, local_endpoint_flagged, maglev_all_to, Fixture, TempPins},
    netns::{veth_between, NetNs},
    process::Netd,
};
use serde::Serialize;

mod kernel;
mod lb_path;
mod with_netd;

use kernel::*;
use lb_path::*;
use with_netd::*;

#[derive(Parser)]
struct Args {
    /// Seconds of connections per round.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Rounds per measurement; the median is reported (one 3 s round
    /// varied by about 15% from run to run on this 2-core VM).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Service counts to measure at.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000")]
    sizes: Vec<usize>,
    /// Systems to measure (netd, iptables, nftables).
    #[arg(long, value_delimiter = ',', default_value = "netd,iptables,nftables")]
    systems: Vec<String>,
    /// Client threads opening connections.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// BPF_PROG_TEST_RUN repeat count for the established LB path.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    #[arg(long, default_value = "target/bench/services.json")]
    json: PathBuf,
}

const BACKENDS: usize = 10;
const PORT: u16 = 80;
const TARGET: u16 = 8080;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
enum System {
    Netd,
    Iptables,
    Nftables,
}

#[derive(Serialize)]
struct Point {
    system: System,
    services: usize,
    connections_per_sec: f64,
    /// Programming every service from an empty host.
    program_secs: f64,
    /// One backend of one service changed, at this size.
    change_ms: f64,
    /// netd's resident memory (netd only).
    rss_mib: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    seconds: u64,
    rounds: usize,
    threads: usize,
    points: Vec<Point>,
    lb_path: LbPath,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let lb = lb_path(args.repeat);
    println!("{}", lb_summary(&lb));
    let mut points = Vec::new();
    for &n in &args.sizes {
        for system in [System::Netd, System::Iptables, System::Nftables] {
            if !args
                .systems
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&format!("{system:?}")))
            {
                continue;
            }
            eprintln!("{system:?}: {n} services");
            let p = match system {
                System::Netd => bench_netd(&args, n),
                _ => bench_kernel(&args, system, n),
            }
            .with_context(|| format!("{system:?} at {n} services"))?;
            eprintln!(
                "  {:.0} conn/s, programmed in {:.2} s, one change {:.1} ms",
                p.connections_per_sec, p.program_secs, p.change_ms
            );
            points.push(p);
        }
    }
    println!(
        "\n{:<9} {:>8} {:>10} {:>10} {:>10} {:>12} {:>12} {:>9}",
        "system", "services", "conn/s", "vs ipt", "vs nft", "program s", "change ms", "RSS MiB"
    );
    for p in &points {
        let of = |s: System| {
            points
                .iter()
                .find(|q| q.system == s && q.services == p.services)
                .map_or(f64::NAN, |q| p.connections_per_sec / q.connections_per_sec)
        };
        println!(
            "{:<9} {:>8} {:>10.0} {:>10.2} {:>10.2} {:>12.3} {:>12.1} {:>9}",
            format!("{:?}", p.system).to_lowercase(),
            p.services,
            p.connections_per_sec,
            of(System::Iptables),
            of(System::Nftables),
            p.program_secs,
            p.change_ms,
            p.rss_mib.map_or("-".into(), |r| format!("{r:.1}"))
        );
    }
    let report = Report {
        seconds: args.seconds,
        rounds: args.rounds,
        threads: args.threads,
        points,
        lb_path: lb,
    };
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("\nwritten to {}", args.json.display());
    write_report(&args, &report)
}

fn lb_summary(lb: &LbPath) -> String {
    format!(
        "LB path (BPF_PROG_TEST_RUN): an established flow {:.1} ns = {:.2}x the TC no-op's {:.1} ns, \
         {:.2}x plain forwarding's {:.1} ns (repeat {}). Single runs on fresh packets (median of {}): a flow's first packet {:.0} ns, \
         plain local forwarding {:.0} ns, the no-op {:.0} ns.",
        lb.established_ns,
        lb.established_ns / lb.tc_baseline_ns,
        lb.tc_baseline_ns,
        lb.established_ns / lb.plain_forward_ns,
        lb.plain_forward_ns,
        lb.repeat,
        lb.single_runs,
        lb.single_first_packet_ns,
        lb.single_plain_forward_ns,
        lb.single_tc_baseline_ns
    )
}

fn write_report(args: &Args, r: &Report) -> anyhow::Result<()> {
    use netd_bench::report::{write_html, Bars};
    let label = |p: &Point| format!("{:?} at {}", p.system, p.services).to_lowercase();
    let bars = |f: fn(&Point) -> f64| r.points.iter().map(|p| (label(p), f(p))).collect();
    write_html(
        &args.json.with_extension("html"),
        "netd services against kube-proxy's iptables and nftables dataplanes",
        &[
            format!(
                "Same run, same namespaces: a client and {BACKENDS} backends; \
                 per point the median of {} rounds of {} s of connections from {} threads.",
                r.rounds, r.seconds, r.threads
            ),
            lb_summary(&r.lb_path),
        ],
        &[
            Bars {
                title: "new connections per second against the number of services".into(),
                unit: "connections/s",
                bars: bars(|p| p.connections_per_sec),
            },
            Bars {
                title: "time to program every service from an empty host".into(),
                unit: "s",
                bars: bars(|p| p.program_secs),
            },
            Bars {
                title: "one backend change at that size".into(),
                unit: "ms",
                bars: bars(|p| p.change_ms),
            },
        ],
    )
}
