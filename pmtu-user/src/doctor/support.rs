//! What this kernel and each interface's driver support of what pmtu
//! hooks into: the kernel's features (crate::features: ring buffers, TCX,
//! bpf_fib_lookup's flags, BTF), and whether each interface can run XDP in
//! its driver ("native" mode) or only in generic (skb) mode, where the
//! program runs after the kernel has built the socket buffer and gains
//! nothing over tc (which pmtu uses by default).
//!
//! The kernel answers the first question itself since Linux 6.3: the
//! `netdev` generic-netlink family's dev-get reports each device's
//! xdp-features (include/uapi/linux/netdev.h, NETDEV_XDP_ACT_*), as
//! `ynl --family netdev --dump dev-get` prints them. Older kernels do not,
//! and pmtu falls back to the driver's name (`ethtool -i`) and a list of
//! drivers with native XDP.

use std::{collections::BTreeMap, io};

use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};

use super::{Finding, Severity, links::Link};
use crate::iface::arphrd;

/// Drivers with native XDP (an ndo_bpf that takes XDP_SETUP_PROG), by the
/// name `ethtool -i` reports; only consulted when the kernel does not say.
pub const NATIVE_DRIVERS: &[&str] = &[
    "veth",
    "virtio_net",
    "tun",
    "mlx4_en",
    "mlx5_core",
    "i40e",
    "ice",
    "ixgbe",
    "ixgbevf",
    "igb",
    "igc",
    "bnxt_en",
    "ena",
    "nfp",
    "qede",
    "sfc",
    "mvneta",
    "mvpp2",
    "hv_netvsc",
    "vif",
    "gve",
    "atlantic",
    "bonding",
    "mana",
    "idpf",
    "fec",
    "enetc",
    "stmmac",
    "netkit",
    "octeontx2-nicvf",
    "rvu_nicpf",
    "tsnep",
];

/// NETDEV_XDP_ACT_* bits and their ynl names.
const XDP_ACTS: &[(u64, &str)] = &[
    (1 << 0, "basic"),
    (1 << 1, "redirect"),
    (1 << 2, "ndo-xmit"),
    (1 << 3, "xsk-zerocopy"),
    (1 << 4, "hw-offload"),
    (1 << 5, "rx-sg"),
    (1 << 6, "ndo-xmit-sg"),
];
/// NETDEV_XDP_ACT_BASIC: XDP_PASS, XDP_DROP and XDP_TX in the driver.
const XDP_ACT_BASIC: u64 = 1;

/// The names of the bits set in `features`.
pub fn act_names(features: u64) -> Vec<&'static str> {
    XDP_ACTS.iter().filter(|(bit, _)| features & bit != 0).map(|(_, n)| *n).collect()
}

/// One interface's finding: `kernel` is its xdp-features if the kernel
/// said, `driver` its driver's name.
pub fn judge(name: &str, driver: Option<&str>, kernel: Option<u64>) -> Finding {
    let topic = format!("xdp/{name}");
    let drv = driver.map_or_else(|| "driver unknown".to_string(), |d| format!("driver {d}"));
    let generic = "generic (skb) mode only: `pmtu trace --hook xdp` would run after the kernel built the packet's \
                   skb, no faster than the tc hook pmtu uses by default";
    match kernel {
        Some(f) if f & XDP_ACT_BASIC != 0 => Finding::new(
            topic,
            format!("native, {drv}"),
            Severity::Info,
            format!("the driver runs XDP itself (kernel xdp-features: {})", act_names(f).join(", ")),
        ),
        Some(_) => Finding::new(
            topic,
            format!("generic only, {drv}"),
            Severity::Info,
            format!("{generic} (kernel xdp-features: none)"),
        ),
        None => match driver {
            Some(d) if NATIVE_DRIVERS.contains(&d) => Finding::new(
                topic,
                format!("native, {drv}"),
                Severity::Info,
                "the driver is known to run XDP itself (this kernel does not report xdp-features)",
            ),
            _ => Finding::new(
                topic,
                format!("generic only, {drv}"),
                Severity::Info,
                format!("{generic} (the driver is not one pmtu knows to have native XDP)"),
            ),
        },
    }
}

