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

/// Walks the `len` bytes of TCP options starting at `start` in the frame.
/// Stops at End-of-Option-List: what follows it is padding.
///
/// Unlike xt_TCPMSS, which steps one byte over a zero length and skips an
/// MSS option of the wrong length, pmtu calls both malformed and leaves the
/// segment alone: a receiver's tcp_parse_options() gives up on them too.
/// Every MSS option is reported, not just the first, because Linux honours
/// the last one it parses.
///
/// It reads the packet option by option through [`Packet`] rather than
/// indexing a copy: an offset that only reaches a load helper stays
/// imprecise to the verifier, so its state pruning keeps the walk cheap
/// (indexing a stack copy, whose index must be exact, cost 650k verified
/// instructions).
#[inline(always)]
pub fn scan_options<P: Packet>(pkt: &P, start: usize, len: usize) -> OptionScan {
    let mut scan = OptionScan::default();
    let len = if len > MAX_OPTIONS_LEN { MAX_OPTIONS_LEN } else { len };
    let mut i = 0usize;
    // Every trip moves `i` forward by at least one byte (a NOP is an option
    // of length 1, any other is at least 2), so `i < len <= 40` bounds the
    // loop. No separate trip counter: the verifier must keep states with
    // different counter values apart, and one here made it walk the options
    // of every path separately (over its 1M-instruction limit).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::SlicePacket;

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

    #[test]
    fn a_length_byte_beyond_the_options_is_not_read_as_one() {
        // The option kind is the last byte of the header; the byte after it
        // (payload) must not be taken for its length.
        let mut frame = [0u8; 20].to_vec();
        frame.extend_from_slice(&[1, 1, 1, 8, 2, 0]);
        assert!(scan_options(&SlicePacket(&frame), 20, 4).malformed);
    }
}
