//! Interfaces that come and go, share their hooks, or cannot be served:
//! `pmtu clamp` and `pmtu trace` follow link events, go first on TCX hooks,
//! and refuse what they cannot handle with a message, not a raw errno.
//!
//! Lab: namespaces a and b, a veth x0 (a) — y0 (b), 10.77.0.1/24 — .2.
//! pmtu runs in a; a SYN leaving x0 is clamped at tc egress (seen in b with
//! tcpdump), a SYN-ACK coming in at tc ingress (seen as the client's MSS).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use pmtu_common::policy::{ClampPolicy, MODE_SET_MSS};
use pmtu_tests::{
    procs::{Finished, Proc, pmtu_in, start_capture_with},
    require_root,
    residue::{assert_clean, tcx_programs},
};
use pmtu_user::{
    lab::{End, Netns, link, unique_prefix},
    loader::{PROG_CLAMP_EGRESS, PROG_PASS_TC, Programs, Role, ifindex},
};
use serde_json::Value;

const EXIT: Duration = Duration::from_secs(20);
const ATTACH: Duration = Duration::from_secs(30);
const CLAMP: u16 = 1000;
const SERVER: &str = "10.77.0.2";
/// Linux's own SYN MSS on a 1500-byte link, IPv4.
const UNCLAMPED: u16 = 1460;

struct Lab {
    a: Netns,
    b: Netns,
}

impl Lab {
    fn build() -> Self {
        let prefix = unique_prefix();
        let lab = Self {
            a: Netns::create(format!("{prefix}-a")).unwrap(),
            b: Netns::create(format!("{prefix}-b")).unwrap(),
        };
        lab.link("x0", "y0");
        lab
    }

    /// (Re)creates the veth `a_if` (in a) — `b_if` (in b) with the lab's
    /// addresses.
    fn link(&self, a_if: &str, b_if: &str) {
        link(
            &End { ns: &self.a, ifname: a_if, v4: "10.77.0.1/24", v6: "fd77::1/64" },
            &End { ns: &self.b, ifname: b_if, v4: "10.77.0.2/24", v6: "fd77::2/64" },
            1500,
        )
        .unwrap();
    }

    /// Connects from a to b on `port`; returns the connection's MSS as the
    /// client sees it (TCP_MAXSEG: the SYN-ACK's MSS less TCP options).
    fn client_mss(&self, port: u16) -> u32 {
        let addr = SocketAddr::new(SERVER.parse().unwrap(), port);
        // A socket stays in the namespace it was made in: the listener
        // answers in b after its thread is gone; the kernel completes the
        // handshake without an accept.
        let listener = self.b.enter(move || TcpListener::bind(addr)).unwrap().unwrap();
        let stream = self
            .a
            .enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
            .unwrap()
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let mut mss: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt on an open socket, into a c_int of the given size.
        let rc = unsafe {
            libc::getsockopt(stream.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_MAXSEG, (&mut mss as *mut libc::c_int).cast(), &mut len)
        };
        assert_eq!(rc, 0, "getsockopt TCP_MAXSEG: {}", std::io::Error::last_os_error());
        drop(listener);
        mss as u32
    }

    /// The MSS of the SYN that reached b on `b_if` for one connection to
    /// `port`.
    fn syn_mss_at_b(&self, b_if: &str, port: u16) -> Option<u16> {
        let cap = start_capture_with(&self.b, b_if, &["-vv"], &format!("tcp port {port}"));
        self.client_mss(port);
        std::thread::sleep(Duration::from_millis(200));
        let cap = cap.stop(libc::SIGTERM, EXIT);
        mss_of(&cap, "S")
    }

    /// Tries connections (a new port each) until the client sees a clamped
    /// MSS; returns how many it took, or panics after `within`.
    fn clamped_within(&self, first_port: u16, within: Duration) -> u64 {
        let start = Instant::now();
        for port in first_port.. {
            if self.client_mss(port) <= u32::from(CLAMP) {
                return u64::from(port - first_port) + 1;
            }
            assert!(start.elapsed() < within, "not clamped within {within:?} (last port {port})");
            std::thread::sleep(Duration::from_millis(20));
        }
        unreachable!()
    }
}

