//! A container's way out: netd's masquerading against Docker's bridge
//! with its iptables MASQUERADE rule, each built in this run on the same
//! topology: a host namespace whose `uplink0` (a plain veth) leads to an
//! "outside" namespace holding the world's address and its servers.
//!
//! Measured, from one container to the outside server:
//! - TCP throughput (iperf3);
//! - new connections per second, and 1-byte request/response p50/p99;
//! - replies per second on one core: 64-byte UDP datagrams of one
//!   established flow sent back from the outside (live frames, on CPU 1)
//!   to the translated address and port, through the host's receive path
//!   (a NAPI thread on CPU 0: netd's reverse program, or conntrack's
//!   de-masquerade, routing and the bridge) into the container, whose
//!   `eth0` drops them; scored per busy second of CPU 0;
//! - ns per packet of the masquerade path (an established flow's SNAT) and
//!   of the reverse path at TC and XDP, beside each hook's no-op
//!   (BPF_PROG_TEST_RUN, single runs).

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Parser;
use netd_bench::{
    attach_sink,
    connections::{median_rate, round_trips, serve_bytes},
    cpu::{link_packets, steer_receive_path, CpuTicks},
    iperf3_between, live_frames, median, percentile, print_path_costs,
    report::{write_html, Bars},
    veth_peer, PathCost,
};
use netd_common::{
    maps::BenchFrame,
    masquerade::EGRESS_MASQUERADE,
    program_names::{TC_BASELINE, TC_ENDPOINT, TC_UPLINK, XDP_BASELINE, XDP_UPLINK},
};
use netd_tests::{
    fixture::TempPins,
    masq_fixture as m,
    netns::{veth_between, NetNs},
    process::Netd,
};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Seconds of iperf3 per system.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Seconds of new connections per round.
    #[arg(long, default_value_t = 3)]
    conn_seconds: u64,
    /// Rounds per connection-rate measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Client threads opening connections.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 20_000)]
    round_trips: usize,
    /// Seconds of replies for the per-core rate.
    #[arg(long, default_value_t = 6)]
    reply_seconds: u64,
    /// Single program runs per path for the path costs.
    #[arg(long, default_value_t = 20_000)]
    runs: usize,
    #[arg(long, default_value = "target/bench/egress.json")]
    json: PathBuf,
}

const HOST: &str = "10.95.0.1";
const OUTSIDE: &str = "10.95.0.2";
const WORLD: &str = "203.0.113.50";
const BYTES_PORT: u16 = 5401;
/// The port the replies come from, and the container's own source port.
const REPLY_FROM: u16 = 9;
const CONTAINER_PORT: u16 = 40000;
const PATH_CPU: usize = 0;
const GENERATOR_CPU: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
enum System {
    /// Docker's bridge and `iptables -t nat ... -j MASQUERADE`.
    DockerBridge,
    Netd,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::DockerBridge => "docker bridge + iptables MASQUERADE",
            System::Netd => "netd",
        }
    }
}

struct World {
    system: System,
    host: NetNs,
    outside: NetNs,
    container: NetNs,
    netd: Option<(Netd, TempPins)>,
    stop: Arc<AtomicBool>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some((netd, _)) = &mut self.netd {
            let _ = netd.stop();
        }
    }
}

/// The host, its uplink to the outside (default route), the outside's
/// servers at the world's address.
fn common(system: System) -> anyhow::Result<(NetNs, NetNs, Arc<AtomicBool>)> {
    let host = NetNs::new("bnEh");
    let outside = NetNs::new("bnEo");
    veth_between(
        &host,
        "uplink0",
        &format!("{HOST}/24"),
        &outside,
        "eth0",
        &format!("{OUTSIDE}/24"),
    );
    host.ip(&["route", "add", "default", "via", OUTSIDE]);
    outside.ip(&["addr", "add", &format!("{WORLD}/32"), "dev", "lo"]);
    let stop = Arc::new(AtomicBool::new(false));
    serve_bytes(&outside, BYTES_PORT, stop.clone());
    eprintln!("{}: built", system.name());
    Ok((host, outside, stop))
}

/// What dockerd writes for its default bridge (`docker0`), here `br0`:
/// forwarding, the MASQUERADE rule and the FORWARD chains.
fn docker_rules() -> &'static str {
    "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o br0 -j MASQUERADE
