//! Load, attach and detach: the lifecycle of pmtu's programs.
//!
//! Every attachment is a bpf_link (XDP via BPF_LINK_CREATE, tc via TCX on
//! Linux ≥ 6.6), owned by the [`Ebpf`] inside [`Programs`]. Links detach when
//! their file descriptor closes, so the kernel cleans up even if pmtu is
//! killed with SIGKILL; [`Programs::detach_all`] does it explicitly (with
//! errors reported) on every orderly exit, and `Drop` covers the rest. No
//! clsact qdisc is ever added, so none can be left behind.
//!
//! A link whose device is deleted is released by the kernel (the device takes
//! its TCX and XDP entries with it); the link's file descriptor stays valid
//! and closing it is all a detach then does, so detaching from a vanished
//! interface cannot fail.

use std::{
    collections::BTreeMap,
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf},
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        tc::{SchedClassifierLinkId, TcAttachOptions},
        xdp::XdpLinkId,
    },
    util::KernelVersion,
};

use pmtu_common::{
    flow::ObserverConfig,
    policy::{ClampPolicy, counters as clamp_counters},
};

use crate::{counters::Counters, iface::LinkKind};

/// The eBPF object built by build.rs, embedded so `pmtu` is a single file.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pmtu"));

pub const PROG_XDP: &str = "pmtu_observe_xdp";
pub const PROG_TC_INGRESS: &str = "pmtu_observe_tc_ingress";
pub const PROG_TC_EGRESS: &str = "pmtu_observe_tc_egress";
pub const PROG_CLAMP_INGRESS: &str = "pmtu_clamp_tc_ingress";
pub const PROG_CLAMP_EGRESS: &str = "pmtu_clamp_tc_egress";
/// The same programs for L3 devices (tun, WireGuard, PPP, IP tunnels), whose
/// packets start at the IP header: no Ethernet header to skip.
pub const PROG_TC_INGRESS_L3: &str = "pmtu_observe_tc_ingress_l3";
pub const PROG_TC_EGRESS_L3: &str = "pmtu_observe_tc_egress_l3";
pub const PROG_CLAMP_INGRESS_L3: &str = "pmtu_clamp_tc_ingress_l3";
pub const PROG_CLAMP_EGRESS_L3: &str = "pmtu_clamp_tc_egress_l3";
pub const MAP_CLAMP_POLICY: &str = "CLAMP_POLICY";
pub const MAP_CLAMP_COUNTERS: &str = "CLAMP_COUNTERS";
pub const MAP_OBSERVER_CONFIG: &str = "OBSERVER_CONFIG";
pub const MAP_OBSERVED: &str = "OBSERVED";
pub const MAP_LOCAL_ADDRS: &str = "LOCAL_ADDRS";

pub const PROG_NOOP_XDP: &str = "pmtu_noop_xdp";
pub const PROG_NOOP_TC: &str = "pmtu_noop_tc";
/// Returns TC_ACT_OK, which ends a TCX chain: the tests put it in front of
/// pmtu's hooks to show pmtu goes first. Never attached by pmtu itself.
pub const PROG_PASS_TC: &str = "pmtu_pass_tc";

/// Locked memory of every BPF map this process holds, in bytes (the
/// `memlock:` lines of /proc/self/fdinfo): what a role costs the kernel.
pub fn maps_memlock_bytes() -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fdinfo").context("reading /proc/self/fdinfo")? {
        let path = entry.context("reading /proc/self/fdinfo")?.path();
        // An fd closed meanwhile (the read_dir's own) is not an error.
        let Ok(info) = std::fs::read_to_string(&path) else { continue };
        if !info.contains("map_type:") {
            continue;
        }
        if let Some(v) = info.lines().find_map(|l| l.strip_prefix("memlock:")) {
            total += v.trim().parse::<u64>().with_context(|| format!("memlock in {}", path.display()))?;
        }
    }
    Ok(total)
}

/// Which programs a command loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// PTB observer: XDP and tc ingress, tc egress, both framings (`pmtu trace`).
    Observer,
    /// MSS clamper: tc ingress and egress, both framings (`pmtu clamp`).
    Clamper,
    /// Everything, no-op floors and the test-only pass program included
    /// (`cargo xtask bench`, the tests).
    Bench,
}

