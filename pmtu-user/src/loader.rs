//! Load, attach and detach: the lifecycle of pmtu's programs.
//!
//! Every attachment is a bpf_link (XDP via BPF_LINK_CREATE, tc via TCX on
//! Linux ≥ 6.6), owned by the [`Ebpf`] inside [`Observer`]. Links detach when
//! their file descriptor closes, so the kernel cleans up even if pmtu is
//! killed with SIGKILL; [`Observer::detach_all`] does it explicitly (with
//! errors reported) on every orderly exit, and `Drop` covers the rest. No
//! clsact qdisc is ever added, so none can be left behind.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    util::KernelVersion,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode, tc::SchedClassifierLinkId,
        xdp::XdpLinkId,
    },
};

use pmtu_common::{
    flow::ObserverConfig,
    policy::{ClampPolicy, counters as clamp_counters},
};

use crate::counters::Counters;

/// The eBPF object built by build.rs, embedded so `pmtu` is a single file.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pmtu"));

pub const PROG_XDP: &str = "pmtu_observe_xdp";
pub const PROG_TC_INGRESS: &str = "pmtu_observe_tc_ingress";
pub const PROG_TC_EGRESS: &str = "pmtu_observe_tc_egress";
pub const PROG_CLAMP_INGRESS: &str = "pmtu_clamp_tc_ingress";
pub const PROG_CLAMP_EGRESS: &str = "pmtu_clamp_tc_egress";
pub const MAP_CLAMP_POLICY: &str = "CLAMP_POLICY";
pub const MAP_CLAMP_COUNTERS: &str = "CLAMP_COUNTERS";
pub const MAP_OBSERVER_CONFIG: &str = "OBSERVER_CONFIG";

pub const PROG_NOOP_XDP: &str = "pmtu_noop_xdp";
pub const PROG_NOOP_TC: &str = "pmtu_noop_tc";

/// Which programs a command loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// PTB observer: XDP and tc ingress, tc egress (`pmtu trace`).
    Observer,
    /// MSS clamper: tc ingress and egress (`pmtu clamp`).
    Clamper,
    /// Everything, no-op floors included (`cargo xtask bench`).
    Bench,
}
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_COUNTERS: &str = "COUNTERS";

/// Where ingress packets are observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IngressHook {
    /// XDP: earliest, cheapest; driver mode, else generic mode.
    Xdp,
    /// tc ingress (TCX).
    Tc,
}

enum Link {
    Xdp(XdpLinkId),
    Tc(&'static str, SchedClassifierLinkId),
}

struct Attachment {
    iface: String,
    link: Link,
}

/// Loaded programs, their maps, and what they are attached to.
pub struct Programs {
    ebpf: Ebpf,
    attached: Vec<Attachment>,
}

/// The interface index for `name`, or an error naming it.
pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name).map_err(|_| anyhow!("invalid interface name {name:?}"))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("no such interface: {name} (see `ip link`)");
    }
    Ok(index)
}

/// The name of interface `index`, if it (still) exists.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The kernel driver behind `iface` (`ethtool -i`), if it says.
pub fn driver(iface: &str) -> Option<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
        counts: [u32; 5],
    }
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    let mut info = DrvInfo { cmd: ETHTOOL_GDRVINFO, driver: [0; 32], rest: [0; 160], counts: [0; 5] };
    // SAFETY: an all-zero ifreq is valid; the name fits (checked below).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if iface.len() >= ifr.ifr_name.len() {
        return None;
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: a datagram socket for the ioctl, closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is ours.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL with a valid ifreq pointing at a GDRVINFO buffer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc != 0 {
        return None;
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// True if `err` (anywhere in its chain) is a permission error from the kernel.
fn is_permission_error(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .map(|e| matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)))
            .unwrap_or(false)
            || cause.to_string().contains("Operation not permitted")
    })
}

/// Rewrites permission failures into the one actionable message.
pub fn explain(err: anyhow::Error) -> anyhow::Error {
    if is_permission_error(&err) {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        return err.context(format!(
            "permission denied: pmtu needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON); running as uid {euid}"
        ));
    }
    err
}