-A DOCKER -i br0 -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o br0 -j DOCKER
-A FORWARD -i br0 ! -o br0 -j ACCEPT
-A FORWARD -i br0 -o br0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i br0 ! -o br0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o br0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"
}

fn docker_world() -> anyhow::Result<World> {
    let (host, outside, stop) = common(System::DockerBridge)?;
    host.ip(&["link", "add", "br0", "type", "bridge"]);
    host.ip(&["addr", "add", "172.17.0.1/16", "dev", "br0"]);
    host.ip(&["link", "set", "br0", "up"]);
    let container = NetNs::new("bnEc");
    veth_between(
        &host,
        "veth0",
        "172.17.255.254/32",
        &container,
        "eth0",
        "172.17.0.2/16",
    );
    host.ip(&["addr", "flush", "dev", "veth0"]);
    host.ip(&["link", "set", "veth0", "master", "br0"]);
    container.ip(&["route", "add", "default", "via", "172.17.0.1"]);
    let forward = host.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    if !forward.status.success() {
        bail!("forwarding on in the Docker host");
    }
    netd_bench::load_rules(&host, "iptables-restore", &[], docker_rules())?;
    Ok(World {
        system: System::DockerBridge,
        host,
        outside,
        container,
        netd: None,
        stop,
    })
}

fn netd_world() -> anyhow::Result<World> {
    let (host, outside, stop) = common(System::Netd)?;
    let pins = TempPins::new();
    let mut netd = Netd::start(
        &host,
        pins.layout.root(),
        19991,
        // One host, as `netd run` serves it without a cluster: its way
        // out is an egress device, not an underlay uplink.
        &["--egress-device", "uplink0", "--log-level", "warn"],
    );
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "bench", "--subnet", "10.43.0.0/24"]);
    let container = NetNs::new("bnEc");
    netd.endpoint("c", "bench", &container, &[]);
    Ok(World {
        system: System::Netd,
        host,
        outside,
        container,
        netd: Some((netd, pins)),
        stop,
    })
}

#[derive(Serialize)]
struct Traffic {
    system: System,
    throughput_gbit_s: f64,
    connections_per_sec: f64,
    rr_p50_us: f64,
    rr_p99_us: f64,
}

fn traffic(w: &World, args: &Args) -> anyhow::Result<Traffic> {
    eprintln!("{}: iperf3 {} s", w.system.name(), args.seconds);
    let throughput = iperf3_between(&w.container, &w.outside, WORLD, args.seconds)?;
    let addr: SocketAddr = format!("{WORLD}:{BYTES_PORT}").parse()?;
    eprintln!("{}: new connections", w.system.name());
    let rate = median_rate(
        &w.container,
        addr,
        args.conn_seconds,
        args.threads,
        args.rounds,
    )?;
    let mut rr = round_trips(&w.container, addr, args.round_trips)?;
    rr.sort_by(|a, b| a.total_cmp(b));
    Ok(Traffic {
        system: w.system,
        throughput_gbit_s: throughput,
        connections_per_sec: rate,
        rr_p50_us: percentile(&rr, 0.5),
        rr_p99_us: percentile(&rr, 0.99),
    })
}

#[derive(Serialize)]
struct ReplyRate {
    system: System,
    seconds: u64,
    /// What trafgen offered.
    sent_pps: f64,
    /// What reached the container's `eth0`.
    delivered_pps: f64,
    /// CPU 0 busy with the replies: its busy share minus its idle share.
    path_cpu_share: f64,
    /// Replies delivered per busy second of one core.
    mpps_per_core: f64,
}

