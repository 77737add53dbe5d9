//! Sections 2 and 3: TCP throughput (iperf3) and new connections per second
//! through a router namespace, c — r — s over veth with MTU 1500, for the
//! arms measured in interleaved rounds: no program, iptables TCPMSS,
//! nftables `maxseg size set rt mtu`, pmtu observer (XDP, and tc ingress),
//! pmtu clamper, observer and clamper.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use pmtu_user::lab::{End, Netns, link, unique_prefix};
use serde::Serialize;

use super::{Plan, Stats};
use crate::procs::{Proc, pmtu_in};

const SERVER: &str = "10.2.2.2";

pub const ARMS: [&str; 7] = [
    "none",
    "iptables TCPMSS",
    "nftables maxseg",
    "pmtu observer",
    "pmtu observer --hook xdp",
    "pmtu clamper",
    "pmtu observer + clamper",
];

#[derive(Debug, Serialize)]
pub struct Arm {
    pub arm: &'static str,
    pub stats: Stats,
    pub ratio_to_none: f64,
    pub ratio_to_iptables: f64,
}

#[derive(Debug, Serialize)]
pub struct Arms {
    pub unit: &'static str,
    pub rounds: u32,
    pub seconds_per_measurement: u32,
    pub arms: Vec<Arm>,
    /// `ethtool -k` on the router's interfaces was the same in every arm.
    pub offloads_identical: bool,
    pub offloads: String,
}

struct RouterLab {
    c: Netns,
    r: Netns,
    s: Netns,
}

impl RouterLab {
    fn build() -> anyhow::Result<Self> {
        let prefix = unique_prefix();
        let ns = |role: &str| Netns::create(format!("{prefix}-{role}"));
        let lab = Self { c: ns("c")?, r: ns("r")?, s: ns("s")? };
        link(
            &End { ns: &lab.c, ifname: "to-r", v4: "10.2.1.1/24", v6: "fd00:2:1::1/64" },
            &End { ns: &lab.r, ifname: "to-c", v4: "10.2.1.2/24", v6: "fd00:2:1::2/64" },
            1500,
        )?;
        link(
            &End { ns: &lab.r, ifname: "to-s", v4: "10.2.2.1/24", v6: "fd00:2:2::1/64" },
            &End { ns: &lab.s, ifname: "to-r", v4: "10.2.2.2/24", v6: "fd00:2:2::2/64" },
            1500,
        )?;
        lab.r.sysctl("net.ipv4.ip_forward", "1")?;
        lab.c.ip(&["route", "add", "default", "via", "10.2.1.2"])?;
        lab.s.ip(&["route", "add", "default", "via", "10.2.2.1"])?;
        Ok(lab)
    }

