//! What netd's DNS answers, computed from the model snapshot a reconcile
//! pass applied: the names the datapath serves at that moment, so DNS and
//! the VIPs never disagree.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
};

use crate::model::{Endpoint, Network, Service};

/// The prefix that asks for a service's backends rather than its VIP.
pub const TASKS: &str = "tasks.";

/// One name's addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses(pub Vec<Ipv4Addr>);

/// Names by network, and how to tell which networks an asker is on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// Network id → lowercased name → addresses.
    by_network: BTreeMap<String, BTreeMap<String, Addresses>>,
    /// Where this host serves DNS: each network's gateway that a local
    /// endpoint has, and that network.
    pub listeners: BTreeMap<Ipv4Addr, String>,
    /// A local endpoint's (network, address) → its sandbox.
    sandbox_of: BTreeMap<(String, Ipv4Addr), PathBuf>,
    /// A sandbox → the networks its endpoints are on.
    networks_of: BTreeMap<PathBuf, BTreeSet<String>>,
}

impl Names {
    /// `here` tells this host's endpoints.
    pub fn build(
        networks: &[Network],
        endpoints: &[Endpoint],
        services: &[Service],
        here: impl Fn(&Endpoint) -> bool,
    ) -> Self {
        let mut names = Names::default();
        for e in endpoints {
            let table = names.by_network.entry(e.network.clone()).or_default();
            for name in std::iter::once(&e.name).chain(e.container.as_ref()) {
                table
                    .entry(name.to_ascii_lowercase())
                    .or_default()
                    .0
                    .push(e.ipv4);
            }
            if here(e) && e.joined() {
                if let Some(n) = networks.iter().find(|n| n.id == e.network) {
                    names.listeners.insert(n.gateway, n.id.clone());
                }
                names
                    .sandbox_of
                    .insert((e.network.clone(), e.ipv4), e.sandbox.clone());
                names
                    .networks_of
                    .entry(e.sandbox.clone())
                    .or_default()
                    .insert(e.network.clone());
            }
        }
        // A service's name wins over an endpoint's of the same name.
        for s in services {
            let backends: Vec<Ipv4Addr> = s
                .backends_in(endpoints)
                .into_iter()
                .filter(|b| !b.draining)
                .map(|b| b.ip)
                .collect();
            let table = names.by_network.entry(s.network.clone()).or_default();
            let name = s.name.to_ascii_lowercase();
            let answer = match s.vip {
                Some(vip) => vec![vip],
                None => backends.clone(),
            };
            table.insert(name.clone(), Addresses(answer));
            table.insert(format!("{TASKS}{name}"), Addresses(backends));
        }
        names
    }

    /// The networks whose names the asker at `source`, which asked through
    /// `network`'s gateway, may resolve: those of every endpoint of its
    /// sandbox on this host, or that network alone for an asker netd does
    /// not know.
    pub fn scope<'a>(&'a self, network: &'a str, source: Ipv4Addr) -> BTreeSet<&'a str> {
        let sandbox = self.sandbox_of.get(&(network.to_string(), source));
        match sandbox.and_then(|s| self.networks_of.get(s)) {
            Some(all) => all.iter().map(String::as_str).collect(),
            None => BTreeSet::from([network]),
        }
    }

