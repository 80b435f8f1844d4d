//! Attaches the XDP program to the uplinks, through links pinned on bpffs
//! so they keep forwarding while netd restarts. A netd that starts again
//! swaps its new program into the existing link atomically (no gap).

use std::{fs, io, path::PathBuf};

use aya::programs::{
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
    ProgramError, Xdp, XdpMode,
};
use tracing::{info, warn};

use super::{Datapath, LoadError, PinLayout};
use crate::system::{self, SystemError};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Interface(#[from] SystemError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("attaching XDP to uplink {ifname}{hint}")]
    Attach {
        ifname: String,
        hint: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("pinning the XDP link of {ifname} at {path}")]
    Pin {
        ifname: String,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("removing {path}")]
    Unpin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How an uplink ended up attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkAttachment {
    pub ifname: String,
    /// "native", "generic", or "kept" (an earlier link, whose mode is unchanged).
    pub mode: &'static str,
    /// An earlier netd's link was there and now runs this netd's program.
    pub replaced: bool,
}

/// Attaches to every uplink in `uplinks` and detaches from pinned uplinks
/// that are no longer listed. All interfaces are checked before anything
/// changes; if one attach fails, the links made by this call are removed.
pub fn attach_uplinks(
    datapath: &mut Datapath,
    uplinks: &[String],
) -> Result<Vec<UplinkAttachment>, AttachError> {
    let ifindexes = uplinks
        .iter()
        .map(|name| system::ifindex(name))
        .collect::<Result<Vec<_>, _>>()?;
    let layout = datapath.layout().clone();

    let mut done: Vec<UplinkAttachment> = Vec::new();
    for (ifname, ifindex) in uplinks.iter().zip(ifindexes) {
        let program = datapath.uplink_program()?;
        match attach_one(program, &layout, ifname, ifindex) {
            Ok(attachment) => done.push(attachment),
            Err(e) => {
                for new in done.iter().filter(|a| !a.replaced) {
                    let _ = fs::remove_file(layout.xdp_link(&new.ifname));
                }
                return Err(e);
            }
        }
    }

    for stale in layout
        .pinned_xdp_links()
        .map_err(|source| AttachError::Unpin {
            path: layout.links(),
            source,
        })?
    {
        if !uplinks.contains(&stale) {
            let path = layout.xdp_link(&stale);
            fs::remove_file(&path).map_err(|source| AttachError::Unpin { path, source })?;
            info!(uplink = %stale, "detached from an uplink no longer configured");
        }
    }
    Ok(done)
}

fn attach_one(
    program: &mut Xdp,
    layout: &PinLayout,
    ifname: &str,
    ifindex: u32,
) -> Result<UplinkAttachment, AttachError> {
    let path = layout.xdp_link(ifname);
    if path.exists() {
        match replace_program(program, &path) {
            Ok(()) => {
                return Ok(UplinkAttachment {
                    ifname: ifname.to_string(),
                    mode: "kept",
                    replaced: true,
                })
            }
            Err(e) => {
                // The interface may have been recreated since: the old link is defunct.
                warn!(uplink = ifname, error = %crate::logging::chain(e.as_ref()), "cannot reuse the pinned link; attaching anew");
                fs::remove_file(&path).map_err(|source| AttachError::Unpin {
                    path: path.clone(),
                    source,
                })?;
            }
        }
    }

    let attach_err = |source: ProgramError| AttachError::Attach {
        ifname: ifname.to_string(),
        hint: attach_hint(&source),
        source,
    };
    let (link_id, mode) = match program.attach_to_if_index(ifindex, XdpMode::Driver) {
        Ok(id) => (id, "native"),
        Err(e) if os_error(&e) == Some(libc::EOPNOTSUPP) => {
            warn!(
                uplink = ifname,
                "the driver has no native XDP; using generic mode"
            );
            let id = program
                .attach_to_if_index(ifindex, XdpMode::Skb)
                .map_err(attach_err)?;
            (id, "generic")
        }
        Err(e) => return Err(attach_err(e)),
    };
    let pin_err = |source: Box<dyn std::error::Error + Send + Sync>| AttachError::Pin {
        ifname: ifname.to_string(),
        path: path.clone(),
        source,
    };
    let link = program
        .take_link(link_id)
        .map_err(|e| pin_err(Box::new(e)))?;
    let fd_link = FdLink::try_from(link).map_err(|e| pin_err(Box::new(e)))?;
    fd_link.pin(&path).map_err(|e| pin_err(Box::new(e)))?;
    Ok(UplinkAttachment {
        ifname: ifname.to_string(),
        mode,
        replaced: false,
    })
}

fn replace_program(program: &mut Xdp, path: &PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let pinned = PinnedLink::from_pin(path)?;
    let link = XdpLink::try_from(FdLink::from(pinned))?;
    let id = program.attach_to_link(link)?;
    // The pin keeps the link; dropping this handle only closes our descriptor.
    drop(program.take_link(id)?);
    Ok(())
}

fn os_error(error: &ProgramError) -> Option<i32> {
    match error {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    }
}

fn attach_hint(error: &ProgramError) -> &'static str {
    match os_error(error) {
        Some(libc::EEXIST) | Some(libc::EBUSY) => {
            " (another XDP program is already attached to it; netd does not replace \
             programs it did not attach)"
        }
        _ => "",
    }
}
