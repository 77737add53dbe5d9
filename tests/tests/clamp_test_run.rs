//! The clamper run by the kernel (BPF_PROG_TEST_RUN) on every corpus frame:
//! exact output bytes (MSS, lengths, checksums), verdict and counters; and
//! `--to-pmtu` against the real routes of the black-hole lab.

use aya::programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions};
use pmtu_common::{
    parse::Link,
    policy::{
        ClampPolicy, MODE_SET_MSS, MODE_TO_PMTU,
        counters::{CLAMPED, COUNT, NO_ROUTE, SYN_SEEN},
    },
    rewrite::clamp_frame,
};
use pmtu_tests::{
    clamp_cases::{CLAMP, ClampCase, clamp_corpus, deltas},
    frames::*,
    require_root,
    residue::{kernel_has_tcx, tcx_programs},
};
use pmtu_user::{
    lab::{BlackHoleLab, Netns, unique_prefix},
    loader::{PROG_CLAMP_EGRESS, PROG_CLAMP_EGRESS_L3, PROG_CLAMP_INGRESS, PROG_CLAMP_INGRESS_L3, Programs, Role, ifindex},
};

const TC_NEXT: u32 = -1i32 as u32;

/// What BPF_PROG_TEST_RUN is told about the skb besides its bytes.
#[derive(Clone, Copy, Default)]
struct Skb {
    /// The interface the packet is on and came in on (0: loopback).
    dev: Option<u32>,
    /// Mark it a GSO super-packet (gso_segs 2, gso_size 1400).
    gso: bool,
}

/// Runs `prog` on `frame`; returns the output frame.
fn run(p: &mut Programs, prog: &str, frame: &[u8], skb: Skb) -> Vec<u8> {
    let mut out = vec![0u8; frame.len() + 64];
    // struct __sk_buff (192 bytes): ingress_ifindex at byte 36, ifindex at
    // 40, gso_segs at 164, gso_size at 176.
    let mut ctx = [0u8; 192];
    if let Some(index) = skb.dev {
        ctx[36..40].copy_from_slice(&index.to_ne_bytes());
        ctx[40..44].copy_from_slice(&index.to_ne_bytes());
    }
    if skb.gso {
        ctx[164..168].copy_from_slice(&2u32.to_ne_bytes());
        ctx[176..180].copy_from_slice(&1400u32.to_ne_bytes());
    }
    let with_ctx = skb.dev.is_some() || skb.gso;
    let prog: &mut SchedClassifier = p.ebpf_mut().program_mut(prog).unwrap().try_into().unwrap();
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: with_ctx.then_some(&ctx[..]),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("test_run: {e:?}"));
    assert_eq!(res.return_value, TC_NEXT, "the clamper must hand the packet on");
    out.truncate(res.data_size_out as usize);
    out
}


/// The independent checker for an expected frame of either framing.
fn check(link: Link, frame: &[u8]) -> Result<Checked, String> {
    match link {
        Link::Ethernet => check_tcp_frame(frame),
        Link::L3 { ethertype } => check_tcp_ip(frame, ethertype),
    }
}

/// Two tun devices in a namespace that forwards between them. BPF_PROG_TEST_RUN
/// always hands a tc program an Ethernet header, so L3 frames are tested
/// for real instead: written into `tun-in` (tc ingress there), forwarded by
/// the kernel, read back from `tun-out` (tc egress there). The bytes read
/// back are the frame the clamper produced, after the kernel's forwarding
/// (TTL / hop limit less one, IPv4 header checksum updated).
struct TunPair {
    ns: Netns,
}

impl TunPair {
    const IN: &'static str = "tun-in";
    const OUT: &'static str = "tun-out";

    fn build() -> Self {
        let ns = Netns::create(format!("{}-tunpair", unique_prefix())).unwrap();
        for (dev, v4, v6) in [(Self::IN, "10.1.1.0/24", "fd00:1:1::/64"), (Self::OUT, "10.1.3.0/24", "fd00:1:3::/64")] {
            ns.ip(&["tuntap", "add", "dev", dev, "mode", "tun"]).unwrap();
            ns.ip(&["link", "set", dev, "up"]).unwrap();
            ns.ip(&["route", "add", v4, "dev", dev]).unwrap();
            ns.ip(&["-6", "route", "add", v6, "dev", dev]).unwrap();
        }
        ns.ip(&["addr", "add", "10.99.0.1/32", "dev", Self::IN]).unwrap();
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.tun-in.rp_filter", "0"),
        ] {
            ns.sysctl(k, v).unwrap();
        }
        Self { ns }
    }
}

