//! `cargo xtask soak --secs N`: builds pmtu and the soak driver, then runs
//! the PTB flood soak (tests/src/soak.rs) and prints its figures.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

pub fn run(root: &Path, bin: &Path, secs: u64) -> anyhow::Result<()> {
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root)
        .args(["build", "--release", "--locked", "-p", "pmtu-tests", "--bin", "pmtu-soak"])
        .status()
        .context("building the soak driver")?;
    if !status.success() {
        bail!("building the soak driver failed: {status}");
    }
    let status = Command::new(crate::target_dir().join("release/pmtu-soak"))
        .args(["--secs", &secs.to_string()])
        .env("PMTU_BIN", bin)
        .status()
        .context("running the soak")?;
    if !status.success() {
        bail!("the soak failed: {status}");
    }
    Ok(())
}
