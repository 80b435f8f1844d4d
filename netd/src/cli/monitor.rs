//! `netd monitor`: the datapath's events as they happen, as text, JSON
//! or pcap.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use netd::client::Client;

#[derive(Args)]
pub(super) struct MonitorArgs {
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

pub(super) async fn run(client: &Client, args: MonitorArgs) -> anyhow::Result<()> {
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
