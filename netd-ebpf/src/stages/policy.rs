//! Policy: may a packet between two endpoints (or an endpoint and an
//! address outside) pass? Egress is judged for a sender on this host,
//! ingress for a receiver on this host, on the packet as its endpoints
//! see it: after a service's DNAT, before a reply's reverse NAT.
//!
//! An endpoint no policy selects is open, and its flows cost one lookup.
//! Otherwise a flow policy let through is in `NETD_POLICY_CT`, which lets
//! the rest of it and its replies pass; a new one is judged by the
//! peer's identity (`NETD_IPCACHE`) and two lookups in `NETD_POLICY`
//! (that identity, and any peer).
//!
//! Writes its own state: `NETD_POLICY_CT` (the flows it admitted) and
//! `NETD_RULE_HITS` (each rule's counts). Notes its verdict as an event.

use aya_ebpf::{
    bindings::__sk_buff,
    maps::lpm_trie::Key,
    programs::{TcContext, XdpContext},
};
use netd_common::{
    parse::{ETH_HLEN, TCP_ACK, TCP_SYN},
    policy::{
        lookup_key, stronger, PolicyCtEntry, PolicyVerdict, RuleHits, ACTION_DENY, EGRESS,
        ENFORCE_EGRESS, ENFORCE_INGRESS, IDENTITY_ANY, IDENTITY_WORLD, INGRESS, RULE_DEFAULT_DENY,
    },
    service::{closing_flags, CT_SEEN_REPLY, PROTO_TCP},
};

use super::clock::now;
use crate::{
    frame::PacketFrame,
    maps::{NETD_IPCACHE, NETD_POLICY, NETD_POLICY_CT, NETD_POLICY_EPS, NETD_RULE_HITS},
    observe::events,
    types::{PolicyFlow, CHECK_EGRESS, CHECK_INGRESS},
};

/// Where a TCP header keeps its flags.
const TCP_FLAGS_AT: usize = 13;

/// Packets `admit` let through return this; a drop returns the rule.
pub const ADMITTED: u64 = u64::MAX;

/// Whether `flow` may pass: [`ADMITTED`], or the id of the rule that
/// drops it ([`RULE_DEFAULT_DENY`] when none allowed it). A BPF call
/// with its own frame, made by the entry points once their stages are
/// done, so it never adds to their deepest frame.
#[inline(never)]
pub fn admit(flow: &PolicyFlow, bytes: u64) -> u64 {
    let t = flow.tuple;
    // Either end's flags, any direction: a flow to or from an endpoint
    // with a policy is tracked, so its replies pass whichever way that
    // policy points.
    let src_flags = if flow.check & CHECK_EGRESS != 0 {
        enforced(&t.src)
    } else {
        0
    };
    let dst_flags = if flow.check & CHECK_INGRESS != 0 {
        enforced(&t.dst)
    } else {
        0
    };
    if src_flags == 0 && dst_flags == 0 {
        return ADMITTED;
    }
    let now = now();
    // A connection's opening SYN is always judged, so a rule removed holds
    // for a new connection even on the tuple of one that ended (or died
    // without a FIN) and is still tracked.
    let opening = t.proto == PROTO_TCP && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if !opening {
        let closing = closing_flags(flow.tcp_flags);
        if let Some(ct) = NETD_POLICY_CT.get_ptr_mut(&t) {
            // SAFETY: this flow's entry; a racing write only costs a time
            // or a flag the next packet sets again.
            let ct = unsafe { &mut *ct };
            ct.last_seen = now;
            ct.flags |= closing;
            return ADMITTED;
        }
        let reply = t.reply(t.dst, t.dst_port, t.src);
        if let Some(ct) = NETD_POLICY_CT.get_ptr_mut(&reply) {
            // SAFETY: as above.
            let ct = unsafe { &mut *ct };
            ct.last_seen = now;
            ct.flags |= CT_SEEN_REPLY | closing;
            return ADMITTED;
        }
    }
    let port = u16::from_be_bytes(flow.port);
    // The event names the last rule that judged: the receiver's, when
    // both ends are here.
    let mut rule = RULE_DEFAULT_DENY;
    if src_flags & ENFORCE_EGRESS != 0 {
        let v = judge(t.src, EGRESS, identity(&t.dst), t.proto, port);
        if count(&v, bytes) {
            events::note_policy(false, v.rule);
            return u64::from(v.rule);
        }
        rule = v.rule;
    }
    if dst_flags & ENFORCE_INGRESS != 0 {
        let v = judge(t.dst, INGRESS, identity(&t.src), t.proto, port);
        if count(&v, bytes) {
            events::note_policy(false, v.rule);
            return u64::from(v.rule);
        }
        rule = v.rule;
    }
    events::note_policy(true, rule);
    let entry = PolicyCtEntry {
        last_seen: now,
        created: now,
        flags: 0,
        _pad: [0; 6],
    };
    // A failed insert (LRU: allocation only) judges the next packet again.
    let _ = NETD_POLICY_CT.insert(&t, &entry, 0);
    ADMITTED
}

