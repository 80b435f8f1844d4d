//! A real Docker engine of the test's own: its own data root, exec root,
//! pid file and socket, no bridge and no iptables rules, stopped (and its
//! containers and networks removed) on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub const IMAGE: &str = "netd-busybox:test";

pub struct Docker {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
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
        crate::require_root();
        let dir = tempfile::Builder::new()
            .prefix("netd-docker-")
            .tempdir()
            .expect("dir");
        let mut docker = Self { dir, daemon: None };
        docker.spawn_daemon();
        docker
    }

    /// dockerd's API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn spawn_daemon(&mut self) {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).expect("log");
        let child = Command::new("dockerd")
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
        for applet in ["sh", "ping", "nc", "sleep", "ip", "cat", "echo", "netstat"] {
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
            "netd",
            "--ipam-driver",
            "netd",
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
            let nets = self.run(&["network", "ls", "-q", "--filter", "driver=netd"]);
            for id in String::from_utf8_lossy(&nets.stdout).split_whitespace() {
                let _ = self.run(&["network", "rm", id]);
            }
        }
        self.stop_daemon();
    }
}