/// Opens the container's UDP flow to the outside; the address and port
/// the outside sees it from (the translated source).
fn open_udp_flow(w: &World) -> anyhow::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    let listening = w.outside.run(move || -> anyhow::Result<SocketAddr> {
        let socket = std::net::UdpSocket::bind((WORLD, REPLY_FROM))?;
        socket.set_read_timeout(Some(Duration::from_secs(3)))?;
        tx.send(()).ok();
        let mut buf = [0u8; 16];
        let (_, from) = socket.recv_from(&mut buf)?;
        Ok(from)
    });
    rx.recv_timeout(Duration::from_secs(3))
        .context("the outside's socket")?;
    let to: SocketAddr = format!("{WORLD}:{REPLY_FROM}").parse()?;
    w.container
        .run(move || -> std::io::Result<()> {
            let socket = std::net::UdpSocket::bind(("0.0.0.0", CONTAINER_PORT))?;
            socket.send_to(b"open", to)?;
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the container's sender"))??;
    listening
        .join()
        .map_err(|_| anyhow::anyhow!("the outside's listener"))?
}

/// The flow's replies, bounced as live frames out of the outside's end of
/// the host's uplink (BPF_PROG_TEST_RUN on GENERATOR_CPU, which saturates
/// the path; trafgen's rate here was too low and too uneven to load it);
/// the host's receive path polls in a NAPI thread on PATH_CPU (GRO on, as
/// on a NIC), the same for both systems.
fn reply_rate(w: &World, seconds: u64) -> anyhow::Result<ReplyRate> {
    let translated = open_udp_flow(w)?;
    eprintln!(
        "{}: the flow leaves as {translated}; replies for {seconds} s",
        w.system.name()
    );
    attach_sink(&w.container);
    steer_receive_path(&w.host, "uplink0", PATH_CPU, true)?;
    let std::net::IpAddr::V4(to) = translated.ip() else {
        bail!("an IPv6 translation");
    };
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(w.outside.mac("eth0"), w.host.mac("uplink0"))
        .ipv4(
            WORLD.parse::<std::net::Ipv4Addr>()?.octets(),
            to.octets(),
            64,
        )
        .udp(REPLY_FROM, translated.port())
        .write(&mut frame, &[0x41; 22])?;
    let frames = vec![BenchFrame(frame.as_slice().try_into()?); 64];
    let peer = veth_peer(&w.host, "uplink0")?;
    let delivered = || link_packets(&w.container, "eth0", "rx");
    let quiet = CpuTicks::read(PATH_CPU)?;
    std::thread::sleep(Duration::from_secs(2));
    let idle = quiet.busy_until(&CpuTicks::read(PATH_CPU)?);
    let offered = AtomicU64::new(0);
    let run_for = Duration::from_secs(seconds) + Duration::from_millis(2500);
    let ((a, d0, s0), (b, d1, s1)) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let generating = scope
            .spawn(|| live_frames(&w.outside, peer, GENERATOR_CPU, &frames, run_for, &offered));
        std::thread::sleep(Duration::from_millis(1500));
        let sent = || offered.load(Ordering::Relaxed);
        let a = (CpuTicks::read(PATH_CPU)?, delivered()?, sent());
        std::thread::sleep(Duration::from_secs(seconds));
        let b = (CpuTicks::read(PATH_CPU)?, delivered()?, sent());
        generating
            .join()
            .map_err(|_| anyhow::anyhow!("the generator's thread"))??;
        Ok((a, b))
    })?;
    let secs = seconds as f64;
    let delivered_pps = (d1 - d0) as f64 / secs;
    if delivered_pps < 1000.0 {
        bail!(
            "{}: only {delivered_pps:.0} replies/s reached the container (of {:.0}/s sent)",
            w.system.name(),
            (s1 - s0) as f64 / secs
        );
    }
    let share = (a.busy_until(&b) - idle).max(0.01);
    Ok(ReplyRate {
        system: w.system,
        seconds,
        sent_pps: (s1 - s0) as f64 / secs,
        delivered_pps,
        path_cpu_share: share,
        mpps_per_core: delivered_pps / share / 1e6,
    })
}

/// The masquerade path (an established flow's SNAT, at the endpoint's TC)
/// and the reverse path at both uplink hooks, one run at a time (each
/// rewrites the packet), interleaved with the no-ops.
fn path_costs(runs: usize) -> Vec<PathCost> {
    use netd::dataplane::maps::MapWriter;
    let mut f = m::fixture();
    f.load_baselines();
    for op in m::a_state(EGRESS_MASQUERADE).iter().chain(&m::b_here()) {
        f.maps.apply(op).expect("state");
    }
    m::a_flow(&mut f);
    m::b_flows(&mut f);
    let out = m::from_a(64);
    let reply = m::tcp_reply(m::GIVEN);
    let mut samples: [Vec<f64>; 5] = Default::default();
    for _ in 0..runs {
        samples[0].push(f.time_tc(TC_BASELINE, &out, 1));
        samples[1].push(f.time_tc(TC_ENDPOINT, &out, 1));
        samples[2].push(f.time_tc(TC_UPLINK, &reply, 1));
        samples[3].push(f.time_xdp(XDP_BASELINE, &reply, 1));
        samples[4].push(f.time_xdp(XDP_UPLINK, &reply, 1));
    }
    let [tc_noop, masq, tc_reverse, xdp_noop, xdp_reverse] = samples;
    let (tc, xdp) = (median(&tc_noop), median(&xdp_noop));
    vec![
        PathCost::of("tc no-op (single runs)", tc_noop, tc),
        PathCost::of("tc: masquerade, established flow", masq, tc),
        PathCost::of("tc: a reply turned back, at a TC uplink", tc_reverse, tc),
        PathCost::of("xdp no-op (single runs)", xdp_noop, xdp),
        PathCost::of(
            "xdp: a reply turned back, at an XDP uplink",
            xdp_reverse,
            xdp,
        ),
    ]
}

