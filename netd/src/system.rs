//! Facts about the host netd needs before touching the kernel.

use std::{ffi::CString, io, path::Path};

/// bpffs's magic number (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error(
        "netd must run as root: it loads BPF programs and changes network interfaces \
         (CAP_BPF, CAP_NET_ADMIN)"
    )]
    NotRoot,
    #[error("interface {0:?} does not exist")]
    UnknownInterface(String),
    #[error("cannot mount bpffs on {path} (is BPF enabled in this kernel?)")]
    MountBpffs {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

pub fn require_root() -> Result<(), SystemError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(SystemError::NotRoot)
    }
}

/// Turns IPv4 forwarding on for interface `name` (netd's own veths).
pub fn enable_forwarding(name: &str) -> Result<(), SystemError> {
    let path = format!("/proc/sys/net/ipv4/conf/{name}/forwarding");
    let io = |source| SystemError::Io {
        path: path.clone(),
        source,
    };
    if std::fs::read_to_string(&path).map_err(io)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(&path, "1").map_err(io)
}

/// The interface's index, or a clear error naming it.
pub fn ifindex(name: &str) -> Result<u32, SystemError> {
    let c = CString::new(name).map_err(|_| SystemError::UnknownInterface(name.to_string()))?;
    // SAFETY: c is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(SystemError::UnknownInterface(name.to_string())),
        index => Ok(index),
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; c is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes sure `pin_path` lies on a bpffs, mounting one on /sys/fs/bpf
/// when none is there. Returns whether it mounted one.
pub fn ensure_bpffs(pin_path: &Path) -> Result<bool, SystemError> {
    let mount_point = pin_path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if is_bpffs(mount_point) {
        return Ok(false);
    }
    let target = Path::new("/sys/fs/bpf");
    if !pin_path.starts_with(target) {
        return Err(SystemError::MountBpffs {
            path: pin_path.display().to_string(),
            source: io::Error::other("the pin path is not on a bpffs and not under /sys/fs/bpf"),
        });
    }
    let err = |source| SystemError::MountBpffs {
        path: target.display().to_string(),
        source,
    };
    let c_target = CString::new("/sys/fs/bpf").map_err(|e| err(io::Error::other(e)))?;
    let c_type = CString::new("bpf").map_err(|e| err(io::Error::other(e)))?;
    // SAFETY: all strings are NUL-terminated and outlive the call.
    let rc = unsafe {
        libc::mount(
            c_type.as_ptr(),
            c_target.as_ptr(),
            c_type.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_an_index_and_nonsense_names_do_not() {
        assert!(ifindex("lo").is_ok());
        let e = ifindex("netd-nonesuch0").expect_err("no such interface");
        assert_eq!(e.to_string(), "interface \"netd-nonesuch0\" does not exist");
    }

    #[test]
    fn a_tmpfs_is_not_bpffs() {
        assert!(!is_bpffs(Path::new("/proc")));
    }
}
