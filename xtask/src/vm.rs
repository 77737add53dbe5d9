//! Running commands inside Debian's kernels under QEMU: `cargo xtask vm
//! --kernel 6.1 -- CMD...` and the VM half of `cargo xtask test --kernel K`.
//!
//! The guest is this machine seen through another kernel: the host's root
//! filesystem, shared read-only over 9p, under a tmpfs overlay (so /tmp,
//! /run, /sys/fs/bpf and even the workspace are writable, and nothing
//! written reaches the host). Every path is the same as on the host, the
//! guest runs with the host's PATH, as root, with no network device but
//! loopback. The kernel comes from Debian's `linux-image-*` package: the
//! newest one apt offers for the series ("6.1" → linux-image-6.1.0-N-amd64,
//! "6.12" → linux-image-6.12.N+deb12-amd64), downloaded with `apt-get
//! download`, unpacked with `dpkg-deb -x` and indexed with `depmod -b`
//! under target/vm/<package>/ (kept for later runs); its /lib/modules tree
//! is bound over the guest's, so modprobe and the kernel's module autoload
//! find veth, cls_bpf, wireguard, gre, 8021q, macvlan... A small busybox
//! initramfs, made per run, loads what mounting the root takes (virtio_pci,
//! 9pnet_virtio, 9p, overlay, with their dependencies), mounts, and
//! switch_roots into a shell script that runs the commands and reports
//! each one's exit status on the serial console as a line carrying a
//! per-run nonce, which this side parses (and strips from the output).
//!
//! Inside, `PMTU_VM_KERNEL` is the series asked for (e.g. `6.1`): tests
//! may take it as "this kernel has wireguard, gre, ipip, 8021q, macvlan"
//! (Debian builds them as modules, which load on demand). Under TCG,
//! `PMTU_TEST_TIME_SCALE=10` too: tests stretch their settling waits by it.
//!
//! KVM is used when it works (a probe boot, remembered per host boot in
//! target/vm/accel); otherwise TCG. Knobs: `PMTU_VM_ACCEL=kvm|tcg` skips
//! the probe, `PMTU_VM_CPU` replaces `-cpu` (host under KVM, max under
//! TCG), `PMTU_VM_CMDLINE` adds to the kernel's command line.

use std::{
    collections::HashMap,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::setup;

/// The series `--kernels all` means (besides the host's own kernel).
pub const ALL_SERIES: &[&str] = &["6.1", "6.12"];

/// What mounting the guest's root takes; their dependencies come along.
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

const MEMORY_MIB: u32 = 1024;
/// From qemu-system-data, which qemu-system-x86 depends on.
const QBOOT: &str = "/usr/share/qemu/qboot.rom";
const CPUS: u32 = 2;
/// PMTU_TEST_TIME_SCALE in a TCG guest (see tests/src/lib.rs's `slow`).
const TCG_TIME_SCALE: u32 = 10;

/// A kernel ready to boot: unpacked, depmod'ed, under target/vm/<package>/.
pub struct Kernel {
    /// As asked for: "6.1".
    pub series: String,
    /// linux-image-6.1.0-56-amd64
    pub package: String,
    /// The package's version: 6.1.192-2.
    pub version: String,
    /// `uname -r` in the guest: 6.1.0-56-amd64.
    pub release: String,
    /// The unpacked package (boot/, lib/modules/<release>/).
    pub root: PathBuf,
}

impl Kernel {
    fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }
    fn modules(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{}", self.release))
    }
}

