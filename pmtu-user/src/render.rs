//! Text and JSON renderings of events and of the table.
//!
//! JSON is newline-delimited: one object per event, then one object with
//! the table and the counters (`"final": true` at the end, `false` for a
//! SIGUSR1 snapshot), so `jq` and line-oriented tools both work.

use std::net::IpAddr;

use serde::Serialize;

use crate::{
    clock::WallClock,
    counters::Counters,
    decode::{Direction, Ptb},
    kernel_cache::{KernelColumn, KernelLookup, KernelReport},
    table::{IgnoredCounts, Row, TableTotals},
};

/// Appends one line to a String (which, unlike `writeln!`, has no Result
/// to drop).
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

#[derive(Serialize)]
pub struct EventJson<'a> {
    pub time: String,
    /// `received`, `transit`, `sent` or `unknown`.
    pub direction: &'static str,
    /// The interface it was seen on; for transit, the one it came in by.
    pub ifname: &'a str,
    /// For transit: the interface it leaves by, when known.
    pub out_ifname: Option<&'a str>,
    pub hook: &'static str,
    pub family: u8,
    pub reporter: IpAddr,
    pub to: IpAddr,
    /// As the message gave it, 0 included.
    pub mtu: u32,
    /// Always false: kept for readers of older output (pmtu once guessed
    /// an RFC 1191 plateau for MTU 0; Linux locks min_pmtu instead).
    pub mtu_estimated: bool,
    pub orig_src: IpAddr,
    pub orig_dst: IpAddr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub quoted_len: u32,
    pub verdict: &'static str,
    /// `validate::REASON_NAMES`, exactly.
    pub reasons: Vec<&'static str>,
}

/// The name shown for an interface pmtu knows only by index.
pub fn unnamed(index: u32) -> String {
    format!("if{index}")
}

/// One JSON event; `out_ifname` names a transit event's way out.
pub fn event_json_with(ptb: &Ptb, ifname: &str, out_ifname: Option<&str>, clock: &WallClock) -> String {
    let ev = EventJson {
        time: clock.rfc3339(ptb.ts_ns),
        direction: ptb.direction.as_str(),
        ifname,
        out_ifname,
        hook: ptb.hook.as_str(),
        family: ptb.family,
        reporter: ptb.reporter,
        to: ptb.to,
        mtu: ptb.mtu,
        mtu_estimated: ptb.mtu_estimated,
        orig_src: ptb.orig_src,
        orig_dst: ptb.orig_dst,
        proto: ptb.proto,
        sport: ptb.sport,
        dport: ptb.dport,
        quoted_len: ptb.quoted_len,
        verdict: ptb.verdict(),
        reasons: ptb.reason_names(),
    };
    // Serializing plain strings, numbers and addresses cannot fail.
    serde_json::to_string(&ev).unwrap_or_default()
}

/// [`event_json_with`], the way out named by its index.
pub fn event_json(ptb: &Ptb, ifname: &str, clock: &WallClock) -> String {
    let out = ptb.out_ifindex.map(unnamed);
    event_json_with(ptb, ifname, out.as_deref(), clock)
}

pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmp6".into(),
        132 => "sctp".into(),
        other => format!("proto {other}"),
    }
}

pub(crate) fn endpoint(addr: IpAddr, port: Option<u16>) -> String {
    match (addr, port) {
        (IpAddr::V4(a), Some(p)) => format!("{a}:{p}"),
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, None) => a.to_string(),
    }
}

