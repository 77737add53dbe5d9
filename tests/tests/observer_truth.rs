//! The observer against the truth: the kernel's own PMTU cache and
//! counters, and the wire.
//!
//! 1. `kernel_is_the_oracle_for_every_mtu_sequence`: h holds real UDP
//!    sockets and TCP connections toward one destination per sequence
//!    behind r; r sends h Frag-Needed / Packet-Too-Big messages quoting the
//!    packets h really sent (addresses, ports, TCP sequence numbers inside
//!    the window), MTUs 0, 1, 300, 551, 552, 1300 then 1450, IPv6 1279
//!    (UDP and TCP), 1280, code 1. pmtu's table (`pmtu trace --json`, final
//!    object) must equal `ip route get` for every destination, `lock`
//!    included, and so must pmtu's own kernel column; the kernel's answers
//!    are checked against Linux's rules too.
//! 2. `corrupt_ptbs_are_invalid_and_the_kernel_drops_them_too`: wrong
//!    ICMP, ICMPv6 and IPv4 header checksums, and a PTB to another address
//!    on h's link: pmtu calls them `bad-checksum` / `not-for-us`, tables
//!    none of them, and the kernel's counters show it dropped them with its
//!    cache untouched; the same messages intact (controls) are taken by both.
//! 3. `router_reports_each_ptb_once_with_its_direction`: the seed lab with
//!    `pmtu trace` on both of r1's interfaces (--hook tc): a forged transit
//!    PTB is one invalid `unknown-flow` event, r2's genuine PTB one `transit`
//!    event naming both interfaces, r1's own PTBs `sent`; h0's tcpdump and
//!    h0's cache confirm what crossed.
//! 4. `stdout_to_dev_full_is_an_error`: `pmtu trace > /dev/full` fails loudly.

use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    net::IpAddr,
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use pmtu_tests::{
    oracle::{Fault, Forge, OracleLab, Proto, kernel_pmtu, nstat},
    procs::{pmtu_in, scapy, start_capture, start_trace},
    require_root,
    residue::assert_clean,
    trace_json::{Pmtu, Trace},
    wire,
};
use pmtu_user::lab::{Netns, SeedLab};

const EXIT: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One destination and the PTBs it gets, in order.
struct Sequence {
    dst: IpAddr,
    proto: Proto,
    mtus: &'static [u32],
    /// ICMPv6 code.
    code: u8,
    /// What Linux's rules leave in h's cache (`ip route get`).
    kernel: Option<Pmtu>,
}

fn seq(v6: bool, n: u8, proto: Proto, mtus: &'static [u32], kernel: Option<Pmtu>) -> Sequence {
    Sequence { dst: OracleLab::dest(v6, n), proto, mtus, code: 0, kernel }
}

const LOCK_552: Option<Pmtu> = Some(Pmtu::new(552, true));

fn sequences() -> Vec<Sequence> {
    use Proto::{Tcp, Udp};
    vec![
        // __ip_rt_update_pmtu(): under min_pmtu (552), MTU 0 included, the
        // entry is min(old, 552) and locked.
        seq(false, 10, Udp, &[0], LOCK_552),
        seq(false, 11, Tcp, &[1], LOCK_552),
        seq(false, 12, Udp, &[300], LOCK_552),
        seq(false, 13, Tcp, &[551], LOCK_552),
        seq(false, 14, Udp, &[552], Some(Pmtu::new(552, false))),
        // Only ever lowered.
        seq(false, 15, Tcp, &[1300, 1450], Some(Pmtu::new(1300, false))),
        // Lowered, then locked, then a locked entry ignores a report.
        seq(false, 16, Udp, &[1000, 400, 800], LOCK_552),
        // IPv6 under 1280 changes nothing, for UDP or TCP.
        seq(true, 0x10, Udp, &[1279], None),
        seq(true, 0x11, Tcp, &[1279], None),
        seq(true, 0x12, Tcp, &[1280], Some(Pmtu::new(1280, false))),
        // RFC 4443 §3.2: the code is ignored by the receiver.
        Sequence { code: 1, ..seq(true, 0x13, Udp, &[1400], Some(Pmtu::new(1400, false))) },
        // IPv6: lowered, not raised, lowered again.
        seq(true, 0x14, Tcp, &[1400, 1450, 1300], Some(Pmtu::new(1300, false))),
    ]
}

