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

/// Echoes every byte of every TCP connection on `port` back, in `ns`,
/// until the test's process ends (one thread per connection).
pub fn echo_server(ns: &NetNs, port: u16) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    ns.run(move || {
        let listener = TcpListener::bind(("0.0.0.0", port)).expect("listen");
        ready_tx.send(()).expect("ready");
        for mut conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut back = conn.try_clone().expect("clone");
                let _ = std::io::copy(&mut conn, &mut back);
            });
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("echo server ready");
}

/// Sends `len` bytes of [`pattern`] to `addr` from `from` and reads them
/// back from an [`echo_server`]: whether both ways were byte-exact, and
/// the connection's MSS (what the path lets a full-size segment carry).
pub fn echo_both_ways(from: &NetNs, addr: SocketAddr, len: usize) -> (bool, u32) {
    from.run(move || {
        let Ok(conn) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
            return (false, 0);
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(15)));
        let mut writer = conn.try_clone().expect("clone");
        let sender = std::thread::spawn(move || writer.write_all(&pattern(len)).is_ok());
        let mut got = vec![0u8; len];
        let read = (&conn).read_exact(&mut got).is_ok();
        let sent = sender.join().unwrap_or(false);
        (sent && read && got == pattern(len), mss(&conn))
    })
    .join()
    .expect("client thread")
}

/// TCP_MAXSEG of a connected socket.
pub fn mss(conn: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        value as u32
    } else {
        0
    }
}

/// A TCP stream to an [`echo_server`] kept flowing in the background:
/// [`pattern`] bytes sent as fast as the path takes them, and what comes
/// back checked against them, for "a transfer survives ...".
pub struct StreamUnderway {
    sending: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sender: std::thread::JoinHandle<u64>,
    reader: std::thread::JoinHandle<(u64, bool)>,
}

/// What a [`StreamUnderway`] moved: bytes sent, bytes echoed back, and
/// whether every echoed byte was the one sent.
#[derive(Debug)]
pub struct StreamResult {
    pub sent: u64,
    pub echoed: u64,
    pub exact: bool,
}

impl StreamUnderway {
    /// Connects from `from` to `addr` and starts the stream.
    pub fn start(from: &NetNs, addr: SocketAddr) -> Self {
        use std::sync::{atomic::AtomicBool, Arc};
        let conn = from
            .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        // A stall longer than this is a broken transfer.
        conn.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        conn.set_write_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let sending = Arc::new(AtomicBool::new(true));
        let chunk = pattern(251 * 64);
        let sender = {
            let sending = sending.clone();
            let mut conn = conn.try_clone().expect("clone");
            std::thread::spawn(move || {
                let mut sent = 0u64;
                while sending.load(std::sync::atomic::Ordering::SeqCst) {
                    if conn.write_all(&chunk).is_err() {
                        break;
                    }
                    sent += chunk.len() as u64;
                    // About 16 MB/s: a steady stream, not a flood.
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = conn.shutdown(std::net::Shutdown::Write);
                sent
            })
        };
        let reader = std::thread::spawn(move || {
            let whole = pattern(251 * 64);
            let (mut echoed, mut exact) = (0u64, true);
            let mut buf = vec![0u8; 65536];
            loop {
                match (&conn).read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        for (i, b) in buf[..n].iter().enumerate() {
                            let at = (echoed as usize + i) % whole.len();
                            exact &= *b == whole[at];
                        }
                        echoed += n as u64;
                    }
                }
            }
            (echoed, exact)
        });
        StreamUnderway {
            sending,
            sender,
            reader,
        }
    }

    /// Stops sending, reads the rest back and says what moved.
    pub fn finish(self) -> StreamResult {
        self.sending
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let sent = self.sender.join().expect("sender");
        let (echoed, exact) = self.reader.join().expect("reader");
        StreamResult {
            sent,
            echoed,
            exact,
        }
    }
}
