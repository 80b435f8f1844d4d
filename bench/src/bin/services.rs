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
    maps::NetworkEntry,
    program_names::{TC_BASELINE, TC_ENDPOINT},
    service::{MaglevTable, ServiceEntry, ServiceKey, VipEntry, PROTO_TCP},
};
use netd_tests::{
    fixture::{active_backend, local_endpoint, maglev_all_to, Fixture, TempPins},
    netns::{veth_between, NetNs},
    process::Netd,
};
use serde::Serialize;

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

/// The LB path's cost. A repeated BPF_PROG_TEST_RUN runs on the packet
/// as the previous run left it, so the established path is timed on a
/// ping-pong pair of services (VIP:80 → backend B:8080, and B:8080 → VIP:80
/// as a second service in the maps), every repeat a conntrack hit and a
/// DNAT. A flow's first packet can only be timed by single runs on fresh
/// packets; those carry a fixed cost of their own, so they are shown
/// beside single runs of the no-op and of plain local forwarding.
#[derive(Serialize)]
struct LbPath {
    repeat: u32,
    tc_baseline_ns: f64,
    established_ns: f64,
    /// The same endpoint program on a packet to a container's own address
    /// (no VIP): what the service path adds to plain forwarding.
    plain_forward_ns: f64,
    single_runs: usize,
    single_tc_baseline_ns: f64,
    single_plain_forward_ns: f64,
    single_first_packet_ns: f64,
}

#[derive(Serialize)]
struct Report {
    seconds: u64,
    rounds: usize,
    threads: usize,
    points: Vec<Point>,
    lb_path: LbPath,
}

/// The client and backends, each serving TCP on `TARGET`: read one byte,
/// answer one byte, close.
struct World {
    client: NetNs,
    backends: Vec<NetNs>,
    stop: Arc<AtomicBool>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(120));
    }
}

fn world() -> World {
    let stop = Arc::new(AtomicBool::new(false));
    let backends: Vec<NetNs> = (0..BACKENDS).map(|_| NetNs::new("bsB")).collect();
    World {
        client: NetNs::new("bsC"),
        backends,
        stop,
    }
}

/// Each backend serving on `TARGET`.
fn serve(w: &World) {
    for ns in &w.backends {
        serve_bytes(ns, TARGET, w.stop.clone());
    }
}

/// The median connection rate to `vip`'s service port over `args.rounds`.
fn median_rate(w: &World, vip: &str, args: &Args) -> anyhow::Result<f64> {
    connections::median_rate(
        &w.client,
        format!("{vip}:{PORT}").parse()?,
        args.seconds,
        args.threads,
        args.rounds,
    )
}

fn rss_mib(pid: u32) -> Option<f64> {
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

fn service_specs(range: std::ops::Range<usize>) -> serde_json::Value {
    serde_json::Value::Array(
        range
            .map(|i| {
                serde_json::json!({
                    "name": format!("s{i}"),
                    "network": "bench",
                    "ports": [format!("{PORT}:{TARGET}/tcp")],
                    "selector": "app=bench",
                })
            })
            .collect(),
    )
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

fn bench_netd(args: &Args, services: usize) -> anyhow::Result<Point> {
    let w = world();
    let host = NetNs::new("bsH");
    let pins = TempPins::new();
    let mut netd = Netd::start(&host, pins.layout.root(), netd_tests::free_port(), &[]);
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "bench", "--subnet", "10.60.0.0/16"]);
    netd.endpoint("client", "bench", &w.client, &[]);
    for (i, ns) in w.backends.iter().enumerate() {
        netd.endpoint(&format!("b{i}"), "bench", ns, &["--label", "app=bench"]);
    }
    serve(&w);
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), service_specs(0..services).to_string())?;
    let path = file.path().to_str().context("path")?.to_string();
    let (out, took) = timed(|| netd.cli(&["service", "create", "--file", &path]));
    if !out.0 {
        bail!("netd batch of {services}: {}", out.2);
    }
    let measured_name = format!("s{}", measured(services));
    let inspect: serde_json::Value =
        serde_json::from_str(&netd.ok(&["service", "inspect", &measured_name]))?;
    let vip = inspect["vip"].as_str().context("VIP")?.to_string();
    let rate = median_rate(&w, &vip, args)?;
    let last = format!("s{}", services - 1);
    let (_, change) = timed(|| netd.ok(&["service", "update", &last, "--weight", "b3=2"]));
    let rss = netd.pid().and_then(rss_mib);
    let _ = netd.stop();
    Ok(Point {
        system: System::Netd,
        services,
        connections_per_sec: rate,
        program_secs: took.as_secs_f64(),
        change_ms: change.as_secs_f64() * 1e3,
        rss_mib: rss,
    })
}

