//! The one packet parser: link layer (Ethernet with VLAN tags, or none on
//! L3 devices) → IPv4/IPv6 (+ extension headers) → ICMP Packet-Too-Big →
//! the quoted packet.
//!
//! It is generic over [`Packet`], the single bounds-checked accessor through
//! which every byte is read: in the kernel that is `bpf_xdp_load_bytes` /
//! `bpf_skb_load_bytes`, on the host a byte slice. Every read is also limited to
//! the IP datagram's own length, so Ethernet padding or trailing junk is never
//! taken for header bytes.

use crate::{
    event::{FLAG_EXT_LIMIT, FLAG_L4_FULL, FLAG_L4_PRESENT, FLAG_QUOTED_FRAGMENT, PtbEvent},
    flow::FlowKey,
};

/// Bounds-checked access to packet bytes.
pub trait Packet {
    /// The frame's length in bytes.
    fn len(&self) -> usize;

    /// True for a frame of no bytes.
    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the `N` bytes at `offset` into `dst`; `false` (and `dst` in an
    /// unspecified state) if the packet ends before them.
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool;

    /// The `N` bytes at `offset`, or `None` if the packet ends before them.
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        self.read_into(offset, &mut out).then_some(out)
    }

    /// True for a GSO super-packet (an skb with `gso_size` set). Only then
    /// may an IP length field of 0 mean "the whole frame" (BIG TCP), as
    /// Linux's iph_totlen() and ipv6_payload_len() read it; anywhere else a
    /// zero length is a malformed header.
    #[inline(always)]
    fn is_gso(&self) -> bool {
        false
    }
}

/// How a frame starts: the link-layer layout of the interface it is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Ethernet II, with up to [`MAX_VLAN_TAGS`] 802.1Q/802.1ad tags (also
    /// loopback, whose header is Ethernet-shaped).
    Ethernet,
    /// No link-layer header (tun, WireGuard, PPP, IP-in-IP, GRE, SIT,
    /// ip6tnl): the frame is the IP packet, and the EtherType is what the
    /// kernel put in `skb->protocol`.
    L3 { ethertype: u16 },
}

/// A packet held in memory (host tests, fuzzing, userspace decoding).
pub struct SlicePacket<'a>(pub &'a [u8]);

impl Packet for SlicePacket<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len()
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        let Some(end) = offset.checked_add(N) else {
            return false;
        };
        match self.0.get(offset..end) {
            Some(bytes) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// 802.1Q and 802.1ad tags accepted before the EtherType (QinQ).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up. RFC 8200 §4.1 recommends
/// at most one of each kind (destination options twice); six covers every
/// conforming chain of the kinds walked here.
pub const MAX_EXT_HEADERS: usize = 6;

/// Where an L3 packet starts in the frame, after Ethernet and VLAN tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L3 {
    pub ethertype: u16,
    pub offset: usize,
}

/// What the parser made of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    NotIp,
    /// IP, but not a Packet-Too-Big.
    NotPtb,
    /// A PTB; the event was filled in (family 4 or 6).
    Ptb,
    /// A non-first fragment: no header to look at.
    FragmentSkipped,
    /// Truncated or self-contradicting headers.
    Malformed,
}

/// Ethernet and up to [`MAX_VLAN_TAGS`] VLAN tags; nothing on an L3 link.
#[inline(always)]
pub fn parse_l2<P: Packet>(pkt: &P, link: Link) -> Result<L3, Outcome> {
    if let Link::L3 { ethertype } = link {
        return Ok(L3 { ethertype, offset: 0 });
    }
    let mut ethertype = be16(pkt.read::<2>(12).ok_or(Outcome::Malformed)?);
    let mut offset = 14;
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS && (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
        // A tag is TCI (2 bytes) then the next EtherType.
        let tag = pkt.read::<4>(offset).ok_or(Outcome::Malformed)?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        offset += 4;
        tags += 1;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        // More tags than we walk: we cannot see the payload, so say so.
        return Err(Outcome::Malformed);
    }
    Ok(L3 { ethertype, offset })
}

/// Parses a whole frame; on [`Outcome::Ptb`] `ev` holds everything but the
/// context fields (`ts_ns`, `ifindex`, `hook`) that only the program knows.
#[inline(always)]
pub fn parse_ptb<P: Packet>(pkt: &P, link: Link, ev: &mut PtbEvent) -> Outcome {
    match parse_ip(pkt, link) {
        Ok(ip) => parse_ptb_at(pkt, &ip, ev),
        Err(no) => no.into(),
    }
}

