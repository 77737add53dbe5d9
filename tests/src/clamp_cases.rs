//! The clamper's corpus: each frame with the exact frame it must become.

use pmtu_common::{
    parse::Link,
    policy::counters::{AT_OR_BELOW, CLAMPED, COUNT, FRAGMENT, INSERTED, IPSEC, MALFORMED, NAMES, NO_ROOM, TCP_AO},
};

use crate::frames::*;

pub struct ClampCase {
    pub name: &'static str,
    /// The interface's link layout: `Link::L3` frames are bare IP packets
    /// (run through the `_l3` programs on a tun device).
    pub link: Link,
    /// Marked as a GSO super-packet (`__sk_buff.gso_size` set).
    pub gso: bool,
    pub frame: Vec<u8>,
    /// The frame the clamper must produce (the input when untouched).
    pub want: Vec<u8>,
    /// Whether the segment counts as a SYN (SYN set, RST clear).
    pub syn: bool,
    /// The outcome counter it must increment, if any.
    pub counter: Option<u32>,
}

pub const CLAMP: u16 = 1360;
const C4: &str = "10.1.1.1";
const S4: &str = "10.1.3.2";
const C6: &str = "fd00:1:1::1";
const S6: &str = "fd00:1:3::2";

fn v4(flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    eth(&[], ETH_P_IP, &V4::new(C4, S4, 6).build(&tcp(C4, S4, flags, opts, payload)))
}

fn v6(flags: u8, opts: &[u8], exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    eth(&[], ETH_P_IPV6, &V6 { exts, ..V6::new(C6, S6, 6) }.build(&tcp(C6, S6, flags, opts, &[])))
}

fn with(mut a: Vec<u8>, b: &[u8]) -> Vec<u8> {
    a.extend_from_slice(b);
    a
}

fn case(name: &'static str, frame: Vec<u8>, want: Vec<u8>, syn: bool, counter: Option<u32>) -> ClampCase {
    ClampCase { name, link: Link::Ethernet, gso: false, frame, want, syn, counter }
}

/// A case whose frame must come out as it went in.
fn same(name: &'static str, frame: Vec<u8>, syn: bool, counter: Option<u32>) -> ClampCase {
    case(name, frame.clone(), frame, syn, counter)
}

fn l3(c: ClampCase) -> ClampCase {
    let ethertype = u16::from_be_bytes([c.frame[12], c.frame[13]]);
    ClampCase { link: Link::L3 { ethertype }, frame: c.frame[14..].to_vec(), want: c.want[14..].to_vec(), ..c }
}

fn gso(c: ClampCase) -> ClampCase {
    ClampCase { gso: true, ..c }
}

fn v4_ip(ip: V4, flags: u8, low: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    eth(&[], ETH_P_IP, &ip.build(&tcp_with_low_bits(C4, S4, low, flags, opts, payload)))
}

fn v6_ip(ip: V6, flags: u8, low: u8, opts: &[u8]) -> Vec<u8> {
    eth(&[], ETH_P_IPV6, &ip.build(&tcp_with_low_bits(C6, S6, low, flags, opts, &[])))
}

/// An IPv6 Authentication Header of 24 bytes (RFC 4302 §2: 12 fixed bytes
/// and a 12-byte ICV).
fn ah() -> (u8, Vec<u8>) {
    (51, vec![0u8; 24])
}

/// TCP-AO (RFC 5925 §2.2): kind 29, length 16, KeyID, RNextKeyID, a 12-byte MAC.
fn tcp_ao() -> Vec<u8> {
    let mut o = vec![29, 16, 1, 1];
    o.extend_from_slice(&[0xa5; 12]);
    o
}