/// The MSS option of the first segment with tcpdump flags `flags`.
fn mss_of(capture: &Finished, flags: &str) -> Option<u16> {
    capture
        .stdout
        .iter()
        .filter(|l| l.contains(&format!("Flags [{flags}]")))
        .find_map(|l| l.split("mss ").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
}

fn start_pmtu(ns: &Netns, args: &[&str]) -> Proc {
    Proc::spawn(pmtu_in(ns, &pmtu_tests::pmtu_bin(), args), &format!("pmtu {}", args.join(" ")))
}

/// The rows of a `pmtu clamp --json` report.
fn clamp_report(run: &Finished) -> Vec<Value> {
    assert!(run.status.success(), "pmtu clamp failed: {:?}\n{}", run.status, run.stderr.join("\n"));
    let report: Value = serde_json::from_str(run.stdout.last().expect("a report line")).unwrap();
    report["interfaces"].as_array().unwrap().clone()
}

fn counter(row: &Value, name: &str) -> u64 {
    row["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name} in {row}"))
}

/// A clamped (and traced) interface is deleted and re-created: pmtu says
/// so, attaches again at once, and counts both lives under one name.
#[test]
fn clamp_and_trace_follow_an_interface_that_goes_and_returns() {
    if !require_root("clamp_and_trace_follow_an_interface_that_goes_and_returns") {
        return;
    }
    let lab = Lab::build();
    let mut clamp = start_pmtu(&lab.a, &["clamp", "-i", "x0", "--set-mss", "1000", "--json"]);
    clamp.wait_for_stderr("attached to 1 interface(s)", ATTACH);
    let mut trace = start_pmtu(&lab.a, &["trace", "-i", "x0", "--hook", "tc"]);
    trace.wait_for_stderr("attached to 1 interface(s)", ATTACH);

    assert_eq!(lab.syn_mss_at_b("y0", 6001), Some(CLAMP), "clamped before the interface goes");
    assert!(lab.client_mss(6002) <= u32::from(CLAMP));

    lab.a.ip(&["link", "del", "x0"]).unwrap();
    clamp.wait_for_stderr("pmtu: x0: gone; waiting for it to return", Duration::from_secs(5));
    trace.wait_for_stderr("pmtu: x0: gone; waiting for it to return", Duration::from_secs(5));
    assert!(tcx_programs(&lab.a, "lo").is_empty());

    let returned = Instant::now();
    lab.link("x0", "y0");
    clamp.wait_for_stderr("pmtu: x0: back (ifindex ", Duration::from_secs(2));
    trace.wait_for_stderr("pmtu: x0: back (ifindex ", Duration::from_secs(2));
    let tries = lab.clamped_within(6100, Duration::from_secs(2));
    assert!(returned.elapsed() < Duration::from_secs(3), "clamped {:?} after the return", returned.elapsed());
    assert_eq!(lab.syn_mss_at_b("y0", 6003), Some(CLAMP), "the SYN on the wire is clamped again");
    let progs = tcx_programs(&lab.a, "x0");
    assert_eq!(progs.len(), 4, "clamper and observer on each hook, once: {progs:?}");

    let traced = trace.stop(libc::SIGTERM, EXIT);
    assert!(traced.status.success(), "{:?}", traced.stderr);
    let run = clamp.stop(libc::SIGTERM, EXIT);
    let rows = clamp_report(&run);
    assert!(!run.stderr.iter().any(|l| l.contains("error")), "{:?}", run.stderr);
    assert_eq!(rows.len(), 1, "one row per name, however many lives: {rows:?}");
    assert_eq!(rows[0]["ifname"], "x0");
    // Both lives are counted, each once: 2 connections before, `tries` + 1
    // after, a SYN and a SYN-ACK clamped in each (the last try and the one
    // after it at least; the slot of the first life was zeroed, not counted
    // twice).
    let (seen, clamped) = (counter(&rows[0], "syn_seen"), counter(&rows[0], "clamped"));
    let connections = 2 + tries + 1;
    assert!(clamped >= 8 && clamped <= 2 * connections && clamped == seen, "syn_seen {seen}, clamped {clamped}, {connections} connections: {rows:?}");
    assert_clean(&lab.a, "x0");
}

