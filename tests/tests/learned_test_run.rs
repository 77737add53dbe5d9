//! The clamper's learned rule run by the kernel (BPF_PROG_TEST_RUN) on
//! crafted SYNs: which LEARNED entry applies (destination, source, the
//! lower; a prefix; not an expired one), the floors, ties with the base
//! rule, learned-only policies, exact output bytes, counters, and the
//! ring record naming the rule and the report.

use aya::{
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use pmtu_common::{
    learned::{CLAMP_FLAG_INSERTED, CLAMP_FLAG_SYN_ACK, ClampEvent, LearnConfig, Learned, RULE_LEARNED_DST, RULE_LEARNED_SRC, key},
    policy::{
        ClampPolicy, MODE_LEARNED, MODE_OFF, MODE_SET_MSS,
        counters::{AT_OR_BELOW, CLAMPED, CLAMPED_LEARNED, NAMES, SYN_SEEN},
    },
};
use pmtu_tests::{clamp_cases::deltas, frames::*, require_root};
use pmtu_user::{
    clock::monotonic_ns,
    decode::{Record, decode_record},
    loader::{LearnedHandle, PROG_CLAMP_EGRESS, PROG_CLAMP_INGRESS, Programs, Role},
};

const TC_NEXT: u32 = -1i32 as u32;
const SET_MSS: u16 = 1400;

/// Runs `prog` on `frame` (on loopback, ifindex 1); returns the output.
fn run(p: &mut Programs, prog: &str, frame: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; frame.len() + 64];
    let prog: &mut SchedClassifier = p.ebpf_mut().program_mut(prog).unwrap().try_into().unwrap();
    let res = prog
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() })
        .unwrap_or_else(|e| panic!("test_run: {e:?}"));
    assert_eq!(res.return_value, TC_NEXT, "the clamper must hand the packet on");
    out.truncate(res.data_size_out as usize);
    out
}

fn addr(a: &str) -> (u8, [u8; 16]) {
    match a.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(v4) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&v4.octets());
            (4, b)
        }
        std::net::IpAddr::V6(v6) => (6, v6.octets()),
    }
}

fn syn(src: &str, dst: &str, flags: u8, opts: &[u8]) -> Vec<u8> {
    if src.contains(':') {
        eth(&[], ETH_P_IPV6, &V6::new(src, dst, 6).build(&tcp(src, dst, flags, opts, &[])))
    } else {
        eth(&[], ETH_P_IP, &V4::new(src, dst, 6).build(&tcp(src, dst, flags, opts, &[])))
    }
}

struct Rig {
    p: Programs,
    learned: LearnedHandle,
    ring: RingBuf<MapData>,
    config: LearnConfig,
}

impl Rig {
    fn new(mode: u32) -> Self {
        let mut p = Programs::load(Role::Daemon, None).unwrap();
        p.set_clamp_policy(1, ClampPolicy { mode, mss: u32::from(SET_MSS), slot: 0, _pad: 0 }).unwrap();
        let config = LearnConfig::new(24, 64);
        let learned = p.take_learned(config).unwrap();
        let ring = p.take_events().unwrap();
        Rig { p, learned, ring, config }
    }

    /// A LEARNED entry for `a` (keyed by its prefix), expiring in `secs`
    /// (negative: expired that long ago).
    fn learn(&mut self, a: &str, mtu: u32, report: u32, secs: i64) {
        let (family, bytes) = addr(a);
        let now = monotonic_ns() as i64;
        let expires_ns = (now + secs * 1_000_000_000).max(1) as u64;
        self.learned.insert(key(family, &bytes, &self.config), Learned { expires_ns, mtu, report }, 0).unwrap();
    }

    fn forget_all(&mut self) {
        let keys: Vec<_> = self.learned.keys().map(Result::unwrap).collect();
        for k in keys {
            self.learned.remove(&k).unwrap();
        }
    }

    /// Runs `frame` through both clamp programs: the output (the same from
    /// each), the counters it moved, and the clamp records submitted.
    fn clamp(&mut self, frame: &[u8]) -> (Vec<u8>, String, Vec<ClampEvent>) {
        let mut outs = Vec::new();
        let before = self.p.clamp_counters(0).unwrap();
        for prog in [PROG_CLAMP_INGRESS, PROG_CLAMP_EGRESS] {
            outs.push(run(&mut self.p, prog, frame));
        }
        assert_eq!(outs[0], outs[1], "ingress and egress disagree");
        let after = self.p.clamp_counters(0).unwrap();
        let mut events = Vec::new();
        while let Some(rec) = self.ring.next() {
            match decode_record(&rec) {
                Ok(Record::Clamp(ev)) => events.push(ev),
                other => panic!("not a clamp record: {other:?}"),
            }
        }
        (outs.swap_remove(0), deltas(&before, &after), events)
    }
}


