//! pmtu on links this machine's own kernel cannot make (it has no
//! wireguard, ip_gre or 8021q modules): a real WireGuard tunnel, a GRE
//! tunnel and an 802.1Q VLAN sub-interface, each between two routers in
//! throw-away namespaces. Debian's 6.1 and 6.12 kernels have the modules,
//! so `cargo xtask test --kernel K` runs this binary inside their VMs, and
//! leaves it out of the host run (xtask/src/main.rs, HOST_EXCLUDED). Where
//! a module is missing the lab cannot be built and the test fails, naming
//! the `ip link add` that failed: it never skips.
//!
//! ```text
//!  c to-a ──MTU── to-c a DEV ══1400══ DEV b to-d ──1500── to-b d
//!  10.30.1.1/24   .1.2   10.30.9.1/30  .9.2  10.30.3.1/24   .3.2
//!  fd00:30:1::1   ::2    fd00:30:9::1/126 ::2 fd00:30:3::1  ::2
//!                        a to-b ──1500 (underlay)── to-a b
//!                        10.30.2.1/24              .2.2
//! ```
//!
//! DEV is `wg0` (WireGuard over UDP on the underlay), `gre1` (GRE over
//! it) or `to-b.100` (VLAN 100 on it, with the tag in the frame bytes:
//! tx VLAN offload off). DEV's MTU, 1400, is below every other link's. The
//! black-hole variant (MTU 1500 toward c) has a and b drop the Frag-Needed
//! and Packet-Too-Big they would send, so TCP at the endpoints' MSS stalls
//! unless pmtu clamps; the PTB variant (1300 toward c) has a answer d's
//! 1400-byte packets with a PTB that crosses DEV back toward d.

use std::{net::IpAddr, process::Stdio, time::Duration};

use pmtu_tests::{
    procs::{Proc, pmtu_in, start_capture, start_capture_with, start_trace},
    require_root,
    residue::assert_clean,
    tunnel::{TunnelLab, offloads_off},
    wire::{Packet, packets, tcp_in_csum_errors},
};
use pmtu_user::lab::{End, Netns, Transfer, link, transfer, unique_prefix};
use serde_json::Value;

const BYTES: usize = 1024 * 1024;
const STALL: Duration = Duration::from_secs(3);
const EXIT: Duration = Duration::from_secs(30);
const DEV_MTU: u32 = 1400;
const CLIENT_V4: &str = "10.30.1.1";
const CLIENT_V6: &str = "fd00:30:1::1";
const SERVER_V4: &str = "10.30.3.2";
const SERVER_V6: &str = "fd00:30:3::2";

/// Long enough for 1 MiB each way on an emulated (TCG) VM.
fn go() -> Duration {
    pmtu_tests::slow(Duration::from_secs(8))
}

fn server(family: u8) -> &'static str {
    if family == 4 { SERVER_V4 } else { SERVER_V6 }
}

fn client(family: u8) -> &'static str {
    if family == 4 { CLIENT_V4 } else { CLIENT_V6 }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    WireGuard,
    Gre,
    Vlan,
}

impl Kind {
    fn dev(self) -> &'static str {
        match self {
            Kind::WireGuard => "wg0",
            Kind::Gre => "gre1",
            Kind::Vlan => "to-b.100",
        }
    }
}

struct LinkLab {
    c: Netns,
    a: Netns,
    b: Netns,
    d: Netns,
}

/// A WireGuard key pair from `wg genkey` / `wg pubkey` (wireguard-tools,
/// installed by `cargo xtask test --kernel K`).
fn wg_keys() -> (String, String) {
    let private = std::process::Command::new("wg").arg("genkey").output().expect("wg (wireguard-tools) installed");
    assert!(private.status.success(), "wg genkey: {}", String::from_utf8_lossy(&private.stderr));
    let private = String::from_utf8(private.stdout).unwrap().trim().to_string();
    let mut child = std::process::Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{private}\n").as_bytes()).unwrap();
    let public = child.wait_with_output().unwrap();
    assert!(public.status.success());
    (private, String::from_utf8(public.stdout).unwrap().trim().to_string())
}

