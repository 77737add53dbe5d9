//! Load, attach and detach: the lifecycle of pmtu's programs.
//!
//! Every attachment is a bpf_link (XDP via BPF_LINK_CREATE, tc via TCX on
//! Linux ≥ 6.6), held by [`Programs`] as a descriptor. An unpinned link
//! detaches when its descriptor closes, so the kernel cleans up even if a
//! foreground `pmtu trace`/`clamp` is killed with SIGKILL;
//! [`Programs::detach_all`] does it explicitly (with errors reported) on
//! every orderly exit, and `Drop` covers the rest. The daemon (`pmtu run`)
//! pins its maps, programs and links instead (see [`crate::pins`]): they
//! outlive it, and the next daemon adopts them with BPF_LINK_UPDATE, which
//! swaps the program under a link atomically (no moment without a clamp).
//! No clsact qdisc is ever added, so none can be left behind.
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
    path::PathBuf,
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf},
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
    },
};

use pmtu_common::{
    flow::ObserverConfig,
    policy::{ClampPolicy, counters as clamp_counters},
};

use crate::{
    counters::Counters,
    iface::LinkKind,
    pins::{self, AbiDir},
};

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
/// Non-zero: events carry their packet's first bytes (`pmtu trace --pcap`).
pub const MAP_CAPTURE: &str = "CAPTURE";
pub const MAP_OBSERVED: &str = "OBSERVED";
pub const MAP_LOCAL_ADDRS: &str = "LOCAL_ADDRS";
/// PMTUs learned from PTBs, for learned clamping (learn.rs). Not pinned:
/// each pmtu starts learning afresh, and entries carry their own expiry,
/// which the clamper checks, so none outlives its time when pmtu is gone.
pub const MAP_LEARNED: &str = "LEARNED";
pub const MAP_LEARN_CONFIG: &str = "LEARN_CONFIG";

/// The clamper's LEARNED map, as the learner holds it.
pub type LearnedHandle = HashMap<MapData, pmtu_common::learned::LearnedKey, pmtu_common::learned::Learned>;

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
    /// Both, with every map at full size (`pmtu run`, and `trace`/`clamp`
    /// planned together): a reload may start tracing or clamping anywhere.
    Daemon,
    /// Everything, no-op floors and the test-only pass program included
    /// (`cargo xtask bench`, the tests).
    Bench,
}

