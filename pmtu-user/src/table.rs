//! The PMTU table: what the kernel's own PMTU cache holds after the same
//! Packet-Too-Big messages, per destination and per direction.
//!
//! Each report goes through the rules Linux applies when a PTB reaches it
//! (seed 004: `ip route get D` shows the result as `cache expires N mtu
//! [lock] M`):
//!
//! * IPv4, `__ip_rt_update_pmtu()` (net/ipv4/route.c): a report only lowers
//!   the PMTU; one under `net.ipv4.route.min_pmtu` (MTU 0 included) sets
//!   `min(current, min_pmtu)` and locks it; a locked entry ignores every
//!   report until it expires; the same MTU again refreshes the expiry only
//!   once half of it has passed; every change sets the expiry to now +
//!   `net.ipv4.route.mtu_expires` (`update_or_create_fnhe()`).
//! * IPv6, `__ip6_rt_update_pmtu()` and `rt6_do_update_pmtu()`
//!   (net/ipv6/route.c), after `tcp_v6_err()`/`udpv6_err()`: an MTU under
//!   1280 is ignored (RFC 8201 §4); a report not below the current PMTU is
//!   ignored (the same MTU does not even refresh); there is no lock; the
//!   expiry is `net.ipv6.route.mtu_expires` from when the entry was made,
//!   since `dst_set_expires()` only ever brings an expiry closer.
//!
//! Where the kernel compares with the route's own MTU (`ipv4_mtu()`,
//! `dst_mtu()`) and there is no entry yet, pmtu does not know that MTU: the
//! first report is taken (the observer's `not-smaller` check has already
//! refused an MTU that is not below the quoted packet), and a lock below
//! `min_pmtu` is `min_pmtu` itself. `pmtu trace --kernel` shows where the
//! kernel ended up elsewhere, and why when pmtu knows.
//!
//! Directions are kept apart: a PTB this host received is what its own cache
//! learns; one in transit or one it sent is what the host it is addressed to
//! learns, with this host's sysctls standing in for that host's.

use std::{net::IpAddr, num::NonZeroUsize};

use lru::LruCache;
use pmtu_common::validate::{IPV6_MIN_MTU, LINUX_MIN_PMTU_V4};

use crate::decode::{Direction, Ptb};

/// Linux's `net.ipv4.route.mtu_expires` and `net.ipv6.route.mtu_expires`
/// default (ip_rt_mtu_expires, ip6_rt_mtu_expires: 10 min).
pub const DEFAULT_EXPIRES_SECS: u64 = 600;
/// Linux's `net.ipv4.route.min_pmtu` default (512 + 20 + 20).
pub const DEFAULT_MIN_PMTU: u32 = LINUX_MIN_PMTU_V4;
pub const DEFAULT_MAX_DESTINATIONS: usize = 65_536;
/// Reporters remembered per destination; beyond this the least recently heard
/// one is forgotten. Real paths have a handful of routers.
pub const MAX_REPORTERS: usize = 16;
/// Rejected (invalid) reports remembered per destination, for saying which
/// one the kernel may have applied.
pub const MAX_REJECTED: usize = 4;

pub const NS: u64 = 1_000_000_000;

/// The kernel's parameters the rules use (sysctls of this host, or
/// `--expires`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// `net.ipv4.route.mtu_expires`, in ns.
    pub expires_v4_ns: u64,
    /// `net.ipv6.route.mtu_expires`, in ns.
    pub expires_v6_ns: u64,
    /// `net.ipv4.route.min_pmtu`.
    pub min_pmtu_v4: u32,
}

impl Rules {
    /// Linux's defaults: 600 s both, min_pmtu 552.
    pub const LINUX_DEFAULTS: Rules = Rules::from_secs(DEFAULT_EXPIRES_SECS, DEFAULT_EXPIRES_SECS, DEFAULT_MIN_PMTU);

    pub const fn from_secs(expires_v4_secs: u64, expires_v6_secs: u64, min_pmtu_v4: u32) -> Self {
        Self {
            expires_v4_ns: expires_v4_secs.saturating_mul(NS),
            expires_v6_ns: expires_v6_secs.saturating_mul(NS),
            min_pmtu_v4,
        }
    }

    pub fn expires_ns(&self, family: u8) -> u64 {
        if family == 4 { self.expires_v4_ns } else { self.expires_v6_ns }
    }
}

/// A destination, in one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub dst: IpAddr,
    pub direction: Direction,
}