/// One line per event, in the words of the message itself:
/// `TIME DIRECTION IFACE[ -> OUT] HOOK REPORTER says mtu N for SRC > DST (PROTO, LEN bytes)`,
/// then ` INVALID: reasons` for an invalid one. A transit line names the
/// interface the message came in by and the one it leaves by (`?` when the
/// kernel did not say).
pub fn event_text_with(ptb: &Ptb, ifname: &str, out_ifname: Option<&str>, clock: &WallClock) -> String {
    let verdict = if ptb.is_valid() {
        String::new()
    } else {
        format!(" INVALID: {}", ptb.reason_names().join(", "))
    };
    let way = match ptb.direction {
        Direction::Transit => format!("{ifname} -> {}", out_ifname.unwrap_or("?")),
        _ => ifname.to_string(),
    };
    format!(
        "{} {} {way} {} {} says mtu {} for {} > {} ({}, {} bytes){verdict}",
        clock.rfc3339(ptb.ts_ns),
        ptb.direction.as_str(),
        ptb.hook.as_str(),
        ptb.reporter,
        ptb.mtu,
        endpoint(ptb.orig_src, ptb.sport),
        endpoint(ptb.orig_dst, ptb.dport),
        proto_name(ptb.proto),
        ptb.quoted_len,
    )
}

/// [`event_text_with`], the way out named by its index.
pub fn event_text(ptb: &Ptb, ifname: &str, clock: &WallClock) -> String {
    let out = ptb.out_ifindex.map(unnamed);
    event_text_with(ptb, ifname, out.as_deref(), clock)
}

/// Counters of the kernel side plus userspace's own.
pub struct Totals {
    pub kernel: Counters,
    pub events_delivered: u64,
    pub decode_errors: u64,
    /// The table's: invalid reports kept out, reports the kernel's rules
    /// left alone, entries expired, destinations evicted.
    pub table: TableTotals,
}

impl Totals {
    fn entries(&self) -> Vec<(&'static str, u64)> {
        let mut all: Vec<_> = self.kernel.named().collect();
        all.push(("events_delivered", self.events_delivered));
        // Invalid events kept out of the table (no --accept-unvalidated).
        all.push(("events_ignored", self.table.rejected));
        all.push(("reports_not_applied", self.table.ignored.total()));
        all.push(("entries_expired", self.table.expired));
        all.push(("decode_errors", self.decode_errors));
        all.push(("destinations_evicted", self.table.evicted));
        all
    }

    /// PTBs the observer saw: every one it parsed and reported or
    /// suppressed (rate limit), and at least every one delivered.
    pub fn ptbs_seen(&self) -> u64 {
        let k = &self.kernel;
        (k.get(pmtu_common::counters::PTB_V4) + k.get(pmtu_common::counters::PTB_V6)).max(self.events_delivered)
    }
}

/// A row and, when asked, the kernel's view of it.
#[derive(Clone, Debug)]
pub struct Shown {
    pub row: Row,
    pub kernel: Option<KernelReport>,
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") }
}

/// `mtu 1350` or, locked, `mtu lock 552`, as iproute2 prints metrics.
fn mtu_words(mtu: u32, locked: bool) -> String {
    if locked { format!("mtu lock {mtu}") } else { format!("mtu {mtu}") }
}

