//! Learned clamping: path MTUs this host learned from Packet-Too-Big
//! messages it forwarded (or received), applied to the SYNs and SYN-ACKs
//! it forwards.
//!
//! Linux keeps PMTU exceptions only for the paths of its own sockets
//! (`__ip_rt_update_pmtu()` runs from `tcp_v4_err()`/`icmp_unreach()` on
//! the host a PTB is addressed to), so a router that forwards a PTB toward
//! a host behind it learns nothing from it, and iptables' TCPMSS and
//! nftables' `rt mtu` clamp only to what its routes say. pmtu's observer
//! sees those transit PTBs and validates them; userspace keeps the PMTU
//! each valid one teaches (pmtu-user's learn.rs, with the kernel's own
//! rules) and writes one [`LearnedKey`] → [`Learned`] entry per address
//! (or per prefix) into the `LEARNED` map, which the clamper reads.
//!
//! Direction: the MSS option of a segment from A tells the peer what to
//! send *to A*, and a PTB says that packets *to D* were too big. So a SYN
//! or SYN-ACK from A to D is clamped to the learned PMTU toward A (its
//! source) and toward D (its destination), the lower of the two, as
//! xt_TCPMSS takes the lower of the route MTU toward the destination and
//! back toward the source (`tcpmss_reverse_mtu()`).

/// The lowest learned PMTU ever applied, per family: 536 + 40 (RFC 9293
/// §3.7.1's default MSS with IPv4 and TCP headers) and 1280 (IPv6's
/// minimum link MTU, RFC 8200 §5; 1220 + 60). A report of less teaches
/// the floor, never below it: learned clamping never makes a segment
/// smaller than a peer without an MSS option would send anyway.
pub const FLOOR_V4: u32 = 576;
pub const FLOOR_V6: u32 = 1280;

/// IP + TCP header bytes the MSS excludes: 20 + 20 (IPv4), 40 + 20 (IPv6).
pub const HEADERS_V4: u32 = 40;
pub const HEADERS_V6: u32 = 60;

/// Entries the LEARNED map holds at most (the table's default size).
pub const MAX_LEARNED: u32 = 65_536;

/// Key of the LEARNED map: an address, or the first `prefix` bits of one
/// with the rest zero (per-prefix learning), and its family. IPv4 in the
/// first four bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LearnedKey {
    pub addr: [u8; 16],
    /// 4 or 6.
    pub family: u32,
}

const _: () = assert!(core::mem::size_of::<LearnedKey>() == 20);

/// Value of the LEARNED map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// CLOCK_MONOTONIC ns (`bpf_ktime_get_ns()`) at which the entry stops
    /// applying. The clamper checks it itself, so an entry outlives
    /// neither its expiry nor a pmtu that died before removing it.
    pub expires_ns: u64,
    /// The learned PMTU, at least the family's floor.
    pub mtu: u32,
    /// Which report taught it: a number userspace gave that event, so
    /// `pmtu events` can say which PTB a clamp came from.
    pub report: u32,
}

const _: () = assert!(core::mem::size_of::<Learned>() == 16);

/// Learning settings the clamper reads (the `LEARN_CONFIG` array's one
/// value): the masks learned entries are keyed by, from the prefix
/// lengths (`--learn-prefix`), made here on the host so that the kernel
/// keys an address with two AND instructions and no branch.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LearnConfig {
    /// By [`family_index`]: IPv4's (in the first four bytes, the rest
    /// zero like the addresses), then IPv6's.
    pub masks: [[u8; 16]; 2],
}

const _: () = assert!(core::mem::size_of::<LearnConfig>() == 32);

/// 0 for IPv4, 1 for IPv6, without a branch: 4 is 0b100, 6 is 0b110.
/// (Each branch on the family would double the paths the verifier walks
/// through the learned lookups.)
#[inline(always)]
pub fn family_index(family: u8) -> usize {
    ((family >> 1) & 1) as usize
}

impl LearnConfig {
    /// Whole addresses: one entry per destination.
    pub const EXACT: LearnConfig = LearnConfig::new(32, 128);

    /// Masks for these prefix lengths (clamped to 1..=32 and 1..=128).
    pub const fn new(prefix_v4: u32, prefix_v6: u32) -> Self {
        let p4 = if prefix_v4 == 0 { 1 } else if prefix_v4 > 32 { 32 } else { prefix_v4 };
        let p6 = if prefix_v6 == 0 { 1 } else if prefix_v6 > 128 { 128 } else { prefix_v6 };
        let m4 = (u32::MAX << (32 - p4)).to_be_bytes();
        let mut v4 = [0u8; 16];
        v4[0] = m4[0];
        v4[1] = m4[1];
        v4[2] = m4[2];
        v4[3] = m4[3];
        Self { masks: [v4, (u128::MAX << (128 - p6)).to_be_bytes()] }
    }

    /// The prefix lengths these masks keep (IPv4, IPv6).
    pub fn prefixes(&self) -> (u32, u32) {
        (u128::from_be_bytes(self.masks[0]).count_ones(), u128::from_be_bytes(self.masks[1]).count_ones())
    }
}

impl Default for LearnConfig {
    fn default() -> Self {
        Self::EXACT
    }
}

/// The key for `addr` (IPv4 in the first four bytes) of `family` (4 or
/// 6) under `config`. Kernel and userspace both key entries with this.
#[inline(always)]
pub fn key(family: u8, addr: &[u8; 16], config: &LearnConfig) -> LearnedKey {
    keyed(family, addr, &config.masks[family_index(family)])
}

