//! What the datapath tells netd about the packets it handles: counters
//! per hook and verdict or drop reason, each local endpoint's counters,
//! and events for `netd monitor`. The exits call these; stages only note
//! events (`events::note_*`).

pub mod counters;
pub mod endpoint_stats;
pub mod events;
