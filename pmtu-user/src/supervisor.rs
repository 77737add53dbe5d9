//! The one owner of pmtu's programs and attachments: it carries out a
//! [`Plan`] on every interface the plan selects, as they come and go, and
//! moves to a new plan by doing only the difference. `pmtu trace`, `pmtu
//! clamp` and `pmtu run` are all this supervisor; they differ in what they
//! render and in whether the state is pinned.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, bail};
use pmtu_common::policy::{MAX_IFACES, counters::NAMES};
use serde::Serialize;

use crate::{
    clamp::{ClampMode, Slots, Totals},
    iface::{Hooks, Iface, LinkKind, Selectors},
    loader::{AttachmentInfo, Job, Programs, Role},
    plan::{IfacePlan, Plan},
};

/// What is attached to one interface now.
#[derive(Clone, Debug)]
struct Served {
    name: String,
    kind: LinkKind,
    plan: IfacePlan,
    /// The clamper's counter slot, while clamping.
    slot: Option<u32>,
}

/// Links per interface at most: observer ingress (XDP or tc) and egress,
/// clamper ingress and egress, and one spare for the tc fallback when XDP
/// fails.
const LINKS_PER_IFACE: u64 = 5;

pub struct Supervisor {
    pub programs: Programs,
    plan: Plan,
    selectors: Selectors,
    slots: Slots,
    served: BTreeMap<u32, Served>,
    /// Clamp counters of interfaces no longer clamped, per name.
    pub totals: Totals,
    /// Names of the traced interfaces, by ifindex: events name them.
    pub names: HashMap<u32, String>,
    /// Counter slots a previous daemon used, by ifindex: an interface
    /// adopted again keeps its slot, so its counters carry on.
    prior_slots: HashMap<u32, u32>,
}

/// One interface in `pmtu status`.
#[derive(Clone, Debug, Serialize)]
pub struct IfaceStatus {
    pub ifindex: u32,
    pub name: String,
    pub framing: &'static str,
    pub trace: Option<&'static str>,
    pub clamp: Option<String>,
    pub attachments: Vec<AttachmentInfo>,
}

