//! `netd endpoint`: create, ls (with each one's traffic), inspect, rm.

use std::{collections::BTreeMap, path::PathBuf};

use clap::Subcommand;
use netd::{
    client::Client,
    endpoint_traffic::EndpointTraffic,
    model::{Endpoint, EndpointSpec, Network},
};

use super::{
    network_name, pairs, print_json,
    table::{or_dash, Align::*, Table},
};

#[derive(Subcommand)]
pub(super) enum EndpointCmd {
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

pub(super) async fn run(client: &Client, cmd: EndpointCmd) -> anyhow::Result<()> {
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
            let mut table = Table::new(&[
                ("NAME", Left),
                ("NETWORK", Left),
                ("IPV4", Left),
                ("MAC", Left),
                ("IFNAME", Left),
                ("HOST", Left),
                ("SENT", Right),
                ("RECEIVED", Right),
                ("DROPPED", Left),
                ("SANDBOX", Left),
            ]);
            for e in list {
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
                table.row(vec![
                    e.name.clone(),
                    network_name(&networks, &e.network).to_string(),
                    e.ipv4.to_string(),
                    e.mac.to_string(),
                    e.ifname.clone(),
                    or_dash(e.host.clone()),
                    sent,
                    received,
                    dropped,
                    e.sandbox.display().to_string(),
                ]);
            }
            table.print();
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
