//! Learned clamping, userspace half: which PMTUs the clamper may use.
//!
//! Every valid Packet-Too-Big this host forwards (`transit`) or receives
//! goes through a table of its own, under the kernel's rules (table.rs,
//! `__ip_rt_update_pmtu()`): only lowers, locks below min_pmtu, expires
//! after `mtu_expires` (or `--expires`). Each live entry is a lesson; the
//! lessons are written to the clamper's LEARNED map, keyed by address (or
//! by prefix, `--learn-prefix`), the lowest PMTU per key, floored at
//! 576 / 1280 (pmtu_common::learned), each with its expiry, which the
//! clamper also checks itself. An expired lesson is removed from the map.
//!
//! What does not teach: invalid reports (forged, for flows this host never
//! sent, below the floors, with bad checksums: validate.rs), reports the
//! kernel dropped for the rate limit (they never reach the ring), PTBs this
//! host sent itself (its own routes already say so), and anything while
//! learning is switched off (`pmtu learning off`). `--accept-unvalidated`
//! lets invalid reports into the displayed table, never into this one.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    num::NonZeroUsize,
};

use pmtu_common::learned::{
    CLAMP_FLAG_INSERTED, CLAMP_FLAG_SYN_ACK, ClampEvent, FLOOR_V4, FLOOR_V6, LearnConfig, Learned, LearnedKey,
    RULE_LEARNED_SRC, key, mss_for,
};
use serde::Serialize;

use crate::{
    clock::WallClock,
    decode::{self, Direction, Ptb},
    local_addrs,
    render::endpoint,
    table::{Key, Outcome, Rules, Table},
};

/// Where the learner writes: the clamper's LEARNED map (or a stand-in in
/// the unit tests).
pub trait LearnedMap {
    fn put(&mut self, key: LearnedKey, value: Learned) -> anyhow::Result<()>;
    fn delete(&mut self, key: &LearnedKey) -> anyhow::Result<()>;
}

impl LearnedMap for aya::maps::HashMap<aya::maps::MapData, LearnedKey, Learned> {
    fn put(&mut self, key: LearnedKey, value: Learned) -> anyhow::Result<()> {
        Ok(self.insert(key, value, 0)?)
    }

    fn delete(&mut self, key: &LearnedKey) -> anyhow::Result<()> {
        match self.remove(key) {
            Ok(()) => Ok(()),
            // Already gone: what was wanted.
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The PTB that taught a lesson.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub id: u32,
    pub reporter: IpAddr,
    pub dst: IpAddr,
    /// As the PTB said (the lesson may be floored above it).
    pub mtu: u32,
    pub direction: &'static str,
    pub ifname: String,
    #[serde(skip)]
    pub ts_ns: u64,
}

/// One live lesson: a table entry with the report that last set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lesson {
    family: u8,
    mtu: u32,
    expires_ns: u64,
    report: u32,
}

/// One line for the user: what `pmtu trace`-style output prints, as text
/// and as one JSON object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub json: String,
}

/// `pmtu learning`'s answer.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The runtime switch.
    pub learning: bool,
    /// Some interface is clamped to learned PMTUs.
    pub used: bool,
    pub prefix_v4: u32,
    pub prefix_v6: u32,
    pub entries: Vec<EntryStatus>,
    /// Reports that taught (or refreshed) a lesson since start.
    pub taught: u64,
    /// Entries removed from the clamper's map (expired or flushed).
    pub removed: u64,
    pub write_errors: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EntryStatus {
    /// The address, or the prefix with its length.
    pub key: String,
    pub pmtu: u32,
    pub mss: u32,
    pub expires_in_secs: u64,
    pub report: Option<Report>,
}

pub struct Learner<M: LearnedMap> {
    map: M,
    config: LearnConfig,
    table: Table,
    max: NonZeroUsize,
    rules: Rules,
    /// The runtime switch (`pmtu learning on|off`).
    enabled: bool,
    /// Some interface is clamped to learned PMTUs (the plan asks for it).
    wanted: bool,
    next_report: u32,
    lessons: HashMap<Key, Lesson>,
    /// The lessons under each map key (several with `--learn-prefix`).
    members: HashMap<LearnedKey, HashSet<Key>>,
    /// Map keys whose lessons changed since the last sync.
    changed: HashSet<LearnedKey>,
    /// No lesson expires before this (monotonic ns): sync scans for
    /// expired lessons only from then on.
    next_expiry: u64,
    /// Reports the lessons refer to, by id.
    reports: HashMap<u32, Report>,
    /// What the map holds now.
    written: BTreeMap<LearnedKey, Learned>,
    taught: u64,
    removed: u64,
    write_errors: u64,
}

