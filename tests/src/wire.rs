//! Reading what tcpdump saw: packets of a `tcpdump -n -vv -x` capture
//! (decoded text plus the IP packet's bytes), their TCP flags, MSS option
//! and checksum verdict, the PTBs among them, and the kernel's own TCP
//! checksum-error counter.
//!
//! tcpdump 4.99 does not print TCP's AE bit (byte 12, bit 0; RFC 3540's NS,
//! AccECN's AE), so the bytes (`-x`) are kept to read it.

use pmtu_user::lab::Netns;

use crate::procs::Finished;

/// One captured packet: tcpdump's text (its continuation lines joined with
/// a space) and, with `-x`, the IP packet's bytes.
#[derive(Debug, Clone, Default)]
pub struct Packet {
    pub text: String,
    pub bytes: Vec<u8>,
}

/// Splits tcpdump's output into packets: a line starting with a digit (the
/// timestamp) starts one, `\t0x....:` lines are its hex, anything else
/// (`-vv`'s second line for IPv4) continues its text.
pub fn packets(capture: &Finished) -> Vec<Packet> {
    parse(&capture.stdout)
}

pub fn parse(lines: &[String]) -> Vec<Packet> {
    let mut out: Vec<Packet> = Vec::new();
    for line in lines {
        let trimmed = line.trim_start();
        if let Some(hex) = trimmed.strip_prefix("0x").and_then(|rest| rest.split_once(":  ").map(|(_, h)| h)) {
            if let Some(p) = out.last_mut() {
                for word in hex.split_whitespace() {
                    // Two bytes per group, or one in an odd-length tail.
                    for i in (0..word.len()).step_by(2) {
                        if let Some(b) = word.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                            p.bytes.push(b);
                        }
                    }
                }
            }
        } else if line.starts_with(|c: char| c.is_ascii_digit()) {
            out.push(Packet { text: line.clone(), bytes: Vec::new() });
        } else if let Some(p) = out.last_mut() {
            p.text.push(' ');
            p.text.push_str(trimmed);
        }
    }
    out
}

impl Packet {
    /// The TCP flags as tcpdump prints them: `S`, `S.`, `R`, ...
    pub fn flags(&self) -> Option<&str> {
        self.text.split("Flags [").nth(1)?.split(']').next()
    }

    pub fn is_syn(&self) -> bool {
        self.flags() == Some("S")
    }

    pub fn is_syn_ack(&self) -> bool {
        self.flags() == Some("S.")
    }

    /// The MSS option's value, if tcpdump printed one.
    pub fn mss(&self) -> Option<u16> {
        let opts = self.text.split("options [").nth(1)?;
        opts.split("mss ").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    }

    /// tcpdump's checksum verdict: `Some(true)` for `(correct)`,
    /// `Some(false)` for `(incorrect -> 0x....)`, `None` when it printed
    /// neither (it cannot verify, or no `-vv`).
    pub fn cksum_correct(&self) -> Option<bool> {
        if self.text.contains("(correct)") {
            Some(true)
        } else if self.text.contains("(incorrect") {
            Some(false)
        } else {
            None
        }
    }

    /// Whether the TCP header's text mentions `port` as the source or
    /// destination port (`ADDR.PORT >` or `> ADDR.PORT:`, or after an IPv6
    /// extension header, `PORT > PORT:`).
    pub fn has_port(&self, port: u16) -> bool {
        let p = port.to_string();
        // Only the addresses before the flags: later numbers (TS val, win)
        // could look like a port.
        let head = self.text.split("Flags [").next().unwrap_or("");
        head.split_whitespace()
            .any(|w| w.trim_end_matches(':').rsplit('.').next() == Some(p.as_str()) || w.trim_end_matches(':') == p)
    }

    /// Offset of the TCP header in [`Packet::bytes`], walking IPv6's
    /// hop-by-hop, routing and destination-options headers.
    fn tcp_offset(&self) -> Option<usize> {
        let b = &self.bytes;
        match b.first()? >> 4 {
            4 => {
                let ihl = usize::from(b[0] & 0x0f) * 4;
                (b.get(9) == Some(&6)).then_some(ihl)
            }
            6 => {
                let mut next = *b.get(6)?;
                let mut at = 40;
                while matches!(next, 0 | 43 | 60) {
                    let len = (usize::from(*b.get(at + 1)?) + 1) * 8;
                    next = *b.get(at)?;
                    at += len;
                }
                (next == 6).then_some(at)
            }
            _ => None,
        }
    }

    /// TCP's AE bit (byte 12, bit 0), read from the bytes (needs `-x`).
    pub fn tcp_ae(&self) -> Option<bool> {
        let at = self.tcp_offset()?;
        Some(self.bytes.get(at + 12)? & 1 == 1)
    }

    /// (reporter, mtu) if this is an ICMPv4 Frag-Needed or ICMPv6 PTB:
    /// `IP 10.20.9.1 > 10.20.3.2: ICMP 10.20.1.1 unreachable - need to frag (mtu 1300), length 556`
    /// `IP6 fd00:20:9::1 > fd00:20:3::2: ICMP6, packet too big, mtu 1300, length 1240`
    /// (plain `-n` output; `-v` adds a parenthesised IP header first).
    pub fn ptb(&self) -> Option<(String, u32)> {
        if !(self.text.contains("need to frag") || self.text.contains("packet too big")) {
            return None;
        }
        let words: Vec<&str> = self.text.split_whitespace().collect();
        let ip = words.iter().position(|w| *w == "IP" || *w == "IP6")?;
        // With -v the header's details come in parentheses before the source.
        let mut at = ip + 1;
        if words.get(at)?.starts_with('(') {
            while !words.get(at)?.ends_with(')') {
                at += 1;
            }
            at += 1;
        }
        let reporter = words.get(at)?.to_string();
        let mtu_at = words.iter().position(|w| *w == "mtu" || *w == "(mtu")?;
        let mtu = words.get(mtu_at + 1)?.trim_end_matches([')', ',']).parse().ok()?;
        Some((reporter, mtu))
    }
}

