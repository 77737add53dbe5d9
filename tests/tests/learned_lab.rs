//! Learned clamping (issue 13) in the seed-001 lab, h0 —1500— r1 —1370— r2
//! —1350— h3, with pmtu on the router r1:
//!
//! r1's own routes say 1370 toward h3, so route-based clamping (iptables'
//! TCPMSS, `--to-pmtu`) gives 1330 / 1310. A DF probe from h0 makes r2
//! send a PTB (mtu 1350) back across r1, which Linux does not keep on r1
//! (it is not addressed to r1: `ip route get` on r1 shows no exception).
//! pmtu learns it, and the next connection's SYN (toward h3) and SYN-ACK
//! (from h3) leave r1 with 1310 / 1290: checked on the wire at h3 and h0,
//! with checksums verified by tcpdump and the transfer completing. A forged
//! PTB (for a flow nobody sent) changes nothing; after the (short) expiry
//! the clamp is route-based again. pmtu's JSON lines say which rule and
//! which report clamped each SYN.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use pmtu_tests::{
    daemon::{Scratch, client, client_json},
    procs::{Finished, Proc, pmtu_in, scapy, start_capture_with},
    require_root,
    residue::assert_clean,
    tunnel::offloads_off,
    wire,
};
use pmtu_user::lab::{SeedLab, transfer};
use serde_json::Value;

const EXIT: Duration = Duration::from_secs(20);
/// How long a learned PMTU lasts in these tests.
const EXPIRES_SECS: u64 = 8;

struct Family {
    v: u8,
    target: &'static str,
    /// h3's and h0's addresses as the other side sees them.
    h0: &'static str,
    /// What route-based clamping on r1 gives (its 1370-byte link).
    route_mss: u16,
    /// What the PMTU learned from r2 (1350) gives.
    learned_mss: u16,
    /// r2's address toward r1: the PTB's source.
    reporter: &'static str,
}

const V4: Family = Family {
    v: 4,
    target: SeedLab::TARGET_V4,
    h0: "192.168.5.1",
    route_mss: 1330,
    learned_mss: 1310,
    reporter: "192.168.6.2",
};
const V6: Family = Family {
    v: 6,
    target: SeedLab::TARGET_V6,
    h0: "fd54:54:54:1::1",
    route_mss: 1310,
    learned_mss: 1290,
    reporter: "fd54:54:54:2::2",
};

/// The seed lab with h0 and h3 advertising an MSS their links do not allow
/// (route advmss), so r1's clamp shows in both directions, and checksum
/// offloads off at both ends, so the receivers verify every checksum.
fn lab() -> SeedLab {
    let lab = SeedLab::build().unwrap();
    lab.advertise_large_mss().unwrap();
    offloads_off(&lab.h0, SeedLab::H0_IF).unwrap();
    offloads_off(&lab.h3, "to-r2").unwrap();
    lab
}

/// One connection h0 → h3 with 1000 bytes each way (less than one segment:
/// no full-size packet, so no PTB of its own): the MSS of the SYN as h3
/// receives it, of the SYN-ACK as h0 receives it, whether the transfer
/// completed, and whether tcpdump found every TCP checksum correct.
struct Conn {
    syn_at_h3: Option<u16>,
    synack_at_h0: Option<u16>,
    completed: bool,
    bad_checksums: usize,
}

fn connect(lab: &SeedLab, f: &Family, port: u16) -> Conn {
    let filter = format!("tcp port {port}");
    let at_h3 = start_capture_with(&lab.h3, "to-r2", &["-vv"], &filter);
    let at_h0 = start_capture_with(&lab.h0, SeedLab::H0_IF, &["-vv"], &filter);
    let t = transfer(&lab.h0, &lab.h3, f.target, port, 1000, Duration::from_secs(10)).unwrap();
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(200)));
    let h3 = at_h3.stop(libc::SIGTERM, EXIT);
    let h0 = at_h0.stop(libc::SIGTERM, EXIT);
    let bad = |c: &Finished| c.stdout.join("\n").matches("(incorrect").count();
    Conn {
        syn_at_h3: wire::first_syn_mss(&h3),
        synack_at_h0: wire::packets(&h0).iter().find(|p| p.is_syn_ack()).and_then(wire::Packet::mss),
        completed: t.completed(),
        bad_checksums: bad(&h3) + bad(&h0),
    }
}

