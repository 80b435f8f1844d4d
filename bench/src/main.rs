//! Runs each program path under BPF_PROG_TEST_RUN with a large repeat
//! count beside a do-nothing XDP program, in the same run, and prints
//! ns/packet and the ratio to the do-nothing program. The kernel's
//! timer covers only the program runs, so the ratio is the cost of
//! netd's work over the bare cost of invoking an XDP program.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use netd_common::events::{EventKind, MonitorConfig, DEFAULT_BURST, DEFAULT_RATE};
use netd_common::maps::{LOCAL_NO_POLICY, LOCAL_NO_SERVICE};
use netd_common::program_names::{
    SOCK_CONNECT4, SOCK_GETPEERNAME4, SOCK_RECVMSG4, SOCK_SENDMSG4, TC_BASELINE, TC_ENDPOINT,
    TC_ICMP_ERROR, TC_MASQUERADE, TC_REFUSE, TC_SERVICE, TC_UPLINK, TC_UPLINK_DECAP,
    TC_UPLINK_DELIVER, TC_UPLINK_MASQ_REPLY, TC_UPLINK_MESH, XDP_BASELINE, XDP_DECAP, XDP_DELIVER,
    XDP_MASQ_REPLY, XDP_MESH, XDP_UPLINK,
};
use netd_tests::fixture::{local_endpoint_flagged, Fixture};
use serde::Serialize;
use testpkt::*;

#[derive(Parser)]
struct Args {
    /// BPF_PROG_TEST_RUN repeat count for each measurement.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Rounds per path; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench/datapath.json")]
    json: PathBuf,
}

#[derive(Clone, Copy, PartialEq)]
enum Program {
    Baseline,
    TcBaseline,
    Uplink,
    Endpoint,
    /// The endpoint program while `netd monitor` listens.
    Monitored(Listening),
    /// The endpoint program on a packet from endpoint A (ifindex 1), whose
    /// network has B (ifindex 50) too.
    FromEndpoint,
}

/// How a monitor listens while a path is timed.
#[derive(Clone, Copy, PartialEq)]
enum Listening {
    /// netd's default budget (10,000 events a second per CPU): a flood is
    /// mostly suppressed, and the ring, which nobody reads, fills.
    Flood,
    /// Every drop becomes an event; a reader empties the ring after each
    /// measurement, whose repeat fits in it.
    EveryEvent,
    /// Every drop would be an event, but the reader is idle and the ring
    /// full: each is counted lost.
    ReaderIdle,
}

/// Events the ring holds with room to spare (1 MiB of 160-byte events).
const FITS_IN_RING: u32 = 4_000;
/// Events the ring holds at most.
const RING_EVENTS: u32 = 6_600;

fn listening(mode: Listening) -> MonitorConfig {
    let (rate, burst) = match mode {
        Listening::Flood => (DEFAULT_RATE, DEFAULT_BURST),
        Listening::EveryEvent | Listening::ReaderIdle => (u32::MAX, u32::MAX),
    };
    MonitorConfig {
        kinds: EventKind::Drop.bit(),
        rate,
        burst,
        _pad: 0,
    }
}

#[derive(Serialize)]
struct Row {
    path: String,
    program: &'static str,
    ns_per_packet: f64,
    /// Against the do-nothing XDP program.
    ratio_to_baseline: f64,
    /// Against the do-nothing program of the same hook (XDP or TC).
    ratio_to_hook_baseline: f64,
}

/// How big each program is, so growth is visible from one run to the next.
#[derive(Serialize)]
struct ProgramSize {
    program: &'static str,
    /// Instructions after the verifier's rewrites (xlated), in 8-byte units.
    instructions: Option<u32>,
    /// Instructions the verifier processed to accept it (all paths explored).
    verified_instructions: Option<u32>,
    /// Bytes of JITed machine code.
    jited_bytes: u32,
}

