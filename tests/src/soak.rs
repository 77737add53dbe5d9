//! The flood soak behind `cargo xtask soak`: PTBs, forged and valid mixed,
//! as fast as one sender on this machine manages, through a router where
//! pmtu observes and clamps, while a TCP transfer crosses it.
//!
//! Lab: the black-hole lab (c0 — r1 — r2 — s3). r1 runs `pmtu trace` and
//! `pmtu clamp --to-pmtu` on both its interfaces. From s3 a raw socket sends
//! ICMP Frag-Needed toward c0 with spoofed reporters in 10.1.3.0/24: one in
//! eight quotes c0's own echo-request flow (valid at r1), the rest quote UDP
//! flows that never existed (unknown-flow) with varied MTUs. c0 sends the
//! echo requests that make the valid ones valid, and the 2 MiB transfer.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use pmtu_user::lab::BlackHoleLab;
use serde_json::Value;

use crate::{
    frames::{V4, echo_head, frag_needed, icmp4, quote_v4, udp_head},
    procs::{Proc, pmtu_in, rss_kib},
};

const ECHO_ID: u16 = 0x4242;

/// What one soak run measured.
#[derive(Debug)]
pub struct Figures {
    pub secs: f64,
    pub sent: u64,
    pub send_errors: u64,
    pub produced: u64,
    pub submitted: u64,
    pub delivered: u64,
    pub rate_limited: u64,
    pub lost: u64,
    pub invalid: u64,
    /// 2 MiB transfers, one a second through the flood, and how many
    /// completed; the slowest took `transfer_secs`.
    pub transfers: u32,
    pub transfers_completed: u32,
    pub transfer_secs: f64,
    pub rss_kib: Vec<u64>,
    pub clamped: u64,
}

impl Figures {
    pub fn transfers_ok(&self) -> bool {
        self.transfers > 0 && self.transfers == self.transfers_completed
    }

    pub fn identity_holds(&self) -> bool {
        self.produced == self.delivered + self.rate_limited + self.lost && self.delivered == self.submitted
    }

    /// RSS after the first quarter of the run against its end.
    pub fn rss_growth_kib(&self) -> i64 {
        let warm = self.rss_kib.get(self.rss_kib.len() / 4).copied().unwrap_or(0);
        let last = self.rss_kib.last().copied().unwrap_or(0);
        last as i64 - warm as i64
    }

    pub fn report(&self) -> String {
        format!(
            "soak: {:.1} s\n\
             flood: {} PTBs sent ({:.0}/s), {} send errors (buffer full)\n\
             kernel: {} PTBs parsed = {} delivered + {} rate-limited + {} lost  [{}]\n\
             userspace: {} events delivered, {} submitted, {} invalid\n\
             transfers: {}/{} of 2 MiB each way completed, slowest {:.2} s; {} SYN/SYN-ACK clamped\n\
             tracer RSS KiB (1/s): {:?}; growth after warm-up {} KiB",
            self.secs,
            self.sent,
            self.sent as f64 / self.secs,
            self.send_errors,
            self.produced,
            self.delivered,
            self.rate_limited,
            self.lost,
            if self.identity_holds() { "holds" } else { "BROKEN" },
            self.delivered,
            self.submitted,
            self.invalid,
            self.transfers_completed,
            self.transfers,
            self.transfer_secs,
            self.clamped,
            self.rss_kib,
            self.rss_growth_kib(),
        )
    }
}

fn raw_socket() -> anyhow::Result<OwnedFd> {
    // SAFETY: plain socket(2); IPPROTO_RAW implies IP_HDRINCL.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send_to(fd: &OwnedFd, packet: &[u8], dst: [u8; 4]) -> bool {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(dst) },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid buffer and sockaddr_in.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    n == packet.len() as isize
}

/// The flood's packets: valid (quoting c0's echo flow) and forged.
fn flood_packets() -> Vec<Vec<u8>> {
    let c0 = BlackHoleLab::CLIENT_V4;
    let s3 = BlackHoleLab::SERVER_V4;
    let mut packets = Vec::new();
    for i in 0..256u32 {
        let reporter = format!("10.1.3.{}", 2 + (i % 250));
        let quote = if i % 8 == 0 {
            let mut echo = echo_head(false);
            echo[4..6].copy_from_slice(&ECHO_ID.to_be_bytes());
            quote_v4(c0, s3, 1, 1400, echo)
        } else {
            quote_v4(c0, s3, 17, 1400, udp_head(20000 + i as u16, 53))
        };
        let mtu = if i % 8 == 0 { 1300 } else { [60, 576, 1000, 1280, 1500, 9000][i as usize % 6] };
        packets.push(V4 { frag: 0, ..V4::new(&reporter, c0, 1) }.build(&frag_needed(mtu, &quote)));
    }
    packets
}