impl Role {
    /// Maps this role's programs never use, with the smallest size each
    /// may have (a ring buffer is at least one page).
    fn unused_maps(self) -> &'static [(&'static str, u32)] {
        match self {
            Role::Observer => &[("CLAMP_POLICY", 1), ("CLAMP_COUNTERS", 1)],
            Role::Clamper => &[
                (MAP_EVENTS, 4096),
                ("FLOWS", 1),
                ("REPORTER_BUCKETS", 1),
                (MAP_OBSERVED, 1),
                (MAP_LOCAL_ADDRS, 1),
            ],
            Role::Bench => &[],
        }
    }

    /// The XDP and the tc programs of this role.
    fn programs(self) -> (&'static [&'static str], &'static [&'static str]) {
        const OBSERVER_TC: &[&str] = &[PROG_TC_INGRESS, PROG_TC_EGRESS, PROG_TC_INGRESS_L3, PROG_TC_EGRESS_L3];
        const CLAMPER_TC: &[&str] = &[PROG_CLAMP_INGRESS, PROG_CLAMP_EGRESS, PROG_CLAMP_INGRESS_L3, PROG_CLAMP_EGRESS_L3];
        match self {
            Role::Observer => (&[PROG_XDP], OBSERVER_TC),
            Role::Clamper => (&[], CLAMPER_TC),
            Role::Bench => (
                &[PROG_XDP, PROG_NOOP_XDP],
                &[
                    PROG_TC_INGRESS,
                    PROG_TC_EGRESS,
                    PROG_TC_INGRESS_L3,
                    PROG_TC_EGRESS_L3,
                    PROG_CLAMP_INGRESS,
                    PROG_CLAMP_EGRESS,
                    PROG_CLAMP_INGRESS_L3,
                    PROG_CLAMP_EGRESS_L3,
                    PROG_NOOP_TC,
                    PROG_PASS_TC,
                ],
            ),
        }
    }
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

/// The clamper's and the observer's tc programs for each framing.
fn clamp_programs(kind: LinkKind) -> (&'static str, &'static str) {
    match kind {
        LinkKind::Ethernet => (PROG_CLAMP_INGRESS, PROG_CLAMP_EGRESS),
        LinkKind::L3 => (PROG_CLAMP_INGRESS_L3, PROG_CLAMP_EGRESS_L3),
    }
}

fn observe_programs(kind: LinkKind) -> (&'static str, &'static str) {
    match kind {
        LinkKind::Ethernet => (PROG_TC_INGRESS, PROG_TC_EGRESS),
        LinkKind::L3 => (PROG_TC_INGRESS_L3, PROG_TC_EGRESS_L3),
    }
}

/// "ingress" or "egress", for messages.
pub fn direction(kind: TcAttachType) -> &'static str {
    match kind {
        TcAttachType::Ingress => "ingress",
        TcAttachType::Egress => "egress",
        TcAttachType::Custom(_) => "custom parent",
    }
}

enum Link {
    Xdp(XdpLinkId),
    Tc(&'static str, SchedClassifierLinkId),
}

/// What pmtu attached to one interface.
struct IfaceLinks {
    name: String,
    links: Vec<Link>,
}

/// File descriptors kept free for everything but links (netlink sockets,
/// the ring, stdio, what the runtime opens): a link is one descriptor, and
/// running out in the middle of attaching would leave an interface half done.
const FD_RESERVE: u64 = 128;

/// Loaded programs, their maps, and what they are attached to, per ifindex.
pub struct Programs {
    ebpf: Ebpf,
    attached: BTreeMap<u32, IfaceLinks>,
    /// Links this process may hold at most (open-file limit less what is
    /// already open, less [`FD_RESERVE`]).
    link_budget: u64,
    links_held: u64,
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

/// True if `err` (anywhere in its chain) is the OS error `code`.
fn has_os_error(err: &anyhow::Error, code: i32) -> bool {
    // aya's syscall errors keep the io::Error as their source, so the chain
    // reaches it.
    err.chain()
        .any(|cause| cause.downcast_ref::<io::Error>().and_then(io::Error::raw_os_error) == Some(code))
}

/// Rewrites permission failures into the one actionable message, and the
/// other errors a user can act on into what to do.
pub fn explain(err: anyhow::Error) -> anyhow::Error {
    if has_os_error(&err, libc::EMFILE) {
        return err.context("too many open files: every attachment is one; raise the hard limit (`ulimit -Hn`, LimitNOFILE=)");
    }
    if is_permission_error(&err) {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid == 0 {
            // Root was refused: the verifier (EACCES for a program it
            // rejects, e.g. a combined stack over 512 bytes) or a lockdown
            // policy, not a missing privilege.
            return err.context(
                "the kernel refused although pmtu runs as root: a verifier rejection (its log is above) \
                 or a kernel lockdown / LSM policy",
            );
        }
        return err.context(format!(
            "permission denied: pmtu needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON); running as uid {euid}"
        ));
    }
    err
}


/// Raises the soft open-file limit to the hard one: each attachment is a
/// file descriptor (a bpf_link), and thousands of interfaces (a BRAS's ppp
/// sessions) need several thousand, far past the usual soft limit of 1024.
/// Returns the soft limit in force afterwards.
pub fn raise_open_file_limit() -> anyhow::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into `lim`, which is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error()).context("reading the open-file limit");
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads one valid rlimit; raising the soft limit up
        // to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error()).context("raising the open-file limit to its hard limit");
        }
        lim = raised;
    }
    Ok(lim.rlim_cur)
}

