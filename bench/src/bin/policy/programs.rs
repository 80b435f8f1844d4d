//! What a policy costs the endpoint program per packet, by the number
//! of rules, beside the do-nothing TC program.

use super::*;

/// An address the client does not have, for filler rule `i`.
pub(super) fn filler_ip(i: usize) -> String {
    format!("172.16.{}.{}", i / 250, i % 250 + 1)
}

pub(super) fn filler_port(i: usize) -> u16 {
    5000 + (i % 1000) as u16
}

/// Filler rule `i` of the verdict map: every hundredth a drop.
pub(super) fn filler_drops(i: usize) -> bool {
    i % 100 == 99
}

/// The N rules in netd's CLI form; `client` is how the client is named.
pub(super) fn netd_rules(n: usize, client: &str) -> Vec<String> {
    let mut rules: Vec<String> = (0..n.saturating_sub(1))
        .map(|i| format!("allow from cidr:{}/32 tcp/{}", filler_ip(i), filler_port(i)))
        .collect();
    if n > 0 {
        rules.push(format!("allow from {client} tcp/{PORT}"));
    }
    rules
}

pub(super) const SINGLE_RUNS: usize = 4000;

pub(super) const PASSES: usize = 5;

/// netd's endpoint program with the N rules on api's ingress, web→api:8080,
/// at every size in `sizes`: the sizes measured in turn, `PASSES` times,
/// so that a drift of the machine lands on all of them alike.
pub(super) fn program_costs(sizes: &[usize], repeat: u32) -> Vec<ProgramCost> {
    let (networks, _) = model();
    let mut fixtures: Vec<Fixture> = sizes
        .iter()
        .map(|&n| {
            let rules = netd_rules(n, "tier=web");
            let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
            let policies = match n {
                0 => vec![],
                _ => vec![policy(&networks, 1, "api", Some(rules.as_slice()), None)],
            };
            fixture(&policies)
        })
        .collect();
    let mut established = vec![Vec::new(); sizes.len()];
    let mut first = vec![Vec::new(); sizes.len()];
    // A SYN is always judged: the flow's entry is made by one, and the
    // established path timed on its ACKs.
    let established_flow = segment(WEB_IP, API_IP, 40000, PORT, false);
    for f in fixtures.iter_mut() {
        f.time_tc(TC_ENDPOINT, &tcp(WEB_IP, API_IP, 40000, PORT, false), 1);
    }
    for pass in 0..PASSES {
        for (i, f) in fixtures.iter_mut().enumerate() {
            // Fresh flows: each a conntrack miss, the ipcache and policy
            // lookups, and an insert.
            let ports =
                (0..SINGLE_RUNS / PASSES).map(|k| 20000 + (pass * SINGLE_RUNS / PASSES + k) as u16);
            first[i].extend(
                ports.map(|p| f.time_tc(TC_ENDPOINT, &tcp(WEB_IP, API_IP, p, PORT, false), 1)),
            );
            // One flow's ACK, every repeat a conntrack hit.
            established[i].push(f.time_tc(TC_ENDPOINT, &established_flow, repeat));
        }
    }
    sizes
        .iter()
        .zip(established.into_iter().zip(first))
        .map(|(&rules, (established, first))| ProgramCost {
            rules,
            established_ns: median(&established),
            first_packet_ns: median(&first),
        })
        .collect()
}

/// The TC no-op's cost, repeated and in single runs.
pub(super) fn baseline(repeat: u32) -> (f64, f64) {
    let mut f = fixture(&[]);
    f.load_baselines();
    let packet = tcp(WEB_IP, API_IP, 40000, PORT, false);
    let repeated: Vec<f64> = (0..5)
        .map(|_| f.time_tc(TC_BASELINE, &packet, repeat))
        .collect();
    let single: Vec<f64> = (0..SINGLE_RUNS)
        .map(|_| f.time_tc(TC_BASELINE, &packet, 1))
        .collect();
    let (repeated, single) = (median(&repeated), median(&single));
    (repeated, single)
}
