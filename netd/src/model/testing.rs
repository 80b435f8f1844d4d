//! Model records for unit tests, built the way requests build them (so
//! they are valid), panicking with the reason when a test asks for one
//! that is not.

use super::{Endpoint, EndpointSpec, Network, NetworkSpec};

/// Network `name` on `subnet`, after `existing` (its index is the next).
pub fn network(name: &str, subnet: &str, existing: &[Network]) -> Network {
    let spec = NetworkSpec {
        name: name.into(),
        subnet: subnet.into(),
        ..Default::default()
    };
    Network::from_spec(&spec, existing, existing.len() as u32 + 1)
        .unwrap_or_else(|e| panic!("network {name}: {e}"))
}

/// Endpoint `name` on network `network` (by name) in sandbox
/// `/run/netns/<name>`, with `labels`, and the address `ip` (or the
/// network's next free one after `endpoints`).
pub fn endpoint(
    name: &str,
    network: &str,
    labels: &[(&str, &str)],
    ip: Option<&str>,
    networks: &[Network],
    endpoints: &[Endpoint],
) -> Endpoint {
    let spec = EndpointSpec {
        name: name.into(),
        network: network.into(),
        netns: format!("/run/netns/{name}").into(),
        ip: ip.map(Into::into),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    Endpoint::from_spec(&spec, networks, endpoints)
        .unwrap_or_else(|e| panic!("endpoint {name}: {e}"))
}
