//! `pmtu clamp`: lower the MSS of SYN and SYN-ACK on chosen interfaces.

use std::{
    collections::HashMap,
    io::{self, Write as _},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use anyhow::{Context as _, bail};
use pmtu_common::policy::{ClampPolicy, MAX_IFACES, MODE_BASE, MODE_LEARNED, MODE_OFF, MODE_SET_MSS, MODE_TO_PMTU, counters::NAMES};
use serde::Serialize;

use crate::{
    clock::WallClock,
    iface::{Interfaces, Prepared},
    kernel_cache::Sysctls,
    learn::Learner,
    loader::IngressHook,
    plan::{IfacePlan, IfaceRule, Plan, TableSettings},
    stop::Stop,
    supervisor::Supervisor,
    table::Table,
    trace::{Consumer, Item},
};

/// The clamp rule that needs no learning: a fixed MSS, or the route MTU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    SetMss(u16),
    ToPmtu,
}

/// How one interface is clamped: a base rule, learned PMTUs, or both (the
/// lowest MSS applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClampMode {
    pub base: Option<Base>,
    /// Also clamp to PMTUs learned from valid PTBs this host forwarded or
    /// received (`--learned`; see learn.rs).
    pub learned: bool,
}

impl ClampMode {
    pub const TO_PMTU: ClampMode = ClampMode { base: Some(Base::ToPmtu), learned: false };
    pub const LEARNED: ClampMode = ClampMode { base: None, learned: true };

    pub const fn set_mss(mss: u16) -> Self {
        ClampMode { base: Some(Base::SetMss(mss)), learned: false }
    }

    pub const fn with_learned(self, learned: bool) -> Self {
        ClampMode { base: self.base, learned }
    }

    pub fn policy(self, slot: u32) -> ClampPolicy {
        let (mode, mss) = match self.base {
            Some(Base::SetMss(mss)) => (MODE_SET_MSS, u32::from(mss)),
            Some(Base::ToPmtu) => (MODE_TO_PMTU, 0),
            None => (MODE_OFF, 0),
        };
        let learned = if self.learned { MODE_LEARNED } else { 0 };
        ClampPolicy { mode: mode | learned, mss, slot, _pad: 0 }
    }

    /// The mode a policy in the kernel stands for.
    pub fn from_policy(policy: &ClampPolicy) -> Self {
        let base = match policy.mode & MODE_BASE {
            MODE_SET_MSS => Some(Base::SetMss(u16::try_from(policy.mss).unwrap_or(u16::MAX))),
            MODE_TO_PMTU => Some(Base::ToPmtu),
            _ => None,
        };
        ClampMode { base, learned: policy.mode & MODE_LEARNED != 0 }
    }

    /// The MSS of set-mss.
    pub fn mss(self) -> Option<u16> {
        match self.base {
            Some(Base::SetMss(mss)) => Some(mss),
            _ => None,
        }
    }

    /// As the config file and --json spell it.
    pub fn name(self) -> &'static str {
        match (self.base, self.learned) {
            (Some(Base::SetMss(_)), false) => "set-mss",
            (Some(Base::ToPmtu), false) => "to-pmtu",
            (Some(Base::SetMss(_)), true) => "learned+set-mss",
            (Some(Base::ToPmtu), true) => "learned+to-pmtu",
            (None, _) => "learned",
        }
    }

    pub fn describe(self) -> String {
        let base = match self.base {
            Some(Base::SetMss(mss)) => Some(format!("to {mss}")),
            Some(Base::ToPmtu) => Some("to the path MTU less 40 (IPv4) / 60 (IPv6)".to_string()),
            None => None,
        };
        let learned = "to PMTUs learned from transit PTBs less 40 / 60";
        match (base, self.learned) {
            (Some(b), false) => b,
            (Some(b), true) => format!("{b}, and {learned}, the lower"),
            (None, _) => learned.to_string(),
        }
    }
}

pub struct ClampOptions {
    pub ifaces: Vec<String>,
    pub mode: ClampMode,
    /// With `mode.learned`: how learned PMTUs are keyed, and how long they
    /// last (None: the host's mtu_expires).
    pub learn: pmtu_common::learned::LearnConfig,
    pub expires_secs: Option<u64>,
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
                mss: mode.mss(),
                counters: NAMES.iter().zip(c).map(|(k, v)| (k.to_string(), (*v).into())).collect(),
            })
            .collect();
        let line = serde_json::to_string(&ReportJson { interfaces }).context("rendering the counters as JSON")?;
        return Ok(line + "\n");
    }
    let width = ifaces.iter().map(|i| i.len()).max().unwrap_or(0).max("interface".len());
    // Counter columns are as wide as the widest name (and the old 11).
    let col = NAMES.iter().map(|n| n.len()).max().unwrap_or(0).max(11);
    let mw = mode.name().len().max(8);
    let mut out = format!("{:<width$} {:<mw$}", "interface", "mode");
    for name in NAMES {
        out.push_str(&format!(" {name:>col$}"));
    }
    out.push('\n');
    for (ifname, c) in ifaces.iter().zip(counters) {
        out.push_str(&format!("{ifname:<width$} {:<mw$}", mode.name()));
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
    // Learned clamping learns from what the observer sees on the same
    // interfaces (at tc: it shares the hook with the clamper, keeps GRO).
    let trace = opts.mode.learned.then_some(IngressHook::Tc);
    let plan = Plan {
        interfaces: opts
            .ifaces
            .iter()
            .map(|selector| IfaceRule { selector: selector.clone(), plan: IfacePlan { trace, clamp: Some(opts.mode) } })
            .collect(),
        table: TableSettings { expires_secs: opts.expires_secs, ..TableSettings::default() },
        learn: opts.learn,
        ..Plan::default()
    };
    let prepared = Prepared::new(&opts.ifaces).await?;
    if prepared.to_attach() > MAX_IFACES as usize {
        bail!(
            "{} interfaces selected; pmtu clamp serves at most {MAX_IFACES} at once",
            prepared.to_attach()
        );
    }
    let mut supervisor = Supervisor::load(plan.clone())?;
    let learning = if opts.mode.learned { Some(Learning::start(&mut supervisor, &plan).await?) } else { None };
    let mut ifaces = Interfaces::start(prepared, supervisor)?;
    eprintln!(
        "pmtu: attached to {} interface(s); {}{} and prints the counters",
        ifaces.attached(),
        if learning.is_some() { "learning PMTUs from the PTBs they carry; " } else { "" },
        Stop::describe(opts.duration)
    );
    let mut failure = None;
    match learning {
        None => loop {
            tokio::select! {
                event = ifaces.next_event() => {
                    if let Err(e) = ifaces.apply(event).await {
                        failure = Some(e);
                        break;
                    }
                }
                () = stop.wait() => break,
            }
        },
        Some(mut l) => {
            failure = l.run(&mut ifaces, &mut stop, opts.json).await.err();
            let names = ifaces.hooks.names.clone();
            let (supervisor, detached) = ifaces.stop();
            detached?;
            // What the clamper reported before it was detached.
            l.drain_rest(&names, opts.json);
            return finish(supervisor, &opts, failure);
        }
    }
    let (supervisor, detached) = ifaces.stop();
    detached?;
    finish(supervisor, &opts, failure)
}

