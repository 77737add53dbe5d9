//! Internet checksums (RFC 1071) read through the one [`Packet`] accessor,
//! so the kernel verifies a PTB's checksums as icmp_rcv() / icmpv6_rcv()
//! and ip_rcv_core() do before trusting it, with code the host tests too.

use crate::parse::{IPPROTO_ICMPV6, Ip, Packet};

/// Bytes summed per read: a block keeps the number of reads (helper calls
/// in the kernel) small and the loop short for the verifier, and one
/// buffer of this size is all the stack it takes (the BPF call chain has
/// 512 bytes in all).
const BLOCK: usize = 32;
/// The longest ICMP message summed: RFC 4443 §2.4 (c) caps an ICMPv6 error
/// at the minimum MTU (1280), RFC 1812 §4.3.2.3 an ICMPv4 error at 576; a
/// router may send more, up to a 1500-byte Ethernet MTU. Longer messages
/// are not verified (and are reported as such by the caller).
pub const MAX_SUMMED: usize = 1536;

/// Adds 16-bit big-endian words of `bytes` (even length) to `sum`.
#[inline(always)]
fn add_words<const N: usize>(mut sum: u32, bytes: &[u8; N]) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    // Fold after every block so 32 bits never overflow.
    (sum & 0xffff) + (sum >> 16)
}

/// Folds a 32-bit one's-complement accumulator to 16 bits.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The one's-complement sum of `len` bytes at `off` (an odd last byte
/// padded with zero), or `None` if the packet is shorter or `len` exceeds
/// [`MAX_SUMMED`].
#[inline(always)]
pub fn sum_range<P: Packet>(pkt: &P, off: usize, len: usize) -> Option<u32> {
    if len > MAX_SUMMED {
        return None;
    }
    let mut sum = 0u32;
    let mut done = 0usize;
    let mut block = [0u8; BLOCK];
    // Bounded by MAX_SUMMED / BLOCK trips for the verifier.
    let mut trips = 0;
    while trips < MAX_SUMMED / BLOCK && done + BLOCK <= len {
        if !pkt.read_into(off + done, &mut block) {
            return None;
        }
        sum = add_words(sum, &block);
        done += BLOCK;
        trips += 1;
    }
    // The tail, in constant-size pieces (each a multiple of 2 keeps the
    // words aligned to the start), read into the same buffer.
    macro_rules! piece {
        ($n:literal) => {
            if len - done >= $n {
                let b = block.first_chunk_mut::<$n>()?;
                if !pkt.read_into(off + done, b) {
                    return None;
                }
                sum = add_words(sum, b);
                done += $n;
            }
        };
    }
    piece!(16);
    piece!(8);
    piece!(4);
    piece!(2);
    if len - done == 1 {
        let [b] = pkt.read::<1>(off + done)?;
        sum += (b as u32) << 8;
    }
    Some(sum)
}

/// Whether the IPv4 header at `ip.l3` (IHL from the packet) sums to
/// 0xffff, as ip_rcv_core() requires (ip_fast_csum).
#[inline(always)]
pub fn ipv4_header_ok<P: Packet>(pkt: &P, ip: &Ip) -> bool {
    match sum_range(pkt, ip.l3, ip.l4 - ip.l3) {
        Some(sum) => fold(sum) == 0xffff,
        None => false,
    }
}

/// Whether the ICMP (IPv4) or ICMPv6 message from `ip.l4` to the end of
/// the datagram checksums, with the RFC 4443 §2.3 pseudo-header for
/// ICMPv6. `None`: too long to verify here (over [`MAX_SUMMED`] bytes).
#[inline(always)]
pub fn icmp_ok<P: Packet>(pkt: &P, ip: &Ip) -> Option<bool> {
    let len = ip.ip_end - ip.l4;
    let mut sum = sum_range(pkt, ip.l4, len)?;
    if ip.proto == IPPROTO_ICMPV6 {
        // Source and destination: 32 bytes from offset 8 of the header.
        sum += sum_range(pkt, ip.l3 + 8, 32)?;
        sum += (len >> 16) as u32 + (len & 0xffff) as u32 + IPPROTO_ICMPV6 as u32;
    }
    Some(fold(sum) == 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::SlicePacket;

    fn naive(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for c in data.chunks(2) {
            sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        }
        fold(sum)
    }

    #[test]
    fn sums_match_a_naive_sum_at_every_length() {
        let data: std::vec::Vec<u8> = (0..1600u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..=MAX_SUMMED {
            let got = sum_range(&SlicePacket(&data), 5, len).map(fold);
            assert_eq!(got, Some(naive(&data[5..5 + len])), "len {len}");
        }
        assert_eq!(sum_range(&SlicePacket(&data), 0, MAX_SUMMED + 1), None);
        assert_eq!(sum_range(&SlicePacket(&data[..100]), 0, 101), None);
    }
}
