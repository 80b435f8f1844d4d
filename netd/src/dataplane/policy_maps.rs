//! Policies compiled into the policy maps: `NETD_IPCACHE` (an identity
//! for every endpoint of the cluster and every CIDR a rule names),
//! `NETD_POLICY` (per local endpoint and direction, verdicts by peer
//! identity, protocol and port prefix) and `NETD_POLICY_EPS` (which
//! directions of a local endpoint are default-deny).
//!
//! **Identities** are numbered on each host from the model, not allocated
//! in the store: they never leave the host (a remote packet's identity is
//! found from its source address, which anti-spoofing and the decap's
//! source check make trustworthy), and the same model gives the same
//! numbers, so a restart rewrites nothing. An endpoint's identity is its
//! label set, plus its network and the services it backs (so peers by
//! network or service select exactly those endpoints); the number is a
//! hash of that set, probed on in a stable order on a collision.
//!
//! **Deny wins** across prefixes: the trie returns only the longest
//! match, so each entry carries the strongest verdict of every entry
//! covering it (a deny of all ports beats an allow of one).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ipnet::Ipv4Net;
use netd_common::policy::{
    icmp_block, port_blocks, rule_id, stronger, IpcacheKey, PolicyKey, PolicyMatch, PolicyVerdict,
    EGRESS, ENFORCE_EGRESS, ENFORCE_INGRESS, EXACT_BITS, FULL_BITS, IDENTITY_ANY,
    IDENTITY_CIDR_BIT, IDENTITY_WORLD, INGRESS, PROTO_BITS,
};

use super::{maps::MapState, tables};
use crate::model::{Direction, Endpoint, Network, Peer, Policy, Proto, Rule, Service};

/// Label-set identities start here: below are the reserved ones.
const FIRST_LABEL_IDENTITY: u32 = 256;

/// Adds the policy maps' entries for the endpoints `local` says are on
/// this host. Nothing at all when no policy exists and no network is
/// default-deny: policy then costs the datapath one lookup a packet.
pub fn compile_policies(
    state: &mut MapState,
    networks: &[Network],
    endpoints: &[Endpoint],
    services: &[Service],
    policies: &[Policy],
    local: impl Fn(&Endpoint) -> bool,
) {
    let default_deny: BTreeSet<&str> = networks
        .iter()
        .filter(|n| n.default_deny)
        .map(|n| n.id.as_str())
        .collect();
    if policies.is_empty() && default_deny.is_empty() {
        return;
    }
    let ids = Identities::of(endpoints, services, policies);
    for (net, id) in &ids.cidrs {
        state.put(
            tables::NETD_IPCACHE,
            IpcacheKey {
                prefixlen: u32::from(net.prefix_len()),
                ip: net.network().octets(),
            },
            *id,
        );
    }
    for e in endpoints {
        if let Some(id) = ids.endpoints.get(&e.id) {
            state.put(
                tables::NETD_IPCACHE,
                IpcacheKey {
                    prefixlen: 32,
                    ip: e.ipv4.octets(),
                },
                *id,
            );
        }
    }
    for e in endpoints.iter().filter(|e| local(e)) {
        let mut flags = 0;
        if default_deny.contains(e.network.as_str()) {
            flags = ENFORCE_INGRESS | ENFORCE_EGRESS;
        }
        let mut entries = BTreeMap::new();
        for p in policies.iter().filter(|p| p.selects(&e.network, &e.labels)) {
            if p.ingress.is_some() {
                flags |= ENFORCE_INGRESS;
            }
            if p.egress.is_some() {
                flags |= ENFORCE_EGRESS;
            }
            for (position, direction, rule) in p.rules() {
                let verdict = PolicyVerdict {
                    rule: rule_id(p.index, position),
                    action: rule.action.code(),
                    _pad: [0; 3],
                };
                let direction = match direction {
                    Direction::Ingress => INGRESS,
                    Direction::Egress => EGRESS,
                };
                for identity in ids.peers_of(rule, endpoints, services) {
                    for (proto, port, bits) in blocks(rule) {
                        let key = PolicyKey {
                            prefixlen: bits,
                            data: PolicyMatch {
                                endpoint: e.ipv4.octets(),
                                direction,
                                identity: identity.to_be_bytes(),
                                proto,
                                port: port.to_be_bytes(),
                            },
                        };
                        let kept = stronger(entries.get(&key).copied(), Some(verdict));
                        entries.insert(key, kept.unwrap_or(verdict));
                    }
                }
            }
        }
        for (key, verdict) in deny_wins(&entries) {
            state.put(tables::NETD_POLICY, key, verdict);
        }
        if flags != 0 {
            state.put(tables::NETD_POLICY_EPS, e.ipv4.octets(), flags);
        }
    }
}