fn start_clamp(lab: &SeedLab) -> Proc {
    let expires = EXPIRES_SECS.to_string();
    let args = [
        "clamp", "-i", SeedLab::R1_IF_H0, "-i", SeedLab::R1_IF_R2, "--learned", "--to-pmtu", "--expires", &expires, "--json",
    ];
    let mut p = Proc::spawn(pmtu_in(&lab.r1, &pmtu_tests::pmtu_bin(), &args), "pmtu clamp --learned");
    p.wait_for_stderr("attached to", Duration::from_secs(30));
    p
}

/// A PTB for `f.target` from r2 that no flow explains (UDP ports nobody
/// used): the observer marks it invalid, and it must teach nothing.
fn forge(lab: &SeedLab, f: &Family) {
    let script = if f.v == 4 {
        format!(
            "send(IP(src='{}', dst='{}')/ICMP(type=3, code=4, nexthopmtu=1280)/IP(src='{}', dst='{}', len=1370, flags='DF')/UDP(sport=7777, dport=8888), verbose=0)",
            f.reporter, f.h0, f.h0, f.target
        )
    } else {
        format!(
            "send(IPv6(src='{}', dst='{}')/ICMPv6PacketTooBig(mtu=1280)/IPv6(src='{}', dst='{}', plen=1330)/UDP(sport=7777, dport=8888), verbose=0)",
            f.reporter, f.h0, f.h0, f.target
        )
    };
    scapy(&lab.r2, &script);
}

