//! Loads every program of pmtu's eBPF object into this kernel, one by one,
//! and prints what the verifier made of it: instructions verified and the
//! time the load took, or, for a program it refuses, the end of its log
//! (with its "processed N insns" line). Nothing is attached.
//!
//! Unlike the loader, it does not require Linux 6.6 (TCX): it is how the
//! numbers in pmtu-ebpf/VERIFIER.md were taken on older kernels, e.g. in a
//! VM running Debian 12's 6.1 kernel:
//! `cargo build --release -p pmtu-tests --example verifier_report`, then run
//! `target/release/examples/verifier_report [--log DIR] [PROGRAM...]` there.
//! `--log DIR` writes each refused program's whole log to DIR/NAME.log.
//! `--linear-limit N` loads the programs with PMTU_LINEAR_LIMIT = N, as the
//! linear-boundary tests do (packet.rs).

use std::{path::PathBuf, time::Instant};

use aya::{
    EbpfLoader, VerifierLogLevel,
    programs::{Program, ProgramError},
};
use pmtu_user::loader::EBPF_OBJECT;

fn main() -> anyhow::Result<()> {
    let mut log_dir = None;
    let mut linear_limit: Option<u64> = None;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--log" {
            log_dir = Some(PathBuf::from(args.next().expect("--log DIR")));
        } else if arg == "--linear-limit" {
            linear_limit = Some(args.next().expect("--linear-limit N").parse()?);
        } else {
            only.push(arg);
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel {}", release.trim());
    let mut loader = EbpfLoader::new();
    loader.verifier_log_level(VerifierLogLevel::DEBUG | VerifierLogLevel::STATS);
    if let Some(limit) = linear_limit.as_ref() {
        loader.override_global("PMTU_LINEAR_LIMIT", limit, true);
    }
    let mut ebpf = loader.load(EBPF_OBJECT)?;
    let mut names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    names.sort();
    let mut refused = 0;
    for name in names {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let prog = ebpf.program_mut(&name).expect("listed");
        let start = Instant::now();
        let res = match prog {
            Program::Xdp(p) => p.load(),
            Program::SchedClassifier(p) => p.load(),
            _ => continue,
        };
        let took = start.elapsed();
        match res {
            Ok(()) => {
                let n = prog.info()?.verified_instruction_count().unwrap_or(0);
                println!("{name}: {n} insns verified, {:.2} s", took.as_secs_f64());
            }
            Err(ProgramError::LoadError { io_error, verifier_log }) => {
                refused += 1;
                let log = verifier_log.to_string();
                println!("{name}: REFUSED ({io_error}), {:.2} s; log ends:", took.as_secs_f64());
                let lines: Vec<&str> = log.lines().collect();
                for line in &lines[lines.len().saturating_sub(25)..] {
                    println!("    {line}");
                }
                if let Some(dir) = &log_dir {
                    std::fs::create_dir_all(dir)?;
                    std::fs::write(dir.join(format!("{name}.log")), &log)?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    if refused > 0 {
        anyhow::bail!("{refused} program(s) refused");
    }
    Ok(())
}
