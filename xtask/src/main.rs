//! `cargo xtask build | test | run`: everything a new user or CI needs,
//! including installing the eBPF toolchain and the lab tools when missing.

mod fuzz;
mod setup;
mod soak;
mod tally;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test and run pmtu")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing, then build target/release/pmtu.
    Build,
    /// Build, then run every test: host, in-kernel (TestRun) and namespace labs.
    ///
    /// With --kernel K (repeatable; `host` is this machine's kernel) or
    /// --kernels all (host, 6.1 and 6.12), the kernel and namespace tests
    /// (--vm-tests) also run inside QEMU VMs booting Debian's kernels.
    Test {
        /// Run in this kernel: a Debian series (6.1, 6.12) booted under QEMU,
        /// or `host`. Without --kernel/--kernels: the host only.
        #[arg(long = "kernel", value_name = "K")]
        kernel: Vec<String>,
        /// `all`: the host, then every series in xtask/src/vm.rs's ALL_SERIES.
        #[arg(long = "kernels", value_name = "all")]
        kernels: Option<String>,
        /// The test binaries (tests/tests/<name>.rs) run inside each VM.
        #[arg(long, value_delimiter = ',', default_values_t = VM_TESTS.iter().map(|s| s.to_string()))]
        vm_tests: Vec<String>,
        /// Minutes one kernel's VM may take before it is killed (failing).
        #[arg(long, default_value_t = 20)]
        vm_minutes: u64,
        /// Extra arguments for `cargo test` (e.g. a test name filter); what
        /// follows a `--` among them also goes to the test binaries in VMs.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run one command, as root, inside a fresh QEMU VM booting Debian's
    /// kernel of series K, with this machine's filesystem (read-only, under
    /// a tmpfs overlay); exits with the command's status.
    Vm {
        /// A Debian kernel series: 6.1, 6.12.
        #[arg(long, value_name = "K")]
        kernel: String,
        /// Minutes before the VM is killed.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Run the fuzz targets (cargo-fuzz, nightly) for SECS seconds each.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Targets to run (default: all).
        targets: Vec<String>,
    },
    /// Flood a router running pmtu trace and clamp with PTBs while TCP
    /// crosses it; print the figures; fail on a stall, a broken event
    /// identity or memory growth.
    Soak {
        #[arg(long, default_value_t = 60)]
        secs: u64,
    },
    /// Measure (no assertions): in-kernel cost, forwarding and SYN rate
    /// against iptables/nftables, event pipeline, memory, start-up. Writes
    /// target/bench/report.json and BENCHMARKS.md.
    Bench {
        /// A shorter run (about two minutes).
        #[arg(long)]
        quick: bool,
    },
    /// Build, then run `pmtu ARGS`; with no ARGS, `pmtu demo`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The test binaries `cargo xtask test --kernel K` runs inside each VM:
/// the kernel's verdicts on every program (BPF_PROG_TEST_RUN), namespace
/// labs that attach them for real (learned_test_run: the learned rule on
/// crafted SYNs), the legacy tc backend (which 6.1 must
/// choose by itself: trace, clamp and run there), and the tunnel and VLAN
/// tests on real WireGuard, GRE and 802.1Q interfaces (vm_links: modules
/// this machine's kernel lacks). seed_lab (~3.5 min under TCG) is left out
/// for time; its `--duration 6` trace and 60 s demo also assume a
/// machine's speed. Times per kernel: see README's "Supported kernels".
const VM_TESTS: &[&str] = &["prog_test_run", "clamp_test_run", "learned_test_run", "clamp_lab", "observer_truth", "legacy_tc", "vm_links"];

/// Test binaries the host run leaves out, with why; each is in VM_TESTS.
const HOST_EXCLUDED: &[(&str, &str)] =
    &[("vm_links", "needs the wireguard, ip_gre and 8021q modules this machine's kernel lacks; runs in the VMs")];

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Where cargo puts what it builds: `$CARGO_TARGET_DIR` (relative to the
/// workspace, as cargo reads it here) if set, else `target/`.
fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds the release binary (its build script builds the eBPF programs).
fn build() -> anyhow::Result<PathBuf> {
    setup::toolchain()?;
    let root = workspace_root();
    run(cargo().current_dir(&root).args(["build", "--release", "--locked", "-p", "pmtu-user"]))?;
    let bin = target_dir().join("release/pmtu");
    if !bin.exists() {
        bail!("{} was not produced", bin.display());
    }
    Ok(bin)
}

/// What --kernel/--kernels ask for, in order, `host` for this machine.
fn test_kernels(kernel: &[String], kernels: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    match kernels {
        None => {}
        Some("all") => {
            out.push("host".into());
            out.extend(vm::ALL_SERIES.iter().map(|s| s.to_string()));
        }
        Some(other) => bail!("--kernels {other}: only `all` is known (or use --kernel K, repeated)"),
    }
    for k in kernel {
        if !out.contains(k) {
            out.push(k.clone());
        }
    }
    if out.is_empty() {
        out.push("host".into());
    }
    Ok(out)
}

/// The test binaries cargo built (`cargo test --no-run`), by target name.
fn test_executables(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let out = cargo()
        .current_dir(root)
        .args(["test", "--release", "--locked", "--tests", "--no-run", "--message-format=json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed: {}", out.status);
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str()) else { continue };
        if msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "test")) {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    Ok(found)
}

fn test(targets: &[String], bin: &Path, vm_tests: &[String], vm_limit: Duration, args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    let mut grand = tally::Totals::default();
    let mut summaries: Vec<String> = Vec::new();
    let mut all_ok = true;
    if targets.iter().any(|k| k == "host") {
        let t = Instant::now();
        let mut cmd = cargo();
        cmd.current_dir(&root).args(["test", "--release", "--locked", "--lib", "--bins"]);
        // Every integration test by name (`--tests` cannot leave one out).
        for name in host_tests(&root)? {
            cmd.args(["--test", &name]);
        }
        for (name, why) in HOST_EXCLUDED {
            println!("xtask: host run leaves out tests/tests/{name}.rs: {why}");
        }
        cmd.args(args).env("PMTU_BIN", bin);
        let (totals, ok) = tally::run(cmd)?;
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        summaries.push(format!(
            "kernel host ({}): {} in {:.0}s; {}",
            release.trim(),
            if ok { "passed" } else { "FAILED" },
            t.elapsed().as_secs_f64(),
            totals.counts()
        ));
        grand.add(&totals);
        all_ok &= ok;
    }
    let series: Vec<&String> = targets.iter().filter(|k| *k != "host").collect();
    if !series.is_empty() {
        let exes = test_executables(&root)?;
        let mut selected = Vec::new();
        for name in vm_tests {
            match exes.iter().find(|(n, _)| n == name) {
                Some((_, exe)) => selected.push((name.clone(), exe.clone())),
                None => bail!("--vm-tests {name}: no such test binary (have: {})", names(&exes)),
            }
        }
        // What follows `--` in the cargo test arguments is libtest's.
        let libtest_args: Vec<String> = args.iter().skip_while(|a| *a != "--").skip(1).cloned().collect();
        let commands: Vec<vm::GuestCommand> = selected
            .iter()
            .map(|(name, exe)| vm::GuestCommand {
                argv: std::iter::once(exe.to_string_lossy().into_owned()).chain(libtest_args.iter().cloned()).collect(),
                label: name.clone(),
            })
            .collect();
        let env = [("PMTU_BIN".to_string(), bin.to_string_lossy().into_owned())];
        let target = target_dir();
        for s in series {
            let (summary, totals, ok) = match vm::kernel(&target, s) {
                Ok(k) => {
                    let mut report = vm::run(&target, &k, &root, &env, &commands, vm_limit)?;
                    let mut retried = "";
                    if report.boot_secs.is_none() && !report.timed_out {
                        // The guest kernel died before running anything (seen
                        // once under TCG: a panic in early boot): the machine,
                        // not a test. Boot it once more, and say so.
                        eprintln!("xtask: kernel {s} did not boot; booting it once more");
                        report = vm::run(&target, &k, &root, &env, &commands, vm_limit)?;
                        retried = ", boot retried once";
                    }
                    let totals = tally::Totals::from_lines(report.lines.iter().map(String::as_str));
                    let ok = report.outcomes.iter().all(|o| o.code == Some(0));
                    let per: Vec<String> = report
                        .outcomes
                        .iter()
                        .map(|o| match o.code {
                            Some(0) => format!("{} ok {:.0}s", o.label, o.secs),
                            Some(c) => format!("{} FAILED (exit {c}) {:.0}s", o.label, o.secs),
                            None => format!("{} NOT RUN", o.label),
                        })
                        .collect();
                    let summary = format!(
                        "kernel {s} ({} {}, {}): {} in {:.0}s (boot {}{}{retried}); {}; {}",
                        k.package,
                        k.version,
                        report.accel.to_uppercase(),
                        if ok { "passed" } else { "FAILED" },
                        report.total_secs,
                        report.boot_secs.map(|b| format!("{b:.1}s")).unwrap_or_else(|| "failed".into()),
                        if report.timed_out { ", timed out" } else { "" },
                        per.join(", "),
                        totals.counts()
                    );
                    (summary, totals, ok)
                }
                Err(e) => (format!("kernel {s}: FAILED, not booted: {e:#}"), tally::Totals::default(), false),
            };
            println!("{summary}");
            summaries.push(summary);
            grand.add(&totals);
            all_ok &= ok;
        }
    }
    if targets.len() > 1 || targets.iter().any(|k| k != "host") {
        println!();
        for s in &summaries {
            println!("{s}");
        }
    }
    grand.close(all_ok)
}

/// The integration test targets the host runs: tests/tests/*.rs (cargo's
/// auto-discovered targets, by file name) less HOST_EXCLUDED.
fn host_tests(root: &Path) -> anyhow::Result<Vec<String>> {
    let dir = root.join("tests/tests");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry.with_context(|| format!("listing {}", dir.display()))?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            && !HOST_EXCLUDED.iter().any(|(n, _)| *n == stem)
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("no integration tests under {}", dir.display());
    }
    Ok(names)
}

