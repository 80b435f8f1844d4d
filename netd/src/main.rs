use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use netd::endpoint_traffic::EndpointTraffic;
use netd::{
    api::{ExternalHostSpec, PolicyView, ServiceView, Status},
    client::Client,
    config::{FileConfig, Overrides, RunConfig, DEFAULT_PIN_PATH, DEFAULT_SOCKET},
    dataplane::conntrack::FlowView,
    dataplane::PinLayout,
    logging,
    model::{
        parse_rule, Endpoint, EndpointSpec, Host, Mode, Network, NetworkSpec, Policy, PolicySpec,
        Service, ServiceSpec, ServiceUpdate,
    },
    run,
};
use tracing::level_filters::LevelFilter;

/// Container networking with an eBPF datapath.
#[derive(Parser)]
#[command(name = "netd", version, about)]
struct Cli {
    /// Log level: error, warn, info, debug, trace (RUST_LOG wins when set).
    #[arg(long, global = true, default_value = "info")]
    log_level: LevelFilter,
    /// The control socket of the netd to talk to.
    #[arg(long, global = true, env = "NETD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the datapath, attach it, serve the API and metrics until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Detach netd's programs everywhere and remove its pins (netd must be stopped).
    Teardown {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
    },
    /// Networks: create, ls, inspect, rm.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Endpoints: create, ls, inspect, rm.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Hosts of the cluster whose netd is alive.
    #[command(subcommand)]
    Host(HostCmd),
    /// Services: a VIP load-balanced across endpoints: create, ls, inspect, update, rm.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Policies: L3/L4 rules per endpoint, by label: create, ls, inspect, rm.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// The flows to VIPs this host tracks: ls, flush.
    #[command(subcommand)]
    Conntrack(ConntrackCmd),
    /// The datapath's events as they happen: drops with their reason, and
    /// the packet's first bytes (Ctrl-C stops)
    Monitor(MonitorArgs),
    /// What netd has: networks, endpoints, map fill.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct MonitorArgs {
    /// Only events of this type: drop, policy (verdicts on new flows,
    /// denials included) or translation (new flows to a service)
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// Only drops for this reason (as in netd_drops_total's reason label)
    #[arg(long)]
    reason: Option<String>,
    /// Only packets from this endpoint (its host veth)
    #[arg(long)]
    endpoint: Option<String>,
    /// Only packets of this network
    #[arg(long)]
    network: Option<String>,
    /// Only translations for this service, and its drops for want of a backend
    #[arg(long)]
    service: Option<String>,
    /// Only packets from or to this address
    #[arg(long)]
    address: Option<std::net::Ipv4Addr>,
    /// One JSON object a line instead of text
    #[arg(long)]
    json: bool,
    /// Also write the packets to FILE, as pcap (tcpdump -r FILE)
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Stop after N events
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

#[derive(Args)]
struct RunArgs {
    /// Interface to the underlay that gets the XDP program (repeatable).
    /// None: netd serves this host only.
    #[arg(long = "uplink", value_name = "IFACE")]
    uplinks: Vec<String>,
    /// TOML file with the same settings (uplinks, pin-path, metrics-addr, state-dir, socket).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// bpffs directory for netd's pinned maps, programs and links [default: /sys/fs/bpf/netd].
    #[arg(long, value_name = "DIR")]
    pin_path: Option<PathBuf>,
    /// Where to serve Prometheus metrics [default: 127.0.0.1:9964].
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Directory of the embedded store [default: /var/lib/netd].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Serve the Docker network and IPAM plugin [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    docker_plugin: Option<bool>,
    /// Socket of the Docker plugin [default: /run/docker/plugins/netd.sock].
    #[arg(long, value_name = "PATH")]
    docker_plugin_socket: Option<PathBuf>,
    /// dockerd's API socket, where the plugin reads containers' names and
    /// labels [default: /var/run/docker.sock].
    #[arg(long, value_name = "PATH")]
    docker_api_socket: Option<PathBuf>,
    /// Serve DNS for netd's networks on each one's gateway address [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    dns: Option<bool>,
    /// A resolver for the names netd does not have, IP or IP:PORT (repeatable)
    /// [default: the nameservers of /etc/resolv.conf].
    #[arg(long = "dns-upstream", value_name = "ADDR")]
    dns_upstreams: Vec<String>,
    /// Where the model lives: `embedded` (one host) or etcd://HOST:PORT[,HOST:PORT...]
    /// [default: embedded].
    #[arg(long, value_name = "URL")]
    store: Option<netd::config::StoreSpec>,
    /// This host's name in the cluster [default: the kernel's host name].
    #[arg(long, value_name = "NAME")]
    host_name: Option<String>,
    /// This host's address on the underlay [default: the first IPv4 of the first --uplink].
    #[arg(long, value_name = "IP")]
    underlay_ip: Option<std::net::Ipv4Addr>,
    /// Seconds this host stays registered in etcd after netd stops answering [default: 10].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(2..=3600))]
    host_lease_ttl: Option<u64>,
    /// Seconds other hosts keep forwarding to this host after its
    /// registration ends (its pinned datapath goes on without netd)
    /// [default: 300]. `netd host rm` removes a stopped host at once.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=86400))]
    host_grace: Option<u64>,
    /// Flows conntrack holds before its LRU evicts the least recently used
    /// [default: 262144]; a change carries the flows over at start.
    #[arg(long, value_name = "N")]
    conntrack_max_entries: Option<u32>,
}

#[derive(Subcommand)]
enum NetworkCmd {
    /// Create a network.
    Create {
        name: String,
        #[arg(long)]
        subnet: String,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long)]
        ip_range: Option<String>,
        /// NAME=IP: an address IPAM must not hand out (repeatable).
        #[arg(long = "aux-address", value_name = "NAME=IP")]
        aux_addresses: Vec<String>,
        /// KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A cluster-wide network across hosts (VXLAN; needs --store etcd://...).
        #[arg(long)]
        overlay: bool,
        /// Every endpoint's ingress and egress are closed until a policy
        /// allows their traffic.
        #[arg(long)]
        default_deny: bool,
    },
    /// List networks.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one network as JSON.
    Inspect { name: String },
    /// Remove a network (it must have no endpoints).
    Rm { name: String },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Create a service: a VIP on a network, load-balanced across the
    /// endpoints the selector (or --backend) names.
    Create {
        #[arg(required_unless_present = "file")]
        name: Option<String>,
        #[arg(long, required_unless_present = "file")]
        network: Option<String>,
        /// Create every service of a JSON list instead (the fields of the
        /// API's ServiceSpec), all or none.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["name", "network"])]
        file: Option<PathBuf>,
        /// PORT[:TARGET][/tcp|/udp] (repeatable), e.g. 80:8080/tcp. A
        /// service with --publish and no --port has no VIP.
        #[arg(long = "port", value_name = "PORT[:TARGET][/PROTO]")]
        ports: Vec<String>,
        /// The VIP [default: the network's next free address].
        #[arg(long)]
        vip: Option<String>,
        /// KEY=VALUE[,KEY=VALUE...]: endpoints with all these labels.
        #[arg(long)]
        selector: Option<String>,
        /// An endpoint by name, besides the selector's (repeatable).
        #[arg(long = "backend", value_name = "ENDPOINT")]
        backends: Vec<String>,
        /// ENDPOINT=N: a backend's weight, 1 to 256 [default: 1] (repeatable).
        #[arg(long = "weight", value_name = "ENDPOINT=N")]
        weights: Vec<String>,
        /// vip (load-balanced VIP) or dnsrr (names resolve to the backends).
        #[arg(long, default_value = "vip", value_parser = ["vip", "dnsrr"])]
        mode: String,
        /// none, client-ip or client-ip:TIMEOUT (seconds, or 90s, 10m, 3h):
        /// a client's new connections go to the backend its last one had,
        /// for TIMEOUT after that one [client-ip's default: 3h].
        #[arg(long, value_name = "none|client-ip[:TIMEOUT]")]
        affinity: Option<String>,
        /// Publish a port on every host's uplink address (the routing
        /// mesh): PUBLISHED[:TARGET][/PROTO], or
        /// published=P,target=T[,protocol=udp][,mode=host] (repeatable).
        #[arg(
            long = "publish",
            short = 'p',
            value_name = "PUBLISHED[:TARGET][/PROTO]"
        )]
        publish: Vec<String>,
    },
    /// List services.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one service and its backends as JSON.
    Inspect { name: String },
    /// Change a service: what is given replaces what was.
    Update {
        name: String,
        /// The ports, all of them (repeatable).
        #[arg(long = "port", value_name = "PORT[:TARGET][/PROTO]")]
        ports: Vec<String>,
        #[arg(long)]
        selector: Option<String>,
        /// The named backends, all of them (repeatable).
        #[arg(long = "backend", value_name = "ENDPOINT")]
        backends: Vec<String>,
        #[arg(long = "weight", value_name = "ENDPOINT=N")]
        weights: Vec<String>,
        /// Keep this backend's flows, give it no new one (repeatable).
        #[arg(long = "drain", value_name = "ENDPOINT")]
        drain: Vec<String>,
        /// Give a drained backend new flows again (repeatable).
        #[arg(long = "undrain", value_name = "ENDPOINT")]
        undrain: Vec<String>,
        /// none, client-ip or client-ip:TIMEOUT (seconds, or 90s, 10m, 3h):
        /// a client's new connections go to the backend its last one had,
        /// for TIMEOUT after that one [client-ip's default: 3h].
        #[arg(long, value_name = "none|client-ip[:TIMEOUT]")]
        affinity: Option<String>,
        /// The published ports, all of them (repeatable), as for create.
        #[arg(
            long = "publish",
            short = 'p',
            value_name = "PUBLISHED[:TARGET][/PROTO]"
        )]
        publish: Vec<String>,
        /// Unpublish every port.
        #[arg(long, conflicts_with = "publish")]
        unpublish: bool,
    },
    /// Remove a service.
    Rm { name: String },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Create a policy. A rule is `ACTION [from|to PEER]... [PROTO[/PORTS]]`:
    /// ACTION allow, deny or log (counts what it would drop, drops
    /// nothing); PEER `key=value[,...]`, `network:NAME`, `service:NAME` or
    /// `cidr:PREFIX[,except:PREFIX...]`; PROTO tcp, udp (PORTS `80,8000-8100`),
    /// icmp (`TYPE[:CODE]`) or any. No peer: any peer. E.g.
    /// `--ingress 'allow from tier=web tcp/8080'`.
    Create {
        name: String,
        /// Only endpoints of this network.
        #[arg(long)]
        network: Option<String>,
        /// `key=value[,...]`: the endpoints with all these labels.
        #[arg(
            long = "selector",
            visible_alias = "select",
            value_name = "KEY=VALUE[,...]"
        )]
        selector: Option<String>,
        /// An ingress rule (repeatable): the selected endpoints' ingress
        /// becomes default-deny.
        #[arg(long = "ingress", value_name = "RULE")]
        ingress: Vec<String>,
        /// An egress rule (repeatable): likewise for egress.
        #[arg(long = "egress", value_name = "RULE")]
        egress: Vec<String>,
        /// Default-deny ingress even without --ingress rules.
        #[arg(long)]
        deny_ingress: bool,
        /// Default-deny egress even without --egress rules.
        #[arg(long)]
        deny_egress: bool,
        /// The whole policy as JSON (the API's PolicySpec) instead.
        #[arg(long, short = 'f', value_name = "FILE", conflicts_with_all = ["ingress", "egress", "network", "selector"])]
        file: Option<PathBuf>,
    },
    /// List policies with their rules' hits on this host.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one policy and its rules' hits as JSON.
    Inspect { name: String },
    /// Remove a policy.
    Rm { name: String },
}

