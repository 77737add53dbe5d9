//! The kernel's own PMTU cache on this host, beside pmtu's table.
//!
//! For each destination pmtu asks what `ip route get D` asks: RTM_GETROUTE
//! with RTA_DST, over rtnetlink. The answer carries the cached PMTU as
//! RTA_METRICS (RTAX_MTU, and RTAX_LOCK bit RTAX_MTU for `mtu lock`) and its
//! remaining life as RTA_CACHEINFO `rta_expires` (clock_t, USER_HZ), which
//! `ip route get` prints as `cache expires N mtu [lock] M`: IPv4's
//! `rt_fill_info()` reports `rt_pmtu` and the lock only while the nexthop
//! exception has not expired; IPv6's `rt6_fill_node()` marks an exception
//! route RTM_F_CLONED (RTF_CACHE).
//!
//! Only PTBs this host received shape its cache. A PTB in transit shapes the
//! cache of the host it is addressed to, not this router's; one this host
//! sent says what its own route allows. So received destinations are
//! compared with the cache, sent ones with the route's MTU, and transit
//! ones are not asked.
//!
//! Also here: the sysctls the table's rules use, read from /proc.

use std::{net::IpAddr, time::Duration};

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle,
    packet_route::{
        AddressFamily,
        link::LinkAttribute,
        route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteMetric},
    },
};
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::{
    decode::Direction,
    table::{DEFAULT_EXPIRES_SECS, DEFAULT_MIN_PMTU, NS, Row, Rules},
};

// ---- sysctls ----

pub const MIN_PMTU_PATH: &str = "/proc/sys/net/ipv4/route/min_pmtu";
pub const MTU_EXPIRES_V4_PATH: &str = "/proc/sys/net/ipv4/route/mtu_expires";
pub const MTU_EXPIRES_V6_PATH: &str = "/proc/sys/net/ipv6/route/mtu_expires";

/// This network namespace's PMTU sysctls (all per-namespace in Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sysctls {
    /// `net.ipv4.route.min_pmtu`.
    pub min_pmtu: u32,
    /// `net.ipv4.route.mtu_expires`, seconds.
    pub mtu_expires_v4_secs: u64,
    /// `net.ipv6.route.mtu_expires`, seconds.
    pub mtu_expires_v6_secs: u64,
}

impl Sysctls {
    pub const LINUX_DEFAULTS: Sysctls = Sysctls {
        min_pmtu: DEFAULT_MIN_PMTU,
        mtu_expires_v4_secs: DEFAULT_EXPIRES_SECS,
        mtu_expires_v6_secs: DEFAULT_EXPIRES_SECS,
    };

    /// Reads them; one that cannot be read keeps Linux's default, with a
    /// note saying so (a kernel without IPv6 has no net.ipv6).
    pub fn read() -> (Self, Vec<String>) {
        let mut notes = Vec::new();
        let mut read = |path: &str, default: u64| match std::fs::read_to_string(path) {
            Ok(text) => match parse_sysctl(&text) {
                Some(v) => v,
                None => {
                    notes.push(format!("{path}: cannot read {:?} as a number; using Linux's default {default}", text.trim()));
                    default
                }
            },
            Err(e) => {
                notes.push(format!("{path}: {e}; using Linux's default {default}"));
                default
            }
        };
        let d = Self::LINUX_DEFAULTS;
        let min_pmtu = read(MIN_PMTU_PATH, u64::from(d.min_pmtu));
        let v4 = read(MTU_EXPIRES_V4_PATH, d.mtu_expires_v4_secs);
        let v6 = read(MTU_EXPIRES_V6_PATH, d.mtu_expires_v6_secs);
        let this = Self {
            min_pmtu: u32::try_from(min_pmtu).unwrap_or(u32::MAX),
            mtu_expires_v4_secs: v4,
            mtu_expires_v6_secs: v6,
        };
        (this, notes)
    }

    /// The table's rules: these sysctls, or `--expires` for both families.
    pub fn rules(&self, expires_override_secs: Option<u64>) -> Rules {
        let (v4, v6) = match expires_override_secs {
            Some(secs) => (secs, secs),
            None => (self.mtu_expires_v4_secs, self.mtu_expires_v6_secs),
        };
        Rules::from_secs(v4, v6, self.min_pmtu)
    }

    pub fn expires_secs(&self, family: u8) -> u64 {
        if family == 4 { self.mtu_expires_v4_secs } else { self.mtu_expires_v6_secs }
    }
}