/// Every case runs with `--set-mss 1360`.
pub fn clamp_corpus() -> Vec<ClampCase> {
    let ws_sack_ts = [1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0];
    let mut c = vec![
        case("v4 SYN, Linux layout, MSS 1460 first", v4(SYN, &linux_syn_options(1460), &[]), v4(SYN, &linux_syn_options(CLAMP), &[]), true, Some(CLAMPED)),
        case(
            "v4 SYN, MSS last after window scale, SACK, timestamps",
            v4(SYN, &with(ws_sack_ts.to_vec(), &mss_option(1460)), &[]),
            v4(SYN, &with(ws_sack_ts.to_vec(), &mss_option(CLAMP)), &[]),
            true,
            Some(CLAMPED),
        ),
        case("v4 SYN-ACK, MSS 1460", v4(SYN_ACK, &linux_syn_options(1460), &[]), v4(SYN_ACK, &linux_syn_options(CLAMP), &[]), true, Some(CLAMPED)),
        case("v4 SYN, MSS 1200 (below)", v4(SYN, &mss_option(1200), &[]), v4(SYN, &mss_option(1200), &[]), true, Some(AT_OR_BELOW)),
        case("v4 SYN, MSS equal to the clamp", v4(SYN, &mss_option(CLAMP), &[]), v4(SYN, &mss_option(CLAMP), &[]), true, Some(AT_OR_BELOW)),
        case(
            "v4 SYN, MSS then NOP/EOL padding",
            v4(SYN, &[2, 4, 5, 0xb4, 1, 1, 0, 0], &[]),
            v4(SYN, &[2, 4, 0x05, 0x50, 1, 1, 0, 0], &[]),
            true,
            Some(CLAMPED),
        ),
        case(
            "v4 SYN, two MSS options: both lowered",
            v4(SYN, &with(mss_option(1460), &mss_option(1400)), &[]),
            v4(SYN, &with(mss_option(CLAMP), &mss_option(CLAMP)), &[]),
            true,
            Some(CLAMPED),
        ),
        case("v4 SYN, no options: MSS 536 inserted", v4(SYN, &[], &[]), v4(SYN, &mss_option(536), &[]), true, Some(INSERTED)),
        case(
            "v4 SYN, options without MSS: inserted in front",
            v4(SYN, &ws_sack_ts, &[]),
            v4(SYN, &with(mss_option(536), &ws_sack_ts), &[]),
            true,
            Some(INSERTED),
        ),
        case(
            "v4 SYN, NOP NOP EOL only: inserted in front",
            v4(SYN, &[1, 1, 0, 0], &[]),
            v4(SYN, &[2, 4, 2, 0x18, 1, 1, 0, 0], &[]),
            true,
            Some(INSERTED),
        ),
        case("v4 SYN with payload and MSS: lowered", v4(SYN, &mss_option(1460), b"hello"), v4(SYN, &mss_option(CLAMP), b"hello"), true, Some(CLAMPED)),
        case("v4 SYN with payload, no MSS: no room", v4(SYN, &[], b"hello"), v4(SYN, &[], b"hello"), true, Some(NO_ROOM)),
        case("v4 SYN, 40 bytes of options, no MSS: no room", v4(SYN, &[1; 40], &[]), v4(SYN, &[1; 40], &[]), true, Some(NO_ROOM)),
        case("v4 SYN, option length 0", v4(SYN, &[3, 0, 1, 1], &[]), v4(SYN, &[3, 0, 1, 1], &[]), true, Some(MALFORMED)),
        case("v4 SYN, option length 1", v4(SYN, &[3, 1, 1, 1], &[]), v4(SYN, &[3, 1, 1, 1], &[]), true, Some(MALFORMED)),
        case("v4 SYN, option past the header", v4(SYN, &[1, 1, 8, 10], &[]), v4(SYN, &[1, 1, 8, 10], &[]), true, Some(MALFORMED)),
        case("v4 SYN, MSS option of length 3", v4(SYN, &[2, 3, 5, 1], &[]), v4(SYN, &[2, 3, 5, 1], &[]), true, Some(MALFORMED)),
        case(
            "v4 SYN, MSS option of length 6",
            v4(SYN, &[2, 6, 5, 0xb4, 0, 0, 1, 1], &[]),
            v4(SYN, &[2, 6, 5, 0xb4, 0, 0, 1, 1], &[]),
            true,
            Some(MALFORMED),
        ),
        case("v4 SYN+RST: not a SYN", v4(SYN | RST, &mss_option(1460), &[]), v4(SYN | RST, &mss_option(1460), &[]), false, None),
        case("v4 pure ACK carrying an MSS option", v4(ACK, &mss_option(1460), &[]), v4(ACK, &mss_option(1460), &[]), false, None),
    ];
    let vlan_in = eth(&[TPID_8021Q], ETH_P_IP, &V4::new(C4, S4, 6).build(&tcp(C4, S4, SYN, &linux_syn_options(1460), &[])));
    let vlan_out = eth(&[TPID_8021Q], ETH_P_IP, &V4::new(C4, S4, 6).build(&tcp(C4, S4, SYN, &linux_syn_options(CLAMP), &[])));
    c.push(case("v4 SYN in 802.1Q", vlan_in, vlan_out, true, Some(CLAMPED)));
    let qinq_in = eth(&[TPID_8021AD, TPID_8021Q], ETH_P_IP, &V4::new(C4, S4, 6).build(&tcp(C4, S4, SYN, &[], &[])));
    let qinq_out = eth(&[TPID_8021AD, TPID_8021Q], ETH_P_IP, &V4::new(C4, S4, 6).build(&tcp(C4, S4, SYN, &mss_option(536), &[])));
    c.push(case("v4 SYN in QinQ, option inserted", qinq_in, qinq_out, true, Some(INSERTED)));
    let rr = [7u8, 7, 4, 0, 0, 0, 0];
    let opt_in = eth(&[], ETH_P_IP, &V4 { options: &rr, ..V4::new(C4, S4, 6) }.build(&tcp(C4, S4, SYN, &linux_syn_options(1460), &[])));
    let opt_out = eth(&[], ETH_P_IP, &V4 { options: &rr, ..V4::new(C4, S4, 6) }.build(&tcp(C4, S4, SYN, &linux_syn_options(CLAMP), &[])));
    c.push(case("v4 SYN with IP options (IHL 7)", opt_in, opt_out, true, Some(CLAMPED)));
    let frag = eth(&[], ETH_P_IP, &V4 { frag: 0x0020, ..V4::new(C4, S4, 6) }.build(&tcp(C4, S4, SYN, &mss_option(1460), &[])));
    c.push(case("v4 non-first fragment", frag.clone(), frag, false, None));
    let mf_in = eth(&[], ETH_P_IP, &V4 { frag: 0x2000, ..V4::new(C4, S4, 6) }.build(&tcp(C4, S4, SYN, &[], &[])));
    c.push(same("v4 first fragment, no MSS: untouched", mf_in, true, Some(FRAGMENT)));
    let mf_mss = eth(&[], ETH_P_IP, &V4 { frag: 0x2000, ..V4::new(C4, S4, 6) }.build(&tcp(C4, S4, SYN, &mss_option(1460), &[])));
    c.push(same("v4 first fragment with MSS 1460: untouched", mf_mss, true, Some(FRAGMENT)));
    let udp = eth(&[], ETH_P_IP, &V4::new(C4, S4, 17).build(&udp_head(1, 2)));
    c.push(case("v4 UDP", udp.clone(), udp, false, None));

    c.push(case("v6 SYN, Linux layout, MSS 1440", v6(SYN, &linux_syn_options(1440), &[]), v6(SYN, &linux_syn_options(CLAMP), &[]), true, Some(CLAMPED)));
    c.push(case("v6 SYN-ACK, MSS 1440", v6(SYN_ACK, &linux_syn_options(1440), &[]), v6(SYN_ACK, &linux_syn_options(CLAMP), &[]), true, Some(CLAMPED)));
    c.push(case("v6 SYN, no options: MSS 1220 inserted", v6(SYN, &[], &[]), v6(SYN, &mss_option(1220), &[]), true, Some(INSERTED)));
    c.push(case(
        "v6 SYN behind hop-by-hop and destination options",
        v6(SYN, &linux_syn_options(1440), &[ext(0, 0), ext(60, 1)]),
        v6(SYN, &linux_syn_options(CLAMP), &[ext(0, 0), ext(60, 1)]),
        true,
        Some(CLAMPED),
    ));
    c.push(case(
        "v6 SYN behind extension headers, option inserted",
        v6(SYN, &ws_sack_ts, &[ext(60, 0)]),
        v6(SYN, &with(mss_option(1220), &ws_sack_ts), &[ext(60, 0)]),
        true,
        Some(INSERTED),
    ));
    c.push(case("v6 SYN, MSS 1000 (below)", v6(SYN, &mss_option(1000), &[]), v6(SYN, &mss_option(1000), &[]), true, Some(AT_OR_BELOW)));
    c.push(case("v6 SYN, option length 0", v6(SYN, &[3, 0, 1, 1], &[]), v6(SYN, &[3, 0, 1, 1], &[]), true, Some(MALFORMED)));
    let later = v6(SYN, &mss_option(1440), &[frag_ext(8, false)]);
    c.push(case("v6 non-first fragment", later.clone(), later, false, None));
    c.extend(hardened_cases());
    c
}

