//! Which interfaces a command serves, and following them as they come and go.
//!
//! `-i` takes interface names and globs (`-i eth0 -i 'ppp*'`, as iptables'
//! `ppp+`). A name must exist at start; a glob may match nothing yet. pmtu
//! then follows the kernel's link events (rtnetlink, RTMGRP_LINK): a served
//! interface that disappears is detached and waited for, and any interface
//! that appears under a selected name is attached, the same as at start.
//! That is what a router needs: ppp and WireGuard interfaces come and go with
//! their sessions, and a clamper that forgot them would quietly stop working.
//!
//! [`Tracker`] decides (pure, unit-tested); [`Interfaces`] carries the
//! decisions out through a command's [`Hooks`] and says what it did.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use futures_util::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    Handle,
    constants::RTMGRP_LINK,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        link::{LinkAttribute, LinkLayerType, LinkMessage},
    },
    sys::{AsyncSocket as _, SocketAddr},
};
use tokio::task::JoinHandle;

use crate::loader;

/// ARPHRD_* link types (include/uapi/linux/if_arp.h) pmtu handles.
pub mod arphrd {
    pub const ETHER: u16 = 1;
    pub const PPP: u16 = 512;
    pub const RAWIP: u16 = 519;
    /// ipip
    pub const TUNNEL: u16 = 768;
    /// ip6tnl
    pub const TUNNEL6: u16 = 769;
    pub const LOOPBACK: u16 = 772;
    pub const SIT: u16 = 776;
    /// gre (gretap is Ethernet)
    pub const IPGRE: u16 = 778;
    pub const IP6GRE: u16 = 823;
    /// tun and WireGuard
    pub const NONE: u16 = 65534;
    pub const CAN: u16 = 280;
}

/// How packets on an interface are framed, which decides the programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// An Ethernet header first (loopback too: it carries a zeroed one).
    Ethernet,
    /// The IP header first: tun, WireGuard, PPP, IP-in-IP, GRE, SIT.
    L3,
}

/// The framing of link type `link_type`, or `None` if pmtu cannot parse it.
pub fn link_kind(link_type: u16) -> Option<LinkKind> {
    match link_type {
        arphrd::ETHER | arphrd::LOOPBACK => Some(LinkKind::Ethernet),
        arphrd::NONE
        | arphrd::PPP
        | arphrd::RAWIP
        | arphrd::TUNNEL
        | arphrd::TUNNEL6
        | arphrd::SIT
        | arphrd::IPGRE
        | arphrd::IP6GRE => Some(LinkKind::L3),
        _ => None,
    }
}

/// The kernel's name for a link type ("CAN", "INFINIBAND", ...).
fn type_name(link_type: u16) -> String {
    match LinkLayerType::from(link_type) {
        // netlink-packet-route maps types it does not know to Void.
        LinkLayerType::Void if link_type != u16::from(LinkLayerType::Void) => "unknown".to_string(),
        known => known.to_string(),
    }
}

/// Why pmtu refuses interface `name` of link type `link_type`.
pub fn unsupported(name: &str, link_type: u16) -> String {
    format!(
        "{name}: link type {link_type} ({}) is not supported; pmtu handles Ethernet and L3 \
         (tun, WireGuard, PPP, IP tunnels) interfaces",
        type_name(link_type)
    )
}

/// One network interface, as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub index: u32,
    pub name: String,
    /// ARPHRD_*
    pub link_type: u16,
}

impl Iface {
    /// From an RTM_NEWLINK message (a dump answer or an event); `None` for
    /// a message without a name, or about a bridge port (AF_BRIDGE), which
    /// says nothing about the device itself.
    fn from_message(msg: &LinkMessage) -> Option<Self> {
        if msg.header.interface_family != AddressFamily::Unspec {
            return None;
        }
        let name = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })?;
        Some(Self { index: msg.header.index, name, link_type: u16::from(msg.header.link_layer_type) })
    }
}

/// One `-i` argument.
#[derive(Clone, Debug)]
enum Selector {
    Name(String),
    Glob(glob::Pattern),
}

impl Selector {
    fn arg(&self) -> &str {
        match self {
            Selector::Name(n) => n,
            Selector::Glob(g) => g.as_str(),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Selector::Name(n) => n == name,
            Selector::Glob(g) => g.matches(name),
        }
    }
}

