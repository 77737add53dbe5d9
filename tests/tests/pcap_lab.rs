//! `pmtu trace --pcap` on the real kernel: the file holds every PTB pmtu
//! reported, in order, at the kernel's own timestamp, and tshark and
//! tcpdump read in it the types, codes and MTUs pmtu printed. In the seed
//! lab (Ethernet: XDP at h0, tc ingress and egress at r1) and across the
//! tunnel lab's tun device (an L3 interface: no Ethernet header to cut).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, UNIX_EPOCH},
};

use pmtu_tests::{
    procs::{Finished, start_trace},
    require_root,
    residue::assert_clean,
    tunnel::{TunnelLab, TunnelOptions},
};
use pmtu_user::lab::SeedLab;
use serde_json::Value;

const EXIT: Duration = Duration::from_secs(20);

/// A fresh directory for this test's files.
fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pmtu-pcap-lab-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The JSON events of a `pmtu trace --json` run (the final table dropped),
/// after checking it exited well and said what it wrote.
fn events(run: &Finished, pcap: &Path) -> Vec<Value> {
    assert!(run.status.success(), "pmtu trace failed: {:?}\n{}", run.status, run.stderr.join("\n"));
    let mut lines: Vec<Value> =
        run.stdout.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let table = lines.pop().expect("a final table line");
    assert!(table.get("destinations").is_some(), "last line is not the table: {table}");
    let said = format!("pmtu: {} packet(s) written to {}", lines.len(), pcap.display());
    assert!(run.stderr.contains(&said), "{said:?} not on stderr:\n{}", run.stderr.join("\n"));
    lines
}

/// What one PTB record says: (family, ICMP type, code, MTU).
type Ptb = (u8, u64, u64, u64);

/// What an event says, as the same tuple: Frag-Needed is type 3 code 4,
/// Packet-Too-Big type 2 code 0.
fn event_ptb(e: &Value) -> Ptb {
    let mtu = e["mtu"].as_u64().unwrap();
    match e["family"].as_u64().unwrap() {
        4 => (4, 3, 4, mtu),
        6 => (6, 2, 0, mtu),
        other => panic!("family {other}: {e}"),
    }
}

/// Nanoseconds since the epoch of an event's RFC 3339 `time` (microseconds).
fn event_ns(e: &Value) -> u128 {
    let t = humantime::parse_rfc3339(e["time"].as_str().unwrap()).unwrap();
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// tshark's reading of `file`: (time in ns, the PTB) per record. The first
/// occurrence of each field is the outer message's (tshark also dissects
/// the packet quoted inside it).
fn tshark(file: &Path) -> Vec<(u128, Ptb)> {
    let out = Command::new("tshark")
        .args(["-r", file.to_str().unwrap(), "-T", "fields", "-E", "occurrence=f", "-E", "separator=/t"])
        .args(["-e", "frame.time_epoch", "-e", "icmp.type", "-e", "icmp.code", "-e", "icmp.mtu"])
        .args(["-e", "icmpv6.type", "-e", "icmpv6.code", "-e", "icmpv6.mtu"])
        .output()
        .expect("tshark (installed by `cargo xtask test`)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tshark -r {}: {:?}\n{}", file.display(), out.status, String::from_utf8_lossy(&out.stderr));
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 7, "{line:?}");
            let n = |s: &str| s.parse::<u64>().unwrap_or_else(|_| panic!("{s:?} in {line:?}"));
            let (secs, frac) = f[0].split_once('.').unwrap_or((f[0], "0"));
            let ns = u128::from(n(secs)) * 1_000_000_000 + u128::from(n(&format!("{frac:0<9}")[..9]));
            let ptb = if !f[1].is_empty() { (4, n(f[1]), n(f[2]), n(f[3])) } else { (6, n(f[4]), n(f[5]), n(f[6])) };
            (ns, ptb)
        })
        .collect()
}

/// tcpdump's reading of `file`: its link type line, and (reporter, MTU)
/// per record, e.g.
/// `IP 192.168.5.2 > 192.168.5.1: ICMP 192.168.7.2 unreachable - need to frag (mtu 1370), length 556`
/// `IP6 fd54:54:54:1::2 > fd54:54:54:1::1: ICMP6, packet too big, mtu 1370, length 1240`
fn tcpdump(file: &Path) -> (String, Vec<(String, u64)>) {
    let out = Command::new("tcpdump").args(["-r", file.to_str().unwrap(), "-nn"]).output().expect("tcpdump");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tcpdump -r {}: {:?}\n{stderr}", file.display(), out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ptbs = stdout
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ip = words.iter().position(|w| *w == "IP" || *w == "IP6").unwrap_or_else(|| panic!("{line}"));
            let at = words.iter().position(|w| *w == "mtu" || *w == "(mtu").unwrap_or_else(|| panic!("{line}"));
            (words[ip + 1].to_string(), words[at + 1].trim_end_matches([')', ',']).parse().unwrap())
        })
        .collect();
    (stderr, ptbs)
}

/// The pcap holds the events, in order, as tshark and tcpdump read them,
/// each at its event's time (the event prints microseconds).
fn check_pcap(file: &Path, events: &[Value], what: &str) {
    let read = tshark(file);
    let want: Vec<Ptb> = events.iter().map(event_ptb).collect();
    let got: Vec<Ptb> = read.iter().map(|(_, p)| *p).collect();
    assert_eq!(got, want, "{what}: tshark vs pmtu's events");
    for ((ns, _), e) in read.iter().zip(events) {
        let at = event_ns(e);
        assert!(*ns >= at && *ns - at < 1_000, "{what}: record at {ns} ns, event at {} ({at} ns)", e["time"]);
    }
    let (header, ptbs) = tcpdump(file);
    assert!(header.contains("link-type RAW"), "{what}: {header}");
    let want: Vec<(String, u64)> =
        events.iter().map(|e| (e["reporter"].as_str().unwrap().to_string(), e["mtu"].as_u64().unwrap())).collect();
    assert_eq!(ptbs, want, "{what}: tcpdump vs pmtu's events");
}