impl TunPair {
    fn wait_until_up(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.ns.ip(&["link", "show", Self::OUT]).unwrap().contains("NO-CARRIER")
            || !self.ns.ip(&["link", "show", Self::OUT]).unwrap().contains("state UP")
        {
            assert!(std::time::Instant::now() < deadline, "{} never came up", Self::OUT);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Opens the existing tun device `name` (IFF_TUN | IFF_NO_PI), non-blocking.
fn open_tun(name: &str) -> std::fs::File {
    use std::os::fd::AsRawFd as _;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let file = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").unwrap();
    let mut req = IfReq { name: [0; 16], flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short, _pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one struct ifreq, which IfReq is.
    assert_eq!(unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) }, 0, "TUNSETIFF {name}");
    // SAFETY: plain fcntl on our fd.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    file
}

/// The first packet from `tun` whose IP destination is `dst`, within a second.
fn read_to(tun: &mut std::fs::File, dst: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match tun.read(&mut buf) {
            Ok(n) => {
                let p = &buf[..n];
                let ok = match p.first().map(|b| b >> 4) {
                    Some(4) => n >= 20 && &p[16..20] == dst,
                    Some(6) => n >= 40 && &p[24..40] == dst,
                    _ => false,
                };
                if ok {
                    return Some(p.to_vec());
                }
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
        }
    }
    None
}

/// What one router hop does to `ip`: TTL or hop limit less one (RFC 791's
/// header checksum recomputed).
fn forwarded(ip: &[u8]) -> Vec<u8> {
    let mut p = ip.to_vec();
    if p[0] >> 4 == 4 {
        p[8] -= 1;
        let ihl = (p[0] & 0xf) as usize * 4;
        p[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&p[..ihl]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        p[7] -= 1;
    }
    p
}

#[test]
fn l3_corpus_through_tun_devices() {
    if !require_root("l3_corpus_through_tun_devices") {
        return;
    }
    let pair = TunPair::build();
    pair.ns
        .enter(|| {
            let mut p = Programs::load(Role::Clamper, None).unwrap();
            let (tin, tout) = (ifindex(TunPair::IN).unwrap(), ifindex(TunPair::OUT).unwrap());
            let mut input = open_tun(TunPair::IN);
            let mut output = open_tun(TunPair::OUT);
            // A tun device gets its carrier when a file opens it, and the
            // kernel starts its queue only after the link watcher has seen
            // that (up to a second): until then forwarded packets are dropped.
            pair.wait_until_up();
            let cases: Vec<ClampCase> = clamp_corpus().into_iter().filter(|c| matches!(c.link, Link::L3 { .. })).collect();
            assert!(cases.len() >= 6, "{} L3 cases", cases.len());
            let mut failures = Vec::new();
            for (prog, dev, kind) in [(PROG_CLAMP_INGRESS_L3, tin, TcAttachType::Ingress), (PROG_CLAMP_EGRESS_L3, tout, TcAttachType::Egress)] {
                p.set_clamp_policy(dev, ClampPolicy { mode: MODE_SET_MSS, mss: CLAMP as u32, slot: 0, _pad: 0 }).unwrap();
                let name = if dev == tin { TunPair::IN } else { TunPair::OUT };
                // Without TCX (Linux 6.1) aya attaches a cls_bpf filter,
                // which needs a clsact qdisc; the namespace goes with it.
                let tcx = kernel_has_tcx();
                if !tcx && !pair.ns.run("tc", &["qdisc", "show", "dev", name]).unwrap().contains("clsact") {
                    pair.ns.run("tc", &["qdisc", "add", "dev", name, "clsact"]).unwrap();
                }
                let cls: &mut SchedClassifier = p.ebpf_mut().program_mut(prog).unwrap().try_into().unwrap();
                let link = cls.attach(name, kind).unwrap();
                let dir = if kind == TcAttachType::Ingress { "ingress" } else { "egress" };
                let attached = |ns: &Netns| {
                    if tcx {
                        // The kernel keeps 15 characters of a program's name.
                        tcx_programs(ns, name).iter().any(|p| p.ends_with(&format!(":{}", &prog[..prog.len().min(15)])))
                    } else {
                        ns.run("tc", &["filter", "show", "dev", name, dir]).unwrap().contains(prog)
                    }
                };
                assert!(attached(&pair.ns), "{prog} attached to {name} {dir} (tcx: {tcx})");
                for case in &cases {
                    let before = p.clamp_counters(0).unwrap();
                    std::io::Write::write_all(&mut input, &case.frame).unwrap();
                    let dst = if case.frame[0] >> 4 == 4 { &case.frame[16..20] } else { &case.frame[24..40] };
                    let got = read_to(&mut output, dst);
                    let after = p.clamp_counters(0).unwrap();
                    let want = forwarded(&case.want);
                    match got {
                        Some(out) if out == want => {}
                        Some(out) => failures.push(format!("{} [{prog}]: output differs\n  want {want:02x?}\n  got  {out:02x?}", case.name)),
                        None => failures.push(format!("{} [{prog}]: nothing came out of {}", case.name, TunPair::OUT)),
                    }
                    check_counters(case, prog, &before, &after, &mut failures);
                }
                let cls: &mut SchedClassifier = p.ebpf_mut().program_mut(prog).unwrap().try_into().unwrap();
                cls.detach(link).unwrap();
                assert!(!attached(&pair.ns), "{prog} detached from {name} {dir} (tcx: {tcx})");
                p.remove_clamp_policy(dev).unwrap();
            }
            assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
        })
        .unwrap();
}

/// The counters one run of `case` must move: syn_seen for a SYN, and its
/// outcome counter.
fn check_counters(case: &ClampCase, prog: &str, before: &[u64; COUNT as usize], after: &[u64; COUNT as usize], failures: &mut Vec<String>) {
    let mut want = [0u64; COUNT as usize];
    if case.syn {
        want[SYN_SEEN as usize] = 1;
    }
    if let Some(c) = case.counter {
        want[c as usize] += 1;
    }
    let got: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    if got != want {
        failures.push(format!("{} [{prog}]: counters {}, want {}", case.name, deltas(before, after), deltas(&[0; COUNT as usize], &want)));
    }
}

/// Runs one case through `prog` (the Ethernet or L3 variant as the case
/// says) and compares bytes and counters; failures go to `failures`.
fn check_case(p: &mut Programs, case: &ClampCase, failures: &mut Vec<String>) -> usize {
    let progs = [PROG_CLAMP_INGRESS, PROG_CLAMP_EGRESS];
    for prog in progs {
        let before = p.clamp_counters(0).unwrap();
        let out = run(p, prog, &case.frame, Skb { dev: None, gso: case.gso });
        let after = p.clamp_counters(0).unwrap();
        if out != case.want {
            failures.push(format!(
                "{} [{prog}]: output differs\n  want {:02x?}\n  got  {:02x?}\n  check: {:?}",
                case.name,
                case.want,
                out,
                check(case.link, &out)
            ));
        }
        check_counters(case, prog, &before, &after, failures);
    }
    progs.len()
}

/// The host model (pmtu_common::rewrite::clamp_frame, the same plan the
/// kernel executes) must give the same bytes and outcome.
fn check_host_model(case: &ClampCase, failures: &mut Vec<String>) {
    let mut buf = case.frame.clone();
    buf.resize(case.frame.len() + 8, 0);
    match clamp_frame(&mut buf, case.frame.len(), case.link, case.gso, CLAMP as u32) {
        Ok(done) => {
            buf.truncate(done.len);
            if buf != case.want || done.syn != case.syn || done.counter != case.counter {
                failures.push(format!(
                    "{} [host model]: syn {} counter {:?}, want syn {} counter {:?}; bytes {}",
                    case.name,
                    done.syn,
                    done.counter,
                    case.syn,
                    case.counter,
                    if buf == case.want { "equal" } else { "differ" }
                ));
            }
        }
        Err(e) => failures.push(format!("{} [host model]: {e:?}", case.name)),
    }
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
            && let Err(e) = check(case.link, &case.want)
        {
            panic!("{}: the expected frame itself is wrong: {e}", case.name);
        }
        // L3 frames run through real tun devices (l3_corpus_through_tun_devices).
        if case.link == Link::Ethernet {
            runs += check_case(&mut p, &case, &mut failures);
        }
        check_host_model(&case, &mut failures);
    }
    assert!(runs >= 100, "{runs} runs");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// The clamper reads an skb's linear data directly and what lies beyond it
/// through bpf_skb_load_bytes. BPF_PROG_TEST_RUN only makes linear skbs, so
/// the end of the linear data is stood for by a limit the programs are
/// loaded with (`Programs::load_with`): the corpus, split at every offset
/// where an Ethernet, IP or TCP header field or a TCP option starts, comes
/// out as it does read all directly.
#[test]
fn corpus_across_the_linear_boundary() {
    if !require_root("corpus_across_the_linear_boundary") {
        return;
    }
    let mut failures = Vec::new();
    let mut runs = 0;
    for limit in [0u64, 12, 13, 14, 15, 18, 20, 22, 24, 26, 30, 34, 38, 42, 46, 47, 48, 50, 54, 55, 58, 62, 66, 74, 78, 82, 94, 102, 114, 200] {
        let mut p = Programs::load_with(Role::Clamper, None, Some(limit)).unwrap();
        p.set_clamp_policy(1, ClampPolicy { mode: MODE_SET_MSS, mss: CLAMP as u32, slot: 0, _pad: 0 }).unwrap();
        for case in clamp_corpus() {
            if case.link == Link::Ethernet {
                let before = failures.len();
                runs += check_case(&mut p, &case, &mut failures);
                for f in &mut failures[before..] {
                    *f = format!("linear limit {limit}: {f}");
                }
            }
        }
    }
    assert!(runs >= 3000, "{runs} runs");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// The MSS option at every offset its value can take (options 0..=36),
/// after NOPs, both families: the kernel's output is the frame built from
/// scratch with the lowered MSS, byte for byte (odd offsets included).
#[test]
fn mss_at_every_offset_in_the_kernel() {
    if !require_root("mss_at_every_offset_in_the_kernel") {
        return;
    }
    let mut p = Programs::load(Role::Clamper, None).unwrap();
    p.set_clamp_policy(1, ClampPolicy { mode: MODE_SET_MSS, mss: CLAMP as u32, slot: 0, _pad: 0 }).unwrap();
    let mut failures = Vec::new();
    for family in [4, 6] {
        for at in 0..=36usize {
            let opts = |mss: u16| {
                let mut o = vec![1u8; at];
                o.extend_from_slice(&mss_option(mss));
                o
            };
            let build = |mss: u16| match family {
                4 => eth(&[], ETH_P_IP, &V4::new("10.1.1.1", "10.1.3.2", 6).build(&tcp("10.1.1.1", "10.1.3.2", SYN, &opts(mss), &[]))),
                _ => eth(&[], ETH_P_IPV6, &V6::new("fd00::1", "fd00::2", 6).build(&tcp("fd00::1", "fd00::2", SYN, &opts(mss), &[]))),
            };
            let (frame, want) = (build(1460), build(CLAMP));
            for prog in [PROG_CLAMP_INGRESS, PROG_CLAMP_EGRESS] {
                let before = p.clamp_counters(0).unwrap()[CLAMPED as usize];
                let out = run(&mut p, prog, &frame, Skb::default());
                let clamped = p.clamp_counters(0).unwrap()[CLAMPED as usize] - before;
                if out != want || clamped != 1 {
                    failures.push(format!("v{family} MSS at option offset {at} [{prog}]: {:?}", check_tcp_frame(&out)));
                }
            }
        }
    }
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
                let out = run(&mut p, PROG_CLAMP_INGRESS, &frame, Skb { dev: Some(dev), gso: false });
                let checked = check_tcp_frame(&out).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(checked.mss, [want], "{what}");
            }
            // A SYN for r1 itself is not forwarded: no route MTU, untouched.
            let local = syn4(c4, "10.1.1.2", SYN, 1460);
            let before = p.clamp_counters(0).unwrap()[NO_ROUTE as usize];
            assert_eq!(run(&mut p, PROG_CLAMP_INGRESS, &local, Skb { dev: Some(c0_side), gso: false }), local);
            assert_eq!(p.clamp_counters(0).unwrap()[NO_ROUTE as usize], before + 1);
        })
        .unwrap();
}
