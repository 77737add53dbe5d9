//! `pmtu clamp`: lower the MSS of SYN and SYN-ACK on chosen interfaces.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context as _, bail};
use pmtu_common::policy::{ClampPolicy, MAX_IFACES, MODE_SET_MSS, MODE_TO_PMTU, counters::NAMES};
use serde::Serialize;

use crate::{
    iface::{Interfaces, Prepared},
    plan::{IfacePlan, IfaceRule, Plan},
    stop::Stop,
    supervisor::Supervisor,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClampMode {
    SetMss(u16),
    ToPmtu,
}

impl ClampMode {
    pub fn policy(self, slot: u32) -> ClampPolicy {
        match self {
            ClampMode::SetMss(mss) => ClampPolicy { mode: MODE_SET_MSS, mss: mss as u32, slot, _pad: 0 },
            ClampMode::ToPmtu => ClampPolicy { mode: MODE_TO_PMTU, mss: 0, slot, _pad: 0 },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ClampMode::SetMss(_) => "set-mss",
            ClampMode::ToPmtu => "to-pmtu",
        }
    }

    pub fn describe(self) -> String {
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

/// Counters per interface (columns from `policy::counters::NAMES`), as one
/// JSON object or an aligned text table.
pub fn render(
    ifaces: &[String],
    mode: ClampMode,
    counters: &[[u64; NAMES.len()]],
    json: bool,
) -> anyhow::Result<String> {
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
        let line = serde_json::to_string(&ReportJson { interfaces }).context("rendering the counters as JSON")?;
        return Ok(line + "\n");
    }
    let width = ifaces.iter().map(|i| i.len()).max().unwrap_or(0).max("interface".len());
    // Counter columns are as wide as the widest name (and the old 11).
    let col = NAMES.iter().map(|n| n.len()).max().unwrap_or(0).max(11);
    let mut out = format!("{:<width$} {:<8}", "interface", "mode");
    for name in NAMES {
        out.push_str(&format!(" {name:>col$}"));
    }
    out.push('\n');
    for (ifname, c) in ifaces.iter().zip(counters) {
        out.push_str(&format!("{ifname:<width$} {:<8}", mode.name()));
        for v in c {
            out.push_str(&format!(" {v:>col$}"));
        }
        out.push('\n');
    }
    Ok(out)
}

/// Counter slots in the kernel's CLAMP_COUNTERS array, one per interface
/// being clamped, reused as interfaces come and go.
#[derive(Debug)]
pub struct Slots {
    free: Vec<u32>,
}

impl Slots {
    pub fn new(count: u32) -> Self {
        // Popped from the end: slot 0 first.
        Self { free: (0..count).rev().collect() }
    }

    pub fn take(&mut self) -> Option<u32> {
        self.free.pop()
    }

    /// Takes `slot` out of the free list (a previous daemon's interface
    /// still counts in it); false if it is not free or out of range.
    pub fn reserve(&mut self, slot: u32) -> bool {
        match self.free.iter().position(|s| *s == slot) {
            Some(i) => {
                self.free.remove(i);
                true
            }
            None => false,
        }
    }

    /// Returns a slot whose counters are zero again.
    pub fn give(&mut self, slot: u32) {
        self.free.push(slot);
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }
}

/// Totals per interface name, in the order the names were first clamped:
/// an interface that went and came back (a ppp session, a WireGuard peer's
/// interface) is one row, whatever its ifindex and slot were.
#[derive(Debug, Default)]
pub struct Totals {
    rows: Vec<(String, [u64; NAMES.len()])>,
    /// Row of each name: a BRAS sees thousands of names.
    row_of: HashMap<String, usize>,
}

impl Totals {
    pub fn add(&mut self, name: &str, counters: &[u64; NAMES.len()]) {
        let i = match self.row_of.get(name) {
            Some(&i) => i,
            None => {
                self.rows.push((name.to_string(), [0; NAMES.len()]));
                self.row_of.insert(name.to_string(), self.rows.len() - 1);
                self.rows.len() - 1
            }
        };
        for (total, v) in self.rows[i].1.iter_mut().zip(counters) {
            *total = total.saturating_add(*v);
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.rows.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn counters(&self) -> Vec<[u64; NAMES.len()]> {
        self.rows.iter().map(|(_, c)| *c).collect()
    }
}

pub async fn run(opts: ClampOptions) -> anyhow::Result<()> {
    let mut stop = Stop::install(opts.duration)?;
    let plan = Plan {
        interfaces: opts
            .ifaces
            .iter()
            .map(|selector| IfaceRule { selector: selector.clone(), plan: IfacePlan { trace: None, clamp: Some(opts.mode) } })
            .collect(),
        ..Plan::default()
    };
    let prepared = Prepared::new(&opts.ifaces).await?;
    if prepared.to_attach() > MAX_IFACES as usize {
        bail!(
            "{} interfaces selected; pmtu clamp serves at most {MAX_IFACES} at once",
            prepared.to_attach()
        );
    }
    let supervisor = Supervisor::load(plan)?;
    let mut ifaces = Interfaces::start(prepared, supervisor)?;
    eprintln!(
        "pmtu: attached to {} interface(s); {} and prints the counters",
        ifaces.attached(),
        Stop::describe(opts.duration)
    );
    let mut failure = None;
    loop {
        tokio::select! {
            event = ifaces.next_event() => {
                if let Err(e) = ifaces.apply(event).await {
                    failure = Some(e);
                    break;
                }
            }
            () = stop.wait() => break,
        }
    }
    let (supervisor, detached) = ifaces.stop();
    detached?;
    eprintln!("pmtu: detached");
    let (names, counters) = supervisor.clamp_rows()?;
    print!("{}", render(&names, opts.mode, &counters, opts.json)?);
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[u64]) -> [u64; NAMES.len()] {
        let mut c = [0; NAMES.len()];
        c[..values.len()].copy_from_slice(values);
        c
    }

    #[test]
    fn renders_counters_per_interface() {
        let ifaces = vec!["to-c0".to_string(), "to-r2".to_string()];
        let counters = [row(&[2, 1, 1]), row(&[2, 1, 1])];
        let text = render(&ifaces, ClampMode::ToPmtu, &counters, false).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("interface mode        syn_seen     clamped at_or_below"), "{text}");
        assert!(lines[0].ends_with("   fragment       ipsec      tcp_ao"), "columns come from NAMES: {text}");
        assert!(lines[1].starts_with("to-c0     to-pmtu            2           1           1"), "{text}");
        assert_eq!(lines[1].split_whitespace().count(), 2 + NAMES.len(), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&render(&ifaces, ClampMode::SetMss(1200), &counters, true).unwrap()).unwrap();
        assert_eq!(json["interfaces"][1]["ifname"], "to-r2");
        assert_eq!(json["interfaces"][1]["mode"], "set-mss");
        assert_eq!(json["interfaces"][1]["mss"], 1200);
        assert_eq!(json["interfaces"][0]["counters"]["clamped"], 1);
        assert_eq!(json["interfaces"][0]["counters"]["errors"], 0);
        assert_eq!(json["interfaces"][0]["counters"].as_object().unwrap().len(), NAMES.len());
    }

    #[test]
    fn slots_are_reused_and_never_run_out_with_churn() {
        let mut slots = Slots::new(3);
        let a = slots.take().unwrap();
        let b = slots.take().unwrap();
        let c = slots.take().unwrap();
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(slots.take(), None);
        assert_eq!(slots.free(), 0);
        // A BRAS: sessions end and start, forever, on three slots.
        let mut held = vec![a, b, c];
        for _ in 0..100_000 {
            slots.give(held.remove(0));
            held.push(slots.take().expect("a slot freed by the session that ended"));
        }
        held.sort_unstable();
        assert_eq!(held, [0, 1, 2]);
    }

    #[test]
    fn totals_are_per_name_in_order_of_first_sight() {
        let mut t = Totals::default();
        t.add("ppp0", &row(&[1, 1]));
        t.add("eth0", &row(&[5]));
        // ppp0 went and came back on another ifindex and slot.
        t.add("ppp0", &row(&[2, 0, 2]));
        assert_eq!(t.names(), ["ppp0", "eth0"]);
        assert_eq!(t.counters(), [row(&[3, 1, 2]), row(&[5])]);
    }
}
