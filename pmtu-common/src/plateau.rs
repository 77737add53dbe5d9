//! RFC 1191 §7 plateau table, for Frag-Needed messages from routers that
//! predate RFC 1191 and leave the Next-Hop MTU field zero.

/// The plateaus of RFC 1191 §7, Table 7-1, highest first.
pub const PLATEAUS: [u16; 11] = [65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];

/// The greatest plateau strictly below `quoted_total_len`, as RFC 1191 §7
/// advises a host to assume when the router reported an MTU of zero.
///
/// The quoted datagram was too big, so the answer must be smaller than it; 68
/// (the IPv4 minimum, RFC 791) is the floor for anything at or below 68.
#[inline(always)]
pub fn plateau_below(quoted_total_len: u16) -> u16 {
    let mut i = 0;
    while i < PLATEAUS.len() {
        if PLATEAUS[i] < quoted_total_len {
            return PLATEAUS[i];
        }
        i += 1;
    }
    68
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_next_plateau_strictly_below() {
        assert_eq!(plateau_below(1500), 1492);
        assert_eq!(plateau_below(1492), 1006);
        assert_eq!(plateau_below(1493), 1492);
        assert_eq!(plateau_below(65535), 32000);
        assert_eq!(plateau_below(576), 508);
        assert_eq!(plateau_below(69), 68);
    }

    #[test]
    fn never_goes_below_the_ipv4_minimum() {
        assert_eq!(plateau_below(68), 68);
        assert_eq!(plateau_below(20), 68);
        assert_eq!(plateau_below(0), 68);
    }
}