#[derive(Args)]
struct FlowArgs {
    /// Only the flows of this service.
    #[arg(long)]
    service: Option<String>,
    /// Only the flows to this backend (an endpoint's name or address).
    #[arg(long)]
    backend: Option<String>,
}

#[derive(Subcommand)]
enum ConntrackCmd {
    /// List tracked flows.
    Ls {
        #[command(flatten)]
        filter: FlowArgs,
        #[arg(long)]
        json: bool,
    },
    /// Forget tracked flows: each is balanced again on its next packet.
    Flush {
        #[command(flatten)]
        filter: FlowArgs,
    },
}

#[derive(Subcommand)]
enum HostCmd {
    /// List hosts.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Add an external host: one without netd that speaks VXLAN (a kernel
    /// VXLAN device), so netd hosts accept its packets and reach its
    /// endpoints (`endpoint create --external-host`).
    Add {
        name: String,
        #[arg(long)]
        underlay_ip: Ipv4Addr,
    },
    /// Remove a host at once: an external one, or one whose netd was
    /// stopped for good (a planned exit; otherwise the other hosts keep it
    /// for --host-grace). It must have no endpoints.
    #[command(alias = "leave")]
    Rm { name: String },
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// Create an endpoint: a veth into the sandbox, on the network.
    Create {
        name: String,
        #[arg(long)]
        network: String,
        /// The sandbox: /var/run/netns/NAME or /proc/PID/ns/net.
        #[arg(long, required_unless_present = "external_host")]
        netns: Option<PathBuf>,
        /// Instead of a sandbox here: the endpoint is on this external host
        /// (see `host add`) and uses the MAC netd gives it.
        #[arg(long, conflicts_with_all = ["netns", "ifname"])]
        external_host: Option<String>,
        #[arg(long)]
        ip: Option<String>,
        /// Interface name inside the sandbox [default: eth0].
        #[arg(long)]
        ifname: Option<String>,
        /// MAC address [default: 02:6e and the IPv4 address].
        #[arg(long)]
        mac: Option<String>,
        /// KEY=VALUE, what service selectors match (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// List endpoints.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one endpoint as JSON.
    Inspect { name: String },
    /// Remove an endpoint and its interface.
    Rm { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level);
    let result =
        match cli.command {
            Command::Run(args) => start(cli.socket, args),
            Command::Teardown { pin_path } => run::teardown(&PinLayout::new(pin_path)),
            Command::Network(cmd) => {
                client_runtime().and_then(|rt| rt.block_on(network(&Client::new(&cli.socket), cmd)))
            }
            Command::Endpoint(cmd) => client_runtime()
                .and_then(|rt| rt.block_on(endpoint(&Client::new(&cli.socket), cmd))),
            Command::Host(cmd) => {
                client_runtime().and_then(|rt| rt.block_on(hosts(&Client::new(&cli.socket), cmd)))
            }
            Command::Service(cmd) => {
                client_runtime().and_then(|rt| rt.block_on(service(&Client::new(&cli.socket), cmd)))
            }
            Command::Policy(cmd) => {
                client_runtime().and_then(|rt| rt.block_on(policy(&Client::new(&cli.socket), cmd)))
            }
            Command::Conntrack(cmd) => client_runtime()
                .and_then(|rt| rt.block_on(conntrack(&Client::new(&cli.socket), cmd))),
            Command::Monitor(args) => client_runtime()
                .and_then(|rt| rt.block_on(monitor(&Client::new(&cli.socket), args))),
            Command::Status { json } => {
                client_runtime().and_then(|rt| rt.block_on(status(&Client::new(&cli.socket), json)))
            }
        };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn start(socket: PathBuf, args: RunArgs) -> anyhow::Result<()> {
    let file = match args.config {
        Some(path) => FileConfig::load(&path)?,
        None => FileConfig::default(),
    };
    let socket = (socket.as_path() != std::path::Path::new(DEFAULT_SOCKET)).then_some(socket);
    let config = RunConfig::resolve(
        file,
        Overrides {
            uplinks: args.uplinks,
            pin_path: args.pin_path,
            metrics_addr: args.metrics_addr,
            state_dir: args.state_dir,
            socket,
            docker_plugin: args.docker_plugin,
            docker_plugin_socket: args.docker_plugin_socket,
            docker_api_socket: args.docker_api_socket,
            dns: args.dns,
            dns_upstreams: args.dns_upstreams,
            store: args.store,
            host_name: args.host_name,
            underlay_ip: args.underlay_ip,
            host_lease_ttl: args.host_lease_ttl,
            host_grace: args.host_grace,
            conntrack_max_entries: args.conntrack_max_entries,
        },
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run::run(config))
}

fn pairs(flag: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => bail!("--{flag} {item:?}: expected NAME=VALUE"),
        })
        .collect()
}