/// Interface names are at most IFNAMSIZ - 1 bytes.
const MAX_NAME: usize = libc::IFNAMSIZ - 1;

/// The `-i` arguments of a command: names and globs.
#[derive(Clone, Debug)]
pub struct Selectors(Vec<Selector>);

impl Selectors {
    /// Parses `-i` arguments. A repeated one is an error (the kernel would
    /// refuse the second attachment with a bare "File exists"), and so is
    /// an argument that can name no interface.
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for arg in args {
            if !seen.insert(arg.as_str()) {
                bail!("-i {arg} is given twice; give each interface or pattern once");
            }
            if arg.is_empty() {
                bail!("-i needs an interface name or pattern, not an empty string");
            }
            if arg.contains(['*', '?', '[']) {
                let pattern = glob::Pattern::new(arg).map_err(|e| anyhow!("-i {arg}: not a valid pattern: {e}"))?;
                out.push(Selector::Glob(pattern));
            } else {
                if arg.len() > MAX_NAME || arg.contains(['/', ':']) || arg.contains(char::is_whitespace) {
                    bail!("-i {arg}: not a valid interface name (at most {MAX_NAME} bytes, no '/', ':' or spaces)");
                }
                out.push(Selector::Name(arg.clone()));
            }
        }
        Ok(Self(out))
    }

    /// The argument that selects `name`, if any (names before globs).
    pub fn selecting(&self, name: &str) -> Option<&str> {
        let named = self.0.iter().find(|s| matches!(s, Selector::Name(_)) && s.matches(name));
        named.or_else(|| self.0.iter().find(|s| s.matches(name))).map(Selector::arg)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|s| match s {
            Selector::Name(n) => Some(n.as_str()),
            Selector::Glob(_) => None,
        })
    }

    fn globs(&self) -> impl Iterator<Item = &glob::Pattern> {
        self.0.iter().filter_map(|s| match s {
            Selector::Glob(g) => Some(g),
            Selector::Name(_) => None,
        })
    }
}

/// What [`Tracker`] decides for one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Attach to it. `back` when this run served an interface of that name
    /// before.
    Attach { iface: Iface, kind: LinkKind, back: bool },
    /// Detach from it: it is gone (deleted, or moved to another namespace),
    /// or was renamed (`renamed_to`).
    Detach { index: u32, name: String, renamed_to: Option<String> },
    /// Its link type is one pmtu cannot parse: leave it alone.
    Refuse { iface: Iface },
    /// A new plan no longer selects it (`pmtu reload`).
    Unselect { index: u32, name: String },
}

/// Where the tracker stands with one selected interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// pmtu's programs are on it.
    Attached(LinkKind),
    /// Attaching waits for room (counter slots, open files).
    Waiting(LinkKind),
    /// Attaching failed; tried again if it reappears.
    Failed,
    /// Unsupported link type.
    Refused,
}

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    link_type: u16,
    state: State,
}

/// What pmtu knows of the selected interfaces, and what to do on each link
/// event. Pure: [`Interfaces`] acts on its answers.
#[derive(Debug)]
pub struct Tracker {
    selectors: Selectors,
    /// Selected interfaces by ifindex.
    entries: BTreeMap<u32, Entry>,
    /// Names attached at least once in this run.
    served: HashSet<String>,
}

/// What to do at start.
#[derive(Debug)]
pub struct StartPlan {
    pub actions: Vec<Action>,
    /// Things to tell the user (a glob that matches nothing yet, an
    /// unsupported interface a glob matches).
    pub notes: Vec<String>,
}

impl Tracker {
    pub fn new(selectors: Selectors) -> Self {
        Self { selectors, entries: BTreeMap::new(), served: HashSet::new() }
    }

    pub fn selectors(&self) -> &Selectors {
        &self.selectors
    }