/// TCX (tc attachment through bpf_link, no qdisc) arrived in Linux 6.6; on
/// older kernels pmtu would have to add a clsact qdisc it might then leave
/// behind, so it refuses instead.
fn require_kernel() -> anyhow::Result<()> {
    let version = KernelVersion::current().context("reading the kernel version")?;
    if version < KernelVersion::new(6, 6, 0) {
        bail!("pmtu needs Linux 6.6 or newer (tc attachment through TCX); this kernel is {version}");
    }
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))
}

impl Programs {
    /// Loads the programs of `role` into the kernel (verifier included).
    /// `ring_bytes` resizes the event ring (a power-of-two multiple of the
    /// page size).
    pub fn load(role: Role, ring_bytes: Option<u32>) -> anyhow::Result<Self> {
        require_kernel()?;
        let mut loader = EbpfLoader::new();
        if let Some(bytes) = ring_bytes {
            loader.map_max_entries(MAP_EVENTS, bytes);
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading pmtu's eBPF object")
            .map_err(explain)?;
        let (xdp_programs, tc_programs): (&[&str], &[&str]) = match role {
            Role::Observer => (&[PROG_XDP], &[PROG_TC_INGRESS, PROG_TC_EGRESS]),
            Role::Clamper => (&[], &[PROG_CLAMP_INGRESS, PROG_CLAMP_EGRESS]),
            Role::Bench => (
                &[PROG_XDP, PROG_NOOP_XDP],
                &[PROG_TC_INGRESS, PROG_TC_EGRESS, PROG_CLAMP_INGRESS, PROG_CLAMP_EGRESS, PROG_NOOP_TC],
            ),
        };
        for &name in xdp_programs {
            let xdp: &mut Xdp = program(&mut ebpf, name)?.try_into()?;
            xdp.load()
                .with_context(|| format!("the kernel refused program {name}"))
                .map_err(explain)?;
        }
        for &name in tc_programs {
            let tc: &mut SchedClassifier = program(&mut ebpf, name)?.try_into()?;
            tc.load()
                .with_context(|| format!("the kernel refused program {name}"))
                .map_err(explain)?;
        }
        Ok(Self { ebpf, attached: Vec::new() })
    }

    /// The loaded `Ebpf`, e.g. for `TestRun` on its programs.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Attaches ingress (XDP or tc) and tc egress on `iface`. Returns one line
    /// per hook saying exactly how it was attached.
    pub fn attach(&mut self, iface: &str, ingress: IngressHook) -> anyhow::Result<Vec<String>> {
        ifindex(iface)?;
        let mut said = Vec::new();
        match ingress {
            IngressHook::Xdp => match self.attach_xdp(iface) {
                Ok(line) => said.push(line),
                Err(err) => {
                    said.push(format!(
                        "{iface}: XDP unavailable ({err:#}); observing ingress with tc instead"
                    ));
                    self.attach_tc(iface, PROG_TC_INGRESS, TcAttachType::Ingress)?;
                    said.push(format!("{iface}: tc ingress (TCX)"));
                }
            },
            IngressHook::Tc => {
                self.attach_tc(iface, PROG_TC_INGRESS, TcAttachType::Ingress)?;
                said.push(format!("{iface}: tc ingress (TCX)"));
            }
        }
        self.attach_tc(iface, PROG_TC_EGRESS, TcAttachType::Egress)?;
        said.push(format!("{iface}: tc egress (TCX)"));
        Ok(said)
    }

    /// Sets `policy` for `iface` and attaches the clamper to both of its
    /// directions.
    pub fn attach_clamper(&mut self, iface: &str, policy: ClampPolicy) -> anyhow::Result<()> {
        self.set_clamp_policy(ifindex(iface)?, policy)
            .with_context(|| format!("writing the clamp policy for {iface}"))?;
        self.attach_tc(iface, PROG_CLAMP_INGRESS, TcAttachType::Ingress)?;
        self.attach_tc(iface, PROG_CLAMP_EGRESS, TcAttachType::Egress)?;
        Ok(())
    }

    /// Sets the observer's flow timeout and rate limits.
    pub fn set_observer_config(&mut self, config: ObserverConfig) -> anyhow::Result<()> {
        let map = self.ebpf.map_mut(MAP_OBSERVER_CONFIG).context("OBSERVER_CONFIG map missing")?;
        let mut array: Array<&mut MapData, ObserverConfig> = Array::try_from(map)?;
        array.set(0, config, 0).context("writing the observer configuration")?;
        Ok(())
    }

    /// Sets the clamp policy for packets on interface `index`.
    pub fn set_clamp_policy(&mut self, index: u32, policy: ClampPolicy) -> anyhow::Result<()> {
        let map = self.ebpf.map_mut(MAP_CLAMP_POLICY).context("CLAMP_POLICY map missing")?;
        let mut policies: HashMap<&mut MapData, u32, ClampPolicy> = HashMap::try_from(map)?;
        policies.insert(index, policy, 0)?;
        Ok(())
    }

    /// The clamper's counters for one interface slot.
    pub fn clamp_counters(&self, slot: u32) -> anyhow::Result<[u64; clamp_counters::COUNT as usize]> {
        let map = self.ebpf.map(MAP_CLAMP_COUNTERS).context("CLAMP_COUNTERS map missing")?;
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let mut out = [0u64; clamp_counters::COUNT as usize];
        for (i, total) in out.iter_mut().enumerate() {
            let index = slot * clamp_counters::COUNT + i as u32;
            *total = array
                .get(&index, 0)
                .with_context(|| format!("reading clamp counter {}", clamp_counters::NAMES[i]))?
                .iter()
                .sum();
        }
        Ok(out)
    }

    fn attach_xdp(&mut self, iface: &str) -> anyhow::Result<String> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROG_XDP)
            .context("XDP program missing")?
            .try_into()?;
        // On veth, any XDP program moves received packets to veth's XDP path,
        // without the GRO/GSO aggregation forwarded traffic otherwise keeps:
        // throughput drops by ~80% (BENCHMARKS.md). Say so; --hook tc avoids it.
        let hint = if driver(iface).as_deref() == Some("veth") {
            " (veth: XDP costs forwarded throughput dearly here, see BENCHMARKS.md; --hook tc does not)"
        } else {
            ""
        };
        let (id, line) = match prog.attach(iface, XdpMode::Driver) {
            Ok(id) => (id, format!("{iface}: XDP ingress, driver mode{hint}")),
            Err(driver_err) => {
                let id = prog.attach(iface, XdpMode::Skb).map_err(|skb_err| {
                    explain(anyhow!(skb_err).context(format!(
                        "driver mode failed too ({driver_err}); is another XDP program attached? `ip link show {iface}`"
                    )))
                })?;
                (
                    id,
                    format!("{iface}: XDP ingress, generic mode (driver mode refused: {driver_err})"),
                )
            }
        };
        self.attached.push(Attachment { iface: iface.to_string(), link: Link::Xdp(id) });
        Ok(line)
    }

    fn attach_tc(
        &mut self,
        iface: &str,
        name: &'static str,
        kind: TcAttachType,
    ) -> anyhow::Result<()> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        let id = prog
            .attach(iface, kind)
            .map_err(|e: ProgramError| explain(anyhow!(e)))
            .with_context(|| format!("attaching {name} to {iface}"))?;
        self.attached.push(Attachment { iface: iface.to_string(), link: Link::Tc(name, id) });
        Ok(())
    }

    /// Detaches everything, newest first; reports the first failure after
    /// trying them all.
    pub fn detach_all(&mut self) -> anyhow::Result<()> {
        let mut first_err = None;
        while let Some(Attachment { iface, link }) = self.attached.pop() {
            let res = match link {
                Link::Xdp(id) => self
                    .ebpf
                    .program_mut(PROG_XDP)
                    .and_then(|p| <&mut Xdp>::try_from(p).ok())
                    .map(|p| p.detach(id)),
                Link::Tc(name, id) => self
                    .ebpf
                    .program_mut(name)
                    .and_then(|p| <&mut SchedClassifier>::try_from(p).ok())
                    .map(|p| p.detach(id)),
            };
            if let Some(Err(e)) = res
                && first_err.is_none()
            {
                first_err = Some(anyhow!(e).context(format!("detaching from {iface}")));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Takes the event ring out of the object (once).
    pub fn take_events(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map(MAP_EVENTS).context("EVENTS map missing or already taken")?;
        Ok(RingBuf::try_from(map)?)
    }

    pub fn counters(&self) -> anyhow::Result<Counters> {
        let map = self.ebpf.map(MAP_COUNTERS).context("COUNTERS map missing")?;
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Counters::read(&array)
    }
}
