//! Installing what a fresh machine lacks: the eBPF toolchain (the pinned
//! nightly with rust-src, bpf-linker 0.10.3) and the Debian tools the demo and tests use.
//! Anything that cannot be installed is one line naming it and the fix.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// bpf-linker 0.10.3 links with rustc's own LLVM (22 here); 0.11+ wants a
/// system LLVM 23, which this distribution does not have.
const BPF_LINKER_VERSION: &str = "0.10.3";

/// (command, Debian package) pairs; "scapy" stands for the Python module.
pub const RUN_PACKAGES: &[(&str, &str)] = &[("ip", "iproute2"), ("ping", "iputils-ping")];
pub const TEST_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("tc", "iproute2"),
    ("ping", "iputils-ping"),
    ("tcpdump", "tcpdump"),
    ("setpriv", "util-linux"),
    ("iptables", "iptables"),
    ("ethtool", "ethtool"),
    ("scapy", "python3-scapy"),
    // `pmtu run --metrics`: the exposition is checked with `promtool check metrics`.
    ("promtool", "prometheus"),
    // `pmtu detach` leaves no program loaded: checked with bpftool.
    ("bpftool", "bpftool"),
    // `pmtu trace --pcap` and the daemon's pcap are read back with tshark (and tcpdump).
    ("tshark", "tshark"),
];

/// What booting Debian's kernels under QEMU needs (`cargo xtask vm`,
/// `cargo xtask test --kernel K`): only installed when a VM is asked for.
/// The kernels themselves are fetched with `apt-get download` (xtask/src/vm.rs).
pub const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    // A static /bin/busybox for the initramfs (a dynamic one would not run there).
    ("busybox-static", "busybox-static"),
    ("depmod", "kmod"),
    ("dpkg-deb", "dpkg"),
    // Debian's kernel modules are .ko.xz; the initramfs gets them uncompressed.
    ("xz", "xz-utils"),
    // The guest's loopback.
    ("ip", "iproute2"),
    // tests/tests/vm_links.rs: keys and peers of the WireGuard tunnel in the VMs.
    ("wg", "wireguard-tools"),
];

/// What the bench needs beyond the tests' packages.
pub const BENCH_EXTRA_PACKAGES: &[(&str, &str)] = &[("iperf3", "iperf3"), ("nft", "nftables")];

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run_or(cmd: &mut Command, fix: &str) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}; {fix}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status}); {fix}");
    }
    Ok(())
}

/// The eBPF build's nightly, from pmtu-ebpf/rust-toolchain.toml (the one
/// place it is pinned; pmtu-user/build.rs reads it too).
pub fn ebpf_toolchain() -> anyhow::Result<String> {
    let path = crate::workspace_root().join("pmtu-ebpf/rust-toolchain.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("channel = ").map(|v| v.trim_matches('"').to_string()))
        .with_context(|| format!("{}: no channel", path.display()))
}

pub fn toolchain() -> anyhow::Result<()> {
    let channel = ebpf_toolchain()?;
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup not found; pmtu's eBPF build needs rustup")?;
    if !toolchains.lines().any(|l| l.starts_with(&channel)) {
        run_or(
            Command::new("rustup").args(["toolchain", "install", &channel, "--profile", "minimal", "--component", "rust-src"]),
            &format!("install it with `rustup toolchain install {channel} --component rust-src`"),
        )?;
    }
    let components = output(Command::new("rustup").args(["component", "list", "--toolchain", &channel, "--installed"]))
        .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        run_or(
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", &channel]),
            &format!("install it with `rustup component add rust-src --toolchain {channel}`"),
        )?;
    }
    let linker = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        run_or(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
            ]),
            &format!("install it with `cargo install bpf-linker --version {BPF_LINKER_VERSION} --locked`"),
        )?;
    }
    Ok(())
}

/// True for an ELF file with no program interpreter (statically linked).
fn is_static_elf(path: &str) -> bool {
    let Ok(elf) = std::fs::read(path) else { return false };
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    // 64-bit little-endian only: the x86-64 busybox this is for.
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else { return false };
    // PT_INTERP = 3
    !(0..phnum).any(|i| elf.get(phoff + i * phentsize..phoff + i * phentsize + 4) == Some(&3u32.to_le_bytes()[..]))
}

fn have(command: &str) -> bool {
    if command == "busybox-static" {
        return is_static_elf("/bin/busybox");
    }
    if command == "scapy" {
        // Debian's python3-scapy serves /usr/bin/python3 only.
        return output(Command::new("/usr/bin/python3").args(["-c", "import scapy"])).is_some();
    }
    if command == "ping" {
        // Busybox and inetutils pings lack `-M do`; the lab needs iputils.
        return output(Command::new("ping").arg("-V")).is_some_and(|v| v.contains("iputils"));
    }
    output(Command::new("sh").args(["-c", &format!("command -v {command}")])).is_some()
}

pub fn packages(wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = wanted.iter().filter(|(cmd, _)| !have(cmd)).map(|(_, pkg)| *pkg).collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let fix = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("missing {}; as root run: {fix}", missing.join(", "));
    }
    run_or(Command::new("apt-get").args(["update", "-q"]), &format!("then: {fix}"))?;
    run_or(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("run: {fix}"),
    )
}
