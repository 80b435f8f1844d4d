//! Runs netd's programs on crafted packets with `BPF_PROG_TEST_RUN`.

use std::path::PathBuf;

use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp};
use netd::dataplane::{maps::KernelMaps, CounterSnapshot, CountersReader, Datapath, PinLayout};
use netd_common::counters::{
    drop_slot, verdict_slot, Counter, DropReason, Hook, Verdict, COUNTER_SLOTS,
};

/// A bpffs directory removed (with all it pins) on drop.
pub struct TempPins {
    pub layout: PinLayout,
}

impl TempPins {
    pub fn new() -> Self {
        let root = PathBuf::from("/sys/fs/bpf").join(crate::unique_name("netd-test-"));
        Self {
            layout: PinLayout::new(root),
        }
    }
}

impl Default for TempPins {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempPins {
    fn drop(&mut self) {
        let _ = netd::dataplane::loader::remove_pins(&self.layout);
        let _ = std::fs::remove_dir(self.layout.root());
    }
}

/// The datapath loaded with its own pins (so its own counters).
pub struct Fixture {
    pub datapath: Datapath,
    pub counters: CountersReader,
    pub maps: KernelMaps,
    _pins: TempPins,
}

/// What one run did.
#[derive(Debug)]
pub struct Run {
    pub verdict: i64,
    pub output: Vec<u8>,
}

impl Fixture {
    pub fn load() -> Self {
        crate::require_root();
        let pins = TempPins::new();
        let mut datapath = Datapath::load(&pins.layout).expect("load the datapath");
        let counters = datapath.take_counters().expect("counters map");
        let maps = datapath.take_forwarding_maps().expect("forwarding maps");
        Self {
            datapath,
            counters,
            maps,
            _pins: pins,
        }
    }

    /// The datapath with testpkt's sender, A (`IP4_A`, `MAC_A`), an
    /// endpoint of network 1 at ifindex 1, the test runs' interface: the
    /// endpoint program judges what the samples send, as it does on an
    /// endpoint's veth (on any other it passes everything).
    pub fn from_endpoint_a() -> Self {
        Self::from_endpoint_a_flagged(0)
    }

    /// [`Self::from_endpoint_a`] with A's entry carrying `flags`
    /// (`LOCAL_*`: the stages it skips), as netd's pass writes them.
    pub fn from_endpoint_a_flagged(flags: u32) -> Self {
        use netd::dataplane::maps::MapWriter;
        let mut f = Self::load();
        let a = local_endpoint_flagged(1, 1, testpkt::IP4_A, testpkt::MAC_A, [2; 6], flags);
        for op in &a {
            f.maps.apply(op).expect("map write");
        }
        f
    }

    /// Marks each local endpoint's entry with the stages it skips
    /// (`LOCAL_*`), from what the maps hold, as netd's pass does once
    /// services and policies are compiled.
    pub fn mark_endpoints(&mut self) {
        use netd::dataplane::{
            maps::{MapOp, MapWriter},
            reconcile::mark_skippable_stages,
            tables,
        };
        let mut state = self.maps.read().expect("reading the maps");
        mark_skippable_stages(&mut state);
        for (ifindex, entry) in state.iter(tables::NETD_LOCAL_EPS) {
            self.maps
                .apply(&MapOp::put(tables::NETD_LOCAL_EPS, ifindex, entry))
                .expect("endpoint flags");
        }
    }

    /// Empties slot `slot` of the pinned prog array `map`, as a netd that
    /// never filled it would leave it.
    pub fn empty_slot(&self, map: &str, slot: u32) {
        let data = aya::maps::MapData::from_pin(self.datapath.layout().map(map)).expect("pinned");
        let mut array = aya::maps::ProgramArray::try_from(aya::maps::Map::ProgramArray(data))
            .expect("a prog array");
        array.clear_index(&slot).expect("clear the slot");
    }

    /// Loads the do-nothing programs the benchmarks compare against.
    pub fn load_baselines(&mut self) {
        self.xdp(netd_common::program_names::XDP_BASELINE)
            .load()
            .expect("load the XDP baseline");
        self.tc(netd_common::program_names::TC_BASELINE)
            .load()
            .expect("load the TC baseline");
    }

    /// The frames the generator program sends, in turn at random.
    pub fn set_bench_frames(&mut self, frames: &[netd_common::maps::BenchFrame]) {
        let map = self
            .datapath
            .ebpf_mut()
            .map_mut("NETD_BENCH_FRAMES")
            .expect("the generator's frames");
        let mut array: aya::maps::Array<_, netd_common::maps::BenchFrame> =
            aya::maps::Array::try_from(map).expect("an array");
        for i in 0..netd_common::maps::BENCH_FRAMES {
            array
                .set(i, frames[i as usize % frames.len()], 0)
                .expect("write a frame");
        }
    }

