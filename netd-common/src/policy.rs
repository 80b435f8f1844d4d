//! Policy: the map layouts and the pure rules both sides share.
//!
//! A packet's peer address becomes a numeric identity through the ipcache
//! (`NETD_IPCACHE`, an LPM trie: endpoints as /32, CIDR peers as their
//! prefixes). The verdict is then one LPM lookup in `NETD_POLICY` keyed by
//! [`PolicyMatch`]: (endpoint, direction, identity) exactly, then protocol
//! and port as a prefix, so a port range is a few prefixes and "any port"
//! or "any protocol" a shorter one. The datapath looks up the peer's
//! identity and [`IDENTITY_ANY`] and keeps the stronger verdict
//! ([`stronger`]); it never walks rules.

use bytemuck::{Pod, Zeroable};

/// Directions, as keyed.
pub const INGRESS: u8 = 0;
pub const EGRESS: u8 = 1;

/// `NETD_POLICY_EPS` flags: which directions of an endpoint are
/// default-deny (some policy selects it there).
pub const ENFORCE_INGRESS: u32 = 1;
pub const ENFORCE_EGRESS: u32 = 2;

/// The wildcard peer of a rule without peers; never an address's identity.
pub const IDENTITY_ANY: u32 = 0;
/// An address the ipcache does not know: outside every endpoint and CIDR.
pub const IDENTITY_WORLD: u32 = 1;
/// Identities of label sets are below this; CIDR identities have it set.
pub const IDENTITY_CIDR_BIT: u32 = 1 << 24;

/// Rule id of the default deny (no rule matched a direction that is
/// default-deny). Real rule ids are `policy index << 16 | position`.
pub const RULE_DEFAULT_DENY: u32 = 0;
/// Rules one policy may hold (ingress and egress together).
pub const MAX_RULES_PER_POLICY: usize = 1 << 16;

/// Actions, ordered by strength: deny wins over audit, audit over allow.
pub const ACTION_ALLOW: u8 = 1;
/// Counts what it would drop and lets it through.
pub const ACTION_AUDIT: u8 = 2;
pub const ACTION_DENY: u8 = 3;

pub const PROTO_ICMP: u8 = 1;

/// Bits of a [`PolicyMatch`] that are always exact: endpoint, direction,
/// identity. Then 8 of protocol and 16 of port (ICMP: type then code).
pub const EXACT_BITS: u32 = 72;
pub const PROTO_BITS: u32 = EXACT_BITS + 8;
pub const FULL_BITS: u32 = PROTO_BITS + 16;

/// The data of a `NETD_POLICY` key, in the order the trie compares it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Pod, Zeroable)]
pub struct PolicyMatch {
    /// The local endpoint the policy is for.
    pub endpoint: [u8; 4],
    pub direction: u8,
    /// The peer's identity, big-endian.
    pub identity: [u8; 4],
    pub proto: u8,
    /// Destination port, or ICMP type and code; big-endian.
    pub port: [u8; 2],
}

/// A `NETD_POLICY` key: an LPM trie key, prefix length first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Pod, Zeroable)]
pub struct PolicyKey {
    pub prefixlen: u32,
    pub data: PolicyMatch,
}

/// A `NETD_POLICY` value: what to do and which rule said so.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PolicyVerdict {
    pub rule: u32,
    pub action: u8,
    pub _pad: [u8; 3],
}

/// A `NETD_IPCACHE` key: a prefix of the peer's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Pod, Zeroable)]
pub struct IpcacheKey {
    pub prefixlen: u32,
    pub ip: [u8; 4],
}

/// A `NETD_POLICY_CT` value: a flow policy let through, keyed by its
/// tuple as first seen; the other way is its reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PolicyCtEntry {
    pub last_seen: u64,
    pub created: u64,
    /// `service::CT_SEEN_*` bits.
    pub flags: u16,
    pub _pad: [u8; 6],
}

/// A `NETD_RULE_HITS` value (per CPU): packets and bytes a rule let
/// through, dropped, or would have dropped (audit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RuleHits {
    pub allowed_packets: u64,
    pub allowed_bytes: u64,
    pub denied_packets: u64,
    pub denied_bytes: u64,
    pub audited_packets: u64,
    pub audited_bytes: u64,
}

impl RuleHits {
    /// One packet of `bytes` with `action`.
    #[inline(always)]
    pub fn count(&mut self, action: u8, bytes: u64) {
        let (p, b) = match action {
            ACTION_DENY => (&mut self.denied_packets, &mut self.denied_bytes),
            ACTION_AUDIT => (&mut self.audited_packets, &mut self.audited_bytes),
            _ => (&mut self.allowed_packets, &mut self.allowed_bytes),
        };
        *p = p.wrapping_add(1);
        *b = b.wrapping_add(bytes);
    }

    /// Adds `other` into `self`: the user side sums the per-CPU values.
    pub fn add(&mut self, o: &RuleHits) {
        self.allowed_packets = self.allowed_packets.wrapping_add(o.allowed_packets);
        self.allowed_bytes = self.allowed_bytes.wrapping_add(o.allowed_bytes);
        self.denied_packets = self.denied_packets.wrapping_add(o.denied_packets);
        self.denied_bytes = self.denied_bytes.wrapping_add(o.denied_bytes);
        self.audited_packets = self.audited_packets.wrapping_add(o.audited_packets);
        self.audited_bytes = self.audited_bytes.wrapping_add(o.audited_bytes);
    }
}

/// The rule id of rule `position` of the policy with store index `policy`.
pub const fn rule_id(policy: u32, position: u32) -> u32 {
    (policy << 16) | (position & 0xffff)
}

/// The policy index and position of a rule id.
pub const fn rule_of(id: u32) -> (u32, u32) {
    (id >> 16, id & 0xffff)
}

