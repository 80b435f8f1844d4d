//! The `netd` command: `netd run` starts the daemon; every other
//! subcommand talks to a running one over its control socket. One file
//! per subcommand, and one table printer for them all.

mod conntrack;
mod endpoint;
mod host;
mod monitor;
mod network;
mod policy;
mod run;
mod service;
mod status;
mod table;

use std::{collections::BTreeMap, future::Future, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use netd::{
    client::Client,
    config::{DEFAULT_PIN_PATH, DEFAULT_SOCKET},
    dataplane::PinLayout,
    logging,
    model::Network,
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
    Run(Box<run::RunArgs>),
    /// Detach netd's programs everywhere and remove its pins (netd must be stopped).
    Teardown {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
    },
    /// Networks: create, ls, inspect, rm.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Endpoints: create, ls, inspect, rm.
    #[command(subcommand)]
    Endpoint(endpoint::EndpointCmd),
    /// Hosts of the cluster whose netd is alive.
    #[command(subcommand)]
    Host(host::HostCmd),
    /// Services: a VIP load-balanced across endpoints: create, ls, inspect, update, rm.
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Policies: L3/L4 rules per endpoint, by label: create, ls, inspect, rm.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// The flows to VIPs this host tracks: ls, flush.
    #[command(subcommand)]
    Conntrack(conntrack::ConntrackCmd),
    /// The datapath's events as they happen: drops with their reason, and
    /// the packet's first bytes (Ctrl-C stops)
    Monitor(monitor::MonitorArgs),
    /// What netd has: networks, endpoints, map fill.
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level);
    let client = Client::new(&cli.socket);
    let result = match cli.command {
        Command::Run(args) => run::start(cli.socket, *args),
        Command::Teardown { pin_path } => netd::run::teardown(&PinLayout::new(pin_path)),
        Command::Network(cmd) => talk(network::run(&client, cmd)),
        Command::Endpoint(cmd) => talk(endpoint::run(&client, cmd)),
        Command::Host(cmd) => talk(host::run(&client, cmd)),
        Command::Service(cmd) => talk(service::run(&client, cmd)),
        Command::Policy(cmd) => talk(policy::run(&client, cmd)),
        Command::Conntrack(cmd) => talk(conntrack::run(&client, cmd)),
        Command::Monitor(args) => talk(monitor::run(&client, args)),
        Command::Status { json } => talk(status::run(&client, json)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a conversation with the netd behind the control socket.
fn talk(conversation: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(conversation)
}

/// `NAME=VALUE` items of a repeatable flag.
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{policy::PolicyCmd, Cli, Command};

    #[test]
    fn a_policy_takes_its_endpoints_by_selector_as_a_service_does() {
        for flag in ["--selector", "--select"] {
            let cli = Cli::try_parse_from(["netd", "policy", "create", "p", flag, "tier=web"])
                .expect("parses");
            let Command::Policy(PolicyCmd::Create { selector, .. }) = cli.command else {
                panic!("not a policy create");
            };
            assert_eq!(selector.as_deref(), Some("tier=web"), "{flag}");
        }
    }
}