/// The client and backends on a Linux bridge (as Docker and kubenet
/// build it), br_netfilter on so that bridged replies see conntrack;
/// VIPs are routed through the bridge's address, as a service CIDR is.
fn bridge(w: &World) -> NetNs {
    let host = NetNs::new("bsK");
    host.ip(&["link", "add", "br0", "type", "bridge"]);
    host.ip(&["addr", "add", "10.61.255.254/16", "dev", "br0"]);
    host.ip(&["link", "set", "br0", "up"]);
    for (i, ns) in std::iter::once(&w.client).chain(&w.backends).enumerate() {
        let outside = format!("bsv{i}");
        veth_between(
            &host,
            &outside,
            "192.168.250.1/32",
            ns,
            "eth0",
            &format!("10.61.0.{}/16", i + 1),
        );
        host.ip(&["addr", "flush", "dev", &outside]);
        host.ip(&["link", "set", &outside, "master", "br0"]);
        ns.ip(&["route", "add", "default", "via", "10.61.255.254"]);
    }
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.bridge.bridge-nf-call-iptables", "1"),
    ] {
        let out = host.exec("sysctl", &["-qw", &format!("{key}={value}")]);
        if !out.status.success() {
            eprintln!("sysctl {key}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    host
}

/// The service whose VIP the connections go to: the middle one, so that
/// iptables' KUBE-SERVICES chain is walked halfway, as on average (the
/// first rule would hide its linear cost).
fn measured(services: usize) -> usize {
    services / 2
}

fn vip_of(i: usize) -> String {
    format!("10.62.{}.{}", i / 250, i % 250 + 1)
}

fn backend_ip(b: usize) -> String {
    format!("10.61.0.{}", b + 2)
}

/// kube-proxy's iptables mode, for `services` services.
fn iptables_rules(services: usize) -> String {
    let mut r = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
    );
    let mut rules = String::new();
    for s in 0..services {
        r.push_str(&format!(":KUBE-SVC-{s} - [0:0]\n"));
        rules.push_str(&format!(
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"default/s{s}:http cluster IP\" -m tcp --dport {PORT} -j KUBE-SVC-{s}\n",
            vip_of(s)
        ));
        rules.push_str(&svc_chain(s));
    }
    r.push_str(&rules);
    r.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE\nCOMMIT\n",
    );
    r
}

/// One service's chain and its endpoint chains (declared by the caller).
fn svc_chain(s: usize) -> String {
    let mut out = String::new();
    let mut decl = String::new();
    for b in 0..BACKENDS {
        decl.push_str(&format!(":KUBE-SEP-{s}-{b} - [0:0]\n"));
        let left = BACKENDS - b;
        if left > 1 {
            out.push_str(&format!(
                "-A KUBE-SVC-{s} -m statistic --mode random --probability {:.11} -j KUBE-SEP-{s}-{b}\n",
                1.0 / left as f64
            ));
        } else {
            out.push_str(&format!("-A KUBE-SVC-{s} -j KUBE-SEP-{s}-{b}\n"));
        }
        let ip = backend_ip(b);
        out.push_str(&format!(
            "-A KUBE-SEP-{s}-{b} -s {ip}/32 -j KUBE-MARK-MASQ\n\
             -A KUBE-SEP-{s}-{b} -p tcp -m tcp -j DNAT --to-destination {ip}:{TARGET}\n"
        ));
    }
    decl + &out
}