/// Each entry with the strongest verdict among itself and the entries
/// whose prefix covers it (the same endpoint, direction and identity).
fn deny_wins(entries: &BTreeMap<PolicyKey, PolicyVerdict>) -> BTreeMap<PolicyKey, PolicyVerdict> {
    entries
        .iter()
        .map(|(key, own)| {
            let mut best = *own;
            let covering = std::iter::once(EXACT_BITS).chain(PROTO_BITS..key.prefixlen);
            for bits in covering.filter(|b| *b < key.prefixlen) {
                let wider = PolicyKey {
                    prefixlen: bits,
                    data: masked(&key.data, bits),
                };
                if let Some(v) = entries.get(&wider) {
                    best = stronger(Some(best), Some(*v)).unwrap_or(best);
                }
            }
            (*key, best)
        })
        .collect()
}

/// `data` with every bit past the first `bits` cleared.
fn masked(data: &PolicyMatch, bits: u32) -> PolicyMatch {
    let mut bytes = bytemuck::bytes_of(data).to_vec();
    for (i, byte) in bytes.iter_mut().enumerate() {
        let start = i as u32 * 8;
        if start >= bits {
            *byte = 0;
        } else if start + 8 > bits {
            *byte &= 0xffu8 << (8 - (bits - start));
        }
    }
    bytemuck::pod_read_unaligned(&bytes)
}

/// A rule's (protocol, port or ICMP type/code, prefix length) blocks.
fn blocks(rule: &Rule) -> Vec<(u8, u16, u32)> {
    let Some(proto) = rule.proto.number() else {
        return vec![(0, 0, EXACT_BITS)];
    };
    if let (Proto::Icmp, Some((kind, code))) = (rule.proto, rule.icmp) {
        let (port, bits) = icmp_block(kind, code);
        return vec![(proto, port, PROTO_BITS + u32::from(bits))];
    }
    if rule.ports.is_empty() {
        return vec![(proto, 0, PROTO_BITS)];
    }
    let mut out = Vec::new();
    for &(lo, hi) in &rule.ports {
        port_blocks(lo, hi, |port, bits| {
            out.push((proto, port, PROTO_BITS + u32::from(bits)))
        });
    }
    debug_assert!(out.iter().all(|b| b.2 <= FULL_BITS));
    out
}

/// The identities of one model.
pub struct Identities {
    /// By endpoint id.
    pub endpoints: HashMap<String, u32>,
    /// Every CIDR a rule names (exceptions too), with its identity.
    pub cidrs: BTreeMap<Ipv4Net, u32>,
}

impl Identities {
    pub fn of(endpoints: &[Endpoint], services: &[Service], policies: &[Policy]) -> Self {
        let mut backs: HashMap<String, Vec<&str>> = HashMap::new();
        for s in services {
            for b in s.backends_in(endpoints) {
                backs.entry(b.endpoint).or_default().push(&s.id);
            }
        }
        let label_set = |e: &Endpoint| {
            let mut set: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            set.push(format!("netd:network={}", e.network));
            for s in backs.get(&e.name).into_iter().flatten() {
                set.push(format!("netd:service={s}"));
            }
            set.sort();
            set.join("\n")
        };
        let sets: BTreeMap<&str, String> = endpoints
            .iter()
            .map(|e| (e.id.as_str(), label_set(e)))
            .collect();
        let distinct: BTreeSet<&String> = sets.values().collect();
        let span = IDENTITY_CIDR_BIT - FIRST_LABEL_IDENTITY;
        let numbers = number(distinct, FIRST_LABEL_IDENTITY, span);
        let endpoints = sets
            .iter()
            .filter_map(|(id, set)| Some((id.to_string(), *numbers.get(set)?)))
            .collect();
        let mut nets = BTreeSet::new();
        for p in policies {
            for (_, _, rule) in p.rules() {
                for peer in &rule.peers {
                    if let Peer::Cidr { net, except } = peer {
                        nets.insert(*net);
                        nets.extend(except.iter().copied());
                    }
                }
            }
        }
        let texts: BTreeMap<Ipv4Net, String> = nets.iter().map(|n| (*n, n.to_string())).collect();
        let numbers = number(
            texts.values().collect(),
            IDENTITY_CIDR_BIT,
            IDENTITY_CIDR_BIT,
        );
        let cidrs = texts
            .iter()
            .filter_map(|(net, text)| Some((*net, *numbers.get(text)?)))
            .collect();
        Identities { endpoints, cidrs }
    }

