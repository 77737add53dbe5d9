//! pmtu's rewrite must leave a TCP checksum a real receiver accepts, for
//! every layout of SYN it may meet: an MSS option at an odd offset (the
//! 16-bit checksum words then straddle the option's bytes), at an even one,
//! a SYN with no MSS option and TCP's AE bit set (the option is inserted
//! next to a flags word that is not the usual one), and IPv6 with a
//! hop-by-hop header in front of TCP.
//!
//! The black-hole lab's c0 — r1 — r2 — s3 with every offload off on every
//! veth end, so nothing along the path marks a checksum as already verified
//! and s3's kernel checks each one in full; r1 runs `pmtu clamp -i to-c0
//! --set-mss 1000`. c0 sends crafted SYNs (scapy) to a real listening socket
//! on s3; each must draw a SYN-ACK (s3 accepted it), reach s3 with the
//! expected MSS and a checksum tcpdump calls correct, and leave s3's
//! TcpInCsumErrors alone. A control SYN with a wrong checksum must draw no
//! SYN-ACK and must count in TcpInCsumErrors: that proves s3 verifies, so
//! the other answers mean something.

use std::{net::TcpListener, time::Duration};

use pmtu_tests::{
    procs::{Proc, pmtu_in, scapy, start_capture_with},
    require_root,
    residue::assert_clean,
    tunnel::offloads_off,
    wire::{Packet, packets, tcp_in_csum_errors},
};
use pmtu_user::lab::BlackHoleLab;
use serde_json::Value;

const EXIT: Duration = Duration::from_secs(20);
const CLAMP: u16 = 1000;

/// One crafted SYN and what s3 must see of it.
struct Syn {
    name: &'static str,
    family: u8,
    sport: u16,
    /// scapy layers between the IP header and TCP (e.g. a hop-by-hop header).
    ext: &'static str,
    /// scapy TCP flags ('S', or 'SN' for SYN + AE: scapy still calls bit 8 NS).
    flags: &'static str,
    options: &'static str,
    want_mss: u16,
    want_ae: bool,
}

impl Syn {
    fn server(&self) -> &'static str {
        if self.family == 4 { BlackHoleLab::SERVER_V4 } else { BlackHoleLab::SERVER_V6 }
    }

    fn scapy(&self, port: u16, chksum: Option<u16>) -> String {
        let ip = if self.family == 4 { "IP" } else { "IPv6" };
        let ck = chksum.map(|c| format!(", chksum={c:#x}")).unwrap_or_default();
        format!(
            "send({ip}(dst='{}'){}/TCP(sport={}, dport={port}, flags='{}', seq={}, window=64240, options={}{ck}), verbose=0)",
            self.server(),
            self.ext,
            self.sport,
            self.flags,
            u32::from(self.sport) * 1000,
            self.options
        )
    }
}

/// MSS 1460 after one NOP: the option's kind byte sits at TCP offset 21.
const ODD: &str = "[('NOP', None), ('MSS', 1460), ('NOP', None), ('NOP', None), ('NOP', None)]";
/// MSS 1460 after two NOPs: offset 22, word-aligned but not first.
const EVEN: &str = "[('NOP', None), ('NOP', None), ('MSS', 1460), ('SAckOK', b'')]";
/// No MSS: pmtu inserts one (as xt_TCPMSS: min(clamp, 536) / min(clamp, 1220)).
const NO_MSS: &str = "[('WScale', 7), ('NOP', None), ('SAckOK', b''), ('NOP', None), ('NOP', None)]";

fn syn(name: &'static str, family: u8, sport: u16, options: &'static str) -> Syn {
    Syn { name, family, sport, ext: "", flags: "S", options, want_mss: CLAMP, want_ae: false }
}

fn start_clamp(lab: &BlackHoleLab) -> Proc {
    let args = ["clamp", "-i", BlackHoleLab::R1_IF_C0, "--set-mss", "1000", "--json"];
    let mut p = Proc::spawn(pmtu_in(&lab.r1, &pmtu_tests::pmtu_bin(), &args), "pmtu clamp --set-mss 1000 (in r1)");
    p.wait_for_stderr("attached to", Duration::from_secs(30));
    p
}

