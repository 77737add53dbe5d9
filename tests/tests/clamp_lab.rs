//! The black-hole lab (seeds 002/003): a 2 MB transfer each way stalls when
//! the routers hide their Packet-Too-Big messages, and completes once r1
//! clamps the MSS, with pmtu exactly as with iptables' TCPMSS target.

use std::time::Duration;

use pmtu_tests::{
    procs::{Finished, Proc, pmtu_in, scapy, start_capture_with},
    require_root,
    residue::{assert_clean, attached, kernel_has_tcx, legacy_records},
};
use pmtu_user::lab::BlackHoleLab;
use serde_json::Value;

const MB2: usize = 2 * 1024 * 1024;
const STALL: Duration = Duration::from_secs(3);
const GO: Duration = Duration::from_secs(20);
const EXIT: Duration = Duration::from_secs(20);

/// The MSS option of the first SYN and first SYN-ACK in tcpdump's output,
/// e.g. `... Flags [S], ..., options [mss 1360,sackOK,...], length 0`.
fn mss_of(capture: &Finished, flags: &str) -> Option<u16> {
    capture
        .stdout
        .iter()
        .filter(|l| l.contains(&format!("Flags [{flags}]")))
        .find_map(|l| l.split("mss ").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
}

/// With `-vv`, tcpdump checks every TCP checksum it can: none may be wrong.
fn checksums(capture: &Finished) -> (usize, usize) {
    let all = capture.stdout.join("\n");
    (all.matches("(correct)").count(), all.matches("(incorrect").count())
}

struct Arm {
    syn_at_server: Option<u16>,
    synack_at_client: Option<u16>,
    completed: bool,
    checksums_ok: usize,
    checksums_bad: usize,
}

/// One transfer with captures at s3 (the SYN) and c0 (the SYN-ACK).
fn arm(lab: &BlackHoleLab, server: &str, port: u16, bytes: usize, timeout: Duration) -> Arm {
    let filter = format!("tcp port {port}");
    let at_server = start_capture_with(&lab.s3, BlackHoleLab::S3_IF, &["-vv"], &filter);
    let at_client = start_capture_with(&lab.c0, BlackHoleLab::C0_IF, &["-vv"], &filter);
    let t = lab.transfer(server, port, bytes, timeout).unwrap();
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(200)));
    let s = at_server.stop(libc::SIGTERM, EXIT);
    let c = at_client.stop(libc::SIGTERM, EXIT);
    let (ok_s, bad_s) = checksums(&s);
    let (ok_c, bad_c) = checksums(&c);
    Arm {
        syn_at_server: mss_of(&s, "S"),
        synack_at_client: mss_of(&c, "S."),
        completed: t.completed(),
        checksums_ok: ok_s + ok_c,
        checksums_bad: bad_s + bad_c,
    }
}

fn start_clamp(lab: &BlackHoleLab, mode: &[&str]) -> Proc {
    let mut args = vec!["clamp", "-i", BlackHoleLab::R1_IF_C0, "-i", BlackHoleLab::R1_IF_R2, "--json"];
    args.extend_from_slice(mode);
    let mut p = Proc::spawn(pmtu_in(&lab.r1, &pmtu_tests::pmtu_bin(), &args), "pmtu clamp");
    p.wait_for_stderr("attached to", Duration::from_secs(30));
    p
}

/// Stops the clamper and returns its per-interface counters.
fn stop_clamp(lab: &BlackHoleLab, p: Proc) -> Vec<Value> {
    let run = p.stop(libc::SIGTERM, EXIT);
    assert!(run.status.success(), "pmtu clamp: {:?}", run.stderr);
    let report: Value = serde_json::from_str(run.stdout.last().expect("a report line")).unwrap();
    assert_clean(&lab.r1, BlackHoleLab::R1_IF_C0);
    assert_clean(&lab.r1, BlackHoleLab::R1_IF_R2);
    report["interfaces"].as_array().unwrap().clone()
}

