//! Builds netd-ebpf for the BPF target and hands the object to the crate,
//! which embeds it: one `netd` binary is all a host needs.

use std::{env, fs, path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("netd/ sits in the workspace")
        .to_path_buf();
    let ebpf_dir = root.join("netd-ebpf");
    let common_dir = root.join("netd-common");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("netd-ebpf.o");

    for input in ebpf_builder::inputs(&ebpf_dir, &common_dir) {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    println!("cargo:rerun-if-env-changed=NETD_EBPF_COMPILER");
    println!("cargo:rerun-if-env-changed=NETD_EBPF_OBJECT");

    // A prebuilt object (e.g. from a packaging step) skips the nested build.
    if let Some(prebuilt) = env::var_os("NETD_EBPF_OBJECT") {
        if let Err(e) = fs::copy(&prebuilt, &out) {
            eprintln!(
                "error: NETD_EBPF_OBJECT={}: {e}",
                PathBuf::from(prebuilt).display()
            );
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }

    let result = ebpf_builder::find_compiler()
        .and_then(|compiler| ebpf_builder::build(&ebpf_dir, &compiler));
    match result {
        Ok(object) => match fs::copy(&object, &out) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "error: copying {} to {}: {e}",
                    object.display(),
                    out.display()
                );
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
