//! Other programs on the hooks pmtu uses, per interface: the XDP program
//! (IFLA_XDP in the link dump), the TCX programs on ingress and egress
//! (BPF_PROG_QUERY, as pmtu itself asks: loader::tcx_program_ids) and the
//! filters on a clsact qdisc (RTM_GETTFILTER, as `tc filter show`).
//!
//! Sharing is mostly fine; what it means differs per hook:
//! - XDP has one program per interface (short of a dispatcher such as
//!   libxdp's): `pmtu trace --hook xdp` cannot attach beside another.
//! - TCX runs its programs in order (Linux 6.6, kernel/bpf/tcx.c): one
//!   before pmtu's that ends the packet's way (drop, redirect) hides it
//!   from pmtu.
//! - clsact filters run after every TCX program (net/core/dev.c
//!   sch_handle_ingress/egress: tcx_run, then the mini-qdisc), by priority.

use std::collections::BTreeMap;

use aya::programs::TcAttachType;
use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcMessage, TcOption};

use super::{Finding, Severity, links::Link};

/// One program on a hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prog {
    pub id: u32,
    /// BPF program names are cut at 15 bytes; `None` without the rights
    /// to open the program (CAP_SYS_ADMIN).
    pub name: Option<String>,
}

impl Prog {
    /// pmtu's own programs are all named pmtu_*.
    fn is_pmtu(&self) -> bool {
        self.name.as_deref().is_some_and(|n| n.starts_with("pmtu_"))
    }

    fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{n} (id {})", self.id),
            None => format!("id {}", self.id),
        }
    }
}

/// What is on one interface's hooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hooks {
    /// (mode, program) from IFLA_XDP.
    pub xdp: Option<(&'static str, Prog)>,
    /// TCX ingress and egress, in the kernel's order.
    pub tcx: [Vec<Prog>; 2],
    /// clsact filters on ingress and egress: "bpf pmtu_x (id 3), pref 16".
    pub filters: [Vec<String>; 2],
}

const DIRECTIONS: [&str; 2] = ["ingress", "egress"];

/// The finding for one interface; `None` when nothing is on its hooks.
pub fn judge(iface: &str, hooks: &Hooks) -> Option<Finding> {
    let mut parts = Vec::new();
    let mut meanings = Vec::new();
    let mut pmtu_there = false;
    if let Some((mode, prog)) = &hooks.xdp {
        parts.push(format!("xdp ({mode}): {}", prog.label()));
        if prog.is_pmtu() {
            pmtu_there = true;
        } else {
            meanings.push(
                "another XDP program holds the interface's one XDP slot: `pmtu trace --hook xdp` cannot attach here; \
                 the default tc hook shares"
                    .to_string(),
            );
        }
    }
    let mut tcx_others = false;
    for (dir, progs) in DIRECTIONS.iter().zip(&hooks.tcx) {
        if !progs.is_empty() {
            let labels: Vec<String> = progs.iter().map(Prog::label).collect();
            parts.push(format!("tcx {dir}: {}", labels.join(", ")));
            pmtu_there |= progs.iter().any(Prog::is_pmtu);
            tcx_others |= progs.iter().any(|p| !p.is_pmtu());
        }
    }
    if tcx_others {
        meanings.push(
            "TCX runs its programs in order: pmtu's share the hook, but one before pmtu's that drops or redirects \
             a packet hides it from pmtu"
                .to_string(),
        );
    }
    let mut filters_there = false;
    for (dir, filters) in DIRECTIONS.iter().zip(&hooks.filters) {
        if !filters.is_empty() {
            parts.push(format!("tc filters {dir}: {}", filters.join("; ")));
            filters_there = true;
            pmtu_there |= filters.iter().any(|f| f.contains("pmtu_"));
        }
    }
    if filters_there {
        meanings.push(
            "clsact filters run after every TCX program, by priority (pmtu's own, without TCX, at 16 and 17)"
                .to_string(),
        );
    }
    if parts.is_empty() {
        return None;
    }
    if pmtu_there {
        meanings.push("pmtu is attached here (a daemon, a trace or a clamp)".to_string());
    }
    Some(Finding::new(format!("hooks/{iface}"), parts.join("; "), Severity::Info, meanings.join("; ")))
}

