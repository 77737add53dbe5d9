//! `pmtu demo`: the seed-001 lab, traced live, next to the kernel's own cache.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    cli::DemoArgs,
    lab::{BlackHoleLab, Netns, SeedLab, Transfer, cached_mtu},
};

/// Probe sizes: the first hop's MTU, then each MTU the routers report.
pub const PROBES: [u32; 3] = [1500, 1370, 1350];

/// A `pmtu` subcommand running in a lab namespace. Dropping it sends
/// SIGTERM and waits, whatever happens to the demo.
struct Running(Child);

impl Running {
    /// Starts `pmtu ARGS` in `ns`, forwards its stderr, and returns once it
    /// says it is attached. Its stdout (events, tables) goes to ours.
    fn start(ns: &Netns, exe: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = ns
            .command(exe.to_str().context("pmtu path is not UTF-8")?)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting pmtu {}", args.join(" ")))?;
        let stderr = child.stderr.take().context("child stderr")?;
        let running = Running(child);
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let Some(line) = lines.next() else {
                bail!("pmtu {} exited before attaching", args.join(" "));
            };
            let line = line.context("reading pmtu's messages")?;
            eprintln!("{line}");
            if line.contains("attached to") {
                break;
            }
        }
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("{line}");
            }
        });
        Ok(running)
    }

    fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        signal_term(&self.0);
        let status = self.0.wait().context("waiting for pmtu")?;
        std::mem::forget(self);
        Ok(status)
    }
}

fn signal_term(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
}

impl Drop for Running {
    fn drop(&mut self) {
        signal_term(&self.0);
        let _ = self.0.wait();
    }
}