    /// The identities a rule's peers select; [`IDENTITY_ANY`] for none.
    fn peers_of(&self, rule: &Rule, endpoints: &[Endpoint], services: &[Service]) -> BTreeSet<u32> {
        if rule.peers.is_empty() {
            return BTreeSet::from([IDENTITY_ANY]);
        }
        let mut out = BTreeSet::new();
        let of = |e: &Endpoint| self.endpoints.get(&e.id).copied();
        for peer in &rule.peers {
            match peer {
                Peer::Labels(sel) => out.extend(
                    endpoints
                        .iter()
                        .filter(|e| sel.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
                        .filter_map(of),
                ),
                Peer::Network(id) => {
                    out.extend(endpoints.iter().filter(|e| &e.network == id).filter_map(of))
                }
                Peer::Service(id) => {
                    for s in services.iter().filter(|s| &s.id == id) {
                        let names: BTreeSet<String> = s
                            .backends_in(endpoints)
                            .into_iter()
                            .map(|b| b.endpoint)
                            .collect();
                        out.extend(
                            endpoints
                                .iter()
                                .filter(|e| names.contains(&e.name))
                                .filter_map(of),
                        );
                    }
                }
                Peer::Cidr { net, except } => {
                    // Only prefixes starting inside `net` can be inside it:
                    // a range of the ordered map, not a scan of every CIDR
                    // (which made 10,000 CIDR rules cost 10^8 checks).
                    let first = Ipv4Net::new(net.network(), 0).unwrap_or(*net);
                    let last = Ipv4Net::new(net.broadcast(), 32).unwrap_or(*net);
                    for (inner, id) in self.cidrs.range(first..=last) {
                        if net.contains(inner) && !except.iter().any(|x| x.contains(inner)) {
                            out.insert(*id);
                        }
                    }
                    // Addresses no prefix covers resolve to "world".
                    if net.prefix_len() == 0 {
                        out.insert(IDENTITY_WORLD);
                    }
                }
            }
        }
        out
    }
}

/// Numbers each key in `offset..offset + span` by its hash, in the keys'
/// order, taking the next free number on a collision: the same keys get
/// the same numbers.
fn number(keys: BTreeSet<&String>, offset: u32, span: u32) -> HashMap<&String, u32> {
    let mut used = HashSet::new();
    let mut out = HashMap::new();
    for key in keys {
        if used.len() as u64 >= u64::from(span) {
            // Never at 16 million label sets; the rest resolve as "world".
            break;
        }
        let mut slot = (fnv(key) % u64::from(span)) as u32;
        while !used.insert(slot) {
            slot = (slot + 1) % span;
        }
        out.insert(key, offset + slot);
    }
    out
}

/// FNV-1a, 64 bits: stable across Rust versions and hosts, unlike std's hasher.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{parse_rule, testing, PolicySpec};

    fn world() -> (Vec<Network>, Vec<Endpoint>) {
        let networks = vec![testing::network("n1", "10.1.0.0/24", &[])];
        let mut endpoints = Vec::new();
        for (name, tier) in [("web", "web"), ("api", "api"), ("db", "db")] {
            let e = testing::endpoint(name, "n1", &[("tier", tier)], None, &networks, &endpoints);
            endpoints.push(e);
        }
        (networks, endpoints)
    }

    fn policy(networks: &[Network], index: u32, ingress: &[&str]) -> Policy {
        let spec = PolicySpec {
            name: format!("p{index}"),
            selector: Some("tier=api".into()),
            ingress: Some(
                ingress
                    .iter()
                    .map(|r| parse_rule(r).expect("rule"))
                    .collect(),
            ),
            ..Default::default()
        };
        Policy::from_spec(&spec, networks, &[], index).expect("policy")
    }

    fn compiled(networks: &[Network], endpoints: &[Endpoint], policies: &[Policy]) -> MapState {
        let mut state = MapState::default();
        compile_policies(&mut state, networks, endpoints, &[], policies, |_| true);
        state
    }

    /// What the datapath would decide, the way it looks the maps up.
    fn verdict(
        state: &MapState,
        ep: &Endpoint,
        peer: u32,
        proto: u8,
        port: u16,
    ) -> Option<PolicyVerdict> {
        let look = |identity: u32| {
            let full =
                netd_common::policy::lookup_key(ep.ipv4.octets(), INGRESS, identity, proto, port);
            (EXACT_BITS..=FULL_BITS).rev().find_map(|bits| {
                state.get(
                    tables::NETD_POLICY,
                    &PolicyKey {
                        prefixlen: bits,
                        data: masked(&full.data, bits),
                    },
                )
            })
        };
        stronger(look(peer), look(IDENTITY_ANY))
    }

    #[test]
    fn nothing_is_written_without_policies() {
        let (networks, endpoints) = world();
        assert!(compiled(&networks, &endpoints, &[]).is_empty());
    }