/// A sysctl file's number. The kernel writes mtu_expires in seconds
/// (proc_dointvec_jiffies); a negative one would mean "never", which pmtu
/// does not model, so it is refused.
fn parse_sysctl(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

// ---- the lookup ----

/// RTAX_LOCK's bit for RTAX_MTU (include/uapi/linux/rtnetlink.h: RTAX_MTU = 2).
const LOCK_MTU: u32 = 1 << 2;

/// A lookup that gets no answer in this long is an error, not a hang.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The kernel's cached PMTU toward a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelEntry {
    pub mtu: u32,
    pub locked: bool,
    /// Seconds left, as `ip route get` prints them.
    pub expires_secs: u64,
}

/// What the kernel says about a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelLookup {
    Route {
        /// The cached PMTU, if any.
        cache: Option<KernelEntry>,
        /// The route's own MTU: its `mtu` metric, else the device's (what a
        /// packet meets without a cached PMTU).
        route_mtu: Option<u32>,
    },
    /// No route (ENETUNREACH, EHOSTUNREACH...): nothing can be cached.
    NoRoute(String),
}

#[derive(Debug, Error)]
pub enum LookupError {
    #[error("RTM_GETROUTE {dst}: {source}")]
    Netlink {
        dst: IpAddr,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("RTM_GETROUTE {0}: no answer in {1:?}")]
    Timeout(IpAddr, Duration),
    #[error("RTM_GETROUTE {0}: the kernel sent no route")]
    Empty(IpAddr),
}

/// What a RTM_NEWROUTE answer says, before the device MTU is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub cache: Option<KernelEntry>,
    /// The route's RTAX_MTU when it is not the cached PMTU.
    pub metric_mtu: Option<u32>,
    pub oif: Option<u32>,
}

/// Reads an answer the way iproute2's `print_route()` does. `user_hz` is
/// sysconf(_SC_CLK_TCK), the unit of `rta_expires`.
pub fn read_answer(msg: &RouteMessage, user_hz: u64) -> Answer {
    let mut mtu = None;
    let mut lock = 0;
    let mut expires = 0u64;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Metrics(metrics) => {
                for m in metrics {
                    match m {
                        RouteMetric::Mtu(v) => mtu = Some(*v),
                        RouteMetric::Lock(v) => lock = *v,
                        _ => {}
                    }
                }
            }
            RouteAttribute::CacheInfo(ci) => expires = u64::from(ci.expires),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    // A cached PMTU: a clone (an IPv4 nexthop exception, an IPv6 RTF_CACHE
    // route) with an MTU and time left. rt_fill_info() always sets
    // RTM_F_CLONED for IPv4 and reports rt_pmtu only while it has not
    // expired; a route's own `mtu` metric comes without an expiry.
    let cloned = msg.header.flags.contains(RouteFlags::Cloned);
    let cache = match mtu {
        Some(m) if cloned && expires > 0 => {
            Some(KernelEntry { mtu: m, locked: lock & LOCK_MTU != 0, expires_secs: expires / user_hz.max(1) })
        }
        _ => None,
    };
    Answer { cache, metric_mtu: if cache.is_some() { None } else { mtu }, oif }
}

/// USER_HZ, the unit of RTA_CACHEINFO's times.
fn user_hz() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100)
}

/// A route netlink socket for lookups.
pub struct KernelCache {
    handle: Handle,
    connection: JoinHandle<()>,
    user_hz: u64,
}

impl KernelCache {
    /// Opens the socket. Needs a tokio runtime.
    pub fn open() -> anyhow::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection().context("opening a netlink route socket")?;
        Ok(Self { handle, connection: tokio::spawn(connection), user_hz: user_hz() })
    }

    /// `ip route get DST`.
    pub async fn lookup(&self, dst: IpAddr) -> Result<KernelLookup, LookupError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if dst.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
        let mut answers = self.handle.route().get(msg).execute();
        let first = tokio::time::timeout(LOOKUP_TIMEOUT, answers.try_next())
            .await
            .map_err(|_| LookupError::Timeout(dst, LOOKUP_TIMEOUT))?;
        let msg = match first {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err(LookupError::Empty(dst)),
            // The kernel refuses to route it: ENETUNREACH, EHOSTUNREACH,
            // EACCES (prohibit), EINVAL (blackhole)...
            Err(rtnetlink::Error::NetlinkError(e)) => return Ok(KernelLookup::NoRoute(e.to_io().to_string())),
            Err(source) => return Err(LookupError::Netlink { dst, source }),
        };
        let answer = read_answer(&msg, self.user_hz);
        let route_mtu = match (answer.metric_mtu, answer.oif) {
            (Some(m), _) => Some(m),
            // The device's MTU is what ipv4_mtu() / ip6_mtu() fall back to.
            (None, Some(oif)) => self.link_mtu(oif).await,
            (None, None) => None,
        };
        Ok(KernelLookup::Route { cache: answer.cache, route_mtu })
    }

    /// The MTU of interface `index`, if it says.
    async fn link_mtu(&self, index: u32) -> Option<u32> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let link = tokio::time::timeout(LOOKUP_TIMEOUT, links.try_next()).await.ok()?.ok()??;
        link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        })
    }
}

