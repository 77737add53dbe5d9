//! The named frame corpus with what the observer must make of each frame.

use std::net::IpAddr;

use pmtu_common::{
    event::PtbEvent,
    parse::Outcome,
    validate::{
        REASON_BAD_CHECKSUM, REASON_BELOW_FLOOR, REASON_EXT_HEADER_LIMIT, REASON_NOT_FOR_US, REASON_NOT_SMALLER,
        REASON_QUOTED_FRAGMENT, REASON_TRUNCATED_QUOTE,
    },
};

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
    /// The validation reasons the message itself earns
    /// (`validate::REASON_*`), before flow memory and rate limits.
    pub reasons: u16,
    /// Reasons it earns only where it is seen arriving (checksums, not
    /// addressed to this host), not as this host's own at egress.
    pub arrival_reasons: u16,
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
            reasons: self.reasons,
            arrival_reasons: self.arrival_reasons,
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
    /// Sent by this host, the frame is a flow the egress recorder keeps
    /// (TCP, UDP, SCTP, DCCP, UDP-Lite, ICMP echo request).
    pub is_flow: bool,
}

fn case(name: &str, frame: Vec<u8>, expect: Expect) -> Case {
    Case { name: name.to_string(), frame, expect, is_flow: false }
}

fn flow_case(name: &str, frame: Vec<u8>) -> Case {
    Case { is_flow: true, ..case(name, frame, Expect::Other(Outcome::NotPtb)) }
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
        arrival_reasons: 0,
        orig_src: H0,
        orig_dst: H3,
        proto,
        ports,
        quoted_len,
        reasons: 0,
    }
}

fn want6(mtu: u32, proto: u8, ports: Option<(u16, u16)>, quoted_len: u32) -> Want {
    Want {
        family: 6,
        reporter: R1V6,
        to: H0V6,
        mtu,
        estimated: false,
        arrival_reasons: 0,
        orig_src: H0V6,
        orig_dst: H3V6,
        proto,
        ports,
        quoted_len,
        reasons: 0,
    }
}

fn with_reasons(mut w: Want, reasons: u16) -> Want {
    w.reasons = reasons;
    w
}

