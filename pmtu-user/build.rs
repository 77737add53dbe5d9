use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds pmtu-ebpf for bpfel-unknown-none with the nightly toolchain and
/// bpf-linker, leaving the object in OUT_DIR for `include_bytes_aligned!`, so
/// the `pmtu` binary carries its programs and is the only file to install.
fn main() -> anyhow::Result<()> {
    let ebpf = Package {
        name: "pmtu-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../pmtu-ebpf"),
        ..Default::default()
    };
    // aya-build relays every line the nested cargo prints as a cargo warning;
    // keep it to real diagnostics. SAFETY: the build script is single-threaded.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    // The pinned nightly (pmtu-ebpf/rust-toolchain.toml), one place for
    // this and for `cargo xtask`.
    let pin = concat!(env!("CARGO_MANIFEST_DIR"), "/../pmtu-ebpf/rust-toolchain.toml");
    println!("cargo:rerun-if-changed={pin}");
    let text = std::fs::read_to_string(pin).with_context(|| format!("reading {pin}"))?;
    let channel = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = ").map(|v| v.trim_matches('"').to_string()))
        .with_context(|| format!("{pin}: no channel"))?;
    let channel: &'static str = Box::leak(channel.into_boxed_str());
    aya_build::build_ebpf([ebpf], Toolchain::Custom(channel))
        .map_err(|e| anyhow!("{e:#}"))
        .context(
            "building the eBPF programs failed; `cargo xtask build` installs what they need \
             (the nightly pinned in pmtu-ebpf/rust-toolchain.toml with rust-src; \
             cargo install bpf-linker --version 0.10.3 --locked)",
        )
}
