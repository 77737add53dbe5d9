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
    aya_build::build_ebpf([ebpf], Toolchain::default())
        .map_err(|e| anyhow!("{e:#}"))
        .context(
            "building the eBPF programs failed; `cargo xtask build` installs what they need \
             (rustup component add rust-src --toolchain nightly; \
             cargo install bpf-linker --version 0.10.3 --locked)",
        )
}
