//! Interface MTUs, and the mismatches between interfaces stacked on or
//! wired to each other that drop packets without any ICMP: a frame too big
//! for the next layer-2 hop is simply lost, and only a layer-3 hop sends
//! Frag-Needed or Packet-Too-Big (seed 002: "only layer 3 hops can generate
//! ICMP packet too big").
//!
//! [`Facts::gather`] reads the links (RTM_GETLINK, as `ip -d link`) and the
//! routes a tunnel's outer packets take (RTM_GETROUTE, as `ip route get`);
//! [`findings`] judges them without touching the kernel, so the tests feed
//! it whatever they like.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use anyhow::{Context as _, anyhow};
use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle,
    packet_route::{
        AddressFamily,
        link::{
            GreIOFlags, InfoData, InfoGeneve, InfoGre, InfoGre6, InfoIpTunnel, InfoKind, InfoVxlan, LinkAttribute,
            LinkInfo, LinkMessage, LinkXdp, XdpAttached,
        },
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType},
    },
};

use super::{Finding, Severity};
use crate::iface::arphrd;

/// One interface, as far as MTUs and hooks go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: Option<u32>,
    /// ARPHRD_*.
    pub link_type: u16,
    /// IFLA_INFO_KIND: "veth", "vxlan", "bridge", ...; `None` for a
    /// physical device.
    pub kind: Option<String>,
    /// IFLA_LINK: a veth's peer, a VLAN's parent, a tunnel's device.
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: `link` is an index in another namespace.
    pub link_netnsid: Option<i32>,
    /// IFLA_MASTER: the bridge (or bond) it is a port of.
    pub controller: Option<u32>,
    pub tunnel: Option<Tunnel>,
    /// The XDP program attached (IFLA_XDP).
    pub xdp: Option<XdpProg>,
}

/// Where a tunnel's outer packets go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tunnel {
    /// The underlay device it is bound to (`dev`), if any.
    pub dev: Option<u32>,
    /// The far end (or multicast group), if fixed.
    pub remote: Option<IpAddr>,
    /// Outer header over IPv6.
    pub v6: bool,
    /// Bytes of GRE options (key, checksum, sequence number: 4 each).
    pub options: u32,
}

/// An XDP program on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpProg {
    /// "driver", "generic", "offload", "multiple".
    pub mode: &'static str,
    pub id: u32,
}

/// The route outer packets take toward an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTo {
    pub oif: Option<u32>,
    /// The MTU the route itself imposes: a cached path MTU (learnt from
    /// ICMP) or the route's `mtu` metric; `None` leaves the device's.
    pub mtu: Option<u32>,
}

/// Everything [`findings`] judges.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub links: Vec<Link>,
    /// Routes toward tunnel remotes (tunnels bound to no device).
    pub routes: BTreeMap<IpAddr, Result<RouteTo, String>>,
    /// The default routes (IPv4, IPv6), for tunnels whose peers are found
    /// by routing (WireGuard).
    pub default_v4: Option<RouteTo>,
    pub default_v6: Option<RouteTo>,
}

/// A netlink answer that does not come in this long is an error.
const TIMEOUT: Duration = Duration::from_secs(5);

impl Facts {
    /// Reads this namespace's links and the routes its tunnels use. Needs
    /// a tokio runtime; fails only if the link dump does.
    pub async fn gather() -> anyhow::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection().context("opening a netlink route socket")?;
        let task = tokio::spawn(connection);
        let result = Self::gather_with(&handle).await;
        // The connection task owns the socket; it would otherwise outlive us.
        task.abort();
        result
    }

    async fn gather_with(handle: &Handle) -> anyhow::Result<Self> {
        let dump = async {
            let mut stream = handle.link().get().execute();
            let mut out = Vec::new();
            while let Some(msg) = stream.try_next().await.context("listing interfaces (RTM_GETLINK)")? {
                out.extend(Link::from_message(&msg));
            }
            anyhow::Ok(out)
        };
        let links = tokio::time::timeout(TIMEOUT, dump)
            .await
            .map_err(|_| anyhow!("listing interfaces (RTM_GETLINK): no answer in {TIMEOUT:?}"))??;
        let mut facts = Facts { links, ..Facts::default() };
        let remotes: Vec<IpAddr> = facts
            .links
            .iter()
            .filter_map(|l| l.tunnel.as_ref())
            .filter(|t| t.dev.is_none())
            .filter_map(|t| t.remote)
            .collect();
        for remote in remotes {
            let route = route_to(handle, remote).await;
            facts.routes.insert(remote, route);
        }
        if facts.links.iter().any(|l| l.kind.as_deref() == Some("wireguard")) {
            facts.default_v4 = default_route(handle, AddressFamily::Inet).await;
            facts.default_v6 = default_route(handle, AddressFamily::Inet6).await;
        }
        Ok(facts)
    }
}

