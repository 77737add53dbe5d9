//! `cargo xtask build | test | run`: everything a new user or CI needs,
//! including installing the eBPF toolchain and the lab tools when missing.

mod fuzz;
mod setup;
mod soak;
mod tally;

use std::{path::PathBuf, process::Command};

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
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Build => {
            setup::packages(setup::RUN_PACKAGES)?;
            let bin = build()?;
            println!("built {}", bin.display());
        }
        Cmd::Test { args } => {
            setup::packages(setup::TEST_PACKAGES)?;
            let bin = build()?;
            let mut cmd = cargo();
            cmd.current_dir(workspace_root())
                .args(["test", "--release", "--locked", "--lib", "--bins", "--tests"])
                .args(&args)
                .env("PMTU_BIN", &bin);
            tally::run(cmd)?;
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
