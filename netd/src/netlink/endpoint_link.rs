//! An endpoint's link: a veth pair whose one end goes into the sandbox
//! (renamed, addressed, routed, IPv6 off) and whose host end carries
//! netd's TC program; or, for Docker, a pair whose peer Docker moves. A
//! failure half way removes what was made.

use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
};

use rtnetlink::{
    packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage},
    LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::{
    device::{disable_ipv6, enable_gro},
    nl, LinkError, Netlink,
};
use crate::model::Mac;

/// Everything a new endpoint link needs.
pub struct EndpointLinkSpec<'a> {
    pub host_ifname: &'a str,
    /// The host end's alias: which netd made it.
    pub owner: &'a str,
    pub sandbox: &'a Path,
    pub ifname: &'a str,
    pub mac: Mac,
    pub ipv4: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

/// Creates only the veth pair, both ends on the host (Docker moves the
/// peer into the sandbox itself); returns the host end's (index, MAC).
pub async fn create_veth_pair(
    host: &Netlink,
    host_ifname: &str,
    owner: &str,
    peer: &str,
    mtu: u32,
) -> Result<(u32, Mac), LinkError> {
    // The peer is described whole, its MTU with it: Docker moves it into
    // the container as it is.
    let peer_link = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_string())
        .mtu(mtu)
        .build();
    host.handle
        .link()
        .add(
            LinkVeth::new(host_ifname, peer)
                .mtu(mtu)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_link)))
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("creating veth pair {host_ifname}")))?;
    let up = async {
        let (index, mac) = host
            .index_and_mac(host_ifname)
            .await?
            .ok_or_else(|| LinkError::NoLink(host_ifname.to_string()))?;
        // The peer keeps its features when Docker moves it into the
        // container: XDP's redirects into the endpoint need its NAPI path.
        enable_gro(Path::new("/proc/self/ns/net"), peer)?;
        // Docker turns IPv6 off on the container's end itself.
        disable_ipv6(None, host_ifname)?;
        host.handle
            .link()
            .set(owned_and_up(index, owner))
            .execute()
            .await
            .map_err(nl(format!("bringing {host_ifname} up")))?;
        Ok::<_, LinkError>((index, mac))
    };
    match up.await {
        Ok(done) => Ok(done),
        Err(e) => {
            let _ = host.delete(host_ifname).await;
            Err(e)
        }
    }
}

/// Brings link `index` up with `owner` as its alias, in one message.
fn owned_and_up(index: u32, owner: &str) -> LinkMessage {
    let mut msg = LinkUnspec::new_with_index(index).up().build();
    msg.attributes
        .push(LinkAttribute::IfAlias(owner.to_string()));
    msg
}

/// Creates the veth pair of an endpoint, its peer born inside the sandbox
/// with its name, MAC and MTU (moving a link between namespaces waits for
/// an RCU grace period: ~25 ms per endpoint), configures both ends and
/// returns the host end's (index, MAC). On failure the pair is removed again.
pub async fn create_endpoint_link(
    host: &Netlink,
    spec: &EndpointLinkSpec<'_>,
) -> Result<(u32, Mac), LinkError> {
    let ns: OwnedFd = File::open(spec.sandbox)
        .map_err(|source| LinkError::Sandbox {
            path: spec.sandbox.display().to_string(),
            source,
        })?
        .into();
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(spec.ifname.to_string())
        .address(spec.mac.0.to_vec())
        .mtu(spec.mtu)
        .setns_by_fd(ns.as_raw_fd())
        .build();
    host.handle
        .link()
        .add(
            LinkVeth::new(spec.host_ifname, spec.ifname)
                .mtu(spec.mtu)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!(
            "creating veth {} with {} in {}",
            spec.host_ifname,
            spec.ifname,
            spec.sandbox.display()
        )))?;
    match configure(host, spec).await {
        Ok(done) => Ok(done),
        Err(e) => {
            let _ = host.delete(spec.host_ifname).await;
            Err(e)
        }
    }
}

async fn configure(host: &Netlink, spec: &EndpointLinkSpec<'_>) -> Result<(u32, Mac), LinkError> {
    let sandbox = Netlink::in_netns(spec.sandbox)?;
    let inner = sandbox.index(spec.ifname).await?;
    // Before either end is up: netd's networks are IPv4 only.
    disable_ipv6(Some(spec.sandbox), spec.ifname)?;
    disable_ipv6(None, spec.host_ifname)?;
    sandbox
        .handle
        .link()
        .set(LinkUnspec::new_with_index(inner).up().build())
        .execute()
        .await
        .map_err(nl(format!(
            "bringing {} up in {}",
            spec.ifname,
            spec.sandbox.display()
        )))?;
    enable_gro(spec.sandbox, spec.ifname)?;
    if let Ok(lo) = sandbox.index("lo").await {
        let _ = sandbox
            .handle
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await;
    }
    sandbox
        .handle
        .address()
        .add(inner, spec.ipv4.into(), spec.prefix_len)
        .execute()
        .await
        .map_err(nl(format!(
            "adding {}/{} to {}",
            spec.ipv4, spec.prefix_len, spec.ifname
        )))?;
    // The first network of a sandbox gives its default route, as with Docker.
    if !sandbox.has_default_route().await? {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(spec.gateway)
            .output_interface(inner)
            .build();
        sandbox
            .handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(nl(format!("adding the default route via {}", spec.gateway)))?;
    }

    let (index, mac) = host
        .index_and_mac(spec.host_ifname)
        .await?
        .ok_or_else(|| LinkError::NoLink(spec.host_ifname.to_string()))?;
    host.handle
        .link()
        .set(owned_and_up(index, spec.owner))
        .execute()
        .await
        .map_err(nl(format!("bringing {} up", spec.host_ifname)))?;
    host.route_to_endpoint(spec.ipv4, index).await?;
    Ok((index, mac))
}
