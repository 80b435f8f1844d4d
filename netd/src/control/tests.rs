//! The model operations against an embedded store: refusals change
//! nothing, compares hold with several writers, batches are all or none.

use std::{collections::BTreeSet, net::Ipv4Addr};

use super::{keys::*, *};
use crate::{
    model::{EndpointSpec, Manager, NetworkSpec, PolicySpec, ServiceSpec},
    store::EmbeddedStore,
};

mod docker;

pub(super) fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn net(name: &str, subnet: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        subnet: subnet.into(),
        ..Default::default()
    }
}

/// Each request was refused, saying its expected words.
fn assert_refused(refusals: &[Option<String>], expected: &[&str]) {
    assert_eq!(refusals.len(), expected.len());
    for (got, want) in refusals.iter().zip(expected) {
        assert!(
            got.as_deref().is_some_and(|g| g.contains(want)),
            "{got:?} lacks {want:?}"
        );
    }
}

pub(super) fn ep(name: &str, network: &str, netns: &str) -> EndpointSpec {
    EndpointSpec {
        name: name.into(),
        network: network.into(),
        netns: netns.into(),
        ..Default::default()
    }
}

/// `count` rules allowing `tier=web` on a port each.
fn port_rules(count: usize) -> Vec<crate::model::RuleSpec> {
    (0..count)
        .map(|i| crate::model::RuleSpec {
            peers: vec![crate::model::PeerSpec {
                selector: Some("tier=web".into()),
                ..Default::default()
            }],
            proto: crate::model::Proto::Tcp,
            ports: vec![(1000 + i).to_string()],
            ..Default::default()
        })
        .collect()
}

#[test]
fn a_policy_too_large_for_one_store_value_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let c = Control::new(EmbeddedStore::open(dir.path()).expect("store"));
        let big = |name: &str, count| PolicySpec {
            name: name.into(),
            selector: Some("tier=api".into()),
            ingress: Some(port_rules(count)),
            ..Default::default()
        };
        c.create_policy(&big("ten-thousand", 10_000))
            .await
            .expect("10,000 rules fit");
        let before = c.store().list(PREFIX).await.expect("list");
        let err = c
            .create_policy(&big("too-big", 30_000))
            .await
            .expect_err("30,000 rules do not")
            .to_string();
        assert!(
            err.contains("30000 rules take") && err.contains("split them"),
            "{err}"
        );
        assert_eq!(c.store().list(PREFIX).await.expect("list"), before);
    });
}

#[test]
fn a_policy_past_the_policy_maps_capacity_is_refused_with_the_limit_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let limits = Limits {
            policy_entries: 10,
            ipcache: 4,
            ..Limits::default()
        };
        let c = Control::on_host(EmbeddedStore::open(dir.path()).expect("store"), "a")
            .with_limits(limits);
        c.create_network(&net("n1", "10.1.0.0/24"))
            .await
            .expect("n1");
        c.create_endpoint(&EndpointSpec {
            labels: [("tier".to_string(), "api".to_string())].into(),
            ..ep("api", "n1", "/run/netns/api")
        })
        .await
        .expect("api");
        let spec = |name: &str, ingress| PolicySpec {
            name: name.into(),
            selector: Some(
                if name == "cidrs" {
                    "tier=none"
                } else {
                    "tier=api"
                }
                .into(),
            ),
            ingress: Some(ingress),
            ..Default::default()
        };
        let rules = |texts: Vec<String>| -> Vec<crate::model::RuleSpec> {
            texts
                .iter()
                .map(|t| crate::model::parse_rule(t))
                .collect::<Result<_, _>>()
                .expect("rules")
        };
        // From any peer: one entry a port.
        let any_peer_rules = |first: usize, count: usize| {
            rules(
                (first..first + count)
                    .map(|port| format!("allow tcp/{port}"))
                    .collect(),
            )
        };
        let cidr_rules = |count: usize| {
            rules(
                (0..count)
                    .map(|i| format!("allow from cidr:10.9.{i}.0/24 tcp/80"))
                    .collect(),
            )
        };
        c.create_policy(&spec("nine", any_peer_rules(1000, 9)))
            .await
            .expect("9 entries fit in 10");
        let before = c.store().list(PREFIX).await.expect("list");
        let refusals = [
            c.create_policy(&spec("two", any_peer_rules(2000, 2)))
                .await
                .err(),
            c.create_policy(&spec("cidrs", cidr_rules(4))).await.err(),
        ];
        // "cidrs" selects no endpoint, so it adds no NETD_POLICY entry;
        // the endpoint's identity plus its 4 CIDRs: 5 ipcache entries.
        assert_refused(
            &refusals.map(|r| r.map(|e| e.to_string())),
            &[
                "policy \"two\": it would take 11 entries in the NETD_POLICY map of host \"a\", which holds at most 10",
                "policy \"cidrs\": it would take 5 entries in the NETD_IPCACHE map of every host, which holds at most 4",
            ],
        );
        assert_eq!(c.store().list(PREFIX).await.expect("list"), before);
    });
}

