//! MSS clamping of SYN and SYN-ACK, the job of iptables' TCPMSS target
//! (net/netfilter/xt_TCPMSS.c, tcpmss_mangle_packet) done at tc, plus
//! what iptables cannot do: clamping to PMTUs learned from the PTBs this
//! host forwards (pmtu_common::learned).
//!
//! Checksums are fixed with bpf_l4_csum_replace/bpf_l3_csum_replace, which
//! do the right thing for every skb->ip_summed state: a full checksum is
//! updated incrementally; under CHECKSUM_PARTIAL (what veth and offloading
//! stacks hand over) only pseudo-header changes touch the check field, and
//! the device computes the rest over the bytes as they now are.

use core::{cmp::min, ffi::c_void};

use aya_ebpf::{
    bindings::{
        BPF_F_PSEUDO_HDR, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_OUTPUT,
    },
    helpers::generated::{
        bpf_csum_diff, bpf_csum_update, bpf_ktime_get_ns, bpf_l3_csum_replace,
        bpf_l4_csum_replace, bpf_loop, bpf_skb_change_tail, bpf_skb_store_bytes,
    },
    programs::TcContext,
};
use pmtu_common::{
    learned::{
        CLAMP_FLAG_INSERTED, CLAMP_FLAG_SYN_ACK, ClampEvent, RULE_LEARNED_DST, RULE_LEARNED_SRC, family_index, keyed,
        mss_for,
    },
    parse::{IPPROTO_TCP, Ip, Link, Packet, Syn, SynOutcome, is_syn, parse_ip, parse_syn_at, tcp_word6},
    policy::{
        MAX_IFACES, MODE_BASE, MODE_LEARNED, MODE_OFF, MODE_SET_MSS, MODE_TO_PMTU,
        counters::{CLAMPED, CLAMPED_LEARNED, ERRORS, INSERTED, MALFORMED, NO_ROUTE, SYN_SEEN},
    },
    rewrite::{CsumWord, Insert, Plan, plan},
    tcpopt::{MAX_OPTION_STEPS, OptionWalk},
};

use crate::{
    fib,
    maps::{CLAMP_POLICY, CLAMP_REPORT_WINDOW, CLAMP_SCRATCH, EVENTS, IP_SCRATCH, LEARN_CONFIG, LEARNED, SYN_SCRATCH, count, count_clamp},
    packet::{OptionsCopy, SkbLoaded, SkbPacket, skb_ifindex, skb_ingress_ifindex},
};


struct Failed;

