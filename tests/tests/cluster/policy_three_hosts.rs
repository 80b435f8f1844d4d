//! Policy across three hosts on etcd, through the CLI of one of them: web on
//! host 0, api on host 1, db on host 2, on an overlay network; a client
//! outside the cluster reaching api through the routing mesh. Every
//! ingress here is judged where a packet is decapsulated or tunnelled in,
//! by identities each host resolves from the source address.

use std::time::Duration;

use netd_tests::{
    cluster::{cluster, eventually, outside_client, underlay_takes_xdp_tx, UNDERLAY_PREFIX},
    policy::{
        create_policy, only_the_allowed_tiers_talk, opens, three_tier_policies, tier, Held,
        API_PORT, DB_PORT, OTHER_PORT,
    },
    process::metric,
};

/// Allowed into api by a CIDR rule, through the routing mesh.
const CLIENT: &str = "10.96.0.100";
/// Outside the cluster too, and allowed nothing.
const STRANGER: &str = "10.96.0.101";
const PUBLISHED: u16 = 30080;

#[test]
fn three_tiers_on_three_hosts_only_the_allowed_pairs_talk_on_every_path() {
    let (underlay, _etcd, mut hosts) = cluster(3, |_| vec!["--uplink=uplink0".into()]);
    let [h0, h1, h2] = &mut hosts[..] else {
        unreachable!("three hosts")
    };
    let client = outside_client(&underlay, "ndPc", CLIENT);
    let stranger = outside_client(&underlay, "ndPs", STRANGER);
    underlay_takes_xdp_tx(&underlay);
    let admin = &h0.netd;
    admin.ok(&[
        "network",
        "create",
        "o1",
        "--subnet",
        "10.92.0.0/24",
        "--overlay",
    ]);
    let web = tier(&h0.netd, "web", "o1");
    let api = tier(&h1.netd, "api", "o1");
    let db = tier(&h2.netd, "db", "o1");
    // No policy selects `other`: only the ingress of what it reaches judges it.
    let other = tier(&h0.netd, "other", "o1");
    let out = admin.ok(&[
        "service",
        "create",
        "apisvc",
        "--network",
        "o1",
        "--selector",
        "tier=api",
        "--port",
        "80:8080/tcp",
        "--publish",
        &format!("{PUBLISHED}:8080/tcp"),
    ]);
    let vip = out.split_whitespace().nth(1).expect("VIP").to_string();
    for h in [&*h0, &*h1, &*h2] {
        eventually("the service on every host", || {
            h.netd
                .ok(&["service", "ls"])
                .lines()
                .any(|l| l.contains(&vip) && l.contains("1/1"))
        });
    }
    assert!(opens(&other.ns, &db.ip, OTHER_PORT), "open before policy");

    let client_rule = format!("allow from cidr:{CLIENT}/32 tcp/8080");
    three_tier_policies(admin, &[&client_rule]);
    // Hosts 1 and 2 apply what host 0 stored once their watch sees it.
    let took = eventually("db's ingress enforced on host 2", || {
        !opens(&other.ns, &db.ip, DB_PORT)
    });
    println!("db's policy reached host 2 in {took:?}");
    eventually("api's ingress enforced on host 1", || {
        !opens(&other.ns, &api.ip, API_PORT)
    });

    // Across hosts: the sender's egress, then the receiver's ingress at
    // its decap; replies pass on each end's conntrack.
    only_the_allowed_tiers_talk(&web, &api, &db);
    assert!(
        !opens(&other.ns, &db.ip, DB_PORT),
        "other→db must be refused"
    );
    // Through the VIP: DNAT on host 0, api's ingress decides on host 1.
    assert!(opens(&web.ns, &vip, 80), "web→VIP:80→api:8080");
    assert!(!opens(&other.ns, &vip, 80), "other→VIP:80 refused by api");
    // Through the routing mesh, by the client's own address: host 0
    // tunnels to api, host 1 delivers to it directly.
    for i in 0..2 {
        let at = format!("{UNDERLAY_PREFIX}.{}", i + 1);
        assert!(
            opens(&client, &at, PUBLISHED),
            "client→host-{i}:{PUBLISHED}"
        );
        assert!(
            !opens(&stranger, &at, PUBLISHED),
            "stranger→host-{i}:{PUBLISHED} refused by api's CIDR rule"
        );
    }

    // The counters on host 1 name the rules that let things in, after a
    // sweep, and the refusals are counted where they were decapsulated.
    std::thread::sleep(Duration::from_secs(6));
    let metrics = h1.netd.scrape(&h1.ns).expect("metrics");
    let hits = |rule: u32| {
        let name = format!(
            "netd_policy_rule_packets_total{{direction=\"ingress\",policy=\"api\",rule=\"{rule}\",verdict=\"allowed\"}}"
        );
        metric(&metrics, &name).unwrap_or(0)
    };
    assert!(hits(1) >= 2, "web's rule on host 1: {}", hits(1));
    assert!(
        hits(2) >= 2,
        "the client's CIDR rule on host 1: {}",
        hits(2)
    );
    let denied = metric(
        &metrics,
        &format!(
            "netd_drops_total{{hook=\"{}\",reason=\"policy_denied\"}}",
            h1.netd.uplink_counters("uplink0")
        ),
    )
    .unwrap_or(0);
    assert!(denied >= 3, "refused at host 1's decap: {denied}");

    // A rule added on host 0 opens a new path on host 2 within the bound
    // (the watch; at most the 30 s resync); removed, it closes again.
    create_policy(
        admin,
        "db-other",
        "tier=db",
        &["allow from tier=other tcp/5432"],
        &[],
    );
    let took = eventually("the added rule on host 2", || {
        opens(&other.ns, &db.ip, DB_PORT)
    });
    println!("an added rule held on host 2 in {took:?}");
    let mut held = Held::open(&other.ns, &db.ip, DB_PORT);
    admin.ok(&["policy", "rm", "db-other"]);
    let took = eventually("the removed rule on host 2", || {
        !opens(&other.ns, &db.ip, DB_PORT)
    });
    println!("a removed rule held on host 2 in {took:?}");
    assert!(held.echoes(), "an established connection outlives its rule");

    // Restarts on the receiving host: pinned maps keep enforcing while its
    // netd is down, and a held connection keeps going.
    let mut held = Held::open(&web.ns, &api.ip, API_PORT);
    assert!(held.echoes());
    h1.netd.kill();
    assert!(held.echoes(), "after kill -9 on host 1");
    assert!(!opens(&other.ns, &api.ip, API_PORT), "while netd is down");
    assert!(!opens(&stranger, "10.96.0.2", PUBLISHED), "mesh while down");
    h1.netd.restart(&h1.ns);
    assert!(held.echoes(), "after the restart on host 1");
    assert!(!opens(&other.ns, &api.ip, API_PORT), "after the restart");
    assert!(
        opens(&web.ns, &api.ip, API_PORT),
        "web→api after the restart"
    );
    assert!(
        opens(&client, "10.96.0.2", PUBLISHED),
        "mesh after the restart"
    );
}