fn name(counter: u32) -> &'static str {
    NAMES[counter as usize]
}

#[test]
fn learned_entries_toward_either_end_lower_wins() {
    if !require_root("learned_entries_toward_either_end_lower_wins") {
        return;
    }
    let mut rig = Rig::new(MODE_SET_MSS | MODE_LEARNED);
    let (h0, h3) = ("10.1.1.1", "10.1.3.2");
    let frame = syn(h0, h3, SYN, &mss_option(1460));
    let seen_and = |c: u32| format!("{}+2 {}+2", name(SYN_SEEN), name(c));

    // Nothing learned: the base rule.
    let (out, d, ev) = rig.clamp(&frame);
    assert_eq!((out, d, ev.len()), (syn(h0, h3, SYN, &mss_option(SET_MSS)), seen_and(CLAMPED), 0));

    // Toward the destination's /24: 1350 - 40.
    rig.learn("10.1.3.77", 1350, 7, 60);
    let (out, d, ev) = rig.clamp(&frame);
    assert_eq!(out, syn(h0, h3, SYN, &mss_option(1310)));
    assert_eq!(d, seen_and(CLAMPED_LEARNED));
    assert_eq!(ev.len(), 2, "one record per program");
    let e = ev[0];
    assert_eq!((e.rule, e.report, e.learned_mtu, e.base_mss), (RULE_LEARNED_DST, 7, 1350, u32::from(SET_MSS)));
    assert_eq!((e.mss_from, e.mss_to, e.family, e.flags), (1460, 1310, 4, 0));
    assert_eq!((&e.src[..4], &e.dst[..4]), (&[10u8, 1, 1, 1][..], &[10u8, 1, 3, 2][..]));

    assert_eq!((ev[0].egress, ev[1].egress), (0, 1));

    // A lower one toward the source wins (a SYN-ACK from h3 is the case in
    // a real router; the rule is the same).
    rig.learn(h0, 1300, 8, 60);
    let (out, d, ev) = rig.clamp(&frame);
    assert_eq!((out, d), (syn(h0, h3, SYN, &mss_option(1260)), seen_and(CLAMPED_LEARNED)));
    assert_eq!((ev[0].rule, ev[0].report), (RULE_LEARNED_SRC, 8));
    let synack = syn(h3, h0, SYN_ACK, &mss_option(1460));
    let (out, _, ev) = rig.clamp(&synack);
    assert_eq!(out, syn(h3, h0, SYN_ACK, &mss_option(1260)));
    assert_eq!((ev[0].rule, ev[0].flags), (RULE_LEARNED_DST, CLAMP_FLAG_SYN_ACK));

    // Expired entries do not apply, even while still in the map.
    rig.forget_all();
    rig.learn(h3, 1350, 9, -1);
    let (out, d, ev) = rig.clamp(&frame);
    assert_eq!((out, d, ev.len()), (syn(h0, h3, SYN, &mss_option(SET_MSS)), seen_and(CLAMPED), 0));

    // A learned MSS above the base rule's: the base rule, counted as its own.
    rig.learn(h3, 1450, 10, 60);
    let (out, d, ev) = rig.clamp(&frame);
    assert_eq!((out, d, ev.len()), (syn(h0, h3, SYN, &mss_option(SET_MSS)), seen_and(CLAMPED), 0));
    // A tie goes to the base rule too.
    rig.learn(h3, u32::from(SET_MSS) + 40, 11, 60);
    let (_, d, ev) = rig.clamp(&frame);
    assert_eq!((d, ev.len()), (seen_and(CLAMPED), 0));

    // An entry under the floor (the learner never writes one) gives 536.
    rig.learn(h3, 300, 12, 60);
    let (out, d, _) = rig.clamp(&frame);
    assert_eq!((out, d), (syn(h0, h3, SYN, &mss_option(536)), seen_and(CLAMPED_LEARNED)));

    // No MSS option: one is inserted (min(target, 536)), counted as learned.
    rig.learn(h3, 1350, 13, 60);
    let (out, d, ev) = rig.clamp(&syn(h0, h3, SYN, &[]));
    assert_eq!((out, d), (syn(h0, h3, SYN, &mss_option(536)), seen_and(CLAMPED_LEARNED)));
    assert_eq!((ev[0].flags & CLAMP_FLAG_INSERTED, ev[0].mss_from, ev[0].mss_to), (CLAMP_FLAG_INSERTED, 0, 536));
    // Already at or below: untouched, no record.
    let small = syn(h0, h3, SYN, &mss_option(1200));
    let (out, d, ev) = rig.clamp(&small);
    assert_eq!((out, d, ev.len()), (small, seen_and(AT_OR_BELOW), 0));
}

