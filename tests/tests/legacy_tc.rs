//! The attach backend for kernels without TCX (before 6.6): a clsact qdisc
//! and cls_bpf filters at pmtu's priorities, recorded under /run/pmtu.
//! Orderly exits leave nothing (and leave a qdisc pmtu did not add);
//! `kill -9` leaves the filters, and `pmtu detach` removes them; the daemon
//! takes its predecessor's filters over in place. `pmtu trace`, `pmtu
//! clamp` and `pmtu run` all take part.
//!
//! On a kernel with TCX (the host) the backend is forced with
//! PMTU_FORCE_LEGACY_TC; on one without (Debian's 6.1, where `cargo xtask
//! test --kernel 6.1` runs this binary) nothing is forced: pmtu must choose
//! it by itself, and say why.

use std::{path::Path, process::Command, time::Duration};

use pmtu_tests::{
    procs::{Proc, pmtu_in},
    wire::clamped_transfer,
    require_root,
    residue::{assert_clean, kernel_has_tcx, legacy_records, tc_filters},
};
use pmtu_user::lab::{BlackHoleLab, Netns};

const EXIT: Duration = Duration::from_secs(20);
const UP: Duration = Duration::from_secs(60);

fn legacy(ns: &Netns, args: &[&str]) -> Command {
    let mut cmd = pmtu_in(ns, &pmtu_tests::pmtu_bin(), args);
    if kernel_has_tcx() {
        cmd.env("PMTU_FORCE_LEGACY_TC", "1");
    } else {
        cmd.env_remove("PMTU_FORCE_LEGACY_TC");
    }
    cmd
}

/// What pmtu says at start about its tc hooks on this kernel.
fn backend_line() -> &'static str {
    if kernel_has_tcx() {
        "pmtu: tc hooks: clsact qdisc + cls_bpf filters (PMTU_FORCE_LEGACY_TC)"
    } else {
        "pmtu: tc hooks: clsact qdisc + cls_bpf filters (no TCX: Linux < 6.6)"
    }
}

fn filters(ns: &Netns, iface: &str) -> String {
    tc_filters(ns, iface)
}

fn qdiscs(ns: &Netns, iface: &str) -> String {
    ns.run("tc", &["qdisc", "show", "dev", iface]).unwrap()
}



#[test]
fn legacy_tc_clamps_cleans_up_and_detach_removes_what_kill_left() {
    if !require_root("legacy_tc_clamps_cleans_up_and_detach_removes_what_kill_left") {
        return;
    }
    let lab = BlackHoleLab::build().unwrap();
    let (c0, r2) = (BlackHoleLab::R1_IF_C0, BlackHoleLab::R1_IF_R2);
    // Someone else's clsact qdisc on to-r2: pmtu must leave it.
    lab.r1.run("tc", &["qdisc", "add", "dev", r2, "clsact"]).unwrap();

    // Foreground clamp + trace: filters at pmtu's priorities; gone on exit.
    let mut clamp = Proc::spawn(legacy(&lab.r1, &["clamp", "-i", c0, "-i", r2, "--set-mss", "1300"]), "pmtu clamp");
    clamp.wait_for_stderr(backend_line(), UP);
    clamp.wait_for_stderr("attached to 2 interface(s)", UP);
    let mut trace = Proc::spawn(legacy(&lab.r1, &["trace", "-i", c0]), "pmtu trace");
    trace.wait_for_stderr(backend_line(), UP);
    trace.wait_for_stderr("attached to 1 interface(s)", UP);
    let f = filters(&lab.r1, c0);
    assert!(f.contains("pref 16 bpf") && f.contains("pmtu_clamp_tc_ingress"), "clamper at prio 0x10: {f}");
    assert!(f.contains("pref 17 bpf") && f.contains("pmtu_observe_tc_ingress"), "observer at prio 0x11: {f}");
    let records = legacy_records(&lab.r1, c0);
    for r in ["ingress-10", "egress-10", "ingress-11", "egress-11"] {
        assert!(records.iter().any(|n| n.ends_with(r)), "recorded under /run/pmtu/legacy-tc: *-{r}: {records:?}");
    }
    let (mss, done) = clamped_transfer(&lab, 6101);
    assert_eq!(mss, Some(1300));
    assert!(done, "the black hole crossed with legacy tc clamping");
    let t = trace.stop(libc::SIGTERM, EXIT);
    assert!(t.status.success(), "{:?}", t.stderr);
    // The tracer's filters saw the transfer cross c0 (a few hundred
    // packets after GRO; a tracer that saw nothing counts none).
    let inspected = t
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("counters: inspected ")?.split(',').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("the tracer's counters: {:?}", t.stdout));
    assert!(inspected >= 20, "the tracer inspected the transfer's packets: {inspected}");
    let c = clamp.stop(libc::SIGTERM, EXIT);
    assert!(c.status.success(), "{:?}", c.stderr);
    assert_clean(&lab.r1, c0);
    assert!(filters(&lab.r1, r2).trim().is_empty(), "pmtu's filters gone from {r2}");
    assert!(qdiscs(&lab.r1, r2).contains("clsact"), "the qdisc pmtu did not add stays: {}", qdiscs(&lab.r1, r2));

    // kill -9: the filters stay (netlink filters have no owner) and keep
    // clamping; `pmtu detach` in the namespace removes them and the qdisc.
    let mut clamp = Proc::spawn(legacy(&lab.r1, &["clamp", "-i", c0, "--set-mss", "1280"]), "pmtu clamp");
    clamp.wait_for_stderr("attached to 1 interface(s)", UP);
    clamp.signal(libc::SIGKILL);
    let killed = clamp.wait(EXIT);
    assert!(!killed.status.success());
    assert!(filters(&lab.r1, c0).contains("pmtu_clamp_tc"), "kill -9 leaves the filters on a legacy kernel");
    let (mss, done) = clamped_transfer(&lab, 6102);
    assert_eq!((mss, done), (Some(1280), true), "the orphaned filters still clamp");
    let out = legacy(&lab.r1, &["detach", "--pin-path", "/nonexistent-pmtu-pins", "--control", "/nonexistent-pmtu.sock"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pmtu detach: {}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("removed") && said.contains("clsact qdisc pmtu added removed"), "{said}");
    assert_clean(&lab.r1, c0);
}

