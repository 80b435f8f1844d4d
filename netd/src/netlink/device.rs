//! Settings of a device that rtnetlink does not carry, made inside the
//! device's network namespace: ethtool features (GRO, checksum offload)
//! and sysctls (IPv6 off).

use std::{fs::File, os::fd::AsRawFd, path::Path};

use super::LinkError;

/// Turns GRO on for `ifname` inside the namespace at `sandbox`: a veth
/// receives XDP-redirected frames (netd's VXLAN decap on the uplink) only
/// when its NAPI path is on, and GRO merges them again for the container.
pub fn enable_gro(sandbox: &Path, ifname: &str) -> Result<(), LinkError> {
    ethtool_set(sandbox, ifname, &[(ETHTOOL_SGRO, 1)])
}

/// Makes a veth uplink (`ifname` in the namespace at `netns`) finish
/// checksums (and segment) on transmit, as a NIC does before the wire. A
/// veth otherwise hands the packet on with its checksum still to be done,
/// and XDP on the receiving host, which sees only bytes, would deliver it
/// unfinished: the container drops it.
pub fn finish_checksums_on_transmit(netns: &Path, ifname: &str) -> Result<(), LinkError> {
    ethtool_set(netns, ifname, &[(ETHTOOL_STXCSUM, 0)])
}

/// Turns IPv6 off on `ifname` (inside the namespace at `netns`, or in
/// netd's own), as Docker does on an interface whose network has no IPv6:
/// its stack then sends nothing of its own (router solicitations, MLD,
/// duplicate address probes) that netd, which forwards only IPv4, would
/// count as drops. A kernel without IPv6 has nothing to turn off.
pub fn disable_ipv6(netns: Option<&Path>, ifname: &str) -> Result<(), LinkError> {
    let write = || {
        if !Path::new("/proc/sys/net/ipv6").exists() {
            return Ok(());
        }
        std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
            "1",
        )
    };
    let done = match netns {
        None => write(),
        Some(path) => in_namespace(path, write)?,
    };
    done.map_err(|source| LinkError::Sysctl {
        ifname: ifname.to_string(),
        source,
    })
}

const ETHTOOL_SGRO: u32 = 0x2c;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// ethtool "set" commands (cmd, value) on `ifname` inside `sandbox`.
fn ethtool_set(sandbox: &Path, ifname: &str, settings: &[(u32, u32)]) -> Result<(), LinkError> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut libc::c_void,
        _rest: [u8; 16],
    }
    let name = ifname.as_bytes();
    if name.len() >= 16 {
        return Err(LinkError::NoLink(ifname.to_string()));
    }
    let set = || {
        // SAFETY: the ioctl gets a zeroed ifreq naming the interface and a
        // pointer to an ethtool_value that outlives the call.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for (cmd, data) in settings {
                let mut value = EthtoolValue {
                    cmd: *cmd,
                    data: *data,
                };
                let mut req = IfReq {
                    name: [0; 16],
                    data: (&mut value as *mut EthtoolValue).cast(),
                    _rest: [0; 16],
                };
                req.name[..name.len()].copy_from_slice(name);
                if libc::ioctl(fd, SIOCETHTOOL, &mut req) != 0 {
                    let err = std::io::Error::last_os_error();
                    libc::close(fd);
                    return Err(err);
                }
            }
            libc::close(fd);
            Ok(())
        }
    };
    in_namespace(sandbox, set)?.map_err(|source| LinkError::Sandbox {
        path: sandbox.display().to_string(),
        source,
    })
}

/// Runs `work` on a thread of its own inside the network namespace at
/// `path` (netd's own threads stay where they are).
fn in_namespace<T: Send>(
    path: &Path,
    work: impl FnOnce() -> std::io::Result<T> + Send,
) -> Result<std::io::Result<T>, LinkError> {
    let ns = File::open(path).map_err(|source| LinkError::Sandbox {
        path: path.display().to_string(),
        source,
    })?;
    Ok(std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on a valid descriptor moves only this
                // thread, which ends with the scope.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                work()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the namespace's thread panicked")))
    }))
}