#[derive(Serialize)]
struct Report {
    repeat: u32,
    rounds: usize,
    programs: Vec<ProgramSize>,
    baseline_ns_per_packet: f64,
    tc_baseline_ns_per_packet: f64,
    rows: Vec<Row>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut f = Fixture::load();
    f.load_baselines();
    // The samples' destination is this host's own address, as the host's
    // own traffic on an uplink is (a published address by default).
    f.datapath
        .write_publish_addresses(&[IP4_B.into()])
        .context("NETD_PUBLISH_ADDRS")?;
    // And the published ports' bitmap as netd's pass writes it, with one
    // port published that the samples do not go to.
    netd_tests::mesh_fixture::write_published_port_bits(&mut f, &[30080]);
    // The sending endpoint has its counters, as netd makes them for every
    // endpoint link (test runs come in on ifindex 1).
    f.datapath
        .take_endpoint_stats()
        .context("NETD_EP_STATS")?
        .sync(&[1].into())
        .context("the endpoint's counters")?;
    let mut programs = Vec::new();
    println!(
        "{:<20} {:>12} {:>22} {:>12}",
        "program", "instructions", "verifier processed", "JIT bytes"
    );
    for name in [
        XDP_UPLINK,
        XDP_DECAP,
        XDP_MESH,
        XDP_DELIVER,
        XDP_MASQ_REPLY,
        TC_UPLINK,
        TC_UPLINK_DECAP,
        TC_UPLINK_MESH,
        TC_UPLINK_DELIVER,
        TC_UPLINK_MASQ_REPLY,
        TC_ENDPOINT,
        TC_SERVICE,
        TC_ICMP_ERROR,
        TC_REFUSE,
        TC_MASQUERADE,
        SOCK_CONNECT4,
        SOCK_SENDMSG4,
        SOCK_RECVMSG4,
        SOCK_GETPEERNAME4,
        XDP_BASELINE,
        TC_BASELINE,
    ] {
        let info = f
            .datapath
            .ebpf_mut()
            .program(name)
            .with_context(|| format!("no program {name}"))?
            .info()
            .with_context(|| format!("info of {name}"))?;
        let size = ProgramSize {
            program: name,
            instructions: info.size_translated().map(|bytes| bytes / 8),
            verified_instructions: info.verified_instruction_count(),
            jited_bytes: info.size_jitted(),
        };
        let show = |n: Option<u32>| n.map_or("-".to_string(), |n| n.to_string());
        println!(
            "{:<20} {:>12} {:>22} {:>12}",
            name,
            show(size.instructions),
            show(size.verified_instructions),
            size.jited_bytes
        );
        programs.push(size);
    }
    println!();

    let mut paths: Vec<(String, Program, Vec<u8>)> = vec![
        (
            "baseline (XDP_PASS only)".into(),
            Program::Baseline,
            ipv4_tcp(),
        ),
        (
            "tc baseline (TC_ACT_OK only)".into(),
            Program::TcBaseline,
            ipv4_tcp(),
        ),
    ];
    for (name, packet) in samples() {
        paths.push((
            format!("uplink pass {name} (to the host)"),
            Program::Uplink,
            packet.clone(),
        ));
        paths.push((
            format!("endpoint program, no endpoint's veth: pass {name}"),
            Program::Endpoint,
            packet,
        ));
    }
    let truncated = ipv4_tcp()[..40].to_vec();
    paths.push((
        "uplink drop malformed (truncated tcp)".into(),
        Program::Uplink,
        truncated.clone(),
    ));
    paths.push((
        "endpoint drop malformed (truncated tcp)".into(),
        Program::FromEndpoint,
        truncated,
    ));
    paths.push((
        "endpoint drop fragment (tiny)".into(),
        Program::FromEndpoint,
        ipv4_tiny_first_fragment(8),
    ));
    paths.push((
        "endpoint local forward (udp to a neighbour)".into(),
        Program::FromEndpoint,
        ipv4_udp(),
    ));
    // The drop path with `netd monitor` listening (the rows above have
    // it off), and a passing packet's cost of the check.
    let malformed = ipv4_tcp()[..40].to_vec();
    paths.push((
        "endpoint drop malformed, monitor on, flood".into(),
        Program::Monitored(Listening::Flood),
        malformed.clone(),
    ));
    paths.push((
        "endpoint drop malformed, monitor on, every event read".into(),
        Program::Monitored(Listening::EveryEvent),
        malformed.clone(),
    ));
    paths.push((
        "endpoint drop malformed, monitor on, reader idle (ring full)".into(),
        Program::Monitored(Listening::ReaderIdle),
        malformed,
    ));
    paths.push((
        "endpoint local forward, monitor on".into(),
        Program::Monitored(Listening::Flood),
        ipv4_udp(),
    ));
    let mut ep = from_endpoint_a_beside_b()?;
    let mut events = ep.datapath.take_events().context("the monitor's maps")?;

