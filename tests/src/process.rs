//! A `netd run` process inside a test namespace, stopped and torn down on drop.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::netns::NetNs;

/// The netd binary: `NETD_BIN`, or the workspace's debug build.
pub fn netd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NETD_BIN") {
        return PathBuf::from(bin);
    }
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/netd");
    assert!(
        bin.exists(),
        "{} is missing: run through `cargo xtask test` (it builds netd), or set NETD_BIN",
        bin.display()
    );
    bin
}

/// A netd started in `ns` through nsenter (not `ip netns exec`, whose
/// private /sys would hide the shared bpffs).
/// A netd binary `cargo xtask test` built from an earlier commit (`what`)
/// and named in the environment variable `var`.
pub fn built_by_xtask(var: &str, what: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(bin) if bin.exists() => bin,
        _ => panic!(
            "{var} is not set or missing: run through `cargo xtask test`, which builds netd \
             as of {what}"
        ),
    }
}

pub struct Netd {
    child: Option<Child>,
    pub pin_path: PathBuf,
    pub metrics_addr: SocketAddr,
    ns_path: PathBuf,
    log: tempfile::NamedTempFile,
    /// Holds this netd's store and control socket.
    pub state: tempfile::TempDir,
    /// netd and its arguments, for a restart.
    args: Vec<std::ffi::OsString>,
    /// Whether dropping it tears its pin path down (not when the pins are
    /// another netd's).
    owns_pins: bool,
}

impl Netd {
    pub fn start(ns: &NetNs, pin_path: &Path, metrics_port: u16, extra: &[&str]) -> Self {
        Self::start_bin(&netd_bin(), ns, pin_path, metrics_port, extra)
    }