/// The kernel's count of TCP segments dropped for a bad checksum in `ns`
/// (`nstat -saz TcpInCsumErrors`: absolute, and without touching nstat's
/// history file, which other tests' namespaces share).
pub fn tcp_in_csum_errors(ns: &Netns) -> anyhow::Result<u64> {
    let out = ns.run("nstat", &["-saz", "TcpInCsumErrors"])?;
    out.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("TcpInCsumErrors")).then(|| w.next()?.parse().ok()).flatten()
        })
        .ok_or_else(|| anyhow::anyhow!("no TcpInCsumErrors in nstat's output: {out}"))
}

/// The MSS of the first SYN in a capture (tcpdump -vv text).
pub fn first_syn_mss(capture: &Finished) -> Option<u16> {
    packets(capture).iter().find(|p| p.is_syn()).and_then(Packet::mss)
}

/// A 2 MB transfer each way through the black-hole lab's r1, captured at
/// s3: the MSS of the SYN as the server receives it, and whether the
/// transfer completed.
pub fn clamped_transfer(lab: &pmtu_user::lab::BlackHoleLab, port: u16) -> (Option<u16>, bool) {
    use pmtu_user::lab::BlackHoleLab;
    let cap = crate::procs::start_capture_with(&lab.s3, BlackHoleLab::S3_IF, &["-vv"], &format!("tcp port {port}"));
    let t = lab.transfer(BlackHoleLab::SERVER_V4, port, 2 * 1024 * 1024, std::time::Duration::from_secs(20)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    (first_syn_mss(&cap.stop(libc::SIGTERM, std::time::Duration::from_secs(20))), t.completed())
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn reads_v4_two_line_syn_with_hex() {
        let p = parse(&lines(
            "21:48:12.578791 IP (tos 0x0, ttl 64, id 1, offset 0, flags [none], proto TCP (6), length 48)\n    10.0.0.1.1 > 10.0.0.2.2: Flags [S], cksum 0xa0cb (correct), seq 0, win 8192, options [nop,mss 1460,nop,nop,nop], length 0\n\t0x0000:  4500 0030 0001 0000 4006 66c5 0a00 0001\n\t0x0010:  0a00 0002 0001 0002 0000 0000 0000 0000\n\t0x0020:  7102 2000 a0cb 0000 0102 0405 b401 0101",
        ));
        assert_eq!(p.len(), 1);
        assert!(p[0].is_syn());
        assert_eq!(p[0].mss(), Some(1460));
        assert_eq!(p[0].cksum_correct(), Some(true));
        assert_eq!(p[0].tcp_ae(), Some(true));
        assert!(p[0].has_port(2) && !p[0].has_port(3));
        assert_eq!(p[0].bytes.len(), 48);
    }

    #[test]
    fn reads_v6_hop_by_hop_and_bad_checksums() {
        let p = parse(&lines(
            "21:48:12.579136 IP6 (hlim 64, next-header Options (0) payload length: 32) fd00::1 > fd00::2: HBH (padn) 1 > 2: Flags [S], cksum 0x7e1f (correct), seq 0, win 8192, options [mss 1460], length 0\n\t0x0000:  6000 0000 0020 0040 fd00 0000 0000 0000\n\t0x0010:  0000 0000 0000 0001 fd00 0000 0000 0000\n\t0x0020:  0000 0000 0000 0002 0600 0104 0000 0000\n\t0x0030:  0001 0002 0000 0000 0000 0000 6002 2000\n\t0x0040:  7e1f 0000 0204 05b4\n21:48:12.579461 IP (tos 0x0, ttl 64, id 1, offset 0, flags [none], proto TCP (6), length 40)\n    10.0.0.1.1 > 10.0.0.2.2: Flags [S], cksum 0xdead (incorrect -> 0x7bdd), seq 0, win 8192, length 0",
        ));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].mss(), Some(1460));
        assert_eq!(p[0].tcp_ae(), Some(false));
        assert!(p[0].has_port(2));
        assert_eq!(p[1].cksum_correct(), Some(false));
        assert_eq!(p[1].mss(), None);
    }

    #[test]
    fn reads_ptbs() {
        let p = parse(&lines(
            "22:00:00.000000 IP 10.20.9.1 > 10.20.3.2: ICMP 10.20.1.1 unreachable - need to frag (mtu 1300), length 556\n22:00:00.000001 IP6 fd00:20:9::1 > fd00:20:3::2: ICMP6, packet too big, mtu 1300, length 1240\n22:00:00.000002 IP 10.20.3.2 > 10.20.1.1: ICMP echo request, id 1, seq 1, length 1380",
        ));
        assert_eq!(p[0].ptb(), Some(("10.20.9.1".into(), 1300)));
        assert_eq!(p[1].ptb(), Some(("fd00:20:9::1".into(), 1300)));
        assert_eq!(p[2].ptb(), None);
    }
}