    #[test]
    fn a_deny_of_every_port_beats_an_allow_of_one_in_any_order() {
        let (networks, endpoints) = world();
        for rules in [
            ["allow from tier=web tcp/8080", "deny from tier=web tcp"],
            ["deny from tier=web tcp", "allow from tier=web tcp/8080"],
        ] {
            let p = policy(&networks, 1, &rules);
            let state = compiled(&networks, &endpoints, &[p]);
            let ids = Identities::of(&endpoints, &[], &[]);
            let web = ids.endpoints[&endpoints[0].id];
            let v = verdict(&state, &endpoints[1], web, 6, 8080).expect("a verdict");
            assert_eq!(v.action, netd_common::policy::ACTION_DENY, "{rules:?}");
            assert_eq!(
                state.get(tables::NETD_POLICY_EPS, &endpoints[1].ipv4.octets()),
                Some(ENFORCE_INGRESS)
            );
            assert_eq!(
                state.get(tables::NETD_POLICY_EPS, &endpoints[0].ipv4.octets()),
                None
            );
        }
    }

    #[test]
    fn only_the_selected_peer_and_port_are_allowed() {
        let (networks, endpoints) = world();
        let p = policy(&networks, 2, &["allow from tier=web tcp/8080-8081"]);
        let state = compiled(&networks, &endpoints, &[p]);
        let ids = Identities::of(&endpoints, &[], &[]);
        let (web, db) = (
            ids.endpoints[&endpoints[0].id],
            ids.endpoints[&endpoints[2].id],
        );
        let api = &endpoints[1];
        let allowed = verdict(&state, api, web, 6, 8081).expect("allowed");
        assert_eq!(
            (allowed.action, allowed.rule),
            (netd_common::policy::ACTION_ALLOW, rule_id(2, 0))
        );
        assert_eq!(verdict(&state, api, web, 6, 8082), None);
        assert_eq!(verdict(&state, api, web, 17, 8080), None);
        assert_eq!(verdict(&state, api, db, 6, 8080), None);
    }

    #[test]
    fn cidr_exceptions_and_the_world_resolve_to_their_own_identities() {
        let (networks, endpoints) = world();
        let p = policy(
            &networks,
            3,
            &["allow from cidr:0.0.0.0/0,except:192.0.2.0/24 tcp/80"],
        );
        let state = compiled(&networks, &endpoints, std::slice::from_ref(&p));
        let ids = Identities::of(&endpoints, &[], &[p]);
        let except: Ipv4Net = "192.0.2.0/24".parse().expect("net");
        let api = &endpoints[1];
        assert!(verdict(&state, api, IDENTITY_WORLD, 6, 80).is_some());
        assert_eq!(verdict(&state, api, ids.cidrs[&except], 6, 80), None);
        assert!(ids.cidrs.values().all(|id| id & IDENTITY_CIDR_BIT != 0));
    }

    #[test]
    fn a_cidr_rule_covers_the_prefixes_inside_it_and_none_beside_it() {
        let (networks, endpoints) = world();
        let p = policy(
            &networks,
            4,
            &[
                "allow from cidr:10.20.0.0/16 tcp/80",
                "deny from cidr:10.19.255.255/32 tcp/81",
                "deny from cidr:10.20.0.0/24 tcp/81",
                "deny from cidr:10.20.255.255/32 tcp/81",
                "deny from cidr:10.21.0.0/32 tcp/81",
            ],
        );
        let state = compiled(&networks, &endpoints, std::slice::from_ref(&p));
        let ids = Identities::of(&endpoints, &[], &[p]);
        let api = &endpoints[1];
        for (net, inside) in [
            ("10.19.255.255/32", false),
            ("10.20.0.0/16", true),
            ("10.20.0.0/24", true),
            ("10.20.255.255/32", true),
            ("10.21.0.0/32", false),
        ] {
            let id = ids.cidrs[&net.parse::<Ipv4Net>().expect("net")];
            assert_eq!(
                verdict(&state, api, id, 6, 80).is_some(),
                inside,
                "{net} inside 10.20.0.0/16"
            );
        }
    }

    #[test]
    fn identities_do_not_move_when_the_model_is_read_again() {
        let (_, endpoints) = world();
        let a = Identities::of(&endpoints, &[], &[]);
        let mut reversed = endpoints.clone();
        reversed.reverse();
        let b = Identities::of(&reversed, &[], &[]);
        assert_eq!(a.endpoints, b.endpoints);
        let distinct: BTreeSet<u32> = a.endpoints.values().copied().collect();
        assert_eq!(distinct.len(), 3, "three label sets, three identities");
    }

    #[test]
    fn colliding_keys_still_get_distinct_numbers() {
        let keys: Vec<String> = (0..9).map(|i| format!("k{i}")).collect();
        let numbers = number(keys.iter().collect(), 10, 8);
        assert_eq!(numbers.len(), 8, "a full span numbers no more");
        let distinct: BTreeSet<u32> = numbers.values().copied().collect();
        assert_eq!(distinct.len(), numbers.len());
        assert!(distinct.iter().all(|n| (10..18).contains(n)));
    }
}
