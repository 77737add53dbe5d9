//! tc without TCX (Linux before 6.6): a clsact qdisc and cls_bpf filters in
//! direct-action mode, attached over netlink (aya's `NlOptions`).
//!
//! Unlike a bpf_link, a netlink filter is owned by no file descriptor: it
//! stays attached when pmtu is killed. So every filter pmtu adds is recorded
//! in a file under /run/pmtu/legacy-tc (interface, direction, priority,
//! handle, the process that added it, and whether pmtu added the clsact
//! qdisc), and removed from there when pmtu detaches it. At start and in
//! `pmtu detach`, records of processes that are gone are swept: their
//! filters deleted (by priority and handle, so nobody else's), and the
//! qdisc deleted if pmtu added it and no filter is left on it. The daemon's
//! records are persistent: the next daemon takes the filters over in place
//! (NLM_F_REPLACE at the same priority and handle: no gap).
//!
//! pmtu's filters sit at priorities it owns, low so they run before the
//! kernel's default (49152) and most tools' filters: the clamper at 0x10
//! and the observer at 0x11 on each hook.

use std::{
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};
use aya::programs::{
    TcAttachType,
    tc::{SchedClassifierLink, TcHandle},
};
use rtnetlink::{
    packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        tc::{TcHandle as NlHandle, TcMessage},
    },
    sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
};
use serde::{Deserialize, Serialize};

use crate::loader::Job;

/// Where the records live (tmpfs: a reboot clears filters and records alike).
pub const RECORD_DIR: &str = "/run/pmtu/legacy-tc";

/// pmtu's filter priority for `job`.
pub fn priority(job: Job) -> u16 {
    match job {
        Job::Clamp => 0x10,
        Job::Trace => 0x11,
    }
}

/// One filter pmtu added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The process that added it.
    pub pid: u32,
    /// A daemon's filter: kept for the next daemon rather than swept.
    pub persistent: bool,
    /// The network namespace (inode of /proc/self/ns/net): interface
    /// indexes are per namespace, and only a process in it can delete the
    /// filter.
    pub netns: u64,
    pub ifindex: u32,
    pub ifname: String,
    pub egress: bool,
    pub priority: u16,
    pub handle: u32,
    pub program: String,
    /// pmtu added the clsact qdisc when attaching this filter.
    pub qdisc_added: bool,
}

impl Record {
    fn file_name(&self) -> String {
        format!("{}-{}-{}-{:x}", self.netns, self.ifindex, if self.egress { "egress" } else { "ingress" }, self.priority)
    }

    pub fn path(&self) -> PathBuf {
        Path::new(RECORD_DIR).join(self.file_name())
    }

    pub fn attach_type(&self) -> TcAttachType {
        if self.egress { TcAttachType::Egress } else { TcAttachType::Ingress }
    }

    /// Writes the record (before the filter could be forgotten).
    pub fn save(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(RECORD_DIR).with_context(|| format!("creating {RECORD_DIR}"))?;
        let path = self.path();
        let text = serde_json::to_string(self).context("encoding a tc record")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.path().display())),
        }
    }

    /// aya's handle on the filter, to replace or delete it.
    pub fn link(&self) -> io::Result<SchedClassifierLink> {
        SchedClassifierLink::attached(&self.ifname, self.attach_type(), self.priority, TcHandle::from(self.handle), None)
    }
}