/// A program that ends the TCX chain (TC_ACT_OK), attached before pmtu
/// starts, would hide every packet from a program behind it; pmtu goes in
/// front of it, says who shares the hook, and clamps.
#[test]
fn a_program_ending_the_chain_does_not_bypass_the_clamp() {
    if !require_root("a_program_ending_the_chain_does_not_bypass_the_clamp") {
        return;
    }
    let lab = Lab::build();
    // The other tool: pmtu_pass_tc at x0's tc egress, and, first, the
    // clamper behind it the way a plain attach puts it (last).
    let (mut other, index) = lab
        .a
        .enter(|| {
            let mut p = Programs::load(Role::Bench, None).unwrap();
            let pass: &mut SchedClassifier = p.ebpf_mut().program_mut(PROG_PASS_TC).unwrap().try_into().unwrap();
            pass.attach("x0", TcAttachType::Egress).unwrap();
            (p, ifindex("x0").unwrap())
        })
        .unwrap();
    other
        .set_clamp_policy(index, ClampPolicy { mode: MODE_SET_MSS, mss: u32::from(CLAMP), slot: 0, _pad: 0 })
        .unwrap();
    let behind = lab
        .a
        .enter(|| {
            let prog: &mut SchedClassifier = other.ebpf_mut().program_mut(PROG_CLAMP_EGRESS).unwrap().try_into().unwrap();
            prog.attach("x0", TcAttachType::Egress).unwrap()
        })
        .unwrap();
    assert_eq!(lab.syn_mss_at_b("y0", 6201), Some(UNCLAMPED), "control: a clamper behind TC_ACT_OK never runs");
    let prog: &mut SchedClassifier = other.ebpf_mut().program_mut(PROG_CLAMP_EGRESS).unwrap().try_into().unwrap();
    prog.detach(behind).unwrap();

    let mut clamp = start_pmtu(&lab.a, &["clamp", "-i", "x0", "--set-mss", "1000", "--json"]);
    clamp.wait_for_stderr("pmtu: x0: tc egress: pmtu first; also on this hook: pmtu_pass_tc (id ", ATTACH);
    clamp.wait_for_stderr("attached to 1 interface(s)", ATTACH);
    let progs = tcx_programs(&lab.a, "x0");
    assert_eq!(progs.last().map(String::as_str), Some("Egress:pmtu_pass_tc"), "pmtu went in front: {progs:?}");
    assert_eq!(lab.syn_mss_at_b("y0", 6202), Some(CLAMP), "pmtu clamps in front of TC_ACT_OK");

    let run = clamp.stop(libc::SIGTERM, EXIT);
    let rows = clamp_report(&run);
    assert!(counter(&rows[0], "clamped") >= 2, "{rows:?}");
    // Only the other tool's program is left.
    assert_eq!(tcx_programs(&lab.a, "x0"), ["Egress:pmtu_pass_tc"]);
    drop(other);
    assert_clean(&lab.a, "x0");
}

/// `-i 'vx*'` serves interfaces created after pmtu started, trace and clamp.
#[test]
fn globs_pick_up_interfaces_created_later() {
    if !require_root("globs_pick_up_interfaces_created_later") {
        return;
    }
    let lab = Lab::build();
    let mut clamp = start_pmtu(&lab.a, &["clamp", "-i", "vx*", "--set-mss", "1000", "--json"]);
    clamp.wait_for_stderr("pmtu: -i 'vx*' matches no interface yet; waiting for one to appear", ATTACH);
    clamp.wait_for_stderr("attached to 0 interface(s)", ATTACH);
    let mut trace = start_pmtu(&lab.a, &["trace", "-i", "vx*", "--hook", "tc"]);
    trace.wait_for_stderr("attached to 0 interface(s)", ATTACH);
    // x0 does not match: left alone.
    assert_eq!(lab.syn_mss_at_b("y0", 6301), Some(UNCLAMPED));

    lab.a.ip(&["link", "del", "x0"]).unwrap();
    let created = Instant::now();
    lab.link("vx0", "vy0");
    clamp.wait_for_stderr("pmtu: vx0: appeared (ifindex ", Duration::from_secs(2));
    trace.wait_for_stderr("pmtu: vx0: appeared (ifindex ", Duration::from_secs(2));
    lab.clamped_within(6400, Duration::from_secs(2));
    assert!(created.elapsed() < Duration::from_secs(3), "{:?}", created.elapsed());
    assert_eq!(lab.syn_mss_at_b("vy0", 6302), Some(CLAMP));

    assert!(trace.stop(libc::SIGTERM, EXIT).status.success());
    let rows = clamp_report(&clamp.stop(libc::SIGTERM, EXIT));
    assert_eq!(rows.iter().map(|r| r["ifname"].as_str().unwrap()).collect::<Vec<_>>(), ["vx0"]);
    assert_clean(&lab.a, "vx0");
}

/// Creates a tun device in `ns` and sets its link type (TUNSETLINK), so
/// it reports a type pmtu does not handle, as a CAN or InfiniBand device
/// would; none of those can be made on this kernel.
fn tun_with_link_type(ns: &Netns, name: &str, link_type: u16) {
    let script = format!(
        "import fcntl, os, struct\n\
         fd = os.open('/dev/net/tun', os.O_RDWR)\n\
         fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', b'{name}', 0x0001 | 0x1000))  # TUNSETIFF: IFF_TUN | IFF_NO_PI\n\
         fcntl.ioctl(fd, 0x400454cd, {link_type})  # TUNSETLINK\n\
         fcntl.ioctl(fd, 0x400454cb, 1)  # TUNSETPERSIST\n"
    );
    ns.run("/usr/bin/python3", &["-c", &script]).unwrap();
}

