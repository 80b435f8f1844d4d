//! netd: the daemon and CLI. The library holds everything; `main.rs` only
//! parses the command line.

pub mod agent;
pub mod api;
pub mod client;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod dns;
pub mod endpoint_traffic;
pub mod host_ports;
pub mod ipam;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod netlink;
pub mod plugin;
pub mod run;
pub mod store;
pub mod system;
