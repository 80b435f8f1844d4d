//! Whether a port can be published on this host: not one the kernel hands
//! to outgoing connections (the routing mesh takes every packet to the
//! uplink address on a published port at XDP, the replies to such a
//! connection included), and not one a host process already listens on.
//! Read from /proc, in the network namespace netd runs in.

use std::ops::RangeInclusive;

use crate::model::{ModelError, Protocol, PublishedPort};

const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
/// `st` of a listening TCP socket in /proc/net/tcp.
const TCP_LISTEN: &str = "0A";

/// Refuses `port` with the cause, if this host cannot take it.
pub fn check(port: &PublishedPort) -> Result<(), ModelError> {
    if let Some(range) = local_port_range() {
        if range.contains(&port.published) {
            return Err(ModelError::invalid(
                "publish",
                format!(
                    "port {} is in this host's local port range {}-{} \
                     (net.ipv4.ip_local_port_range): the kernel gives those to outgoing \
                     connections, whose replies the routing mesh would take; pick a port \
                     outside it (swarm uses 30000-32767)",
                    port.published,
                    range.start(),
                    range.end()
                ),
            ));
        }
    }
    if listening(port.protocol, port.published) {
        return Err(ModelError::invalid(
            "publish",
            format!(
                "a process on this host already has {} port {}; the routing mesh would \
                 take its traffic on the uplink address",
                port.protocol, port.published
            ),
        ));
    }
    Ok(())
}

fn local_port_range() -> Option<RangeInclusive<u16>> {
    parse_range(&std::fs::read_to_string(LOCAL_PORT_RANGE).ok()?)
}

fn parse_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut parts = text.split_whitespace().map(|p| p.parse::<u16>());
    match (parts.next(), parts.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Some(lo..=hi),
        _ => None,
    }
}

fn listening(protocol: Protocol, port: u16) -> bool {
    let files: &[&str] = match protocol {
        Protocol::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Protocol::Udp => &["/proc/net/udp", "/proc/net/udp6"],
    };
    files.iter().any(|f| {
        std::fs::read_to_string(f)
            .map(|text| holds_port(&text, protocol, port))
            .unwrap_or(false)
    })
}

/// Whether a /proc/net/{tcp,udp}[6] table has a socket on local `port`:
/// listening for TCP, bound at all for UDP.
fn holds_port(table: &str, protocol: Protocol, port: u16) -> bool {
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
            return false;
        };
        let local_port = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        local_port == Some(port) && (protocol == Protocol::Udp || *state == TCP_LISTEN)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn only_listening_tcp_sockets_hold_a_port() {
        assert!(holds_port(TCP, Protocol::Tcp, 8080));
        // 0x9C40 = 40000, an established connection's local port.
        assert!(!holds_port(TCP, Protocol::Tcp, 40000));
        assert!(holds_port(TCP, Protocol::Udp, 40000), "UDP: any socket");
        assert!(!holds_port(TCP, Protocol::Tcp, 80));
        assert!(!holds_port("", Protocol::Tcp, 8080));
    }

    #[test]
    fn the_local_port_range_parses_as_the_kernel_writes_it() {
        assert_eq!(parse_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_range("60999 32768"), None);
        assert_eq!(parse_range("x"), None);
    }
}
