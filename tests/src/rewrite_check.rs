//! The oracle for the MSS rewrite: a SYN built with every checksum
//! computed from scratch goes through pmtu_common::rewrite (plan + apply,
//! the steps the kernel executes), and what comes out is checked from
//! scratch again: checksums, lengths, the MSS values, and that no other
//! byte moved. Shared by the property test and the `mss_rewrite` fuzz target.

use pmtu_common::{
    parse::Link,
    policy::counters::{AT_OR_BELOW, CLAMPED, INSERTED, MALFORMED, NO_ROOM, TCP_AO},
    rewrite::{DEFAULT_MSS_V4, DEFAULT_MSS_V6, clamp_frame},
};

use crate::frames::*;

/// One SYN to build: everything the rewrite's result depends on.
#[derive(Clone, Debug)]
pub struct SynSpec {
    pub v6: bool,
    /// VLAN tags (0..=2), or `None` for an L3 device (no link-layer header).
    pub tags: Option<usize>,
    pub syn_ack: bool,
    /// Low nibble of TCP byte 12 (AE and reserved bits).
    pub low_bits: u8,
    /// TCP options, unpadded (the builder pads with EOL to 4 bytes).
    pub options: Vec<u8>,
    /// IPv6 hop-by-hop and destination options headers before TCP.
    pub v6_exts: usize,
    pub target: u32,
}

impl SynSpec {
    pub fn frame(&self) -> (Vec<u8>, Link) {
        let flags = if self.syn_ack { SYN_ACK } else { SYN };
        let (ethertype, ip) = if self.v6 {
            let exts: Vec<(u8, Vec<u8>)> = (0..self.v6_exts).map(|i| ext(if i == 0 { 0 } else { 60 }, 0)).collect();
            let t = tcp_with_low_bits("fd00:1:1::1", "fd00:1:3::2", self.low_bits, flags, &self.options, &[]);
            (ETH_P_IPV6, V6 { exts: &exts, ..V6::new("fd00:1:1::1", "fd00:1:3::2", 6) }.build(&t))
        } else {
            let t = tcp_with_low_bits("10.1.1.1", "10.1.3.2", self.low_bits, flags, &self.options, &[]);
            (ETH_P_IP, V4::new("10.1.1.1", "10.1.3.2", 6).build(&t))
        };
        match self.tags {
            None => (ip, Link::L3 { ethertype }),
            Some(n) => (eth(&[TPID_8021AD, TPID_8021Q][2 - n..], ethertype, &ip), Link::Ethernet),
        }
    }
}

/// What the options say, read independently of pmtu's walk: the MSS
/// values and whether TCP-AO is there; `Err` if malformed in any way pmtu
/// refuses (zero/one length, past the end, MSS length not 4, more than two
/// MSS options), with whether TCP-AO came before the fault (then that is
/// the reason given: either way the segment stays as it is).
fn read_options(opts: &[u8]) -> Result<(Vec<(usize, u16)>, bool), bool> {
    let mut mss = Vec::new();
    let mut ao = false;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = *opts.get(i + 1).ok_or(ao)? as usize;
                if len < 2 || i + len > opts.len() {
                    return Err(ao);
                }
                if kind == 29 {
                    ao = true;
                }
                if kind == 2 {
                    if len != 4 || mss.len() == 2 {
                        return Err(ao);
                    }
                    mss.push((i + 2, u16::from_be_bytes([opts[i + 2], opts[i + 3]])));
                }
                i += len;
            }
        }
    }
    Ok((mss, ao))
}