    /// Sends `packet` `repeat` times as live frames (BPF_PROG_TEST_RUN
    /// with BPF_F_TEST_XDP_LIVE_FRAMES) through XDP program `name`, as if
    /// received on `ingress_ifindex` of the calling thread's namespace:
    /// what the program returns is carried out (XDP_TX sends the frame back
    /// out of that device).
    pub fn live_frames(
        &mut self,
        name: &str,
        packet: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<(), ProgramError> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let md: [u32; 6] = [0, packet.len() as u32, 0, ingress_ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let program = self.xdp(name);
        if program.fd().is_err() {
            program.load()?;
        }
        program.test_run(TestRunOptions {
            data_in: Some(packet),
            ctx_in: Some(&ctx),
            repeat,
            attrs: aya::programs::TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::default()
        })?;
        Ok(())
    }

    /// Loads the mesh bench's packet generator and sink.
    pub fn load_bench_traffic(&mut self) {
        self.xdp(netd_common::program_names::XDP_GENERATOR)
            .load()
            .expect("load the generator");
        self.tc(netd_common::program_names::TC_SINK)
            .load()
            .expect("load the sink");
    }

    /// Pins the loaded XDP program `name` at `path`, so a tool outside
    /// this process (iproute2) can attach it.
    pub fn pin_xdp(&mut self, name: &str, path: &std::path::Path) {
        self.xdp(name).pin(path).expect("pin the XDP program");
    }

    /// Loads the TC program `name` and pins it at `path`, for `tc` to
    /// attach.
    pub fn pin_tc(&mut self, name: &str, path: &std::path::Path) {
        let program = self.tc(name);
        program.load().expect("load the TC program");
        program.pin(path).expect("pin the TC program");
    }

    pub fn pin_root(&self) -> &std::path::Path {
        self._pins.layout.root()
    }

    pub fn tc(&mut self, name: &str) -> &mut SchedClassifier {
        let program = self
            .datapath
            .ebpf_mut()
            .program_mut(name)
            .expect("program in object");
        program.try_into().expect("a TC program")
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        self.counters.snapshot().expect("read counters")
    }

    fn xdp(&mut self, name: &str) -> &mut Xdp {
        let program = self
            .datapath
            .ebpf_mut()
            .program_mut(name)
            .expect("program in object");
        program.try_into().expect("an XDP program")
    }

    /// Runs an XDP program once; `Err` is the kernel refusing the run.
    pub fn run_xdp(&mut self, name: &str, packet: &[u8]) -> Result<Run, ProgramError> {
        let (verdict, output) = run_once(self.xdp(name), packet)?;
        Ok(Run {
            verdict: i64::from(verdict),
            output,
        })
    }

    /// Runs a TC program once; `Err` is the kernel refusing the run.
    pub fn run_tc(&mut self, name: &str, packet: &[u8]) -> Result<Run, ProgramError> {
        let (verdict, output) = run_once(self.tc(name), packet)?;
        // TC verdicts are signed (TC_ACT_SHOT is 2, TC_ACT_UNSPEC -1).
        Ok(Run {
            verdict: i64::from(verdict as i32),
            output,
        })
    }

    /// Repeats an XDP program `repeat` times in the kernel; mean ns per run.
    pub fn time_xdp(&mut self, name: &str, packet: &[u8], repeat: u32) -> f64 {
        mean_ns(self.xdp(name), packet, repeat)
    }

    /// Repeats a TC program `repeat` times in the kernel; mean ns per run.
    pub fn time_tc(&mut self, name: &str, packet: &[u8], repeat: u32) -> f64 {
        mean_ns(self.tc(name), packet, repeat)
    }
}

/// One BPF_PROG_TEST_RUN: the raw return value and the packet as it left.
fn run_once<P>(program: &P, packet: &[u8]) -> Result<(u32, Vec<u8>), ProgramError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut out = vec![0u8; packet.len() + 256];
    let result = program.test_run(TestRunOptions {
        data_in: Some(packet),
        data_out: Some(&mut out),
        ..TestRunOptions::default()
    })?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

/// `repeat` runs in the kernel; the kernel's mean ns per run.
fn mean_ns<P>(program: &P, packet: &[u8], repeat: u32) -> f64
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(packet),
            repeat,
            ..TestRunOptions::default()
        })
        .expect("timed run");
    result.duration.as_nanos() as f64
}

/// Slot that a counter expectation names.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    Verdict(Hook, Verdict),
    Drop(Hook, DropReason),
}

impl Slot {
    fn index(self) -> u32 {
        match self {
            Slot::Verdict(h, v) => verdict_slot(h, v),
            Slot::Drop(h, r) => drop_slot(h, r),
        }
    }
}