    let mut samples_ns: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        // Every path once per round, so drift hits all of them alike.
        for (i, (_, program, packet)) in paths.iter().enumerate() {
            let ns = match program {
                Program::Baseline => f.time_xdp(XDP_BASELINE, packet, args.repeat),
                Program::TcBaseline => f.time_tc(TC_BASELINE, packet, args.repeat),
                Program::Uplink => f.time_xdp(XDP_UPLINK, packet, args.repeat),
                Program::Endpoint => f.time_tc(TC_ENDPOINT, packet, args.repeat),
                Program::FromEndpoint => ep.time_tc(TC_ENDPOINT, packet, args.repeat),
                Program::Monitored(mode) => {
                    events.set(listening(*mode))?;
                    let repeat = match mode {
                        Listening::Flood | Listening::ReaderIdle => args.repeat,
                        Listening::EveryEvent => FITS_IN_RING,
                    };
                    if *mode == Listening::ReaderIdle {
                        // Fill the ring first.
                        ep.time_tc(TC_ENDPOINT, packet, 2 * RING_EVENTS);
                    }
                    let ns = ep.time_tc(TC_ENDPOINT, packet, repeat);
                    while events.next_event().is_some() {}
                    events.set(MonitorConfig::default())?;
                    ns
                }
            };
            samples_ns[i].push(ns);
        }
    }
    let medians: Vec<f64> = samples_ns.into_iter().map(median).collect();
    let baseline = medians[0];
    let tc_baseline = medians[1];

    let rows: Vec<Row> = paths
        .iter()
        .zip(&medians)
        .map(|((path, program, _), ns)| Row {
            path: path.clone(),
            program: match program {
                Program::Baseline => XDP_BASELINE,
                Program::TcBaseline => TC_BASELINE,
                Program::Uplink => XDP_UPLINK,
                Program::Endpoint | Program::Monitored(_) | Program::FromEndpoint => TC_ENDPOINT,
            },
            ns_per_packet: *ns,
            ratio_to_baseline: ns / baseline,
            ratio_to_hook_baseline: match program {
                Program::Baseline | Program::Uplink => ns / baseline,
                Program::TcBaseline
                | Program::Endpoint
                | Program::Monitored(_)
                | Program::FromEndpoint => ns / tc_baseline,
            },
        })
        .collect();

    println!(
        "{:<62} {:>10} {:>12} {:>14}",
        "path", "ns/packet", "vs XDP noop", "vs hook noop"
    );
    for row in &rows {
        println!(
            "{:<62} {:>10.1} {:>12.2} {:>14.2}",
            row.path, row.ns_per_packet, row.ratio_to_baseline, row.ratio_to_hook_baseline
        );
    }
    let report = Report {
        repeat: args.repeat,
        rounds: args.rounds,
        programs,
        baseline_ns_per_packet: baseline,
        tc_baseline_ns_per_packet: tc_baseline,
        rows,
    };
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    println!("\nwritten to {}", args.json.display());
    netd_bench::report::write_html(
        &args.json.with_extension("html"),
        "netd datapath: every program path beside the do-nothing programs",
        &[
            format!(
                "BPF_PROG_TEST_RUN, repeat {}, median of {} rounds; XDP no-op {:.1} ns, TC no-op {:.1} ns.",
                report.repeat, report.rounds, report.baseline_ns_per_packet, report.tc_baseline_ns_per_packet
            ),
            headline(&report),
        ],
        &[
            netd_bench::report::Bars {
                title: "ns per packet".into(),
                unit: "ns/packet",
                bars: report
                    .rows
                    .iter()
                    .map(|r| (r.path.clone(), r.ns_per_packet))
                    .collect(),
            },
            netd_bench::report::Bars {
                title: "instructions the verifier processed, per program".into(),
                unit: "instructions",
                bars: report
                    .programs
                    .iter()
                    .map(|p| {
                        (
                            p.program.to_string(),
                            f64::from(p.verified_instructions.unwrap_or(0)),
                        )
                    })
                    .collect(),
            },
        ],
    )?;
    Ok(())
}

/// The targets, each a ratio to its hook's no-op: the worst
/// packet on a veth that is no endpoint's and of the host's own on the
/// uplink (at most 2x), and a local forward (at most 4x).
fn headline(report: &Report) -> String {
    let worst = |prefix: &str| {
        report
            .rows
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .map(|r| r.ratio_to_hook_baseline)
            .fold(0.0_f64, f64::max)
    };
    format!(
        "Against the hook's no-op: a packet on a veth that is no endpoint's {:.2}x and the host's own on the uplink {:.2}x at worst (target 2x); endpoint local forward {:.2}x (target 4x).",
        worst("endpoint program, no endpoint's veth"),
        worst("uplink pass"),
        worst("endpoint local forward (udp"),
    )
}

/// A datapath of its own where testpkt's A is an endpoint at ifindex 1
/// (the test runs' interface) and B one of the same network at 50, both
/// without policy or service: the samples, from A to B, are judged and
/// forwarded as from a container.
/// Every repeat of a forward takes the same path (its one rewrite, the
/// destination MAC, is the same each time).
fn from_endpoint_a_beside_b() -> anyhow::Result<Fixture> {
    use netd::dataplane::{
        maps::{MapOp, MapWriter},
        tables,
    };
    use netd_common::maps::NetworkEntry;
    // As netd writes them for endpoints without policy that back no service.
    let flags = LOCAL_NO_POLICY | LOCAL_NO_SERVICE;
    let mut f = Fixture::from_endpoint_a_flagged(flags);
    let mut ops = vec![MapOp::put(
        tables::NETD_NETWORKS,
        1,
        NetworkEntry {
            gateway: [10, 99, 0, 1],
            vni: 0,
        },
    )];
    ops.extend(local_endpoint_flagged(50, 1, IP4_B, MAC_B, [3; 6], flags));
    for op in &ops {
        f.maps.apply(op).context("writing endpoint B")?;
    }
    Ok(f)
}
