//! NetworkDriver.*: libnetwork's remote driver calls.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse, port_map, Answer, Plugin, PluginError};
use crate::{
    model::{Mac, NetworkSpec},
    store::Store,
};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpData {
    #[serde(default, deserialize_with = "super::nullable")]
    pool: String,
    #[serde(default, deserialize_with = "super::nullable")]
    gateway: String,
    #[serde(default, deserialize_with = "super::nullable")]
    aux_addresses: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(default, deserialize_with = "super::nullable")]
    options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data", default, deserialize_with = "super::nullable")]
    ipv4_data: Vec<IpData>,
    #[serde(rename = "IPv6Data", default)]
    ipv6_data: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct NetworkOnly {
    #[serde(rename = "NetworkID")]
    network_id: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Interface {
    #[serde(default, deserialize_with = "super::nullable")]
    address: String,
    #[serde(default, deserialize_with = "super::nullable")]
    mac_address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default, deserialize_with = "super::nullable")]
    interface: Option<Interface>,
}

#[derive(Deserialize)]
struct EndpointRef {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
}

#[derive(Deserialize)]
struct ExternalConnectivity {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "Options", default, deserialize_with = "super::nullable")]
    options: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct Join {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "SandboxKey")]
    sandbox_key: String,
}

/// "10.1.0.1/24" → 10.1.0.1 (Docker sends addresses in CIDR form).
fn address(field: &str, text: &str) -> Result<Ipv4Addr, PluginError> {
    let ip = text.split('/').next().unwrap_or(text);
    ip.parse()
        .map_err(|_| PluginError(format!("{field}: {text:?} is not an IPv4 address")))
}

/// Driver options netd would be expected to act on but does not (yet):
/// refused rather than silently ignored.
const UNSUPPORTED_OPTIONS: &[&str] = &["com.docker.network.bridge.name"];

/// `-o com.docker.network.driver.mtu=N`: the endpoints' MTU.
fn mtu(options: &BTreeMap<String, String>) -> Result<Option<u32>, PluginError> {
    let Some(text) = options.get("com.docker.network.driver.mtu") else {
        return Ok(None);
    };
    text.trim().parse().map(Some).map_err(|_| {
        PluginError(format!(
            "com.docker.network.driver.mtu={text}: not a number"
        ))
    })
}

/// `-o com.docker.network.bridge.enable_ip_masquerade=false`: the host
/// routes the network's packets to the world with their own addresses.
fn masquerade(options: &BTreeMap<String, String>) -> Result<Option<bool>, PluginError> {
    match options
        .get("com.docker.network.bridge.enable_ip_masquerade")
        .map(String::as_str)
    {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(PluginError(format!(
            "com.docker.network.bridge.enable_ip_masquerade={other}: the choices are true and false"
        ))),
    }
}

/// `--internal`: Docker passes it beside the driver options.
fn internal(options: &BTreeMap<String, Value>) -> bool {
    matches!(
        options.get("com.docker.network.internal"),
        Some(Value::Bool(true))
    ) || matches!(options.get("com.docker.network.internal"), Some(Value::String(s)) if s == "true")
}

/// `-o netd.no-masquerade=CIDR[,CIDR..]` and `-o netd.egress-ip=IP`.
fn list(options: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    options
        .get(key)
        .map(|l| l.split(',').map(|c| c.trim().to_string()).collect())
        .unwrap_or_default()
}

/// Docker's driver options (`-o KEY=VALUE`): kept as the network's labels.
fn generic_options(
    options: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, String>, PluginError> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(generic)) = options.get("com.docker.network.generic") {
        for (k, v) in generic {
            if UNSUPPORTED_OPTIONS.contains(&k.as_str()) {
                return Err(PluginError(format!(
                    "option {k} is not supported by the netd driver (netd keeps -o KEY=VALUE as labels only)"
                )));
            }
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(k.clone(), v);
        }
    }
    Ok(out)
}

/// `-o netd.overlay=true`: one network across the cluster's Docker hosts.
fn overlay(options: &BTreeMap<String, String>) -> Result<bool, PluginError> {
    match options.get("netd.overlay").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(PluginError(format!(
            "netd.overlay={other}: the choices are true and false"
        ))),
    }
}

/// `-o netd.policy=default-deny`: the network's endpoints are
/// default-deny both ways until a policy allows their traffic.
fn default_deny(options: &BTreeMap<String, String>) -> Result<bool, PluginError> {
    match options.get("netd.policy").map(String::as_str) {
        None | Some("open") => Ok(false),
        Some("default-deny") => Ok(true),
        Some(other) => Err(PluginError(format!(
            "netd.policy={other}: the choices are default-deny and open"
        ))),
    }
}

