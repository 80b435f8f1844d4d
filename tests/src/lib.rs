//! Helpers for netd's root tests. Every helper that creates something in
//! the kernel (a namespace, a veth, pins, a netd process) removes it when
//! dropped, so a failing test leaves nothing behind.
//!
//! Traffic rule: tests only send packets between namespaces they created.

pub mod case;
pub mod cluster;
pub mod dns;
pub mod docker;
pub mod etcd;
pub mod fixture;
pub mod masq_fixture;
pub mod mesh_fixture;
pub mod monitor;
pub mod netns;
pub mod overlay_fixture;
pub mod policy;
pub mod policy_fixture;
pub mod process;
pub mod services;
pub mod traffic;
pub mod verdict;

use std::sync::atomic::{AtomicU32, Ordering};

/// A name unique to this test process and call, short enough for an
/// interface name (15 bytes) when `prefix` is at most 5 bytes.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{n:x}", std::process::id() % 0xfffff)
}

/// A TCP port on loopback that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// Fails the test with a clear message when not root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (BPF, network namespaces): run it through `cargo xtask test` as root"
    );
}

/// iptables and nftables as they are now (without iptables-save's time
/// stamps), for "netd made no firewall rule".
pub fn firewall() -> String {
    let mut text = String::new();
    for (program, args) in [
        ("iptables-save", &[][..]),
        ("nft", &["list", "ruleset"][..]),
    ] {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .expect(program);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if !line.starts_with('#') {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}
