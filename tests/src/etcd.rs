//! An etcd server of the test's own, on loopback ports, data in a temp
//! dir; stopped on drop. It can be stopped and started again (same data)
//! to test what netd does while etcd is away.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Etcd {
    dir: tempfile::TempDir,
    pub client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    /// Namespace and address it serves in (loopback of the test's own by default).
    netns: Option<String>,
    ip: String,
}

impl Etcd {
    pub fn start() -> Self {
        Self::start_at(None, "127.0.0.1")
    }

    /// An etcd inside the test's namespace `ns`, serving on `ip` there (the
    /// simulated hosts reach it through the underlay).
    pub fn start_in(ns: &crate::netns::NetNs, ip: &str) -> Self {
        Self::start_at(Some(ns.name.clone()), ip)
    }

    fn start_at(netns: Option<String>, ip: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("netd-etcd-")
            .tempdir()
            .expect("dir");
        let mut etcd = Self {
            dir,
            client_port: crate::free_port(),
            peer_port: crate::free_port(),
            child: None,
            netns,
            ip: ip.to_string(),
        };
        etcd.spawn();
        etcd
    }

    /// `HOST:PORT` for clients.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.ip, self.client_port)
    }

    fn spawn(&mut self) {
        let client = format!("http://{}:{}", self.ip, self.client_port);
        let peer = format!("http://{}:{}", self.ip, self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("log");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcd"]);
                c
            }
            None => Command::new("etcd"),
        };
        let child = cmd
            .args(["--name", "netd-test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("netd-test={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (etcd-server; cargo xtask setup installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains("ready to serve client requests") {
            assert!(
                Instant::now() < deadline,
                "etcd did not come up in 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