/// Runs one spec through the rewrite and checks the result; `Err` says
/// what is wrong.
pub fn check_spec(spec: &SynSpec) -> Result<(), String> {
    let (frame, link) = spec.frame();
    let verify = |f: &[u8]| match link {
        Link::Ethernet => check_tcp_frame(f),
        Link::L3 { ethertype } => check_tcp_ip(f, ethertype),
    };
    let before = verify(&frame).map_err(|e| format!("built frame is wrong: {e}"))?;
    let mut buf = frame.clone();
    buf.resize(frame.len() + 4, 0);
    let done = clamp_frame(&mut buf, frame.len(), link, false, spec.target).map_err(|e| format!("apply: {e:?}"))?;
    buf.truncate(done.len);
    if !done.syn {
        return Err(format!("not taken for a SYN: {done:?}"));
    }
    let opts = &before.options;
    let expect = Some(match read_options(opts) {
        Err(false) => MALFORMED,
        Err(true) | Ok((_, true)) => TCP_AO,
        Ok((mss, false)) if mss.is_empty() => {
            if opts.len() + 4 > 40 { NO_ROOM } else { INSERTED }
        }
        Ok((mss, false)) => {
            if mss.iter().any(|(_, v)| *v as u32 > spec.target) { CLAMPED } else { AT_OR_BELOW }
        }
    });
    if done.counter != expect {
        return Err(format!("outcome {:?}, want {expect:?}", done.counter));
    }
    let after = verify(&buf).map_err(|e| format!("output does not verify from scratch: {e}\n  in  {frame:02x?}\n  out {buf:02x?}"))?;
    // Word 6: only Data Offset may change, and only by one word on insert.
    let grew = done.counter == Some(INSERTED);
    let want6 = [before.word6[0] + if grew { 0x10 } else { 0 }, before.word6[1]];
    if after.word6 != want6 {
        return Err(format!("TCP word 6 {:02x?}, want {want6:02x?}", after.word6));
    }
    match done.counter {
        Some(CLAMPED) => {
            let (mss, _) = read_options(opts).map_err(|_| "malformed options were clamped")?;
            let mut want = opts.clone();
            for (at, v) in mss {
                let new = (v as u32).min(spec.target) as u16;
                want[at..at + 2].copy_from_slice(&new.to_be_bytes());
            }
            if after.options != want {
                return Err(format!("options {:02x?}, want {want:02x?}", after.options));
            }
        }
        Some(INSERTED) => {
            let default = if spec.v6 { DEFAULT_MSS_V6 } else { DEFAULT_MSS_V4 };
            let m = (spec.target.min(default) as u16).to_be_bytes();
            let mut want = vec![2, 4, m[0], m[1]];
            want.extend_from_slice(opts);
            if after.options != want {
                return Err(format!("options {:02x?}, want {want:02x?}", after.options));
            }
            if buf.len() != frame.len() + 4 {
                return Err(format!("grew to {} bytes from {}", buf.len(), frame.len()));
            }
        }
        _ => {
            if buf != frame {
                return Err(format!("left alone ({:?}) but bytes changed", done.counter));
            }
        }
    }
    Ok(())
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Options as a random sequence of real-world ones (MSS, NOP, EOL with
/// padding, SACK-permitted, timestamps, window scale, a TFO cookie, TCP-AO,
/// unknown kinds), at most 40 bytes.
pub fn random_options(r: &mut Rng) -> Vec<u8> {
    let mut o = Vec::new();
    let items = r.below(9);
    for _ in 0..items {
        let item: Vec<u8> = match r.below(10) {
            0 | 1 => {
                let v = [536u16, 1220, 1360, 1400, 1440, 1460, 8960, 65495][r.below(8) as usize];
                mss_option(v)
            }
            2 => vec![1],
            3 => vec![4, 2],
            4 => vec![8, 10, 0, 0, 0, 1, 0, 0, 0, 0],
            5 => vec![3, 3, 7],
            6 => {
                let n = [0, 4, 8, 16][r.below(4) as usize];
                let mut c = vec![34, 2 + n as u8];
                c.extend(std::iter::repeat_n(0x77, n));
                c
            }
            7 => {
                let n = r.below(8) as usize;
                let mut c = vec![200 + r.below(50) as u8, 2 + n as u8];
                c.extend(std::iter::repeat_n(0x11, n));
                c
            }
            8 if r.below(8) == 0 => {
                let mut c = vec![29, 16, 1, 1];
                c.extend([0xa5; 12]);
                c
            }
            _ => vec![1, 1],
        };
        if o.len() + item.len() > 40 {
            break;
        }
        o.extend(item);
    }
    if r.below(6) == 0 && o.len() < 40 {
        o.push(0); // EOL, then the builder's padding
    }
    o
}

pub fn random_spec(r: &mut Rng) -> SynSpec {
    let v6 = r.below(2) == 1;
    SynSpec {
        v6,
        tags: match r.below(4) {
            0 => None,
            n => Some(n as usize - 1),
        },
        syn_ack: r.below(2) == 1,
        low_bits: r.below(16) as u8,
        options: random_options(r),
        v6_exts: if v6 { r.below(3) as usize } else { 0 },
        target: [88, 536, 1000, 1220, 1359, 1360, 1361, 1460, 9000, 65535][r.below(10) as usize],
    }
}
