//! The MSS rewrite as a pure function: which bytes of a SYN change, the new
//! lengths, and what each change does to the checksums.
//!
//! [`plan`] decides; the kernel's clamper executes a [`Plan`] with its
//! store and checksum helpers (bpf_skb_store_bytes, bpf_l4_csum_replace,
//! bpf_l3_csum_replace, bpf_skb_change_tail), and [`apply`] executes the
//! same plan on a byte slice, step for step, with the same RFC 1624
//! arithmetic the helpers use on a full checksum. The host tests and fuzz
//! [`apply`] against an oracle that recomputes every checksum from scratch.
//!
//! Semantics follow xt_TCPMSS (net/netfilter/xt_TCPMSS.c,
//! tcpmss_mangle_packet) except where it is wrong or fails closed:
//! - An MSS value at an odd offset in the TCP header straddles two 16-bit
//!   words of the checksum; xt_TCPMSS feeds the value to
//!   inet_proto_csum_replace2 as if it were aligned, which corrupts a full
//!   checksum. Here the operands are byte-swapped (RFC 1071 §2(B): the sum
//!   is byte-order independent, so a value at an odd offset contributes its
//!   swapped bytes).
//! - Malformed options, fragments, IPv6 AH and TCP-AO leave the segment
//!   untouched (counted), where xt_TCPMSS steps over bad lengths.
//! - Every MSS option is lowered, not only the first (Linux honours the
//!   last one it parses).

use crate::{
    parse::{Link, Packet, Syn, SynOutcome, parse_syn},
    policy::counters::{AT_OR_BELOW, CLAMPED, FRAGMENT, INSERTED, IPSEC, MALFORMED, NO_ROOM, TCP_AO},
    tcpopt::{MAX_OPTIONS_LEN, MssOption, OptionScan, TCPOLEN_MSS, TCPOPT_MSS, scan_options},
};

/// RFC 9293 §3.7.1 / RFC 8200 §8.3: the MSS a peer assumes when none is
/// sent; an inserted option never claims more (as xt_TCPMSS).
pub const DEFAULT_MSS_V4: u32 = 536;
pub const DEFAULT_MSS_V6: u32 = 1220;

/// One 16-bit word of a one's-complement sum that changes from `from` to
/// `to`, both as their bytes lie in memory at an even offset from the start
/// of what the checksum covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CsumWord {
    pub from: [u8; 2],
    pub to: [u8; 2],
}

impl CsumWord {
    /// The checksum operands for a 16-bit value replaced at `rel` bytes
    /// from the start of the checksummed data.
    #[inline(always)]
    pub fn at(rel: usize, old: [u8; 2], new: [u8; 2]) -> Self {
        if rel.is_multiple_of(2) {
            Self { from: old, to: new }
        } else {
            // Straddling two aligned words: [x, o0] [o1, y] sums like the
            // aligned word [o1, o0] (RFC 1071 §2(B)).
            Self { from: [old[1], old[0]], to: [new[1], new[0]] }
        }
    }
}

/// An MSS option value lowered in place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MssEdit {
    /// Frame offset of the 16-bit value.
    pub at: usize,
    /// The new value, as stored (network order).
    pub value: [u8; 2],
    /// Its effect on the TCP checksum.
    pub csum: CsumWord,
}

/// An MSS option added in front of the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Insert {
    /// Where the new option goes (just after the fixed TCP header).
    pub opt_at: usize,
    /// Option bytes already there, moved 4 bytes later (a multiple of 4).
    pub move_len: usize,
    /// The frame's new length: the datagram's end plus 4 (link-layer
    /// padding after the datagram is dropped).
    pub new_end: usize,
    /// Kind, length and value of the option.
    pub option: [u8; 4],
    /// TCP header word 6 (Data Offset, reserved and AE bits, flags):
    /// read-modify-written, only Data Offset changes.
    pub word6_at: usize,
    pub word6: CsumWord,
    /// The TCP length in the pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1).
    pub tcp_len: CsumWord,
    /// The IP length field (IPv4 total length, IPv6 payload length).
    pub ip_len_at: usize,
    pub ip_len: CsumWord,
    /// IPv4: the header checksum at this offset covers `ip_len`.
    pub ip_csum_at: Option<usize>,
}

/// What the clamper does to one SYN or SYN-ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing; the counter (policy::counters) that says why.
    Leave(u32),
    /// Lower `count` MSS options in place.
    Lower { edits: [MssEdit; 2], count: u8, check_at: usize },
    /// Add an MSS option.
    Insert { insert: Insert, check_at: usize },
}

/// Why a segment must not be touched whatever its options say, if so:
/// fragments (a changed length or checksum breaks reassembly: RFC 791,
/// RFC 8200 §4.5) and IPv6 AH (its ICV covers the TCP header, RFC 4302
/// §3.3.3.1).
#[inline(always)]
pub fn untouchable(syn: &Syn) -> Option<u32> {
    if syn.fragment {
        Some(FRAGMENT)
    } else if syn.ah {
        Some(IPSEC)
    } else {
        None
    }
}

