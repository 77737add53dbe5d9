//! Hand-built frames with complete, correct checksums: the corpus every
//! parser test (host and in-kernel) runs on.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

/// RFC 1071 Internet checksum over `data` (odd length padded with zero).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet II with `tags` VLAN tags (TPIDs, outermost first).
pub fn eth(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    for (i, tpid) in tags.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI: VLAN 100, 101, ...
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 header (with `options`, padded to 4 bytes) and payload.
/// `total_len` overrides the length field (for quotes and lies).
pub struct V4<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub options: &'a [u8],
    /// Flags and fragment offset field (0x4000 = DF).
    pub frag: u16,
    pub total_len: Option<u16>,
}

impl<'a> V4<'a> {
    pub fn new(src: &str, dst: &str, proto: u8) -> Self {
        Self {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            options: &[],
            frag: 0x4000,
            total_len: None,
        }
    }

    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut opts = self.options.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(0); // EOL padding
        }
        let ihl = (20 + opts.len()) / 4;
        let total = self.total_len.unwrap_or((ihl * 4 + payload.len()) as u16);
        let mut h = vec![0x40 | ihl as u8, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34]);
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.extend_from_slice(&[64, self.proto, 0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&opts);
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }
}

/// ICMPv4 type/code with the second word `rest` and `body`, checksummed.
pub fn icmp4(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// RFC 1191 Frag-Needed: unused (2 bytes) then the Next-Hop MTU.
pub fn frag_needed(mtu: u16, quote: &[u8]) -> Vec<u8> {
    let m = mtu.to_be_bytes();
    icmp4(3, 4, [0, 0, m[0], m[1]], quote)
}

/// The start of a packet as a router quotes it: its IPv4 header, claiming
/// `len` bytes in all, then the first 8 bytes of its payload.
pub fn quote_v4(src: &str, dst: &str, proto: u8, len: u16, l4: [u8; 8]) -> Vec<u8> {
    V4 { total_len: Some(len), ..V4::new(src, dst, proto) }.build(&l4)
}

/// UDP header bytes for a quote.
pub fn udp_head(sport: u16, dport: u16) -> [u8; 8] {
    let s = sport.to_be_bytes();
    let d = dport.to_be_bytes();
    [s[0], s[1], d[0], d[1], 0x05, 0xc8, 0, 0]
}

/// ICMP echo request header bytes for a quote.
pub fn echo_head(v6: bool) -> [u8; 8] {
    [if v6 { 128 } else { 8 }, 0, 0xab, 0xcd, 0x12, 0x34, 0, 1]
}

/// An IPv6 extension header of `kind` with `len8` 8-octet units beyond the first.
pub fn ext(kind: u8, len8: u8) -> (u8, Vec<u8>) {
    (kind, vec![0u8; 8 * (len8 as usize + 1)])
}

/// A fragment header body with `offset` (in 8-octet units) and M flag.
pub fn frag_ext(offset: u16, more: bool) -> (u8, Vec<u8>) {
    let off = (offset << 3) | more as u16;
    let o = off.to_be_bytes();
    (44, vec![0, 0, o[0], o[1], 0, 0, 0x42, 0x42])
}

/// IPv6 header, extension headers (each body's byte 0 and, except for the
/// fragment header, byte 1 are filled in), then the upper-layer payload.
pub struct V6<'a> {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub exts: &'a [(u8, Vec<u8>)],
    pub proto: u8,
    pub payload_len: Option<u16>,
}

impl<'a> V6<'a> {
    pub fn new(src: &str, dst: &str, proto: u8) -> Self {
        Self { src: src.parse().unwrap(), dst: dst.parse().unwrap(), exts: &[], proto, payload_len: None }
    }

