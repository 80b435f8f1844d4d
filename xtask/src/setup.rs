//! `cargo xtask setup`: installs what is missing, nothing else, so a
//! second run takes a second. See docs/toolchain.md for why these.

use std::{process::Command, time::Instant};

use anyhow::{bail, Context, Result};

/// Debian's Rust with a prebuilt BPF `core` (skipped where rustup nightly
/// has rust-src: then `-Z build-std=core` is used instead).
const DEBIAN_RUST: &[&str] = &["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"];
/// What bpf-linker builds against.
const LLVM: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
/// What building netd needs besides Rust: etcd-client compiles etcd's
/// protobuf definitions (protoc and the well-known types).
const BUILD: &[&str] = &["protobuf-compiler", "libprotobuf-dev"];
/// What netd and its tests run: bpftool to inspect, iproute2 for
/// namespaces and veths, ping for traffic, nsenter/setpriv from util-linux,
/// iperf3 for the bench, a real Docker engine with a busybox to import
/// for the plugin tests, an etcd server for the cluster store tests,
/// tcpdump for the kernel VXLAN interoperation test, iptables and
/// nftables for the services and mesh benches' baselines, trafgen
/// (netsniff-ng) and ethtool for the mesh bench's packet rate.
const TOOLS: &[&str] = &[
    "bpftool",
    "iproute2",
    "iputils-ping",
    "util-linux",
    "iperf3",
    "docker.io",
    "busybox-static",
    "etcd-server",
    "tcpdump",
    "iptables",
    "nftables",
    "netsniff-ng",
    "ethtool",
];

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

struct Plan {
    packages: Vec<&'static str>,
    bpf_linker: bool,
}

fn plan() -> Plan {
    let nightly = ebpf_builder::nightly_with_rust_src();
    let mut wanted: Vec<&'static str> = Vec::new();
    if !nightly {
        wanted.extend_from_slice(DEBIAN_RUST);
    }
    wanted.extend_from_slice(LLVM);
    wanted.extend_from_slice(BUILD);
    wanted.extend_from_slice(TOOLS);
    let packages = wanted.into_iter().filter(|p| !installed(p)).collect();
    let bpf_linker = ebpf_builder::check_linker().is_err();
    Plan {
        packages,
        bpf_linker,
    }
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs only when something is missing (used by run/test/build).
pub fn ensure() -> Result<()> {
    let plan = plan();
    if plan.packages.is_empty() && !plan.bpf_linker {
        return Ok(());
    }
    eprintln!("xtask: the toolchain is incomplete; running setup first");
    install(plan)
}

pub fn setup() -> Result<()> {
    let started = Instant::now();
    let plan = plan();
    if plan.packages.is_empty() && !plan.bpf_linker {
        eprintln!(
            "setup: everything is installed ({}; bpf-linker {}) [{:.1}s]",
            compiler_summary(),
            ebpf_builder::BPF_LINKER_VERSION,
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    install(plan)?;
    eprintln!("setup: done in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn compiler_summary() -> String {
    match ebpf_builder::find_compiler() {
        Ok(c) => c.to_string(),
        Err(e) => e.to_string(),
    }
}

fn install(plan: Plan) -> Result<()> {
    let steps = usize::from(!plan.packages.is_empty()) * 2 + usize::from(plan.bpf_linker);
    let mut step = 0;
    let mut next = |what: &str| {
        step += 1;
        eprintln!("setup [{step}/{steps}] {what}");
    };
    if !plan.packages.is_empty() {
        require_root()?;
        next("apt-get update");
        let t = Instant::now();
        run(
            Command::new("apt-get").args(["update", "-q"]),
            "apt-get update",
        )?;
        eprintln!("        ({:.0}s)", t.elapsed().as_secs_f64());
        next(&format!(
            "apt-get install {} (about 30 s)",
            plan.packages.join(" ")
        ));
        let t = Instant::now();
        run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&plan.packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install",
        )?;
        eprintln!("        ({:.0}s)", t.elapsed().as_secs_f64());
    }
    if plan.bpf_linker {
        next(&format!(
            "cargo install bpf-linker {} against LLVM 22 (about a minute on 2 cores)",
            ebpf_builder::BPF_LINKER_VERSION
        ));
        let t = Instant::now();
        run(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    ebpf_builder::BPF_LINKER_VERSION,
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                    "--force",
                ])
                .env("LLVM_PREFIX", LLVM_PREFIX),
            "cargo install bpf-linker",
        )?;
        eprintln!("        ({:.0}s)", t.elapsed().as_secs_f64());
        ebpf_builder::check_linker()
            .context("bpf-linker still does not run after installing it")?;
    }
    ebpf_builder::find_compiler().context("no BPF-capable compiler after setup")?;
    Ok(())
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("installing Debian packages needs root; run `sudo cargo xtask setup`");
    }
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); its output is above");
    }
    Ok(())
}
