//! The seed-001 lab (h0 — r1 — r2 — h3, MTUs 1500/1370/1350) on the real
//! kernel: pmtu's events must match the PTBs on the wire, its table must
//! match the kernel's own PMTU cache, and nothing may stay attached.

use std::{collections::BTreeSet, time::Duration};

use pmtu_tests::{
    procs::{Finished, Proc, pmtu_in, scapy, start_capture, start_trace},
    require_root,
    residue::{assert_clean, residue},
};
use pmtu_user::lab::{SeedLab, cached_mtu};
use serde_json::Value;

const V4: &str = SeedLab::TARGET_V4;
const V6: &str = SeedLab::TARGET_V6;
const EXIT: Duration = Duration::from_secs(20);

/// Sends the demo's probes (1500, 1370, 1350 bytes) from h0 to `target`.
fn probe(lab: &SeedLab, target: &str) {
    for size in [1500, 1370, 1350] {
        lab.probe(target, size).unwrap();
    }
}

/// The JSON events and the final table of a `pmtu trace --json` run.
fn parse_json(run: &Finished) -> (Vec<Value>, Value) {
    assert!(run.status.success(), "pmtu trace failed: {:?}\n{}", run.status, run.stderr.join("\n"));
    let mut lines: Vec<Value> = run
        .stdout
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let table = lines.pop().expect("a final table line");
    assert!(table.get("destinations").is_some(), "last line is not the table: {table}");
    (lines, table)
}

/// (ifname, hook, reporter, mtu, orig_dst) of each event.
fn event_keys(events: &[Value]) -> Vec<(String, String, String, u64, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["ifname"].as_str().unwrap().to_string(),
                e["hook"].as_str().unwrap().to_string(),
                e["reporter"].as_str().unwrap().to_string(),
                e["mtu"].as_u64().unwrap(),
                e["orig_dst"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn row<'a>(table: &'a Value, dst: &str) -> &'a Value {
    table["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dst"] == dst)
        .unwrap_or_else(|| panic!("{dst} not in table {table}"))
}

/// (addr, mtu) of a table row's reporters, as listed (lowest MTU first).
fn reporters(row: &Value) -> Vec<(String, u64)> {
    row["reporters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["addr"].as_str().unwrap().to_string(), r["mtu"].as_u64().unwrap()))
        .collect()
}

/// (reporter, mtu) of each PTB tcpdump printed, e.g.
/// `IP 192.168.5.2 > 192.168.5.1: ICMP 192.168.7.2 unreachable - need to frag (mtu 1370), length 556`
/// `IP6 fd54:54:54:1::2 > fd54:54:54:1::1: ICMP6, packet too big, mtu 1370, length 1240`
fn wire_ptbs(capture: &Finished) -> Vec<(String, u64)> {
    capture
        .stdout
        .iter()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ip = words.iter().position(|w| *w == "IP" || *w == "IP6")?;
            let reporter = words.get(ip + 1)?.to_string();
            let mtu_at = words.iter().position(|w| *w == "mtu" || *w == "(mtu")?;
            let mtu = words.get(mtu_at + 1)?.trim_end_matches([')', ',']).parse().ok()?;
            Some((reporter, mtu))
        })
        .collect()
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