/// A clsact filter, as `tc filter show` would name it.
pub fn describe_filter(f: &TcMessage) -> Option<String> {
    // A dump lists each priority's classifier once without a handle (its
    // head), then each filter with one.
    if u32::from(f.header.handle) == 0 {
        return None;
    }
    let pref = f.header.info >> 16;
    let mut kind = "?".to_string();
    let mut prog: Option<Prog> = None;
    for a in &f.attributes {
        match a {
            TcAttribute::Kind(k) => kind = k.clone(),
            TcAttribute::Options(opts) => {
                for o in opts {
                    if let TcOption::Bpf(b) = o {
                        let p = prog.get_or_insert(Prog { id: 0, name: None });
                        match b {
                            TcFilterBpfOption::ProgId(id) => p.id = *id,
                            TcFilterBpfOption::ProgName(n) => p.name = Some(n.trim_end_matches('\0').to_string()),
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(match prog {
        Some(p) => format!("{kind} {}, pref {pref}", p.label()),
        None => format!("{kind}, pref {pref}"),
    })
}

/// Every interface's hooks, read from the kernel.
pub fn findings(links: &[Link]) -> Vec<Finding> {
    // Names by ID, where this process may open programs (CAP_SYS_ADMIN).
    let names: BTreeMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| Some((p.id(), p.name_as_str().filter(|n| !n.is_empty())?.to_string())))
        .collect();
    let prog = |id: u32| Prog { id, name: names.get(&id).cloned() };
    let mut out = Vec::new();
    // What could not be listed, by error (the same one, EPERM without
    // CAP_NET_ADMIN, on every interface): one finding, not one each.
    let mut unlisted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in links {
        let tcx = [TcAttachType::Ingress, TcAttachType::Egress].map(|kind| {
            match crate::loader::tcx_program_ids(l.index, kind) {
                Ok(ids) => ids.into_iter().map(prog).collect(),
                // A kernel without TCX: nothing can be there.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Vec::new(),
                Err(e) => {
                    unlisted.entry(format!("TCX: {e}")).or_default().push(format!(
                        "{} {}",
                        l.name,
                        crate::loader::direction(kind)
                    ));
                    Vec::new()
                }
            }
        });
        let filters = [false, true].map(|egress| match crate::legacy_tc::list_filters(l.index, egress) {
            Ok(fs) => fs.iter().filter_map(describe_filter).collect(),
            Err(e) => {
                unlisted.entry(format!("tc filters: {e}")).or_default().push(format!(
                    "{} {}",
                    l.name,
                    DIRECTIONS[usize::from(egress)]
                ));
                Vec::new()
            }
        });
        let hooks = Hooks { xdp: l.xdp.as_ref().map(|x| (x.mode, prog(x.id))), tcx, filters };
        out.extend(judge(&l.name, &hooks));
    }
    for (error, places) in &unlisted {
        out.push(Finding::new(
            "hooks",
            format!("not listed: {error}"),
            Severity::Info,
            format!("{}: not checked (listing them needs CAP_NET_ADMIN)", places.join(", ")),
        ));
    }
    if out.is_empty() {
        out.push(Finding::new(
            "hooks",
            "none",
            Severity::Ok,
            "no program on any interface's XDP, TCX or tc filter hooks: pmtu would be alone",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: u32, name: &str) -> Prog {
        Prog { id, name: Some(name.to_string()) }
    }

    fn empty() -> Hooks {
        Hooks { xdp: None, tcx: [Vec::new(), Vec::new()], filters: [Vec::new(), Vec::new()] }
    }

    #[test]
    fn nothing_there_is_no_finding() {
        assert_eq!(judge("eth0", &empty()), None);
    }

    #[test]
    fn another_xdp_program_takes_the_slot() {
        let h = Hooks { xdp: Some(("driver", p(42, "xdp_firewall"))), ..empty() };
        let f = judge("eth0", &h).unwrap();
        assert_eq!(f.topic, "hooks/eth0");
        assert_eq!(f.value, "xdp (driver): xdp_firewall (id 42)");
        assert!(f.meaning.contains("--hook xdp` cannot attach"), "{}", f.meaning);
    }

    #[test]
    fn tcx_neighbours_and_pmtu_itself() {
        let h = Hooks {
            tcx: [vec![p(7, "cil_from_netdev"), p(9, "pmtu_observe_tc")], vec![Prog { id: 11, name: None }]],
            ..empty()
        };
        let f = judge("eth0", &h).unwrap();
        assert_eq!(f.value, "tcx ingress: cil_from_netdev (id 7), pmtu_observe_tc (id 9); tcx egress: id 11");
        assert!(f.meaning.contains("in order") && f.meaning.contains("pmtu is attached here"), "{}", f.meaning);
        let h = Hooks { tcx: [vec![p(9, "pmtu_observe_tc")], Vec::new()], ..empty() };
        let f = judge("eth0", &h).unwrap();
        assert!(!f.meaning.contains("in order"), "{}", f.meaning);
    }

    #[test]
    fn legacy_filters_are_listed() {
        let h = Hooks { filters: [vec!["bpf cls_main (id 5), pref 49152".into()], Vec::new()], ..empty() };
        let f = judge("eth0", &h).unwrap();
        assert_eq!(f.value, "tc filters ingress: bpf cls_main (id 5), pref 49152");
        assert!(f.meaning.contains("after every TCX program"), "{}", f.meaning);
    }
}
