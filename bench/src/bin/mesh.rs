//! The routing mesh against Docker's own way of publishing a port, on the
//! same topology in the same run: two hosts and an outside client on one
//! underlay bridge, every one a namespace.
//!
//! - Docker's way: host 0 DNATs the published port with iptables (Docker's
//!   chains, `--userland-proxy=false`) to a container behind a Linux
//!   bridge; a port whose backend is on host 1 is DNATed and SNATed into a
//!   kernel VXLAN overlay, as swarm's ingress does (without its IPVS hop,
//!   which this kernel lacks: the baseline is cheaper than real swarm).
//! - netd: the same ports published with `netd service create --publish`.
//!
//! Measured:
//! - packets per second through the published-port path on one core:
//!   64-byte UDP packets of 64 flows to a published port, generated on
//!   CPU 1; host 0's receive path runs on CPU 0, into a container whose
//!   `eth0` drops them at ingress. Scored as packets delivered per busy
//!   second of CPU 0. Two generators: trafgen (netsniff-ng) from the
//!   client, about 0.35 Mpps here, which leaves netd's path part idle, and
//!   BPF_PROG_TEST_RUN live frames into host 0's uplink (what
//!   xdp-trafficgen drives; xdp-tools 1.3.1's xdp-trafficgen does not load
//!   on this kernel), which saturates both; the target is judged on the
//!   second;
//! - new connections per second and 1-byte request/response latency from
//!   the client to a local and to a remote backend;
//! - ns per packet of the XDP ingress DNAT and tunnel paths beside the
//!   do-nothing XDP program (BPF_PROG_TEST_RUN, single runs).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Parser;
use netd_bench::{
    connections::{median_rate, round_trips, serve_bytes},
    median, percentile, print_path_costs,
    report::{write_html, Bars},
    PathCost,
};
use netd_common::{
    maps::BenchFrame,
    program_names::{TC_SINK, XDP_BASELINE, XDP_GENERATOR, XDP_UPLINK},
};
use netd_tests::{
    cluster::{
        cluster, kernel_vxlan_bridge, outside_client, plug_into_underlay, underlay_takes_xdp_tx,
        uplink_acts_as_nic, Host, UNDERLAY_PREFIX,
    },
    etcd::Etcd,
    fixture::Fixture,
    mesh_fixture::{published_fixture, segment_to, Underlay, PUBLISHED},
    netns::{sh, veth_between, within, NetNs},
    overlay_fixture as o,
};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Seconds of traffic per packet-rate measurement.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Seconds of new connections per round.
    #[arg(long, default_value_t = 3)]
    conn_seconds: u64,
    /// Rounds per connection-rate measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Client threads opening connections.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Request/response round trips per backend.
    #[arg(long, default_value_t = 20_000)]
    round_trips: usize,
    /// Single program runs per path for the path costs.
    #[arg(long, default_value_t = 20_000)]
    runs: usize,
    #[arg(long, default_value = "target/bench/mesh.json")]
    json: PathBuf,
}

const CLIENT: &str = "10.96.0.100";
const LOCAL: u16 = 30080;
const REMOTE: u16 = 30081;
const SINK: u16 = 30053;
const TARGET: u16 = 8080;
const SINK_TARGET: u16 = 5353;
/// The core that carries host 0's receive path; the generator runs on the
/// other.
const PATH_CPU: usize = 0;
const GENERATOR_CPU: usize = 1;

fn host_address(i: usize) -> String {
    format!("{UNDERLAY_PREFIX}.{}", i + 1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
enum System {
    #[serde(rename = "netd")]
    Netd,
    #[serde(rename = "docker-iptables")]
    DockerIptables,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Netd => "netd",
            System::DockerIptables => "docker-iptables",
        }
    }
}

/// What both worlds give the measurements.
struct World {
    system: System,
    hosts: Hosts,
    client: NetNs,
    /// The container whose `eth0` drops what it gets.
    sink: NetNs,
    stop: Arc<AtomicBool>,
    /// Kept for their lifetime: the other containers.
    _keep: Vec<NetNs>,
    underlay: NetNs,
}

