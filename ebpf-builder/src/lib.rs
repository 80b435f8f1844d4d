//! Building netd-ebpf on the machines we have.
//!
//! Two ways are supported (see docs/toolchain.md):
//! - rustup nightly with `rust-src`: the usual `-Z build-std=core`;
//! - Debian's `rustc-web` (1.96, LLVM 22), which ships a prebuilt `core`
//!   for `bpfel-unknown-none`, so no `rust-src` is needed.
//!
//! Both link with `bpf-linker`. netd's build script and `cargo xtask` use
//! this crate, so there is one place that knows how.

use std::{
    env,
    ffi::OsString,
    fmt, fs,
    path::{Path, PathBuf},
    process::Command,
};

pub const BPF_TARGET: &str = "bpfel-unknown-none";
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian's Rust with a prebuilt BPF `core`.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_BPF_CORE_DIR: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";
/// The object's name: the eBPF crate's binary.
pub const OBJECT_NAME: &str = "netd-ebpf";

/// A compiler that can build for the BPF target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compiler {
    /// rustup's nightly with rust-src: `-Z build-std=core`.
    NightlyBuildStd,
    /// Debian's rustc with its prebuilt `core` for BPF.
    DebianPrebuiltCore,
}

impl fmt::Display for Compiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compiler::NightlyBuildStd => {
                write!(f, "rustup nightly with rust-src (-Z build-std=core)")
            }
            Compiler::DebianPrebuiltCore => {
                write!(f, "Debian rustc ({DEBIAN_RUSTC}) with prebuilt BPF core")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "no compiler can build for {BPF_TARGET}: neither rustup nightly with rust-src nor Debian's \
         rustc-web + libstd-rust-web-dev-bpf is installed. Run `cargo xtask setup`."
    )]
    NoCompiler,
    #[error(
        "bpf-linker {BPF_LINKER_VERSION} is not installed ({found}). Run `cargo xtask setup`."
    )]
    NoLinker { found: String },
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "building netd-ebpf with {compiler} failed ({status}); the compiler's messages are above"
    )]
    Failed {
        compiler: Compiler,
        status: std::process::ExitStatus,
    },
    #[error("the build finished but {0} is missing")]
    NoObject(PathBuf),
}

/// Is rustup's nightly installed with rust-src?
pub fn nightly_with_rust_src() -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
}

/// Is Debian's rustc with a prebuilt `core` for the BPF target installed?
pub fn debian_prebuilt_core() -> bool {
    Path::new(DEBIAN_RUSTC).exists()
        && fs::read_dir(DEBIAN_BPF_CORE_DIR)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
            })
            .unwrap_or(false)
}

/// The compiler to use: `NETD_EBPF_COMPILER=nightly|debian` forces one,
/// otherwise nightly + rust-src when present, else Debian's.
pub fn find_compiler() -> Result<Compiler, BuildError> {
    match env::var("NETD_EBPF_COMPILER").as_deref() {
        Ok("nightly") => return Ok(Compiler::NightlyBuildStd),
        Ok("debian") => return Ok(Compiler::DebianPrebuiltCore),
        _ => {}
    }
    if nightly_with_rust_src() {
        Ok(Compiler::NightlyBuildStd)
    } else if debian_prebuilt_core() {
        Ok(Compiler::DebianPrebuiltCore)
    } else {
        Err(BuildError::NoCompiler)
    }
}

/// `bpf-linker`'s version line, if it runs.
pub fn bpf_linker_version() -> Option<String> {
    let out = Command::new(bpf_linker_path())
        .arg("--version")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// bpf-linker on PATH, or where `cargo install` puts it.
pub fn bpf_linker_path() -> PathBuf {
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let candidate = dir.join("bpf-linker");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    cargo_home().join("bin/bpf-linker")
}

pub fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

pub fn check_linker() -> Result<(), BuildError> {
    match bpf_linker_version() {
        Some(v) if v.contains(BPF_LINKER_VERSION) => Ok(()),
        Some(v) => Err(BuildError::NoLinker {
            found: format!("found {v}"),
        }),
        None => Err(BuildError::NoLinker {
            found: "not found".into(),
        }),
    }
}

/// Variables a parent cargo (or rustup, or clippy) sets that must not leak
/// into the nested build for another target with another compiler.
const SCRUBBED_ENV: &[&str] = &[
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "RUSTUP_TOOLCHAIN",
    "RUSTC_BOOTSTRAP",
];

fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

/// Builds the eBPF crate in `crate_dir` (release profile) and returns the
/// path of the object. Cargo's own output goes to stderr as it comes.
pub fn build(crate_dir: &Path, compiler: &Compiler) -> Result<PathBuf, BuildError> {
    check_linker()?;
    let target_dir = crate_dir.join("target");
    let rustflags = [
        "-Cdebuginfo=2".to_string(),
        "-Clink-arg=--btf".to_string(),
        // LLVM then writes small memsets and memcpys as plain stores.
        // With the in-order memcpy expansion (bpf-linker's default) every
        // memset became a call to a byte loop: zeroing each plan cost the
        // endpoint program ~100 ns a packet, and the verifier a walk of
        // every iteration.
        "-Clink-arg=--disable-expand-memcpy-in-order".to_string(),
        format!("--cfg=bpf_target_arch=\"{}\"", host_arch()),
    ]
    .join("\x1f");

    let mut cmd = match compiler {
        Compiler::NightlyBuildStd => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", "nightly", "cargo", "build", "-Z", "build-std=core"]);
            cmd
        }
        Compiler::DebianPrebuiltCore => {
            let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
            let mut cmd = Command::new(cargo);
            cmd.arg("build");
            cmd
        }
    };
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    if let Compiler::DebianPrebuiltCore = compiler {
        // Debian's compiler is stable; aya-ebpf needs asm_experimental_arch.
        cmd.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
    }
    let linker_dir = bpf_linker_path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = vec![linker_dir];
    dirs.extend(env::split_paths(&path));
    let path = env::join_paths(dirs).unwrap_or(path);
    cmd.current_dir(crate_dir)
        .args(["--release", "--locked", "--target", BPF_TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env("PATH", path);

    let program = format!("{cmd:?}");
    let status = cmd
        .status()
        .map_err(|source| BuildError::Spawn { program, source })?;
    if !status.success() {
        return Err(BuildError::Failed {
            compiler: compiler.clone(),
            status,
        });
    }
    let object = target_dir
        .join(BPF_TARGET)
        .join("release")
        .join(OBJECT_NAME);
    if object.is_file() {
        Ok(object)
    } else {
        Err(BuildError::NoObject(object))
    }
}

/// Files whose change means the object must be rebuilt.
pub fn inputs(crate_dir: &Path, common_dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![
        crate_dir.join("Cargo.toml"),
        crate_dir.join("Cargo.lock"),
        crate_dir.join(".cargo/config.toml"),
        common_dir.join("Cargo.toml"),
    ];
    for dir in [crate_dir.join("src"), common_dir.join("src")] {
        collect_files(&dir, &mut out);
    }
    out
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}