/// Every veth end of the lab: no checksum offload (tx: the sender fills in
/// the full sum; rx: the receiver checks it) and no GSO/GRO.
fn all_offloads_off(lab: &BlackHoleLab) {
    for (ns, ifname) in [
        (&lab.c0, BlackHoleLab::C0_IF),
        (&lab.r1, BlackHoleLab::R1_IF_C0),
        (&lab.r1, BlackHoleLab::R1_IF_R2),
        (&lab.r2, "to-r1"),
        (&lab.r2, "to-s3"),
        (&lab.s3, BlackHoleLab::S3_IF),
    ] {
        offloads_off(ns, ifname).unwrap();
    }
}

/// Sends `syns` (and the control) through r1's clamp and checks each. The
/// findings are collected, not asserted one by one, so a failure lists
/// every case that went wrong.
fn run(syns: &[Syn], port: u16) {
    let lab = BlackHoleLab::build().unwrap();
    all_offloads_off(&lab);
    // Real sockets on s3: an answered SYN means s3's stack took it.
    let v4 = std::net::SocketAddr::new(BlackHoleLab::SERVER_V4.parse().unwrap(), port);
    let v6 = std::net::SocketAddr::new(BlackHoleLab::SERVER_V6.parse().unwrap(), port);
    let listeners = lab.s3.enter(move || (TcpListener::bind(v4).unwrap(), TcpListener::bind(v6).unwrap())).unwrap();
    // Warm up neighbours both ways, so no crafted SYN waits on ARP/ND.
    // (IPv6 waits for r1's and r2's link-local addresses to leave DAD.)
    for server in [BlackHoleLab::SERVER_V4, BlackHoleLab::SERVER_V6] {
        let up = (0..10).any(|_| lab.c0.run("ping", &["-c1", "-W1", server]).is_ok());
        assert!(up, "c0 cannot reach {server}");
    }

    let clamp = start_clamp(&lab);
    // libpcap's `tcp` does not look past IPv6 extension headers: take
    // every packet with a hop-by-hop header too (the cases are told apart
    // by source port).
    let filter = format!("tcp port {port} or (ip6 and ip6[6] == 0)");
    let at_s3 = start_capture_with(&lab.s3, BlackHoleLab::S3_IF, &["-vv", "-x"], &filter);
    let at_c0 = start_capture_with(&lab.c0, BlackHoleLab::C0_IF, &["-vv", "-x"], &filter);
    let before = tcp_in_csum_errors(&lab.s3).unwrap();
    let script: Vec<String> = syns.iter().map(|s| s.scapy(port, None)).collect();
    scapy(&lab.c0, &script.join("\n"));
    std::thread::sleep(Duration::from_millis(500));
    let after_good = tcp_in_csum_errors(&lab.s3).unwrap();

    // The control: a clamped SYN whose checksum was wrong before r1.
    let control = syn("control: wrong checksum", 4, 40999, EVEN);
    scapy(&lab.c0, &control.scapy(port, Some(0xbad1)));
    std::thread::sleep(Duration::from_millis(500));
    let after_bad = tcp_in_csum_errors(&lab.s3).unwrap();

    let s3 = packets(&at_s3.stop(libc::SIGTERM, EXIT));
    let c0 = packets(&at_c0.stop(libc::SIGTERM, EXIT));
    drop(listeners);
    let run = clamp.stop(libc::SIGTERM, EXIT);
    assert!(run.status.success(), "pmtu clamp: {:?}\n{}", run.status, run.stderr.join("\n"));
    let report: Value = serde_json::from_str(run.stdout.last().expect("a report line")).unwrap();
    let counters = &report["interfaces"][0]["counters"];
    assert_clean(&lab.r1, BlackHoleLab::R1_IF_C0);

    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for s in syns {
        let at_server = s3.iter().find(|p| p.is_syn() && p.has_port(s.sport));
        let answered = c0.iter().any(|p| p.is_syn_ack() && p.has_port(s.sport));
        let mut bad = Vec::new();
        match at_server {
            None => bad.push("the SYN never reached s3".to_string()),
            Some(p) => {
                if p.mss() != Some(s.want_mss) {
                    bad.push(format!("MSS {:?}, want {}", p.mss(), s.want_mss));
                }
                if p.cksum_correct() != Some(true) {
                    bad.push(format!("checksum not correct ({:?})", p.cksum_correct()));
                }
                if p.tcp_ae() != Some(s.want_ae) {
                    bad.push(format!("AE bit {:?}, want {}", p.tcp_ae(), s.want_ae));
                }
            }
        }
        if !answered {
            bad.push("no SYN-ACK from s3".to_string());
        }
        let line = at_server.map(|p| p.text.as_str()).unwrap_or("(not seen at s3)");
        summary.push(format!("{}: {}\n    {line}", s.name, if bad.is_empty() { "ok".into() } else { bad.join("; ") }));
        if !bad.is_empty() {
            failures.push(s.name);
        }
    }
    if after_good != before {
        failures.push("TcpInCsumErrors rose");
        summary.push(format!("s3 TcpInCsumErrors {before} -> {after_good} over the good SYNs"));
    }

    // The control proves the receiver checks: no answer, counted, and
    // tcpdump calls it incorrect at s3.
    let ctl_at_s3: Vec<&Packet> = s3.iter().filter(|p| p.has_port(control.sport)).collect();
    let ctl_answered = c0.iter().any(|p| p.is_syn_ack() && p.has_port(control.sport));
    summary.push(format!(
        "control: answered {ctl_answered}, TcpInCsumErrors {after_good} -> {after_bad}, at s3: {:?}",
        ctl_at_s3.iter().map(|p| &p.text).collect::<Vec<_>>()
    ));
    let report = format!("{}\nclamp counters: {counters}", summary.join("\n"));
    eprintln!("{report}");
    assert!(!ctl_answered, "s3 answered a SYN with a wrong checksum: the receiver does not verify\n{report}");
    assert!(after_bad > after_good, "TcpInCsumErrors must count the control\n{report}");
    assert!(
        ctl_at_s3.iter().any(|p| p.cksum_correct() == Some(false)),
        "tcpdump must call the control's checksum incorrect\n{report}"
    );
    assert!(failures.is_empty(), "failed: {failures:?}\n{report}");
}