fn finish(supervisor: Supervisor, opts: &ClampOptions, failure: Option<anyhow::Error>) -> anyhow::Result<()> {
    eprintln!("pmtu: detached");
    let (names, counters) = supervisor.clamp_rows()?;
    print!("{}", render(&names, opts.mode, &counters, opts.json)?);
    failure.map_or(Ok(()), Err)
}

/// What `pmtu clamp --learned` runs besides the clamper: the observer's
/// ring, consumed into a learner that writes the clamper's LEARNED map.
struct Learning {
    ring: AsyncFd<RingBuf<MapData>>,
    consumer: Consumer,
    local_addrs: tokio::task::JoinHandle<()>,
}

impl Learning {
    async fn start(supervisor: &mut Supervisor, plan: &Plan) -> anyhow::Result<Self> {
        let (sysctls, notes) = Sysctls::read();
        for note in notes {
            eprintln!("pmtu: {note}");
        }
        let rules = sysctls.rules(plan.table.expires_secs);
        // This host's addresses: PTBs to them are `received`, which teach
        // as transit ones do.
        let local_addrs = crate::local_addrs::start(supervisor.programs.take_local_addrs()?)
            .await
            .context("following this host's addresses")?;
        let ring = supervisor.programs.take_events()?;
        let learned = supervisor.programs.take_learned(plan.learn)?;
        // The displayed table is not printed by `pmtu clamp`; the learner
        // keeps its own.
        let mut consumer = Consumer::new(Table::with_rules(plan.table.max_destinations, rules, false));
        consumer.learner = Some(Learner::new(learned, plan.learn, rules, plan.table.max_destinations));
        // SAFETY: the RingBuf owns its map fd and keeps it open and
        // unchanged for as long as the AsyncFd holds it.
        let ring = unsafe { AsyncFd::register(ring) }.context("polling the event ring")?;
        Ok(Self { ring, consumer, local_addrs })
    }

    /// Until stopped: events in, learned entries out, lines to stdout.
    async fn run(&mut self, ifaces: &mut Interfaces<Supervisor>, stop: &mut Stop, json: bool) -> anyhow::Result<()> {
        let mut sink = |item: &Item<'_>, _: &WallClock| print_item(item, json);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.context("waiting on the event ring")?;
                    self.consumer.drain(guard.get_inner_mut(), &ifaces.hooks.names, &mut sink).context("writing to stdout")?;
                    guard.clear_ready();
                }
                event = ifaces.next_event() => {
                    self.consumer.drain(self.ring.get_mut(), &ifaces.hooks.names, &mut sink).context("writing to stdout")?;
                    ifaces.apply(event).await?;
                }
                _ = tick.tick() => self.consumer.sync_learned(&mut sink).context("writing to stdout")?,
                () = stop.wait() => return Ok(()),
            }
        }
    }

    fn drain_rest(&mut self, names: &HashMap<u32, String>, json: bool) {
        self.local_addrs.abort();
        let mut sink = |item: &Item<'_>, _: &WallClock| print_item(item, json);
        if let Err(e) = self.consumer.drain(self.ring.get_mut(), names, &mut sink) {
            eprintln!("pmtu: writing to stdout: {e}");
        }
    }
}

/// Learned clamping's lines on stdout; PTBs themselves are `pmtu trace`'s.
fn print_item(item: &Item<'_>, json: bool) -> io::Result<()> {
    if let Item::Note(note) = item {
        let mut out = io::stdout().lock();
        writeln!(out, "{}", if json { &note.json } else { &note.text })?;
        out.flush()?;
    }
    Ok(())
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
        let text = render(&ifaces, ClampMode::TO_PMTU, &counters, false).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("interface mode            syn_seen         clamped     at_or_below"), "{text}");
        assert!(lines[0].ends_with("       fragment           ipsec          tcp_ao clamped_learned"), "columns come from NAMES: {text}");
        assert!(lines[1].starts_with("to-c0     to-pmtu                2               1               1"), "{text}");
        assert_eq!(lines[1].split_whitespace().count(), 2 + NAMES.len(), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&render(&ifaces, ClampMode::set_mss(1200), &counters, true).unwrap()).unwrap();
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
