//! Backends and clients of a service in namespaces the test made: TCP and
//! UDP servers that answer with their name and the client address they
//! saw, and clients that talk to a VIP.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::netns::NetNs;

/// The port backends serve TCP on (a service's target port).
pub const TCP_PORT: u16 = 8080;
/// The port backends serve UDP on.
pub const UDP_PORT: u16 = 5353;

/// Serves `name:peer-address\n` to every TCP connection (then echoes
/// lines back with the name), and to every UDP datagram.
pub fn serve(ns: &NetNs, name: &str, stop: Arc<AtomicBool>) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let tcp_name = name.to_string();
    let tcp_stop = stop.clone();
    let tcp_ready = ready_tx.clone();
    ns.run(move || {
        let listener = TcpListener::bind(("0.0.0.0", TCP_PORT)).expect("listen");
        listener.set_nonblocking(true).expect("nonblocking");
        tcp_ready.send(()).expect("ready");
        while !tcp_stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((conn, peer)) => {
                    let name = tcp_name.clone();
                    std::thread::spawn(move || answer(conn, &name, peer));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(_) => return,
            }
        }
    });
    let udp_name = name.to_string();
    ns.run(move || {
        let socket = UdpSocket::bind(("0.0.0.0", UDP_PORT)).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        ready_tx.send(()).expect("ready");
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(format!("{udp_name}:{}", peer.ip()).as_bytes(), peer);
            }
        }
    });
    for _ in 0..2 {
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("servers ready");
    }
}

fn answer(mut conn: TcpStream, name: &str, peer: SocketAddr) {
    let _ = conn.set_nonblocking(false);
    if conn
        .write_all(format!("{name}:{}\n", peer.ip()).as_bytes())
        .is_err()
    {
        return;
    }
    let mut buf = [0u8; 256];
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        if conn.write_all(format!("{name}\n").as_bytes()).is_err() {
            return;
        }
        let _ = n;
    }
}

/// One TCP connection to VIP:80: the greeting `name:seen-client-address`.
pub fn connect(client: &NetNs, vip: &str) -> (TcpStream, String) {
    connect_at(client, vip, 80)
}

/// One TCP connection to `ip:port` (a VIP's, a published port's): the
/// greeting `name:seen-client-address`.
pub fn connect_at(client: &NetNs, ip: &str, port: u16) -> (TcpStream, String) {
    let addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
    client
        .run(move || {
            let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
            conn.set_read_timeout(Some(Duration::from_secs(3)))
                .expect("timeout");
            let greeting = read_line(&conn).expect("greeting");
            (conn, greeting)
        })
        .join()
        .expect("client thread")
}

/// [`connect_at`] from the client's port `from_port`, closed with a RST so
/// that the next call can take the port again at once: the greeting.
pub fn connect_from_port(client: &NetNs, ip: &str, port: u16, from_port: u16) -> String {
    let addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
    client
        .run(move || {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            socket.set_reuse_address(true).expect("SO_REUSEADDR");
            // Closed by a RST: no TIME_WAIT holds the port's next use.
            socket.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
            let local: SocketAddr = format!("0.0.0.0:{from_port}").parse().expect("local");
            socket.bind(&local.into()).expect("bind the client port");
            // The kernel may still hold the tuple an earlier round's
            // connection used (EADDRNOTAVAIL): a moment later it is free.
            let mut tries = 0;
            while let Err(e) = socket.connect_timeout(&addr.into(), Duration::from_secs(3)) {
                tries += 1;
                if e.kind() != std::io::ErrorKind::AddrNotAvailable || tries == 10 {
                    panic!("connect to {addr} from port {from_port}: {e}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let conn: TcpStream = socket.into();
            conn.set_read_timeout(Some(Duration::from_secs(3)))
                .expect("timeout");
            read_line(&conn).expect("greeting")
        })
        .join()
        .expect("client thread")
}

fn read_line(mut conn: &TcpStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match conn.read(&mut byte)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            _ if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            _ => line.push(byte[0]),
        }
    }
}

/// Sends a line on an established connection; the backend's name back.
pub fn ask(conn: &TcpStream) -> std::io::Result<String> {
    (&*conn).write_all(b"again\n")?;
    read_line(conn)
}

/// `n` TCP connections, one after another, to VIP:80: who answered each,
/// and the client address they saw.
pub fn tcp_connections(client: &NetNs, vip: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| connect(client, vip).1).collect()
}

/// `n` UDP flows (one socket each) to VIP:53: who answered each, and the
/// client address they saw.
pub fn udp_flows(client: &NetNs, vip: &str, n: usize) -> Vec<String> {
    let addr: SocketAddr = format!("{vip}:53").parse().expect("address");
    client
        .run(move || {
            (0..n)
                .map(|_| {
                    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    s.set_read_timeout(Some(Duration::from_secs(2)))
                        .expect("timeout");
                    udp_ask(&s, addr).expect("a UDP answer")
                })
                .collect()
        })
        .join()
        .expect("client thread")
}

pub fn udp_ask(s: &UdpSocket, to: SocketAddr) -> std::io::Result<String> {
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        s.send_to(b"?", to)?;
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            assert_eq!(from, to, "the answer comes from the VIP");
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    Err(ErrorKind::TimedOut.into())
}

/// The backend that gave `answer` (`name:client-address`).
pub fn backend_of(answer: &str) -> &str {
    answer.split(':').next().unwrap_or("")
}

pub fn shares(answers: &[String]) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for a in answers {
        let name = backend_of(a).to_string();
        *count.entry(name).or_insert(0) += 1;
    }
    count
}

/// What a client's socket reports for `VIP:port` over UDP: the answer, or
/// the error (a port unreachable shows as `ConnectionRefused` on a
/// connected socket, silence as a timeout).
pub fn udp_connected(client: &NetNs, vip: &str, port: u16) -> Result<String, ErrorKind> {
    let addr: SocketAddr = format!("{vip}:{port}").parse().expect("address");
    client
        .run(move || {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            s.connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            s.send(b"?").map_err(|e| e.kind())?;
            let mut buf = [0u8; 64];
            let n = s.recv(&mut buf).map_err(|e| e.kind())?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .join()
        .expect("client thread")
}

/// Asks over a connection every 20 ms, from a thread of its own, until
/// [`Talker::finish`]: a connection kept busy while netd restarts.
pub struct Talker {
    talking: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Result<String, String>>>,
}

impl Talker {
    pub fn start(conn: &TcpStream) -> Self {
        let talking = Arc::new(AtomicBool::new(true));
        let conn = conn.try_clone().expect("clone the connection");
        let thread = {
            let talking = talking.clone();
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while talking.load(Ordering::SeqCst) {
                    answers.push(ask(&conn).map_err(|e| e.to_string()));
                    std::thread::sleep(Duration::from_millis(20));
                }
                answers
            })
        };
        Talker { talking, thread }
    }

    /// Every exchange's answer (or error), in order.
    pub fn finish(self) -> Vec<Result<String, String>> {
        self.talking.store(false, Ordering::SeqCst);
        self.thread.join().expect("talker thread")
    }
}
