//! netd's datapath. Programs are named after where they attach and stay
//! thin: they build a [`frame::PacketFrame`], run the stages in pipeline
//! order to get an [`outcome::Outcome`], and turn it into a verdict,
//! counting it on the way out.
#![no_std]
#![no_main]

mod arp;
mod baseline;
mod bench_traffic;
mod deliver;
mod endpoint;
mod endpoint_stats;
mod events;
mod forward;
mod frame;
mod icmp_error;
mod icmp_quote;
mod maps;
mod mesh;
mod metrics;
mod nat;
mod outcome;
mod overlay;
mod policy;
mod refuse;
mod service;
mod service_program;
mod sock_lb;
mod uplink;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier refuses any program that could reach this.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
