//! `cargo xtask bench [--quick]` runs this: every section of the bench,
//! target/bench/report.json, and BENCHMARKS.md generated from it.
//! `pmtu-bench mem N` is the memory section's child process.

use std::{path::PathBuf, process::ExitCode};

use pmtu_tests::bench::{Machine, Plan, Report, forward, kernel, markdown, memory, pipeline, startup};

fn run(quick: bool, out: PathBuf, md: PathBuf) -> anyhow::Result<()> {
    let plan = Plan::new(quick);
    let say = |s: &str| eprintln!("bench: {s}");
    say("1/6 in-kernel cost (BPF_PROG_TEST_RUN)");
    let prog_cost = kernel::measure(&plan)?;
    let jited = prog_cost.jited_bytes.iter().all(|(_, b)| *b > 0);
    say("2-3/6 forwarding and SYN rate (iperf3, short connections)");
    let (forwarding, syn_rate) = forward::measure(&plan)?;
    say("4/6 event pipeline");
    let pipeline = pipeline::measure(&plan)?;
    say("5/6 memory");
    let memory = memory::measure(&std::env::current_exe()?)?;
    let role_memlock = memory::measure_roles(&std::env::current_exe()?)?;
    say("6/6 start-up");
    let startup = startup::measure(&plan)?;
    let report = Report {
        command: if quick { "cargo xtask bench --quick".into() } else { "cargo xtask bench".into() },
        plan,
        machine: Machine::probe(jited),
        prog_cost,
        forwarding,
        syn_rate,
        pipeline,
        memory,
        role_memlock,
        startup,
    };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    std::fs::write(&md, markdown::render(&report))?;
    println!("bench: wrote {} and {}", out.display(), md.display());
    Ok(())
}

/// `pmtu-bench kernel [--quick]`: section 1 alone, as a table on stdout.
fn kernel_only(quick: bool) -> anyhow::Result<()> {
    let cost = kernel::measure(&Plan::new(quick))?;
    println!("{:<28} {:<22} {:>8} {:>8} {:>8} {:>8}", "program", "class", "median", "min", "floor", "above");
    for r in &cost.rows {
        println!(
            "{:<28} {:<22} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
            r.program,
            format!("{}{}", r.class, if r.method == "single" { " (single)" } else { "" }),
            r.ns.median,
            r.ns.min,
            r.floor_ns,
            r.ns.median - r.floor_ns
        );
    }
    for (name, n) in &cost.verified_insns {
        println!("verified {name}: {n}");
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Err(e) = pmtu_user::lab::remove_labs_on_signal() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("mem") {
        let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
        println!("{}", serde_json::to_string(&memory::feed(n)).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some("consumer") {
        let rounds = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
        return match pipeline::consumer_alone(rounds) {
            Ok(run) => {
                println!("{}", serde_json::to_string(&run).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("consumer: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.first().map(String::as_str) == Some("memlock") {
        return match memory::role_memlock(args.get(1).map_or("", String::as_str)) {
            Ok(kib) => {
                println!("{kib}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("memlock: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let quick = args.iter().any(|a| a == "--quick");
    if args.first().map(String::as_str) == Some("kernel") {
        // Section 1 only, printed, nothing written: for comparing builds.
        return match kernel_only(quick) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let value = |flag: &str, default: &str| {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
    };
    let out = PathBuf::from(value("--out", "target/bench/report.json"));
    let md = PathBuf::from(value("--md", "BENCHMARKS.md"));
    match run(quick, out, md) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