/// How many file descriptors this process has open now.
fn open_fds() -> anyhow::Result<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").context("listing /proc/self/fd")?;
    Ok(dir.count() as u64)
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

fn tc_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut SchedClassifier> {
    Ok(program(ebpf, name)?.try_into()?)
}

impl Programs {
    /// Loads the programs of `role` into the kernel (verifier included).
    /// `ring_bytes` resizes the event ring (a power-of-two multiple of the
    /// page size).
    pub fn load(role: Role, ring_bytes: Option<u32>) -> anyhow::Result<Self> {
        Self::load_with(role, ring_bytes, None)
    }

    /// [`Programs::load`], for tests: the tc programs read at most the
    /// first `linear_limit` bytes of a frame directly and the rest through
    /// bpf_skb_load_bytes, as if the skb's linear data ended there.
    pub fn load_with(role: Role, ring_bytes: Option<u32>, linear_limit: Option<u64>) -> anyhow::Result<Self> {
        require_kernel()?;
        let mut loader = EbpfLoader::new();
        // One object, maps sized per role: a role's programs never touch
        // the other role's maps, so those get the smallest size the kernel
        // allows instead of megabytes of locked memory (the observer's flow
        // LRU, reporter buckets and ring; the clamper's 4096 counter slots).
        for (map, entries) in role.unused_maps() {
            loader.map_max_entries(map, *entries);
        }
        if let Some(bytes) = ring_bytes {
            loader.map_max_entries(MAP_EVENTS, bytes);
        }
        if let Some(limit) = linear_limit.as_ref() {
            loader.override_global("PMTU_LINEAR_LIMIT", limit, true);
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading pmtu's eBPF object")
            .map_err(explain)?;
        let (xdp_programs, tc_programs) = role.programs();
        for &name in xdp_programs {
            let xdp: &mut Xdp = program(&mut ebpf, name)?.try_into()?;
            xdp.load()
                .with_context(|| format!("the kernel refused program {name}"))
                .map_err(explain)?;
        }
        for &name in tc_programs {
            tc_program(&mut ebpf, name)?
                .load()
                .with_context(|| format!("the kernel refused program {name}"))
                .map_err(explain)?;
        }
        let limit = raise_open_file_limit()?;
        let link_budget = limit.saturating_sub(open_fds()?).saturating_sub(FD_RESERVE);
        Ok(Self { ebpf, attached: BTreeMap::new(), link_budget, links_held: 0 })
    }

    /// The loaded `Ebpf`, e.g. for `TestRun` on its programs.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// How many more links (one per hook and interface) the open-file
    /// limit leaves room for.
    pub fn link_room(&self) -> u64 {
        self.link_budget.saturating_sub(self.links_held)
    }

    /// The interfaces (ifindex) pmtu is attached to.
    pub fn attached(&self) -> impl Iterator<Item = u32> + '_ {
        self.attached.keys().copied()
    }

    /// Attaches the observer to interface `index`, named `iface`: ingress
    /// at XDP or tc, and tc egress, first on each TCX hook. An L3 device
    /// has no Ethernet header, which pmtu's XDP program expects, so its
    /// ingress is always observed at tc. Returns one line per hook saying
    /// exactly how it was attached, and which other programs share it.
    pub fn attach_observer(
        &mut self,
        index: u32,
        iface: &str,
        kind: LinkKind,
        ingress: IngressHook,
    ) -> anyhow::Result<Vec<String>> {
        let result = self
            .try_attach_observer(index, iface, kind, ingress)
            .and_then(|said| self.set_observed(index, true).map(|()| said));
        self.undo_on_error(index, result)
    }

