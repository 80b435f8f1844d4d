//! One event as a monitor shows it: named (endpoint, network), with the
//! packet's addresses and ports read from its first bytes, and the bytes
//! themselves for `--pcap`.

use std::{
    net::Ipv4Addr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use netd_common::{
    counters::{DropReason, Hook},
    events::{Event, EventHeader, EventKind},
};
use serde::{Deserialize, Serialize};

use super::Directory;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Wall-clock time, nanoseconds since the epoch.
    pub time_ns: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub hook: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A policy verdict's: `allowed` or `denied` (a denial is a drop too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The policy rule that judged: `POLICY ingress|egress rule N`, or
    /// `default deny` when no rule allowed the flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The service a new flow was translated for (or had no backend in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The backend a translation chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Ipv4Addr>,
    pub ifindex: u32,
    /// The endpoint whose host veth the packet came in on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// The packet's whole length.
    pub len: u32,
    /// Its first bytes, as hex.
    pub packet: String,
}

/// Monotonic (the datapath's clock) to wall-clock time.
pub struct Clock {
    wall_minus_mono_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: fills `ts`, which this function owns.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let mono = i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos() as i128;
        Self {
            wall_minus_mono_ns: wall - mono,
        }
    }

    fn wall(&self, mono_ns: u64) -> u64 {
        (i128::from(mono_ns) + self.wall_minus_mono_ns).max(0) as u64
    }
}

fn hook_name(hook: u8) -> String {
    Hook::ALL
        .into_iter()
        .find(|h| *h as u8 == hook)
        .map_or_else(|| format!("hook-{hook}"), |h| h.name().to_string())
}

/// A frame's IPv4 flow, as far as its first bytes show it.
#[derive(Clone, Copy)]
struct Flow {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ports: Option<(u16, u16)>,
}

/// IPv4 addresses, protocol and ports of an Ethernet frame (VLAN tags
/// skipped), as far as its first bytes go.
fn addresses(frame: &[u8]) -> Option<Flow> {
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        at += 4;
        ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    }
    if ethertype != 0x0800 {
        return None;
    }
    let ip = frame.get(at + 2..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    let proto = *ip.get(9)?;
    let src = Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(12..16)?).ok()?);
    let dst = Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(16..20)?).ok()?);
    let ports = match (proto, ip.get(ihl..ihl + 4)) {
        (6 | 17, Some(p)) if ihl >= 20 => Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        )),
        _ => None,
    };
    Some(Flow {
        src,
        dst,
        proto,
        ports,
    })
}

fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        other => other.to_string(),
    }
}

/// What an event says beyond its packet, in the monitor's terms. A policy
/// denial and a service without backends are drops, whichever kinds the
/// datapath was asked for: they are noted as a verdict or a translation,
/// and become drops in the datapath only while drops are wanted too.
#[derive(Default)]
struct Meaning {
    kind: String,
    reason: Option<String>,
    verdict: Option<&'static str>,
    rule: Option<String>,
    service: Option<String>,
    backend: Option<Ipv4Addr>,
}

fn meaning(h: &EventHeader, directory: &Directory) -> Meaning {
    let drop = |reason: DropReason| Meaning {
        kind: EventKind::Drop.name().into(),
        reason: Some(reason.name().into()),
        ..Meaning::default()
    };
    let denied = || Meaning {
        verdict: Some("denied"),
        rule: Some(directory.rule_name(h.object)),
        ..drop(DropReason::PolicyDenied)
    };
    let no_backend = || Meaning {
        service: Some(directory.service_name(h.object)),
        ..drop(DropReason::NoBackend)
    };
    match EventKind::from_u8(h.kind) {
        Some(EventKind::Drop) => match DropReason::ALL.into_iter().find(|r| *r as u8 == h.reason) {
            Some(DropReason::PolicyDenied) => denied(),
            Some(DropReason::NoBackend) => no_backend(),
            Some(reason) => drop(reason),
            None => Meaning {
                kind: EventKind::Drop.name().into(),
                reason: Some(format!("reason-{}", h.reason)),
                ..Meaning::default()
            },
        },
        Some(EventKind::Policy) if h.allowed == 0 => denied(),
        Some(EventKind::Policy) => Meaning {
            kind: EventKind::Policy.name().into(),
            verdict: Some("allowed"),
            rule: Some(directory.rule_name(h.object)),
            ..Meaning::default()
        },
        Some(EventKind::Translation) if h.backend == [0; 4] => no_backend(),
        Some(EventKind::Translation) => Meaning {
            kind: EventKind::Translation.name().into(),
            service: Some(directory.service_name(h.object)),
            backend: Some(Ipv4Addr::from(h.backend)),
            ..Meaning::default()
        },
        None => Meaning {
            kind: format!("kind-{}", h.kind),
            ..Meaning::default()
        },
    }
}

