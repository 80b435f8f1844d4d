//! A real Docker engine of the test's own: its own data root, exec root,
//! pid file and socket, no bridge and no iptables rules, stopped (and its
//! containers and networks removed) on drop.

use crate::netns::NetNs;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub const IMAGE: &str = "netd-busybox:test";

/// Held by a test that runs dockerd, for as long as it runs: the Docker
/// tests share one test binary with others, and Docker's plugin
/// directory and its default driver name are the host's.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static DOCKER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A Docker test that failed leaves nothing held: the next may go.
    DOCKER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Docker {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    /// The network and IPAM driver `create_netd_network` names: the name
    /// of netd's plugin socket in /run/docker/plugins.
    driver: String,
    /// The network namespace dockerd runs in: its netd's, where Docker
    /// finds the interfaces netd makes. None: this process's.
    netns: Option<PathBuf>,
}

/// The Docker client matching Debian's engine.
fn client_bin() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

impl Docker {
    pub fn start() -> Self {
        let mut docker = Self::prepare();
        docker.spawn_daemon();
        docker
    }

    /// A Docker whose daemon is not started yet: its socket and driver
    /// name are known, for the flags of the netd serving it.
    pub fn prepare() -> Self {
        crate::require_root();
        let dir = tempfile::Builder::new()
            .prefix("netd-docker-")
            .tempdir()
            .expect("dir");
        Self {
            dir,
            daemon: None,
            driver: "netd".into(),
            netns: None,
        }
    }

    /// Starts dockerd in the host namespace `ns`, where its netd runs.
    pub fn start_in(&mut self, ns: &NetNs) {
        self.netns = Some(ns.path());
        self.spawn_daemon();
    }

    /// Names netd's plugin `driver` (its socket `/run/docker/plugins/DRIVER.sock`)
    /// for networks made here. Simulated hosts share one filesystem, so each
    /// one's netd serves its Docker under a name of its own; on real hosts
    /// every netd is `netd`.
    pub fn with_driver(mut self, driver: &str) -> Self {
        self.driver = driver.into();
        self
    }

    /// The `--docker-plugin-socket` flag for the netd serving this Docker.
    pub fn plugin_flag(&self) -> String {
        format!(
            "--docker-plugin-socket=/run/docker/plugins/{}.sock",
            self.driver
        )
    }

    /// The `--docker-api-socket` flag for the netd serving this Docker.
    pub fn api_flag(&self) -> String {
        format!("--docker-api-socket={}", self.socket().display())
    }

    /// dockerd's API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn spawn_daemon(&mut self) {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).expect("log");
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("dockerd");
                c
            }
            None => Command::new("dockerd"),
        };
        let child = command
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd (is docker.io installed? cargo xtask setup installs it)");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.run(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Stops dockerd (SIGTERM, as systemd would) and starts it again.
    pub fn restart_daemon(&mut self) {
        self.stop_daemon();
        self.spawn_daemon();
    }

    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.wait();
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(client_bin())
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .output()
            .expect("docker client")
    }

    /// Runs a docker command that must succeed; its trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Imports an image holding busybox-static (nothing can be pulled here).
    pub fn import_busybox(&self) {
        let rootfs = self.dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
        std::fs::create_dir_all(rootfs.join("tmp")).expect("rootfs tmp");
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("busybox-static is installed");
        for applet in [
            "sh", "ping", "nc", "sleep", "ip", "cat", "echo", "netstat", "nslookup",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("symlink");
        }
        let tar = self.dir.path().join("rootfs.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .expect("tar");
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.ok(&["import", tar.to_str().expect("path"), IMAGE]);
    }

    /// `docker network create -d netd --ipam-driver netd --subnet SUBNET
    /// EXTRA.. NAME`, succeeding or not.
    pub fn create_netd_network(&self, name: &str, subnet: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "network",
            "create",
            "-d",
            &self.driver,
            "--ipam-driver",
            &self.driver,
            "--subnet",
            subnet,
        ];
        args.extend_from_slice(extra);
        args.push(name);
        self.run(&args)
    }

    /// [`Docker::create_netd_network`] that must succeed.
    pub fn netd_network(&self, name: &str, subnet: &str, extra: &[&str]) {
        let out = self.create_netd_network(name, subnet, extra);
        assert!(
            out.status.success(),
            "docker network create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A connection from `client` to `ip:port`, published by `container`:
    /// the first line the container said, and its own view of who is
    /// connected (netstat). A refusal is tried again for a while: the
    /// container's `nc` listens again a moment after each connection.
    pub fn published_answer(
        &self,
        client: &NetNs,
        ip: &str,
        port: u16,
        container: &str,
    ) -> (String, String) {
        let mut answer = self.published_once(client, ip, port, container);
        for _ in 0..15 {
            if !answer.0.contains("refused") {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            answer = self.published_once(client, ip, port, container);
        }
        answer
    }

    fn published_once(
        &self,
        client: &NetNs,
        ip: &str,
        port: u16,
        container: &str,
    ) -> (String, String) {
        let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().expect("addr");
        let conn = client
            .run(move || {
                let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
                conn.set_read_timeout(Some(Duration::from_secs(3)))?;
                let mut line = [0u8; 64];
                let n = std::io::Read::read(&mut conn, &mut line)?;
                Ok::<_, std::io::Error>((
                    conn,
                    String::from_utf8_lossy(&line[..n]).trim().to_string(),
                ))
            })
            .join()
            .expect("client thread");
        let (conn, said) = match conn {
            Ok(ok) => ok,
            Err(e) => return (format!("no answer: {e}"), String::new()),
        };
        let peers = self.ok(&["exec", container, "netstat", "-tn"]);
        drop(conn);
        (said, peers)
    }

    /// `docker network rm NAME`, tried again for up to 20 s while dockerd
    /// still counts an endpoint of a container just removed; a failure shows
    /// dockerd's own account of it.
    pub fn network_rm(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.run(&["network", "rm", name]);
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                let log = self.daemon_log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "docker network rm {name}: {}\ncontainers: {}\ndockerd's last lines:\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(
                        &self
                            .run(&["network", "inspect", "-f", "{{json .Containers}}", name])
                            .stdout
                    ),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The container's address on `network`.
    pub fn ip(&self, container: &str, network: &str) -> String {
        self.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            container,
        ])
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let ids = self.run(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.run(&["rm", "-f", id]);
            }
            let filter = format!("driver={}", self.driver);
            let nets = self.run(&["network", "ls", "-q", "--filter", &filter]);
            for id in String::from_utf8_lossy(&nets.stdout).split_whitespace() {
                let _ = self.run(&["network", "rm", id]);
            }
        }
        self.stop_daemon();
    }
}
