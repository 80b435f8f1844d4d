//! Tiers for the policy tests: an endpoint in a namespace of its own,
//! labelled `tier=NAME`, echoing TCP on the tiers' ports; and the one
//! question a policy test asks of them: does a connection open and echo.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::{netns::NetNs, process::Netd};

pub const API_PORT: u16 = 8080;
pub const DB_PORT: u16 = 5432;
/// A port every tier listens on and no rule allows.
pub const OTHER_PORT: u16 = 9999;

pub struct Tier {
    pub ns: NetNs,
    pub ip: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Tier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Endpoint `name` of `network` on `netd`, labelled `tier=NAME`, in a new
/// namespace, echoing on [`API_PORT`], [`DB_PORT`] and [`OTHER_PORT`].
pub fn tier(netd: &Netd, name: &str, network: &str) -> Tier {
    let ns = NetNs::new("ndP");
    let label = format!("tier={name}");
    let ip = netd.endpoint(name, network, &ns, &["--label", &label]);
    let stop = Arc::new(AtomicBool::new(false));
    for port in [API_PORT, DB_PORT, OTHER_PORT] {
        echo_on(&ns, port, stop.clone());
    }
    Tier { ns, ip, stop }
}

/// Accepts on `port` until `stop` and echoes each connection's bytes.
pub fn echo_on(ns: &NetNs, port: u16, stop: Arc<AtomicBool>) {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.run(move || {
        let l = TcpListener::bind(("0.0.0.0", port)).expect("listen");
        l.set_nonblocking(true).expect("nonblocking");
        tx.send(()).expect("ready");
        while !stop.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut c, _)) => {
                    std::thread::spawn(move || {
                        let _ = c.set_nonblocking(false);
                        let mut buf = [0u8; 64];
                        while let Ok(n @ 1..) = c.read(&mut buf) {
                            if c.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    rx.recv().expect("listener ready");
}

/// A TCP connection from `from` to `ip:port` that echoes a line: open.
/// A refused one costs the 700 ms connect timeout (its SYN is dropped).
pub fn opens(from: &NetNs, ip: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
    from.run(move || {
        let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_millis(700)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 5];
        c.write_all(b"ping\n").is_ok() && c.read_exact(&mut buf).is_ok() && &buf == b"ping\n"
    })
    .join()
    .expect("client")
}

/// A connection from `from` to `ip:port` kept open to check that it still
/// echoes later: across restarts, upgrades and policy changes.
pub struct Held(TcpStream);

impl Held {
    pub fn open(from: &NetNs, ip: &str, port: u16) -> Self {
        let addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
        let c = from
            .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
            .join()
            .expect("client")
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        c.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        Held(c)
    }

    pub fn echoes(&mut self) -> bool {
        let mut buf = [0u8; 3];
        self.0.write_all(b"hi\n").is_ok() && self.0.read_exact(&mut buf).is_ok() && &buf == b"hi\n"
    }
}

/// `netd policy create NAME --select SELECT` with `ingress` and `egress`
/// rules; an empty list is `--deny-ingress` / `--deny-egress`.
pub fn create_policy(netd: &Netd, name: &str, select: &str, ingress: &[&str], egress: &[&str]) {
    let mut args = vec!["policy", "create", name, "--select", select];
    for (flag, deny, rules) in [
        ("--ingress", "--deny-ingress", ingress),
        ("--egress", "--deny-egress", egress),
    ] {
        if rules.is_empty() {
            args.push(deny);
        }
        for rule in rules {
            args.extend([flag, *rule]);
        }
    }
    netd.ok(&args);
}

/// The three tiers' policies: web may reach api on 8080 and api db on
/// 5432, and nothing else moves between them. `api_ingress` adds rules to
/// api's ingress.
pub fn three_tier_policies(netd: &Netd, api_ingress: &[&str]) {
    create_policy(
        netd,
        "web",
        "tier=web",
        &[],
        &["allow to tier=api tcp/8080"],
    );
    let mut ingress = vec!["allow from tier=web tcp/8080"];
    ingress.extend_from_slice(api_ingress);
    create_policy(
        netd,
        "api",
        "tier=api",
        &ingress,
        &["allow to tier=db tcp/5432"],
    );
    create_policy(
        netd,
        "db",
        "tier=db",
        &["allow from tier=api tcp/5432"],
        &[],
    );
}

/// Under [`three_tier_policies`]: web→api:8080 and api→db:5432 open (their
/// replies pass), and the other pairs and ports, both ways, are refused.
/// How many refusals were tried.
pub fn only_the_allowed_tiers_talk(web: &Tier, api: &Tier, db: &Tier) -> usize {
    assert!(opens(&web.ns, &api.ip, API_PORT), "web→api:8080");
    assert!(opens(&api.ns, &db.ip, DB_PORT), "api→db:5432");
    let refused = [
        ("web→db", web, db, DB_PORT),
        ("web→api:9999", web, api, OTHER_PORT),
        ("api→web", api, web, API_PORT),
        ("db→api", db, api, API_PORT),
        ("db→web", db, web, API_PORT),
        ("api→db:8080", api, db, API_PORT),
    ];
    for (what, from, to, port) in &refused {
        assert!(!opens(&from.ns, &to.ip, *port), "{what} must be refused");
    }
    refused.len()
}
