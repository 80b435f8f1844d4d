//! `netd policy`: create (by flags or from a JSON file), ls with each
//! rule's hits, inspect, rm.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use netd::{
    api::PolicyView,
    client::Client,
    model::{parse_rule, Policy, PolicySpec},
};

use super::{
    print_json,
    table::{Align::*, Table},
};

#[derive(Subcommand)]
pub(super) enum PolicyCmd {
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

pub(super) async fn run(client: &Client, cmd: PolicyCmd) -> anyhow::Result<()> {
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
            let mut table = Table::new(&[
                ("NAME", Left),
                ("SELECTS", Left),
                ("RULE", Left),
                ("ALLOWED", Right),
                ("DENIED", Right),
                ("AUDITED", Right),
            ]);
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
                    // The policy's name and selector on its first rule only.
                    let (name, sel) = if i == 0 {
                        (p.name.clone(), selects.clone())
                    } else {
                        (String::new(), String::new())
                    };
                    table.row(vec![
                        name,
                        sel,
                        rule,
                        a.to_string(),
                        d.to_string(),
                        l.to_string(),
                    ]);
                }
            }
            table.print();
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
