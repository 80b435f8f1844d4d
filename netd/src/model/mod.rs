//! The Container Network Model: networks, endpoints and the sandboxes
//! (network namespaces) that hold them, with the rules every request is
//! checked against. Pure: no I/O, so every refusal is unit-tested.

mod egress;
mod endpoint;
mod error;
mod labels;
mod mac;
mod network;
mod policy;
mod service;
#[cfg(test)]
pub mod testing;

pub use egress::{Egress, EgressSpec, MAX_NO_MASQUERADE, MIN_MTU};
pub use endpoint::{Endpoint, EndpointSpec, Manager, DEFAULT_IFNAME, HOST_IFNAME_PREFIX};
pub use error::ModelError;
pub use labels::{parse_selector, selectable_labels};
pub use mac::Mac;
pub use network::{Network, NetworkSpec};
pub use policy::{
    parse_rule, Action, Direction, Peer, PeerSpec, Policy, PolicySpec, Proto, Rule, RuleCounts,
    RuleSpec,
};
pub use service::{
    parse_allow, Affinity, Backend, Mode, Protocol, PublishMode, PublishedPort, Service,
    ServicePort, ServiceSpec, ServiceUpdate, MAX_ALLOW_PER_PORT,
};

/// A host of the cluster: one whose netd joined it, or an external host
/// added by hand (no netd; it speaks VXLAN, e.g. a kernel VXLAN device).
/// Its record stays until `netd host rm`; whether its netd is running is
/// a separate registration under a lease.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Host {
    pub name: String,
    /// Address on the underlay that other hosts send VXLAN to.
    pub underlay_ip: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    pub external: bool,
    /// Its index in every host's NETD_HOSTS, allocated once in the store
    /// and kept until the host is removed (0: none yet).
    #[serde(default)]
    pub index: u32,
    /// Filled in when listed: its netd holds its registration (external
    /// hosts: always). What is stored here is never read.
    #[serde(default)]
    pub alive: bool,
}

/// Names of networks and endpoints: what Docker accepts for names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Refuses a name [`valid_name`] does not accept, saying what is allowed.
pub fn check_name(name: &str) -> Result<(), ModelError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ModelError::invalid(
            "name",
            format!("{name:?} is not a valid name (letters, digits, '_', '.', '-'; at most 64)"),
        ))
    }
}

/// A fresh random identifier (16 hex digits).
pub fn new_id() -> String {
    let mut bytes = [0u8; 8];
    // getrandom(2) never fails for 8 bytes once the pool is initialised;
    // the time fallback still gives distinct ids on one host.
    // SAFETY: writes at most 8 bytes into `bytes`.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes = (t ^ u64::from(std::process::id()).rotate_left(32)).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["n1", "front-end", "a.b_c", "X"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn ids_are_hex_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