/// The flags of a TCP segment in a TC program's packet, its L4 header at
/// `l4`; 0 for anything else. A BPF call, so the entry points that read
/// it keep their frames.
#[inline(never)]
pub fn tc_tcp_flags(skb: *mut __sk_buff, proto: u8, l4: u16) -> u8 {
    if proto != PROTO_TCP {
        return 0;
    }
    // Direct packet access (the parser has made the headers linear): a
    // helper call cost a packet of an endpoint without policy 10 ns more.
    // Two bytes, as in `xdp_tcp_flags`.
    PacketFrame::tc(&TcContext::new(skb))
        .load::<2>(usize::from(l4) + TCP_FLAGS_AT - 1)
        .map_or(0, |[_, flags]| flags)
}

/// The flags of a TCP segment in a ready-to-deliver XDP frame (Ethernet,
/// IPv4 with any options, TCP); 0 for anything else.
#[inline(always)]
pub fn xdp_tcp_flags(ctx: &XdpContext, proto: u8) -> u8 {
    frame_tcp_flags(&PacketFrame::xdp(ctx), proto)
}

/// The same in any ready-to-deliver frame.
#[inline(always)]
pub fn frame_tcp_flags(frame: &PacketFrame, proto: u8) -> u8 {
    if proto != PROTO_TCP {
        return 0;
    }
    let Ok([version_ihl]) = frame.load::<1>(ETH_HLEN) else {
        return 0;
    };
    let l4 = ETH_HLEN + usize::from(version_ihl & 0x0f) * 4;
    // Two bytes, data offset and flags: a one-byte read's bounds check
    // compiles to a form the verifier cannot range a variable offset by.
    frame
        .load::<2>(l4 + TCP_FLAGS_AT - 1)
        .map_or(0, |[_, flags]| flags)
}

/// The endpoint's `ENFORCE_*` flags; 0 for one no policy selects.
#[inline(always)]
fn enforced(endpoint: &[u8; 4]) -> u32 {
    // SAFETY: the value is copied out at once.
    unsafe { NETD_POLICY_EPS.get(endpoint) }
        .copied()
        .unwrap_or(0)
}

/// The identity of a peer address: its longest prefix in the ipcache.
#[inline(always)]
fn identity(ip: &[u8; 4]) -> u32 {
    let key = Key::new(32, *ip);
    NETD_IPCACHE.get(&key).copied().unwrap_or(IDENTITY_WORLD)
}

/// The stronger of the rules for this peer and for any peer; the default
/// deny when neither has one.
#[inline(always)]
fn judge(endpoint: [u8; 4], direction: u8, peer: u32, proto: u8, port: u16) -> PolicyVerdict {
    let by_peer = lookup(&lookup_key(endpoint, direction, peer, proto, port));
    let by_any = lookup(&lookup_key(endpoint, direction, IDENTITY_ANY, proto, port));
    stronger(by_peer, by_any).unwrap_or(PolicyVerdict {
        rule: RULE_DEFAULT_DENY,
        action: ACTION_DENY,
        _pad: [0; 3],
    })
}

#[inline(always)]
fn lookup(key: &netd_common::policy::PolicyKey) -> Option<PolicyVerdict> {
    let key = Key::new(key.prefixlen, key.data);
    NETD_POLICY.get(&key).copied()
}

/// Counts the rule's hit; true when the packet is to be dropped. An audit
/// rule counts what it would drop and lets it through.
#[inline(always)]
fn count(v: &PolicyVerdict, bytes: u64) -> bool {
    if v.rule != RULE_DEFAULT_DENY {
        match NETD_RULE_HITS.get_ptr_mut(&v.rule) {
            // SAFETY: this CPU's copy of the counter.
            Some(hits) => unsafe { (*hits).count(v.action, bytes) },
            None => {
                let mut hits = RuleHits::default();
                hits.count(v.action, bytes);
                let _ = NETD_RULE_HITS.insert(&v.rule, &hits, 0);
            }
        }
    }
    v.action == ACTION_DENY
}