#[inline(always)]
pub fn clamp(ctx: &TcContext, link: Link, egress: bool) {
    // Parse first: most packets are not SYNs, and they leave before the
    // policy hash lookup (which cost every packet ~40 ns, see BENCHMARKS.md).
    let Some(pkt) = SkbPacket::new(ctx) else {
        return;
    };
    let outcome = match parse_ip(&pkt, link) {
        Ok(ip) if ip.proto == IPPROTO_TCP => {
            // The flags first, here: a segment that is not a SYN leaves
            // before any scratch memory or subprogram.
            if tcp_word6(&pkt, &ip).is_some_and(|w| !is_syn(w)) {
                return;
            }
            // The rest goes through map memory (see parse_into).
            let (Some(ip_slot), Some(scratch)) = (IP_SCRATCH.get_ptr_mut(0), SYN_SCRATCH.get_ptr_mut(0)) else {
                return;
            };
            // SAFETY: this CPU's IP_SCRATCH value; not preempted.
            unsafe { ip_slot.write(ip) };
            parse_into(&pkt, ip_slot, scratch)
        }
        Ok(_) => return,
        Err(no) => no.into(),
    };
    if matches!(outcome, SynOutcome::NotIp | SynOutcome::NotSyn | SynOutcome::FragmentSkipped) {
        return;
    }
    let Some(scratch) = SYN_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's SYN_SCRATCH value, just written by parse_into (or
    // not, for a Malformed outcome, which only counts); read in place (a
    // copy would not fit the 512-byte BPF stack beside the rest).
    let syn: &Syn = unsafe { &*scratch };
    // SAFETY: the map value is plain data, read once.
    let Some(policy) = (unsafe { CLAMP_POLICY.get(&skb_ifindex(ctx)) }) else {
        return;
    };
    let policy = *policy;
    let base = policy.mode & MODE_BASE;
    let learning = policy.mode & MODE_LEARNED != 0;
    if policy.slot >= MAX_IFACES || !(base == MODE_SET_MSS || base == MODE_TO_PMTU || (base == MODE_OFF && learning)) {
        return;
    }
    let slot = policy.slot;
    if outcome == SynOutcome::Malformed {
        count_clamp(slot, MALFORMED);
        return;
    }
    count_clamp(slot, SYN_SEEN);
    // Fragments and AH are left alone by `plan`, after walk_options:
    // checked here, on the parser's exact per-path values, the branch would
    // make the verifier keep every path through the extension-header walk
    // apart (256k verified instructions instead of ~33k, measured on 6.18).

    let base_mss = if base == MODE_SET_MSS {
        Some(policy.mss)
    } else if base == MODE_TO_PMTU {
        pmtu_mss(ctx, syn)
    } else {
        None
    };
    let Some(inputs) = CLAMP_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let learned_mss = if learning {
        learn(syn, inputs)
    } else {
        // SAFETY: as below.
        unsafe { core::ptr::write_volatile(&raw mut (*inputs).lesson.rule, 0) };
        NO_LESSON
    };
    // The lowest rule wins; a tie goes to the set-mss or route rule. The
    // target and the lesson go into map memory (`inputs`) at once: from
    // here on the paths above (rules, route lookups, learned entries)
    // differ in nothing the verifier keeps, so it checks the option copy
    // and walk once, not once per path.
    // SAFETY: this CPU's CLAMP_SCRATCH value (`learn` wrote its lesson);
    // not preempted.
    unsafe {
        let target = match base_mss {
            Some(b) if learned_mss >= b => {
                core::ptr::write_volatile(&raw mut (*inputs).lesson.rule, 0);
                b
            }
            _ if learned_mss != NO_LESSON => learned_mss,
            _ => {
                if base == MODE_TO_PMTU {
                    count_clamp(slot, NO_ROUTE);
                }
                return;
            }
        };
        core::ptr::write_volatile(&raw mut (*inputs).target, target);
        core::ptr::write_volatile(&raw mut (*inputs).base_mss, base_mss.unwrap_or(u32::MAX));
        core::ptr::write_volatile(&raw mut (*inputs).walk, OptionWalk::default());
    }

    // From a copy of the options (see OptionsCopy), which cannot fail for
    // a SYN parse_syn accepted: its options lie within the datagram, and
    // SkbPacket reads what the linear data lacks through the helper.
    let (start, len) = (syn.l4 + 20, syn.tcp_hdr_len - 20);
    let Some(copy) = OptionsCopy::load(&pkt, start, len) else {
        count_clamp(slot, ERRORS);
        return;
    };
    let Some(Inputs { target, lesson, base_mss, walk }) = walk_options(copy, inputs) else {
        return;
    };
    let scan = walk.scan;
    // The counter, and the MSS value now in the segment.
    let (counter, written) = match plan(syn, &scan, target) {
        Plan::Leave(why) => (why, 0),
        Plan::Lower { edits, count, check_at } => {
            let mut done = lower(ctx, &edits[0], check_at);
            if count > 1 && done.is_ok() {
                done = lower(ctx, &edits[1], check_at);
            }
            (if done.is_ok() { CLAMPED } else { ERRORS }, u16::from_be_bytes(edits[0].value))
        }
        Plan::Insert { insert: i, check_at } => match insert(ctx, &SkbLoaded(ctx), &i, check_at) {
            Ok(()) => (INSERTED, u16::from_be_bytes([i.option[2], i.option[3]])),
            Err(counter) => (counter, 0),
        },
    };
    if lesson.rule != 0 && (counter == CLAMPED || counter == INSERTED) {
        count_clamp(slot, CLAMPED_LEARNED);
        let from = if counter == INSERTED { 0 } else { scan.mss[0].value };
        report(ctx, syn, &lesson, base_mss, from, written, egress, counter == INSERTED);
    } else {
        count_clamp(slot, counter);
    }
}

/// The learned PMTU that applied to one SYN, if any (`rule` 0: none), and
/// the MSS it allows. All u32: the verifier refuses to fill a register
/// from part of a spilled one, which narrower fields copied through the
/// stack led LLVM to do.
#[derive(Clone, Copy)]
pub struct Lesson {
    mss: u32,
    mtu: u32,
    report: u32,
    rule: u32,
}

