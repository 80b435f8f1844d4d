//! Docker's `-p` as libnetwork hands it to a remote driver: the sandbox
//! option `com.docker.network.portmap`, a list of Go `types.PortBinding`
//! in JSON. netd publishes each on the hosts' uplink addresses, mode=host.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::PluginError;
use crate::model::{PublishMode, PublishedPort};

pub const PORT_MAP: &str = "com.docker.network.portmap";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PortBinding {
    proto: u8,
    port: u16,
    #[serde(rename = "HostIP", default, deserialize_with = "super::nullable")]
    host_ip: String,
    #[serde(default)]
    host_port: u16,
    #[serde(default)]
    host_port_end: u16,
}

/// The ports to publish, one per host port and protocol (Docker may list
/// a port once for IPv4 and once for IPv6). What netd cannot publish as
/// asked is refused with the way to ask for what it can.
pub fn published_ports(
    options: &BTreeMap<String, Value>,
) -> Result<Vec<PublishedPort>, PluginError> {
    let Some(list) = options.get(PORT_MAP).filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let bindings: Vec<PortBinding> = serde_json::from_value(list.clone())
        .map_err(|e| PluginError(format!("{PORT_MAP}: {e}")))?;
    let mut ports: Vec<PublishedPort> = Vec::new();
    for b in bindings {
        let protocol = match b.proto {
            6 => crate::model::Protocol::Tcp,
            17 => crate::model::Protocol::Udp,
            other => {
                return Err(PluginError(format!(
                    "-p {}: protocol {other} cannot be published by netd (tcp and udp can)",
                    b.port
                )))
            }
        };
        if b.host_port == 0 {
            return Err(PluginError(format!(
                "-p {}/{protocol}: netd publishes fixed host ports only; give one, e.g. -p 8080:{}",
                b.port, b.port
            )));
        }
        if b.host_port_end != 0 && b.host_port_end != b.host_port {
            return Err(PluginError(format!(
                "-p {}-{}:{}/{protocol}: netd publishes one host port per container port, not a range",
                b.host_port, b.host_port_end, b.port
            )));
        }
        if !matches!(b.host_ip.as_str(), "" | "0.0.0.0" | "::") {
            return Err(PluginError(format!(
                "-p {}:{}:{}/{protocol}: netd publishes on every uplink address of the host; \
                 leave the address out (-p {}:{})",
                b.host_ip, b.host_port, b.port, b.host_port, b.port
            )));
        }
        let port = PublishedPort {
            protocol,
            published: b.host_port,
            target_port: b.port,
            mode: PublishMode::Host,
            allow: Vec::new(),
        };
        match ports
            .iter()
            .find(|p| (p.published, p.protocol) == (port.published, port.protocol))
        {
            Some(p) if p.target_port == port.target_port => {}
            Some(p) => {
                return Err(PluginError(format!(
                    "host port {}/{protocol} is given for container ports {} and {}",
                    port.published, p.target_port, port.target_port
                )))
            }
            None => ports.push(port),
        }
    }
    ports.sort();
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(list: Value) -> Result<Vec<String>, String> {
        let options = BTreeMap::from([(PORT_MAP.to_string(), list)]);
        published_ports(&options)
            .map(|ports| ports.iter().map(ToString::to_string).collect())
            .map_err(|e| e.0)
    }

    #[test]
    fn docker_port_bindings_become_host_mode_publications() {
        let got = parse(json!([
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "::", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 17, "IP": "", "Port": 53, "HostIP": "0.0.0.0", "HostPort": 5353, "HostPortEnd": 0}
        ]));
        assert_eq!(
            got,
            Ok(vec!["8080:80/tcp(host)".into(), "5353:53/udp(host)".into()])
        );
        assert_eq!(
            published_ports(&BTreeMap::new()).map(|p| p.len()).ok(),
            Some(0)
        );
        assert_eq!(parse(Value::Null), Ok(vec![]));
    }

    #[test]
    fn bindings_netd_cannot_honour_are_refused_with_the_fix() {
        let one = |b: Value| parse(json!([b])).expect_err("refused");
        let e = one(json!({"Proto": 6, "Port": 80, "HostPort": 0}));
        assert!(
            e.contains("fixed host ports only") && e.contains("-p 8080:80"),
            "{e}"
        );
        let e = one(json!({"Proto": 6, "Port": 80, "HostPort": 8080, "HostPortEnd": 8090}));
        assert!(e.contains("not a range"), "{e}");
        let e = one(json!({"Proto": 6, "Port": 80, "HostIP": "127.0.0.1", "HostPort": 8080}));
        assert!(e.contains("leave the address out (-p 8080:80)"), "{e}");
        let e = one(json!({"Proto": 132, "Port": 80, "HostPort": 8080}));
        assert!(e.contains("protocol 132"), "{e}");
        let e = parse(json!([
            {"Proto": 6, "Port": 80, "HostPort": 8080},
            {"Proto": 6, "Port": 81, "HostPort": 8080}
        ]))
        .expect_err("one host port, two targets");
        assert!(e.contains("container ports 80 and 81"), "{e}");
        let e = parse(json!({"Proto": 6})).expect_err("not a list");
        assert!(e.starts_with(PORT_MAP), "{e}");
    }
}
