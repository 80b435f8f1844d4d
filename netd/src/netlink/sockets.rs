//! The cookies of this network namespace's IPv4 TCP and UDP sockets, from
//! the kernel's sock_diag: what a map keyed by socket cookie is swept by
//! (an entry of a socket that is gone is never read again).

use std::collections::BTreeSet;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum SocketsError {
    #[error("sock_diag: {0}")]
    Io(#[from] std::io::Error),
    #[error("sock_diag answered what netd cannot read: {0}")]
    Decode(String),
    #[error("sock_diag refused the dump (errno {0})")]
    Refused(i32),
}

/// Every IPv4 TCP and UDP socket's cookie (`bpf_get_socket_cookie`'s).
pub fn ipv4_socket_cookies() -> Result<BTreeSet<u64>, SocketsError> {
    let mut cookies = BTreeSet::new();
    for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
        dump(protocol, &mut cookies)?;
    }
    Ok(cookies)
}

fn dump(protocol: u8, cookies: &mut BTreeSet<u64>) -> Result<(), SocketsError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: AF_INET,
            protocol,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId::new_v4(),
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut received = Vec::with_capacity(64 * 1024);
    loop {
        received.clear();
        socket.recv(&mut received, 0)?;
        let mut at = 0;
        while at < received.len() {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&received[at..])
                .map_err(|e| SocketsError::Decode(e.to_string()))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    cookies.insert(u64::from_ne_bytes(r.header.socket_id.cookie));
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(SocketsError::Refused(e.code.map_or(0, |c| c.get())))
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            at += length;
        }
    }
}