/// Runs the soak for `secs` seconds with the tracer's default limits.
pub fn run(secs: u64) -> anyhow::Result<Figures> {
    run_with(secs, &[])
}

/// Runs the soak with extra `pmtu trace` arguments (ring size, limits).
pub fn run_with(secs: u64, trace_args: &[&str]) -> anyhow::Result<Figures> {
    let lab = BlackHoleLab::build()?;
    let bin = crate::pmtu_bin();
    let ifs = ["-i", BlackHoleLab::R1_IF_C0, "-i", BlackHoleLab::R1_IF_R2];
    let mut trace = Proc::spawn(pmtu_in(&lab.r1, &bin, &[&["trace"][..], &ifs, &["--json"], trace_args].concat()), "pmtu trace");
    trace.wait_for_stderr("attached to", Duration::from_secs(30));
    let mut clamp = Proc::spawn(pmtu_in(&lab.r1, &bin, &[&["clamp"][..], &ifs, &["--to-pmtu", "--json"]].concat()), "pmtu clamp");
    clamp.wait_for_stderr("attached to", Duration::from_secs(30));
    let trace_pid = trace.pid() as u32;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);

    // c0: the echo requests that make the "valid" PTBs' flow real, 20/s.
    let echo_stop = stop.clone();
    let echoes = lab.c0.spawn(move || -> anyhow::Result<()> {
        let fd = raw_socket()?;
        let s3: std::net::Ipv4Addr = BlackHoleLab::SERVER_V4.parse()?;
        let mut seq = 0u16;
        while !echo_stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let id = ECHO_ID.to_be_bytes();
            let s = seq.to_be_bytes();
            let packet = V4::new(BlackHoleLab::CLIENT_V4, BlackHoleLab::SERVER_V4, 1).build(&icmp4(8, 0, [id[0], id[1], s[0], s[1]], b"pmtu soak"));
            send_to(&fd, &packet, s3.octets());
            seq = seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(200));

    // s3: the flood, bounded by the deadline.
    let (flood_stop, flood_sent, flood_errors) = (stop.clone(), sent.clone(), errors.clone());
    let flood = lab.s3.spawn(move || -> anyhow::Result<()> {
        let fd = raw_socket()?;
        let packets = flood_packets();
        let c0: std::net::Ipv4Addr = BlackHoleLab::CLIENT_V4.parse()?;
        let mut i = 0usize;
        while !flood_stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            for _ in 0..256 {
                if send_to(&fd, &packets[i % packets.len()], c0.octets()) {
                    flood_sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    flood_errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }
        Ok(())
    })?;

    // Transfers through the flood, one a second, and the tracer's RSS.
    let started = Instant::now();
    let mut rss = Vec::new();
    let (mut transfers, mut completed, mut slowest) = (0u32, 0u32, 0f64);
    let mut port = 5300u16;
    while Instant::now() + Duration::from_secs(1) < deadline {
        let second = Instant::now();
        port += 1;
        let t = lab.transfer(BlackHoleLab::SERVER_V4, port, 2 * 1024 * 1024, Duration::from_secs(10))?;
        transfers += 1;
        completed += t.completed() as u32;
        slowest = slowest.max(t.elapsed.as_secs_f64());
        rss.push(rss_kib(trace_pid));
        std::thread::sleep(Duration::from_secs(1).saturating_sub(second.elapsed()));
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
    echoes.join().map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    let elapsed = started.elapsed().as_secs_f64();
    // Let the last events reach the ring before stopping.
    std::thread::sleep(Duration::from_millis(300));

    let trace_run = trace.stop(libc::SIGTERM, Duration::from_secs(30));
    let clamp_run = clamp.stop(libc::SIGTERM, Duration::from_secs(30));
    if !trace_run.status.success() || !clamp_run.status.success() {
        bail!("pmtu failed: {:?} {:?}", trace_run.stderr, clamp_run.stderr);
    }
    let table: Value = serde_json::from_str(trace_run.stdout.last().context("trace table")?)?;
    let report: Value = serde_json::from_str(clamp_run.stdout.last().context("clamp report")?)?;
    let c = &table["counters"];
    let n = |k: &str| c[k].as_u64().unwrap_or(u64::MAX);
    let clamped = report["interfaces"].as_array().map_or(0, |a| a.iter().map(|i| i["counters"]["clamped"].as_u64().unwrap_or(0)).sum());
    Ok(Figures {
        secs: elapsed,
        sent: sent.load(Ordering::Relaxed),
        send_errors: errors.load(Ordering::Relaxed),
        produced: n("ptb_v4") + n("ptb_v6"),
        submitted: n("events_submitted"),
        delivered: n("events_delivered"),
        rate_limited: n("rate_limited"),
        lost: n("ring_lost"),
        invalid: n("invalid"),
        transfers,
        transfers_completed: completed,
        transfer_secs: slowest,
        rss_kib: rss,
        clamped,
    })
}
