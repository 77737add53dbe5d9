//! The named frame corpus with what the observer must make of each frame.

use std::net::IpAddr;

use pmtu_common::{event::PtbEvent, parse::Outcome};

use crate::frames::*;

/// What a PTB event must contain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub family: u8,
    pub reporter: &'static str,
    pub to: &'static str,
    pub mtu: u32,
    pub estimated: bool,
    pub orig_src: &'static str,
    pub orig_dst: &'static str,
    pub proto: u8,
    pub ports: Option<(u16, u16)>,
    pub quoted_len: u32,
}

impl Want {
    /// Compares with a decoded event; returns a description of differences.
    pub fn check(&self, ev: &PtbEvent) -> Result<(), String> {
        let d = pmtu_user::decode::decode_event(ev).map_err(|e| e.to_string())?;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let got = Want {
            family: d.family,
            reporter: self.reporter,
            to: self.to,
            mtu: d.mtu,
            estimated: d.mtu_estimated,
            orig_src: self.orig_src,
            orig_dst: self.orig_dst,
            proto: d.proto,
            ports: d.sport.zip(d.dport),
            quoted_len: d.quoted_len,
        };
        let addrs_ok = d.reporter == ip(self.reporter)
            && d.to == ip(self.to)
            && d.orig_src == ip(self.orig_src)
            && d.orig_dst == ip(self.orig_dst);
        if got != *self || !addrs_ok {
            return Err(format!("want {self:?}\n got {d:?}"));
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub enum Expect {
    Ptb(Want),
    Other(Outcome),
}

impl Expect {
    pub fn outcome(&self) -> Outcome {
        match self {
            Expect::Ptb(_) => Outcome::Ptb,
            Expect::Other(o) => *o,
        }
    }
}

pub struct Case {
    pub name: String,
    pub frame: Vec<u8>,
    pub expect: Expect,
}

fn case(name: &str, frame: Vec<u8>, expect: Expect) -> Case {
    Case { name: name.to_string(), frame, expect }
}

const R1: &str = "192.168.5.2";
const H0: &str = "192.168.5.1";
const H3: &str = "192.168.7.2";
const R1V6: &str = "fd54:54:54:1::2";
const H0V6: &str = "fd54:54:54:1::1";
const H3V6: &str = "fd54:54:54:3::2";

fn want4(mtu: u32, proto: u8, ports: Option<(u16, u16)>, quoted_len: u32) -> Want {
    Want {
        family: 4,
        reporter: R1,
        to: H0,
        mtu,
        estimated: false,
        orig_src: H0,
        orig_dst: H3,
        proto,
        ports,
        quoted_len,
    }
}

fn want6(mtu: u32, proto: u8, ports: Option<(u16, u16)>, quoted_len: u32) -> Want {
    Want {
        family: 6,
        reporter: R1V6,
        to: H0V6,
        mtu,
        estimated: false,
        orig_src: H0V6,
        orig_dst: H3V6,
        proto,
        ports,
        quoted_len,
    }
}

/// A v4 Frag-Needed from r1 to h0 about a UDP packet h0 sent to h3.
pub fn ptb4(mtu: u16) -> Vec<u8> {
    let quote = quote_v4(H0, H3, 17, 1500, udp_head(40000, 53));
    V4::new(R1, H0, 1).build(&frag_needed(mtu, &quote))
}

/// A v6 Packet-Too-Big from r1 to h0 about a TCP segment h0 sent to h3.
pub fn ptb6(mtu: u32, outer_exts: &[(u8, Vec<u8>)], quoted_exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let tcp = [0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1];
    let quote = quote_v6(H0V6, H3V6, quoted_exts, 6, 1500, tcp);
    let msg = icmp6(R1V6, H0V6, 2, 0, mtu.to_be_bytes(), &quote);
    V6 { exts: outer_exts, ..V6::new(R1V6, H0V6, 58) }.build(&msg)
}

pub fn corpus() -> Vec<Case> {
    use Outcome::*;
    let udp = Some((40000, 53));
    let tcp = Some((40000, 443));
    let mut c = Vec::new();

    // IPv4.
    c.push(case("v4 frag-needed, quoted UDP", eth(&[], ETH_P_IP, &ptb4(1370)), Expect::Ptb(want4(1370, 17, udp, 1500))));
    let echo = quote_v4(H0, H3, 1, 1500, echo_head(false));
    c.push(case(
        "v4 frag-needed, quoted ICMP echo (no ports)",
        eth(&[], ETH_P_IP, &V4::new(R1, H0, 1).build(&frag_needed(1370, &echo))),
        Expect::Ptb(want4(1370, 1, None, 1500)),
    ));
    c.push(case("v4 in 802.1Q", eth(&[TPID_8021Q], ETH_P_IP, &ptb4(1370)), Expect::Ptb(want4(1370, 17, udp, 1500))));
    c.push(case(
        "v4 in QinQ (802.1ad + 802.1Q)",
        eth(&[TPID_8021AD, TPID_8021Q], ETH_P_IP, &ptb4(1370)),
        Expect::Ptb(want4(1370, 17, udp, 1500)),
    ));
    c.push(case(
        "v4 under three VLAN tags (beyond the walk)",
        eth(&[TPID_8021AD, TPID_8021Q, TPID_8021Q], ETH_P_IP, &ptb4(1370)),
        Expect::Other(Malformed),
    ));
    let quote = quote_v4(H0, H3, 17, 1500, udp_head(40000, 53));
    let rr = [7u8, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0]; // Record Route, 2 slots
    c.push(case(
        "v4 outer header with options (IHL 8)",
        eth(&[], ETH_P_IP, &V4 { options: &rr, ..V4::new(R1, H0, 1) }.build(&frag_needed(1370, &quote))),
        Expect::Ptb(want4(1370, 17, udp, 1500)),
    ));
    let quote_opts = V4 { options: &[1, 1, 1, 0], total_len: Some(1400), ..V4::new(H0, H3, 17) }.build(&udp_head(40000, 53));
    c.push(case(
        "v4 quoted header with options (quoted IHL 6)",
        eth(&[], ETH_P_IP, &V4::new(R1, H0, 1).build(&frag_needed(1300, &quote_opts))),
        Expect::Ptb(want4(1300, 17, udp, 1400)),
    ));
    let mut est = want4(1492, 17, udp, 1500);
    est.estimated = true;
    c.push(case("v4 MTU 0: RFC 1191 plateau below 1500", eth(&[], ETH_P_IP, &ptb4(0)), Expect::Ptb(est)));
    let small = quote_v4(H0, H3, 17, 1006, udp_head(40000, 53));
    let mut est = want4(508, 17, udp, 1006);
    est.estimated = true;
    c.push(case(
        "v4 MTU 0: plateau below 1006 is 508",
        eth(&[], ETH_P_IP, &V4::new(R1, H0, 1).build(&frag_needed(0, &small))),
        Expect::Ptb(est),
    ));
    c.push(case(
        "v4 MTU 65535",
        eth(&[], ETH_P_IP, &ptb4(65535)),
        Expect::Ptb(want4(65535, 17, udp, 1500)),
    ));
    c.push(case(
        "v4 outer non-first fragment",
        eth(&[], ETH_P_IP, &V4 { frag: 0x0010, ..V4::new(R1, H0, 1) }.build(&frag_needed(1370, &quote))),
        Expect::Other(FragmentSkipped),
    ));
    c.push(case(
        "v4 outer first fragment (MF set, offset 0)",
        eth(&[], ETH_P_IP, &V4 { frag: 0x2000, ..V4::new(R1, H0, 1) }.build(&frag_needed(1370, &quote))),
        Expect::Ptb(want4(1370, 17, udp, 1500)),
    ));
    let later = V4 { frag: 0x2005, total_len: Some(1500), ..V4::new(H0, H3, 17) }.build(&udp_head(40000, 53));
    c.push(case(
        "v4 quoting a non-first fragment: no ports",
        eth(&[], ETH_P_IP, &V4::new(R1, H0, 1).build(&frag_needed(1370, &later))),
        Expect::Ptb(want4(1370, 17, None, 1500)),
    ));
    c.push(case(
        "v4 port unreachable (type 3 code 3)",
        eth(&[], ETH_P_IP, &V4::new(R1, H0, 1).build(&icmp4(3, 3, [0; 4], &quote))),
        Expect::Other(NotPtb),
    ));
    c.push(case(
        "v4 echo request",
        eth(&[], ETH_P_IP, &V4::new(H0, H3, 1).build(&icmp4(8, 0, [0, 1, 0, 1], b"hello"))),
        Expect::Other(NotPtb),
    ));
    c.push(case("v4 UDP", eth(&[], ETH_P_IP, &V4::new(H0, H3, 17).build(&udp_head(1, 2))), Expect::Other(NotPtb)));
    let mut bad_ihl = ptb4(1370);
    bad_ihl[0] = 0x44;
    c.push(case("v4 IHL 4 (< 5)", eth(&[], ETH_P_IP, &bad_ihl), Expect::Other(Malformed)));
    let mut bad_ver = ptb4(1370);
    bad_ver[0] = 0x65;
    c.push(case("v4 EtherType with version 6", eth(&[], ETH_P_IP, &bad_ver), Expect::Other(Malformed)));
    let mut bad_quote = ptb4(1370);
    bad_quote[28] = 0x43; // quoted IHL 3
    c.push(case("v4 quoted IHL 3", eth(&[], ETH_P_IP, &bad_quote), Expect::Other(Malformed)));
    let short_total = V4 { total_len: Some(20 + 8 + 10), ..V4::new(R1, H0, 1) }.build(&frag_needed(1370, &quote));
    c.push(case(
        "v4 total length ends inside the quote (trailing bytes ignored)",
        eth(&[], ETH_P_IP, &short_total),
        Expect::Other(Malformed),
    ));
    c.push(case("ARP", eth(&[], ETH_P_ARP, &[0u8; 28]), Expect::Other(NotIp)));
    c.push(case("runt frame (12 bytes)", vec![0u8; 12], Expect::Other(Malformed)));

    // IPv6.
    c.push(case("v6 packet-too-big, quoted TCP", eth(&[], ETH_P_IPV6, &ptb6(1370, &[], &[])), Expect::Ptb(want6(1370, 6, tcp, 1500))));
    c.push(case("v6 in 802.1Q", eth(&[TPID_8021Q], ETH_P_IPV6, &ptb6(1280, &[], &[])), Expect::Ptb(want6(1280, 6, tcp, 1500))));
    c.push(case(
        "v6 after hop-by-hop, destination options and routing headers",
        eth(&[], ETH_P_IPV6, &ptb6(1400, &[ext(0, 0), ext(60, 1), ext(43, 0)], &[])),
        Expect::Ptb(want6(1400, 6, tcp, 1500)),
    ));
    c.push(case(
        "v6 after a first-fragment header",
        eth(&[], ETH_P_IPV6, &ptb6(1400, &[frag_ext(0, true)], &[])),
        Expect::Ptb(want6(1400, 6, tcp, 1500)),
    ));
    c.push(case(
        "v6 non-first fragment",
        eth(&[], ETH_P_IPV6, &ptb6(1400, &[frag_ext(10, false)], &[])),
        Expect::Other(FragmentSkipped),
    ));
    c.push(case(
        "v6 chain of 6 extension headers (at the bound)",
        eth(&[], ETH_P_IPV6, &ptb6(1400, &[ext(0, 0), ext(60, 0), ext(43, 0), ext(60, 0), ext(60, 0), ext(60, 0)], &[])),
        Expect::Ptb(want6(1400, 6, tcp, 1500)),
    ));
    c.push(case(
        "v6 chain of 7 extension headers (beyond the bound)",
        eth(&[], ETH_P_IPV6, &ptb6(1400, &[ext(0, 0), ext(60, 0), ext(43, 0), ext(60, 0), ext(60, 0), ext(60, 0), ext(60, 0)], &[])),
        Expect::Other(Malformed),
    ));
    c.push(case(
        "v6 quoted packet with hop-by-hop and fragment headers",
        eth(&[], ETH_P_IPV6, &ptb6(1280, &[], &[ext(0, 0), frag_ext(0, true)])),
        Expect::Ptb(want6(1280, 6, tcp, 1500)),
    ));
    c.push(case(
        "v6 quoting a non-first fragment: no ports",
        eth(&[], ETH_P_IPV6, &ptb6(1280, &[], &[frag_ext(3, true)])),
        Expect::Ptb(want6(1280, 6, None, 1500)),
    ));
    c.push(case("v6 MTU 1279", eth(&[], ETH_P_IPV6, &ptb6(1279, &[], &[])), Expect::Ptb(want6(1279, 6, tcp, 1500))));
    c.push(case("v6 MTU 0x10000 (32-bit field)", eth(&[], ETH_P_IPV6, &ptb6(65536, &[], &[])), Expect::Ptb(want6(65536, 6, tcp, 1500))));
    let tcp_quote = quote_v6(H0V6, H3V6, &[], 6, 1500, [0; 8]);
    c.push(case(
        "v6 packet-too-big with code 1",
        eth(&[], ETH_P_IPV6, &V6::new(R1V6, H0V6, 58).build(&icmp6(R1V6, H0V6, 2, 1, 1400u32.to_be_bytes(), &tcp_quote))),
        Expect::Other(NotPtb),
    ));
    c.push(case(
        "v6 destination unreachable",
        eth(&[], ETH_P_IPV6, &V6::new(R1V6, H0V6, 58).build(&icmp6(R1V6, H0V6, 1, 4, [0; 4], &tcp_quote))),
        Expect::Other(NotPtb),
    ));
    c.push(case("v6 UDP", eth(&[], ETH_P_IPV6, &V6::new(H0V6, H3V6, 17).build(&udp_head(1, 2))), Expect::Other(NotPtb)));
    let mut bad6 = ptb6(1400, &[], &[]);
    bad6[0] = 0x40;
    c.push(case("v6 EtherType with version 4", eth(&[], ETH_P_IPV6, &bad6), Expect::Other(Malformed)));
    c
}

/// What a frame cut to `cut` bytes must give, for a valid PTB whose quoted
/// addresses end at `addrs_end` and quoted ports at `ports_end`: without the
/// addresses nothing trustworthy is left (Malformed); without the ports it is
/// still a PTB, with no ports.
pub fn truncated(cut: usize, addrs_end: usize, ports_end: usize) -> (Outcome, bool) {
    if cut < addrs_end { (Outcome::Malformed, false) } else { (Outcome::Ptb, cut >= ports_end) }
}