#[derive(Serialize)]
struct Targets {
    throughput: f64,
    connections: f64,
    rr_p99: f64,
    replies_per_core: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("the reply-rate bench needs two CPUs: one for trafgen, one for the path");
    }
    let mut traffics = Vec::new();
    let mut replies = Vec::new();
    for build in [docker_world as fn() -> anyhow::Result<World>, netd_world] {
        let w = build()?;
        traffics.push(traffic(&w, &args)?);
        replies.push(reply_rate(&w, args.reply_seconds)?);
    }
    let costs = path_costs(args.runs);
    let (docker, netd) = (&traffics[0], &traffics[1]);
    let targets = Targets {
        throughput: netd.throughput_gbit_s / docker.throughput_gbit_s,
        connections: netd.connections_per_sec / docker.connections_per_sec,
        rr_p99: netd.rr_p99_us / docker.rr_p99_us,
        replies_per_core: replies[1].mpps_per_core / replies[0].mpps_per_core,
    };
    println!(
        "{:<38} {:>10} {:>10} {:>9} {:>9} {:>14}",
        "container to the outside", "Gbit/s", "conn/s", "RR p50", "RR p99", "replies Mpps/core"
    );
    for (t, r) in traffics.iter().zip(&replies) {
        println!(
            "{:<38} {:>10.2} {:>10.0} {:>7.1}us {:>7.1}us {:>14.3}",
            t.system.name(),
            t.throughput_gbit_s,
            t.connections_per_sec,
            t.rr_p50_us,
            t.rr_p99_us,
            r.mpps_per_core
        );
    }
    println!(
        "netd / Docker: throughput {:.2}x (target >= 1.1), connections {:.2}x (>= 1.2), \
         RR p99 {:.2}x (<= 0.9), replies per core {:.2}x (>= 2)",
        targets.throughput, targets.connections, targets.rr_p99, targets.replies_per_core
    );
    print_path_costs(&costs);
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let report = serde_json::json!({
        "traffic": traffics,
        "replies": replies,
        "path_costs": costs,
        "targets": targets,
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", args.json.display());
    let per = |f: &dyn Fn(&Traffic) -> f64| -> Vec<(String, f64)> {
        traffics
            .iter()
            .map(|t| (t.system.name().to_string(), f(t)))
            .collect()
    };
    write_html(
        &args.json.with_extension("html"),
        "A container's way out: netd's masquerading against Docker's bridge and iptables",
        &[
            "One container to a server behind the host's uplink (a plain veth), each system built in this run on the same topology.".into(),
            format!(
                "netd / Docker: throughput {:.2}x, connections {:.2}x, RR p99 {:.2}x, replies per core {:.2}x.",
                targets.throughput, targets.connections, targets.rr_p99, targets.replies_per_core
            ),
        ],
        &[
            Bars {
                title: "TCP throughput (iperf3)".into(),
                unit: "Gbit/s",
                bars: per(&|t| t.throughput_gbit_s),
            },
            Bars {
                title: "new connections per second".into(),
                unit: "connections/s",
                bars: per(&|t| t.connections_per_sec),
            },
            Bars {
                title: "request/response p99".into(),
                unit: "µs",
                bars: per(&|t| t.rr_p99_us),
            },
            Bars {
                title: "replies per busy second of one core".into(),
                unit: "Mpps",
                bars: replies
                    .iter()
                    .map(|r| (r.system.name().to_string(), r.mpps_per_core))
                    .collect(),
            },
            Bars {
                title: "ns per packet (single runs)".into(),
                unit: "ns",
                bars: costs
                    .iter()
                    .map(|c| (c.path.to_string(), c.median_ns))
                    .collect(),
            },
        ],
    )?;
    Ok(())
}
