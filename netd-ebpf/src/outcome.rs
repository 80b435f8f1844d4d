//! What the pipeline decided for a packet; only the entry points turn it
//! into an XDP or TC action.

use netd_common::counters::DropReason;

#[derive(Clone, Copy)]
pub enum Outcome {
    /// Not netd's business, or nothing to change: hand it on untouched.
    Pass,
    Drop(DropReason),
}