/// A live cache entry, as the kernel would hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cached {
    pub mtu: u32,
    /// `mtu lock`: set below `min_pmtu` (IPv4 only).
    pub locked: bool,
    /// Monotonic ns at which it expires.
    pub expires_ns: u64,
    /// Monotonic ns of the report that last changed or refreshed it.
    pub set_ns: u64,
}

/// Why a report left the entry as it was: the kernel's reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Not lower than the cached PMTU (`__ip_rt_update_pmtu`: `old_mtu <
    /// mtu`; `__ip6_rt_update_pmtu`: `mtu >= dst_mtu(dst)`).
    NotLower,
    /// The entry is locked (`ip_mtu_locked()`).
    Locked,
    /// The same MTU before half the expiry has passed (`rt->rt_pmtu == mtu
    /// && time_before(jiffies, dst->expires - ip_rt_mtu_expires / 2)`).
    TooSoon,
    /// IPv6 MTU under 1280 (`tcp_v6_err()`, `__ip6_rt_update_pmtu()`).
    BelowIpv6Min,
}

/// What one report did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No live entry: one was made.
    Created,
    /// A lower MTU.
    Lowered,
    /// Below min_pmtu: `min(current, min_pmtu)`, locked.
    Locked,
    /// The same MTU after half the expiry: the expiry starts over.
    Refreshed,
    /// Left alone, for this reason.
    Ignored(Ignored),
    /// Invalid, and not tabled (no `--accept-unvalidated`).
    Rejected,
}

/// Reports the kernel's rules left alone, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IgnoredCounts {
    pub not_lower: u64,
    pub locked: u64,
    pub too_soon: u64,
    pub below_ipv6_min: u64,
}

impl IgnoredCounts {
    pub fn total(&self) -> u64 {
        self.not_lower + self.locked + self.too_soon + self.below_ipv6_min
    }

    fn count(&mut self, why: Ignored) {
        let slot = match why {
            Ignored::NotLower => &mut self.not_lower,
            Ignored::Locked => &mut self.locked,
            Ignored::TooSoon => &mut self.too_soon,
            Ignored::BelowIpv6Min => &mut self.below_ipv6_min,
        };
        *slot += 1;
    }