    fn try_attach_observer(
        &mut self,
        index: u32,
        iface: &str,
        kind: LinkKind,
        ingress: IngressHook,
    ) -> anyhow::Result<Vec<String>> {
        same_interface(index, iface)?;
        let (tc_ingress, tc_egress) = observe_programs(kind);
        let mut said = Vec::new();
        let tc_why = match (kind, ingress) {
            (LinkKind::L3, _) => Some("L3 device: no Ethernet header for XDP".to_string()),
            (LinkKind::Ethernet, IngressHook::Tc) => None,
            (LinkKind::Ethernet, IngressHook::Xdp) => match self.attach_xdp(index, iface) {
                Ok(line) => {
                    said.push(line);
                    None
                }
                Err(err) => Some(format!("XDP unavailable ({err:#}); observing ingress with tc instead")),
            },
        };
        if said.is_empty() {
            self.attach_tc(index, iface, tc_ingress, TcAttachType::Ingress)?;
            said.push(match tc_why {
                Some(why) => format!("{iface}: tc ingress (TCX; {why})"),
                None => format!("{iface}: tc ingress (TCX)"),
            });
            said.extend(self.hook_report(iface, tc_ingress, TcAttachType::Ingress));
        }
        self.attach_tc(index, iface, tc_egress, TcAttachType::Egress)?;
        said.push(format!("{iface}: tc egress (TCX)"));
        said.extend(self.hook_report(iface, tc_egress, TcAttachType::Egress));
        Ok(said)
    }

    /// Sets `policy` for interface `index`, named `iface`, and attaches the
    /// clamper to both of its directions, first on each TCX hook. Returns
    /// the lines saying which other programs share those hooks.
    pub fn attach_clamper(
        &mut self,
        index: u32,
        iface: &str,
        kind: LinkKind,
        policy: ClampPolicy,
    ) -> anyhow::Result<Vec<String>> {
        let result = match self.try_attach_clamper(index, iface, kind, policy) {
            Ok(said) => Ok(said),
            // Leave no policy for an interface pmtu is not attached to: its
            // ifindex may come back as another device's.
            Err(err) => match self.remove_clamp_policy(index) {
                Ok(()) => Err(err),
                Err(e) => Err(anyhow!("{err:#}; and removing its clamp policy failed: {e:#}")),
            },
        };
        self.undo_on_error(index, result)
    }

    fn try_attach_clamper(
        &mut self,
        index: u32,
        iface: &str,
        kind: LinkKind,
        policy: ClampPolicy,
    ) -> anyhow::Result<Vec<String>> {
        same_interface(index, iface)?;
        self.set_clamp_policy(index, policy)
            .with_context(|| format!("writing the clamp policy for {iface}"))?;
        let (ingress, egress) = clamp_programs(kind);
        let mut said = Vec::new();
        self.attach_tc(index, iface, ingress, TcAttachType::Ingress)?;
        said.extend(self.hook_report(iface, ingress, TcAttachType::Ingress));
        self.attach_tc(index, iface, egress, TcAttachType::Egress)?;
        said.extend(self.hook_report(iface, egress, TcAttachType::Egress));
        Ok(said)
    }

