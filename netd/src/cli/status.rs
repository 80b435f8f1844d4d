//! `netd status`: what netd has, how full each map is, and each
//! endpoint's traffic.

use std::collections::BTreeMap;

use anyhow::Context;
use netd::{api::Status, client::Client, endpoint_traffic::EndpointTraffic};

use super::{
    print_json,
    table::{Align::*, Table},
};

pub(super) async fn run(client: &Client, json: bool) -> anyhow::Result<()> {
    let status: serde_json::Value = client.get("/status").await?;
    if json {
        return print_json(&status);
    }
    let s: Status = serde_json::from_value(status).context("reading status")?;
    println!("pin path   {}", s.pin_path);
    println!("networks   {}", s.networks);
    println!("endpoints  {}", s.endpoints);
    println!("services   {}", s.services);
    for u in &s.uplinks {
        println!("uplink     {}: {} ({})", u.ifname, u.hook, u.why);
    }
    if !s.publish_addresses.is_empty() {
        let addresses: Vec<String> = s
            .publish_addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        println!("publishes  on {}", addresses.join(", "));
    }
    match (&s.egress.ports, s.egress.devices.is_empty()) {
        (Some(ports), false) => println!(
            "masquerade out of {}, source ports {ports}",
            s.egress.devices.join(", ")
        ),
        _ => println!("masquerade -  (no egress device: routed by the host)"),
    }
    println!(
        "attached   {}",
        if s.attachments.is_empty() {
            "-".to_string()
        } else {
            s.attachments.join(" ")
        }
    );
    let mut maps = Table::new(&[
        ("MAP", Left),
        ("ENTRIES", Right),
        ("CAPACITY", Right),
        ("FILL", Right),
    ]);
    for m in s.maps {
        let fill = match m.capacity {
            0 => "-".to_string(),
            c => format!("{:.1}%", 100.0 * m.entries as f64 / f64::from(c)),
        };
        maps.row(vec![
            m.name,
            m.entries.to_string(),
            m.capacity.to_string(),
            fill,
        ]);
    }
    maps.print();
    let traffic: BTreeMap<String, EndpointTraffic> = client.get("/traffic").await?;
    if traffic.is_empty() {
        return Ok(());
    }
    println!();
    let mut table = Table::new(&[
        ("ENDPOINT", Left),
        ("NETWORK", Left),
        ("SENT PKTS", Right),
        ("SENT BYTES", Right),
        ("RECV PKTS", Right),
        ("RECV BYTES", Right),
        ("DROPPED", Right),
        ("TOP DROP REASONS", Left),
    ]);
    for t in traffic.values() {
        table.row(vec![
            t.endpoint.clone(),
            t.network.clone(),
            t.sent_packets.to_string(),
            t.sent_bytes.to_string(),
            t.received_packets.to_string(),
            t.received_bytes.to_string(),
            t.dropped().to_string(),
            t.top_drops(3),
        ]);
    }
    table.print();
    Ok(())
}
