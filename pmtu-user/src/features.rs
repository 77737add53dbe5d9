//! What this kernel offers, probed rather than read off its version (a
//! distribution kernel backports, a custom one leaves out): pmtu chooses its
//! attach mechanism and the programs' code paths from the answers, says what
//! it chose, and refuses with the missing feature named when it cannot work.

use std::{path::Path, sync::OnceLock};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    EbpfLoader,
    maps::MapType,
    programs::{SchedClassifier, TcAttachType, TestRun as _, TestRunOptions},
};

use crate::loader::EBPF_OBJECT;

/// The probe program in pmtu's object (pmtu-ebpf/src/main.rs).
const PROG_PROBE_FIB: &str = "pmtu_probe_fib";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Features {
    /// `uname -r`, for messages only.
    pub kernel: String,
    /// BPF ring buffers (Linux 5.8): the observer's event channel.
    pub ring_buf: bool,
    /// tc attachment through bpf_link, no qdisc (TCX, Linux 6.6).
    pub tcx: bool,
    /// bpf_fib_lookup's BPF_FIB_LOOKUP_SKIP_NEIGH (Linux 6.3).
    pub fib_skip_neigh: bool,
    /// /sys/kernel/btf/vmlinux (not needed by pmtu; reported).
    pub btf: bool,
}

static PROBED: OnceLock<Result<Features, String>> = OnceLock::new();

/// The features of the running kernel, probed once per process.
pub fn get() -> anyhow::Result<&'static Features> {
    PROBED.get_or_init(|| probe().map_err(|e| format!("{e:#}"))).as_ref().map_err(|e| anyhow!("{e}"))
}

/// True if `PMTU_FORCE_LEGACY_TC` is set: use a clsact qdisc and cls_bpf
/// filters even where TCX exists (to test that backend on any kernel).
fn force_legacy_tc() -> bool {
    std::env::var_os("PMTU_FORCE_LEGACY_TC").is_some_and(|v| !v.is_empty() && v != "0")
}

fn probe() -> anyhow::Result<Features> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    // aya's probe answers "unsupported" for any refusal, EPERM included,
    // and some map types are open to unprivileged users: without CAP_BPF
    // (or CAP_SYS_ADMIN) say so, rather than blame the kernel.
    if !bpf_capable() {
        let refused = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EPERM))
            .context("no CAP_BPF or CAP_SYS_ADMIN in this process");
        return Err(crate::loader::explain(refused));
    }
    let supported = |t| aya::sys::is_map_supported(t).map_err(|e| anyhow!(e).context("probing BPF map types"));
    let ring_buf = supported(MapType::RingBuf)?;
    let tcx = !force_legacy_tc() && tcx_supported();
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let mut f = Features { kernel, ring_buf, tcx, fib_skip_neigh: false, btf };
    f.require()?;
    f.fib_skip_neigh = probe_fib_skip_neigh().context("probing bpf_fib_lookup's flags").map_err(crate::loader::explain)?;
    Ok(f)
}

/// True if this process has CAP_BPF (39) or CAP_SYS_ADMIN (21) in its
/// effective set (/proc/self/status CapEff).
fn bpf_capable() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    eff & (1 << CAP_BPF) != 0 || eff & (1 << CAP_SYS_ADMIN) != 0
}

/// BPF_PROG_QUERY for TCX on loopback: kernels without TCX reject the
/// attach type (EINVAL). Whatever PMTU_FORCE_LEGACY_TC says: the tests
/// ask it whether a TCX hook can be queried at all.
pub fn tcx_supported() -> bool {
    crate::loader::tcx_program_ids(1, TcAttachType::Ingress).is_ok()
}

/// Runs `pmtu_probe_fib` (every map at its smallest): -EINVAL means the
/// kernel does not know BPF_FIB_LOOKUP_SKIP_NEIGH.
fn probe_fib_skip_neigh() -> anyhow::Result<bool> {
    let mut loader = EbpfLoader::new();
    for (map, entries) in crate::loader::SMALLEST_MAPS {
        loader.map_max_entries(map, *entries);
    }
    let mut ebpf = loader.load(EBPF_OBJECT).context("loading pmtu's eBPF object")?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_PROBE_FIB)
        .with_context(|| format!("{PROG_PROBE_FIB} missing"))?
        .try_into()?;
    prog.load().with_context(|| format!("loading {PROG_PROBE_FIB}"))?;
    // An Ethernet frame's worth of zeros: BPF_PROG_TEST_RUN wants one.
    let frame = [0u8; 64];
    let run = prog
        .test_run(TestRunOptions { data_in: Some(&frame), repeat: 1, ..Default::default() })
        .with_context(|| format!("running {PROG_PROBE_FIB}"))?;
    Ok(run.return_value as i32 != -libc::EINVAL)
}

impl Features {
    /// The features pmtu cannot do without, each named with the Linux
    /// release that brought it.
    pub fn require(&self) -> anyhow::Result<()> {
        if !self.ring_buf {
            bail!(
                "this kernel ({}) has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF, Linux 5.8), which pmtu's \
                 observer reports through; pmtu supports Linux 6.1 and newer",
                self.kernel
            );
        }
        Ok(())
    }

    /// One line each: what pmtu chose on this kernel, and why.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![format!("kernel {}", self.kernel)];
        out.push(if self.tcx {
            "tc hooks: TCX (bpf_link; nothing left behind if pmtu is killed)".to_string()
        } else if force_legacy_tc() {
            "tc hooks: clsact qdisc + cls_bpf filters (PMTU_FORCE_LEGACY_TC)".to_string()
        } else {
            "tc hooks: clsact qdisc + cls_bpf filters (no TCX: Linux < 6.6); recorded under /run/pmtu, \
             `pmtu detach` removes what a killed pmtu left"
                .to_string()
        });
        out.push(if self.fib_skip_neigh {
            "route lookups: bpf_fib_lookup with BPF_FIB_LOOKUP_SKIP_NEIGH".to_string()
        } else {
            "route lookups: bpf_fib_lookup without BPF_FIB_LOOKUP_SKIP_NEIGH (Linux < 6.3)".to_string()
        });
        out
    }
}