/// The lesson's PMTU: the table's, never under the family's floor.
fn floored(family: u8, mtu: u32) -> u32 {
    mtu.max(if family == 4 { FLOOR_V4 } else { FLOOR_V6 })
}

impl<M: LearnedMap> Learner<M> {
    /// A learner writing to `map` (empty: a new map comes with each load),
    /// under the table's rules and size.
    pub fn new(map: M, config: LearnConfig, rules: Rules, max: NonZeroUsize) -> Self {
        Self {
            map,
            config,
            table: Table::with_rules(max, rules, false),
            max,
            rules,
            enabled: true,
            wanted: true,
            next_report: 1,
            lessons: HashMap::new(),
            members: HashMap::new(),
            changed: HashSet::new(),
            next_expiry: u64::MAX,
            reports: HashMap::new(),
            written: BTreeMap::new(),
            taught: 0,
            removed: 0,
            write_errors: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Some interface is clamped to learned PMTUs.
    pub fn wanted(&self) -> bool {
        self.wanted
    }

    /// Learning on or off; what was learned stays until it expires.
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
    }

    /// Whether the plan clamps anything to learned PMTUs; when it stops
    /// doing so, every lesson is forgotten.
    pub fn set_wanted(&mut self, wanted: bool) {
        if self.wanted && !wanted {
            self.flush();
        }
        self.wanted = wanted;
    }

    /// Forgets every lesson; the map is emptied at the next sync.
    pub fn flush(&mut self) -> usize {
        let n = self.lessons.len();
        self.lessons.clear();
        self.changed.extend(self.members.drain().map(|(k, _)| k));
        self.next_expiry = u64::MAX;
        self.reports.clear();
        self.table = Table::with_rules(self.max, self.rules, false);
        n
    }

    /// The key text for a map key: the address, or prefix/len.
    fn key_text(&self, k: &LearnedKey) -> String {
        let family = k.family as u8;
        let (p4, p6) = self.config.prefixes();
        let (prefix, full) = if family == 4 { (p4, 32) } else { (p6, 128) };
        let addr = decode::addr(family, k.addr);
        if prefix == full { addr.to_string() } else { format!("{addr}/{prefix}") }
    }

    /// Takes one event from the ring; says what it taught, if anything.
    pub fn take(&mut self, ptb: &Ptb, ifname: &str, clock: &WallClock) -> Option<Note> {
        if !self.enabled || !self.wanted || !ptb.is_valid() || !matches!(ptb.direction, Direction::Transit | Direction::Received) {
            return None;
        }
        let outcome = self.table.record(ptb);
        if !matches!(outcome, Outcome::Created | Outcome::Lowered | Outcome::Locked | Outcome::Refreshed) {
            return None;
        }
        let at = Key { dst: ptb.orig_dst, direction: ptb.direction };
        let cached = self.table.cached(&at)?;
        let id = self.next_report;
        self.next_report = self.next_report.wrapping_add(1).max(1);
        let report = Report {
            id,
            reporter: ptb.reporter,
            dst: ptb.orig_dst,
            mtu: ptb.mtu,
            direction: ptb.direction.as_str(),
            ifname: ifname.to_string(),
            ts_ns: ptb.ts_ns,
        };
        let lesson = Lesson { family: ptb.family, mtu: floored(ptb.family, cached.mtu), expires_ns: cached.expires_ns, report: id };
        if let Some(old) = self.lessons.insert(at, lesson) {
            self.reports.remove(&old.report);
        }
        self.reports.insert(id, report.clone());
        self.taught += 1;
        let k = key(ptb.family, &local_addrs::key(ptb.orig_dst), &self.config);
        self.members.entry(k).or_default().insert(at);
        self.changed.insert(k);
        self.next_expiry = self.next_expiry.min(lesson.expires_ns);
        let mss = mss_for(ptb.family, lesson.mtu);
        let what = match outcome {
            Outcome::Refreshed => "refreshed",
            _ => "learned",
        };
        let text = format!(
            "{} {what} {} pmtu {} from {} report #{id} ({} says mtu {} for {} on {ifname}): SYNs to and from it clamped to mss {mss} until {}",
            clock.rfc3339(ptb.ts_ns),
            self.key_text(&k),
            lesson.mtu,
            report.direction,
            report.reporter,
            report.mtu,
            report.dst,
            clock.rfc3339(lesson.expires_ns),
        );
        let json = serde_json::json!({
            "event": what,
            "time": clock.rfc3339(ptb.ts_ns),
            "key": self.key_text(&k),
            "pmtu": lesson.mtu,
            "mss": mss,
            "expires": clock.rfc3339(lesson.expires_ns),
            "report": report,
        })
        .to_string();
        Some(Note { text, json })
    }

    /// Drops expired lessons and brings the map to the lessons: the lowest
    /// PMTU per key, for the keys whose lessons changed. Says which keys
    /// were forgotten.
    pub fn sync(&mut self, now_ns: u64, clock: &WallClock) -> Vec<Note> {
        if now_ns >= self.next_expiry {
            self.next_expiry = u64::MAX;
            let mut expired = Vec::new();
            for (at, l) in &self.lessons {
                if l.expires_ns <= now_ns {
                    expired.push(*at);
                } else {
                    self.next_expiry = self.next_expiry.min(l.expires_ns);
                }
            }
            for at in expired {
                if let Some(l) = self.lessons.remove(&at) {
                    self.reports.remove(&l.report);
                    let k = key(l.family, &local_addrs::key(at.dst), &self.config);
                    if let Some(m) = self.members.get_mut(&k) {
                        m.remove(&at);
                        if m.is_empty() {
                            self.members.remove(&k);
                        }
                    }
                    self.changed.insert(k);
                }
            }
        }
        if self.changed.is_empty() {
            return Vec::new();
        }
        // The lowest PMTU among each changed key's lessons (the later
        // expiry on a tie); none left: the key goes.
        let mut want: BTreeMap<LearnedKey, Option<Learned>> = BTreeMap::new();
        for k in self.changed.drain() {
            let lowest = self.members.get(&k).into_iter().flatten().filter_map(|at| self.lessons.get(at)).fold(
                None,
                |best: Option<Learned>, l| {
                    let value = Learned { expires_ns: l.expires_ns, mtu: l.mtu, report: l.report };
                    match best {
                        Some(v) if v.mtu < value.mtu || (v.mtu == value.mtu && v.expires_ns >= value.expires_ns) => Some(v),
                        _ => Some(value),
                    }
                },
            );
            want.insert(k, lowest);
        }
        let mut notes = Vec::new();
        for (k, v) in want {
            match v {
                None => {
                    let Some(old) = self.written.get(&k).copied() else { continue };
                    match self.map.delete(&k) {
                        Ok(()) => {
                            self.written.remove(&k);
                            self.removed += 1;
                            notes.push(self.forgot(&k, &old, now_ns, clock));
                        }
                        Err(e) => {
                            // Tried again at the next sync.
                            self.write_errors += 1;
                            self.changed.insert(k);
                            tracing::warn!("removing learned entry {}: {e:#}", self.key_text(&k));
                        }
                    }
                }
                Some(v) if self.written.get(&k) == Some(&v) => {}
                Some(v) => match self.map.put(k, v) {
                    Ok(()) => {
                        self.written.insert(k, v);
                    }
                    Err(e) => {
                        // A full map (65,536 keys) or a kernel refusal: that
                        // key is clamped by the other rules only; tried again
                        // at the next sync.
                        self.write_errors += 1;
                        self.changed.insert(k);
                        tracing::warn!("writing learned entry {}: {e:#}", self.key_text(&k));
                    }
                },
            }
        }
        notes
    }

    /// The line for map key `k`, holding `v`, removed at `now_ns`.
    fn forgot(&self, k: &LearnedKey, v: &Learned, now_ns: u64, clock: &WallClock) -> Note {
        let why = if v.expires_ns <= now_ns { "expired" } else { "flushed" };
        let text = format!(
            "{} forgot {} pmtu {} (report #{}): {why}; SYNs to and from it are clamped by the other rules again",
            clock.rfc3339(now_ns),
            self.key_text(k),
            v.mtu,
            v.report
        );
        let json = serde_json::json!({
            "event": "forgot",
            "time": clock.rfc3339(now_ns),
            "key": self.key_text(k),
            "pmtu": v.mtu,
            "report": v.report,
            "why": why,
        })
        .to_string();
        Note { text, json }
    }

    /// One line for a SYN or SYN-ACK the clamper lowered to a learned PMTU.
    pub fn describe_clamp(&self, ev: &ClampEvent, ifname: &str, clock: &WallClock) -> Note {
        describe_clamp(ev, ifname, self.reports.get(&ev.report), clock)
    }

    pub fn status(&self, now_ns: u64) -> Status {
        let (prefix_v4, prefix_v6) = self.config.prefixes();
        let entries = self
            .written
            .iter()
            .map(|(k, v)| EntryStatus {
                key: self.key_text(k),
                pmtu: v.mtu,
                mss: mss_for(k.family as u8, v.mtu),
                expires_in_secs: v.expires_ns.saturating_sub(now_ns) / 1_000_000_000,
                report: self.reports.get(&v.report).cloned(),
            })
            .collect();
        Status {
            learning: self.enabled,
            used: self.wanted,
            prefix_v4,
            prefix_v6,
            entries,
            taught: self.taught,
            removed: self.removed,
            write_errors: self.write_errors,
        }
    }

    /// (entries in the clamper's map, reports that taught, entries removed),
    /// without building the list [`Learner::status`] does.
    pub fn totals(&self) -> (usize, u64, u64) {
        (self.written.len(), self.taught, self.removed)
    }

    /// Entries in the clamper's map now.
    pub fn len(&self) -> usize {
        self.written.len()
    }

    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }
}

