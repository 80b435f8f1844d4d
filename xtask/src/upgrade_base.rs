//! The netds an upgrade test starts from, built once from the
//! repository's history into target/upgrade-from/: the last commit of pin
//! layout 1, the first release with services (conntrack in flight), the
//! last release whose uplinks were XDP only, and the last before
//! masquerading.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// The last commit whose pins are layout 1 (no NETD_META, 26 counters).
pub const LAYOUT_1: &str = "60c3a5f8585d345c95e2fc1e43058bb843560e3a";

/// The last landed commit before client affinity (`NETD_AFFINITY`): VIPs,
/// conntrack and the tail-called programs, pinned.
pub const SERVICES: &str = "177d056fea36817d49a5c59b844939fea5fe9bb0";

/// The last landed commit before per-uplink hooks: every uplink at XDP,
/// the routing mesh with its pinned maps.
pub const XDP_UPLINKS: &str = "e0f9994319d4d86a0adab66b2ef6d541649f6595";

/// The last landed commit before masquerading: networks' packets to the
/// world routed by the host with their own addresses.
pub const BEFORE_MASQUERADE: &str = "bc8f99b3cd3bc33b4bee2a65e123f373ee48b5ca";

/// The netd binary of `commit`, built when missing.
pub fn ensure(root: &Path, commit: &str) -> Result<PathBuf> {
    let dir = root.join("target/upgrade-from").join(&commit[..12]);
    let bin = dir.join("netd");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!(
        "xtask: building netd as of {} for the upgrade test (once, a few minutes)",
        &commit[..12]
    );
    let src = dir.join("src");
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    let mut archive = Command::new("git")
        .args(["archive", commit])
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
        .context("running git archive (the upgrade test needs git)")?;
    let stdout = archive.stdout.take().context("git archive output")?;
    let untar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&src)
        .stdin(stdout)
        .status()
        .context("running tar")?;
    if !archive.wait()?.success() || !untar.success() {
        bail!(
            "cannot extract commit {commit}: the upgrade test needs the repository's history \
             (run from a git clone, not an export)"
        );
    }
    let target = dir.join("target");
    let status = Command::new(crate::cargo_bin())
        .args(["build", "-p", "netd"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .context("building the old netd")?;
    if !status.success() {
        bail!("building netd as of {commit} failed ({status})");
    }
    fs::copy(target.join("debug/netd"), &bin).context("keeping the old netd")?;
    // Only the binary is needed; the build tree is a few hundred MB.
    let _ = fs::remove_dir_all(&target);
    let _ = fs::remove_dir_all(&src);
    Ok(bin)
}