/// The name of network `id` among `networks`, for tables ("?" if gone).
fn network_name<'a>(networks: &'a [Network], id: &str) -> &'a str {
    networks
        .iter()
        .find(|n| n.id == id)
        .map_or("?", |n| n.name.as_str())
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("encoding JSON")?
    );
    Ok(())
}

async fn network(client: &Client, cmd: NetworkCmd) -> anyhow::Result<()> {
    match cmd {
        NetworkCmd::Create {
            name,
            subnet,
            gateway,
            ip_range,
            aux_addresses,
            labels,
            overlay,
            default_deny,
        } => {
            let spec = NetworkSpec {
                default_deny,
                name,
                subnet,
                gateway,
                ip_range,
                aux_addresses: pairs("aux-address", &aux_addresses)?,
                labels: pairs("label", &labels)?,
                overlay,
            };
            let n: Network = client.post("/networks", &spec).await?;
            println!("{}", n.id);
        }
        NetworkCmd::Ls { json } => {
            let list: Vec<Network> = client.get("/networks").await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<16}  {:<20}  {:<18}  {:<15}  {:<18}  VNI",
                "ID", "NAME", "SUBNET", "GATEWAY", "IP-RANGE"
            );
            for n in list {
                let range = n
                    .ip_range
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "-".into());
                let vni = n.vni.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                println!(
                    "{:<16}  {:<20}  {:<18}  {:<15}  {:<18}  {}",
                    n.id,
                    n.name,
                    n.subnet.to_string(),
                    n.gateway.to_string(),
                    range,
                    vni
                );
            }
        }
        NetworkCmd::Inspect { name } => {
            print_json(&client.get::<Network>(&format!("/networks/{name}")).await?)?
        }
        NetworkCmd::Rm { name } => {
            let n: Network = client.delete(&format!("/networks/{name}")).await?;
            println!("{}", n.name);
        }
    }
    Ok(())
}