/// The kernel features pmtu depends on (crate::features), and XDP per
/// interface.
pub fn findings(links: &[Link]) -> Vec<Finding> {
    let mut out = kernel_features();
    let kernel = match xdp_features() {
        Ok(map) => Some(map),
        Err(e) => {
            out.push(Finding::new(
                "xdp",
                "xdp-features not reported",
                Severity::Info,
                format!(
                    "the kernel's netdev netlink family did not answer ({e}; it came in Linux 6.3): judged by \
                     driver name instead"
                ),
            ));
            None
        }
    };
    for l in links.iter().filter(|l| l.link_type != arphrd::LOOPBACK) {
        let driver = crate::loader::driver(&l.name);
        let features = kernel.as_ref().and_then(|m| m.get(&l.index).copied());
        out.push(judge(&l.name, driver.as_deref(), features));
    }
    out
}

/// crate::features, probed as pmtu does before attaching: each feature a
/// finding. The probe loads pmtu's eBPF object, which needs privileges.
fn kernel_features() -> Vec<Finding> {
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    let btf_finding = Finding::new(
        "kernel/btf",
        if btf { "yes" } else { "no" },
        Severity::Info,
        if btf {
            "/sys/kernel/btf/vmlinux: the kernel describes its types (pmtu does not need it; bpftool and CO-RE tools do)"
        } else {
            "no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF off): pmtu does not need it"
        },
    );
    let f = match crate::features::get() {
        Ok(f) => f,
        Err(e) => {
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            return vec![
                Finding::new(
                    "kernel/features",
                    "not probed",
                    if root { Severity::Warning } else { Severity::Info },
                    if root {
                        format!("pmtu cannot run on this kernel: {e:#}")
                    } else {
                        // Unprivileged, every probe fails and the first
                        // failure would name a missing feature.
                        "probing loads BPF programs, which needs root (CAP_BPF, CAP_NET_ADMIN)".to_string()
                    },
                ),
                btf_finding,
            ];
        }
    };
    let yes = |b: bool| if b { "yes" } else { "no" };
    vec![
        Finding::new(
            "kernel/ring_buf",
            yes(f.ring_buf),
            if f.ring_buf { Severity::Ok } else { Severity::Warning },
            "BPF ring buffers (Linux 5.8): how pmtu's programs report each PTB",
        ),
        Finding::new(
            "kernel/tcx",
            yes(f.tcx),
            if f.tcx { Severity::Ok } else { Severity::Info },
            if f.tcx {
                "TCX (Linux 6.6): pmtu's tc programs attach through bpf_link beside others', and go when pmtu does"
            } else {
                "no TCX (Linux < 6.6, or PMTU_FORCE_LEGACY_TC): pmtu uses a clsact qdisc and cls_bpf filters, \
                 which outlive a killed pmtu until `pmtu detach`"
            },
        ),
        Finding::new(
            "kernel/fib_skip_neigh",
            yes(f.fib_skip_neigh),
            Severity::Info,
            if f.fib_skip_neigh {
                "bpf_fib_lookup takes BPF_FIB_LOOKUP_SKIP_NEIGH (Linux 6.3): pmtu's route lookups skip the neighbour table"
            } else {
                "no BPF_FIB_LOOKUP_SKIP_NEIGH (Linux < 6.3): pmtu's route lookups still give the interface and MTU \
                 (an unresolved neighbour answers NO_NEIGH, taken as routed; pmtu-ebpf/src/fib.rs)"
            },
        ),
        btf_finding,
    ]
}

