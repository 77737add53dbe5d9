//! Property tests of the MSS rewrite on the host: every option layout the
//! generator makes, both families, Ethernet with 0-2 VLAN tags and L3
//! framing, through pmtu_common::rewrite (the plan the kernel executes),
//! checked from scratch by an independent oracle (tests/src/rewrite_check.rs).

use pmtu_tests::{
    frames::mss_option,
    rewrite_check::{Rng, SynSpec, check_spec, random_spec},
};

fn framings() -> [Option<usize>; 4] {
    [None, Some(0), Some(1), Some(2)]
}

/// The MSS option at every offset 0..=36 after NOPs (odd offsets are where
/// xt_TCPMSS corrupts a full checksum), for every framing and family.
#[test]
fn mss_at_every_offset() {
    let mut failures = Vec::new();
    for v6 in [false, true] {
        for tags in framings() {
            for at in 0..=36usize {
                for pad_with_eol in [false, true] {
                    let mut options = vec![1u8; at];
                    options.extend_from_slice(&mss_option(1460));
                    if pad_with_eol && options.len() < 40 {
                        options.push(0);
                    }
                    let spec = SynSpec { v6, tags, syn_ack: at % 2 == 1, low_bits: (at % 16) as u8, options, v6_exts: at % 3, target: 1360 };
                    if let Err(e) = check_spec(&spec) {
                        failures.push(format!("{spec:?}: {e}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// 0, 1 and 40 bytes of options; no MSS (inserted, with AE set); a full header.
#[test]
fn edge_layouts() {
    let layouts: [Vec<u8>; 7] = [
        vec![],
        vec![1],
        vec![0],
        vec![1; 40],
        [mss_option(1460), vec![1; 36]].concat(),
        [vec![1; 36], mss_option(1460)].concat(),
        vec![4, 2, 1, 3, 3, 7],
    ];
    let mut failures = Vec::new();
    for v6 in [false, true] {
        for tags in framings() {
            for options in &layouts {
                for low_bits in [0, 1, 0x0f] {
                    let spec = SynSpec { v6, tags, syn_ack: false, low_bits, options: options.clone(), v6_exts: 1, target: 1000 };
                    if let Err(e) = check_spec(&spec) {
                        failures.push(format!("{spec:?}: {e}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// Random real-world layouts (SACK-permitted, timestamps, window scale,
/// TFO cookies, unknown kinds, TCP-AO, one or two MSS options, EOL).
#[test]
fn random_layouts() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut failures = Vec::new();
    for _ in 0..20_000 {
        let spec = random_spec(&mut rng);
        if let Err(e) = check_spec(&spec) {
            failures.push(format!("{spec:?}: {e}"));
        }
        if failures.len() > 10 {
            break;
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