impl Supervisor {
    /// Loads what `plan` needs: pinned under its pin path for the daemon.
    pub fn load(plan: Plan) -> anyhow::Result<Self> {
        let selectors = Selectors::parse(&plan.selectors())?;
        // A foreground command says only what differs from the usual path.
        let features = crate::features::get()?;
        if plan.daemon.is_none() && (!features.tcx || !features.fib_skip_neigh) {
            for line in features.describe() {
                eprintln!("pmtu: {line}");
            }
        }
        let role = match (plan.daemon.is_some(), plan.traces(), plan.clamps()) {
            (true, _, _) | (false, true, true) => Role::Daemon,
            (false, true, false) => Role::Observer,
            (false, false, true) => Role::Clamper,
            (false, false, false) => bail!("nothing to do: no interface is traced or clamped"),
        };
        let mut programs = match &plan.daemon {
            Some(d) => Programs::load_pinned(role, plan.ring_bytes, &d.pin_path)?,
            None => Programs::load(role, plan.ring_bytes)?,
        };
        if plan.traces() || plan.daemon.is_some() {
            programs.set_observer_config(plan.observer)?;
            // Events carry their packet's first bytes only for a pcap.
            programs.set_capture(plan.pcap.is_some())?;
        }
        let mut slots = Slots::new(MAX_IFACES);
        let mut prior_slots = HashMap::new();
        if programs.pin_state().is_some() {
            for (index, policy) in programs.clamp_policies()? {
                if slots.reserve(policy.slot) {
                    prior_slots.insert(index, policy.slot);
                }
            }
        }
        Ok(Self {
            programs,
            plan,
            selectors,
            slots,
            served: BTreeMap::new(),
            totals: Totals::default(),
            names: HashMap::new(),
            prior_slots,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn selectors(&self) -> &Selectors {
        &self.selectors
    }

    /// What the plan asks for on the interface named `name`.
    fn plan_for(&self, name: &str) -> IfacePlan {
        match self.selectors.selecting(name) {
            Some(selector) => self.plan.for_selector(selector),
            None => IfacePlan::default(),
        }
    }

    /// Takes a new plan. The caller then re-selects interfaces
    /// ([`crate::iface::Interfaces::reselect`]) and calls
    /// [`Supervisor::converge`] for the ones that stay.
    pub fn set_plan(&mut self, plan: Plan) -> anyhow::Result<()> {
        if plan.traces() && !self.plan.traces() && self.plan.daemon.is_none() {
            bail!("this process did not load the observer");
        }
        self.selectors = Selectors::parse(&plan.selectors())?;
        if plan.observer != self.plan.observer {
            self.programs.set_observer_config(plan.observer)?;
        }
        self.plan = plan;
        Ok(())
    }

    /// Brings every served interface to what the plan now says for it:
    /// policy changes are map writes (the links stay), jobs started or
    /// stopped attach or detach only those links. Returns what it did.
    pub fn converge(&mut self) -> Vec<String> {
        let mut said = Vec::new();
        let served: Vec<(u32, Served)> = self.served.iter().map(|(i, s)| (*i, s.clone())).collect();
        for (index, s) in served {
            let want = self.plan_for(&s.name);
            if want == s.plan {
                continue;
            }
            let iface = Iface { index, name: s.name.clone(), link_type: 0 };
            match self.ensure(&iface, s.kind, want) {
                Ok(lines) => said.extend(lines),
                Err(e) => said.push(format!("{}: NOT changed as the new plan says: {e:#}", s.name)),
            }
        }
        said
    }

    /// Moves interface `iface` from what is attached to `want`.
    fn ensure(&mut self, iface: &Iface, kind: LinkKind, want: IfacePlan) -> anyhow::Result<Vec<String>> {
        let index = iface.index;
        let have = self.served.get(&index).map(|s| s.plan).unwrap_or_default();
        let mut slot = self.served.get(&index).and_then(|s| s.slot);
        let mut said = Vec::new();
        // Record what is attached after each step, so a failure half way
        // leaves the bookkeeping true.
        let mut now = have;
        let result = (|| -> anyhow::Result<()> {
            if have.trace != want.trace {
                if have.trace.is_some() {
                    self.programs.detach_job(index, Job::Trace)?;
                    self.names.remove(&index);
                    now.trace = None;
                    said.push(format!("{}: no longer tracing", iface.name));
                }
                if let Some(hook) = want.trace {
                    said.extend(self.programs.attach_observer(index, &iface.name, kind, hook)?);
                    self.names.insert(index, iface.name.clone());
                    now.trace = Some(hook);
                }
            }
            match (have.clamp, want.clamp) {
                (Some(a), Some(b)) if a != b => {
                    let s = slot.context("a clamped interface without a counter slot")?;
                    // One map write: the links stay, the next SYN sees it.
                    self.programs.set_clamp_policy(index, b.policy(s))?;
                    now.clamp = Some(b);
                    said.push(format!("{}: clamping MSS {} (was {})", iface.name, b.describe(), a.describe()));
                }
                (Some(_), None) => {
                    self.stop_clamp(index, &iface.name, slot.take())?;
                    now.clamp = None;
                    said.push(format!("{}: no longer clamping", iface.name));
                }
                (None, Some(b)) => {
                    let s = self.take_slot(index)?;
                    match self.programs.attach_clamper(index, &iface.name, kind, b.policy(s)) {
                        Ok(lines) => {
                            slot = Some(s);
                            now.clamp = Some(b);
                            self.totals.add(&iface.name, &[0; NAMES.len()]);
                            said.extend(lines);
                        }
                        Err(e) => {
                            // Nothing counted in it: attach_clamper removed the policy.
                            self.slots.give(s);
                            return Err(e);
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        })();
        if now.is_empty() {
            self.served.remove(&index);
        } else {
            self.served.insert(index, Served { name: iface.name.clone(), kind, plan: now, slot });
        }
        result.map(|()| said)
    }

    /// A counter slot for interface `index`: the one a previous daemon gave
    /// it, if any (its counts carry on), else a free one.
    fn take_slot(&mut self, index: u32) -> anyhow::Result<u32> {
        if let Some(slot) = self.prior_slots.remove(&index) {
            return Ok(slot);
        }
        self.slots.take().with_context(|| format!("all {MAX_IFACES} counter slots are in use"))
    }

    /// Policy out, links closed, then the slot's counters are added to the
    /// name's totals and zeroed, and the slot is free for the next interface.
    fn stop_clamp(&mut self, index: u32, name: &str, slot: Option<u32>) -> anyhow::Result<()> {
        let policy = self.programs.remove_clamp_policy(index);
        let links = self.programs.detach_job(index, Job::Clamp);
        if let Some(slot) = slot {
            let counters = self.programs.clamp_counters(slot).with_context(|| format!("reading {name}'s counters"))?;
            self.totals.add(name, &counters);
            // A slot that could not be zeroed would hand its counts to the
            // next interface: keep it out of use instead.
            self.programs.zero_clamp_counters(slot).with_context(|| format!("zeroing {name}'s counter slot"))?;
            self.slots.give(slot);
        }
        policy.and(links)
    }

    /// After start: slots and pins of a previous daemon that nothing
    /// adopted (interfaces gone or no longer planned) are freed.
    pub fn release_prior(&mut self) -> anyhow::Result<Vec<String>> {
        let mut said = Vec::new();
        for (index, slot) in std::mem::take(&mut self.prior_slots) {
            self.programs.remove_clamp_policy(index)?;
            self.programs.zero_clamp_counters(slot)?;
            self.slots.give(slot);
        }
        said.extend(self.programs.drop_stale_pins()?);
        Ok(said)
    }

    /// Clamp counters per interface name: those clamped now (from the
    /// kernel) and those that were (folded totals), in order of first sight.
    pub fn clamp_rows(&self) -> anyhow::Result<(Vec<String>, Vec<[u64; NAMES.len()]>)> {
        let mut totals = Totals::default();
        for (name, counters) in self.totals.names().into_iter().zip(self.totals.counters()) {
            totals.add(&name, &counters);
        }
        for s in self.served.values() {
            if let Some(slot) = s.slot {
                totals.add(&s.name, &self.programs.clamp_counters(slot)?);
            }
        }
        Ok((totals.names(), totals.counters()))
    }

    /// The clamp mode of each interface clamped now, by name.
    pub fn clamp_modes(&self) -> HashMap<String, ClampMode> {
        self.served.values().filter_map(|s| s.plan.clamp.map(|m| (s.name.clone(), m))).collect()
    }

    /// What is attached where, for `pmtu status`.
    pub fn status(&self) -> Vec<IfaceStatus> {
        self.served
            .iter()
            .map(|(index, s)| IfaceStatus {
                ifindex: *index,
                name: s.name.clone(),
                framing: match s.kind {
                    LinkKind::Ethernet => "ethernet",
                    LinkKind::L3 => "l3",
                },
                trace: s.plan.trace.map(|h| match h {
                    crate::loader::IngressHook::Xdp => "xdp",
                    crate::loader::IngressHook::Tc => "tc",
                }),
                clamp: s.plan.clamp.map(|m| m.describe()),
                attachments: self.programs.attachments(*index),
            })
            .collect()
    }

    /// The interfaces served now: (ifindex, name).
    pub fn served(&self) -> Vec<(u32, String)> {
        self.served.iter().map(|(i, s)| (*i, s.name.clone())).collect()
    }

    /// Lets go of everything without detaching what is pinned (the daemon's
    /// `on-exit = "keep"`): clamping and tracing go on in the kernel.
    pub fn keep(&mut self) {
        self.programs.keep_pinned();
        self.served.clear();
        self.names.clear();
    }
}

impl Hooks for Supervisor {
    fn verb(&self) -> &'static str {
        match (self.plan.traces(), self.plan.clamps()) {
            (true, true) => "serving",
            (true, false) => "tracing",
            _ => "clamping",
        }
    }

    fn room(&self) -> usize {
        let by_fds = usize::try_from(self.programs.link_room() / LINKS_PER_IFACE).unwrap_or(usize::MAX);
        if self.plan.clamps() { self.slots.free().min(by_fds) } else { by_fds }
    }

    fn attach(&mut self, iface: &Iface, kind: LinkKind) -> anyhow::Result<Vec<String>> {
        let want = self.plan_for(&iface.name);
        self.ensure(iface, kind, want)
    }

    /// Detaches both jobs; `detach_job` unmarks a traced interface
    /// (OBSERVED) first, so forwarded PTBs from it are reported at egress
    /// again rather than lost.
    fn detach(&mut self, index: u32, name: &str) -> anyhow::Result<()> {
        let Some(s) = self.served.remove(&index) else {
            return self.programs.detach_iface(index);
        };
        self.names.remove(&index);
        let trace = self.programs.detach_job(index, Job::Trace);
        let clamp = if s.plan.clamp.is_some() { self.stop_clamp(index, name, s.slot) } else { Ok(()) };
        trace.and(clamp)
    }
}
