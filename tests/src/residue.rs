//! What pmtu may leave on an interface: nothing. Checked the way a user
//! would (`ip link`, `tc`) and through the kernel's own BPF_PROG_QUERY for
//! TCX, which neither `tc filter show` nor this bpftool version lists.

use aya::programs::{SchedClassifier, TcAttachType};
use pmtu_user::lab::Netns;

/// Names of the programs attached to `iface` via TCX, ingress and egress.
pub fn tcx_programs(ns: &Netns, iface: &str) -> Vec<String> {
    ns.enter(|| {
        let mut names = Vec::new();
        for kind in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, progs) = SchedClassifier::query_tcx(iface, kind).expect("BPF_PROG_QUERY tcx");
            names.extend(progs.iter().map(|p| format!("{kind:?}:{}", p.name_as_str().unwrap_or("?"))));
        }
        names
    })
    .expect("entering the namespace")
}

/// Everything BPF- or tc-related on `iface`, empty when clean.
pub fn residue(ns: &Netns, iface: &str) -> Vec<String> {
    let mut found = tcx_programs(ns, iface);
    let link = ns.ip(&["-d", "link", "show", "dev", iface]).unwrap();
    if link.split_whitespace().any(|w| w.starts_with("xdp") || w.starts_with("prog/xdp")) {
        found.push(format!("ip link: {}", link.trim()));
    }
    for dir in ["ingress", "egress"] {
        let filters = ns.run("tc", &["filter", "show", "dev", iface, dir]).unwrap();
        if !filters.trim().is_empty() {
            found.push(format!("tc filter {dir}: {}", filters.trim()));
        }
    }
    let qdisc = ns.run("tc", &["qdisc", "show", "dev", iface]).unwrap();
    if qdisc.contains("clsact") || qdisc.contains("ingress") {
        found.push(format!("tc qdisc: {}", qdisc.trim()));
    }
    found
}

pub fn assert_clean(ns: &Netns, iface: &str) {
    let found = residue(ns, iface);
    assert!(found.is_empty(), "{iface} in {} still has: {found:#?}", ns.name());
}