async fn endpoint(client: &Client, cmd: EndpointCmd) -> anyhow::Result<()> {
    match cmd {
        EndpointCmd::Create {
            name,
            network,
            netns,
            external_host,
            ip,
            ifname,
            mac,
            labels,
        } => {
            let spec = EndpointSpec {
                name,
                network,
                netns: netns.unwrap_or_default(),
                external_host,
                ip,
                ifname,
                mac,
                labels: pairs("label", &labels)?,
            };
            let e: Endpoint = client.post("/endpoints", &spec).await?;
            println!("{} {} {}", e.id, e.ipv4, e.mac);
        }
        EndpointCmd::Ls { json } => {
            let list: Vec<Endpoint> = client.get("/endpoints").await?;
            if json {
                return print_json(&list);
            }
            let networks: Vec<Network> = client.get("/networks").await?;
            // Counted on the endpoint's own host: `-` for another host's.
            let traffic: BTreeMap<String, EndpointTraffic> = client.get("/traffic").await?;
            println!(
                "{:<20}  {:<16}  {:<15}  {:<17}  {:<8}  {:<12}  {:>10}  {:>10}  {:<24}  SANDBOX",
                "NAME", "NETWORK", "IPV4", "MAC", "IFNAME", "HOST", "SENT", "RECEIVED", "DROPPED"
            );
            for e in list {
                let net = network_name(&networks, &e.network);
                let (sent, received, dropped) = match traffic.get(&e.name) {
                    Some(t) => (
                        t.sent_packets.to_string(),
                        t.received_packets.to_string(),
                        match t.dropped() {
                            0 => "0".to_string(),
                            n => format!("{n} ({})", t.top_drops(2)),
                        },
                    ),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                println!(
                    "{:<20}  {:<16}  {:<15}  {:<17}  {:<8}  {:<12}  {:>10}  {:>10}  {:<24}  {}",
                    e.name,
                    net,
                    e.ipv4.to_string(),
                    e.mac.to_string(),
                    e.ifname,
                    if e.host.is_empty() {
                        "-"
                    } else {
                        e.host.as_str()
                    },
                    sent,
                    received,
                    dropped,
                    e.sandbox.display()
                );
            }
        }
        EndpointCmd::Inspect { name } => print_json(
            &client
                .get::<Endpoint>(&format!("/endpoints/{name}"))
                .await?,
        )?,
        EndpointCmd::Rm { name } => {
            let e: Endpoint = client.delete(&format!("/endpoints/{name}")).await?;
            println!("{}", e.name);
        }
    }
    Ok(())
}

fn weights(items: &[String]) -> anyhow::Result<BTreeMap<String, u32>> {
    pairs("weight", items)?
        .into_iter()
        .map(|(k, v)| match v.parse() {
            Ok(w) => Ok((k, w)),
            Err(_) => bail!("--weight {k}={v}: the weight is a number from 1 to 256"),
        })
        .collect()
}

async fn policy(client: &Client, cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Create {
            name,
            network,
            selector,
            ingress,
            egress,
            deny_ingress,
            deny_egress,
            file,
        } => {
            let spec = match file {
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    let mut spec: PolicySpec = serde_json::from_str(&text)
                        .with_context(|| format!("{}: not a policy (JSON)", file.display()))?;
                    spec.name = name;
                    spec
                }
                None => {
                    let rules = |texts: Vec<String>, deny: bool| -> anyhow::Result<_> {
                        let list = texts
                            .iter()
                            .map(|t| parse_rule(t))
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok((deny || !list.is_empty()).then_some(list))
                    };
                    PolicySpec {
                        name,
                        network,
                        selector,
                        ingress: rules(ingress, deny_ingress)?,
                        egress: rules(egress, deny_egress)?,
                    }
                }
            };
            let p: Policy = client.post("/policies", &spec).await?;
            println!("{}", p.id);
        }
        PolicyCmd::Ls { json } => {
            let list: Vec<PolicyView> = client.get("/policies").await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<20}  {:<24}  {:<14}  {:>12}  {:>12}  {:>12}",
                "NAME", "SELECTS", "RULE", "ALLOWED", "DENIED", "AUDITED"
            );
            for v in list {
                let p = &v.policy;
                let selects: Vec<String> =
                    p.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let selects = if selects.is_empty() {
                    "(all)".to_string()
                } else {
                    selects.join(",")
                };
                let mut rows: Vec<(String, u64, u64, u64)> = Vec::new();
                for (direction, list) in [("ingress", &p.ingress), ("egress", &p.egress)] {
                    for i in 1..=list.as_ref().map_or(0, Vec::len) {
                        let h = v
                            .hits
                            .iter()
                            .find(|h| h.direction == direction && h.rule == i);
                        rows.push((
                            format!("{direction}/{i}"),
                            h.map_or(0, |h| h.allowed_packets),
                            h.map_or(0, |h| h.denied_packets),
                            h.map_or(0, |h| h.audited_packets),
                        ));
                    }
                }
                if rows.is_empty() {
                    rows.push(("-".into(), 0, 0, 0));
                }
                for (i, (rule, a, d, l)) in rows.into_iter().enumerate() {
                    let (name, sel) = if i == 0 {
                        (p.name.as_str(), selects.as_str())
                    } else {
                        ("", "")
                    };
                    println!("{name:<20}  {sel:<24}  {rule:<14}  {a:>12}  {d:>12}  {l:>12}");
                }
            }
        }
        PolicyCmd::Inspect { name } => print_json(
            &client
                .get::<PolicyView>(&format!("/policies/{name}"))
                .await?,
        )?,
        PolicyCmd::Rm { name } => {
            let p: Policy = client.delete(&format!("/policies/{name}")).await?;
            println!("{}", p.name);
        }
    }
    Ok(())
}