fn learned_clamping(f: &Family) {
    let lab = lab();
    let clamp = start_clamp(&lab);

    // Before any PTB: route-based, both ways.
    let before = connect(&lab, f, 5101);
    assert_eq!((before.syn_at_h3, before.synack_at_h0), (Some(f.route_mss), Some(f.route_mss)), "v{}: before", f.v);

    // h0's DF probe of 1370 bytes fits r1's links, not r2's: r2's PTB
    // (mtu 1350) crosses r1 toward h0.
    let probe = lab.probe(f.target, 1370).unwrap();
    assert!(probe.contains(f.reporter) && probe.contains("1350"), "v{}: the probe did not draw r2's PTB:\n{probe}", f.v);
    let learned_at = Instant::now();
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(500)));
    // r1's kernel learned nothing (the PTB was not for r1): only pmtu knows.
    let family = if f.v == 4 { "-4" } else { "-6" };
    let r1_route = lab.r1.ip(&[family, "route", "get", f.target]).unwrap();
    assert!(!r1_route.contains("expires"), "v{}: r1's kernel has a PMTU exception: {r1_route}", f.v);

    let after = connect(&lab, f, 5102);
    assert_eq!(
        (after.syn_at_h3, after.synack_at_h0),
        (Some(f.learned_mss), Some(f.learned_mss)),
        "v{}: SYN and SYN-ACK after the PTB crossed r1",
        f.v
    );
    assert!(after.completed, "v{}: the learned-clamped transfer did not complete", f.v);
    assert_eq!(after.bad_checksums, 0, "v{}: a receiver saw a bad checksum", f.v);

    // A forged PTB with a lower MTU changes nothing.
    forge(&lab, f);
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(300)));
    let forged = connect(&lab, f, 5103);
    assert_eq!(forged.syn_at_h3, Some(f.learned_mss), "v{}: after the forged PTB", f.v);
    assert!(learned_at.elapsed() < Duration::from_secs(EXPIRES_SECS), "the test ran past the expiry; its timing is off");

    // After the expiry: route-based again.
    std::thread::sleep(Duration::from_secs(EXPIRES_SECS + 2).saturating_sub(learned_at.elapsed()));
    let expired = connect(&lab, f, 5104);
    assert_eq!(
        (expired.syn_at_h3, expired.synack_at_h0),
        (Some(f.route_mss), Some(f.route_mss)),
        "v{}: after the learned PMTU expired",
        f.v
    );
    assert!(expired.completed && before.completed, "v{}: transfers", f.v);

    let run = clamp.stop(libc::SIGTERM, EXIT);
    assert!(run.status.success(), "pmtu clamp: {:?}", run.stderr);
    assert_clean(&lab.r1, SeedLab::R1_IF_H0);
    assert_clean(&lab.r1, SeedLab::R1_IF_R2);
    let lines: Vec<Value> = run.stdout.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let events = |kind: &str| lines.iter().filter(|l| l["event"] == kind).cloned().collect::<Vec<_>>();
    let out = run.stdout.join("\n");

    // What pmtu said: one lesson, from r2's report, then forgotten.
    let learned = events("learned");
    assert_eq!(learned.len(), 1, "v{}: {out}", f.v);
    assert_eq!(learned[0]["key"], f.target);
    assert_eq!(learned[0]["pmtu"], 1350);
    assert_eq!(learned[0]["report"]["reporter"], f.reporter);
    assert_eq!(learned[0]["report"]["direction"], "transit");
    let report = learned[0]["report"]["id"].clone();
    let forgot = events("forgot");
    assert_eq!(forgot.len(), 1, "v{}: {out}", f.v);
    assert_eq!((forgot[0]["key"].as_str(), forgot[0]["why"].as_str()), (Some(f.target), Some("expired")));

    // Each learned clamp names its rule and report: SYNs toward h3 by the
    // destination's entry, SYN-ACKs from h3 by the source's.
    let clamped = events("clamped");
    let rules: Vec<(String, String, u64)> = clamped
        .iter()
        .map(|c| (c["segment"].as_str().unwrap().into(), c["rule"].as_str().unwrap().into(), c["mss_to"].as_u64().unwrap()))
        .collect();
    let m = u64::from(f.learned_mss);
    for want in [("SYN", "learned-destination", m), ("SYN-ACK", "learned-source", m)] {
        let n = rules.iter().filter(|r| (r.0.as_str(), r.1.as_str(), r.2) == want).count();
        // Two connections (after the probe and after the forgery), each
        // seen where it enters r1 (tc ingress) and rewritten there once.
        assert_eq!(n, 2, "v{}: {want:?} in {rules:?}\n{out}", f.v);
    }
    for c in &clamped {
        assert_eq!(c["report"], report, "{c}");
        assert_eq!(c["reporter"], f.reporter, "{c}");
        assert_eq!(c["learned_pmtu"], 1350, "{c}");
        assert_eq!(c["base_mss"], u64::from(f.route_mss), "{c}");
    }

    // Counters: the learned clamps apart from the route-based ones.
    let report_line = lines.last().unwrap();
    let sum = |name: &str| -> u64 {
        report_line["interfaces"].as_array().unwrap().iter().map(|i| i["counters"][name].as_u64().unwrap()).sum()
    };
    assert_eq!(sum("clamped_learned"), 4, "v{}: {report_line}", f.v);
    // Before and after: SYN and SYN-ACK each, by the route rule.
    assert!(sum("clamped") >= 4, "v{}: {report_line}", f.v);
}

#[test]
fn learned_v4_clamps_both_ways_ignores_forgeries_and_expires() {
    if !require_root("learned_v4_clamps_both_ways_ignores_forgeries_and_expires") {
        return;
    }
    learned_clamping(&V4);
}

#[test]
fn learned_v6_clamps_both_ways_ignores_forgeries_and_expires() {
    if !require_root("learned_v6_clamps_both_ways_ignores_forgeries_and_expires") {
        return;
    }
    learned_clamping(&V6);
}