/// Every record present.
pub fn records() -> anyhow::Result<Vec<Record>> {
    let entries = match std::fs::read_dir(RECORD_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {RECORD_DIR}")),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| format!("listing {RECORD_DIR}"))?.path();
        if path.to_string_lossy().ends_with("-qdisc") {
            continue;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        match serde_json::from_str::<Record>(&text) {
            Ok(r) => out.push(r),
            // Not pmtu's, or torn: say so and leave it.
            Err(e) => eprintln!("pmtu: {}: not a pmtu tc record ({e}); leaving it", path.display()),
        }
    }
    Ok(out)
}

/// The marker saying pmtu added the clsact qdisc of interface `ifindex`
/// (in this namespace): it is pmtu's to remove once no filter is left,
/// whichever of pmtu's filters goes last.
fn qdisc_marker(ifindex: u32) -> PathBuf {
    Path::new(RECORD_DIR).join(format!("{}-{ifindex}-qdisc", netns()))
}

/// Records that pmtu added the clsact qdisc of `ifindex`.
pub fn mark_qdisc_added(ifindex: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(RECORD_DIR).with_context(|| format!("creating {RECORD_DIR}"))?;
    let path = qdisc_marker(ifindex);
    std::fs::write(&path, b"pmtu added this interface's clsact qdisc\n").with_context(|| format!("writing {}", path.display()))
}

/// This process's network namespace, as the inode of /proc/self/ns/net.
pub fn netns() -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0)
}

/// True if a network namespace with inode `ino` still exists: a process
/// is in it, or `ip netns` keeps it.
fn netns_exists(ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let named = std::fs::read_dir("/run/netns").into_iter().flatten().flatten();
    let procs = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .map(|e| e.path().join("ns/net"));
    named.map(|e| e.path()).chain(procs).any(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == ino))
}

/// True if process `pid` exists.
fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 checks for existence only; no signal is sent.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes the filters of records whose process is gone, in this network
/// namespace (only a process in it can): all of them in `pmtu detach`
/// (`include_persistent`), the non-daemon ones at start.
/// Returns what it removed, one line each.
pub fn sweep(include_persistent: bool) -> anyhow::Result<Vec<String>> {
    let mut said = Vec::new();
    let here = netns();
    let (all, elsewhere): (Vec<Record>, Vec<Record>) = records()?.into_iter().partition(|r| r.netns == here);
    // A namespace that is gone took its interfaces and filters with it.
    for r in elsewhere.iter().filter(|r| !alive(r.pid) && !netns_exists(r.netns)) {
        r.remove()?;
        remove_marker_in(r.netns, r.ifindex)?;
    }
    for r in &all {
        if alive(r.pid) && r.pid != std::process::id() || (r.persistent && !include_persistent) {
            continue;
        }
        said.push(remove_filter(r)?);
    }
    Ok(said)
}

/// Deletes the filter of record `r` (if its interface still exists and the
/// filter is still there), its qdisc if pmtu added it and it is now empty,
/// and the record.
pub fn remove_filter(r: &Record) -> anyhow::Result<String> {
    let here = crate::loader::ifname(r.ifindex).as_deref() == Some(r.ifname.as_str());
    let mut what = format!(
        "{}: {} filter {} (prio {:#x}, left by pid {})",
        r.ifname,
        if r.egress { "egress" } else { "ingress" },
        r.program,
        r.priority,
        r.pid
    );
    if here {
        match delete_filter(r.ifindex, r.egress, r.priority, r.handle) {
            Ok(()) => what.push_str(": removed"),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => what.push_str(": already gone"),
            Err(e) => return Err(anyhow!(e).context(format!("deleting {what}"))),
        }
        if drop_qdisc_if_ours_and_empty(r.ifindex)? {
            what.push_str("; the clsact qdisc pmtu added removed");
        }
    } else {
        // The interface went, and its qdisc with it.
        remove_marker(r.ifindex)?;
        what.push_str(": interface gone, nothing to remove");
    }
    r.remove()?;
    Ok(what)
}

/// After pmtu detached a filter from an interface: removes the clsact
/// qdisc if pmtu added it (its marker) and no filter (anyone's) is left.
pub fn drop_qdisc_if_ours_and_empty(ifindex: u32) -> anyhow::Result<bool> {
    if !qdisc_marker(ifindex).exists() || filters_on(ifindex)? != 0 {
        return Ok(false);
    }
    let removed = match delete_clsact(ifindex) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::EINVAL) => false,
        Err(e) => return Err(anyhow!(e).context("deleting the clsact qdisc pmtu added")),
    };
    remove_marker(ifindex)?;
    Ok(removed)
}