#[test]
fn create_list_delete_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let c = Control::new(EmbeddedStore::open(dir.path()).expect("store"));
        let n1 = c
            .create_network(&net("n1", "10.1.0.0/24"))
            .await
            .expect("n1");
        let n2 = c
            .create_network(&net("n2", "10.2.0.0/24"))
            .await
            .expect("n2");
        assert_eq!((n1.index, n2.index), (1, 2));
        let e1 = c
            .create_endpoint(&ep("e1", "n1", "/run/netns/a"))
            .await
            .expect("e1");
        let before = c.store().list(PREFIX).await.expect("list");

        let refusals = [
            c.create_network(&net("n3", "10.1.0.0/16"))
                .await
                .err()
                .map(|e| e.to_string()),
            c.create_network(&net("n1", "10.3.0.0/24"))
                .await
                .err()
                .map(|e| e.to_string()),
            c.create_endpoint(&ep("e1", "n1", "/run/netns/b"))
                .await
                .err()
                .map(|e| e.to_string()),
            c.create_endpoint(&EndpointSpec {
                ip: Some("10.1.0.2".into()),
                ..ep("e2", "n1", "/run/netns/b")
            })
            .await
            .err()
            .map(|e| e.to_string()),
            c.delete_network("n1").await.err().map(|e| e.to_string()),
            c.delete_endpoint("nope").await.err().map(|e| e.to_string()),
        ];
        let expected = [
            "overlaps network \"n1\"",
            "network \"n1\" already exists",
            "endpoint \"e1\" already exists",
            "address 10.1.0.2 is already in use",
            "network \"n1\" still has endpoints: e1; remove them first",
            "no endpoint named \"nope\"",
        ];
        assert_refused(&refusals, &expected);
        assert_eq!(
            c.store().list(PREFIX).await.expect("list"),
            before,
            "a refusal changed the store"
        );

        c.delete_endpoint("e1").await.expect("delete e1");
        // Its address is free again.
        let again = c
            .create_endpoint(&ep("e3", "n1", "/run/netns/c"))
            .await
            .expect("e3");
        assert_eq!(again.ipv4, e1.ipv4);
        c.delete_endpoint("e3").await.expect("delete e3");
        c.delete_network("n1").await.expect("delete n1");
        // Its index is reused by the next network.
        assert_eq!(
            c.create_network(&net("n4", "10.4.0.0/24"))
                .await
                .expect("n4")
                .index,
            1
        );
    });
}