impl LinkLab {
    fn build(kind: Kind, client_mtu: u32, black_hole: bool) -> Self {
        let prefix = unique_prefix();
        let ns = |role: &str| Netns::create(format!("{prefix}-{role}")).unwrap();
        let lab = Self { c: ns("c"), a: ns("a"), b: ns("b"), d: ns("d") };
        let LinkLab { c, a, b, d, .. } = &lab;
        for ns in [c, a, b, d] {
            // No DAD on link-local addresses either (see TunnelLab::build).
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0").unwrap();
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0").unwrap();
        }
        let end = |ns, ifname, v4, v6| End { ns, ifname, v4, v6 };
        link(&end(c, "to-a", "10.30.1.1/24", "fd00:30:1::1/64"), &end(a, "to-c", "10.30.1.2/24", "fd00:30:1::2/64"), client_mtu).unwrap();
        link(&end(a, "to-b", "10.30.2.1/24", "fd00:30:2::1/64"), &end(b, "to-a", "10.30.2.2/24", "fd00:30:2::2/64"), 1500).unwrap();
        link(&end(b, "to-d", "10.30.3.1/24", "fd00:30:3::1/64"), &end(d, "to-b", "10.30.3.2/24", "fd00:30:3::2/64"), 1500).unwrap();
        let dev = kind.dev();
        let keys = (kind == Kind::WireGuard).then(|| (wg_keys(), wg_keys()));
        for (i, (r, local, remote, v4, v6, underlay)) in [
            (a, "10.30.2.1", "10.30.2.2", "10.30.9.1/30", "fd00:30:9::1/126", "to-b"),
            (b, "10.30.2.2", "10.30.2.1", "10.30.9.2/30", "fd00:30:9::2/126", "to-a"),
        ]
        .into_iter()
        .enumerate()
        {
            let made = match kind {
                Kind::WireGuard => r.ip(&["link", "add", dev, "type", "wireguard"]),
                Kind::Gre => r.ip(&["link", "add", dev, "type", "gre", "local", local, "remote", remote, "ttl", "64"]),
                Kind::Vlan => r.ip(&["link", "add", "link", underlay, "name", dev, "type", "vlan", "id", "100"]),
            };
            if let Err(e) = made {
                panic!(
                    "{kind:?}: cannot create {dev} ({e:#}); this test needs the kernel's {} module: it runs in \
                     `cargo xtask test --kernel 6.1|6.12` VMs, whose Debian kernels have it",
                    match kind {
                        Kind::WireGuard => "wireguard",
                        Kind::Gre => "ip_gre",
                        Kind::Vlan => "8021q",
                    }
                );
            }
            if let Some(((a_priv, a_pub), (b_priv, b_pub))) = &keys {
                let (private, peer) = if i == 0 { (a_priv, b_pub) } else { (b_priv, a_pub) };
                let key_file = std::env::temp_dir().join(format!("{}-wg{i}.key", r.name()));
                std::fs::write(&key_file, format!("{private}\n")).unwrap();
                let endpoint = format!("{remote}:51820");
                let set = r.run(
                    "wg",
                    &[
                        "set", dev, "listen-port", "51820", "private-key", key_file.to_str().unwrap(), "peer", peer,
                        "endpoint", &endpoint, "allowed-ips", "0.0.0.0/0,::/0",
                    ],
                );
                std::fs::remove_file(&key_file).unwrap();
                set.unwrap();
            }
            if kind == Kind::Vlan {
                // The tag in the frame's bytes at the parent's tc egress
                // (with tx VLAN offload it would be skb metadata).
                r.run("ethtool", &["-K", underlay, "txvlan", "off"]).unwrap();
            }
            r.ip(&["link", "set", dev, "mtu", &DEV_MTU.to_string(), "up"]).unwrap();
            r.ip(&["addr", "add", v4, "dev", dev]).unwrap();
            r.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"]).unwrap();
            r.sysctl("net.ipv4.ip_forward", "1").unwrap();
            r.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
            if black_hole {
                r.run("iptables", &["-A", "OUTPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP"]).unwrap();
                r.run("ip6tables", &["-A", "OUTPUT", "-p", "icmpv6", "--icmpv6-type", "packet-too-big", "-j", "DROP"]).unwrap();
            }
        }
        a.ip(&["route", "add", "10.30.3.0/24", "via", "10.30.9.2", "dev", dev]).unwrap();
        a.ip(&["-6", "route", "add", "fd00:30:3::/64", "via", "fd00:30:9::2", "dev", dev]).unwrap();
        b.ip(&["route", "add", "10.30.1.0/24", "via", "10.30.9.1", "dev", dev]).unwrap();
        b.ip(&["-6", "route", "add", "fd00:30:1::/64", "via", "fd00:30:9::1", "dev", dev]).unwrap();
        c.ip(&["route", "add", "default", "via", "10.30.1.2"]).unwrap();
        c.ip(&["-6", "route", "add", "default", "via", "fd00:30:1::2"]).unwrap();
        d.ip(&["route", "add", "default", "via", "10.30.3.1"]).unwrap();
        d.ip(&["-6", "route", "add", "default", "via", "fd00:30:3::1"]).unwrap();
        let link = a.ip(&["-d", "link", "show", dev]).unwrap();
        let want = match kind {
            Kind::WireGuard => "wireguard",
            Kind::Gre => "gre remote 10.30.2.2",
            Kind::Vlan => "vlan protocol 802.1Q id 100",
        };
        assert!(link.contains(want), "{kind:?}: {dev} is a real {want} device: {link}");
        lab
    }