/// [`key`] with the family's mask already chosen.
#[inline(always)]
pub fn keyed(family: u8, addr: &[u8; 16], mask: &[u8; 16]) -> LearnedKey {
    let a = [
        u64::from_ne_bytes([addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7]]),
        u64::from_ne_bytes([addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15]]),
    ];
    let m = [
        u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[4], mask[5], mask[6], mask[7]]),
        u64::from_ne_bytes([mask[8], mask[9], mask[10], mask[11], mask[12], mask[13], mask[14], mask[15]]),
    ];
    let hi = (a[0] & m[0]).to_ne_bytes();
    let lo = (a[1] & m[1]).to_ne_bytes();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hi);
    out[8..].copy_from_slice(&lo);
    LearnedKey { addr: out, family: family as u32 }
}

/// The MSS a learned PMTU allows: the PMTU (at least the floor) less the
/// IP and TCP headers.
#[inline(always)]
pub fn mss_for(family: u8, mtu: u32) -> u32 {
    // Branch-free in the family (see family_index): 40 or 60, 576 or 1280.
    let v6 = family_index(family) as u32;
    let headers = HEADERS_V4 + v6 * (HEADERS_V6 - HEADERS_V4);
    let floor = FLOOR_V4 + v6 * (FLOOR_V6 - FLOOR_V4);
    (if mtu < floor { floor } else { mtu }) - headers
}

/// `ClampEvent::rule`: which learned entry set the MSS.
/// The one toward the segment's destination.
pub const RULE_LEARNED_DST: u8 = 1;
/// The one toward its source (the peer's MSS is what the source receives).
pub const RULE_LEARNED_SRC: u8 = 2;

/// `ClampEvent::flags` bits.
/// The segment was a SYN-ACK (else a SYN).
pub const CLAMP_FLAG_SYN_ACK: u8 = 1 << 0;
/// It had no MSS option: one was inserted (`mss_from` is 0).
pub const CLAMP_FLAG_INSERTED: u8 = 1 << 1;

/// One SYN or SYN-ACK whose MSS a learned PMTU lowered, as the clamper
/// submits it to the event ring (72 bytes, told apart from the
/// observer's records by its length).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClampEvent {
    /// `bpf_ktime_get_ns()`.
    pub ts_ns: u64,
    pub ifindex: u32,
    /// The learned PMTU applied, and the report that taught it.
    pub learned_mtu: u32,
    pub report: u32,
    /// What the set-mss or route rule alone would have clamped to
    /// (u32::MAX: no such rule, or no route).
    pub base_mss: u32,
    /// The MSS before (0: none, one was inserted) and after.
    pub mss_from: u16,
    pub mss_to: u16,
    pub sport: u16,
    pub dport: u16,
    /// 4 or 6.
    pub family: u8,
    /// `RULE_LEARNED_*`.
    pub rule: u8,
    /// `CLAMP_FLAG_*`.
    pub flags: u8,
    /// 1 at tc egress, 0 at tc ingress.
    pub egress: u8,
    /// IPv4 in the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<ClampEvent>() == 72);
const _: () = assert!(core::mem::align_of::<ClampEvent>() == 8);

impl ClampEvent {
    pub const fn zeroed() -> Self {
        Self {
            ts_ns: 0,
            ifindex: 0,
            learned_mtu: 0,
            report: 0,
            base_mss: 0,
            mss_from: 0,
            mss_to: 0,
            sport: 0,
            dport: 0,
            family: 0,
            rule: 0,
            flags: 0,
            egress: 0,
            src: [0; 16],
            dst: [0; 16],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    #[test]
    fn keys_keep_the_prefix_and_zero_the_rest() {
        let exact = LearnConfig::EXACT;
        assert_eq!(key(4, &v4([192, 168, 7, 2]), &exact).addr, v4([192, 168, 7, 2]));
        let c = LearnConfig::new(24, 64);
        assert_eq!(key(4, &v4([192, 168, 7, 2]), &c).addr, v4([192, 168, 7, 0]));
        let c = LearnConfig::new(21, 61);
        assert_eq!(key(4, &v4([192, 168, 255, 2]), &c).addr, v4([192, 168, 248, 0]));
        let a6 = [0xfd, 0x54, 0, 0x54, 0, 0x54, 0, 3, 0xab, 0xcd, 0, 0, 0, 0, 0, 2];
        let k = key(6, &a6, &c);
        assert_eq!(k.addr, [0xfd, 0x54, 0, 0x54, 0, 0x54, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(k.family, 6);
        // Out of range is clamped.
        let c = LearnConfig::new(99, 200);
        assert_eq!(key(6, &a6, &c).addr, a6);
        assert_eq!(key(4, &v4([1, 2, 3, 4]), &c).addr, v4([1, 2, 3, 4]));
        assert_eq!(c.prefixes(), (32, 128));
        assert_eq!(LearnConfig::new(24, 64).prefixes(), (24, 64));
        // The family is part of the key: 10.0.0.1 is not a:1::.
        assert_ne!(key(4, &v4([10, 0, 0, 1]), &exact), key(6, &v4([10, 0, 0, 1]), &exact));
    }

    #[test]
    fn every_prefix_length_matches_a_shift_mask() {
        let a6 = [0xff; 16];
        for p in 1..=128u32 {
            let k = key(6, &a6, &LearnConfig::new(32, p));
            let want = u128::MAX.checked_shl(128 - p).unwrap_or(0);
            assert_eq!(u128::from_be_bytes(k.addr), want, "/{p}");
        }
    }

    #[test]
    fn mss_never_goes_below_the_floors() {
        assert_eq!(mss_for(4, 1350), 1310);
        assert_eq!(mss_for(6, 1350), 1290);
        assert_eq!(mss_for(4, 552), 536);
        assert_eq!(mss_for(4, 0), 536);
        assert_eq!(mss_for(6, 1000), 1220);
    }
}