/// The PTB parser from an IP header [`parse_ip`] already walked: programs
/// that also look at other traffic parse L2 and L3 once.
#[inline(always)]
pub fn parse_ptb_at<P: Packet>(pkt: &P, ip: &Ip, ev: &mut PtbEvent) -> Outcome {
    match (ip.family, ip.proto) {
        (4, IPPROTO_ICMP) => parse_v4(pkt, ip, ev),
        (6, IPPROTO_ICMPV6) => parse_v6(pkt, ip, ev),
        _ => Outcome::NotPtb,
    }
}

/// Reads `N` bytes at `offset`, refusing anything past `end` (the end of the
/// enclosing IP datagram) even if the frame itself is longer.
#[inline(always)]
fn within<P: Packet, const N: usize>(pkt: &P, offset: usize, end: usize) -> Option<[u8; N]> {
    if offset + N > end {
        return None;
    }
    pkt.read::<N>(offset)
}

/// [`within`], straight into the caller's buffer (addresses go directly into
/// the event: the BPF stack is 512 bytes).
#[inline(always)]
fn within_into<P: Packet, const N: usize>(
    pkt: &P,
    offset: usize,
    end: usize,
    dst: &mut [u8; N],
) -> bool {
    offset + N <= end && pkt.read_into(offset, dst)
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn parse_v4<P: Packet>(pkt: &P, ip: &Ip, ev: &mut PtbEvent) -> Outcome {
    let end = ip.ip_end;
    let Some(icmp) = within::<P, 8>(pkt, ip.l4, end) else {
        return Outcome::Malformed;
    };
    // RFC 792 Destination Unreachable, code 4: fragmentation needed and DF set.
    if icmp[0] != 3 || icmp[1] != 4 {
        return Outcome::NotPtb;
    }
    // RFC 1191 §4: Next-Hop MTU is the low-order 16 bits of the second word.
    let mtu = be16([icmp[6], icmp[7]]);

    let q = ip.l4 + 8;
    let Some(quoted) = within::<P, 10>(pkt, q, end) else {
        return Outcome::Malformed;
    };
    let qihl = ((quoted[0] & 0x0f) as usize) * 4;
    if quoted[0] >> 4 != 4 || qihl < 20 {
        return Outcome::Malformed;
    }
    *ev = PtbEvent::zeroed();
    let quote = Ip { family: 4, proto: quoted[9], l3: q, l4: q + qihl, ip_end: end, ..Ip::default() };
    if !read_addrs(pkt, ip, &mut ev.reporter, &mut ev.to)
        || !read_addrs(pkt, &quote, &mut ev.orig_src, &mut ev.orig_dst)
    {
        return Outcome::Malformed;
    }
    let quoted_len = be16([quoted[2], quoted[3]]);
    ev.family = 4;
    ev.proto = quoted[9];
    ev.quoted_len = quoted_len as u32;
    // MTU 0 (a pre-RFC 1191 router) stays 0: Linux no longer guesses a
    // plateau (since 2012) but locks the route at min_pmtu, which the
    // table does (__ip_rt_update_pmtu).
    ev.mtu = mtu as u32;
    // RFC 792: the quote carries at least 8 bytes of the datagram's data
    // (the L4 header's start, if the quoted packet was a first fragment).
    if be16([quoted[6], quoted[7]]) & 0x1fff == 0 {
        read_l4_head(pkt, quote.l4, end, ev);
    } else {
        ev.flags |= FLAG_QUOTED_FRAGMENT;
    }
    Outcome::Ptb
}

/// The quoted L4 header's first 8 bytes, or at least its first 4.
#[inline(always)]
fn read_l4_head<P: Packet>(pkt: &P, at: usize, end: usize, ev: &mut PtbEvent) {
    if within_into(pkt, at, end, &mut ev.l4_head) {
        ev.flags |= FLAG_L4_PRESENT | FLAG_L4_FULL;
        return;
    }
    let mut head = [0u8; 4];
    if within_into(pkt, at, end, &mut head) {
        ev.l4_head[..4].copy_from_slice(&head);
        ev.flags |= FLAG_L4_PRESENT;
    }
}

/// Result of walking an IPv6 extension-header chain.
enum Walk {
    /// The upper-layer protocol and where its header starts; whether a
    /// fragment header (of a first fragment) and an AH were passed.
    Upper { proto: u8, offset: usize, fragment: bool, ah: bool },
    /// A fragment header with a non-zero offset: no upper-layer header here.
    LaterFragment { proto: u8 },
    /// Chain truncated; `proto` is the last next-header value read.
    Unfinished { proto: u8 },
    /// More extension headers than [`MAX_EXT_HEADERS`].
    Limit { proto: u8 },
}

/// Walks hop-by-hop, routing, fragment, AH and destination-options headers
/// (RFC 8200 §4, RFC 4302 §2.2 for AH's length unit).
#[inline(always)]
fn walk_ext<P: Packet>(pkt: &P, mut nh: u8, mut off: usize, end: usize) -> Walk {
    let mut i = 0;
    let mut fragment = false;
    let mut ah = false;
    while i < MAX_EXT_HEADERS {
        match nh {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Some(h) = within::<P, 2>(pkt, off, end) else {
                    return Walk::Unfinished { proto: nh };
                };
                nh = h[0];
                off += (h[1] as usize + 1) * 8;
            }
            IPPROTO_AH => {
                let Some(h) = within::<P, 2>(pkt, off, end) else {
                    return Walk::Unfinished { proto: nh };
                };
                nh = h[0];
                off += (h[1] as usize + 2) * 4;
                ah = true;
            }
            IPPROTO_FRAGMENT => {
                let Some(h) = within::<P, 8>(pkt, off, end) else {
                    return Walk::Unfinished { proto: nh };
                };
                nh = h[0];
                if be16([h[2], h[3]]) >> 3 != 0 {
                    return Walk::LaterFragment { proto: nh };
                }
                // A first fragment (offset 0, M set) or an atomic one (RFC
                // 6946): either way the datagram is reassembled from what
                // this header describes, so it must not change length.
                fragment = true;
                off += 8;
            }
            _ => return Walk::Upper { proto: nh, offset: off, fragment, ah },
        }
        i += 1;
    }
    match nh {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT => {
            Walk::Limit { proto: nh }
        }
        _ => Walk::Upper { proto: nh, offset: off, fragment, ah },
    }
}

