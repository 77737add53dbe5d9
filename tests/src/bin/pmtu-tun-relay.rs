//! `pmtu-tun-relay --tun NAME --local ADDR:PORT --peer ADDR:PORT`: a
//! userspace tunnel end, as wireguard-go or OpenVPN are one, minus the
//! crypto. Every IP packet the kernel routes into tun device NAME goes to
//! the peer in one UDP datagram; every datagram from the peer goes back into
//! the tun as one packet. The tunnel labs run one in each of two namespaces,
//! so the tests see what pmtu does on an L3 device with no Ethernet header.
//!
//! The device must exist (`ip tuntap add dev NAME mode tun`, which sets
//! IFF_NO_PI by default); the relay attaches to it, which brings its carrier
//! up. It exits 0 on SIGTERM, SIGINT or SIGHUP, and when its parent dies
//! (PR_SET_PDEATHSIG), so a test that dies leaves no relay behind; it exits
//! 1 with a message on a fatal error. Per-packet errors (the peer not
//! listening yet, a packet the tun refuses) are counted and reported, not
//! fatal: a real tunnel keeps running through them too.
//!
//! std and libc only: the test harness must not depend on a runtime.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _, Write as _},
    net::{SocketAddr, UdpSocket},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    process::ExitCode,
    sync::atomic::{AtomicU64, Ordering},
};

const USAGE: &str = "usage: pmtu-tun-relay --tun NAME --local ADDR:PORT --peer ADDR:PORT";

/// Largest packet either way. A tun's MTU bounds what it hands us, but a
/// datagram from the peer could be larger; a buffer of the IP maximum never
/// truncates one silently.
const BUF: usize = 65_535;

/// Per-packet failures, reported when the relay exits.
static TUN_TO_UDP_ERRORS: AtomicU64 = AtomicU64::new(0);
static UDP_TO_TUN_ERRORS: AtomicU64 = AtomicU64::new(0);
static FORWARDED_TO_PEER: AtomicU64 = AtomicU64::new(0);
static FORWARDED_TO_TUN: AtomicU64 = AtomicU64::new(0);

struct Args {
    tun: String,
    local: SocketAddr,
    peer: SocketAddr,
}

fn parse_args() -> Result<Args, String> {
    let mut tun = None;
    let mut local = None;
    let mut peer = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_string());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--tun" => tun = Some(value),
            "--local" => local = Some(value.parse().map_err(|e| format!("--local {value}: {e}"))?),
            "--peer" => peer = Some(value.parse().map_err(|e| format!("--peer {value}: {e}"))?),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let tun: String = tun.ok_or_else(|| format!("--tun is required\n{USAGE}"))?;
    // IFNAMSIZ is 16 including the NUL.
    if tun.is_empty() || tun.len() > 15 || tun.contains('\0') {
        return Err(format!("--tun {tun:?}: an interface name has 1 to 15 bytes"));
    }
    Ok(Args {
        tun,
        local: local.ok_or_else(|| format!("--local is required\n{USAGE}"))?,
        peer: peer.ok_or_else(|| format!("--peer is required\n{USAGE}"))?,
    })
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (a short)
/// at the start of the 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Attaches to the existing tun device `name`, in IFF_TUN | IFF_NO_PI mode:
/// each read(2) returns one bare IP packet, each write(2) injects one.
fn open_tun(name: &str) -> io::Result<File> {
    // TUNSETIFF on a name that does not exist creates a new, non-persistent
    // device; a relay started in the wrong namespace would then relay for a
    // tun nothing routes to. Refuse instead.
    let cname = std::ffi::CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name} in this network namespace (create it first: ip tuntap add dev {name} mode tun)"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        // Not inherited by anything we might run (we run nothing, but the
        // fd must not outlive us in a child by accident).
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("opening /dev/net/tun: {e} (is the tun module loaded?)")))?;
    let mut req = IfReq { name: [0; 16], flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short, _pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is (40
    // bytes, as the kernel's), alive for the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) } != 0 {
        let e = io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::EINVAL) => " (a tap device, a tun with other flags, or `ip tuntap add ... pi`?)",
            Some(libc::EBUSY) => " (another process is attached to it)",
            Some(libc::EPERM) => " (needs CAP_NET_ADMIN in this namespace)",
            _ => "",
        };
        return Err(io::Error::new(e.kind(), format!("attaching to tun device {name}: {e}{hint}")));
    }
    Ok(file)
}

/// Reports a per-packet error, the first few in full, then every 1000th:
/// a flood of identical lines would hide the rest of a test's output.
fn report(counter: &AtomicU64, what: &str, e: &io::Error) {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= 5 || n.is_multiple_of(1000) {
        eprintln!("pmtu-tun-relay: {what}: {e} (error #{n})");
    }
}

/// Whether an error on a connected UDP socket is about one packet (the
/// peer's port not open yet, a full queue, a route that comes later) rather
/// than the socket itself.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ENOBUFS
                | libc::EAGAIN
                | libc::EINTR
                | libc::EMSGSIZE
                | libc::EPERM
        )
    )
}