/// (a) The MSS option one byte into the options (after a NOP).
#[test]
fn mss_at_odd_offset() {
    if require_root("mss_at_odd_offset") {
        run(&[syn("v4 odd offset", 4, 41001, ODD), syn("v6 odd offset", 6, 41002, ODD)], 5301);
    }
}

/// (b) The MSS option two bytes in: aligned, but not where Linux puts it.
#[test]
fn mss_at_even_offset() {
    if require_root("mss_at_even_offset") {
        run(&[syn("v4 even offset", 4, 41011, EVEN), syn("v6 even offset", 6, 41012, EVEN)], 5302);
    }
}

/// (c) No MSS option and the AE bit set: pmtu inserts the option (536 for
/// IPv4, min(1000, 1220) for IPv6) and must keep AE.
#[test]
fn no_mss_with_ae_bit() {
    if require_root("no_mss_with_ae_bit") {
        let ae = |name, family, sport, want_mss| Syn { name, family, sport, ext: "", flags: "SN", options: NO_MSS, want_mss, want_ae: true };
        run(&[ae("v4 no MSS, AE", 4, 41021, 536), ae("v6 no MSS, AE", 6, 41022, 1000)], 5303);
    }
}

/// (d) IPv6 with a hop-by-hop options header before TCP.
#[test]
fn v6_hop_by_hop() {
    if require_root("v6_hop_by_hop") {
        let hbh = |name, sport, options, want_mss| Syn { name, family: 6, sport, ext: "/IPv6ExtHdrHopByHop()", flags: "S", options, want_mss, want_ae: false };
        run(
            &[
                hbh("v6 hop-by-hop, MSS first", 41031, "[('MSS', 1460), ('SAckOK', b''), ('NOP', None), ('NOP', None)]", CLAMP),
                hbh("v6 hop-by-hop, no MSS", 41032, NO_MSS, CLAMP),
            ],
            5304,
        );
    }
}
