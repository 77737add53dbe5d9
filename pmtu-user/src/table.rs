//! Per-destination PMTU table, the userspace mirror of the kernel's PMTU
//! cache (seed 004): the lowest MTU any router reported for a destination,
//! each report living `expires` after it was last heard, as
//! `net.ipv4.route.mtu_expires` (600 s) makes the kernel's cached PMTU do.

use std::{net::IpAddr, num::NonZeroUsize};

use lru::LruCache;

use crate::decode::Ptb;

/// Linux's `net.ipv4.route.mtu_expires` default (ip_rt_mtu_expires, 10 min).
pub const DEFAULT_EXPIRES_SECS: u64 = 600;
pub const DEFAULT_MAX_DESTINATIONS: usize = 65_536;
/// Reporters remembered per destination; beyond this the least recently heard
/// one is forgotten. Real paths have a handful of routers.
pub const MAX_REPORTERS: usize = 16;

const NS: u64 = 1_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reporter {
    pub addr: IpAddr,
    /// The MTU this router reported last.
    pub mtu: u32,
    pub events: u64,
    pub last_seen_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub reporters: Vec<Reporter>,
    pub events: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

/// A destination as shown to the user at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub dst: IpAddr,
    pub pmtu: u32,
    /// Live reporters, lowest MTU first.
    pub reporters: Vec<Reporter>,
    pub events: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Seconds until the report holding `pmtu` expires.
    pub expires_in_secs: u64,
}

pub struct Table {
    entries: LruCache<IpAddr, Destination>,
    expires_ns: u64,
    evicted: u64,
}

impl Table {
    pub fn new(max_destinations: NonZeroUsize, expires_secs: u64) -> Self {
        Self {
            entries: LruCache::new(max_destinations),
            expires_ns: expires_secs.saturating_mul(NS),
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Destinations dropped because the table was full (LRU).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn record(&mut self, ptb: &Ptb) {
        let now = ptb.ts_ns;
        if let Some(dest) = self.entries.get_mut(&ptb.orig_dst) {
            dest.events += 1;
            dest.last_seen_ns = dest.last_seen_ns.max(now);
            dest.first_seen_ns = dest.first_seen_ns.min(now);
            match dest.reporters.iter_mut().find(|r| r.addr == ptb.reporter) {
                Some(r) => {
                    r.mtu = ptb.mtu;
                    r.events += 1;
                    r.last_seen_ns = r.last_seen_ns.max(now);
                }
                None => {
                    if dest.reporters.len() == MAX_REPORTERS
                        && let Some(oldest) = dest
                            .reporters
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, r)| r.last_seen_ns)
                            .map(|(i, _)| i)
                    {
                        dest.reporters.swap_remove(oldest);
                    }
                    dest.reporters.push(reporter(ptb));
                }
            }
            return;
        }
        let dest = Destination {
            reporters: vec![reporter(ptb)],
            events: 1,
            first_seen_ns: now,
            last_seen_ns: now,
        };
        if let Some((evicted_dst, _)) = self.entries.push(ptb.orig_dst, dest)
            && evicted_dst != ptb.orig_dst
        {
            self.evicted += 1;
        }
    }

    /// Forgets reports older than the expiry, and destinations left with none.
    pub fn expire(&mut self, now_ns: u64) {
        let expires_ns = self.expires_ns;
        let mut empty = Vec::new();
        for (dst, dest) in self.entries.iter_mut() {
            dest.reporters
                .retain(|r| r.last_seen_ns.saturating_add(expires_ns) > now_ns);
            if dest.reporters.is_empty() {
                empty.push(*dst);
            }
        }
        for dst in empty {
            self.entries.pop(&dst);
        }
    }

    /// The live table, sorted by destination address.
    pub fn rows(&mut self, now_ns: u64) -> Vec<Row> {
        self.expire(now_ns);
        let mut rows: Vec<Row> = self
            .entries
            .iter()
            .filter_map(|(dst, dest)| {
                let mut reporters = dest.reporters.clone();
                reporters.sort_by_key(|r| (r.mtu, r.addr));
                let lowest = reporters.first()?;
                let expiry = lowest.last_seen_ns.saturating_add(self.expires_ns);
                Some(Row {
                    dst: *dst,
                    pmtu: lowest.mtu,
                    expires_in_secs: expiry.saturating_sub(now_ns) / NS,
                    reporters,
                    events: dest.events,
                    first_seen_ns: dest.first_seen_ns,
                    last_seen_ns: dest.last_seen_ns,
                })
            })
            .collect();
        rows.sort_by_key(|r| r.dst);
        rows
    }
}