/// The cases of "clamp correctly on real routers": odd offsets, word 6,
/// fragments, authentication, GSO and L3 framing.
fn hardened_cases() -> Vec<ClampCase> {
    let odd = [1, 2, 4, 5, 0xb4, 1, 1, 1];
    let odd_out = [1, 2, 4, 0x05, 0x50, 1, 1, 1];
    let three_nops = [1, 1, 1, 2, 4, 5, 0xb4, 4, 2, 1, 1, 1];
    let three_nops_out = [1, 1, 1, 2, 4, 0x05, 0x50, 4, 2, 1, 1, 1];
    let mut c = vec![
        case("v4 SYN, MSS at an odd offset (NOP, MSS)", v4(SYN, &odd, &[]), v4(SYN, &odd_out, &[]), true, Some(CLAMPED)),
        case("v4 SYN-ACK, MSS at offset 23", v4(SYN_ACK, &three_nops, &[]), v4(SYN_ACK, &three_nops_out, &[]), true, Some(CLAMPED)),
        case("v6 SYN, MSS at an odd offset (NOP, MSS)", v6(SYN, &odd, &[]), v6(SYN, &odd_out, &[]), true, Some(CLAMPED)),
        case(
            "v4 SYN, two MSS options at odd offsets",
            v4(SYN, &[1, 2, 4, 5, 0xb4, 1, 2, 4, 5, 0x78, 1, 1], &[]),
            v4(SYN, &[1, 2, 4, 0x05, 0x50, 1, 2, 4, 0x05, 0x50, 1, 1], &[]),
            true,
            Some(CLAMPED),
        ),
        case(
            "v4 SYN, no MSS, AE and reserved bits set: inserted, bits kept",
            v4_ip(V4::new(C4, S4, 6), SYN, 0x0f, &[4, 2, 1, 1], &[]),
            v4_ip(V4::new(C4, S4, 6), SYN, 0x0f, &[2, 4, 2, 0x18, 4, 2, 1, 1], &[]),
            true,
            Some(INSERTED),
        ),
        case(
            "v6 SYN-ACK, no MSS, AE set: inserted, AE kept",
            v6_ip(V6::new(C6, S6, 6), SYN_ACK, 0x01, &[]),
            v6_ip(V6::new(C6, S6, 6), SYN_ACK, 0x01, &mss_option(1220)),
            true,
            Some(INSERTED),
        ),
        case(
            "v4 SYN, MSS 1460 with AE set: lowered, AE kept",
            v4_ip(V4::new(C4, S4, 6), SYN, 0x01, &linux_syn_options(1460), &[]),
            v4_ip(V4::new(C4, S4, 6), SYN, 0x01, &linux_syn_options(CLAMP), &[]),
            true,
            Some(CLAMPED),
        ),
    ];
    c.push(same("v6 first fragment (offset 0, M=1) with MSS: untouched", v6(SYN, &mss_option(1440), &[frag_ext(0, true)]), true, Some(FRAGMENT)));
    c.push(same("v6 first fragment, no MSS: untouched", v6(SYN, &[], &[frag_ext(0, true)]), true, Some(FRAGMENT)));
    c.push(same("v6 atomic fragment (offset 0, M=0): untouched", v6(SYN, &mss_option(1440), &[frag_ext(0, false)]), true, Some(FRAGMENT)));
    c.push(same("v6 SYN behind AH: untouched", v6(SYN, &linux_syn_options(1440), &[ah()]), true, Some(IPSEC)));
    c.push(same("v6 SYN behind hop-by-hop and AH, no MSS: untouched", v6(SYN, &[], &[ext(0, 0), ah()]), true, Some(IPSEC)));
    c.push(same("v4 SYN with TCP-AO and MSS 1460: untouched", v4(SYN, &with(mss_option(1460), &tcp_ao()), &[]), true, Some(TCP_AO)));
    c.push(same("v6 SYN-ACK with TCP-AO, no MSS: untouched", v6(SYN_ACK, &tcp_ao(), &[]), true, Some(TCP_AO)));
    // TCP-MD5 (RFC 2385 §2.0) signs the TCP header without its options, so
    // clamping beside it is safe, unlike TCP-AO.
    let md5 = {
        let mut o = vec![19, 18];
        o.extend_from_slice(&[0x5a; 16]);
        o
    };
    c.push(case(
        "v4 SYN with TCP-MD5 and MSS 1460: lowered (MD5 does not sign options)",
        v4(SYN, &with(mss_option(1460), &md5), &[]),
        v4(SYN, &with(mss_option(CLAMP), &md5), &[]),
        true,
        Some(CLAMPED),
    ));

    // BIG TCP: an IP length of 0 in a GSO super-packet means "to the end".
    let big4 = |mss: &[u8]| eth(&[], ETH_P_IP, &V4 { total_len: Some(0), ..V4::new(C4, S4, 6) }.build(&tcp(C4, S4, SYN, mss, &[])));
    let big6 = |mss: &[u8]| eth(&[], ETH_P_IPV6, &V6 { payload_len: Some(0), ..V6::new(C6, S6, 6) }.build(&tcp(C6, S6, SYN_ACK, mss, &[])));
    c.push(gso(case("GSO v4, tot_len 0, MSS 1460: lowered, length kept 0", big4(&mss_option(1460)), big4(&mss_option(CLAMP)), true, Some(CLAMPED))));
    c.push(gso(case("GSO v6, payload_len 0, MSS 1440: lowered", big6(&mss_option(1440)), big6(&mss_option(CLAMP)), true, Some(CLAMPED))));
    c.push(gso(same("GSO v4, tot_len 0, no MSS: no room", big4(&[]), true, Some(NO_ROOM))));
    let data = eth(&[], ETH_P_IP, &V4 { total_len: Some(0), ..V4::new(C4, S4, 6) }.build(&tcp(C4, S4, ACK, &[], &[0x42; 1200])));
    c.push(gso(same("GSO v4 data segment, tot_len 0: not a SYN", data, false, None)));
    // Without GSO a zero length is what it says: malformed.
    c.push(same("v4 tot_len 0 without GSO: malformed", big4(&mss_option(1460)), false, Some(MALFORMED)));
    c.push(same("v6 payload_len 0 without GSO: malformed", big6(&mss_option(1440)), false, Some(MALFORMED)));

    // L3 devices (tun, WireGuard, PPP): the frame is the IP packet.
    c.push(l3(case("L3 v4 SYN, Linux layout", v4(SYN, &linux_syn_options(1460), &[]), v4(SYN, &linux_syn_options(CLAMP), &[]), true, Some(CLAMPED))));
    c.push(l3(case("L3 v4 SYN, MSS at an odd offset", v4(SYN, &odd, &[]), v4(SYN, &odd_out, &[]), true, Some(CLAMPED))));
    c.push(l3(case("L3 v4 SYN, no options: inserted", v4(SYN, &[], &[]), v4(SYN, &mss_option(536), &[]), true, Some(INSERTED))));
    c.push(l3(case("L3 v6 SYN-ACK, MSS 1440", v6(SYN_ACK, &linux_syn_options(1440), &[]), v6(SYN_ACK, &linux_syn_options(CLAMP), &[]), true, Some(CLAMPED))));
    c.push(l3(case(
        "L3 v6 SYN behind hop-by-hop, inserted",
        v6(SYN, &[4, 2, 1, 1], &[ext(0, 0)]),
        v6(SYN, &[2, 4, 4, 0xc4, 4, 2, 1, 1], &[ext(0, 0)]),
        true,
        Some(INSERTED),
    )));
    c.push(l3(same("L3 v6 first fragment: untouched", v6(SYN, &mss_option(1440), &[frag_ext(0, true)]), true, Some(FRAGMENT))));
    c.push(l3(same("L3 v4 UDP", eth(&[], ETH_P_IP, &V4::new(C4, S4, 17).build(&udp_head(1, 2))), false, None)));
    c
}

/// The clamp counters that moved between two readings, `name+N` each.
pub fn deltas(before: &[u64; COUNT as usize], after: &[u64; COUNT as usize]) -> String {
    NAMES
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|(n, (b, a))| format!("{n}+{}", a - b))
        .collect::<Vec<_>>()
        .join(" ")
}
