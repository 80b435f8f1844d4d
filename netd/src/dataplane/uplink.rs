//! Attaches netd's uplink program to each uplink, at the hook that can be
//! trusted there, through links pinned on bpffs so they keep forwarding
//! while netd restarts. A netd that starts again swaps its new program
//! into the existing link atomically (no gap).
//!
//! - **XDP** (native) on a NIC, physical or virtio: the fastest, and the
//!   frames it sees are whole, with complete checksums.
//! - **TC** ingress on a veth, or a device without native XDP: XDP sees
//!   neither an skb's checksum state (a veth's peer leaves TCP and UDP
//!   checksums partial, which a DNAT at XDP cannot keep right) nor whether
//!   the peer will flush what XDP_TX puts in its ring. At TC the skb knows
//!   its checksum state and leaves through redirects.
//!
//! The choice is per uplink, at start (`--uplink-mode`, `auto` by
//! default), logged with its reason and shown by `netd status`. A change
//! of hook is made before it breaks: the new hook's link first, then the
//! old one goes.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions},
    xdp::XdpLink,
    LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Datapath, LoadError, PinLayout};
use crate::system::{self, SystemError};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Interface(#[from] SystemError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("attaching {hook} to uplink {ifname}{hint}")]
    Attach {
        ifname: String,
        hook: &'static str,
        hint: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("pinning the link of {ifname} at {path}")]
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

/// Which hook the uplinks get: `--uplink-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkMode {
    /// XDP on a NIC, TC on a veth or a device without native XDP.
    #[default]
    Auto,
    /// XDP everywhere (native, generic where the driver has none): for a
    /// veth underlay made to act like a NIC (its peers with XDP programs
    /// or GRO, transmit checksums finished).
    Xdp,
    /// TC everywhere.
    Tc,
}

impl std::str::FromStr for UplinkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(UplinkMode::Auto),
            "xdp" => Ok(UplinkMode::Xdp),
            "tc" => Ok(UplinkMode::Tc),
            other => Err(format!("uplink mode {other:?} is none of auto, xdp, tc")),
        }
    }
}

/// What an uplink is, as far as the choice of hook goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkFacts {
    pub ifname: String,
    pub veth: bool,
}

/// How an uplink ended up attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkAttachment {
    pub ifname: String,
    /// `xdp native`, `xdp generic` or `tc`.
    pub hook: String,
    /// Why that hook.
    pub why: String,
    /// An earlier netd's link was there and now runs this netd's program.
    pub replaced: bool,
}

/// The hook netd means to use on an uplink, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    Xdp,
    Tc,
}

const VETH_WHY: &str = "a veth: XDP sees neither the partial checksums its peer hands over nor \
                        whether the peer flushes XDP_TX";

fn plan(mode: UplinkMode, facts: &UplinkFacts) -> (Hook, &'static str) {
    match mode {
        UplinkMode::Tc => (Hook::Tc, "--uplink-mode tc"),
        UplinkMode::Xdp => (Hook::Xdp, "--uplink-mode xdp"),
        UplinkMode::Auto if facts.veth => (Hook::Tc, VETH_WHY),
        UplinkMode::Auto => (Hook::Xdp, "a NIC"),
    }
}

