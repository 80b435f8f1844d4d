//! Plain types the layers hand each other, in leaf modules (Cilium's
//! `*_types.h`): no module here uses anything of the crate but its
//! siblings, so every layer can use them.

pub mod actions;
pub mod flows;
pub mod outcome;
pub mod target;

pub use actions::{
    ArpAnswer, Encap, EndpointAction, EndpointStep, Hop, MasqDecision, MeshAction, MeshStep,
    QuoteBack, QuoteNat, UplinkAction,
};
pub use flows::{
    flow_tuple, ClientPacket, Delivering, PolicyFlow, ServiceKind, ToService, CHECK_EGRESS,
    CHECK_INGRESS,
};
pub use outcome::{Delivery, Outcome, Plan, Step};
pub use target::Target;
