//! Fixture tests as tables, Katran's way: a [`Case`] is a program, a
//! packet, the map state it runs against, and what must come of it: the
//! verdict, the bytes that leave (their checksums checked by an
//! independent computation), and exactly the counters that move. [`run`]
//! runs a table of them on one loaded datapath.

use netd::dataplane::maps::{MapOp, MapWriter};
use netd_common::counters::{DropReason, Hook, Verdict};

use aya::programs::ProgramError;

use crate::{
    fixture::{addresses, assert_counted, Endpoint, Fixture, Run, Slot},
    verdict::*,
};

/// A program by name, and its hook.
#[derive(Clone, Copy, Debug)]
pub enum Program {
    /// TC on an endpoint's host veth.
    Tc(&'static str),
    Xdp(&'static str),
    /// TC on an uplink.
    TcUplink(&'static str),
}

impl Program {
    pub const ENDPOINT: Program = Program::Tc(netd_common::program_names::TC_ENDPOINT);
    pub const UPLINK: Program = Program::Xdp(netd_common::program_names::XDP_UPLINK);
    pub const TC_UPLINK: Program = Program::TcUplink(netd_common::program_names::TC_UPLINK);
    /// An uplink's entry point at either hook: a test of the uplink's
    /// paths runs on both.
    pub const UPLINKS: [Program; 2] = [Program::UPLINK, Program::TC_UPLINK];

    /// The hook whose counters it moves.
    pub fn hook(self) -> Hook {
        match self {
            Program::Tc(_) => Hook::TcEndpoint,
            Program::Xdp(_) => Hook::XdpUplink,
            Program::TcUplink(_) => Hook::TcUplink,
        }
    }

    /// Whether it runs on skbs (TC).
    pub fn is_tc(self) -> bool {
        !matches!(self, Program::Xdp(_))
    }

    /// Runs it on `packet` through BPF_PROG_TEST_RUN.
    pub fn run(self, f: &mut Fixture, packet: &[u8]) -> Result<Run, ProgramError> {
        match self {
            Program::Tc(name) | Program::TcUplink(name) => f.run_tc(name, packet),
            Program::Xdp(name) => f.run_xdp(name, packet),
        }
    }

    /// The return value of `expect` at this program's hook; `None` for
    /// [`Expect::Refused`].
    pub fn returns(self, expect: Expect) -> Option<i64> {
        let tc = self.is_tc();
        Some(match expect {
            Expect::Refused => return None,
            Expect::Pass if tc => TC_ACT_OK,
            Expect::Pass => XDP_PASS,
            Expect::Drop(_) if tc => TC_ACT_SHOT,
            Expect::Drop(_) => XDP_DROP,
            Expect::Redirect | Expect::Tx if tc => TC_ACT_REDIRECT,
            Expect::Redirect => XDP_REDIRECT,
            Expect::Tx => XDP_TX,
        })
    }
}

/// What a program does with the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Handed on (to the host stack), counted `pass`.
    Pass,
    /// Dropped, counted `drop` and by its reason.
    Drop(DropReason),
    /// Redirected elsewhere (another interface, a peer), counted `redirect`.
    Redirect,
    /// Sent back where it came from, counted `tx`.
    Tx,
    /// The kernel refuses to run the program on it (BPF_PROG_TEST_RUN's
    /// own checks): nothing is counted.
    Refused,
}

impl Expect {
    fn slots(self, hook: Hook) -> Vec<Slot> {
        match self {
            Expect::Pass => vec![Slot::Verdict(hook, Verdict::Pass)],
            Expect::Drop(reason) => {
                vec![Slot::Verdict(hook, Verdict::Drop), Slot::Drop(hook, reason)]
            }
            Expect::Redirect => vec![Slot::Verdict(hook, Verdict::Redirect)],
            Expect::Tx => vec![Slot::Verdict(hook, Verdict::Tx)],
            Expect::Refused => vec![],
        }
    }
}

/// What leaves.
#[derive(Clone, Debug)]
pub enum Output {
    /// The packet as it came.
    Unchanged,
    /// Exactly these bytes.
    Exactly(Vec<u8>),
    /// The packet as it came but for its destination MAC (a delivery
    /// addresses the frame to its receiver).
    Readdressed,
    /// An IPv4 TCP or UDP packet with valid checksums, to this MAC, from
    /// and to these addresses and ports.
    Addressed {
        mac: [u8; 6],
        src: Endpoint,
        dst: Endpoint,
    },
}

/// One row of a table.
#[derive(Clone, Debug)]
pub struct Case {
    pub what: String,
    pub program: Program,
    pub packet: Vec<u8>,
    /// Map entries written before the run and removed after it.
    pub state: Vec<MapOp>,
    pub expect: Expect,
    pub output: Output,
}

impl Case {
    /// `packet` through `program`, expecting `expect` and the packet
    /// unchanged.
    pub fn new(what: impl Into<String>, program: Program, packet: Vec<u8>, expect: Expect) -> Self {
        Self {
            what: what.into(),
            program,
            packet,
            state: Vec::new(),
            expect,
            output: Output::Unchanged,
        }
    }

    pub fn with_state(mut self, ops: impl IntoIterator<Item = MapOp>) -> Self {
        self.state.extend(ops);
        self
    }

    pub fn leaving(mut self, output: Output) -> Self {
        self.output = output;
        self
    }
}

/// Each case of `table` at both of an uplink's hooks (XDP and TC): the
/// same packets, the same outcomes.
pub fn at_both_uplink_hooks(table: Vec<Case>) -> Vec<Case> {
    table
        .into_iter()
        .flat_map(|case| {
            Program::UPLINKS.map(|program| Case {
                program,
                ..case.clone()
            })
        })
        .collect()
}

/// Runs every case of `table` in turn, each checked in full.
pub fn run(f: &mut Fixture, table: &[Case]) {
    for case in table {
        run_one(f, case);
    }
}

fn run_one(f: &mut Fixture, case: &Case) {
    let what = format!("{} ({:?})", case.what, case.program);
    for op in &case.state {
        f.maps
            .apply(op)
            .unwrap_or_else(|e| panic!("{what}: state: {e}"));
    }
    let before = f.snapshot();
    let run = case.program.run(f, &case.packet);
    let after = f.snapshot();
    match (case.program.returns(case.expect), run) {
        (None, Err(_)) => assert_eq!(before, after, "{what}: counters moved without a run"),
        (None, Ok(r)) => panic!("{what}: the kernel ran it ({r:?})"),
        (Some(_), Err(e)) => panic!("{what}: run: {e}"),
        (Some(verdict), Ok(run)) => {
            assert_eq!(run.verdict, verdict, "{what}: verdict ({:?})", case.expect);
            match &case.output {
                Output::Unchanged => assert_eq!(run.output, case.packet, "{what}: output bytes"),
                Output::Exactly(bytes) => assert_eq!(&run.output, bytes, "{what}: output bytes"),
                Output::Readdressed => assert_eq!(
                    run.output.get(6..),
                    case.packet.get(6..),
                    "{what}: output bytes after the destination MAC"
                ),
                Output::Addressed { mac, src, dst } => {
                    assert_eq!(addresses(&run.output), (*mac, *src, *dst), "{what}: output")
                }
            }
            let slots = case.expect.slots(case.program.hook());
            assert_counted(&before, &after, &slots, case.packet.len() as u64, &what);
        }
    }
    for op in case.state.iter().rev() {
        if let MapOp::Put { table, key, .. } = op {
            let undo = MapOp::Delete {
                table: table.clone(),
                key: key.clone(),
            };
            f.maps
                .apply(&undo)
                .unwrap_or_else(|e| panic!("{what}: undo: {e}"));
        }
    }
}
