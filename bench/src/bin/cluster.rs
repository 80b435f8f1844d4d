//! Cluster scale: one netd, a simulated cluster of external hosts and
//! their endpoints written straight into etcd (as the other hosts' netds
//! and `netd host add --external` would leave them), on one overlay
//! network. Measures how long netd takes to hold them all in its maps,
//! its RSS then, a restart with them, and how long one more endpoint takes
//! to reach this host's `NETD_ENDPOINTS`.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use aya::maps::{HashMap, Map, MapData};
use clap::Parser;
use netd_common::maps::EndpointEntry;
use netd_tests::{cluster::cluster, netns::NetNs};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// External hosts in the simulated cluster.
    #[arg(long, default_value_t = 1000)]
    hosts: u32,
    /// Endpoints, spread evenly over the hosts.
    #[arg(long, default_value_t = 100_000)]
    endpoints: u32,
    /// Single endpoint changes timed after the cluster is in.
    #[arg(long, default_value_t = 10)]
    changes: u32,
    #[arg(long, default_value = "target/bench/cluster.json")]
    json: PathBuf,
}

#[derive(Serialize)]
struct Report {
    hosts: u32,
    endpoints: u32,
    /// Writing the records into etcd (the bench's own cost, for scale).
    store_write_s: f64,
    /// From the last record written until NETD_ENDPOINTS holds them all.
    converge_s: f64,
    rss_mib: f64,
    /// A restart of netd with the cluster in the store: until it serves.
    restart_s: f64,
    /// One new endpoint written into etcd → in this host's NETD_ENDPOINTS.
    change_ms: Vec<f64>,
    change_p50_ms: f64,
    change_max_ms: f64,
    /// netd's log line for the last change's pass: its steps' times.
    last_pass: String,
}

