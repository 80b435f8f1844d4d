//! The control maps of the networks' ways out: `NETD_NO_MASQ` (every netd
//! subnet and every unmasqueraded CIDR, the host's for every network and
//! each network's own) and `NETD_EGRESS` (what each network does).

use ipnet::Ipv4Net;
use netd_common::masquerade::{
    EgressEntry, NoMasqFullKey, EGRESS_INTERNAL, EGRESS_MASQUERADE, EVERY_NETWORK,
};

use super::{maps::MapState, tables};
use crate::model::Network;

/// Puts the egress entries of `networks` into `state`, with `host_wide`
/// the CIDRs every network reaches unmasqueraded.
pub fn compile_egress(state: &mut MapState, networks: &[Network], host_wide: &[Ipv4Net]) {
    let mut unmasqueraded = |network: u32, net: &Ipv4Net| {
        state.put(
            tables::NETD_NO_MASQ,
            NoMasqFullKey::range(network, net.network().octets(), net.prefix_len()),
            1u32,
        );
    };
    for n in networks {
        unmasqueraded(EVERY_NETWORK, &n.subnet);
        for net in &n.egress.no_masquerade {
            unmasqueraded(n.index, net);
        }
    }
    for net in host_wide {
        unmasqueraded(EVERY_NETWORK, net);
    }
    for n in networks {
        let e = &n.egress;
        let flags = if e.internal {
            EGRESS_INTERNAL
        } else if e.masquerade {
            EGRESS_MASQUERADE
        } else {
            continue;
        };
        state.put(
            tables::NETD_EGRESS,
            n.index,
            EgressEntry {
                flags,
                egress_ip: e.egress_ip.map_or([0; 4], |ip| ip.octets()),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Egress, NetworkSpec};

    fn network(name: &str, subnet: &str, index: u32, egress: Egress) -> Network {
        let spec = NetworkSpec {
            name: name.into(),
            subnet: subnet.into(),
            ..NetworkSpec::default()
        };
        let mut n = Network::from_spec(&spec, &[], index).expect("network");
        n.egress = egress;
        n
    }

    #[test]
    fn every_subnet_is_unmasqueraded_and_each_network_says_its_way_out() {
        let networks = [
            network("a", "10.1.0.0/24", 1, Egress::default()),
            network(
                "b",
                "10.2.0.0/24",
                2,
                Egress {
                    internal: true,
                    masquerade: false,
                    ..Egress::default()
                },
            ),
            network(
                "c",
                "10.3.0.0/24",
                3,
                Egress {
                    masquerade: false,
                    ..Egress::default()
                },
            ),
            network(
                "d",
                "10.4.0.0/24",
                4,
                Egress {
                    no_masquerade: vec!["192.168.0.0/16".parse().expect("cidr")],
                    egress_ip: Some("192.0.2.9".parse().expect("ip")),
                    ..Egress::default()
                },
            ),
        ];
        let mut state = MapState::default();
        compile_egress(
            &mut state,
            &networks,
            &["172.16.0.0/12".parse().expect("cidr")],
        );
        assert_eq!(state.count(tables::NETD_NO_MASQ.name), 4 + 1 + 1);
        assert_eq!(
            state.get(
                tables::NETD_NO_MASQ,
                &NoMasqFullKey::range(4, [192, 168, 0, 0], 16)
            ),
            Some(1)
        );
        assert_eq!(
            state.get(
                tables::NETD_NO_MASQ,
                &NoMasqFullKey::range(EVERY_NETWORK, [10, 3, 0, 0], 24)
            ),
            Some(1)
        );
        assert_eq!(
            state.get(tables::NETD_EGRESS, &1),
            Some(EgressEntry {
                flags: EGRESS_MASQUERADE,
                egress_ip: [0; 4]
            })
        );
        assert_eq!(
            state.get(tables::NETD_EGRESS, &2).map(|e| e.flags),
            Some(EGRESS_INTERNAL)
        );
        assert_eq!(state.get(tables::NETD_EGRESS, &3), None, "routed: no entry");
        assert_eq!(
            state.get(tables::NETD_EGRESS, &4).map(|e| e.egress_ip),
            Some([192, 0, 2, 9])
        );
    }
}