#[test]
fn an_endpoint_landing_while_its_network_is_deleted_makes_the_delete_look_again() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let c = Control::new(EmbeddedStore::open(dir.path()).expect("store"));
        let n1 = c
            .create_network(&net("n1", "10.1.0.0/24"))
            .await
            .expect("n1");
        // The delete read the network (no endpoints yet) at this revision...
        let seen = c.network_revision(&n1.id).await.expect("revision");
        // ...then an endpoint lands: it rewrites the network record.
        c.create_endpoint(&ep("e1", "n1", "/run/netns/a"))
            .await
            .expect("e1");
        assert_ne!(c.network_revision(&n1.id).await.expect("revision"), seen);
        let stale = Txn::new()
            .unchanged(network_key(&n1.id), seen)
            .delete(network_key(&n1.id));
        assert!(matches!(
            c.commit(stale).await,
            Err(StoreError::Conflict(_))
        ));
        // Looking again, the delete sees the endpoint.
        let refused = c.delete_network("n1").await.expect_err("in use");
        assert!(
            refused.to_string().contains("still has endpoints: e1"),
            "{refused}"
        );
        // And an endpoint on a network deleted meanwhile is refused.
        c.delete_endpoint("e1").await.expect("e1 gone");
        let guard = c.guard_network(Txn::new(), &n1.id).await.expect("guard");
        c.delete_network("n1").await.expect("n1 gone");
        assert!(matches!(
            c.commit(guard).await,
            Err(StoreError::Conflict(_))
        ));
    });
}

#[test]
fn a_record_that_cannot_be_read_is_counted_and_skipped_not_fatal() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let c = Control::new(EmbeddedStore::open(dir.path()).expect("store"));
        c.create_network(&net("n1", "10.1.0.0/24"))
            .await
            .expect("n1");
        c.commit(Txn::new().put(format!("{NETWORKS}garbage"), "{not json"))
            .await
            .expect("plant");
        let model = c.model().await.expect("model");
        assert_eq!(model.networks.len(), 1);
        assert_eq!(c.networks().await.expect("list").len(), 1);
        assert_eq!(c.bad_records(), 2);
        assert!(model.revision >= c.last_commit());
        c.create_network(&net("n2", "10.2.0.0/24"))
            .await
            .expect("n2 still works");
    });
}

#[test]
fn a_host_keeps_the_index_it_joined_with_until_it_is_removed() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let c = Control::on_host(EmbeddedStore::open(dir.path()).expect("store"), "b");
        let host = |name: &str, last: u8| Host {
            name: name.into(),
            underlay_ip: Some(std::net::Ipv4Addr::new(192, 0, 2, last)),
            external: false,
            index: 0,
            alive: true,
        };
        assert_eq!(c.join(&host("b", 2)).await.expect("b").index, 1);
        assert_eq!(c.join(&host("a", 1)).await.expect("a").index, 2);
        // Again, or with a new address: the same index.
        assert_eq!(c.join(&host("b", 2)).await.expect("b").index, 1);
        let moved = c.join(&host("b", 9)).await.expect("b moved");
        assert_eq!(
            (moved.index, moved.underlay_ip),
            (1, host("b", 9).underlay_ip)
        );
        // a is running (registered): not removable; once down, it is.
        c.store()
            .commit(Txn::new().put(host_key("a"), "{}"))
            .await
            .expect("register");
        let refused = c.remove_host("a").await.expect_err("running");
        assert!(refused.to_string().contains("is running"), "{refused}");
        let listed = c.hosts().await.expect("hosts");
        assert_eq!(
            listed
                .iter()
                .map(|h| (h.name.as_str(), h.alive))
                .collect::<Vec<_>>(),
            [("a", true), ("b", false)]
        );
        c.store()
            .commit(Txn::new().delete(host_key("a")))
            .await
            .expect("lease ends");
        c.remove_host("a").await.expect("removed");
        assert_eq!(
            c.join(&host("c", 3)).await.expect("c").index,
            2,
            "a's index is free"
        );
    });
}

fn svc(name: &str, vip: Option<&str>) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        network: "n1".into(),
        vip: vip.map(Into::into),
        ports: vec!["80:8080".into()],
        selector: Some("app=web".into()),
        ..Default::default()
    }
}