async fn service(client: &Client, cmd: ServiceCmd) -> anyhow::Result<()> {
    match cmd {
        ServiceCmd::Create {
            file: Some(file), ..
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let specs: Vec<ServiceSpec> = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a JSON list of services", file.display()))?;
            let made: Vec<Service> = client.post("/batch/services", &specs).await?;
            println!("{} services created", made.len());
        }
        ServiceCmd::Create {
            name,
            network,
            ports,
            vip,
            selector,
            backends,
            weights: w,
            mode,
            affinity,
            publish,
            file: None,
        } => {
            let spec = ServiceSpec {
                name: name.unwrap_or_default(),
                network: network.unwrap_or_default(),
                vip,
                ports,
                selector,
                backends,
                weights: weights(&w)?,
                draining: Default::default(),
                mode: if mode == "dnsrr" {
                    Mode::Dnsrr
                } else {
                    Mode::Vip
                },
                affinity,
                publish,
            };
            let s: ServiceView = client.post("/services", &spec).await?;
            let vip = s.service.vip.map_or("-".to_string(), |v| v.to_string());
            println!("{} {} {} backends", s.service.id, vip, s.backends.len());
        }
        ServiceCmd::Ls { json } => {
            let list: Vec<ServiceView> = client.get("/services").await?;
            if json {
                return print_json(&list);
            }
            let networks: Vec<Network> = client.get("/networks").await?;
            println!(
                "{:<20}  {:<16}  {:<15}  {:<5}  {:<24}  {:<24}  {:>8}  {:<16}  SELECTOR",
                "NAME", "NETWORK", "VIP", "MODE", "PORTS", "PUBLISHED", "BACKENDS", "AFFINITY"
            );
            for v in list {
                let s = &v.service;
                let net = network_name(&networks, &s.network);
                let ports: Vec<String> = s.ports.iter().map(|p| p.to_string()).collect();
                let published: Vec<String> = s.published.iter().map(|p| p.to_string()).collect();
                let selector: Vec<String> =
                    s.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let active = v.backends.iter().filter(|b| !b.draining).count();
                println!(
                    "{:<20}  {:<16}  {:<15}  {:<5}  {:<24}  {:<24}  {:>8}  {:<16}  {}",
                    s.name,
                    net,
                    s.vip.map_or("-".to_string(), |v| v.to_string()),
                    if s.mode == Mode::Vip { "vip" } else { "dnsrr" },
                    ports.join(","),
                    if published.is_empty() {
                        "-".to_string()
                    } else {
                        published.join(",")
                    },
                    format!("{active}/{}", v.backends.len()),
                    s.affinity.to_string(),
                    if selector.is_empty() {
                        "-".to_string()
                    } else {
                        selector.join(",")
                    }
                );
            }
        }
        ServiceCmd::Inspect { name } => print_json(
            &client
                .get::<ServiceView>(&format!("/services/{name}"))
                .await?,
        )?,
        ServiceCmd::Update {
            name,
            ports,
            selector,
            backends,
            weights: w,
            drain,
            undrain,
            affinity,
            publish,
            unpublish,
        } => {
            let update = ServiceUpdate {
                ports: (!ports.is_empty()).then_some(ports),
                selector,
                backends: (!backends.is_empty()).then_some(backends),
                weights: weights(&w)?,
                drain: drain.into_iter().collect(),
                undrain: undrain.into_iter().collect(),
                affinity,
                publish: if unpublish {
                    Some(Vec::new())
                } else {
                    (!publish.is_empty()).then_some(publish)
                },
            };
            let s: ServiceView = client.patch(&format!("/services/{name}"), &update).await?;
            println!("{}", s.service.name);
        }
        ServiceCmd::Rm { name } => {
            let s: Service = client.delete(&format!("/services/{name}")).await?;
            println!("{}", s.name);
        }
    }
    Ok(())
}