/// Attaches to every uplink in `uplinks` and detaches from pinned uplinks
/// that are no longer listed. All interfaces are checked before anything
/// changes; if one attach fails, the links made by this call are removed.
pub fn attach_uplinks(
    datapath: &mut Datapath,
    uplinks: &[UplinkFacts],
    mode: UplinkMode,
) -> Result<Vec<UplinkAttachment>, AttachError> {
    let ifindexes = uplinks
        .iter()
        .map(|u| system::ifindex(&u.ifname))
        .collect::<Result<Vec<_>, _>>()?;
    let layout = datapath.layout().clone();

    // Each uplink's attachment, its link's pin, and the pin of the hook it
    // leaves (removed once every uplink has its new hook).
    let mut done: Vec<(UplinkAttachment, PathBuf, PathBuf)> = Vec::new();
    for (facts, ifindex) in uplinks.iter().zip(ifindexes) {
        let ifname = &facts.ifname;
        let (hook, why) = plan(mode, facts);
        let attached = match hook {
            Hook::Xdp => match attach_xdp(datapath.uplink_program()?, &layout, ifname, ifindex) {
                // Generic XDP has native XDP's blindness and none of its
                // speed: TC serves such a device better, unless asked.
                Ok(("xdp generic", _)) if mode == UplinkMode::Auto => {
                    unpin(&layout.xdp_link(ifname))?;
                    attach_tc(datapath.tc_uplink_program()?, &layout, ifname)
                        .map(|replaced| ("tc", "the driver has no native XDP", replaced))
                }
                Ok((hook, replaced)) => Ok((hook, why, replaced)),
                // A driver may refuse XDP for its setup (a virtio NIC with
                // too few queues, an MTU too large): TC takes any device.
                Err(e) if mode == UplinkMode::Auto => {
                    warn!(uplink = %ifname, error = %crate::logging::chain(&e), "native XDP refused; the uplink takes TC");
                    attach_tc(datapath.tc_uplink_program()?, &layout, ifname)
                        .map(|replaced| ("tc", "the driver refused native XDP", replaced))
                }
                Err(e) => Err(e),
            },
            Hook::Tc => attach_tc(datapath.tc_uplink_program()?, &layout, ifname)
                .map(|replaced| ("tc", why, replaced)),
        };
        let (hook, why, replaced) = match attached {
            Ok(attached) => attached,
            Err(e) => {
                // Nothing half-applied: the links this call made go, and
                // the earlier hooks were not touched yet.
                for (_, new, _) in done.iter().filter(|(a, _, _)| !a.replaced) {
                    let _ = fs::remove_file(new);
                }
                return Err(e);
            }
        };
        let (kept, other) = if hook == "tc" {
            (layout.tc_uplink_link(ifname), layout.xdp_link(ifname))
        } else {
            (layout.xdp_link(ifname), layout.tc_uplink_link(ifname))
        };
        done.push((
            UplinkAttachment {
                ifname: ifname.clone(),
                hook: hook.to_string(),
                why: why.to_string(),
                replaced,
            },
            kept,
            other,
        ));
    }
    // Every uplink's new hook is in: the hooks they leave go now.
    for (attachment, _, other) in &done {
        if other.exists() {
            unpin(other)?;
            info!(uplink = %attachment.ifname, "the uplink's earlier hook detached");
        }
    }

    let listed = |name: &String| uplinks.iter().any(|u| &u.ifname == name);
    let stale = layout
        .pinned_uplink_links()
        .map_err(|source| AttachError::Unpin {
            path: layout.links(),
            source,
        })?;
    for (ifname, path) in stale {
        if !listed(&ifname) {
            fs::remove_file(&path).map_err(|source| AttachError::Unpin { path, source })?;
            info!(uplink = %ifname, "detached from an uplink no longer configured");
        }
    }
    Ok(done.into_iter().map(|(a, _, _)| a).collect())
}

/// XDP on `ifname`: the pinned link reused, or a new one (native, generic
/// where the driver has none). The hook used and whether a link was reused.
fn attach_xdp(
    program: &mut Xdp,
    layout: &PinLayout,
    ifname: &str,
    ifindex: u32,
) -> Result<(&'static str, bool), AttachError> {
    let path = layout.xdp_link(ifname);
    if path.exists() {
        match replace_xdp(program, &path) {
            Ok(()) => return Ok(("xdp native", true)),
            Err(e) => {
                // The interface may have been recreated since: the old link is defunct.
                warn!(uplink = ifname, error = %crate::logging::chain(e.as_ref()), "cannot reuse the pinned link; attaching anew");
                unpin(&path)?;
            }
        }
    }
    let attach_err = |source: ProgramError| AttachError::Attach {
        ifname: ifname.to_string(),
        hook: "XDP",
        hint: attach_hint(&source),
        source: Box::new(source),
    };
    let (link_id, hook) = match program.attach_to_if_index(ifindex, XdpMode::Driver) {
        Ok(id) => (id, "xdp native"),
        Err(e) if os_error(&e) == Some(libc::EOPNOTSUPP) => {
            warn!(uplink = ifname, "the driver has no native XDP");
            let id = program
                .attach_to_if_index(ifindex, XdpMode::Skb)
                .map_err(attach_err)?;
            (id, "xdp generic")
        }
        Err(e) => return Err(attach_err(e)),
    };
    let link = program
        .take_link(link_id)
        .map_err(|e| pin_err(ifname, &path, Box::new(e)))?;
    pin(FdLink::try_from(link), ifname, &path)?;
    Ok((hook, false))
}