    /// The addresses of `name` (any case, with or without the final dot)
    /// on the networks of `scope`; None if no network there has the name.
    pub fn lookup(&self, scope: &BTreeSet<&str>, name: &str) -> Option<Vec<Ipv4Addr>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut found: Option<Vec<Ipv4Addr>> = None;
        for network in scope {
            if let Some(addresses) = self.by_network.get(*network).and_then(|t| t.get(&name)) {
                found.get_or_insert_with(Vec::new).extend(&addresses.0);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{testing, ServiceSpec};

    fn ep(name: &str, network: &Network, sandbox: &str, labels: &[(&str, &str)]) -> Endpoint {
        let networks = std::slice::from_ref(network);
        let mut e = testing::endpoint(name, &network.name, labels, None, networks, &[]);
        e.sandbox = sandbox.into();
        e
    }

    fn with_ip(mut e: Endpoint, ip: [u8; 4]) -> Endpoint {
        e.ipv4 = ip.into();
        e
    }

    #[test]
    fn services_and_endpoints_resolve_only_on_the_askers_networks() {
        let n1 = testing::network("n1", "10.1.0.0/24", &[]);
        let n2 = testing::network("n2", "10.2.0.0/24", std::slice::from_ref(&n1));
        let web0 = with_ip(
            ep("web0", &n1, "/s/web0", &[("app", "web")]),
            [10, 1, 0, 10],
        );
        let mut web1 = with_ip(
            ep("web1", &n1, "/s/web1", &[("app", "web")]),
            [10, 1, 0, 11],
        );
        web1.container = Some("Front-1".into());
        let both_n1 = with_ip(ep("both-a", &n1, "/s/both", &[]), [10, 1, 0, 20]);
        let both_n2 = with_ip(ep("both-b", &n2, "/s/both", &[]), [10, 2, 0, 20]);
        let db = with_ip(ep("db", &n2, "/s/db", &[]), [10, 2, 0, 30]);
        let endpoints = vec![web0, web1, both_n1, both_n2, db];
        let networks = vec![n1.clone(), n2.clone()];
        let spec = ServiceSpec {
            name: "web".into(),
            network: "n1".into(),
            selector: Some("app=web".into()),
            ports: vec!["80:8080/tcp".into()],
            ..Default::default()
        };
        let mut web = Service::from_spec(&spec, &networks, &[], &endpoints, &BTreeSet::new(), 1)
            .expect("service");
        web.draining.insert("web1".into());
        let names = Names::build(&networks, &endpoints, &[web.clone()], |_| true);

        let from_web0 = names.scope(&n1.id, [10, 1, 0, 10].into());
        assert_eq!(from_web0, BTreeSet::from([n1.id.as_str()]));
        assert_eq!(
            names.lookup(&from_web0, "WEB."),
            Some(vec![web.vip.expect("vip")])
        );
        assert_eq!(
            names.lookup(&from_web0, "tasks.web"),
            Some(vec![[10, 1, 0, 10].into()]),
            "a draining backend is not handed out"
        );
        assert_eq!(
            names.lookup(&from_web0, "front-1"),
            Some(vec![[10, 1, 0, 11].into()])
        );
        assert_eq!(names.lookup(&from_web0, "db"), None, "n2's name from n1");

        // A sandbox on both networks resolves both, whichever it asks through.
        let from_both = names.scope(&n1.id, [10, 1, 0, 20].into());
        assert_eq!(
            names.lookup(&from_both, "db"),
            Some(vec![[10, 2, 0, 30].into()])
        );
        // An asker netd does not know gets the network it asked on.
        let stranger = names.scope(&n2.id, [10, 2, 0, 99].into());
        assert_eq!(names.lookup(&stranger, "web"), None);
        assert_eq!(
            names.listeners,
            BTreeMap::from([(n1.gateway, n1.id.clone()), (n2.gateway, n2.id.clone())])
        );

        // In dnsrr mode the name itself is the backends.
        let spec = ServiceSpec {
            name: "rr".into(),
            network: "n1".into(),
            selector: Some("app=web".into()),
            ports: vec!["80:8080/tcp".into()],
            mode: crate::model::Mode::Dnsrr,
            ..Default::default()
        };
        let rr = Service::from_spec(&spec, &networks, &[], &endpoints, &BTreeSet::new(), 2)
            .expect("dnsrr service");
        assert_eq!(rr.vip, None);
        let names = Names::build(&networks, &endpoints, &[rr], |_| true);
        let both_backends: Vec<Ipv4Addr> = vec![[10, 1, 0, 10].into(), [10, 1, 0, 11].into()];
        assert_eq!(names.lookup(&from_web0, "rr"), Some(both_backends));
    }
}