/// The API's query for `filter`, a backend named by endpoint resolved to
/// its address.
async fn flow_query(client: &Client, filter: FlowArgs) -> anyhow::Result<String> {
    let mut query = Vec::new();
    if let Some(service) = filter.service {
        if !netd::model::valid_name(&service) {
            bail!("--service {service:?} is not a service name");
        }
        query.push(format!("service={service}"));
    }
    if let Some(backend) = filter.backend {
        let ip = match backend.parse::<Ipv4Addr>() {
            Ok(ip) => ip,
            Err(_) => {
                client
                    .get::<Endpoint>(&format!("/endpoints/{backend}"))
                    .await?
                    .ipv4
            }
        };
        query.push(format!("backend={ip}"));
    }
    Ok(format!("/conntrack?{}", query.join("&")))
}

async fn conntrack(client: &Client, cmd: ConntrackCmd) -> anyhow::Result<()> {
    match cmd {
        ConntrackCmd::Ls { filter, json } => {
            let flows: Vec<FlowView> = client.get(&flow_query(client, filter).await?).await?;
            if json {
                return print_json(&flows);
            }
            println!(
                "{:<5}  {:<21}  {:<21}  {:<21}  {:<16}  {:<11}  {:>8}  {:>10}  {:>12}",
                "PROTO",
                "CLIENT",
                "VIP",
                "BACKEND",
                "SERVICE",
                "STATE",
                "IDLE(s)",
                "PACKETS",
                "BYTES"
            );
            for f in flows {
                println!(
                    "{:<5}  {:<21}  {:<21}  {:<21}  {:<16}  {:<11}  {:>8}  {:>10}  {:>12}",
                    f.protocol,
                    f.client.to_string(),
                    f.vip.to_string(),
                    f.backend.to_string(),
                    f.service,
                    f.state,
                    f.idle_secs,
                    f.packets,
                    f.bytes
                );
            }
        }
        ConntrackCmd::Flush { filter } => {
            let done: serde_json::Value = client.delete(&flow_query(client, filter).await?).await?;
            println!("{} flows flushed", done["flushed"]);
        }
    }
    Ok(())
}

