//! Two sandboxes on one host, netd versus a Linux bridge with veths (what
//! Docker's bridge driver builds), both set up in this run: TCP throughput
//! (iperf3), request/response latency, and ns/packet of the endpoint
//! program's local-forward path beside the do-nothing programs.

use std::path::PathBuf;

use clap::Parser;
use netd::dataplane::{
    maps::{MapOp, MapWriter},
    tables,
};
use netd_bench::{measure, print_comparison, Pair};
use netd_common::{
    maps::{EndpointEntry, LocalEndpointEntry, NetworkEntry, LOCAL_NO_POLICY, LOCAL_NO_SERVICE},
    program_names::{TC_BASELINE, TC_ENDPOINT, XDP_BASELINE},
};
use netd_tests::{
    fixture::{Fixture, TempPins},
    netns::{sh, veth_between, NetNs},
    process::Netd,
};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Seconds of iperf3 per setup.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Request/response round trips per setup.
    #[arg(long, default_value_t = 20_000)]
    round_trips: usize,
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    #[arg(long, default_value = "target/bench/host.json")]
    json: PathBuf,
}

fn bridge_pair() -> (Pair, NetNs) {
    let host = NetNs::new("bnBr");
    host.ip(&["link", "add", "br0", "type", "bridge"]);
    host.ip(&["link", "set", "br0", "up"]);
    let client = NetNs::new("bnC");
    let server = NetNs::new("bnS");
    veth_between(
        &host,
        "vc",
        "192.168.255.1/32",
        &client,
        "eth0",
        "10.41.0.2/24",
    );
    veth_between(
        &host,
        "vs",
        "192.168.255.2/32",
        &server,
        "eth0",
        "10.41.0.3/24",
    );
    for port in ["vc", "vs"] {
        host.ip(&["addr", "flush", "dev", port]);
        host.ip(&["link", "set", port, "master", "br0"]);
    }
    (
        Pair {
            client,
            server,
            server_ip: "10.41.0.3".into(),
        },
        host,
    )
}

fn netd_pair() -> (Pair, NetNs, Netd, TempPins) {
    let host = NetNs::new("bnNd");
    let pins = TempPins::new();
    let mut netd = Netd::start(&host, pins.layout.root(), 19990, &["--log-level", "warn"]);
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "bench", "--subnet", "10.42.0.0/24"]);
    let client = NetNs::new("bnC");
    let server = NetNs::new("bnS");
    netd.endpoint("client", "bench", &client, &[]);
    let server_ip = netd.endpoint("server", "bench", &server, &[]);
    (
        Pair {
            client,
            server,
            server_ip,
        },
        host,
        netd,
        pins,
    )
}

#[derive(Serialize)]
struct PathCost {
    tc_local_forward_ns: f64,
    tc_baseline_ns: f64,
    xdp_baseline_ns: f64,
}

fn tc_path(repeat: u32) -> PathCost {
    let mut f = Fixture::load();
    f.load_baselines();
    let a_mac = [2, 0x6e, 10, 1, 0, 2];
    let b_mac = [2, 0x6e, 10, 1, 0, 3];
    for op in [
        MapOp::put(
            tables::NETD_NETWORKS,
            1,
            NetworkEntry {
                gateway: [10, 1, 0, 1],
                vni: 0,
            },
        ),
        MapOp::put(
            tables::NETD_LOCAL_EPS,
            1,
            LocalEndpointEntry {
                ipv4: [10, 1, 0, 2],
                network: 1,
                mac: a_mac,
                host_mac: [2; 6],
                flags: LOCAL_NO_POLICY | LOCAL_NO_SERVICE,
            },
        ),
        MapOp::put(
            tables::NETD_LOCAL_EPS,
            50,
            LocalEndpointEntry {
                ipv4: [10, 1, 0, 3],
                network: 1,
                mac: b_mac,
                host_mac: [3; 6],
                flags: LOCAL_NO_POLICY | LOCAL_NO_SERVICE,
            },
        ),
        MapOp::put(
            tables::NETD_ENDPOINTS,
            [10, 1, 0, 3],
            EndpointEntry {
                ifindex: 50,
                network: 1,
                mac: b_mac,
                host: 0,
            },
        ),
    ] {
        f.maps.apply(&op).expect("map write");
    }
    // The rewrite (destination MAC) is the same on every repeat, so
    // repeating over one buffer measures the same path every time.
    let packet = testpkt::ipv4_udp_between(a_mac, [10, 1, 0, 2], b_mac, [10, 1, 0, 3]);
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut fwd = Vec::new();
    let mut tc = Vec::new();
    let mut xdp = Vec::new();
    for _ in 0..5 {
        fwd.push(f.time_tc(TC_ENDPOINT, &packet, repeat));
        tc.push(f.time_tc(TC_BASELINE, &packet, repeat));
        xdp.push(f.time_xdp(XDP_BASELINE, &packet, repeat));
    }
    PathCost {
        tc_local_forward_ns: median(fwd),
        tc_baseline_ns: median(tc),
        xdp_baseline_ns: median(xdp),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sh("which", &["iperf3"]);
    let (pair, _host) = bridge_pair();
    let bridge = measure("linux bridge", &pair, args.seconds, args.round_trips)?;
    drop(pair);
    let (pair, _host, mut netd, _pins) = netd_pair();
    let netd_setup = measure("netd", &pair, args.seconds, args.round_trips)?;
    drop(pair);
    let _ = netd.stop();
    let cost = tc_path(args.repeat);

    print_comparison("same host", &bridge, &netd_setup);
    println!(
        "TC local forward {:.0} ns/packet: {:.2}x the TC no-op ({:.0} ns), {:.2}x the XDP no-op ({:.0} ns)",
        cost.tc_local_forward_ns,
        cost.tc_local_forward_ns / cost.tc_baseline_ns,
        cost.tc_baseline_ns,
        cost.tc_local_forward_ns / cost.xdp_baseline_ns,
        cost.xdp_baseline_ns
    );
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let report = serde_json::json!({ "setups": [&bridge, &netd_setup], "tc_path": cost });
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", args.json.display());
    netd_bench::report::write_html(
        &args.json.with_extension("html"),
        "netd on one host against a Linux bridge",
        &[
            "Two sandboxes, built in the same run: through netd, and through a bridge with veths."
                .into(),
            netd_bench::report::comparison_line(&bridge, &netd_setup),
            format!(
                "TC local forward {:.0} ns: {:.2}x the TC no-op.",
                cost.tc_local_forward_ns,
                cost.tc_local_forward_ns / cost.tc_baseline_ns
            ),
        ],
        &netd_bench::report::setup_charts(
            "same host",
            &[&bridge, &netd_setup],
            &[
                ("TC local forward".into(), cost.tc_local_forward_ns),
                ("TC no-op".into(), cost.tc_baseline_ns),
                ("XDP no-op".into(), cost.xdp_baseline_ns),
            ],
        ),
    )?;
    Ok(())
}