/// tun → peer. Returns only on a fatal error.
fn tun_to_udp(mut tun: File, udp: UdpSocket) -> io::Error {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match tun.read(&mut buf) {
            Ok(0) => return io::Error::new(io::ErrorKind::UnexpectedEof, "the tun device went away"),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return io::Error::new(e.kind(), format!("reading the tun device: {e}")),
        };
        match udp.send(&buf[..n]) {
            Ok(_) => {
                FORWARDED_TO_PEER.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if transient(&e) => report(&TUN_TO_UDP_ERRORS, "sending to the peer", &e),
            Err(e) => return io::Error::new(e.kind(), format!("sending to the peer: {e}")),
        }
    }
}

/// peer → tun. Returns only on a fatal error.
fn udp_to_tun(udp: UdpSocket, mut tun: File) -> io::Error {
    let mut buf = vec![0u8; BUF];
    loop {
        // Connected: the kernel only delivers the peer's datagrams, as a
        // tunnel accepts only its configured peer.
        let n = match udp.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if transient(&e) => {
                // ECONNREFUSED here is the ICMP port-unreachable a send got
                // while the peer's relay was starting.
                report(&UDP_TO_TUN_ERRORS, "receiving from the peer", &e);
                continue;
            }
            Err(e) => return io::Error::new(e.kind(), format!("receiving from the peer: {e}")),
        };
        if n == 0 {
            continue;
        }
        match tun.write(&buf[..n]) {
            Ok(_) => {
                FORWARDED_TO_TUN.fetch_add(1, Ordering::Relaxed);
            }
            // EINVAL: not an IP packet the tun accepts; EIO: the device is
            // down for a moment. One packet lost, as on a real link.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIO | libc::ENOBUFS | libc::EINTR)) => {
                report(&UDP_TO_TUN_ERRORS, "writing to the tun device", &e)
            }
            Err(e) => return io::Error::new(e.kind(), format!("writing to the tun device: {e}")),
        }
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

fn summary() -> String {
    format!(
        "{} packets to the peer, {} to the tun, {} + {} per-packet errors",
        FORWARDED_TO_PEER.load(Ordering::Relaxed),
        FORWARDED_TO_TUN.load(Ordering::Relaxed),
        TUN_TO_UDP_ERRORS.load(Ordering::Relaxed),
        UDP_TO_TUN_ERRORS.load(Ordering::Relaxed),
    )
}

fn run(args: Args) -> io::Result<ExitCode> {
    let set = signal_set();
    // Block the stop signals before any thread exists, so every thread
    // inherits the mask and the main thread alone takes them, in sigwait.
    // SAFETY: pthread_sigmask on the calling thread with a valid set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // A test that dies (even by SIGKILL) must not leave us running: the
    // kernel sends SIGTERM when the parent exits.
    // SAFETY: prctl(PR_SET_PDEATHSIG, signal) has no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The parent may have died before the prctl: then we were reparented.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        eprintln!("pmtu-tun-relay: parent already gone, exiting");
        return Ok(ExitCode::SUCCESS);
    }

    let tun = open_tun(&args.tun)?;
    let udp = UdpSocket::bind(args.local)
        .map_err(|e| io::Error::new(e.kind(), format!("binding UDP {}: {e}", args.local)))?;
    udp.connect(args.peer)
        .map_err(|e| io::Error::new(e.kind(), format!("connecting UDP to {}: {e}", args.peer)))?;

    let (tun_r, udp_w) = (tun.try_clone()?, udp.try_clone()?);
    let (fatal_tx, fatal_rx) = std::sync::mpsc::channel::<io::Error>();
    let tx2 = fatal_tx.clone();
    std::thread::Builder::new().name("tun-to-udp".into()).spawn(move || {
        let _ = fatal_tx.send(tun_to_udp(tun_r, udp_w));
    })?;
    std::thread::Builder::new().name("udp-to-tun".into()).spawn(move || {
        let _ = tx2.send(udp_to_tun(udp, tun));
    })?;
    // A worker's fatal error must end the process even while the main
    // thread waits for a signal: a watcher thread turns it into an exit.
    std::thread::Builder::new().name("fatal".into()).spawn(move || {
        if let Ok(e) = fatal_rx.recv() {
            eprintln!("pmtu-tun-relay: error: {e}; {}", summary());
            std::process::exit(1);
        }
    })?;
    eprintln!("pmtu-tun-relay: relaying {} <-> udp {} <-> {}", args.tun, args.local, args.peer);

    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: sigwait with the set blocked above and a valid out-pointer.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 {
            break;
        }
        if rc != libc::EINTR {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    eprintln!("pmtu-tun-relay: signal {sig}, exiting; {}", summary());
    // The workers sit in blocking reads; exiting the process ends them, and
    // the kernel detaches the tun (a persistent device stays, its carrier off).
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("pmtu-tun-relay: {msg}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(code) => {
            let _ = io::stderr().flush();
            code
        }
        Err(e) => {
            eprintln!("pmtu-tun-relay: error: {e}");
            ExitCode::FAILURE
        }
    }
}
