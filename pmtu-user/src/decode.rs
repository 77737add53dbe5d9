//! Ring-buffer records to typed events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pmtu_common::{
    event::{
        CAPTURE_BYTES, CAPTURE_LINK_ETHERNET, CAPTURE_LINK_L3, CapturedPtb, DIR_RECEIVED, DIR_SENT, DIR_TRANSIT,
        FLAG_MTU_ESTIMATED, HOOK_TC_EGRESS, HOOK_TC_INGRESS, HOOK_XDP, PtbEvent,
    },
    learned::ClampEvent,
    validate::REASON_NAMES,
};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "ring record is {got} bytes, expected {expected} (or {} with the packet's first bytes, or {} from the clamper)",
        size_of::<CapturedPtb>(),
        size_of::<ClampEvent>()
    )]
    Size { got: usize, expected: usize },
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("unknown hook {0}")]
    Hook(u8),
    #[error("unknown capture link type {0}")]
    Link(u8),
    #[error("a capture of {cap_len} bytes of a {pkt_len}-byte frame")]
    Capture { cap_len: u16, pkt_len: u32 },
}

/// How a captured frame starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaptureLink {
    /// With its Ethernet header (and any VLAN tags): XDP, and tc on
    /// Ethernet interfaces.
    Ethernet,
    /// With the IP header: tc on interfaces without a link-layer header.
    L3,
}

/// The first bytes of the frame a PTB came in, as the hook saw it
/// (`pmtu trace --pcap`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    pub link: CaptureLink,
    /// The frame's whole length.
    pub orig_len: u32,
    /// Its first min(`orig_len`, CAPTURE_BYTES) bytes.
    pub data: Vec<u8>,
}

/// Where an event was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    Xdp,
    TcIngress,
    TcEgress,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::TcIngress => "tc-ingress",
            Hook::TcEgress => "tc-egress",
        }
    }
}

/// Which way a message went through this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Addressed to this host.
    Received,
    /// Forwarded through this host.
    Transit,
    /// This host's own.
    Sent,
    /// The kernel program could not tell (older records).
    Unknown,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Received => "received",
            Direction::Transit => "transit",
            Direction::Sent => "sent",
            Direction::Unknown => "unknown",
        }
    }
}

/// One Packet-Too-Big, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ptb {
    pub ts_ns: u64,
    pub ifindex: u32,
    pub hook: Hook,
    pub family: u8,
    pub reporter: IpAddr,
    pub to: IpAddr,
    pub mtu: u32,
    pub mtu_estimated: bool,
    pub orig_src: IpAddr,
    pub orig_dst: IpAddr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub quoted_len: u32,
    /// `validate::REASON_*` bits; zero means valid.
    pub reasons: u16,
    pub direction: Direction,
    /// For a transit message: the interface it leaves by, when known.
    pub out_ifindex: Option<u32>,
    /// The packet's first bytes, when the observer was asked for them
    /// (`Programs::set_capture`) and could copy them.
    pub capture: Option<Capture>,
}

impl Ptb {
    pub fn is_valid(&self) -> bool {
        self.reasons == 0
    }

    /// `valid`, or `invalid`.
    pub fn verdict(&self) -> &'static str {
        if self.is_valid() { "valid" } else { "invalid" }
    }

    /// The names of the reasons, in a fixed order.
    pub fn reason_names(&self) -> Vec<&'static str> {
        REASON_NAMES.iter().filter(|(bit, _)| self.reasons & bit != 0).map(|(_, name)| *name).collect()
    }
}

/// An address as the kernel's records hold it (IPv4 in the first four bytes).
pub(crate) fn addr(family: u8, raw: [u8; 16]) -> IpAddr {
    if family == 4 {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(raw))
    }
}

/// Decodes one ring-buffer record: a `PtbEvent`, or a `CapturedPtb` (the
/// event and its packet's first bytes), told apart by length. The record
/// is copied out with bytemuck (ring records are only 8-byte aligned by
/// the kernel's own layout, and a copy keeps this independent of that).
/// One ring record: the observer's PTB events, or the clamper's report of
/// a SYN a learned PMTU clamped (told apart by length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Ptb(Ptb),
    Clamp(ClampEvent),
}

pub fn decode_record(record: &[u8]) -> Result<Record, DecodeError> {
    if record.len() == size_of::<ClampEvent>() {
        let raw: ClampEvent = bytemuck::try_pod_read_unaligned(record)
            .map_err(|_| DecodeError::Size { got: record.len(), expected: size_of::<PtbEvent>() })?;
        if raw.family != 4 && raw.family != 6 {
            return Err(DecodeError::Family(raw.family));
        }
        return Ok(Record::Clamp(raw));
    }
    decode(record).map(Record::Ptb)
}