fn show(p: Option<Pmtu>) -> String {
    p.map_or("no cached PMTU".to_string(), |p| p.to_string())
}

#[test]
fn kernel_is_the_oracle_for_every_mtu_sequence() {
    if !require_root("kernel_is_the_oracle_for_every_mtu_sequence") {
        return;
    }
    let seqs = sequences();
    let dsts: Vec<IpAddr> = seqs.iter().map(|s| s.dst).collect();
    let lab = OracleLab::build(&dsts).unwrap();
    let tcp: Vec<IpAddr> = seqs.iter().filter(|s| s.proto == Proto::Tcp).map(|s| s.dst).collect();
    let _listeners = lab.listen(&tcp).unwrap();

    let capture = lab.capture_big_packets();
    let trace = start_trace(&lab.h, &["-i", OracleLab::H_IF, "--hook", "tc", "--json"]);
    let flows = lab.open_flows(&seqs.iter().map(|s| (s.dst, s.proto)).collect::<Vec<_>>()).unwrap();
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(400)));
    let packets = wire::packets(&capture.stop(libc::SIGTERM, EXIT));

    let mut forged = Vec::new();
    for (s, flow) in seqs.iter().zip(&flows) {
        let quote = flow.sent_packet(&packets);
        for &mtu in s.mtus {
            forged.push(Forge { code: s.code, ..Forge::new(quote.clone(), mtu) });
        }
    }
    lab.send_from_r(&forged);
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(500)));
    let kernel: Vec<_> = dsts.iter().map(|d| kernel_pmtu(&lab.h, *d)).collect();
    let run = trace.stop(libc::SIGTERM, EXIT);
    let t = Trace::parse(&run);

    let mut wrong = Vec::new();
    for (s, (k, k_text)) in seqs.iter().zip(&kernel) {
        let d = s.dst;
        let k_pmtu = k.map(|k| k.pmtu);
        let what = format!("{d} ({:?}, mtus {:?}{})", s.proto, s.mtus, if s.code != 0 { format!(", code {}", s.code) } else { String::new() });
        // The kernel side: Linux's rules, as `ip route get` shows them.
        if k_pmtu != s.kernel {
            wrong.push(format!("{what}: kernel has {} (want {}): {k_text}", show(k_pmtu), show(s.kernel)));
        }
        // pmtu's table equals the kernel's cache.
        let p = t.pmtu(d, "received");
        if p != k_pmtu {
            wrong.push(format!("{what}: pmtu's table has {}, the kernel {}: {k_text}", show(p), show(k_pmtu)));
        }
        if let (Some(row), Some(k)) = (t.row(d, "received"), k)
            && let (Some(pe), Some(ke)) = (row.expires_in, k.expires)
            // Read seconds apart (every `ip route get`, then pmtu's table):
            // more apart on a slow machine.
            && pe.abs_diff(ke) > pmtu_tests::slow(Duration::from_secs(2)).as_secs()
        {
            wrong.push(format!("{what}: pmtu expires in {pe}s, the kernel in {ke}s"));
        }
        // pmtu's own reading of the kernel (the final table's kernel column).
        match t.row(d, "received").map(|r| &r.kernel) {
            Some(Some(col)) => {
                if col.pmtu != k_pmtu {
                    wrong.push(format!("{what}: pmtu's kernel column says {} ({}), `ip route get` {}", show(col.pmtu), col.state, show(k_pmtu)));
                }
                if col.agrees != Some(true) {
                    wrong.push(format!("{what}: pmtu's kernel column does not agree: {}", row_raw(&t, d)));
                }
            }
            Some(None) => wrong.push(format!("{what}: no kernel column in pmtu's row {}", row_raw(&t, d))),
            None if k_pmtu.is_some() => wrong.push(format!("{what}: no row in pmtu's table")),
            None => {}
        }
        // One received event per PTB, in order, for this destination.
        let events = t.events_for(d);
        let mtus: Vec<u32> = events.iter().map(|e| e.mtu).collect();
        if mtus != s.mtus {
            wrong.push(format!("{what}: events with mtus {mtus:?}"));
        }
        for e in events {
            let want_valid = !(d.is_ipv6() && e.mtu < 1280);
            if e.direction.as_deref() != Some("received")
                || e.ifname != OracleLab::H_IF
                || e.hook != "tc-ingress"
                || e.valid != want_valid
                || e.reporter != ip(if d.is_ipv6() { OracleLab::R_V6 } else { OracleLab::R_V4 })
                || e.proto != if s.proto == Proto::Tcp { 6 } else { 17 }
            {
                wrong.push(format!("{what}: event {}", e.brief()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} finding(s):\n{}\n\nevents:\n{}\n\ntable: {}",
        wrong.len(),
        wrong.join("\n"),
        t.dump_events(),
        t.table
    );
    assert_eq!(t.events.len(), forged.len(), "one event per PTB:\n{}", t.dump_events());
    assert_clean(&lab.h, OracleLab::H_IF);
}

fn row_raw(t: &Trace, d: IpAddr) -> String {
    t.row(d, "received").map_or("none".to_string(), |r| r.raw.to_string())
}

const COUNTERS: [&str; 4] = ["IcmpInCsumErrors", "Icmp6InCsumErrors", "IpInHdrErrors", "Ip6InAddrErrors"];

#[test]
fn corrupt_ptbs_are_invalid_and_the_kernel_drops_them_too() {
    if !require_root("corrupt_ptbs_are_invalid_and_the_kernel_drops_them_too") {
        return;
    }
    let (v4, v6) = (OracleLab::dest(false, 20), OracleLab::dest(true, 0x20));
    let (v4_ok, v6_ok) = (OracleLab::dest(false, 21), OracleLab::dest(true, 0x21));
    let lab = OracleLab::build(&[v4, v6, v4_ok, v6_ok]).unwrap();
    let capture = lab.capture_big_packets();
    let trace = start_trace(&lab.h, &["-i", OracleLab::H_IF, "--hook", "tc", "--json"]);
    let flows = lab.open_flows(&[(v4, Proto::Udp), (v6, Proto::Udp), (v4_ok, Proto::Udp), (v6_ok, Proto::Udp)]).unwrap();
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(400)));
    let packets = wire::packets(&capture.stop(libc::SIGTERM, EXIT));
    let q: Vec<Vec<u8>> = flows.iter().map(|f| f.sent_packet(&packets)).collect();
    let not_h: IpAddr = ip("fd77:1::99");

    // (what, message, reason pmtu must give, kernel counter that must rise)
    let cases = [
        ("wrong ICMP checksum", Forge { fault: Fault::IcmpChecksum, ..Forge::new(q[0].clone(), 700) }, "bad-checksum", "IcmpInCsumErrors"),
        ("wrong IPv4 header checksum", Forge { fault: Fault::Ipv4HeaderChecksum, ..Forge::new(q[0].clone(), 701) }, "bad-checksum", "IpInHdrErrors"),
        ("wrong ICMPv6 checksum", Forge { fault: Fault::IcmpChecksum, ..Forge::new(q[1].clone(), 1300) }, "bad-checksum", "Icmp6InCsumErrors"),
        ("IPv6 PTB to another address on h's link", Forge { to: Some(not_h), ..Forge::new(q[1].clone(), 1301) }, "not-for-us", "Ip6InAddrErrors"),
    ];
    let before = nstat(&lab.h, &COUNTERS);
    let mut all: Vec<Forge> = cases.iter().map(|c| c.1.clone()).collect();
    lab.send_from_r(&all);
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(300)));
    let after = nstat(&lab.h, &COUNTERS);
    // The controls: the same messages, intact, for two other destinations.
    let controls = [Forge::new(q[2].clone(), 702), Forge::new(q[3].clone(), 1302)];
    lab.send_from_r(&controls);
    all.extend(controls.iter().cloned());
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(500)));
    let k: Vec<_> = [v4, v6, v4_ok, v6_ok].iter().map(|d| kernel_pmtu(&lab.h, *d)).collect();
    let run = trace.stop(libc::SIGTERM, EXIT);
    let t = Trace::parse(&run);

    let mut wrong = Vec::new();
    // The kernel dropped each, counted where it should be.
    for name in COUNTERS {
        let rise = after[name] - before[name];
        if rise != 1 {
            wrong.push(format!("kernel: {name} rose by {rise}, want 1 (before {before:?}, after {after:?})"));
        }
    }
    for (d, (kp, text)) in [v4, v6].iter().zip(&k[..2]) {
        if kp.is_some() {
            wrong.push(format!("kernel: {d} has a cached PMTU after corrupt PTBs only: {text}"));
        }
        for row in t.rows_for(*d) {
            if row.pmtu.is_some() {
                wrong.push(format!("pmtu: {d} tabled after corrupt PTBs only: {}", row.raw));
            }
        }
    }
    // pmtu: each corrupt one invalid, for the kernel's reason.
    for (what, forge, reason, _) in &cases {
        let hits: Vec<_> = t.events.iter().filter(|e| e.mtu == forge.mtu).collect();
        match hits.as_slice() {
            [e] if !e.valid && e.reasons == [*reason] => {}
            _ => wrong.push(format!(
                "pmtu: {what} (mtu {}): want one invalid event [{reason}], got: {:?}",
                forge.mtu,
                hits.iter().map(|e| e.brief()).collect::<Vec<_>>()
            )),
        }
    }
    // The controls: taken by the kernel and by pmtu alike.
    for ((d, (kp, text)), mtu) in [v4_ok, v6_ok].iter().zip(&k[2..]).zip([702, 1302]) {
        let want = Some(Pmtu::new(mtu, false));
        if kp.map(|k| k.pmtu) != want {
            wrong.push(format!("kernel: control {d} has {} (want mtu {mtu}): {text}", show(kp.map(|k| k.pmtu))));
        }
        if t.pmtu(*d, "received") != want {
            wrong.push(format!("pmtu: control {d} has {} (want mtu {mtu})", show(t.pmtu(*d, "received"))));
        }
        let ev: Vec<_> = t.events_for(*d);
        if !(ev.len() == 1 && ev[0].valid && ev[0].direction.as_deref() == Some("received")) {
            wrong.push(format!("pmtu: control {d}: {:?}", ev.iter().map(|e| e.brief()).collect::<Vec<_>>()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} finding(s):\n{}\n\nevents:\n{}\n\ntable: {}",
        wrong.len(),
        wrong.join("\n"),
        t.dump_events(),
        t.table
    );
    assert_eq!(t.events.len(), all.len(), "one event per message:\n{}", t.dump_events());
    assert_clean(&lab.h, OracleLab::H_IF);
}

#[test]
fn router_reports_each_ptb_once_with_its_direction() {
    if !require_root("router_reports_each_ptb_once_with_its_direction") {
        return;
    }
    let lab = SeedLab::build().unwrap();
    let (v4, v6) = (ip(SeedLab::TARGET_V4), ip(SeedLab::TARGET_V6));
    // Quoted destinations of the forgeries: beyond r2, never sent to.
    let (forged_v4, forged_v6) = (ip("192.168.7.3"), ip("fd54:54:54:3::3"));
    let capture = start_capture(&lab.h0, SeedLab::H0_IF, "icmp or icmp6");
    let trace = start_trace(&lab.r1, &["-i", SeedLab::R1_IF_H0, "-i", SeedLab::R1_IF_R2, "--hook", "tc", "--json"]);
    // (c) 1500 bytes: r1's own PTB (mtu 1370), then (b) 1370 bytes: r2's
    // (mtu 1350), forwarded by r1 to h0.
    for target in [SeedLab::TARGET_V4, SeedLab::TARGET_V6] {
        for size in [1500, 1370, 1350] {
            lab.probe(target, size).unwrap();
        }
    }
    // (a) Forged in r2, about flows that never crossed r1, sent to h0
    // through r1.
    scapy(
        &lab.r2,
        "send(IP(src='192.168.6.2', dst='192.168.5.1')/ICMP(type=3, code=4, nexthopmtu=1000)/IP(src='192.168.5.1', dst='192.168.7.3', len=1500, flags='DF')/UDP(sport=5555, dport=6666), verbose=0)\n\
         send(IPv6(src='fd54:54:54:2::2', dst='fd54:54:54:1::1')/ICMPv6PacketTooBig(mtu=1300)/IPv6(src='fd54:54:54:1::1', dst='fd54:54:54:3::3', plen=1460)/UDP(sport=5555, dport=6666), verbose=0)",
    );
    std::thread::sleep(pmtu_tests::slow(Duration::from_millis(400)));
    let run = trace.stop(libc::SIGTERM, EXIT);
    let wire_ptbs: Vec<(String, u32)> = wire::packets(&capture.stop(libc::SIGTERM, EXIT)).iter().filter_map(|p| p.ptb()).collect();
    let t = Trace::parse(&run);

    // The kernel side: every PTB crossed r1 to h0, and h0 learned 1350.
    let mut want_wire: Vec<(String, u32)> = [
        ("192.168.5.2", 1370),
        ("192.168.6.2", 1350),
        ("192.168.6.2", 1000),
        ("fd54:54:54:1::2", 1370),
        ("fd54:54:54:2::2", 1350),
        ("fd54:54:54:2::2", 1300),
    ]
    .iter()
    .map(|(a, m)| (a.to_string(), *m))
    .collect();
    want_wire.sort();
    let mut got_wire = wire_ptbs.clone();
    got_wire.sort();
    assert_eq!(got_wire, want_wire, "PTBs h0 received (tcpdump)");
    for target in [v4, v6] {
        let (k, text) = kernel_pmtu(&lab.h0, target);
        assert_eq!(k.map(|k| k.pmtu), Some(Pmtu::new(1350, false)), "h0's cache: {text}");
    }

    let mut wrong = Vec::new();
    // (reporter, mtu, direction, ifname, out_ifname, valid, reasons)
    type Want = (&'static str, u32, &'static str, &'static str, Option<&'static str>, bool, &'static [&'static str]);
    let want: [Want; 6] = [
        ("192.168.5.2", 1370, "sent", SeedLab::R1_IF_H0, None, true, &[]),
        ("fd54:54:54:1::2", 1370, "sent", SeedLab::R1_IF_H0, None, true, &[]),
        ("192.168.6.2", 1350, "transit", SeedLab::R1_IF_R2, Some(SeedLab::R1_IF_H0), true, &[]),
        ("fd54:54:54:2::2", 1350, "transit", SeedLab::R1_IF_R2, Some(SeedLab::R1_IF_H0), true, &[]),
        ("192.168.6.2", 1000, "transit", SeedLab::R1_IF_R2, Some(SeedLab::R1_IF_H0), false, &["unknown-flow"]),
        ("fd54:54:54:2::2", 1300, "transit", SeedLab::R1_IF_R2, Some(SeedLab::R1_IF_H0), false, &["unknown-flow"]),
    ];
    for (reporter, mtu, direction, ifname, out, valid, reasons) in want {
        let hits: Vec<_> = t.events.iter().filter(|e| e.reporter == ip(reporter) && e.mtu == mtu).collect();
        let ok = match hits.as_slice() {
            [e] => {
                e.direction.as_deref() == Some(direction)
                    && e.ifname == ifname
                    && (direction != "transit" || e.out_ifname.as_deref() == out)
                    && e.valid == valid
                    && e.reasons == reasons
                    && e.hook == if direction == "sent" { "tc-egress" } else { "tc-ingress" }
            }
            _ => false,
        };
        if !ok {
            wrong.push(format!(
                "{reporter} mtu {mtu}: want ONE {direction} event on {ifname}{} ({}{reasons:?}), got {:?}",
                out.map(|o| format!(" -> {o}")).unwrap_or_default(),
                if valid { "valid" } else { "invalid " },
                hits.iter().map(|e| e.brief()).collect::<Vec<_>>()
            ));
        }
    }
    if t.events.len() != want.len() {
        wrong.push(format!("{} events for {} PTBs", t.events.len(), want.len()));
    }
    // The table: transit and sent apart; the forgeries nowhere.
    for (target, family) in [(v4, 4), (v6, 6)] {
        let transit = t.pmtu(target, "transit");
        let sent = t.pmtu(target, "sent");
        if transit != Some(Pmtu::new(1350, false)) || sent != Some(Pmtu::new(1370, false)) {
            wrong.push(format!("v{family} {target}: transit {}, sent {} (want 1350, 1370)", show(transit), show(sent)));
        }
    }
    for forged in [forged_v4, forged_v6] {
        for row in t.rows_for(forged) {
            if row.pmtu.is_some() {
                wrong.push(format!("forged {forged} tabled: {}", row.raw));
            }
        }
    }
    if let Some(n) = t.counter("transit_seen_on_entry")
        && n != 4
    {
        wrong.push(format!("transit_seen_on_entry {n}, want 4 (four transit PTBs leaving toward h0)"));
    }
    assert!(wrong.is_empty(), "{} finding(s):\n{}\n\nevents:\n{}\n\ntable: {}", wrong.len(), wrong.join("\n"), t.dump_events(), t.table);
    assert_clean(&lab.r1, SeedLab::R1_IF_H0);
    assert_clean(&lab.r1, SeedLab::R1_IF_R2);
}