    /// The plan for the interfaces present at start: every named one must
    /// exist and be supported; globs take what matches (names given first,
    /// in order, then the rest by ifindex).
    pub fn start(&mut self, present: &[Iface]) -> anyhow::Result<StartPlan> {
        let by_name: BTreeMap<&str, &Iface> = present.iter().map(|i| (i.name.as_str(), i)).collect();
        let mut order: Vec<&Iface> = Vec::new();
        for name in self.selectors.names() {
            let Some(iface) = by_name.get(name) else {
                let hint = match name.strip_suffix('+') {
                    Some(stem) => format!("; for every interface whose name starts with {stem}, use -i '{stem}*'"),
                    None => String::new(),
                };
                bail!("no such interface: {name} (see `ip link`){hint}");
            };
            if link_kind(iface.link_type).is_none() {
                bail!("{}", unsupported(name, iface.link_type));
            }
            order.push(iface);
        }
        let mut rest: Vec<&Iface> = present.iter().filter(|i| !order.iter().any(|o| o.index == i.index)).collect();
        rest.sort_by_key(|i| i.index);
        order.extend(rest);

        let mut plan = StartPlan { actions: Vec::new(), notes: Vec::new() };
        for iface in order {
            for action in self.on_new(iface.clone()) {
                match action {
                    Action::Refuse { iface } => {
                        let by = self.selectors.selecting(&iface.name).unwrap_or("?");
                        plan.notes.push(format!("{}; leaving it alone (matched -i '{by}')", unsupported(&iface.name, iface.link_type)));
                    }
                    other => plan.actions.push(other),
                }
            }
        }
        for glob in self.selectors.globs() {
            if !present.iter().any(|i| glob.matches(&i.name)) {
                plan.notes.push(format!("-i '{}' matches no interface yet; waiting for one to appear", glob.as_str()));
            }
        }
        Ok(plan)
    }

    /// RTM_NEWLINK: a new interface, a renamed one, or only a change of
    /// state (up, down, MTU, ...), which needs nothing.
    pub fn on_new(&mut self, iface: Iface) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(entry) = self.entries.get(&iface.index) {
            if entry.name == iface.name {
                return actions;
            }
            // Renamed: what pmtu attached under the old name goes; the new
            // name is judged afresh (and counted under itself).
            if let Some(old) = self.entries.remove(&iface.index)
                && matches!(old.state, State::Attached(_))
            {
                actions.push(Action::Detach { index: iface.index, name: old.name, renamed_to: Some(iface.name.clone()) });
            }
        }
        if self.selectors.selecting(&iface.name).is_none() {
            return actions;
        }
        let (state, action) = match link_kind(iface.link_type) {
            Some(kind) => {
                let back = self.served.contains(&iface.name);
                (State::Attached(kind), Action::Attach { iface: iface.clone(), kind, back })
            }
            None => (State::Refused, Action::Refuse { iface: iface.clone() }),
        };
        self.entries.insert(iface.index, Entry { name: iface.name, link_type: iface.link_type, state });
        actions.push(action);
        actions
    }

    /// RTM_DELLINK: the interface is gone.
    pub fn on_del(&mut self, index: u32) -> Vec<Action> {
        match self.entries.remove(&index) {
            Some(Entry { name, state: State::Attached(_), .. }) => vec![Action::Detach { index, name, renamed_to: None }],
            _ => Vec::new(),
        }
    }

    /// A new set of selectors (a reloaded config): interfaces no longer
    /// selected are let go, newly selected present ones are taken on; the
    /// rest stay as they are (what is done on them is the plan's business).
    pub fn reselect(&mut self, selectors: Selectors, present: &[Iface]) -> Vec<Action> {
        self.selectors = selectors;
        let dropped: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, e)| self.selectors.selecting(&e.name).is_none())
            .map(|(index, _)| *index)
            .collect();
        let mut actions = Vec::new();
        for index in dropped {
            if let Some(Entry { name, state: State::Attached(_), .. }) = self.entries.remove(&index) {
                actions.push(Action::Unselect { index, name });
            }
        }
        for iface in present {
            if !self.entries.contains_key(&iface.index) {
                actions.extend(self.on_new(iface.clone()));
            }
        }
        actions
    }

    /// Globs that match none of `present`.
    pub fn unmatched_globs(&self, present: &[Iface]) -> Vec<String> {
        self.selectors
            .globs()
            .filter(|g| !present.iter().any(|i| g.matches(&i.name)))
            .map(|g| g.as_str().to_string())
            .collect()
    }

    /// After lost events: compares with the full list of interfaces.
    pub fn resync(&mut self, present: &[Iface]) -> Vec<Action> {
        let gone: Vec<u32> = self
            .entries
            .keys()
            .copied()
            .filter(|index| !present.iter().any(|i| i.index == *index))
            .collect();
        let mut actions: Vec<Action> = gone.into_iter().flat_map(|index| self.on_del(index)).collect();
        for iface in present {
            actions.extend(self.on_new(iface.clone()));
        }
        actions
    }

    /// Records how an [`Action::Attach`] went.
    pub fn set_state(&mut self, index: u32, state: State) {
        if let Some(entry) = self.entries.get_mut(&index) {
            entry.state = state;
            if matches!(state, State::Attached(_)) {
                self.served.insert(entry.name.clone());
            }
        }
    }

    /// Interfaces waiting for room, by ifindex.
    pub fn waiting(&self) -> Vec<(Iface, LinkKind)> {
        self.entries
            .iter()
            .filter_map(|(index, e)| match e.state {
                State::Waiting(kind) => {
                    Some((Iface { index: *index, name: e.name.clone(), link_type: e.link_type }, kind))
                }
                _ => None,
            })
            .collect()
    }

    /// Interfaces pmtu is attached to, by ifindex.
    pub fn attached(&self) -> Vec<(u32, String)> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Attached(_)))
            .map(|(index, e)| (*index, e.name.clone()))
            .collect()
    }
}