fn reason_list(bits: u16) -> String {
    pmtu_common::validate::REASON_NAMES
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kernel column in words: what `ip route get` would show, and whether
/// it agrees.
pub fn kernel_text(k: &KernelReport) -> String {
    let what = match &k.column {
        KernelColumn::Looked(KernelLookup::Route { cache: Some(c), .. }) => {
            format!("cache expires {}sec {}", c.expires_secs, mtu_words(c.mtu, c.locked))
        }
        KernelColumn::Looked(KernelLookup::Route { cache: None, route_mtu: Some(r) }) => {
            format!("no cached PMTU (route mtu {r})")
        }
        KernelColumn::Looked(KernelLookup::Route { cache: None, route_mtu: None }) => "no cached PMTU".to_string(),
        KernelColumn::Looked(KernelLookup::NoRoute(e)) => format!("no route ({e})"),
        KernelColumn::NotApplicable(note) => format!("not asked ({note})"),
        KernelColumn::Failed(e) => format!("lookup failed: {e}"),
    };
    match (k.agrees, &k.why) {
        (Some(true), _) => format!("{what} (agrees)"),
        (Some(false), Some(why)) => format!("{what} (DISAGREES: {why})"),
        (Some(false), None) => format!("{what} (DISAGREES)"),
        (None, _) => what,
    }
}

/// Why a destination seen has no entry: `1 invalid event kept out
/// (unknown-flow)`, `expired`, `2 reports not applied (...)`.
fn no_entry_why(row: &Row) -> String {
    let mut why = Vec::new();
    if row.rejected_events > 0 {
        let bits = row.rejected.iter().fold(0, |acc, r| acc | r.reasons);
        why.push(format!("{} kept out ({})", plural(row.rejected_events, "invalid event"), reason_list(bits)));
    }
    if row.expired > 0 {
        why.push(if row.expired == 1 { "expired".to_string() } else { format!("expired {} times", row.expired) });
    }
    if row.ignored.total() > 0 {
        why.push(format!("{} not applied ({})", plural(row.ignored.total(), "report"), row.ignored.describe()));
    }
    why.join("; ")
}

/// The table in the shape of `ip route get`'s cache line: `DST mtu [lock]
/// N expires Ns (DIRECTION, K events)`, then the routers that said so,
/// what the kernel's rules left alone, invalid reports kept out, and, with
/// `with_kernel`, the kernel's own cache for that destination. Then the
/// destinations seen without an entry (listed with `with_kernel`), a
/// summary when the table is empty, and the counters.
pub fn table_text(shown: &[Shown], totals: &Totals, with_kernel: bool) -> String {
    let mut out = String::new();
    let (live, untabled): (Vec<&Shown>, Vec<&Shown>) = shown.iter().partition(|s| s.row.cache.is_some());
    for s in &live {
        let row = &s.row;
        let Some(c) = row.cache else { continue };
        put!(
            out,
            "{} {} expires {}sec ({}, {})",
            row.dst,
            mtu_words(c.pmtu, c.locked),
            c.expires_in_secs,
            row.direction.as_str(),
            plural(row.events, "event")
        );
        for r in &row.reporters {
            put!(out, "    reported by {} mtu {} ({})", r.addr, r.mtu, plural(r.events, "event"));
        }
        if row.accepted_invalid > 0 {
            put!(out, "    of which invalid: {} (--accept-unvalidated)", row.accepted_invalid);
        }
        if row.ignored.total() > 0 {
            put!(out, "    not applied: {}", row.ignored.describe());
        }
        if row.rejected_events > 0 {
            let bits = row.rejected.iter().fold(0, |acc, r| acc | r.reasons);
            put!(out, "    kept out: {} ({})", plural(row.rejected_events, "invalid event"), reason_list(bits));
        }
        if with_kernel && let Some(k) = &s.kernel {
            put!(out, "    kernel: {}", kernel_text(k));
        }
    }
    if with_kernel && !untabled.is_empty() {
        put!(out, "seen, without an entry:");
        for s in &untabled {
            let row = &s.row;
            put!(out, "{} ({}): {}", row.dst, row.direction.as_str(), no_entry_why(row));
            if let Some(k) = &s.kernel {
                put!(out, "    kernel: {}", kernel_text(k));
            }
        }
    }
    if let Some(line) = summary(live.len(), untabled.len(), totals, with_kernel) {
        put!(out, "{line}");
    }
    let counters: Vec<String> = totals.entries().iter().map(|(k, v)| format!("{k} {v}")).collect();
    put!(out, "counters: {}", counters.join(", "));
    out
}

/// What to say when the table is empty, or holds less than was seen.
pub fn summary(live: usize, untabled: usize, totals: &Totals, listed: bool) -> Option<String> {
    let seen = totals.ptbs_seen();
    if seen == 0 {
        return Some("no Packet-Too-Big seen".to_string());
    }
    let k = &totals.kernel;
    let t = &totals.table;
    let mut parts = Vec::new();
    if t.rejected > 0 {
        parts.push(format!("{} (kept out without --accept-unvalidated)", plural(t.rejected, "invalid event")));
    }
    let rate_limited = k.get(pmtu_common::counters::RATE_LIMITED);
    if rate_limited > 0 {
        parts.push(format!("{rate_limited} suppressed by the rate limit (counted only)"));
    }
    let lost = k.get(pmtu_common::counters::RING_LOST);
    if lost > 0 {
        parts.push(format!("{lost} lost (event ring full)"));
    }
    if t.ignored.total() > 0 {
        parts.push(format!("{} not applied by the kernel's rules ({})", plural(t.ignored.total(), "report"), t.ignored.describe()));
    }
    if t.expired > 0 {
        parts.push(if t.expired == 1 { "1 entry expired".to_string() } else { format!("{} entries expired", t.expired) });
    }
    if totals.decode_errors > 0 {
        parts.push(format!("{} unreadable", totals.decode_errors));
    }
    if live == 0 {
        let why = if parts.is_empty() { String::new() } else { format!(": {}", parts.join(", ")) };
        return Some(format!("{} seen, none in the table{why}", plural(seen, "Packet-Too-Big message")));
    }
    if untabled > 0 && !listed {
        return Some(format!(
            "also seen: {} without an entry{} (pmtu trace --kernel lists them)",
            plural(untabled as u64, "destination"),
            if parts.is_empty() { String::new() } else { format!("; {}", parts.join(", ")) }
        ));
    }
    None
}

#[derive(Serialize)]
struct ReporterJson {
    addr: IpAddr,
    mtu: u32,
    events: u64,
}

#[derive(Serialize)]
struct RejectedJson {
    reporter: IpAddr,
    mtu: u32,
    reasons: Vec<&'static str>,
}

#[derive(Serialize)]
struct NotAppliedJson {
    not_lower: u64,
    locked: u64,
    too_soon: u64,
    below_ipv6_min: u64,
}

impl From<&IgnoredCounts> for NotAppliedJson {
    fn from(i: &IgnoredCounts) -> Self {
        Self { not_lower: i.not_lower, locked: i.locked, too_soon: i.too_soon, below_ipv6_min: i.below_ipv6_min }
    }
}

#[derive(Serialize)]
struct KernelJson {
    /// `cached`, `no-entry`, `no-route`, `not-applicable` or `error`.
    state: &'static str,
    mtu: Option<u32>,
    locked: Option<bool>,
    expires_in: Option<u64>,
    route_mtu: Option<u32>,
    agrees: Option<bool>,
    /// Why they differ, or why the kernel was not asked, or the error.
    why: Option<String>,
}

impl From<&KernelReport> for KernelJson {
    fn from(k: &KernelReport) -> Self {
        let mut j = KernelJson {
            state: "error",
            mtu: None,
            locked: None,
            expires_in: None,
            route_mtu: None,
            agrees: k.agrees,
            why: k.why.clone(),
        };
        match &k.column {
            KernelColumn::Looked(KernelLookup::Route { cache, route_mtu }) => {
                j.route_mtu = *route_mtu;
                match cache {
                    Some(c) => {
                        j.state = "cached";
                        j.mtu = Some(c.mtu);
                        j.locked = Some(c.locked);
                        j.expires_in = Some(c.expires_secs);
                    }
                    None => j.state = "no-entry",
                }
            }
            KernelColumn::Looked(KernelLookup::NoRoute(e)) => {
                j.state = "no-route";
                j.why = j.why.or_else(|| Some(e.clone()));
            }
            KernelColumn::NotApplicable(note) => {
                j.state = "not-applicable";
                j.why = Some((*note).to_string());
            }
            KernelColumn::Failed(e) => j.why = Some(e.clone()),
        }
        j
    }
}

#[derive(Serialize)]
struct DestinationJson {
    dst: IpAddr,
    direction: &'static str,
    family: u8,
    pmtu: u32,
    locked: bool,
    expires_in: u64,
    reporters: Vec<ReporterJson>,
    events: u64,
    accepted_invalid: u64,
    not_applied: NotAppliedJson,
    rejected_events: u64,
    first_seen: String,
    last_seen: String,
    kernel: Option<KernelJson>,
}

#[derive(Serialize)]
struct UntabledJson {
    dst: IpAddr,
    direction: &'static str,
    family: u8,
    why: String,
    rejected_events: u64,
    rejected: Vec<RejectedJson>,
    expired: u64,
    not_applied: NotAppliedJson,
    first_seen: String,
    last_seen: String,
    kernel: Option<KernelJson>,
}

#[derive(Serialize)]
struct TableJson {
    #[serde(rename = "final")]
    is_final: bool,
    destinations: Vec<DestinationJson>,
    untabled: Vec<UntabledJson>,
    summary: Option<String>,
    counters: serde_json::Map<String, serde_json::Value>,
}

/// The table as one JSON object: `destinations` (live entries, as in the
/// text), `untabled` (seen without an entry, and why), a `summary`, and the
/// `counters`. `is_final` is false for a SIGUSR1 snapshot.
pub fn table_json(shown: &[Shown], totals: &Totals, clock: &WallClock, is_final: bool) -> String {
    let mut destinations = Vec::new();
    let mut untabled = Vec::new();
    for s in shown {
        let row = &s.row;
        let kernel = s.kernel.as_ref().map(KernelJson::from);
        match row.cache {
            Some(c) => destinations.push(DestinationJson {
                dst: row.dst,
                direction: row.direction.as_str(),
                family: row.family,
                pmtu: c.pmtu,
                locked: c.locked,
                expires_in: c.expires_in_secs,
                reporters: row
                    .reporters
                    .iter()
                    .map(|r| ReporterJson { addr: r.addr, mtu: r.mtu, events: r.events })
                    .collect(),
                events: row.events,
                accepted_invalid: row.accepted_invalid,
                not_applied: (&row.ignored).into(),
                rejected_events: row.rejected_events,
                first_seen: clock.rfc3339(row.first_seen_ns),
                last_seen: clock.rfc3339(row.last_seen_ns),
                kernel,
            }),
            None => untabled.push(UntabledJson {
                dst: row.dst,
                direction: row.direction.as_str(),
                family: row.family,
                why: no_entry_why(row),
                rejected_events: row.rejected_events,
                rejected: row
                    .rejected
                    .iter()
                    .map(|r| RejectedJson {
                        reporter: r.reporter,
                        mtu: r.mtu,
                        reasons: pmtu_common::validate::REASON_NAMES
                            .iter()
                            .filter(|(bit, _)| r.reasons & bit != 0)
                            .map(|(_, name)| *name)
                            .collect(),
                    })
                    .collect(),
                expired: row.expired,
                not_applied: (&row.ignored).into(),
                first_seen: clock.rfc3339(row.first_seen_ns),
                last_seen: clock.rfc3339(row.last_seen_ns),
                kernel,
            }),
        }
    }
    let summary = summary(destinations.len(), untabled.len(), totals, true);
    let counters = totals
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
        .collect();
    serde_json::to_string(&TableJson { is_final, destinations, untabled, summary, counters }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode::Hook,
        kernel_cache::{KernelEntry, TRANSIT_NOTE},
        table::{CacheRow, RejectedReport, Reporter},
    };
    use pmtu_common::validate::{REASON_BAD_CHECKSUM, REASON_EXT_HEADER_LIMIT, REASON_NOT_FOR_US, REASON_QUOTED_FRAGMENT};

    fn clock() -> WallClock {
        // 2026-11-24T00:00:00Z at monotonic 0.
        WallClock::with_offset_ns(1_795_478_400 * 1_000_000_000)
    }

    fn ptb() -> Ptb {
        Ptb {
            ts_ns: 1_500_000,
            ifindex: 2,
            hook: Hook::TcEgress,
            family: 4,
            reporter: "192.168.6.2".parse().unwrap(),
            to: "192.168.5.1".parse().unwrap(),
            mtu: 1350,
            mtu_estimated: false,
            orig_src: "192.168.5.1".parse().unwrap(),
            orig_dst: "192.168.7.2".parse().unwrap(),
            proto: 17,
            sport: Some(40000),
            dport: Some(53),
            quoted_len: 1370,
            reasons: 0,
            direction: Direction::Received,
            out_ifindex: None,
            capture: None,
        }
    }

    fn totals() -> Totals {
        Totals { kernel: Counters::default(), events_delivered: 2, decode_errors: 0, table: TableTotals::default() }
    }

    fn row(direction: Direction, cache: Option<(u32, bool)>) -> Row {
        Row {
            dst: "192.168.7.2".parse().unwrap(),
            direction,
            family: 4,
            cache: cache.map(|(pmtu, locked)| CacheRow { pmtu, locked, expires_in_secs: 599, set_ns: 2 }),
            reporters: vec![
                Reporter { addr: "192.168.6.2".parse().unwrap(), mtu: 1350, events: 1, last_seen_ns: 2 },
                Reporter { addr: "192.168.5.2".parse().unwrap(), mtu: 1370, events: 1, last_seen_ns: 1 },
            ],
            events: 2,
            accepted_invalid: 0,
            ignored: IgnoredCounts::default(),
            rejected_events: 0,
            rejected: Vec::new(),
            expired: 0,
            first_seen_ns: 1,
            last_seen_ns: 2,
        }
    }

    fn agreeing() -> KernelReport {
        KernelReport {
            column: KernelColumn::Looked(KernelLookup::Route {
                cache: Some(KernelEntry { mtu: 1350, locked: false, expires_secs: 598 }),
                route_mtu: Some(1500),
            }),
            agrees: Some(true),
            why: None,
        }
    }

    #[test]
    fn event_json_has_exactly_the_documented_keys() {
        let v: serde_json::Value = serde_json::from_str(&event_json(&ptb(), "to-r1", &clock())).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "direction", "dport", "family", "hook", "ifname", "mtu", "mtu_estimated", "orig_dst", "orig_src",
                "out_ifname", "proto", "quoted_len", "reasons", "reporter", "sport", "time", "to", "verdict"
            ]
        );
        assert_eq!(v["time"], "2026-11-24T00:00:00.001500Z");
        assert_eq!(v["direction"], "received");
        assert_eq!(v["out_ifname"], serde_json::Value::Null);
        assert_eq!(v["hook"], "tc-egress");
        assert_eq!(v["reporter"], "192.168.6.2");
        assert_eq!(v["mtu"], 1350);
        assert_eq!(v["sport"], 40000);
        assert_eq!(v["verdict"], "valid");
        assert_eq!(v["reasons"], serde_json::json!([]));
    }

    #[test]
    fn transit_events_name_both_interfaces() {
        let mut p = ptb();
        p.direction = Direction::Transit;
        p.hook = Hook::Xdp;
        p.ifindex = 3;
        p.out_ifindex = Some(2);
        let line = event_text_with(&p, "to-r2", Some("to-h0"), &clock());
        assert_eq!(
            line,
            "2026-11-24T00:00:00.001500Z transit to-r2 -> to-h0 xdp 192.168.6.2 says mtu 1350 for 192.168.5.1:40000 > 192.168.7.2:53 (udp, 1370 bytes)"
        );
        let v: serde_json::Value = serde_json::from_str(&event_json_with(&p, "to-r2", Some("to-h0"), &clock())).unwrap();
        assert_eq!((v["direction"].as_str(), v["ifname"].as_str(), v["out_ifname"].as_str()), (Some("transit"), Some("to-r2"), Some("to-h0")));
        // Known only by index, or not at all.
        assert!(event_text(&p, "to-r2", &clock()).contains(" transit to-r2 -> if2 xdp "));
        p.out_ifindex = None;
        assert!(event_text(&p, "to-r2", &clock()).contains(" transit to-r2 -> ? xdp "));
    }

    #[test]
    fn event_text_reads_like_the_message_with_its_direction() {
        let line = event_text(&ptb(), "to-r1", &clock());
        assert_eq!(
            line,
            "2026-11-24T00:00:00.001500Z received to-r1 tc-egress 192.168.6.2 says mtu 1350 for 192.168.5.1:40000 > 192.168.7.2:53 (udp, 1370 bytes)"
        );
        let mut p = ptb();
        p.direction = Direction::Sent;
        p.mtu = 0;
        assert!(event_text(&p, "to-h0", &clock()).contains(" sent to-h0 tc-egress 192.168.6.2 says mtu 0 for "));
    }

    #[test]
    fn new_reasons_print_by_their_exact_names() {
        let mut p = ptb();
        p.reasons = REASON_BAD_CHECKSUM | REASON_NOT_FOR_US | REASON_QUOTED_FRAGMENT | REASON_EXT_HEADER_LIMIT;
        let line = event_text(&p, "to-r1", &clock());
        assert!(line.ends_with(" INVALID: bad-checksum, not-for-us, quoted-fragment, ext-header-limit"), "{line}");
        let v: serde_json::Value = serde_json::from_str(&event_json(&p, "to-r1", &clock())).unwrap();
        assert_eq!(v["reasons"], serde_json::json!(["bad-checksum", "not-for-us", "quoted-fragment", "ext-header-limit"]));
        assert_eq!(v["verdict"], "invalid");
    }

    #[test]
    fn table_json_shape() {
        let shown = vec![Shown { row: row(Direction::Received, Some((1350, false))), kernel: Some(agreeing()) }];
        let v: serde_json::Value = serde_json::from_str(&table_json(&shown, &totals(), &clock(), true)).unwrap();
        assert_eq!(v["final"], true);
        let d = &v["destinations"][0];
        assert_eq!(d["dst"], "192.168.7.2");
        assert_eq!(d["direction"], "received");
        assert_eq!((d["pmtu"].as_u64(), d["locked"].as_bool()), (Some(1350), Some(false)));
        assert_eq!(d["reporters"][1]["addr"], "192.168.5.2");
        assert_eq!(d["reporters"][1]["mtu"], 1370);
        assert_eq!(d["expires_in"], 599);
        assert!(d["first_seen"].as_str().unwrap().starts_with("2026-11-24T00:00:00"));
        let k = &d["kernel"];
        assert_eq!((k["state"].as_str(), k["mtu"].as_u64(), k["expires_in"].as_u64()), (Some("cached"), Some(1350), Some(598)));
        assert_eq!(k["agrees"], true);
        assert_eq!(v["untabled"], serde_json::json!([]));
        assert_eq!(v["summary"], serde_json::Value::Null);
        assert_eq!(v["counters"]["events_delivered"], 2);
        assert_eq!(v["counters"]["ring_lost"], 0);
        assert_eq!(v["counters"]["reports_not_applied"], 0);
    }

    #[test]
    fn table_text_reads_like_ip_route_get_with_the_kernel_beside() {
        let mut transit = row(Direction::Transit, Some((1300, false)));
        transit.events = 1;
        transit.reporters.truncate(1);
        let mut locked = row(Direction::Received, Some((552, true)));
        locked.dst = "10.0.0.9".parse().unwrap();
        locked.reporters.truncate(1);
        locked.events = 1;
        locked.ignored.locked = 3;
        let shown = vec![
            Shown { row: locked, kernel: None },
            Shown { row: row(Direction::Received, Some((1350, false))), kernel: Some(agreeing()) },
            Shown {
                row: transit,
                kernel: Some(KernelReport { column: KernelColumn::NotApplicable(TRANSIT_NOTE), agrees: None, why: None }),
            },
        ];
        let text = table_text(&shown, &totals(), true);
        assert!(text.starts_with("10.0.0.9 mtu lock 552 expires 599sec (received, 1 event)\n"), "{text}");
        assert!(text.contains("    not applied: 3 while locked\n"), "{text}");
        assert!(text.contains("\n192.168.7.2 mtu 1350 expires 599sec (received, 2 events)\n"), "{text}");
        assert!(text.contains("    reported by 192.168.5.2 mtu 1370 (1 event)\n"), "{text}");
        assert!(text.contains("    kernel: cache expires 598sec mtu 1350 (agrees)\n"), "{text}");
        assert!(text.contains("\n192.168.7.2 mtu 1300 expires 599sec (transit, 1 event)\n"), "{text}");
        assert!(text.contains(&format!("    kernel: not asked ({TRANSIT_NOTE})\n")), "{text}");
        // Without --kernel, no kernel lines.
        assert!(!table_text(&shown, &totals(), false).contains("kernel:"));
    }

    #[test]
    fn a_disagreement_says_why() {
        let mut forged = row(Direction::Received, None);
        forged.dst = "10.9.9.9".parse().unwrap();
        forged.events = 0;
        forged.reporters.clear();
        forged.rejected_events = 1;
        forged.rejected.push(RejectedReport {
            reporter: "192.168.5.2".parse().unwrap(),
            mtu: 1000,
            reasons: pmtu_common::validate::REASON_UNKNOWN_FLOW,
            seen_ns: 3,
        });
        let kernel = KernelReport {
            column: KernelColumn::Looked(KernelLookup::Route {
                cache: Some(KernelEntry { mtu: 1000, locked: false, expires_secs: 597 }),
                route_mtu: Some(1500),
            }),
            agrees: Some(false),
            why: Some("pmtu rejected a PTB the kernel applied: 192.168.5.2 said mtu 1000 (unknown-flow)".into()),
        };
        let mut t = totals();
        t.table.rejected = 1;
        t.events_delivered = 1;
        let shown = vec![Shown { row: forged, kernel: Some(kernel) }];
        let text = table_text(&shown, &t, true);
        assert!(text.contains("seen, without an entry:\n10.9.9.9 (received): 1 invalid event kept out (unknown-flow)\n"), "{text}");
        assert!(
            text.contains("    kernel: cache expires 597sec mtu 1000 (DISAGREES: pmtu rejected a PTB the kernel applied: 192.168.5.2 said mtu 1000 (unknown-flow))\n"),
            "{text}"
        );
        assert!(text.contains("1 Packet-Too-Big message seen, none in the table: 1 invalid event (kept out without --accept-unvalidated)\n"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&table_json(&shown, &t, &clock(), true)).unwrap();
        assert_eq!(v["destinations"], serde_json::json!([]));
        let u = &v["untabled"][0];
        assert_eq!(u["dst"], "10.9.9.9");
        assert_eq!(u["rejected"][0]["reasons"], serde_json::json!(["unknown-flow"]));
        assert_eq!(u["kernel"]["agrees"], false);
        assert!(v["summary"].as_str().unwrap().starts_with("1 Packet-Too-Big message seen, none in the table"));
    }

    #[test]
    fn no_ptb_seen_only_when_none_was() {
        let mut t = totals();
        t.events_delivered = 0;
        assert!(table_text(&[], &t, false).starts_with("no Packet-Too-Big seen\n"));
        // Seen but expired.
        t.kernel.0[pmtu_common::counters::PTB_V4 as usize] = 3;
        t.table.expired = 1;
        t.table.ignored.not_lower = 2;
        let text = table_text(&[], &t, false);
        assert!(!text.contains("no Packet-Too-Big seen"), "{text}");
        assert!(
            text.starts_with("3 Packet-Too-Big messages seen, none in the table: 2 reports not applied by the kernel's rules (2 not lower than the cached MTU), 1 entry expired\n"),
            "{text}"
        );
        // Seen, but all rate-limited.
        let mut t = totals();
        t.events_delivered = 0;
        t.kernel.0[pmtu_common::counters::PTB_V6 as usize] = 5;
        t.kernel.0[pmtu_common::counters::RATE_LIMITED as usize] = 5;
        assert!(table_text(&[], &t, false).starts_with("5 Packet-Too-Big messages seen, none in the table: 5 suppressed by the rate limit"));
    }
}