enum Hosts {
    Netd { hosts: Vec<Host>, _etcd: Etcd },
    Kernel(Vec<NetNs>),
}

impl World {
    /// Host 0, where every measured packet comes in.
    fn ingress(&self) -> &NetNs {
        match &self.hosts {
            Hosts::Netd { hosts, .. } => &hosts[0].ns,
            Hosts::Kernel(hosts) => &hosts[0],
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(120));
    }
}

/// netd on two hosts sharing etcd; `near` and the sink on host 0, `far` on
/// host 1, each published on every host.
fn netd_world() -> anyhow::Result<World> {
    let (underlay, etcd, hosts) = cluster(2, |_| {
        vec!["--uplink=uplink0".into(), "--log-level=warn".into()]
    });
    let client = outside_client(&underlay, "bmC", CLIENT);
    underlay_takes_xdp_tx(&underlay);
    hosts[0].netd.ok(&[
        "network",
        "create",
        "o1",
        "--subnet",
        "10.94.0.0/24",
        "--overlay",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut keep = Vec::new();
    for (name, host) in [("near", 0), ("far", 1)] {
        let ns = NetNs::new("bmB");
        hosts[host]
            .netd
            .endpoint(name, "o1", &ns, &["--label", &format!("app={name}")]);
        serve_bytes(&ns, TARGET, stop.clone());
        keep.push(ns);
    }
    let sink = NetNs::new("bmS");
    hosts[0]
        .netd
        .endpoint("sink", "o1", &sink, &["--label", "app=sink"]);
    for (name, publish) in [
        ("near", format!("{LOCAL}:{TARGET}/tcp")),
        ("far", format!("{REMOTE}:{TARGET}/tcp")),
        ("sink", format!("{SINK}:{SINK_TARGET}/udp")),
    ] {
        hosts[0].netd.ok(&[
            "service",
            "create",
            name,
            "--network",
            "o1",
            "--selector",
            &format!("app={name}"),
            "--publish",
            &publish,
        ]);
    }
    // The daemons' own work stays off the measured core.
    for h in &hosts {
        if let Some(pid) = h.netd.pid() {
            let _ = Command::new("taskset")
                .args(["-a", "-pc", &GENERATOR_CPU.to_string(), &pid.to_string()])
                .stdout(Stdio::null())
                .status();
        }
    }
    Ok(World {
        system: System::Netd,
        hosts: Hosts::Netd { hosts, _etcd: etcd },
        client,
        sink,
        stop,
        _keep: keep,
        underlay,
    })
}

const OVERLAY_VNI: &str = "42";
/// Docker's default bridge network on host 0.
const BRIDGE_GATEWAY: &str = "172.18.0.1";
const NEAR_IP: &str = "172.18.0.2";
const SINK_IP: &str = "172.18.0.3";
/// The swarm-style overlay between the hosts (kernel VXLAN and bridges).
const INGRESS_SNAT: &str = "10.43.0.1";
const FAR_IP: &str = "10.43.0.3";

/// Docker's way: host 0 with a bridge of containers (near, the sink) and
/// the published ports in iptables; host 1 with `far` on a kernel VXLAN
/// overlay that host 0 shares.
fn docker_world() -> anyhow::Result<World> {
    let underlay = NetNs::new("bmU");
    underlay.ip(&["link", "add", "br0", "type", "bridge"]);
    underlay.ip(&["link", "set", "br0", "up"]);
    let mut hosts = Vec::new();
    for i in 0..2 {
        let host = NetNs::new("bmH");
        plug_into_underlay(&underlay, &host, &host_address(i));
        uplink_acts_as_nic(&host);
        kernel_vxlan_bridge(
            &host,
            OVERLAY_VNI,
            &host_address(i),
            &host_address(1 - i),
            "ov0",
        );
        let own = if i == 0 { INGRESS_SNAT } else { "10.43.0.254" };
        host.ip(&["addr", "add", &format!("{own}/24"), "dev", "ov0"]);
        hosts.push(host);
    }
    let client = outside_client(&underlay, "bmC", CLIENT);

    let host0 = &hosts[0];
    host0.ip(&["link", "add", "br0", "type", "bridge"]);
    host0.ip(&["addr", "add", &format!("{BRIDGE_GATEWAY}/16"), "dev", "br0"]);
    host0.ip(&["link", "set", "br0", "up"]);
    let stop = Arc::new(AtomicBool::new(false));
    let near = NetNs::new("bmB");
    let sink = NetNs::new("bmS");
    for (ns, ip, port) in [(&near, NEAR_IP, "vnear"), (&sink, SINK_IP, "vsink")] {
        veth_between(
            ns,
            "eth0",
            &format!("{ip}/16"),
            host0,
            port,
            "192.168.250.1/32",
        );
        host0.ip(&["addr", "flush", "dev", port]);
        host0.ip(&["link", "set", port, "master", "br0"]);
        ns.ip(&["route", "add", "default", "via", BRIDGE_GATEWAY]);
    }
    let far = NetNs::new("bmB");
    veth_between(
        &far,
        "eth0",
        &format!("{FAR_IP}/24"),
        &hosts[1],
        "vfar",
        "192.168.250.1/32",
    );
    far.ip(&["link", "set", "eth0", "mtu", "1450"]);
    hosts[1].ip(&["addr", "flush", "dev", "vfar"]);
    hosts[1].ip(&["link", "set", "vfar", "master", "ov0"]);
    for ns in [&near, &far] {
        serve_bytes(ns, TARGET, stop.clone());
    }
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.bridge.bridge-nf-call-iptables", "1"),
    ] {
        let out = host0.exec("sysctl", &["-qw", &format!("{key}={value}")]);
        if !out.status.success() {
            eprintln!("sysctl {key}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    iptables_restore(host0, &docker_rules())?;
    Ok(World {
        system: System::DockerIptables,
        hosts: Hosts::Kernel(hosts),
        client,
        sink,
        stop,
        _keep: vec![near, far],
        underlay,
    })
}

/// What dockerd 20.10 writes for `-p LOCAL:8080` and `-p SINK:5353/udp`
/// on a bridge network with `--userland-proxy=false`, and what swarm's
/// ingress writes for a published port (its DNAT and SNAT, here straight
/// to the remote task instead of through the ingress sandbox's IPVS).
fn docker_rules() -> String {
    format!(
        "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-INGRESS - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.18.0.0/16 ! -o br0 -j MASQUERADE
-A POSTROUTING -s {NEAR_IP}/32 -d {NEAR_IP}/32 -p tcp -m tcp --dport {TARGET} -j MASQUERADE
-A POSTROUTING -d {FAR_IP}/32 -o ov0 -j SNAT --to-source {INGRESS_SNAT}
-A DOCKER -i br0 -j RETURN
-A DOCKER ! -i br0 -p tcp -m tcp --dport {LOCAL} -j DNAT --to-destination {NEAR_IP}:{TARGET}
-A DOCKER ! -i br0 -p udp -m udp --dport {SINK} -j DNAT --to-destination {SINK_IP}:{SINK_TARGET}
-A DOCKER-INGRESS -p tcp -m tcp --dport {REMOTE} -j DNAT --to-destination {FAR_IP}:{TARGET}
-A DOCKER-INGRESS -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-INGRESS - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-INGRESS
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o br0 -j DOCKER
-A FORWARD -i br0 ! -o br0 -j ACCEPT
-A FORWARD -i br0 -o br0 -j ACCEPT
-A DOCKER -d {NEAR_IP}/32 ! -i br0 -o br0 -p tcp -m tcp --dport {TARGET} -j ACCEPT
-A DOCKER -d {SINK_IP}/32 ! -i br0 -o br0 -p udp -m udp --dport {SINK_TARGET} -j ACCEPT
-A DOCKER-INGRESS -o ov0 -d {FAR_IP}/32 -p tcp -m tcp --dport {TARGET} -j ACCEPT
-A DOCKER-INGRESS -i ov0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-INGRESS -j RETURN
-A DOCKER-ISOLATION-STAGE-1 -i br0 ! -o br0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o br0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"
    )
}

fn iptables_restore(host: &NetNs, rules: &str) -> anyhow::Result<()> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), rules)?;
    let path = file.path().to_str().context("path")?;
    let out = host.exec("iptables-restore", &[path]);
    if !out.status.success() {
        bail!("iptables-restore: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Drops every IPv4 packet at the sink's `eth0` ingress with the
/// do-nothing-but-drop TC program; ARP still passes, so the container's
/// neighbours resolve.
fn attach_sink(sink: &NetNs) {
    let mut fixture = Fixture::load();
    let pin = fixture.pin_root().join("tc_sink");
    fixture.pin_tc(TC_SINK, &pin);
    let pin_arg = pin.to_string_lossy().into_owned();
    // From a thread in the sink, not `ip netns exec`: that remounts /sys,
    // and the pin is on this mount namespace's bpffs.
    within(sink, || {
        sh("tc", &["qdisc", "replace", "dev", "eth0", "clsact"]);
        sh(
            "tc",
            &[
                "filter", "replace", "dev", "eth0", "ingress", "protocol", "ip", "prio", "1",
                "bpf", "da", "pinned", &pin_arg,
            ],
        );
    });
    let _ = std::fs::remove_file(&pin);
}

/// Puts host 0's receive path on [`PATH_CPU`], the same way in both
/// worlds: its uplink polls in NAPI (netd's XDP needs it; for Docker's way
/// GRO turns it on, as on a NIC), made a kernel thread pinned there; what
/// the veth hands to the backlog instead (trafgen's packets when the
/// uplink has no XDP) is steered there by RPS. A veth has no interrupt
/// moderation, so each packet would wake the thread: the kernel's own
/// deferral (napi_defer_hard_irqs, gro_flush_timeout) stands in for a
/// NIC's, as the backlog batches by itself.
fn steer_to_path_cpu(w: &World) -> anyhow::Result<()> {
    let host = w.ingress();
    if w.system == System::DockerIptables {
        let out = host.exec("ethtool", &["-K", "uplink0", "gro", "on"]);
        if !out.status.success() {
            bail!("GRO on uplink0: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let mask = format!("{:x}", 1u64 << PATH_CPU);
    write_sysfs(host, "/sys/class/net/uplink0/queues/rx-0/rps_cpus", &mask)?;
    let before = napi_threads("uplink0");
    write_sysfs(host, "/sys/class/net/uplink0/threaded", "1")?;
    write_sysfs(host, "/sys/class/net/uplink0/napi_defer_hard_irqs", "100")?;
    write_sysfs(host, "/sys/class/net/uplink0/gro_flush_timeout", "50000")?;
    let new: Vec<u32> = napi_threads("uplink0")
        .into_iter()
        .filter(|pid| !before.contains(pid))
        .collect();
    if new.is_empty() {
        bail!("no NAPI thread appeared for host 0's uplink0");
    }
    for pid in new {
        sh("taskset", &["-pc", &PATH_CPU.to_string(), &pid.to_string()]);
    }
    Ok(())
}

/// sysfs as `ns` sees it: `ip netns exec` mounts that namespace's /sys.
fn write_sysfs(ns: &NetNs, path: &str, value: &str) -> anyhow::Result<()> {
    let out = ns.exec("sh", &["-c", &format!("echo {value} > {path}")]);
    if !out.status.success() {
        bail!("{path}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The kernel threads polling a device called `dev`, in any namespace.
fn napi_threads(dev: &str) -> Vec<u32> {
    let prefix = format!("napi/{dev}-");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(&prefix))
        })
        .collect()
}

/// One reading of what the packet rate is computed from.
struct Reading {
    cpu_busy: u64,
    cpu_total: u64,
    sent: u64,
    delivered: u64,
}

fn read_counters(w: &World, sent: u64) -> anyhow::Result<Reading> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with(&format!("cpu{PATH_CPU} ")))
        .context("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6];
    let total = busy + ticks[3] + ticks[4];
    Ok(Reading {
        cpu_busy: busy,
        cpu_total: total,
        sent,
        delivered: link_packets(&w.sink, "eth0", "rx")?,
    })
}

fn link_packets(ns: &NetNs, dev: &str, dir: &str) -> anyhow::Result<u64> {
    let out = ns.ip(&["-j", "-s", "link", "show", dev]);
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    links[0]["stats64"][dir]["packets"]
        .as_u64()
        .with_context(|| format!("{dir} packets of {dev}"))
}

fn busy_fraction(a: &Reading, b: &Reading) -> f64 {
    (b.cpu_busy - a.cpu_busy) as f64 / (b.cpu_total - a.cpu_total).max(1) as f64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
enum Generator {
    /// trafgen from netsniff-ng on the client: AF_PACKET, one packet per
    /// send, about 0.35 Mpps on one core of this VM.
    Trafgen,
    /// BPF_PROG_TEST_RUN live frames of an XDP_TX program on host 0's
    /// uplink's peer, the facility xdp-trafficgen drives (xdp-tools
    /// 1.3.1's xdp-trafficgen does not load on this kernel: its
    /// xdp_redirect_map_err tracepoint is gone). Fast enough to saturate
    /// the path.
    LiveFrames,
}

#[derive(Serialize)]
struct PacketRate {
    system: System,
    generator: Generator,
    seconds: u64,
    /// What the generator offered.
    sent_pps: f64,
    /// What reached the container's `eth0`.
    delivered_pps: f64,
    /// CPU 0 busy with the traffic: its busy share minus the share it had
    /// without traffic.
    path_cpu_share: f64,
    idle_cpu_share: f64,
    /// Packets delivered per busy second of one core.
    mpps_per_core: f64,
}

/// The 64-byte UDP packet of flow `i` (of 64) from the client to host 0's
/// published `SINK` port.
fn sink_packet(w: &World, flow: u16) -> anyhow::Result<Vec<u8>> {
    let ip = |s: &str| -> anyhow::Result<[u8; 4]> { Ok(s.parse::<std::net::Ipv4Addr>()?.octets()) };
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(w.client.mac("uplink0"), w.ingress().mac("uplink0"))
        .ipv4(ip(CLIENT)?, ip(&host_address(0))?, 64)
        .udp(10_000 + flow % 64, SINK)
        .write(&mut out, &[0x41; 22])?;
    Ok(out)
}

/// The same packets, as trafgen's configuration (it writes the lengths and
/// checksums).
fn trafgen_config(w: &World) -> anyhow::Result<tempfile::NamedTempFile> {
    let text = |mac: [u8; 6]| {
        mac.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let config = format!(
        "cpu({GENERATOR_CPU}): {{ eth(da={}, sa={}), ipv4(saddr={CLIENT}, daddr={}, ttl=64), \
         udp(sp=dinc(10000, 10063), dp={SINK}), fill(0x41, 22) }}\n",
        text(w.ingress().mac("uplink0")),
        text(w.client.mac("uplink0")),
        host_address(0),
    );
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), config)?;
    Ok(file)
}

/// 64 UDP flows of 60-byte packets to host 0's published `SINK` port for
/// `seconds`, from `generator`.
fn packet_rate(w: &World, seconds: u64, generator: Generator) -> anyhow::Result<PacketRate> {
    // The neighbours and the underlay bridge learn both ends.
    let ping = w
        .client
        .exec("ping", &["-c", "2", "-i", "0.2", &host_address(0)]);
    if !ping.status.success() {
        bail!("the client cannot ping host 0");
    }
    let offered = Arc::new(AtomicU64::new(0));
    let sent = || -> anyhow::Result<u64> {
        match generator {
            Generator::Trafgen => link_packets(&w.client, "uplink0", "tx"),
            Generator::LiveFrames => Ok(offered.load(Ordering::Relaxed)),
        }
    };
    let quiet = read_counters(w, sent()?)?;
    std::thread::sleep(Duration::from_secs(2));
    let idle = busy_fraction(&quiet, &read_counters(w, sent()?)?);
    let run_for = Duration::from_secs(seconds) + Duration::from_millis(2500);
    let (a, b) = std::thread::scope(|scope| -> anyhow::Result<(Reading, Reading)> {
        let generating = match generator {
            Generator::Trafgen => {
                let config = trafgen_config(w)?;
                scope.spawn(move || trafgen_for(w, &config, run_for))
            }
            Generator::LiveFrames => {
                let packets = (0..64)
                    .map(|i| {
                        let packet = sink_packet(w, i)?;
                        Ok(BenchFrame(packet.as_slice().try_into()?))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let offered = offered.clone();
                let underlay = &w.underlay;
                let peer = uplink_peer(w.ingress())?;
                scope.spawn(move || live_frames(underlay, peer, &packets, run_for, &offered))
            }
        };
        std::thread::sleep(Duration::from_millis(1500));
        let a = read_counters(w, sent()?)?;
        std::thread::sleep(Duration::from_secs(seconds));
        let b = read_counters(w, sent()?)?;
        generating
            .join()
            .map_err(|_| anyhow::anyhow!("the generator panicked"))??;
        Ok((a, b))
    })?;
    let secs = seconds as f64;
    let delivered_pps = (b.delivered - a.delivered) as f64 / secs;
    if delivered_pps < 1000.0 {
        bail!(
            "{} with {generator:?}: only {delivered_pps:.0} packets/s reached the container",
            w.system.name()
        );
    }
    let share = (busy_fraction(&a, &b) - idle).max(0.01);
    Ok(PacketRate {
        system: w.system,
        generator,
        seconds,
        sent_pps: (b.sent - a.sent) as f64 / secs,
        delivered_pps,
        path_cpu_share: share,
        idle_cpu_share: idle,
        mpps_per_core: delivered_pps / share / 1e6,
    })
}

/// trafgen for `run_for`, started again whenever it gives up on a full
/// socket buffer (its TX ring's flush fails with EAGAIN when the veth
/// pushes back, and it cannot raise the buffer from inside a namespace).
fn trafgen_for(
    w: &World,
    config: &tempfile::NamedTempFile,
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
            .args([
                "ip",
                "netns",
                "exec",
                &w.client.name,
                "trafgen",
                "--dev",
                "uplink0",
            ])
            .arg("--conf")
            .arg(config.path())
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

/// The ifindex, in the underlay, of the other end of `host`'s uplink.
fn uplink_peer(host: &NetNs) -> anyhow::Result<u32> {
    let out = host.ip(&["-j", "link", "show", "uplink0"]);
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let index = links[0]["link_index"]
        .as_u64()
        .context("uplink0 is a veth with a peer")?;
    Ok(u32::try_from(index)?)
}

/// From a thread in the underlay pinned to [`GENERATOR_CPU`]: `packets`
/// as live frames bounced out of the underlay's end of host 0's uplink, so
/// they arrive on host 0's uplink as from a wire.
fn live_frames(
    underlay: &NetNs,
    peer: u32,
    packets: &[BenchFrame],
    run_for: Duration,
    offered: &AtomicU64,
) -> anyhow::Result<()> {
    // One run costs milliseconds of setup whatever its length: long runs
    // (about 0.15 s each at 7 Mpps) keep that out of the rate.
    const REPEAT: u32 = 1 << 20;
    let mut generator = Fixture::load();
    generator.set_bench_frames(packets);
    within(underlay, || -> anyhow::Result<()> {
        pin_this_thread(GENERATOR_CPU)?;
        let until = std::time::Instant::now() + run_for;
        while std::time::Instant::now() < until {
            // The program writes the frames; this one only sizes them.
            generator.live_frames(XDP_GENERATOR, &packets[0].0, peer, REPEAT)?;
            offered.fetch_add(u64::from(REPEAT), Ordering::Relaxed);
        }
        Ok(())
    })
}

fn pin_this_thread(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and
    // sched_setaffinity (0: this thread) only touch `set`.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[derive(Serialize)]
struct Connections {
    system: System,
    /// "local" (on the ingress host) or "remote" (on host 1).
    backend: &'static str,
    connections_per_sec: f64,
    rr_p50_us: f64,
    rr_p99_us: f64,
}

fn connections(w: &World, args: &Args) -> anyhow::Result<Vec<Connections>> {
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
fn path_costs(runs: usize) -> anyhow::Result<Vec<PathCost>> {
    let mut local = published_fixture(o::B_IP, 1);
    local.load_baselines();
    let mut tunnel = published_fixture(o::A_IP, 1);
    let underlay = Underlay::new(&mut tunnel);
    let established = segment_to(PUBLISHED, 9999, false);
    for (f, want, what) in [(&mut local, 4, "local DNAT"), (&mut tunnel, 4, "tunnel")] {
        let run = underlay.run(|| f.run_xdp(XDP_UPLINK, &segment_to(PUBLISHED, 9999, true)))?;
        if run.verdict != want {
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
            samples[0].push(local.time_xdp(XDP_BASELINE, &established, 1));
            samples[1].push(local.time_xdp(XDP_UPLINK, &fresh, 1));
            samples[2].push(local.time_xdp(XDP_UPLINK, &established, 1));
            samples[3].push(tunnel.time_xdp(XDP_UPLINK, &fresh, 1));
            samples[4].push(tunnel.time_xdp(XDP_UPLINK, &established, 1));
        }
    });
    let names = [
        "xdp no-op (single runs)",
        "mesh DNAT to a local backend, new flow",
        "mesh DNAT to a local backend, established",
        "mesh tunnel to a remote backend, new flow",
        "mesh tunnel to a remote backend, established",
    ];
    let noop = median(&samples[0]);
    Ok(names
        .into_iter()
        .zip(samples)
        .map(|(path, v)| PathCost::of(path, v, noop))
        .collect())
}

#[derive(Serialize)]
struct Targets {
    /// netd's packets per core over Docker's way's; the target is 5.
    pps_ratio: f64,
    /// netd's connection rate over Docker's way's, local and remote
    /// backend; the target is above 1.
    connections_ratio_local: f64,
    connections_ratio_remote: f64,
    /// netd's tunnel p99 over its local p99; the target is at most 1.5.
    tunnel_p99_over_local: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) <= GENERATOR_CPU {
        bail!("the packet-rate bench needs two CPUs: one for trafgen, one for the path");
    }
    let mut rates = Vec::new();
    let mut conns = Vec::new();
    for build in [docker_world as fn() -> anyhow::Result<World>, netd_world] {
        let world = build()?;
        // Before the packet rates: their steering of host 0's uplink is
        // for a flood, not for latency.
        conns.extend(connections(&world, &args)?);
        attach_sink(&world.sink);
        steer_to_path_cpu(&world)?;
        for generator in [Generator::Trafgen, Generator::LiveFrames] {
            eprintln!(
                "{}: {} s of UDP packets from {generator:?}",
                world.system.name(),
                args.seconds
            );
            rates.push(packet_rate(&world, args.seconds, generator)?);
        }
    }
    eprintln!("path costs: {} single runs per path", args.runs);
    let costs = path_costs(args.runs)?;

    let conn = |system, backend| {
        conns
            .iter()
            .find(|c| c.system == system && c.backend == backend)
            .expect("measured")
    };
    let rate = |system| {
        rates
            .iter()
            .find(|r| r.system == system && r.generator == Generator::LiveFrames)
            .expect("measured")
    };
    let targets = Targets {
        pps_ratio: rate(System::Netd).mpps_per_core / rate(System::DockerIptables).mpps_per_core,
        connections_ratio_local: conn(System::Netd, "local").connections_per_sec
            / conn(System::DockerIptables, "local").connections_per_sec,
        connections_ratio_remote: conn(System::Netd, "remote").connections_per_sec
            / conn(System::DockerIptables, "remote").connections_per_sec,
        tunnel_p99_over_local: conn(System::Netd, "remote").rr_p99_us
            / conn(System::Netd, "local").rr_p99_us,
    };

    println!(
        "{:<18} {:<11} {:>10} {:>14} {:>10} {:>14}",
        "published UDP", "generator", "sent pps", "delivered pps", "CPU 0", "Mpps per core"
    );
    for r in &rates {
        println!(
            "{:<18} {:<11} {:>10.0} {:>14.0} {:>9.1}% {:>14.3}",
            r.system.name(),
            format!("{:?}", r.generator),
            r.sent_pps,
            r.delivered_pps,
            r.path_cpu_share * 100.0,
            r.mpps_per_core
        );
    }
    println!(
        "netd / docker-iptables: {:.2}x packets per core with live frames (target 5x)\n",
        targets.pps_ratio
    );
    println!(
        "{:<18} {:<8} {:>12} {:>10} {:>10}",
        "published TCP", "backend", "conn/s", "RR p50", "RR p99"
    );
    for c in &conns {
        println!(
            "{:<18} {:<8} {:>12.0} {:>8.1}us {:>8.1}us",
            c.system.name(),
            c.backend,
            c.connections_per_sec,
            c.rr_p50_us,
            c.rr_p99_us
        );
    }
    println!(
        "netd / docker-iptables connections: local {:.2}x, remote {:.2}x (target > 1); \
         netd tunnel p99 / local p99: {:.2} (target <= 1.5)\n",
        targets.connections_ratio_local,
        targets.connections_ratio_remote,
        targets.tunnel_p99_over_local
    );
    print_path_costs(&costs);

    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let report = serde_json::json!({
        "packet_rate": &rates,
        "connections": &conns,
        "programs": &costs,
        "targets": &targets,
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", args.json.display());
    let per = |label: &dyn Fn(&Connections) -> f64| -> Vec<(String, f64)> {
        conns
            .iter()
            .map(|c| (format!("{} {}", c.system.name(), c.backend), label(c)))
            .collect()
    };
    let charts = vec![
        Bars {
            title: "published UDP port: packets delivered per busy second of one core".into(),
            unit: "Mpps",
            bars: rates
                .iter()
                .map(|r| {
                    (
                        format!("{} ({:?})", r.system.name(), r.generator),
                        r.mpps_per_core,
                    )
                })
                .collect(),
        },
        Bars {
            title: "published TCP port: new connections per second".into(),
            unit: "conn/s",
            bars: per(&|c| c.connections_per_sec),
        },
        Bars {
            title: "published TCP port: 1-byte request/response, p50".into(),
            unit: "µs",
            bars: per(&|c| c.rr_p50_us),
        },
        Bars {
            title: "published TCP port: 1-byte request/response, p99".into(),
            unit: "µs",
            bars: per(&|c| c.rr_p99_us),
        },
        Bars {
            title: "XDP path cost per packet (BPF_PROG_TEST_RUN, single runs)".into(),
            unit: "ns",
            bars: costs
                .iter()
                .map(|c| (c.path.to_string(), c.median_ns))
                .collect(),
        },
    ];
    write_html(
        &args.json.with_extension("html"),
        "netd's routing mesh against Docker's iptables publishing",
        &[
            "Two hosts and an outside client as namespaces on one underlay bridge, built in the same run.".into(),
            format!(
                "Packet rate: trafgen on CPU {GENERATOR_CPU}, host 0's receive path on CPU {PATH_CPU}, scored per busy second of CPU {PATH_CPU} (xdp-trafficgen from xdp-tools 1.3.1 does not load on this kernel: its xdp_redirect_map_err tracepoint is gone)."
            ),
            format!(
                "Targets: {:.2}x packets per core (5x), connections {:.2}x local and {:.2}x remote (above 1), tunnel p99 {:.2}x local (at most 1.5).",
                targets.pps_ratio,
                targets.connections_ratio_local,
                targets.connections_ratio_remote,
                targets.tunnel_p99_over_local
            ),
        ],
        &charts,
    )?;
    Ok(())
}