/// TC (TCX ingress) on `ifname`: the pinned link reused, or a new one.
/// Whether a link was reused.
fn attach_tc(
    program: &mut SchedClassifier,
    layout: &PinLayout,
    ifname: &str,
) -> Result<bool, AttachError> {
    let path = layout.tc_uplink_link(ifname);
    if path.exists() {
        match replace_tc(program, &path) {
            Ok(()) => return Ok(true),
            Err(e) => {
                warn!(uplink = ifname, error = %crate::logging::chain(e.as_ref()), "cannot reuse the pinned link; attaching anew");
                unpin(&path)?;
            }
        }
    }
    let id = program
        .attach_with_options(
            ifname,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|source| AttachError::Attach {
            ifname: ifname.to_string(),
            hook: "TC",
            hint: "",
            source: Box::new(source),
        })?;
    let link = program
        .take_link(id)
        .map_err(|e| pin_err(ifname, &path, Box::new(e)))?;
    pin(FdLink::try_from(link), ifname, &path)?;
    Ok(false)
}

fn pin<E: std::error::Error + Send + Sync + 'static>(
    link: Result<FdLink, E>,
    ifname: &str,
    path: &Path,
) -> Result<(), AttachError> {
    let link = link.map_err(|e| pin_err(ifname, path, Box::new(e)))?;
    link.pin(path)
        .map(drop)
        .map_err(|e| pin_err(ifname, path, Box::new(e)))
}

fn pin_err(
    ifname: &str,
    path: &Path,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> AttachError {
    AttachError::Pin {
        ifname: ifname.to_string(),
        path: path.to_path_buf(),
        source,
    }
}

fn unpin(path: &Path) -> Result<(), AttachError> {
    fs::remove_file(path).map_err(|source| AttachError::Unpin {
        path: path.to_path_buf(),
        source,
    })
}

fn replace_xdp(program: &mut Xdp, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let pinned = PinnedLink::from_pin(path)?;
    let link = XdpLink::try_from(FdLink::from(pinned))?;
    let id = program.attach_to_link(link)?;
    // The pin keeps the link; dropping this handle only closes our descriptor.
    drop(program.take_link(id)?);
    Ok(())
}

fn replace_tc(
    program: &mut SchedClassifier,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let pinned = PinnedLink::from_pin(path)?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned))?;
    let id = program.attach_to_link(link)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(veth: bool) -> UplinkFacts {
        UplinkFacts {
            ifname: "up0".into(),
            veth,
        }
    }

    #[test]
    fn a_veth_gets_tc_and_a_nic_xdp_unless_told_otherwise() {
        assert_eq!(plan(UplinkMode::Auto, &facts(true)).0, Hook::Tc);
        assert_eq!(plan(UplinkMode::Auto, &facts(false)).0, Hook::Xdp);
        assert_eq!(plan(UplinkMode::Xdp, &facts(true)).0, Hook::Xdp);
        assert_eq!(plan(UplinkMode::Tc, &facts(false)).0, Hook::Tc);
        assert!(plan(UplinkMode::Auto, &facts(true)).1.contains("veth"));
        assert_eq!("tc".parse(), Ok(UplinkMode::Tc));
        assert!("fast".parse::<UplinkMode>().is_err());
    }
}