const NETWORK: &str = "big";
/// Room for 1M addresses: the endpoints take the first ones.
const SUBNET: &str = "10.64.0.0/12";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.endpoints >= 1 << 20 || args.hosts >= 60_000 {
        bail!("at most 1,048,575 endpoints and 59,999 hosts");
    }
    let max_endpoints = (args.endpoints + args.changes + 1024).next_power_of_two();
    let max_hosts = (args.hosts + 16).next_power_of_two().max(16);
    let extra = vec![
        "--uplink=uplink0".to_string(),
        format!("--max-endpoints={max_endpoints}"),
        format!("--max-hosts={max_hosts}"),
    ];
    eprintln!(
        "cluster bench: {} hosts, {} endpoints (maps sized {max_endpoints} / {max_hosts})",
        args.hosts, args.endpoints
    );
    let (underlay, etcd, mut hosts) = cluster(1, move |_| extra.clone());
    let host = &mut hosts[0];
    host.netd.ok(&[
        "network",
        "create",
        NETWORK,
        "--subnet",
        SUBNET,
        "--overlay",
    ]);
    let endpoints_map = host.pins().map(netd_common::map_names::NETD_ENDPOINTS);
    let store = format!("http://{}", etcd.endpoint());

    eprintln!("writing the cluster into etcd");
    let started = Instant::now();
    let (hosts_n, endpoints_n) = (args.hosts, args.endpoints);
    in_ns(&underlay, {
        let store = store.clone();
        move || write_cluster(&store, hosts_n, endpoints_n)
    })?;
    let store_write_s = started.elapsed().as_secs_f64();
    eprintln!("written in {store_write_s:.1} s; waiting for netd's maps");

    let started = Instant::now();
    let want = args.endpoints as usize;
    loop {
        let have = count(&endpoints_map)?;
        if have >= want {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("after 600 s NETD_ENDPOINTS holds {have} of {want}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let converge_s = started.elapsed().as_secs_f64();
    let pid = host.netd.pid().context("netd's pid")?;
    let rss_mib = netd_bench::rss_mib(pid).context("netd's RSS")?;
    eprintln!("converged in {converge_s:.1} s, RSS {rss_mib:.0} MiB");

    let mut change_ms = Vec::new();
    for i in 0..args.changes {
        let ip = endpoint_ip(args.endpoints + i);
        let started = Instant::now();
        in_ns(&underlay, {
            let store = store.clone();
            let host = format!("ext-{}", i % args.hosts);
            move || write_endpoints(&store, &[(args.endpoints + i, host)])
        })?;
        loop {
            if has(&endpoints_map, ip)? {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("endpoint {ip} not in NETD_ENDPOINTS after 120 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        change_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    // Where a change's pass spent its time, as netd logs it.
    let last_pass = host
        .netd
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("reconciled"))
        .map(|l| l.trim().to_string())
        .unwrap_or_default();
    let mut sorted = change_ms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let change_p50_ms = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let change_max_ms = sorted.last().copied().unwrap_or(0.0);

    host.netd.stop();
    let started = Instant::now();
    host.netd.restart(&host.ns);
    let restart_s = started.elapsed().as_secs_f64();

    let report = Report {
        hosts: args.hosts,
        endpoints: args.endpoints,
        store_write_s,
        converge_s,
        rss_mib,
        restart_s,
        change_ms,
        change_p50_ms,
        change_max_ms,
        last_pass,
    };
    let line = format!(
        "{} endpoints on {} hosts: in this host's maps {:.1} s after the last write, RSS {:.0} MiB, \
         restart {:.1} s; one endpoint change reaches the maps in {:.0} ms (p50 of {}, max {:.0} ms; target 100 ms).",
        report.endpoints,
        report.hosts,
        report.converge_s,
        report.rss_mib,
        report.restart_s,
        report.change_p50_ms,
        report.change_ms.len(),
        report.change_max_ms
    );
    println!("{line}");
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", args.json.display());
    netd_bench::report::write_html(
        &args.json.with_extension("html"),
        "Cluster scale: one netd in a simulated cluster",
        &[
            "External hosts and their endpoints written into etcd, one overlay network; one netd with its uplink on an underlay namespace.".into(),
            line,
            format!("The last change's pass, as netd logged it: {}", report.last_pass),
        ],
        &[
            netd_bench::report::Bars {
                title: "time".into(),
                unit: "s",
                bars: vec![
                    ("write the store (the bench)".into(), report.store_write_s),
                    ("into netd's maps".into(), report.converge_s),
                    ("netd restart".into(), report.restart_s),
                ],
            },
            netd_bench::report::Bars {
                title: "one endpoint change, store to map".into(),
                unit: "ms",
                bars: report
                    .change_ms
                    .iter()
                    .enumerate()
                    .map(|(i, ms)| (format!("change {}", i + 1), *ms))
                    .collect(),
            },
        ],
    )?;
    Ok(())
}

fn in_ns<T: Send + 'static>(
    ns: &NetNs,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    ns.run(f)
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?
}

/// The `n`th endpoint's address: 10.64.0.0/12 from .0.10 on.
fn endpoint_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 10)) + n)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// etcd takes at most 128 operations in one transaction.
const BATCH: usize = 128;

async fn put_all(store: &str, records: Vec<(String, String)>) -> anyhow::Result<()> {
    let mut client = etcd_client::Client::connect([store], None)
        .await
        .with_context(|| format!("connecting to etcd at {store}"))?;
    for chunk in records.chunks(BATCH) {
        let ops: Vec<etcd_client::TxnOp> = chunk
            .iter()
            .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        client
            .txn(etcd_client::Txn::new().and_then(ops))
            .await
            .context("writing a batch")?;
    }
    Ok(())
}

/// The network's id, as netd stored it.
async fn network_id(store: &str) -> anyhow::Result<String> {
    let mut client = etcd_client::Client::connect([store], None).await?;
    let options = etcd_client::GetOptions::new().with_prefix();
    let found = client.get("/netd/networks/", Some(options)).await?;
    for kv in found.kvs() {
        let record: serde_json::Value = serde_json::from_slice(kv.value())?;
        if record["name"] == NETWORK {
            return Ok(record["id"].as_str().unwrap_or_default().to_string());
        }
    }
    bail!("no network {NETWORK} in the store")
}

fn write_cluster(store: &str, hosts: u32, endpoints: u32) -> anyhow::Result<()> {
    let rt = runtime()?;
    let records = (0..hosts)
        .map(|i| {
            let name = format!("ext-{i}");
            let host = netd::model::Host {
                name: name.clone(),
                underlay_ip: Some(Ipv4Addr::new(10, 97, (i / 250) as u8, (i % 250 + 1) as u8)),
                external: true,
                // Index 1 is the netd's own.
                index: i + 2,
                alive: false,
            };
            let record = serde_json::to_string(&host).unwrap_or_default();
            (format!("/netd/members/{name}"), record)
        })
        .collect();
    rt.block_on(put_all(store, records))?;
    let list: Vec<(u32, String)> = (0..endpoints)
        .map(|n| (n, format!("ext-{}", n % hosts)))
        .collect();
    drop(rt);
    write_endpoints(store, &list)
}

fn write_endpoints(store: &str, list: &[(u32, String)]) -> anyhow::Result<()> {
    let rt = runtime()?;
    let network = rt.block_on(network_id(store))?;
    let records = list
        .iter()
        .map(|(n, host)| {
            let id = format!("sim{n:08x}");
            let ip = endpoint_ip(*n);
            let endpoint = netd::model::Endpoint {
                id: id.clone(),
                name: format!("sim-{n}"),
                network: network.clone(),
                sandbox: PathBuf::new(),
                ipv4: ip,
                mac: netd::model::Mac::for_ipv4(ip),
                ifname: String::new(),
                host_ifname: String::new(),
                managed_by: netd::model::Manager::External,
                host: host.clone(),
                labels: Default::default(),
                container: None,
            };
            let record = serde_json::to_string(&endpoint).unwrap_or_default();
            (format!("/netd/endpoints/{id}"), record)
        })
        .collect();
    rt.block_on(put_all(store, records))
}

fn open(path: &std::path::Path) -> anyhow::Result<HashMap<MapData, [u8; 4], EndpointEntry>> {
    let data = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(HashMap::try_from(Map::HashMap(data))?)
}

fn count(path: &std::path::Path) -> anyhow::Result<usize> {
    Ok(open(path)?.keys().count())
}

fn has(path: &std::path::Path, ip: Ipv4Addr) -> anyhow::Result<bool> {
    Ok(open(path)?.get(&ip.octets(), 0).is_ok())
}
