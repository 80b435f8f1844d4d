//! The resolvers netd forwards the names it does not have to: the host's
//! (`/etc/resolv.conf`) unless `--dns-upstream` names others.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// How long one upstream gets before the next is asked.
const WAIT: Duration = Duration::from_secs(2);

/// The IPv4 `nameserver` lines of a resolv.conf, on port 53.
pub fn from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next()?.parse::<Ipv4Addr>().ok())
                .flatten()
        })
        .map(|ip| SocketAddr::from((ip, 53)))
        .collect()
}

/// `IP` or `IP:PORT` (port 53 when left out).
pub fn parse(text: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::from((ip, 53)));
    }
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.is_ipv4() => Ok(addr),
        _ => Err(format!("{text:?} is not an IPv4 address or IPv4:PORT")),
    }
}

/// The first upstream answer to `query` over UDP, each upstream asked in
/// turn; None if none answered in time.
pub async fn over_udp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let Ok(socket) = UdpSocket::bind(("0.0.0.0", 0)).await else {
            continue;
        };
        if socket.connect(upstream).await.is_err() || socket.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; usize::from(u16::MAX)];
        if let Ok(Ok(n)) = tokio::time::timeout(WAIT, socket.recv(&mut buf)).await {
            // The same id: the answer to this query, not a stray datagram.
            if n >= 2 && buf[..2] == query[..2] {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    None
}

/// The same over TCP (for a query that came over TCP).
pub async fn over_tcp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let len = u16::try_from(query.len()).ok()?;
    for upstream in upstreams {
        let asked = async {
            let mut stream = TcpStream::connect(upstream).await?;
            stream.write_all(&len.to_be_bytes()).await?;
            stream.write_all(query).await?;
            let n = stream.read_u16().await?;
            let mut buf = vec![0u8; usize::from(n)];
            stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        if let Ok(Ok(answer)) = tokio::time::timeout(WAIT, asked).await {
            return Some(answer);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_gives_its_ipv4_nameservers_on_port_53() {
        let text = "# comment\nsearch lan\nnameserver 10.0.0.2\nnameserver ::1\nnameserver 127.0.0.53\noptions edns0\n";
        assert_eq!(
            from_resolv_conf(text),
            vec![
                SocketAddr::from(([10, 0, 0, 2], 53)),
                SocketAddr::from(([127, 0, 0, 53], 53))
            ]
        );
        assert_eq!(parse("10.1.2.3"), Ok(SocketAddr::from(([10, 1, 2, 3], 53))));
        assert_eq!(
            parse("10.1.2.3:5353"),
            Ok(SocketAddr::from(([10, 1, 2, 3], 5353)))
        );
        assert!(parse("dns.example").is_err());
    }
}