impl Record {
    pub fn of(event: &Event, directory: &Directory, clock: &Clock) -> Self {
        let h = &event.header;
        let captured = (h.captured as usize).min(event.packet.len());
        let bytes = &event.packet[..captured];
        let parsed = addresses(bytes);
        let named = directory.by_ifindex.get(&h.ifindex).cloned();
        let m = meaning(h, directory);
        Record {
            time_ns: clock.wall(h.ts_ns),
            kind: m.kind,
            hook: hook_name(h.hook),
            reason: m.reason,
            verdict: m.verdict.map(str::to_string),
            rule: m.rule,
            service: m.service,
            backend: m.backend,
            ifindex: h.ifindex,
            endpoint: named.as_ref().map(|(e, _)| e.clone()),
            network: named.map(|(_, n)| n),
            src: parsed.map(|f| f.src),
            dst: parsed.map(|f| f.dst),
            proto: parsed.map(|f| proto_name(f.proto)),
            sport: parsed.and_then(|f| f.ports).map(|p| p.0),
            dport: parsed.and_then(|f| f.ports).map(|p| p.1),
            len: h.len,
            packet: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// The captured bytes.
    pub fn bytes(&self) -> Vec<u8> {
        (0..self.packet.len() / 2)
            .filter_map(|i| u8::from_str_radix(&self.packet[2 * i..2 * i + 2], 16).ok())
            .collect()
    }

    /// One line for people.
    pub fn line(&self) -> String {
        let secs = self.time_ns / 1_000_000_000;
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let micros = (self.time_ns / 1_000) % 1_000_000;
        let what = match &self.reason {
            Some(reason) => format!("{} {reason}", self.kind),
            None => self.kind.clone(),
        };
        let at = match (&self.endpoint, &self.network) {
            (Some(e), Some(n)) => format!("{} endpoint {e} ({n})", self.hook),
            _ => format!("{} if {}", self.hook, self.ifindex),
        };
        let flow = match (self.src, self.dst) {
            (Some(src), Some(dst)) => {
                let port = |p: Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_default();
                format!(
                    " {} {src}{} -> {dst}{}",
                    self.proto.as_deref().unwrap_or("ip"),
                    port(self.sport),
                    port(self.dport)
                )
            }
            _ => String::new(),
        };
        let mut why = String::new();
        if let Some(v) = self.verdict.as_deref().filter(|_| self.kind != "drop") {
            why += &format!(" {v}");
        }
        if let Some(rule) = &self.rule {
            why += &format!(" by {rule}");
        }
        match (&self.service, self.backend) {
            (Some(service), Some(backend)) => why += &format!(" service {service} to {backend}"),
            (Some(service), None) => why += &format!(" service {service}"),
            _ => {}
        }
        format!(
            "{h:02}:{m:02}:{s:02}.{micros:06} {what} at {at}{flow} len {}{why}",
            self.len
        )
    }
}

/// What a monitor asks to see; every field given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The service of a translation, or of a drop for want of a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The packet's source or destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
}

impl Filter {
    /// A filter that names no type or reason netd has is refused, not left
    /// to match nothing forever.
    pub fn check(&self) -> Result<(), String> {
        if let Some(kind) = &self.kind {
            if !EventKind::ALL.iter().any(|k| k.name() == kind) {
                let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
                return Err(format!("type {kind:?}: the types are {}", all.join(", ")));
            }
        }
        if let Some(reason) = &self.reason {
            if !DropReason::ALL.iter().any(|r| r.name() == reason) {
                let all: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
                return Err(format!(
                    "reason {reason:?}: the reasons are {}",
                    all.join(", ")
                ));
            }
        }
        Ok(())
    }

