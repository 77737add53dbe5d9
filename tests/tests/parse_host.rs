//! The shared parser on the host, over the same corpus the kernel tests use.

use pmtu_common::{
    event::PtbEvent,
    parse::{Link, Outcome, SlicePacket, parse_ptb},
    validate::intrinsic_reasons,
};
use pmtu_tests::cases::{Expect, corpus, ptb4, ptb6};
use pmtu_tests::frames::{ETH_P_IP, ETH_P_IPV6, eth};

fn parse(frame: &[u8]) -> (Outcome, PtbEvent) {
    let mut ev = PtbEvent::zeroed();
    let outcome = parse_ptb(&SlicePacket(frame), Link::Ethernet, &mut ev);
    (outcome, ev)
}

#[test]
fn corpus_parses_as_expected() {
    let mut failures = Vec::new();
    for case in corpus() {
        let (outcome, ev) = parse(&case.frame);
        if outcome != case.expect.outcome() {
            failures.push(format!("{}: outcome {outcome:?}, want {:?}", case.name, case.expect.outcome()));
            continue;
        }
        if let Expect::Ptb(want) = &case.expect {
            if let Err(diff) = want.check(&ev) {
                failures.push(format!("{}: {diff}", case.name));
            }
            let reasons = intrinsic_reasons(&ev);
            if reasons != want.reasons {
                failures.push(format!("{}: reasons {reasons:#x}, want {:#x}", case.name, want.reasons));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A frame cut short anywhere is malformed: its IP length field then claims
/// more than arrived, which ip_rcv_core() drops too. (A quote that is short
/// by the router's choice, with consistent lengths, is a corpus case.)
#[test]
fn every_truncation_is_malformed() {
    let v4 = eth(&[], ETH_P_IP, &ptb4(1370));
    let v6 = eth(&[], ETH_P_IPV6, &ptb6(1400, &[], &[]));
    for frame in [&v4, &v6] {
        assert_eq!(parse(frame).0, Outcome::Ptb);
        for cut in 0..frame.len() {
            assert_eq!(parse(&frame[..cut]).0, Outcome::Malformed, "cut at {cut} of {}", frame.len());
        }
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic sweep (xorshift) until the fuzz targets land.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds = [eth(&[], ETH_P_IP, &ptb4(1370)), eth(&[], ETH_P_IPV6, &ptb6(1400, &[], &[]))];
    for i in 0..20_000 {
        let mut f = seeds[i % 2].clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % f.len();
            f[at] = next() as u8;
        }
        let cut = (next() as usize) % (f.len() + 1);
        let _ = parse(&f[..cut]);
    }
}