fn counter(ifaces: &[Value], name: &str) -> u64 {
    ifaces.iter().map(|i| i["counters"][name].as_u64().unwrap()).sum()
}

fn black_hole(family: u8) {
    let (server, client_default, want) = if family == 4 {
        (BlackHoleLab::SERVER_V4, 1460, 1360)
    } else {
        (BlackHoleLab::SERVER_V6, 1440, 1340)
    };
    let lab = BlackHoleLab::build().unwrap();

    let none = arm(&lab, server, 5001, MB2, STALL);
    assert!(!none.completed, "v{family}: the transfer must stall with no clamping");
    assert_eq!(none.syn_at_server, Some(client_default));

    lab.iptables_clamp_on_r1().unwrap();
    let ipt = arm(&lab, server, 5002, MB2, GO);
    lab.iptables_unclamp_on_r1().unwrap();
    assert!(ipt.completed, "v{family}: iptables TCPMSS must end the black hole");

    let clamp = start_clamp(&lab, &["--to-pmtu"]);
    let pmtu = arm(&lab, server, 5003, MB2, GO);
    let ifaces = stop_clamp(&lab, clamp);
    assert!(pmtu.completed, "v{family}: pmtu clamp --to-pmtu must end the black hole");
    assert_eq!(
        (pmtu.syn_at_server, pmtu.synack_at_client),
        (ipt.syn_at_server, ipt.synack_at_client),
        "v{family}: pmtu's MSS on the wire must equal iptables TCPMSS's"
    );
    assert_eq!((pmtu.syn_at_server, pmtu.synack_at_client), (Some(want), Some(want)));
    // Clamped once on the way in; the same SYN leaving r1 is already low.
    assert_eq!(counter(&ifaces, "clamped"), 2, "{ifaces:?}");
    assert_eq!(counter(&ifaces, "syn_seen"), 4, "{ifaces:?}");
    assert_eq!(counter(&ifaces, "at_or_below"), 2, "{ifaces:?}");
    assert_eq!(counter(&ifaces, "errors") + counter(&ifaces, "malformed") + counter(&ifaces, "no_route"), 0);

    // Endpoints that compute full checksums in software: tcpdump then
    // verifies the ones r1 rewrote.
    for (ns, ifname) in [(&lab.c0, BlackHoleLab::C0_IF), (&lab.s3, BlackHoleLab::S3_IF)] {
        ns.run("ethtool", &["-K", ifname, "tx", "off"]).unwrap();
    }
    let clamp = start_clamp(&lab, &["--to-pmtu"]);
    let full = arm(&lab, server, 5004, 64 * 1024, GO);
    stop_clamp(&lab, clamp);
    assert!(full.completed);
    assert_eq!((full.syn_at_server, full.synack_at_client), (Some(want), Some(want)));
    assert!(full.checksums_ok >= 4 && full.checksums_bad == 0, "v{family}: checksums ok {} bad {}", full.checksums_ok, full.checksums_bad);

    let clamp = start_clamp(&lab, &["--set-mss", "1200"]);
    let fixed = arm(&lab, server, 5005, MB2, GO);
    let ifaces = stop_clamp(&lab, clamp);
    assert!(fixed.completed);
    assert_eq!((fixed.syn_at_server, fixed.synack_at_client), (Some(1200), Some(1200)));
    assert_eq!(counter(&ifaces, "clamped"), 2);

    // Never raises, never touches an MSS already below: the handshake
    // (a small transfer fits one segment) keeps the endpoints' values.
    let clamp = start_clamp(&lab, &["--set-mss", "1500"]);
    let high = arm(&lab, server, 5006, 100, GO);
    let ifaces = stop_clamp(&lab, clamp);
    assert!(high.completed);
    assert_eq!((high.syn_at_server, high.synack_at_client), (Some(client_default), Some(client_default)));
    assert_eq!(counter(&ifaces, "clamped"), 0);
    assert_eq!(counter(&ifaces, "at_or_below"), 4);
}

#[test]
fn black_hole_v4() {
    if require_root("black_hole_v4") {
        black_hole(4);
    }
}

