//! Where netd keeps its objects on bpffs, and the lock that lets only one
//! netd own a pin path at a time.
//!
//! ```text
//! <pin path>/maps/<MAP>        maps: reused across restarts, so state survives
//! <pin path>/progs/<program>   the programs of the running netd (for bpftool)
//! <pin path>/links/xdp-<if>    an uplink's XDP link (they keep forwarding while netd is down)
//! <pin path>/links/uplink-tc-<if>  an uplink's TC link
//! <pin path>/links/tc-<if>     an endpoint's TC link
//! <pin path>/carry/<MAP>       old maps while an upgrade copies them over
//! ```

use std::{
    fs::{self, File},
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    pub fn progs(&self) -> PathBuf {
        self.root.join("progs")
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Maps being carried over by an upgrade (see `upgrade`).
    pub fn carry(&self) -> PathBuf {
        self.root.join("carry")
    }

    pub fn xdp_link(&self, ifname: &str) -> PathBuf {
        self.links().join(format!("{XDP_LINK_PREFIX}{ifname}"))
    }

    pub fn tc_uplink_link(&self, ifname: &str) -> PathBuf {
        self.links()
            .join(format!("{TC_UPLINK_LINK_PREFIX}{ifname}"))
    }

    /// Creates the directories (the root's parent must be on bpffs).
    pub fn create(&self) -> io::Result<()> {
        for dir in [self.maps(), self.progs(), self.links()] {
            fs::create_dir_all(&dir)?;
        }
        Ok(())
    }

    /// Interfaces that have a pinned XDP link.
    pub fn pinned_xdp_links(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        match fs::read_dir(self.links()) {
            Ok(entries) => {
                for entry in entries {
                    let name = entry?.file_name().to_string_lossy().into_owned();
                    if let Some(ifname) = name.strip_prefix(XDP_LINK_PREFIX) {
                        names.push(ifname.to_string());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        names.sort();
        Ok(names)
    }

    /// Every pinned uplink link, XDP or TC: (interface, pin).
    pub fn pinned_uplink_links(&self) -> io::Result<Vec<(String, PathBuf)>> {
        let mut links = Vec::new();
        match fs::read_dir(self.links()) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let ifname = name
                        .strip_prefix(XDP_LINK_PREFIX)
                        .or_else(|| name.strip_prefix(TC_UPLINK_LINK_PREFIX));
                    if let Some(ifname) = ifname {
                        links.push((ifname.to_string(), entry.path()));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        links.sort();
        Ok(links)
    }
}

const XDP_LINK_PREFIX: &str = "xdp-";
const TC_UPLINK_LINK_PREFIX: &str = "uplink-tc-";

/// The map pinned at `path`, whatever its type (checked by the caller's
/// `try_from`).
pub fn open_pinned_map(path: &Path) -> Result<aya::maps::Map, aya::maps::MapError> {
    aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(path)?)
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another netd is already running with pin path {0} (it holds the lock on that \
         directory); stop it first, or give this one its own --pin-path"
    )]
    Held(PathBuf),
    #[error("cannot lock pin path {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An exclusive `flock` on the pin directory, held for netd's lifetime and
/// released by the kernel however netd ends (even `kill -9`).
#[derive(Debug)]
pub struct PinLock {
    _dir: File,
}

impl PinLock {
    pub fn acquire(layout: &PinLayout) -> Result<Self, LockError> {
        let path = layout.root().to_path_buf();
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&path).map_err(io_err)?;
        let dir = File::open(&path).map_err(io_err)?;
        // SAFETY: dir is an open descriptor for the duration of the call.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                LockError::Held(path)
            } else {
                io_err(e)
            });
        }
        Ok(Self { _dir: dir })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths() {
        let l = PinLayout::new("/sys/fs/bpf/netd");
        assert_eq!(
            l.map("NETD_COUNTERS"),
            PathBuf::from("/sys/fs/bpf/netd/maps/NETD_COUNTERS")
        );
        assert_eq!(
            l.xdp_link("eth1"),
            PathBuf::from("/sys/fs/bpf/netd/links/xdp-eth1")
        );
    }

    #[test]
    fn second_lock_on_the_same_path_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = PinLayout::new(dir.path().join("pins"));
        let first = PinLock::acquire(&layout).expect("first lock");
        let e = PinLock::acquire(&layout).expect_err("second lock");
        assert!(matches!(e, LockError::Held(_)), "{e}");
        assert!(e.to_string().contains("another netd is already running"));
        drop(first);
        PinLock::acquire(&layout).expect("lock after release");
    }

    #[test]
    fn pinned_links_are_listed_by_interface() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = PinLayout::new(dir.path());
        assert!(layout.pinned_xdp_links().expect("no links dir").is_empty());
        layout.create().expect("create");
        fs::write(layout.xdp_link("eth2"), b"").expect("fake pin");
        fs::write(layout.xdp_link("eth1"), b"").expect("fake pin");
        fs::write(layout.links().join("other"), b"").expect("fake pin");
        assert_eq!(
            layout.pinned_xdp_links().expect("list"),
            vec!["eth1", "eth2"]
        );
    }
}
