//! What makes a Packet-Too-Big untrustworthy (RFC 5927; RFC 8201 §5;
//! RFC 8899 §4.6), as bits in `PtbEvent::reasons`. Zero means valid.

use crate::event::{FLAG_EXT_LIMIT, FLAG_L4_FULL, FLAG_QUOTED_FRAGMENT, PtbEvent};

/// An IPv6 MTU under 1280 (RFC 8200 §5): tcp_v6_err() and
/// __ip6_rt_update_pmtu() ignore it. An IPv4 MTU under Linux's min_pmtu
/// (552) is not invalid: __ip_rt_update_pmtu() applies it as `min_pmtu`
/// locked, and so does pmtu's table.
pub const REASON_BELOW_FLOOR: u16 = 1 << 0;
/// The MTU is not smaller than the quoted packet: it cannot be why that
/// packet was refused (RFC 1191 §4 / RFC 8201 §4).
pub const REASON_NOT_SMALLER: u16 = 1 << 1;
/// The quoted flow was not seen leaving through an observed interface
/// within the flow timeout.
pub const REASON_UNKNOWN_FLOW: u16 = 1 << 2;
/// The quoted TCP sequence number is outside what that flow sent, the check
/// tcp_v4_err()/tcp_v6_err() make against snd_una..snd_nxt.
pub const REASON_SEQ_OUTSIDE: u16 = 1 << 3;
/// Fewer than the 8 bytes of quoted L4 header RFC 792 promises.
pub const REASON_TRUNCATED_QUOTE: u16 = 1 << 4;
/// The reporter (or all reporters together) exceeded the rate limit; this
/// event opens a run of suppressed ones, which are only counted.
pub const REASON_RATE_LIMITED: u16 = 1 << 5;
/// The ICMP/ICMPv6 checksum or the IPv4 header checksum is wrong: the
/// kernel drops such a message (IcmpInCsumErrors, Icmp6InCsumErrors,
/// IpInHdrErrors) before acting on it.
pub const REASON_BAD_CHECKSUM: u16 = 1 << 6;
/// Seen arriving, addressed to neither a local address nor one this host
/// forwards to (forwarding off, no route): the kernel drops it
/// (IpInAddrErrors / Ip6InAddrErrors).
pub const REASON_NOT_FOR_US: u16 = 1 << 7;
/// The quoted packet is a non-first fragment: it names no flow.
pub const REASON_QUOTED_FRAGMENT: u16 = 1 << 8;
/// The quoted packet's IPv6 extension headers outlast the walk
/// (parse::MAX_EXT_HEADERS) before its transport header.
pub const REASON_EXT_HEADER_LIMIT: u16 = 1 << 9;

pub const REASON_NAMES: [(u16, &str); 10] = [
    (REASON_BELOW_FLOOR, "below-floor"),
    (REASON_NOT_SMALLER, "not-smaller"),
    (REASON_UNKNOWN_FLOW, "unknown-flow"),
    (REASON_SEQ_OUTSIDE, "seq-outside"),
    (REASON_TRUNCATED_QUOTE, "truncated-quote"),
    (REASON_RATE_LIMITED, "rate-limited"),
    (REASON_BAD_CHECKSUM, "bad-checksum"),
    (REASON_NOT_FOR_US, "not-for-us"),
    (REASON_QUOTED_FRAGMENT, "quoted-fragment"),
    (REASON_EXT_HEADER_LIMIT, "ext-header-limit"),
];

/// Linux's default `net.ipv4.route.min_pmtu` (512 + 20 + 20).
pub const LINUX_MIN_PMTU_V4: u32 = 552;
pub const IPV6_MIN_MTU: u32 = 1280;

/// The checks that need nothing but the message itself.
#[inline(always)]
pub fn intrinsic_reasons(ev: &PtbEvent) -> u16 {
    let mut r = 0;
    if ev.family == 6 && ev.mtu < IPV6_MIN_MTU {
        r |= REASON_BELOW_FLOOR;
    }
    if ev.mtu >= ev.quoted_len {
        r |= REASON_NOT_SMALLER;
    }
    // Why the quote names no flow: a later fragment, an extension-header
    // chain longer than the walk, or simply too few bytes.
    if ev.flags & FLAG_QUOTED_FRAGMENT != 0 {
        r |= REASON_QUOTED_FRAGMENT;
    } else if ev.flags & FLAG_EXT_LIMIT != 0 {
        r |= REASON_EXT_HEADER_LIMIT;
    } else if ev.flags & FLAG_L4_FULL == 0 {
        r |= REASON_TRUNCATED_QUOTE;
    }
    r
}

/// Is `seq` within `lo..=hi`, in sequence-number space (RFC 9293 §3.4,
/// modulo 2^32)?
#[inline(always)]
pub fn seq_within(seq: u32, lo: u32, hi: u32) -> bool {
    seq.wrapping_sub(lo) <= hi.wrapping_sub(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(family: u8, mtu: u32, quoted_len: u32) -> PtbEvent {
        let mut e = PtbEvent::zeroed();
        e.family = family;
        e.mtu = mtu;
        e.quoted_len = quoted_len;
        e.flags = FLAG_L4_FULL;
        e
    }

    #[test]
    fn floors() {
        for (family, mtu, floor) in [
            (4, 0, false),
            (4, 60, false),
            (4, 551, false),
            (4, 552, false),
            (4, 1370, false),
            (6, 1279, true),
            (6, 1280, false),
        ] {
            let r = intrinsic_reasons(&ev(family, mtu, 1500));
            assert_eq!(r & REASON_BELOW_FLOOR != 0, floor, "v{family} mtu {mtu}");
        }
    }

    #[test]
    fn not_smaller_and_truncated() {
        assert_eq!(intrinsic_reasons(&ev(4, 1500, 1500)), REASON_NOT_SMALLER);
        assert_eq!(intrinsic_reasons(&ev(4, 65535, 1500)), REASON_NOT_SMALLER);
        assert_eq!(intrinsic_reasons(&ev(4, 1499, 1500)), 0);
        let mut e = ev(6, 1400, 1500);
        e.flags = 0;
        assert_eq!(intrinsic_reasons(&e), REASON_TRUNCATED_QUOTE);
    }

    #[test]
    fn sequence_space_wraps() {
        assert!(seq_within(5, 1, 10));
        assert!(!seq_within(11, 1, 10));
        assert!(seq_within(2, u32::MAX - 3, 10));
        assert!(!seq_within(u32::MAX - 5, u32::MAX - 3, 10));
        assert!(seq_within(7, 7, 7));
    }
}
