//! `netd service`: create (one, or a batch from a file), ls, inspect,
//! update, rm.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use netd::{
    api::ServiceView,
    client::Client,
    model::{Mode, Network, Service, ServiceSpec, ServiceUpdate},
};

use super::{
    network_name, pairs, print_json,
    table::{or_dash, Align::*, Table},
};

#[derive(Subcommand)]
pub(super) enum ServiceCmd {
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
        /// published=P,target=T[,protocol=udp][,mode=host]; then
        /// ,allow=CIDR for each source range it takes (default: any)
        /// (repeatable).
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

pub(super) async fn run(client: &Client, cmd: ServiceCmd) -> anyhow::Result<()> {
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
            let mut table = Table::new(&[
                ("NAME", Left),
                ("NETWORK", Left),
                ("VIP", Left),
                ("MODE", Left),
                ("PORTS", Left),
                ("PUBLISHED", Left),
                ("BACKENDS", Right),
                ("AFFINITY", Left),
                ("SELECTOR", Left),
            ]);
            for v in list {
                let s = &v.service;
                let ports: Vec<String> = s.ports.iter().map(|p| p.to_string()).collect();
                let published: Vec<String> = s.published.iter().map(|p| p.to_string()).collect();
                let selector: Vec<String> =
                    s.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let active = v.backends.iter().filter(|b| !b.draining).count();
                table.row(vec![
                    s.name.clone(),
                    network_name(&networks, &s.network).to_string(),
                    s.vip.map_or("-".to_string(), |v| v.to_string()),
                    if s.mode == Mode::Vip { "vip" } else { "dnsrr" }.to_string(),
                    or_dash(ports.join(",")),
                    or_dash(published.join(",")),
                    format!("{active}/{}", v.backends.len()),
                    s.affinity.to_string(),
                    or_dash(selector.join(",")),
                ]);
            }
            table.print();
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

fn weights(items: &[String]) -> anyhow::Result<BTreeMap<String, u32>> {
    pairs("weight", items)?
        .into_iter()
        .map(|(k, v)| match v.parse() {
            Ok(w) => Ok((k, w)),
            Err(_) => bail!("--weight {k}={v}: the weight is a number from 1 to 256"),
        })
        .collect()
}
