//! Indices into the per-CPU `COUNTERS` array. Plain `u32` constants rather than
//! an enum so the index is a map key with no representation question.

/// Every packet an observer program looked at.
pub const INSPECTED: u32 = 0;
/// ICMPv4 Destination Unreachable / Fragmentation Needed (type 3 code 4).
pub const PTB_V4: u32 = 1;
/// ICMPv6 Packet Too Big (type 2 code 0).
pub const PTB_V6: u32 = 2;
/// Headers that contradict themselves or end before they should; the packet
/// was passed on unchanged (fail open).
pub const MALFORMED: u32 = 3;
/// Non-first IP fragments: they carry no header to parse (RFC 791, RFC 8200 §4.5).
pub const FRAGMENT_SKIPPED: u32 = 4;
/// A PTB parsed but the ring buffer had no room for its event.
pub const RING_LOST: u32 = 5;
/// Events written to the ring buffer.
pub const EVENTS_SUBMITTED: u32 = 6;
/// PTBs suppressed by a token bucket (not in the ring, only here).
pub const RATE_LIMITED: u32 = 7;
/// Events submitted with at least one `validate::REASON_*` bit.
pub const INVALID: u32 = 8;
/// New flows recorded from outgoing packets (tc egress).
pub const FLOWS_RECORDED: u32 = 9;
/// A flow or rate-limit map refused an insert (the event went on).
pub const MAP_UPDATE_FAILED: u32 = 10;
/// A forwarded PTB at tc egress that was already reported where it came in
/// (one message, one event).
pub const TRANSIT_SEEN_ON_ENTRY: u32 = 11;

pub const COUNT: u32 = 12;

/// Names for display, indexed by counter. Userspace prints these as JSON keys.
pub const NAMES: [&str; COUNT as usize] = [
    "inspected",
    "ptb_v4",
    "ptb_v6",
    "malformed",
    "fragments_skipped",
    "ring_lost",
    "events_submitted",
    "rate_limited",
    "invalid",
    "flows_recorded",
    "map_update_failed",
    "transit_seen_on_entry",
];