/// A link event, or what stands for lost ones.
#[derive(Debug)]
pub enum LinkEvent {
    New(Iface),
    Del(u32),
    /// The kernel dropped events (the socket's buffer was full): compare
    /// with a fresh dump.
    Resync,
    /// The netlink socket closed: open another, then compare.
    Closed,
}

/// A netlink route socket subscribed to link events (RTMGRP_LINK), which
/// also answers dumps. Subscribing happens before the first dump, so no
/// change between the two is missed.
pub struct LinkWatch {
    handle: Handle,
    messages: futures_util::stream::BoxStream<'static, (NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    connection: JoinHandle<()>,
}

/// A dump that gets no answer in this long is an error, not a hang.
const DUMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Asked for the socket's receive buffer: link events come in bursts (a
/// BRAS's sessions dropping at once); the kernel caps it at rmem_max, and
/// what still overflows is recovered by a resync.
const EVENT_BUFFER: usize = 4 << 20;

impl LinkWatch {
    /// Opens the socket and subscribes. Needs a tokio runtime.
    pub fn open() -> anyhow::Result<Self> {
        let (mut connection, handle, messages) =
            rtnetlink::new_connection().context("opening a netlink route socket")?;
        let socket = connection.socket_mut().socket_mut();
        socket
            .set_rx_buf_sz(EVENT_BUFFER)
            .context("sizing the netlink socket's receive buffer")?;
        socket
            .bind(&SocketAddr::new(0, RTMGRP_LINK))
            .context("subscribing to link events (RTMGRP_LINK)")?;
        let connection = tokio::spawn(connection);
        Ok(Self { handle, messages: messages.boxed(), connection })
    }

    /// Every interface in this network namespace.
    pub async fn dump(&self) -> anyhow::Result<Vec<Iface>> {
        let collect = async {
            let mut links = self.handle.link().get().execute();
            let mut out = Vec::new();
            while let Some(msg) = links.try_next().await.context("listing interfaces (RTM_GETLINK)")? {
                out.extend(Iface::from_message(&msg));
            }
            anyhow::Ok(out)
        };
        tokio::time::timeout(DUMP_TIMEOUT, collect)
            .await
            .map_err(|_| anyhow!("listing interfaces (RTM_GETLINK): no answer in {DUMP_TIMEOUT:?}"))?
    }

    /// The next link event. Cancel-safe (use it in `select!`).
    pub async fn next(&mut self) -> LinkEvent {
        loop {
            let Some((msg, _)) = self.messages.next().await else {
                return LinkEvent::Closed;
            };
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    if let Some(iface) = Iface::from_message(&link) {
                        return LinkEvent::New(iface);
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link))
                    if link.header.interface_family == AddressFamily::Unspec =>
                {
                    return LinkEvent::Del(link.header.index);
                }
                NetlinkPayload::Overrun(_) => return LinkEvent::Resync,
                _ => {}
            }
        }
    }
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        // The connection task owns the socket; it would otherwise run until
        // the runtime ends.
        self.connection.abort();
    }
}

/// What a command does to an interface.
pub trait Hooks {
    /// For messages: "clamping", "tracing".
    fn verb(&self) -> &'static str;
    /// How many more interfaces can be attached now (counter slots, open
    /// files), checked before each attach.
    fn room(&self) -> usize;
    /// Attaches to `iface`; returns what to tell the user, one line each
    /// (without the "pmtu: " prefix).
    fn attach(&mut self, iface: &Iface, kind: LinkKind) -> anyhow::Result<Vec<String>>;
    /// Detaches from interface `index`, named `name`, whether it is gone
    /// or pmtu is stopping.
    fn detach(&mut self, index: u32, name: &str) -> anyhow::Result<()>;
}