    /// After a failed attach, detaches whatever part of it succeeded, so an
    /// interface is either fully served or not at all.
    fn undo_on_error<T>(&mut self, index: u32, result: anyhow::Result<T>) -> anyhow::Result<T> {
        match result {
            Ok(v) => Ok(v),
            Err(err) => match self.detach_iface(index) {
                Ok(()) => Err(err),
                Err(undo) => Err(anyhow!("{err:#}; and undoing the partial attach failed: {undo:#}")),
            },
        }
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

    /// Takes the observer's LOCAL_ADDRS map out of the object (once), for
    /// [`crate::local_addrs::start`] to keep.
    pub fn take_local_addrs(&mut self) -> anyhow::Result<crate::local_addrs::LocalMap> {
        let map = self.ebpf.take_map(MAP_LOCAL_ADDRS).context("LOCAL_ADDRS map missing or already taken")?;
        Ok(HashMap::try_from(map)?)
    }

    /// Marks `addr` as one of this host's own (tests; the daemon keeps the
    /// map with [`crate::local_addrs::start`]).
    pub fn set_local_addr(&mut self, addr: std::net::IpAddr) -> anyhow::Result<()> {
        let map = self.ebpf.map_mut(MAP_LOCAL_ADDRS).context("LOCAL_ADDRS map missing")?;
        let mut set: HashMap<&mut MapData, [u8; 16], u8> = HashMap::try_from(map)?;
        set.insert(crate::local_addrs::key(addr), 1, 0).with_context(|| format!("recording local address {addr}"))?;
        Ok(())
    }

    /// Tells the observer whether interface `index` is observed: a PTB
    /// forwarded from an observed interface was reported where it came in,
    /// so tc egress does not report it again (one message, one event).
    pub fn set_observed(&mut self, index: u32, observed: bool) -> anyhow::Result<()> {
        let map = self.ebpf.map_mut(MAP_OBSERVED).context("OBSERVED map missing")?;
        let mut set: HashMap<&mut MapData, u32, u32> = HashMap::try_from(map)?;
        if observed {
            set.insert(index, 1, 0).with_context(|| format!("marking ifindex {index} observed"))?;
            return Ok(());
        }
        match set.remove(&index) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(anyhow!(e).context(format!("unmarking ifindex {index}"))),
        }
    }

    /// Removes the clamp policy of interface `index` (gone, or no longer
    /// clamped); one that is not there is no error.
    pub fn remove_clamp_policy(&mut self, index: u32) -> anyhow::Result<()> {
        let map = self.ebpf.map_mut(MAP_CLAMP_POLICY).context("CLAMP_POLICY map missing")?;
        let mut policies: HashMap<&mut MapData, u32, ClampPolicy> = HashMap::try_from(map)?;
        match policies.remove(&index) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(anyhow!(e).context(format!("removing the clamp policy of ifindex {index}"))),
        }
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

