//! The shared parser on the host, over the same corpus the kernel tests use.

use pmtu_common::{
    event::PtbEvent,
    parse::{Outcome, SlicePacket, parse_ptb},
};
use pmtu_tests::cases::{Expect, corpus, ptb4, ptb6, truncated};
use pmtu_tests::frames::{ETH_P_IP, ETH_P_IPV6, eth};

fn parse(frame: &[u8]) -> (Outcome, PtbEvent) {
    let mut ev = PtbEvent::zeroed();
    let outcome = parse_ptb(&SlicePacket(frame), &mut ev);
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
        if let Expect::Ptb(want) = &case.expect
            && let Err(diff) = want.check(&ev)
        {
            failures.push(format!("{}: {diff}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_truncation_fails_open_with_the_right_outcome() {
    // v4: eth 14 + ip 20 + icmp 8 + quoted ip 20 → addresses end at 62.
    let v4 = eth(&[], ETH_P_IP, &ptb4(1370));
    // v6: eth 14 + ip 40 + icmp 8 + quoted ip 40 → 102.
    let v6 = eth(&[], ETH_P_IPV6, &ptb6(1400, &[], &[]));
    for (frame, addrs_end) in [(&v4, 62), (&v6, 102)] {
        for cut in 0..frame.len() {
            let (outcome, ev) = parse(&frame[..cut]);
            let (want, ports) = if cut < 14 { (Outcome::Malformed, false) } else { truncated(cut, addrs_end, addrs_end + 4) };
            assert_eq!(outcome, want, "cut at {cut} of {}", frame.len());
            if outcome == Outcome::Ptb {
                assert_eq!(ev.sport().is_some(), ports, "ports at cut {cut}");
            }
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