/// The seed lab: h0 traced with XDP, r1 with tc at both its interfaces,
/// while h0 probes across it in both families: h0's pcap has r1's and
/// r2's PTBs as they arrived, r1's has r2's arriving in transit and its
/// own leaving toward h0.
#[test]
fn pcap_holds_what_trace_reports_v4_and_v6() {
    if !require_root("pcap_holds_what_trace_reports_v4_and_v6") {
        return;
    }
    let dir = scratch("seed");
    let (h0_file, r1_file) = (dir.join("h0.pcap"), dir.join("r1.pcap"));
    let lab = SeedLab::build().unwrap();
    let h0 = start_trace(&lab.h0, &["-i", SeedLab::H0_IF, "--json", "--hook", "xdp", "--pcap", h0_file.to_str().unwrap()]);
    let r1 = start_trace(
        &lab.r1,
        &["-i", SeedLab::R1_IF_H0, "-i", SeedLab::R1_IF_R2, "--json", "--pcap", r1_file.to_str().unwrap()],
    );
    for target in [SeedLab::TARGET_V4, SeedLab::TARGET_V6] {
        for size in [1500, 1370, 1350] {
            lab.probe(target, size).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let h0_run = h0.stop(libc::SIGTERM, EXIT);
    let r1_run = r1.stop(libc::SIGTERM, EXIT);
    let h0_events = events(&h0_run, &h0_file);
    let r1_events = events(&r1_run, &r1_file);

    let mut seen: Vec<Ptb> = h0_events.iter().map(event_ptb).collect();
    seen.sort();
    assert_eq!(seen, [(4, 3, 4, 1350), (4, 3, 4, 1370), (6, 2, 0, 1350), (6, 2, 0, 1370)], "h0: {h0_events:#?}");
    assert!(h0_events.iter().all(|e| e["hook"] == "xdp"), "{h0_events:#?}");
    let mut hooks: Vec<(&str, Ptb)> = r1_events.iter().map(|e| (e["hook"].as_str().unwrap(), event_ptb(e))).collect();
    hooks.sort();
    assert_eq!(
        hooks,
        [
            ("tc-egress", (4, 3, 4, 1370)),
            ("tc-egress", (6, 2, 0, 1370)),
            ("tc-ingress", (4, 3, 4, 1350)),
            ("tc-ingress", (6, 2, 0, 1350)),
        ],
        "r1: {r1_events:#?}"
    );
    check_pcap(&h0_file, &h0_events, "h0 (XDP)");
    check_pcap(&r1_file, &r1_events, "r1 (tc)");
    assert_clean(&lab.h0, SeedLab::H0_IF);
    assert_clean(&lab.r1, SeedLab::R1_IF_H0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// On a tun device (no link-layer header) the capture starts at the IP
/// header: b's pcap of a's PTBs arriving through the tunnel, both families.
#[test]
fn pcap_on_an_l3_interface() {
    if !require_root("pcap_on_an_l3_interface") {
        return;
    }
    let dir = scratch("tun");
    let file = dir.join("b.pcap");
    let lab = TunnelLab::build(TunnelOptions::PTB_ACROSS).unwrap();
    let at_b = start_trace(&lab.b, &["-i", TunnelLab::TUN, "--hook", "tc", "--json", "--pcap", file.to_str().unwrap()]);
    for target in [TunnelLab::CLIENT_V4, TunnelLab::CLIENT_V6] {
        let (ok, out) = TunnelLab::ping(&lab.d, target, 1400, 1).unwrap();
        assert!(!ok, "{target}: 1400 bytes do not fit a's 1300-byte link:\n{out}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let run = at_b.stop(libc::SIGTERM, EXIT);
    let events = events(&run, &file);
    let mut seen: Vec<Ptb> = events.iter().map(event_ptb).collect();
    seen.sort();
    assert_eq!(seen, [(4, 3, 4, 1300), (6, 2, 0, 1300)], "{events:#?}");
    check_pcap(&file, &events, "b's tun0");
    assert_clean(&lab.b, TunnelLab::TUN);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pcap path that cannot be created is an error before anything is
/// attached.
#[test]
fn an_unwritable_pcap_path_is_refused_up_front() {
    if !require_root("an_unwritable_pcap_path_is_refused_up_front") {
        return;
    }
    let lab = SeedLab::build().unwrap();
    let bin = pmtu_tests::pmtu_bin();
    let cmd = pmtu_tests::procs::pmtu_in(
        &lab.h0,
        &bin,
        &["trace", "-i", SeedLab::H0_IF, "--pcap", "/nonexistent-dir/x.pcap", "--duration", "5"],
    );
    let r = pmtu_tests::procs::Proc::spawn(cmd, "pmtu trace --pcap").wait(EXIT);
    assert_eq!(r.status.code(), Some(1), "{:?}", r.stderr);
    let err = r.stderr.join("\n");
    assert!(err.contains("/nonexistent-dir/x.pcap") && !err.contains("attached to"), "{err}");
    assert_clean(&lab.h0, SeedLab::H0_IF);
}
