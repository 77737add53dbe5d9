//! Maps shared with userspace. Names are the contract with pmtu-user's loader.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use pmtu_common::{
    counters,
    flow::{FlowKey, FlowState, MAX_FLOWS, MAX_REPORTERS, ObserverConfig},
    learned::{LearnConfig, Learned, LearnedKey, MAX_LEARNED},
    policy::{self, ClampPolicy, MAX_IFACES},
    ratelimit::Bucket,
};

/// PTB events. 256 KiB holds ~2,700 records; userspace may resize it before
/// load. A full ring is counted in `counters::RING_LOST`, never silent.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Observer settings (flow timeout, rate limits), written by userspace.
#[map]
pub static OBSERVER_CONFIG: Array<ObserverConfig> = Array::with_max_entries(1, 0);

/// Non-zero: each PTB event carries the first bytes of its packet
/// (`event::CapturedPtb`), for `pmtu trace --pcap`. Written by userspace;
/// zero (a bare `PtbEvent` per event) unless asked.
#[map]
pub static CAPTURE: Array<u32> = Array::with_max_entries(1, 0);

/// Flows seen leaving through tc egress, least recently used evicted.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

/// One token bucket per reporter address (LRU) and one for all of them.
/// Updated without atomics: two CPUs racing on one bucket may let an extra
/// event through, never lose one uncounted.
#[map]
pub static REPORTER_BUCKETS: LruHashMap<[u8; 16], Bucket> = LruHashMap::with_max_entries(MAX_REPORTERS, 0);
#[map]
pub static GLOBAL_BUCKET: Array<Bucket> = Array::with_max_entries(1, 0);

/// Interfaces the observer is attached to (ifindex → 1), written by
/// userspace: a forwarded PTB that came in on one of them was reported on
/// the way in, so tc egress does not report it again.
#[map]
pub static OBSERVED: HashMap<u32, u32> = HashMap::with_max_entries(MAX_IFACES, 0);

/// This host's own addresses (IPv4 in the first four bytes), kept by
/// userspace from rtnetlink: a PTB addressed to one of them is `received`.
/// (bpf_fib_lookup cannot say it for IPv4 where forwarding is off: it
/// answers FWD_DISABLED before looking at the destination.) Allocated on
/// demand, so a router with few addresses pays for few.
#[map]
pub static LOCAL_ADDRS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(MAX_LOCAL_ADDRS, BPF_F_NO_PREALLOC);

/// Addresses LOCAL_ADDRS holds at most.
pub const MAX_LOCAL_ADDRS: u32 = 65_536;
const BPF_F_NO_PREALLOC: u32 = 1;

/// Per-CPU scratch word through which packet.rs passes every direct-access
/// offset (see `packet::launder`).
#[map]
pub static OFFSET_SCRATCH: PerCpuArray<usize> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU so the hot path never contends on a shared cache line.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counters::COUNT, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and BPF programs are not preempted on a CPU
        // while they run, so this CPU's slot has no concurrent writer.
        unsafe { *slot += 1 };
    }
}

/// Clamp policy per interface (ifindex), written by `pmtu clamp`. An
/// interface with no entry is left alone.
#[map]
pub static CLAMP_POLICY: HashMap<u32, ClampPolicy> = HashMap::with_max_entries(MAX_IFACES, 0);

/// Clamper counters, `policy::counters::COUNT` per interface slot.
#[map]
pub static CLAMP_COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(MAX_IFACES * policy::counters::COUNT, 0);

#[inline(always)]
pub fn count_clamp(slot: u32, counter: u32) {
    if let Some(c) = CLAMP_COUNTERS.get_ptr_mut(slot * policy::counters::COUNT + counter) {
        // SAFETY: per-CPU slot, see `count`.
        unsafe { *c += 1 };
    }
}

/// PMTUs learned from valid PTBs this host forwarded or received, per
/// address or prefix (see pmtu_common::learned), written by userspace's
/// learner; the clamper reads them for interfaces whose policy has
/// MODE_LEARNED. Allocated on demand: most hosts learn few.
#[map]
pub static LEARNED: HashMap<LearnedKey, Learned> = HashMap::with_max_entries(MAX_LEARNED, BPF_F_NO_PREALLOC);

/// Per-CPU window for the clamper's ring records of learned clamps
/// (`clamp::may_report`): [window start ns, records in it].
#[map]
pub static CLAMP_REPORT_WINDOW: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// How LEARNED is keyed (prefix lengths), written by userspace.
#[map]
pub static LEARN_CONFIG: Array<LearnConfig> = Array::with_max_entries(1, 0);

/// Per-CPU scratch the clamper parses into (see `clamp::parse_into`).
#[map]
pub static SYN_SCRATCH: PerCpuArray<pmtu_common::parse::Syn> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU copy of a SYN's TCP options (see `packet::OptionsCopy`).
#[map]
pub static OPTIONS_SCRATCH: PerCpuArray<[u8; crate::packet::OPTIONS_COPY]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch for the clamper: the target MSS and the option walk (see
/// `clamp::walk_options`).
#[map]
pub static CLAMP_SCRATCH: PerCpuArray<crate::clamp::Inputs> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch the observer parses into (see `observe::observe`).
#[map]
pub static EVENT_SCRATCH: PerCpuArray<pmtu_common::event::PtbEvent> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch for the observer's L3 result (see `observe::observe`).
/// Kernel-internal: never read by userspace.
#[map]
pub static IP_SCRATCH: PerCpuArray<pmtu_common::parse::Ip> = PerCpuArray::with_max_entries(1, 0);