pub fn decode(record: &[u8]) -> Result<Ptb, DecodeError> {
    if record.len() == size_of::<CapturedPtb>() {
        let raw: CapturedPtb = bytemuck::try_pod_read_unaligned(record).map_err(|_| DecodeError::Size {
            got: record.len(),
            expected: size_of::<PtbEvent>(),
        })?;
        let mut ptb = decode_event(&raw.event)?;
        ptb.capture = decode_capture(&raw)?;
        return Ok(ptb);
    }
    let raw: PtbEvent = bytemuck::try_pod_read_unaligned(record).map_err(|_| DecodeError::Size {
        got: record.len(),
        expected: size_of::<PtbEvent>(),
    })?;
    decode_event(&raw)
}

pub fn decode_event(raw: &PtbEvent) -> Result<Ptb, DecodeError> {
    if raw.family != 4 && raw.family != 6 {
        return Err(DecodeError::Family(raw.family));
    }
    let hook = match raw.hook {
        HOOK_XDP => Hook::Xdp,
        HOOK_TC_INGRESS => Hook::TcIngress,
        HOOK_TC_EGRESS => Hook::TcEgress,
        other => return Err(DecodeError::Hook(other)),
    };
    Ok(Ptb {
        ts_ns: raw.ts_ns,
        ifindex: raw.ifindex,
        hook,
        family: raw.family,
        reporter: addr(raw.family, raw.reporter),
        to: addr(raw.family, raw.to),
        mtu: raw.mtu,
        mtu_estimated: raw.flags & FLAG_MTU_ESTIMATED != 0,
        orig_src: addr(raw.family, raw.orig_src),
        orig_dst: addr(raw.family, raw.orig_dst),
        proto: raw.proto,
        sport: raw.sport(),
        dport: raw.dport(),
        quoted_len: raw.quoted_len,
        reasons: raw.reasons,
        direction: match raw.direction {
            DIR_RECEIVED => Direction::Received,
            DIR_TRANSIT => Direction::Transit,
            DIR_SENT => Direction::Sent,
            _ => Direction::Unknown,
        },
        out_ifindex: (raw.out_ifindex != 0).then_some(raw.out_ifindex),
        capture: None,
    })
}

