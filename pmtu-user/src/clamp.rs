//! `pmtu clamp`: lower the MSS of SYN and SYN-ACK on chosen interfaces.

use std::{fmt::Write as _, time::Duration};

use pmtu_common::policy::{ClampPolicy, MODE_SET_MSS, MODE_TO_PMTU, counters::NAMES};
use serde::Serialize;

use crate::{
    loader::{Programs, Role, ifindex},
    stop::Stop,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClampMode {
    SetMss(u16),
    ToPmtu,
}

impl ClampMode {
    fn policy(self, slot: u32) -> ClampPolicy {
        match self {
            ClampMode::SetMss(mss) => ClampPolicy { mode: MODE_SET_MSS, mss: mss as u32, slot, _pad: 0 },
            ClampMode::ToPmtu => ClampPolicy { mode: MODE_TO_PMTU, mss: 0, slot, _pad: 0 },
        }
    }

    fn name(self) -> &'static str {
        match self {
            ClampMode::SetMss(_) => "set-mss",
            ClampMode::ToPmtu => "to-pmtu",
        }
    }

    fn describe(self) -> String {
        match self {
            ClampMode::SetMss(mss) => format!("to {mss}"),
            ClampMode::ToPmtu => "to the path MTU less 40 (IPv4) / 60 (IPv6)".to_string(),
        }
    }
}

pub struct ClampOptions {
    pub ifaces: Vec<String>,
    pub mode: ClampMode,
    pub duration: Option<Duration>,
    pub json: bool,
}

#[derive(Serialize)]
struct IfaceJson<'a> {
    ifname: &'a str,
    mode: &'static str,
    mss: Option<u16>,
    counters: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct ReportJson<'a> {
    interfaces: Vec<IfaceJson<'a>>,
}

/// Counters per interface, as one JSON object or an aligned text table.
pub fn render(ifaces: &[String], mode: ClampMode, counters: &[[u64; NAMES.len()]], json: bool) -> String {
    if json {
        let interfaces = ifaces
            .iter()
            .zip(counters)
            .map(|(ifname, c)| IfaceJson {
                ifname,
                mode: mode.name(),
                mss: match mode {
                    ClampMode::SetMss(m) => Some(m),
                    ClampMode::ToPmtu => None,
                },
                counters: NAMES.iter().zip(c).map(|(k, v)| (k.to_string(), (*v).into())).collect(),
            })
            .collect();
        return serde_json::to_string(&ReportJson { interfaces }).unwrap_or_default() + "\n";
    }
    let width = ifaces.iter().map(|i| i.len()).max().unwrap_or(0).max("interface".len());
    let mut out = format!("{:<width$} {:<8}", "interface", "mode");
    for name in NAMES {
        let _ = write!(out, " {name:>11}");
    }
    out.push('\n');
    for (ifname, c) in ifaces.iter().zip(counters) {
        let _ = write!(out, "{ifname:<width$} {:<8}", mode.name());
        for v in c {
            let _ = write!(out, " {v:>11}");
        }
        out.push('\n');
    }
    out
}

pub async fn run(opts: ClampOptions) -> anyhow::Result<()> {
    let mut stop = Stop::install(opts.duration)?;
    for iface in &opts.ifaces {
        ifindex(iface)?;
    }
    let mut programs = Programs::load(Role::Clamper, None)?;
    for (slot, iface) in opts.ifaces.iter().enumerate() {
        programs.attach_clamper(iface, opts.mode.policy(slot as u32))?;
        eprintln!("pmtu: {iface}: clamping SYN and SYN-ACK MSS {} (tc ingress and egress, TCX)", opts.mode.describe());
    }
    eprintln!(
        "pmtu: attached to {} interface(s); {} and prints the counters",
        opts.ifaces.len(),
        Stop::describe(opts.duration)
    );
    stop.wait().await;
    programs.detach_all()?;
    eprintln!("pmtu: detached");
    let counters = (0..opts.ifaces.len())
        .map(|slot| programs.clamp_counters(slot as u32))
        .collect::<anyhow::Result<Vec<_>>>()?;
    print!("{}", render(&opts.ifaces, opts.mode, &counters, opts.json));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_per_interface() {
        let ifaces = vec!["to-c0".to_string(), "to-r2".to_string()];
        let counters = [[2, 1, 1, 0, 0, 0, 0, 0], [2, 1, 1, 0, 0, 0, 0, 0]];
        let text = render(&ifaces, ClampMode::ToPmtu, &counters, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("interface mode        syn_seen     clamped at_or_below"), "{text}");
        assert!(lines[1].starts_with("to-c0     to-pmtu            2           1           1"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&render(&ifaces, ClampMode::SetMss(1200), &counters, true)).unwrap();
        assert_eq!(json["interfaces"][1]["ifname"], "to-r2");
        assert_eq!(json["interfaces"][1]["mode"], "set-mss");
        assert_eq!(json["interfaces"][1]["mss"], 1200);
        assert_eq!(json["interfaces"][0]["counters"]["clamped"], 1);
        assert_eq!(json["interfaces"][0]["counters"]["errors"], 0);
    }
}
