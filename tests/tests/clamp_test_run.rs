//! The clamper run by the kernel (BPF_PROG_TEST_RUN) on every corpus frame:
//! exact output bytes (MSS, lengths, checksums), verdict and counters; and
//! `--to-pmtu` against the real routes of the black-hole lab.

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use pmtu_common::policy::{
    ClampPolicy, MODE_SET_MSS, MODE_TO_PMTU,
    counters::{COUNT, NAMES, NO_ROUTE, SYN_SEEN},
};
use pmtu_tests::{
    clamp_cases::{CLAMP, clamp_corpus},
    frames::*,
    require_root,
};
use pmtu_user::{
    lab::BlackHoleLab,
    loader::{PROG_CLAMP_EGRESS, PROG_CLAMP_INGRESS, Programs, Role, ifindex},
};

const TC_NEXT: u32 = -1i32 as u32;

/// Runs `prog` on `frame`, optionally with an `__sk_buff` naming the
/// interface the packet is on and came in on; returns the output frame.
fn run(p: &mut Programs, prog: &str, frame: &[u8], dev: Option<u32>) -> Vec<u8> {
    let mut out = vec![0u8; frame.len() + 64];
    // struct __sk_buff: ingress_ifindex at byte 36, ifindex at 40; 192 bytes.
    let mut ctx = [0u8; 192];
    if let Some(index) = dev {
        ctx[36..40].copy_from_slice(&index.to_ne_bytes());
        ctx[40..44].copy_from_slice(&index.to_ne_bytes());
    }
    let prog: &mut SchedClassifier = p.ebpf_mut().program_mut(prog).unwrap().try_into().unwrap();
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: dev.map(|_| &ctx[..]),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("test_run: {e:?}"));
    assert_eq!(res.return_value, TC_NEXT, "the clamper must hand the packet on");
    out.truncate(res.data_size_out as usize);
    out
}

fn deltas(before: &[u64; COUNT as usize], after: &[u64; COUNT as usize]) -> String {
    NAMES
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|(n, (b, a))| format!("{n}+{}", a - b))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn corpus_through_both_clamp_programs() {
    if !require_root("corpus_through_both_clamp_programs") {
        return;
    }
    let mut p = Programs::load(Role::Clamper, None).unwrap();
    // BPF_PROG_TEST_RUN puts the skb on the loopback device (ifindex 1).
    p.set_clamp_policy(1, ClampPolicy { mode: MODE_SET_MSS, mss: CLAMP as u32, slot: 0, _pad: 0 }).unwrap();
    let mut failures = Vec::new();
    let mut runs = 0;
    for case in clamp_corpus() {
        if case.want != case.frame
            && let Err(e) = check_tcp_frame(&case.want)
        {
            panic!("{}: the expected frame itself is wrong: {e}", case.name);
        }
        for prog in [PROG_CLAMP_INGRESS, PROG_CLAMP_EGRESS] {
            runs += 1;
            let before = p.clamp_counters(0).unwrap();
            let out = run(&mut p, prog, &case.frame, None);
            let after = p.clamp_counters(0).unwrap();
            if out != case.want {
                failures.push(format!(
                    "{} [{prog}]: output differs\n  want {:02x?}\n  got  {:02x?}\n  check: {:?}",
                    case.name,
                    case.want,
                    out,
                    check_tcp_frame(&out)
                ));
            }
            let mut want = [0u64; COUNT as usize];
            if case.syn {
                want[SYN_SEEN as usize] = 1;
            }
            if let Some(c) = case.counter {
                want[c as usize] += 1;
            }
            let got: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
            if got != want {
                failures.push(format!(
                    "{} [{prog}]: counters {}, want {}",
                    case.name,
                    deltas(&before, &after),
                    deltas(&[0; COUNT as usize], &want)
                ));
            }
        }
    }
    assert!(runs >= 60, "{runs} runs");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn to_pmtu_uses_the_routes_of_the_host() {
    if !require_root("to_pmtu_uses_the_routes_of_the_host") {
        return;
    }
    let lab = BlackHoleLab::build().unwrap();
    lab.r1
        .enter(|| {
            let mut p = Programs::load(Role::Clamper, None).unwrap();
            let c0_side = ifindex(BlackHoleLab::R1_IF_C0).unwrap();
            let r2_side = ifindex(BlackHoleLab::R1_IF_R2).unwrap();
            for (slot, index) in [c0_side, r2_side].into_iter().enumerate() {
                let policy = ClampPolicy { mode: MODE_TO_PMTU, mss: 0, slot: slot as u32, _pad: 0 };
                p.set_clamp_policy(index, policy).unwrap();
            }
            let (c4, s4, c6, s6) = (BlackHoleLab::CLIENT_V4, BlackHoleLab::SERVER_V4, BlackHoleLab::CLIENT_V6, BlackHoleLab::SERVER_V6);
            let syn4 = |src: &str, dst: &str, flags, mss| eth(&[], ETH_P_IP, &V4::new(src, dst, 6).build(&tcp(src, dst, flags, &linux_syn_options(mss), &[])));
            let syn6 = |src: &str, dst: &str, flags, mss| eth(&[], ETH_P_IPV6, &V6::new(src, dst, 6).build(&tcp(src, dst, flags, &linux_syn_options(mss), &[])));
            // (what, frame, the interface it arrives on, the MSS it must leave with)
            let cases = [
                ("v4 SYN c0→s3", syn4(c4, s4, SYN, 1460), c0_side, 1360),
                ("v4 SYN-ACK s3→c0", syn4(s4, c4, SYN_ACK, 1460), r2_side, 1360),
                ("v6 SYN c0→s3", syn6(c6, s6, SYN, 1440), c0_side, 1340),
                ("v6 SYN-ACK s3→c0", syn6(s6, c6, SYN_ACK, 1440), r2_side, 1340),
                // Already below the path's 1360: untouched.
                ("v4 SYN s3→c0 with MSS 1300", syn4(s4, c4, SYN, 1300), r2_side, 1300),
            ];
            for (what, frame, dev, want) in cases {
                let out = run(&mut p, PROG_CLAMP_INGRESS, &frame, Some(dev));
                let checked = check_tcp_frame(&out).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(checked.mss, [want], "{what}");
            }
            // A SYN for r1 itself is not forwarded: no route MTU, untouched.
            let local = syn4(c4, "10.1.1.2", SYN, 1460);
            let before = p.clamp_counters(0).unwrap()[NO_ROUTE as usize];
            assert_eq!(run(&mut p, PROG_CLAMP_INGRESS, &local, Some(c0_side)), local);
            assert_eq!(p.clamp_counters(0).unwrap()[NO_ROUTE as usize], before + 1);
        })
        .unwrap();
}