    /// Zeroes one interface slot's counters on every CPU, so the slot can
    /// serve another interface.
    pub fn zero_clamp_counters(&mut self, slot: u32) -> anyhow::Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!(e).context(format!("reading {what}")))?;
        let map = self.ebpf.map_mut(MAP_CLAMP_COUNTERS).context("CLAMP_COUNTERS map missing")?;
        let mut array: PerCpuArray<&mut MapData, u64> = PerCpuArray::try_from(map)?;
        for i in 0..clamp_counters::COUNT {
            let zeros = PerCpuValues::try_from(vec![0u64; cpus]).context("per-CPU zeros")?;
            array
                .set(slot * clamp_counters::COUNT + i, zeros, 0)
                .with_context(|| format!("zeroing clamp counter {} of slot {slot}", clamp_counters::NAMES[i as usize]))?;
        }
        Ok(())
    }

    fn attach_xdp(&mut self, index: u32, iface: &str) -> anyhow::Result<String> {
        let prog: &mut Xdp = program(&mut self.ebpf, PROG_XDP)?.try_into()?;
        // On veth, any XDP program moves received packets to veth's XDP path,
        // without the GRO/GSO aggregation forwarded traffic otherwise keeps:
        // throughput drops by ~80% (BENCHMARKS.md). Say so; --hook tc avoids it.
        let hint = if driver(iface).as_deref() == Some("veth") {
            " (veth: XDP costs forwarded throughput dearly here, see BENCHMARKS.md; the default tc hook does not)"
        } else {
            ""
        };
        let (id, line) = match prog.attach_to_if_index(index, XdpMode::Driver) {
            Ok(id) => (id, format!("{iface}: XDP ingress, driver mode{hint}")),
            Err(driver_err) => {
                let id = prog.attach_to_if_index(index, XdpMode::Skb).map_err(|skb_err| {
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
        self.record(index, iface, Link::Xdp(id));
        Ok(line)
    }

    /// Attaches tc program `name` to `iface` at `kind`, in front of every
    /// program already on that TCX hook: one that ends the chain (returns
    /// TC_ACT_OK or TC_ACT_SHOT, as many do) would otherwise keep packets
    /// from ever reaching pmtu.
    fn attach_tc(
        &mut self,
        index: u32,
        iface: &str,
        name: &'static str,
        kind: TcAttachType,
    ) -> anyhow::Result<()> {
        let prog = tc_program(&mut self.ebpf, name)?;
        let id = prog
            .attach_with_options(iface, kind, TcAttachOptions::TcxOrder(LinkOrder::first()))
            .map_err(|e: ProgramError| {
                let err = anyhow!(e);
                if has_os_error(&err, libc::EEXIST) {
                    // The kernel refuses a program twice on one hook.
                    anyhow!("{name} is already attached to {iface}'s tc {}", direction(kind))
                } else {
                    explain(err)
                }
            })
            .with_context(|| format!("attaching {name} to {iface} (tc {})", direction(kind)))?;
        self.record(index, iface, Link::Tc(name, id));
        Ok(())
    }

    fn record(&mut self, index: u32, iface: &str, link: Link) {
        self.attached
            .entry(index)
            .or_insert_with(|| IfaceLinks { name: iface.to_string(), links: Vec::new() })
            .links
            .push(link);
        self.links_held += 1;
    }

    /// Which other programs share the TCX hook `kind` of `iface` with pmtu's
    /// `name`, in the kernel's order; `None` when pmtu is alone there.
    fn hook_report(&mut self, iface: &str, name: &str, kind: TcAttachType) -> Option<String> {
        let ours = tc_program(&mut self.ebpf, name).and_then(|p| Ok(p.info()?.id()));
        let listed = SchedClassifier::query_tcx(iface, kind);
        let dir = direction(kind);
        let (ours, programs) = match (ours, listed) {
            (Ok(ours), Ok((_, programs))) => (ours, programs),
            (Err(e), _) => return Some(format!("{iface}: tc {dir}: cannot tell which programs share this hook ({e:#})")),
            (_, Err(e)) => return Some(format!("{iface}: tc {dir}: cannot list the programs on this hook ({e})")),
        };
        let others: Vec<String> = programs
            .iter()
            .filter(|p| p.id() != ours)
            .map(|p| format!("{} (id {})", p.name_as_str().filter(|n| !n.is_empty()).unwrap_or("unnamed"), p.id()))
            .collect();
        if others.is_empty() {
            return None;
        }
        let place = match programs.iter().position(|p| p.id() == ours) {
            Some(0) => "pmtu first".to_string(),
            // Another program asked for the front after pmtu did.
            Some(n) => format!("pmtu number {} of {}", n + 1, programs.len()),
            None => "pmtu not listed".to_string(),
        };
        Some(format!("{iface}: tc {dir}: {place}; also on this hook: {}", others.join(", ")))
    }

    /// Detaches everything pmtu attached to interface `index`. A device
    /// that is gone took its hooks with it: closing the links is then all
    /// there is to do, and cannot fail.
    pub fn detach_iface(&mut self, index: u32) -> anyhow::Result<()> {
        let Some(IfaceLinks { name, links }) = self.attached.remove(&index) else {
            return Ok(());
        };
        // An observer forgets the interface (no-op for a clamper's maps).
        let mut first_err = self.set_observed(index, false).err();
        for link in links.into_iter().rev() {
            self.links_held = self.links_held.saturating_sub(1);
            if let Err(e) = self.detach_link(link)
                && first_err.is_none()
            {
                first_err = Some(e.context(format!("detaching from {name}")));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn detach_link(&mut self, link: Link) -> anyhow::Result<()> {
        match link {
            Link::Xdp(id) => {
                let prog: &mut Xdp = program(&mut self.ebpf, PROG_XDP)?.try_into()?;
                prog.detach(id)?;
            }
            Link::Tc(name, id) => tc_program(&mut self.ebpf, name)?.detach(id)?,
        }
        Ok(())
    }

    /// Detaches everything; reports the first failure after trying them all.
    pub fn detach_all(&mut self) -> anyhow::Result<()> {
        let mut first_err = None;
        let indexes: Vec<u32> = self.attached.keys().copied().collect();
        for index in indexes {
            if let Err(e) = self.detach_iface(index)
                && first_err.is_none()
            {
                first_err = Some(e);
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

/// Fails unless `iface` still names interface `index`: aya attaches tc by
/// name, and a device deleted and re-created under the same name since the
/// caller learnt its index would get programs whose policy is keyed by the
/// old index. The link events that follow put it right.
fn same_interface(index: u32, iface: &str) -> anyhow::Result<()> {
    let now = ifindex(iface)?;
    if now != index {
        bail!("{iface} is now ifindex {now}, not {index} (re-created meanwhile)");
    }
    Ok(())
}