/// `learn`'s answer when no learned entry applies.
const NO_LESSON: u32 = u32::MAX;

/// Looks up the learned PMTUs toward the segment's destination and toward
/// its source (see pmtu_common::learned: the peer's MSS is what the source
/// receives), keeps the lower in `inputs.lesson` and returns the MSS it
/// allows, or NO_LESSON (rule 0) if neither has a live entry.
///
/// Each lookup's result goes through map memory before the next step, so
/// that the verifier walks the outcomes of the two lookups one after the
/// other rather than every combination of them (~15k verified
/// instructions more otherwise, on 6.18).
#[inline(always)]
fn learn(syn: &Syn, inputs: *mut Inputs) -> u32 {
    // SAFETY: this CPU's CLAMP_SCRATCH value; not preempted. LEARNED and
    // LEARN_CONFIG values are plain data read field by field.
    unsafe {
        let lesson = &raw mut (*inputs).lesson;
        core::ptr::write_volatile(lesson, Lesson { mss: NO_LESSON, mtu: u32::MAX, report: 0, rule: 0 });
        // Userspace writes it before any entry.
        let Some(config) = LEARN_CONFIG.get_ptr(0) else {
            return NO_LESSON;
        };
        let mask = &(*config).masks[family_index(syn.family)];
        let now = bpf_ktime_get_ns();
        for (addr, rule) in [(&syn.dst, RULE_LEARNED_DST), (&syn.src, RULE_LEARNED_SRC)] {
            if let Some(l) = LEARNED.get_ptr(&keyed(syn.family, addr, mask)) {
                let mtu = (*l).mtu;
                // Lower only: on a tie the destination's entry stays.
                if now < (*l).expires_ns && mtu < core::ptr::read_volatile(&raw const (*lesson).mtu) {
                    let report = (*l).report;
                    core::ptr::write_volatile(lesson, Lesson { mss: NO_LESSON, mtu, report, rule: rule as u32 });
                }
            }
        }
        let mtu = core::ptr::read_volatile(&raw const (*lesson).mtu);
        if mtu == u32::MAX {
            return NO_LESSON;
        }
        let mss = mss_for(syn.family, mtu);
        core::ptr::write_volatile(&raw mut (*lesson).mss, mss);
        mss
    }
}

/// Ring records of learned clamps per CPU per second at most: a SYN flood
/// toward a learned destination must neither crowd the PTB reports out of
/// the ring they share nor keep userspace busy rendering lines. Every
/// learned clamp is still counted (`clamped_learned`).
const REPORTS_PER_SEC: u64 = 64;

/// True if this CPU may submit another record in the current second.
#[inline(always)]
fn may_report(now: u64) -> bool {
    let Some(w) = CLAMP_REPORT_WINDOW.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's value; BPF programs are not preempted.
    unsafe {
        if now.wrapping_sub((*w)[0]) >= 1_000_000_000 {
            (*w)[0] = now;
            (*w)[1] = 0;
        }
        if (*w)[1] >= REPORTS_PER_SEC {
            return false;
        }
        (*w)[1] += 1;
    }
    true
}

/// Tells userspace which learned entry clamped this segment (the event
/// ring; a full ring is counted in the observer's ring_lost), at most
/// [`REPORTS_PER_SEC`] times a second per CPU.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn report(ctx: &TcContext, syn: &Syn, l: &Lesson, base_mss: u32, from: u16, to: u16, egress: bool, inserted: bool) {
    // SAFETY: no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if !may_report(now) {
        return;
    }
    let mut ev = ClampEvent::zeroed();
    ev.ts_ns = now;
    ev.ifindex = skb_ifindex(ctx);
    ev.learned_mtu = l.mtu;
    ev.report = l.report;
    ev.base_mss = base_mss;
    ev.mss_from = from;
    ev.mss_to = to;
    ev.family = syn.family;
    ev.rule = l.rule as u8;
    ev.flags = if syn.flags & 0x10 != 0 { CLAMP_FLAG_SYN_ACK } else { 0 } | if inserted { CLAMP_FLAG_INSERTED } else { 0 };
    ev.egress = egress as u8;
    ev.src = syn.src;
    ev.dst = syn.dst;
    let mut ports = [0u8; 4];
    if SkbLoaded(ctx).read_into(syn.l4, &mut ports) {
        ev.sport = u16::from_be_bytes([ports[0], ports[1]]);
        ev.dport = u16::from_be_bytes([ports[2], ports[3]]);
    }
    if EVENTS.output::<ClampEvent>(&ev, 0).is_err() {
        count(pmtu_common::counters::RING_LOST);
    }
}

