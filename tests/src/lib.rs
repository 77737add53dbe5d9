//! Shared helpers for pmtu's integration tests: the frame corpus, the
//! root-or-skip rule, and locating the `pmtu` binary.

pub mod bench;
pub mod cases;
pub mod clamp_cases;
pub mod daemon;
pub mod frames;
pub mod fuzz;
pub mod oracle;
pub mod procs;
pub mod residue;
pub mod rewrite_check;
pub mod soak;
pub mod trace_json;
pub mod tunnel;
pub mod wire;

use std::{io::Write as _, path::PathBuf, time::Duration};

/// True when the test may use the kernel. Root-only tests call this first: as
/// non-root they skip with a visible message, except under `CI=true`, where a
/// skipped kernel test would hide a failure, so they fail.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: needs root (BPF, namespaces) and CI=true forbids skipping");
    }
    // Straight to the stderr handle: libtest captures eprintln! of passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs root; run `sudo cargo xtask test`");
    false
}

/// `d` stretched for a slow machine: times $PMTU_TEST_TIME_SCALE, which
/// `cargo xtask test --kernel K` sets inside QEMU VMs without KVM (TCG runs
/// the guest ten or more times slower); 1 elsewhere. For the waits that let
/// the network settle (packets captured, a reply sent), not for deadlines a
/// test asserts on.
pub fn slow(d: Duration) -> Duration {
    let scale = std::env::var("PMTU_TEST_TIME_SCALE").ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(1);
    d * scale.max(1)
}

/// The `pmtu` binary under test: `$PMTU_BIN` (set by `cargo xtask test`),
/// else the one built next to this test in the same profile.
pub fn pmtu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PMTU_BIN") {
        let p = PathBuf::from(p);
        return std::fs::canonicalize(&p).unwrap_or_else(|e| panic!("PMTU_BIN={}: {e}", p.display()));
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/pmtu
    let bin = exe.parent().and_then(|d| d.parent()).map(|d| d.join("pmtu")).expect("target dir");
    assert!(
        bin.exists(),
        "{} not built: run `cargo xtask test`, or `cargo build -p pmtu-user` first",
        bin.display()
    );
    bin
}