#[inline(always)]
fn parse_v6<P: Packet>(pkt: &P, ip: &Ip, ev: &mut PtbEvent) -> Outcome {
    let end = ip.ip_end;
    let Some(icmp) = within::<P, 8>(pkt, ip.l4, end) else {
        return Outcome::Malformed;
    };
    // RFC 4443 §3.2: Packet Too Big is type 2; the MTU is the whole second
    // word. The code is set to 0 by the sender and ignored by the receiver
    // (as icmpv6_rcv() does), so any code is a PTB.
    if icmp[0] != 2 {
        return Outcome::NotPtb;
    }
    let mtu = u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]);

    let q = ip.l4 + 8;
    let Some(quoted) = within::<P, 8>(pkt, q, end) else {
        return Outcome::Malformed;
    };
    if quoted[0] >> 4 != 6 {
        return Outcome::Malformed;
    }
    *ev = PtbEvent::zeroed();
    let quote = Ip { family: 6, proto: quoted[6], l3: q, l4: q + 40, ip_end: end, ..Ip::default() };
    if !read_addrs(pkt, ip, &mut ev.reporter, &mut ev.to)
        || !read_addrs(pkt, &quote, &mut ev.orig_src, &mut ev.orig_dst)
    {
        return Outcome::Malformed;
    }
    ev.family = 6;
    ev.quoted_len = be16([quoted[4], quoted[5]]) as u32 + 40;
    ev.mtu = mtu;
    // The quote is cut at 1280 bytes (RFC 4443 §2.4 (c)), so the quoted chain
    // may end early: then report the last protocol seen and no ports.
    match walk_ext(pkt, quoted[6], quote.l4, end) {
        Walk::Upper { proto, offset, .. } => {
            ev.proto = proto;
            read_l4_head(pkt, offset, end, ev);
        }
        Walk::LaterFragment { proto } => {
            ev.proto = proto;
            ev.flags |= FLAG_QUOTED_FRAGMENT;
        }
        Walk::Limit { proto } => {
            ev.proto = proto;
            ev.flags |= FLAG_EXT_LIMIT;
        }
        Walk::Unfinished { proto } => ev.proto = proto,
    }
    Outcome::Ptb
}