/// The SYN parser, from the IP header on, as a BPF subprogram that reads
/// the L3 result from map memory and writes into map memory.
///
/// The verifier tracks neither what a map value holds nor, once this
/// returns, which path through the parser (VLANs, IPv4 options, extension
/// headers, fragment and AH flags, a GSO length) was taken: the option walk
/// and the rewrite after it are verified once per outcome instead of once
/// per parser path (257k verified instructions when inlined, measured on
/// 6.18). Not inlined, so the compiler cannot carry constants across either.
/// The L2/L3 walk itself stays in the caller, so that a packet that is not
/// TCP leaves without the call; with direct packet access, the flags read
/// and the address reads here have three outcomes each (linear, helper,
/// neither), and run once per L3 path they made the clamper verify 69.6k
/// instructions, over the 50k budget.
#[inline(never)]
fn parse_into(pkt: &SkbPacket, ip: *const Ip, syn: *mut Syn) -> SynOutcome {
    // SAFETY: `ip` and `syn` are this CPU's IP_SCRATCH and SYN_SCRATCH
    // values; not preempted.
    unsafe { parse_syn_at(pkt, &*ip, &mut *syn) }
}

/// What the rewrite plan is computed from: the target MSS and the option
/// walk, in this CPU's CLAMP_SCRATCH value while the walk runs.
#[derive(Clone, Copy)]
pub struct Inputs {
    target: u32,
    lesson: Lesson,
    base_mss: u32,
    walk: OptionWalk,
}

/// What each step of the option walk is given (bpf_loop's context, on the
/// caller's stack): the options, and where the walk is kept.
struct Steps {
    copy: OptionsCopy,
    walk: *mut OptionWalk,
}

/// Walks the options in `copy` with pmtu_common's `scan_step` through the
/// bpf_loop() helper, [`STEPS_PER_CALL`] steps per call of [`walk_steps`],
/// into `slot`'s walk, and returns what `slot` holds then (the target,
/// the learned entry that set it if one did, the set-mss or route rule's
/// MSS, the walk), as read back from per-CPU scratch memory.
///
/// Both for the verifier (see pmtu-ebpf/VERIFIER.md). bpf_loop's callback
/// is verified as one call, however many calls run, where a loop in the
/// program had the verifier follow it option by option: Linux 6.1, which
/// learns no bound from comparing two unknown values and prunes no state
/// against one still inside the loop, could not prove it ends, and refused
/// the clamper. And values read back from map memory are unknown to the
/// verifier, so every path through the parser, the route lookups and the
/// walk arrives at the rewrite code as one state (checked once per path
/// otherwise: 216k verified instructions, see tests/prog_test_run.rs).
/// Volatile, so that the compiler neither forwards the stores to the loads
/// nor assumes anything about the walk's start.
#[inline(always)]
fn walk_options(copy: OptionsCopy, slot: *mut Inputs) -> Option<Inputs> {
    let calls = MAX_OPTION_STEPS.div_ceil(STEPS_PER_CALL) as u32;
    // SAFETY: a valid per-CPU map value of type Inputs, written by the
    // caller; BPF programs are not preempted, so nothing else uses this
    // CPU's slot meanwhile. The callback gets `steps` for the duration of
    // the bpf_loop call only.
    unsafe {
        let mut steps = Steps { copy, walk: &raw mut (*slot).walk };
        // It fails only for flags other than 0 or over 2^23 calls.
        if bpf_loop(calls, walk_steps as *mut c_void, (&raw mut steps).cast(), 0) < 0 {
            return None;
        }
        Some(core::ptr::read_volatile(slot))
    }
}

/// Steps of the walk per call of [`walk_steps`]. A call costs tens of
/// nanoseconds here, and each step in a call adds to the verifier's work:
/// with four, a Linux SYN (five options) took two calls and ~40 ns more
/// than the walk inline, with six or eight one call and about the same;
/// 6.18 verified 18.0k, 19.5k and 27.6k instructions (see VERIFIER.md).
const STEPS_PER_CALL: usize = 6;