fn remove_marker(ifindex: u32) -> anyhow::Result<()> {
    remove_marker_in(netns(), ifindex)
}

fn remove_marker_in(netns: u64, ifindex: u32) -> anyhow::Result<()> {
    match std::fs::remove_file(Path::new(RECORD_DIR).join(format!("{netns}-{ifindex}-qdisc"))) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context("removing the qdisc marker"),
    }
}

/// One netlink request, synchronously (these run where no runtime is at
/// hand, e.g. while detaching in Drop order), collecting answers until the
/// ACK or the end of a dump. Returns the answers.
fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = flags;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut out = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < data.len() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(out),
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                    };
                }
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::InnerMessage(m) => out.push(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

fn parent(egress: bool) -> NlHandle {
    NlHandle { major: 0xffff, minor: if egress { NlHandle::MIN_EGRESS } else { NlHandle::MIN_INGRESS } }
}

/// RTM_DELTFILTER for exactly one filter: priority and handle (cls_bpf,
/// any protocol).
fn delete_filter(ifindex: u32, egress: bool, priority: u16, handle: u32) -> io::Result<()> {
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = parent(egress);
    m.header.handle = NlHandle::from(handle);
    // tcm_info: priority in the upper 16 bits, protocol (ETH_P_ALL) below.
    m.header.info = (u32::from(priority) << 16) | u32::from(u16::to_be(libc::ETH_P_ALL as u16));
    m.attributes.push(rtnetlink::packet_route::tc::TcAttribute::Kind("bpf".to_string()));
    request(RouteNetlinkMessage::DelTrafficFilter(m), NLM_F_REQUEST | NLM_F_ACK).map(|_| ())
}

/// How many filters (anyone's) are on the interface's clsact, both sides.
fn filters_on(ifindex: u32) -> anyhow::Result<usize> {
    let mut n = 0;
    for egress in [false, true] {
        let mut m = TcMessage::with_index(ifindex as i32);
        m.header.parent = parent(egress);
        match request(RouteNetlinkMessage::GetTrafficFilter(m), NLM_F_REQUEST | NLM_F_DUMP) {
            Ok(answers) => n += answers.len(),
            // No clsact: nothing on it.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(anyhow!(e).context("listing tc filters")),
        }
    }
    Ok(n)
}

/// Every filter (anyone's) on the interface's clsact ingress or egress, as
/// `tc filter show dev X ingress|egress` lists them; none without clsact.
pub(crate) fn list_filters(ifindex: u32, egress: bool) -> io::Result<Vec<TcMessage>> {
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = parent(egress);
    match request(RouteNetlinkMessage::GetTrafficFilter(m), NLM_F_REQUEST | NLM_F_DUMP) {
        Ok(answers) => Ok(answers
            .into_iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewTrafficFilter(f) => Some(f),
                _ => None,
            })
            .collect()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOENT) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// RTM_DELQDISC for the clsact qdisc.
fn delete_clsact(ifindex: u32) -> io::Result<()> {
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = NlHandle::CLSACT;
    m.header.handle = NlHandle { major: 0xffff, minor: 0 };
    request(RouteNetlinkMessage::DelQueueDiscipline(m), NLM_F_REQUEST | NLM_F_ACK).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_name_their_filter() {
        let r = Record {
            pid: 42,
            persistent: false,
            netns: 4026531840,
            ifindex: 7,
            ifname: "ppp0".into(),
            egress: true,
            priority: priority(Job::Clamp),
            handle: 1,
            program: "pmtu_clamp_tc_egress".into(),
            qdisc_added: true,
        };
        assert_eq!(r.path(), Path::new("/run/pmtu/legacy-tc/4026531840-7-egress-10"));
        let back: Record = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(priority(Job::Clamp) < priority(Job::Trace), "the clamper runs before the observer");
    }
}