/// `-o netd.publish-allow=CIDR[,CIDR..]`: the sources the ports of the
/// network's containers published with `-p` take (Docker's `-p` has no
/// syntax of its own for it). Unset: any source.
fn publish_allow(labels: &BTreeMap<String, String>) -> Result<Vec<ipnet::Ipv4Net>, PluginError> {
    let Some(list) = labels.get(PUBLISH_ALLOW) else {
        return Ok(Vec::new());
    };
    let ranges = list
        .split(',')
        .map(|r| crate::model::parse_allow(r.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|why| PluginError(format!("{PUBLISH_ALLOW}: {why}")))?;
    if ranges.is_empty() || ranges.len() > crate::model::MAX_ALLOW_PER_PORT {
        return Err(PluginError(format!(
            "{PUBLISH_ALLOW}: from 1 to {} ranges, comma-separated",
            crate::model::MAX_ALLOW_PER_PORT
        )));
    }
    Ok(ranges)
}

const PUBLISH_ALLOW: &str = "netd.publish-allow";

pub async fn call<S: Store>(plugin: &Plugin<S>, method: &str, body: &[u8]) -> Option<Answer> {
    let agent = &plugin.agent;
    let control = agent.control();
    let answer = async {
        match method {
            "GetCapabilities" => Ok(json!({ "Scope": "local", "ConnectivityScope": "local" })),
            "CreateNetwork" => {
                let req: CreateNetwork = parse(method, body)?;
                tracing::debug!(network = %req.network_id, options = ?req.options, "CreateNetwork");
                if req.ipv6_data.as_ref().is_some_and(|v| !v.is_empty()) {
                    return Err(PluginError(
                        "IPv6 networks are not supported by netd yet".into(),
                    ));
                }
                let [ip] = req.ipv4_data.as_slice() else {
                    return Err(PluginError(format!(
                        "netd needs exactly one IPv4 subnet per network, got {}",
                        req.ipv4_data.len()
                    )));
                };
                let mut aux_addresses = BTreeMap::new();
                for (name, text) in &ip.aux_addresses {
                    aux_addresses.insert(name.clone(), address("aux-address", text)?.to_string());
                }
                let spec = NetworkSpec {
                    name: String::new(),
                    aux_addresses: BTreeMap::new(),
                    subnet: ip.pool.clone(),
                    gateway: if ip.gateway.is_empty() {
                        None
                    } else {
                        Some(address("gateway", &ip.gateway)?.to_string())
                    },
                    ip_range: match ip.pool.parse::<ipnet::Ipv4Net>() {
                        Ok(subnet) => control.sub_pool_of(&subnet).await.map(|r| r.to_string()),
                        Err(_) => None,
                    },
                    ..NetworkSpec::default()
                };
                let labels = generic_options(&req.options)?;
                publish_allow(&labels)?;
                let spec = NetworkSpec {
                    default_deny: default_deny(&labels)?,
                    overlay: overlay(&labels)?,
                    internal: internal(&req.options),
                    masquerade: masquerade(&labels)?,
                    no_masquerade: list(&labels, "netd.no-masquerade"),
                    mtu: mtu(&labels)?,
                    egress_ip: labels.get("netd.egress-ip").cloned(),
                    aux_addresses,
                    labels,
                    ..spec
                };
                agent
                    .check_mtu(spec.mtu, spec.overlay)
                    .map_err(|e| PluginError(e.to_string()))?;
                let network = control.create_docker_network(&req.network_id, spec).await?;
                agent.settle().await?;
                if let Some(docker_api) = &plugin.docker_api {
                    docker_api.name_after_create(agent.clone(), req.network_id.clone());
                }
                tracing::info!(docker_network = %req.network_id, network = %network.name, subnet = %network.subnet, hosts = network.docker.len(), "Docker network created or joined");
                Ok(json!({}))
            }
            "DeleteNetwork" => {
                let req: NetworkOnly = parse(method, body)?;
                if let Some(left) = control.delete_docker_network(&req.network_id).await? {
                    tracing::info!(docker_network = %req.network_id, network = %left.name, hosts_left = left.docker.keys().filter(|id| **id != req.network_id).count(), "Docker network removed on this host");
                }
                agent.settle().await?;
                Ok(json!({}))
            }
            "AllocateNetwork" => Ok(json!({ "Options": {} })),
            "FreeNetwork" => Ok(json!({})),
            "CreateEndpoint" => {
                let req: CreateEndpoint = parse(method, body)?;
                let iface = req.interface.unwrap_or_default();
                let ip = if iface.address.is_empty() {
                    None
                } else {
                    Some(address("Address", &iface.address)?)
                };
                let mac = if iface.mac_address.is_empty() {
                    None
                } else {
                    Some(iface.mac_address.parse::<Mac>().map_err(PluginError)?)
                };
                let endpoint = control
                    .create_docker_endpoint(&req.network_id, &req.endpoint_id, ip, mac)
                    .await?;
                // Only what Docker did not give may be returned.
                let mut answer = serde_json::Map::new();
                if iface.mac_address.is_empty() {
                    answer.insert("MacAddress".into(), json!(endpoint.mac.to_string()));
                }
                if iface.address.is_empty() {
                    let network = control.docker_network(&req.network_id).await?;
                    answer.insert(
                        "Address".into(),
                        json!(format!("{}/{}", endpoint.ipv4, network.subnet.prefix_len())),
                    );
                }
                Ok(json!({ "Interface": answer }))
            }
            "EndpointOperInfo" => {
                let req: EndpointRef = parse(method, body)?;
                let e = control.endpoint(&req.endpoint_id).await?;
                let _ = req.network_id;
                Ok(
                    json!({ "Value": { "ipv4": e.ipv4.to_string(), "mac": e.mac.to_string(), "host-ifname": e.host_ifname } }),
                )
            }
            "DeleteEndpoint" => {
                let req: EndpointRef = parse(method, body)?;
                let _ = req.network_id;
                // Idempotent: Docker may retry a delete that already happened.
                if control.endpoint(&req.endpoint_id).await.is_ok() {
                    control.unpublish_docker_endpoint(&req.endpoint_id).await?;
                    control.delete_endpoint(&req.endpoint_id).await?;
                    agent.settle().await?;
                }
                Ok(json!({}))
            }
            "Join" => {
                let req: Join = parse(method, body)?;
                if req.sandbox_key.is_empty() {
                    return Err(PluginError("Join: SandboxKey is empty".into()));
                }
                let endpoint = control
                    .set_sandbox(&req.endpoint_id, PathBuf::from(&req.sandbox_key))
                    .await?;
                let applied = agent.settle().await?;
                if let Some(reason) = applied.failures.get(&endpoint.id) {
                    control
                        .set_sandbox(&req.endpoint_id, PathBuf::new())
                        .await?;
                    agent.settle().await?;
                    return Err(PluginError(format!("Join: {reason}")));
                }
                let network = control.docker_network(&req.network_id).await?;
                if let Some(docker_api) = &plugin.docker_api {
                    docker_api.label_after_join(
                        agent.clone(),
                        req.network_id.clone(),
                        req.endpoint_id.clone(),
                    );
                }
                Ok(json!({
                    "InterfaceName": { "SrcName": endpoint.peer_ifname(), "DstPrefix": "eth" },
                    "Gateway": network.gateway.to_string(),
                    "DisableGatewayService": false,
                }))
            }
            "Leave" => {
                let req: EndpointRef = parse(method, body)?;
                let _ = req.network_id;
                control
                    .set_sandbox(&req.endpoint_id, PathBuf::new())
                    .await?;
                agent.settle().await?;
                Ok(json!({}))
            }
            "ProgramExternalConnectivity" => {
                let req: ExternalConnectivity = parse(method, body)?;
                let mut ports = port_map::published_ports(&req.options)?;
                if !ports.is_empty() {
                    let network = control.docker_network(&req.network_id).await?;
                    let allow = publish_allow(&network.labels)?;
                    for port in &mut ports {
                        port.allow = allow.clone();
                    }
                }
                let service = control
                    .publish_docker_endpoint(&req.endpoint_id, &ports)
                    .await?;
                agent.settle().await?;
                if let Some(service) = service {
                    tracing::info!(
                        endpoint = %req.endpoint_id,
                        service = %service.name,
                        ports = %ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                        "published the container's -p ports"
                    );
                }
                Ok(json!({}))
            }
            "RevokeExternalConnectivity" => {
                let req: EndpointRef = parse(method, body)?;
                let _ = req.network_id;
                control.unpublish_docker_endpoint(&req.endpoint_id).await?;
                agent.settle().await?;
                Ok(json!({}))
            }
            "DiscoverNew" | "DiscoverDelete" => Ok(json!({})),
            _ => Err(PluginError(String::new())),
        }
    };
    match answer.await {
        Err(PluginError(m)) if m.is_empty() => None,
        other => Some(other),
    }
}
