//! The Store trait on a real etcd server: transactions with compares,
//! watch (also across an etcd restart), and cluster-wide allocation with
//! no duplicates when two writers allocate at once.

use std::{collections::BTreeSet, time::Duration};

use netd::{
    control::Control,
    model::{EndpointSpec, NetworkSpec},
    store::{EtcdStore, Store, StoreError, Txn, WatchEvent},
};
use netd_tests::etcd::Etcd;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn store(etcd: &Etcd) -> EtcdStore {
    EtcdStore::connect(&[etcd.endpoint()], "/netd/")
        .await
        .expect("connect to etcd")
}

/// The next watch event, within 15 s, is a put of `key`.
async fn next_is_put(events: &mut tokio::sync::broadcast::Receiver<WatchEvent>, key: &str) {
    let e = tokio::time::timeout(Duration::from_secs(15), events.recv())
        .await
        .unwrap_or_else(|_| panic!("no event for {key} in 15 s"))
        .expect("event");
    assert!(
        matches!(e, WatchEvent::Put { key: ref k, .. } if k == key),
        "{e:?}"
    );
}

#[test]
fn transactions_revisions_and_conflicts() {
    let etcd = Etcd::start();
    runtime().block_on(async {
        let s = store(&etcd).await;
        let r1 = s
            .commit(
                Txn::new()
                    .absent("/netd/a")
                    .put("/netd/a", "1")
                    .put("/netd/b", "2"),
            )
            .await
            .expect("commit");
        let r2 = s
            .commit(Txn::new().delete("/netd/b").put("/netd/c", "3"))
            .await
            .expect("commit");
        assert!(r2 > r1, "revisions grow: {r1} then {r2}");
        let all = s.list("/netd/").await.expect("list");
        assert_eq!(all.keys().collect::<Vec<_>>(), vec!["/netd/a", "/netd/c"]);
        assert_eq!(all["/netd/a"].mod_revision, r1);
        let e = s
            .commit(
                Txn::new()
                    .absent("/netd/a")
                    .put("/netd/a", "x")
                    .put("/netd/d", "4"),
            )
            .await
            .expect_err("conflict");
        assert!(
            matches!(e, StoreError::Conflict(ref k) if k.contains("/netd/a")),
            "{e}"
        );
        assert_eq!(
            s.get("/netd/a").await.expect("get").map(|v| v.value),
            Some("1".into())
        );
        assert_eq!(s.get("/netd/d").await.expect("get"), None);
    });
}

#[test]
fn a_snapshot_bigger_than_a_grpc_message_is_read_whole_at_one_revision() {
    // 5,000 records of 1 KiB: 5 MiB, past gRPC's 4 MiB message limit, which
    // one response for the whole prefix hit at about 17,000 endpoints.
    let etcd = Etcd::start();
    runtime().block_on(async {
        let s = store(&etcd).await;
        let value = "x".repeat(1024);
        for batch in 0..50 {
            let mut txn = Txn::new();
            for i in 0..100 {
                txn = txn.put(format!("/netd/big/{:05}", batch * 100 + i), value.as_str());
            }
            s.commit(txn).await.expect("commit");
        }
        // Neighbours of the prefix stay out.
        s.commit(Txn::new().put("/netd/bigger", "no").put("/netd/bia", "no"))
            .await
            .expect("commit");
        let first = s.snapshot("/netd/big/").await.expect("snapshot");
        assert_eq!(first.entries.len(), 5000);
        assert!(first.entries.keys().all(|k| k.starts_with("/netd/big/")));
        // A write after the read is not in it, and the revision says so.
        let later = s
            .commit(Txn::new().put("/netd/big/99999", "late"))
            .await
            .expect("commit");
        assert!(first.revision < later);
        let second = s.snapshot("/netd/big/").await.expect("snapshot");
        assert_eq!(second.entries.len(), 5001);
        assert_eq!(second.revision, later);
    });
}

