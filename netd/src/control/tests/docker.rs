//! Docker's side: networks met by subnet across hosts, IPAM claims in
//! the one address registry.

use std::{collections::BTreeMap, sync::Arc};

use ipnet::Ipv4Net;

use super::super::{ipam::*, keys::*, *};
use super::{block, ep};
use crate::{model::NetworkSpec, store::EmbeddedStore};

#[test]
fn docker_ipam_claims_live_in_the_networks_one_address_registry() {
    const E1: &str = "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1";
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let c = Control::new(EmbeddedStore::open(dir.path()).expect("store"));
        let subnet: Ipv4Net = "10.5.0.0/24".parse().expect("subnet");
        let pool = c.request_pool(subnet, None).await.expect("pool");
        let gw = c
            .request_address(&pool.id, None, true)
            .await
            .expect("gateway");
        let network = c
            .create_docker_network(
                "0123456789abcdef",
                NetworkSpec {
                    subnet: subnet.to_string(),
                    gateway: Some(gw.to_string()),
                    ..Default::default()
                },
            )
            .await
            .expect("network");
        assert_eq!(network.address_registry(), pool.id);
        let ip = c.request_address(&pool.id, None, false).await.expect("ip");
        let e = c
            .create_docker_endpoint(&network.id, E1, Some(ip), None)
            .await
            .expect("the endpoint takes the claim over");
        assert_eq!(e.ipv4, ip);
        let stored = c
            .store()
            .get(&address_key(&pool.id, ip))
            .await
            .expect("get")
            .expect("held");
        assert_eq!(stored.value, E1, "one record, now the endpoint's");
        // Held by the endpoint: neither handed out again nor released.
        let next = c
            .request_address(&pool.id, None, false)
            .await
            .expect("next");
        assert_ne!(next, ip);
        let again = c.request_address(&pool.id, Some(ip), false).await;
        assert!(again.is_err_and(|e| e.to_string().contains("already in use")));
        c.release_address(&pool.id, ip).await.expect("release");
        assert!(c
            .store()
            .get(&address_key(&pool.id, ip))
            .await
            .expect("get")
            .is_some());
        // An endpoint cannot take an address another one holds.
        let taken = c
            .create_docker_endpoint(&network.id, "e2", Some(ip), None)
            .await;
        assert!(taken.is_err(), "{taken:?}");
        // A netd endpoint on that network skips the claimed address.
        let cli = c
            .create_endpoint(&ep("cli", &network.id, "/run/netns/cli"))
            .await
            .expect("cli endpoint");
        assert!(
            cli.ipv4 != ip && cli.ipv4 != next && cli.ipv4 != gw,
            "{}",
            cli.ipv4
        );
        c.delete_endpoint("cli").await.expect("cli gone");
        // Released claims and the pool's leftovers go.
        c.release_address(&pool.id, next).await.expect("release");
        assert!(c
            .store()
            .get(&address_key(&pool.id, next))
            .await
            .expect("get")
            .is_none());
        c.delete_endpoint(E1).await.expect("e1 gone");
        c.delete_network(&network.id).await.expect("network gone");
        c.release_pool(&pool.id).await.expect("pool gone");
        assert!(c
            .store()
            .list(&addresses_of(&pool.id))
            .await
            .expect("list")
            .is_empty());
    });
}

const DA: &str = "aaaa0000aaaa0000aaaa0000aaaa0000";
const DB: &str = "bbbb0000bbbb0000bbbb0000bbbb0000";

/// Two hosts' Controls over one store, as two netds over one etcd.
fn two_hosts(dir: &std::path::Path) -> (Control<Arc<EmbeddedStore>>, Control<Arc<EmbeddedStore>>) {
    let store = Arc::new(EmbeddedStore::open(dir).expect("store"));
    (
        Control::on_host(store.clone(), "host-a"),
        Control::on_host(store, "host-b"),
    )
}