/// The selected interfaces, subscribed and listed, before anything is
/// loaded: every error in the command line shows before the first attach.
pub struct Prepared {
    watch: LinkWatch,
    tracker: Tracker,
    plan: StartPlan,
    present: Vec<Iface>,
}

impl Prepared {
    /// Parses the `-i` arguments, subscribes to link events, lists the
    /// interfaces, and plans.
    pub async fn new(args: &[String]) -> anyhow::Result<Self> {
        let mut tracker = Tracker::new(Selectors::parse(args)?);
        let watch = LinkWatch::open()?;
        let present = watch.dump().await?;
        let plan = tracker.start(&present)?;
        Ok(Self { watch, tracker, plan, present })
    }

    /// Fails if a glob matches no interface now: a config file names what
    /// a router has, and a pattern that matches nothing is a mistake to hear
    /// of before anything is attached.
    pub fn require_globs_match(&self, origin: &str) -> anyhow::Result<()> {
        let unmatched = self.tracker.unmatched_globs(&self.present);
        if let Some(glob) = unmatched.first() {
            bail!("{origin}: interface pattern '{glob}' matches no interface (see `ip link`)");
        }
        Ok(())
    }

    /// How many interfaces the start will attach to.
    pub fn to_attach(&self) -> usize {
        self.plan.actions.iter().filter(|a| matches!(a, Action::Attach { .. })).count()
    }
}

/// A command's interfaces, followed as they come and go.
pub struct Interfaces<H: Hooks> {
    watch: LinkWatch,
    tracker: Tracker,
    pub hooks: H,
}

