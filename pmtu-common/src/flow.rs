//! Flow memory: what this host sent or forwarded recently, so a PTB can be
//! matched to a packet that really left (RFC 8201 §5; tcp_v4_err's check).

/// One direction of a flow as it left: source, destination, protocol and
/// the two 16-bit "ports" (TCP/UDP/SCTP/DCCP/UDP-Lite ports; for ICMP and
/// ICMPv6 echo, the identifier and the type).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    pub last_seen_ns: u64,
    /// TCP: the lowest and the highest-plus-length sequence numbers sent
    /// (a window on snd_una..snd_nxt, never wider than `SEQ_WINDOW`).
    pub seq_lo: u32,
    pub seq_hi: u32,
}

const _: () = assert!(core::mem::size_of::<FlowState>() == 16);

/// How far below the highest sequence sent a quoted sequence may be: the
/// largest TCP window with scaling (RFC 7323 §2.3, 2^30) would be the
/// strictest sound bound; 16 MiB covers any send queue a PTB can still be
/// about while keeping guesses hard.
pub const SEQ_WINDOW: u32 = 16 << 20;

/// Entries in the flow LRU: 65,536 × (40 + 16 + LRU overhead ≈ 64) bytes,
/// about 8 MiB of kernel memory.
pub const MAX_FLOWS: u32 = 65_536;

/// Reporters with their own token bucket (LRU).
pub const MAX_REPORTERS: u32 = 16_384;

/// Observer settings written by userspace before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObserverConfig {
    /// A flow unseen for longer is unknown (ns).
    pub flow_timeout_ns: u64,
    /// Events per second per reporter, and burst (0: unlimited).
    pub reporter_rate: u32,
    pub reporter_burst: u32,
    /// Events per second from all reporters together, and burst.
    pub global_rate: u32,
    pub global_burst: u32,
}

const _: () = assert!(core::mem::size_of::<ObserverConfig>() == 24);

impl ObserverConfig {
    pub const DEFAULT: Self = Self {
        flow_timeout_ns: 120_000_000_000,
        reporter_rate: 100,
        reporter_burst: 200,
        global_rate: 10_000,
        global_burst: 20_000,
    };
}

/// Folds a TCP segment sent (`seq`, `len` bytes of sequence space) into the
/// flow's window.
#[inline(always)]
pub fn record_seq(state: &mut FlowState, seq: u32, len: u32, fresh: bool) {
    let end = seq.wrapping_add(len);
    if fresh {
        state.seq_lo = seq;
        state.seq_hi = end;
        return;
    }
    if end.wrapping_sub(state.seq_hi) as i32 > 0 {
        state.seq_hi = end;
    }
    if (state.seq_lo.wrapping_sub(seq) as i32) > 0 {
        state.seq_lo = seq;
    }
    if state.seq_hi.wrapping_sub(state.seq_lo) > SEQ_WINDOW {
        state.seq_lo = state.seq_hi.wrapping_sub(SEQ_WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::seq_within;

    #[test]
    fn the_window_follows_what_was_sent() {
        let mut s = FlowState::default();
        record_seq(&mut s, 1000, 100, true);
        record_seq(&mut s, 1100, 1448, false);
        assert_eq!((s.seq_lo, s.seq_hi), (1000, 2548));
        // A retransmission does not move the window.
        record_seq(&mut s, 1000, 100, false);
        assert_eq!((s.seq_lo, s.seq_hi), (1000, 2548));
        assert!(seq_within(1100, s.seq_lo, s.seq_hi));
        assert!(!seq_within(5000, s.seq_lo, s.seq_hi));
        assert!(!seq_within(999, s.seq_lo, s.seq_hi));
    }

    #[test]
    fn wraps_and_stays_bounded() {
        let mut s = FlowState::default();
        record_seq(&mut s, u32::MAX - 10, 5, true);
        record_seq(&mut s, u32::MAX - 5, 100, false);
        assert_eq!(s.seq_hi, 94);
        assert!(seq_within(3, s.seq_lo, s.seq_hi));
        record_seq(&mut s, 94, SEQ_WINDOW + 10, false);
        assert_eq!(s.seq_hi.wrapping_sub(s.seq_lo), SEQ_WINDOW);
    }
}