    /// The bytes after the fixed header, and the first next-header value.
    fn chain(&self, upper: &[u8]) -> (u8, Vec<u8>) {
        let mut body = Vec::new();
        for (i, (kind, ext)) in self.exts.iter().enumerate() {
            let next = self.exts.get(i + 1).map_or(self.proto, |(k, _)| *k);
            let mut e = ext.clone();
            e[0] = next;
            if *kind != 44 {
                e[1] = if *kind == 51 { (e.len() / 4 - 2) as u8 } else { (e.len() / 8 - 1) as u8 };
            }
            body.extend_from_slice(&e);
        }
        body.extend_from_slice(upper);
        (self.exts.first().map_or(self.proto, |(k, _)| *k), body)
    }

    pub fn build(&self, upper: &[u8]) -> Vec<u8> {
        let (first, body) = self.chain(upper);
        let plen = self.payload_len.unwrap_or(body.len() as u16);
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&plen.to_be_bytes());
        h.extend_from_slice(&[first, 64]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&body);
        h
    }
}

/// ICMPv6 message with the RFC 4443 §2.3 pseudo-header checksum.
pub fn icmp6(src: &str, dst: &str, ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let s: Ipv6Addr = src.parse().unwrap();
    let d: Ipv6Addr = dst.parse().unwrap();
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&s.octets());
    pseudo.extend_from_slice(&d.octets());
    pseudo.extend_from_slice(&(m.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&m);
    let c = checksum(&pseudo);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// The start of an IPv6 packet as quoted: fixed header (claiming `len` bytes
/// in all), `exts`, then 8 bytes of upper-layer header.
pub fn quote_v6(src: &str, dst: &str, exts: &[(u8, Vec<u8>)], proto: u8, len: u16, l4: [u8; 8]) -> Vec<u8> {
    V6 { exts, payload_len: Some(len - 40), ..V6::new(src, dst, proto) }.build(&l4)
}

/// A TCP segment (header, `opts` padded with EOL to 4 bytes, payload) with
/// its checksum over the IPv4 or IPv6 pseudo-header (RFC 9293 §3.1,
/// RFC 8200 §8.1).
pub fn tcp(src: &str, dst: &str, flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    tcp_with_low_bits(src, dst, 0, flags, opts, payload)
}

/// [`tcp`] with the low nibble of header byte 12 set: the AE (AccECN,
/// RFC 9768) bit is 0x01, the reserved bits 0x0e.
pub fn tcp_with_low_bits(src: &str, dst: &str, low: u8, flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut o = opts.to_vec();
    while !o.len().is_multiple_of(4) {
        o.push(0);
    }
    let doff = (20 + o.len()) / 4;
    let mut t = vec![0x9c, 0x40, 0x13, 0x89]; // 40000 -> 5001
    t.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
    t.extend_from_slice(&(if flags & 0x10 != 0 { 0x0a0b_0c0du32 } else { 0 }).to_be_bytes());
    t.extend_from_slice(&[((doff as u8) << 4) | (low & 0x0f), flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    t.extend_from_slice(&o);
    t.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    if src.contains(':') {
        let s: Ipv6Addr = src.parse().unwrap();
        let d: Ipv6Addr = dst.parse().unwrap();
        pseudo.extend_from_slice(&s.octets());
        pseudo.extend_from_slice(&d.octets());
        pseudo.extend_from_slice(&(t.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
    } else {
        let s: Ipv4Addr = src.parse().unwrap();
        let d: Ipv4Addr = dst.parse().unwrap();
        pseudo.extend_from_slice(&s.octets());
        pseudo.extend_from_slice(&d.octets());
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    }
    pseudo.extend_from_slice(&t);
    let c = checksum(&pseudo);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;
pub const SYN_ACK: u8 = SYN | ACK;

/// TCP options as Linux sends them in a SYN: MSS, SACK-permitted,
/// timestamps, NOP, window scale (20 bytes).
pub fn linux_syn_options(mss: u16) -> Vec<u8> {
    let m = mss.to_be_bytes();
    vec![2, 4, m[0], m[1], 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]
}

pub fn mss_option(mss: u16) -> Vec<u8> {
    let m = mss.to_be_bytes();
    vec![2, 4, m[0], m[1]]
}

/// What a checker independent of pmtu's parser reads back from a frame
/// built here: every checksum and length verified.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    pub mss: Vec<u16>,
    pub options: Vec<u8>,
    pub payload_len: usize,
    /// TCP header bytes 12 and 13 (Data Offset, reserved and AE bits, flags).
    pub word6: [u8; 2],
    /// Where the IP header starts in the frame.
    pub l3: usize,
}

/// Verifies an Ethernet/VLAN/IPv4-or-IPv6(+ext)/TCP frame: IP lengths match
/// the frame, the IPv4 header checksum and the TCP checksum verify.
pub fn check_tcp_frame(frame: &[u8]) -> Result<Checked, String> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([frame[off], frame[off + 1]]);
    off += 2;
    while ethertype == TPID_8021Q || ethertype == TPID_8021AD {
        ethertype = u16::from_be_bytes([frame[off + 2], frame[off + 3]]);
        off += 4;
    }
    check_tcp_ip(&frame[off..], ethertype).map(|c| Checked { l3: off, ..c })
}

/// [`check_tcp_frame`] for an IP packet with no link-layer header (as on a
/// tun device), of the family `ethertype` names. An IP length field of 0
/// (BIG TCP) means the packet runs to the end of the buffer.
pub fn check_tcp_ip(ip: &[u8], ethertype: u16) -> Result<Checked, String> {
    if ip.len() < 40 {
        return Err(format!("{} bytes is too short for IP and TCP", ip.len()));
    }
    let (tcp, pseudo) = match ethertype {
        ETH_P_IP => {
            let ihl = (ip[0] & 0xf) as usize * 4;
            let total = match u16::from_be_bytes([ip[2], ip[3]]) as usize {
                0 => ip.len(),
                n => n,
            };
            if total != ip.len() {
                return Err(format!("IPv4 total length {total}, frame has {}", ip.len()));
            }
            if checksum(&ip[..ihl]) != 0 {
                return Err("IPv4 header checksum".into());
            }
            let tcp = &ip[ihl..];
            let mut p = ip[12..20].to_vec();
            p.extend_from_slice(&[0, 6]);
            p.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            (tcp, p)
        }
        ETH_P_IPV6 => {
            let plen = match u16::from_be_bytes([ip[4], ip[5]]) as usize {
                0 => ip.len() - 40,
                n => n,
            };
            if plen + 40 != ip.len() {
                return Err(format!("IPv6 payload length {plen}, frame has {}", ip.len() - 40));
            }
            let mut nh = ip[6];
            let mut at = 40;
            while nh != 6 {
                if at + 2 > ip.len() {
                    return Err("IPv6 extension headers run past the packet".into());
                }
                let len = match nh {
                    51 => (ip[at + 1] as usize + 2) * 4, // AH counts 4-octet units
                    44 => 8,
                    _ => (ip[at + 1] as usize + 1) * 8,
                };
                nh = ip[at];
                at += len;
            }
            let tcp = &ip[at..];
            let mut p = ip[8..40].to_vec();
            p.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 6]);
            (tcp, p)
        }
        other => return Err(format!("EtherType {other:#x}")),
    };
    let mut sum = pseudo;
    sum.extend_from_slice(tcp);
    if checksum(&sum) != 0 {
        return Err("TCP checksum does not verify".into());
    }
    let doff = (tcp[12] >> 4) as usize * 4;
    if doff < 20 || doff > tcp.len() {
        return Err(format!("TCP data offset {doff} in a {}-byte segment", tcp.len()));
    }
    let options = tcp[20..doff].to_vec();
    let mut mss = Vec::new();
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = options.get(i + 1).copied().unwrap_or(0) as usize;
                if kind == 2 && len == 4 && i + 4 <= options.len() {
                    mss.push(u16::from_be_bytes([options[i + 2], options[i + 3]]));
                }
                i += len.max(1);
            }
        }
    }
    Ok(Checked { mss, options, payload_len: tcp.len() - doff, word6: [tcp[12], tcp[13]], l3: 0 })
}