impl Drop for KernelCache {
    fn drop(&mut self) {
        // The connection task owns the socket; it would otherwise run until
        // the runtime ends.
        self.connection.abort();
    }
}

// ---- beside pmtu's table ----

/// The kernel column of one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelColumn {
    /// Not asked, and why.
    NotApplicable(&'static str),
    Looked(KernelLookup),
    Failed(String),
}

/// The kernel column and whether it agrees with pmtu's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelReport {
    pub column: KernelColumn,
    /// `None` when there is nothing to compare.
    pub agrees: Option<bool>,
    /// Why they differ, as far as pmtu knows.
    pub why: Option<String>,
}

pub const TRANSIT_NOTE: &str =
    "transit: a router keeps no PMTU cache for PTBs it forwards; the host they are addressed to does";
pub const UNKNOWN_NOTE: &str = "direction unknown: pmtu cannot tell which host's cache this is";

/// Whether to ask the kernel about a row at all.
pub fn applicable(direction: Direction) -> Result<(), &'static str> {
    match direction {
        Direction::Received | Direction::Sent => Ok(()),
        Direction::Transit => Err(TRANSIT_NOTE),
        Direction::Unknown => Err(UNKNOWN_NOTE),
    }
}

/// What the comparison needs besides the row and the answer.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    pub now_ns: u64,
    /// When pmtu started observing (monotonic ns).
    pub started_ns: u64,
    /// The kernel's own sysctls.
    pub sysctls: Sysctls,
    /// pmtu's rules (its expiry may be `--expires`).
    pub rules: Rules,
    /// Reports the kernel side could not deliver (ring_lost, rate-limited).
    pub lost_reports: u64,
}

const KERNEL_APPLIES: &str = "the kernel applies a PTB only through the socket or tunnel that sent the quoted packet";