/// Asserts that between `before` and `after` exactly the slots in
/// `moved` grew, each by one packet of `bytes` bytes, and nothing else changed.
pub fn assert_counted(
    before: &CounterSnapshot,
    after: &CounterSnapshot,
    moved: &[Slot],
    bytes: u64,
    what: &str,
) {
    let expected: Vec<u32> = moved.iter().map(|s| s.index()).collect();
    for hook in Hook::ALL {
        for slot in Verdict::ALL
            .iter()
            .map(|v| Slot::Verdict(hook, *v))
            .chain(DropReason::ALL.iter().map(|r| Slot::Drop(hook, *r)))
        {
            let b = value(before, slot);
            let a = value(after, slot);
            let delta = Counter {
                packets: a.packets - b.packets,
                bytes: a.bytes - b.bytes,
            };
            if expected.contains(&slot.index()) {
                assert_eq!(
                    delta,
                    Counter { packets: 1, bytes },
                    "{what}: {slot:?} should count the packet"
                );
            } else {
                assert_eq!(
                    delta,
                    Counter::default(),
                    "{what}: {slot:?} should not move"
                );
            }
        }
    }
    assert!(expected.iter().all(|i| *i < COUNTER_SLOTS));
}

fn value(snapshot: &CounterSnapshot, slot: Slot) -> Counter {
    match slot {
        Slot::Verdict(h, v) => snapshot.verdict(h, v),
        Slot::Drop(h, r) => snapshot.drops(h, r),
    }
}

/// The two entries the reconciler writes for an endpoint on this host:
/// what a packet from its veth (`ifindex`) must carry, and where a packet
/// to its address goes. Its entry has no `LOCAL_*` flags, as one carried
/// over from an older netd: every stage looks.
pub fn local_endpoint(
    ifindex: u32,
    network: u32,
    ip: [u8; 4],
    mac: [u8; 6],
    host_mac: [u8; 6],
) -> [netd::dataplane::maps::MapOp; 2] {
    local_endpoint_flagged(ifindex, network, ip, mac, host_mac, 0)
}

/// [`local_endpoint`] with `flags` (`LOCAL_*`) in its entry.
pub fn local_endpoint_flagged(
    ifindex: u32,
    network: u32,
    ip: [u8; 4],
    mac: [u8; 6],
    host_mac: [u8; 6],
    flags: u32,
) -> [netd::dataplane::maps::MapOp; 2] {
    use netd::dataplane::{maps::MapOp, tables};
    use netd_common::maps::{EndpointEntry, LocalEndpointEntry};
    [
        MapOp::put(
            tables::NETD_LOCAL_EPS,
            ifindex,
            LocalEndpointEntry {
                ipv4: ip,
                network,
                mac,
                host_mac,
                flags,
            },
        ),
        MapOp::put(
            tables::NETD_ENDPOINTS,
            ip,
            EndpointEntry {
                ifindex,
                network,
                mac,
                host: 0,
            },
        ),
    ]
}

/// `ip` an active backend of Maglev table `table`, weight 1.
pub fn active_backend(table: u32, ip: [u8; 4]) -> netd::dataplane::maps::MapOp {
    netd::dataplane::maps::MapOp::put(
        netd::dataplane::tables::NETD_BACKENDS,
        netd_common::service::BackendKey { table, ip },
        netd_common::service::BackendEntry {
            state: netd_common::service::BACKEND_ACTIVE,
            weight: 1,
        },
    )
}

/// A Maglev table whose every slot is `backend`.
pub fn maglev_all_to(backend: [u8; 4]) -> netd_common::service::MaglevTable {
    let mut table = netd_common::service::MaglevTable::default();
    table.slots.fill(u32::from_ne_bytes(backend));
    table
}

/// An IPv4 address and a port.
pub type Endpoint = ([u8; 4], u16);

/// What the output carries: (dst MAC, src, dst), once its checksums are
/// found valid, recomputed by etherparse from the output's bytes.
pub fn addresses(out: &[u8]) -> ([u8; 6], Endpoint, Endpoint) {
    let p = etherparse::SlicedPacket::from_ethernet(out).expect("the output parses");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let header = ip.header().to_header();
    assert_eq!(
        header.header_checksum,
        header.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let (src, dst) = (ip.header().source(), ip.header().destination());
    let payload = ip.payload().payload;
    let ports = match &p.transport {
        Some(etherparse::TransportSlice::Tcp(t)) => {
            let want = t
                .to_header()
                .calc_checksum_ipv4(&header, &payload[t.header_len()..])
                .expect("tcp checksum");
            assert_eq!(t.checksum(), want, "TCP checksum");
            (t.source_port(), t.destination_port())
        }
        Some(etherparse::TransportSlice::Udp(u)) => {
            let want = u
                .to_header()
                .calc_checksum_ipv4(&header, &payload[8..])
                .expect("udp checksum");
            assert_eq!(u.checksum(), want, "UDP checksum");
            (u.source_port(), u.destination_port())
        }
        _ => panic!("neither TCP nor UDP"),
    };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&out[..6]);
    (mac, (src, ports.0), (dst, ports.1))
}
