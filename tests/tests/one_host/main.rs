//! netd on one host, with real traffic between network namespaces each
//! test makes (and removes): endpoints, services, policy, DNS, the
//! monitor, counters, restarts and upgrades, and Docker. Needs root.

mod cnm_single_host;
mod dns_single_host;
mod docker_engine;
mod docker_labels;
mod docker_plugin_protocol;
mod endpoint_counters;
mod hands_off;
mod masquerade;
mod monitor;
mod monitor_reasons;
mod netns_traffic;
mod policy_scale;
mod policy_single_host;
mod published_uplink;
mod services_single_host;
mod upgrade;
