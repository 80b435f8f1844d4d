//! A port published on a host's veth uplink, reached by a client namespace
//! on the other end: at TC (the default on a veth) for a client whose
//! veth leaves checksums partial, as veths do; at XDP when asked for. A
//! transfer through it survives an upgrade from the release whose uplinks
//! were all XDP, a restart and a kill -9, on both hooks.

use std::{net::SocketAddr, time::Duration};

use netd_tests::{
    fixture::TempPins,
    free_port,
    netns::{veth_between, NetNs},
    process::{built_by_xtask, metric, netd_bin, Netd},
    services::{connect_at, serve},
    traffic::{echo_server, StreamUnderway},
    unique_name,
};

const HOST: &str = "10.98.0.1";
const CLIENT: &str = "10.98.0.2";
const PUBLISHED: u16 = 30080;
const PUBLISHED_ECHO: u16 = 30081;
const ECHO_PORT: u16 = 5302;

struct World {
    host: NetNs,
    client: NetNs,
    _backend: NetNs,
    netd: Netd,
    _pins: TempPins,
    _stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A host whose `uplink0` is a veth to the client; `bin` serving it with
/// `args`; backend web1 on a local network answering its name on 8080
/// and echoing on 5302, published as 30080 and 30081. `nic_like`: the
/// client finishes its checksums on transmit, as a NIC does.
fn world(bin: &std::path::Path, nic_like: bool, args: &[&str]) -> World {
    let host = NetNs::new("ndHp");
    let client = NetNs::new("ndCp");
    veth_between(
        &host,
        "uplink0",
        &format!("{HOST}/24"),
        &client,
        &unique_name("cp"),
        &format!("{CLIENT}/24"),
    );
    if nic_like {
        let dev =
            String::from_utf8_lossy(&client.ip(&["-o", "link", "show", "type", "veth"]).stdout)
                .split(": ")
                .nth(1)
                .and_then(|n| n.split('@').next())
                .expect("the client's veth")
                .to_string();
        netd::netlink::finish_checksums_on_transmit(&client.path(), &dev)
            .expect("transmit checksum offload off on the client");
    }
    let pins = TempPins::new();
    let mut all = vec!["--uplink", "uplink0"];
    all.extend(args);
    let mut netd = Netd::start_bin(bin, &host, pins.layout.root(), free_port(), &all);
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "n1", "--subnet", "10.43.0.0/24"]);
    let backend = NetNs::new("ndBp");
    netd.endpoint("web1", "n1", &backend, &["--label", "app=web"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    serve(&backend, "web1", stop.clone());
    echo_server(&backend, ECHO_PORT);
    netd.ok(&[
        "service",
        "create",
        "web",
        "--network",
        "n1",
        "--selector",
        "app=web",
        "--publish",
        &format!("{PUBLISHED}:8080/tcp"),
        "--publish",
        &format!("{PUBLISHED_ECHO}:{ECHO_PORT}/tcp"),
    ]);
    World {
        host,
        client,
        _backend: backend,
        netd,
        _pins: pins,
        _stop: stop,
    }
}

fn echo_addr() -> SocketAddr {
    format!("{HOST}:{PUBLISHED_ECHO}").parse().expect("address")
}

/// Stop and start, then kill -9 and start, with pauses the stream runs
/// through.
fn restart_and_kill(w: &mut World) {
    let pause = || std::thread::sleep(Duration::from_millis(400));
    pause();
    assert!(w.netd.stop().success(), "{}", w.netd.log());
    pause();
    w.netd.restart(&w.host);
    pause();
    w.netd.kill();
    pause();
    w.netd.restart(&w.host);
    pause();
}

fn assert_whole(stream: StreamUnderway, what: &str) {
    let moved = stream.finish();
    assert!(
        moved.exact && moved.echoed == moved.sent && moved.sent > 1 << 20,
        "{what}: {moved:?}"
    );
}

/// The client's veth leaves TCP checksums partial (the default): the
/// uplink gets TC, `netd status` says so and why, and the published port
/// answers with the client's own address, a transfer staying whole
/// through a restart and a kill -9.
#[test]
fn a_plain_veth_client_reaches_a_published_port_through_the_tc_uplink_and_its_restarts() {
    let mut w = world(&netd_bin(), false, &[]);
    let status = w.netd.ok(&["status"]);
    assert!(
        status.contains("uplink     uplink0: tc (a veth"),
        "{status}"
    );
    let (_, greeting) = connect_at(&w.client, HOST, PUBLISHED);
    assert_eq!(
        greeting,
        format!("web1:{CLIENT}"),
        "the client's own address"
    );
    let stream = StreamUnderway::start(&w.client, echo_addr());
    restart_and_kill(&mut w);
    assert_whole(stream, "through the TC uplink");
    let redirected = metric(
        &w.netd.scrape(&w.host).expect("metrics"),
        "netd_packets_total{hook=\"tc_uplink\",verdict=\"redirect\"}",
    )
    .unwrap_or(0);
    assert!(redirected > 100, "tc_uplink redirected {redirected}");
}

/// From the release whose uplinks were all XDP (a client that finishes
/// its checksums, which that release needs) to this one, under a
/// transfer: with `mode` the uplink ends on `hook`, and the transfer
/// stays whole through the upgrade, a restart and a kill -9.
fn upgrade_under_a_transfer(mode: &str, hook: &str) {
    let old = built_by_xtask(
        "NETD_UPGRADE_FROM_XDP_UPLINKS_BIN",
        "the last release whose uplinks were all XDP",
    );
    let mut w = world(&old, true, &[]);
    let stream = StreamUnderway::start(&w.client, echo_addr());
    std::thread::sleep(Duration::from_millis(400));
    assert!(w.netd.stop().success(), "{}", w.netd.log());
    w.netd.switch_binary(&netd_bin());
    w.netd.set_flag("--uplink-mode", mode);
    w.netd.restart(&w.host);
    assert_eq!(w.netd.uplink_hook("uplink0"), hook);
    restart_and_kill(&mut w);
    assert_whole(stream, &format!("upgraded to {hook}"));
}

#[test]
fn an_upgrade_from_xdp_only_uplinks_moves_a_veth_uplink_to_tc_under_a_transfer() {
    upgrade_under_a_transfer("auto", "tc");
}

#[test]
fn an_upgrade_keeping_a_veth_uplink_at_xdp_keeps_a_transfer_whole() {
    upgrade_under_a_transfer("xdp", "xdp native");
}

/// Whether `client` gets a greeting from `ip:PUBLISHED` within a second.
fn answers_at(client: &NetNs, ip: &str) -> bool {
    let addr: SocketAddr = format!("{ip}:{PUBLISHED}").parse().expect("address");
    client
        .run(move || {
            let Ok(conn) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            else {
                return false;
            };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            let mut byte = [0u8; 1];
            matches!(std::io::Read::read(&mut &conn, &mut byte), Ok(1))
        })
        .join()
        .expect("client thread")
}

/// Published ports are taken on every address of the uplinks, or only on
/// those `--publish-address` names; one that is no uplink's address stops
/// the start before anything is attached.
#[test]
fn published_ports_answer_on_every_uplink_address_or_on_those_named() {
    const SECOND: &str = "10.98.0.3";
    let mut w = world(&netd_bin(), false, &[]);
    w.host
        .ip(&["addr", "add", &format!("{SECOND}/24"), "dev", "uplink0"]);
    // Addresses are read at start.
    assert!(w.netd.stop().success());
    w.netd.restart(&w.host);
    assert!(answers_at(&w.client, HOST), "the first address");
    assert!(answers_at(&w.client, SECOND), "the second address");
    let status = w.netd.ok(&["status"]);
    assert!(
        status.contains(&format!("publishes  on {HOST}, {SECOND}")),
        "{status}"
    );

    w.netd.set_flag("--publish-address", SECOND);
    assert!(w.netd.stop().success());
    w.netd.restart(&w.host);
    assert!(answers_at(&w.client, SECOND), "the address named");
    assert!(!answers_at(&w.client, HOST), "not the other one");

    let pins = TempPins::new();
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", w.host.path().display()))
        .arg(netd_bin())
        .args([
            "run",
            "--uplink",
            "uplink0",
            "--publish-address",
            "10.98.0.77",
            "--pin-path",
        ])
        .arg(pins.layout.root())
        .output()
        .expect("run netd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--publish-address 10.98.0.77 is no address of an uplink (uplink0 10.98.0.1, uplink0 10.98.0.3)"),
        "{stderr}"
    );
    assert!(!pins.layout.root().exists(), "pins left behind");
}