#[test]
fn services_take_unique_vips_and_indexes_and_a_batch_is_all_or_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let c = Control::new(EmbeddedStore::open(dir.path()).expect("store"));
        c.create_network(&net("n1", "10.1.0.0/24"))
            .await
            .expect("n1");
        let one = c.create_service(&svc("one", None)).await.expect("one");
        let batch = c
            .create_services(&[svc("two", None), svc("three", Some("10.1.0.50"))])
            .await
            .expect("batch");
        let vips: BTreeSet<Ipv4Addr> = std::iter::once(&one)
            .chain(&batch)
            .filter_map(|s| s.vip)
            .collect();
        assert_eq!(vips.len(), 3, "distinct VIPs");
        let indexes: BTreeSet<u32> = std::iter::once(&one)
            .chain(&batch)
            .map(|s| s.index)
            .collect();
        assert_eq!(indexes, [1, 2, 3].into_iter().collect());

        // One bad service in a batch: none is created, and the error
        // names it.
        let e = c
            .create_services(&[svc("four", None), svc("five", Some("10.1.0.50"))])
            .await
            .expect_err("refused")
            .to_string();
        assert!(e.contains("\"five\", #2 of the batch"), "{e}");
        assert_eq!(c.services().await.expect("list").len(), 3);

        // An endpoint never gets a VIP, asked for or not.
        let first = c
            .create_endpoint(&ep("e1", "n1", "/run/netns/x"))
            .await
            .expect("endpoint");
        assert!(!vips.contains(&first.ipv4), "{}", first.ipv4);
        let taken = c
            .create_endpoint(&EndpointSpec {
                ip: Some("10.1.0.50".into()),
                ..ep("e2", "n1", "/run/netns/y")
            })
            .await
            .expect_err("a VIP")
            .to_string();
        assert!(taken.contains("is the VIP of service \"three\""), "{taken}");

        // The network stays while it has services; a removed service
        // frees its VIP and index.
        let e = c
            .delete_network("n1")
            .await
            .expect_err("in use")
            .to_string();
        assert!(e.contains("still has"), "{e}");
        c.delete_service("three").await.expect("rm");
        let again = c
            .create_service(&svc("six", Some("10.1.0.50")))
            .await
            .expect("six");
        assert_eq!(again.index, 3);
    });
}

#[test]
fn a_request_past_a_maps_capacity_is_refused_with_the_limit_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let limits = Limits {
            networks: 2,
            endpoints: 3,
            hosts: 1,
            ..Limits::default()
        };
        let mut c = Control::on_host(EmbeddedStore::open(dir.path()).expect("store"), "a")
            .with_limits(limits);
        let a = &c;
        a.create_network(&NetworkSpec {
            overlay: true,
            ..net("o1", "10.1.0.0/24")
        })
        .await
        .expect("o1");
        a.create_network(&net("l1", "10.2.0.0/24"))
            .await
            .expect("l1");
        for (name, network) in [("o-a1", "o1"), ("l-a1", "l1")] {
            a.create_endpoint(&ep(name, network, &format!("/run/netns/{name}")))
                .await
                .expect(name);
        }
        a.add_external_host("k1", std::net::Ipv4Addr::new(192, 0, 2, 9))
            .await
            .expect("k1");
        // Host b's overlay endpoint lands in a's map too: a holds 3.
        c.host = "b".into();
        c.create_endpoint(&ep("o-b1", "o1", "/run/netns/y"))
            .await
            .expect("o-b1");
        // b's local-only endpoints stay on b (b holds o-a1, o-b1 and these).
        c.create_endpoint(&ep("l-b1", "l1", "/run/netns/z"))
            .await
            .expect("l-b1");
        let before = c.store().list(PREFIX).await.expect("list");
        let from_b = c
            .create_endpoint(&ep("o-b2", "o1", "/run/netns/v"))
            .await
            .err();
        c.host = "a".into();
        let refusals = [
            c.create_network(&net("n3", "10.3.0.0/24")).await.err(),
            c.create_endpoint(&ep("l-a2", "l1", "/run/netns/w"))
                .await
                .err(),
            from_b,
            c.add_external_host("k2", std::net::Ipv4Addr::new(192, 0, 2, 10))
                .await
                .err(),
        ];
        let expected = [
            "the NETD_NETWORKS map of every host holds at most 2 entries and 2 are already there",
            "the NETD_ENDPOINTS map of host \"a\" holds at most 3 entries and 3",
            "the NETD_ENDPOINTS map of host \"a\" holds at most 3 entries",
            "the NETD_HOSTS map of every host holds at most 1 entries",
        ];
        assert_refused(&refusals.map(|r| r.map(|e| e.to_string())), &expected);
        assert_eq!(c.store().list(PREFIX).await.expect("list"), before);
    });
}