/// `pmtu trace` in `ns` with stdout on /dev/full; stderr is read.
struct FullTrace {
    child: Option<Child>,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl FullTrace {
    fn start(ns: &Netns, args: &[&str]) -> Self {
        let mut all = vec!["trace"];
        all.extend_from_slice(args);
        let mut cmd = pmtu_in(ns, &pmtu_tests::pmtu_bin(), &all);
        let full = File::options().write(true).open("/dev/full").expect("/dev/full");
        let mut child = cmd.stdin(Stdio::null()).stdout(full).stderr(Stdio::piped()).spawn().expect("starting pmtu trace");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut me = Self { child: Some(child), stderr: rx, seen: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.seen.iter().any(|l| l.contains("attached to")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match me.stderr.recv_timeout(left) {
                Ok(line) => me.seen.push(line),
                Err(_) => panic!("pmtu trace > /dev/full never attached; stderr:\n{}", me.seen.join("\n")),
            }
        }
        me
    }

    /// Waits up to `timeout` for the exit; None if it is still running.
    fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.as_ref().unwrap().id() as i32, sig) };
    }
}

impl Drop for FullTrace {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn says_no_space(stderr: &[String]) -> bool {
    stderr.iter().any(|l| l.starts_with("pmtu") && (l.contains("No space left on device") || l.contains("os error 28")))
}

#[test]
fn stdout_to_dev_full_is_an_error() {
    if !require_root("stdout_to_dev_full_is_an_error") {
        return;
    }
    let lab = SeedLab::build().unwrap();
    // An event to print: r1's PTB for a 1500-byte probe. pmtu must stop on
    // the failed write by itself, detached, status 1, and say why.
    let mut trace = FullTrace::start(&lab.h0, &["-i", SeedLab::H0_IF, "--hook", "tc"]);
    let answer = lab.probe(SeedLab::TARGET_V4, 1500).unwrap();
    assert!(answer.contains("mtu = 1370"), "no PTB came back: {answer}");
    let by_itself = trace.wait(Duration::from_secs(10));
    let status = match by_itself {
        Some(st) => st,
        None => {
            trace.signal(libc::SIGTERM);
            trace.wait(EXIT).expect("pmtu trace did not exit after SIGTERM")
        }
    };
    assert!(
        status.code() == Some(1) && says_no_space(&trace.seen),
        "an event to /dev/full: {status:?}{}; stderr:\n{}",
        if by_itself.is_none() { " (only after SIGTERM)" } else { "" },
        trace.seen.join("\n")
    );
    assert!(by_itself.is_some(), "an event to /dev/full: pmtu kept running until SIGTERM; stderr:\n{}", trace.seen.join("\n"));
    assert_clean(&lab.h0, SeedLab::H0_IF);

    // No events: the table at SIGTERM is the first write, text and JSON.
    for json in [false, true] {
        let mut args = vec!["-i", SeedLab::H0_IF, "--hook", "tc"];
        if json {
            args.push("--json");
        }
        let mut trace = FullTrace::start(&lab.h0, &args);
        trace.signal(libc::SIGTERM);
        let status = trace.wait(EXIT).expect("pmtu trace did not exit after SIGTERM");
        assert!(
            status.code() == Some(1) && says_no_space(&trace.seen),
            "the table to /dev/full (json {json}): {status:?}; stderr:\n{}",
            trace.seen.join("\n")
        );
        assert_clean(&lab.h0, SeedLab::H0_IF);
    }
}
