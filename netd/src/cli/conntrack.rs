//! `netd conntrack`: the flows to VIPs this host tracks, listed or
//! flushed, by service or backend; and masquerading's flows (`ls --nat`).

use std::net::Ipv4Addr;

use anyhow::bail;
use clap::{Args, Subcommand};
use netd::{
    client::Client,
    dataplane::{conntrack::FlowView, nat_table::NatView},
    model::Endpoint,
};

use super::{
    print_json,
    table::{Align::*, Table},
};

#[derive(Args)]
pub(super) struct FlowArgs {
    /// Only the flows of this service.
    #[arg(long)]
    service: Option<String>,
    /// Only the flows to this backend (an endpoint's name or address).
    #[arg(long)]
    backend: Option<String>,
}

#[derive(Subcommand)]
pub(super) enum ConntrackCmd {
    /// List tracked flows.
    Ls {
        #[command(flatten)]
        filter: FlowArgs,
        /// Masquerading's flows to the world instead: each endpoint's
        /// address and port, and what the world sees.
        #[arg(long, conflicts_with_all = ["service", "backend"])]
        nat: bool,
        #[arg(long)]
        json: bool,
    },
    /// Forget tracked flows: each is balanced again on its next packet.
    Flush {
        #[command(flatten)]
        filter: FlowArgs,
    },
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

pub(super) async fn run(client: &Client, cmd: ConntrackCmd) -> anyhow::Result<()> {
    match cmd {
        ConntrackCmd::Ls {
            nat: true, json, ..
        } => {
            let flows: Vec<NatView> = client.get("/conntrack/nat").await?;
            if json {
                return print_json(&flows);
            }
            let mut table = Table::new(&[
                ("PROTO", Left),
                ("ENDPOINT", Left),
                ("REMOTE", Left),
                ("TRANSLATED", Left),
                ("STATE", Left),
                ("IDLE(s)", Right),
                ("AGE(s)", Right),
            ]);
            for f in flows {
                table.row(vec![
                    f.protocol,
                    f.endpoint.to_string(),
                    f.remote.to_string(),
                    f.translated.to_string(),
                    f.state,
                    f.idle_secs.to_string(),
                    f.age_secs.to_string(),
                ]);
            }
            table.print();
        }
        ConntrackCmd::Ls { filter, json, .. } => {
            let flows: Vec<FlowView> = client.get(&flow_query(client, filter).await?).await?;
            if json {
                return print_json(&flows);
            }
            let mut table = Table::new(&[
                ("PROTO", Left),
                ("CLIENT", Left),
                ("VIP", Left),
                ("BACKEND", Left),
                ("SERVICE", Left),
                ("STATE", Left),
                ("IDLE(s)", Right),
                ("PACKETS", Right),
                ("BYTES", Right),
            ]);
            for f in flows {
                table.row(vec![
                    f.protocol.to_string(),
                    f.client.to_string(),
                    f.vip.to_string(),
                    f.backend.to_string(),
                    f.service,
                    f.state.to_string(),
                    f.idle_secs.to_string(),
                    f.packets.to_string(),
                    f.bytes.to_string(),
                ]);
            }
            table.print();
        }
        ConntrackCmd::Flush { filter } => {
            let done: serde_json::Value = client.delete(&flow_query(client, filter).await?).await?;
            println!("{} flows flushed", done["flushed"]);
        }
    }
    Ok(())
}
