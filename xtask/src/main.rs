//! `cargo xtask <command>`: the project's own build steps.

mod layers;
mod setup;
mod upgrade_base;

use std::{
    env,
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "netd's build steps")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing netd needs (idempotent).
    Setup,
    /// Build the eBPF object only and print its path.
    BuildEbpf,
    /// Build netd (the eBPF object is embedded in it).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build and run `netd run` on this host (single host, no uplink).
    /// Arguments after `--` go to `netd run`, e.g. `-- --uplink eth1`.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run every test: unit, BPF_PROG_TEST_RUN fixtures, namespaces (root).
    Test {
        /// Only the tests that need neither root nor BPF.
        #[arg(long)]
        unprivileged: bool,
        /// Passed on to `cargo test` (a test name filter, --nocapture, ...).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// netd-ebpf's layers (no import circle), cargo fmt --check (the
    /// workspace and netd-ebpf), and clippy -D warnings over the workspace.
    Lint,
    /// Run the datapath benchmarks (root) and write JSON results.
    Bench {
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/datapath.json")]
        json: PathBuf,
        /// BPF_PROG_TEST_RUN repeat count per path.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let root = workspace_root();
    env::set_current_dir(&root).context("entering the workspace")?;
    match cli.command {
        Cmd::Setup => setup::setup(),
        Cmd::BuildEbpf => {
            setup::ensure()?;
            let compiler = ebpf_builder::find_compiler()?;
            eprintln!("building netd-ebpf with {compiler}");
            let object = ebpf_builder::build(&root.join("netd-ebpf"), &compiler)?;
            println!("{}", object.display());
            Ok(())
        }
        Cmd::Build { release } => {
            setup::ensure()?;
            build_netd(release)
        }
        Cmd::Run { release, args } => {
            setup::ensure()?;
            build_netd(release)?;
            let bin = root.join("target").join(profile_dir(release)).join("netd");
            let error = Command::new(&bin).arg("run").args(&args).exec();
            bail!("cannot start {}: {error}", bin.display())
        }
        Cmd::Test { unprivileged, args } => {
            setup::ensure()?;
            test(&root, unprivileged, &args)
        }
        Cmd::Lint => {
            setup::ensure()?;
            layers::check(&root.join("netd-ebpf/src"))?;
            cargo(&["fmt", "--all", "--check"])?;
            // Outside the workspace (another target), formatted all the same.
            cargo(&["fmt", "--manifest-path", "netd-ebpf/Cargo.toml", "--check"])?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
        }
        Cmd::Bench { json, repeat } => {
            setup::ensure()?;
            require_root("the benchmarks load BPF programs")?;
            build_netd(true)?;
            cargo(&["build", "--release", "-p", "netd-bench"])?;
            // Each bench binary, whether it takes --repeat, and its JSON
            // (the HTML report lands beside it).
            let benches = [
                ("netd-bench", true, json.clone()),
                ("netd-bench-host", true, json.with_file_name("host.json")),
                (
                    "netd-bench-services",
                    true,
                    json.with_file_name("services.json"),
                ),
                (
                    "netd-bench-overlay",
                    false,
                    json.with_file_name("overlay.json"),
                ),
                ("netd-bench-mesh", false, json.with_file_name("mesh.json")),
                (
                    "netd-bench-egress",
                    false,
                    json.with_file_name("egress.json"),
                ),
                (
                    "netd-bench-policy",
                    true,
                    json.with_file_name("policy.json"),
                ),
                (
                    "netd-bench-cluster",
                    false,
                    json.with_file_name("cluster.json"),
                ),
            ];
            for (bench, takes_repeat, out) in benches {
                let mut cmd = Command::new(root.join("target/release").join(bench));
                if takes_repeat {
                    cmd.args(["--repeat", &repeat.to_string()]);
                }
                let status = cmd
                    .arg("--json")
                    .arg(&out)
                    .env("NETD_BIN", root.join("target/release/netd"))
                    .status()
                    .with_context(|| format!("running {bench}"))?;
                if !status.success() {
                    bail!("{bench} failed ({status})");
                }
            }
            let dir = json.parent().unwrap_or(Path::new("."));
            let status = Command::new(root.join("target/release/netd-bench-index"))
                .arg("--dir")
                .arg(dir)
                .status()
                .context("running netd-bench-index")?;
            if !status.success() {
                bail!("netd-bench-index failed ({status})");
            }
            Ok(())
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn profile_dir(release: bool) -> &'static str {
    if release {
        "release"
    } else {
        "debug"
    }
}

fn build_netd(release: bool) -> Result<()> {
    let mut args = vec!["build", "-p", "netd"];
    if release {
        args.push("--release");
    }
    cargo(&args)
}

fn test(root: &Path, unprivileged: bool, extra: &[String]) -> Result<()> {
    if unprivileged {
        let mut args = vec!["test", "-p", "netd-common", "-p", "testpkt", "-p", "netd"];
        args.extend(extra.iter().map(String::as_str));
        return cargo(&args);
    }
    require_root(
        "the fixture and namespace tests load BPF programs and create namespaces \
         (use --unprivileged for the rest)",
    )?;
    build_netd(false)?;
    let old_netd = upgrade_base::ensure(root, upgrade_base::LAYOUT_1)?;
    let services_netd = upgrade_base::ensure(root, upgrade_base::SERVICES)?;
    let xdp_uplinks_netd = upgrade_base::ensure(root, upgrade_base::XDP_UPLINKS)?;
    let before_masquerade_netd = upgrade_base::ensure(root, upgrade_base::BEFORE_MASQUERADE)?;
    let mut args = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    let mut child = Command::new(cargo_bin())
        .args(&args)
        .env("NETD_BIN", root.join("target/debug/netd"))
        .env("NETD_UPGRADE_FROM_BIN", old_netd)
        .env("NETD_UPGRADE_FROM_SERVICES_BIN", services_netd)
        .env("NETD_UPGRADE_FROM_XDP_UPLINKS_BIN", xdp_uplinks_netd)
        .env(
            "NETD_UPGRADE_FROM_BEFORE_MASQUERADE_BIN",
            before_masquerade_netd,
        )
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    // Pass the output through, adding up the per-binary results so the
    // run ends on one line that says how many tests ran.
    let mut totals = TestTotals::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            totals.add_line(&line);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!(
        "\n{} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if !status.success() {
        bail!("tests failed ({status})");
    }
    if totals.passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

#[derive(Default)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestTotals {
    /// Reads `test result: ok. 12 passed; 0 failed; 1 ignored; ...`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("this needs root: {why}");
    }
    Ok(())
}

fn cargo_bin() -> std::ffi::OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(cargo_bin())
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TestTotals;

    #[test]
    fn totals_add_up_cargo_test_result_lines() {
        let mut t = TestTotals::default();
        t.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        t.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("test foo ... ok");
        assert_eq!((t.passed, t.failed, t.ignored), (15, 2, 1));
    }
}
