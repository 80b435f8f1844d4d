//! The host's own connections to its published ports (`curl
//! 127.0.0.1:8080`, `curl <uplink address>:8080`, a UDP `sendto`): the
//! `connect4`, `sendmsg4` and `recvmsg4` programs on the cgroup2 root,
//! balancing at the socket. Their links are pinned with the others, so
//! they outlive a restart or a kill -9; a new netd attaches each program
//! beside the old one before unpinning it, so nothing goes unbalanced in
//! between.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::programs::{links::FdLink, CgroupAttachMode};
use netd_common::program_names;

use super::{Datapath, LoadError, PinLayout};

#[derive(Debug, thiserror::Error)]
pub enum HostLocalError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("opening the cgroup2 root {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("attaching {program} to the cgroup2 root {path}")]
    Attach {
        program: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("replacing the pinned link {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The cookie of the calling thread's network namespace (0 if the kernel
/// has none to give): the program acts only on sockets of this one.
pub fn netns_cookie() -> u64 {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: a fresh socket, closed below; getsockopt writes at most
    // `len` bytes into `cookie`.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return 0;
        }
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        libc::close(fd);
        if rc == 0 {
            cookie
        } else {
            0
        }
    }
}

/// Where the unified (v2) cgroup hierarchy is mounted, from `mounts`
/// (`/proc/self/mounts`' text).
pub fn cgroup2_root(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, path, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(path))
    })
}

/// Attaches every cgroup hook to the cgroup2 root at `root`, each
/// replacing the link a previous netd pinned. Returns how many were
/// replaced.
pub fn attach(datapath: &mut Datapath, root: &Path) -> Result<usize, HostLocalError> {
    let cgroup = fs::File::open(root).map_err(|source| HostLocalError::Cgroup {
        path: root.to_path_buf(),
        source,
    })?;
    let mut replaced = 0;
    for (program, link) in program_names::SOCK_ADDR {
        replaced += usize::from(attach_one(datapath, &cgroup, root, program, link)?);
    }
    Ok(replaced)
}

fn attach_one(
    datapath: &mut Datapath,
    cgroup: &fs::File,
    root: &Path,
    name: &'static str,
    link_name: &str,
) -> Result<bool, HostLocalError> {
    let layout: PinLayout = datapath.layout().clone();
    let path = layout.links().join(link_name);
    let fresh = layout.links().join(format!("{link_name}-new"));
    let attach_err = |source: Box<dyn std::error::Error + Send + Sync>| HostLocalError::Attach {
        program: name,
        path: root.to_path_buf(),
        source,
    };
    let pin_err = |source: Box<dyn std::error::Error + Send + Sync>| HostLocalError::Pin {
        path: path.clone(),
        source,
    };
    let program = datapath.sock_addr_program(name)?;
    // A BPF link on a cgroup always runs beside others; link_create takes
    // no attach flags (BPF_F_ALLOW_MULTI there is EINVAL), hence Single.
    let id = program
        .attach(cgroup, CgroupAttachMode::Single)
        .map_err(|e| attach_err(Box::new(e)))?;
    let link = program.take_link(id).map_err(|e| attach_err(Box::new(e)))?;
    let link = FdLink::try_from(link).map_err(|e| attach_err(Box::new(e)))?;
    let _ = fs::remove_file(&fresh);
    link.pin(&fresh).map_err(|e| pin_err(Box::new(e)))?;
    // The old program runs after the new one until its pin goes, and sees
    // destinations the new one already rewrote: nothing is done twice.
    let replaced = match fs::remove_file(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(pin_err(Box::new(e))),
    };
    fs::rename(&fresh, &path).map_err(|e| pin_err(Box::new(e)))?;
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unified_hierarchy_is_found_wherever_it_is_mounted() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_root(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(cgroup2_root(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            cgroup2_root("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"),
            None
        );
    }
}
