//! TCP option walking for the MSS clamper (RFC 9293 §3.1, §3.7.1).

use crate::parse::Packet;

pub const MAX_OPTIONS_LEN: usize = 40;
pub const TCPOPT_EOL: u8 = 0;
pub const TCPOPT_NOP: u8 = 1;
pub const TCPOPT_MSS: u8 = 2;
pub const TCPOLEN_MSS: u8 = 4;
/// TCP Authentication Option (RFC 5925 §2.2).
pub const TCPOPT_AO: u8 = 29;

/// MSS options remembered per segment; a third one is treated as malformed.
pub const MAX_MSS_OPTIONS: usize = 2;

/// One MSS option: where its 16-bit value is in the frame, and the value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MssOption {
    pub value_at: usize,
    pub value: u16,
}

/// What the options of one segment hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionScan {
    pub mss: [MssOption; MAX_MSS_OPTIONS],
    pub mss_count: u8,
    /// A TCP-AO option was seen: its MAC covers the options (RFC 5925
    /// §5.1), so rewriting any of them would make the segment fail
    /// authentication.
    pub ao: bool,
    /// A length of 0 or 1, an option running past the header, an MSS option
    /// whose length is not 4, or more than [`MAX_MSS_OPTIONS`] MSS options.
    pub malformed: bool,
}

/// Steps [`scan_options`] takes at most: each one moves past an option, at
/// least one byte of at most [`MAX_OPTIONS_LEN`].
pub const MAX_OPTION_STEPS: usize = MAX_OPTIONS_LEN;

/// A walk over the options of one segment between two steps: where the next
/// option starts, and what the walk has found so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionWalk {
    /// Index of the next option in the options (0 at the start).
    pub at: usize,
    pub scan: OptionScan,
}

/// Walks the `len` bytes of TCP options starting at `start` in the frame.
/// Stops at End-of-Option-List: what follows it is padding.
///
/// Unlike xt_TCPMSS, which steps one byte over a zero length and skips an
/// MSS option of the wrong length, pmtu calls both malformed and leaves the
/// segment alone: a receiver's tcp_parse_options() gives up on them too.
/// Every MSS option is reported, not just the first, because Linux honours
/// the last one it parses.
///
/// This is [`scan_step`] until it says the walk is over; the kernel's
/// clamper runs the same steps through the bpf_loop() helper instead (see
/// pmtu-ebpf/VERIFIER.md).
#[inline(always)]
pub fn scan_options<P: Packet>(pkt: &P, start: usize, len: usize) -> OptionScan {
    let mut walk = OptionWalk::default();
    for _ in 0..MAX_OPTION_STEPS {
        if !scan_step(pkt, start, len, &mut walk) {
            break;
        }
    }
    walk.scan
}