/// The captured bytes of a record; `None` if the kernel could not copy
/// them (`cap_len` 0).
fn decode_capture(raw: &CapturedPtb) -> Result<Option<Capture>, DecodeError> {
    let link = match raw.link {
        CAPTURE_LINK_ETHERNET => CaptureLink::Ethernet,
        CAPTURE_LINK_L3 => CaptureLink::L3,
        other => return Err(DecodeError::Link(other)),
    };
    let len = usize::from(raw.cap_len);
    if len > CAPTURE_BYTES || u32::from(raw.cap_len) > raw.pkt_len {
        return Err(DecodeError::Capture { cap_len: raw.cap_len, pkt_len: raw.pkt_len });
    }
    if len == 0 {
        return Ok(None);
    }
    Ok(Some(Capture { link, orig_len: raw.pkt_len, data: raw.data[..len].to_vec() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmtu_common::event::FLAG_L4_PRESENT;

    fn raw_v4() -> PtbEvent {
        let mut ev = PtbEvent::zeroed();
        ev.family = 4;
        ev.hook = HOOK_TC_EGRESS;
        ev.mtu = 1370;
        ev.reporter[..4].copy_from_slice(&[192, 168, 5, 2]);
        ev.orig_dst[..4].copy_from_slice(&[192, 168, 7, 2]);
        ev.proto = 17;
        ev.flags = FLAG_L4_PRESENT;
        ev.l4_head = [0x30, 0x39, 0x00, 0x35, 0, 0, 0, 0];
        ev
    }

    #[test]
    fn decodes_a_record_from_its_bytes() {
        let raw = raw_v4();
        let ptb = decode(bytemuck::bytes_of(&raw)).unwrap();
        assert_eq!(ptb.reporter, "192.168.5.2".parse::<IpAddr>().unwrap());
        assert_eq!(ptb.orig_dst, "192.168.7.2".parse::<IpAddr>().unwrap());
        assert_eq!(ptb.hook, Hook::TcEgress);
        assert_eq!((ptb.sport, ptb.dport), (Some(12345), Some(53)));
        assert!(!ptb.mtu_estimated);
    }

    #[test]
    fn icmp_quotes_have_no_ports() {
        let mut raw = raw_v4();
        raw.proto = 1;
        let ptb = decode_event(&raw).unwrap();
        assert_eq!((ptb.sport, ptb.dport), (None, None));
    }

    #[test]
    fn reasons_name_the_bits() {
        use pmtu_common::validate::{REASON_NOT_SMALLER, REASON_UNKNOWN_FLOW};
        let mut raw = raw_v4();
        assert_eq!(decode_event(&raw).unwrap().verdict(), "valid");
        raw.reasons = REASON_UNKNOWN_FLOW | REASON_NOT_SMALLER;
        let ptb = decode_event(&raw).unwrap();
        assert_eq!(ptb.verdict(), "invalid");
        assert_eq!(ptb.reason_names(), ["not-smaller", "unknown-flow"]);
    }

    fn captured(raw: PtbEvent, link: u8, pkt_len: u32, cap_len: u16) -> CapturedPtb {
        let mut data = [0u8; CAPTURE_BYTES];
        for (i, b) in data.iter_mut().enumerate() {
            *b = i as u8;
        }
        CapturedPtb { event: raw, pkt_len, cap_len, link, _pad: 0, data }
    }

    #[test]
    fn a_captured_record_carries_its_packet() {
        let rec = captured(raw_v4(), CAPTURE_LINK_ETHERNET, 590, 256);
        let ptb = decode(bytemuck::bytes_of(&rec)).unwrap();
        let cap = ptb.capture.as_ref().unwrap();
        assert_eq!((cap.link, cap.orig_len, cap.data.len()), (CaptureLink::Ethernet, 590, 256));
        assert_eq!(cap.data[..4], [0, 1, 2, 3]);
        // Everything else as from the bare event.
        assert_eq!(Ptb { capture: None, ..ptb }, decode(bytemuck::bytes_of(&raw_v4())).unwrap());

        let rec = captured(raw_v4(), CAPTURE_LINK_L3, 96, 96);
        let cap = decode(bytemuck::bytes_of(&rec)).unwrap().capture.unwrap();
        assert_eq!((cap.link, cap.data.len()), (CaptureLink::L3, 96));
        // A copy that failed: the event without a capture.
        let rec = captured(raw_v4(), CAPTURE_LINK_L3, 96, 0);
        assert_eq!(decode(bytemuck::bytes_of(&rec)).unwrap().capture, None);
    }

    #[test]
    fn rejects_impossible_captures() {
        let rec = captured(raw_v4(), 7, 96, 96);
        assert_eq!(decode(bytemuck::bytes_of(&rec)), Err(DecodeError::Link(7)));
        let rec = captured(raw_v4(), CAPTURE_LINK_L3, 96, 97);
        assert_eq!(decode(bytemuck::bytes_of(&rec)), Err(DecodeError::Capture { cap_len: 97, pkt_len: 96 }));
        let rec = captured(raw_v4(), CAPTURE_LINK_L3, 9000, 257);
        assert_eq!(decode(bytemuck::bytes_of(&rec)), Err(DecodeError::Capture { cap_len: 257, pkt_len: 9000 }));
        let rec = captured(raw_v4(), CAPTURE_LINK_L3, 96, 96);
        let bytes = bytemuck::bytes_of(&rec);
        assert_eq!(decode(&bytes[..367]), Err(DecodeError::Size { got: 367, expected: 104 }));
    }

    #[test]
    fn clamp_records_are_told_apart_by_length() {
        let mut ev = ClampEvent::zeroed();
        ev.family = 6;
        ev.mss_to = 1290;
        assert_eq!(decode_record(bytemuck::bytes_of(&ev)), Ok(Record::Clamp(ev)));
        ev.family = 0;
        assert_eq!(decode_record(bytemuck::bytes_of(&ev)), Err(DecodeError::Family(0)));
        let raw = raw_v4();
        assert!(matches!(decode_record(bytemuck::bytes_of(&raw)), Ok(Record::Ptb(_))));
    }

    #[test]
    fn rejects_short_records_and_bad_fields() {
        let raw = raw_v4();
        let bytes = bytemuck::bytes_of(&raw);
        assert_eq!(
            decode(&bytes[..103]),
            Err(DecodeError::Size { got: 103, expected: 104 })
        );
        let mut bad = raw;
        bad.family = 5;
        assert_eq!(decode_event(&bad), Err(DecodeError::Family(5)));
        let mut bad = raw;
        bad.hook = 9;
        assert_eq!(decode_event(&bad), Err(DecodeError::Hook(9)));
    }
}