/// `ip route get DST`: the interface and MTU outer packets to `dst` get.
async fn route_to(handle: &Handle, dst: IpAddr) -> Result<RouteTo, String> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = if dst.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    msg.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
    let mut answers = handle.route().get(msg).execute();
    let answer = tokio::time::timeout(TIMEOUT, answers.try_next())
        .await
        .map_err(|_| format!("no answer in {TIMEOUT:?}"))?
        .map_err(|e| match e {
            rtnetlink::Error::NetlinkError(e) => e.to_io().to_string(),
            e => e.to_string(),
        })?
        .ok_or_else(|| "no route".to_string())?;
    // USER_HZ only scales the expiry, which is not used here.
    let a = crate::kernel_cache::read_answer(&answer, 100);
    Ok(RouteTo { oif: a.oif, mtu: a.cache.map(|c| c.mtu).or(a.metric_mtu) })
}

/// The main table's default route of `family`, if there is one.
async fn default_route(handle: &Handle, family: AddressFamily) -> Option<RouteTo> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family;
    let dump = async {
        let mut routes = handle.route().get(msg).execute();
        while let Ok(Some(r)) = routes.try_next().await {
            let table = r
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(r.header.table));
            if r.header.destination_prefix_length == 0
                && r.header.kind == RouteType::Unicast
                && table == u32::from(RouteHeader::RT_TABLE_MAIN)
            {
                let a = crate::kernel_cache::read_answer(&r, 100);
                return Some(RouteTo { oif: a.oif, mtu: a.metric_mtu });
            }
        }
        None
    };
    tokio::time::timeout(TIMEOUT, dump).await.ok().flatten()
}

impl Link {
    /// From an RTM_NEWLINK dump answer; `None` for a bridge-port message
    /// (AF_BRIDGE) or one without a name.
    pub fn from_message(msg: &LinkMessage) -> Option<Self> {
        if msg.header.interface_family != AddressFamily::Unspec {
            return None;
        }
        let mut link =
            Link { index: msg.header.index, link_type: u16::from(msg.header.link_layer_type), ..Link::default() };
        let mut data = None;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Mtu(m) => link.mtu = Some(*m),
                LinkAttribute::Link(l) => link.link = Some(*l),
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
                LinkAttribute::Controller(c) => link.controller = Some(*c),
                LinkAttribute::Xdp(xdp) => link.xdp = xdp_prog(xdp),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = Some(kind_name(k)),
                            LinkInfo::Data(d) => data = Some(d),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if link.name.is_empty() {
            return None;
        }
        link.tunnel = tunnel(link.kind.as_deref(), data, link.link);
        Some(link)
    }
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Other(s) => s.clone(),
        k => k.to_string(),
    }
}

/// The program IFLA_XDP reports, and in which mode.
fn xdp_prog(attrs: &[LinkXdp]) -> Option<XdpProg> {
    let mut mode = None;
    let mut id = None;
    for a in attrs {
        match a {
            LinkXdp::Attached(XdpAttached::None) => return None,
            LinkXdp::Attached(XdpAttached::Driver) => mode = Some("driver"),
            LinkXdp::Attached(XdpAttached::SocketBuffer) => mode = Some("generic"),
            LinkXdp::Attached(XdpAttached::Hardware) => mode = Some("offload"),
            LinkXdp::Attached(_) => mode = Some("multiple"),
            LinkXdp::ProgId(i) => id = Some(*i),
            LinkXdp::DrvProgId(i) | LinkXdp::SkbProgId(i) | LinkXdp::HwProgId(i) => {
                id = id.or(Some(*i));
            }
            _ => {}
        }
    }
    Some(XdpProg { mode: mode?, id: id.unwrap_or(0) })
}

