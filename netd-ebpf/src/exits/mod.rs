//! How a program ends: each verdict counted by hook and by verdict or
//! drop reason, a drop noted for the monitor and for the sender's
//! counters, and the plan the stages made carried out through the writer.
//! One module per hook.

pub mod tc;
pub mod tc_uplink;
pub mod xdp;
