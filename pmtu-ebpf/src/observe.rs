//! PTB observer: parse, validate, rate-limit, hand the event to userspace;
//! and, at egress, remember the flows that leave.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::{
        bpf_ktime_get_ns,
        generated::bpf_ktime_get_coarse_ns,
    },
};
use pmtu_common::{
    counters, csum,
    event::{CAPTURE_BYTES, CapturedPtb, DIR_RECEIVED, DIR_SENT, DIR_TRANSIT, HOOK_TC_EGRESS, PtbEvent},
    flow::{FlowKey, FlowState, ObserverConfig, record_seq},
    parse::{IPPROTO_ICMP, IPPROTO_ICMPV6, Ip, Link, NoL4, Outcome, Packet, parse_ip, parse_ptb_at, parse_sent_at, quoted_flow},
    ratelimit::{Take, new_bucket, take},
    validate::{
        REASON_BAD_CHECKSUM, REASON_NOT_FOR_US, REASON_RATE_LIMITED, REASON_SEQ_OUTSIDE, REASON_UNKNOWN_FLOW,
        intrinsic_reasons, seq_within,
    },
};

use crate::{
    fib,
    maps::{
        CAPTURE, EVENTS, EVENT_SCRATCH, FLOWS, GLOBAL_BUCKET, IP_SCRATCH, LOCAL_ADDRS, OBSERVED, OBSERVER_CONFIG, REPORTER_BUCKETS,
        count,
    },
    packet::FrameHead,
};

/// Where and how a packet was seen.
pub struct Seen {
    /// The program's context (xdp_md or __sk_buff), for bpf_fib_lookup.
    pub ctx: *mut c_void,
    /// The interface the program runs on.
    pub ifindex: u32,
    /// At tc egress: the interface a forwarded packet came in on (0 for
    /// this host's own packets); 0 elsewhere.
    pub came_in_on: u32,
    pub hook: u8,
    /// `event::CAPTURE_LINK_*`: how the frame starts, for a capture.
    pub link: u8,
}

#[inline(always)]
fn config() -> ObserverConfig {
    match OBSERVER_CONFIG.get(0) {
        Some(c) => *c,
        None => ObserverConfig::DEFAULT,
    }
}

/// The parser as a BPF subprogram that writes the event into map memory.
///
/// The verifier tracks neither what a map value holds nor, once this
/// returns, which path through the parser (VLANs, IPv4 options, extension
/// headers, MTU 0) was taken: the checks below are verified once per
/// outcome instead of once per path (312k verified instructions when it
/// was all inlined, see prog_test_run.rs). Not inlined, so the compiler
/// cannot carry the parser's constants across either.
#[inline(never)]
fn parse_into<P: Packet>(pkt: &P, ip: *const Ip, ev: *mut PtbEvent) -> Outcome {
    // SAFETY: `ip` and `ev` are this CPU's IP_SCRATCH and EVENT_SCRATCH.
    unsafe { parse_ptb_at(pkt, &*ip, &mut *ev) }
}

/// Whether the outer IPv4 header and the ICMP/ICMPv6 checksum hold, as
/// ip_rcv_core() and icmp_rcv()/icmpv6_rcv() require before acting on the
/// message. A subprogram, so its loop is verified once. A message too long
/// to sum here (over csum::MAX_SUMMED) counts as good.
#[inline(never)]
fn checksums_ok<P: Packet>(pkt: &P, ip: *const Ip) -> bool {
    // SAFETY: this CPU's IP_SCRATCH value.
    let ip = unsafe { &*ip };
    if ip.family == 4 && !csum::ipv4_header_ok(pkt, ip) {
        return false;
    }
    csum::icmp_ok(pkt, ip) != Some(false)
}