/// kube-proxy's nftables mode, for `services` services.
fn nft_rules(services: usize) -> String {
    let mut r = String::from(
        "table ip kube-proxy {\n\
         chain mark-for-masquerade { meta mark set meta mark or 0x4000; }\n\
         chain masquerading { type nat hook postrouting priority srcnat; meta mark & 0x4000 == 0x4000 masquerade; }\n\
         chain nat-prerouting { type nat hook prerouting priority dstnat; jump services; }\n\
         chain nat-output { type nat hook output priority -100; jump services; }\n",
    );
    r.push_str("map service-ips { type ipv4_addr . inet_proto . inet_service : verdict;\n");
    if services > 0 {
        r.push_str("elements = { ");
        let elements: Vec<String> = (0..services)
            .map(|s| format!("{} . tcp . {PORT} : goto service-{s}", vip_of(s)))
            .collect();
        r.push_str(&elements.join(", "));
        r.push_str(" };\n");
    }
    r.push_str("}\nchain services { ip daddr . meta l4proto . th dport vmap @service-ips; }\n");
    for s in 0..services {
        r.push_str(&nft_service(s));
    }
    r.push_str("}\n");
    r
}

fn nft_service(s: usize) -> String {
    let mut r = String::new();
    let arms: Vec<String> = (0..BACKENDS)
        .map(|b| format!("{b} : goto endpoint-{s}-{b}"))
        .collect();
    r.push_str(&format!(
        "chain service-{s} {{ numgen random mod {BACKENDS} vmap {{ {} }}; }}\n",
        arms.join(", ")
    ));
    for b in 0..BACKENDS {
        let ip = backend_ip(b);
        r.push_str(&format!(
            "chain endpoint-{s}-{b} {{ ip saddr {ip} jump mark-for-masquerade; meta l4proto tcp dnat to {ip}:{TARGET}; }}\n"
        ));
    }
    r
}