/// Decides the rewrite of the SYN `syn`, whose options `scan` describes, to
/// an MSS of at most `target`. Only ever lowers an MSS (xt_TCPMSS: "Never
/// increase MSS, even when setting it").
#[inline(always)]
pub fn plan(syn: &Syn, scan: &OptionScan, target: u32) -> Plan {
    if let Some(why) = untouchable(syn) {
        return Plan::Leave(why);
    }
    if scan.ao {
        return Plan::Leave(TCP_AO);
    }
    if scan.malformed {
        return Plan::Leave(MALFORMED);
    }
    let target = if target > 0xffff { 0xffff } else { target };
    if scan.mss_count == 0 {
        return plan_insert(syn, target);
    }
    let check_at = syn.l4 + 16;
    let mut edits = [MssEdit::default(); 2];
    let mut count = 0u8;
    // Unrolled over the two options the scan keeps: indexing by a loop
    // variable would make the verifier prove the index on every path.
    if let Some(edit) = lower_one(syn, &scan.mss[0], target) {
        edits[0] = edit;
        count = 1;
    }
    if scan.mss_count > 1
        && let Some(edit) = lower_one(syn, &scan.mss[1], target)
    {
        if count == 0 {
            edits[0] = edit;
        } else {
            edits[1] = edit;
        }
        count += 1;
    }
    if count == 0 { Plan::Leave(AT_OR_BELOW) } else { Plan::Lower { edits, count, check_at } }
}

#[inline(always)]
fn lower_one(syn: &Syn, opt: &MssOption, target: u32) -> Option<MssEdit> {
    if opt.value as u32 <= target {
        return None;
    }
    let new = (target as u16).to_be_bytes();
    Some(MssEdit { at: opt.value_at, value: new, csum: CsumWord::at(opt.value_at - syn.l4, opt.value.to_be_bytes(), new) })
}

#[inline(always)]
fn be(v: usize) -> [u8; 2] {
    (v as u16).to_be_bytes()
}

#[inline(always)]
fn plan_insert(syn: &Syn, target: u32) -> Plan {
    // Data after the header would have to move, and the SYN grow past what
    // the sender sized it for; a 60-byte header has no room (Data Offset is
    // 4 bits); a BIG TCP length of 0 cannot grow.
    let opts = syn.tcp_hdr_len - 20;
    if syn.payload_len() != 0 || opts + 4 > MAX_OPTIONS_LEN || !opts.is_multiple_of(4) || syn.len_from_frame {
        return Plan::Leave(NO_ROOM);
    }
    let (ip_len_at, ip_len, ip_csum_at) = if syn.family == 4 {
        (syn.l3 + 2, syn.ip_end - syn.l3, Some(syn.l3 + 10))
    } else {
        (syn.l3 + 4, syn.ip_end - syn.l3 - 40, None)
    };
    if ip_len + 4 > 0xffff {
        return Plan::Leave(NO_ROOM);
    }
    let default = if syn.family == 4 { DEFAULT_MSS_V4 } else { DEFAULT_MSS_V6 };
    let mss = (if target < default { target } else { default }) as u16;
    let m = mss.to_be_bytes();
    let tcp_len = syn.ip_end - syn.l4;
    let word6_new = [syn.word6[0] + 0x10, syn.word6[1]];
    Plan::Insert {
        insert: Insert {
            opt_at: syn.l4 + 20,
            move_len: opts,
            new_end: syn.ip_end + 4,
            option: [TCPOPT_MSS, TCPOLEN_MSS, m[0], m[1]],
            word6_at: syn.l4 + 12,
            word6: CsumWord { from: syn.word6, to: word6_new },
            tcp_len: CsumWord { from: be(tcp_len), to: be(tcp_len + 4) },
            ip_len_at,
            ip_len: CsumWord { from: be(ip_len), to: be(ip_len + 4) },
            ip_csum_at,
        },
        check_at: syn.l4 + 16,
    }
}

/// RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'): what csum_replace2() does to a
/// full checksum field in the kernel.
#[inline(always)]
pub fn csum_replace(check: [u8; 2], w: CsumWord) -> [u8; 2] {
    let hc = u16::from_be_bytes(check);
    let mut sum = (!hc) as u32 + (!u16::from_be_bytes(w.from)) as u32 + u16::from_be_bytes(w.to) as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

/// Why [`apply`] could not run a plan on a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// The buffer has no room for the grown frame, or an offset is outside it.
    OutOfBounds,
}

