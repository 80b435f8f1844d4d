//! The fields of a packet a translation touches, as parsed.

use netd_common::{
    icmp,
    parse::{Headers, L3, L4},
    policy::PROTO_ICMP,
};

/// The fields of an IPv4 TCP/UDP packet a translation touches, as they
/// were before it, and where they are. Every byte defined (see
/// `netd_common::nat::Nat` for why).
#[derive(Clone, Copy, Default)]
pub struct Target {
    pub l3: u16,
    pub l4: u16,
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub src_port: [u8; 2],
    /// ICMP: its type and code.
    pub dst_port: [u8; 2],
    /// TCP or UDP: the ports are real and can be translated.
    pub ports: bool,
    /// An ICMP echo request or reply: `src_port` holds its identifier,
    /// which masquerading translates like a port.
    pub echo: bool,
}

impl Target {
    /// An IPv4 packet's; ports are 0 for other transports.
    #[inline(always)]
    pub fn of(h: &Headers) -> Self {
        let L3::Ipv4(ip) = h.l3 else {
            return Target::default();
        };
        let (src_port, dst_port, ports) = match h.l4 {
            L4::Tcp {
                src_port, dst_port, ..
            }
            | L4::Udp { src_port, dst_port } => (src_port, dst_port, true),
            // Never translated (`ports` is false): what policy matches on.
            L4::Icmp { kind, code } => ([0; 2], [kind, code], false),
            _ => ([0; 2], [0; 2], false),
        };
        Target {
            l3: h.l3_offset,
            l4: h.l4_offset,
            proto: ip.protocol,
            src: ip.src,
            dst: ip.dst,
            src_port,
            dst_port,
            ports,
            echo: false,
        }
    }

    /// The same for an ICMP echo whose identifier is `id` (read from the
    /// packet, at `l4 + 4`): masquerading translates it like a port.
    #[inline(always)]
    pub fn echo(self, id: [u8; 2]) -> Self {
        Target {
            src_port: id,
            echo: true,
            ..self
        }
    }

    /// The flow's hash (`netd_common::flow::headers_hash`'s).
    #[inline(always)]
    pub fn flow_hash(&self) -> u32 {
        netd_common::flow::flow_hash(self.src, self.dst, self.proto, self.src_port, self.dst_port)
    }

    /// ICMP errors belong to a flow (their quote's): policy does not judge them.
    #[inline(always)]
    pub fn is_icmp_error(&self) -> bool {
        self.proto == PROTO_ICMP && icmp::is_error(self.dst_port[0])
    }
}