#[test]
fn external_hosts_hold_endpoints_of_overlay_networks_and_leave_only_when_empty() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let c = Control::on_host(EmbeddedStore::open(dir.path()).expect("store"), "node-a");
        let ip = std::net::Ipv4Addr::new(192, 0, 2, 9);
        c.create_network(&NetworkSpec {
            overlay: true,
            ..net("o1", "10.7.0.0/24")
        })
        .await
        .expect("o1");
        c.create_network(&net("local", "10.8.0.0/24"))
            .await
            .expect("local");
        let h = c.add_external_host("kernel-1", ip).await.expect("add");
        assert!(h.external);
        let spec = EndpointSpec {
            name: "k1".into(),
            network: "o1".into(),
            external_host: Some("kernel-1".into()),
            ip: Some("10.7.0.50".into()),
            ..Default::default()
        };
        let k1 = c.create_endpoint(&spec).await.expect("k1");
        assert_eq!(
            (
                k1.host.as_str(),
                k1.managed_by,
                k1.joined(),
                c.is_local(&k1)
            ),
            ("kernel-1", Manager::External, true, false)
        );
        assert_eq!(k1.mac.to_string(), "02:6e:0a:07:00:32");
        let before = c.store().list(PREFIX).await.expect("list");

        let refusals = [
            c.add_external_host("kernel-1", std::net::Ipv4Addr::new(192, 0, 2, 10))
                .await
                .err(),
            c.add_external_host("kernel-2", ip).await.err(),
            c.add_external_host("kernel-3", std::net::Ipv4Addr::UNSPECIFIED)
                .await
                .err(),
            c.create_endpoint(&EndpointSpec {
                name: "k2".into(),
                network: "local".into(),
                ..spec.clone()
            })
            .await
            .err(),
            c.create_endpoint(&EndpointSpec {
                name: "k3".into(),
                external_host: Some("nope".into()),
                ip: None,
                ..spec.clone()
            })
            .await
            .err(),
            c.create_endpoint(&EndpointSpec {
                name: "k4".into(),
                netns: "/run/netns/x".into(),
                ip: None,
                ..spec.clone()
            })
            .await
            .err(),
            c.create_endpoint(&ep("e1", "o1", "")).await.err(),
            c.remove_host("kernel-1").await.err(),
        ];
        let expected = [
            "host \"kernel-1\" already exists",
            "192.0.2.9 is already host \"kernel-1\"'s",
            "0.0.0.0 is not a host address",
            "\"local\" is not an overlay network",
            "no host named \"nope\"",
            "has no sandbox or interface here",
            "needs a sandbox",
            "host \"kernel-1\" still has endpoints: k1; remove them first",
        ];
        let refusals = refusals.map(|r| r.map(|e| e.to_string()));
        assert_refused(&refusals, &expected);
        assert_eq!(
            c.store().list(PREFIX).await.expect("list"),
            before,
            "a refusal changed the store"
        );
        c.delete_endpoint("k1").await.expect("delete k1");
        c.remove_host("kernel-1").await.expect("remove");
        assert!(c.hosts().await.expect("hosts").is_empty());
    });
}
