//! The kernel as oracle: a host with real UDP sockets and TCP connections
//! toward many destinations behind a router, crafted Packet-Too-Big
//! messages quoting the packets those sockets really sent, and the kernel's
//! own answers (`ip route get`, `nstat`) to compare pmtu with.
//!
//! ```text
//!  h to-r ──1500── to-h r to-s ──1500── to-r s
//!  10.77.1.1/24    .1.2      10.77.2.1/24    .2.2, and .2.10 ... (destinations)
//!  fd77:1::1/64    ::2       fd77:2::1/64    ::2, and ::10 ...
//! ```
//!
//! r forwards, but drops every packet from h longer than 1000 bytes (as
//! the link beyond a router with a small MTU would): TCP data h sends stays
//! unacknowledged, so a PTB quoting it carries a sequence number inside the
//! connection's window (tcp_v4_err()/tcp_v6_err() check `snd_una <= seq <=
//! snd_nxt`), and no answer from s muddles the picture. TSO and GSO are off
//! on h's interface, so what tcpdump captures there is what went on the
//! wire, and is quoted as it is.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{Context as _, bail};
use pmtu_user::lab::{End, Netns, link, unique_prefix};

use crate::{
    procs::{Proc, start_capture_with},
    trace_json::Pmtu,
    wire,
};

pub const UDP_PORT: u16 = 9000;
pub const TCP_PORT: u16 = 9001;
/// Packets from h longer than this are dropped by r.
pub const DROP_ABOVE: u32 = 1000;

/// h — r — s, see the module documentation.
pub struct OracleLab {
    pub h: Netns,
    pub r: Netns,
    pub s: Netns,
    h_mac: String,
    r_mac: String,
}

impl OracleLab {
    pub const H_IF: &'static str = "to-r";
    pub const R_IF_H: &'static str = "to-h";
    pub const H_V4: &'static str = "10.77.1.1";
    pub const H_V6: &'static str = "fd77:1::1";
    pub const R_V4: &'static str = "10.77.1.2";
    pub const R_V6: &'static str = "fd77:1::2";

    /// Destination number `n` (10..=250) behind r, IPv4 or IPv6.
    pub fn dest(v6: bool, n: u8) -> IpAddr {
        let s = if v6 { format!("fd77:2::{n:x}") } else { format!("10.77.2.{n}") };
        s.parse().unwrap()
    }

    /// Builds the lab; `dests` are added to s (each one a destination with
    /// its own PMTU exception in h).
    pub fn build(dests: &[IpAddr]) -> anyhow::Result<Self> {
        let prefix = unique_prefix();
        let ns = |role: &str| Netns::create(format!("{prefix}-{role}"));
        let (h, r, s) = (ns("h")?, ns("r")?, ns("s")?);
        link(
            &End { ns: &h, ifname: Self::H_IF, v4: "10.77.1.1/24", v6: "fd77:1::1/64" },
            &End { ns: &r, ifname: Self::R_IF_H, v4: "10.77.1.2/24", v6: "fd77:1::2/64" },
            1500,
        )?;
        link(
            &End { ns: &r, ifname: "to-s", v4: "10.77.2.1/24", v6: "fd77:2::1/64" },
            &End { ns: &s, ifname: "to-r", v4: "10.77.2.2/24", v6: "fd77:2::2/64" },
            1500,
        )?;
        for d in dests {
            match d {
                IpAddr::V4(_) => s.ip(&["addr", "add", &format!("{d}/24"), "dev", "to-r"])?,
                IpAddr::V6(_) => s.ip(&["-6", "addr", "add", &format!("{d}/64"), "dev", "to-r", "nodad"])?,
            };
        }
        r.sysctl("net.ipv4.ip_forward", "1")?;
        r.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        let drop = format!("{}:65535", DROP_ABOVE + 1);
        for tool in ["iptables", "ip6tables"] {
            r.run(tool, &["-A", "FORWARD", "-i", Self::R_IF_H, "-m", "length", "--length", &drop, "-j", "DROP"])?;
        }
        h.ip(&["route", "add", "default", "via", Self::R_V4])?;
        h.ip(&["-6", "route", "add", "default", "via", Self::R_V6])?;
        s.ip(&["route", "add", "default", "via", "10.77.2.1"])?;
        s.ip(&["-6", "route", "add", "default", "via", "fd77:2::1"])?;
        h.run("ethtool", &["-K", Self::H_IF, "tso", "off", "gso", "off"]).context("ethtool in h")?;
        let h_mac = mac(&h, Self::H_IF)?;
        let r_mac = mac(&r, Self::R_IF_H)?;
        let lab = Self { h, r, s, h_mac, r_mac };
        // Neighbours both ways before anything is timed (IPv6 may need a
        // moment for r's link-local addresses).
        for d in dests {
            let up = (0..10).any(|_| lab.h.run("ping", &["-c1", "-W1", &d.to_string()]).is_ok());
            if !up {
                bail!("h cannot reach {d}");
            }
        }
        Ok(lab)
    }