    /// Like [`Netd::start`], running the netd binary at `bin` (an older
    /// build, for upgrades).
    pub fn start_bin(
        bin: &Path,
        ns: &NetNs,
        pin_path: &Path,
        metrics_port: u16,
        extra: &[&str],
    ) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let state = tempfile::tempdir().expect("state dir");
        let metrics_addr: SocketAddr = ([127, 0, 0, 1], metrics_port).into();
        let mut args: Vec<std::ffi::OsString> = vec![bin.into(), "run".into(), "--pin-path".into()];
        args.push(pin_path.into());
        args.extend(["--metrics-addr".into(), metrics_addr.to_string().into()]);
        args.extend(["--state-dir".into(), state.path().join("store").into()]);
        args.extend(["--socket".into(), state.path().join("netd.sock").into()]);
        if !extra.iter().any(|a| a.starts_with("--docker-plugin")) {
            args.push("--docker-plugin=false".into());
        }
        // In the machine's own namespace netd would masquerade out of the
        // machine's default route and take replies on its NIC: a test
        // keeps its hands off that, and names the device it means.
        if ns.is_host()
            && bin == netd_bin().as_path()
            && !extra.iter().any(|a| a.starts_with("--egress-device"))
        {
            args.extend(["--egress-device".into(), "none".into()]);
        }
        args.extend(extra.iter().map(Into::into));
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log handle"))
            .spawn()
            .expect("spawn netd");
        Self {
            child: Some(child),
            pin_path: pin_path.to_path_buf(),
            metrics_addr,
            ns_path: ns.path(),
            log,
            state,
            args,
            owns_pins: true,
        }
    }

    /// Drop will leave the pin path alone: it belongs to another netd.
    pub fn borrowing_pins(mut self) -> Self {
        self.owns_pins = false;
        self
    }

    /// The running netd's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn socket(&self) -> PathBuf {
        self.state.path().join("netd.sock")
    }

    /// Runs a `netd` client command against this netd; returns
    /// (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(netd_bin())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("run netd client");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Like [`Netd::cli`], failing the test when the command fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.cli(args);
        assert!(ok, "netd {args:?} failed: {stderr}");
        stdout
    }

    /// The hook `netd status` reports for `uplink` (`xdp native`, `tc`, ...).
    pub fn uplink_hook(&self, uplink: &str) -> String {
        let status: serde_json::Value =
            serde_json::from_str(&self.ok(&["status", "--json"])).expect("status JSON");
        status["uplinks"]
            .as_array()
            .and_then(|all| all.iter().find(|u| u["ifname"] == uplink))
            .and_then(|u| u["hook"].as_str())
            .unwrap_or_else(|| panic!("status names no hook for {uplink}: {status}"))
            .to_string()
    }

    /// The counters' hook label of the programs on `uplink`: `xdp_uplink`
    /// or `tc_uplink`, whichever `netd status` says it got.
    pub fn uplink_counters(&self, uplink: &str) -> &'static str {
        if self.uplink_hook(uplink) == "tc" {
            "tc_uplink"
        } else {
            "xdp_uplink"
        }
    }

    /// `netd endpoint create NAME --network NETWORK --netns SANDBOX EXTRA..`;
    /// returns the address it printed.
    pub fn endpoint(&self, name: &str, network: &str, sandbox: &NetNs, extra: &[&str]) -> String {
        let netns = sandbox.path();
        let mut args = vec![
            "endpoint",
            "create",
            name,
            "--network",
            network,
            "--netns",
            netns.to_str().expect("path"),
        ];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        out.split_whitespace()
            .nth(1)
            .expect("address printed")
            .to_string()
    }

    /// The capacity of `map` as this netd reports it (`netd status --json`).
    pub fn map_capacity(&self, map: &str) -> u64 {
        let status: serde_json::Value =
            serde_json::from_str(&self.ok(&["status", "--json"])).expect("status json");
        status["maps"]
            .as_array()
            .expect("maps")
            .iter()
            .find(|m| m["name"] == map)
            .and_then(|m| m["capacity"].as_u64())
            .unwrap_or_else(|| panic!("status shows no capacity of {map}: {status}"))
    }

    /// Entries of `map` as this netd reports them (`netd status --json`).
    pub fn map_entries(&self, map: &str) -> u64 {
        let status: serde_json::Value =
            serde_json::from_str(&self.ok(&["status", "--json"])).expect("status json");
        status["maps"]
            .as_array()
            .expect("maps")
            .iter()
            .find(|m| m["name"] == map)
            .and_then(|m| m["entries"].as_u64())
            .unwrap_or_else(|| panic!("{map} in status"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits until /metrics answers; panics with netd's log if it exits
    /// or does not answer in time.
    pub fn wait_ready(&mut self, ns: &NetNs) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("netd exited early ({status}):\n{}", self.log());
            }
            if self.scrape(ns).is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "netd did not serve metrics in 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET /metrics from inside the namespace.
    pub fn scrape(&self, ns: &NetNs) -> Option<String> {
        let addr = self.metrics_addr;
        ns.run(move || http_get(addr, "/metrics"))
            .join()
            .ok()
            .flatten()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts netd again with the same settings (after stop or kill).
    pub fn restart(&mut self, ns: &NetNs) {
        self.respawn();
        self.wait_ready(ns);
    }

    /// The next [`Netd::restart`] runs the netd binary at `bin`, with the
    /// same pins, store and settings: an upgrade.
    pub fn switch_binary(&mut self, bin: &Path) {
        self.args[0] = bin.into();
    }

    /// The next [`Netd::restart`] runs with `flag value` (replacing the
    /// value the flag had, if any).
    pub fn set_flag(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < self.args.len() => self.args[i + 1] = value.into(),
            _ => self.args.extend([flag.into(), value.into()]),
        }
    }

    /// Starts netd again without waiting for it to serve (it may refuse).
    pub fn respawn(&mut self) {
        assert!(self.child.is_none(), "netd still running");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path.display()))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(self.log.reopen().expect("log handle"))
            .spawn()
            .expect("spawn netd");
        self.child = Some(child);
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("netd running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().expect("wait for netd")
    }

    /// Waits for netd to exit on its own (e.g. after an error).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("netd running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "netd still running after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `netd teardown` for this netd's pin path, from its namespace.
    pub fn teardown(&self) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path.display()))
            .arg(netd_bin())
            .args(["teardown", "--pin-path"])
            .arg(&self.pin_path)
            .output()
            .expect("run netd teardown")
    }
}

impl Drop for Netd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A killed netd leaves its plugin socket; one outside the state
        // dir (Docker's plugin directory) would outlive the test.
        for arg in &self.args {
            if let Some(path) = arg
                .to_str()
                .and_then(|a| a.strip_prefix("--docker-plugin-socket="))
            {
                let _ = std::fs::remove_file(path);
            }
        }
        if self.owns_pins {
            let _ = self.teardown();
        }
    }
}

/// A minimal HTTP/1.0 GET; the body on 200, else None.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    let ok = status.starts_with("HTTP/1.") && status.split_whitespace().nth(1) == Some("200");
    ok.then(|| body.to_string())
}

/// The value of one sample line (`name{labels} value`) in a scrape.
pub fn metric(scrape: &str, name_and_labels: &str) -> Option<u64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// POSTs `body` to `path` on the unix socket `socket` (HTTP/1.0); returns
/// (status code, body).
pub fn post_unix(socket: &Path, path: &str, body: &str) -> (u16, String) {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: netd\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}
