//! What pmtu may leave on an interface: nothing. Checked the way a user
//! would (`ip link`, `tc`) and, on kernels with TCX (6.6+), through the
//! kernel's own BPF_PROG_QUERY for TCX, which neither `tc filter show` nor
//! this bpftool version lists. Without TCX (Linux 6.1) pmtu attaches
//! through a clsact qdisc and cls_bpf filters, which `tc` shows.

use aya::programs::{SchedClassifier, TcAttachType};
use pmtu_user::lab::Netns;

/// True if this kernel has TCX hooks, by pmtu's own probe (BPF_PROG_QUERY
/// for TCX on loopback, refused with EINVAL before 6.6); it ignores
/// PMTU_FORCE_LEGACY_TC, which only changes how pmtu attaches.
pub fn kernel_has_tcx() -> bool {
    pmtu_user::features::tcx_supported()
}

/// Names of the programs attached to `iface` via TCX, ingress and egress;
/// empty on a kernel without TCX (there is no such hook to hold any).
pub fn tcx_programs(ns: &Netns, iface: &str) -> Vec<String> {
    if !kernel_has_tcx() {
        return Vec::new();
    }
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

/// The records of legacy tc filters (and of clsact qdiscs pmtu added) that
/// pmtu keeps under /run/pmtu/legacy-tc for `iface` in `ns`: file names
/// `<netns inode>-<ifindex>-<ingress|egress|qdisc>[-<prio>]`.
pub fn legacy_records(ns: &Netns, iface: &str) -> Vec<String> {
    // The namespace's inode, as pmtu (a process wholly in it) reads it from
    // /proc/self/ns/net; here from its `ip netns` file, which is the same
    // nsfs inode (/proc/self would be this process's main thread's).
    let netns = {
        use std::os::unix::fs::MetadataExt as _;
        let file = format!("/var/run/netns/{}", ns.name());
        std::fs::metadata(&file).unwrap_or_else(|e| panic!("{file}: {e}")).ino()
    };
    let ifindex = ns.enter(|| pmtu_user::loader::ifindex(iface)).expect("entering the namespace");
    let Ok(ifindex) = ifindex else {
        // The interface is gone: no record can name it any more.
        return Vec::new();
    };
    let prefix = format!("{netns}-{ifindex}-");
    let entries = match std::fs::read_dir(pmtu_user::legacy_tc::RECORD_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("listing {}: {e}", pmtu_user::legacy_tc::RECORD_DIR),
    };
    let mut names: Vec<String> = entries
        .map(|e| e.expect("reading the record directory").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

/// `tc filter show dev IFACE ingress` then `egress`, in `ns`.
pub fn tc_filters(ns: &Netns, iface: &str) -> String {
    let mut all = String::new();
    for dir in ["ingress", "egress"] {
        all.push_str(&ns.run("tc", &["filter", "show", "dev", iface, dir]).unwrap());
    }
    all
}

/// The pmtu programs attached to `iface` as this kernel's backend has them:
/// TCX program names (`Ingress:pmtu_clamp_tc_ingress`), or without TCX the
/// cls_bpf filters `tc` lists (`ingress:16:pmtu_clamp_tc_ingress`), each
/// with pmtu's priority (0x10 clamper, 0x11 observer).
pub fn attached(ns: &Netns, iface: &str) -> Vec<String> {
    if kernel_has_tcx() {
        return tcx_programs(ns, iface);
    }
    let mut found = Vec::new();
    for dir in ["ingress", "egress"] {
        let out = ns.run("tc", &["filter", "show", "dev", iface, dir]).unwrap();
        for line in out.lines().filter(|l| l.contains(" bpf ") && l.contains("pmtu_")) {
            let pref = line.split("pref ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("?");
            let prog = line.split_whitespace().find(|w| w.starts_with("pmtu_")).unwrap_or("?");
            // The program's name as tc prints it, cut at any `:` or `[`
            // that some iproute2 versions append (`name:[id]`).
            let prog = prog.split([':', '[']).next().unwrap_or(prog);
            found.push(format!("{dir}:{pref}:{prog}"));
        }
    }
    found
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
    found.extend(legacy_records(ns, iface).into_iter().map(|r| format!("record {}/{r}", pmtu_user::legacy_tc::RECORD_DIR)));
    found
}

pub fn assert_clean(ns: &Netns, iface: &str) {
    let found = residue(ns, iface);
    assert!(found.is_empty(), "{iface} in {} still has: {found:#?}", ns.name());
}
