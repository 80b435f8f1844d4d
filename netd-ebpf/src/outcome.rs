//! What the pipeline decided for a packet. Decision stages only look; the
//! entry points alone rewrite the packet and turn this into an action.

use netd_common::counters::DropReason;

#[derive(Clone, Copy)]
pub enum Outcome {
    /// Not netd's business, or nothing to change: hand it on untouched.
    Pass,
    Drop(DropReason),
    /// Deliver into the endpoint behind host veth `ifindex` (its peer),
    /// addressed to `mac`.
    Deliver {
        ifindex: u32,
        mac: [u8; 6],
    },
    /// Answer an ARP request: `ip` is at `mac`.
    ArpReply {
        ip: [u8; 4],
        mac: [u8; 6],
    },
    /// Wrap in VXLAN to another host and send it out of the uplink.
    Encap(crate::overlay::Encap),
    /// Strip `strip` bytes of outer headers and deliver into the endpoint
    /// behind host veth `ifindex`.
    Decap {
        strip: u32,
        ifindex: u32,
    },
}