fn first_line_about_result(ping: &str) -> String {
    ping.lines()
        .find(|l| l.contains("mtu") || l.contains("bytes from") || l.contains("Packet too big"))
        .or_else(|| ping.lines().find(|l| l.contains("packet loss")))
        .unwrap_or("(no answer)")
        .trim()
        .to_string()
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::lab::remove_labs_on_signal()?;
    let exe = match args.pmtu {
        Some(p) => p,
        None => std::env::current_exe().context("locating the pmtu binary")?,
    };
    println!("Building the seed lab in fresh namespaces:");
    println!("  h0 —1500— r1 —1370— r2 —1350— h3   (192.168.5-7.0/30, fd54:54:54:1-3::/64)");
    let lab = SeedLab::build().context("building the lab (needs root and iproute2)")?;
    println!("  namespaces {}, {}, {}, {}\n", lab.h0.name(), lab.r1.name(), lab.r2.name(), lab.h3.name());

    println!("$ pmtu trace -i {}   (in h0)", SeedLab::H0_IF);
    let tracer = Running::start(&lab.h0, &exe, &["trace", "-i", SeedLab::H0_IF])?;
    for target in [SeedLab::TARGET_V4, SeedLab::TARGET_V6] {
        for size in PROBES {
            let payload = size - if target.contains(':') { 48 } else { 28 };
            println!("$ ping -M do -s {payload} {target}   ({size}-byte packet)");
            let ping = lab.probe(target, size)?;
            println!("  {}", first_line_about_result(&ping));
            // Let the tracer print the event before the next probe's line.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    println!("\nStopping the tracer (SIGTERM); its table:");
    let status = tracer.stop()?;
    if !status.success() {
        bail!("pmtu trace failed: {status}");
    }

    println!("\nThe kernel's own PMTU cache in h0:");
    let mut agree = true;
    for target in [SeedLab::TARGET_V4, SeedLab::TARGET_V6] {
        let route = lab.route_get(target)?;
        println!("$ ip route get {target}\n{}", route.trim_end());
        agree &= cached_mtu(&route) == Some(1350);
    }
    println!("\nRemoving the lab.");
    drop(lab);
    if !agree {
        bail!("the kernel did not cache mtu 1350 for both targets; see above");
    }
    black_hole(&exe).await?;
    learned(&exe).await
}

/// Bytes each way in the black-hole demo.
const TRANSFER: usize = 2 * 1024 * 1024;

fn show_transfer(family: &str, t: &Transfer) {
    if t.completed() {
        println!(
            "  IPv{family}: completed, {} bytes each way in {:.2} s",
            t.bytes,
            t.elapsed.as_secs_f64()
        );
    } else {
        println!(
            "  IPv{family}: stalled: c0 sent {} of {} bytes, got {} back, in {:.1} s",
            t.sent,
            t.bytes,
            t.received,
            t.elapsed.as_secs_f64()
        );
    }
}

/// Part two: seeds 002/003's black hole, then `pmtu clamp --to-pmtu` on r1.
async fn black_hole(exe: &Path) -> anyhow::Result<()> {
    println!("\nPart two: a PMTU black hole.");
    println!("  c0 —1500— r1 —1400— r2 —1500— s3, and r1 and r2 drop the Frag-Needed and");
    println!("  Packet-Too-Big messages they would send (iptables OUTPUT ... -j DROP).");
    let lab = BlackHoleLab::build().context("building the black-hole lab (needs iptables)")?;
    let servers = [("4", BlackHoleLab::SERVER_V4), ("6", BlackHoleLab::SERVER_V6)];

    println!("\n$ (c0) send 2 MiB to s3 and read 2 MiB back, over TCP");
    let mut stalled = true;
    for (port, (family, server)) in (6001..).zip(servers) {
        let t = lab.transfer(server, port, TRANSFER, Duration::from_secs(3))?;
        show_transfer(family, &t);
        stalled &= !t.completed();
    }

    println!(
        "\n$ pmtu clamp -i {} -i {} --to-pmtu   (in r1)",
        BlackHoleLab::R1_IF_C0,
        BlackHoleLab::R1_IF_R2
    );
    let clamp = Running::start(
        &lab.r1,
        exe,
        &["clamp", "-i", BlackHoleLab::R1_IF_C0, "-i", BlackHoleLab::R1_IF_R2, "--to-pmtu"],
    )?;
    println!("$ (c0) the same transfers again");
    let mut completed = true;
    for (port, (family, server)) in (6101..).zip(servers) {
        let t = lab.transfer(server, port, TRANSFER, Duration::from_secs(20))?;
        show_transfer(family, &t);
        completed &= t.completed();
    }
    println!("\nStopping the clamper (SIGTERM); its counters:");
    let status = clamp.stop()?;
    if !status.success() {
        bail!("pmtu clamp failed: {status}");
    }
    println!("\nRemoving the lab.");
    drop(lab);
    if !stalled || !completed {
        bail!("expected the transfers to stall without clamping and complete with it; see above");
    }
    Ok(())
}

/// Part three: clamping to a PMTU only a PTB in transit told r1.
async fn learned(exe: &Path) -> anyhow::Result<()> {
    println!("\nPart three: learned clamping, which iptables cannot do.");
    println!("  The seed lab again, with h0 and h3 advertising MSS 1460 (route advmss). r1's routes");
    println!("  know its own 1370-byte link toward h3, not r2's 1350-byte one; r2's Packet-Too-Big");
    println!("  for h3 crosses r1 toward h0, and Linux keeps nothing of it on r1.");
    let lab = SeedLab::build().context("building the lab")?;
    lab.advertise_large_mss()?;
    let target = SeedLab::TARGET_V4;
    println!(
        "\n$ pmtu clamp -i {} -i {} --learned --to-pmtu   (in r1)",
        SeedLab::R1_IF_H0,
        SeedLab::R1_IF_R2
    );
    let clamp = Running::start(
        &lab.r1,
        exe,
        &["clamp", "-i", SeedLab::R1_IF_H0, "-i", SeedLab::R1_IF_R2, "--learned", "--to-pmtu"],
    )?;
    let mut ok = true;
    println!("$ (h0) connect to h3, 64 KiB each way");
    println!("  (r1's route clamps the MSS to 1330; h0's 1370-byte segments draw r2's PTB for 1350,");
    println!("  which crosses r1 toward h0: pmtu learns from it)");
    ok &= lab_transfer(&lab, target, 6201).await?;
    println!("$ ip route get {target}   (in r1: no PMTU exception, its kernel learned nothing)");
    println!("{}", lab.r1.ip(&["-4", "route", "get", target])?.trim_end());
    println!("$ (h0) connect to h3 again   (now SYN and SYN-ACK leave r1 with MSS 1310)");
    ok &= lab_transfer(&lab, target, 6202).await?;
    println!("\nStopping the clamper (SIGTERM); its counters:");
    let status = clamp.stop()?;
    println!("\nRemoving the lab.");
    drop(lab);
    if !status.success() {
        bail!("pmtu clamp --learned failed: {status}");
    }
    if !ok {
        bail!("expected both transfers to complete; see above");
    }
    Ok(())
}

/// One 64 KiB transfer each way from h0 to `target`; says how it went.
async fn lab_transfer(lab: &SeedLab, target: &str, port: u16) -> anyhow::Result<bool> {
    let t = crate::lab::transfer(&lab.h0, &lab.h3, target, port, 64 * 1024, Duration::from_secs(10))?;
    show_transfer("4", &t);
    // Let the clamper print its lines before the next command's.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(t.completed())
}
