//! The clamper's corpus: each frame with the exact frame it must become.

use pmtu_common::policy::counters::{AT_OR_BELOW, CLAMPED, INSERTED, MALFORMED, NO_ROOM};

use crate::frames::*;

pub struct ClampCase {
    pub name: &'static str,
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
    ClampCase { name, frame, want, syn, counter }
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
    c.push(case("v4 first fragment, no MSS: no room", mf_in.clone(), mf_in, true, Some(NO_ROOM)));
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
    c
}
