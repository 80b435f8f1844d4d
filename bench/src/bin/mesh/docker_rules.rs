//! The iptables rules Docker (and swarm's ingress) would write for
//! the published ports, and how they are loaded.

use super::*;

/// What dockerd 20.10 writes for `-p LOCAL:8080` and `-p SINK:5353/udp`
/// on a bridge network with `--userland-proxy=false`, and what swarm's
/// ingress writes for a published port (its DNAT and SNAT, here straight
/// to the remote task instead of through the ingress sandbox's IPVS).
pub(super) fn docker_rules() -> String {
    format!(
        "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-INGRESS - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.18.0.0/16 ! -o br0 -j MASQUERADE
-A POSTROUTING -s {NEAR_IP}/32 -d {NEAR_IP}/32 -p tcp -m tcp --dport {TARGET} -j MASQUERADE
-A POSTROUTING -d {FAR_IP}/32 -o ov0 -j SNAT --to-source {INGRESS_SNAT}
-A DOCKER -i br0 -j RETURN
-A DOCKER ! -i br0 -p tcp -m tcp --dport {LOCAL} -j DNAT --to-destination {NEAR_IP}:{TARGET}
-A DOCKER ! -i br0 -p udp -m udp --dport {SINK} -j DNAT --to-destination {SINK_IP}:{SINK_TARGET}
-A DOCKER-INGRESS -p tcp -m tcp --dport {REMOTE} -j DNAT --to-destination {FAR_IP}:{TARGET}
-A DOCKER-INGRESS -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-INGRESS - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-INGRESS
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o br0 -j DOCKER
-A FORWARD -i br0 ! -o br0 -j ACCEPT
-A FORWARD -i br0 -o br0 -j ACCEPT
-A DOCKER -d {NEAR_IP}/32 ! -i br0 -o br0 -p tcp -m tcp --dport {TARGET} -j ACCEPT
-A DOCKER -d {SINK_IP}/32 ! -i br0 -o br0 -p udp -m udp --dport {SINK_TARGET} -j ACCEPT
-A DOCKER-INGRESS -o ov0 -d {FAR_IP}/32 -p tcp -m tcp --dport {TARGET} -j ACCEPT
-A DOCKER-INGRESS -i ov0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-INGRESS -j RETURN
-A DOCKER-ISOLATION-STAGE-1 -i br0 ! -o br0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o br0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"
    )
}

pub(super) fn iptables_restore(host: &NetNs, rules: &str) -> anyhow::Result<()> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), rules)?;
    let path = file.path().to_str().context("path")?;
    let out = host.exec("iptables-restore", &[path]);
    if !out.status.success() {
        bail!("iptables-restore: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
