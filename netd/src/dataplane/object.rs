//! The datapath object, built by build.rs and embedded in the binary.

/// ELF object holding every netd program and map.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netd-ebpf.o"));
