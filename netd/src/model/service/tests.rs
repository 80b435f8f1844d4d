//! Services from their specs: ports, publishing, affinity, VIPs,
//! backends, and every refusal naming its field.

use super::*;
use crate::model::testing::{endpoint, network};

fn spec(name: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        network: "n1".into(),
        ports: vec!["80:8080".into()],
        selector: Some("app=web".into()),
        ..Default::default()
    }
}

#[test]
fn published_ports_parse_both_of_dockers_syntaxes() {
    let p = |t: &str| t.parse::<PublishedPort>();
    let ingress = |published, target_port, protocol| PublishedPort {
        protocol,
        published,
        target_port,
        mode: PublishMode::Ingress,
        allow: Vec::new(),
    };
    assert_eq!(
        p("8080:80").expect("short"),
        ingress(8080, 80, Protocol::Tcp)
    );
    assert_eq!(p("53/udp").expect("short"), ingress(53, 53, Protocol::Udp));
    assert_eq!(
        p("published=8080,target=80,mode=host,protocol=udp").expect("long"),
        PublishedPort {
            mode: PublishMode::Host,
            ..ingress(8080, 80, Protocol::Udp)
        }
    );
    assert_eq!(
        p("published=9000").expect("long"),
        ingress(9000, 9000, Protocol::Tcp)
    );
    for bad in [
        "",
        "0:80",
        "8080:80/sctp",
        "target=80",
        "published=8080,mode=global",
        "published=0",
        "published=8080,target=x",
        // The short form names its ports once.
        "8080:80,published=9090",
    ] {
        let e = p(bad).expect_err(bad).to_string();
        assert!(e.contains("published="), "{bad:?}: {e}");
    }
}