/// A TCP segment with SYN set and RST clear: a SYN or a SYN-ACK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Syn {
    /// 4 or 6.
    pub family: u8,
    /// TCP flags byte (byte 13 of the header).
    pub flags: u8,
    /// TCP header bytes 12-13 as they are: Data Offset, the reserved and
    /// AE (AccECN, RFC 9768) bits, and the flags. An inserted option
    /// changes only Data Offset and keeps the rest (read-modify-write, as
    /// xt_TCPMSS does).
    pub word6: [u8; 2],
    /// Part of a fragmented datagram (IPv4 MF, or an IPv6 fragment header).
    pub fragment: bool,
    /// IPv6 with an Authentication Header before TCP.
    pub ah: bool,
    /// The IP length field was 0 in a GSO super-packet (BIG TCP): the
    /// datagram runs to the end of the frame, and the field must stay 0.
    pub len_from_frame: bool,
    /// Offsets in the frame of the IP header, the TCP header, and the end of
    /// the IP datagram (by its own length field, not the frame's).
    pub l3: usize,
    pub l4: usize,
    pub ip_end: usize,
    /// TCP header length from Data Offset, 20..=60.
    pub tcp_hdr_len: usize,
    /// IPv4 addresses in the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

impl Syn {
    pub fn payload_len(&self) -> usize {
        self.ip_end - self.l4 - self.tcp_hdr_len
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynOutcome {
    NotIp,
    /// IP, but not a TCP segment with SYN set and RST clear.
    NotSyn,
    Syn,
    /// A non-first fragment: no TCP header in it.
    FragmentSkipped,
    Malformed,
}

pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_RST: u8 = 0x04;

/// Where an IP datagram's transport header is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ip {
    /// 4 or 6.
    pub family: u8,
    /// IPv4 protocol, or the IPv6 upper-layer next header.
    pub proto: u8,
    /// A first fragment: IPv4 More-Fragments, or an IPv6 fragment header
    /// with offset 0 (later fragments never get this far).
    pub fragment: bool,
    /// An IPv6 Authentication Header precedes the transport header.
    pub ah: bool,
    /// The length field was 0 in a GSO super-packet: see [`Packet::is_gso`].
    pub len_from_frame: bool,
    /// Offsets in the frame of the IP header, the transport header, and the
    /// end of the datagram (by its own length field, not the frame's).
    pub l3: usize,
    pub l4: usize,
    pub ip_end: usize,
}

/// Why a frame has no transport header to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoL4 {
    NotIp,
    /// A non-first fragment (RFC 791; RFC 8200 §4.5).
    FragmentSkipped,
    Malformed,
}

impl From<NoL4> for Outcome {
    fn from(no: NoL4) -> Self {
        match no {
            NoL4::NotIp => Outcome::NotIp,
            NoL4::FragmentSkipped => Outcome::FragmentSkipped,
            NoL4::Malformed => Outcome::Malformed,
        }
    }
}

impl From<NoL4> for SynOutcome {
    fn from(no: NoL4) -> Self {
        match no {
            NoL4::NotIp => SynOutcome::NotIp,
            NoL4::FragmentSkipped => SynOutcome::FragmentSkipped,
            NoL4::Malformed => SynOutcome::Malformed,
        }
    }
}

