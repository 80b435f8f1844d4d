//! Policy: netd against an iptables FORWARD chain with the same rules and
//! against nftables sets and verdict maps, on the same topology in the same
//! run: a client and a server, each a namespace, behind a host namespace.
//!
//! A policy of N rules governs the server's ingress: N-1 rules allow
//! addresses the client does not have (`172.16.x.y/32` on a port each, so
//! a linear chain walks them all), and the last one allows the client on
//! tcp/8080. In iptables that is Weave npc's shape: established and related
//! packets accepted first, then a chain of N rules for new flows, then a
//! drop. In nftables, the same after the conntrack accept, as one lookup
//! in a set of `address . port` (accept, else drop) or in a verdict map
//! (every hundredth rule a drop, as in the scale test).
//!
//! For N = 0 (nothing loaded, no policy), 100, 1,000 and 10,000:
//! - new TCP connections per second, client to server (each new flow's
//!   first packet walks the rules);
//! - a 1-byte request/response on an established connection, p50;
//! - the time to program the N rules into an empty host.
//!
//! And netd's per-packet cost in the endpoint program (BPF_PROG_TEST_RUN)
//! at each N, beside the do-nothing TC program: an established flow, and a
//! flow's first packet (single runs on fresh packets).

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
use netd_bench::{
    connections::{self, serve_bytes},
    load_rules, median,
};
use netd_common::program_names::{TC_BASELINE, TC_ENDPOINT};
use netd_tests::{
    fixture::Fixture,
    fixture::TempPins,
    netns::{veth_between, NetNs},
    policy_fixture::{fixture, model, policy, segment, tcp, API_IP, WEB_IP},
    process::Netd,
};
use serde::Serialize;

mod kernel;
mod programs;

use kernel::*;
use programs::*;

#[derive(Parser)]
struct Args {
    /// Seconds of connections per round.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Rounds per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Rule counts to measure at.
    #[arg(long, value_delimiter = ',', default_value = "0,100,1000,10000")]
    sizes: Vec<usize>,
    /// Systems to measure (netd, iptables, nft-set, nft-vmap).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "netd,iptables,nft-set,nft-vmap"
    )]
    systems: Vec<String>,
    /// Client threads opening connections.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Request/response round trips per measurement.
    #[arg(long, default_value_t = 5000)]
    round_trips: usize,
    /// BPF_PROG_TEST_RUN repeat count for the established path.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    #[arg(long, default_value = "target/bench/policy.json")]
    json: PathBuf,
}

const PORT: u16 = 8080;
const SYSTEMS: [System; 4] = [
    System::Netd,
    System::Iptables,
    System::NftSet,
    System::NftVmap,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum System {
    Netd,
    Iptables,
    NftSet,
    NftVmap,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Netd => "netd",
            System::Iptables => "iptables",
            System::NftSet => "nft-set",
            System::NftVmap => "nft-vmap",
        }
    }
}

#[derive(Serialize)]
struct Point {
    system: System,
    rules: usize,
    connections_per_sec: f64,
    rr_p50_us: f64,
    program_secs: f64,
}

/// netd's endpoint program at one rule count.
#[derive(Serialize)]
struct ProgramCost {
    rules: usize,
    established_ns: f64,
    first_packet_ns: f64,
}

#[derive(Serialize)]
struct Report {
    seconds: u64,
    rounds: usize,
    threads: usize,
    repeat: u32,
    single_runs: usize,
    tc_baseline_ns: f64,
    single_tc_baseline_ns: f64,
    program: Vec<ProgramCost>,
    points: Vec<Point>,
}

/// The client and the server, serving one byte per request on `PORT`.
struct World {
    client: NetNs,
    server: NetNs,
    stop: Arc<AtomicBool>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(120));
    }
}

fn world() -> World {
    World {
        client: NetNs::new("bpC"),
        server: NetNs::new("bpS"),
        stop: Arc::new(AtomicBool::new(false)),
    }
}

/// One system set up with N rules, its server serving.
struct Setup {
    system: System,
    rules: usize,
    program: Duration,
    server_ip: String,
    netd: Option<Netd>,
    // Dropped after the world and netd: the host the programs are on.
    _host: NetNs,
    _pins: Option<TempPins>,
    world: World,
}

impl Setup {
    fn addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        Ok(format!("{}:{PORT}", self.server_ip).parse()?)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(netd) = self.netd.as_mut() {
            netd.stop();
        }
    }
}