#[test]
fn learned_only_v6_and_prefixes() {
    if !require_root("learned_only_v6_and_prefixes") {
        return;
    }
    let mut rig = Rig::new(MODE_OFF | MODE_LEARNED);
    let (a, b) = ("fd00:1:1::1", "fd00:1:3::2");
    let frame = syn(a, b, SYN, &mss_option(1440));
    // Learned-only, nothing learned: untouched, only seen.
    let (out, d, ev) = rig.clamp(&frame);
    assert_eq!((out, d, ev.len()), (frame.clone(), format!("{}+2", name(SYN_SEEN)), 0));
    // Another /64 teaches nothing here; the destination's /64 does.
    rig.learn("fd00:1:4::2", 1300, 1, 60);
    let (out, _, _) = rig.clamp(&frame);
    assert_eq!(out, frame);
    rig.learn("fd00:1:3::99", 1350, 2, 60);
    let (out, d, ev) = rig.clamp(&frame);
    assert_eq!((out, d), (syn(a, b, SYN, &mss_option(1290)), format!("{}+2 {}+2", name(SYN_SEEN), name(CLAMPED_LEARNED))));
    assert_eq!((ev[0].rule, ev[0].base_mss, ev[0].family), (RULE_LEARNED_DST, u32::MAX, 6));
    // IPv6's floor: 1280 - 60.
    rig.learn("fd00:1:3::2", 1000, 3, 60);
    let (out, _, _) = rig.clamp(&frame);
    assert_eq!(out, syn(a, b, SYN, &mss_option(1220)));
    // An IPv4 entry whose bytes spell the same prefix does not apply.
    rig.forget_all();
    rig.learn("253.0.0.1", 1300, 4, 60);
    let (out, _, _) = rig.clamp(&syn("fd00::1", "fd00::2", SYN, &mss_option(1440)));
    assert_eq!(out, syn("fd00::1", "fd00::2", SYN, &mss_option(1440)));
}

/// A burst of learned clamps on one CPU: every one counted, at most 64
/// ring records a second (a SYN flood must not crowd PTB reports out).
#[test]
fn learned_clamp_records_are_rate_limited() {
    if !require_root("learned_clamp_records_are_rate_limited") {
        return;
    }
    let mut rig = Rig::new(MODE_OFF | MODE_LEARNED);
    rig.learn("10.1.3.2", 1350, 1, 60);
    let frame = syn("10.1.1.1", "10.1.3.2", SYN, &mss_option(1460));
    // One CPU, so one per-CPU window (BPF_PROG_TEST_RUN's `repeat` would
    // rerun the already-clamped skb).
    // SAFETY: a zeroed cpu_set_t with CPU 0 set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0, "pinning to CPU 0");
    }
    let before = rig.p.clamp_counters(0).unwrap();
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        assert_eq!(run(&mut rig.p, PROG_CLAMP_INGRESS, &frame), syn("10.1.1.1", "10.1.3.2", SYN, &mss_option(1310)));
    }
    let elapsed = started.elapsed();
    let after = rig.p.clamp_counters(0).unwrap();
    assert_eq!(deltas(&before, &after), format!("{}+1000 {}+1000", name(SYN_SEEN), name(CLAMPED_LEARNED)));
    let mut records = 0u64;
    while rig.ring.next().is_some() {
        records += 1;
    }
    // 64 in each second the burst touched.
    let most = 64 * (elapsed.as_secs() + 1);
    if elapsed.as_secs_f64() < 0.9 {
        assert_eq!(records, 64, "ring records for 1000 learned clamps in {elapsed:?} on one CPU");
    } else {
        assert!((64..=most).contains(&records), "{records} ring records in {elapsed:?}");
    }
}
