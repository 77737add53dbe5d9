//! The ring-buffer record for one Packet-Too-Big seen on the wire.

/// Which program saw the packet.
pub const HOOK_XDP: u8 = 0;
pub const HOOK_TC_INGRESS: u8 = 1;
pub const HOOK_TC_EGRESS: u8 = 2;

/// Which way the message went (`direction`), as the kernel routes it.
/// Addressed to this host (a local address): ICMP this host acts on.
pub const DIR_RECEIVED: u8 = 1;
/// Forwarded through this host: arriving on `ifindex`, leaving on
/// `out_ifindex` (0 if the way out is not known).
pub const DIR_TRANSIT: u8 = 2;
/// Sent by this host (its own icmp_send / icmp6_send).
pub const DIR_SENT: u8 = 3;

/// `flags` bits.
/// No longer set: pmtu once replaced MTU 0 with an RFC 1191 §7 plateau
/// estimate; Linux locks min_pmtu instead, and so does the table now.
pub const FLAG_MTU_ESTIMATED: u8 = 1 << 0;
/// `l4_head` holds at least the first four bytes of the quoted L4 header.
pub const FLAG_L4_PRESENT: u8 = 1 << 1;
/// `l4_head` holds all eight bytes RFC 792 / RFC 4443 §3.2 promise.
pub const FLAG_L4_FULL: u8 = 1 << 2;
/// The quoted packet is a non-first fragment (no transport header in it).
pub const FLAG_QUOTED_FRAGMENT: u8 = 1 << 3;
/// The quoted IPv6 extension headers outlast parse::MAX_EXT_HEADERS.
pub const FLAG_EXT_LIMIT: u8 = 1 << 4;

/// One ICMPv4 Frag-Needed or ICMPv6 Packet-Too-Big.
///
/// Addresses are 16 bytes for both families; IPv4 addresses occupy the first
/// four bytes in network order and the rest is zero. `l4_head` keeps the raw
/// first eight bytes of the quoted transport header: ports and sequence
/// number for TCP, ports for UDP, SCTP, DCCP and UDP-Lite, type, code,
/// checksum and echo identifier for ICMP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtbEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the packet was seen.
    pub ts_ns: u64,
    pub ifindex: u32,
    /// Next-hop MTU from the ICMP message, as sent (0 included).
    pub mtu: u32,
    /// Total length of the quoted packet (IPv6: payload length + 40).
    pub quoted_len: u32,
    pub hook: u8,
    /// 4 or 6.
    pub family: u8,
    /// Protocol (IPv4) or final next header (IPv6) of the quoted packet.
    pub proto: u8,
    pub flags: u8,
    /// First eight bytes of the quoted L4 header, as on the wire.
    pub l4_head: [u8; 8],
    /// Why the message is not to be trusted: `validate::REASON_*` bits;
    /// zero means valid.
    pub reasons: u16,
    /// `DIR_*`.
    pub direction: u8,
    pub _pad: u8,
    /// For `DIR_TRANSIT`: the interface the message leaves by.
    pub out_ifindex: u32,
    /// Outer source: the router that reported the MTU.
    pub reporter: [u8; 16],
    /// Outer destination: who the report is addressed to.
    pub to: [u8; 16],
    /// Quoted packet's source and destination: the flow that was too big.
    pub orig_src: [u8; 16],
    pub orig_dst: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<PtbEvent>() == 104);
const _: () = assert!(core::mem::align_of::<PtbEvent>() == 8);

/// Bytes of the frame a [`CapturedPtb`] carries at most.
pub const CAPTURE_BYTES: usize = 256;

/// `CapturedPtb::link`: how the captured bytes start.
/// With the frame's Ethernet header (and any VLAN tags): XDP and the tc
/// programs of Ethernet-framed interfaces.
pub const CAPTURE_LINK_ETHERNET: u8 = 1;
/// With the IP header: the tc programs of interfaces without a link-layer
/// header (tun, WireGuard, PPP, IP tunnels).
pub const CAPTURE_LINK_L3: u8 = 2;

/// A [`PtbEvent`] with the first bytes of the packet it was parsed from,
/// as the hook saw it: what `pmtu trace --pcap` writes. The observer
/// submits this record instead of a bare `PtbEvent` only while capture is
/// on (the CAPTURE map), so the ring pays 376 bytes a record (with the
/// kernel's 8-byte header) for it, and 112 otherwise. Userspace tells the
/// two apart by the record's length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapturedPtb {
    pub event: PtbEvent,
    /// The frame's whole length as the hook saw it (`skb->len`, or
    /// `data_end - data` at XDP).
    pub pkt_len: u32,
    /// Bytes of `data` that hold the frame: min(`pkt_len`, CAPTURE_BYTES),
    /// 0 if the copy failed. The rest of `data` is unspecified.
    pub cap_len: u16,
    /// `CAPTURE_LINK_*`.
    pub link: u8,
    pub _pad: u8,
    /// The frame from its first byte: the Ethernet header at XDP and on
    /// Ethernet tc hooks, the IP header on L3 ones.
    pub data: [u8; CAPTURE_BYTES],
}

const _: () = assert!(core::mem::size_of::<CapturedPtb>() == 104 + 8 + CAPTURE_BYTES);
const _: () = assert!(core::mem::align_of::<CapturedPtb>() == 8);

impl PtbEvent {
    pub const fn zeroed() -> Self {
        Self {
            ts_ns: 0,
            ifindex: 0,
            mtu: 0,
            quoted_len: 0,
            hook: 0,
            family: 0,
            proto: 0,
            flags: 0,
            l4_head: [0; 8],
            reasons: 0,
            direction: 0,
            _pad: 0,
            out_ifindex: 0,
            reporter: [0; 16],
            to: [0; 16],
            orig_src: [0; 16],
            orig_dst: [0; 16],
        }
    }

    /// Source port of the quoted packet, when `l4_head` holds ports.
    pub fn sport(&self) -> Option<u16> {
        self.has_ports().then(|| u16::from_be_bytes([self.l4_head[0], self.l4_head[1]]))
    }

    pub fn dport(&self) -> Option<u16> {
        self.has_ports().then(|| u16::from_be_bytes([self.l4_head[2], self.l4_head[3]]))
    }

    fn has_ports(&self) -> bool {
        self.flags & FLAG_L4_PRESENT != 0 && proto_has_ports(self.proto)
    }
}

/// Transport protocols whose header starts with 16-bit source and destination ports.
pub const fn proto_has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 33 | 132 | 136)
}

impl PtbEvent {
    /// The quoted TCP sequence number, when the quote holds it.
    pub fn tcp_seq(&self) -> Option<u32> {
        (self.proto == 6 && self.flags & FLAG_L4_FULL != 0).then(|| {
            u32::from_be_bytes([self.l4_head[4], self.l4_head[5], self.l4_head[6], self.l4_head[7]])
        })
    }
}