fn setup_netd(n: usize) -> anyhow::Result<Setup> {
    let world = world();
    let host = NetNs::new("bpH");
    let pins = TempPins::new();
    let mut netd = Netd::start(&host, pins.layout.root(), netd_tests::free_port(), &[]);
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "bench", "--subnet", "10.71.0.0/24"]);
    netd.endpoint(
        "client",
        "bench",
        &world.client,
        &["--label", "role=client"],
    );
    let server_ip = netd.endpoint(
        "server",
        "bench",
        &world.server,
        &["--label", "role=server"],
    );
    let mut program = Duration::ZERO;
    if n > 0 {
        let ingress: Vec<netd::model::RuleSpec> = netd_rules(n, "role=client")
            .iter()
            .map(|r| netd::model::parse_rule(r))
            .collect::<Result<_, _>>()?;
        let spec = serde_json::json!({"selector": "role=server", "ingress": ingress});
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), spec.to_string())?;
        let path = file.path().to_str().context("path")?.to_string();
        let t = Instant::now();
        let (ok, _, err) = netd.cli(&["policy", "create", "bench", "-f", &path]);
        program = t.elapsed();
        if !ok {
            bail!("netd policy of {n} rules: {err}");
        }
    }
    serve_bytes(&world.server, PORT, world.stop.clone());
    Ok(Setup {
        system: System::Netd,
        rules: n,
        program,
        server_ip,
        netd: Some(netd),
        _host: host,
        _pins: Some(pins),
        world,
    })
}

const CLIENT_IP: &str = "10.72.1.2";
const SERVER_IP: &str = "10.72.2.2";

/// Every system at N rules, set up side by side and measured in turn,
/// round after round, so that a drift of the machine lands on all alike.
fn measure_size(args: &Args, systems: &[System], n: usize) -> anyhow::Result<Vec<Point>> {
    let setups = systems
        .iter()
        .map(|&system| {
            match system {
                System::Netd => setup_netd(n),
                _ => setup_kernel(system, n),
            }
            .with_context(|| format!("{} at {n} rules", system.name()))
        })
        .collect::<anyhow::Result<Vec<Setup>>>()?;
    let mut rates = vec![Vec::new(); setups.len()];
    let mut trips = vec![Vec::new(); setups.len()];
    for _ in 0..args.rounds.max(1) {
        for (i, s) in setups.iter().enumerate() {
            let addr = s.addr()?;
            rates[i].push(connections::connection_rate(
                &s.world.client,
                addr,
                args.seconds,
                args.threads,
            )?);
            trips[i].extend(connections::round_trips(
                &s.world.client,
                addr,
                args.round_trips / args.rounds.max(1),
            )?);
        }
    }
    Ok(setups
        .iter()
        .zip(rates.into_iter().zip(trips))
        .map(|(s, (rates, trips))| Point {
            system: s.system,
            rules: s.rules,
            connections_per_sec: median(&rates),
            rr_p50_us: median(&trips),
            program_secs: s.program.as_secs_f64(),
        })
        .collect())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Everything, the kernel's packet processing included (veths process a
    // packet on the sending CPU), on CPU 0: the numbers are per core, and
    // not moved by wake-ups across CPUs, which on this 2-core VM made one
    // run's request/response p50 17 µs and the next one's 68 µs.
    netd_bench::cpu::pin_this_thread(0)?;
    let (tc_baseline, single_tc_baseline) = baseline(args.repeat);
    let program = program_costs(&args.sizes, args.repeat);
    for cost in &program {
        eprintln!(
            "netd's endpoint program, {} rules: established {:.1} ns, first packet {:.0} ns",
            cost.rules, cost.established_ns, cost.first_packet_ns
        );
    }
    let systems: Vec<System> = SYSTEMS
        .into_iter()
        .filter(|s| args.systems.iter().any(|a| a == s.name()))
        .collect();
    let mut points = Vec::new();
    for &n in &args.sizes {
        eprintln!("{n} rules");
        for p in measure_size(&args, &systems, n)? {
            eprintln!(
                "  {:<9} {:.0} conn/s, RR p50 {:.1} µs, programmed in {:.3} s",
                p.system.name(),
                p.connections_per_sec,
                p.rr_p50_us,
                p.program_secs
            );
            points.push(p);
        }
    }
    let report = Report {
        seconds: args.seconds,
        rounds: args.rounds,
        threads: args.threads,
        repeat: args.repeat,
        single_runs: SINGLE_RUNS,
        tc_baseline_ns: tc_baseline,
        single_tc_baseline_ns: single_tc_baseline,
        program,
        points,
    };
    println!("{}", summary(&report));
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("\nwritten to {}", args.json.display());
    write_report(&args, &report)
}

