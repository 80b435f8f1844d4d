//! netd's links, addresses, routes and neighbours, through rtnetlink:
//! [`Netlink`] in one namespace, the endpoints' links (`endpoint_link`)
//! and the device settings rtnetlink does not carry (`device`).

mod device;
mod endpoint_link;
pub mod sockets;

pub use device::{disable_ipv6, enable_gro, finish_checksums_on_transmit};
pub use endpoint_link::{create_endpoint_link, create_veth_pair, EndpointLinkSpec};

use std::{fs::File, net::Ipv4Addr, os::fd::AsRawFd, path::Path};

use futures_util::TryStreamExt;
use rtnetlink::{
    packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    Handle, LinkUnspec, RouteMessageBuilder,
};

use crate::model::Mac;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("sandbox {path} cannot be opened (is it a network namespace?)")]
    Sandbox {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("interface {0} not found")]
    NoLink(String),
    #[error("turning IPv6 off on {ifname}")]
    Sysctl {
        ifname: String,
        #[source]
        source: std::io::Error,
    },
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |source| LinkError::Netlink { what, source }
}

/// An rtnetlink handle bound to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A handle in the namespace netd runs in.
    pub fn here() -> Result<Self, LinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(LinkError::Socket)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// A handle in the namespace at `path`: the socket is opened by a
    /// short-lived thread that enters the namespace, and stays bound to it.
    pub fn in_netns(path: &Path) -> Result<Self, LinkError> {
        let ns = File::open(path).map_err(|source| LinkError::Sandbox {
            path: path.display().to_string(),
            source,
        })?;
        // The socket registers with the runtime's reactor, so the thread enters it.
        let runtime = tokio::runtime::Handle::current();
        let opened = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let _runtime = runtime.enter();
                    // SAFETY: a valid namespace descriptor; only this thread moves.
                    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    rtnetlink::new_connection()
                })
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("netlink thread panicked")))
        });
        let (connection, handle, _) = opened.map_err(|source| LinkError::Sandbox {
            path: path.display().to_string(),
            source,
        })?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    pub async fn link(&self, name: &str) -> Result<Option<LinkMessage>, LinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(nl(format!("looking up {name}"))(e)),
        }
    }

    /// Whether `name` is one end of a veth pair.
    pub async fn is_veth(&self, name: &str) -> Result<bool, LinkError> {
        let link = self
            .link(name)
            .await?
            .ok_or_else(|| LinkError::NoLink(name.to_string()))?;
        Ok(link.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos)
                if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
        }))
    }

    pub async fn index(&self, name: &str) -> Result<u32, LinkError> {
        self.link(name)
            .await?
            .map(|l| l.header.index)
            .ok_or_else(|| LinkError::NoLink(name.to_string()))
    }

    /// Index and MAC of `name`, if it exists.
    pub async fn index_and_mac(&self, name: &str) -> Result<Option<(u32, Mac)>, LinkError> {
        Ok(self.link_facts(name).await?.map(|f| (f.index, f.mac)))
    }

    /// Index, MAC and alias of `name`, in one query, if it exists.
    pub async fn link_facts(&self, name: &str) -> Result<Option<LinkFacts>, LinkError> {
        Ok(self.link(name).await?.map(|l| {
            let mac = l
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                        let mut mac = [0u8; 6];
                        mac.copy_from_slice(bytes);
                        Some(Mac(mac))
                    }
                    _ => None,
                })
                .unwrap_or(Mac([0; 6]));
            LinkFacts {
                index: l.header.index,
                mac,
                alias: NamedLink::of(&l).alias,
            }
        }))
    }

    /// The MTU of `name`.
    pub async fn mtu(&self, name: &str) -> Result<u32, LinkError> {
        let link = self
            .link(name)
            .await?
            .ok_or_else(|| LinkError::NoLink(name.to_string()))?;
        Ok(link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(mtu) => Some(*mtu),
                _ => None,
            })
            .unwrap_or(1500))
    }

    /// The links whose name starts with `prefix`, with their alias (the
    /// mark of who made them).
    pub async fn links_named(&self, prefix: &str) -> Result<Vec<NamedLink>, LinkError> {
        Ok(self
            .links_starting_with(prefix)
            .await?
            .iter()
            .map(NamedLink::of)
            .collect())
    }

    /// The links whose name starts with `prefix`, as the kernel lists them.
    async fn links_starting_with(&self, prefix: &str) -> Result<Vec<LinkMessage>, LinkError> {
        let mut links = self.handle.link().get().execute();
        let mut found = Vec::new();
        while let Some(link) = links.try_next().await.map_err(nl("listing links"))? {
            if NamedLink::of(&link).name.starts_with(prefix) {
                found.push(link);
            }
        }
        Ok(found)
    }

    /// The packets and bytes each link whose name starts with `prefix` has
    /// received, by ifindex: for an endpoint's host veth, everything the
    /// container sent (the veth counts it before netd's programs see it).
    pub async fn received_by(
        &self,
        prefix: &str,
    ) -> Result<std::collections::BTreeMap<u32, (u64, u64)>, LinkError> {
        Ok(self
            .links_starting_with(prefix)
            .await?
            .iter()
            .filter_map(|link| {
                link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Stats64(s) => {
                        Some((link.header.index, (s.rx_packets, s.rx_bytes)))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// `name`'s alias, if it exists and has one.
    pub async fn alias(&self, name: &str) -> Result<Option<String>, LinkError> {
        Ok(self.link(name).await?.and_then(|l| NamedLink::of(&l).alias))
    }

    /// Sets the alias of link `index` (IFLA_IFALIAS).
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<(), LinkError> {
        let mut msg = LinkUnspec::new_with_index(index).build();
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!("marking link {index} as netd's")))
    }

    /// The first IPv4 address on `name`, if any.
    pub async fn first_ipv4(&self, name: &str) -> Result<Option<Ipv4Addr>, LinkError> {
        let index = self.index(name).await?;
        let addresses = self.ipv4_addresses(index, name).await?;
        Ok(addresses.first().map(|&(ip, _)| ip))
    }

    /// Every IPv4 address of `name`, in the kernel's order.
    pub async fn ipv4s(&self, name: &str) -> Result<Vec<Ipv4Addr>, LinkError> {
        let index = self.index(name).await?;
        let addresses = self.ipv4_addresses(index, name).await?;
        Ok(addresses.into_iter().map(|(ip, _)| ip).collect())
    }

    /// Whether `ip` is on a subnet of an address of link `index`: a
    /// neighbour there, not behind a router.
    pub async fn on_link(&self, index: u32, ip: Ipv4Addr) -> Result<bool, LinkError> {
        let addresses = self.ipv4_addresses(index, &format!("link {index}")).await?;
        Ok(addresses.iter().any(|&(mine, len)| {
            let len = u32::from(len);
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            len > 0 && u32::from(mine) & mask == u32::from(ip) & mask
        }))
    }

    /// The IPv4 addresses of link `index` (`what` names it in errors), each
    /// with its prefix length, in the kernel's order.
    async fn ipv4_addresses(
        &self,
        index: u32,
        what: &str,
    ) -> Result<Vec<(Ipv4Addr, u8)>, LinkError> {
        use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut found = Vec::new();
        while let Some(msg) = addrs
            .try_next()
            .await
            .map_err(nl(format!("listing addresses of {what}")))?
        {
            let msg: AddressMessage = msg;
            for attr in &msg.attributes {
                if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = attr {
                    found.push((*ip, msg.header.prefix_len));
                }
            }
        }
        Ok(found)
    }

    /// A neighbour entry for `ip` on link `index` that the kernel keeps
    /// resolved (NTF_EXT_MANAGED, as Cilium asks for its nodes): XDP's FIB
    /// lookup needs the next hop's MAC before any packet went there. An
    /// entry that exists already (the host's own) is left as it is.
    pub async fn ensure_managed_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
    ) -> Result<(), LinkError> {
        use rtnetlink::packet_route::neighbour::{
            NeighbourAttribute, NeighbourExtFlags, NeighbourState,
        };
        let mut request = self
            .handle
            .neighbours()
            .add(index, std::net::IpAddr::V4(ip))
            .state(NeighbourState::None);
        request
            .message_mut()
            .attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(nl(format!(
                "adding a managed neighbour {ip} on link {index}"
            ))(e)),
        }
    }

    /// Removes the neighbour entry for `ip` on link `index` if it is a
    /// managed one (netd's kind: the kernel's own entries are left alone).
    /// Whether one went.
    pub async fn remove_managed_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
    ) -> Result<bool, LinkError> {
        use rtnetlink::packet_route::neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage,
        };
        let what = || format!("removing the managed neighbour {ip} on link {index}");
        let mut entries = self.handle.neighbours().get().execute();
        let mut ours: Option<NeighbourMessage> = None;
        while let Some(msg) = entries.try_next().await.map_err(nl(what()))? {
            let msg: NeighbourMessage = msg;
            let this = msg.header.ifindex == index
                && msg.attributes.iter().any(|a| {
                    matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) if *a == ip)
                })
                && msg.attributes.iter().any(|a| {
                    matches!(a, NeighbourAttribute::ExtFlags(f) if f.contains(NeighbourExtFlags::Managed))
                });
            if this {
                ours = Some(msg);
            }
        }
        let Some(msg) = ours else {
            return Ok(false);
        };
        self.handle
            .neighbours()
            .del(msg)
            .execute()
            .await
            .map_err(nl(what()))?;
        Ok(true)
    }

    pub async fn delete(&self, name: &str) -> Result<(), LinkError> {
        if let Some(link) = self.link(name).await? {
            self.handle
                .link()
                .del(link.header.index)
                .execute()
                .await
                .map_err(nl(format!("deleting {name}")))?;
        }
        Ok(())
    }

    /// The network's gateway address on the endpoint's host veth `index`:
    /// what the container's DNS queries (and pings) to its gateway reach.
    /// A /32, so it adds no subnet route (the same address on several veths
    /// is one local address to the host), and of host scope, so the host
    /// never picks it as the source of its own traffic to a container,
    /// which keeps the address it had.
    pub async fn ensure_gateway_address(
        &self,
        index: u32,
        gateway: Ipv4Addr,
    ) -> Result<(), LinkError> {
        let mut request = self.handle.address().add(index, gateway.into(), 32);
        request.message_mut().header.scope = rtnetlink::packet_route::address::AddressScope::Host;
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(nl(format!(
                "adding the gateway {gateway}/32 to link {index}"
            ))(e)),
        }
    }

    /// The host reaches the endpoint at `ip` through its veth `index` (and
    /// answers it the same way): what the host's own connections to a
    /// published port need. The route goes with the link.
    pub async fn route_to_endpoint(&self, ip: Ipv4Addr, index: u32) -> Result<(), LinkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .output_interface(index)
            .scope(rtnetlink::packet_route::route::RouteScope::Link)
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("adding the host route to {ip}")))
    }

    /// The ifindexes of the main table's IPv4 default routes' devices.
    pub async fn default_route_devices(&self) -> Result<Vec<u32>, LinkError> {
        let mut routes = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let mut out = Vec::new();
        while let Some(route) = routes.try_next().await.map_err(nl("listing routes"))? {
            if route.header.destination_prefix_length != 0 || route.header.table != 254 {
                continue;
            }
            for attr in &route.attributes {
                if let rtnetlink::packet_route::route::RouteAttribute::Oif(index) = attr {
                    if !out.contains(index) {
                        out.push(*index);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The name of link `index`.
    pub async fn name_of(&self, index: u32) -> Result<Option<String>, LinkError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(Some(NamedLink::of(&link).name)),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(nl(format!("reading link {index}"))(e)),
        }
    }

    async fn has_default_route(&self) -> Result<bool, LinkError> {
        let mut routes = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(route) = routes.try_next().await.map_err(nl("listing routes"))? {
            if route.header.destination_prefix_length == 0 && route.header.table == 254 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// What netd reads of an endpoint's host link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    pub index: u32,
    pub mac: Mac,
    pub alias: Option<String>,
}

/// A link's name and alias.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedLink {
    pub name: String,
    pub alias: Option<String>,
}

impl NamedLink {
    fn of(link: &LinkMessage) -> Self {
        let mut named = NamedLink {
            name: String::new(),
            alias: None,
        };
        for attr in &link.attributes {
            match attr {
                LinkAttribute::IfName(name) => named.name = name.clone(),
                LinkAttribute::IfAlias(alias) if !alias.is_empty() => {
                    named.alias = Some(alias.clone())
                }
                _ => {}
            }
        }
        named
    }
}
