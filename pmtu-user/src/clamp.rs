//! `pmtu clamp`: lower the MSS of SYN and SYN-ACK on chosen interfaces.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context as _, bail};
use pmtu_common::policy::{ClampPolicy, MAX_IFACES, MODE_SET_MSS, MODE_TO_PMTU, counters::NAMES};
use serde::Serialize;

use crate::{
    iface::{Hooks, Iface, Interfaces, LinkKind, Prepared},
    loader::{Programs, Role},
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

/// `pmtu clamp`'s side of attaching: a counter slot and a policy per
/// interface, and the clamper's programs for its framing.
struct Clamper {
    programs: Programs,
    mode: ClampMode,
    slots: Slots,
    /// Slot of each interface being clamped, by ifindex.
    active: HashMap<u32, u32>,
    totals: Totals,
}

/// Links per clamped interface: tc ingress and egress.
const LINKS_PER_IFACE: u64 = 2;

impl Hooks for Clamper {
    fn verb(&self) -> &'static str {
        "clamping"
    }

    fn room(&self) -> usize {
        let by_fds = usize::try_from(self.programs.link_room() / LINKS_PER_IFACE).unwrap_or(usize::MAX);
        self.slots.free().min(by_fds)
    }

    fn attach(&mut self, iface: &Iface, kind: LinkKind) -> anyhow::Result<Vec<String>> {
        let Some(slot) = self.slots.take() else {
            bail!("all {MAX_IFACES} counter slots are in use");
        };
        match self.programs.attach_clamper(iface.index, &iface.name, kind, self.mode.policy(slot)) {
            Ok(shared) => {
                self.active.insert(iface.index, slot);
                // A row from the start, so an interface that never saw a
                // SYN is still in the report.
                self.totals.add(&iface.name, &[0; NAMES.len()]);
                let framing = match kind {
                    LinkKind::Ethernet => "",
                    LinkKind::L3 => ", L3 device",
                };
                let mut said = vec![format!(
                    "{}: clamping SYN and SYN-ACK MSS {} (tc ingress and egress, TCX, first{framing})",
                    iface.name,
                    self.mode.describe()
                )];
                said.extend(shared);
                Ok(said)
            }
            Err(e) => {
                // Nothing counted in it: attach_clamper removed the policy.
                self.slots.give(slot);
                Err(e)
            }
        }
    }

    /// Policy out, links closed, then the slot's counters are added to the
    /// name's totals and zeroed, and the slot is free for the next interface.
    fn detach(&mut self, index: u32, name: &str) -> anyhow::Result<()> {
        let policy = self.programs.remove_clamp_policy(index);
        let links = self.programs.detach_iface(index);
        if let Some(slot) = self.active.remove(&index) {
            let counters = self.programs.clamp_counters(slot).with_context(|| format!("reading {name}'s counters"))?;
            self.totals.add(name, &counters);
            // A slot that could not be zeroed would hand its counts to the
            // next interface: keep it out of use instead.
            self.programs.zero_clamp_counters(slot).with_context(|| format!("zeroing {name}'s counter slot"))?;
            self.slots.give(slot);
        }
        policy.and(links)
    }
}

pub async fn run(opts: ClampOptions) -> anyhow::Result<()> {
    let mut stop = Stop::install(opts.duration)?;
    let prepared = Prepared::new(&opts.ifaces).await?;
    if prepared.to_attach() > MAX_IFACES as usize {
        bail!(
            "{} interfaces selected; pmtu clamp serves at most {MAX_IFACES} at once",
            prepared.to_attach()
        );
    }
    let programs = Programs::load(Role::Clamper, None)?;
    let clamper = Clamper {
        programs,
        mode: opts.mode,
        slots: Slots::new(MAX_IFACES),
        active: HashMap::new(),
        totals: Totals::default(),
    };
    let mut ifaces = Interfaces::start(prepared, clamper)?;
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
    let (clamper, detached) = ifaces.stop();
    detached?;
    eprintln!("pmtu: detached");
    let Clamper { totals, .. } = clamper;
    print!("{}", render(&totals.names(), opts.mode, &totals.counters(), opts.json)?);
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
