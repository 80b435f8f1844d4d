//! netd's DNS on each network's gateway address, UDP and TCP port 53, on
//! this host: a listener per gateway a local endpoint has, opened and
//! closed as the names change. The address is on the endpoints' host veths
//! (see `Netlink::ensure_gateway_address`); the sockets bind it with
//! IP_FREEBIND, so a listener does not wait for the first veth.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{watch, Semaphore},
    task::JoinHandle,
};
use tracing::{info, warn};

use super::{
    answer::{answer, server_failure, Reply, Transport},
    names::Names,
    upstream,
};

pub const PORT: u16 = 53;
/// Forwarded queries in flight, and TCP connections, at once: a flood gets
/// SERVFAIL (or a closed connection) instead of unbounded tasks.
const IN_FLIGHT: usize = 256;
/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What every listener shares.
struct Shared {
    names: watch::Receiver<Arc<Names>>,
    upstreams: Vec<SocketAddr>,
    in_flight: Arc<Semaphore>,
}

/// Serves DNS on every gateway `names` lists, until the sender is gone.
pub async fn serve(mut names: watch::Receiver<Arc<Names>>, upstreams: Vec<SocketAddr>) {
    let shared = Arc::new(Shared {
        names: names.clone(),
        upstreams,
        in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
    });
    let mut listeners: BTreeMap<Ipv4Addr, Listener> = BTreeMap::new();
    loop {
        let wanted = names.borrow_and_update().listeners.clone();
        listeners.retain(|ip, l| wanted.get(ip) == Some(&l.network));
        for (ip, network) in wanted {
            if listeners.contains_key(&ip) {
                continue;
            }
            match Listener::open(ip, network, shared.clone()) {
                Ok(listener) => {
                    info!(address = %ip, "serving DNS");
                    listeners.insert(ip, listener);
                }
                Err(e) => {
                    warn!(address = %ip, error = %e, "cannot serve DNS here; tried again on the next change")
                }
            }
        }
        if names.changed().await.is_err() {
            return;
        }
    }
}

/// The UDP and TCP sockets of one gateway; closed when dropped.
struct Listener {
    network: String,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Listener {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn socket(ip: Ipv4Addr, kind: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, kind, Some(protocol))?;
    socket.set_freebind_v4(true)?;
    // TCP: a restarted netd binds again over its old connections' TIME_WAIT.
    // Not UDP, where it would share the port with another server (another
    // netd's of the same subnet) instead of failing.
    if kind == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddrV4::new(ip, PORT).into())?;
    Ok(socket)
}

impl Listener {
    fn open(ip: Ipv4Addr, network: String, shared: Arc<Shared>) -> std::io::Result<Self> {
        let udp = UdpSocket::from_std(socket(ip, Type::DGRAM, Protocol::UDP)?.into())?;
        let tcp = socket(ip, Type::STREAM, Protocol::TCP)?;
        tcp.listen(128)?;
        let tcp = TcpListener::from_std(tcp.into())?;
        let udp_task = tokio::spawn(serve_udp(Arc::new(udp), network.clone(), shared.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, network.clone(), shared));
        Ok(Self {
            network,
            tasks: [udp_task, tcp_task],
        })
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, network: String, shared: Arc<Shared>) {
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let Ok((n, SocketAddr::V4(from))) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let query = &buf[..n];
        let names = shared.names.borrow().clone();
        match answer(&names, &network, *from.ip(), query, Transport::Udp) {
            Reply::Answer(bytes) => {
                let _ = socket.send_to(&bytes, from).await;
            }
            Reply::Ignore => {}
            Reply::Forward => {
                let query = query.to_vec();
                let (socket, shared) = (socket.clone(), shared.clone());
                tokio::spawn(async move {
                    let reply = match shared.in_flight.try_acquire() {
                        Ok(_permit) => upstream::over_udp(&query, &shared.upstreams).await,
                        Err(_) => None,
                    };
                    if let Some(bytes) = reply.or_else(|| server_failure(&query)) {
                        let _ = socket.send_to(&bytes, from).await;
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, network: String, shared: Arc<Shared>) {
    loop {
        let Ok((stream, SocketAddr::V4(from))) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
            continue;
        };
        let (network, shared) = (network.clone(), shared.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = serve_connection(stream, *from.ip(), &network, &shared).await;
        });
    }
}

/// Length-prefixed queries on one connection, answered in turn.
async fn serve_connection(
    mut stream: TcpStream,
    from: Ipv4Addr,
    network: &str,
    shared: &Shared,
) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return Ok(());
        };
        let mut query = vec![0u8; usize::from(len?)];
        stream.read_exact(&mut query).await?;
        let names = shared.names.borrow().clone();
        let reply = match answer(&names, network, from, &query, Transport::Tcp) {
            Reply::Answer(bytes) => Some(bytes),
            Reply::Ignore => None,
            Reply::Forward => upstream::over_tcp(&query, &shared.upstreams)
                .await
                .or_else(|| server_failure(&query)),
        };
        if let Some(bytes) = reply {
            let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
            stream.write_all(&len.to_be_bytes()).await?;
            stream.write_all(&bytes[..usize::from(len)]).await?;
        }
    }
}
