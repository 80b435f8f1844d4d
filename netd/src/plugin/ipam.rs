//! IpamDriver.*: address pools and addresses for Docker. Every call is a
//! Control operation: pools in the store, addresses in the same registry
//! as every other endpoint's (see `Control::request_address`).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::json;

use super::{parse, Answer, PluginError};
use crate::{agent::Agent, store::Store};

const GATEWAY_TYPE: &str = "com.docker.network.gateway";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPool {
    #[serde(default, deserialize_with = "super::nullable")]
    pool: String,
    #[serde(default, deserialize_with = "super::nullable")]
    sub_pool: String,
    #[serde(rename = "V6", default, deserialize_with = "super::nullable")]
    v6: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestAddress {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(default, deserialize_with = "super::nullable")]
    address: String,
    #[serde(default, deserialize_with = "super::nullable")]
    options: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReleasePool {
    #[serde(rename = "PoolID")]
    pool_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pool_id: String,
    address: String,
}

fn net(field: &str, text: &str) -> Result<Ipv4Net, PluginError> {
    let n: Ipv4Net = text
        .parse()
        .map_err(|_| PluginError(format!("{field}: {text:?} is not an IPv4 subnet")))?;
    if n.addr() != n.network() {
        return Err(PluginError(format!(
            "{field}: {text} has host bits set; did you mean {}?",
            n.trunc()
        )));
    }
    Ok(n)
}

pub async fn call<S: Store>(agent: &Agent<S>, method: &str, body: &[u8]) -> Option<Answer> {
    let control = agent.control();
    let answer = async {
        match method {
            "GetCapabilities" => {
                Ok(json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false }))
            }
            "GetDefaultAddressSpaces" => Ok(
                json!({ "LocalDefaultAddressSpace": "netd-local", "GlobalDefaultAddressSpace": "netd-global" }),
            ),
            "RequestPool" => {
                let req: RequestPool = parse(method, body)?;
                if req.v6 {
                    return Err(PluginError(
                        "IPv6 pools are not supported by netd yet".into(),
                    ));
                }
                if req.pool.is_empty() {
                    return Err(PluginError(
                        "netd's IPAM needs a subnet: docker network create --subnet CIDR".into(),
                    ));
                }
                let subnet = net("subnet", &req.pool)?;
                let sub_pool = if req.sub_pool.is_empty() {
                    None
                } else {
                    Some(net("ip-range", &req.sub_pool)?)
                };
                let pool = control.request_pool(subnet, sub_pool).await?;
                Ok(json!({ "PoolID": pool.id, "Pool": subnet.to_string(), "Data": {} }))
            }
            "ReleasePool" => {
                let req: ReleasePool = parse(method, body)?;
                control.release_pool(&req.pool_id).await?;
                Ok(json!({}))
            }
            "RequestAddress" => {
                let req: RequestAddress = parse(method, body)?;
                let requested = if req.address.is_empty() {
                    None
                } else {
                    Some(req.address.parse::<Ipv4Addr>().map_err(|_| {
                        PluginError(format!("{:?} is not an IPv4 address", req.address))
                    })?)
                };
                let gateway =
                    req.options.get("RequestAddressType").map(String::as_str) == Some(GATEWAY_TYPE);
                let ip = control
                    .request_address(&req.pool_id, requested, gateway)
                    .await?;
                let pool = control.pool(&req.pool_id).await?;
                Ok(json!({ "Address": format!("{ip}/{}", pool.subnet.prefix_len()), "Data": {} }))
            }
            "ReleaseAddress" => {
                let req: ReleaseAddress = parse(method, body)?;
                let text = req.address.split('/').next().unwrap_or_default();
                let ip = text
                    .parse::<Ipv4Addr>()
                    .map_err(|_| PluginError(format!("{text:?} is not an IPv4 address")))?;
                control.release_address(&req.pool_id, ip).await?;
                Ok(json!({}))
            }
            _ => Err(PluginError(String::new())),
        }
    };
    match answer.await {
        Err(PluginError(m)) if m.is_empty() => None,
        other => Some(other),
    }
}
