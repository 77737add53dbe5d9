//! TCP option walking for the MSS clamper (RFC 9293 §3.1, §3.7.1).

pub const MAX_OPTIONS_LEN: usize = 40;
pub const TCPOPT_EOL: u8 = 0;
pub const TCPOPT_NOP: u8 = 1;
pub const TCPOPT_MSS: u8 = 2;
pub const TCPOLEN_MSS: u8 = 4;

/// MSS options remembered per segment; a third one is treated as malformed.
pub const MAX_MSS_OPTIONS: usize = 2;

/// What the options of one segment hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionScan {
    /// Offsets (within the options) of MSS options, `mss_count` of them.
    pub mss_at: [u8; MAX_MSS_OPTIONS],
    pub mss_count: u8,
    /// A length of 0 or 1, an option running past the header, an MSS option
    /// whose length is not 4, or more than [`MAX_MSS_OPTIONS`] MSS options.
    pub malformed: bool,
}

/// Walks the first `len` bytes of `opts` (the bytes after the fixed 20-byte
/// TCP header). Stops at End-of-Option-List: what follows it is padding.
///
/// Unlike xt_TCPMSS, which steps one byte over a zero length and skips an
/// MSS option of the wrong length, pmtu calls both malformed and leaves the
/// segment alone: a peer's parser (tcp_parse_options) gives up on them too.
/// Every MSS option is reported, not just the first, because Linux honours
/// the last one it parses.
#[inline(always)]
pub fn scan_options(opts: &[u8; MAX_OPTIONS_LEN], len: usize) -> OptionScan {
    let mut scan = OptionScan { mss_at: [0; MAX_MSS_OPTIONS], mss_count: 0, malformed: false };
    let len = if len > MAX_OPTIONS_LEN { MAX_OPTIONS_LEN } else { len };
    let mut i = 0usize;
    // Each trip consumes at least one byte, so 40 trips cover any header.
    let mut trips = 0;
    while trips < MAX_OPTIONS_LEN && i < len {
        trips += 1;
        let Some(&kind) = opts.get(i) else { break };
        if kind == TCPOPT_EOL {
            break;
        }
        if kind == TCPOPT_NOP {
            i += 1;
            continue;
        }
        let Some(&olen) = opts.get(i + 1) else {
            scan.malformed = true;
            break;
        };
        let olen = olen as usize;
        if i + 1 >= len || olen < 2 || i + olen > len {
            scan.malformed = true;
            break;
        }
        if kind == TCPOPT_MSS {
            if olen != TCPOLEN_MSS as usize || scan.mss_count as usize >= MAX_MSS_OPTIONS {
                scan.malformed = true;
                break;
            }
            scan.mss_at[scan.mss_count as usize] = i as u8;
            scan.mss_count += 1;
        }
        i += olen;
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(bytes: &[u8]) -> OptionScan {
        let mut opts = [0u8; MAX_OPTIONS_LEN];
        opts[..bytes.len()].copy_from_slice(bytes);
        scan_options(&opts, bytes.len())
    }

    #[test]
    fn finds_mss_first_last_and_between_others() {
        assert_eq!(scan(&[2, 4, 5, 0xb4]).mss_at[0], 0);
        // Linux's SYN layout: MSS, SACK-permitted, timestamps, NOP, window scale.
        let linux = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        let s = scan(&linux);
        assert_eq!((s.mss_count, s.mss_at[0], s.malformed), (1, 0, false));
        let last = [1, 1, 4, 2, 1, 3, 3, 7, 2, 4, 5, 0xb4];
        let s = scan(&last);
        assert_eq!((s.mss_count, s.mss_at[0], s.malformed), (1, 8, false));
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
        assert_eq!((s.mss_count, s.mss_at, s.malformed), (2, [0, 4], false));
        assert!(scan(&[2, 4, 5, 0xb4, 2, 4, 5, 0x78, 2, 4, 1, 0]).malformed);
    }

    #[test]
    fn malformed_layouts() {
        for bad in [
            &[3, 0, 1, 1][..],       // length 0
            &[3, 1, 1, 1],           // length 1
            &[8, 10, 0, 0],          // runs past the header
            &[1, 1, 1, 3],           // kind with no length byte
            &[2, 3, 5, 1],           // MSS of length 3
            &[2, 6, 5, 0xb4, 0, 0],  // MSS of length 6
        ] {
            assert!(scan(bad).malformed, "{bad:?}");
        }
    }
}