pub fn vm_dir(target: &Path) -> PathBuf {
    target.join("vm")
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ABI number that orders a series' packages: N in
/// linux-image-6.1.0-N-amd64 or linux-image-6.12.N+deb12-amd64; None for
/// any other flavour (cloud, rt, -dbg, -unsigned).
fn package_rank(series: &str, package: &str) -> Option<u64> {
    let rest = package.strip_prefix("linux-image-")?.strip_prefix(series)?.strip_prefix('.')?;
    if let Some(abi) = rest.strip_prefix("0-") {
        // 6.1.0-56-amd64
        return abi.strip_suffix("-amd64")?.parse().ok();
    }
    // 6.12.117+deb12-amd64
    let (sub, tail) = rest.split_once('+')?;
    let tail = tail.strip_suffix("-amd64")?;
    (tail.starts_with("deb") && tail[3..].chars().all(|c| c.is_ascii_digit())).then_some(())?;
    sub.parse().ok()
}

/// The newest `linux-image-<series>...-amd64` package apt offers.
fn newest_package(series: &str) -> anyhow::Result<Option<String>> {
    let pattern = format!("^linux-image-{}[.]", series.replace('.', "[.]"));
    let found = output(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    Ok(found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| package_rank(series, p).map(|r| (r, p.to_string())))
        .max()
        .map(|(_, p)| p))
}

fn candidate_version(package: &str) -> anyhow::Result<String> {
    let policy = output(Command::new("apt-cache").args(["policy", package]))?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .filter(|v| *v != "(none)")
        .map(str::to_string)
        .with_context(|| format!("apt has no candidate for {package}"))
}

fn check_series(series: &str) -> anyhow::Result<()> {
    let ok = series.split('.').count() == 2 && series.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if !ok {
        bail!("kernel {series:?}: give a series such as 6.1 or 6.12");
    }
    Ok(())
}

/// Finds (or downloads, unpacks and indexes) the newest kernel of `series`.
pub fn kernel(target: &Path, series: &str) -> anyhow::Result<Kernel> {
    check_series(series)?;
    let dir = vm_dir(target);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut package = newest_package(series).unwrap_or(None);
    if package.is_none() {
        // A fresh machine's apt lists may be empty or old.
        setup::run_or(Command::new("apt-get").args(["update", "-q"]), "run `apt-get update`")?;
        package = newest_package(series)?;
    }
    let package = match package {
        Some(p) => p,
        None => {
            // No apt at hand: the newest already unpacked here will do.
            let cached = fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| dir.join(n).join("ready").exists())
                .filter_map(|n| package_rank(series, &n).map(|r| (r, n)))
                .max();
            match cached {
                Some((_, p)) => {
                    eprintln!("xtask: apt offers no linux-image-{series}.*-amd64; using the cached {p}");
                    p
                }
                None => bail!(
                    "apt offers no Debian kernel package for {series} (looked for linux-image-{series}.0-N-amd64 and \
                     linux-image-{series}.N+debNN-amd64 with `apt-cache search`)"
                ),
            }
        }
    };
    let root = dir.join(&package);
    let ready = root.join("ready");
    if !ready.exists() {
        unpack(&root, &package)?;
    }
    let stamp = fs::read_to_string(&ready)?;
    let mut fields = stamp.split_whitespace();
    let (Some(release), Some(version)) = (fields.next(), fields.next()) else {
        bail!("{} is damaged: remove {}", ready.display(), root.display());
    };
    Ok(Kernel {
        series: series.to_string(),
        package,
        version: version.to_string(),
        release: release.to_string(),
        root,
    })
}

/// Downloads, unpacks and indexes `package` into `root`: in a scratch
/// directory first, renamed into place once complete (with its `ready`
/// stamp), so an interrupted or concurrent run never boots half a tree.
fn unpack(root: &Path, package: &str) -> anyhow::Result<()> {
    let version = candidate_version(package)?;
    let dir = root.parent().context("kernel cache directory")?;
    let work = dir.join(format!(".{package}.{}", std::process::id()));
    remove_dir(&work)?;
    let download = work.join("download");
    fs::create_dir_all(&download)?;
    let t = Instant::now();
    setup::run_or(
        // _apt cannot write into target/: download as root, without the warning.
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", &format!("{package}={version}")])
            .current_dir(&download),
        &format!("check that `apt-get download {package}` works"),
    )?;
    let deb = fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    setup::run_or(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&work), "is dpkg-deb installed?")?;
    // The .deb is not needed again: the unpacked tree is the cache.
    fs::remove_dir_all(&download)?;
    let release = fs::read_dir(work.join("lib/modules"))
        .with_context(|| format!("{package} has no lib/modules"))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .next()
        .with_context(|| format!("{package} has no lib/modules/<release>"))?;
    if !work.join(format!("boot/vmlinuz-{release}")).exists() {
        bail!("{package} has no boot/vmlinuz-{release}");
    }
    setup::run_or(Command::new("depmod").arg("-b").arg(&work).arg(&release), "is kmod installed?")?;
    fs::write(work.join("ready"), format!("{release} {version}\n"))?;
    if root.join("ready").exists() {
        // Another run got there first.
        remove_dir(&work)?;
    } else {
        remove_dir(root)?;
        fs::rename(&work, root).with_context(|| format!("renaming {} to {}", work.display(), root.display()))?;
    }
    eprintln!("xtask: {package} {version} ({release}) ready in {:.0?}", t.elapsed());
    // Older kernels of the same series are not booted again.
    if let Some(series) = series_of(package) {
        for entry in fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != package && package_rank(&series, &name).is_some() {
                remove_dir(&entry.path())?;
            }
        }
    }
    Ok(())
}

