//! Maps shared with userspace. Names are the contract with pmtu-user's loader.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use pmtu_common::{
    counters,
    policy::{self, ClampPolicy, MAX_IFACES},
};

/// PTB events. 256 KiB holds ~2,700 records; userspace may resize it before
/// load. A full ring is counted in `counters::RING_LOST`, never silent.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

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

/// Per-CPU scratch for the clamper (see `clamp::launder`).
#[map]
pub static CLAMP_SCRATCH: PerCpuArray<crate::clamp::Plan> = PerCpuArray::with_max_entries(1, 0);
