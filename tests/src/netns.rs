//! Network namespaces and veth pairs made by a test and removed on drop.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Command, Output},
};

/// Runs a command and returns its output, failing the test with the
/// command and its stderr when it fails.
pub fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A named network namespace (`ip netns add`), deleted on drop along with
/// every interface in it.
pub struct NetNs {
    pub name: String,
    /// The host's own namespace: used, never deleted.
    host: bool,
}

impl NetNs {
    pub fn new(prefix: &str) -> Self {
        crate::require_root();
        let name = crate::unique_name(prefix);
        sh("ip", &["netns", "add", &name]);
        let ns = Self { name, host: false };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace the tests run in (the host's), for what must run
    /// there, such as a netd serving a real dockerd.
    pub fn host() -> Self {
        Self {
            name: "host".into(),
            host: true,
        }
    }

    /// Whether this is the host's own namespace.
    pub fn is_host(&self) -> bool {
        self.host
    }

    pub fn path(&self) -> PathBuf {
        if self.host {
            PathBuf::from(format!("/proc/{}/ns/net", std::process::id()))
        } else {
            PathBuf::from("/run/netns").join(&self.name)
        }
    }

    /// `ip -n NAME ...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = if self.host {
            vec![]
        } else {
            vec!["-n", self.name.as_str()]
        };
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// The MAC address of `dev` in this namespace.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let out = self.ip(&["-j", "link", "show", dev]);
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
        let text = links[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("{dev} has no MAC"));
        let mut mac = [0u8; 6];
        for (byte, hex) in mac.iter_mut().zip(text.split(':')) {
            *byte = u8::from_str_radix(hex, 16).expect("a hex byte");
        }
        mac
    }

    /// A command run inside the namespace (not asserted to succeed).
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name))
    }

    /// Runs `f` on a thread that has entered this namespace (a network
    /// namespace is per thread), so sockets it opens live in there.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Joins `a` and `b` with a veth pair, addresses `a_addr`/`b_addr` (CIDR)
/// on each end, both up. Removed with the namespaces.
pub fn veth_between(a: &NetNs, a_if: &str, a_addr: &str, b: &NetNs, b_if: &str, b_addr: &str) {
    sh(
        "ip",
        &[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ],
    );
    a.ip(&["addr", "add", a_addr, "dev", a_if]);
    b.ip(&["addr", "add", b_addr, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &std::path::Path) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: a valid namespace descriptor; only this thread moves.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Runs `f` on a scoped thread inside `ns` (for work that borrows from the
/// caller, such as attaching a program the caller owns).
pub fn within<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> T {
    let path = ns.path();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                enter(&path);
                f()
            })
            .join()
            .expect("thread in namespace")
    })
}

/// Sends one raw Ethernet frame out of `ifname` in the calling thread's
/// namespace (AF_PACKET), as a container could.
pub fn send_raw_frame(ifname: &str, frame: &[u8]) {
    assert_eq!(send_raw_frames(ifname, frame, 1), 1);
}

/// Sends `frame` `count` times out of `ifname`, as fast as one socket
/// goes; how many the kernel took (a full queue refuses some).
pub fn send_raw_frames(ifname: &str, frame: &[u8], count: u64) -> u64 {
    let index = netd::system::ifindex(ifname).expect("interface");
    // SAFETY: plain socket calls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        let mut taken = 0;
        let mut error = None;
        for _ in 0..count {
            let sent = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if sent == frame.len() as isize {
                taken += 1;
            } else {
                error = Some(std::io::Error::last_os_error());
            }
        }
        libc::close(fd);
        assert!(taken > 0 || count == 0, "sendto: {error:?}");
        taken
    }
}
