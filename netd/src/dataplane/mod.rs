//! Everything that touches BPF: the embedded object, its pins on bpffs,
//! loading, attaching, and reading the counters back.

pub mod conntrack;
pub mod counters;
pub mod egress;
pub mod egress_maps;
pub mod endpoint_attach;
pub mod endpoint_stats;
pub mod events;
pub mod host_local;
pub mod loader;
pub mod maps;
pub mod mesh_state;
pub mod nat_table;
pub mod object;
pub mod owner;
pub mod pins;
pub mod policy_maps;
pub mod policy_state;
pub mod reconcile;
pub mod service_maps;
pub mod service_traffic;
pub mod tables;
pub mod upgrade;
pub mod uplink;

pub use counters::{CounterSnapshot, CountersReader};
pub use loader::{Datapath, LoadError};
pub use pins::{PinLayout, PinLock};