    /// Listening TCP sockets on s for every TCP destination.
    pub fn listen(&self, dsts: &[IpAddr]) -> anyhow::Result<Vec<TcpListener>> {
        let dsts = dsts.to_vec();
        self.s.enter(move || {
            dsts.iter()
                .map(|d| TcpListener::bind(SocketAddr::new(*d, TCP_PORT)).with_context(|| format!("listen on {d}")))
                .collect()
        })?
    }

    /// Opens one socket in h per (destination, protocol), each of which
    /// sends packets of 1500 bytes toward it: a UDP datagram of exactly
    /// that size, or 3000 bytes over a TCP connection (two full segments
    /// and a small one). The sockets stay open as long as the flows live.
    pub fn open_flows(&self, wanted: &[(IpAddr, Proto)]) -> anyhow::Result<Vec<Flow>> {
        let wanted = wanted.to_vec();
        self.h.enter(move || {
            wanted
                .iter()
                .map(|&(dst, proto)| -> anyhow::Result<Flow> {
                    match proto {
                        Proto::Udp => {
                            let any: IpAddr = if dst.is_ipv4() { "0.0.0.0".parse()? } else { "::".parse()? };
                            let sock = UdpSocket::bind(SocketAddr::new(any, 0))?;
                            sock.connect(SocketAddr::new(dst, UDP_PORT))?;
                            let payload = if dst.is_ipv4() { 1500 - 28 } else { 1500 - 48 };
                            sock.send(&vec![0x55; payload]).with_context(|| format!("UDP to {dst}"))?;
                            Ok(Flow { dst, proto, local: sock.local_addr()?, _sock: Sock::Udp(sock) })
                        }
                        Proto::Tcp => {
                            let addr = SocketAddr::new(dst, TCP_PORT);
                            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                                .with_context(|| format!("TCP connect to {addr}"))?;
                            conn.set_nodelay(true)?;
                            conn.write_all(&[0x66; 3000]).with_context(|| format!("TCP to {addr}"))?;
                            Ok(Flow { dst, proto, local: conn.local_addr()?, _sock: Sock::Tcp(conn) })
                        }
                    }
                })
                .collect()
        })?
    }

    /// tcpdump in h of every packet h sends over 1000 bytes, with bytes.
    pub fn capture_big_packets(&self) -> Proc {
        start_capture_with(
            &self.h,
            Self::H_IF,
            &["-x"],
            &format!("greater {DROP_ABOVE} and (src host {} or src host {})", Self::H_V4, Self::H_V6),
        )
    }

    /// Sends crafted messages from r to h, in order, as Ethernet frames
    /// from r's interface to h's MAC address (an AF_PACKET socket: every
    /// byte as built, wrong checksums included). One scapy process.
    pub fn send_from_r(&self, forged: &[Forge]) {
        let mut script = format!(
            "import socket\n\
             from scapy.all import Ether, IP, ICMP, IPv6, ICMPv6PacketTooBig, Raw\n\
             s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
             s.bind(('{}', 0))\n\
             E = Ether(dst='{}', src='{}')\n\
             def go(p, flip):\n\
             \x20   b = bytearray(bytes(p))\n\
             \x20   if flip is not None:\n\
             \x20       b[flip] ^= 0xff\n\
             \x20   s.send(bytes(b))\n",
            Self::R_IF_H,
            self.h_mac,
            self.r_mac
        );
        for f in forged {
            script.push_str(&f.scapy_line());
            script.push('\n');
        }
        self.r
            .run("/usr/bin/python3", &["-c", &script])
            .unwrap_or_else(|e| panic!("scapy in {}: {e:#}\nscript:\n{script}", self.r.name()));
    }
}

