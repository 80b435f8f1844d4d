//! Policy on one host, end to end through the CLI: a netd in a "host"
//! namespace, three tiers (web, api, db) each a namespace of its own, and
//! real TCP between them. Only web→api:8080 and api→db:5432 are allowed;
//! every other pair is refused both ways and the counters name the rule.

use std::time::Duration;

use netd_tests::{
    fixture::TempPins,
    netns::NetNs,
    policy::{
        only_the_allowed_tiers_talk, opens, three_tier_policies, tier, Held, API_PORT, DB_PORT,
        OTHER_PORT,
    },
    process::{metric, Netd},
};

fn scrape(netd: &Netd, ns: &NetNs, what: &str) -> u64 {
    metric(&netd.scrape(ns).expect("metrics"), what).unwrap_or(0)
}

#[test]
fn three_tiers_only_the_allowed_pairs_talk_and_restarts_keep_it_so() {
    let host = NetNs::new("ndH");
    let pins = TempPins::new();
    let mut netd = Netd::start(&host, pins.layout.root(), netd_tests::free_port(), &[]);
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "n1", "--subnet", "10.33.0.0/24"]);
    let web = tier(&netd, "web", "n1");
    let api = tier(&netd, "api", "n1");
    let db = tier(&netd, "db", "n1");
    assert!(
        opens(&web.ns, &db.ip, DB_PORT),
        "without policy, all is open"
    );

    three_tier_policies(&netd, &[]);
    // The API call returns once this host enforces it.
    let refused = only_the_allowed_tiers_talk(&web, &api, &db);
    // Through a VIP, the backend's ingress decides (after the DNAT).
    let out = netd.ok(&[
        "service",
        "create",
        "apisvc",
        "--network",
        "n1",
        "--selector",
        "tier=api",
        "--port",
        "80:8080/tcp",
    ]);
    let vip = out.split_whitespace().nth(1).expect("VIP").to_string();
    assert!(opens(&web.ns, &vip, 80), "web→VIP:80→api:8080");
    // `other` has no policy, so its egress is open: api's ingress refuses.
    let other = tier(&netd, "other", "n1");
    assert!(
        !opens(&other.ns, &vip, 80),
        "other→VIP:80 refused by api's ingress"
    );
    let denied = scrape(
        &netd,
        &host,
        "netd_drops_total{hook=\"tc_endpoint\",reason=\"policy_denied\"}",
    );
    assert!(denied >= refused as u64, "policy_denied drops: {denied}");

    // The allowing rules counted what they let through, after a sweep.
    std::thread::sleep(Duration::from_secs(6));
    let allowed = scrape(
        &netd,
        &host,
        "netd_policy_rule_packets_total{direction=\"ingress\",policy=\"api\",rule=\"1\",verdict=\"allowed\"}",
    );
    assert!(allowed >= 1, "api's ingress rule 1 counted: {allowed}");
    let ls = netd.ok(&["policy", "ls"]);
    assert!(ls.contains("ingress/1") && ls.contains("egress/1"), "{ls}");

    // A connection open across a restart and a kill -9 keeps working,
    // and nothing opens meanwhile.
    let mut held = Held::open(&web.ns, &api.ip, API_PORT);
    assert!(held.echoes());
    netd.stop();
    assert!(held.echoes(), "while netd is stopped");
    assert!(
        !opens(&web.ns, &db.ip, DB_PORT),
        "web→db while netd is stopped"
    );
    netd.restart(&host);
    assert!(held.echoes(), "after the restart");
    netd.kill();
    assert!(held.echoes(), "after kill -9");
    assert!(!opens(&db.ns, &web.ip, API_PORT), "db→web after kill -9");
    netd.restart(&host);
    assert!(held.echoes(), "after the second start");

    // A rule removed: new connections are refused once the call returns.
    netd.ok(&["policy", "rm", "db"]);
    assert!(
        opens(&api.ns, &db.ip, DB_PORT),
        "db open again: no policy selects it"
    );
    assert!(
        !opens(&web.ns, &db.ip, OTHER_PORT),
        "web's egress still allows only api"
    );
    netd.ok(&["service", "rm", "apisvc"]);
    netd.ok(&["policy", "rm", "web"]);
    netd.ok(&["policy", "rm", "api"]);
    assert!(opens(&web.ns, &db.ip, DB_PORT), "all open again");
    netd.stop();
}

#[test]
fn bad_policies_are_refused_with_the_field_and_nothing_is_written() {
    let host = NetNs::new("ndH");
    let pins = TempPins::new();
    let mut netd = Netd::start(&host, pins.layout.root(), netd_tests::free_port(), &[]);
    netd.wait_ready(&host);
    for (args, says) in [
        (vec!["--ingress", "allow tcp/70000"], "ports are 1 to 65535"),
        (
            vec!["--ingress", "allow from network:nope"],
            "no network named",
        ),
        (vec!["--ingress", "permit"], "allow, deny or log"),
        (vec![], "needs ingress or egress"),
        (
            vec!["--egress", "allow to cidr:10.0.0.1/8"],
            "host bits set",
        ),
    ] {
        let mut all = vec!["policy", "create", "bad", "--select", "a=b"];
        all.extend(args);
        let (ok, _, stderr) = netd.cli(&all);
        assert!(!ok && stderr.contains(says), "{all:?}: {stderr}");
    }
    let ls = netd.ok(&["policy", "ls", "--json"]);
    assert_eq!(ls.trim(), "[]", "nothing written");
    netd.ok(&["policy", "create", "p", "--ingress", "allow"]);
    let (ok, _, stderr) = netd.cli(&["policy", "create", "p", "--ingress", "allow"]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    netd.stop();
}
