//! `netd network`: create, ls, inspect, rm.

use clap::Subcommand;
use netd::{
    client::Client,
    model::{Network, NetworkSpec},
};

use super::{pairs, print_json, table::Table};

#[derive(Subcommand)]
pub(super) enum NetworkCmd {
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

pub(super) async fn run(client: &Client, cmd: NetworkCmd) -> anyhow::Result<()> {
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
            let mut table = Table::left(&["ID", "NAME", "SUBNET", "GATEWAY", "IP-RANGE", "VNI"]);
            for n in list {
                table.row(vec![
                    n.id,
                    n.name,
                    n.subnet.to_string(),
                    n.gateway.to_string(),
                    n.ip_range.map_or("-".into(), |r| r.to_string()),
                    n.vni.map_or("-".into(), |v| v.to_string()),
                ]);
            }
            table.print();
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