    fn transfer(&self, family: u8, port: u16, timeout: Duration) -> Transfer {
        transfer(&self.c, &self.d, server(family), port, BYTES, timeout).unwrap()
    }
}

/// One transfer c → d and back, with tcpdump -vv at d (the SYN) and at c
/// (the SYN-ACK), and d's TcpInCsumErrors around it.
struct Arm {
    transfer: Transfer,
    syn_at_server: Option<u16>,
    synack_at_client: Option<u16>,
    checksums_ok: usize,
    checksums_bad: usize,
    csum_errors_at_d: u64,
    detail: String,
}

fn arm(lab: &LinkLab, family: u8, port: u16, timeout: Duration) -> Arm {
    let filter = format!("tcp port {port}");
    let at_server = start_capture_with(&lab.d, "to-b", &["-vv"], &filter);
    let at_client = start_capture_with(&lab.c, "to-a", &["-vv"], &filter);
    let errors_before = tcp_in_csum_errors(&lab.d).unwrap();
    let transfer = lab.transfer(family, port, timeout);
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(200)));
    let errors_after = tcp_in_csum_errors(&lab.d).unwrap();
    let s = packets(&at_server.stop(libc::SIGTERM, EXIT));
    let c = packets(&at_client.stop(libc::SIGTERM, EXIT));
    let all = || s.iter().chain(c.iter());
    let first = |p: Option<&Packet>| p.map(|p| p.text.clone()).unwrap_or_else(|| "(none)".into());
    Arm {
        syn_at_server: s.iter().find(|p| p.is_syn()).and_then(Packet::mss),
        synack_at_client: c.iter().find(|p| p.is_syn_ack()).and_then(Packet::mss),
        checksums_ok: all().filter(|p| p.cksum_correct() == Some(true)).count(),
        checksums_bad: all().filter(|p| p.cksum_correct() == Some(false)).count(),
        csum_errors_at_d: errors_after - errors_before,
        detail: format!(
            "{transfer:?}\nSYN at d: {}\nSYN-ACK at c: {}",
            first(s.iter().find(|p| p.is_syn())),
            first(c.iter().find(|p| p.is_syn_ack()))
        ),
        transfer,
    }
}

fn start_clamp(ns: &Netns, iface: &str, mode: &[&str]) -> Proc {
    let mut args = vec!["clamp", "-i", iface, "--json"];
    args.extend_from_slice(mode);
    let mut p = Proc::spawn(pmtu_in(ns, &pmtu_tests::pmtu_bin(), &args), &format!("pmtu {} (in {})", args.join(" "), ns.name()));
    p.wait_for_stderr("attached to 1 interface(s)", pmtu_tests::slow(Duration::from_secs(30)));
    p
}

/// Stops the clamper; returns its counters for `iface`, after checking
/// nothing of pmtu is left there.
fn stop_clamp(ns: &Netns, iface: &str, p: Proc) -> Value {
    let run = p.stop(libc::SIGTERM, EXIT);
    assert!(run.status.success(), "pmtu clamp: {:?}\n{}", run.status, run.stderr.join("\n"));
    let report: Value = serde_json::from_str(run.stdout.last().expect("a report line")).unwrap();
    assert_clean(ns, iface);
    report["interfaces"][0]["counters"].clone()
}