#[test]
fn v4_on_h0_matches_the_wire_and_the_kernel_cache() {
    if !require_root("v4_on_h0_matches_the_wire_and_the_kernel_cache") {
        return;
    }
    let lab = SeedLab::build().unwrap();
    let capture = start_capture(&lab.h0, SeedLab::H0_IF, "icmp[icmptype] == 3 and icmp[icmpcode] == 4");
    // XDP on request (tc is the default).
    let trace = start_trace(&lab.h0, &["-i", SeedLab::H0_IF, "--json", "--hook", "xdp"]);
    probe(&lab, V4);
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(300)));
    let run = trace.stop(libc::SIGTERM, EXIT);
    let wire = capture.stop(libc::SIGTERM, EXIT);
    let (events, table) = parse_json(&run);

    assert_eq!(
        sorted(&event_keys(&events)),
        sorted(&[
            ("to-r1".into(), "xdp".into(), "192.168.5.2".into(), 1370, V4.into()),
            ("to-r1".into(), "xdp".into(), "192.168.6.2".into(), 1350, V4.into()),
        ])
    );
    let seen: Vec<_> = events.iter().map(|e| (e["reporter"].as_str().unwrap().to_string(), e["mtu"].as_u64().unwrap())).collect();
    assert_eq!(sorted(&seen), sorted(&wire_ptbs(&wire)), "events vs tcpdump");
    for e in &events {
        assert_eq!((&e["verdict"], &e["reasons"]), (&Value::from("valid"), &serde_json::json!([])), "{e}");
        assert_eq!(e["family"], 4);
        assert_eq!(e["to"], "192.168.5.1");
        assert_eq!(e["orig_src"], "192.168.5.1");
        assert_eq!(e["proto"], 1);
        assert_eq!(e["mtu_estimated"], false);
        assert_eq!(e["sport"], Value::Null);
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
    }
    let quoted: BTreeSet<u64> = events.iter().map(|e| e["quoted_len"].as_u64().unwrap()).collect();
    assert_eq!(quoted, BTreeSet::from([1500, 1370]), "each PTB quotes the probe it answers");

    let r = row(&table, V4);
    let kernel = lab.route_get(V4).unwrap();
    assert_eq!(cached_mtu(&kernel), Some(1350), "kernel: {kernel}");
    assert_eq!(r["pmtu"].as_u64(), cached_mtu(&kernel).map(u64::from), "table vs `ip route get`");
    assert_eq!(reporters(r), [("192.168.6.2".into(), 1350), ("192.168.5.2".into(), 1370)]);
    assert_eq!(r["events"], 2);
    let expires = r["expires_in"].as_u64().unwrap();
    assert!((590..=600).contains(&expires), "expires_in {expires}");
    assert_eq!(table["counters"]["ptb_v4"], 2);
    assert_eq!(table["counters"]["events_delivered"], 2);
    assert_eq!(table["counters"]["ring_lost"], 0);
    assert_clean(&lab.h0, SeedLab::H0_IF);
}

#[test]
fn v6_on_h0_with_tc_ingress_and_a_duration() {
    if !require_root("v6_on_h0_with_tc_ingress_and_a_duration") {
        return;
    }
    let lab = SeedLab::build().unwrap();
    let capture = start_capture(&lab.h0, SeedLab::H0_IF, "icmp6 and ip6[40] == 2");
    let trace = start_trace(&lab.h0, &["-i", SeedLab::H0_IF, "--hook", "tc", "--json", "--duration", "6"]);
    probe(&lab, V6);
    let run = trace.wait(Duration::from_secs(30));
    let wire = capture.stop(libc::SIGTERM, EXIT);
    let (events, table) = parse_json(&run);

    assert_eq!(
        sorted(&event_keys(&events)),
        sorted(&[
            ("to-r1".into(), "tc-ingress".into(), "fd54:54:54:1::2".into(), 1370, V6.into()),
            ("to-r1".into(), "tc-ingress".into(), "fd54:54:54:2::2".into(), 1350, V6.into()),
        ])
    );
    let seen: Vec<_> = events.iter().map(|e| (e["reporter"].as_str().unwrap().to_string(), e["mtu"].as_u64().unwrap())).collect();
    assert_eq!(sorted(&seen), sorted(&wire_ptbs(&wire)), "events vs tcpdump");
    for e in &events {
        assert_eq!(e["verdict"], "valid", "{e}");
        assert_eq!(e["family"], 6);
        assert_eq!(e["orig_src"], "fd54:54:54:1::1");
        assert_eq!(e["proto"], 58);
    }
    let r = row(&table, V6);
    let kernel = lab.route_get(V6).unwrap();
    assert_eq!(cached_mtu(&kernel), Some(1350), "kernel: {kernel}");
    assert_eq!(r["pmtu"].as_u64(), cached_mtu(&kernel).map(u64::from), "table vs `ip -6 route get`");
    assert_eq!(reporters(r), [("fd54:54:54:2::2".into(), 1350), ("fd54:54:54:1::2".into(), 1370)]);
    assert_eq!(table["counters"]["ptb_v6"], 2);
    assert_clean(&lab.h0, SeedLab::H0_IF);
}