#[test]
fn black_hole_v6() {
    if require_root("black_hole_v6") {
        black_hole(6);
    }
}

/// `pmtu trace` and `pmtu clamp` on the same interfaces at once: both run
/// (each hands the packet on), the clamp works, the tracer sees the
/// traffic, and each detaches only its own programs. With TCX the clamper
/// goes by SIGKILL (the kernel detaches its links); without TCX (Linux
/// 6.1: cls_bpf filters, which outlive a SIGKILL, see legacy_tc.rs) both
/// are at pmtu's priorities, recorded under /run/pmtu/legacy-tc while they
/// run, and the clamper goes by SIGINT, taking only its own filters.
#[test]
fn trace_and_clamp_share_interfaces() {
    if !require_root("trace_and_clamp_share_interfaces") {
        return;
    }
    let lab = BlackHoleLab::build().unwrap();
    let tcx = kernel_has_tcx();
    let ifs = ["-i", BlackHoleLab::R1_IF_C0, "-i", BlackHoleLab::R1_IF_R2];
    let trace = pmtu_tests::procs::start_trace(&lab.r1, &[&ifs[..], &["--json"]].concat());
    let clamp = start_clamp(&lab, &["--to-pmtu"]);
    for iface in [BlackHoleLab::R1_IF_C0, BlackHoleLab::R1_IF_R2] {
        let on = attached(&lab.r1, iface);
        let want: &[&str] = if tcx {
            // The kernel keeps 15 characters of a program's name.
            &["Ingress:pmtu_clamp_tc_i", "Egress:pmtu_clamp_tc_e", "Ingress:pmtu_observe_tc", "Egress:pmtu_observe_tc"]
        } else {
            &[
                "ingress:16:pmtu_clamp_tc_ingress",
                "egress:16:pmtu_clamp_tc_egress",
                "ingress:17:pmtu_observe_tc_ingress",
                "egress:17:pmtu_observe_tc_egress",
            ]
        };
        for w in want {
            assert!(on.iter().any(|p| p.starts_with(w)), "{iface}: {w} attached (tcx: {tcx}): {on:?}");
        }
        let records = legacy_records(&lab.r1, iface);
        if tcx {
            assert!(records.is_empty(), "{iface}: no legacy records with TCX: {records:?}");
        } else {
            // One per filter: ingress and egress, clamper (10) and observer (11).
            for r in ["ingress-10", "egress-10", "ingress-11", "egress-11"] {
                assert!(records.iter().any(|n| n.ends_with(r)), "{iface}: record *-{r}: {records:?}");
            }
        }
    }
    let t = lab.transfer(BlackHoleLab::SERVER_V4, 5101, MB2, GO).unwrap();
    assert!(t.completed(), "{t:?}");
    if tcx {
        // The clamper goes first (SIGKILL: the kernel detaches its links),
        // the tracer must still be attached and working.
        let killed = clamp.stop(libc::SIGKILL, EXIT);
        assert!(!killed.status.success());
    } else {
        let stopped = clamp.stop(libc::SIGINT, EXIT);
        assert!(stopped.status.success(), "pmtu clamp: {:?}", stopped.stderr);
    }
    for iface in [BlackHoleLab::R1_IF_C0, BlackHoleLab::R1_IF_R2] {
        let on = attached(&lab.r1, iface);
        assert!(on.iter().all(|p| !p.contains("pmtu_clamp")), "{iface}: the clamper's programs gone: {on:?}");
        assert_eq!(on.iter().filter(|p| p.contains("pmtu_observe_tc")).count(), 2, "{iface}: the tracer's stay: {on:?}");
        if !tcx {
            let records = legacy_records(&lab.r1, iface);
            assert!(records.iter().all(|n| !n.ends_with("-10")), "{iface}: the clamper's records gone: {records:?}");
        }
    }
    let t = lab.transfer(BlackHoleLab::SERVER_V6, 5102, 64 * 1024, GO).unwrap();
    assert!(!t.completed(), "without the clamper the black hole is back");
    let run = trace.stop(libc::SIGINT, EXIT);
    assert!(run.status.success(), "{:?}", run.stderr);
    let table: Value = serde_json::from_str(run.stdout.last().unwrap()).unwrap();
    let inspected = table["counters"]["inspected"].as_u64().unwrap();
    // At tc (the default hook) GRO has merged the transfers' segments into
    // large packets first, so hundreds, not thousands; a tracer that saw
    // none of the transfers would count only a few dozen control packets.
    assert!(inspected > 200, "the tracer saw the transfers: {inspected}");
    assert_clean(&lab.r1, BlackHoleLab::R1_IF_C0);
    assert_clean(&lab.r1, BlackHoleLab::R1_IF_R2);
}