/// The black-hole lab without pmtu (TCP at the endpoints' MSS stalls on
/// DEV), then `pmtu clamp -i DEV --to-pmtu` in a: the SYN d receives and
/// the SYN-ACK c receives carry DEV's MTU less 40 (IPv4) / 60 (IPv6),
/// every checksum tcpdump sees verifies with offloads off, d's stack counts
/// no checksum error, and 1 MiB each way completes.
fn clamp_across(kind: Kind) {
    let lab = LinkLab::build(kind, 1500, true);
    for (ns, iface) in [(&lab.c, "to-a"), (&lab.a, "to-c"), (&lab.b, "to-d"), (&lab.d, "to-b")] {
        offloads_off(ns, iface).unwrap();
    }
    let dev = kind.dev();
    for family in [4u8, 6] {
        let (endpoint_mss, want) = if family == 4 { (1460, DEV_MTU as u16 - 40) } else { (1440, DEV_MTU as u16 - 60) };
        let base = 5300 + 10 * u16::from(family);
        let what = format!("{kind:?} v{family}");
        let none = arm(&lab, family, base, STALL);
        assert!(!none.transfer.completed(), "{what}: stalls without pmtu: {}", none.detail);
        assert_eq!(none.syn_at_server, Some(endpoint_mss), "{what}: the endpoints' own MSS: {}", none.detail);

        let clamp = start_clamp(&lab.a, dev, &["--to-pmtu"]);
        let run = arm(&lab, family, base + 1, go());
        let counters = stop_clamp(&lab.a, dev, clamp);
        assert_eq!(
            (run.syn_at_server, run.synack_at_client),
            (Some(want), Some(want)),
            "{what}: MSS on the wire: {}\ncounters: {counters}",
            run.detail
        );
        assert!(run.transfer.completed(), "{what}: completes with pmtu clamping on {dev}: {}", run.detail);
        assert!(run.checksums_ok >= 4 && run.checksums_bad == 0, "{what}: checksums ok {} bad {}", run.checksums_ok, run.checksums_bad);
        assert_eq!(run.csum_errors_at_d, 0, "{what}: d's TcpInCsumErrors");
        // The SYN leaving by DEV, the SYN-ACK entering by it.
        assert_eq!(counters["clamped"], 2, "{what}: {counters}");
        assert_eq!(counters["errors"], 0, "{what}: {counters}");
        assert_eq!(counters["malformed"], 0, "{what}: {counters}");
    }
}

/// `pmtu trace -i DEV --hook tc` in b while d's 1400-byte DF packets draw
/// a's PTB (MTU 1300) back across DEV: b reports it at DEV's tc ingress,
/// valid (b saw the quoted flow leave by DEV), naming a and 1300 as tcpdump
/// at d does, and d's kernel caches 1300.
fn trace_across(kind: Kind) {
    let lab = LinkLab::build(kind, 1300, false);
    let dev = kind.dev();
    let wire = start_capture(&lab.d, "to-b", "icmp or icmp6");
    let at_b = start_trace(&lab.b, &["-i", dev, "--hook", "tc", "--json"]);
    for family in [4u8, 6] {
        let (ok, out) = TunnelLab::ping(&lab.d, client(family), 1400, 1).unwrap();
        assert!(!ok, "{kind:?} v{family}: 1400 bytes do not fit a's 1300-byte link:\n{out}");
        let route = lab.d.ip(&[if family == 4 { "-4" } else { "-6" }, "route", "get", client(family)]).unwrap();
        assert_eq!(pmtu_user::lab::cached_mtu(&route), Some(1300), "{kind:?} v{family}: d's kernel: {route}");
    }
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(300)));
    let run = at_b.stop(libc::SIGTERM, EXIT);
    let seen = packets(&wire.stop(libc::SIGTERM, EXIT));
    let mut on_wire: Vec<(String, u32)> = seen.iter().filter_map(Packet::ptb).collect();
    on_wire.sort();
    assert_eq!(on_wire.len(), 2, "{kind:?}: one PTB per family at d: {seen:#?}");
    assert!(on_wire.iter().all(|(_, mtu)| *mtu == 1300), "{on_wire:?}");

    assert!(run.status.success(), "trace in b: {:?}\n{}", run.status, run.stderr.join("\n"));
    let mut lines: Vec<Value> = run.stdout.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.pop().expect("the final table");
    let mut events: Vec<(String, u32)> =
        lines.iter().map(|e| (e["reporter"].as_str().unwrap().to_string(), e["mtu"].as_u64().unwrap() as u32)).collect();
    events.sort();
    assert_eq!(events, on_wire, "{kind:?}: b's events vs tcpdump at d:\n{}", run.stdout.join("\n"));
    for e in &lines {
        assert_eq!(e["ifname"], dev, "{e}");
        assert_eq!(e["hook"], "tc-ingress", "{e}");
        assert_eq!(e["verdict"], "valid", "{e}");
        let dst: IpAddr = e["orig_dst"].as_str().unwrap().parse().unwrap();
        let family = if dst.is_ipv4() { 4 } else { 6 };
        assert_eq!(e["orig_src"].as_str().unwrap(), server(family), "{e}");
        assert_eq!(dst.to_string(), client(family), "{e}");
    }
    assert_clean(&lab.b, dev);
}

