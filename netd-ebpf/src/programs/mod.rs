//! The entry points, one file each, named after the program and where it
//! attaches. Each is thin: it parses, asks the stages in pipeline order,
//! and ends through its hook's exits, which carry out the plan and count.

pub mod baseline;
pub mod bench_traffic;
pub mod sock_lb;
pub mod tc_endpoint;
pub mod tc_icmp_error;
pub mod tc_masquerade;
pub mod tc_refuse;
pub mod tc_service;
pub mod tc_uplink;
pub mod tc_uplink_decap;
pub mod tc_uplink_deliver;
pub mod tc_uplink_masq_reply;
pub mod tc_uplink_mesh;
pub mod xdp_decap;
pub mod xdp_deliver;
pub mod xdp_masq_reply;
pub mod xdp_mesh;
pub mod xdp_uplink;
