//! Real traffic between namespaces the test made.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use crate::netns::NetNs;

/// `ping -c count` from `from` to `ip`; true when every reply came.
pub fn ping(from: &NetNs, ip: &str, count: u32) -> bool {
    let count = count.to_string();
    from.exec("ping", &["-c", &count, "-i", "0.2", "-W", "1", "-q", ip])
        .status
        .success()
}

/// A byte pattern that shows any reordering or corruption.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Sends `len` bytes over TCP from `from` to `to` (listening on `to_ip`);
/// true when exactly those bytes arrived.
pub fn tcp(from: &NetNs, to: &NetNs, to_ip: &str, len: usize) -> bool {
    let addr: SocketAddr = format!("{to_ip}:5301").parse().expect("address");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = to.run(move || {
        let listener = TcpListener::bind(addr).expect("listen");
        ready_tx.send(()).expect("ready");
        listener.set_nonblocking(false).expect("blocking");
        let (mut conn, _) = listener.accept().ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut got = Vec::new();
        conn.read_to_end(&mut got).ok()?;
        Some(got)
    });
    if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        return false;
    }
    let data = pattern(len);
    let client = from.run(move || {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
        conn.write_all(&data).ok()?;
        Some(())
    });
    let sent = client.join().ok().flatten().is_some();
    if !sent {
        // Unblock the server's accept so its thread ends.
        let _ = to
            .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)))
            .join();
    }
    let got = server.join().ok().flatten();
    sent && got.is_some_and(|g| g == pattern(len))
}

/// A ping running in the background (`count` echoes, one every 10 ms),
/// for "no lost packet while ...".
pub struct PingUnderway {
    child: std::process::Child,
}

impl PingUnderway {
    pub fn start(from: &NetNs, ip: &str, count: u32) -> Self {
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &from.name, "ping", "-c"])
            .arg(count.to_string())
            .args(["-i", "0.01", "-W", "1", "-q", ip])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn ping");
        Self { child }
    }

    /// Waits for the end; returns (sent, received).
    pub fn finish(self) -> (u32, u32) {
        let out = self.child.wait_with_output().expect("ping output");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary in {text}"));
        let number = |word: &str| -> u32 {
            line.split(',')
                .find(|p| p.contains(word))
                .and_then(|p| p.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {word} in {line}"))
        };
        (number("transmitted"), number("received"))
    }
}