#[test]
fn on_router_r1_sees_ptbs_in_transit_and_its_own_v4_and_v6() {
    if !require_root("on_router_r1_sees_ptbs_in_transit_and_its_own_v4_and_v6") {
        return;
    }
    let lab = SeedLab::build().unwrap();
    let trace = start_trace(&lab.r1, &["-i", SeedLab::R1_IF_H0, "-i", SeedLab::R1_IF_R2, "--json"]);
    probe(&lab, V4);
    probe(&lab, V6);
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(300)));
    // Ctrl-C.
    let run = trace.stop(libc::SIGINT, EXIT);
    let (events, table) = parse_json(&run);

    // r2's PTBs arrive about flows r1 forwarded out through to-r2: valid.
    assert!(events.iter().all(|e| e["verdict"] == "valid"), "{events:#?}");
    let keys = sorted(&event_keys(&events));
    let want = |ifname: &str, hook: &str, reporter: &str, mtu: u64, dst: &str| {
        (ifname.to_string(), hook.to_string(), reporter.to_string(), mtu, dst.to_string())
    };
    assert_eq!(
        keys,
        sorted(&[
            // r2's PTB in transit: one event, where it arrives at r1 (its
            // copy leaving toward h0 is only counted, transit_seen_on_entry).
            want("to-r2", "tc-ingress", "192.168.6.2", 1350, V4),
            // r1's own PTB, sent toward h0.
            want("to-h0", "tc-egress", "192.168.5.2", 1370, V4),
            want("to-r2", "tc-ingress", "fd54:54:54:2::2", 1350, V6),
            want("to-h0", "tc-egress", "fd54:54:54:1::2", 1370, V6),
        ])
    );
    assert_eq!(table["counters"]["transit_seen_on_entry"], 2, "r2's two PTBs leaving toward h0, not reported twice");
    for (target, family) in [(V4, "4"), (V6, "6")] {
        let kernel = lab.route_get(target).unwrap();
        // The table keeps directions apart: r2's PTB (transit), r1's own (sent).
        let in_direction = |direction: &str| {
            table["destinations"].as_array().unwrap().iter().find(|d| d["dst"] == target && d["direction"] == direction).cloned()
        };
        assert_eq!(cached_mtu(&kernel), Some(1350), "h0 kernel (v{family}): {kernel}");
        let r = in_direction("transit").unwrap_or_else(|| panic!("no transit row for {target}: {table}"));
        assert_eq!((r["pmtu"].as_u64(), r["events"].as_u64()), (Some(1350), Some(1)), "v{family} transit row {r}");
        let r = in_direction("sent").unwrap_or_else(|| panic!("no sent row for {target}: {table}"));
        assert_eq!((r["pmtu"].as_u64(), r["events"].as_u64()), (Some(1370), Some(1)), "v{family} sent row {r}");
    }
    assert_clean(&lab.r1, SeedLab::R1_IF_H0);
    assert_clean(&lab.r1, SeedLab::R1_IF_R2);
}

