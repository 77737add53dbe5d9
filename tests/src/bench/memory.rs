//! Section 5: userspace memory with 1k, 100k and 1M distinct destinations
//! fed into the table, each in a fresh process so RSS is its own.

use std::{num::NonZeroUsize, process::Command};

use pmtu_user::{
    decode::{Hook, Ptb},
    table::{DEFAULT_EXPIRES_SECS, DEFAULT_MAX_DESTINATIONS, Table},
};
use serde::Serialize;

use crate::procs::rss_kib;

#[derive(Debug, Serialize)]
pub struct MemoryPoint {
    pub destinations_fed: u64,
    pub table_len: u64,
    pub max_destinations: u64,
    pub rss_kib: u64,
    pub rss_before_kib: u64,
}

/// In this process: feed `n` destinations, print one JSON MemoryPoint.
pub fn feed(n: u64) -> MemoryPoint {
    let before = rss_kib(std::process::id());
    let mut table = Table::new(NonZeroUsize::new(DEFAULT_MAX_DESTINATIONS).expect("cap"), DEFAULT_EXPIRES_SECS);
    for i in 0..n {
        let dst = std::net::Ipv6Addr::from((0xfd00u128 << 112) | i as u128);
        table.record(&Ptb {
            ts_ns: 1 + i,
            ifindex: 2,
            hook: Hook::Xdp,
            family: 6,
            reporter: "fd00::1".parse().expect("addr"),
            to: "fd00::2".parse().expect("addr"),
            mtu: 1400,
            mtu_estimated: false,
            orig_src: "fd00::2".parse().expect("addr"),
            orig_dst: dst.into(),
            proto: 6,
            sport: Some(1),
            dport: Some(2),
            quoted_len: 1500,
            reasons: 0,
            direction: pmtu_user::decode::Direction::Received,
            out_ifindex: None,
            capture: None,
        });
    }
    MemoryPoint {
        destinations_fed: n,
        table_len: table.len() as u64,
        max_destinations: DEFAULT_MAX_DESTINATIONS as u64,
        rss_kib: rss_kib(std::process::id()),
        rss_before_kib: before,
    }
}

/// Locked kernel memory of one role's maps.
#[derive(Debug, Serialize)]
pub struct RoleMemlock {
    pub role: String,
    pub memlock_kib: u64,
}

/// In this process: load `role` ("observer" or "clamper") and report the
/// locked memory of its maps (fdinfo `memlock:`), in KiB.
pub fn role_memlock(role: &str) -> anyhow::Result<u64> {
    use pmtu_user::loader::{Programs, Role, maps_memlock_bytes};
    let role = match role {
        "observer" => Role::Observer,
        "clamper" => Role::Clamper,
        other => anyhow::bail!("unknown role {other}"),
    };
    let programs = Programs::load(role, None)?;
    let bytes = maps_memlock_bytes()?;
    drop(programs);
    Ok(bytes / 1024)
}

/// Runs `role_memlock` in child processes (`pmtu-bench memlock ROLE`), so
/// each counts only its own maps.
pub fn measure_roles(bench_exe: &std::path::Path) -> anyhow::Result<Vec<RoleMemlock>> {
    let mut out = Vec::new();
    for role in ["observer", "clamper"] {
        let child = Command::new(bench_exe).args(["memlock", role]).output()?;
        if !child.status.success() {
            anyhow::bail!("memlock child failed: {}", String::from_utf8_lossy(&child.stderr));
        }
        let kib = String::from_utf8_lossy(&child.stdout).trim().parse()?;
        out.push(RoleMemlock { role: role.to_string(), memlock_kib: kib });
    }
    Ok(out)
}

/// Runs `feed` in child processes (`pmtu-bench mem N`).
pub fn measure(bench_exe: &std::path::Path) -> anyhow::Result<Vec<MemoryPoint>> {
    let mut points = Vec::new();
    for n in [1_000u64, 100_000, 1_000_000] {
        let out = Command::new(bench_exe).args(["mem", &n.to_string()]).output()?;
        if !out.status.success() {
            anyhow::bail!("memory child failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        points.push(MemoryPoint {
            destinations_fed: v["destinations_fed"].as_u64().unwrap_or(0),
            table_len: v["table_len"].as_u64().unwrap_or(0),
            max_destinations: v["max_destinations"].as_u64().unwrap_or(0),
            rss_kib: v["rss_kib"].as_u64().unwrap_or(0),
            rss_before_kib: v["rss_before_kib"].as_u64().unwrap_or(0),
        });
    }
    Ok(points)
}