fn mac(ns: &Netns, ifname: &str) -> anyhow::Result<String> {
    let out = ns.ip(&["-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link")?;
    v[0]["address"].as_str().map(str::to_string).with_context(|| format!("no MAC address for {ifname}: {out}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

/// Held only to keep the socket open while its flow is in use.
#[allow(dead_code)]
enum Sock {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// A socket of h and where it sends.
pub struct Flow {
    pub dst: IpAddr,
    pub proto: Proto,
    pub local: SocketAddr,
    _sock: Sock,
}

impl Flow {
    /// The first packet this flow sent of at least 1500 bytes, from a
    /// capture (`capture_big_packets`): the packet a router would quote.
    pub fn sent_packet(&self, capture: &[wire::Packet]) -> Vec<u8> {
        capture
            .iter()
            .find(|p| {
                ip_dst(&p.bytes) == Some(self.dst)
                    && ip_len(&p.bytes) >= Some(1500)
                    && l4_src_port(&p.bytes) == Some(self.local.port())
            })
            .map(|p| p.bytes.clone())
            .unwrap_or_else(|| panic!("no 1500-byte packet of {:?} {} > {} captured", self.proto, self.local, self.dst))
    }
}

/// The destination address of an IP packet.
pub fn ip_dst(b: &[u8]) -> Option<IpAddr> {
    match b.first()? >> 4 {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b.get(16..20)?).ok()?)),
        6 => Some(IpAddr::from(<[u8; 16]>::try_from(b.get(24..40)?).ok()?)),
        _ => None,
    }
}

/// The length an IP packet says it has.
pub fn ip_len(b: &[u8]) -> Option<u32> {
    let word = |at: usize| Some(u32::from(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?])));
    match b.first()? >> 4 {
        4 => word(2),
        6 => Some(40 + word(4)?),
        _ => None,
    }
}

/// The source port of a TCP or UDP packet without extension headers.
fn l4_src_port(b: &[u8]) -> Option<u16> {
    let at = match b.first()? >> 4 {
        4 => usize::from(b[0] & 0x0f) * 4,
        6 => 40,
        _ => return None,
    };
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// What is wrong with a crafted message on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The ICMP checksum (IPv4) or ICMPv6 checksum.
    IcmpChecksum,
    /// The IPv4 header checksum.
    Ipv4HeaderChecksum,
}

/// One Frag-Needed (IPv4) or Packet-Too-Big (IPv6) from r to h, quoting
/// `quote` (cut to what fits in 576 or 1280 bytes, as a router does).
#[derive(Clone, Debug)]
pub struct Forge {
    pub quote: Vec<u8>,
    pub mtu: u32,
    /// ICMPv6 code (0 normally); IPv4 is always type 3 code 4.
    pub code: u8,
    pub fault: Fault,
    /// The outer destination, when not h's own address.
    pub to: Option<IpAddr>,
}

impl Forge {
    pub fn new(quote: Vec<u8>, mtu: u32) -> Self {
        Self { quote, mtu, code: 0, fault: Fault::None, to: None }
    }

    pub fn v6(&self) -> bool {
        self.quote.first().is_some_and(|b| b >> 4 == 6)
    }

    fn scapy_line(&self) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        if self.v6() {
            let q = &self.quote[..self.quote.len().min(1280 - 48)];
            let to = self.to.map_or(OracleLab::H_V6.to_string(), |a| a.to_string());
            let flip = match self.fault {
                Fault::None => "None".to_string(),
                Fault::IcmpChecksum => (14 + 40 + 2).to_string(),
                Fault::Ipv4HeaderChecksum => panic!("IPv6 has no header checksum"),
            };
            format!(
                "go(E/IPv6(src='{}', dst='{to}')/ICMPv6PacketTooBig(code={}, mtu={})/Raw(bytes.fromhex('{}')), {flip})",
                OracleLab::R_V6,
                self.code,
                self.mtu,
                hex(q)
            )
        } else {
            let q = &self.quote[..self.quote.len().min(576 - 28)];
            let to = self.to.map_or(OracleLab::H_V4.to_string(), |a| a.to_string());
            let flip = match self.fault {
                Fault::None => "None".to_string(),
                Fault::IcmpChecksum => (14 + 20 + 2).to_string(),
                Fault::Ipv4HeaderChecksum => (14 + 10).to_string(),
            };
            format!(
                "go(E/IP(src='{}', dst='{to}')/ICMP(type=3, code=4, nexthopmtu={})/Raw(bytes.fromhex('{}')), {flip})",
                OracleLab::R_V4,
                self.mtu,
                hex(q)
            )
        }
    }
}