impl Role {
    /// Maps this role's programs never use, with the smallest size each
    /// may have (a ring buffer is at least one page).
    fn unused_maps(self) -> &'static [(&'static str, u32)] {
        match self {
            Role::Observer => &[("CLAMP_POLICY", 1), ("CLAMP_COUNTERS", 1), (MAP_LEARNED, 1)],
            Role::Clamper => &[
                (MAP_EVENTS, 4096),
                ("FLOWS", 1),
                ("REPORTER_BUCKETS", 1),
                (MAP_OBSERVED, 1),
                (MAP_LOCAL_ADDRS, 1),
            ],
            Role::Daemon | Role::Bench => &[],
        }
    }

    /// The XDP and the tc programs of this role.
    fn programs(self) -> (Vec<&'static str>, Vec<&'static str>) {
        const OBSERVER_TC: &[&str] = &[PROG_TC_INGRESS, PROG_TC_EGRESS, PROG_TC_INGRESS_L3, PROG_TC_EGRESS_L3];
        const CLAMPER_TC: &[&str] = &[PROG_CLAMP_INGRESS, PROG_CLAMP_EGRESS, PROG_CLAMP_INGRESS_L3, PROG_CLAMP_EGRESS_L3];
        match self {
            Role::Observer => (vec![PROG_XDP], OBSERVER_TC.to_vec()),
            Role::Clamper => (vec![], CLAMPER_TC.to_vec()),
            Role::Daemon => (vec![PROG_XDP], [OBSERVER_TC, CLAMPER_TC].concat()),
            Role::Bench => (
                vec![PROG_XDP, PROG_NOOP_XDP],
                [OBSERVER_TC, CLAMPER_TC, &[PROG_NOOP_TC, PROG_PASS_TC]].concat(),
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

/// BPF_FIB_LOOKUP_SKIP_NEIGH (include/uapi/linux/bpf.h).
const fn aya_fib_skip_neigh() -> u32 {
    1 << 2
}

/// What a clamp policy does, for messages.
fn describe_policy(policy: &ClampPolicy) -> String {
    crate::clamp::ClampMode::from_policy(policy).describe()
}

/// "ingress" or "egress", for messages.
pub fn direction(kind: TcAttachType) -> &'static str {
    match kind {
        TcAttachType::Ingress => "ingress",
        TcAttachType::Egress => "egress",
        TcAttachType::Custom(_) => "custom parent",
    }
}

/// Which of pmtu's jobs a link does, so a reload can stop one and keep the
/// other on the same interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    Trace,
    Clamp,
}

/// One attachment: a bpf_link held by its descriptor, and its pin if the
/// daemon pinned it.
struct Held {
    program: &'static str,
    job: Job,
    link: HeldLink,
    pin: Option<PathBuf>,
    /// "TCX" or "XDP driver"/"XDP generic", and whether it was adopted from
    /// a previous daemon.
    mechanism: String,
    adopted: bool,
}

/// The kernel object behind an attachment.
enum HeldLink {
    /// A bpf_link (TCX, XDP): closing the last descriptor of an unpinned
    /// one detaches it. Held for its descriptor, never read.
    Fd(#[allow(dead_code)] FdLink),
    /// A legacy cls_bpf filter (no TCX) and its record under /run/pmtu;
    /// dropping the link deletes the filter over netlink.
    Legacy(SchedClassifierLink, crate::legacy_tc::Record),
}

/// What pmtu attached to one interface.
struct IfaceLinks {
    name: String,
    links: Vec<Held>,
}

/// One attachment as `pmtu status` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AttachmentInfo {
    pub program: &'static str,
    pub job: &'static str,
    pub mechanism: String,
    pub adopted: bool,
    pub pinned: bool,
}

/// Persistent maps: what a restarted daemon must find as it was (counters,
/// policies, flows, the ring with what was submitted meanwhile). The
/// per-CPU scratch maps are private to each program instance.
const PINNED_MAPS: &[&str] = &[
    MAP_EVENTS,
    MAP_COUNTERS,
    MAP_OBSERVER_CONFIG,
    "FLOWS",
    "REPORTER_BUCKETS",
    "GLOBAL_BUCKET",
    MAP_OBSERVED,
    MAP_LOCAL_ADDRS,
    MAP_CLAMP_POLICY,
    MAP_CLAMP_COUNTERS,
    MAP_CAPTURE,
];

/// The daemon's pins: its own ABI directory, and others found there (from a
/// pmtu built from another eBPF object), whose links it takes over.
pub struct PinState {
    pub root: pins::PinRoot,
    pub ours: AbiDir,
    pub stamp: u64,
    pub others: Vec<AbiDir>,
}

/// File descriptors kept free for everything but links (netlink sockets,
/// the ring, stdio, what the runtime opens): a link is one descriptor, and
/// running out in the middle of attaching would leave an interface half done.
const FD_RESERVE: u64 = 128;

/// Loaded programs, their maps, and what they are attached to, per ifindex.
pub struct Programs {
    ebpf: Ebpf,
    /// Set for the daemon: pin and adopt.
    pins: Option<PinState>,
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

/// Every map at the smallest size the kernel allows: for a load that only
/// probes (features.rs).
pub const SMALLEST_MAPS: &[(&str, u32)] = &[
    (MAP_EVENTS, 4096),
    ("FLOWS", 1),
    ("REPORTER_BUCKETS", 1),
    (MAP_OBSERVED, 1),
    (MAP_LOCAL_ADDRS, 1),
    (MAP_CLAMP_POLICY, 1),
    (MAP_CLAMP_COUNTERS, 1),
    (MAP_LEARNED, 1),
];

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
        Self::load_inner(role, ring_bytes, linear_limit, None)
    }

    /// [`Programs::load`] for the daemon: maps pinned under (and reused
    /// from) `pin_path`'s ABI directory for this object, programs pinned
    /// there, links pinned as they are attached or adopted.
    pub fn load_pinned(role: Role, ring_bytes: Option<u32>, pin_path: &std::path::Path) -> anyhow::Result<Self> {
        pins::ensure_bpffs(pin_path)?;
        let root = pins::PinRoot::new(pin_path);
        // The ring's size is part of the stamp: a pinned ring of another
        // size is replaced, not reused.
        let stamp = pins::stamp(EBPF_OBJECT) ^ u64::from(ring_bytes.unwrap_or(0)).rotate_left(32);
        let ours = root.abi(stamp);
        let others = root.abi_dirs()?.into_iter().filter(|d| d.root != ours.root).collect();
        ours.create()?;
        Self::load_inner(role, ring_bytes, None, Some(PinState { root, ours, stamp, others }))
    }

    fn load_inner(
        role: Role,
        ring_bytes: Option<u32>,
        linear_limit: Option<u64>,
        pins: Option<PinState>,
    ) -> anyhow::Result<Self> {
        let features = crate::features::get()?;
        if !features.tcx {
            // Filters a killed pmtu left (netlink filters outlive processes).
            for line in crate::legacy_tc::sweep(false)? {
                eprintln!("pmtu: stale: {line}");
            }
        }
        let mut loader = EbpfLoader::new();
        // Load-time constants: the verifier prunes what this kernel cannot run.
        let skip_neigh: u32 = if features.fib_skip_neigh { aya_fib_skip_neigh() } else { 0 };
        loader.override_global("PMTU_FIB_SKIP_NEIGH", &skip_neigh, true);
        if let Some(p) = pins.as_ref() {
            for map in PINNED_MAPS {
                loader.map_pin_path(map, p.ours.map(map));
            }
        }
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
        for &name in &xdp_programs {
            let xdp: &mut Xdp = program(&mut ebpf, name)?.try_into()?;
            xdp.load()
                .with_context(|| format!("the kernel refused program {name}"))
                .map_err(explain)?;
        }
        for &name in &tc_programs {
            tc_program(&mut ebpf, name)?
                .load()
                .with_context(|| format!("the kernel refused program {name}"))
                .map_err(explain)?;
        }
        if let Some(p) = pins.as_ref() {
            // `bpftool prog show pinned DIR/progs/NAME` finds them. A pin
            // left by the previous daemon names its instance: replace it
            // (that instance lives on while a link still runs it).
            for &name in xdp_programs.iter().chain(&tc_programs) {
                let path = p.ours.prog(name);
                pins::unpin(&path)?;
                program(&mut ebpf, name)?
                    .pin(&path)
                    .with_context(|| format!("pinning program {name} at {}", path.display()))?;
            }
        }
        let limit = raise_open_file_limit()?;
        let link_budget = limit.saturating_sub(open_fds()?).saturating_sub(FD_RESERVE);
        Ok(Self { ebpf, pins, attached: BTreeMap::new(), link_budget, links_held: 0 })
    }

    /// The daemon's pins, if any.
    pub fn pin_state(&self) -> Option<&PinState> {
        self.pins.as_ref()
    }

    /// What is attached to interface `index`, one entry per link.
    pub fn attachments(&self, index: u32) -> Vec<AttachmentInfo> {
        self.attached
            .get(&index)
            .map(|i| {
                i.links
                    .iter()
                    .map(|h| AttachmentInfo {
                        program: h.program,
                        job: match h.job {
                            Job::Trace => "trace",
                            Job::Clamp => "clamp",
                        },
                        mechanism: h.mechanism.clone(),
                        adopted: h.adopted,
                        pinned: h.pin.is_some(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Lets go of every link, leaving the pinned ones attached (the daemon's
    /// `on-exit = "keep"`); unpinned ones detach as their descriptors close.
    pub fn keep_pinned(&mut self) {
        for (_, links) in std::mem::take(&mut self.attached) {
            for held in links.links {
                if let HeldLink::Legacy(link, _) = held.link {
                    // A netlink filter has no descriptor to keep it: not
                    // dropping the link leaves it attached, and its record
                    // (persistent, the daemon's) tells the next daemon.
                    std::mem::forget(link);
                }
            }
        }
        self.links_held = 0;
    }

    /// After start: removes the pins of links no interface adopted (gone, or
    /// no longer in the plan) and every other ABI directory (its links were
    /// adopted or are stale). Returns what it did, one line each.
    pub fn drop_stale_pins(&mut self) -> anyhow::Result<Vec<String>> {
        let Some(p) = self.pins.as_mut() else { return Ok(Vec::new()) };
        let mut said = Vec::new();
        let held: Vec<PathBuf> =
            self.attached.values().flat_map(|i| i.links.iter().filter_map(|h| h.pin.clone())).collect();
        for (index, prog, path) in p.ours.list_links()? {
            if !held.contains(&path) {
                pins::unpin(&path)?;
                said.push(format!("removed a stale pinned link: {prog} on ifindex {index} (not in the plan, or gone)"));
            }
        }
        for dir in std::mem::take(&mut p.others) {
            let removed = pins::remove_abi_dir(&dir)?;
            said.push(format!(
                "removed {} (another pmtu build's pins: {} link(s), {} program(s), {} map(s))",
                dir.root.display(),
                removed.links.len(),
                removed.programs,
                removed.maps
            ));
        }
        Ok(said)
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
        self.undo_on_error(index, Job::Trace, result)
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
            let how = self.attach_tc(index, iface, tc_ingress, TcAttachType::Ingress, Job::Trace)?;
            said.push(match tc_why {
                Some(why) => format!("{iface}: tc ingress ({how}; {why})"),
                None => format!("{iface}: tc ingress ({how})"),
            });
            said.extend(self.hook_report(iface, tc_ingress, TcAttachType::Ingress));
        }
        let how = self.attach_tc(index, iface, tc_egress, TcAttachType::Egress, Job::Trace)?;
        said.push(format!("{iface}: tc egress ({how})"));
        said.extend(self.hook_report(iface, tc_egress, TcAttachType::Egress));
        Ok(said)
    }

    /// Sets `policy` for interface `index`, named `iface`, and attaches the
    /// clamper to both of its directions, first on each TCX hook. Returns
    /// how, and which other programs share those hooks.
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
        self.undo_on_error(index, Job::Clamp, result)
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
        let how_in = self.attach_tc(index, iface, ingress, TcAttachType::Ingress, Job::Clamp)?;
        said.extend(self.hook_report(iface, ingress, TcAttachType::Ingress));
        let how_out = self.attach_tc(index, iface, egress, TcAttachType::Egress, Job::Clamp)?;
        said.extend(self.hook_report(iface, egress, TcAttachType::Egress));
        let framing = match kind {
            LinkKind::Ethernet => "",
            LinkKind::L3 => ", L3 device",
        };
        let how = if how_in == how_out { how_in } else { format!("{how_in} / {how_out}") };
        let first = if how.starts_with("TCX") { ", first" } else { "" };
        said.insert(0, format!("{iface}: clamping SYN and SYN-ACK MSS {} (tc ingress and egress, {how}{first}{framing})", describe_policy(&policy)));
        Ok(said)
    }

    /// After a failed attach, detaches whatever part of `job` succeeded, so
    /// a job on an interface is either fully done or not at all.
    fn undo_on_error<T>(&mut self, index: u32, job: Job, result: anyhow::Result<T>) -> anyhow::Result<T> {
        match result {
            Ok(v) => Ok(v),
            Err(err) => match self.detach_job(index, job) {
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

    /// Every clamp policy in the map, by ifindex: what a previous daemon left
    /// (its counter slots hold counts to carry on from).
    pub fn clamp_policies(&self) -> anyhow::Result<Vec<(u32, ClampPolicy)>> {
        let map = self.ebpf.map(MAP_CLAMP_POLICY).context("CLAMP_POLICY map missing")?;
        let policies: HashMap<&MapData, u32, ClampPolicy> = HashMap::try_from(map)?;
        let mut out = Vec::new();
        for entry in policies.iter() {
            out.push(entry.context("reading the clamp policies")?);
        }
        Ok(out)
    }

    /// Whether the observer's events carry the first bytes of their packet
    /// (`event::CapturedPtb`, 376 bytes of ring a record instead of 112).
    pub fn set_capture(&mut self, on: bool) -> anyhow::Result<()> {
        let map = self.ebpf.map_mut(MAP_CAPTURE).context("CAPTURE map missing")?;
        let mut array: Array<&mut MapData, u32> = Array::try_from(map)?;
        array.set(0, u32::from(on), 0).context("switching packet capture")?;
        Ok(())
    }

    /// Sets the clamp policy for packets on interface `index`.
    pub fn set_clamp_policy(&mut self, index: u32, policy: ClampPolicy) -> anyhow::Result<()> {
        let map = self.ebpf.map_mut(MAP_CLAMP_POLICY).context("CLAMP_POLICY map missing")?;
        let mut policies: HashMap<&mut MapData, u32, ClampPolicy> = HashMap::try_from(map)?;
        policies.insert(index, policy, 0)?;
        Ok(())
    }

    /// Takes the clamper's LEARNED map out of the object (once), for the
    /// learner (learn.rs), after writing how its keys are made.
    pub fn take_learned(&mut self, config: pmtu_common::learned::LearnConfig) -> anyhow::Result<LearnedHandle> {
        let map = self.ebpf.map_mut(MAP_LEARN_CONFIG).context("LEARN_CONFIG map missing")?;
        let mut array: Array<&mut MapData, pmtu_common::learned::LearnConfig> = Array::try_from(map)?;
        array.set(0, config, 0).context("writing the learning prefixes")?;
        let map = self.ebpf.take_map(MAP_LEARNED).context("LEARNED map missing or already taken")?;
        Ok(HashMap::try_from(map)?)
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

    /// Takes over a link a previous daemon pinned for `program` on interface
    /// `index`, if there is one: BPF_LINK_UPDATE swaps this process's
    /// program in atomically, so the hook is never empty. `Ok(None)`: none
    /// pinned, or it could not be taken over (its device was deleted while
    /// no daemon ran): its pin is removed and the caller attaches afresh.
    fn adopt(&mut self, index: u32, iface: &str, prog_name: &'static str, job: Job) -> anyhow::Result<Option<String>> {
        let Some(p) = self.pins.as_ref() else { return Ok(None) };
        let ours = p.ours.link(index, prog_name);
        let candidates: Vec<PathBuf> =
            std::iter::once(ours.clone()).chain(p.others.iter().map(|d| d.link(index, prog_name))).collect();
        for path in candidates {
            let pinned = match PinnedLink::from_pin(&path) {
                Ok(l) => l,
                Err(_) if !path.exists() => continue,
                Err(e) => return Err(anyhow!(e).context(format!("opening pinned link {}", path.display()))),
            };
            let fd = FdLink::from(pinned);
            let updated = if prog_name == PROG_XDP {
                let prog: &mut Xdp = program(&mut self.ebpf, prog_name)?.try_into()?;
                XdpLink::try_from(fd)
                    .map_err(|e| anyhow!(e))
                    .and_then(|link| prog.attach_to_link(link).map_err(|e| anyhow!(e)))
                    .and_then(|id| prog.take_link(id).map_err(|e| anyhow!(e)))
                    .and_then(|link| FdLink::try_from(link).map_err(|e| anyhow!(e)))
            } else {
                let prog = tc_program(&mut self.ebpf, prog_name)?;
                SchedClassifierLink::try_from(fd)
                    .map_err(|e| anyhow!(e))
                    .and_then(|link| prog.attach_to_link(link).map_err(|e| anyhow!(e)))
                    .and_then(|id| prog.take_link(id).map_err(|e| anyhow!(e)))
                    .and_then(|link| FdLink::try_from(link).map_err(|e| anyhow!(e)))
            };
            let link = match updated {
                Ok(link) => link,
                Err(e) => {
                    // A link whose device went is defunct: updating it fails.
                    pins::unpin(&path)?;
                    eprintln!("pmtu: {iface}: the pinned {prog_name} link could not be taken over ({e:#}); attaching afresh");
                    continue;
                }
            };
            let link = if path != ours {
                // Another build's link: pin it as ours, then drop the old pin.
                pins::unpin(&ours)?;
                link.pin(&ours).with_context(|| format!("pinning {}", ours.display()))?;
                pins::unpin(&path)?;
                FdLink::from(PinnedLink::from_pin(&ours).map_err(|e| anyhow!(e))?)
            } else {
                link
            };
            let mechanism = if prog_name == PROG_XDP { "XDP link" } else { "TCX" };
            let held = Held { program: prog_name, job, link: HeldLink::Fd(link), pin: Some(ours), mechanism: mechanism.into(), adopted: true };
            self.record(index, iface, held);
            return Ok(Some(format!("{mechanism}, adopted from the pinned state")));
        }
        Ok(None)
    }

    fn attach_xdp(&mut self, index: u32, iface: &str) -> anyhow::Result<String> {
        if let Some(how) = self.adopt(index, iface, PROG_XDP, Job::Trace)? {
            return Ok(format!("{iface}: XDP ingress ({how})"));
        }
        let prog: &mut Xdp = program(&mut self.ebpf, PROG_XDP)?.try_into()?;
        // On veth, any XDP program moves received packets to veth's XDP path,
        // without the GRO/GSO aggregation forwarded traffic otherwise keeps:
        // throughput drops by ~80% (BENCHMARKS.md). Say so; --hook tc avoids it.
        let hint = if driver(iface).as_deref() == Some("veth") {
            " (veth: XDP costs forwarded throughput dearly here, see BENCHMARKS.md; the default tc hook does not)"
        } else {
            ""
        };
        let (id, line, mechanism) = match prog.attach_to_if_index(index, XdpMode::Driver) {
            Ok(id) => (id, format!("{iface}: XDP ingress, driver mode{hint}"), "XDP link, driver mode"),
            Err(driver_err) => {
                let id = prog.attach_to_if_index(index, XdpMode::Skb).map_err(|skb_err| {
                    explain(anyhow!(skb_err).context(format!(
                        "driver mode failed too ({driver_err}); is another XDP program attached? `ip link show {iface}`"
                    )))
                })?;
                (
                    id,
                    format!("{iface}: XDP ingress, generic mode (driver mode refused: {driver_err})"),
                    "XDP link, generic mode",
                )
            }
        };
        let link = FdLink::try_from(prog.take_link(id)?).context("an XDP attachment that is not a bpf_link")?;
        self.hold(index, iface, PROG_XDP, Job::Trace, link, mechanism)?;
        Ok(line)
    }

    /// Attaches tc program `name` to `iface` at `kind`, in front of every
    /// program already on that TCX hook: one that ends the chain (returns
    /// TC_ACT_OK or TC_ACT_SHOT, as many do) would otherwise keep packets
    /// from ever reaching pmtu. A link the previous daemon pinned there is
    /// taken over instead (it keeps its place). Returns how.
    fn attach_tc(
        &mut self,
        index: u32,
        iface: &str,
        name: &'static str,
        kind: TcAttachType,
        job: Job,
    ) -> anyhow::Result<String> {
        if !crate::features::get()?.tcx {
            return self.attach_legacy_tc(index, iface, name, kind, job);
        }
        if let Some(how) = self.adopt(index, iface, name, job)? {
            return Ok(how);
        }
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
        let link = FdLink::try_from(prog.take_link(id)?).context("a tc attachment that is not a bpf_link")?;
        self.hold(index, iface, name, job, link, "TCX")?;
        Ok("TCX".to_string())
    }

    /// tc without TCX (crate::legacy_tc): a cls_bpf filter at pmtu's
    /// priority for `job` on a clsact qdisc (added if absent, and then
    /// removed with pmtu's last filter), recorded under /run/pmtu. The
    /// daemon takes a previous daemon's filter over in place (replace).
    fn attach_legacy_tc(
        &mut self,
        index: u32,
        iface: &str,
        name: &'static str,
        kind: TcAttachType,
        job: Job,
    ) -> anyhow::Result<String> {
        use crate::legacy_tc::{self, Record};
        let egress = kind == TcAttachType::Egress;
        let priority = legacy_tc::priority(job);
        let persistent = self.pins.is_some();
        let dir = direction(kind);
        // A previous daemon's filter here: replace its program in place.
        if persistent
            && let Some(old) = legacy_tc::records()?
                .into_iter()
                .find(|r| r.persistent && r.netns == legacy_tc::netns() && r.ifindex == index && r.egress == egress && r.priority == priority)
        {
            let link = old.link().with_context(|| format!("{iface}: the recorded tc filter"))?;
            let prog = tc_program(&mut self.ebpf, name)?;
            let id = prog.attach_to_link(link).with_context(|| format!("replacing pmtu's tc {dir} filter on {iface}"))?;
            let link = prog.take_link(id)?;
            let record = Record { pid: std::process::id(), program: name.to_string(), ..old };
            record.save()?;
            self.record(
                index,
                iface,
                Held { program: name, job, link: HeldLink::Legacy(link, record), pin: None, mechanism: "tc filter (clsact)".into(), adopted: true },
            );
            return Ok("tc filter on clsact, taken over from the previous daemon".to_string());
        }
        let qdisc_added = match aya::programs::tc::qdisc_add_clsact(iface) {
            Ok(()) => {
                legacy_tc::mark_qdisc_added(index)?;
                true
            }
            Err(e) => {
                let e = anyhow!(e);
                // EEXIST: a clsact qdisc is there already (someone else's).
                if !has_os_error(&e, libc::EEXIST) {
                    return Err(e.context(format!("adding a clsact qdisc to {iface}")));
                }
                false
            }
        };
        let prog = tc_program(&mut self.ebpf, name)?;
        let options = aya::programs::tc::NlOptions { priority, ..Default::default() };
        let attached = prog
            .attach_with_options(iface, kind, TcAttachOptions::Netlink(options))
            .map_err(|e| explain(anyhow!(e)))
            .with_context(|| format!("attaching {name} to {iface} (tc {dir}, clsact filter)"))
            .and_then(|id| Ok(prog.take_link(id)?));
        let link = match attached {
            Ok(link) => link,
            Err(e) => {
                if qdisc_added
                    && let Err(q) = legacy_tc::drop_qdisc_if_ours_and_empty(index)
                {
                    return Err(anyhow!("{e:#}; and removing the clsact qdisc pmtu added failed: {q:#}"));
                }
                return Err(e);
            }
        };
        let record = Record {
            pid: std::process::id(),
            persistent,
            netns: legacy_tc::netns(),
            ifindex: index,
            ifname: iface.to_string(),
            egress,
            priority: link.priority()?,
            handle: u32::from(link.handle()?),
            program: name.to_string(),
            qdisc_added,
        };
        record.save()?;
        self.record(
            index,
            iface,
            Held { program: name, job, link: HeldLink::Legacy(link, record), pin: None, mechanism: "tc filter (clsact)".into(), adopted: false },
        );
        Ok(format!("clsact filter, prio {priority:#x}{}", if qdisc_added { ", qdisc added by pmtu" } else { "" }))
    }

    /// Keeps a new link: pinned first when the daemon pins (a failure to pin
    /// closes it again, which detaches it).
    fn hold(
        &mut self,
        index: u32,
        iface: &str,
        program: &'static str,
        job: Job,
        link: FdLink,
        mechanism: &str,
    ) -> anyhow::Result<()> {
        let (link, pin) = match self.pins.as_ref() {
            Some(p) => {
                let path = p.ours.link(index, program);
                pins::unpin(&path)?;
                let pinned = link.pin(&path).with_context(|| format!("pinning {}", path.display()))?;
                (FdLink::from(pinned), Some(path))
            }
            None => (link, None),
        };
        self.record(index, iface, Held { program, job, link: HeldLink::Fd(link), pin, mechanism: mechanism.to_string(), adopted: false });
        Ok(())
    }

    fn record(&mut self, index: u32, iface: &str, held: Held) {
        self.attached
            .entry(index)
            .or_insert_with(|| IfaceLinks { name: iface.to_string(), links: Vec::new() })
            .links
            .push(held);
        self.links_held += 1;
    }

    /// Which other programs share the TCX hook `kind` of `iface` with pmtu's
    /// `name`, in the kernel's order; `None` when pmtu is alone there.
    fn hook_report(&mut self, iface: &str, name: &str, kind: TcAttachType) -> Option<String> {
        // Without TCX, pmtu's filters sit at their own priorities; `tc
        // filter show` lists the hook.
        if !crate::features::get().is_ok_and(|f| f.tcx) {
            return None;
        }
        let dir = direction(kind);
        let (place, others) = match self.hook_neighbours(iface, name, kind) {
            Ok(v) => v,
            Err(e) => return Some(format!("{iface}: tc {dir}: {e:#}")),
        };
        if others.is_empty() {
            return None;
        }
        Some(format!("{iface}: tc {dir}: {place}; also on this hook: {}", others.join(", ")))
    }

    /// pmtu's place on a TCX hook ("pmtu first", "pmtu number 2 of 3") and
    /// the other programs there, in the kernel's order. Works with the
    /// daemon's least privileges (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON): the
    /// hook's program IDs come from BPF_PROG_QUERY; their names need
    /// CAP_SYS_ADMIN (BPF_PROG_GET_FD_BY_ID), so without it others show by ID.
    pub fn hook_neighbours(&mut self, iface: &str, name: &str, kind: TcAttachType) -> anyhow::Result<(String, Vec<String>)> {
        let ours = tc_program(&mut self.ebpf, name)
            .and_then(|p| Ok(p.info()?.id()))
            .context("cannot tell which programs share this hook")?;
        // Every program this process loaded: pmtu's other job on the same
        // interface (the clamper before the observer) is not "another program".
        let mine: Vec<u32> = self.ebpf.programs().filter_map(|(_, p)| p.info().ok().map(|i| i.id())).collect();
        let index = ifindex(iface)?;
        let ids = tcx_program_ids(index, kind).context("cannot list the programs on this hook (BPF_PROG_QUERY)")?;
        let named: Vec<(u32, String)> = SchedClassifier::query_tcx(iface, kind)
            .map(|(_, progs)| {
                progs.iter().map(|p| (p.id(), p.name_as_str().filter(|n| !n.is_empty()).unwrap_or("unnamed").to_string())).collect()
            })
            .unwrap_or_default();
        let others: Vec<String> = ids
            .iter()
            .filter(|id| !mine.contains(id))
            .map(|id| match named.iter().find(|(i, _)| i == id) {
                Some((_, n)) => format!("{n} (id {id})"),
                None => format!("id {id}"),
            })
            .collect();
        let place = match ids.iter().position(|id| *id == ours) {
            Some(0) => "pmtu first".to_string(),
            // Another program asked for the front after pmtu did.
            Some(n) => format!("pmtu number {} of {}", n + 1, ids.len()),
            None => "pmtu not listed".to_string(),
        };
        Ok((place, others))
    }

    /// Detaches everything pmtu attached to interface `index`. A device
    /// that is gone took its hooks with it: closing the links is then all
    /// there is to do, and cannot fail.
    pub fn detach_iface(&mut self, index: u32) -> anyhow::Result<()> {
        let trace = self.detach_job(index, Job::Trace);
        let clamp = self.detach_job(index, Job::Clamp);
        trace.and(clamp)
    }

    /// Detaches `job`'s links from interface `index` (pins removed first,
    /// then the descriptor closed: that detaches the link).
    pub fn detach_job(&mut self, index: u32, job: Job) -> anyhow::Result<()> {
        let Some(entry) = self.attached.get_mut(&index) else {
            return Ok(());
        };
        let name = entry.name.clone();
        let (gone, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut entry.links).into_iter().partition(|h| h.job == job);
        entry.links = kept;
        if entry.links.is_empty() {
            self.attached.remove(&index);
        }
        // An observer forgets the interface (no-op for a clamper's maps).
        let mut first_err = match job {
            Job::Trace => self.set_observed(index, false).err(),
            Job::Clamp => None,
        };
        for held in gone.into_iter().rev() {
            self.links_held = self.links_held.saturating_sub(1);
            if let Some(pin) = &held.pin
                && let Err(e) = pins::unpin(pin)
                && first_err.is_none()
            {
                first_err = Some(e.context(format!("detaching {} from {name}", held.program)));
            }
            if let HeldLink::Legacy(link, record) = held.link {
                // Dropping the link deletes the filter (netlink, by its
                // priority and handle); then the record, then the qdisc if
                // pmtu added it and nothing is left on it.
                drop(link);
                let done = record
                    .remove()
                    .and_then(|()| crate::legacy_tc::drop_qdisc_if_ours_and_empty(record.ifindex).map(|_| ()));
                if let Err(e) = done
                    && first_err.is_none()
                {
                    first_err = Some(e.context(format!("detaching {} from {name}", held.program)));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
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

    /// How many entries the observer's FLOWS or REPORTER_BUCKETS map
    /// holds now (the occupancy gauges), counted by walking its keys.
    pub fn map_entries(&self, name: &str) -> anyhow::Result<u64> {
        fn count<K: aya::Pod, V: aya::Pod>(map: &aya::maps::Map) -> anyhow::Result<u64> {
            let m: HashMap<&MapData, K, V> = HashMap::try_from(map)?;
            let mut n = 0;
            for key in m.keys() {
                key?;
                n += 1;
            }
            Ok(n)
        }
        const BUCKET: usize = std::mem::size_of::<pmtu_common::ratelimit::Bucket>();
        let map = self.ebpf.map(name).with_context(|| format!("{name} map missing"))?;
        match name {
            "FLOWS" => count::<pmtu_common::flow::FlowKey, pmtu_common::flow::FlowState>(map),
            "REPORTER_BUCKETS" => count::<[u8; 16], [u8; BUCKET]>(map),
            _ => bail!("no occupancy for map {name}"),
        }
        .with_context(|| format!("walking {name}"))
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

/// The IDs of the programs on a TCX hook, in order (BPF_PROG_QUERY with
/// BPF_TCX_INGRESS / BPF_TCX_EGRESS). aya's `query_tcx` also opens each
/// program by ID, which needs CAP_SYS_ADMIN; this needs CAP_NET_ADMIN only.
pub(crate) fn tcx_program_ids(ifindex: u32, kind: TcAttachType) -> io::Result<Vec<u32>> {
    /// enum bpf_attach_type (include/uapi/linux/bpf.h).
    const BPF_TCX_INGRESS: u32 = 46;
    const BPF_TCX_EGRESS: u32 = 47;
    /// enum bpf_cmd.
    const BPF_PROG_QUERY: libc::c_long = 16;
    /// The `query` member of union bpf_attr, as laid out since Linux 6.6.
    #[repr(C)]
    #[derive(Default)]
    struct Query {
        target_ifindex: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        count: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    let attach_type = match kind {
        TcAttachType::Ingress => BPF_TCX_INGRESS,
        TcAttachType::Egress => BPF_TCX_EGRESS,
        TcAttachType::Custom(_) => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    let mut ids = vec![0u32; 64];
    loop {
        let mut q = Query {
            target_ifindex: ifindex,
            attach_type,
            prog_ids: ids.as_mut_ptr() as u64,
            count: ids.len() as u32,
            ..Query::default()
        };
        // SAFETY: BPF_PROG_QUERY reads `q` (size passed) and writes at most
        // `count` u32s to `prog_ids`, which points into `ids` of that length.
        let rc = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_PROG_QUERY, &mut q as *mut Query, std::mem::size_of::<Query>() as u32)
        };
        if rc == 0 {
            ids.truncate(q.count as usize);
            return Ok(ids);
        }
        let err = io::Error::last_os_error();
        // ENOSPC: more programs than room; `count` says how many.
        if err.raw_os_error() == Some(libc::ENOSPC) && (q.count as usize) > ids.len() {
            ids = vec![0u32; q.count as usize];
            continue;
        }
        return Err(err);
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