fn series_of(package: &str) -> Option<String> {
    let v = package.strip_prefix("linux-image-")?;
    let mut parts = v.split(['.', '-', '+']);
    Some(format!("{}.{}", parts.next()?, parts.next()?))
}

/// Module name as modprobe spells it: the file's stem, '-' as '_'.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The module files (relative to lib/modules/<release>/) that `wanted`
/// needs, dependencies first; built-in modules need none.
fn module_closure(modules: &Path, wanted: &[&str]) -> anyhow::Result<Vec<String>> {
    let dep = fs::read_to_string(modules.join("modules.dep")).context("modules.dep (depmod not run?)")?;
    let builtin = fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin.lines().map(module_name).collect();
    let mut by_name: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in dep.lines() {
        let Some((file, deps)) = line.split_once(':') else { continue };
        by_name.insert(module_name(file), (file.to_string(), deps.split_whitespace().map(str::to_string).collect()));
    }
    let mut order: Vec<String> = Vec::new();
    fn visit(name: &str, by_name: &HashMap<String, (String, Vec<String>)>, order: &mut Vec<String>) {
        let Some((file, deps)) = by_name.get(name) else { return };
        if order.contains(file) {
            return;
        }
        // modules.dep lists a module's dependencies, the last to load first.
        for d in deps.iter().rev() {
            visit(&module_name(d), by_name, order);
        }
        if !order.contains(file) {
            order.push(file.clone());
        }
    }
    for name in wanted {
        if !by_name.contains_key(*name) && !builtin.iter().any(|b| b == name) {
            bail!("module {name} is neither in {}/modules.dep nor built in", modules.display());
        }
        visit(name, &by_name, &mut order);
    }
    Ok(order)
}

fn decompressed(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// A newc cpio archive, the initramfs format, built in memory.
#[derive(Default)]
struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), body: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            body.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), b"");
    }
    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }
    fn file(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.entry(name, 0o100000 | mode, (0, 0), body);
    }
    fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), b"");
        self.data
    }
}

/// Single-quoted for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The host's variables the guest gets (besides PMTU_* and the caller's).
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "CI",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "RUST_TEST_THREADS",
    "CARGO_TARGET_DIR",
];

/// One command for the guest, run in `cwd` with stdin from /dev/null.
pub struct GuestCommand {
    pub argv: Vec<String>,
    /// Shown in the markers and summaries.
    pub label: String,
}

/// What became of one command.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub label: String,
    /// None: the guest never reported it (crash, timeout).
    pub code: Option<i32>,
    pub secs: f64,
}

pub struct RunReport {
    pub accel: &'static str,
    /// From starting QEMU to the guest shell running the first command.
    pub boot_secs: Option<f64>,
    pub total_secs: f64,
    pub outcomes: Vec<Outcome>,
    pub timed_out: bool,
    /// The console, as printed (markers left out).
    pub lines: Vec<String>,
}