async fn hosts(client: &Client, cmd: HostCmd) -> anyhow::Result<()> {
    match cmd {
        HostCmd::Ls { json } => list_hosts(client, json).await,
        HostCmd::Add { name, underlay_ip } => {
            let spec = ExternalHostSpec { name, underlay_ip };
            let h: Host = client.post("/hosts", &spec).await?;
            println!("{}", h.name);
            Ok(())
        }
        HostCmd::Rm { name } => {
            let h: Host = client.delete(&format!("/hosts/{name}")).await?;
            println!("{}", h.name);
            Ok(())
        }
    }
}

async fn list_hosts(client: &Client, json: bool) -> anyhow::Result<()> {
    let list: Vec<Host> = client.get("/hosts").await?;
    if json {
        return print_json(&list);
    }
    println!(
        "{:<24}  {:<15}  {:<5}  {:<8}  STATE",
        "NAME", "UNDERLAY", "INDEX", "KIND"
    );
    for h in list {
        let ip = h
            .underlay_ip
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "-".into());
        let kind = if h.external { "external" } else { "netd" };
        let state = if h.alive { "up" } else { "down" };
        println!(
            "{:<24}  {ip:<15}  {:<5}  {kind:<8}  {state}",
            h.name, h.index
        );
    }
    Ok(())
}

