//! Keys and values of the forwarding maps. Addresses are stored as the
//! bytes on the wire, so the datapath never converts byte order.

use bytemuck::{Pod, Zeroable};

/// `NETD_ENDPOINTS`: an endpoint by IPv4 address (the key, `[u8; 4]`).
/// What a packet *to* this address needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EndpointEntry {
    /// Host end of the endpoint's veth.
    pub ifindex: u32,
    /// The network's index.
    pub network: u32,
    pub mac: [u8; 6],
    /// 0 for an endpoint on this host; else the index of its host in
    /// `NETD_HOSTS` (and `ifindex` is 0).
    pub host: u16,
}

/// `NETD_LOCAL_ENDPOINTS`: the endpoint behind a host veth, by the veth's
/// ifindex (the key, `u32`). What a packet *from* this endpoint must match.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LocalEndpointEntry {
    pub ipv4: [u8; 4],
    pub network: u32,
    pub mac: [u8; 6],
    /// MAC of the host end: the endpoint's gateway answers with it.
    pub host_mac: [u8; 6],
    /// `LOCAL_*` bits: stages the endpoint's packets can skip. 0 (an
    /// entry carried over from an older netd): every stage looks.
    pub flags: u32,
}

/// `LocalEndpointEntry::flags`: no policy enforces on this endpoint, so
/// policy need not ask `NETD_POLICY_EPS` for it. Written before a policy
/// makes it enforced (cleared at `NETD_LOCAL_EPS`' turn, before the
/// verdicts and `NETD_POLICY_EPS`), set after a policy leaves.
pub const LOCAL_NO_POLICY: u32 = 1;
/// `LocalEndpointEntry::flags`: the endpoint backs no service, so its
/// packets are no replies to translate back (no `NETD_REV_NAT` probe).
/// Cleared before it becomes a backend (`NETD_LOCAL_EPS` is written before
/// `NETD_BACKENDS`).
pub const LOCAL_NO_SERVICE: u32 = 2;

/// `NETD_NETWORKS`: a network by index (the key, `u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetworkEntry {
    pub gateway: [u8; 4],
    /// VXLAN network identifier; 0 for a network of this host only.
    pub vni: u32,
}

/// `NETD_HOSTS`: another host of the cluster by index (the key, `u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HostEntry {
    pub underlay: [u8; 4],
    pub _reserved: u32,
}

/// `NETD_OVERLAY` (one entry): this host's side of the VXLAN underlay.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct OverlayConfig {
    /// Outer source address; 0.0.0.0 means no overlay on this host.
    pub underlay: [u8; 4],
    /// Where encapsulated packets leave.
    pub uplink_ifindex: u32,
}

/// `NETD_META` (one entry): whose pins these are and in which layout, so a
/// netd never runs on another store's datapath or on maps it misreads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct PinMeta {
    /// [`LAYOUT_VERSION`] of the netd that last loaded the pins.
    pub layout: u32,
    pub _reserved: u32,
    /// The store's id (ASCII, zero-padded): links and pins of one store.
    pub owner: [u8; 32],
}

impl Default for PinMeta {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// The layout of the pinned maps. 1: round one (no `NETD_META`, counters
/// packed per hook); 2: `NETD_META`, counter slots fixed per hook; 3:
/// `NETD_LOCAL_EPS` entries say which stages an endpoint skips.
pub const LAYOUT_VERSION: u32 = 3;

/// Layout 2's `NETD_LOCAL_EPS` value, for the upgrade that carries it
/// over (each entry copied, with no `LOCAL_*` flags: every stage looks
/// until netd's first pass writes them).
pub mod layout_v2 {
    use bytemuck::{Pod, Zeroable};

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
    pub struct LocalEndpointEntry {
        pub ipv4: [u8; 4],
        pub network: u32,
        pub mac: [u8; 6],
        pub host_mac: [u8; 6],
    }

    impl LocalEndpointEntry {
        pub fn now(&self) -> super::LocalEndpointEntry {
            super::LocalEndpointEntry {
                ipv4: self.ipv4,
                network: self.network,
                mac: self.mac,
                host_mac: self.host_mac,
                flags: 0,
            }
        }
    }
}

/// `NETD_PROGS` slots: the programs the endpoint program tail-calls.
pub const PROG_SERVICE: u32 = 0;
pub const PROG_ICMP_ERROR: u32 = 1;
pub const PROG_REFUSE: u32 = 2;
pub const PROG_MASQUERADE: u32 = 3;

/// `NETD_XDP_PROGS` slots: the programs the uplink program tail-calls.
pub const XDP_PROG_DECAP: u32 = 0;
pub const XDP_PROG_MESH: u32 = 1;
pub const XDP_PROG_DELIVER: u32 = 2;
pub const XDP_PROG_MASQ_REPLY: u32 = 3;

/// `NETD_UPLINK_PROGS` slots: the programs the TC uplink program
/// tail-calls (an uplink whose XDP cannot be trusted: a veth).
pub const UPLINK_PROG_DECAP: u32 = 0;
pub const UPLINK_PROG_MESH: u32 = 1;
pub const UPLINK_PROG_DELIVER: u32 = 2;
pub const UPLINK_PROG_MASQ_REPLY: u32 = 3;

const _: () = assert!(PROG_MASQUERADE < crate::tables::decl::NETD_PROGS.max_entries);
const _: () = assert!(UPLINK_PROG_MASQ_REPLY < crate::tables::decl::NETD_UPLINK_PROGS.max_entries);
const _: () = assert!(XDP_PROG_MASQ_REPLY < crate::tables::decl::NETD_XDP_PROGS.max_entries);

/// The VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// Outer Ethernet + IPv4 + UDP + VXLAN.
pub const VXLAN_OVERHEAD: u32 = 14 + 20 + 8 + 8;

/// The frames of the bench's packet generator (`NETD_BENCH_FRAMES`).
pub const BENCH_FRAMES: u32 = 64;
pub const BENCH_FRAME_LEN: usize = 64;

/// One whole Ethernet frame the generator sends.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BenchFrame(pub [u8; BENCH_FRAME_LEN]);

#[cfg(feature = "user")]
mod user {
    // SAFETY: all three are repr(C), Pod (checked by bytemuck), no padding.
    unsafe impl aya::Pod for super::EndpointEntry {}
    unsafe impl aya::Pod for super::LocalEndpointEntry {}
    unsafe impl aya::Pod for super::NetworkEntry {}
    unsafe impl aya::Pod for super::HostEntry {}
    unsafe impl aya::Pod for super::OverlayConfig {}
    unsafe impl aya::Pod for super::PinMeta {}
    unsafe impl aya::Pod for super::BenchFrame {}
    unsafe impl aya::Pod for super::layout_v2::LocalEndpointEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<EndpointEntry>(), 16);
        assert_eq!(size_of::<LocalEndpointEntry>(), 24);
        assert_eq!(size_of::<layout_v2::LocalEndpointEntry>(), 20);
        assert_eq!(size_of::<NetworkEntry>(), 8);
        assert_eq!(size_of::<HostEntry>(), 8);
        assert_eq!(size_of::<OverlayConfig>(), 8);
        assert_eq!(size_of::<BenchFrame>(), BENCH_FRAME_LEN);
        assert_eq!(size_of::<PinMeta>(), 40);
    }
}