/// What pmtu cannot parse is refused by name and type; an L3 device
/// (tun) is served with the `_l3` programs, its ingress at tc.
#[test]
fn link_types_pmtu_cannot_parse_are_refused_and_l3_devices_served() {
    if !require_root("link_types_pmtu_cannot_parse_are_refused_and_l3_devices_served") {
        return;
    }
    let lab = Lab::build();
    tun_with_link_type(&lab.a, "can7", 280);
    lab.a.ip(&["tuntap", "add", "mode", "tun", "name", "tun0"]).unwrap();
    lab.a.ip(&["link", "set", "tun0", "up"]).unwrap();
    let want = "pmtu: error: can7: link type 280 (CAN) is not supported; pmtu handles Ethernet and L3 \
                (tun, WireGuard, PPP, IP tunnels) interfaces";
    for cmd in [&["clamp", "-i", "can7", "--set-mss", "1000"][..], &["trace", "-i", "x0", "-i", "can7"]] {
        let run = start_pmtu(&lab.a, cmd).wait(EXIT);
        assert_eq!(run.status.code(), Some(1), "{cmd:?}");
        assert_eq!(run.stderr, [want], "{cmd:?}");
    }
    assert_clean(&lab.a, "x0");

    // Matched by a glob, it is left alone with the same reason; tun0 is served.
    let run = start_pmtu(&lab.a, &["clamp", "-i", "can*", "-i", "tun*", "--set-mss", "1000", "--duration", "1", "--json"]).wait(EXIT);
    let rows = clamp_report(&run);
    assert!(
        run.stderr.iter().any(|l| l.starts_with("pmtu: can7: link type 280 (CAN) is not supported") && l.ends_with("leaving it alone (matched -i 'can*')")),
        "{:?}",
        run.stderr
    );
    assert!(run.stderr.iter().any(|l| l.contains("tun0: clamping") && l.contains("L3 device")), "{:?}", run.stderr);
    assert_eq!(rows.iter().map(|r| r["ifname"].as_str().unwrap()).collect::<Vec<_>>(), ["tun0"]);

    let mut trace = start_pmtu(&lab.a, &["trace", "-i", "tun0"]);
    trace.wait_for_stderr("pmtu: tun0: tc ingress (TCX; L3 device: no Ethernet header for XDP)", ATTACH);
    trace.wait_for_stderr("attached to 1 interface(s)", ATTACH);
    let progs = tcx_programs(&lab.a, "tun0");
    // The kernel keeps 15 bytes of a program's name: which variant it is,
    // the start-up line says.
    assert_eq!(progs, ["Ingress:pmtu_observe_tc", "Egress:pmtu_observe_tc"]);
    assert!(trace.stop(libc::SIGTERM, EXIT).status.success());
    assert_clean(&lab.a, "tun0");
}

/// A repeated `-i` is an error before anything is attached, not the
/// kernel's "File exists".
#[test]
fn a_repeated_interface_is_an_error_before_attaching() {
    if !require_root("a_repeated_interface_is_an_error_before_attaching") {
        return;
    }
    let lab = Lab::build();
    for (cmd, arg) in [
        (&["clamp", "-i", "x0", "-i", "x0", "--to-pmtu"][..], "x0"),
        (&["clamp", "-i", "x*", "-i", "lo", "-i", "x*", "--to-pmtu"], "x*"),
        (&["trace", "-i", "x0", "-i", "x0"], "x0"),
    ] {
        let run = start_pmtu(&lab.a, cmd).wait(EXIT);
        assert_eq!(run.status.code(), Some(1), "{cmd:?}");
        assert_eq!(run.stderr, [format!("pmtu: error: -i {arg} is given twice; give each interface or pattern once")], "{cmd:?}");
        assert_clean(&lab.a, "x0");
    }
    // A name and a glob that both select x0: served once, no error.
    let run = start_pmtu(&lab.a, &["clamp", "-i", "x0", "-i", "x*", "--set-mss", "1000", "--duration", "1", "--json"]).wait(EXIT);
    assert_eq!(clamp_report(&run).len(), 1, "{:?}", run.stderr);
    assert_clean(&lab.a, "x0");
}