#[test]
fn text_output_reads_like_ip_route_get() {
    if !require_root("text_output_reads_like_ip_route_get") {
        return;
    }
    let lab = SeedLab::build().unwrap();
    let trace = start_trace(&lab.h0, &["-i", SeedLab::H0_IF]);
    probe(&lab, V4);
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(300)));
    let run = trace.stop(libc::SIGTERM, EXIT);
    assert!(run.status.success(), "{:?}", run.stderr);
    let out = run.stdout.join("\n");
    assert!(out.contains("to-r1 tc-ingress 192.168.5.2 says mtu 1370 for 192.168.5.1 > 192.168.7.2 (icmp, 1500 bytes)"), "{out}");
    assert!(out.contains("\n192.168.7.2 mtu 1350 expires 59"), "{out}");
    assert!(out.contains("    reported by 192.168.6.2 mtu 1350 (1 event)"), "{out}");
    assert!(out.contains("    reported by 192.168.5.2 mtu 1370 (1 event)"), "{out}");
}

#[test]
fn sigkill_leaves_nothing_attached() {
    if !require_root("sigkill_leaves_nothing_attached") {
        return;
    }
    let lab = SeedLab::build().unwrap();
    let trace = start_trace(&lab.r1, &["-i", SeedLab::R1_IF_H0, "-i", SeedLab::R1_IF_R2]);
    assert!(!residue(&lab.r1, SeedLab::R1_IF_H0).is_empty(), "attached while running");
    let run = trace.stop(libc::SIGKILL, EXIT);
    assert!(!run.status.success());
    // bpf_link file descriptors close with the process; the kernel detaches.
    assert_clean(&lab.r1, SeedLab::R1_IF_H0);
    assert_clean(&lab.r1, SeedLab::R1_IF_R2);
}