/// `pmtu run` with `clamp = ["learned", "to-pmtu"]` on r1, switched at run
/// time over its control socket: `pmtu learning off` keeps a valid PTB
/// from teaching, `on` lets the next one teach, `flush` forgets; `pmtu
/// events` and `pmtu stats` say which rule clamped.
#[test]
fn daemon_learning_switches_at_run_time() {
    if !require_root("daemon_learning_switches_at_run_time") {
        return;
    }
    let f = &V4;
    let lab = lab();
    let s = Scratch::new("learned");
    let config = format!(
        r#"control-socket = "{}"
pin-path = "{}"
on-exit = "detach"
expires = 300

[[interface]]
name = "{}"
trace = true
clamp = ["learned", "to-pmtu"]

[[interface]]
name = "{}"
trace = true
clamp = ["learned", "to-pmtu"]
"#,
        s.control().display(),
        s.pins().display(),
        SeedLab::R1_IF_H0,
        SeedLab::R1_IF_R2
    );
    std::fs::write(s.config(), config).unwrap();
    let cfg = s.config().display().to_string();
    let mut daemon = Proc::spawn(pmtu_in(&lab.r1, &pmtu_tests::pmtu_bin(), &["run", "--config", &cfg]), "pmtu run");
    daemon.wait_for_stderr("pmtu: serving 2 interface(s)", Duration::from_secs(60));
    let probe = |what: &str| {
        // h0 keeps the PMTU it learned from the last probe: forget it, so
        // the next probe leaves h0 at 1370 bytes again.
        lab.h0.ip(&["route", "flush", "cache"]).unwrap();
        let out = lab.probe(f.target, 1370).unwrap();
        assert!(out.contains(f.reporter) && out.contains("1350"), "{what}: the probe did not draw r2's PTB:\n{out}");
        std::thread::sleep(pmtu_tests::slow(Duration::from_millis(500)));
    };

    let off = client_json(&s, &["learning", "off", "--json"]);
    assert_eq!(off["learning"], false, "{off}");
    probe("learning off");
    let status = client_json(&s, &["learning", "--json"]);
    assert_eq!(status["entries"].as_array().unwrap().len(), 0, "learning off, yet: {status}");
    assert_eq!(connect(&lab, f, 5201).syn_at_h3, Some(f.route_mss), "learning off");

    let on = client_json(&s, &["learning", "on", "--json"]);
    assert_eq!(on["learning"], true, "{on}");
    probe("learning on");
    let status = client_json(&s, &["learning", "--json"]);
    let entries = status["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{status}");
    assert_eq!((entries[0]["key"].as_str(), entries[0]["pmtu"].as_u64()), (Some(f.target), Some(1350)), "{status}");
    assert_eq!(entries[0]["report"]["reporter"], f.reporter, "{status}");
    let c = connect(&lab, f, 5202);
    assert_eq!((c.syn_at_h3, c.synack_at_h0, c.completed), (Some(f.learned_mss), Some(f.learned_mss), true), "learning on");

    // `pmtu events` tells which rule clamped the SYN, from which report.
    let events = client(&s, &["events"]);
    let text = String::from_utf8_lossy(&events.stdout);
    let syn = text
        .lines()
        .find(|l| l.contains(" clamped ") && l.contains(" SYN ") && l.contains(":5202"))
        .unwrap_or_else(|| panic!("no clamped SYN in pmtu events:\n{text}"));
    let report = entries[0]["report"]["id"].as_u64().unwrap();
    assert!(
        syn.contains(&format!("mss 1460 -> {}: learned pmtu 1350 toward its destination {}, report #{report}", f.learned_mss, f.target)),
        "{syn}"
    );

    let status = client(&s, &["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("learned clamping: learning on, 1 learned PMTU(s) in use"), "{status}");
    assert!(status.contains("clamp MSS to the path MTU less 40 (IPv4) / 60 (IPv6), and to PMTUs learned"), "{status}");

    let flushed = client_json(&s, &["learning", "flush", "--json"]);
    assert_eq!(flushed["entries"].as_array().unwrap().len(), 0, "{flushed}");
    assert_eq!(connect(&lab, f, 5203).syn_at_h3, Some(f.route_mss), "after flush");

    let stats = client_json(&s, &["stats", "--json"]);
    let learned: u64 = stats["clamp"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["counters"]["clamped_learned"].as_u64().unwrap())
        .sum();
    assert_eq!(learned, 2, "SYN and SYN-ACK of one connection: {stats}");

    let detached = Command::new(pmtu_tests::pmtu_bin())
        .args(["detach", "--pin-path"])
        .arg(s.pins())
        .arg("--control")
        .arg(s.control())
        .output()
        .unwrap();
    assert!(detached.status.success(), "{}", String::from_utf8_lossy(&detached.stderr));
    let run = daemon.wait(EXIT);
    assert!(run.status.success(), "pmtu run: {:?}", run.stderr);
    assert_clean(&lab.r1, SeedLab::R1_IF_H0);
    assert_clean(&lab.r1, SeedLab::R1_IF_R2);
}