/// The tables printed and put in the report: every ratio is against a
/// number measured in this run.
fn summary(r: &Report) -> String {
    let mut out = format!(
        "netd's endpoint program (BPF_PROG_TEST_RUN), the TC no-op {:.1} ns repeated, {:.0} ns in single runs:\n\
         {:>7} {:>16} {:>10} {:>18} {:>10}\n",
        r.tc_baseline_ns,
        r.single_tc_baseline_ns,
        "rules",
        "established ns",
        "vs 0",
        "first packet ns",
        "vs 0"
    );
    let zero = r.program.iter().find(|c| c.rules == 0);
    for c in &r.program {
        let of = |f: fn(&ProgramCost) -> f64| zero.map_or(f64::NAN, |z| f(c) / f(z));
        out.push_str(&format!(
            "{:>7} {:>16.1} {:>10.2} {:>18.0} {:>10.2}\n",
            c.rules,
            c.established_ns,
            of(|c| c.established_ns),
            c.first_packet_ns,
            of(|c| c.first_packet_ns)
        ));
    }
    out.push_str(&format!(
        "\n{:<9} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}\n",
        "system", "rules", "conn/s", "vs 0", "vs ipt", "vs set", "vs vmap", "RR p50", "program s"
    ));
    for p in &r.points {
        let rate_of = |s: System, rules: usize| {
            r.points
                .iter()
                .find(|q| q.system == s && q.rules == rules)
                .map_or(f64::NAN, |q| p.connections_per_sec / q.connections_per_sec)
        };
        out.push_str(&format!(
            "{:<9} {:>6} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.1} {:>10.3}\n",
            p.system.name(),
            p.rules,
            p.connections_per_sec,
            rate_of(p.system, 0),
            rate_of(System::Iptables, p.rules),
            rate_of(System::NftSet, p.rules),
            rate_of(System::NftVmap, p.rules),
            p.rr_p50_us,
            p.program_secs
        ));
    }
    out
}

fn write_report(args: &Args, r: &Report) -> anyhow::Result<()> {
    use netd_bench::report::{write_html, Bars};
    let label = |p: &Point| format!("{} at {}", p.system.name(), p.rules);
    let bars = |f: fn(&Point) -> f64| r.points.iter().map(|p| (label(p), f(p))).collect();
    let mut program_ns = vec![("TC no-op, single runs".to_string(), r.single_tc_baseline_ns)];
    for c in &r.program {
        program_ns.push((
            format!("first packet, {} rules", c.rules),
            c.first_packet_ns,
        ));
    }
    let mut established_ns = vec![("TC no-op, repeated".to_string(), r.tc_baseline_ns)];
    for c in &r.program {
        established_ns.push((format!("established, {} rules", c.rules), c.established_ns));
    }
    write_html(
        &args.json.with_extension("html"),
        "netd policy against an iptables FORWARD chain and nftables sets and maps",
        &[
            format!(
                "Same run, same namespaces: a client and a server behind a host; per point the \
                 median of {} rounds of {} s of connections from {} threads. N rules on the \
                 server's ingress, the client's allowed by the last.",
                r.rounds, r.seconds, r.threads
            ),
            summary(r),
        ],
        &[
            Bars {
                title: "new connections per second against the number of rules".into(),
                unit: "connections/s",
                bars: bars(|p| p.connections_per_sec),
            },
            Bars {
                title: "1-byte request/response on an established connection, p50".into(),
                unit: "µs",
                bars: bars(|p| p.rr_p50_us),
            },
            Bars {
                title: "time to program the rules into an empty host".into(),
                unit: "s",
                bars: bars(|p| p.program_secs),
            },
            Bars {
                title: "netd's endpoint program: a flow's first packet (single runs)".into(),
                unit: "ns",
                bars: program_ns,
            },
            Bars {
                title: "netd's endpoint program: an established flow (repeated)".into(),
                unit: "ns",
                bars: established_ns,
            },
        ],
    )
}
