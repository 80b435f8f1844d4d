//! netd across hosts: each host a network namespace on an underlay the
//! test makes, one netd each on one etcd the test starts: the cluster
//! store, VXLAN overlays (with kernel VXLAN too), services, policy and
//! the routing mesh across hosts, and Docker on two hosts. Needs root.

mod cluster_store;
mod docker_hosts;
mod etcd_store;
mod mesh_three_hosts;
mod overlay_hosts;
mod overlay_kernel_vxlan;
mod overlay_three_hosts;
mod policy_three_hosts;
mod services_three_hosts;
