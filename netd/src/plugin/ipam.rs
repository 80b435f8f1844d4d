//! IpamDriver.*: address pools and addresses for Docker, backed by the
//! same allocation rules as netd's own networks, kept in the store.

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{parse, Answer, PluginError};
use crate::{
    agent::Agent,
    control::Control,
    ipam,
    model::Network,
    store::{Store, Txn},
};

const POOLS: &str = "/netd/ipam/pools/";
const GATEWAY_TYPE: &str = "com.docker.network.gateway";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pool {
    id: String,
    subnet: Ipv4Net,
    sub_pool: Option<Ipv4Net>,
}

fn pool_id(subnet: &Ipv4Net) -> String {
    format!("netd-{}", subnet.to_string().replace('/', "-"))
}

fn pool_key(id: &str) -> String {
    format!("{POOLS}{id}")
}

fn address_prefix(id: &str) -> String {
    format!("/netd/ipam/pool-addresses/{id}/")
}

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

async fn load_pool<S: Store>(control: &Control<S>, id: &str) -> Result<Pool, PluginError> {
    let v = control
        .store()
        .get(&pool_key(id))
        .await?
        .ok_or_else(|| PluginError(format!("no address pool {id:?} (was it released?)")))?;
    serde_json::from_str(&v.value).map_err(|e| PluginError(format!("pool {id}: {e}")))
}

/// The ip-range Docker gave for `subnet` (`--ip-range`), if netd's IPAM holds it.
pub async fn sub_pool_of<S: Store>(
    control: &Control<S>,
    subnet: &str,
) -> Result<Option<String>, PluginError> {
    let Ok(subnet) = subnet.parse::<Ipv4Net>() else {
        return Ok(None);
    };
    match load_pool(control, &pool_id(&subnet)).await {
        Ok(pool) => Ok(pool.sub_pool.map(|p| p.to_string())),
        Err(_) => Ok(None),
    }
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
                if let Some(range) = sub_pool {
                    if !subnet.contains(&range) {
                        return Err(PluginError(format!(
                            "ip-range {range} is not inside the subnet {subnet}"
                        )));
                    }
                }
                let id = pool_id(&subnet);
                for (key, v) in control.store().list(POOLS).await? {
                    let other: Pool = serde_json::from_str(&v.value)
                        .map_err(|e| PluginError(format!("{key}: {e}")))?;
                    if other.id != id
                        && (other.subnet.contains(&subnet.network())
                            || subnet.contains(&other.subnet.network()))
                    {
                        return Err(PluginError(format!(
                            "subnet {subnet} overlaps pool {}",
                            other.subnet
                        )));
                    }
                }
                // A replayed request finds its pool, and the network made from it.
                let known = control.store().get(&pool_key(&id)).await?.is_some();
                for n in control.networks().await? {
                    let overlaps = n.subnet.contains(&subnet.network())
                        || subnet.contains(&n.subnet.network());
                    if overlaps && !known {
                        return Err(PluginError(format!(
                            "subnet {subnet} overlaps network {:?} ({})",
                            n.name, n.subnet
                        )));
                    }
                }
                let pool = Pool {
                    id: id.clone(),
                    subnet,
                    sub_pool,
                };
                let value = serde_json::to_string(&pool).map_err(|e| PluginError(e.to_string()))?;
                // Idempotent: the same request replayed gets the same pool.
                control
                    .store()
                    .commit(Txn::new().put(pool_key(&id), value))
                    .await?;
                Ok(json!({ "PoolID": id, "Pool": subnet.to_string(), "Data": {} }))
            }
            "ReleasePool" => {
                let req: ReleasePool = parse(method, body)?;
                let mut txn = Txn::new().delete(pool_key(&req.pool_id));
                for key in control
                    .store()
                    .list(&address_prefix(&req.pool_id))
                    .await?
                    .into_keys()
                {
                    txn = txn.delete(key);
                }
                control.store().commit(txn).await?;
                Ok(json!({}))
            }
            "RequestAddress" => {
                let req: RequestAddress = parse(method, body)?;
                let pool = load_pool(control, &req.pool_id).await?;
                let requested = if req.address.is_empty() {
                    None
                } else {
                    Some(req.address.parse::<Ipv4Addr>().map_err(|_| {
                        PluginError(format!("{:?} is not an IPv4 address", req.address))
                    })?)
                };
                let prefix = address_prefix(&pool.id);
                let taken: BTreeSet<Ipv4Addr> = control
                    .store()
                    .list(&prefix)
                    .await?
                    .keys()
                    .filter_map(|k| k[prefix.len()..].parse().ok())
                    .collect();
                let ip = if req.options.get("RequestAddressType").map(String::as_str)
                    == Some(GATEWAY_TYPE)
                {
                    let gw = requested
                        .or_else(|| pool.subnet.hosts().next())
                        .ok_or_else(|| PluginError("no gateway address".into()))?;
                    if !pool.subnet.contains(&gw) {
                        return Err(PluginError(format!(
                            "gateway {gw} is outside the subnet {}",
                            pool.subnet
                        )));
                    }
                    gw
                } else {
                    // The pool seen as a network whose reserved addresses are the ones handed out.
                    let as_network = Network {
                        id: pool.id.clone(),
                        name: pool.subnet.to_string(),
                        index: 0,
                        subnet: pool.subnet,
                        gateway: pool.subnet.network(),
                        ip_range: pool.sub_pool,
                        aux_addresses: Default::default(),
                        labels: Default::default(),
                        vni: None,
                    };
                    ipam::allocate(&as_network, &taken, requested)?
                };
                let is_gateway =
                    req.options.get("RequestAddressType").map(String::as_str) == Some(GATEWAY_TYPE);
                let key = format!("{prefix}{ip}");
                // The gateway may be asked for again (Docker replays); a container address may not.
                let txn = if is_gateway {
                    Txn::new()
                } else {
                    Txn::new().absent(key.clone())
                };
                control
                    .store()
                    .commit(txn.put(key, ""))
                    .await
                    .map_err(|e| match e {
                        crate::store::StoreError::Conflict(_) => {
                            PluginError(format!("address {ip} is already in use"))
                        }
                        other => other.into(),
                    })?;
                Ok(json!({ "Address": format!("{ip}/{}", pool.subnet.prefix_len()), "Data": {} }))
            }
            "ReleaseAddress" => {
                let req: ReleaseAddress = parse(method, body)?;
                let ip = req.address.split('/').next().unwrap_or_default();
                control
                    .store()
                    .commit(Txn::new().delete(format!("{}{ip}", address_prefix(&req.pool_id))))
                    .await?;
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