#[test]
fn clamp_across_wireguard() {
    if require_root("clamp_across_wireguard") {
        clamp_across(Kind::WireGuard);
    }
}

#[test]
fn clamp_across_gre() {
    if require_root("clamp_across_gre") {
        clamp_across(Kind::Gre);
    }
}

#[test]
fn clamp_across_vlan() {
    if require_root("clamp_across_vlan") {
        clamp_across(Kind::Vlan);
    }
}

#[test]
fn trace_across_wireguard() {
    if require_root("trace_across_wireguard") {
        trace_across(Kind::WireGuard);
    }
}

#[test]
fn trace_across_gre() {
    if require_root("trace_across_gre") {
        trace_across(Kind::Gre);
    }
}

#[test]
fn trace_across_vlan() {
    if require_root("trace_across_vlan") {
        trace_across(Kind::Vlan);
    }
}

/// On the VLAN's parent, where the frames carry the 802.1Q tag in their
/// bytes (tx VLAN offload off): `pmtu clamp -i to-b --set-mss 1000` in a
/// clamps the tagged SYN leaving by to-b (tcpdump -e on to-b shows it
/// tagged, vlan 100, with MSS 1000) and the SYN-ACK entering by it (the
/// kernel strips the tag before tc ingress), and the transfer completes.
#[test]
fn clamp_tagged_frames_on_the_vlan_parent() {
    if !require_root("clamp_tagged_frames_on_the_vlan_parent") {
        return;
    }
    let lab = LinkLab::build(Kind::Vlan, 1500, true);
    for (ns, iface) in [(&lab.c, "to-a"), (&lab.d, "to-b")] {
        offloads_off(ns, iface).unwrap();
    }
    let port = 5350;
    let tagged = start_capture_with(&lab.a, "to-b", &["-e", "-vv"], &format!("vlan 100 and tcp port {port}"));
    let clamp = start_clamp(&lab.a, "to-b", &["--set-mss", "1000"]);
    let run = arm(&lab, 4, port, go());
    let counters = stop_clamp(&lab.a, "to-b", clamp);
    let on_parent = tagged.stop(libc::SIGTERM, EXIT);
    assert_eq!((run.syn_at_server, run.synack_at_client), (Some(1000), Some(1000)), "{}\ncounters: {counters}", run.detail);
    assert!(run.transfer.completed(), "{}", run.detail);
    assert!(run.checksums_ok >= 4 && run.checksums_bad == 0, "checksums ok {} bad {}", run.checksums_ok, run.checksums_bad);
    assert_eq!(run.csum_errors_at_d, 0, "d's TcpInCsumErrors");
    let frames = packets(&on_parent);
    let syn = frames.iter().find(|p| p.is_syn()).unwrap_or_else(|| panic!("the SYN on to-b: {frames:#?}"));
    assert!(syn.text.contains("vlan 100") && syn.mss() == Some(1000), "tagged and clamped on to-b: {}", syn.text);
    assert_eq!(counters["clamped"], 2, "{counters}");
}