/// bpf_loop's callback: up to [`STEPS_PER_CALL`] steps of the option walk;
/// 1 once the walk is over, else 0 (the only values the verifier accepts).
extern "C" fn walk_steps(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Steps` walk_options passes to bpf_loop, alive
    // for the call; its `walk` points into this CPU's CLAMP_SCRATCH value,
    // which nothing else uses meanwhile.
    let steps = unsafe { &*ctx.cast::<Steps>() };
    let walk = unsafe { &mut *steps.walk };
    for _ in 0..STEPS_PER_CALL {
        if !steps.copy.scan_step(walk) {
            return 1;
        }
    }
    0
}

/// The lower of the route MTUs toward the destination and back toward the
/// source, less the IP and TCP headers: xt_TCPMSS's
/// `min(dst_mtu(skb_dst(skb)), tcpmss_reverse_mtu()) - minlen`.
#[inline(always)]
fn pmtu_mss(ctx: &TcContext, syn: &Syn) -> Option<u32> {
    // Forwarded packets are looked up as input from where they came in;
    // locally generated ones (egress, no ingress interface) as output.
    let ingress = skb_ingress_ifindex(ctx);
    let (ifindex, flags) = if ingress != 0 {
        (ingress, fib::skip_neigh())
    } else {
        (skb_ifindex(ctx), BPF_FIB_LOOKUP_OUTPUT | fib::skip_neigh())
    };
    let forward = route_mtu(ctx, syn.family, &syn.src, &syn.dst, ifindex, flags)?;
    // As tcpmss_reverse_mtu: no route back means no limit from that side.
    let reverse = route_mtu(ctx, syn.family, &syn.dst, &syn.src, ifindex, flags).unwrap_or(u32::MAX);
    let mtu = min(forward, reverse);
    let minlen = if syn.family == 4 { 40 } else { 60 };
    // xt_TCPMSS drops here ("unknown or invalid path-MTU"); pmtu fails open.
    if mtu <= minlen { None } else { Some(mtu - minlen) }
}

/// The route MTU (PMTU exceptions included) from `src` to `dst`, by asking
/// for a 65535-byte packet: bpf_fib_lookup then reports the MTU it would
/// have to fragment at (BPF_FIB_LKUP_RET_FRAG_NEEDED, params.mtu_result).
#[inline(always)]
fn route_mtu(ctx: &TcContext, family: u8, src: &[u8; 16], dst: &[u8; 16], ifindex: u32, flags: u32) -> Option<u32> {
    let a = fib::lookup(ctx.skb.skb.cast::<c_void>(), family, 6, src, dst, ifindex, 0xffff, flags);
    match a.rc {
        // SAFETY: the kernel wrote mtu_result over tot_len.
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Some(unsafe { a.params.__bindgen_anon_1.mtu_result } as u32),
        BPF_FIB_LKUP_RET_SUCCESS => Some(0xffff),
        _ => None,
    }
}

/// A 16-bit word as it lies in memory, as the native integer the csum
/// helpers take (they work on network-order values).
#[inline(always)]
fn word(bytes: [u8; 2]) -> u64 {
    u16::from_ne_bytes(bytes) as u64
}

#[inline(always)]
fn store<const N: usize>(ctx: &TcContext, off: usize, bytes: &[u8; N]) -> Result<(), Failed> {
    // SAFETY: N bytes from our stack; the helper bounds-checks the packet.
    // Flags 0: skb->csum is kept right by the csum_replace calls, which
    // offset every byte changed here (see insert).
    let rc = unsafe {
        bpf_skb_store_bytes(ctx.skb.skb, off as u32, bytes.as_ptr().cast::<c_void>(), N as u32, 0)
    };
    if rc == 0 { Ok(()) } else { Err(Failed) }
}

/// bpf_l4_csum_replace for one 16-bit word of the plan; `pseudo` for a
/// pseudo-header field (which a CHECKSUM_PARTIAL checksum also covers).
#[inline(always)]
fn l4_replace(ctx: &TcContext, check_at: usize, w: CsumWord, pseudo: bool) -> Result<(), Failed> {
    let flags = if pseudo { 2 | BPF_F_PSEUDO_HDR as u64 } else { 2 };
    // SAFETY: plain helper call on our skb.
    let rc = unsafe { bpf_l4_csum_replace(ctx.skb.skb, check_at as u32, word(w.from), word(w.to), flags) };
    if rc == 0 { Ok(()) } else { Err(Failed) }
}

/// One MSS value lowered in place.
#[inline(always)]
fn lower(ctx: &TcContext, edit: &pmtu_common::rewrite::MssEdit, check_at: usize) -> Result<(), Failed> {
    store(ctx, edit.at, &edit.value)?;
    l4_replace(ctx, check_at, edit.csum, false)
}

/// Adds the MSS option of `i`: the datagram grows by 4 bytes, the old
/// options move back, word 6 and the lengths change, every checksum is
/// offset (see pmtu_common::rewrite::apply, the same steps on a slice).
#[inline(always)]
fn insert(ctx: &TcContext, pkt: &SkbLoaded, i: &Insert, check_at: usize) -> Result<(), u32> {
    // This also drops any Ethernet padding, which tc ingress can still see.
    // SAFETY: plain helper call on our skb.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, i.new_end as u32, 0) } != 0 {
        return Err(ERRORS);
    }
    shift_options(ctx, pkt, i.opt_at, i.move_len)?;
    store(ctx, i.opt_at, &i.option).map_err(|_| ERRORS)?;
    // The old options keep their 16-bit alignment after moving by 4, so
    // only the new option's words change the sum (they replace zeros).
    let option = u32::from_ne_bytes(i.option) as u64;
    // SAFETY: plain helper call on our skb.
    if unsafe { bpf_l4_csum_replace(ctx.skb.skb, check_at as u32, 0, option, 4) } != 0 {
        return Err(ERRORS);
    }
    store(ctx, i.word6_at, &i.word6.to).map_err(|_| ERRORS)?;
    l4_replace(ctx, check_at, i.word6, false).map_err(|_| ERRORS)?;
    l4_replace(ctx, check_at, i.tcp_len, true).map_err(|_| ERRORS)?;
    store(ctx, i.ip_len_at, &i.ip_len.to).map_err(|_| ERRORS)?;
    match i.ip_csum_at {
        Some(at) => {
            // SAFETY: plain helper call on our skb.
            let rc = unsafe { bpf_l3_csum_replace(ctx.skb.skb, at as u32, word(i.ip_len.from), word(i.ip_len.to), 2) };
            if rc != 0 {
                return Err(ERRORS);
            }
        }
        None => {
            // No IPv6 header checksum to offset the payload length, so tell
            // a CHECKSUM_COMPLETE skb->csum about it (a no-op otherwise).
            let from = [i.ip_len.from[0], i.ip_len.from[1], 0, 0];
            let to = [i.ip_len.to[0], i.ip_len.to[1], 0, 0];
            // SAFETY: two 4-byte buffers on our stack.
            unsafe {
                let diff = bpf_csum_diff(from.as_ptr() as *mut u32, 4, to.as_ptr() as *mut u32, 4, 0);
                if diff >= 0 {
                    bpf_csum_update(ctx.skb.skb, diff as u32);
                }
            }
        }
    }
    Ok(())
}

/// Moves the `len` option bytes at `off` 4 bytes later.
///
/// One arm per possible length (a multiple of 4, 0..=36), each with
/// constant sizes: a variable size would be a helper's size argument, which
/// the verifier must know exactly, and that precision flowed back into the
/// option walk, multiplying its states by eleven (measured while the walk
/// ran inline, before walk_options).
#[inline(always)]
fn shift_options(ctx: &TcContext, pkt: &SkbLoaded, off: usize, len: usize) -> Result<(), u32> {
    macro_rules! shift {
        ($n:literal) => {{
            let mut buf = [0u8; $n];
            if !pkt.read_into(off, &mut buf) {
                return Err(ERRORS);
            }
            store(ctx, off + 4, &buf).map_err(|_| ERRORS)
        }};
    }
    match len {
        0 => Ok(()),
        4 => shift!(4),
        8 => shift!(8),
        12 => shift!(12),
        16 => shift!(16),
        20 => shift!(20),
        24 => shift!(24),
        28 => shift!(28),
        32 => shift!(32),
        36 => shift!(36),
        _ => Err(MALFORMED),
    }
}