// ---- generic netlink: the netdev family ----

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID / _NAME.
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// NETDEV_CMD_DEV_GET, NETDEV_A_DEV_IFINDEX, NETDEV_A_DEV_XDP_FEATURES.
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// NLA_TYPE_MASK: the attribute type without the nested/byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A generic-netlink request: nlmsghdr, genlmsghdr, attributes.
fn genl_request(family: u16, flags: u16, seq: u32, cmd: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = vec![cmd, 1, 0, 0];
    for (kind, value) in attrs {
        let len = 4 + value.len();
        body.extend_from_slice(&(len as u16).to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&family.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// The netlink messages in one datagram: (type, payload after the header).
pub fn messages(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        if len < 16 || at + len > buf.len() {
            break;
        }
        out.push((kind, &buf[at + 16..at + len]));
        at += len.next_multiple_of(4);
    }
    out
}

/// The attributes of a generic-netlink payload (after its 4-byte header).
pub fn attributes(payload: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 4;
    while at + 4 <= payload.len() {
        let len = u16::from_ne_bytes([payload[at], payload[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([payload[at + 2], payload[at + 3]]) & NLA_TYPE_MASK;
        if len < 4 || at + len > payload.len() {
            break;
        }
        out.push((kind, &payload[at + 4..at + len]));
        at += len.next_multiple_of(4);
    }
    out
}

/// An NLMSG_ERROR's errno (0 for an ACK).
fn error_code(payload: &[u8]) -> i32 {
    payload.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Sends `req` and collects answers until the ACK or the end of the dump.
fn exchange(socket: &Socket, req: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    socket.send(req, 0)?;
    let mut out = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full()?;
        for (kind, payload) in messages(&data) {
            match kind {
                NLMSG_ERROR => {
                    let code = error_code(payload);
                    return if code == 0 { Ok(out) } else { Err(io::Error::from_raw_os_error(-code)) };
                }
                NLMSG_DONE => return Ok(out),
                _ => out.push(payload.to_vec()),
            }
        }
        if data.is_empty() {
            return Ok(out);
        }
    }
}

/// Each interface's xdp-features, by ifindex, from the kernel.
pub fn xdp_features() -> io::Result<BTreeMap<u32, u64>> {
    let mut socket = Socket::new(NETLINK_GENERIC)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let name = b"netdev\0";
    let req =
        genl_request(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, 1, CTRL_CMD_GETFAMILY, &[(CTRL_ATTR_FAMILY_NAME, name)]);
    let answers = exchange(&socket, &req)?;
    let family = answers
        .iter()
        .flat_map(|p| attributes(p))
        .find_map(|(k, v)| (k == CTRL_ATTR_FAMILY_ID && v.len() >= 2).then(|| u16::from_ne_bytes([v[0], v[1]])))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no netdev family"))?;
    let req = genl_request(family, NLM_F_REQUEST | NLM_F_DUMP, 2, NETDEV_CMD_DEV_GET, &[]);
    let mut out = BTreeMap::new();
    for payload in exchange(&socket, &req)? {
        let mut index = None;
        let mut features = None;
        for (k, v) in attributes(&payload) {
            match (k, v.len()) {
                (NETDEV_A_DEV_IFINDEX, 4) => index = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]])),
                (NETDEV_A_DEV_XDP_FEATURES, 8) => {
                    features = Some(u64::from_ne_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]))
                }
                _ => {}
            }
        }
        if let (Some(i), Some(f)) = (index, features) {
            out.insert(i, f);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let req = genl_request(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, 7, CTRL_CMD_GETFAMILY, &[(2, b"netdev\0")]);
        // 16 header + 4 genl + 4 attr header + 7 name, padded to 32.
        assert_eq!(req.len(), 32);
        assert_eq!(u32::from_ne_bytes(req[..4].try_into().unwrap()), 32);
        let msgs = messages(&req);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, GENL_ID_CTRL);
        assert_eq!(attributes(msgs[0].1), vec![(2, &b"netdev\0"[..])]);
        // Two messages back to back, the second a dump's end.
        let mut two = genl_request(
            30,
            0,
            1,
            1,
            &[(NETDEV_A_DEV_IFINDEX, &3u32.to_ne_bytes()), (NETDEV_A_DEV_XDP_FEATURES, &0x27u64.to_ne_bytes())],
        );
        two.extend_from_slice(&genl_request(NLMSG_DONE, 0, 1, 0, &[]));
        let msgs = messages(&two);
        assert_eq!(msgs.iter().map(|m| m.0).collect::<Vec<_>>(), [30, NLMSG_DONE]);
        let attrs = attributes(msgs[0].1);
        assert_eq!(attrs[0], (NETDEV_A_DEV_IFINDEX, &3u32.to_ne_bytes()[..]));
        assert_eq!(attrs[1].1.len(), 8);
        // A truncated buffer yields what is whole.
        assert_eq!(messages(&two[..20]).len(), 0);
    }

    #[test]
    fn features_and_drivers() {
        assert_eq!(act_names(0x23), ["basic", "redirect", "rx-sg"]);
        let f = judge("eth0", Some("virtio_net"), Some(0x7));
        assert_eq!(f.value, "native, driver virtio_net");
        assert!(f.meaning.contains("basic, redirect, ndo-xmit"), "{}", f.meaning);
        assert!(judge("vx0", Some("vxlan"), Some(0)).value.starts_with("generic only"));
        assert!(judge("eth0", Some("ixgbe"), None).value.starts_with("native"));
        let f = judge("eth1", Some("r8169"), None);
        assert!(f.value.starts_with("generic only") && f.meaning.contains("not one pmtu knows"), "{f:?}");
    }
}
