//! The mesh bench's generator and sink on crafted packets: the generator
//! replaces whatever frame it is given by one of the bench's frames and
//! sends it back out, and refuses a frame too short to hold one; the sink
//! drops everything.

use netd_common::{
    maps::{BenchFrame, BENCH_FRAME_LEN},
    program_names::{TC_SINK, XDP_GENERATOR},
};
use netd_tests::fixture::Fixture;

const XDP_ABORTED: i64 = 0;
const XDP_TX: i64 = 3;
const TC_ACT_SHOT: i64 = 2;

fn frame(fill: u8) -> BenchFrame {
    BenchFrame([fill; BENCH_FRAME_LEN])
}

#[test]
fn the_generator_sends_one_of_the_bench_frames_whatever_the_receiver_left() {
    let mut f = Fixture::load();
    f.load_bench_traffic();
    f.set_bench_frames(&[frame(0xa1), frame(0xb2)]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..64 {
        // What a NAT on the receiving side might have left in the page.
        let left_over = vec![0x5a; BENCH_FRAME_LEN];
        let run = f.run_xdp(XDP_GENERATOR, &left_over).expect("run");
        assert_eq!(run.verdict, XDP_TX);
        assert!(
            run.output == frame(0xa1).0 || run.output == frame(0xb2).0,
            "a bench frame, whole: {:02x?}",
            &run.output[..8]
        );
        seen.insert(run.output[0]);
    }
    assert_eq!(seen.len(), 2, "both frames are sent");
}

#[test]
fn the_generator_refuses_a_frame_too_short_to_hold_one() {
    let mut f = Fixture::load();
    f.load_bench_traffic();
    f.set_bench_frames(&[frame(0xa1)]);
    let short = vec![0u8; BENCH_FRAME_LEN - 1];
    let run = f.run_xdp(XDP_GENERATOR, &short).expect("run");
    assert_eq!(run.verdict, XDP_ABORTED);
    assert_eq!(run.output, short, "left as it was");
}

#[test]
fn the_sink_drops_everything() {
    let mut f = Fixture::load();
    f.load_bench_traffic();
    for packet in [vec![0u8; 14], vec![0xff; 1500]] {
        let run = f.run_tc(TC_SINK, &packet).expect("run");
        assert_eq!(run.verdict, TC_ACT_SHOT, "{} bytes", packet.len());
    }
}