/// Looks at one packet: a PTB becomes an event; at egress (`record_flows`)
/// anything else that leaves is remembered as a flow. L2 and L3 are parsed
/// once for both.
///
/// `pkt` reads directly (the fast path and the flow recorder); `loaded`
/// serves the PTB parser and the checksums: the same direct reads at XDP,
/// the load-bytes helper at tc, where direct reads with their helper
/// fallback put the observer over the verifier budget (see packet.rs).
#[inline(always)]
pub fn observe<P: Packet, L: Packet + FrameHead>(pkt: &P, loaded: &L, link: Link, seen: &Seen) {
    count(counters::INSPECTED);
    let record_flows = seen.hook == HOOK_TC_EGRESS;
    let ip = match parse_ip(pkt, link) {
        Ok(ip) => ip,
        Err(NoL4::Malformed) => return count(counters::MALFORMED),
        Err(NoL4::FragmentSkipped) => return count(counters::FRAGMENT_SKIPPED),
        Err(NoL4::NotIp) => return,
    };
    let icmp = (ip.family == 4 && ip.proto == IPPROTO_ICMP) || (ip.family == 6 && ip.proto == IPPROTO_ICMPV6);
    // The fast path: ingress traffic that cannot be a PTB ends here.
    if !icmp && !record_flows {
        return;
    }
    // The subprograms below get the L3 result through map memory, which the
    // verifier does not track: they are then checked once, not once per
    // path through the L2/L3 walk (VLANs, IPv4 options, extension headers).
    let Some(ip_slot) = IP_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a valid per-CPU map value; not preempted while we run.
    unsafe { ip_slot.write(ip) };
    if icmp {
        let Some(scratch) = EVENT_SCRATCH.get_ptr_mut(0) else {
            return;
        };
        match parse_into(loaded, ip_slot, scratch) {
            Outcome::Ptb => return report(loaded, ip_slot, scratch, seen),
            Outcome::Malformed => return count(counters::MALFORMED),
            // An echo request is a flow too.
            Outcome::NotPtb | Outcome::NotIp | Outcome::FragmentSkipped => {}
        }
    }
    if record_flows {
        record_flow(pkt, ip_slot);
    }
}

/// Validates, rate-limits and submits the PTB parsed into `scratch`.
///
/// One message, one event: a PTB arriving (XDP, tc ingress) is `received`
/// if addressed to this host, `transit` if the kernel will forward it, and
/// reported there; at tc egress, this host's own PTBs are `sent`, and a
/// forwarded one is reported only if the interface it came in on is not
/// observed (else it was reported on the way in).
#[inline(always)]
fn report<P: Packet + FrameHead>(pkt: &P, ip: *const Ip, scratch: *mut PtbEvent, seen: &Seen) {
    // SAFETY: a valid per-CPU map value; BPF programs are not preempted.
    let ev = unsafe { &mut *scratch };
    let egress = seen.hook == HOOK_TC_EGRESS;
    if egress && seen.came_in_on != 0 {
        // SAFETY: plain data, read once.
        if unsafe { OBSERVED.get(&seen.came_in_on) }.is_some() {
            count(counters::TRANSIT_SEEN_ON_ENTRY);
            return;
        }
    }
    count(if ev.family == 4 { counters::PTB_V4 } else { counters::PTB_V6 });
    // SAFETY: no preconditions; reads CLOCK_MONOTONIC.
    let now = unsafe { bpf_ktime_get_ns() };
    let cfg = config();
    ev.ts_ns = now;
    ev.hook = seen.hook;
    ev.reasons = intrinsic_reasons(ev);
    ev.ifindex = seen.ifindex;
    ev.out_ifindex = 0;
    if egress && seen.came_in_on == 0 {
        // This host's own (icmp_send): checked as a message only; the flows
        // it is about are someone else's.
        ev.direction = DIR_SENT;
    } else {
        if egress {
            // Forwarded from an interface pmtu does not observe.
            ev.direction = DIR_TRANSIT;
            ev.ifindex = seen.came_in_on;
            ev.out_ifindex = seen.ifindex;
        } else {
            classify(seen, ev);
        }
        if !checksums_ok(pkt, ip) {
            ev.reasons |= REASON_BAD_CHECKSUM;
        }
        // The quoted packet left through this host (sent or forwarded):
        // the flow memory knows it if it left through an observed interface.
        ev.reasons |= flow_reasons(ev, now, cfg.flow_timeout_ns);
    }
    match rate_limit(&ev.reporter, now, &cfg) {
        Take::Allowed => {}
        Take::FirstRefused => ev.reasons |= REASON_RATE_LIMITED,
        Take::Refused => {
            count(counters::RATE_LIMITED);
            return;
        }
    }
    let submitted = if capture_on() { submit_captured(pkt, ev, seen.link) } else { submit(ev) };
    if submitted {
        count(counters::EVENTS_SUBMITTED);
        if ev.reasons != 0 {
            count(counters::INVALID);
        }
    } else {
        count(counters::RING_LOST);
    }
}