/// The kernel's cached PMTU toward `dst` in `ns`, from `ip route get`:
/// `cache expires 599sec mtu lock 552` (IPv4), `expires 599sec mtu 1280`
/// (IPv6), or None. Returns the raw answer too.
pub fn kernel_pmtu(ns: &Netns, dst: IpAddr) -> (Option<KernelPmtu>, String) {
    let family = if dst.is_ipv6() { "-6" } else { "-4" };
    let text = ns.ip(&[family, "route", "get", &dst.to_string()]).unwrap_or_else(|e| panic!("ip route get {dst}: {e:#}"));
    (parse_route_get(&text), text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// A cached PMTU as `ip route get` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPmtu {
    pub pmtu: Pmtu,
    pub expires: Option<u64>,
}

/// `... mtu [lock] N ...` and `expires Nsec` of an `ip route get` answer.
/// The lab's routes carry no mtu metric, so an `mtu` there is the cache's.
pub fn parse_route_get(text: &str) -> Option<KernelPmtu> {
    let w: Vec<&str> = text.split_whitespace().collect();
    let at = w.iter().position(|x| *x == "mtu")?;
    let locked = w.get(at + 1) == Some(&"lock");
    let mtu = w.get(at + 1 + usize::from(locked))?.parse().ok()?;
    let expires = w
        .iter()
        .position(|x| *x == "expires")
        .and_then(|i| w.get(i + 1)?.trim_end_matches("sec").parse().ok());
    Some(KernelPmtu { pmtu: Pmtu::new(mtu, locked), expires })
}

/// The kernel's SNMP counters `names` in `ns`, absolute (`nstat -saz`:
/// nstat's history file, which other namespaces share, is left alone).
pub fn nstat(ns: &Netns, names: &[&str]) -> BTreeMap<String, u64> {
    let mut args = vec!["-saz"];
    args.extend_from_slice(names);
    let out = ns.run("nstat", &args).unwrap_or_else(|e| panic!("nstat in {}: {e:#}", ns.name()));
    let got: BTreeMap<String, u64> = out
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect();
    for n in names {
        assert!(got.contains_key(*n), "nstat has no {n}: {out}");
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ip_route_get() {
        let v4 = "10.77.2.10 via 10.77.1.2 dev to-r src 10.77.1.1 uid 0 \n    cache expires 599sec mtu lock 552 \n";
        assert_eq!(parse_route_get(v4), Some(KernelPmtu { pmtu: Pmtu::new(552, true), expires: Some(599) }));
        let v4 = "10.77.2.13 via 10.77.1.2 dev to-r src 10.77.1.1 uid 0 \n    cache expires 12sec mtu 552 \n";
        assert_eq!(parse_route_get(v4), Some(KernelPmtu { pmtu: Pmtu::new(552, false), expires: Some(12) }));
        assert_eq!(parse_route_get("10.77.2.10 via 10.77.1.2 dev to-r src 10.77.1.1 uid 0 \n    cache \n"), None);
        let v6 = "fd77:2::12 from :: via fd77:1::2 dev to-r src fd77:1::1 metric 1024 expires 599sec mtu 1400 pref medium\n";
        assert_eq!(parse_route_get(v6), Some(KernelPmtu { pmtu: Pmtu::new(1400, false), expires: Some(599) }));
        assert_eq!(parse_route_get("fd77:2::10 from :: via fd77:1::2 dev to-r src fd77:1::1 metric 1024 pref medium\n"), None);
    }

    #[test]
    fn reads_ip_headers() {
        let mut v4 = vec![0u8; 28];
        v4[0] = 0x45;
        v4[2..4].copy_from_slice(&1500u16.to_be_bytes());
        v4[16..20].copy_from_slice(&[10, 77, 2, 10]);
        v4[20..22].copy_from_slice(&4242u16.to_be_bytes());
        assert_eq!(ip_dst(&v4), Some("10.77.2.10".parse().unwrap()));
        assert_eq!(ip_len(&v4), Some(1500));
        assert_eq!(l4_src_port(&v4), Some(4242));
        let mut v6 = vec![0u8; 48];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&1460u16.to_be_bytes());
        v6[24] = 0xfd;
        v6[39] = 0x10;
        assert_eq!(ip_dst(&v6), Some("fd00::10".parse().unwrap()));
        assert_eq!(ip_len(&v6), Some(1500));
    }
}