fn arriving(mut w: Want, reasons: u16) -> Want {
    w.arrival_reasons = reasons;
    w
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
    // MTU 0 stays 0 (Linux locks min_pmtu for it, the table does too).
    c.push(case("v4 MTU 0: reported as 0", eth(&[], ETH_P_IP, &ptb4(0)), Expect::Ptb(want4(0, 17, udp, 1500))));
    let small = quote_v4(H0, H3, 17, 1006, udp_head(40000, 53));
    c.push(case(
        "v4 MTU 0 quoting 1006 bytes",
        eth(&[], ETH_P_IP, &V4::new(R1, H0, 1).build(&frag_needed(0, &small))),
        Expect::Ptb(want4(0, 17, udp, 1006)),
    ));
    c.push(case(
        "v4 MTU 65535",
        eth(&[], ETH_P_IP, &ptb4(65535)),
        Expect::Ptb(with_reasons(want4(65535, 17, udp, 1500), REASON_NOT_SMALLER)),
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
        Expect::Ptb(with_reasons(want4(1370, 17, None, 1500), REASON_QUOTED_FRAGMENT)),
    ));
    c.push(case(
        "v4 port unreachable (type 3 code 3)",
        eth(&[], ETH_P_IP, &V4::new(R1, H0, 1).build(&icmp4(3, 3, [0; 4], &quote))),
        Expect::Other(NotPtb),
    ));
    c.push(flow_case("v4 echo request", eth(&[], ETH_P_IP, &V4::new(H0, H3, 1).build(&icmp4(8, 0, [0, 1, 0, 1], b"hello")))));
    c.push(flow_case("v4 UDP", eth(&[], ETH_P_IP, &V4::new(H0, H3, 17).build(&udp_head(1, 2)))));
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
    // The MTU ladder around RFC 791's 68 and Linux's 552 floor: all valid,
    // the kernel applies them as min_pmtu locked (__ip_rt_update_pmtu).
    for (mtu, reasons) in [(1u16, 0), (67, 0), (68, 0), (551, 0), (552, 0), (1499, 0)] {
        c.push(case(
            &format!("v4 MTU {mtu}"),
            eth(&[], ETH_P_IP, &ptb4(mtu)),
            Expect::Ptb(with_reasons(want4(mtu as u32, 17, udp, 1500), reasons)),
        ));
    }
    c.push(case(
        "v4 MTU equal to the quoted length",
        eth(&[], ETH_P_IP, &ptb4(1500)),
        Expect::Ptb(with_reasons(want4(1500, 17, udp, 1500), REASON_NOT_SMALLER)),
    ));
    // Quotes that hold less than RFC 792's 8 bytes of the transport header,
    // with every length field consistent: the router chose to send less.
    let udp_ip = V4 { total_len: Some(1500), ..V4::new(H0, H3, 17) }.build(&[]);
    for (name, l4, ports) in [
        ("v4 quote with 4 bytes of UDP header", &[0x9c, 0x40, 0, 53][..], udp),
        ("v4 quote with no transport header", &[][..], None),
    ] {
        let mut quote = udp_ip.clone();
        quote.extend_from_slice(l4);
        c.push(case(
            name,
            eth(&[], ETH_P_IP, &V4::new(R1, H0, 1).build(&frag_needed(1370, &quote))),
            Expect::Ptb(with_reasons(want4(1370, 17, ports, 1500), REASON_TRUNCATED_QUOTE)),
        ));
    }
    let short_quote = &quote_v4(H0, H3, 17, 1500, udp_head(40000, 53))[..12];
    c.push(case(
        "v4 quote cut inside the quoted IP header",
        eth(&[], ETH_P_IP, &V4::new(R1, H0, 1).build(&frag_needed(1370, short_quote))),
        Expect::Other(Malformed),
    ));
    c.push(case(
        "v4 ICMP truncated at 4 bytes",
        eth(&[], ETH_P_IP, &V4::new(R1, H0, 1).build(&frag_needed(1370, &[])[..4])),
        Expect::Other(Malformed),
    ));
    c.push(case(
        "v4 ICMP of 8 bytes, nothing quoted",
        eth(&[], ETH_P_IP, &V4::new(R1, H0, 1).build(&frag_needed(1370, &[]))),
        Expect::Other(Malformed),
    ));
    for (name, proto) in [("v4 quoting IPIP", 4u8), ("v4 quoting GRE", 47), ("v4 quoting an unknown protocol", 253)] {
        let quote = quote_v4(H0, H3, proto, 1500, [0x45, 0, 5, 0xdc, 0, 0, 0x40, 0]);
        c.push(case(
            name,
            eth(&[], ETH_P_IP, &V4::new(R1, H0, 1).build(&frag_needed(1370, &quote))),
            Expect::Ptb(want4(1370, proto, None, 1500)),
        ));
    }
    let mut long_ihl = ptb4(1370);
    // IHL 15 (a 60-byte header) in a datagram whose total length says 40.
    long_ihl[0] = 0x4f;
    long_ihl[2..4].copy_from_slice(&40u16.to_be_bytes());
    c.push(case("v4 IHL beyond the total length", eth(&[], ETH_P_IP, &long_ihl), Expect::Other(Malformed)));
    let long_total = V4 { total_len: Some(2000), ..V4::new(R1, H0, 1) }.build(&frag_needed(1370, &quote));
    c.push(case("v4 total length beyond the frame", eth(&[], ETH_P_IP, &long_total), Expect::Other(Malformed)));
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
        Expect::Ptb(with_reasons(want6(1280, 6, None, 1500), REASON_QUOTED_FRAGMENT)),
    ));
    c.push(case("v6 MTU 1279", eth(&[], ETH_P_IPV6, &ptb6(1279, &[], &[])), Expect::Ptb(with_reasons(want6(1279, 6, tcp, 1500), REASON_BELOW_FLOOR))));
    c.push(case("v6 MTU 1280", eth(&[], ETH_P_IPV6, &ptb6(1280, &[], &[])), Expect::Ptb(want6(1280, 6, tcp, 1500))));
    c.push(case(
        "v6 MTU 0x10000 (32-bit field)",
        eth(&[], ETH_P_IPV6, &ptb6(65536, &[], &[])),
        Expect::Ptb(with_reasons(want6(65536, 6, tcp, 1500), REASON_NOT_SMALLER)),
    ));
    c.push(case(
        "v6 MTU equal to the quoted length",
        eth(&[], ETH_P_IPV6, &ptb6(1500, &[], &[])),
        Expect::Ptb(with_reasons(want6(1500, 6, tcp, 1500), REASON_NOT_SMALLER)),
    ));
    let tcp_quote = quote_v6(H0V6, H3V6, &[], 6, 1500, [0; 8]);
    // RFC 4443 §3.2: the receiver ignores the code (icmpv6_rcv does).
    c.push(case(
        "v6 packet-too-big with code 1",
        eth(&[], ETH_P_IPV6, &V6::new(R1V6, H0V6, 58).build(&icmp6(R1V6, H0V6, 2, 1, 1400u32.to_be_bytes(), &tcp_quote))),
        Expect::Ptb(want6(1400, 6, Some((0, 0)), 1500)),
    ));
    // Checks the kernel makes before it acts on a message.
    let mut bad_icmp = ptb4(1370);
    bad_icmp[22] ^= 0x01;
    c.push(case("v4 wrong ICMP checksum", eth(&[], ETH_P_IP, &bad_icmp), Expect::Ptb(arriving(want4(1370, 17, udp, 1500), REASON_BAD_CHECKSUM))));
    let mut bad_hdr = ptb4(1370);
    bad_hdr[10] ^= 0x01;
    c.push(case("v4 wrong IPv4 header checksum", eth(&[], ETH_P_IP, &bad_hdr), Expect::Ptb(arriving(want4(1370, 17, udp, 1500), REASON_BAD_CHECKSUM))));
    let mut bad_icmp6 = ptb6(1400, &[], &[]);
    bad_icmp6[42] ^= 0x01;
    c.push(case("v6 wrong ICMPv6 checksum", eth(&[], ETH_P_IPV6, &bad_icmp6), Expect::Ptb(arriving(want6(1400, 6, tcp, 1500), REASON_BAD_CHECKSUM))));
    // Addressed to a host that is not this one (forwarding off): dropped.
    let elsewhere = {
        let quote = quote_v6(H0V6, H3V6, &[], 6, 1500, [0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1]);
        V6::new(R1V6, "fd54:54:54:1::99", 58).build(&icmp6(R1V6, "fd54:54:54:1::99", 2, 0, 1400u32.to_be_bytes(), &quote))
    };
    let mut w = arriving(want6(1400, 6, tcp, 1500), REASON_NOT_FOR_US);
    w.to = "fd54:54:54:1::99";
    c.push(case("v6 PTB addressed to another host", eth(&[], ETH_P_IPV6, &elsewhere), Expect::Ptb(w)));
    c.push(case(
        "v6 quote with more extension headers than the walk",
        eth(&[], ETH_P_IPV6, &ptb6(1400, &[], &[ext(0, 0), ext(60, 0), ext(43, 0), ext(60, 0), ext(60, 0), ext(60, 0), ext(60, 0)])),
        Expect::Ptb(with_reasons(want6(1400, 60, None, 1500), REASON_EXT_HEADER_LIMIT)),
    ));
    c.push(case(
        "v6 destination unreachable",
        eth(&[], ETH_P_IPV6, &V6::new(R1V6, H0V6, 58).build(&icmp6(R1V6, H0V6, 1, 4, [0; 4], &tcp_quote))),
        Expect::Other(NotPtb),
    ));
    c.push(flow_case("v6 UDP", eth(&[], ETH_P_IPV6, &V6::new(H0V6, H3V6, 17).build(&udp_head(1, 2)))));
    let mut bad6 = ptb6(1400, &[], &[]);
    bad6[0] = 0x40;
    c.push(case("v6 EtherType with version 4", eth(&[], ETH_P_IPV6, &bad6), Expect::Other(Malformed)));
    let mut long6 = ptb6(1400, &[], &[]);
    long6[4..6].copy_from_slice(&3000u16.to_be_bytes());
    c.push(case("v6 payload length beyond the frame", eth(&[], ETH_P_IPV6, &long6), Expect::Other(Malformed)));
    let q6 = quote_v6(H0V6, H3V6, &[], 17, 1500, udp_head(40000, 53));
    c.push(case(
        "v6 quoted UDP",
        eth(&[], ETH_P_IPV6, &V6::new(R1V6, H0V6, 58).build(&icmp6(R1V6, H0V6, 2, 0, 1400u32.to_be_bytes(), &q6))),
        Expect::Ptb(want6(1400, 17, udp, 1500)),
    ));
    let q6 = quote_v6(H0V6, H3V6, &[], 58, 1500, echo_head(true));
    c.push(case(
        "v6 quoted echo request (no ports)",
        eth(&[], ETH_P_IPV6, &V6::new(R1V6, H0V6, 58).build(&icmp6(R1V6, H0V6, 2, 0, 1400u32.to_be_bytes(), &q6))),
        Expect::Ptb(want6(1400, 58, None, 1500)),
    ));
    let q6 = &quote_v6(H0V6, H3V6, &[], 6, 1500, [0; 8])[..44];
    c.push(case(
        "v6 quote with 4 bytes of TCP header",
        eth(&[], ETH_P_IPV6, &V6::new(R1V6, H0V6, 58).build(&icmp6(R1V6, H0V6, 2, 0, 1400u32.to_be_bytes(), q6))),
        Expect::Ptb(with_reasons(want6(1400, 6, Some((0, 0)), 1500), REASON_TRUNCATED_QUOTE)),
    ));
    c.push(case(
        "v6 ICMPv6 of 8 bytes, nothing quoted",
        eth(&[], ETH_P_IPV6, &V6::new(R1V6, H0V6, 58).build(&icmp6(R1V6, H0V6, 2, 0, 1400u32.to_be_bytes(), &[]))),
        Expect::Other(Malformed),
    ));
    c.push(case(
        "v6 ICMPv6 truncated at 4 bytes",
        eth(&[], ETH_P_IPV6, &V6::new(R1V6, H0V6, 58).build(&icmp6(R1V6, H0V6, 2, 0, 1400u32.to_be_bytes(), &[])[..4])),
        Expect::Other(Malformed),
    ));
    c
}