/// Whether userspace asked for the packets' first bytes (CAPTURE).
#[inline(always)]
fn capture_on() -> bool {
    matches!(CAPTURE.get(0), Some(on) if *on != 0)
}

/// The event alone; false if the ring is full.
#[inline(always)]
fn submit(ev: &PtbEvent) -> bool {
    match EVENTS.reserve::<PtbEvent>(0) {
        Some(mut slot) => {
            slot.write(*ev);
            slot.submit(0);
            true
        }
        None => false,
    }
}

/// The event and the first CAPTURE_BYTES of its frame, copied straight
/// into the ring record (one helper call); false if the ring is full. A
/// failed copy still submits the event, with `cap_len` 0.
#[inline(always)]
fn submit_captured<P: Packet + FrameHead>(pkt: &P, ev: &PtbEvent, link: u8) -> bool {
    let Some(mut slot) = EVENTS.reserve::<CapturedPtb>(0) else {
        return false;
    };
    let rec = slot.as_mut_ptr();
    // SAFETY: `rec` is the reserved record, size_of::<CapturedPtb>() bytes
    // of ring memory ours until submitted. Every field but `data` is
    // written here through raw pointers (no reference to uninitialised
    // memory is made); `data` is handed to the helper as MaybeUninit and
    // only its first `cap_len` bytes are ever read.
    unsafe {
        (&raw mut (*rec).event).write(*ev);
        (&raw mut (*rec).pkt_len).write(pkt.len() as u32);
        (&raw mut (*rec).link).write(link);
        (&raw mut (*rec)._pad).write(0);
        let data = &mut *(&raw mut (*rec).data).cast::<MaybeUninit<[u8; CAPTURE_BYTES]>>();
        let n = pkt.read_head(data);
        (&raw mut (*rec).cap_len).write(n as u16);
    }
    slot.submit(0);
    true
}

/// Sets the direction of a PTB seen arriving on `seen.ifindex`, and the way
/// out of a transit one: addressed to one of this host's addresses
/// (LOCAL_ADDRS) it is received; otherwise an input lookup from the arrival
/// interface (bpf_fib_lookup) says whether the kernel forwards it (it
/// answers FWD_DISABLED where forwarding is off, where ip_route_input
/// refuses too). A message that is neither is dropped by the kernel
/// (IpInAddrErrors / Ip6InAddrErrors): `not-for-us`.
#[inline(always)]
fn classify(seen: &Seen, ev: &mut PtbEvent) {
    ev.direction = DIR_RECEIVED;
    // SAFETY: plain data, read once.
    if unsafe { LOCAL_ADDRS.get(&ev.to) }.is_some() {
        return;
    }
    let (rc, out) = route(seen, ev, fib::skip_neigh());
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_FRAG_NEEDED | BPF_FIB_LKUP_RET_NO_NEIGH => {
            ev.direction = DIR_TRANSIT;
            ev.out_ifindex = out;
        }
        // Forwarding off, blackhole, unreachable, prohibit, no route.
        _ => ev.reasons |= REASON_NOT_FOR_US,
    }
}

/// bpf_fib_lookup for the message's own addresses (reporter → to) from the
/// interface it arrived on: the return code and the interface out.
#[inline(always)]
fn route(seen: &Seen, ev: &PtbEvent, flags: u32) -> (u32, u32) {
    let l4 = if ev.family == 4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 };
    let a = fib::lookup(seen.ctx, ev.family, l4, &ev.reporter, &ev.to, seen.ifindex, 0, flags);
    (a.rc, a.params.ifindex)
}

