//! New TCP connections per second and 1-byte request/response latency to
//! one address: the client side, and the backends' server. Shared by the
//! services and routing-mesh benches, so every system is measured alike.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use netd_tests::netns::NetNs;

/// The byte a new connection of [`connection_rate`] sends: the server
/// answers it and closes first, and the client waits for that close, so
/// TIME_WAIT stays on the server's side and the client's ports are not
/// used up.
const ONE_SHOT: u8 = 7;

/// A server in `ns` on `port` until `stop`: per connection, echo single
/// bytes until the client closes, or close after echoing [`ONE_SHOT`].
/// A new connection's one exchange and a long request/response exchange
/// are both served by it.
pub fn serve_bytes(ns: &NetNs, port: u16, stop: Arc<AtomicBool>) {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.run(move || {
        let listener = TcpListener::bind(("0.0.0.0", port)).expect("listen");
        // A blocking accept that gives up every 100 ms to look at `stop`:
        // a polling loop's sleeps would be most of what a connection
        // costs, and hide the dataplanes' differences.
        accept_timeout(&listener, Duration::from_millis(100)).expect("SO_RCVTIMEO");
        tx.send(()).expect("ready");
        let mut byte = [0u8; 1];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((mut c, _)) = listener.accept() {
                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = c.set_nodelay(true);
                while c.read_exact(&mut byte).is_ok() {
                    if c.write_all(&byte).is_err() || byte[0] == ONE_SHOT {
                        break;
                    }
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server up");
}

/// Linux applies SO_RCVTIMEO to accept(); std has no setter for a listener.
fn accept_timeout(listener: &TcpListener, timeout: Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt reads one timeval from `tv` for an fd we own.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The median of `rounds` rounds of [`connection_rate`].
pub fn median_rate(
    client: &NetNs,
    addr: SocketAddr,
    seconds: u64,
    threads: usize,
    rounds: usize,
) -> anyhow::Result<f64> {
    let mut rates = (0..rounds.max(1))
        .map(|_| connection_rate(client, addr, seconds, threads))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    rates.sort_by(|a, b| a.total_cmp(b));
    Ok(rates[rates.len() / 2])
}

/// New connections per second to `addr` from `client` for `seconds`, from
/// `threads` client threads, each connection one 1-byte exchange; fails if
/// any connection fails.
pub fn connection_rate(
    client: &NetNs,
    addr: SocketAddr,
    seconds: u64,
    threads: usize,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (done, failed) = (done.clone(), failed.clone());
            client.run(move || {
                let mut byte = [ONE_SHOT; 1];
                while Instant::now() < until {
                    let ok = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                        .and_then(|mut c| {
                            c.set_read_timeout(Some(Duration::from_secs(1)))?;
                            c.write_all(&byte)?;
                            c.read_exact(&mut byte)?;
                            // The server's close, before ours: otherwise
                            // the client often closes first and keeps the
                            // TIME_WAIT, and its ports run out in seconds.
                            match c.read(&mut byte)? {
                                0 => Ok(()),
                                _ => Err(std::io::ErrorKind::InvalidData.into()),
                            }
                        })
                        .is_ok();
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in workers {
        t.join().map_err(|_| anyhow::anyhow!("client thread"))?;
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} connections to {addr} failed");
    }
    Ok(done.load(Ordering::Relaxed) as f64 / seconds as f64)
}

/// `rounds` 1-byte round trips over one connection to a byte echo at
/// `addr`; µs per round trip, in the order measured.
pub fn round_trips(client: &NetNs, addr: SocketAddr, rounds: usize) -> anyhow::Result<Vec<f64>> {
    client
        .run(move || -> std::io::Result<Vec<f64>> {
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            conn.set_nodelay(true)?;
            conn.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut b = [0u8; 1];
            let mut samples = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let t = Instant::now();
                conn.write_all(&[1])?;
                conn.read_exact(&mut b)?;
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok(samples)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("round-trip client panicked"))?
        .with_context(|| format!("round trips to {addr}"))
}
