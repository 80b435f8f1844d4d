//! The load-balancing path in the endpoint program, per packet, beside
//! the do-nothing TC program (BPF_PROG_TEST_RUN).

use super::*;

/// The LB path's cost. A repeated BPF_PROG_TEST_RUN runs on the packet
/// as the previous run left it, so the established path is timed on a
/// ping-pong pair of services (VIP:80 → backend B:8080, and B:8080 → VIP:80
/// as a second service in the maps), every repeat a conntrack hit and a
/// DNAT. A flow's first packet can only be timed by single runs on fresh
/// packets; those carry a fixed cost of their own, so they are shown
/// beside single runs of the no-op and of plain local forwarding.
#[derive(Serialize)]
pub(super) struct LbPath {
    pub(super) repeat: u32,
    pub(super) tc_baseline_ns: f64,
    pub(super) established_ns: f64,
    /// The same endpoint program on a packet to a container's own address
    /// (no VIP): what the service path adds to plain forwarding.
    pub(super) plain_forward_ns: f64,
    pub(super) single_runs: usize,
    pub(super) single_tc_baseline_ns: f64,
    pub(super) single_plain_forward_ns: f64,
    pub(super) single_first_packet_ns: f64,
}

/// The endpoint program's LB path on crafted packets: a client at
/// 10.1.0.2 to VIP 10.1.0.100:80, ten backends.
pub(super) fn lb_path(repeat: u32) -> LbPath {
    let mut f = Fixture::load();
    f.load_baselines();
    let host_mac = [0x0a, 0, 0, 0, 0, 1];
    let client = [10, 1, 0, 2];
    let client_mac = [0x02, 0x6e, 10, 1, 0, 2];
    let vip = [10, 1, 0, 100];
    let mut ops = vec![MapOp::put(
        tables::NETD_NETWORKS,
        1,
        NetworkEntry {
            gateway: [10, 1, 0, 1],
            vni: 0,
        },
    )];
    // The flags netd writes: no policy anywhere, and only the backends
    // back a service.
    ops.extend(local_endpoint_flagged(
        1,
        1,
        client,
        client_mac,
        host_mac,
        LOCAL_NO_POLICY | LOCAL_NO_SERVICE,
    ));
    let mut table = MaglevTable::default();
    for b in 0..BACKENDS as u8 {
        let ip = [10, 1, 0, 10 + b];
        ops.extend(local_endpoint_flagged(
            50 + u32::from(b),
            1,
            ip,
            [0x02, 0x6e, 10, 1, 0, 10 + b],
            host_mac,
            LOCAL_NO_POLICY,
        ));
        ops.push(active_backend(1, ip));
    }
    for (i, slot) in table.slots.iter_mut().enumerate() {
        *slot = u32::from_ne_bytes([10, 1, 0, 10 + (i % BACKENDS) as u8]);
    }
    ops.push(MapOp::put(tables::NETD_MAGLEV, 1, table));
    ops.push(MapOp::put(
        tables::NETD_SERVICES,
        ServiceKey {
            vip,
            port: PORT.to_be_bytes(),
            proto: PROTO_TCP,
            _pad: 0,
        },
        ServiceEntry {
            table: 1,
            active: BACKENDS as u32,
            target_port: TARGET.to_be_bytes(),
            flags: 0,
            affinity_secs: 0,
        },
    ));
    ops.push(MapOp::put(
        tables::NETD_VIPS,
        vip,
        VipEntry {
            network: 1,
            table: 1,
        },
    ));
    for op in &ops {
        f.maps.apply(op).expect("map write");
    }
    let packet = |port: u16| {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2(client_mac, host_mac)
            .ipv4(client, vip, 64)
            .tcp(port, PORT, 1, 64240)
            .write(&mut out, b"x")
            .expect("packet");
        out
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    const RUNS: usize = 4000;
    let single = |f: &mut Fixture, name: &str, packets: &mut dyn Iterator<Item = Vec<u8>>| {
        median(packets.map(|p| f.time_tc(name, &p, 1)).collect())
    };
    // A new flow per run: each a conntrack miss, a Maglev pick, two inserts.
    let first = single(
        &mut f,
        TC_ENDPOINT,
        &mut (0..RUNS).map(|i| packet(20000 + i as u16)),
    );
    let noop_single = single(&mut f, TC_BASELINE, &mut (0..RUNS).map(|_| packet(20000)));
    let to_backend = |port: u16| {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2(client_mac, host_mac)
            .ipv4(client, [10, 1, 0, 10], 64)
            .tcp(port, 9999, 1, 64240)
            .write(&mut out, b"x")
            .expect("packet");
        out
    };
    let plain = single(
        &mut f,
        TC_ENDPOINT,
        &mut (0..RUNS).map(|_| to_backend(20000)),
    );

    // Before 10.1.0.10 is made a VIP below.
    let plain_forward = median(
        (0..5)
            .map(|_| f.time_tc(TC_ENDPOINT, &to_backend(20000), repeat))
            .collect(),
    );

    // The ping-pong pair: backend 10.1.0.10:8080 is also a VIP, back to
    // VIP:80, so every repeated run is an established flow's DNAT.
    let b = [10, 1, 0, 10];
    for op in [
        active_backend(2, vip),
        MapOp::put(tables::NETD_MAGLEV, 2, maglev_all_to(vip)),
        MapOp::put(
            tables::NETD_SERVICES,
            ServiceKey {
                vip: b,
                port: TARGET.to_be_bytes(),
                proto: PROTO_TCP,
                _pad: 0,
            },
            ServiceEntry {
                table: 2,
                active: 1,
                target_port: PORT.to_be_bytes(),
                flags: 0,
                affinity_secs: 0,
            },
        ),
        MapOp::put(
            tables::NETD_VIPS,
            b,
            VipEntry {
                network: 1,
                table: 2,
            },
        ),
    ] {
        f.maps.apply(&op).expect("map write");
    }
    // Port 30000 picks backend 10.1.0.10 in this table? Find a source
    // port whose first run lands on it.
    let port = (30000..40000u16)
        .find(|p| {
            let run = f.run_tc(TC_ENDPOINT, &packet(*p)).expect("run");
            run.output[30..34] == b
        })
        .expect("a flow to 10.1.0.10");
    let established = median(
        (0..5)
            .map(|_| f.time_tc(TC_ENDPOINT, &packet(port), repeat))
            .collect(),
    );
    let noop = median(
        (0..5)
            .map(|_| f.time_tc(TC_BASELINE, &packet(port), repeat))
            .collect(),
    );
    LbPath {
        repeat,
        tc_baseline_ns: noop,
        established_ns: established,
        plain_forward_ns: plain_forward,
        single_runs: RUNS,
        single_tc_baseline_ns: noop_single,
        single_plain_forward_ns: plain,
        single_first_packet_ns: first,
    }
}