/// Unknown flow, or a TCP sequence number that flow never sent.
#[inline(always)]
fn flow_reasons(ev: &PtbEvent, now: u64, timeout_ns: u64) -> u16 {
    let Some(key) = quoted_flow(ev) else {
        return REASON_UNKNOWN_FLOW;
    };
    // SAFETY: plain data, read once.
    let Some(state) = (unsafe { FLOWS.get(&key) }) else {
        return REASON_UNKNOWN_FLOW;
    };
    let state = *state;
    if now.saturating_sub(state.last_seen_ns) > timeout_ns {
        return REASON_UNKNOWN_FLOW;
    }
    match ev.tcp_seq() {
        Some(seq) if !seq_within(seq, state.seq_lo, state.seq_hi) => REASON_SEQ_OUTSIDE,
        _ => 0,
    }
}

/// The reporter's bucket first, then the global one, so a flood from one
/// source does not use up everyone's share.
#[inline(always)]
fn rate_limit(reporter: &[u8; 16], now: u64, cfg: &ObserverConfig) -> Take {
    let own = match REPORTER_BUCKETS.get_ptr_mut(reporter) {
        // SAFETY: a valid map value; races only blur the count (see maps.rs).
        Some(b) => take(unsafe { &mut *b }, now, cfg.reporter_rate, cfg.reporter_burst),
        None => {
            let mut b = new_bucket(now, cfg.reporter_burst);
            let t = take(&mut b, now, cfg.reporter_rate, cfg.reporter_burst);
            // A full LRU evicts the stalest reporter, so this fails only on
            // memory pressure; the event keeps its token either way.
            if REPORTER_BUCKETS.insert(reporter, b, 0).is_err() {
                count(counters::MAP_UPDATE_FAILED);
            }
            t
        }
    };
    if own == Take::Refused {
        return own;
    }
    let Some(g) = GLOBAL_BUCKET.get_ptr_mut(0) else {
        return own;
    };
    // SAFETY: as above.
    let g = unsafe { &mut *g };
    if g.last_ns == 0 {
        *g = new_bucket(now, cfg.global_burst);
    }
    match take(g, now, cfg.global_rate, cfg.global_burst) {
        Take::Allowed => own,
        other => other,
    }
}

/// How stale `last_seen_ns` may get before a packet refreshes it: far
/// below any flow timeout, and it spares the shared map entry a store per
/// packet.
const REFRESH_NS: u64 = 100_000_000;

/// Remembers the flow of a packet leaving through tc egress.
#[inline(never)]
fn record_flow<P: Packet>(pkt: &P, ip: *const Ip) {
    // Zeroed as five aligned words: FlowKey (align 2) zeroed itself became a
    // call to the byte-at-a-time memset subprogram, 40 trips on every
    // packet leaving (measured on a TCP segment: +127 ns over the no-op
    // with it, +115 ns without).
    let mut words = [0u64; 5];
    // SAFETY: FlowKey is 40 bytes of plain integers (size asserted in
    // pmtu-common), for which all zeroes is a valid value, and `words` is
    // 40 bytes aligned to 8, more than FlowKey's 2.
    let key = unsafe { &mut *words.as_mut_ptr().cast::<FlowKey>() };
    // SAFETY: this CPU's IP_SCRATCH value.
    let Some(sent) = parse_sent_at(pkt, unsafe { &*ip }, key) else {
        return;
    };
    // The coarse clock (jiffies resolution) is plenty for a 120 s timeout
    // and cheaper than the precise one on every egress packet.
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    match FLOWS.get_ptr_mut(&*key) {
        Some(state) => {
            // SAFETY: a valid map value; a racing update only blurs the window.
            let state = unsafe { &mut *state };
            if now.saturating_sub(state.last_seen_ns) > REFRESH_NS {
                state.last_seen_ns = now;
            }
            if sent.tcp {
                record_seq(state, sent.seq, sent.seq_len, false);
            }
        }
        None => {
            let mut state = FlowState { last_seen_ns: now, seq_lo: 0, seq_hi: 0 };
            if sent.tcp {
                record_seq(&mut state, sent.seq, sent.seq_len, true);
            }
            // LRU: room is made by evicting the oldest flow.
            if FLOWS.insert(&*key, state, 0).is_err() {
                count(counters::MAP_UPDATE_FAILED);
                return;
            }
            count(counters::FLOWS_RECORDED);
        }
    }
}