/// Executes `plan` on the frame in `buf[..len]`, step for step as the
/// kernel's clamper does with a full checksum, and returns the frame's new
/// length (`buf` must have room for 4 more bytes for an insert).
pub fn apply(buf: &mut [u8], len: usize, plan: &Plan) -> Result<usize, ApplyError> {
    match *plan {
        Plan::Leave(_) => Ok(len),
        Plan::Lower { edits, count, check_at } => {
            for edit in edits.iter().take(count as usize) {
                put(buf, edit.at, edit.value)?;
                update(buf, check_at, edit.csum)?;
            }
            Ok(len)
        }
        Plan::Insert { insert: i, check_at } => {
            let end = i.new_end;
            if end > buf.len() || i.opt_at + 4 + i.move_len > end {
                return Err(ApplyError::OutOfBounds);
            }
            // bpf_skb_change_tail: cut to the datagram, grow with zeros.
            let datagram_end = end - 4;
            if datagram_end > len {
                return Err(ApplyError::OutOfBounds);
            }
            buf[datagram_end..end].fill(0);
            buf.copy_within(i.opt_at..i.opt_at + i.move_len, i.opt_at + 4);
            buf[i.opt_at..i.opt_at + 4].copy_from_slice(&i.option);
            // Moving the old options by 4 bytes keeps their 16-bit
            // alignment, so their share of the sum is unchanged: only the
            // new option's two words count (they replace zero words).
            update(buf, check_at, CsumWord { from: [0, 0], to: [i.option[0], i.option[1]] })?;
            update(buf, check_at, CsumWord { from: [0, 0], to: [i.option[2], i.option[3]] })?;
            put(buf, i.word6_at, i.word6.to)?;
            update(buf, check_at, i.word6)?;
            update(buf, check_at, i.tcp_len)?;
            put(buf, i.ip_len_at, i.ip_len.to)?;
            if let Some(at) = i.ip_csum_at {
                update(buf, at, i.ip_len)?;
            }
            Ok(end)
        }
    }
}

/// What the clamper made of one frame (host model of the kernel program,
/// less the route lookup: `target` is given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clamped {
    /// A SYN or SYN-ACK (counted `syn_seen`).
    pub syn: bool,
    /// The outcome counter, if any.
    pub counter: Option<u32>,
    /// The frame's length afterwards.
    pub len: usize,
}

/// Parses the frame in `buf[..len]` as the clamper does, plans and applies
/// the rewrite to at most `target`.
pub fn clamp_frame(buf: &mut [u8], len: usize, link: Link, gso: bool, target: u32) -> Result<Clamped, ApplyError> {
    let frame = buf.get(..len).ok_or(ApplyError::OutOfBounds)?;
    let pkt = FramePacket { frame, gso };
    let mut syn = Syn::default();
    match parse_syn(&pkt, link, &mut syn) {
        SynOutcome::Syn => {}
        // Headers that contradict themselves: maybe not even a SYN, so
        // counted as malformed only (the kernel does the same).
        SynOutcome::Malformed => return Ok(Clamped { syn: false, counter: Some(MALFORMED), len }),
        SynOutcome::NotIp | SynOutcome::NotSyn | SynOutcome::FragmentSkipped => {
            return Ok(Clamped { syn: false, counter: None, len });
        }
    }
    let scan = scan_options(&pkt, syn.l4 + 20, syn.tcp_hdr_len - 20);
    let plan = plan(&syn, &scan, target);
    let new_len = apply(buf, len, &plan)?;
    let counter = match plan {
        Plan::Leave(why) => why,
        Plan::Lower { .. } => CLAMPED,
        Plan::Insert { .. } => INSERTED,
    };
    Ok(Clamped { syn: true, counter: Some(counter), len: new_len })
}

/// A frame in memory, optionally marked as a GSO super-packet.
struct FramePacket<'a> {
    frame: &'a [u8],
    gso: bool,
}

impl Packet for FramePacket<'_> {
    fn len(&self) -> usize {
        self.frame.len()
    }

    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        crate::parse::SlicePacket(self.frame).read_into(offset, dst)
    }

    fn is_gso(&self) -> bool {
        self.gso
    }
}

fn put(buf: &mut [u8], at: usize, bytes: [u8; 2]) -> Result<(), ApplyError> {
    buf.get_mut(at..at + 2).ok_or(ApplyError::OutOfBounds)?.copy_from_slice(&bytes);
    Ok(())
}

fn update(buf: &mut [u8], check_at: usize, w: CsumWord) -> Result<(), ApplyError> {
    let field = buf.get_mut(check_at..check_at + 2).ok_or(ApplyError::OutOfBounds)?;
    let new = csum_replace([field[0], field[1]], w);
    field.copy_from_slice(&new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_offsets_swap_the_operands() {
        assert_eq!(CsumWord::at(22, [5, 0xb4], [5, 0x50]), CsumWord { from: [5, 0xb4], to: [5, 0x50] });
        assert_eq!(CsumWord::at(23, [5, 0xb4], [5, 0x50]), CsumWord { from: [0xb4, 5], to: [0x50, 5] });
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC 0xDD2F, m 0x5555 → m' 0x3285 gives HC' 0x0000.
        let w = CsumWord { from: [0x55, 0x55], to: [0x32, 0x85] };
        assert_eq!(csum_replace([0xdd, 0x2f], w), [0x00, 0x00]);
    }
}