    pub fn matches(&self, r: &Record) -> bool {
        let same = |want: &Option<String>, got: Option<&String>| {
            want.as_ref().is_none_or(|w| got == Some(w))
        };
        self.kind.as_ref().is_none_or(|k| is_of_type(r, k))
            && same(&self.reason, r.reason.as_ref())
            && same(&self.service, r.service.as_ref())
            && same(&self.endpoint, r.endpoint.as_ref())
            && same(&self.network, r.network.as_ref())
            && self
                .address
                .is_none_or(|a| r.src == Some(a) || r.dst == Some(a))
    }
}

/// Whether `r` is an event of `kind`: a policy verdict is an allowed
/// flow or a policy drop; a translation, a new flow's or a drop for want
/// of a backend.
fn is_of_type(r: &Record, kind: &str) -> bool {
    let dropped_for = |reason: DropReason| r.reason.as_deref() == Some(reason.name());
    r.kind == kind
        || (kind == EventKind::Policy.name() && dropped_for(DropReason::PolicyDenied))
        || (kind == EventKind::Translation.name() && dropped_for(DropReason::NoBackend))
}

impl Filter {
    /// The kinds the datapath must emit for this filter.
    pub fn kinds(&self) -> u32 {
        EventKind::ALL
            .iter()
            .filter(|k| self.kind.as_deref().is_none_or(|want| want == k.name()))
            .fold(0, |bits, k| bits | k.bit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netd_common::policy::rule_id;

    fn drop_of(frame: &[u8]) -> Event {
        let mut packet = [0u8; netd_common::events::CAPTURE_BYTES];
        let n = frame.len().min(packet.len());
        packet[..n].copy_from_slice(&frame[..n]);
        Event {
            header: EventHeader {
                ts_ns: 5_000_000_000,
                kind: EventKind::Drop as u8,
                hook: Hook::TcEndpoint as u8,
                reason: DropReason::Isolation as u8,
                ifindex: 0,
                len: frame.len() as u32,
                captured: n as u32,
                ..Default::default()
            },
            packet,
        }
    }

    #[test]
    fn a_drop_reads_as_its_reason_flow_and_bytes_and_filters_match_it() {
        let mut frame = vec![0u8; 12];
        frame.extend([0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
        ip.extend([10, 1, 0, 2, 10, 2, 0, 3]);
        ip.extend([0x30, 0x39, 0x00, 0x50]);
        frame.extend(&ip);
        let r = Record::of(&drop_of(&frame), &Directory::default(), &Clock::now());
        assert_eq!((r.kind.as_str(), r.hook.as_str()), ("drop", "tc_endpoint"));
        assert_eq!(r.reason.as_deref(), Some("isolation"));
        assert_eq!(
            (r.src, r.dst),
            (Some([10, 1, 0, 2].into()), Some([10, 2, 0, 3].into()))
        );
        assert_eq!(
            (r.proto.as_deref(), r.sport, r.dport),
            (Some("tcp"), Some(12345), Some(80))
        );
        assert_eq!(r.bytes(), frame);
        assert!(
            r.line().contains("drop isolation at tc_endpoint"),
            "{}",
            r.line()
        );
        let only = |f: Filter| f.matches(&r);
        assert!(only(Filter::default()));
        assert!(only(Filter {
            reason: Some("isolation".into()),
            ..Default::default()
        }));
        assert!(!only(Filter {
            reason: Some("spoofed".into()),
            ..Default::default()
        }));
        assert!(only(Filter {
            address: Some([10, 2, 0, 3].into()),
            ..Default::default()
        }));
        assert!(!only(Filter {
            endpoint: Some("a".into()),
            ..Default::default()
        }));
    }

    fn event(kind: EventKind, reason: u8, allowed: u8, object: u32, backend: [u8; 4]) -> Event {
        let mut e = drop_of(&[]);
        e.header.kind = kind as u8;
        e.header.reason = reason;
        e.header.allowed = allowed;
        e.header.object = object;
        e.header.backend = backend;
        e
    }

    #[test]
    fn verdicts_and_translations_read_with_their_names_and_denials_are_drops_either_way() {
        let directory = Directory {
            services: [(3, "web".to_string())].into(),
            policies: [(
                2,
                (
                    "api".to_string(),
                    crate::model::RuleCounts {
                        ingress: 1,
                        egress: 1,
                    },
                ),
            )]
            .into(),
            ..Default::default()
        };
        let of = |e: Event| Record::of(&e, &directory, &Clock::now());
        let type_is = |r: &Record, kind: &str| {
            Filter {
                kind: Some(kind.into()),
                ..Default::default()
            }
            .matches(r)
        };

        let allowed = of(event(EventKind::Policy, 0, 1, rule_id(2, 0), [0; 4]));
        assert_eq!(allowed.kind, "policy");
        assert_eq!(allowed.verdict.as_deref(), Some("allowed"));
        assert_eq!(allowed.rule.as_deref(), Some("api ingress rule 1"));
        assert!(type_is(&allowed, "policy") && !type_is(&allowed, "drop"));
        assert!(
            allowed.line().contains("policy at tc_endpoint"),
            "{}",
            allowed.line()
        );
        assert!(
            allowed.line().ends_with("allowed by api ingress rule 1"),
            "{}",
            allowed.line()
        );

        // A denial noted as a verdict (no monitor wanted drops) and one
        // the datapath made a drop read the same.
        let denied = DropReason::PolicyDenied as u8;
        for e in [
            event(EventKind::Policy, 0, 0, rule_id(2, 1), [0; 4]),
            event(EventKind::Drop, denied, 0, rule_id(2, 1), [0; 4]),
        ] {
            let r = of(e);
            assert_eq!(
                (r.kind.as_str(), r.reason.as_deref()),
                ("drop", Some("policy_denied"))
            );
            assert_eq!(r.rule.as_deref(), Some("api egress rule 1"));
            assert_eq!(r.verdict.as_deref(), Some("denied"));
            assert!(type_is(&r, "policy") && type_is(&r, "drop"));
            assert!(r.line().ends_with("by api egress rule 1"), "{}", r.line());
        }
        let by_default = of(event(EventKind::Drop, denied, 0, 0, [0; 4]));
        assert_eq!(by_default.rule.as_deref(), Some("default deny"));

        let translated = of(event(EventKind::Translation, 0, 0, 3, [10, 0, 0, 7]));
        assert_eq!(translated.kind, "translation");
        assert_eq!(translated.service.as_deref(), Some("web"));
        assert_eq!(translated.backend, Some([10, 0, 0, 7].into()));
        assert!(
            translated.line().ends_with("service web to 10.0.0.7"),
            "{}",
            translated.line()
        );
        let web = Filter {
            service: Some("web".into()),
            ..Default::default()
        };
        assert!(web.matches(&translated));

        let refused = of(event(EventKind::Translation, 0, 0, 3, [0; 4]));
        assert_eq!(
            (
                refused.kind.as_str(),
                refused.reason.as_deref(),
                refused.service.as_deref()
            ),
            ("drop", Some("no_backend"), Some("web"))
        );
        assert!(type_is(&refused, "translation") && web.matches(&refused));
        // An index netd does not know still says what it is.
        let unknown = of(event(EventKind::Translation, 0, 0, 9, [10, 0, 0, 7]));
        assert_eq!(unknown.service.as_deref(), Some("service-9"));

        // What each type asks the datapath for.
        let kinds = |kind: Option<&str>| {
            Filter {
                kind: kind.map(Into::into),
                ..Default::default()
            }
            .kinds()
        };
        assert_eq!(kinds(Some("policy")), EventKind::Policy.bit());
        assert_eq!(
            kinds(None),
            EventKind::Drop.bit() | EventKind::Policy.bit() | EventKind::Translation.bit()
        );
    }
}