/// Link layer, IPv4 or IPv6 with its extension headers: where the
/// transport header starts. The one L3 walk behind the PTB parser, the
/// clamper and the flow recorder.
#[inline(always)]
pub fn parse_ip<P: Packet>(pkt: &P, link: Link) -> Result<Ip, NoL4> {
    let l3 = match parse_l2(pkt, link) {
        Ok(l3) => l3,
        Err(Outcome::Malformed) => return Err(NoL4::Malformed),
        Err(_) => return Err(NoL4::NotIp),
    };
    let off = l3.offset;
    match l3.ethertype {
        ETH_P_IP => {
            let Some(ip) = pkt.read::<10>(off) else {
                return Err(NoL4::Malformed);
            };
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            let mut total = be16([ip[2], ip[3]]) as usize;
            // iph_totlen(): BIG TCP leaves tot_len 0 in a GSO packet over 64 KiB.
            let len_from_frame = total == 0 && pkt.is_gso();
            if len_from_frame {
                total = pkt.len().saturating_sub(off);
            }
            if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || off + total > pkt.len() {
                return Err(NoL4::Malformed);
            }
            let frag = be16([ip[6], ip[7]]);
            if frag & 0x1fff != 0 {
                return Err(NoL4::FragmentSkipped);
            }
            Ok(Ip {
                family: 4,
                proto: ip[9],
                fragment: frag & 0x2000 != 0,
                ah: false,
                len_from_frame,
                l3: off,
                l4: off + ihl,
                ip_end: off + total,
            })
        }
        ETH_P_IPV6 => {
            let Some(ip) = pkt.read::<8>(off) else {
                return Err(NoL4::Malformed);
            };
            if ip[0] >> 4 != 6 {
                return Err(NoL4::Malformed);
            }
            let plen = be16([ip[4], ip[5]]) as usize;
            // ipv6_payload_len(): BIG TCP leaves payload_len 0 in a GSO
            // packet over 64 KiB (with or without a jumbo option).
            let len_from_frame = plen == 0 && pkt.is_gso();
            let end = if len_from_frame { pkt.len() } else { off + 40 + plen };
            if end > pkt.len() || end < off + 40 {
                return Err(NoL4::Malformed);
            }
            match walk_ext(pkt, ip[6], off + 40, end) {
                Walk::Upper { proto, offset, fragment, ah } => Ok(Ip {
                    family: 6,
                    proto,
                    fragment,
                    ah,
                    len_from_frame,
                    l3: off,
                    l4: offset,
                    ip_end: end,
                }),
                Walk::LaterFragment { .. } => Err(NoL4::FragmentSkipped),
                Walk::Unfinished { .. } | Walk::Limit { .. } => Err(NoL4::Malformed),
            }
        }
        _ => Err(NoL4::NotIp),
    }
}

/// Finds SYN and SYN-ACK segments for the clamper, with the same L2/L3 walk
/// as [`parse_ptb`]. Reads three small fields on the fast path (EtherType,
/// IP header, TCP flags) and the addresses only for a SYN.
#[inline(always)]
pub fn parse_syn<P: Packet>(pkt: &P, link: Link, syn: &mut Syn) -> SynOutcome {
    match parse_ip(pkt, link) {
        Ok(ip) => parse_syn_at(pkt, &ip, syn),
        Err(no) => no.into(),
    }
}

/// [`parse_syn`] from an IP header [`parse_ip`] already walked. The flags
/// are read first, so anything but a SYN leaves without a store.
#[inline(always)]
pub fn parse_syn_at<P: Packet>(pkt: &P, ip: &Ip, syn: &mut Syn) -> SynOutcome {
    if ip.proto != IPPROTO_TCP {
        return SynOutcome::NotSyn;
    }
    let Some(t) = tcp_word6(pkt, ip) else {
        return SynOutcome::Malformed;
    };
    if !is_syn(t) {
        return SynOutcome::NotSyn;
    }
    syn.family = ip.family;
    syn.fragment = ip.fragment;
    syn.ah = ip.ah;
    syn.len_from_frame = ip.len_from_frame;
    syn.l3 = ip.l3;
    syn.l4 = ip.l4;
    syn.ip_end = ip.ip_end;
    syn.flags = t[1];
    syn.word6 = t;
    syn.tcp_hdr_len = ((t[0] >> 4) as usize) * 4;
    if syn.tcp_hdr_len < 20 || syn.l4 + syn.tcp_hdr_len > syn.ip_end {
        return SynOutcome::Malformed;
    }
    syn.src = [0; 16];
    syn.dst = [0; 16];
    if !read_addrs(pkt, ip, &mut syn.src, &mut syn.dst) {
        return SynOutcome::Malformed;
    }
    SynOutcome::Syn
}

/// TCP header bytes 12-13 (Data Offset and flags) of the segment at `ip`,
/// or `None` if the datagram ends before them.
#[inline(always)]
pub fn tcp_word6<P: Packet>(pkt: &P, ip: &Ip) -> Option<[u8; 2]> {
    within::<P, 2>(pkt, ip.l4 + 12, ip.ip_end)
}

