//! The baselines: the same services as kube-proxy writes them, with
//! iptables and with nftables, behind a Linux bridge.

use super::*;

/// The client and backends on a Linux bridge (as Docker and kubenet
/// build it), br_netfilter on so that bridged replies see conntrack;
/// VIPs are routed through the bridge's address, as a service CIDR is.
pub(super) fn bridge(w: &World) -> NetNs {
    let host = NetNs::new("bsK");
    host.ip(&["link", "add", "br0", "type", "bridge"]);
    host.ip(&["addr", "add", "10.61.255.254/16", "dev", "br0"]);
    host.ip(&["link", "set", "br0", "up"]);
    for (i, ns) in std::iter::once(&w.client).chain(&w.backends).enumerate() {
        let outside = format!("bsv{i}");
        veth_between(
            &host,
            &outside,
            "192.168.250.1/32",
            ns,
            "eth0",
            &format!("10.61.0.{}/16", i + 1),
        );
        host.ip(&["addr", "flush", "dev", &outside]);
        host.ip(&["link", "set", &outside, "master", "br0"]);
        ns.ip(&["route", "add", "default", "via", "10.61.255.254"]);
    }
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.bridge.bridge-nf-call-iptables", "1"),
    ] {
        let out = host.exec("sysctl", &["-qw", &format!("{key}={value}")]);
        if !out.status.success() {
            eprintln!("sysctl {key}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    host
}

/// The service whose VIP the connections go to: the middle one, so that
/// iptables' KUBE-SERVICES chain is walked halfway, as on average (the
/// first rule would hide its linear cost).
pub(super) fn measured(services: usize) -> usize {
    services / 2
}

pub(super) fn vip_of(i: usize) -> String {
    format!("10.62.{}.{}", i / 250, i % 250 + 1)
}

pub(super) fn backend_ip(b: usize) -> String {
    format!("10.61.0.{}", b + 2)
}

/// kube-proxy's iptables mode, for `services` services.
pub(super) fn iptables_rules(services: usize) -> String {
    let mut r = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
    );
    let mut rules = String::new();
    for s in 0..services {
        r.push_str(&format!(":KUBE-SVC-{s} - [0:0]\n"));
        rules.push_str(&format!(
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"default/s{s}:http cluster IP\" -m tcp --dport {PORT} -j KUBE-SVC-{s}\n",
            vip_of(s)
        ));
        rules.push_str(&svc_chain(s));
    }
    r.push_str(&rules);
    r.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE\nCOMMIT\n",
    );
    r
}

/// One service's chain and its endpoint chains (declared by the caller).
pub(super) fn svc_chain(s: usize) -> String {
    let mut out = String::new();
    let mut decl = String::new();
    for b in 0..BACKENDS {
        decl.push_str(&format!(":KUBE-SEP-{s}-{b} - [0:0]\n"));
        let left = BACKENDS - b;
        if left > 1 {
            out.push_str(&format!(
                "-A KUBE-SVC-{s} -m statistic --mode random --probability {:.11} -j KUBE-SEP-{s}-{b}\n",
                1.0 / left as f64
            ));
        } else {
            out.push_str(&format!("-A KUBE-SVC-{s} -j KUBE-SEP-{s}-{b}\n"));
        }
        let ip = backend_ip(b);
        out.push_str(&format!(
            "-A KUBE-SEP-{s}-{b} -s {ip}/32 -j KUBE-MARK-MASQ\n\
             -A KUBE-SEP-{s}-{b} -p tcp -m tcp -j DNAT --to-destination {ip}:{TARGET}\n"
        ));
    }
    decl + &out
}

/// kube-proxy's nftables mode, for `services` services.
pub(super) fn nft_rules(services: usize) -> String {
    let mut r = String::from(
        "table ip kube-proxy {\n\
         chain mark-for-masquerade { meta mark set meta mark or 0x4000; }\n\
         chain masquerading { type nat hook postrouting priority srcnat; meta mark & 0x4000 == 0x4000 masquerade; }\n\
         chain nat-prerouting { type nat hook prerouting priority dstnat; jump services; }\n\
         chain nat-output { type nat hook output priority -100; jump services; }\n",
    );
    r.push_str("map service-ips { type ipv4_addr . inet_proto . inet_service : verdict;\n");
    if services > 0 {
        r.push_str("elements = { ");
        let elements: Vec<String> = (0..services)
            .map(|s| format!("{} . tcp . {PORT} : goto service-{s}", vip_of(s)))
            .collect();
        r.push_str(&elements.join(", "));
        r.push_str(" };\n");
    }
    r.push_str("}\nchain services { ip daddr . meta l4proto . th dport vmap @service-ips; }\n");
    for s in 0..services {
        r.push_str(&nft_service(s));
    }
    r.push_str("}\n");
    r
}

pub(super) fn nft_service(s: usize) -> String {
    let mut r = String::new();
    let arms: Vec<String> = (0..BACKENDS)
        .map(|b| format!("{b} : goto endpoint-{s}-{b}"))
        .collect();
    r.push_str(&format!(
        "chain service-{s} {{ numgen random mod {BACKENDS} vmap {{ {} }}; }}\n",
        arms.join(", ")
    ));
    for b in 0..BACKENDS {
        let ip = backend_ip(b);
        r.push_str(&format!(
            "chain endpoint-{s}-{b} {{ ip saddr {ip} jump mark-for-masquerade; meta l4proto tcp dnat to {ip}:{TARGET}; }}\n"
        ));
    }
    r
}

pub(super) fn bench_kernel(args: &Args, system: System, services: usize) -> anyhow::Result<Point> {
    let w = world();
    let host = bridge(&w);
    serve(&w);
    let (program, change) = match system {
        System::Iptables => {
            let program = load_rules(&host, "iptables-restore", &[], &iptables_rules(services))?;
            // kube-proxy's partial sync: only the changed service's chains,
            // restored without flushing the rest.
            let s = services - 1;
            let delta = format!("*nat\n:KUBE-SVC-{s} - [0:0]\n{}COMMIT\n", svc_chain(s));
            let change = load_rules(&host, "iptables-restore", &["--noflush"], &delta)?;
            (program, change)
        }
        System::Nftables => {
            let program = load_rules(&host, "nft", &["-f"], &nft_rules(services))?;
            let s = services - 1;
            let delta = format!(
                "flush chain ip kube-proxy service-{s}\n\
                 add rule ip kube-proxy service-{s} numgen random mod {BACKENDS} vmap {{ {} }}\n",
                (0..BACKENDS)
                    .map(|b| format!("{b} : goto endpoint-{s}-{}", (b + 1) % BACKENDS))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let change = load_rules(&host, "nft", &["-f"], &delta)?;
            (program, change)
        }
        System::Netd => unreachable!("netd has its own setup"),
    };
    let rate = median_rate(&w, &vip_of(measured(services)), args)?;
    Ok(Point {
        system,
        services,
        connections_per_sec: rate,
        program_secs: program.as_secs_f64(),
        change_ms: change.as_secs_f64() * 1e3,
        rss_mib: None,
    })
}