fn names(exes: &[(String, PathBuf)]) -> String {
    exes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Build => {
            setup::packages(setup::RUN_PACKAGES)?;
            let bin = build()?;
            println!("built {}", bin.display());
        }
        Cmd::Test { kernel, kernels, vm_tests, vm_minutes, args } => {
            let targets = test_kernels(&kernel, kernels.as_deref())?;
            setup::packages(setup::TEST_PACKAGES)?;
            if targets.iter().any(|k| k != "host") {
                setup::packages(setup::VM_PACKAGES)?;
            }
            let bin = build()?;
            test(&targets, &bin, &vm_tests, Duration::from_secs(vm_minutes * 60), &args)?;
        }
        Cmd::Vm { kernel, minutes, command } => {
            setup::packages(setup::VM_PACKAGES)?;
            let target = target_dir();
            let k = vm::kernel(&target, &kernel)?;
            let cwd = std::env::current_dir()?;
            let cmd = vm::GuestCommand { argv: command, label: "command".into() };
            let report = vm::run(&target, &k, &cwd, &[], &[cmd], Duration::from_secs(minutes * 60))?;
            let code = report.outcomes[0].code;
            eprintln!(
                "xtask: {} ({}) under {}: boot {}, command {:.1}s, exit {}",
                k.package,
                k.release,
                report.accel,
                report.boot_secs.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "failed".into()),
                report.outcomes[0].secs,
                code.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into())
            );
            std::process::exit(code.unwrap_or(125));
        }
        Cmd::Bench { quick } => {
            setup::packages(setup::TEST_PACKAGES)?;
            setup::packages(setup::BENCH_EXTRA_PACKAGES)?;
            let bin = build()?;
            let root = workspace_root();
            run(cargo().current_dir(&root).args(["build", "--release", "--locked", "-p", "pmtu-tests", "--bin", "pmtu-bench"]))?;
            let mut cmd = Command::new(target_dir().join("release/pmtu-bench"));
            cmd.current_dir(&root).env("PMTU_BIN", &bin);
            if quick {
                cmd.arg("--quick");
            }
            run(&mut cmd)?;
        }
        Cmd::Soak { secs } => {
            setup::packages(setup::TEST_PACKAGES)?;
            let bin = build()?;
            soak::run(&workspace_root(), &bin, secs)?;
        }
        Cmd::Fuzz { secs, targets } => fuzz::run(&workspace_root(), secs, &targets)?,
        Cmd::Run { args } => {
            setup::packages(setup::RUN_PACKAGES)?;
            let bin = build()?;
            let args = if args.is_empty() { vec!["demo".to_string()] } else { args };
            let status = Command::new(&bin).args(&args).status().with_context(|| format!("starting {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
    }
    Ok(())
}
