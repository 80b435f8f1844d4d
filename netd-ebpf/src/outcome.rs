//! What the pipeline decided for a packet. Decision stages only look; the
//! entry points alone rewrite the packet and turn this into an action.
//!
//! `Outcome<A>` is generic over the actions of one hook, so a stage can only
//! produce what the hook that runs it can carry out: the endpoint program
//! has [`EndpointAction`], the uplink program [`UplinkAction`].

use netd_common::counters::DropReason;

#[derive(Clone, Copy)]
pub enum Outcome<A> {
    /// Not netd's business, or nothing to change: hand it on untouched.
    Pass,
    Drop(DropReason),
    Act(A),
}

/// Into the endpoint behind host veth `ifindex` (its peer), addressed to
/// `mac`: what the local-delivery stage hands every path that ends here.
#[derive(Clone, Copy)]
pub struct Delivery {
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// What the TC program on an endpoint's host veth can do.
#[derive(Clone, Copy)]
pub enum EndpointAction {
    Deliver(Delivery),
    /// Answer an ARP request: `ip` is at `mac`.
    ArpReply {
        ip: [u8; 4],
        mac: [u8; 6],
    },
    /// Wrap in VXLAN to another host and send it out of the uplink.
    Encap(crate::overlay::Encap),
}

/// What the XDP program on an uplink can do.
#[derive(Clone, Copy)]
pub enum UplinkAction {
    /// Strip `strip` bytes of outer headers and deliver.
    Decap { strip: u32, into: Delivery },
}