/// A SYN with no MSS option (crafted with scapy: Linux always sends one)
/// gets one inserted at r1, the way xt_TCPMSS does: min(path, 536) for
/// IPv4, min(path, 1220) for IPv6, in front of the other options; s3's
/// stack accepts it (it answers SYN-ACK) and tcpdump verifies its checksum.
#[test]
fn option_inserted_on_a_real_path() {
    if !require_root("option_inserted_on_a_real_path") {
        return;
    }
    let lab = BlackHoleLab::build().unwrap();
    let clamp = start_clamp(&lab, &["--to-pmtu"]);
    for (family, server, port, want) in [(4, BlackHoleLab::SERVER_V4, 5201u16, 536u16), (6, BlackHoleLab::SERVER_V6, 5202, 1220)] {
        let addr = std::net::SocketAddr::new(server.parse().unwrap(), port);
        // Listening until this round is over (its sender dropped), however
        // long scapy takes to start (many seconds in an emulated VM).
        let (done, over) = std::sync::mpsc::channel::<()>();
        let listener = lab.s3.spawn(move || {
            let l = std::net::TcpListener::bind(addr).unwrap();
            // Err only once `done` is dropped: the round is over either way.
            assert!(over.recv().is_err(), "nothing is ever sent on this channel");
            drop(l);
        });
        std::thread::sleep(pmtu_tests::slow(Duration::from_millis(200)));
        let filter = format!("tcp port {port}");
        let at_server = start_capture_with(&lab.s3, BlackHoleLab::S3_IF, &["-vv"], &filter);
        let at_client = start_capture_with(&lab.c0, BlackHoleLab::C0_IF, &["-vv"], &filter);
        let ip = if family == 4 { format!("IP(dst='{server}')") } else { format!("IPv6(dst='{server}')") };
        scapy(
            &lab.c0,
            &format!("send({ip}/TCP(sport=40100, dport={port}, flags='S', seq=1000, options=[('WScale', 7), ('NOP', None), ('SAckOK', b'')]), verbose=0)"),
        );
        std::thread::sleep(pmtu_tests::slow(Duration::from_millis(500)));
        let s = at_server.stop(libc::SIGTERM, EXIT);
        let c = at_client.stop(libc::SIGTERM, EXIT);
        assert_eq!(mss_of(&s, "S"), Some(want), "v{family} SYN at s3:\n{}", s.stdout.join("\n"));
        let syn = s.stdout.iter().find(|l| l.contains("Flags [S]")).unwrap();
        assert!(syn.contains("options [mss"), "MSS first, as xt_TCPMSS inserts it: {syn}");
        assert!(syn.contains("wscale 7"), "the other options kept: {syn}");
        // s3's own SYN-ACK shows a partial (offloaded) checksum; the SYN
        // scapy sent with a full one must still verify after r1's rewrite.
        assert!(syn.contains("(correct)"), "v{family}: {syn}");
        assert!(c.stdout.iter().any(|l| l.contains("Flags [S.]")), "v{family}: s3 answered the SYN:\n{}", c.stdout.join("\n"));
        drop(done);
        listener.unwrap().join().unwrap();
    }
    let ifaces = stop_clamp(&lab, clamp);
    assert_eq!(counter(&ifaces, "inserted"), 2, "{ifaces:?}");
}
