//! The programs' return values, as the kernel defines them: one place
//! for every test.

/// TC: hand the packet on.
pub const TC_ACT_OK: i64 = 0;
pub const TC_ACT_SHOT: i64 = 2;
/// TC: what `bpf_redirect*` returns on success.
pub const TC_ACT_REDIRECT: i64 = 7;

pub const XDP_ABORTED: i64 = 0;
pub const XDP_DROP: i64 = 1;
pub const XDP_PASS: i64 = 2;
pub const XDP_TX: i64 = 3;
pub const XDP_REDIRECT: i64 = 4;