/// The underlay facts of a tunnel of `kind` (IFLA_INFO_DATA); `None` for
/// other kinds. `iflink` is IFLA_LINK, which IP tunnels set to their `dev`.
fn tunnel(kind: Option<&str>, data: Option<&InfoData>, iflink: Option<u32>) -> Option<Tunnel> {
    let kind = kind?;
    overhead(kind, false)?;
    let nonzero = |i: u32| (i != 0).then_some(i);
    let mut t = Tunnel { v6: matches!(kind, "ip6gre" | "ip6gretap" | "ip6tnl"), ..Tunnel::default() };
    match data {
        Some(InfoData::Vxlan(attrs)) => {
            for a in attrs {
                match a {
                    InfoVxlan::Link(i) => t.dev = nonzero(*i),
                    InfoVxlan::Group(g) => t.remote = Some(IpAddr::V4(*g)),
                    InfoVxlan::Group6(g) => {
                        t.remote = Some(IpAddr::V6(*g));
                        t.v6 = true;
                    }
                    InfoVxlan::Local6(_) => t.v6 = true,
                    _ => {}
                }
            }
        }
        Some(InfoData::Geneve(attrs)) => {
            for a in attrs {
                match a {
                    InfoGeneve::Remote(r) => t.remote = Some(IpAddr::V4(*r)),
                    InfoGeneve::Remote6(r) => {
                        t.remote = Some(IpAddr::V6(*r));
                        t.v6 = true;
                    }
                    _ => {}
                }
            }
        }
        Some(InfoData::GreTun(attrs) | InfoData::GreTap(attrs)) => {
            for a in attrs {
                match a {
                    InfoGre::Link(i) => t.dev = nonzero(*i),
                    InfoGre::Remote(r) => t.remote = Some(IpAddr::V4(*r)),
                    InfoGre::OFlags(f) => t.options = gre_options(*f),
                    _ => {}
                }
            }
        }
        Some(InfoData::GreTun6(attrs) | InfoData::GreTap6(attrs)) => {
            for a in attrs {
                match a {
                    InfoGre6::Link(i) => t.dev = nonzero(*i),
                    InfoGre6::Remote(r) => t.remote = Some(IpAddr::V6(*r)),
                    InfoGre6::OFlags(f) => t.options = gre_options(*f),
                    _ => {}
                }
            }
        }
        Some(InfoData::IpTunnel(attrs)) => {
            for a in attrs {
                match a {
                    InfoIpTunnel::Link(i) => t.dev = nonzero(*i),
                    InfoIpTunnel::Remote(r) => t.remote = Some(*r),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    // Unspecified remotes (0.0.0.0, ::) are "any": not a route to ask for.
    if t.remote.is_some_and(|r| r.is_unspecified()) {
        t.remote = None;
    }
    t.dev = t.dev.or(iflink.and_then(nonzero));
    Some(t)
}

/// RFC 2890: a GRE key and a sequence number are 4 bytes each; RFC 2784:
/// so is the checksum (with its reserved half).
fn gre_options(flags: GreIOFlags) -> u32 {
    [GreIOFlags::Key, GreIOFlags::Checksum, GreIOFlags::Seq].iter().filter(|f| flags.contains(**f)).count() as u32 * 4
}

/// The bytes a tunnel of `kind` puts in front of each inner packet, its
/// outer header over IPv4 (or IPv6 with `v6`); `None` if `kind` is not a
/// tunnel pmtu knows.
pub fn overhead(kind: &str, v6: bool) -> Option<u32> {
    let ip = if v6 { 40 } else { 20 };
    Some(match kind {
        // Outer IP, UDP 8, VXLAN 8 (RFC 7348) or Geneve 8 (RFC 8926, no
        // options), and the inner Ethernet header 14.
        "vxlan" | "geneve" => ip + 8 + 8 + 14,
        // IPv4 20 + GRE 4 (RFC 2784); gretap carries Ethernet (14).
        "gre" => 24,
        "gretap" => 38,
        "ip6gre" => 44,
        "ip6gretap" => 58,
        // One IPv4 header around IPv4 (RFC 2003) or IPv6 (sit, RFC 4213).
        "ipip" | "sit" => 20,
        // IPv6 40 and the tunnel encapsulation limit option, 8 (RFC 2473
        // section 4.1.1), which Linux adds unless `encaplimit none`.
        "ip6tnl" => 48,
        // Outer IP, UDP 8, WireGuard's data header 16 and tag 16.
        "wireguard" => ip + 8 + 32,
        _ => return None,
    })
}

/// Every finding about links.
pub fn findings(facts: &Facts) -> Vec<Finding> {
    let by_index: BTreeMap<u32, &Link> = facts.links.iter().map(|l| (l.index, l)).collect();
    let mut out: Vec<Finding> = facts.links.iter().map(|l| describe(l, &by_index)).collect();
    for l in &facts.links {
        match l.kind.as_deref() {
            Some("veth") => out.extend(veth(l, &by_index)),
            Some("vlan" | "macvlan" | "macvtap" | "ipvlan" | "ipvtap") => out.extend(stacked(l, &by_index)),
            Some("bridge") => out.extend(bridge(l, &facts.links)),
            _ => {}
        }
        if l.tunnel.is_some() {
            out.extend(tunnel_finding(l, facts, &by_index));
        }
    }
    out
}

fn mtu_text(mtu: Option<u32>) -> String {
    mtu.map_or_else(|| "unknown".to_string(), |m| m.to_string())
}

/// The interface itself: its MTU and what it is.
fn describe(l: &Link, by_index: &BTreeMap<u32, &Link>) -> Finding {
    let what = match (l.kind.as_deref(), l.link_type) {
        (_, arphrd::LOOPBACK) => "loopback".to_string(),
        (Some(kind), _) => kind.to_string(),
        (None, arphrd::ETHER) => "Ethernet device".to_string(),
        (None, t) => format!("link type {t}"),
    };
    let port = l
        .controller
        .map(|c| format!(", port of {}", by_index.get(&c).map_or_else(|| format!("ifindex {c}"), |b| b.name.clone())))
        .unwrap_or_default();
    Finding::new(
        format!("link/{}", l.name),
        format!("mtu {}", mtu_text(l.mtu)),
        Severity::Info,
        format!("{what}{port}: the largest IP packet it sends or accepts"),
    )
}

/// A veth's two ends. net/core/dev.c is_skb_forwardable(): the receiving
/// end drops a frame longer than its own MTU, counted but unanswered.
fn veth(l: &Link, by_index: &BTreeMap<u32, &Link>) -> Option<Finding> {
    let topic = format!("mtu/veth/{}", l.name);
    let peer_index = l.link?;
    if let Some(nsid) = l.link_netnsid {
        return Some(Finding::new(
            topic,
            format!("{} mtu {}, peer ifindex {peer_index} elsewhere", l.name, mtu_text(l.mtu)),
            Severity::Info,
            format!(
                "the peer is in another network namespace (netnsid {nsid}): its MTU cannot be read from here; \
                 run pmtu doctor there too, the two ends must agree"
            ),
        ));
    }
    let peer = by_index.get(&peer_index)?;
    // Each pair once, from its lower index.
    if peer.index < l.index && peer.kind.as_deref() == Some("veth") && peer.link == Some(l.index) {
        return None;
    }
    let value = format!("{} mtu {} <-> {} mtu {}", l.name, mtu_text(l.mtu), peer.name, mtu_text(peer.mtu));
    Some(match (l.mtu, peer.mtu) {
        (Some(a), Some(b)) if a != b => {
            let (big, small, small_mtu) = if a > b { (&l.name, &peer.name, b) } else { (&peer.name, &l.name, a) };
            Finding::new(
                topic,
                value,
                Severity::Warning,
                format!(
                    "the ends disagree: frames {big} sends that are longer than {small_mtu} are dropped by {small} \
                     with no ICMP (net/core/dev.c is_skb_forwardable), a silent black hole; give both ends one MTU"
                ),
            )
        }
        _ => Finding::new(topic, value, Severity::Ok, "both ends agree"),
    })
}

/// A VLAN (or macvlan, ipvlan) over its parent: its frames leave through
/// the parent, which cannot send more than its own MTU.
fn stacked(l: &Link, by_index: &BTreeMap<u32, &Link>) -> Option<Finding> {
    let kind = l.kind.as_deref().unwrap_or("");
    let topic = format!("mtu/{kind}/{}", l.name);
    let parent_index = l.link?;
    if l.link_netnsid.is_some() {
        return Some(Finding::new(
            topic,
            format!("{} mtu {}, parent ifindex {parent_index} elsewhere", l.name, mtu_text(l.mtu)),
            Severity::Info,
            "its parent is in another network namespace: its MTU cannot be read from here",
        ));
    }
    let parent = by_index.get(&parent_index)?;
    let value = format!("{} mtu {} on {} mtu {}", l.name, mtu_text(l.mtu), parent.name, mtu_text(parent.mtu));
    Some(match (l.mtu, parent.mtu) {
        (Some(c), Some(p)) if c > p => Finding::new(
            topic,
            value,
            Severity::Warning,
            format!(
                "larger than its parent: packets between {p} and {c} bytes cannot leave through {} and are \
                 dropped without ICMP; lower {} to {p} or raise {}",
                parent.name, l.name, parent.name
            ),
        ),
        _ => Finding::new(topic, value, Severity::Ok, "fits its parent"),
    })
}

/// A bridge and its ports: a bridge forwards frames between ports without
/// fragmenting and without ICMP, so one port smaller than the bridge (or
/// than another port) silently drops what the others pass.
fn bridge(b: &Link, links: &[Link]) -> Option<Finding> {
    let ports: Vec<&Link> = links.iter().filter(|l| l.controller == Some(b.index)).collect();
    let topic = format!("mtu/bridge/{}", b.name);
    if ports.is_empty() {
        return Some(Finding::new(
            topic,
            format!("{} mtu {}, no ports", b.name, mtu_text(b.mtu)),
            Severity::Info,
            "a bridge without ports",
        ));
    }
    let list: Vec<String> = ports.iter().map(|p| format!("{} {}", p.name, mtu_text(p.mtu))).collect();
    let value = format!("{} mtu {}; ports {}", b.name, mtu_text(b.mtu), list.join(", "));
    let mtus: Vec<u32> = ports.iter().filter_map(|p| p.mtu).collect();
    let (Some(&min), Some(&max)) = (mtus.iter().min(), mtus.iter().max()) else {
        return Some(Finding::new(topic, value, Severity::Info, "port MTUs unknown"));
    };
    let smaller: Vec<&str> = ports
        .iter()
        .filter(|p| matches!((p.mtu, b.mtu), (Some(pm), Some(bm)) if pm < bm))
        .map(|p| p.name.as_str())
        .collect();
    Some(if !smaller.is_empty() {
        Finding::new(
            topic,
            value,
            Severity::Warning,
            format!(
                "port{} {} smaller than the bridge: frames the bridge passes up to its MTU are dropped there \
                 without ICMP (a layer-2 hop sends none)",
                if smaller.len() == 1 { "" } else { "s" },
                smaller.join(", ")
            ),
        )
    } else if min != max {
        Finding::new(
            topic,
            value,
            Severity::Warning,
            format!(
                "the ports disagree ({min} to {max}): frames up to {max} from one port are dropped without ICMP \
                 on a {min} port; give every port one MTU"
            ),
        )
    } else {
        Finding::new(topic, value, Severity::Ok, "bridge and ports agree")
    })
}

/// The device (and MTU) outer packets leave by, and how pmtu knows.
struct Underlay {
    name: String,
    mtu: Option<u32>,
    how: &'static str,
    /// The outer header's family decides the warning.
    v6: bool,
    /// Outer packets may also go over IPv6 (WireGuard over a dual-stack
    /// default route): worth an information if only that does not fit.
    maybe_v6: bool,
}

/// The device a route leaves by and the smaller of its MTU and the route's.
fn via_route(r: &RouteTo, by_index: &BTreeMap<u32, &Link>) -> (String, Option<u32>) {
    let dev = r.oif.and_then(|o| by_index.get(&o));
    let name = dev.map_or_else(|| "?".to_string(), |d| d.name.clone());
    let mtu = match (r.mtu, dev.and_then(|d| d.mtu)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (name, mtu)
}

/// A tunnel over its underlay: a full-size inner packet plus the
/// encapsulation must fit the underlay's MTU, or every such packet is
/// fragmented outside (outer DF clear) or refused.
fn tunnel_finding(l: &Link, facts: &Facts, by_index: &BTreeMap<u32, &Link>) -> Option<Finding> {
    let t = l.tunnel.as_ref()?;
    let kind = l.kind.as_deref()?;
    let topic = format!("mtu/tunnel/{}", l.name);
    let mtu = l.mtu?;
    let over = |v6: bool| overhead(kind, v6).map(|o| o + t.options);
    let info = |value: String, meaning: String| Some(Finding::new(topic.clone(), value, Severity::Info, meaning));
    // The underlay: the bound device, else the route to the remote, else
    // (WireGuard) the default route.
    let under = if let Some(dev) = t.dev {
        let Some(d) = by_index.get(&dev) else {
            return info(
                format!("{} mtu {mtu}", l.name),
                format!("bound to ifindex {dev}, which is not in this namespace: its MTU cannot be read here"),
            );
        };
        Underlay { name: d.name.clone(), mtu: d.mtu, how: "bound to", v6: t.v6, maybe_v6: false }
    } else if let Some(remote) = t.remote {
        match facts.routes.get(&remote)? {
            Ok(r) => {
                let (name, mtu) = via_route(r, by_index);
                Underlay { name, mtu, how: "routed to its remote via", v6: remote.is_ipv6(), maybe_v6: false }
            }
            Err(e) => {
                return Some(Finding::new(
                    topic,
                    format!("{} mtu {mtu}, remote {remote}", l.name),
                    Severity::Warning,
                    format!("no route to the tunnel's remote ({e}): its packets go nowhere"),
                ));
            }
        }
    } else if kind == "wireguard" {
        // Peers' endpoints are per peer (generic netlink, not read here);
        // routing picks the underlay, most often the default route's.
        let (r, v6) = match (&facts.default_v4, &facts.default_v6) {
            (Some(r), v6) => (r, v6.is_some()),
            (None, Some(r)) => (r, true),
            (None, None) => {
                return info(
                    format!("{} mtu {mtu}", l.name),
                    format!(
                        "peers are reached by routing and there is no default route to compare with: over a 1500 \
                         underlay the inner MTU can be at most {} (IPv4) or {} (IPv6)",
                        1500 - over(false)?,
                        1500 - over(true)?
                    ),
                );
            }
        };
        let (name, mtu) = via_route(r, by_index);
        let only_v6 = facts.default_v4.is_none();
        Underlay { name, mtu, how: "peers reached by the default route via", v6: only_v6, maybe_v6: v6 && !only_v6 }
    } else {
        return info(
            format!("{} mtu {mtu} + {} ({kind})", l.name, over(t.v6)?),
            "no device and no fixed remote (external/metadata mode): the underlay is chosen per packet, and must \
             carry the MTU plus this overhead"
                .to_string(),
        );
    };
    let Some(under_mtu) = under.mtu else {
        return info(format!("{} mtu {mtu}", l.name), "underlay MTU unknown".to_string());
    };
    let o = over(under.v6)?;
    let value = format!(
        "{} mtu {mtu} + {o} ({kind} over {}) {} {} mtu {under_mtu}",
        l.name,
        if under.v6 { "IPv6" } else { "IPv4" },
        under.how,
        under.name
    );
    if mtu + o > under_mtu {
        return Some(Finding::new(
            topic,
            value,
            Severity::Warning,
            format!(
                "a full-size inner packet becomes {} bytes, more than {} carries: it is fragmented outside or \
                 refused; lower {} to {} (or raise the underlay)",
                mtu + o,
                under.name,
                l.name,
                under_mtu.saturating_sub(o)
            ),
        ));
    }
    let o6 = over(true)?;
    if under.maybe_v6 && mtu + o6 > under_mtu {
        return info(
            value,
            format!(
                "fits over IPv4; a peer reached over IPv6 adds {o6}: {} bytes, more than {under_mtu}; {} fits both",
                mtu + o6,
                under_mtu.saturating_sub(o6)
            ),
        );
    }
    Some(Finding::new(topic, value, Severity::Ok, format!("{mtu} + {o} = {} fits {under_mtu}", mtu + o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, mtu: u32, kind: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            mtu: Some(mtu),
            link_type: arphrd::ETHER,
            kind: kind.map(str::to_string),
            ..Link::default()
        }
    }

    fn one(facts: &Facts, topic: &str) -> Finding {
        let all = findings(facts);
        let mut hits = all.iter().filter(|f| f.topic == topic);
        let f = hits.next().unwrap_or_else(|| panic!("no {topic} in {all:#?}")).clone();
        assert!(hits.next().is_none(), "{topic} twice: {all:#?}");
        f
    }

    #[test]
    fn overheads_per_kind() {
        assert_eq!(overhead("vxlan", false), Some(50));
        assert_eq!(overhead("vxlan", true), Some(70));
        assert_eq!(overhead("gre", false), Some(24));
        assert_eq!(overhead("ipip", false), Some(20));
        assert_eq!(overhead("sit", false), Some(20));
        assert_eq!(overhead("wireguard", false), Some(60));
        assert_eq!(overhead("wireguard", true), Some(80));
        assert_eq!(overhead("veth", false), None);
        assert_eq!(gre_options(GreIOFlags::Key | GreIOFlags::Seq), 8);
    }

    #[test]
    fn veth_ends_that_disagree_are_a_warning_reported_once() {
        let mut a = link(2, "a", 1500, Some("veth"));
        let mut b = link(3, "b", 1400, Some("veth"));
        a.link = Some(3);
        b.link = Some(2);
        let facts = Facts { links: vec![a.clone(), b.clone()], ..Facts::default() };
        let f = one(&facts, "mtu/veth/a");
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.value, "a mtu 1500 <-> b mtu 1400");
        assert!(f.meaning.contains("dropped by b"), "{}", f.meaning);
        assert!(findings(&facts).iter().all(|f| f.topic != "mtu/veth/b"));
        b.mtu = Some(1500);
        let facts = Facts { links: vec![a, b], ..Facts::default() };
        assert_eq!(one(&facts, "mtu/veth/a").severity, Severity::Ok);
    }

    #[test]
    fn a_veth_peer_elsewhere_is_named_as_such() {
        let mut a = link(5, "to-r2", 1400, Some("veth"));
        a.link = Some(2);
        a.link_netnsid = Some(0);
        let f = one(&Facts { links: vec![a], ..Facts::default() }, "mtu/veth/to-r2");
        assert_eq!(f.severity, Severity::Info);
        assert!(f.meaning.contains("another network namespace"), "{}", f.meaning);
    }

    #[test]
    fn a_vlan_larger_than_its_parent_is_a_warning() {
        let parent = link(2, "eth0", 1500, None);
        let mut vlan = link(3, "eth0.10", 9000, Some("vlan"));
        vlan.link = Some(2);
        let f = one(&Facts { links: vec![parent.clone(), vlan.clone()], ..Facts::default() }, "mtu/vlan/eth0.10");
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.meaning.contains("lower eth0.10 to 1500"), "{}", f.meaning);
        vlan.mtu = Some(1500);
        assert_eq!(
            one(&Facts { links: vec![parent, vlan], ..Facts::default() }, "mtu/vlan/eth0.10").severity,
            Severity::Ok
        );
    }

    fn vxlan(mtu: u32, dev: Option<u32>, remote: Option<IpAddr>) -> Link {
        let mut l = link(10, "vx0", mtu, Some("vxlan"));
        l.tunnel = Some(Tunnel { dev, remote, v6: remote.is_some_and(|r| r.is_ipv6()), options: 0 });
        l
    }

    #[test]
    fn a_vxlan_as_large_as_its_underlay_is_a_warning() {
        let under = link(2, "u0", 1500, Some("veth"));
        let f = one(
            &Facts { links: vec![under.clone(), vxlan(1500, Some(2), None)], ..Facts::default() },
            "mtu/tunnel/vx0",
        );
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.value, "vx0 mtu 1500 + 50 (vxlan over IPv4) bound to u0 mtu 1500");
        assert!(f.meaning.contains("1550 bytes") && f.meaning.contains("lower vx0 to 1450"), "{}", f.meaning);
        let f = one(&Facts { links: vec![under, vxlan(1450, Some(2), None)], ..Facts::default() }, "mtu/tunnel/vx0");
        assert_eq!(f.severity, Severity::Ok, "{f:?}");
    }

    #[test]
    fn a_vxlan_without_a_device_is_judged_by_the_route_to_its_remote() {
        let remote: IpAddr = "fd00::9".parse().unwrap();
        let under = link(2, "u0", 1500, Some("veth"));
        let mut facts = Facts { links: vec![under, vxlan(1450, None, Some(remote))], ..Facts::default() };
        facts.routes.insert(remote, Ok(RouteTo { oif: Some(2), mtu: None }));
        let f = one(&facts, "mtu/tunnel/vx0");
        assert_eq!(f.severity, Severity::Warning, "IPv6 outer headers: 70");
        assert!(f.value.contains("+ 70 (vxlan over IPv6) routed to its remote via u0 mtu 1500"), "{}", f.value);
        // A smaller cached path MTU toward the remote is what counts.
        facts.links[1].mtu = Some(1430);
        facts.routes.insert(remote, Ok(RouteTo { oif: Some(2), mtu: Some(1400) }));
        assert_eq!(one(&facts, "mtu/tunnel/vx0").severity, Severity::Warning);
        facts.routes.insert(remote, Err("Network is unreachable (os error 101)".into()));
        let f = one(&facts, "mtu/tunnel/vx0");
        assert!(f.meaning.contains("no route"), "{}", f.meaning);
    }

    #[test]
    fn wireguard_is_judged_by_the_default_route_for_both_families() {
        let eth = link(2, "eth0", 1500, None);
        let mut wg = link(7, "wg0", 1440, Some("wireguard"));
        wg.tunnel = Some(Tunnel::default());
        let mut facts = Facts { links: vec![eth, wg], ..Facts::default() };
        facts.default_v4 = Some(RouteTo { oif: Some(2), mtu: None });
        // IPv4 only: 1440 + 60 fits.
        assert_eq!(one(&facts, "mtu/tunnel/wg0").severity, Severity::Ok);
        // Dual-stack: a peer over IPv6 would not.
        facts.default_v6 = Some(RouteTo { oif: Some(2), mtu: None });
        let f = one(&facts, "mtu/tunnel/wg0");
        assert_eq!(f.severity, Severity::Info, "fits IPv4 only: {f:?}");
        assert!(f.meaning.contains("1420 fits both"), "{}", f.meaning);
        facts.links[1].mtu = Some(1420);
        assert_eq!(one(&facts, "mtu/tunnel/wg0").severity, Severity::Ok);
        facts.links[1].mtu = Some(1500);
        assert_eq!(one(&facts, "mtu/tunnel/wg0").severity, Severity::Warning);
        // Only an IPv6 default route: IPv6's 80 decides.
        facts.links[1].mtu = Some(1440);
        facts.default_v4 = None;
        let f = one(&facts, "mtu/tunnel/wg0");
        assert_eq!(f.severity, Severity::Warning, "{f:?}");
        assert!(f.value.contains("+ 80 (wireguard over IPv6)"), "{}", f.value);
        facts.default_v6 = None;
        assert!(one(&facts, "mtu/tunnel/wg0").meaning.contains("1440 (IPv4) or 1420 (IPv6)"));
    }

    #[test]
    fn gre_options_add_to_the_overhead() {
        let eth = link(2, "eth0", 1500, None);
        let mut gre = link(8, "gre1", 1476, Some("gre"));
        gre.tunnel = Some(Tunnel { dev: Some(2), remote: None, v6: false, options: 4 });
        let f = one(&Facts { links: vec![eth, gre], ..Facts::default() }, "mtu/tunnel/gre1");
        assert_eq!(f.severity, Severity::Warning, "a keyed GRE needs 28: {f:?}");
        assert!(f.meaning.contains("lower gre1 to 1472"), "{}", f.meaning);
    }

    #[test]
    fn bridge_ports_smaller_or_unequal_are_warnings() {
        let br = link(4, "br0", 1500, Some("bridge"));
        let mut p1 = link(5, "p1", 1500, Some("veth"));
        let mut p2 = link(6, "p2", 1400, Some("veth"));
        p1.controller = Some(4);
        p2.controller = Some(4);
        let facts = Facts { links: vec![br.clone(), p1.clone(), p2.clone()], ..Facts::default() };
        let f = one(&facts, "mtu/bridge/br0");
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.meaning.contains("p2 smaller than the bridge"), "{}", f.meaning);
        assert!(one(&facts, "link/p2").meaning.contains("port of br0"));
        let mut br_small = br.clone();
        br_small.mtu = Some(1400);
        let facts = Facts { links: vec![br_small, p1.clone(), p2.clone()], ..Facts::default() };
        assert!(one(&facts, "mtu/bridge/br0").meaning.contains("disagree"));
        p2.mtu = Some(1500);
        let facts = Facts { links: vec![br, p1, p2], ..Facts::default() };
        assert_eq!(one(&facts, "mtu/bridge/br0").severity, Severity::Ok);
    }
}