/// The per-run initramfs: busybox, the boot modules, /init (stage 1) and
/// the stage-2 script that runs the commands in the switched-to root.
fn initramfs(kernel: &Kernel, stage2: &str) -> anyhow::Result<Vec<u8>> {
    let busybox = fs::read("/bin/busybox").context("reading /bin/busybox (busybox-static)")?;
    let modules_dir = kernel.modules();
    let modules = module_closure(&modules_dir, BOOT_MODULES)?;
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "lower", "rw", "newroot", "modules"] {
        cpio.dir(d);
    }
    // The kernel opens /dev/console for /init before anything is mounted.
    cpio.entry("dev/console", 0o020600, (5, 1), b"");
    cpio.file("bin/busybox", 0o755, &busybox);
    for applet in APPLETS {
        cpio.symlink(&format!("bin/{applet}"), "busybox");
    }
    let mut order = String::new();
    for (i, m) in modules.iter().enumerate() {
        let file = format!("{i:02}-{}.ko", module_name(m));
        cpio.file(&format!("modules/{file}"), 0o644, &decompressed(&modules_dir.join(m))?);
        writeln!(order, "{file}").unwrap();
    }
    cpio.file("modules/order", 0o644, order.as_bytes());
    let init = STAGE1
        .replace("@RELEASE@", &kernel.release)
        .replace("@MODULES@", &modules_dir.to_string_lossy());
    cpio.file("init", 0o755, init.as_bytes());
    cpio.file("stage2.sh", 0o755, stage2.as_bytes());
    Ok(cpio.finish())
}

/// What stage 1 runs (busybox's applets, linked in the archive: cheaper
/// than `busybox --install` at every boot).
const APPLETS: &[&str] = &[
    "sh", "cat", "cp", "grep", "hostname", "insmod", "ip", "ln", "mkdir", "mknod", "mount", "poweroff", "sleep", "stty",
    "switch_root", "umount",
];