fn reporter(ptb: &Ptb) -> Reporter {
    Reporter {
        addr: ptb.reporter,
        mtu: ptb.mtu,
        events: 1,
        last_seen_ns: ptb.ts_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Hook;

    fn ptb(dst: &str, reporter: &str, mtu: u32, ts_s: u64) -> Ptb {
        Ptb {
            ts_ns: ts_s * NS,
            ifindex: 2,
            hook: Hook::Xdp,
            family: 4,
            reporter: reporter.parse().unwrap(),
            to: "192.168.5.1".parse().unwrap(),
            mtu,
            mtu_estimated: false,
            orig_src: "192.168.5.1".parse().unwrap(),
            orig_dst: dst.parse().unwrap(),
            proto: 1,
            sport: None,
            dport: None,
            quoted_len: 1500,
            reasons: 0,
            direction: crate::decode::Direction::Received,
            out_ifindex: None,
        }
    }

    fn table(cap: usize) -> Table {
        Table::new(NonZeroUsize::new(cap).unwrap(), DEFAULT_EXPIRES_SECS)
    }

    #[test]
    fn pmtu_is_the_lowest_live_report() {
        let mut t = table(10);
        t.record(&ptb("192.168.7.2", "192.168.5.2", 1370, 1));
        t.record(&ptb("192.168.7.2", "192.168.6.2", 1350, 2));
        let rows = t.rows(3 * NS);
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.pmtu, 1350);
        assert_eq!(row.events, 2);
        let reps: Vec<_> = row.reporters.iter().map(|r| (r.addr.to_string(), r.mtu)).collect();
        assert_eq!(
            reps,
            [("192.168.6.2".to_string(), 1350), ("192.168.5.2".to_string(), 1370)]
        );
        // The 1350 report was heard at t=2 s; it lives 600 s.
        assert_eq!(row.expires_in_secs, 599);
        assert_eq!((row.first_seen_ns, row.last_seen_ns), (NS, 2 * NS));
    }

    #[test]
    fn a_router_that_reports_again_replaces_its_mtu() {
        let mut t = table(10);
        t.record(&ptb("10.0.0.9", "10.0.0.1", 1400, 1));
        t.record(&ptb("10.0.0.9", "10.0.0.1", 1280, 2));
        let row = &t.rows(2 * NS)[0];
        assert_eq!(row.pmtu, 1280);
        assert_eq!(row.reporters.len(), 1);
        assert_eq!(row.reporters[0].events, 2);
    }

    #[test]
    fn expired_reports_stop_counting_and_empty_destinations_go() {
        let mut t = table(10);
        t.record(&ptb("192.168.7.2", "192.168.6.2", 1350, 0));
        t.record(&ptb("192.168.7.2", "192.168.5.2", 1370, 100));
        // At 600 s the 1350 report (t=0) has expired; 1370 (t=100) has not.
        let row = &t.rows(600 * NS)[0];
        assert_eq!(row.pmtu, 1370);
        assert_eq!(row.expires_in_secs, 100);
        assert!(t.rows(700 * NS).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn the_lru_cap_bounds_memory_and_counts_evictions() {
        let mut t = table(2);
        t.record(&ptb("10.0.0.1", "10.9.9.9", 1400, 1));
        t.record(&ptb("10.0.0.2", "10.9.9.9", 1400, 2));
        // Touch .1 so .2 is the least recently used.
        t.record(&ptb("10.0.0.1", "10.9.9.9", 1400, 3));
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
        let row = &t.rows(100 * NS)[0];
        assert_eq!(row.reporters.len(), MAX_REPORTERS);
        // The four least recently heard (10.1.0.0..3) were forgotten.
        assert!(row.reporters.iter().all(|r| r.last_seen_ns >= 4 * NS));
        assert_eq!(row.events, MAX_REPORTERS as u64 + 4);
    }
}
