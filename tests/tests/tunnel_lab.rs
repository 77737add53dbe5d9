//! pmtu on a tunnel, where real routers need MSS clamping most: a userspace
//! UDP tunnel (`pmtu-tun-relay` at each end, as wireguard-go or OpenVPN)
//! whose tun device (MTU 1400, an L3 link with no Ethernet header) sits
//! between 1500-byte links. See `pmtu_tests::tunnel` for the layout.
//!
//! First the lab itself, without pmtu: the relays carry IPv4 and IPv6, a
//! big TCP transfer stalls when the tunnel ends hide their PTBs, and a PTB
//! crosses the tunnel when they do not. Then `pmtu clamp` on a's tun ends
//! the black hole with the MSS the tunnel needs, and `pmtu trace` on the tun
//! sees the PTB that crosses it.

use std::{net::IpAddr, time::Duration};

use pmtu_tests::{
    procs::{Proc, pmtu_in, start_capture, start_capture_with},
    require_root,
    residue::assert_clean,
    tunnel::{Relay, TunnelLab, TunnelOptions, offloads_off, relay_bin},
    wire::{Packet, packets},
};
use pmtu_user::lab::Netns;
use serde_json::Value;

const MB2: usize = 2 * 1024 * 1024;
const STALL: Duration = Duration::from_secs(3);
const GO: Duration = Duration::from_secs(20);
const EXIT: Duration = Duration::from_secs(20);

fn server(family: u8) -> &'static str {
    if family == 4 { TunnelLab::SERVER_V4 } else { TunnelLab::SERVER_V6 }
}

fn client(family: u8) -> &'static str {
    if family == 4 { TunnelLab::CLIENT_V4 } else { TunnelLab::CLIENT_V6 }
}

/// The black-hole lab with offloads off on the endpoints' links, so every
/// packet tcpdump shows is one real segment with a full checksum.
fn black_hole_lab() -> TunnelLab {
    let lab = TunnelLab::build(TunnelOptions::BLACK_HOLE).unwrap();
    for (ns, ifname) in lab.edge_ifaces() {
        offloads_off(ns, ifname).unwrap();
    }
    lab
}

/// What one transfer looked like on the wire at c and d.
struct Arm {
    completed: bool,
    syn_at_server: Option<u16>,
    synack_at_client: Option<u16>,
    /// Every TCP segment of the connection at c and d, with its checksum.
    checksums_ok: usize,
    checksums_bad: usize,
    detail: String,
}

fn arm(lab: &TunnelLab, family: u8, port: u16, bytes: usize, timeout: Duration) -> Arm {
    let filter = format!("tcp port {port}");
    let at_server = start_capture_with(&lab.d, TunnelLab::D_IF, &["-vv"], &filter);
    let at_client = start_capture_with(&lab.c, TunnelLab::C_IF, &["-vv"], &filter);
    let t = lab.transfer(server(family), port, bytes, timeout).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let s = packets(&at_server.stop(libc::SIGTERM, EXIT));
    let c = packets(&at_client.stop(libc::SIGTERM, EXIT));
    let all = || s.iter().chain(c.iter());
    let first_line = |p: Option<&Packet>| p.map(|p| p.text.clone()).unwrap_or_else(|| "(none)".into());
    Arm {
        completed: t.completed(),
        syn_at_server: s.iter().find(|p| p.is_syn()).and_then(Packet::mss),
        synack_at_client: c.iter().find(|p| p.is_syn_ack()).and_then(Packet::mss),
        checksums_ok: all().filter(|p| p.cksum_correct() == Some(true)).count(),
        checksums_bad: all().filter(|p| p.cksum_correct() == Some(false)).count(),
        detail: format!(
            "{t:?}\nSYN at d: {}\nSYN-ACK at c: {}",
            first_line(s.iter().find(|p| p.is_syn())),
            first_line(c.iter().find(|p| p.is_syn_ack()))
        ),
    }
}

fn start_clamp(lab: &TunnelLab, mode: &[&str]) -> Proc {
    let mut args = vec!["clamp", "-i", TunnelLab::TUN, "--json"];
    args.extend_from_slice(mode);
    let mut p = Proc::spawn(pmtu_in(&lab.a, &pmtu_tests::pmtu_bin(), &args), &format!("pmtu {} (in a)", args.join(" ")));
    p.wait_for_stderr("attached to", Duration::from_secs(30));
    p
}

