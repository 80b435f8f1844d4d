//! netd's datapath, in layers; each uses only the layers above it in
//! this list, and no two modules import each other (`cargo xtask lint`
//! checks both):
//!
//! - `types`: plain types the layers hand each other (leaf modules);
//! - `frame`: bounds-checked access to the packet;
//! - `maps`: every map (the pinned ones from `netd_common::tables`);
//! - `observe`: counters, per-endpoint counters, monitor events;
//! - `stages`: decide, each writing only the state maps it owns;
//! - `rewrite`: the writer, the only code that changes packet bytes;
//! - `exits`: each hook's verdicts, counted, and the plan carried out;
//! - `programs`: the entry points, one file each, thin.
//!
//! docs/architecture.md has the pipeline of each program.
#![no_std]
#![no_main]

mod exits;
mod frame;
mod maps;
mod observe;
mod programs;
mod rewrite;
mod stages;
mod types;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier refuses any program that could reach this.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