#[test]
fn a_published_port_takes_source_ranges_in_either_syntax() {
    let p = |t: &str| t.parse::<PublishedPort>();
    let net = |t: &str| t.parse::<ipnet::Ipv4Net>().expect("net");
    let short = p("8080:80/tcp,allow=10.0.0.0/8,allow=192.0.2.7").expect("short");
    assert_eq!(
        (short.published, short.target_port, short.protocol),
        (8080, 80, Protocol::Tcp)
    );
    assert_eq!(short.allow, [net("10.0.0.0/8"), net("192.0.2.7/32")]);
    assert_eq!(
        short.to_string(),
        "8080:80/tcp,allow=10.0.0.0/8,allow=192.0.2.7/32",
        "shown as it can be given again"
    );
    assert_eq!(
        short.to_string().parse::<PublishedPort>().expect("again"),
        short
    );
    let long = p("published=53,protocol=udp,mode=host,allow=10.1.2.3/16").expect("long");
    assert_eq!(long.allow, [net("10.1.0.0/16")], "host bits cleared");
    assert_eq!(long.mode, PublishMode::Host);
    // Given twice, kept once.
    assert_eq!(
        p("80,allow=10.0.0.0/8,allow=10.0.0.0/8")
            .expect("dup")
            .allow
            .len(),
        1
    );

    for (bad, says) in [
        ("80,allow=10.0.0.0/33", "is not an IPv4 address or CIDR"),
        ("80,allow=fd00::/8", "is not an IPv4 address or CIDR"),
        ("80,allow=", "is not an IPv4 address or CIDR"),
        (
            "80,deny=10.0.0.0/8",
            "\"deny=10.0.0.0/8\", which is not understood",
        ),
    ] {
        let e = p(bad).expect_err(bad).to_string();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
    let many = (0..65)
        .map(|i| format!("allow=10.0.{i}.0/24"))
        .collect::<Vec<_>>()
        .join(",");
    let e = p(&format!("80,{many}")).expect_err("65 ranges").to_string();
    assert!(e.contains("at most 64"), "{e}");
}

#[test]
fn a_service_publishes_each_port_once_and_only_with_a_vip() {
    let n1 = network("n1", "10.1.0.0/24", &[]);
    let make = |publish: &[&str], mode| {
        let spec = ServiceSpec {
            publish: publish.iter().map(|t| t.to_string()).collect(),
            mode,
            ports: if mode == Mode::Vip {
                vec!["80".into()]
            } else {
                vec![]
            },
            ..spec("s")
        };
        Service::from_spec(
            &spec,
            std::slice::from_ref(&n1),
            &[],
            &[],
            &BTreeSet::new(),
            1,
        )
    };
    let s = make(&["8080:80", "53/udp"], Mode::Vip).expect("published");
    assert_eq!(s.published.len(), 2);
    let e = make(&["8080:80", "published=8080,target=81"], Mode::Vip)
        .expect_err("twice")
        .to_string();
    assert!(e.contains("8080/tcp is published twice"), "{e}");
    make(&["8080:80", "8080:80/udp"], Mode::Vip).expect("tcp and udp are two ports");
    let e = make(&["8080:80"], Mode::Dnsrr)
        .expect_err("dnsrr")
        .to_string();
    assert!(e.contains("dnsrr"), "{e}");
}

#[test]
fn a_service_may_publish_ports_without_a_vip() {
    let n1 = network("n1", "10.1.0.0/24", &[]);
    let make = |spec: ServiceSpec| {
        Service::from_spec(
            &spec,
            std::slice::from_ref(&n1),
            &[],
            &[],
            &BTreeSet::new(),
            1,
        )
    };
    let only = ServiceSpec {
        ports: vec![],
        publish: vec!["published=8080,target=80,mode=host".into()],
        ..spec("docker-1")
    };
    let s = make(only.clone()).expect("published only");
    assert_eq!((s.vip, s.ports.len(), s.published.len()), (None, 0, 1));
    let e = make(ServiceSpec {
        vip: Some("10.1.0.9".into()),
        ..only.clone()
    })
    .expect_err("a VIP with no port")
    .to_string();
    assert!(e.contains("published ports only has no VIP"), "{e}");
    let e = s
        .updated(
            &ServiceUpdate {
                ports: Some(vec!["80".into()]),
                ..Default::default()
            },
            std::slice::from_ref(&n1),
            &[],
        )
        .expect_err("VIP ports on a service without a VIP")
        .to_string();
    assert!(e.contains("has no VIP"), "{e}");
    let e = s
        .updated(
            &ServiceUpdate {
                publish: Some(vec![]),
                ..Default::default()
            },
            std::slice::from_ref(&n1),
            &[],
        )
        .expect_err("nothing left")
        .to_string();
    assert!(e.contains("must publish a port"), "{e}");
}

#[test]
fn ports_parse_like_docker_publishes_them() {
    let p = |t: &str| t.parse::<ServicePort>();
    assert_eq!(p("80").expect("80").to_string(), "80:80/tcp");
    assert_eq!(p("53/udp").expect("53").to_string(), "53:53/udp");
    assert_eq!(p("80:8080/tcp").expect("80").to_string(), "80:8080/tcp");
    for bad in ["", "0", "80:", "x", "80/sctp", "70000", "80:8080:1"] {
        assert!(p(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_service_gets_a_free_vip_and_selects_labelled_endpoints_of_its_network() {
    let n1 = network("n1", "10.1.0.0/24", &[]);
    let n2 = network("n2", "10.2.0.0/24", std::slice::from_ref(&n1));
    let web1 = endpoint(
        "web1",
        "n1",
        &[("app", "web")],
        Some("10.1.0.2"),
        std::slice::from_ref(&n1),
        &[],
    );
    let db = endpoint(
        "db",
        "n1",
        &[("app", "db")],
        Some("10.1.0.3"),
        std::slice::from_ref(&n1),
        &[],
    );
    let other = endpoint(
        "web-elsewhere",
        "n2",
        &[("app", "web")],
        Some("10.2.0.2"),
        std::slice::from_ref(&n2),
        &[],
    );
    let endpoints = vec![web1.clone(), db.clone(), other];
    let taken = [web1.ipv4, db.ipv4].into_iter().collect();
    let nets = [n1, n2];
    let s = Service::from_spec(&spec("web"), &nets, &[], &endpoints, &taken, 1).expect("valid");
    assert_eq!(s.vip, Some(Ipv4Addr::new(10, 1, 0, 4)));
    let names: Vec<String> = s
        .backends_in(&endpoints)
        .into_iter()
        .map(|b| b.endpoint)
        .collect();
    assert_eq!(names, ["web1"]);

    let named = ServiceSpec {
        backends: vec!["db".into()],
        weights: [("db".to_string(), 3)].into(),
        draining: ["web1".to_string()].into(),
        ..spec("web2")
    };
    let s = Service::from_spec(&named, &nets, &[], &endpoints, &taken, 2).expect("valid");
    let got = s.backends_in(&endpoints);
    assert_eq!(
        got.iter()
            .map(|b| (b.endpoint.as_str(), b.weight, b.draining))
            .collect::<Vec<_>>(),
        [("web1", 1, true), ("db", 3, false)]
    );
}

#[test]
fn bad_requests_name_the_field_and_the_reason() {
    let n1 = network("n1", "10.1.0.0/24", &[]);
    let web1 = endpoint(
        "web1",
        "n1",
        &[],
        Some("10.1.0.2"),
        std::slice::from_ref(&n1),
        &[],
    );
    let n2 = network("n2", "10.2.0.0/24", std::slice::from_ref(&n1));
    let far = endpoint(
        "far",
        "n2",
        &[],
        Some("10.2.0.2"),
        std::slice::from_ref(&n2),
        &[],
    );
    let nets = [n1, n2];
    let endpoints = [web1.clone(), far];
    let existing = Service::from_spec(
        &spec("taken"),
        &nets,
        &[],
        &endpoints,
        &[web1.ipv4].into_iter().collect(),
        1,
    )
    .expect("valid");
    let mut taken: BTreeSet<Ipv4Addr> = [web1.ipv4].into_iter().collect();
    taken.extend(existing.vip);
    let cases = [
        (
            ServiceSpec {
                name: "taken".into(),
                ..spec("x")
            },
            "service \"taken\" already exists",
        ),
        (
            ServiceSpec {
                network: "nope".into(),
                ..spec("x")
            },
            "no network named \"nope\"",
        ),
        (
            ServiceSpec {
                vip: Some("10.9.0.1".into()),
                ..spec("x")
            },
            "vip: address 10.9.0.1 is outside the subnet",
        ),
        (
            ServiceSpec {
                vip: Some("10.1.0.2".into()),
                ..spec("x")
            },
            "vip: address 10.1.0.2 is already in use",
        ),
        (
            ServiceSpec {
                vip: Some("10.1.0.1".into()),
                ..spec("x")
            },
            "vip: address 10.1.0.1 is reserved",
        ),
        (
            ServiceSpec {
                vip: Some("ten".into()),
                ..spec("x")
            },
            "vip: \"ten\" is not an IPv4 address",
        ),
        (
            ServiceSpec {
                ports: vec!["80".into(), "80:81".into()],
                ..spec("x")
            },
            "ports: 80/tcp is given twice",
        ),
        (
            ServiceSpec {
                ports: vec![],
                ..spec("x")
            },
            "ports: a VIP service needs at least one port",
        ),
        (
            ServiceSpec {
                ports: vec!["http".into()],
                ..spec("x")
            },
            "ports: \"http\" is not a port",
        ),
        (
            ServiceSpec {
                selector: Some("app".into()),
                ..spec("x")
            },
            "selector: \"app\" is not key=value",
        ),
        (
            ServiceSpec {
                selector: Some("a=b,a=c".into()),
                ..spec("x")
            },
            "selector: \"a\" is given twice",
        ),
        (
            ServiceSpec {
                weights: [("web1".to_string(), 0)].into(),
                ..spec("x")
            },
            "weights: web1=0: a weight is 1 to 256",
        ),
        (
            ServiceSpec {
                weights: [("web1".to_string(), 257)].into(),
                ..spec("x")
            },
            "weights: web1=257",
        ),
        (
            ServiceSpec {
                backends: vec!["ghost".into()],
                ..spec("x")
            },
            "no endpoint named \"ghost\"",
        ),
        (
            ServiceSpec {
                backends: vec!["far".into()],
                ..spec("x")
            },
            "backends: endpoint \"far\" is not on network \"n1\"",
        ),
        (
            ServiceSpec {
                mode: Mode::Dnsrr,
                vip: Some("10.1.0.9".into()),
                ..spec("x")
            },
            "vip: a dnsrr service has no VIP",
        ),
        (
            ServiceSpec {
                name: "a b".into(),
                ..spec("x")
            },
            "name: \"a b\" is not a valid name",
        ),
        (
            ServiceSpec {
                affinity: Some("sticky".into()),
                ..spec("x")
            },
            "affinity: \"sticky\" is not an affinity",
        ),
        (
            ServiceSpec {
                affinity: Some("client-ip:2d".into()),
                ..spec("x")
            },
            "affinity: \"client-ip:2d\" has a timeout that is not 1 s to 86400 s",
        ),
        (
            ServiceSpec {
                mode: Mode::Dnsrr,
                ports: vec![],
                affinity: Some("client-ip".into()),
                ..spec("x")
            },
            "affinity: a dnsrr service has no VIP",
        ),
    ];
    for (s, expected) in cases {
        let e = Service::from_spec(
            &s,
            &nets,
            std::slice::from_ref(&existing),
            &endpoints,
            &taken,
            2,
        )
        .expect_err("refused")
        .to_string();
        assert!(e.contains(expected), "{s:?}: {e:?}");
    }
}

#[test]
fn affinity_parses_with_kubernetes_defaults_and_limits() {
    let a = |t: &str| t.parse::<Affinity>();
    let secs = |timeout_secs| Affinity::ClientIp { timeout_secs };
    assert_eq!(a("none").expect("none"), Affinity::None);
    assert_eq!(a("client-ip").expect("default"), secs(10_800));
    assert_eq!(a("client-ip:90").expect("secs"), secs(90));
    assert_eq!(a("client-ip:90s").expect("secs"), secs(90));
    assert_eq!(a("client-ip:5m").expect("mins"), secs(300));
    assert_eq!(a("client-ip:24h").expect("hours"), secs(86_400));
    for bad in [
        "",
        "client",
        "none:5",
        "client-ip:",
        "client-ip:0",
        "client-ip:25h",
        "client-ip:5x",
        "client-ip:99999999999h",
    ] {
        assert!(a(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        secs(300).to_string().parse::<Affinity>().expect("again"),
        secs(300)
    );
    let json = serde_json::to_string(&secs(60)).expect("json");
    assert_eq!(json, r#"{"client-ip":{"timeout-secs":60}}"#);
}

#[test]
fn a_service_stored_before_affinity_has_none_and_the_request_leaves_it_out() {
    let n1 = network("n1", "10.1.0.0/24", &[]);
    let s = Service::from_spec(&spec("web"), &[n1], &[], &[], &BTreeSet::new(), 1).expect("valid");
    let mut old = serde_json::to_value(&s).expect("json");
    old.as_object_mut().expect("object").remove("affinity");
    let read: Service = serde_json::from_value(old).expect("old record");
    assert_eq!(read.affinity, Affinity::None);
    let request = serde_json::to_value(spec("web")).expect("json");
    assert!(request.get("affinity").is_none(), "{request}");
}

#[test]
fn an_update_replaces_what_it_gives_and_drains_by_name() {
    let n1 = network("n1", "10.1.0.0/24", &[]);
    let endpoints = [endpoint(
        "web1",
        "n1",
        &[("app", "web")],
        Some("10.1.0.2"),
        std::slice::from_ref(&n1),
        &[],
    )];
    let nets = [n1];
    let s = Service::from_spec(&spec("web"), &nets, &[], &endpoints, &BTreeSet::new(), 1)
        .expect("valid");
    let drained = s
        .updated(
            &ServiceUpdate {
                drain: ["web1".to_string()].into(),
                weights: [("web1".to_string(), 5)].into(),
                ports: Some(vec!["443:8443".into()]),
                ..Default::default()
            },
            &nets,
            &endpoints,
        )
        .expect("valid");
    let b = &drained.backends_in(&endpoints)[0];
    assert!(b.draining && b.weight == 5);
    assert_eq!(drained.ports[0].to_string(), "443:8443/tcp");
    assert_eq!((drained.vip, drained.index), (s.vip, s.index));
    let back = drained
        .updated(
            &ServiceUpdate {
                undrain: ["web1".to_string()].into(),
                ..Default::default()
            },
            &nets,
            &endpoints,
        )
        .expect("valid");
    assert!(!back.backends_in(&endpoints)[0].draining);
    assert_eq!(back.affinity, Affinity::None, "kept when not given");
    let sticky = back
        .updated(
            &ServiceUpdate {
                affinity: Some("client-ip:10m".into()),
                ..Default::default()
            },
            &nets,
            &endpoints,
        )
        .expect("valid");
    assert_eq!(sticky.affinity, Affinity::ClientIp { timeout_secs: 600 });
    let e = s
        .updated(
            &ServiceUpdate {
                selector: Some("=x".into()),
                ..Default::default()
            },
            &nets,
            &endpoints,
        )
        .expect_err("refused");
    assert!(e.to_string().starts_with("selector:"), "{e}");
}
