//! `pmtu demo`: the seed-001 lab, traced live, next to the kernel's own cache.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    cli::DemoArgs,
    lab::{SeedLab, cached_mtu},
};

/// Probe sizes: the first hop's MTU, then each MTU the routers report.
pub const PROBES: [u32; 3] = [1500, 1370, 1350];

/// Sends SIGTERM to the tracer and waits for it, whatever happens to the demo.
struct Tracer(Child);

impl Tracer {
    fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        signal_term(&self.0);
        let status = self.0.wait().context("waiting for pmtu trace")?;
        std::mem::forget(self);
        Ok(status)
    }
}

fn signal_term(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
}

impl Drop for Tracer {
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
    let exe = match args.pmtu {
        Some(p) => p,
        None => std::env::current_exe().context("locating the pmtu binary")?,
    };
    println!("Building the seed lab in fresh namespaces:");
    println!("  h0 —1500— r1 —1370— r2 —1350— h3   (192.168.5-7.0/30, fd54:54:54:1-3::/64)");
    let lab = SeedLab::build().context("building the lab (needs root and iproute2)")?;
    println!("  namespaces {}, {}, {}, {}\n", lab.h0.name(), lab.r1.name(), lab.r2.name(), lab.h3.name());

    println!("$ pmtu trace -i {}   (in h0)", SeedLab::H0_IF);
    let mut child = lab
        .h0
        .command(exe.to_str().context("pmtu path is not UTF-8")?)
        .args(["trace", "-i", SeedLab::H0_IF])
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pmtu trace in h0")?;
    let stderr = child.stderr.take().context("tracer stderr")?;
    let tracer = Tracer(child);
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let Some(line) = lines.next() else {
            bail!("pmtu trace exited before attaching");
        };
        let line = line.context("reading pmtu trace's messages")?;
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
    Ok(())
}