impl Status {
    /// As `pmtu learning` prints it.
    pub fn text(&self) -> String {
        let mut out = format!(
            "learning: {}{}; keyed by /{} (IPv4) and /{} (IPv6)\n",
            if self.learning { "on" } else { "off (pmtu learning on resumes)" },
            if self.used { "" } else { "; no interface is clamped to learned PMTUs" },
            self.prefix_v4,
            self.prefix_v6
        );
        out += &format!(
            "reports that taught: {}; entries removed: {}; write errors: {}\n",
            self.taught, self.removed, self.write_errors
        );
        if self.entries.is_empty() {
            out += "nothing learned now\n";
        }
        let width = self.entries.iter().map(|e| e.key.len()).max().unwrap_or(0);
        for e in &self.entries {
            out += &format!("{:<width$}  pmtu {:>5}  mss {:>5}  expires in {:>4}s", e.key, e.pmtu, e.mss, e.expires_in_secs);
            if let Some(r) = &e.report {
                out += &format!(
                    "  report #{}: {} says mtu {} for {} ({} on {})",
                    r.id, r.reporter, r.mtu, r.dst, r.direction, r.ifname
                );
            }
            out.push('\n');
        }
        out
    }
}

/// [`Learner::describe_clamp`], with the report (if still known).
pub fn describe_clamp(ev: &ClampEvent, ifname: &str, report: Option<&Report>, clock: &WallClock) -> Note {
    let src = decode::addr(ev.family, ev.src);
    let dst = decode::addr(ev.family, ev.dst);
    let segment = if ev.flags & CLAMP_FLAG_SYN_ACK != 0 { "SYN-ACK" } else { "SYN" };
    let hook = if ev.egress != 0 { "tc-egress" } else { "tc-ingress" };
    let (toward, side) = if ev.rule == RULE_LEARNED_SRC { (src, "source") } else { (dst, "destination") };
    let from = if ev.flags & CLAMP_FLAG_INSERTED != 0 { "none".to_string() } else { ev.mss_from.to_string() };
    let base = if ev.base_mss == u32::MAX { "none".to_string() } else { ev.base_mss.to_string() };
    let by = match report {
        Some(r) => format!("report #{} ({} says mtu {} for {}, {} on {})", r.id, r.reporter, r.mtu, r.dst, r.direction, r.ifname),
        None => format!("report #{}", ev.report),
    };
    let text = format!(
        "{} clamped {ifname} {hook} {segment} {} > {} mss {from} -> {}: learned pmtu {} toward its {side} {toward}, {by}; the other rules gave {base}",
        clock.rfc3339(ev.ts_ns),
        endpoint(src, Some(ev.sport)),
        endpoint(dst, Some(ev.dport)),
        ev.mss_to,
        ev.learned_mtu,
    );
    let json = serde_json::json!({
        "event": "clamped",
        "time": clock.rfc3339(ev.ts_ns),
        "ifname": ifname,
        "hook": hook,
        "segment": segment,
        "src": src,
        "sport": ev.sport,
        "dst": dst,
        "dport": ev.dport,
        "mss_from": if ev.flags & CLAMP_FLAG_INSERTED != 0 { None } else { Some(ev.mss_from) },
        "mss_to": ev.mss_to,
        "rule": if ev.rule == RULE_LEARNED_SRC { "learned-source" } else { "learned-destination" },
        "learned_toward": toward,
        "learned_pmtu": ev.learned_mtu,
        "report": ev.report,
        "reporter": report.map(|r| r.reporter),
        "base_mss": (ev.base_mss != u32::MAX).then_some(ev.base_mss),
    })
    .to_string();
    Note { text, json }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode::Hook, table::NS};
    use pmtu_common::validate::REASON_UNKNOWN_FLOW;

    #[derive(Default)]
    struct FakeMap(BTreeMap<LearnedKey, Learned>);

    impl LearnedMap for FakeMap {
        fn put(&mut self, key: LearnedKey, value: Learned) -> anyhow::Result<()> {
            self.0.insert(key, value);
            Ok(())
        }
        fn delete(&mut self, key: &LearnedKey) -> anyhow::Result<()> {
            self.0.remove(key);
            Ok(())
        }
    }

    fn ptb(dst: &str, mtu: u32, ts_s: u64, direction: Direction) -> Ptb {
        let family = if dst.contains(':') { 6 } else { 4 };
        let (reporter, src) = if family == 4 { ("192.168.6.2", "192.168.5.1") } else { ("fd54:54:54:2::2", "fd54:54:54:1::1") };
        Ptb {
            ts_ns: ts_s * NS,
            ifindex: 2,
            hook: Hook::TcIngress,
            family,
            reporter: reporter.parse().unwrap(),
            to: src.parse().unwrap(),
            mtu,
            mtu_estimated: false,
            orig_src: src.parse().unwrap(),
            orig_dst: dst.parse().unwrap(),
            proto: 1,
            sport: None,
            dport: None,
            quoted_len: 1370,
            reasons: 0,
            direction,
            out_ifindex: Some(3),
            capture: None,
        }
    }

    fn learner(prefix: (u32, u32)) -> Learner<FakeMap> {
        Learner::new(
            FakeMap::default(),
            LearnConfig::new(prefix.0, prefix.1),
            Rules::from_secs(10, 10, 552),
            NonZeroUsize::new(16).unwrap(),
        )
    }

    fn entries(l: &Learner<FakeMap>) -> Vec<(String, u32, u64)> {
        l.map.0.iter().map(|(k, v)| (l.key_text(k), v.mtu, v.expires_ns / NS)).collect()
    }

    const CLOCK: WallClock = WallClock::with_offset_ns(0);

    #[test]
    fn valid_transit_reports_teach_and_expire() {
        let mut l = learner((32, 128));
        let note = l.take(&ptb("192.168.7.2", 1350, 1, Direction::Transit), "to-r2", &CLOCK).unwrap();
        assert!(note.text.contains("learned 192.168.7.2 pmtu 1350 from transit report #1"), "{}", note.text);
        assert!(note.text.contains("mss 1310"), "{}", note.text);
        assert!(l.sync(NS, &CLOCK).is_empty());
        assert_eq!(entries(&l), [("192.168.7.2".to_string(), 1350, 11)]);
        // Not lower: the kernel's rules leave it, nothing new is taught.
        assert_eq!(l.take(&ptb("192.168.7.2", 1400, 2, Direction::Transit), "to-r2", &CLOCK), None);
        // IPv6 too, and received reports.
        l.take(&ptb("fd54:54:54:3::2", 1350, 3, Direction::Received), "to-r2", &CLOCK).unwrap();
        l.sync(3 * NS, &CLOCK);
        assert_eq!(entries(&l).len(), 2);
        // At 11 s the IPv4 lesson is over and goes from the map.
        let notes = l.sync(11 * NS, &CLOCK);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].text.contains("forgot 192.168.7.2 pmtu 1350 (report #1): expired"), "{}", notes[0].text);
        assert_eq!(entries(&l), [("fd54:54:54:3::2".to_string(), 1350, 13)]);
        assert_eq!(l.status(11 * NS).removed, 1);
    }

    #[test]
    fn what_does_not_teach() {
        let mut l = learner((32, 128));
        let mut forged = ptb("192.168.7.2", 1000, 1, Direction::Transit);
        forged.reasons = REASON_UNKNOWN_FLOW;
        assert_eq!(l.take(&forged, "to-r2", &CLOCK), None);
        assert_eq!(l.take(&ptb("192.168.7.2", 1000, 1, Direction::Sent), "to-r2", &CLOCK), None);
        l.set_enabled(false);
        assert_eq!(l.take(&ptb("192.168.7.2", 1000, 1, Direction::Transit), "to-r2", &CLOCK), None);
        l.sync(NS, &CLOCK);
        assert!(entries(&l).is_empty());
        // A forged report never lowers what a valid one taught.
        l.set_enabled(true);
        l.take(&ptb("192.168.7.2", 1350, 2, Direction::Transit), "to-r2", &CLOCK).unwrap();
        assert_eq!(l.take(&forged, "to-r2", &CLOCK), None);
        l.sync(2 * NS, &CLOCK);
        assert_eq!(entries(&l), [("192.168.7.2".to_string(), 1350, 12)]);
    }

    #[test]
    fn floors_and_prefixes() {
        let mut l = learner((24, 64));
        // Under min_pmtu the table locks 552; the lesson is floored at 576.
        l.take(&ptb("192.168.7.2", 300, 1, Direction::Transit), "to-r2", &CLOCK).unwrap();
        l.take(&ptb("192.168.7.9", 1400, 1, Direction::Transit), "to-r2", &CLOCK).unwrap();
        l.take(&ptb("fd54:54:54:3::2", 1300, 1, Direction::Transit), "to-r2", &CLOCK).unwrap();
        l.sync(NS, &CLOCK);
        // Both IPv4 destinations share 192.168.7.0/24: the lower wins.
        assert_eq!(
            entries(&l),
            [("192.168.7.0/24".to_string(), 576, 11), ("fd54:54:54:3::/64".to_string(), 1300, 11)]
        );
        let s = l.status(NS);
        assert_eq!((s.prefix_v4, s.prefix_v6), (24, 64));
        assert_eq!(s.entries[0].mss, 536);
        assert_eq!(l.flush(), 3);
        let notes = l.sync(2 * NS, &CLOCK);
        assert_eq!(notes.len(), 2);
        assert!(notes[0].text.contains("flushed"), "{}", notes[0].text);
        assert!(entries(&l).is_empty());
    }

    #[test]
    fn a_prefix_keeps_its_other_lessons_when_one_expires() {
        let mut l = learner((24, 128));
        l.take(&ptb("192.168.7.2", 1300, 1, Direction::Transit), "to-r2", &CLOCK).unwrap();
        l.take(&ptb("192.168.7.9", 1400, 5, Direction::Transit), "to-r2", &CLOCK).unwrap();
        l.sync(5 * NS, &CLOCK);
        assert_eq!(entries(&l), [("192.168.7.0/24".to_string(), 1300, 11)]);
        // The lower lesson (from 1 s) is over at 11 s; the other stays to 15.
        assert!(l.sync(11 * NS, &CLOCK).is_empty(), "the key is rewritten, not forgotten");
        assert_eq!(entries(&l), [("192.168.7.0/24".to_string(), 1400, 15)]);
        let notes = l.sync(15 * NS, &CLOCK);
        assert_eq!(notes.len(), 1);
        assert!(entries(&l).is_empty());
        // Nothing changed, nothing expires: a sync does no work.
        assert!(l.sync(16 * NS, &CLOCK).is_empty());
    }

    #[test]
    fn clamp_lines_name_the_rule_and_the_report() {
        let mut l = learner((32, 128));
        l.take(&ptb("192.168.7.2", 1350, 1, Direction::Transit), "to-r2", &CLOCK).unwrap();
        let mut ev = ClampEvent::zeroed();
        ev.family = 4;
        ev.src[..4].copy_from_slice(&[192, 168, 7, 2]);
        ev.dst[..4].copy_from_slice(&[192, 168, 5, 1]);
        ev.sport = 80;
        ev.dport = 40000;
        ev.mss_from = 1460;
        ev.mss_to = 1310;
        ev.learned_mtu = 1350;
        ev.report = 1;
        ev.rule = RULE_LEARNED_SRC;
        ev.flags = CLAMP_FLAG_SYN_ACK;
        ev.base_mss = 1330;
        let note = l.describe_clamp(&ev, "to-h0", &CLOCK);
        assert!(
            note.text.contains(
                "clamped to-h0 tc-ingress SYN-ACK 192.168.7.2:80 > 192.168.5.1:40000 mss 1460 -> 1310: learned pmtu 1350 \
                 toward its source 192.168.7.2, report #1 (192.168.6.2 says mtu 1350 for 192.168.7.2, transit on to-r2); \
                 the other rules gave 1330"
            ),
            "{}",
            note.text
        );
        let j: serde_json::Value = serde_json::from_str(&note.json).unwrap();
        assert_eq!(j["rule"], "learned-source");
        assert_eq!(j["reporter"], "192.168.6.2");
        assert_eq!(j["base_mss"], 1330);
    }
}
