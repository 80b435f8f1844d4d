//! One event as a monitor shows it: named (endpoint, network), with the
//! packet's addresses and ports read from its first bytes, and the bytes
//! themselves for `--pcap`.

use std::{
    net::Ipv4Addr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use netd_common::{
    counters::{DropReason, Hook},
    events::{Event, EventKind},
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

fn reason_name(reason: u8) -> String {
    DropReason::ALL
        .into_iter()
        .find(|r| *r as u8 == reason)
        .map_or_else(|| format!("reason-{reason}"), |r| r.name().to_string())
}

/// The interface's name, in this process's network namespace.
fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into `buf`.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
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

impl Record {
    pub fn of(event: &Event, directory: &Directory, clock: &Clock) -> Self {
        let h = &event.header;
        let captured = (h.captured as usize).min(event.packet.len());
        let bytes = &event.packet[..captured];
        let parsed = addresses(bytes);
        let named = ifname(h.ifindex).and_then(|n| directory.by_host_ifname.get(&n).cloned());
        let kind = EventKind::from_u8(h.kind);
        Record {
            time_ns: clock.wall(h.ts_ns),
            kind: kind.map_or_else(|| format!("kind-{}", h.kind), |k| k.name().to_string()),
            hook: hook_name(h.hook),
            reason: (kind == Some(EventKind::Drop)).then(|| reason_name(h.reason)),
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
        format!(
            "{h:02}:{m:02}:{s:02}.{micros:06} {what} at {at}{flow} len {}",
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
        same(&self.kind, Some(&r.kind))
            && same(&self.reason, r.reason.as_ref())
            && same(&self.endpoint, r.endpoint.as_ref())
            && same(&self.network, r.network.as_ref())
            && self
                .address
                .is_none_or(|a| r.src == Some(a) || r.dst == Some(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netd_common::events::EventHeader;

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
}