    /// `2 not lower, 1 locked`, reasons with a count only.
    pub fn describe(&self) -> String {
        [
            (self.not_lower, "not lower than the cached MTU"),
            (self.locked, "while locked"),
            (self.too_soon, "same MTU before half the expiry"),
            (self.below_ipv6_min, "IPv6 MTU under 1280"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// An invalid report kept out of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectedReport {
    pub reporter: IpAddr,
    pub mtu: u32,
    /// `validate::REASON_*` bits.
    pub reasons: u16,
    pub seen_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reporter {
    pub addr: IpAddr,
    /// The MTU this router reported last.
    pub mtu: u32,
    pub events: u64,
    pub last_seen_ns: u64,
}

/// Everything pmtu knows about one destination in one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub family: u8,
    /// The entry as the kernel would hold it; `None` once expired, or when
    /// no report was tabled.
    pub cache: Option<Cached>,
    /// Who reported what since the entry was made.
    pub reporters: Vec<Reporter>,
    /// Reports taken to the rules since the entry was made.
    pub events: u64,
    /// Of those, invalid ones (`--accept-unvalidated`).
    pub accepted_invalid: u64,
    /// Reports the rules left alone since the entry was made.
    pub ignored: IgnoredCounts,
    /// Invalid reports kept out (all time): count, and the last few.
    pub rejected_events: u64,
    pub rejected: Vec<RejectedReport>,
    /// How often its cache entry expired.
    pub expired: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

impl Entry {
    fn new(family: u8, now: u64) -> Self {
        Self {
            family,
            cache: None,
            reporters: Vec::new(),
            events: 0,
            accepted_invalid: 0,
            ignored: IgnoredCounts::default(),
            rejected_events: 0,
            rejected: Vec::new(),
            expired: 0,
            first_seen_ns: now,
            last_seen_ns: now,
        }
    }

    /// Drops the cache entry once it has expired: `ipv4_mtu()` stops using
    /// `rt_pmtu` at `time_after_eq(jiffies, dst.expires)`, `find_exception()`
    /// deletes the exception, and `rt6_check_expired()` hides an IPv6 one.
    fn expire(&mut self, now: u64) -> bool {
        match self.cache {
            Some(c) if now >= c.expires_ns => {
                self.cache = None;
                self.expired += 1;
                true
            }
            _ => false,
        }
    }

    fn heard(&mut self, ptb: &Ptb) {
        let now = ptb.ts_ns;
        self.last_seen_ns = self.last_seen_ns.max(now);
        self.first_seen_ns = self.first_seen_ns.min(now);
        match self.reporters.iter_mut().find(|r| r.addr == ptb.reporter) {
            Some(r) => {
                r.mtu = ptb.mtu;
                r.events += 1;
                r.last_seen_ns = r.last_seen_ns.max(now);
            }
            None => {
                if self.reporters.len() == MAX_REPORTERS
                    && let Some(oldest) =
                        self.reporters.iter().enumerate().min_by_key(|(_, r)| r.last_seen_ns).map(|(i, _)| i)
                {
                    self.reporters.swap_remove(oldest);
                }
                self.reporters.push(Reporter { addr: ptb.reporter, mtu: ptb.mtu, events: 1, last_seen_ns: now });
            }
        }
    }

    fn reject(&mut self, ptb: &Ptb) {
        self.last_seen_ns = self.last_seen_ns.max(ptb.ts_ns);
        self.first_seen_ns = self.first_seen_ns.min(ptb.ts_ns);
        self.rejected_events += 1;
        if self.rejected.len() == MAX_REJECTED {
            self.rejected.remove(0);
        }
        self.rejected.push(RejectedReport {
            reporter: ptb.reporter,
            mtu: ptb.mtu,
            reasons: ptb.reasons,
            seen_ns: ptb.ts_ns,
        });
    }
}

/// What the rules decided for one report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Set { mtu: u32, locked: bool, expires_ns: u64 },
    Ignore(Ignored),
}

/// net/ipv4/route.c `__ip_rt_update_pmtu()`, for a live entry `cur` (or
/// none) and a reported `mtu` at `now`.
fn ipv4_rule(cur: Option<&Cached>, mtu: u32, now: u64, rules: &Rules) -> Decision {
    // `if (ip_mtu_locked(dst)) return;`
    if cur.is_some_and(|c| c.locked) {
        return Decision::Ignore(Ignored::Locked);
    }
    // `old_mtu = ipv4_mtu(dst); if (old_mtu < mtu) return;` With no entry,
    // old_mtu is the route's MTU, which pmtu does not know.
    let old = cur.map(|c| c.mtu);
    if old.is_some_and(|old| old < mtu) {
        return Decision::Ignore(Ignored::NotLower);
    }
    // `if (mtu < net->ipv4.ip_rt_min_pmtu) { lock = true; mtu =
    // min(old_mtu, net->ipv4.ip_rt_min_pmtu); }` MTU 0 (RFC 1191 §5's
    // pre-RFC-1191 router) lands here too.
    let (mtu, locked) = if mtu < rules.min_pmtu_v4 {
        (old.map_or(rules.min_pmtu_v4, |old| old.min(rules.min_pmtu_v4)), true)
    } else {
        (mtu, false)
    };
    // `if (rt->rt_pmtu == mtu && !lock && time_before(jiffies,
    // dst->expires - net->ipv4.ip_rt_mtu_expires / 2)) return;`
    if let Some(c) = cur
        && c.mtu == mtu
        && !locked
        && now < c.expires_ns.saturating_sub(rules.expires_v4_ns / 2)
    {
        return Decision::Ignore(Ignored::TooSoon);
    }
    // `update_or_create_fnhe(nhc, fl4->daddr, 0, mtu, lock, jiffies +
    // net->ipv4.ip_rt_mtu_expires)`: pmtu, lock and expiry all set.
    Decision::Set { mtu, locked, expires_ns: now.saturating_add(rules.expires_v4_ns) }
}

/// net/ipv6/route.c `__ip6_rt_update_pmtu()` and `rt6_do_update_pmtu()`.
fn ipv6_rule(cur: Option<&Cached>, mtu: u32, now: u64, rules: &Rules) -> Decision {
    // `if (mtu < IPV6_MIN_MTU) return;` (tcp_v6_err() and udpv6_err()
    // refuse it before: RFC 8201 §4). No `mtu lock` check: "IPv6 pmtu
    // discovery isn't optional".
    if mtu < IPV6_MIN_MTU {
        return Decision::Ignore(Ignored::BelowIpv6Min);
    }
    // `if (mtu >= dst_mtu(dst)) return;` The same MTU is not lower either,
    // so, unlike IPv4, it never refreshes the expiry.
    if cur.is_some_and(|c| mtu >= c.mtu) {
        return Decision::Ignore(Ignored::NotLower);
    }
    // rt6_do_update_pmtu(): `dst_metric_set(&rt->dst, RTAX_MTU, mtu);
    // rt6_update_expires(rt, ip6_rt_mtu_expires)`, i.e. dst_set_expires(),
    // which only moves an expiry earlier: an existing exception keeps the
    // expiry it was made with.
    let fresh = now.saturating_add(rules.expires_v6_ns);
    let expires_ns = cur.map_or(fresh, |c| c.expires_ns.min(fresh));
    Decision::Set { mtu, locked: false, expires_ns }
}

/// Totals over the whole run, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableTotals {
    /// Invalid reports kept out of the table.
    pub rejected: u64,
    /// Reports the kernel's rules left alone.
    pub ignored: IgnoredCounts,
    /// Entries that expired.
    pub expired: u64,
    /// Destinations dropped because the table was full (LRU).
    pub evicted: u64,
}

pub struct Table {
    entries: LruCache<Key, Entry>,
    rules: Rules,
    accept_unvalidated: bool,
    totals: TableTotals,
}

/// A live entry as shown to the user at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheRow {
    pub pmtu: u32,
    pub locked: bool,
    /// Seconds until it expires, rounded down as `ip route get` does.
    pub expires_in_secs: u64,
    pub set_ns: u64,
}

/// One destination in one direction, as shown to the user at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub dst: IpAddr,
    pub direction: Direction,
    pub family: u8,
    /// The entry; `None` for a destination seen without one (invalid
    /// reports only, or expired).
    pub cache: Option<CacheRow>,
    /// Reporters since the entry was made, lowest MTU first.
    pub reporters: Vec<Reporter>,
    pub events: u64,
    pub accepted_invalid: u64,
    pub ignored: IgnoredCounts,
    pub rejected_events: u64,
    pub rejected: Vec<RejectedReport>,
    pub expired: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

impl Table {
    /// A table with Linux's default min_pmtu, `expires_secs` for both
    /// families, and invalid reports kept out.
    pub fn new(max_destinations: NonZeroUsize, expires_secs: u64) -> Self {
        Self::with_rules(max_destinations, Rules::from_secs(expires_secs, expires_secs, DEFAULT_MIN_PMTU), false)
    }

