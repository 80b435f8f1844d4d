//! DNS for the tests: an upstream resolver of the test's own in a
//! namespace (nothing leaves the machine), and the resolver clients a user
//! would run: busybox `nslookup`, and raw queries for what it cannot show.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{rdata::A, Name, RData, Record, RecordType},
};

use crate::netns::NetNs;

/// A resolver answering A queries for its few names and NXDOMAIN for the
/// rest, on UDP port 53 of `ip` in its namespace; stopped on drop.
pub struct Upstream {
    stop: Arc<AtomicBool>,
    /// Queries it has been asked.
    pub asked: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn start(ns: &NetNs, ip: Ipv4Addr, records: &[(&str, Ipv4Addr)]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicUsize::new(0));
        let records: BTreeMap<String, Ipv4Addr> = records
            .iter()
            .map(|(n, ip)| (format!("{}.", n.trim_end_matches('.')), *ip))
            .collect();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop2, asked2) = (stop.clone(), asked.clone());
        ns.run(move || {
            let socket = UdpSocket::bind((ip, 53)).expect("bind the upstream resolver");
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let _ = ready_tx.send(());
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                asked2.fetch_add(1, Ordering::SeqCst);
                let mut reply = Message::new();
                reply
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(OpCode::Query)
                    .set_recursion_desired(query.recursion_desired())
                    .set_recursion_available(true);
                reply.add_queries(query.queries().iter().cloned());
                let q = query.queries().first();
                match q.and_then(|q| records.get(&q.name().to_ascii().to_ascii_lowercase())) {
                    Some(found) => {
                        if let Some(q) = q.filter(|q| q.query_type() == RecordType::A) {
                            reply.add_answer(Record::from_rdata(
                                q.name().clone(),
                                60,
                                RData::A(A(*found)),
                            ));
                        }
                    }
                    None => {
                        reply.set_response_code(ResponseCode::NXDomain);
                    }
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the upstream resolver started");
        Self { stop, asked }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The IPv4 addresses in busybox nslookup's answer (not the server's own
/// `Address: IP:53` line); None when it found nothing.
pub fn parse_nslookup(output: &str) -> Option<Vec<Ipv4Addr>> {
    let mut found: Vec<Ipv4Addr> = output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect();
    found.sort();
    found.dedup();
    (!found.is_empty()).then_some(found)
}

/// `busybox nslookup NAME SERVER` from `ns`: the addresses, sorted.
pub fn nslookup(ns: &NetNs, name: &str, server: &str) -> Option<Vec<Ipv4Addr>> {
    let out = ns.exec("busybox", &["nslookup", name, server]);
    parse_nslookup(&String::from_utf8_lossy(&out.stdout))
}

/// One raw query from `ns` to `server`:53 over UDP: the whole response.
pub fn ask_udp(ns: &NetNs, server: Ipv4Addr, query: Vec<u8>) -> Option<Message> {
    ns.run(move || {
        let socket = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        socket
            .send_to(&query, SocketAddr::from((server, 53)))
            .ok()?;
        let mut buf = vec![0u8; 65535];
        let n = socket.recv(&mut buf).ok()?;
        Message::from_vec(&buf[..n]).ok()
    })
    .join()
    .ok()
    .flatten()
}

/// The same over TCP.
pub fn ask_tcp(ns: &NetNs, server: Ipv4Addr, query: Vec<u8>) -> Option<Message> {
    use std::io::{Read, Write};
    ns.run(move || {
        let mut stream = std::net::TcpStream::connect_timeout(
            &SocketAddr::from((server, 53)),
            Duration::from_secs(3),
        )
        .ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        let len = u16::try_from(query.len()).ok()?;
        stream.write_all(&len.to_be_bytes()).ok()?;
        stream.write_all(&query).ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).ok()?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).ok()?;
        Message::from_vec(&buf).ok()
    })
    .join()
    .ok()
    .flatten()
}

/// An A query for `name`, as a resolver sends it.
pub fn query(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(
        Name::from_ascii(name).expect("a DNS name"),
        RecordType::A,
    ));
    m.to_vec().expect("encode")
}

/// The A records' addresses of a response, in its order.
pub fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nslookup_output_gives_the_answers_not_the_server() {
        let out =
            "Server:\t\t10.31.0.1\nAddress:\t10.31.0.1:53\n\nName:\tweb\nAddress: 10.31.0.200\n\n";
        assert_eq!(
            parse_nslookup(out),
            Some(vec![Ipv4Addr::new(10, 31, 0, 200)])
        );
        let nx =
            "Server:\t\t10.31.0.1\nAddress:\t10.31.0.1:53\n\n** server can't find db: NXDOMAIN\n";
        assert_eq!(parse_nslookup(nx), None);
    }
}