/// One step of [`scan_options`]: looks at the option at `walk.at` and
/// moves past it. `false` once the walk is over: no option left after
/// this one (or none at all), End-of-Option-List, or a malformed option
/// (which `walk.scan` then says); a step after that changes nothing and
/// says `false` again.
///
/// It reads the packet option by option through [`Packet`] rather than
/// indexing a copy: an offset that only reaches a load stays imprecise to
/// the verifier (indexing a stack copy, whose index must be exact, cost
/// 650k verified instructions).
#[inline(always)]
pub fn scan_step<P: Packet>(pkt: &P, start: usize, len: usize, walk: &mut OptionWalk) -> bool {
    let len = if len > MAX_OPTIONS_LEN { MAX_OPTIONS_LEN } else { len };
    let i = walk.at;
    if i >= len {
        return false;
    }
    let scan = &mut walk.scan;
    let Some([kind]) = pkt.read::<1>(start + i) else {
        scan.malformed = true;
        return false;
    };
    if kind == TCPOPT_EOL {
        return false;
    }
    let olen = if kind == TCPOPT_NOP {
        1
    } else {
        let olen = match pkt.read::<1>(start + i + 1) {
            Some([olen]) if i + 1 < len => olen as usize,
            _ => {
                scan.malformed = true;
                return false;
            }
        };
        if olen < 2 || i + olen > len {
            scan.malformed = true;
            return false;
        }
        if kind == TCPOPT_AO {
            scan.ao = true;
        }
        if kind == TCPOPT_MSS {
            let n = scan.mss_count as usize;
            if olen != TCPOLEN_MSS as usize || n >= MAX_MSS_OPTIONS {
                scan.malformed = true;
                return false;
            }
            let Some(v) = pkt.read::<2>(start + i + 2) else {
                scan.malformed = true;
                return false;
            };
            let opt = MssOption { value_at: start + i + 2, value: u16::from_be_bytes(v) };
            if n == 0 {
                scan.mss[0] = opt;
            } else {
                scan.mss[1] = opt;
            }
            scan.mss_count += 1;
        }
        olen
    };
    walk.at = i + olen;
    walk.at < len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::SlicePacket;
    use std::vec::Vec;

    fn scan(bytes: &[u8]) -> OptionScan {
        // Options at offset 20 of a buffer, as in a TCP header.
        let mut frame = [0u8; 20].to_vec();
        frame.extend_from_slice(bytes);
        scan_options(&SlicePacket(&frame), 20, bytes.len())
    }

    #[test]
    fn finds_mss_first_last_and_between_others() {
        let s = scan(&[2, 4, 5, 0xb4]);
        assert_eq!((s.mss_count, s.mss[0]), (1, MssOption { value_at: 22, value: 1460 }));
        // Linux's SYN layout: MSS, SACK-permitted, timestamps, NOP, window scale.
        let linux = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        let s = scan(&linux);
        assert_eq!((s.mss_count, s.mss[0].value_at, s.malformed), (1, 22, false));
        let last = [1, 1, 4, 2, 1, 3, 3, 7, 2, 4, 5, 0xb4];
        let s = scan(&last);
        assert_eq!((s.mss_count, s.mss[0].value_at, s.mss[0].value, s.malformed), (1, 30, 1460, false));
    }

    #[test]
    fn tcp_ao_is_noticed() {
        let s = scan(&[2, 4, 5, 0xb4, 29, 16, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(s.ao && !s.malformed && s.mss_count == 1);
        assert!(!scan(&[2, 4, 5, 0xb4]).ao);
    }

    #[test]
    fn stops_at_end_of_list() {
        let s = scan(&[1, 0, 2, 4, 5, 0xb4, 0, 0]);
        assert_eq!((s.mss_count, s.malformed), (0, false));
        assert_eq!(scan(&[]).mss_count, 0);
    }

    #[test]
    fn two_mss_options_are_both_reported() {
        let s = scan(&[2, 4, 5, 0xb4, 2, 4, 5, 0x78]);
        assert_eq!((s.mss_count, s.malformed), (2, false));
        assert_eq!((s.mss[0].value, s.mss[1].value, s.mss[1].value_at), (1460, 1400, 26));
        assert!(scan(&[2, 4, 5, 0xb4, 2, 4, 5, 0x78, 2, 4, 1, 0]).malformed);
    }

    #[test]
    fn malformed_layouts() {
        for bad in [
            &[3, 0, 1, 1][..],      // length 0
            &[3, 1, 1, 1],          // length 1
            &[8, 10, 0, 0],         // runs past the header
            &[1, 1, 1, 3],          // kind with no length byte
            &[2, 3, 5, 1],          // MSS of length 3
            &[2, 6, 5, 0xb4, 0, 0], // MSS of length 6
        ] {
            assert!(scan(bad).malformed, "{bad:?}");
        }
    }

    /// The walk as it was written before it was split into steps (one
    /// `while` loop): the steps must find exactly what it found.
    fn walk_in_one_loop<P: Packet>(pkt: &P, start: usize, len: usize) -> OptionScan {
        let mut scan = OptionScan::default();
        let len = if len > MAX_OPTIONS_LEN { MAX_OPTIONS_LEN } else { len };
        let mut i = 0usize;
        while i < len {
            let Some([kind]) = pkt.read::<1>(start + i) else {
                scan.malformed = true;
                break;
            };
            if kind == TCPOPT_EOL {
                break;
            }
            let olen = if kind == TCPOPT_NOP {
                1
            } else {
                let olen = match pkt.read::<1>(start + i + 1) {
                    Some([olen]) if i + 1 < len => olen as usize,
                    _ => {
                        scan.malformed = true;
                        break;
                    }
                };
                if olen < 2 || i + olen > len {
                    scan.malformed = true;
                    break;
                }
                if kind == TCPOPT_AO {
                    scan.ao = true;
                }
                if kind == TCPOPT_MSS {
                    let n = scan.mss_count as usize;
                    if olen != TCPOLEN_MSS as usize || n >= MAX_MSS_OPTIONS {
                        scan.malformed = true;
                        break;
                    }
                    let Some(v) = pkt.read::<2>(start + i + 2) else {
                        scan.malformed = true;
                        break;
                    };
                    let opt = MssOption { value_at: start + i + 2, value: u16::from_be_bytes(v) };
                    if n == 0 {
                        scan.mss[0] = opt;
                    } else {
                        scan.mss[1] = opt;
                    }
                    scan.mss_count += 1;
                }
                olen
            };
            i += olen;
        }
        scan
    }

    #[test]
    fn steps_find_what_one_loop_found() {
        // Every layout of up to 6 bytes from kinds and lengths that matter
        // (EOL, NOP, MSS, AO, other; lengths 0-5, 8), then random ones up to
        // 44 bytes (beyond 40, the clamp), each also cut short of the frame.
        let alphabet = [0u8, 1, 2, 3, 4, 5, 8, 29, 0xb4];
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for n in 0..=6u32 {
            for mut code in 0..alphabet.len().pow(n) {
                let mut bytes = Vec::new();
                for _ in 0..n {
                    bytes.push(alphabet[code % alphabet.len()]);
                    code /= alphabet.len();
                }
                cases.push(bytes);
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 45) as usize;
            let mut bytes = Vec::with_capacity(n);
            for k in 0..n {
                let r = seed.rotate_left(k as u32 * 7) as u8;
                // Mostly plausible kinds and lengths, so walks get long.
                bytes.push(match r % 8 {
                    0 => 1,
                    1 => 2,
                    2 => 4,
                    3 => 8,
                    4 => 3,
                    _ => r,
                });
            }
            cases.push(bytes);
        }
        for bytes in &cases {
            let mut frame = [0u8; 20].to_vec();
            frame.extend_from_slice(bytes);
            for len in [bytes.len(), bytes.len() + 4, bytes.len().saturating_sub(1)] {
                for cut in [frame.len(), frame.len().saturating_sub(1)] {
                    let pkt = SlicePacket(&frame[..cut]);
                    assert_eq!(scan_options(&pkt, 20, len), walk_in_one_loop(&pkt, 20, len), "{bytes:?} len {len} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn a_length_byte_beyond_the_options_is_not_read_as_one() {
        // The option kind is the last byte of the header; the byte after it
        // (payload) must not be taken for its length.
        let mut frame = [0u8; 20].to_vec();
        frame.extend_from_slice(&[1, 1, 1, 8, 2, 0]);
        assert!(scan_options(&SlicePacket(&frame), 20, 4).malformed);
    }
}