/// Stops the clamper; returns the tun's counters.
fn stop_clamp(lab: &TunnelLab, p: Proc) -> Value {
    let run = p.stop(libc::SIGTERM, EXIT);
    assert!(run.status.success(), "pmtu clamp: {:?}\n{}", run.status, run.stderr.join("\n"));
    let report: Value = serde_json::from_str(run.stdout.last().expect("a report line")).unwrap();
    assert_clean(&lab.a, TunnelLab::TUN);
    report["interfaces"][0]["counters"].clone()
}

/// The lab alone: the relays carry both families, a packet that fits the
/// tunnel crosses, a bigger one vanishes without a PTB (the black hole),
/// and TCP at the endpoints' MSS stalls. Without this, "pmtu fixes it"
/// would prove nothing.
#[test]
fn tunnel_black_hole_without_pmtu() {
    if !require_root("tunnel_black_hole_without_pmtu") {
        return;
    }
    let mut lab = black_hole_lab();
    for family in [4u8, 6] {
        let (ok, out) = TunnelLab::ping(&lab.c, server(family), 1400, 2).unwrap();
        assert!(ok, "v{family}: a 1400-byte packet fits the tunnel:\n{out}");
        let ptbs = start_capture(&lab.c, TunnelLab::C_IF, "icmp or icmp6");
        let (ok, out) = TunnelLab::ping(&lab.c, server(family), 1401, 2).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let seen = packets(&ptbs.stop(libc::SIGTERM, EXIT));
        assert!(!ok, "v{family}: a 1401-byte DF packet cannot cross the 1400-byte tunnel:\n{out}");
        assert!(
            seen.iter().all(|p| p.ptb().is_none()),
            "v{family}: a must not tell c (black hole): {seen:#?}"
        );

        let none = arm(&lab, family, 5000 + u16::from(family), MB2, STALL);
        assert!(!none.completed, "v{family}: the transfer must stall with no clamping: {}", none.detail);
        let mss = if family == 4 { 1460 } else { 1440 };
        assert_eq!(none.syn_at_server, Some(mss), "v{family}: endpoints' own MSS: {}", none.detail);
    }
    lab.relays_alive().unwrap();
    for (status, stderr) in lab.stop_relays() {
        assert!(status.is_some_and(|s| s.success()), "relay exit {status:?}: {stderr}");
        assert!(stderr.contains("exiting"), "relay says why it stops: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// The PTB variant: d's 1400-byte DF packets fit the tunnel but not a's
/// 1300-byte link to c, so a sends a PTB (MTU 1300) to d, through the
/// tunnel, and d's kernel caches it.
#[test]
fn ptb_crosses_the_tunnel_on_the_wire() {
    if !require_root("ptb_crosses_the_tunnel_on_the_wire") {
        return;
    }
    let lab = TunnelLab::build(TunnelOptions::PTB_ACROSS).unwrap();
    for family in [4u8, 6] {
        let wire = start_capture(&lab.d, TunnelLab::D_IF, "icmp or icmp6");
        let (ok, out) = TunnelLab::ping(&lab.d, client(family), 1400, 1).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let seen = packets(&wire.stop(libc::SIGTERM, EXIT));
        assert!(!ok, "v{family}: 1400 bytes do not fit a's 1300-byte link:\n{out}");
        let ptbs: Vec<_> = seen.iter().filter_map(Packet::ptb).collect();
        assert_eq!(ptbs.len(), 1, "v{family}: one PTB reaches d: {seen:#?}");
        let (reporter, mtu) = &ptbs[0];
        assert_eq!(*mtu, 1300, "v{family}");
        assert!(a_addresses(&lab).contains(reporter), "v{family}: the PTB comes from a: {reporter}");
        let route = lab.d.ip(&[if family == 4 { "-4" } else { "-6" }, "route", "get", client(family)]).unwrap();
        assert_eq!(pmtu_user::lab::cached_mtu(&route), Some(1300), "v{family}: d's kernel: {route}");
        let (ok, out) = TunnelLab::ping(&lab.d, client(family), 1300, 1).unwrap();
        assert!(ok, "v{family}: 1300 bytes go through:\n{out}");
    }
}

/// Every address of a (the source of a's PTBs is one of them).
fn a_addresses(lab: &TunnelLab) -> Vec<String> {
    lab.a
        .ip(&["-o", "addr", "show"])
        .unwrap()
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = w.iter().position(|x| *x == "inet" || *x == "inet6")?;
            Some(w.get(at + 1)?.split('/').next()?.to_string())
        })
        .collect()
}

/// `pmtu clamp -i tun0` in a, `--set-mss 1000` then `--to-pmtu`: the SYN
/// d receives and the SYN-ACK c receives carry the clamped MSS (clamped at
/// the tun's egress and ingress respectively), the checksums verify, and
/// 2 MiB each way completes where it stalled.
fn clamp_on_the_tun(family: u8) {
    let lab = black_hole_lab();
    let (client_default, to_pmtu) = if family == 4 { (1460, 1400 - 40) } else { (1440, 1400 - 60) };
    let base = 5100 + 10 * u16::from(family);

    let none = arm(&lab, family, base, MB2, STALL);
    assert!(!none.completed, "v{family}: must stall without pmtu: {}", none.detail);
    assert_eq!(none.syn_at_server, Some(client_default), "{}", none.detail);

    for (i, (mode, want)) in [(&["--set-mss", "1000"][..], 1000u16), (&["--to-pmtu"][..], to_pmtu)].into_iter().enumerate() {
        let clamp = start_clamp(&lab, mode);
        let run = arm(&lab, family, base + 1 + i as u16, MB2, GO);
        let counters = stop_clamp(&lab, clamp);
        let what = format!("v{family} {mode:?}");
        assert_eq!(
            (run.syn_at_server, run.synack_at_client),
            (Some(want), Some(want)),
            "{what}: MSS on the wire: {}\ncounters: {counters}",
            run.detail
        );
        assert!(run.completed, "{what}: the transfer must complete: {}", run.detail);
        assert!(
            run.checksums_ok >= 4 && run.checksums_bad == 0,
            "{what}: checksums ok {} bad {}",
            run.checksums_ok,
            run.checksums_bad
        );
        // The SYN leaving by the tun and the SYN-ACK entering by it.
        assert_eq!(counters["clamped"], 2, "{what}: {counters}");
        assert_eq!(counters["errors"].as_u64().unwrap_or(1) + counters["malformed"].as_u64().unwrap_or(1), 0, "{what}: {counters}");
    }
}

#[test]
fn clamp_on_the_tun_v4() {
    if require_root("clamp_on_the_tun_v4") {
        clamp_on_the_tun(4);
    }
}

#[test]
fn clamp_on_the_tun_v6() {
    if require_root("clamp_on_the_tun_v6") {
        clamp_on_the_tun(6);
    }
}

/// `pmtu trace -i tun0 --hook tc` at both tunnel ends while d's big DF
/// packets draw a's PTB through the tunnel: b sees it arrive at the tun's
/// ingress (valid: b saw the quoted flow leave by the tun), a sees it leave
/// by the tun's egress; each names a as the reporter and MTU 1300, as
/// tcpdump at d does.
#[test]
fn trace_sees_the_ptb_across_the_tun() {
    if !require_root("trace_sees_the_ptb_across_the_tun") {
        return;
    }
    let lab = TunnelLab::build(TunnelOptions::PTB_ACROSS).unwrap();
    let wire = start_capture(&lab.d, TunnelLab::D_IF, "icmp or icmp6");
    let at_b = pmtu_tests::procs::start_trace(&lab.b, &["-i", TunnelLab::TUN, "--hook", "tc", "--json"]);
    let at_a = pmtu_tests::procs::start_trace(&lab.a, &["-i", TunnelLab::TUN, "--hook", "tc"]);
    for family in [4u8, 6] {
        let (ok, out) = TunnelLab::ping(&lab.d, client(family), 1400, 1).unwrap();
        assert!(!ok, "v{family}: {out}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let b_run = at_b.stop(libc::SIGTERM, EXIT);
    let a_run = at_a.stop(libc::SIGTERM, EXIT);
    let seen = packets(&wire.stop(libc::SIGTERM, EXIT));
    let mut on_wire: Vec<(String, u32)> = seen.iter().filter_map(Packet::ptb).collect();
    on_wire.sort();
    assert_eq!(on_wire.len(), 2, "one PTB per family at d: {seen:#?}");

    // b: JSON events, all valid.
    assert!(b_run.status.success(), "trace in b: {:?}\n{}", b_run.status, b_run.stderr.join("\n"));
    let mut lines: Vec<Value> = b_run.stdout.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.pop().expect("the final table");
    let mut at_b: Vec<(String, u32)> =
        lines.iter().map(|e| (e["reporter"].as_str().unwrap().to_string(), e["mtu"].as_u64().unwrap() as u32)).collect();
    at_b.sort();
    assert_eq!(at_b, on_wire, "b's events vs tcpdump at d:\n{}", b_run.stdout.join("\n"));
    for e in &lines {
        assert_eq!(e["ifname"], TunnelLab::TUN, "{e}");
        // The PTB arrives at b's tun from the relay: tc ingress.
        assert_eq!(e["hook"], "tc-ingress", "{e}");
        assert_eq!(e["verdict"], "valid", "{e}");
        let dst: IpAddr = e["orig_dst"].as_str().unwrap().parse().unwrap();
        let src: IpAddr = e["orig_src"].as_str().unwrap().parse().unwrap();
        let family = if dst.is_ipv4() { 4 } else { 6 };
        assert_eq!((src.to_string(), dst.to_string()), (server(family).to_string(), client(family).to_string()), "{e}");
    }

    // a: the text lines name the reporter and the MTU.
    assert!(a_run.status.success(), "trace in a: {:?}\n{}", a_run.status, a_run.stderr.join("\n"));
    for (reporter, mtu) in &on_wire {
        let needle = format!("{reporter} says mtu {mtu} for");
        assert!(
            a_run.stdout.iter().any(|l| l.contains(TunnelLab::TUN) && l.contains(&needle)),
            "a's trace names {needle:?}:\n{}",
            a_run.stdout.join("\n")
        );
    }
    eprintln!("trace in a:\n{}\ntrace in b:\n{}", a_run.stdout.join("\n"), b_run.stdout.join("\n"));
    assert_clean(&lab.a, TunnelLab::TUN);
    assert_clean(&lab.b, TunnelLab::TUN);
}

/// The relay stops cleanly on SIGTERM and when its parent dies (so a test
/// killed outright leaves none running), and refuses a missing device.
#[test]
fn relay_exits_on_sigterm_and_with_its_parent() {
    if !require_root("relay_exits_on_sigterm_and_with_its_parent") {
        return;
    }
    let ns = Netns::create(format!("{}-relay", pmtu_user::lab::unique_prefix())).unwrap();
    ns.ip(&["tuntap", "add", "dev", "tun0", "mode", "tun"]).unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();

    let mut relay = Relay::start(&ns, "tun0", "127.0.0.1:40001", "127.0.0.1:40002").unwrap();
    let link = ns.ip(&["link", "show", "tun0"]).unwrap();
    assert!(!link.contains("NO-CARRIER"), "attached, the tun has a carrier: {link}");
    let status = relay.stop(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {}", relay.stderr_text());

    // A shell parent that exits after a second: the relay must follow it.
    let bin = relay_bin();
    let script =
        format!("{} --tun tun0 --local 127.0.0.1:40001 --peer 127.0.0.1:40002 >/dev/null 2>&1 & echo $!; sleep 1", bin.display());
    let out = ns.run("sh", &["-c", &script]).unwrap();
    let pid: u32 = out.trim().parse().unwrap_or_else(|_| panic!("a pid: {out:?}"));
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
    });
    assert!(gone, "relay {pid} outlived its parent");

    let missing = ns.command(bin.to_str().unwrap()).args(["--tun", "nosuch0", "--local", "127.0.0.1:40003", "--peer", "127.0.0.1:40004"]).output().unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{err}");
    assert!(err.contains("no interface nosuch0"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let usage = ns.command(bin.to_str().unwrap()).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}
