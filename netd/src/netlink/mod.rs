//! Links for endpoints, through rtnetlink: a veth pair whose one end goes
//! into the sandbox (renamed, addressed, routed) and whose host end gets
//! netd's TC program. A failure half way removes what was made.

use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
};

use futures_util::TryStreamExt;
use rtnetlink::{
    packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage},
    Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
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

/// Turns GRO on for `ifname` inside the namespace at `sandbox`: a veth
/// receives XDP-redirected frames (netd's VXLAN decap on the uplink) only
/// when its NAPI path is on, and GRO merges them again for the container.
pub fn enable_gro(sandbox: &Path, ifname: &str) -> Result<(), LinkError> {
    ethtool_set(sandbox, ifname, &[(ETHTOOL_SGRO, 1)])
}

/// Makes a veth uplink (`ifname` in the namespace at `netns`) finish
/// checksums (and segment) on transmit, as a NIC does before the wire. A
/// veth otherwise hands the packet on with its checksum still to be done,
/// and XDP on the receiving host, which sees only bytes, would deliver it
/// unfinished: the container drops it.
pub fn finish_checksums_on_transmit(netns: &Path, ifname: &str) -> Result<(), LinkError> {
    ethtool_set(netns, ifname, &[(ETHTOOL_STXCSUM, 0)])
}

/// Turns IPv6 off on `ifname` (inside the namespace at `netns`, or in
/// netd's own), as Docker does on an interface whose network has no IPv6:
/// its stack then sends nothing of its own (router solicitations, MLD,
/// duplicate address probes) that netd, which forwards only IPv4, would
/// count as drops. A kernel without IPv6 has nothing to turn off.
pub fn disable_ipv6(netns: Option<&Path>, ifname: &str) -> Result<(), LinkError> {
    let write = || {
        if !Path::new("/proc/sys/net/ipv6").exists() {
            return Ok(());
        }
        std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
            "1",
        )
    };
    let result = match netns {
        None => write(),
        Some(path) => {
            let ns = File::open(path).map_err(|source| LinkError::Sandbox {
                path: path.display().to_string(),
                source,
            })?;
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        // SAFETY: setns on a valid descriptor moves only
                        // this thread, which ends with the scope; /proc/sys/net
                        // then shows that namespace's settings.
                        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        write()
                    })
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the sysctl thread panicked")))
            })
        }
    };
    result.map_err(|source| LinkError::Sysctl {
        ifname: ifname.to_string(),
        source,
    })
}

const ETHTOOL_SGRO: u32 = 0x2c;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// ethtool "set" commands (cmd, value) on `ifname` inside `sandbox`.
fn ethtool_set(sandbox: &Path, ifname: &str, settings: &[(u32, u32)]) -> Result<(), LinkError> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut libc::c_void,
        _rest: [u8; 16],
    }
    let io = |source: std::io::Error| LinkError::Sandbox {
        path: sandbox.display().to_string(),
        source,
    };
    let ns = File::open(sandbox).map_err(io)?;
    let name = ifname.as_bytes();
    if name.len() >= 16 {
        return Err(LinkError::NoLink(ifname.to_string()));
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on a valid descriptor moves only this thread;
                // the ioctl gets a zeroed ifreq naming the interface and a
                // pointer to an ethtool_value that outlives the call.
                unsafe {
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    for (cmd, data) in settings {
                        let mut value = EthtoolValue {
                            cmd: *cmd,
                            data: *data,
                        };
                        let mut req = IfReq {
                            name: [0; 16],
                            data: (&mut value as *mut EthtoolValue).cast(),
                            _rest: [0; 16],
                        };
                        req.name[..name.len()].copy_from_slice(name);
                        if libc::ioctl(fd, SIOCETHTOOL, &mut req) != 0 {
                            let err = std::io::Error::last_os_error();
                            libc::close(fd);
                            return Err(err);
                        }
                    }
                    libc::close(fd);
                    Ok(())
                }
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("ethtool thread panicked")))
    })
    .map_err(io)
}

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
    host.handle
        .link()
        .add(LinkVeth::new(host_ifname, peer).mtu(mtu).build())
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