fn bench_kernel(args: &Args, system: System, services: usize) -> anyhow::Result<Point> {
    let w = world();
    let host = bridge(&w);
    serve(&w);
    let (program, change) = match system {
        System::Iptables => {
            let program = load_rules(&host, "iptables-restore", &[], &iptables_rules(services))?;
            // kube-proxy's partial sync: only the changed service's chains,
            // restored without flushing the rest.
            let s = services - 1;
            let delta = format!("*nat\n:KUBE-SVC-{s} - [0:0]\n{}COMMIT\n", svc_chain(s));
            let change = load_rules(&host, "iptables-restore", &["--noflush"], &delta)?;
            (program, change)
        }
        System::Nftables => {
            let program = load_rules(&host, "nft", &["-f"], &nft_rules(services))?;
            let s = services - 1;
            let delta = format!(
                "flush chain ip kube-proxy service-{s}\n\
                 add rule ip kube-proxy service-{s} numgen random mod {BACKENDS} vmap {{ {} }}\n",
                (0..BACKENDS)
                    .map(|b| format!("{b} : goto endpoint-{s}-{}", (b + 1) % BACKENDS))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let change = load_rules(&host, "nft", &["-f"], &delta)?;
            (program, change)
        }
        System::Netd => unreachable!("netd has its own setup"),
    };
    let rate = median_rate(&w, &vip_of(measured(services)), args)?;
    Ok(Point {
        system,
        services,
        connections_per_sec: rate,
        program_secs: program.as_secs_f64(),
        change_ms: change.as_secs_f64() * 1e3,
        rss_mib: None,
    })
}

/// The endpoint program's LB path on crafted packets: a client at
/// 10.1.0.2 to VIP 10.1.0.100:80, ten backends.
fn lb_path(repeat: u32) -> LbPath {
    let mut f = Fixture::load();
    f.load_baselines();
    let host_mac = [0x0a, 0, 0, 0, 0, 1];
    let client = [10, 1, 0, 2];
    let client_mac = [0x02, 0x6e, 10, 1, 0, 2];
    let vip = [10, 1, 0, 100];
    let mut ops = vec![MapOp::put(
        tables::NETD_NETWORKS,
        1,
        NetworkEntry {
            gateway: [10, 1, 0, 1],
            vni: 0,
        },
    )];
    ops.extend(local_endpoint(1, 1, client, client_mac, host_mac));
    let mut table = MaglevTable::default();
    for b in 0..BACKENDS as u8 {
        let ip = [10, 1, 0, 10 + b];
        ops.extend(local_endpoint(
            50 + u32::from(b),
            1,
            ip,
            [0x02, 0x6e, 10, 1, 0, 10 + b],
            host_mac,
        ));
        ops.push(active_backend(1, ip));
    }
    for (i, slot) in table.slots.iter_mut().enumerate() {
        *slot = u32::from_ne_bytes([10, 1, 0, 10 + (i % BACKENDS) as u8]);
    }
    ops.push(MapOp::put(tables::NETD_MAGLEV, 1, table));
    ops.push(MapOp::put(
        tables::NETD_SERVICES,
        ServiceKey {
            vip,
            port: PORT.to_be_bytes(),
            proto: PROTO_TCP,
            _pad: 0,
        },
        ServiceEntry {
            table: 1,
            active: BACKENDS as u32,
            target_port: TARGET.to_be_bytes(),
            flags: 0,
            affinity_secs: 0,
        },
    ));
    ops.push(MapOp::put(
        tables::NETD_VIPS,
        vip,
        VipEntry {
            network: 1,
            table: 1,
        },
    ));
    for op in &ops {
        f.maps.apply(op).expect("map write");
    }
    let packet = |port: u16| {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2(client_mac, host_mac)
            .ipv4(client, vip, 64)
            .tcp(port, PORT, 1, 64240)
            .write(&mut out, b"x")
            .expect("packet");
        out
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    const RUNS: usize = 4000;
    let single = |f: &mut Fixture, name: &str, packets: &mut dyn Iterator<Item = Vec<u8>>| {
        median(packets.map(|p| f.time_tc(name, &p, 1)).collect())
    };
    // A new flow per run: each a conntrack miss, a Maglev pick, two inserts.
    let first = single(
        &mut f,
        TC_ENDPOINT,
        &mut (0..RUNS).map(|i| packet(20000 + i as u16)),
    );
    let noop_single = single(&mut f, TC_BASELINE, &mut (0..RUNS).map(|_| packet(20000)));
    let to_backend = |port: u16| {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2(client_mac, host_mac)
            .ipv4(client, [10, 1, 0, 10], 64)
            .tcp(port, 9999, 1, 64240)
            .write(&mut out, b"x")
            .expect("packet");
        out
    };
    let plain = single(
        &mut f,
        TC_ENDPOINT,
        &mut (0..RUNS).map(|_| to_backend(20000)),
    );

    // Before 10.1.0.10 is made a VIP below.
    let plain_forward = median(
        (0..5)
            .map(|_| f.time_tc(TC_ENDPOINT, &to_backend(20000), repeat))
            .collect(),
    );

    // The ping-pong pair: backend 10.1.0.10:8080 is also a VIP, back to
    // VIP:80, so every repeated run is an established flow's DNAT.
    let b = [10, 1, 0, 10];
    for op in [
        active_backend(2, vip),
        MapOp::put(tables::NETD_MAGLEV, 2, maglev_all_to(vip)),
        MapOp::put(
            tables::NETD_SERVICES,
            ServiceKey {
                vip: b,
                port: TARGET.to_be_bytes(),
                proto: PROTO_TCP,
                _pad: 0,
            },
            ServiceEntry {
                table: 2,
                active: 1,
                target_port: PORT.to_be_bytes(),
                flags: 0,
                affinity_secs: 0,
            },
        ),
        MapOp::put(
            tables::NETD_VIPS,
            b,
            VipEntry {
                network: 1,
                table: 2,
            },
        ),
    ] {
        f.maps.apply(&op).expect("map write");
    }
    // Port 30000 picks backend 10.1.0.10 in this table? Find a source
    // port whose first run lands on it.
    let port = (30000..40000u16)
        .find(|p| {
            let run = f.run_tc(TC_ENDPOINT, &packet(*p)).expect("run");
            run.output[30..34] == b
        })
        .expect("a flow to 10.1.0.10");
    let established = median(
        (0..5)
            .map(|_| f.time_tc(TC_ENDPOINT, &packet(port), repeat))
            .collect(),
    );
    let noop = median(
        (0..5)
            .map(|_| f.time_tc(TC_BASELINE, &packet(port), repeat))
            .collect(),
    );
    LbPath {
        repeat,
        tc_baseline_ns: noop,
        established_ns: established,
        plain_forward_ns: plain_forward,
        single_runs: RUNS,
        single_tc_baseline_ns: noop_single,
        single_plain_forward_ns: plain,
        single_first_packet_ns: first,
    }
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