impl<H: Hooks> Interfaces<H> {
    /// Attaches to what `prepared` planned, printing what it does. Any
    /// failure here is an error: the command line asked for it.
    pub fn start(prepared: Prepared, hooks: H) -> anyhow::Result<Self> {
        let Prepared { watch, tracker, plan, .. } = prepared;
        let wanted = plan.actions.iter().filter(|a| matches!(a, Action::Attach { .. })).count();
        if wanted > hooks.room() {
            bail!(
                "{wanted} interfaces selected, but there is room for {} (counter slots, or open files: \
                 every attachment is one; raise the hard limit, `ulimit -Hn`)",
                hooks.room()
            );
        }
        let mut this = Self { watch, tracker, hooks };
        for note in &plan.notes {
            eprintln!("pmtu: {note}");
        }
        for action in plan.actions {
            let Action::Attach { iface, kind, .. } = action else { continue };
            match this.hooks.attach(&iface, kind) {
                Ok(lines) => {
                    this.tracker.set_state(iface.index, State::Attached(kind));
                    for line in lines {
                        eprintln!("pmtu: {line}");
                    }
                }
                // Deleted since the listing (loading takes a while, and ppp
                // sessions end when they will): the same as a later exit.
                Err(_) if loader::ifindex(&iface.name).ok() != Some(iface.index) => {
                    this.tracker.set_state(iface.index, State::Failed);
                    this.tracker.on_del(iface.index);
                    eprintln!("pmtu: {}: gone; waiting for it to return", iface.name);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(this)
    }

    /// How many interfaces pmtu is attached to.
    pub fn attached(&self) -> usize {
        self.tracker.attached().len()
    }

    /// The next link event. Cancel-safe.
    pub async fn next_event(&mut self) -> LinkEvent {
        self.watch.next().await
    }

    /// Takes new selectors (a reloaded config) and acts on the difference.
    pub async fn reselect(&mut self, selectors: Selectors) -> anyhow::Result<()> {
        let present = self.watch.dump().await?;
        let actions = self.tracker.reselect(selectors, &present);
        self.act(actions);
        Ok(())
    }

    /// Lets go of the interfaces without detaching (the daemon's
    /// `on-exit = "keep"`; its links are pinned).
    pub fn into_hooks(self) -> H {
        self.hooks
    }

    /// Acts on one link event, printing what it does. Fails only when link
    /// events can no longer be followed.
    pub async fn apply(&mut self, event: LinkEvent) -> anyhow::Result<()> {
        let actions = match event {
            LinkEvent::New(iface) => self.tracker.on_new(iface),
            LinkEvent::Del(index) => self.tracker.on_del(index),
            LinkEvent::Resync => match self.watch.dump().await {
                Ok(present) => self.tracker.resync(&present),
                Err(e) => {
                    // The next overrun or event tries again.
                    eprintln!("pmtu: link events were lost and listing interfaces failed ({e:#}); carrying on");
                    Vec::new()
                }
            },
            LinkEvent::Closed => {
                self.watch = LinkWatch::open().context("the netlink socket closed; opening another failed")?;
                let present = self.watch.dump().await?;
                self.tracker.resync(&present)
            }
        };
        self.act(actions);
        Ok(())
    }

    fn act(&mut self, actions: Vec<Action>) {
        let verb = self.hooks.verb();
        let mut detached = false;
        for action in actions {
            match action {
                Action::Detach { index, name, renamed_to } => {
                    match &renamed_to {
                        None => eprintln!("pmtu: {name}: gone; waiting for it to return"),
                        Some(new) => eprintln!("pmtu: {name}: renamed to {new} (ifindex {index}); no longer {verb} it under its old name"),
                    }
                    if let Err(e) = self.hooks.detach(index, &name) {
                        eprintln!("pmtu: {name}: detaching: {e:#}");
                    }
                    detached = true;
                }
                Action::Refuse { iface } => {
                    eprintln!("pmtu: {}; leaving it alone", unsupported(&iface.name, iface.link_type));
                }
                Action::Unselect { index, name } => {
                    eprintln!("pmtu: {name}: no longer selected; detaching");
                    if let Err(e) = self.hooks.detach(index, &name) {
                        eprintln!("pmtu: {name}: detaching: {e:#}");
                    }
                    detached = true;
                }
                Action::Attach { iface, kind, back } => {
                    if back {
                        eprintln!("pmtu: {}: back (ifindex {}); {verb} again", iface.name, iface.index);
                    } else {
                        let by = self.tracker.selectors().selecting(&iface.name).unwrap_or("?");
                        eprintln!("pmtu: {}: appeared (ifindex {}), matches -i '{by}'; {verb} it", iface.name, iface.index);
                    }
                    self.attach(&iface, kind);
                }
            }
        }
        if detached {
            // Room freed: serve those that waited for it, oldest ifindex first.
            for (iface, kind) in self.tracker.waiting() {
                if self.hooks.room() == 0 {
                    break;
                }
                eprintln!("pmtu: {}: room now; {verb} it", iface.name);
                self.attach(&iface, kind);
            }
        }
    }

    fn attach(&mut self, iface: &Iface, kind: LinkKind) {
        let verb = self.hooks.verb();
        if self.hooks.room() == 0 {
            eprintln!(
                "pmtu: {}: NOT {verb} it: no room (counter slots or open files all in use); it will be when another interface goes",
                iface.name
            );
            self.tracker.set_state(iface.index, State::Waiting(kind));
            return;
        }
        match self.hooks.attach(iface, kind) {
            Ok(lines) => {
                self.tracker.set_state(iface.index, State::Attached(kind));
                for line in lines {
                    eprintln!("pmtu: {line}");
                }
            }
            Err(e) => {
                self.tracker.set_state(iface.index, State::Failed);
                eprintln!("pmtu: {}: NOT {verb} it: {e:#}", iface.name);
            }
        }
    }

    /// Detaches from every interface; returns the hooks for the report and
    /// the first failure, if any.
    pub fn stop(mut self) -> (H, anyhow::Result<()>) {
        let mut first_err = None;
        for (index, name) in self.tracker.attached() {
            if let Err(e) = self.hooks.detach(index, &name)
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        (self.hooks, first_err.map_or(Ok(()), Err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(args: &[&str]) -> Selectors {
        Selectors::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn parse_err(args: &[&str]) -> String {
        format!("{:#}", Selectors::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err())
    }

    fn iface(index: u32, name: &str, link_type: u16) -> Iface {
        Iface { index, name: name.to_string(), link_type }
    }

    #[test]
    fn link_types_map_to_framings() {
        for t in [arphrd::ETHER, arphrd::LOOPBACK] {
            assert_eq!(link_kind(t), Some(LinkKind::Ethernet), "{t}");
        }
        for t in [
            arphrd::NONE,
            arphrd::PPP,
            arphrd::RAWIP,
            arphrd::TUNNEL,
            arphrd::TUNNEL6,
            arphrd::SIT,
            arphrd::IPGRE,
            arphrd::IP6GRE,
        ] {
            assert_eq!(link_kind(t), Some(LinkKind::L3), "{t}");
        }
        // CAN, InfiniBand, 802.11 radiotap, IEEE 802.15.4, void: refused.
        for t in [arphrd::CAN, 32, 803, 804, 0xffff, 0] {
            assert_eq!(link_kind(t), None, "{t}");
        }
        assert_eq!(
            unsupported("can0", arphrd::CAN),
            "can0: link type 280 (CAN) is not supported; pmtu handles Ethernet and L3 \
             (tun, WireGuard, PPP, IP tunnels) interfaces"
        );
        assert!(unsupported("x", 4242).contains("link type 4242 (unknown)"), "{}", unsupported("x", 4242));
    }

    #[test]
    fn repeated_or_bad_selectors_are_errors() {
        assert_eq!(parse_err(&["eth0", "eth1", "eth0"]), "-i eth0 is given twice; give each interface or pattern once");
        assert_eq!(parse_err(&["ppp*", "wg*", "ppp*"]), "-i ppp* is given twice; give each interface or pattern once");
        assert!(parse_err(&[""]).contains("empty"));
        assert!(parse_err(&["averyveryverylongname0"]).contains("not a valid interface name"));
        assert!(parse_err(&["a/b"]).contains("not a valid interface name"));
        assert!(parse_err(&["ppp[0-"]).contains("not a valid pattern"));
        // A name and a glob that matches it are both fine: the interface is served once.
        let s = sel(&["ppp0", "ppp*"]);
        assert_eq!(s.selecting("ppp0"), Some("ppp0"));
        assert_eq!(s.selecting("ppp1"), Some("ppp*"));
        assert_eq!(s.selecting("eth0"), None);
    }

    #[test]
    fn globs_match_as_shell_patterns() {
        let s = sel(&["ppp*", "wg?", "vx[ab]"]);
        for name in ["ppp", "ppp0", "ppp12345", "wg0", "vxa"] {
            assert!(s.selecting(name).is_some(), "{name}");
        }
        for name in ["eth0", "wg10", "vxc", "xppp0"] {
            assert!(s.selecting(name).is_none(), "{name}");
        }
    }

    #[test]
    fn start_plan_names_then_glob_matches() {
        let present = [
            iface(1, "lo", arphrd::LOOPBACK),
            iface(2, "eth0", arphrd::ETHER),
            iface(3, "ppp1", arphrd::PPP),
            iface(4, "ppp0", arphrd::PPP),
            iface(5, "pppcan", arphrd::CAN),
            iface(6, "wg0", arphrd::NONE),
        ];
        let mut t = Tracker::new(sel(&["wg0", "ppp*", "eth0", "vx*"]));
        let plan = t.start(&present).unwrap();
        let order: Vec<(&str, LinkKind)> = plan
            .actions
            .iter()
            .map(|a| match a {
                Action::Attach { iface, kind, back: false } => (iface.name.as_str(), *kind),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            order,
            [("wg0", LinkKind::L3), ("eth0", LinkKind::Ethernet), ("ppp1", LinkKind::L3), ("ppp0", LinkKind::L3)]
        );
        assert_eq!(plan.notes.len(), 2, "{:?}", plan.notes);
        assert!(plan.notes[0].starts_with("pppcan: link type 280 (CAN) is not supported"), "{:?}", plan.notes);
        assert!(plan.notes[0].ends_with("leaving it alone (matched -i 'ppp*')"), "{:?}", plan.notes);
        assert_eq!(plan.notes[1], "-i 'vx*' matches no interface yet; waiting for one to appear");
    }

    #[test]
    fn start_refuses_missing_or_unsupported_names() {
        let present = [iface(1, "lo", arphrd::LOOPBACK), iface(2, "can0", arphrd::CAN)];
        let err = Tracker::new(sel(&["lo", "nope0"])).start(&present).unwrap_err();
        assert_eq!(format!("{err:#}"), "no such interface: nope0 (see `ip link`)");
        let err = Tracker::new(sel(&["ppp+"])).start(&present).unwrap_err();
        assert!(format!("{err:#}").ends_with("use -i 'ppp*'"), "{err:#}");
        let err = Tracker::new(sel(&["can0"])).start(&present).unwrap_err();
        assert_eq!(format!("{err:#}"), unsupported("can0", arphrd::CAN));
        // A glob matching nothing is fine.
        let plan = Tracker::new(sel(&["vx*"])).start(&present).unwrap();
        assert!(plan.actions.is_empty());
    }

    #[test]
    fn interfaces_go_and_come_back() {
        let mut t = Tracker::new(sel(&["veth0", "ppp*"]));
        let plan = t.start(&[iface(7, "veth0", arphrd::ETHER)]).unwrap();
        assert_eq!(plan.actions.len(), 1);
        t.set_state(7, State::Attached(LinkKind::Ethernet));
        // A change of state (up, MTU) needs nothing.
        assert!(t.on_new(iface(7, "veth0", arphrd::ETHER)).is_empty());
        assert_eq!(t.on_del(7), [Action::Detach { index: 7, name: "veth0".into(), renamed_to: None }]);
        assert!(t.on_del(7).is_empty(), "a second DELLINK is nothing");
        assert_eq!(
            t.on_new(iface(9, "veth0", arphrd::ETHER)),
            [Action::Attach { iface: iface(9, "veth0", arphrd::ETHER), kind: LinkKind::Ethernet, back: true }]
        );
        t.set_state(9, State::Attached(LinkKind::Ethernet));
        // New interfaces: matching ones are attached, others ignored.
        assert_eq!(
            t.on_new(iface(10, "ppp0", arphrd::PPP)),
            [Action::Attach { iface: iface(10, "ppp0", arphrd::PPP), kind: LinkKind::L3, back: false }]
        );
        assert!(t.on_new(iface(11, "eth5", arphrd::ETHER)).is_empty());
        assert_eq!(t.on_new(iface(12, "pppx", arphrd::CAN)), [Action::Refuse { iface: iface(12, "pppx", arphrd::CAN) }]);
        assert!(t.on_new(iface(12, "pppx", arphrd::CAN)).is_empty(), "refused once, not on every change");
        // An attach that failed is not a served name, and is not detached.
        t.set_state(10, State::Failed);
        assert!(t.on_del(10).is_empty());
        assert_eq!(
            t.on_new(iface(13, "ppp0", arphrd::PPP)),
            [Action::Attach { iface: iface(13, "ppp0", arphrd::PPP), kind: LinkKind::L3, back: false }]
        );
    }

    #[test]
    fn renames_detach_and_judge_the_new_name() {
        let mut t = Tracker::new(sel(&["ppp*"]));
        t.start(&[iface(4, "ppp0", arphrd::PPP)]).unwrap();
        t.set_state(4, State::Attached(LinkKind::L3));
        assert_eq!(
            t.on_new(iface(4, "ppp1", arphrd::PPP)),
            [
                Action::Detach { index: 4, name: "ppp0".into(), renamed_to: Some("ppp1".into()) },
                Action::Attach { iface: iface(4, "ppp1", arphrd::PPP), kind: LinkKind::L3, back: false },
            ]
        );
        t.set_state(4, State::Attached(LinkKind::L3));
        assert_eq!(
            t.on_new(iface(4, "eth9", arphrd::PPP)),
            [Action::Detach { index: 4, name: "ppp1".into(), renamed_to: Some("eth9".into()) }]
        );
        assert!(t.attached().is_empty());
    }

    #[test]
    fn waiting_interfaces_are_listed_and_resync_finds_changes() {
        let mut t = Tracker::new(sel(&["ppp*"]));
        t.start(&[iface(4, "ppp0", arphrd::PPP), iface(5, "ppp1", arphrd::PPP)]).unwrap();
        t.set_state(4, State::Attached(LinkKind::L3));
        t.set_state(5, State::Waiting(LinkKind::L3));
        assert_eq!(t.waiting(), [(iface(5, "ppp1", arphrd::PPP), LinkKind::L3)]);
        assert_eq!(t.attached(), [(4, "ppp0".to_string())]);
        // Events lost: ppp0 went, ppp2 came.
        let actions = t.resync(&[iface(5, "ppp1", arphrd::PPP), iface(8, "ppp2", arphrd::PPP)]);
        assert_eq!(
            actions,
            [
                Action::Detach { index: 4, name: "ppp0".into(), renamed_to: None },
                Action::Attach { iface: iface(8, "ppp2", arphrd::PPP), kind: LinkKind::L3, back: false },
            ]
        );
    }
}
