//! The baselines: the same rules as iptables and as nftables (with and
//! without a verdict map), on a router between the two sandboxes.

use super::*;

/// The host as a router between the client's and the server's subnets.
pub(super) fn router(w: &World) -> NetNs {
    let host = NetNs::new("bpR");
    veth_between(
        &host,
        "bpc",
        "10.72.1.1/24",
        &w.client,
        "eth0",
        &format!("{CLIENT_IP}/24"),
    );
    veth_between(
        &host,
        "bps",
        "10.72.2.1/24",
        &w.server,
        "eth0",
        &format!("{SERVER_IP}/24"),
    );
    w.client
        .ip(&["route", "add", "default", "via", "10.72.1.1"]);
    w.server
        .ip(&["route", "add", "default", "via", "10.72.2.1"]);
    let out = host.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    if !out.status.success() {
        eprintln!("sysctl: {}", String::from_utf8_lossy(&out.stderr));
    }
    host
}

/// Weave npc's shape: conntrack first, then a chain of the rules for new
/// flows to the server, then a drop.
pub(super) fn iptables_rules(n: usize) -> String {
    let mut r = String::from(
        "*filter\n:NPC-INGRESS - [0:0]\n\
         -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
    );
    r.push_str(&format!(
        "-A FORWARD -d {SERVER_IP}/32 -m conntrack --ctstate NEW -j NPC-INGRESS\n"
    ));
    for i in 0..n - 1 {
        r.push_str(&format!(
            "-A NPC-INGRESS -s {}/32 -p tcp -m tcp --dport {} -j ACCEPT\n",
            filler_ip(i),
            filler_port(i)
        ));
    }
    r.push_str(&format!(
        "-A NPC-INGRESS -s {CLIENT_IP}/32 -p tcp -m tcp --dport {PORT} -j ACCEPT\n\
         -A NPC-INGRESS -j DROP\nCOMMIT\n"
    ));
    r
}

pub(super) fn nft_rules(n: usize, vmap: bool) -> String {
    let element = |ip: &str, port: u16, verdict: Option<bool>| match verdict {
        None => format!("{ip} . {port}"),
        Some(drop) => format!("{ip} . {port} : {}", if drop { "drop" } else { "accept" }),
    };
    let mut elements: Vec<String> = (0..n - 1)
        .map(|i| element(&filler_ip(i), filler_port(i), vmap.then(|| filler_drops(i))))
        .collect();
    elements.push(element(CLIENT_IP, PORT, vmap.then_some(false)));
    let (decl, lookup) = if vmap {
        (
            "map rules { type ipv4_addr . inet_service : verdict;",
            "ip saddr . tcp dport vmap @rules",
        )
    } else {
        (
            "set rules { type ipv4_addr . inet_service;",
            "ip saddr . tcp dport @rules accept",
        )
    };
    format!(
        "table ip netd_bench {{\n\
         {decl} elements = {{ {} }}; }}\n\
         chain forward {{ type filter hook forward priority filter; policy accept;\n\
         ct state established,related accept\n\
         ip daddr {SERVER_IP} ct state new jump server_in; }}\n\
         chain server_in {{ {lookup}; drop; }}\n}}\n",
        elements.join(", ")
    )
}

pub(super) fn setup_kernel(system: System, n: usize) -> anyhow::Result<Setup> {
    let world = world();
    let host = router(&world);
    let program = match (system, n) {
        (_, 0) => Duration::ZERO,
        (System::Iptables, _) => load_rules(&host, "iptables-restore", &[], &iptables_rules(n))?,
        (System::NftSet, _) => load_rules(&host, "nft", &["-f"], &nft_rules(n, false))?,
        (System::NftVmap, _) => load_rules(&host, "nft", &["-f"], &nft_rules(n, true))?,
        (System::Netd, _) => unreachable!("netd has its own setup"),
    };
    serve_bytes(&world.server, PORT, world.stop.clone());
    Ok(Setup {
        system,
        rules: n,
        program,
        server_ip: SERVER_IP.into(),
        netd: None,
        _host: host,
        _pins: None,
        world,
    })
}
