//! The clamper's per-interface policy (userspace → kernel) and its counters.

/// No policy: the clamper leaves this interface's packets alone.
pub const MODE_OFF: u32 = 0;
/// Clamp to a fixed MSS (`pmtu clamp --set-mss N`).
pub const MODE_SET_MSS: u32 = 1;
/// Clamp to the path MTU through this host minus 40 (IPv4) / 60 (IPv6),
/// as iptables' `TCPMSS --clamp-mss-to-pmtu` (net/netfilter/xt_TCPMSS.c).
pub const MODE_TO_PMTU: u32 = 2;
/// The base rule's bits of `ClampPolicy::mode` (one of the MODE_* above).
pub const MODE_BASE: u32 = 0xff;
/// Or'ed into `mode`: also clamp to PMTUs learned from PTBs this host
/// forwarded or received (see `learned`); the lowest MSS applies. With
/// MODE_OFF as the base, learned entries are the only rule.
pub const MODE_LEARNED: u32 = 1 << 8;

/// Interfaces one clamper can serve at once; each gets a counter slot. A
/// BRAS has one ppp interface per subscriber, so thousands, not dozens.
pub const MAX_IFACES: u32 = 4096;

/// Value of the `CLAMP_POLICY` hash map, keyed by ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClampPolicy {
    pub mode: u32,
    /// The MSS for MODE_SET_MSS.
    pub mss: u32,
    /// Counter slot: counters live at `slot * COUNT + counter`.
    pub slot: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<ClampPolicy>() == 16);

/// Counter indices within a slot.
pub mod counters {
    /// TCP segments with SYN set and RST clear (SYN and SYN-ACK).
    pub const SYN_SEEN: u32 = 0;
    /// An MSS option was lowered in place.
    pub const CLAMPED: u32 = 1;
    /// The MSS was already at or below the clamp: untouched.
    pub const AT_OR_BELOW: u32 = 2;
    /// No MSS option: one was inserted.
    pub const INSERTED: u32 = 3;
    /// No MSS option and no room to add one (payload, or 60-byte header).
    pub const NO_ROOM: u32 = 4;
    /// Malformed headers or TCP options: packet left untouched.
    pub const MALFORMED: u32 = 5;
    /// `--to-pmtu` found no forwarding route (or an MTU too small to use).
    pub const NO_ROUTE: u32 = 6;
    /// A kernel helper refused a rewrite; the packet went on as it was.
    pub const ERRORS: u32 = 7;
    /// An IPv4 or IPv6 fragment (first fragments included): changing its
    /// length or checksum would break reassembly, so it is left alone.
    pub const FRAGMENT: u32 = 8;
    /// IPv6 with an Authentication Header (RFC 4302 §3.3.3.1: the ICV
    /// covers the TCP header): left alone. ESP never shows its TCP header.
    pub const IPSEC: u32 = 9;
    /// A SYN carrying TCP-AO (kind 29; RFC 5925 §5.1: the MAC covers the
    /// options by default): left alone.
    pub const TCP_AO: u32 = 10;
    /// The MSS was lowered or an option inserted because a learned PMTU
    /// (toward the source or the destination) was the lowest rule; these
    /// are counted here instead of in `clamped` or `inserted`.
    pub const CLAMPED_LEARNED: u32 = 11;

    pub const COUNT: u32 = 12;

    pub const NAMES: [&str; COUNT as usize] = [
        "syn_seen",
        "clamped",
        "at_or_below",
        "inserted",
        "no_room",
        "malformed",
        "no_route",
        "errors",
        "fragment",
        "ipsec",
        "tcp_ao",
        "clamped_learned",
    ];
}
