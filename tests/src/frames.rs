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
        while opts.len() % 4 != 0 {
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
