//! What the pipeline decided for a packet. Decision stages only look; the
//! writer (`crate::rewrite`) alone changes the packet, and the exits turn
//! this into an action.
//!
//! A [`Plan`] is the translations to apply (at most a new source and a new
//! destination: DNAT, SNAT, reverse NAT; see `netd_common::nat`), then one
//! terminal [`Outcome`].
//!
//! `Outcome<A>` is generic over the actions of one hook, so a stage can only
//! produce what the hook that runs it can carry out: the endpoint program
//! has `EndpointAction`, the decap program `UplinkAction`, the mesh
//! program `MeshAction`.

use netd_common::{counters::DropReason, nat::Nat};

use super::target::Target;

/// Translations of the packet `at`, then a terminal outcome.
#[derive(Clone, Copy)]
pub struct Plan<A> {
    pub nat: Nat,
    pub at: Target,
    pub outcome: Outcome<A>,
}

impl<A: Copy + Default> From<Outcome<A>> for Plan<A> {
    #[inline(always)]
    fn from(outcome: Outcome<A>) -> Self {
        Plan {
            nat: Nat::NONE,
            at: Target::default(),
            outcome,
        }
    }
}

/// The terminal step of a plan.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not netd's business, or nothing to change: hand it on untouched.
    Pass,
    Drop,
    Act,
}

/// What to do with the packet in the end: pass, drop for `reason`, or the
/// hook's `action`.
///
/// Structs with every field always set, not enums with payloads: copying
/// an enum moves its inactive variants' undefined bytes, which LLVM may
/// carry in any register (a packet pointer, say), and the verifier refuses
/// arithmetic on those even when the result is never used.
#[derive(Clone, Copy)]
pub struct Outcome<A> {
    pub step: Step,
    pub reason: DropReason,
    pub action: A,
}

impl<A: Copy + Default> Outcome<A> {
    #[inline(always)]
    pub fn pass() -> Self {
        Outcome {
            step: Step::Pass,
            reason: DropReason::Malformed,
            action: A::default(),
        }
    }

    #[inline(always)]
    pub fn drop(reason: DropReason) -> Self {
        Outcome {
            step: Step::Drop,
            reason,
            action: A::default(),
        }
    }

    #[inline(always)]
    pub fn act(action: A) -> Self {
        Outcome {
            step: Step::Act,
            reason: DropReason::Malformed,
            action,
        }
    }
}

/// Into the endpoint behind host veth `ifindex` (its peer), addressed to
/// `mac`: what the local-delivery stage hands every path that ends here.
/// Also out of an uplink to a client of the routing mesh, the way its
/// request came (`mac` the next hop, `gateway_mac` this host's).
#[derive(Clone, Copy, Default)]
pub struct Delivery {
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// The host end's MAC: the source of a frame netd addresses itself.
    pub gateway_mac: [u8; 6],
}