#[test]
fn bad_input_gets_a_clear_error_not_a_panic() {
    if !require_root("bad_input_gets_a_clear_error_not_a_panic") {
        return;
    }
    let lab = SeedLab::build().unwrap();
    let bin = pmtu_tests::pmtu_bin();
    let run = |cmd| Proc::spawn(cmd, "pmtu").wait(EXIT);

    let r = run(pmtu_in(&lab.h0, &bin, &["trace", "-i", SeedLab::H0_IF, "-i", "nope0"]));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(r.stderr, ["pmtu: error: no such interface: nope0 (see `ip link`)"]);
    assert_clean(&lab.h0, SeedLab::H0_IF);

    // Not root: the same command as `nobody`.
    let mut cmd = lab.h0.command("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(&bin)
        .args(["trace", "-i", SeedLab::H0_IF]);
    let r = run(cmd);
    assert_eq!(r.status.code(), Some(1), "{:?}", r.stderr);
    let err = r.stderr.join("\n");
    assert!(err.starts_with("pmtu: error: permission denied: pmtu needs root"), "{err}");
    assert_clean(&lab.h0, SeedLab::H0_IF);

    for args in [&["trace", "-i"][..], &["trace", "-i", "lo", "--duration", "x"], &["frobnicate"]] {
        let r = run(pmtu_in(&lab.h0, &bin, args));
        assert_eq!(r.status.code(), Some(2), "clap usage errors exit 2: {args:?}");
        assert!(!r.stderr.join("\n").contains("panicked"), "{args:?}: {:?}", r.stderr);
    }
}

#[test]
fn demo_runs_and_agrees_with_the_kernel_then_cleans_up() {
    if !require_root("demo_runs_and_agrees_with_the_kernel_then_cleans_up") {
        return;
    }
    let run = Proc::spawn(
        {
            let mut c = std::process::Command::new(pmtu_tests::pmtu_bin());
            c.arg("demo");
            c
        },
        "pmtu demo",
    )
    .wait(pmtu_tests::slow(Duration::from_secs(60)));
    let out = run.stdout.join("\n");
    assert!(run.status.success(), "{out}\n{}", run.stderr.join("\n"));
    for needle in [
        "to-r1 tc-ingress 192.168.5.2 says mtu 1370 for 192.168.5.1 > 192.168.7.2",
        "to-r1 tc-ingress 192.168.6.2 says mtu 1350 for 192.168.5.1 > 192.168.7.2",
        "to-r1 tc-ingress fd54:54:54:2::2 says mtu 1350 for fd54:54:54:1::1 > fd54:54:54:3::2",
        "192.168.7.2 mtu 1350 expires",
        "    reported by 192.168.5.2 mtu 1370 (1 event)",
        "fd54:54:54:3::2 mtu 1350 expires",
        "cache expires",
        // Part two: the black hole, then the clamp.
        "  IPv4: stalled: c0 sent ",
        "  IPv6: stalled: c0 sent ",
        "  IPv4: completed, 2097152 bytes each way",
        "  IPv6: completed, 2097152 bytes each way",
        "to-c0     to-pmtu                4               2               2",
        // Part three: learned clamping on r1.
        "learned 192.168.7.2 pmtu 1350 from transit report #1 (192.168.6.2 says mtu 1350 for 192.168.7.2 on to-r2)",
        "SYN 192.168.5.1:",
        "mss 1460 -> 1310: learned pmtu 1350 toward its destination 192.168.7.2, report #1",
        "SYN-ACK 192.168.7.2:6202 > 192.168.5.1:",
        "mss 1460 -> 1310: learned pmtu 1350 toward its source 192.168.7.2, report #1",
        "the other rules gave 1330",
        "to-h0     learned+to-pmtu",
    ] {
        assert!(out.contains(needle), "demo output lacks {needle:?}:\n{out}");
    }
    let names_line = run.stdout.iter().find(|l| l.trim_start().starts_with("namespaces ")).expect("namespaces line");
    let listed = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for ns in names_line.trim_start().trim_start_matches("namespaces ").split(", ") {
        assert!(!listed.contains(ns.trim()), "{ns} left behind");
    }
    // Both labs were this process's: none of its namespaces may remain.
    let prefix = format!("pmtu-{}-", run.pid);
    assert!(!listed.contains(&prefix), "namespaces {prefix}* left behind:\n{listed}");
}

/// A second tracer on the same interface finds XDP taken, says so, observes
/// ingress through tc instead, and both see every PTB: the observer's tc
/// programs hand packets on (TCX_NEXT) instead of ending the chain.
#[test]
fn two_tracers_share_an_interface() {
    if !require_root("two_tracers_share_an_interface") {
        return;
    }
    let lab = SeedLab::build().unwrap();
    let first = start_trace(&lab.h0, &["-i", SeedLab::H0_IF, "--json", "--hook", "xdp"]);
    let mut second = Proc::spawn(
        pmtu_in(&lab.h0, &pmtu_tests::pmtu_bin(), &["trace", "-i", SeedLab::H0_IF, "--json", "--hook", "xdp"]),
        "second pmtu trace",
    );
    second.wait_for_stderr("attached to", Duration::from_secs(30));
    probe(&lab, V4);
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(300)));
    let second = second.stop(libc::SIGTERM, EXIT);
    let first = first.stop(libc::SIGTERM, EXIT);
    let err = second.stderr.join("\n");
    assert!(err.contains("XDP unavailable") && err.contains("observing ingress with tc instead"), "{err}");
    let (e1, t1) = parse_json(&first);
    let (e2, t2) = parse_json(&second);
    let hooks = |events: &[Value]| events.iter().map(|e| e["hook"].as_str().unwrap().to_string()).collect::<BTreeSet<_>>();
    assert_eq!(hooks(&e1), BTreeSet::from(["xdp".to_string()]));
    assert_eq!(hooks(&e2), BTreeSet::from(["tc-ingress".to_string()]));
    assert_eq!(e1.len(), 2);
    assert_eq!(e2.len(), 2);
    assert_eq!(row(&t1, V4)["pmtu"], 1350);
    assert_eq!(row(&t2, V4)["pmtu"], 1350);
    assert_clean(&lab.h0, SeedLab::H0_IF);
}

