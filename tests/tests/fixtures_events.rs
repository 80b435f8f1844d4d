//! The datapath's events through BPF_PROG_TEST_RUN: nothing while no
//! monitor listens; while one does, a dropped packet's event carries its
//! hook, reason, length and first bytes, on TC and on XDP; each CPU's
//! budget holds a flood to its burst and counts what it refused.

use netd_common::{
    counters::{DropReason, Hook},
    events::{EmitBudget, Event, EventKind, MonitorConfig, CAPTURE_BYTES},
};
use netd_tests::fixture::Fixture;
use testpkt::{ipv4_tcp, with_ihl};

const TC_ENDPOINT: &str = "netd_tc_endpoint";
const XDP_UPLINK: &str = "netd_xdp_uplink";
const TC_ACT_SHOT: i64 = 2;
const XDP_DROP: i64 = 1;

/// BPF_PROG_TEST_RUN runs on the caller's CPU: one CPU, one budget.
fn stay_on_cpu_0() {
    // SAFETY: a plain syscall on a set this function owns.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0
        );
    }
}

fn drops(rate: u32, burst: u32) -> MonitorConfig {
    MonitorConfig {
        kinds: EventKind::Drop.bit(),
        rate,
        burst,
        _pad: 0,
    }
}

fn drain(events: &mut netd::dataplane::events::Events) -> Vec<Event> {
    std::iter::from_fn(|| events.next_event()).collect()
}

#[test]
fn a_drop_is_an_event_with_its_bytes_only_while_a_monitor_listens() {
    stay_on_cpu_0();
    let mut f = Fixture::load();
    let mut events = f.datapath.take_events().expect("the monitor's maps");
    let malformed = with_ihl(ipv4_tcp(), 4);

    // No listener: the drop is counted, and nothing else happens.
    assert_eq!(
        f.run_tc(TC_ENDPOINT, &malformed).expect("run").verdict,
        TC_ACT_SHOT
    );
    assert!(drain(&mut events).is_empty());
    assert_eq!(events.tallies().expect("tallies"), EmitBudget::default());

    events.set(drops(1_000, 100)).expect("monitor on");
    assert_eq!(
        f.run_tc(TC_ENDPOINT, &malformed).expect("run").verdict,
        TC_ACT_SHOT
    );
    let got = drain(&mut events);
    assert_eq!(got.len(), 1, "{got:?}");
    let h = got[0].header;
    assert_eq!(
        (h.kind, h.hook, h.reason),
        (
            EventKind::Drop as u8,
            Hook::TcEndpoint as u8,
            DropReason::Malformed as u8
        )
    );
    assert_eq!(h.len as usize, malformed.len());
    let n = malformed.len().min(CAPTURE_BYTES);
    assert_eq!(h.captured as usize, n);
    assert_eq!(
        &got[0].packet[..n],
        &malformed[..n],
        "the packet's first bytes"
    );
    assert!(h.ts_ns > 0);

    // On XDP too; and a packet that passes is no event.
    assert_eq!(
        f.run_xdp(XDP_UPLINK, &malformed).expect("run").verdict,
        XDP_DROP
    );
    let got = drain(&mut events);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].header.hook, got[0].header.reason),
        (Hook::XdpUplink as u8, DropReason::Malformed as u8)
    );
    assert_eq!(&got[0].packet[..n], &malformed[..n]);
    f.run_xdp(XDP_UPLINK, &ipv4_tcp()).expect("run");
    assert!(
        drain(&mut events).is_empty(),
        "a passed packet made an event"
    );

    // A flood: the burst goes out, the rest is counted suppressed.
    events.set(drops(1, 5)).expect("a small budget");
    let before = events.tallies().expect("tallies");
    for _ in 0..50 {
        f.run_tc(TC_ENDPOINT, &malformed).expect("run");
    }
    let sent = drain(&mut events).len() as u64;
    let after = events.tallies().expect("tallies");
    assert!((5..=6).contains(&sent), "{sent} events from a burst of 5");
    assert_eq!(after.emitted - before.emitted, sent);
    assert_eq!(after.suppressed - before.suppressed, 50 - sent);

    // The listener gone: nothing again.
    events.set(MonitorConfig::default()).expect("monitor off");
    f.run_tc(TC_ENDPOINT, &malformed).expect("run");
    assert!(drain(&mut events).is_empty());
    assert_eq!(events.tallies().expect("tallies"), after);
}