/// What the plugin makes of `docker network create -d netd --ipam-driver
/// netd -o netd.overlay=true [-o KEY=VALUE] --subnet SUBNET`.
async fn docker_create<S: Store>(
    c: &Control<S>,
    docker_id: &str,
    subnet: &str,
    options: &[(&str, &str)],
) -> Result<Network, ControlError> {
    let net: Ipv4Net = subnet.parse().expect("subnet");
    let pool = c.request_pool(net, None).await?;
    let gateway = c.request_address(&pool.id, None, true).await?;
    let mut labels = BTreeMap::from([("netd.overlay".to_string(), "true".to_string())]);
    labels.extend(options.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let made = c
        .create_docker_network(
            docker_id,
            NetworkSpec {
                subnet: subnet.into(),
                gateway: Some(gateway.to_string()),
                labels,
                overlay: true,
                ..Default::default()
            },
        )
        .await;
    if made.is_err() {
        // As Docker does after a refused CreateNetwork.
        c.release_pool(&pool.id).await?;
    }
    made
}

/// What the plugin makes of `docker network rm`.
async fn docker_rm<S: Store>(c: &Control<S>, docker_id: &str, subnet: &str) {
    c.delete_docker_network(docker_id).await.expect("rm");
    let net: Ipv4Net = subnet.parse().expect("subnet");
    c.release_pool(&pool_id(&net)).await.expect("release");
}

#[test]
fn docker_hosts_creating_one_overlay_share_one_network_until_the_last_leaves() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let (a, b) = two_hosts(dir.path());
        let on_a = docker_create(&a, DA, "10.60.0.0/24", &[]).await.expect("a");
        let on_b = docker_create(&b, DB, "10.60.0.0/24", &[])
            .await
            .expect("b joins");
        assert_eq!(on_a.id, on_b.id, "one network");
        assert!(on_a.vni.is_some());
        let one = a.docker_network(DB).await.expect("B's id finds it");
        assert_eq!(
            one.docker,
            BTreeMap::from([
                (DA.to_string(), "host-a".to_string()),
                (DB.to_string(), "host-b".to_string())
            ])
        );
        assert_eq!(a.networks().await.expect("ls").len(), 1);

        // Addresses come from one registry, whichever host asks.
        let pool = pool_id(&"10.60.0.0/24".parse().expect("net"));
        let x = a.request_address(&pool, None, false).await.expect("x");
        let y = b.request_address(&pool, None, false).await.expect("y");
        assert_ne!(x, y);
        let on_b = b
            .create_docker_endpoint(DB, "e2e2e2e2e2e2e2e2e2e2", Some(y), None)
            .await
            .expect("B's endpoint");
        assert_eq!(
            (on_b.network.as_str(), on_b.host.as_str()),
            (one.id.as_str(), "host-b")
        );

        // A leaves: B keeps the network, the pool and its endpoint.
        a.release_address(&pool, x).await.expect("release x");
        docker_rm(&a, DA, "10.60.0.0/24").await;
        let left = b.docker_network(DB).await.expect("still B's");
        assert_eq!(left.docker.len(), 1);
        assert!(a.docker_network(DA).await.is_err());
        assert!(b.pool(&pool).await.is_ok(), "the pool stays B's");
        // B cannot leave while its endpoint is there.
        let busy = b.delete_docker_network(DB).await;
        assert!(busy.is_err_and(|e| e.to_string().contains("endpoint")));
        b.delete_endpoint("e2e2e2e2e2e2e2e2e2e2")
            .await
            .expect("ep gone");
        docker_rm(&b, DB, "10.60.0.0/24").await;
        assert!(b.networks().await.expect("ls").is_empty());
        assert!(
            b.pool(&pool).await.is_err(),
            "the last release drops the pool"
        );
        for prefix in [
            "/netd/subnets/",
            "/netd/vni/",
            "/netd/names/",
            "/netd/addresses/",
        ] {
            let left = b.store().list(prefix).await.expect("list");
            assert!(left.is_empty(), "{prefix}: {left:?}");
        }
    });
}

#[test]
fn a_conflicting_docker_overlay_is_refused_with_the_difference_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let (a, b) = two_hosts(dir.path());
        docker_create(&a, DA, "10.61.0.0/24", &[]).await.expect("a");
        let before = a.store().list("/netd/").await.expect("list");
        let options =
            docker_create(&b, DB, "10.61.0.0/24", &[("netd.policy", "default-deny")]).await;
        let why = options.expect_err("other options").to_string();
        assert!(
            why.contains("netd.policy") && why.contains("same --subnet and options"),
            "{why}"
        );
        let overlapping = docker_create(&b, DB, "10.61.0.0/16", &[]).await;
        assert!(overlapping
            .expect_err("overlap")
            .to_string()
            .contains("overlaps"));
        let twice = docker_create(&a, "cccc0000cccc0000cccc", "10.61.0.0/24", &[]).await;
        assert!(twice
            .expect_err("twice")
            .to_string()
            .contains("already Docker network"));
        let after = a.store().list("/netd/").await.expect("list");
        let values = |m: &BTreeMap<String, crate::store::Versioned>| -> Vec<(String, String)> {
            m.iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect()
        };
        assert_eq!(values(&before), values(&after), "nothing changed");
    });
}

#[test]
fn two_docker_hosts_creating_one_overlay_at_once_make_one_network() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let (a, b) = two_hosts(dir.path());
        let (x, y) = tokio::join!(
            docker_create(&a, DA, "10.62.0.0/24", &[]),
            docker_create(&b, DB, "10.62.0.0/24", &[])
        );
        let (x, y) = (x.expect("a"), y.expect("b"));
        assert_eq!(x.id, y.id);
        let all = a.networks().await.expect("ls");
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].docker.len(), 2);
    });
}

#[test]
fn a_docker_network_takes_its_docker_name_unless_netd_has_that_name() {
    let dir = tempfile::tempdir().expect("dir");
    block(async {
        let (a, b) = two_hosts(dir.path());
        let made = docker_create(&a, DA, "10.63.0.0/24", &[]).await.expect("a");
        assert_eq!(made.name, "docker-aaaa0000aaaa");
        assert_eq!(
            a.name_docker_network(DA, "shared").await.expect("name"),
            None
        );
        docker_create(&b, DB, "10.63.0.0/24", &[]).await.expect("b");
        assert_eq!(
            b.name_docker_network(DB, "shared").await.expect("same"),
            None
        );
        assert_eq!(b.network("shared").await.expect("by name").docker.len(), 2);
        let other = b.name_docker_network(DB, "elsewise").await.expect("kept");
        assert!(other.is_some_and(|w| w.contains("\"shared\"")));
        // One name on another subnet is another network, named apart.
        let c = Control::on_host(a.store().clone(), "host-c");
        const DC: &str = "cccc0000cccc0000cccc0000";
        docker_create(&c, DC, "10.64.0.0/24", &[]).await.expect("c");
        let why = c.name_docker_network(DC, "shared").await.expect("kept");
        assert!(why.is_some_and(|w| w.contains("10.63.0.0/24")));
        assert!(c
            .store()
            .get(&network_name_key("docker-cccc0000cccc"))
            .await
            .expect("get")
            .is_some());
    });
}
