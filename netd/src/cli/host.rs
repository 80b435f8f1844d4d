//! `netd host`: the cluster's hosts, external ones added and any removed.

use std::net::Ipv4Addr;

use clap::Subcommand;
use netd::{api::ExternalHostSpec, client::Client, model::Host};

use super::{print_json, table::Table};

#[derive(Subcommand)]
pub(super) enum HostCmd {
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

pub(super) async fn run(client: &Client, cmd: HostCmd) -> anyhow::Result<()> {
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
    let mut table = Table::left(&["NAME", "UNDERLAY", "INDEX", "KIND", "STATE"]);
    for h in list {
        table.row(vec![
            h.name,
            h.underlay_ip.map_or("-".into(), |ip| ip.to_string()),
            h.index.to_string(),
            if h.external { "external" } else { "netd" }.to_string(),
            if h.alive { "up" } else { "down" }.to_string(),
        ]);
    }
    table.print();
    Ok(())
}