async fn monitor(client: &Client, args: MonitorArgs) -> anyhow::Result<()> {
    use netd::monitor::{pcap::PcapWriter, Filter, Record};
    let filter = Filter {
        kind: args.kind,
        reason: args.reason,
        endpoint: args.endpoint,
        network: args.network,
        service: args.service,
        address: args.address,
    };
    filter.check().map_err(anyhow::Error::msg)?;
    let query = serde_urlencoded::to_string(&filter)?;
    let mut pcap = match &args.pcap {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            Some(PcapWriter::new(std::io::BufWriter::new(file))?)
        }
        None => None,
    };
    eprintln!("netd monitor: listening (Ctrl-C stops)");
    let mut seen = 0u64;
    let mut failed: Option<anyhow::Error> = None;
    client
        .stream_lines(&format!("/monitor?{query}"), |line| {
            let Ok(record) = serde_json::from_str::<Record>(line) else {
                // `{"type":"missed","count":N}`: this monitor fell behind.
                eprintln!("netd monitor: {line}");
                return true;
            };
            if let Some(w) = pcap.as_mut() {
                if let Err(e) = w.write(&record) {
                    failed = Some(e.into());
                    return false;
                }
            }
            if args.json {
                println!("{line}");
            } else {
                println!("{}", record.line());
            }
            seen += 1;
            args.count.is_none_or(|n| seen < n)
        })
        .await?;
    match failed {
        Some(e) => Err(e.context("writing the pcap file")),
        None => Ok(()),
    }
}

async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let status: serde_json::Value = client.get("/status").await?;
    if json {
        return print_json(&status);
    }
    let s: Status = serde_json::from_value(status).context("reading status")?;
    println!("pin path   {}", s.pin_path);
    println!("networks   {}", s.networks);
    println!("endpoints  {}", s.endpoints);
    println!("services   {}", s.services);
    println!(
        "attached   {}",
        if s.attachments.is_empty() {
            "-".to_string()
        } else {
            s.attachments.join(" ")
        }
    );
    println!(
        "{:<16}  {:>8}  {:>8}  {:>6}",
        "MAP", "ENTRIES", "CAPACITY", "FILL"
    );
    for m in s.maps {
        println!(
            "{:<16}  {:>8}  {:>8}  {:>5.1}%",
            m.name,
            m.entries,
            m.capacity,
            100.0 * m.entries as f64 / f64::from(m.capacity)
        );
    }
    let traffic: BTreeMap<String, EndpointTraffic> = client.get("/traffic").await?;
    if traffic.is_empty() {
        return Ok(());
    }
    println!();
    println!(
        "{:<20}  {:<16}  {:>12}  {:>12}  {:>12}  {:>12}  {:>9}  TOP DROP REASONS",
        "ENDPOINT", "NETWORK", "SENT PKTS", "SENT BYTES", "RECV PKTS", "RECV BYTES", "DROPPED"
    );
    for t in traffic.values() {
        println!(
            "{:<20}  {:<16}  {:>12}  {:>12}  {:>12}  {:>12}  {:>9}  {}",
            t.endpoint,
            t.network,
            t.sent_packets,
            t.sent_bytes,
            t.received_packets,
            t.received_bytes,
            t.dropped(),
            t.top_drops(3)
        );
    }
    Ok(())
}