/// Stage 1, busybox sh as PID 1 in the initramfs. Any failure powers off
/// with a `pmtu-vm: FAILED` line, which the host reports.
const STAGE1: &str = r#"#!/bin/busybox sh
export PATH=/bin
fail() { echo "pmtu-vm: FAILED: $*"; poweroff -f; sleep 10; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do
    insmod /modules/$m || fail "insmod $m"
done
if grep -q pmtu.probe /proc/cmdline; then echo "pmtu-vm: probe ok"; poweroff -f; sleep 10; fi
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || fail "mounting the host's root (9p)"
mount -t tmpfs -o mode=0755 rw /rw || fail "tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || fail "overlay"
cd /newroot
mount -t proc proc proc
mount -t sysfs sys sys
mount -t devtmpfs dev dev
mkdir -p dev/pts dev/shm
ln -sf /proc/self/fd dev/fd
ln -sf /proc/self/fd/0 dev/stdin
ln -sf /proc/self/fd/1 dev/stdout
ln -sf /proc/self/fd/2 dev/stderr
mount -t devpts -o newinstance,ptmxmode=0666 devpts dev/pts
mount -t tmpfs -o mode=1777 shm dev/shm
mount -t tmpfs -o mode=0755 run run
mount -t tmpfs -o mode=1777 tmp tmp
mount -t bpf -o mode=0700 bpf sys/fs/bpf || fail "bpffs"
mount -t cgroup2 cgroup2 sys/fs/cgroup || true
mount -t debugfs debugfs sys/kernel/debug 2>/dev/null || true
mount -t tracefs tracefs sys/kernel/tracing 2>/dev/null || true
mkdir -p usr/lib/modules/@RELEASE@
mount --bind /newroot@MODULES@ usr/lib/modules/@RELEASE@ || fail "binding the kernel's modules"
# What udev would do: the nodes whose opening loads their module
# (/dev/net/tun loads tun, /dev/loop-control loop...).
while read -r mod name dev; do
    case $mod in '#'*|'') continue ;; esac
    nums=${dev#?}
    case $name in */*) mkdir -p "dev/${name%/*}" ;; esac
    [ -e "dev/$name" ] || mknod -m 0600 "dev/$name" "${dev%%[0-9]*}" "${nums%:*}" "${nums#*:}"
done < usr/lib/modules/@RELEASE@/modules.devname
ip link set lo up || fail "loopback"
hostname pmtu-vm
# The console's output reaches the host as is: no \r before \n.
stty -onlcr
mkdir -p run/pmtu-vm
cp /stage2.sh run/pmtu-vm/stage2.sh
cd /
umount /proc /sys
exec switch_root /newroot /bin/sh /run/pmtu-vm/stage2.sh
fail "switch_root"
"#;

/// Stage 2: the host's /bin/sh, PID 1 in the guest's root.
fn stage2(
    series: &str,
    accel: &str,
    nonce: &str,
    cwd: &Path,
    env: &[(String, String)],
    commands: &[GuestCommand],
) -> String {
    let mut s = String::from("# pmtu-vm stage 2\nset +e\n");
    let mut vars: Vec<(String, String)> = Vec::new();
    for (k, v) in std::env::vars() {
        // PMTU_VM_* steer this side (accelerator, CPU model, command line).
        if PASSED_ENV.contains(&k.as_str()) || (k.starts_with("PMTU_") && !k.starts_with("PMTU_VM_")) {
            vars.push((k, v));
        }
    }
    vars.extend(env.iter().cloned());
    vars.push(("PMTU_VM_KERNEL".into(), series.into()));
    // TCG runs the guest 10-20 times slower than the host: tests stretch
    // their settling waits by this (pmtu_tests::slow), unless told otherwise.
    if accel == "tcg" && !vars.iter().any(|(k, _)| k == "PMTU_TEST_TIME_SCALE") {
        vars.push(("PMTU_TEST_TIME_SCALE".into(), TCG_TIME_SCALE.to_string()));
    }
    for (k, v) in &vars {
        if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            writeln!(s, "export {k}={}", quote(v)).unwrap();
        }
    }
    writeln!(s, "cd {} || cd /", quote(&cwd.to_string_lossy())).unwrap();
    writeln!(s, "echo; echo \"pmtu-vm-ready:{nonce}\"").unwrap();
    for (i, c) in commands.iter().enumerate() {
        let argv: Vec<String> = c.argv.iter().map(|a| quote(a)).collect();
        writeln!(s, "t0=$(date +%s%N)").unwrap();
        writeln!(s, "{} </dev/null", argv.join(" ")).unwrap();
        writeln!(s, "rc=$?; t1=$(date +%s%N)").unwrap();
        writeln!(s, "echo; echo \"pmtu-vm-rc:{nonce}:{i}:$rc:$((t1 - t0))\"").unwrap();
    }
    writeln!(s, "echo \"pmtu-vm-done:{nonce}\"").unwrap();
    s.push_str("sync\necho o > /proc/sysrq-trigger\nsleep 10\n");
    s
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string()
}

/// KVM if /dev/kvm really runs a guest, else TCG. A machine can offer a
/// /dev/kvm that opens but hangs its guests (nested virtualisation without
/// the features QEMU needs): so boot once with KVM and see; the answer is
/// kept per host boot.
fn accel(target: &Path, kernel: &Kernel) -> anyhow::Result<&'static str> {
    match std::env::var("PMTU_VM_ACCEL").as_deref() {
        Ok("kvm") => return Ok("kvm"),
        Ok("tcg") => return Ok("tcg"),
        Ok(other) => bail!("PMTU_VM_ACCEL={other}: say kvm or tcg"),
        Err(_) => {}
    }
    if fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return Ok("tcg");
    }
    let cache = vm_dir(target).join("accel");
    let id = boot_id();
    if let Ok(known) = fs::read_to_string(&cache)
        && let Some((b, a)) = known.trim().split_once(' ')
        && b == id
    {
        return Ok(if a == "kvm" { "kvm" } else { "tcg" });
    }
    let t = Instant::now();
    let nonce = nonce();
    let initrd = vm_dir(target).join(format!("probe-{}.cpio", std::process::id()));
    fs::write(&initrd, initramfs(kernel, "")?)?;
    let mut cmd = qemu(kernel, "kvm", &initrd, "pmtu.probe");
    let res = watch(&mut cmd, Duration::from_secs(20), &nonce, |line| line.contains("pmtu-vm: probe ok"), false);
    if let Err(e) = fs::remove_file(&initrd) {
        eprintln!("xtask: removing {}: {e}", initrd.display());
    }
    let works = res.map(|r| r.matched).unwrap_or(false);
    let chosen = if works { "kvm" } else { "tcg" };
    eprintln!(
        "xtask: /dev/kvm {} (probe boot, {:.1}s): using {chosen}",
        if works { "works" } else { "does not run a guest" },
        t.elapsed().as_secs_f64()
    );
    fs::write(&cache, format!("{id} {chosen}\n"))?;
    Ok(chosen)
}

fn nonce() -> String {
    let mut b = [0u8; 8];
    // Without /dev/urandom the nonce stays zero: the status lines are still
    // told apart by their prefix, only less surely from the guest's output.
    if let Err(e) = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        eprintln!("xtask: /dev/urandom: {e}");
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn cpu(accel: &str) -> String {
    if let Ok(model) = std::env::var("PMTU_VM_CPU") {
        return model;
    }
    if accel == "kvm" { "host" } else { "max" }.to_string()
}

fn qemu(kernel: &Kernel, accel: &str, initrd: &Path, extra_cmdline: &str) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-nographic", "-nodefaults", "-no-user-config", "-no-reboot"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .args(["-accel", accel])
        .args(["-cpu", &cpu(accel)])
        .args(["-smp", &CPUS.to_string(), "-m", &MEMORY_MIB.to_string()]);
    // qboot starts the kernel sooner than SeaBIOS, and prints nothing.
    if Path::new(QBOOT).exists() {
        cmd.args(["-bios", QBOOT]);
    }
    cmd
        .arg("-kernel")
        .arg(kernel.vmlinuz())
        .arg("-initrd")
        .arg(initrd)
        // mitigations=off: page-table isolation and friends cost much under TCG.
        // no_timer_check: skips a timer check that TCG can fail, slowly.
        .args(["-append", &format!("console=ttyS0 panic=-1 quiet mitigations=off no_timer_check {} {extra_cmdline}", std::env::var("PMTU_VM_CMDLINE").unwrap_or_default())])
        .args(["-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"]);
    cmd
}

struct Watched {
    status: Option<std::process::ExitStatus>,
    matched: bool,
    timed_out: bool,
    lines: Vec<(Instant, String)>,
}

/// Runs QEMU, reading its console line by line; kills it after
/// `limit` or once `stop(line)` holds. Lines are printed if `print`, but
/// those carrying the run's nonce (the markers).
fn watch(
    cmd: &mut Command,
    limit: Duration,
    nonce: &str,
    stop: impl Fn(&str) -> bool,
    print: bool,
) -> anyhow::Result<Watched> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let tx2 = tx.clone();
    thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).replace('\r', "");
            if tx.send(Some(line)).is_err() {
                break;
            }
            buf.clear();
        }
        // The receiver gone means the run is over: nothing to tell.
        tx.send(None).ok();
    });
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx2.send(Some(format!("qemu: {line}"))).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut out = Watched { status: None, matched: false, timed_out: false, lines: Vec::new() };
    let mut stdout = std::io::stdout();
    // The guest prints a blank line before each marker (so that the marker
    // starts a line): held back, and dropped when a marker follows.
    let mut blank = false;
    let mut show = |line: &str| {
        if !print {
            return;
        }
        if line.contains(nonce) {
            blank = false;
            return;
        }
        if blank {
            writeln!(stdout).ok();
        }
        blank = line.is_empty();
        if !blank {
            writeln!(stdout, "{line}").ok();
        }
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            out.timed_out = true;
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(Some(line)) => {
                show(&line);
                let hit = stop(&line);
                out.lines.push((Instant::now(), line));
                if hit {
                    out.matched = true;
                    break;
                }
            }
            // QEMU closed its console: it is exiting.
            Ok(None) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                out.timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if out.matched || out.timed_out {
        // It may have exited meanwhile: nothing left to kill then.
        child.kill().ok();
    } else {
        // Give QEMU a moment to exit after the guest powered off.
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        child.kill().ok();
    }
    out.status = child.wait().ok();
    // What the reader threads still hold (stderr after stdout closed).
    while let Ok(Some(line)) = rx.recv_timeout(Duration::from_millis(100)) {
        show(&line);
        out.lines.push((Instant::now(), line));
    }
    Ok(out)
}

/// Boots `kernel` and runs `commands` one after the other in the guest,
/// printing their output; `limit` bounds the whole run.
pub fn run(
    target: &Path,
    kernel: &Kernel,
    cwd: &Path,
    env: &[(String, String)],
    commands: &[GuestCommand],
    limit: Duration,
) -> anyhow::Result<RunReport> {
    let accel = accel(target, kernel)?;
    let nonce = nonce();
    let script = stage2(&kernel.series, accel, &nonce, cwd, env, commands);
    let runs = vm_dir(target).join("run");
    fs::create_dir_all(&runs)?;
    let initrd = runs.join(format!("{}-{nonce}.cpio", std::process::id()));
    fs::write(&initrd, initramfs(kernel, &script)?).with_context(|| format!("writing {}", initrd.display()))?;
    eprintln!(
        "xtask: booting {} {} ({}) under {} with {CPUS} CPUs, {MEMORY_MIB} MiB",
        kernel.package,
        kernel.version,
        kernel.release,
        if accel == "kvm" { "KVM" } else { "TCG" }
    );
    let start = Instant::now();
    let done = format!("pmtu-vm-done:{nonce}");
    let mut cmd = qemu(kernel, accel, &initrd, "");
    let watched = watch(&mut cmd, limit, &nonce, |l| l.contains(&done), true);
    if let Err(e) = fs::remove_file(&initrd) {
        eprintln!("xtask: removing {}: {e}", initrd.display());
    }
    let watched = watched?;
    let mut report = RunReport {
        accel,
        boot_secs: None,
        total_secs: start.elapsed().as_secs_f64(),
        outcomes: commands.iter().map(|c| Outcome { label: c.label.clone(), code: None, secs: 0.0 }).collect(),
        timed_out: watched.timed_out,
        lines: watched.lines.iter().filter(|(_, l)| !l.contains(&nonce)).map(|(_, l)| l.clone()).collect(),
    };
    let ready = format!("pmtu-vm-ready:{nonce}");
    let rc = format!("pmtu-vm-rc:{nonce}:");
    for (at, line) in &watched.lines {
        if line.contains(&ready) {
            report.boot_secs = Some(at.duration_since(start).as_secs_f64());
        }
        if let Some(pos) = line.find(&rc) {
            let mut f = line[pos + rc.len()..].split(':');
            let (Some(i), Some(code), Some(ns)) = (f.next(), f.next(), f.next()) else { continue };
            if let (Ok(i), Ok(code)) = (i.parse::<usize>(), code.parse::<i32>())
                && let Some(o) = report.outcomes.get_mut(i)
            {
                o.code = Some(code);
                o.secs = ns.trim().parse::<f64>().unwrap_or(0.0) / 1e9;
            }
        }
    }
    if watched.timed_out {
        eprintln!("xtask: the VM ran out of time ({}s) and was killed", limit.as_secs());
    } else if report.outcomes.iter().any(|o| o.code.is_none()) {
        let failed = watched.lines.iter().rev().find(|(_, l)| l.contains("pmtu-vm: FAILED"));
        match failed {
            Some((_, l)) => eprintln!("xtask: the guest's boot failed: {l}"),
            None => eprintln!(
                "xtask: the VM stopped before reporting every command (QEMU: {})",
                watched.status.map(|s| s.to_string()).unwrap_or_else(|| "?".into())
            ),
        }
    }
    Ok(report)
}

/// Removes `dir` and what it holds; one that is not there is fine.
fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("removing {}", dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_only_the_plain_amd64_flavour() {
        assert_eq!(package_rank("6.1", "linux-image-6.1.0-56-amd64"), Some(56));
        assert_eq!(package_rank("6.12", "linux-image-6.12.117+deb12-amd64"), Some(117));
        assert_eq!(package_rank("6.1", "linux-image-6.12.117+deb12-amd64"), None);
        assert_eq!(package_rank("6.1", "linux-image-6.1.0-56-cloud-amd64"), None);
        assert_eq!(package_rank("6.1", "linux-image-6.1.0-56-amd64-unsigned"), None);
        assert_eq!(package_rank("6.12", "linux-image-6.12.117+deb12-rt-amd64"), None);
        assert_eq!(package_rank("6.12", "linux-image-6.12.117+deb12-amd64-dbg"), None);
        assert_eq!(series_of("linux-image-6.12.117+deb12-amd64").as_deref(), Some("6.12"));
        assert_eq!(series_of("linux-image-6.1.0-56-amd64").as_deref(), Some("6.1"));
    }

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/net/9p/9pnet_virtio.ko.xz"), "9pnet_virtio");
        assert_eq!(module_name("kernel/fs/overlayfs/overlay.ko"), "overlay");
        assert_eq!(module_name("kernel/drivers/net/dummy-thing.ko.zst"), "dummy_thing");
    }

    #[test]
    fn quotes_for_sh() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn cpio_is_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("bin/x", 0o755, b"hello");
        let data = c.finish();
        assert_eq!(data.len() % 4, 0);
        assert!(data.starts_with(b"070701"));
        assert!(data.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