    pub fn with_rules(max_destinations: NonZeroUsize, rules: Rules, accept_unvalidated: bool) -> Self {
        Self { entries: LruCache::new(max_destinations), rules, accept_unvalidated, totals: TableTotals::default() }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Destinations pmtu knows of, with an entry or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Destinations dropped because the table was full (LRU).
    pub fn evicted(&self) -> u64 {
        self.totals.evicted
    }

    pub fn totals(&self) -> TableTotals {
        self.totals
    }

    /// Applies one report, as the kernel would; says what it did.
    pub fn record(&mut self, ptb: &Ptb) -> Outcome {
        let key = Key { dst: ptb.orig_dst, direction: ptb.direction };
        let now = ptb.ts_ns;
        if !self.entries.contains(&key)
            && let Some((evicted, _)) = self.entries.push(key, Entry::new(ptb.family, now))
            && evicted != key
        {
            self.totals.evicted += 1;
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            // Just inserted; a capacity of at least one keeps it.
            return Outcome::Rejected;
        };
        if entry.expire(now) {
            self.totals.expired += 1;
        }
        if !ptb.is_valid() && !self.accept_unvalidated {
            entry.reject(ptb);
            self.totals.rejected += 1;
            return Outcome::Rejected;
        }
        let cur = entry.cache.as_ref();
        let decision = if ptb.family == 4 {
            ipv4_rule(cur, ptb.mtu, now, &self.rules)
        } else {
            ipv6_rule(cur, ptb.mtu, now, &self.rules)
        };
        let created = cur.is_none();
        let outcome = match decision {
            Decision::Ignore(why) => Outcome::Ignored(why),
            Decision::Set { locked: true, .. } => Outcome::Locked,
            Decision::Set { .. } if created => Outcome::Created,
            Decision::Set { mtu, .. } if cur.is_some_and(|c| c.mtu == mtu) => Outcome::Refreshed,
            Decision::Set { .. } => Outcome::Lowered,
        };
        if created && !matches!(decision, Decision::Ignore(_)) {
            // A new entry: what came before belongs to the expired one.
            entry.reporters.clear();
            entry.events = 0;
            entry.accepted_invalid = 0;
            entry.ignored = IgnoredCounts::default();
        }
        match decision {
            Decision::Set { mtu, locked, expires_ns } => {
                entry.cache = Some(Cached { mtu, locked, expires_ns, set_ns: now });
            }
            Decision::Ignore(why) => {
                entry.ignored.count(why);
                self.totals.ignored.count(why);
            }
        }
        entry.events += 1;
        if !ptb.is_valid() {
            entry.accepted_invalid += 1;
        }
        entry.heard(ptb);
        outcome
    }

    /// The live entry for `key`, as the last report left it (expired or
    /// not: see [`Cached::expires_ns`]).
    pub fn cached(&self, key: &Key) -> Option<Cached> {
        self.entries.peek(key).and_then(|e| e.cache)
    }

    /// Expires entries whose time is up (they stay as destinations seen).
    pub fn expire(&mut self, now_ns: u64) {
        for (_, entry) in self.entries.iter_mut() {
            if entry.expire(now_ns) {
                self.totals.expired += 1;
            }
        }
    }

    /// Every destination, by address then direction: those with a live
    /// entry and those without.
    pub fn rows(&mut self, now_ns: u64) -> Vec<Row> {
        self.expire(now_ns);
        let mut rows: Vec<Row> = self
            .entries
            .iter()
            .map(|(key, e)| {
                let mut reporters = e.reporters.clone();
                reporters.sort_by_key(|r| (r.mtu, r.addr));
                Row {
                    dst: key.dst,
                    direction: key.direction,
                    family: e.family,
                    cache: e.cache.map(|c| CacheRow {
                        pmtu: c.mtu,
                        locked: c.locked,
                        expires_in_secs: c.expires_ns.saturating_sub(now_ns) / NS,
                        set_ns: c.set_ns,
                    }),
                    reporters,
                    events: e.events,
                    accepted_invalid: e.accepted_invalid,
                    ignored: e.ignored,
                    rejected_events: e.rejected_events,
                    rejected: e.rejected.clone(),
                    expired: e.expired,
                    first_seen_ns: e.first_seen_ns,
                    last_seen_ns: e.last_seen_ns,
                }
            })
            .collect();
        rows.sort_by_key(|r| (r.dst, r.direction));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmtu_common::validate::{REASON_BELOW_FLOOR, REASON_UNKNOWN_FLOW};

    fn ptb(dst: &str, reporter: &str, mtu: u32, ts_s: u64) -> Ptb {
        let family = if dst.contains(':') { 6 } else { 4 };
        let local = if family == 4 { "192.168.5.1" } else { "fd54:54:54:1::1" };
        Ptb {
            ts_ns: ts_s * NS,
            ifindex: 2,
            hook: crate::decode::Hook::Xdp,
            family,
            reporter: reporter.parse().unwrap(),
            to: local.parse().unwrap(),
            mtu,
            mtu_estimated: false,
            orig_src: local.parse().unwrap(),
            orig_dst: dst.parse().unwrap(),
            proto: 1,
            sport: None,
            dport: None,
            quoted_len: 1500,
            reasons: 0,
            direction: Direction::Received,
            out_ifindex: None,
            capture: None,
        }
    }

    fn table(cap: usize) -> Table {
        Table::new(NonZeroUsize::new(cap).unwrap(), DEFAULT_EXPIRES_SECS)
    }

    fn only(t: &mut Table, now_s: u64) -> Row {
        let rows = t.rows(now_s * NS);
        assert_eq!(rows.len(), 1, "{rows:#?}");
        rows.into_iter().next().unwrap()
    }

    fn cache(t: &mut Table, now_s: u64) -> Option<CacheRow> {
        only(t, now_s).cache
    }

    // ---- IPv4: __ip_rt_update_pmtu() ----

    #[test]
    fn v4_reports_only_lower() {
        let mut t = table(10);
        assert_eq!(t.record(&ptb("192.168.7.2", "192.168.5.2", 1370, 1)), Outcome::Created);
        assert_eq!(t.record(&ptb("192.168.7.2", "192.168.6.2", 1350, 2)), Outcome::Lowered);
        let row = only(&mut t, 3);
        let c = row.cache.unwrap();
        assert_eq!((c.pmtu, c.locked), (1350, false));
        // update_or_create_fnhe() set the expiry from the 1350 report (t=2).
        assert_eq!(c.expires_in_secs, 599);
        assert_eq!(row.events, 2);
        let reps: Vec<_> = row.reporters.iter().map(|r| (r.addr.to_string(), r.mtu)).collect();
        assert_eq!(reps, [("192.168.6.2".to_string(), 1350), ("192.168.5.2".to_string(), 1370)]);
    }

    #[test]
    fn v4_1300_then_1450_stays_1300() {
        let mut t = table(10);
        t.record(&ptb("10.0.0.9", "10.0.0.1", 1300, 1));
        assert_eq!(t.record(&ptb("10.0.0.9", "10.0.0.1", 1450, 2)), Outcome::Ignored(Ignored::NotLower));
        let row = only(&mut t, 3);
        assert_eq!(row.cache.unwrap().pmtu, 1300);
        // The expiry is still the 1300 report's.
        assert_eq!(row.cache.unwrap().expires_in_secs, 598);
        assert_eq!(row.ignored.not_lower, 1);
        assert_eq!(row.events, 2, "both reports were heard");
        assert_eq!(t.totals().ignored.not_lower, 1);
    }

    #[test]
    fn v4_mtu_0_and_1_to_551_lock_552() {
        for mtu in [0, 1, 68, 296, 551] {
            let mut t = table(10);
            assert_eq!(t.record(&ptb("10.0.0.9", "10.0.0.1", mtu, 1)), Outcome::Locked, "mtu {mtu}");
            let c = cache(&mut t, 1).unwrap();
            assert_eq!((c.pmtu, c.locked), (552, true), "mtu {mtu}");
        }
        // 552 itself is not below min_pmtu: no lock.
        let mut t = table(10);
        assert_eq!(t.record(&ptb("10.0.0.9", "10.0.0.1", 552, 1)), Outcome::Created);
        assert_eq!(cache(&mut t, 1).map(|c| c.locked), Some(false));
    }

    #[test]
    fn v4_lock_takes_the_lower_of_current_and_min_pmtu() {
        // `mtu = min(old_mtu, min_pmtu)`: with a current 1350, 552.
        let mut t = table(10);
        t.record(&ptb("10.0.0.9", "10.0.0.1", 1350, 1));
        assert_eq!(t.record(&ptb("10.0.0.9", "10.0.0.1", 0, 2)), Outcome::Locked);
        assert_eq!(cache(&mut t, 2).map(|c| (c.pmtu, c.locked)), Some((552, true)));
        // A host whose min_pmtu is raised past the current PMTU keeps the current.
        let rules = Rules::from_secs(600, 600, 1400);
        let mut t = Table::with_rules(NonZeroUsize::new(4).unwrap(), rules, false);
        t.record(&ptb("10.0.0.9", "10.0.0.1", 1400, 1));
        t.record(&ptb("10.0.0.9", "10.0.0.1", 1300, 2)); // 1300 < 1400: locked at min(1400, 1400)
        assert_eq!(cache(&mut t, 2).map(|c| (c.pmtu, c.locked)), Some((1400, true)));
    }

    #[test]
    fn v4_locked_ignores_later_reports_until_it_expires() {
        let mut t = table(10);
        t.record(&ptb("10.0.0.9", "10.0.0.1", 300, 0));
        for (mtu, at) in [(1400, 10), (552, 20), (500, 30), (0, 40)] {
            assert_eq!(t.record(&ptb("10.0.0.9", "10.0.0.1", mtu, at)), Outcome::Ignored(Ignored::Locked), "{mtu}");
        }
        let row = only(&mut t, 41);
        let c = row.cache.unwrap();
        assert_eq!((c.pmtu, c.locked, c.expires_in_secs), (552, true, 559), "locked at t=0, not refreshed");
        assert_eq!(row.ignored.locked, 4);
        // At t=600 the lock is gone with the entry; 1400 makes a new one.
        assert_eq!(t.record(&ptb("10.0.0.9", "10.0.0.1", 1400, 600)), Outcome::Created);
        let row = only(&mut t, 600);
        assert_eq!(row.cache.map(|c| (c.pmtu, c.locked)), Some((1400, false)));
        assert_eq!(row.expired, 1);
        assert_eq!((row.events, row.ignored.locked), (1, 0), "the new entry starts afresh");
    }

    #[test]
    fn v4_same_mtu_refreshes_only_after_half_the_expiry() {
        let mut t = table(10);
        t.record(&ptb("10.0.0.9", "10.0.0.1", 1350, 0));
        // Before 300 s: nothing changes.
        assert_eq!(t.record(&ptb("10.0.0.9", "10.0.0.1", 1350, 299)), Outcome::Ignored(Ignored::TooSoon));
        assert_eq!(cache(&mut t, 299).unwrap().expires_in_secs, 301);
        // From 300 s (expires - 600/2): the expiry starts over.
        assert_eq!(t.record(&ptb("10.0.0.9", "10.0.0.1", 1350, 300)), Outcome::Refreshed);
        assert_eq!(cache(&mut t, 300).unwrap().expires_in_secs, 600);
        assert_eq!(t.totals().ignored.too_soon, 1);
    }

    #[test]
    fn v4_expiry_forgets_the_entry() {
        let mut t = table(10);
        t.record(&ptb("192.168.7.2", "192.168.6.2", 1350, 0));
        assert_eq!(cache(&mut t, 599).unwrap().expires_in_secs, 1);
        // time_after_eq(jiffies, expires): gone at exactly 600 s.
        let row = only(&mut t, 600);
        assert_eq!(row.cache, None);
        assert_eq!(row.expired, 1);
        assert_eq!(t.totals().expired, 1);
        // A higher MTU after expiry is a new entry: nothing to be lower than.
        assert_eq!(t.record(&ptb("192.168.7.2", "192.168.5.2", 1370, 700)), Outcome::Created);
        assert_eq!(cache(&mut t, 700).unwrap().pmtu, 1370);
    }

    #[test]
    fn v4_min_pmtu_and_expiry_come_from_the_rules() {
        let rules = Rules::from_secs(60, 600, 1000);
        let mut t = Table::with_rules(NonZeroUsize::new(4).unwrap(), rules, false);
        assert_eq!(t.record(&ptb("10.0.0.9", "10.0.0.1", 900, 0)), Outcome::Locked);
        assert_eq!(cache(&mut t, 0).map(|c| (c.pmtu, c.expires_in_secs)), Some((1000, 60)));
        assert_eq!(cache(&mut t, 60), None);
    }

    // ---- IPv6: __ip6_rt_update_pmtu(), rt6_do_update_pmtu() ----

    #[test]
    fn v6_only_lower_and_no_refresh_for_the_same_mtu() {
        let mut t = table(10);
        assert_eq!(t.record(&ptb("fd54:54:54:3::2", "fd54:54:54:1::2", 1370, 0)), Outcome::Created);
        assert_eq!(t.record(&ptb("fd54:54:54:3::2", "fd54:54:54:2::2", 1350, 100)), Outcome::Lowered);
        let c = cache(&mut t, 100).unwrap();
        // dst_set_expires() keeps the earlier expiry: the entry's, made at t=0.
        assert_eq!((c.pmtu, c.expires_in_secs), (1350, 500));
        // mtu >= dst_mtu(): the same MTU, even late, and a higher one, are ignored.
        assert_eq!(t.record(&ptb("fd54:54:54:3::2", "fd54:54:54:2::2", 1350, 400)), Outcome::Ignored(Ignored::NotLower));
        assert_eq!(t.record(&ptb("fd54:54:54:3::2", "fd54:54:54:1::2", 1450, 401)), Outcome::Ignored(Ignored::NotLower));
        assert_eq!(cache(&mut t, 401).map(|c| (c.pmtu, c.expires_in_secs)), Some((1350, 199)));
        assert_eq!(cache(&mut t, 600), None);
    }

    #[test]
    fn v6_below_1280_is_ignored_and_never_locks() {
        let rules = Rules::LINUX_DEFAULTS;
        // Such events come invalid (below-floor); --accept-unvalidated lets them reach the rules.
        let mut t = Table::with_rules(NonZeroUsize::new(4).unwrap(), rules, true);
        let mut p = ptb("fd54:54:54:3::2", "fd54:54:54:1::2", 1200, 0);
        p.reasons = REASON_BELOW_FLOOR;
        assert_eq!(t.record(&p), Outcome::Ignored(Ignored::BelowIpv6Min));
        assert_eq!(cache(&mut t, 0), None);
        t.record(&ptb("fd54:54:54:3::2", "fd54:54:54:1::2", 1280, 1));
        let c = cache(&mut t, 1).unwrap();
        assert_eq!((c.pmtu, c.locked), (1280, false));
        assert_eq!(t.totals().ignored.below_ipv6_min, 1);
    }

    #[test]
    fn v6_expires_from_its_own_sysctl() {
        let rules = Rules::from_secs(600, 30, DEFAULT_MIN_PMTU);
        let mut t = Table::with_rules(NonZeroUsize::new(4).unwrap(), rules, false);
        t.record(&ptb("fd54:54:54:3::2", "fd54:54:54:1::2", 1400, 0));
        assert_eq!(cache(&mut t, 0).unwrap().expires_in_secs, 30);
        assert_eq!(cache(&mut t, 30), None);
    }

    // ---- directions, invalid events, the LRU cap ----

    #[test]
    fn directions_are_kept_apart() {
        let mut t = table(10);
        let received = ptb("192.168.7.2", "192.168.6.2", 1350, 1);
        let mut transit = ptb("192.168.7.2", "192.168.6.2", 1300, 1);
        transit.direction = Direction::Transit;
        let mut sent = ptb("192.168.7.2", "192.168.5.2", 1400, 1);
        sent.direction = Direction::Sent;
        assert_eq!(t.record(&received), Outcome::Created);
        assert_eq!(t.record(&transit), Outcome::Created, "a transit report is not lower than a received one");
        assert_eq!(t.record(&sent), Outcome::Created, "nor is a sent one higher than either");
        let rows = t.rows(2 * NS);
        let got: Vec<_> = rows.iter().map(|r| (r.direction, r.cache.map(|c| c.pmtu), r.events)).collect();
        assert_eq!(
            got,
            [
                (Direction::Received, Some(1350), 1),
                (Direction::Transit, Some(1300), 1),
                (Direction::Sent, Some(1400), 1)
            ]
        );
        assert!(rows.iter().all(|r| r.dst.to_string() == "192.168.7.2"));
    }

    #[test]
    fn invalid_reports_are_kept_out_but_remembered() {
        let mut t = table(10);
        t.record(&ptb("192.168.7.2", "192.168.6.2", 1350, 1));
        let mut forged = ptb("192.168.7.2", "192.168.5.2", 1000, 2);
        forged.reasons = REASON_UNKNOWN_FLOW;
        assert_eq!(t.record(&forged), Outcome::Rejected);
        let mut other = ptb("10.9.9.9", "192.168.5.2", 1000, 3);
        other.reasons = REASON_UNKNOWN_FLOW;
        assert_eq!(t.record(&other), Outcome::Rejected);
        let rows = t.rows(4 * NS);
        assert_eq!(rows.len(), 2);
        let only_invalid = &rows[0];
        assert_eq!(only_invalid.dst.to_string(), "10.9.9.9");
        assert_eq!((only_invalid.cache, only_invalid.events, only_invalid.rejected_events), (None, 0, 1));
        let real = &rows[1];
        assert_eq!(real.cache.map(|c| c.pmtu), Some(1350));
        assert_eq!((real.events, real.rejected_events), (1, 1));
        assert_eq!(real.rejected[0].mtu, 1000);
        assert_eq!(real.rejected[0].reasons, REASON_UNKNOWN_FLOW);
        assert_eq!(t.totals().rejected, 2);
    }

    #[test]
    fn accept_unvalidated_tables_invalid_reports_and_counts_them() {
        let mut t = Table::with_rules(NonZeroUsize::new(4).unwrap(), Rules::LINUX_DEFAULTS, true);
        let mut forged = ptb("192.168.7.2", "192.168.5.2", 1000, 2);
        forged.reasons = REASON_UNKNOWN_FLOW;
        assert_eq!(t.record(&forged), Outcome::Created);
        let row = only(&mut t, 2);
        assert_eq!((row.cache.map(|c| c.pmtu), row.accepted_invalid), (Some(1000), 1));
    }

    #[test]
    fn the_lru_cap_bounds_memory_and_counts_evictions() {
        let mut t = table(2);
        t.record(&ptb("10.0.0.1", "10.9.9.9", 1400, 1));
        t.record(&ptb("10.0.0.2", "10.9.9.9", 1400, 2));
        // Touch .1 so .2 is the least recently used.
        t.record(&ptb("10.0.0.1", "10.9.9.9", 1300, 3));
        t.record(&ptb("10.0.0.3", "10.9.9.9", 1400, 4));
        let dsts: Vec<_> = t.rows(5 * NS).iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["10.0.0.1", "10.0.0.3"]);
        assert_eq!(t.evicted(), 1);
    }

    #[test]
    fn reporters_per_destination_are_bounded() {
        let mut t = table(2);
        for i in 0..(MAX_REPORTERS as u64 + 4) {
            t.record(&ptb("10.0.0.1", &format!("10.1.0.{i}"), 1400 - i as u32, i));
        }
        let row = only(&mut t, 100);
        assert_eq!(row.reporters.len(), MAX_REPORTERS);
        // The four least recently heard (10.1.0.0..3) were forgotten.
        assert!(row.reporters.iter().all(|r| r.last_seen_ns >= 4 * NS));
        assert_eq!(row.events, MAX_REPORTERS as u64 + 4);
    }
}