/// Forged PTBs (sent from r1's namespace with scapy) show up in the trace
/// with their reasons and leave the table alone; the real ones still count.
#[test]
fn forged_ptbs_are_shown_with_reasons_and_ignored_by_the_table() {
    if !require_root("forged_ptbs_are_shown_with_reasons_and_ignored_by_the_table") {
        return;
    }
    let lab = SeedLab::build().unwrap();
    let trace = start_trace(&lab.h0, &["-i", SeedLab::H0_IF, "--json"]);
    probe(&lab, V4);
    probe(&lab, V6);
    let forge = [
        // MTU 1000 for a UDP flow h0 never sent.
        "send(IP(src='192.168.5.2', dst='192.168.5.1')/ICMP(type=3, code=4, nexthopmtu=1000)/IP(src='192.168.5.1', dst='192.168.7.2', len=1500)/UDP(sport=5555, dport=6666))",
        // IPv6 MTU 1200, below the 1280 minimum.
        "send(IPv6(src='fd54:54:54:1::2', dst='fd54:54:54:1::1')/ICMPv6PacketTooBig(mtu=1200)/IPv6(src='fd54:54:54:1::1', dst='fd54:54:54:3::2', plen=1460)/UDP(sport=5555, dport=6666))",
        // IPv4 MTU 60, below even RFC 791's 68 (Linux would lock 552).
        "send(IP(src='192.168.5.2', dst='192.168.5.1')/ICMP(type=3, code=4, nexthopmtu=60)/IP(src='192.168.5.1', dst='192.168.7.2', len=1500)/UDP(sport=5555, dport=6666))",
    ];
    for line in forge {
        scapy(&lab.r1, line);
    }
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(300)));
    let run = trace.stop(libc::SIGTERM, EXIT);
    let (events, table) = parse_json(&run);

    let forged: Vec<(u64, Vec<String>)> = events
        .iter()
        .filter(|e| e["verdict"] == "invalid")
        .map(|e| {
            let reasons = e["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
            (e["mtu"].as_u64().unwrap(), reasons)
        })
        .collect();
    assert_eq!(
        sorted(&forged),
        sorted(&[
            (60, vec!["unknown-flow".to_string()]),
            (1000, vec!["unknown-flow".to_string()]),
            (1200, vec!["below-floor".to_string(), "unknown-flow".to_string()]),
        ]),
        "{events:#?}"
    );
    assert_eq!(events.iter().filter(|e| e["verdict"] == "valid").count(), 4, "the real ones");
    for target in [V4, V6] {
        let r = row(&table, target);
        assert_eq!(r["pmtu"], 1350, "{r}");
        assert_eq!(r["events"], 2, "{r}");
    }
    assert_eq!(table["counters"]["events_ignored"], 3);
    assert_eq!(table["counters"]["invalid"], 3);
}

/// With --accept-unvalidated (and a warning) the same forgery does shape
/// the table: the switch works, and is loud.
#[test]
fn accept_unvalidated_lets_forgeries_in_loudly() {
    if !require_root("accept_unvalidated_lets_forgeries_in_loudly") {
        return;
    }
    let lab = SeedLab::build().unwrap();
    let trace = start_trace(&lab.h0, &["-i", SeedLab::H0_IF, "--json", "--accept-unvalidated"]);
    probe(&lab, V4);
    scapy(
        &lab.r1,
        "send(IP(src='192.168.5.2', dst='192.168.5.1')/ICMP(type=3, code=4, nexthopmtu=1000)/IP(src='192.168.5.1', dst='192.168.7.2', len=1500)/UDP(sport=5555, dport=6666))",
    );
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(300)));
    let run = trace.stop(libc::SIGTERM, EXIT);
    assert!(run.stderr.iter().any(|l| l.contains("WARNING: --accept-unvalidated")), "{:?}", run.stderr);
    let (_, table) = parse_json(&run);
    assert_eq!(row(&table, V4)["pmtu"], 1000);
    assert_eq!(table["counters"]["events_ignored"], 0);
}