/// Whether TCP header bytes 12-13 say SYN set and RST clear.
#[inline(always)]
pub fn is_syn(word6: [u8; 2]) -> bool {
    word6[1] & (TCP_FLAG_SYN | TCP_FLAG_RST) == TCP_FLAG_SYN
}

/// Reads the addresses of the datagram at `ip` into `src` and `dst`.
#[inline(always)]
fn read_addrs<P: Packet>(pkt: &P, ip: &Ip, src: &mut [u8; 16], dst: &mut [u8; 16]) -> bool {
    if ip.family == 4 {
        let mut a = [0u8; 4];
        if !within_into(pkt, ip.l3 + 12, ip.ip_end, &mut a) {
            return false;
        }
        src[..4].copy_from_slice(&a);
        if !within_into(pkt, ip.l3 + 16, ip.ip_end, &mut a) {
            return false;
        }
        dst[..4].copy_from_slice(&a);
        true
    } else {
        within_into(pkt, ip.l3 + 8, ip.ip_end, src) && within_into(pkt, ip.l3 + 24, ip.ip_end, dst)
    }
}

/// The 16-bit pair a flow is told apart by, from the first 8 bytes of its
/// transport header: the ports, or for ICMP/ICMPv6 echo requests the
/// identifier and the type. `None` for anything else.
#[inline(always)]
pub fn flow_ports(proto: u8, head: &[u8; 8]) -> Option<(u16, u16)> {
    match proto {
        6 | 17 | 33 | 132 | 136 => Some((be16([head[0], head[1]]), be16([head[2], head[3]]))),
        // Echo request (RFC 792) / (RFC 4443 §4.1): identifier, type.
        IPPROTO_ICMP if head[0] == 8 => Some((be16([head[4], head[5]]), 8)),
        IPPROTO_ICMPV6 if head[0] == 128 => Some((be16([head[4], head[5]]), 128)),
        _ => None,
    }
}

/// A segment this host sends: its flow and, for TCP, the sequence space it
/// covers (`seq`, `seq_len` counting SYN and FIN).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub tcp: bool,
    pub seq: u32,
    pub seq_len: u32,
}

/// Reads the flow of an outgoing packet for the flow memory.
#[inline(always)]
pub fn parse_sent<P: Packet>(pkt: &P, link: Link, key: &mut FlowKey) -> Option<Sent> {
    parse_sent_at(pkt, &parse_ip(pkt, link).ok()?, key)
}

/// [`parse_sent`] from an IP header [`parse_ip`] already walked.
#[inline(always)]
pub fn parse_sent_at<P: Packet>(pkt: &P, ip: &Ip, key: &mut FlowKey) -> Option<Sent> {
    let ip = *ip;
    let head = within::<P, 8>(pkt, ip.l4, ip.ip_end)?;
    let (sport, dport) = flow_ports(ip.proto, &head)?;
    if !read_addrs(pkt, &ip, &mut key.src, &mut key.dst) {
        return None;
    }
    key.sport = sport;
    key.dport = dport;
    key.proto = ip.proto;
    key.family = ip.family;
    if ip.proto != IPPROTO_TCP {
        return Some(Sent::default());
    }
    let t = within::<P, 2>(pkt, ip.l4 + 12, ip.ip_end)?;
    let doff = ((t[0] >> 4) as usize) * 4;
    let payload = ip.ip_end.checked_sub(ip.l4 + doff)? as u32;
    // SYN and FIN each take one sequence number (RFC 9293 §3.4).
    let flags = (t[1] & 0x02 != 0) as u32 + (t[1] & 0x01 != 0) as u32;
    Some(Sent {
        tcp: true,
        seq: u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
        seq_len: payload + flags,
    })
}

/// The flow a PTB's quote names, as [`parse_sent`] recorded it.
#[inline(always)]
pub fn quoted_flow(ev: &PtbEvent) -> Option<FlowKey> {
    if ev.flags & FLAG_L4_FULL == 0 {
        return None;
    }
    let (sport, dport) = flow_ports(ev.proto, &ev.l4_head)?;
    Some(FlowKey {
        src: ev.orig_src,
        dst: ev.orig_dst,
        sport,
        dport,
        proto: ev.proto,
        family: ev.family,
        _pad: [0; 2],
    })
}