fn reasons_text(bits: u16) -> String {
    pmtu_common::validate::REASON_NAMES
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The invalid report pmtu kept out that would have left the kernel with
/// `k` (`__ip_rt_update_pmtu()` turns an MTU under min_pmtu into min_pmtu,
/// locked).
fn rejected_match(row: &Row, k: &KernelEntry, min_pmtu: u32) -> Option<String> {
    row.rejected
        .iter()
        .rev()
        .find(|r| {
            if row.family == 4 && r.mtu < min_pmtu {
                k.locked && k.mtu <= min_pmtu
            } else {
                !k.locked && r.mtu == k.mtu
            }
        })
        .map(|r| {
            format!(
                "pmtu rejected a PTB the kernel applied: {} said mtu {} ({})",
                r.reporter,
                r.mtu,
                reasons_text(r.reasons)
            )
        })
}

/// Was the kernel's entry set before pmtu started? Every change sets its
/// expiry to mtu_expires ahead (IPv4: update_or_create_fnhe(); IPv6: when
/// the exception is made), so one with more time left than anything set
/// since the start could have is older.
fn predates(k: &KernelEntry, family: u8, ctx: &Context) -> bool {
    let since_start = ctx.now_ns.saturating_sub(ctx.started_ns) / NS;
    k.expires_secs.saturating_add(since_start) + 1 < ctx.sysctls.expires_secs(family)
}

fn expiry_note(family: u8, ctx: &Context) -> Option<String> {
    let pmtu = ctx.rules.expires_ns(family) / NS;
    let kernel = ctx.sysctls.expires_secs(family);
    (pmtu != kernel).then(|| format!("pmtu keeps entries {pmtu}s (--expires), the kernel {kernel}s"))
}

/// Compares pmtu's row with the kernel's answer for a received or sent
/// destination.
pub fn compare(row: &Row, lookup: &KernelLookup, ctx: &Context) -> (bool, Option<String>) {
    let (cache, route_mtu) = match lookup {
        KernelLookup::NoRoute(e) => {
            return match row.cache {
                Some(_) => (false, Some(format!("the kernel has no route to it ({e}), hence no cache"))),
                None => (true, None),
            };
        }
        KernelLookup::Route { cache, route_mtu } => (cache, *route_mtu),
    };
    if row.direction == Direction::Sent {
        return compare_sent(row, cache.as_ref(), route_mtu);
    }
    match (row.cache, cache) {
        (None, None) => (true, None),
        (Some(p), Some(k)) if p.pmtu == k.mtu && p.locked == k.locked => (true, None),
        (Some(p), Some(k)) => {
            let kernel_lower = k.mtu < p.pmtu || (k.locked && !p.locked);
            let why = if p.locked && k.locked && k.mtu < p.pmtu {
                // `mtu = min(old_mtu, ip_rt_min_pmtu)` with a route MTU pmtu
                // does not know.
                format!("the route's MTU ({}) is under min_pmtu: the kernel locks the lower", k.mtu)
            } else if kernel_lower {
                rejected_match(row, k, ctx.sysctls.min_pmtu)
                    .or_else(|| {
                        predates(k, row.family, ctx).then(|| "the kernel's entry dates from before pmtu started".to_string())
                    })
                    .or_else(|| {
                        (ctx.lost_reports > 0).then(|| {
                            format!("{} reports were lost or rate-limited before pmtu could read them", ctx.lost_reports)
                        })
                    })
                    .unwrap_or_else(|| {
                        "the kernel applied a PTB pmtu did not see (on an interface pmtu does not observe?)".to_string()
                    })
            } else if row.accepted_invalid > 0 {
                "pmtu tabled invalid PTBs (--accept-unvalidated) the kernel did not apply".to_string()
            } else if let Some(note) = expiry_note(row.family, ctx) {
                note
            } else {
                format!("the kernel did not apply pmtu's lower report (pmtu cannot tell why; {KERNEL_APPLIES})")
            };
            (false, Some(why))
        }
        (Some(p), None) => {
            // __ip_rt_update_pmtu(): `if (old_mtu < mtu) return;`
            // __ip6_rt_update_pmtu(): `if (mtu >= dst_mtu(dst)) return;`
            let not_below_route = route_mtu.filter(|r| if row.family == 4 { p.pmtu > *r } else { p.pmtu >= *r });
            let why = if let (Some(r), false) = (not_below_route, p.locked) {
                format!("the kernel ignores a report not below its route's MTU ({r})")
            } else if row.accepted_invalid > 0 {
                "pmtu tabled invalid PTBs (--accept-unvalidated) the kernel did not apply".to_string()
            } else if let Some(note) = expiry_note(row.family, ctx)
                && ctx.now_ns.saturating_sub(p.set_ns) / NS >= ctx.sysctls.expires_secs(row.family)
            {
                format!("expired in the kernel; {note}")
            } else {
                format!("the kernel has no entry (pmtu cannot tell why; {KERNEL_APPLIES})")
            };
            (false, Some(why))
        }
        (None, Some(k)) => {
            let why = rejected_match(row, k, ctx.sysctls.min_pmtu)
                .or_else(|| {
                    (row.expired > 0)
                        .then(|| expiry_note(row.family, ctx).map(|note| format!("expired in pmtu; {note}")))
                        .flatten()
                })
                .or_else(|| {
                    predates(k, row.family, ctx).then(|| "the kernel's entry dates from before pmtu started".to_string())
                })
                .unwrap_or_else(|| {
                    "the kernel applied a PTB pmtu did not see (on an interface pmtu does not observe?)".to_string()
                });
            (false, Some(why))
        }
    }
}

/// This host's own PTBs give the MTU of its route toward the destination
/// (ip_forward(), ip6_forward()): compare with that, or with a cached PMTU.
fn compare_sent(row: &Row, cache: Option<&KernelEntry>, route_mtu: Option<u32>) -> (bool, Option<String>) {
    let Some(p) = row.cache else {
        return (true, None);
    };
    if route_mtu == Some(p.pmtu) || cache.is_some_and(|k| k.mtu == p.pmtu) {
        return (true, None);
    }
    let now = match (cache, route_mtu) {
        (Some(k), _) => format!("a cached {}", k.mtu),
        (None, Some(r)) => format!("MTU {r}"),
        (None, None) => "no MTU pmtu could read".to_string(),
    };
    (
        false,
        Some(format!(
            "this host's PTBs said {}, its route toward {} now has {now} (changed since?)",
            p.pmtu, row.dst
        )),
    )
}

/// Asks the kernel about every row it applies to, within `budget`; the
/// rest are marked as not asked.
pub async fn reports(
    cache: Option<&KernelCache>,
    rows: &[Row],
    ctx: &Context,
    budget: Duration,
) -> Vec<KernelReport> {
    let deadline = tokio::time::Instant::now() + budget;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Err(note) = applicable(row.direction) {
            out.push(KernelReport { column: KernelColumn::NotApplicable(note), agrees: None, why: None });
            continue;
        }
        let Some(cache) = cache else {
            out.push(KernelReport {
                column: KernelColumn::Failed("no netlink socket".to_string()),
                agrees: None,
                why: None,
            });
            continue;
        };
        if tokio::time::Instant::now() >= deadline {
            out.push(KernelReport {
                column: KernelColumn::Failed(format!("not asked: {budget:?} spent on other destinations")),
                agrees: None,
                why: None,
            });
            continue;
        }
        out.push(match cache.lookup(row.dst).await {
            Ok(lookup) => {
                let (agrees, why) = compare(row, &lookup, ctx);
                KernelReport { column: KernelColumn::Looked(lookup), agrees: Some(agrees), why }
            }
            Err(e) => KernelReport { column: KernelColumn::Failed(e.to_string()), agrees: None, why: None },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{CacheRow, IgnoredCounts, RejectedReport};
    use pmtu_common::validate::REASON_UNKNOWN_FLOW;
    use rtnetlink::packet_route::route::RouteCacheInfo;

    fn answer_msg(flags: RouteFlags, metrics: Vec<RouteMetric>, expires: u32) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.flags = flags;
        msg.attributes.push(RouteAttribute::Oif(3));
        if !metrics.is_empty() {
            msg.attributes.push(RouteAttribute::Metrics(metrics));
        }
        let mut buf = [0u8; 32];
        buf[8..12].copy_from_slice(&expires.to_ne_bytes());
        msg.attributes.push(RouteAttribute::CacheInfo(RouteCacheInfo::parse(&buf).unwrap()));
        msg
    }

    #[test]
    fn reads_cache_expires_mtu_and_lock_as_ip_route_get() {
        // `cache expires 597sec mtu 1350`
        let a = read_answer(&answer_msg(RouteFlags::Cloned, vec![RouteMetric::Mtu(1350)], 59_700), 100);
        assert_eq!(a.cache, Some(KernelEntry { mtu: 1350, locked: false, expires_secs: 597 }));
        assert_eq!((a.metric_mtu, a.oif), (None, Some(3)));
        // `cache expires 598sec mtu lock 552`
        let a = read_answer(
            &answer_msg(RouteFlags::Cloned, vec![RouteMetric::Lock(LOCK_MTU), RouteMetric::Mtu(552)], 59_800),
            100,
        );
        assert_eq!(a.cache, Some(KernelEntry { mtu: 552, locked: true, expires_secs: 598 }));
        // `cache` alone (IPv4, no exception): nothing cached.
        let a = read_answer(&answer_msg(RouteFlags::Cloned, vec![], 0), 100);
        assert_eq!(a.cache, None);
        // A route's own `mtu 1400` metric: not a cache, but the route's MTU.
        let a = read_answer(&answer_msg(RouteFlags::empty(), vec![RouteMetric::Mtu(1400)], 0), 100);
        assert_eq!((a.cache, a.metric_mtu), (None, Some(1400)));
    }

    fn row(direction: Direction, family: u8, cache: Option<(u32, bool)>) -> Row {
        Row {
            dst: if family == 4 { "192.168.7.2".parse().unwrap() } else { "fd54:54:54:3::2".parse().unwrap() },
            direction,
            family,
            cache: cache.map(|(pmtu, locked)| CacheRow { pmtu, locked, expires_in_secs: 597, set_ns: 100 * NS }),
            reporters: Vec::new(),
            events: 1,
            accepted_invalid: 0,
            ignored: IgnoredCounts::default(),
            rejected_events: 0,
            rejected: Vec::new(),
            expired: 0,
            first_seen_ns: 100 * NS,
            last_seen_ns: 100 * NS,
        }
    }

    fn ctx() -> Context {
        Context {
            now_ns: 103 * NS,
            started_ns: 90 * NS,
            sysctls: Sysctls::LINUX_DEFAULTS,
            rules: Rules::LINUX_DEFAULTS,
            lost_reports: 0,
        }
    }

    fn cached(mtu: u32, locked: bool, expires_secs: u64) -> KernelLookup {
        KernelLookup::Route { cache: Some(KernelEntry { mtu, locked, expires_secs }), route_mtu: Some(1500) }
    }

    #[test]
    fn agreement() {
        let r = row(Direction::Received, 4, Some((1350, false)));
        assert_eq!(compare(&r, &cached(1350, false, 597), &ctx()), (true, None));
        let r = row(Direction::Received, 4, Some((552, true)));
        assert_eq!(compare(&r, &cached(552, true, 597), &ctx()), (true, None));
        let none = KernelLookup::Route { cache: None, route_mtu: Some(1500) };
        assert_eq!(compare(&row(Direction::Received, 4, None), &none, &ctx()), (true, None));
    }

    #[test]
    fn a_forged_ptb_the_kernel_applied_is_named() {
        let mut r = row(Direction::Received, 4, None);
        r.rejected.push(RejectedReport {
            reporter: "192.168.5.2".parse().unwrap(),
            mtu: 1000,
            reasons: REASON_UNKNOWN_FLOW,
            seen_ns: 101 * NS,
        });
        let (agrees, why) = compare(&r, &cached(1000, false, 598), &ctx());
        assert!(!agrees);
        assert_eq!(why.unwrap(), "pmtu rejected a PTB the kernel applied: 192.168.5.2 said mtu 1000 (unknown-flow)");
        // An MTU under min_pmtu the kernel turned into 552, locked.
        r.rejected[0].mtu = 60;
        let (_, why) = compare(&r, &cached(552, true, 598), &ctx());
        assert!(why.unwrap().contains("said mtu 60"));
    }

    #[test]
    fn the_kernel_without_an_entry() {
        let r = row(Direction::Received, 4, Some((1350, false)));
        let (agrees, why) = compare(&r, &KernelLookup::Route { cache: None, route_mtu: Some(1300) }, &ctx());
        assert!(!agrees);
        assert_eq!(why.unwrap(), "the kernel ignores a report not below its route's MTU (1300)");
        let (_, why) = compare(&r, &KernelLookup::Route { cache: None, route_mtu: Some(1500) }, &ctx());
        assert!(why.unwrap().starts_with("the kernel has no entry (pmtu cannot tell why"));
        let (agrees, why) = compare(&r, &KernelLookup::NoRoute("Network is unreachable".into()), &ctx());
        assert!(!agrees);
        assert!(why.unwrap().contains("no route"));
    }

    #[test]
    fn a_lock_under_min_pmtu_takes_the_route_mtu() {
        let r = row(Direction::Received, 4, Some((552, true)));
        let (agrees, why) = compare(&r, &cached(500, true, 598), &ctx());
        assert!(!agrees);
        assert!(why.unwrap().starts_with("the route's MTU (500) is under min_pmtu"));
    }

    #[test]
    fn an_older_kernel_entry_is_recognised() {
        // pmtu started 13 s ago; an entry with 400 s left was set ~200 s ago.
        let r = row(Direction::Received, 4, Some((1400, false)));
        let (_, why) = compare(&r, &cached(1300, false, 400), &ctx());
        assert_eq!(why.unwrap(), "the kernel's entry dates from before pmtu started");
    }

    #[test]
    fn sent_rows_compare_with_the_route_mtu() {
        let r = row(Direction::Sent, 4, Some((1370, false)));
        let route = KernelLookup::Route { cache: None, route_mtu: Some(1370) };
        assert_eq!(compare(&r, &route, &ctx()), (true, None));
        let route = KernelLookup::Route { cache: None, route_mtu: Some(1500) };
        assert!(!compare(&r, &route, &ctx()).0);
    }

    #[test]
    fn transit_is_not_asked() {
        assert_eq!(applicable(Direction::Transit), Err(TRANSIT_NOTE));
        assert_eq!(applicable(Direction::Received), Ok(()));
        assert_eq!(applicable(Direction::Sent), Ok(()));
    }

    #[test]
    fn sysctl_text() {
        assert_eq!(parse_sysctl("552\n"), Some(552));
        assert_eq!(parse_sysctl("-1\n"), None);
        let s = Sysctls { min_pmtu: 1000, mtu_expires_v4_secs: 60, mtu_expires_v6_secs: 30 };
        assert_eq!(s.rules(None), Rules::from_secs(60, 30, 1000));
        assert_eq!(s.rules(Some(5)), Rules::from_secs(5, 5, 1000));
    }
}
