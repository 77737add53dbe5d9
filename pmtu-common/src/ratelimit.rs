//! Token buckets for PTB events, applied in the kernel before the ring
//! buffer (RFC 4443 §2.4 (f) rate-limits the sender side; this is the
//! receiver's defence against a flood).

/// One token is one event; tokens are kept in nano-tokens so refills at any
/// rate stay integral.
pub const NANO: u64 = 1_000_000_000;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Available nano-tokens.
    pub tokens: u64,
    /// When `tokens` was last brought up to date (CLOCK_MONOTONIC ns).
    pub last_ns: u64,
    /// 1 while a run of suppressed events is going on.
    pub suppressing: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<Bucket>() == 24);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    Allowed,
    /// The first event refused after a run of allowed ones: reported, with
    /// the `rate-limited` reason, so the user sees the limit start.
    FirstRefused,
    /// Counted only.
    Refused,
}

/// A fresh bucket holds a full burst.
#[inline(always)]
pub fn new_bucket(now_ns: u64, burst: u32) -> Bucket {
    Bucket { tokens: burst as u64 * NANO, last_ns: now_ns, suppressing: 0, _pad: 0 }
}

/// Refills `b` at `rate` events/s up to `burst` events and takes one.
/// `rate == 0` means unlimited.
#[inline(always)]
pub fn take(b: &mut Bucket, now_ns: u64, rate: u32, burst: u32) -> Take {
    if rate == 0 {
        return Take::Allowed;
    }
    let cap = burst as u64 * NANO;
    // Ten seconds of refill is more than any burst needs; the cap keeps
    // elapsed * rate far from overflow.
    let elapsed = now_ns.saturating_sub(b.last_ns);
    let elapsed = if elapsed > 10 * NANO { 10 * NANO } else { elapsed };
    let tokens = b.tokens + elapsed * rate as u64;
    b.tokens = if tokens > cap { cap } else { tokens };
    b.last_ns = now_ns;
    if b.tokens >= NANO {
        b.tokens -= NANO;
        b.suppressing = 0;
        Take::Allowed
    } else if b.suppressing == 0 {
        b.suppressing = 1;
        Take::FirstRefused
    } else {
        Take::Refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = new_bucket(0, 3);
        let mut t = [Take::Refused; 5];
        for slot in &mut t {
            *slot = take(&mut b, 0, 10, 3);
        }
        assert_eq!(t, [Take::Allowed, Take::Allowed, Take::Allowed, Take::FirstRefused, Take::Refused]);
        // 10/s: one token every 100 ms.
        assert_eq!(take(&mut b, 50_000_000, 10, 3), Take::Refused);
        assert_eq!(take(&mut b, 100_000_000, 10, 3), Take::Allowed);
        assert_eq!(take(&mut b, 100_000_000, 10, 3), Take::FirstRefused);
        // A long pause refills to the burst, no more.
        for _ in 0..3 {
            assert_eq!(take(&mut b, 100 * NANO, 10, 3), Take::Allowed);
        }
        assert_eq!(take(&mut b, 100 * NANO, 10, 3), Take::FirstRefused);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let mut b = new_bucket(0, 0);
        for _ in 0..1000 {
            assert_eq!(take(&mut b, 0, 0, 0), Take::Allowed);
        }
    }
}