/// The key a packet is looked up with: every bit given.
#[inline(always)]
pub fn lookup_key(
    endpoint: [u8; 4],
    direction: u8,
    identity: u32,
    proto: u8,
    port: u16,
) -> PolicyKey {
    PolicyKey {
        prefixlen: FULL_BITS,
        data: PolicyMatch {
            endpoint,
            direction,
            identity: identity.to_be_bytes(),
            proto,
            port: port.to_be_bytes(),
        },
    }
}

/// The stronger of two verdicts (deny, then audit, then allow); `a` on a tie.
#[inline(always)]
pub fn stronger(a: Option<PolicyVerdict>, b: Option<PolicyVerdict>) -> Option<PolicyVerdict> {
    match (a, b) {
        (Some(a), Some(b)) if b.action > a.action => Some(b),
        (Some(a), _) => Some(a),
        (None, b) => b,
    }
}

/// The (port, prefix bits) blocks that cover `lo..=hi` exactly: at most
/// 30 for any range, one for a single port, one with 0 bits for all.
pub fn port_blocks(lo: u16, hi: u16, mut out: impl FnMut(u16, u8)) {
    if lo > hi {
        return;
    }
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // The largest aligned block starting at `lo` that stays in range.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out(lo as u16, 16 - size.trailing_zeros() as u8);
        lo += size;
    }
}

/// The ICMP "port" of a type and optional code, with its prefix bits.
pub fn icmp_block(kind: u8, code: Option<u8>) -> (u16, u8) {
    match code {
        Some(code) => (u16::from_be_bytes([kind, code]), 16),
        None => (u16::from_be_bytes([kind, 0]), 8),
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), Pod (checked by bytemuck), no padding.
    unsafe impl aya::Pod for super::PolicyMatch {}
    unsafe impl aya::Pod for super::PolicyKey {}
    unsafe impl aya::Pod for super::PolicyVerdict {}
    unsafe impl aya::Pod for super::IpcacheKey {}
    unsafe impl aya::Pod for super::PolicyCtEntry {}
    unsafe impl aya::Pod for super::RuleHits {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<PolicyMatch>(), 12);
        assert_eq!(size_of::<PolicyKey>(), 16);
        assert_eq!(size_of::<PolicyVerdict>(), 8);
        assert_eq!(size_of::<IpcacheKey>(), 8);
        assert_eq!(size_of::<PolicyCtEntry>(), 24);
        assert_eq!(size_of::<RuleHits>(), 48);
        assert_eq!(FULL_BITS as usize, size_of::<PolicyMatch>() * 8);
    }

    fn blocks(lo: u16, hi: u16) -> Vec<(u16, u8)> {
        let mut v = Vec::new();
        port_blocks(lo, hi, |p, b| v.push((p, b)));
        v
    }

    /// Every port the blocks cover, each once.
    fn covered(blocks: &[(u16, u8)]) -> Vec<u32> {
        let mut ports: Vec<u32> = blocks
            .iter()
            .flat_map(|&(p, bits)| {
                let size = 1u32 << (16 - bits);
                assert_eq!(u32::from(p) % size, 0, "{p}/{bits} is not aligned");
                u32::from(p)..u32::from(p) + size
            })
            .collect();
        ports.sort_unstable();
        ports
    }

    #[test]
    fn port_ranges_become_exact_aligned_blocks() {
        assert_eq!(blocks(8080, 8080), vec![(8080, 16)]);
        assert_eq!(blocks(0, 65535), vec![(0, 0)]);
        assert_eq!(blocks(1024, 2047), vec![(1024, 6)]);
        for (lo, hi) in [
            (1, 65535),
            (1, 65534),
            (8000, 8100),
            (5, 6),
            (0, 0),
            (65535, 65535),
        ] {
            let b = blocks(lo, hi);
            assert!(b.len() <= 30, "{lo}-{hi}: {} blocks", b.len());
            assert_eq!(
                covered(&b),
                (u32::from(lo)..=u32::from(hi)).collect::<Vec<_>>()
            );
        }
        assert!(blocks(10, 9).is_empty());
    }

    #[test]
    fn the_worst_range_takes_thirty_blocks() {
        assert_eq!(blocks(1, 65534).len(), 30);
    }

    #[test]
    fn deny_beats_audit_beats_allow_whatever_the_order() {
        let v = |rule, action| {
            Some(PolicyVerdict {
                rule,
                action,
                _pad: [0; 3],
            })
        };
        assert_eq!(
            stronger(v(1, ACTION_ALLOW), v(2, ACTION_DENY)),
            v(2, ACTION_DENY)
        );
        assert_eq!(
            stronger(v(2, ACTION_DENY), v(1, ACTION_ALLOW)),
            v(2, ACTION_DENY)
        );
        assert_eq!(
            stronger(v(1, ACTION_ALLOW), v(3, ACTION_AUDIT)),
            v(3, ACTION_AUDIT)
        );
        assert_eq!(
            stronger(v(1, ACTION_ALLOW), v(2, ACTION_ALLOW)),
            v(1, ACTION_ALLOW)
        );
        assert_eq!(stronger(None, v(2, ACTION_ALLOW)), v(2, ACTION_ALLOW));
        assert_eq!(stronger(None, None), None);
    }

    #[test]
    fn rule_ids_round_trip() {
        assert_eq!(rule_of(rule_id(7, 9999)), (7, 9999));
        assert_ne!(rule_id(1, 0), RULE_DEFAULT_DENY);
    }

    #[test]
    fn icmp_blocks_put_the_type_first() {
        assert_eq!(icmp_block(8, None), (0x0800, 8));
        assert_eq!(icmp_block(3, Some(4)), (0x0304, 16));
    }
}
