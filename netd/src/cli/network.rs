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
        #[command(flatten)]
        egress: EgressArgs,
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

/// A network's way out, with Docker's defaults.
#[derive(clap::Args)]
pub(super) struct EgressArgs {
    /// No way out of the host: endpoints reach each other, services and
    /// this host only (Docker's --internal).
    #[arg(long)]
    internal: bool,
    /// Masquerade packets to the world to the uplink's address [default:
    /// true]; false: the host routes them with the endpoint's own.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    masquerade: Option<bool>,
    /// A destination CIDR reached with the endpoints' own addresses (repeatable).
    #[arg(long = "no-masquerade", value_name = "CIDR")]
    no_masquerade: Vec<String>,
    /// The endpoints' MTU [default: 1500, or the uplink's less VXLAN's 50
    /// bytes on an overlay network].
    #[arg(long)]
    mtu: Option<u32>,
    /// The address to masquerade to, where the host has several [default:
    /// the address of the uplink a packet leaves by].
    #[arg(long, value_name = "IP")]
    egress_ip: Option<String>,
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
            egress,
        } => {
            let spec = NetworkSpec {
                default_deny,
                internal: egress.internal,
                masquerade: egress.masquerade,
                no_masquerade: egress.no_masquerade,
                mtu: egress.mtu,
                egress_ip: egress.egress_ip,
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
            let mut table = Table::left(&[
                "ID", "NAME", "SUBNET", "GATEWAY", "IP-RANGE", "VNI", "WAY OUT",
            ]);
            for n in list {
                let way_out = way_out(&n);
                table.row(vec![
                    n.id,
                    n.name,
                    n.subnet.to_string(),
                    n.gateway.to_string(),
                    n.ip_range.map_or("-".into(), |r| r.to_string()),
                    n.vni.map_or("-".into(), |v| v.to_string()),
                    way_out,
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

/// `masquerade`, `internal` or `routed`, with the MTU when set.
fn way_out(n: &Network) -> String {
    let e = &n.egress;
    let mut text = if e.internal {
        "internal".to_string()
    } else if e.masquerade {
        match e.egress_ip {
            Some(ip) => format!("masquerade to {ip}"),
            None => "masquerade".to_string(),
        }
    } else {
        "routed".to_string()
    };
    if let Some(mtu) = e.mtu {
        text.push_str(&format!(", mtu {mtu}"));
    }
    text
}
