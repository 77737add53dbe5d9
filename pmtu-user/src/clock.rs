//! Kernel timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) to wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; both clocks always exist on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC now, in the kernel's `bpf_ktime_get_ns` time base.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Maps monotonic nanoseconds to wall-clock time with one offset taken at
/// start, so every event of a run is on the same, consistent time line.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    realtime_minus_mono_ns: i128,
}

impl WallClock {
    pub fn now() -> Self {
        let mono = monotonic_ns() as i128;
        let real = clock_ns(libc::CLOCK_REALTIME) as i128;
        Self { realtime_minus_mono_ns: real - mono }
    }

    /// A fixed offset, for tests.
    pub const fn with_offset_ns(realtime_minus_mono_ns: i128) -> Self {
        Self { realtime_minus_mono_ns }
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = (mono_ns as i128 + self.realtime_minus_mono_ns).max(0) as u128;
        UNIX_EPOCH + Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
    }

    /// RFC 3339 with microseconds, UTC.
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        humantime::format_rfc3339_micros(self.wall(mono_ns)).to_string()
    }
}