#[test]
fn watch_sees_changes_and_resumes_after_an_etcd_restart() {
    let mut etcd = Etcd::start();
    let rt = runtime();
    let s = rt.block_on(store(&etcd));
    let mut events = s.watch();
    rt.block_on(async {
        s.commit(Txn::new().put("/netd/k", "v")).await.expect("put");
        next_is_put(&mut events, "/netd/k").await;
    });
    etcd.restart();
    rt.block_on(async {
        // The client reconnects on its own; the write after the restart is seen.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match s.commit(Txn::new().delete("/netd/k")).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "etcd not back: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let e = tokio::time::timeout_at(deadline, events.recv())
                .await
                .expect("delete event in time")
                .expect("event");
            if matches!(e, WatchEvent::Delete { ref key, .. } if key == "/netd/k") {
                break;
            }
        }
    });
}

#[test]
fn a_write_right_after_connect_reaches_the_watch() {
    let etcd = Etcd::start();
    // A current-thread runtime runs the store's watch task only inside
    // block_on, so the write below lands before the watch has registered
    // with etcd: the window a daemon has between connecting and watching.
    let watcher_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let watcher = watcher_rt.block_on(store(&etcd));
    let mut events = watcher.watch();
    runtime().block_on(async {
        let writer = store(&etcd).await;
        writer
            .commit(Txn::new().put("/netd/early", "v"))
            .await
            .expect("put");
    });
    watcher_rt.block_on(next_is_put(&mut events, "/netd/early"));
}

#[test]
fn two_writers_allocating_at_once_never_share_an_address() {
    let etcd = Etcd::start();
    runtime().block_on(async {
        let a = Control::new(store(&etcd).await);
        let b = Control::new(store(&etcd).await);
        a.create_network(&NetworkSpec {
            name: "n1".into(),
            subnet: "10.81.0.0/24".into(),
            ..Default::default()
        })
        .await
        .expect("network");
        let spec = |host: &str, i: usize| EndpointSpec {
            name: format!("{host}-{i}"),
            network: "n1".into(),
            netns: format!("/run/netns/{host}-{i}").into(),
            ..Default::default()
        };
        let mut tasks = Vec::new();
        let (a, b) = (&a, &b);
        for i in 0..20 {
            let (sa, sb) = (spec("a", i), spec("b", i));
            // Both writers at once, 20 times over, all in flight together.
            tasks.push(async move { tokio::join!(a.create_endpoint(&sa), b.create_endpoint(&sb)) });
        }
        let results = futures_util::future::join_all(tasks).await;
        let mut ips = BTreeSet::new();
        for (ra, rb) in results {
            for r in [ra, rb] {
                let e = r.expect("allocation");
                assert!(ips.insert(e.ipv4), "{} handed out twice", e.ipv4);
            }
        }
        assert_eq!(ips.len(), 40);
        assert_eq!(a.endpoints().await.expect("list").len(), 40);
    });
}

#[test]
fn overlay_networks_created_at_once_on_two_hosts_get_distinct_vnis() {
    let etcd = Etcd::start();
    runtime().block_on(async {
        let a = Control::on_host(store(&etcd).await, "host-a");
        let b = Control::on_host(store(&etcd).await, "host-b");
        let spec = |i: usize| NetworkSpec {
            name: format!("o{i}"),
            subnet: format!("10.{}.0.0/24", 100 + i),
            overlay: true,
            ..Default::default()
        };
        let (a, b) = (&a, &b);
        let tasks = (0..10).map(|i| {
            let (sa, sb) = (spec(2 * i), spec(2 * i + 1));
            async move { tokio::join!(a.create_network(&sa), b.create_network(&sb)) }
        });
        let mut vnis = BTreeSet::new();
        for (ra, rb) in futures_util::future::join_all(tasks).await {
            for r in [ra, rb] {
                let vni = r.expect("overlay network").vni.expect("a VNI");
                assert!(vnis.insert(vni), "VNI {vni} given twice");
            }
        }
        assert_eq!(vnis.len(), 20);
    });
}
