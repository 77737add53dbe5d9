//! PTB observer: parse, count, and hand the event to userspace.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use pmtu_common::{
    counters,
    event::PtbEvent,
    parse::{Outcome, Packet, parse_ptb},
};

use crate::maps::{EVENTS, count};

#[inline(always)]
pub fn observe<P: Packet>(pkt: &P, ifindex: u32, hook: u8) {
    count(counters::INSPECTED);
    let mut ev = PtbEvent::zeroed();
    match parse_ptb(pkt, &mut ev) {
        Outcome::Ptb => {
            count(if ev.family == 4 { counters::PTB_V4 } else { counters::PTB_V6 });
            // SAFETY: no preconditions; reads CLOCK_MONOTONIC.
            ev.ts_ns = unsafe { bpf_ktime_get_ns() };
            ev.ifindex = ifindex;
            ev.hook = hook;
            match EVENTS.reserve::<PtbEvent>(0) {
                Some(mut slot) => {
                    slot.write(ev);
                    slot.submit(0);
                    count(counters::EVENTS_SUBMITTED);
                }
                None => count(counters::RING_LOST),
            }
        }
        Outcome::Malformed => count(counters::MALFORMED),
        Outcome::FragmentSkipped => count(counters::FRAGMENT_SKIPPED),
        Outcome::NotIp | Outcome::NotPtb => {}
    }
}