    fn offloads(&self) -> String {
        ["to-c", "to-s"]
            .iter()
            .map(|i| self.r.run("ethtool", &["-k", i]).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Whatever an arm added to the router; undone on drop.
enum Setup<'a> {
    None,
    Iptables(&'a Netns),
    Nft(&'a Netns),
    Pmtu(Vec<Proc>),
}

impl Drop for Setup<'_> {
    fn drop(&mut self) {
        match self {
            Setup::Iptables(r) => drop(r.run("iptables", &["-t", "mangle", "-F", "FORWARD"])),
            Setup::Nft(r) => drop(r.run("nft", &["delete", "table", "inet", "pmtubench"])),
            Setup::Pmtu(procs) => {
                for p in procs.drain(..) {
                    p.stop(libc::SIGTERM, Duration::from_secs(20));
                }
            }
            Setup::None => {}
        }
    }
}

fn setup<'a>(lab: &'a RouterLab, arm: &str) -> anyhow::Result<Setup<'a>> {
    let pmtu = |args: &[&str]| {
        let mut p = Proc::spawn(pmtu_in(&lab.r, &crate::pmtu_bin(), args), "pmtu");
        p.wait_for_stderr("attached to", Duration::from_secs(30));
        p
    };
    let ifs = ["-i", "to-c", "-i", "to-s"];
    Ok(match arm {
        "none" => Setup::None,
        "iptables TCPMSS" => {
            lab.r.run("iptables", &["-t", "mangle", "-A", "FORWARD", "-p", "tcp", "--tcp-flags", "SYN,RST", "SYN", "-j", "TCPMSS", "--clamp-mss-to-pmtu"])?;
            Setup::Iptables(&lab.r)
        }
        "nftables maxseg" => {
            lab.r.run("nft", &["add", "table", "inet", "pmtubench"])?;
            lab.r.run("nft", &["add", "chain", "inet", "pmtubench", "mssclamp", "{ type filter hook forward priority mangle; }"])?;
            lab.r.run("nft", &["add", "rule", "inet", "pmtubench", "mssclamp", "tcp", "flags", "syn", "tcp", "option", "maxseg", "size", "set", "rt", "mtu"])?;
            Setup::Nft(&lab.r)
        }
        "pmtu observer" => Setup::Pmtu(vec![pmtu(&[&["trace"][..], &ifs].concat())]),
        "pmtu observer --hook xdp" => Setup::Pmtu(vec![pmtu(&[&["trace", "--hook", "xdp"][..], &ifs].concat())]),
        "pmtu clamper" => Setup::Pmtu(vec![pmtu(&[&["clamp", "--to-pmtu"][..], &ifs].concat())]),
        _ => Setup::Pmtu(vec![pmtu(&[&["trace"][..], &ifs].concat()), pmtu(&[&["clamp", "--to-pmtu"][..], &ifs].concat())]),
    })
}

fn throughput_gbps(lab: &RouterLab, secs: u32) -> anyhow::Result<f64> {
    let out = lab.c.run("iperf3", &["-c", SERVER, "-t", &secs.to_string(), "-J"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("iperf3 JSON")?;
    v["end"]["sum_received"]["bits_per_second"].as_f64().map(|b| b / 1e9).context("iperf3 result")
}

/// Short connections from c to s for `secs`: connect, then close with RST
/// (SO_LINGER 0) so no TIME_WAIT exhausts the ports. Returns connections/s.
fn syn_rate(lab: &RouterLab, port: u16, secs: u32) -> anyhow::Result<f64> {
    let addr: SocketAddr = format!("{SERVER}:{port}").parse()?;
    let stop = Arc::new(AtomicBool::new(false));
    let server_stop = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = lab.s.spawn(move || {
        let l = TcpListener::bind(addr).expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        tx.send(()).ok();
        while !server_stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((conn, _)) => drop(conn),
                Err(_) => std::thread::sleep(Duration::from_micros(50)),
            }
        }
    })?;
    rx.recv_timeout(Duration::from_secs(5))?;
    let n = lab.c.enter(move || {
        let deadline = Instant::now() + Duration::from_secs(secs as u64);
        let mut n = 0u64;
        while Instant::now() < deadline {
            if let Ok(conn) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                // SAFETY: setsockopt on a live socket with a valid linger struct.
                unsafe {
                    libc::setsockopt(
                        conn.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        size_of::<libc::linger>() as u32,
                    )
                };
                n += 1;
            }
        }
        n
    })?;
    stop.store(true, Ordering::Relaxed);
    server.join().map_err(|_| anyhow::anyhow!("server panicked"))?;
    Ok(n as f64 / secs as f64)
}

fn arms(unit: &'static str, plan: &Plan, samples: &[Vec<f64>], offloads_identical: bool, offloads: &str) -> Arms {
    let stats: Vec<Stats> = samples.iter().map(|s| Stats::of(s)).collect();
    let none = stats[0].median;
    let ipt = stats[1].median;
    Arms {
        unit,
        rounds: plan.net_rounds,
        seconds_per_measurement: plan.net_secs,
        arms: ARMS
            .iter()
            .zip(&stats)
            .map(|(arm, s)| Arm { arm, stats: *s, ratio_to_none: s.median / none, ratio_to_iptables: s.median / ipt })
            .collect(),
        offloads_identical,
        offloads: offloads.to_string(),
    }
}

pub fn measure(plan: &Plan) -> anyhow::Result<(Arms, Arms)> {
    let lab = RouterLab::build()?;
    let mut server = lab.s.command("iperf3");
    server.arg("-s");
    let iperf = Proc::spawn(server, "iperf3 -s");
    std::thread::sleep(Duration::from_millis(500));
    let mut tput = vec![Vec::new(); ARMS.len()];
    let mut syn = vec![Vec::new(); ARMS.len()];
    let reference = lab.offloads();
    let mut identical = true;
    let mut port = 7000u16;
    for round in 0..plan.net_rounds as usize {
        // Rotate the order each round so drift spreads over every arm.
        for k in 0..ARMS.len() {
            let i = (k + round) % ARMS.len();
            let _setup = setup(&lab, ARMS[i])?;
            identical &= lab.offloads() == reference;
            tput[i].push(throughput_gbps(&lab, plan.net_secs)?);
            port += 1;
            syn[i].push(syn_rate(&lab, port, plan.net_secs)?);
        }
    }
    drop(iperf);
    Ok((
        arms("Gbit/s", plan, &tput, identical, &reference),
        arms("connections/s", plan, &syn, identical, &reference),
    ))
}
