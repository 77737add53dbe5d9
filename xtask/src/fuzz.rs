//! `cargo xtask fuzz --secs N [TARGET ...]`: runs the cargo-fuzz targets
//! (nightly, libFuzzer) for N seconds each, starting from the committed seed
//! corpus. New inputs go to target/fuzz-corpus/ (commit the ones worth
//! keeping into fuzz/corpus/); a crash is saved under fuzz/artifacts/ and
//! fails the command.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

pub const TARGETS: [&str; 5] = ["parse_frame", "ring_record", "cli_args", "table_ops", "mss_rewrite"];

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        crate::setup::run_or(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).args([
                "install",
                "cargo-fuzz",
                "--locked",
            ]),
            "install it with `cargo install cargo-fuzz --locked`",
        )?;
    }
    Ok(())
}

pub fn run(root: &Path, secs: u64, only: &[String]) -> anyhow::Result<()> {
    crate::setup::toolchain()?;
    ensure_cargo_fuzz()?;
    let targets: Vec<&str> = if only.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in only {
            if !TARGETS.contains(&t.as_str()) {
                bail!("unknown fuzz target {t}; the targets are {}", TARGETS.join(", "));
            }
        }
        only.iter().map(String::as_str).collect()
    };
    let mut failed = Vec::new();
    for target in &targets {
        let scratch = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        let seeds = root.join("fuzz/corpus").join(target);
        eprintln!("xtask: fuzzing {target} for {secs} s");
        let status = Command::new("cargo")
            .current_dir(root.join("fuzz"))
            .args(["+nightly", "fuzz", "run", target])
            .arg(&scratch)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .status()
            .with_context(|| format!("running cargo fuzz on {target}"))?;
        if !status.success() {
            failed.push(*target);
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {} (inputs under fuzz/artifacts/)", failed.join(", "));
    }
    println!("fuzz: {} targets ran {secs} s each with no crash", targets.len());
    Ok(())
}