#[test]
fn legacy_tc_daemon_outlives_sigkill_and_is_taken_over() {
    if !require_root("legacy_tc_daemon_outlives_sigkill_and_is_taken_over") {
        return;
    }
    let lab = BlackHoleLab::build().unwrap();
    let dir = std::env::temp_dir().join(format!("pmtu-legacy-{}-{}", std::process::id(), pmtu_user::lab::unique_prefix()));
    let bpffs = dir.join("bpffs");
    std::fs::create_dir_all(&bpffs).unwrap();
    assert!(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs).status().unwrap().success());
    let cfg = dir.join("pmtu.toml");
    let control = dir.join("control.sock");
    std::fs::write(
        &cfg,
        format!(
            "control-socket = \"{}\"\npin-path = \"{}/pmtu\"\n[[interface]]\nname = \"to-*\"\nclamp = \"set-mss\"\nmss = 1300\n",
            control.display(),
            bpffs.display()
        ),
    )
    .unwrap();
    let cfgs = cfg.display().to_string();
    let start = |first: &str| {
        let mut p = Proc::spawn(legacy(&lab.r1, &["run", "--config", &cfgs]), "pmtu run");
        p.wait_for_stderr(first, UP);
        p.wait_for_stderr("pmtu: serving 2 interface(s)", UP);
        p
    };
    let daemon = start("clsact filter, prio 0x10");
    daemon.signal(libc::SIGKILL);
    assert!(!daemon.wait(EXIT).status.success());
    let (mss, done) = clamped_transfer(&lab, 6103);
    assert_eq!((mss, done), (Some(1300), true), "clamping outlives the daemon");
    let daemon = start("taken over from the previous daemon");
    let (mss, done) = clamped_transfer(&lab, 6104);
    assert_eq!((mss, done), (Some(1300), true));
    let out = legacy(&lab.r1, &["detach", "--pin-path", &format!("{}/pmtu", bpffs.display()), "--control", &control.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "pmtu detach: {}", String::from_utf8_lossy(&out.stderr));
    assert!(daemon.wait(EXIT).status.success());
    assert_clean(&lab.r1, BlackHoleLab::R1_IF_C0);
    assert_clean(&lab.r1, BlackHoleLab::R1_IF_R2);
    assert!(Command::new("umount").arg(&bpffs).status().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!Path::new(&format!("{}/pmtu", bpffs.display())).exists());
}
