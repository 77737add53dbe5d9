//! Prometheus exposition for `pmtu run`, and the small HTTP server that
//! answers `GET /metrics`.
//!
//! # How it fits together
//!
//! The daemon owns all state; this module owns none. [`serve`] accepts
//! scrapes and, for each `GET /metrics`, sends a oneshot sender over the
//! `ask` channel; the daemon's loop builds a [`Snapshot`] of what it has at
//! that instant, calls [`render`] and sends the text back. A fresh
//! [`Registry`] is built per render, so counters are set from the daemon's
//! (or the kernel's) running totals rather than incremented here: nothing can
//! drift between the two. The text comes from prometheus-client's
//! Prometheus text encoder (format 0.0.4, [`CONTENT_TYPE`]) rather than its
//! OpenMetrics one: `promtool check metrics` (2.42, Debian 12) rejects the
//! OpenMetrics `info` type, and Prometheus scrapes both.
//!
//! # Metrics
//!
//! Every name starts with `pmtu_`; counters end in `_total`. Families with no
//! series (no clamper, no observer, an `Option` that is `None`) are left out.
//!
//! | metric | type | labels | from |
//! |---|---|---|---|
//! | `pmtu_build_info` | gauge (=1) | `version` | |
//! | `pmtu_uptime_seconds` | gauge | | |
//! | `pmtu_attached_info` | gauge (=1) | `interface`, `role` (`trace`/`clamp`), `mechanism` (`tcx`, `xdp`, ...) | |
//! | `pmtu_observer_packets_inspected_total` | counter | | kernel `inspected` |
//! | `pmtu_observer_ptb_total` | counter | `family` (`ipv4`/`ipv6`) | kernel `ptb_v4`, `ptb_v6` |
//! | `pmtu_observer_packets_malformed_total` | counter | | kernel `malformed` |
//! | `pmtu_observer_fragments_skipped_total` | counter | | kernel `fragments_skipped` |
//! | `pmtu_observer_flows_recorded_total` | counter | | kernel `flows_recorded` |
//! | `pmtu_observer_map_update_failures_total` | counter | | kernel `map_update_failed` |
//! | `pmtu_observer_transit_seen_on_entry_total` | counter | | kernel `transit_seen_on_entry` |
//! | `pmtu_events_submitted_total` | counter | | kernel `events_submitted` |
//! | `pmtu_events_lost_total` | counter | | kernel `ring_lost` |
//! | `pmtu_events_rate_limited_total` | counter | | kernel `rate_limited` |
//! | `pmtu_events_invalid_total` | counter | | kernel `invalid` |
//! | `pmtu_events_delivered_total` | counter | | records drained from the ring |
//! | `pmtu_events_decode_errors_total` | counter | | records that did not decode |
//! | `pmtu_ptb_events_total` | counter | `interface`, `family`, `direction`, `verdict` | [`EventTally`] |
//! | `pmtu_ptb_invalid_reasons_total` | counter | `interface`, `family`, `reason` | [`EventTally`] |
//! | `pmtu_destinations` | gauge | | table entries |
//! | `pmtu_lowest_pmtu_bytes` | gauge | `interface` | table |
//! | `pmtu_table_rejected_total` | counter | | [`TableTotals::rejected`] |
//! | `pmtu_table_ignored_total` | counter | `reason` (`not_lower`, `locked`, `too_soon`, `below_ipv6_min`) | [`TableTotals::ignored`] |
//! | `pmtu_table_expired_total` | counter | | [`TableTotals::expired`] |
//! | `pmtu_table_evicted_total` | counter | | [`TableTotals::evicted`] |
//! | `pmtu_flows` | gauge | | `FLOWS` map occupancy |
//! | `pmtu_reporters` | gauge | | `REPORTER_BUCKETS` occupancy |
//! | `pmtu_ring_backlog_bytes` | gauge | | unread ring bytes |
//! | `pmtu_learned_entries` | gauge | | learned PMTUs in the clamper's map |
//! | `pmtu_learned_reports_total` | counter | | reports that taught or refreshed one |
//! | `pmtu_learned_removed_total` | counter | | learned entries removed (expired, flushed) |
//! | `pmtu_clamp_syn_seen_total` | counter | `interface` | clamp `syn_seen` |
//! | `pmtu_clamp_syn_total` | counter | `interface`, `outcome` | the other clamp counters |
//!
//! Design choices a dashboard relies on:
//!
//! - Kernel counters get one metric each, named for what they count, rather
//!   than one family with a `what` label: summing across `what` would add
//!   packets to events. The two PTB counters differ only by family, so they
//!   are one metric with a `family` label.
//! - `pmtu_ptb_events_total` counts each event once: `verdict` is `valid` or
//!   `invalid` ([`Ptb::verdict`]), so `sum` over it is the number of events.
//!   An invalid event may have several reasons; each one is counted in
//!   `pmtu_ptb_invalid_reasons_total` (with the names of
//!   `validate::REASON_NAMES`, e.g. `not-smaller`), so summing that family
//!   over `reason` counts reasons, not events.
//! - `syn_seen` is the clamper's count of SYNs, and every other clamp counter
//!   an outcome for one of them, so it is its own metric: `sum by
//!   (interface)` of `pmtu_clamp_syn_total` is then outcomes only
//!   (`malformed` also counts segments that did not parse far enough to be
//!   counted as SYNs).
//! - Rare events matter here (one PTB can be the whole story), and
//!   `increase()` cannot see a series' first increment if the series is born
//!   with it. So every traced interface (an `attached` entry with role
//!   `trace`) and every interface with events gets all its PTB series from
//!   the start, zeros included: family × direction (`received`, `transit`,
//!   `sent`; `unknown` only once counted) × verdict, and family × reason.
//!   Clamp counters are given whole per interface and exported whole.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use anyhow::Context as _;
use pmtu_common::{counters as kc, policy, validate::REASON_NAMES};
use prometheus_client::{
    encoding::prometheus_text,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
    time::timeout,
};

use crate::{
    decode::{Direction, Ptb},
    table::TableTotals,
};

/// What [`render`]'s text is, for the `Content-Type` header.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Clamp counters of one interface, in `policy::counters` order.
pub type ClampCounters = [u64; policy::counters::COUNT as usize];

/// Interfaces [`EventTally`] keeps apart. Interface names come and go (one
/// ppp interface per subscriber on a BRAS), and a daemon runs for months:
/// past this many, new names are counted under [`OTHER_INTERFACE`] instead
/// of growing the tally and the exposition without bound.
pub const MAX_TALLY_INTERFACES: usize = 4096;

/// The `interface` label of events on interfaces past
/// [`MAX_TALLY_INTERFACES`]. Linux interface names cannot contain `/`
/// (`dev_valid_name()`), so this cannot be a real interface.
pub const OTHER_INTERFACE: &str = "/other";

/// `family` label values, indexed as [`family_index`] does.
const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];

/// Directions in [`IfaceTally::events`] order.
const DIRECTIONS: [Direction; 4] = [Direction::Received, Direction::Transit, Direction::Sent, Direction::Unknown];

/// `verdict` label values: index 0 valid, 1 invalid.
const VERDICTS: [&str; 2] = ["valid", "invalid"];

const REASONS: usize = REASON_NAMES.len();

fn family_index(family: u8) -> Option<usize> {
    match family {
        4 => Some(0),
        6 => Some(1),
        _ => None,
    }
}

fn direction_index(direction: Direction) -> usize {
    match direction {
        Direction::Received => 0,
        Direction::Transit => 1,
        Direction::Sent => 2,
        Direction::Unknown => 3,
    }
}

/// One interface's PTB counts; fixed arrays so that counting an event on a
/// known interface allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct IfaceTally {
    /// `[family][direction][verdict]`.
    events: [[[u64; VERDICTS.len()]; DIRECTIONS.len()]; FAMILIES.len()],
    /// `[family][reason]`, in `REASON_NAMES` order.
    reasons: [[u64; REASONS]; FAMILIES.len()],
}

impl IfaceTally {
    fn count(&mut self, family: usize, ptb: &Ptb) {
        let verdict = usize::from(!ptb.is_valid());
        self.events[family][direction_index(ptb.direction)][verdict] += 1;
        for (index, (bit, _)) in REASON_NAMES.iter().enumerate() {
            if ptb.reasons & bit != 0 {
                self.reasons[family][index] += 1;
            }
        }
    }
}

/// PTB events counted in userspace as they are drained from the ring, by
/// interface, family, direction and verdict, and invalid ones by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventTally {
    by_interface: HashMap<String, IfaceTally>,
}

impl EventTally {
    /// Counts one event seen on `ifname` (the interface the observer saw it
    /// on). Every reason bit of an invalid event is counted once.
    pub fn record(&mut self, ptb: &Ptb, ifname: &str) {
        // decode() only yields families 4 and 6; anything else was not made
        // by it and has no series to go to.
        let Some(family) = family_index(ptb.family) else {
            return;
        };
        // Looked up by &str so that an interface already known costs no
        // allocation; only a new name is copied.
        let key = if self.by_interface.contains_key(ifname) || self.by_interface.len() < MAX_TALLY_INTERFACES {
            ifname
        } else {
            OTHER_INTERFACE
        };
        match self.by_interface.get_mut(key) {
            Some(tally) => tally.count(family, ptb),
            None => {
                let mut tally = IfaceTally::default();
                tally.count(family, ptb);
                self.by_interface.insert(key.to_owned(), tally);
            }
        }
    }

    /// Events counted so far, all interfaces.
    pub fn total(&self) -> u64 {
        self.by_interface.values().flat_map(|t| t.events.iter().flatten().flatten()).sum()
    }
}

/// What the daemon knows at one instant, for one scrape.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot<'a> {
    pub version: &'a str,
    pub uptime_secs: f64,
    /// The observer's kernel counters, summed over CPUs (None when nothing
    /// is traced).
    pub observer: Option<crate::counters::Counters>,
    /// Clamp counters per interface name, one entry per interface (a
    /// repeated name is summed).
    pub clamp: &'a [(String, ClampCounters)],
    pub events: &'a EventTally,
    /// Ring records drained by userspace.
    pub events_delivered: u64,
    /// Ring records that did not decode.
    pub decode_errors: u64,
    /// Table entries.
    pub destinations: u64,
    /// What the table's rules did over the run.
    pub table: TableTotals,
    /// Per interface name: the lowest PMTU currently in the table learnt on
    /// it (a repeated name keeps the lowest).
    pub lowest_pmtu: &'a [(String, u32)],
    /// Occupancy of the FLOWS map (None: unknown).
    pub flows: Option<u64>,
    /// Occupancy of REPORTER_BUCKETS (None: unknown).
    pub reporters: Option<u64>,
    /// Bytes written to the ring and not yet read (None: unknown).
    pub ring_backlog_bytes: Option<u64>,
    /// (interface, role `trace`/`clamp`, mechanism such as `tcx` or `xdp`).
    pub attached: &'a [(String, String, String)],
    /// Learned clamping (None: no learner).
    pub learned: Option<LearnedTotals>,
}

/// What the learner (learn.rs) has done, for /metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct LearnedTotals {
    pub entries: u64,
    pub taught: u64,
    pub removed: u64,
}

/// How one kernel counter is exported.
struct KernelMetric {
    index: u32,
    /// Registered name: no `pmtu_` prefix and no `_total` (both added by
    /// the encoder).
    name: &'static str,
    help: &'static str,
    /// The `family` label, for the metrics split by family.
    family: Option<&'static str>,
}

/// Every observer counter, each exactly once (a test checks). The array is
/// as long as `counters::COUNT`, so a new kernel counter does not compile
/// until it is given a metric here.
const OBSERVER_METRICS: [KernelMetric; kc::COUNT as usize] = [
    KernelMetric {
        index: kc::INSPECTED,
        name: "observer_packets_inspected",
        help: "Packets the observer programs looked at",
        family: None,
    },
    KernelMetric {
        index: kc::PTB_V4,
        name: "observer_ptb",
        help: "Packet Too Big messages parsed by the observer (ICMPv4 type 3 code 4, ICMPv6 type 2)",
        family: Some("ipv4"),
    },
    KernelMetric {
        index: kc::PTB_V6,
        name: "observer_ptb",
        help: "Packet Too Big messages parsed by the observer (ICMPv4 type 3 code 4, ICMPv6 type 2)",
        family: Some("ipv6"),
    },
    KernelMetric {
        index: kc::MALFORMED,
        name: "observer_packets_malformed",
        help: "Packets whose headers contradict themselves or end early, passed on unchanged",
        family: None,
    },
    KernelMetric {
        index: kc::FRAGMENT_SKIPPED,
        name: "observer_fragments_skipped",
        help: "Non-first IP fragments, which carry no header to parse",
        family: None,
    },
    KernelMetric {
        index: kc::RING_LOST,
        name: "events_lost",
        help: "PTB events lost because the ring buffer was full",
        family: None,
    },
    KernelMetric {
        index: kc::EVENTS_SUBMITTED,
        name: "events_submitted",
        help: "PTB events written to the ring buffer",
        family: None,
    },
    KernelMetric {
        index: kc::RATE_LIMITED,
        name: "events_rate_limited",
        help: "PTBs suppressed by a reporter token bucket, counted but not sent as events",
        family: None,
    },
    KernelMetric {
        index: kc::INVALID,
        name: "events_invalid",
        help: "PTB events submitted with at least one reason not to trust them",
        family: None,
    },
    KernelMetric {
        index: kc::FLOWS_RECORDED,
        name: "observer_flows_recorded",
        help: "New flows recorded from outgoing packets",
        family: None,
    },
    KernelMetric {
        index: kc::MAP_UPDATE_FAILED,
        name: "observer_map_update_failures",
        help: "Inserts refused by the flow or rate-limit maps",
        family: None,
    },
    KernelMetric {
        index: kc::TRANSIT_SEEN_ON_ENTRY,
        name: "observer_transit_seen_on_entry",
        help: "Forwarded PTBs at egress already reported where they came in",
        family: None,
    },
];

/// The `pmtu_table_ignored_total` reasons, as `IgnoredCounts` fields.
fn ignored_reasons(t: &TableTotals) -> [(&'static str, u64); 4] {
    [
        ("not_lower", t.ignored.not_lower),
        ("locked", t.ignored.locked),
        ("too_soon", t.ignored.too_soon),
        ("below_ipv6_min", t.ignored.below_ipv6_min),
    ]
}

type Labels = Vec<(&'static str, String)>;
type CounterFamily = Family<Labels, Counter>;
type GaugeU64 = Gauge<u64, std::sync::atomic::AtomicU64>;
type GaugeFamily = Family<Labels, GaugeU64>;

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: u64) -> GaugeU64 {
    let g = GaugeU64::default();
    g.set(value);
    g
}

/// The exposition of one snapshot, in the Prometheus text format.
pub fn render(s: &Snapshot) -> anyhow::Result<String> {
    let mut r = Registry::with_prefix("pmtu");

    let build = GaugeFamily::default();
    build.get_or_create(&vec![("version", s.version.to_owned())]).set(1);
    r.register("build_info", "The pmtu version running, as a label; always 1", build);

    let uptime = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    uptime.set(s.uptime_secs);
    r.register_with_unit("uptime", "Seconds since pmtu run started", Unit::Seconds, uptime);

    let attached = GaugeFamily::default();
    for (ifname, role, mechanism) in s.attached {
        attached
            .get_or_create(&vec![
                ("interface", ifname.clone()),
                ("role", role.clone()),
                ("mechanism", mechanism.clone()),
            ])
            .set(1);
    }
    r.register("attached_info", "A program attached to an interface, by role and mechanism; always 1", attached);

    if let Some(observer) = s.observer {
        register_observer(&mut r, &observer);
    }
    r.register("events_delivered", "Ring buffer records read by userspace", counter(s.events_delivered));
    r.register("events_decode_errors", "Ring buffer records that did not decode", counter(s.decode_errors));
    register_events(&mut r, s);

    r.register("destinations", "Destinations in pmtu's PMTU table", gauge(s.destinations));
    let lowest = GaugeFamily::default();
    for (ifname, mtu) in s.lowest_pmtu {
        let labels = vec![("interface", ifname.clone())];
        let g = lowest.get_or_create_owned(&labels);
        // A fresh gauge reads 0, which is no PMTU: the first value is taken as is.
        let mtu = u64::from(*mtu);
        if g.get() == 0 || mtu < g.get() {
            g.set(mtu);
        }
    }
    r.register_with_unit(
        "lowest_pmtu",
        "Lowest path MTU in the table among destinations learnt on this interface",
        Unit::Bytes,
        lowest,
    );
    r.register("table_rejected", "Invalid PTB reports kept out of the table", counter(s.table.rejected));
    let ignored = CounterFamily::default();
    for (reason, n) in ignored_reasons(&s.table) {
        ignored.get_or_create(&vec![("reason", reason.to_owned())]).inc_by(n);
    }
    r.register("table_ignored", "PTB reports the kernel's rules leave alone, by reason", ignored);
    r.register("table_expired", "Table entries that expired", counter(s.table.expired));
    r.register("table_evicted", "Destinations dropped because the table was full", counter(s.table.evicted));

    if let Some(n) = s.flows {
        r.register("flows", "Entries in the observer's FLOWS map", gauge(n));
    }
    if let Some(n) = s.reporters {
        r.register("reporters", "Entries in the observer's REPORTER_BUCKETS map", gauge(n));
    }
    if let Some(n) = s.ring_backlog_bytes {
        r.register_with_unit("ring_backlog", "Bytes in the event ring not yet read", Unit::Bytes, gauge(n));
    }

    if let Some(l) = s.learned {
        r.register("learned_entries", "Learned PMTUs in the clamper's map", gauge(l.entries));
        r.register("learned_reports", "Valid PTBs that taught or refreshed a learned PMTU", counter(l.taught));
        r.register("learned_removed", "Learned PMTUs removed from the clamper's map (expired or flushed)", counter(l.removed));
    }

    register_clamp(&mut r, s.clamp);

    let mut out = String::new();
    prometheus_text::encode(&mut out, &r).context("encoding the metrics")?;
    Ok(out)
}

fn register_observer(r: &mut Registry, observer: &crate::counters::Counters) {
    // Metrics sharing a name (the PTB counters) are one family, registered
    // once, in the order of their first counter.
    let mut families: Vec<(&'static str, &'static str, CounterFamily)> = Vec::new();
    for m in &OBSERVER_METRICS {
        let labels: Labels = m.family.map(|f| vec![("family", f.to_owned())]).unwrap_or_default();
        let value = observer.get(m.index);
        match families.iter().find(|(name, _, _)| *name == m.name) {
            Some((_, _, family)) => {
                family.get_or_create(&labels).inc_by(value);
            }
            None => {
                let family = CounterFamily::default();
                family.get_or_create(&labels).inc_by(value);
                families.push((m.name, m.help, family));
            }
        }
    }
    for (name, help, family) in families {
        r.register(name, help, family);
    }
}

fn register_events(r: &mut Registry, s: &Snapshot) {
    let events = CounterFamily::default();
    let reasons = CounterFamily::default();
    let empty = IfaceTally::default();
    // Traced interfaces first, so they have series before their first event
    // (see the module comment); then whatever the tally has.
    let traced = s.attached.iter().filter(|(_, role, _)| role == "trace").map(|(ifname, _, _)| ifname.as_str());
    let mut interfaces: Vec<&str> = traced.chain(s.events.by_interface.keys().map(String::as_str)).collect();
    interfaces.sort_unstable();
    interfaces.dedup();
    for ifname in interfaces {
        let tally = s.events.by_interface.get(ifname).unwrap_or(&empty);
        for (f, family) in FAMILIES.iter().enumerate() {
            for (d, direction) in DIRECTIONS.iter().enumerate() {
                for (v, verdict) in VERDICTS.iter().enumerate() {
                    let n = tally.events[f][d][v];
                    // `unknown` comes only from old records: not worth a
                    // zero series on every interface.
                    if *direction == Direction::Unknown && n == 0 {
                        continue;
                    }
                    let labels = vec![
                        ("interface", ifname.to_owned()),
                        ("family", (*family).to_owned()),
                        ("direction", direction.as_str().to_owned()),
                        ("verdict", (*verdict).to_owned()),
                    ];
                    events.get_or_create(&labels).inc_by(n);
                }
            }
            for (i, (_, reason)) in REASON_NAMES.iter().enumerate() {
                let labels = vec![
                    ("interface", ifname.to_owned()),
                    ("family", (*family).to_owned()),
                    ("reason", (*reason).to_owned()),
                ];
                reasons.get_or_create(&labels).inc_by(tally.reasons[f][i]);
            }
        }
    }
    r.register(
        "ptb_events",
        "PTB events decoded by userspace, by interface seen on, family, direction and verdict",
        events,
    );
    r.register(
        "ptb_invalid_reasons",
        "Reasons found in invalid PTB events; an event with several reasons counts once for each",
        reasons,
    );
}

fn register_clamp(r: &mut Registry, clamp: &[(String, ClampCounters)]) {
    let seen = CounterFamily::default();
    let outcomes = CounterFamily::default();
    for (ifname, counters) in clamp {
        for (index, (name, value)) in policy::counters::NAMES.iter().zip(counters).enumerate() {
            if index == policy::counters::SYN_SEEN as usize {
                seen.get_or_create(&vec![("interface", ifname.clone())]).inc_by(*value);
            } else {
                outcomes
                    .get_or_create(&vec![("interface", ifname.clone()), ("outcome", (*name).to_owned())])
                    .inc_by(*value);
            }
        }
    }
    r.register("clamp_syn_seen", "TCP SYNs and SYN-ACKs the clamper parsed", seen);
    r.register("clamp_syn", "What the clamper did with each SYN, by outcome", outcomes);
}

// ---------------------------------------------------------------------------
// HTTP

/// Longest request head read; beyond it, 431.
const MAX_HEAD: usize = 8 * 1024;
/// After responding: how much to read and discard of what the client still
/// sends (see [`Limits::linger`]).
const LINGER_BYTES: usize = 64 * 1024;

/// The server's time limits; one set in use, shorter ones in tests.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Time a client gets to send its request head.
    head: Duration,
    /// Time the daemon gets to answer a scrape; Prometheus' default scrape
    /// timeout is 10 s, so a later answer would be thrown away anyway.
    answer: Duration,
    /// Time a client gets to take the response.
    write: Duration,
    /// After responding: how long to read and discard what the client still
    /// sends. Closing with unread data makes the kernel send an RST, which
    /// can destroy the response before the client reads it (an oversized
    /// head is the usual case).
    linger: Duration,
}

const LIMITS: Limits = Limits {
    head: Duration::from_secs(5),
    answer: Duration::from_secs(10),
    write: Duration::from_secs(10),
    linger: Duration::from_secs(1),
};
/// Connections handled at once; past it, new ones wait in the listen
/// backlog, so slow or idle clients cannot take unbounded tasks and memory.
const MAX_CONNECTIONS: usize = 16;
/// Pause after a failed accept (EMFILE and the like), so that a persistent
/// error does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const INDEX_HTML: &str = "<!DOCTYPE html>\n<html><head><title>pmtu</title></head>\n\
<body><h1>pmtu</h1><p>Prometheus metrics are at <a href=\"/metrics\">/metrics</a>.</p></body></html>\n";

/// Serves `GET /metrics` (and `HEAD`), and a pointer to it at `/`, on
/// `listener`, forever. Each scrape sends a oneshot sender on `ask` and
/// returns what comes back as the body; if `ask` is closed, the sender is
/// dropped unanswered, or no answer comes within 10 s, the scrape gets 503.
pub async fn serve(listener: TcpListener, ask: mpsc::Sender<oneshot::Sender<String>>) {
    serve_with(listener, ask, LIMITS).await
}

async fn serve_with(listener: TcpListener, ask: mpsc::Sender<oneshot::Sender<String>>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // The semaphore is never closed, so this cannot fail; if it could,
        // there would be nothing left to serve with.
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let ask = ask.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &ask, limits).await {
                        tracing::debug!("metrics: {peer}: {e}");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                drop(permit);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Index,
    Error(Status),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Request {
    route: Route,
    /// HEAD: the response has headers only, whatever its status
    /// (RFC 9110 §9.3.2).
    head_only: bool,
}

impl Request {
    fn error(status: Status) -> Self {
        Request { route: Route::Error(status), head_only: false }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeadTooLarge,
    Unavailable,
    VersionNotSupported,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
            Status::Unavailable => "503 Service Unavailable",
            Status::VersionNotSupported => "505 HTTP Version Not Supported",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.line())
    }
}

/// How reading a request head ended.
enum Head {
    /// The head ends at this offset in the buffer.
    Complete(usize),
    TooLarge,
    /// The client closed before finishing it.
    Closed,
}

/// Where the blank line ending a head is in `buf`, and its end. A bare LF
/// is accepted as a line end, as RFC 9112 §2.2 allows.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn read_head(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<Head> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Ok(Head::TooLarge);
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        // Search only what is new, plus enough before it to catch a
        // terminator split across reads.
        let from = len.saturating_sub(3);
        len += n;
        if let Some(end) = head_end(&buf[from..len]) {
            return Ok(Head::Complete(from + end));
        }
    }
}

/// Routes a complete request head (request line, headers; headers are not
/// needed for anything here).
fn route(head: &[u8]) -> Request {
    // RFC 9112 §2.2: a server should ignore empty lines before the request line.
    let start = head.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(head.len());
    let head = &head[start..];
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let line = head[..line_end].strip_suffix(b"\r").unwrap_or(&head[..line_end]);
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::error(Status::BadRequest);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::error(Status::BadRequest);
    };
    if method.is_empty() || target.is_empty() {
        return Request::error(Status::BadRequest);
    }
    let head_only = method == "HEAD";
    let status = |status| Request { route: Route::Error(status), head_only };
    match version {
        "HTTP/1.0" | "HTTP/1.1" => {}
        v if v.starts_with("HTTP/") => return status(Status::VersionNotSupported),
        _ => return status(Status::BadRequest),
    }
    // The query string changes nothing (Prometheus sends none, but
    // `?name[]=...` style parameters from other scrapers should not 404).
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let route = match path {
        "/metrics" => Route::Metrics,
        "/" => Route::Index,
        _ => return status(Status::NotFound),
    };
    if method != "GET" && method != "HEAD" {
        return status(Status::MethodNotAllowed);
    }
    Request { route, head_only }
}

/// Asks the daemon for the exposition; None when it is gone or too slow.
async fn scrape(ask: &mpsc::Sender<oneshot::Sender<String>>, limit: Duration) -> Option<String> {
    let (tx, rx) = oneshot::channel();
    let answer = async {
        ask.send(tx).await.ok()?;
        rx.await.ok()
    };
    timeout(limit, answer).await.ok().flatten()
}

async fn connection(
    mut stream: TcpStream,
    ask: &mpsc::Sender<oneshot::Sender<String>>,
    limits: Limits,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_HEAD];
    let request = match timeout(limits.head, read_head(&mut stream, &mut buf)).await {
        Err(_elapsed) => Request::error(Status::RequestTimeout),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Head::Closed)) => return Ok(()),
        Ok(Ok(Head::TooLarge)) => Request::error(Status::HeadTooLarge),
        Ok(Ok(Head::Complete(end))) => route(&buf[..end]),
    };
    drop(buf);
    let (status, content_type, body) = match request.route {
        Route::Metrics => match scrape(ask, limits.answer).await {
            Some(text) => (Status::Ok, CONTENT_TYPE, text),
            None => (Status::Unavailable, "text/plain; charset=utf-8", "pmtu is not answering\n".to_owned()),
        },
        Route::Index => (Status::Ok, "text/html; charset=utf-8", INDEX_HTML.to_owned()),
        Route::Error(status) => (status, "text/plain; charset=utf-8", format!("{status}\n")),
    };
    let head_only = request.head_only;
    let allow = if status == Status::MethodNotAllowed { "Allow: GET, HEAD\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        if !head_only {
            stream.write_all(body.as_bytes()).await?;
        }
        stream.shutdown().await
    };
    match timeout(limits.write, write).await {
        Ok(result) => result?,
        Err(_elapsed) => {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "client too slow to take the response"));
        }
    }
    linger(&mut stream, limits.linger).await;
    Ok(())
}

/// Reads and discards what the client still sends, until it closes, for at
/// most `limit` and LINGER_BYTES (see [`Limits::linger`]).
async fn linger(stream: &mut TcpStream, limit: Duration) {
    let mut sink = [0u8; 4096];
    let mut total = 0;
    let drain = async {
        while total < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    // Elapsed is the expected end for a client that keeps the connection
    // open; the socket is closed when the caller drops it either way.
    if timeout(limit, drain).await.is_err() {
        tracing::trace!("metrics: client kept the connection open after the response");
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        io::Write as _,
        net::{IpAddr, Ipv4Addr},
        process::{Command, Stdio},
    };

    use pmtu_common::validate::{REASON_NOT_SMALLER, REASON_UNKNOWN_FLOW};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{counters::Counters, decode::Hook, table::IgnoredCounts};

    fn ptb(family: u8, direction: Direction, reasons: u16) -> Ptb {
        let addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        Ptb {
            ts_ns: 0,
            ifindex: 2,
            hook: Hook::TcIngress,
            family,
            reporter: addr,
            to: addr,
            mtu: 1400,
            mtu_estimated: false,
            orig_src: addr,
            orig_dst: addr,
            proto: 6,
            sport: Some(1),
            dport: Some(2),
            quoted_len: 28,
            reasons,
            direction,
            out_ifindex: None,
            capture: None,
        }
    }

    struct Fixture {
        clamp: Vec<(String, ClampCounters)>,
        events: EventTally,
        lowest: Vec<(String, u32)>,
        attached: Vec<(String, String, String)>,
    }

    fn fixture() -> Fixture {
        let mut events = EventTally::default();
        events.record(&ptb(4, Direction::Received, 0), "eth0");
        events.record(&ptb(4, Direction::Received, 0), "eth0");
        events.record(&ptb(6, Direction::Transit, REASON_UNKNOWN_FLOW | REASON_NOT_SMALLER), "eth1");
        let mut counters = [0u64; policy::counters::COUNT as usize];
        counters[policy::counters::SYN_SEEN as usize] = 10;
        counters[policy::counters::CLAMPED as usize] = 7;
        counters[policy::counters::AT_OR_BELOW as usize] = 3;
        Fixture {
            clamp: vec![("ppp0".to_owned(), counters)],
            events,
            lowest: vec![("eth0".to_owned(), 1400), ("eth0".to_owned(), 1280), ("eth1".to_owned(), 1492)],
            attached: vec![
                ("eth0".to_owned(), "trace".to_owned(), "tcx".to_owned()),
                ("eth2".to_owned(), "trace".to_owned(), "xdp".to_owned()),
                ("ppp0".to_owned(), "clamp".to_owned(), "tcx".to_owned()),
            ],
        }
    }

    fn snapshot(f: &Fixture) -> Snapshot<'_> {
        let mut observer = [0u64; kc::COUNT as usize];
        for (i, v) in observer.iter_mut().enumerate() {
            *v = 100 + i as u64;
        }
        Snapshot {
            version: "0.1.0",
            uptime_secs: 12.5,
            observer: Some(Counters(observer)),
            clamp: &f.clamp,
            events: &f.events,
            events_delivered: 4,
            decode_errors: 1,
            destinations: 3,
            table: TableTotals {
                rejected: 2,
                ignored: IgnoredCounts { not_lower: 5, locked: 0, too_soon: 1, below_ipv6_min: 0 },
                expired: 6,
                evicted: 0,
            },
            lowest_pmtu: &f.lowest,
            flows: Some(42),
            reporters: Some(7),
            ring_backlog_bytes: Some(0),
            learned: Some(LearnedTotals { entries: 2, taught: 5, removed: 3 }),
            attached: &f.attached,
        }
    }

    /// Sample lines as (name, sorted labels, value).
    fn samples(text: &str) -> Vec<(String, BTreeSet<String>, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => {
                        let labels = rest.strip_suffix('}').unwrap();
                        (name, labels.split(',').map(str::to_owned).collect())
                    }
                    None => (series, BTreeSet::new()),
                };
                (name.to_owned(), labels, value.to_owned())
            })
            .collect()
    }

    fn value(text: &str, name: &str, labels: &[&str]) -> Option<String> {
        let want: BTreeSet<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        let found: Vec<_> = samples(text).into_iter().filter(|(n, l, _)| n == name && *l == want).collect();
        assert!(found.len() <= 1, "{name} {labels:?} appears {} times", found.len());
        found.into_iter().next().map(|(_, _, v)| v)
    }

    fn rendered() -> String {
        let f = fixture();
        render(&snapshot(&f)).unwrap()
    }

    #[test]
    fn renders_the_snapshot() {
        let text = rendered();
        let v = |name: &str, labels: &[&str]| value(&text, name, labels);
        assert_eq!(v("pmtu_build_info", &[r#"version="0.1.0""#]).as_deref(), Some("1"));
        assert_eq!(v("pmtu_uptime_seconds", &[]).as_deref(), Some("12.5"));
        assert_eq!(
            v("pmtu_attached_info", &[r#"interface="eth2""#, r#"role="trace""#, r#"mechanism="xdp""#]).as_deref(),
            Some("1")
        );
        assert_eq!(v("pmtu_observer_packets_inspected_total", &[]).as_deref(), Some("100"));
        assert_eq!(v("pmtu_observer_ptb_total", &[r#"family="ipv4""#]).as_deref(), Some("101"));
        assert_eq!(v("pmtu_observer_ptb_total", &[r#"family="ipv6""#]).as_deref(), Some("102"));
        assert_eq!(v("pmtu_events_lost_total", &[]).as_deref(), Some("105"));
        assert_eq!(v("pmtu_events_rate_limited_total", &[]).as_deref(), Some("107"));
        assert_eq!(v("pmtu_observer_transit_seen_on_entry_total", &[]).as_deref(), Some("111"));
        assert_eq!(v("pmtu_events_delivered_total", &[]).as_deref(), Some("4"));
        assert_eq!(v("pmtu_events_decode_errors_total", &[]).as_deref(), Some("1"));
        let eth0 = [r#"interface="eth0""#, r#"family="ipv4""#, r#"direction="received""#];
        assert_eq!(v("pmtu_ptb_events_total", &[&eth0[..], &[r#"verdict="valid""#]].concat()).as_deref(), Some("2"));
        assert_eq!(v("pmtu_ptb_events_total", &[&eth0[..], &[r#"verdict="invalid""#]].concat()).as_deref(), Some("0"));
        let eth1 = [r#"interface="eth1""#, r#"family="ipv6""#, r#"direction="transit""#, r#"verdict="invalid""#];
        assert_eq!(v("pmtu_ptb_events_total", &eth1).as_deref(), Some("1"));
        for (reason, n) in [("unknown-flow", "1"), ("not-smaller", "1"), ("below-floor", "0")] {
            let reason = format!(r#"reason="{reason}""#);
            let labels = [r#"interface="eth1""#, r#"family="ipv6""#, reason.as_str()];
            assert_eq!(v("pmtu_ptb_invalid_reasons_total", &labels).as_deref(), Some(n), "{reason}");
        }
        // A traced interface with no events yet has its zero series.
        let eth2 = [r#"interface="eth2""#, r#"family="ipv6""#, r#"direction="sent""#, r#"verdict="valid""#];
        assert_eq!(v("pmtu_ptb_events_total", &eth2).as_deref(), Some("0"));
        // `unknown` only once counted; the clamp-only interface has no PTB series.
        assert!(!text.contains(r#"direction="unknown""#));
        assert!(!text.contains(r#"pmtu_ptb_events_total{interface="ppp0""#));
        assert_eq!(v("pmtu_destinations", &[]).as_deref(), Some("3"));
        assert_eq!(v("pmtu_lowest_pmtu_bytes", &[r#"interface="eth0""#]).as_deref(), Some("1280"));
        assert_eq!(v("pmtu_lowest_pmtu_bytes", &[r#"interface="eth1""#]).as_deref(), Some("1492"));
        assert_eq!(v("pmtu_table_rejected_total", &[]).as_deref(), Some("2"));
        assert_eq!(v("pmtu_table_ignored_total", &[r#"reason="not_lower""#]).as_deref(), Some("5"));
        assert_eq!(v("pmtu_table_expired_total", &[]).as_deref(), Some("6"));
        assert_eq!(v("pmtu_flows", &[]).as_deref(), Some("42"));
        assert_eq!(v("pmtu_reporters", &[]).as_deref(), Some("7"));
        assert_eq!(v("pmtu_ring_backlog_bytes", &[]).as_deref(), Some("0"));
        assert_eq!(v("pmtu_learned_entries", &[]).as_deref(), Some("2"));
        assert_eq!(v("pmtu_learned_reports_total", &[]).as_deref(), Some("5"));
        assert_eq!(v("pmtu_learned_removed_total", &[]).as_deref(), Some("3"));
        assert_eq!(v("pmtu_clamp_syn_seen_total", &[r#"interface="ppp0""#]).as_deref(), Some("10"));
        assert_eq!(v("pmtu_clamp_syn_total", &[r#"interface="ppp0""#, r#"outcome="clamped""#]).as_deref(), Some("7"));
        assert_eq!(v("pmtu_clamp_syn_total", &[r#"interface="ppp0""#, r#"outcome="no_room""#]).as_deref(), Some("0"));
        assert_eq!(v("pmtu_clamp_syn_total", &[r#"interface="ppp0""#, r#"outcome="syn_seen""#]), None);
        assert!(text.contains("# TYPE pmtu_events_lost_total counter\n"), "{text}");
        assert!(text.contains("# TYPE pmtu_lowest_pmtu_bytes gauge\n"), "{text}");
    }

    #[test]
    fn every_name_is_prefixed_and_every_counter_ends_in_total() {
        let text = rendered();
        let mut types = HashMap::new();
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').unwrap();
            assert!(name.starts_with("pmtu_"), "{name}");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "{name} declared twice");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name} is a {kind}");
        }
        for (name, _, _) in samples(&text) {
            assert!(types.contains_key(&name), "{name} has no TYPE");
        }
    }

    #[test]
    fn empty_snapshot_leaves_optional_families_out() {
        let events = EventTally::default();
        let s = Snapshot {
            version: "0.1.0",
            uptime_secs: 0.0,
            observer: None,
            clamp: &[],
            events: &events,
            events_delivered: 0,
            decode_errors: 0,
            destinations: 0,
            table: TableTotals::default(),
            lowest_pmtu: &[],
            flows: None,
            reporters: None,
            ring_backlog_bytes: None,
            learned: None,
            attached: &[],
        };
        let text = render(&s).unwrap();
        for absent in ["pmtu_observer_", "pmtu_events_lost", "pmtu_flows", "pmtu_clamp_", "pmtu_ptb_", "pmtu_attached"]
        {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
        assert_eq!(value(&text, "pmtu_destinations", &[]).as_deref(), Some("0"));
        assert_eq!(value(&text, "pmtu_events_delivered_total", &[]).as_deref(), Some("0"));
    }

    #[test]
    fn label_values_are_escaped() {
        let events = EventTally::default();
        let attached = [("we\"ird\\if".to_owned(), "trace".to_owned(), "tcx".to_owned())];
        let s = Snapshot {
            version: "1\n2",
            uptime_secs: 0.0,
            observer: None,
            clamp: &[],
            events: &events,
            events_delivered: 0,
            decode_errors: 0,
            destinations: 0,
            table: TableTotals::default(),
            lowest_pmtu: &[],
            flows: None,
            reporters: None,
            ring_backlog_bytes: None,
            learned: None,
            attached: &attached,
        };
        let text = render(&s).unwrap();
        assert!(text.contains(r#"pmtu_build_info{version="1\n2"} 1"#), "{text}");
        assert!(text.contains(r#"interface="we\"ird\\if""#), "{text}");
        check_with_promtool(&text);
    }

    #[test]
    fn observer_metrics_cover_each_counter_once() {
        let mut indices: Vec<u32> = OBSERVER_METRICS.iter().map(|m| m.index).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..kc::COUNT).collect::<Vec<_>>());
        for m in &OBSERVER_METRICS {
            assert!(!m.name.ends_with("_total") && !m.name.starts_with("pmtu_"), "{}", m.name);
            assert!(!m.help.ends_with('.'), "the encoder adds the full stop: {}", m.help);
        }
    }

    #[test]
    fn tally_counts_events_and_each_reason() {
        let mut t = EventTally::default();
        t.record(&ptb(6, Direction::Sent, REASON_UNKNOWN_FLOW | REASON_NOT_SMALLER), "eth0");
        t.record(&ptb(6, Direction::Sent, REASON_UNKNOWN_FLOW), "eth0");
        t.record(&ptb(4, Direction::Unknown, 0), "eth0");
        assert_eq!(t.total(), 3);
        let eth0 = &t.by_interface["eth0"];
        assert_eq!(eth0.events[1][2], [0, 2]);
        assert_eq!(eth0.events[0][3], [1, 0]);
        let unknown_flow = REASON_NAMES.iter().position(|(b, _)| *b == REASON_UNKNOWN_FLOW).unwrap();
        let not_smaller = REASON_NAMES.iter().position(|(b, _)| *b == REASON_NOT_SMALLER).unwrap();
        assert_eq!(eth0.reasons[1][unknown_flow], 2);
        assert_eq!(eth0.reasons[1][not_smaller], 1);
        // Family 5 is nothing decode() makes: not counted anywhere.
        t.record(&ptb(5, Direction::Sent, 0), "eth0");
        assert_eq!(t.total(), 3);
    }

    #[test]
    fn tally_folds_interfaces_past_the_cap() {
        let mut t = EventTally::default();
        for i in 0..MAX_TALLY_INTERFACES {
            t.record(&ptb(4, Direction::Received, 0), &format!("ppp{i}"));
        }
        t.record(&ptb(4, Direction::Received, 0), "late0");
        t.record(&ptb(4, Direction::Received, 0), "late1");
        // Known names still count under their own name.
        t.record(&ptb(4, Direction::Received, 0), "ppp0");
        assert_eq!(t.by_interface.len(), MAX_TALLY_INTERFACES + 1);
        assert_eq!(t.by_interface[OTHER_INTERFACE].events[0][0][0], 2);
        assert_eq!(t.by_interface["ppp0"].events[0][0][0], 2);
        assert!(!t.by_interface.contains_key("late0"));
    }

    /// `promtool check metrics` on `text`. Without promtool this is a
    /// failure in CI (a silent skip there would hide a broken exposition)
    /// and a note elsewhere.
    fn check_with_promtool(text: &str) {
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(
                    !ci,
                    "promtool not found and CI is set: install the Debian package `prometheus` (`cargo xtask test` does)"
                );
                eprintln!("note: promtool not found; skipping `promtool check metrics` (apt-get install prometheus)");
                return;
            }
            Err(e) => panic!("running promtool: {e}"),
        };
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {}\nstdout: {}\nstderr: {}\n{text}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn promtool_accepts_the_exposition() {
        check_with_promtool(&rendered());
    }

    /// `pmtu_...` names in a PromQL expression.
    fn metric_names(expr: &str) -> Vec<String> {
        let mut names = Vec::new();
        let bytes = expr.as_bytes();
        let mut i = 0;
        while let Some(found) = expr[i..].find("pmtu_") {
            let start = i + found;
            let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            if !preceded {
                names.push(expr[start..end].to_owned());
            }
            i = end;
        }
        names
    }

    /// Every string under a key named `expr`, `query` or `definition`
    /// (panel targets and template variables).
    fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                        ("query", serde_json::Value::String(s)) => out.push(s.clone()),
                        ("query", serde_json::Value::Object(q)) => {
                            if let Some(serde_json::Value::String(s)) = q.get("query") {
                                out.push(s.clone());
                            }
                        }
                        _ => queries(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
            _ => {}
        }
    }

    #[test]
    fn dashboard_uses_only_rendered_metrics() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib/grafana-pmtu.json");
        let json = std::fs::read_to_string(path).unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&json).unwrap();
        let rendered: BTreeSet<String> = samples(&rendered()).into_iter().map(|(name, _, _)| name).collect();
        let mut exprs = Vec::new();
        queries(&dashboard, &mut exprs);
        assert!(exprs.len() >= 10, "only {} queries found", exprs.len());
        let mut used = BTreeSet::new();
        for expr in &exprs {
            for name in metric_names(expr) {
                assert!(rendered.contains(&name), "the dashboard uses {name}, which pmtu does not export: {expr}");
                used.insert(name);
            }
        }
        for wanted in [
            "pmtu_ptb_events_total",
            "pmtu_lowest_pmtu_bytes",
            "pmtu_clamp_syn_total",
            "pmtu_events_lost_total",
            "pmtu_events_rate_limited_total",
            "pmtu_destinations",
            "pmtu_flows",
            "pmtu_reporters",
            "pmtu_ring_backlog_bytes",
        ] {
            assert!(used.contains(wanted), "the dashboard has no panel for {wanted}");
        }
        // Every datasource reference goes through the import input.
        assert!(json.contains("\"${DS_PROMETHEUS}\""));
        assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    }

    #[test]
    fn metric_names_are_scanned_from_promql() {
        assert_eq!(
            metric_names(r#"sum by (x) (rate(pmtu_a_total{i=~"$i"}[5m])) / pmtu_b + notpmtu_c"#),
            ["pmtu_a_total", "pmtu_b"]
        );
    }

    #[test]
    fn routes_requests() {
        let ok = |route, head_only| Request { route, head_only };
        let err = |status| Request::error(status);
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), ok(Route::Metrics, false));
        assert_eq!(route(b"\r\nHEAD /metrics?x=1 HTTP/1.0\n\n"), ok(Route::Metrics, true));
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), ok(Route::Index, false));
        assert_eq!(route(b"GET /nope HTTP/1.1\r\n\r\n"), err(Status::NotFound));
        assert_eq!(route(b"HEAD /nope HTTP/1.1\r\n\r\n"), ok(Route::Error(Status::NotFound), true));
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), err(Status::MethodNotAllowed));
        assert_eq!(route(b"POST /nope HTTP/1.1\r\n\r\n"), err(Status::NotFound));
        assert_eq!(route(b"GET /metrics HTTP/2.0\r\n\r\n"), err(Status::VersionNotSupported));
        assert_eq!(route(b"GET  /metrics HTTP/1.1\r\n\r\n"), err(Status::BadRequest));
        assert_eq!(route(b"GET /metrics\r\n\r\n"), err(Status::BadRequest));
        assert_eq!(route(b"\xff /metrics HTTP/1.1\r\n\r\n"), err(Status::BadRequest));
        assert_eq!(route(b"\r\n\r\n"), err(Status::BadRequest));
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nbody"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    // --- over TCP

    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(request).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// A server on a loopback port whose daemon answers every scrape with
    /// `answer`, or drops the ask channel when `answer` is None.
    async fn server(answer: Option<&'static str>) -> std::net::SocketAddr {
        server_with(answer, LIMITS).await
    }

    async fn server_with(answer: Option<&'static str>, limits: Limits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ask, mut asked) = mpsc::channel::<oneshot::Sender<String>>(4);
        tokio::spawn(serve_with(listener, ask, limits));
        match answer {
            Some(text) => {
                tokio::spawn(async move {
                    while let Some(reply) = asked.recv().await {
                        if reply.send(text.to_owned()).is_err() {
                            // The scraper went away; nothing to do.
                        }
                    }
                });
            }
            None => drop(asked),
        }
        addr
    }

    #[tokio::test]
    async fn http_serves_metrics_and_refuses_the_rest() {
        let body = "# TYPE pmtu_x gauge\npmtu_x 1\n";
        let addr = server(Some(body)).await;

        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let (head, got) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(head.contains(&format!("\r\nContent-Type: {CONTENT_TYPE}\r\n")), "{r}");
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{r}");
        assert!(head.contains("\r\nConnection: close"), "{r}");
        assert_eq!(got, body);

        let r = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"), "{r}");

        let r = exchange(addr, b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.contains("href=\"/metrics\""), "{r}");

        let r = exchange(addr, b"GET /nope HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n") && r.ends_with("\r\n\r\n404 Not Found\n"), "{r}");

        let r = exchange(addr, b"HEAD /nope HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n") && r.ends_with("\r\n\r\n"), "{r}");

        let r = exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && r.contains("\r\nAllow: GET, HEAD\r\n"), "{r}");

        let r = exchange(addr, b"garbage\r\n\r\n").await.unwrap();
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");

        // An oversized head: 431, or the connection closed; never a hang or
        // a panic, and the server keeps serving.
        let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
        big.resize(3 * MAX_HEAD, b'a');
        match exchange(addr, &big).await {
            Ok(r) => assert!(r.is_empty() || r.starts_with("HTTP/1.1 431 "), "{r}"),
            Err(e) => {
                assert!(matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe), "{e}")
            }
        }
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    }

    #[tokio::test]
    async fn http_oversized_head_gets_431() {
        let addr = server(Some("")).await;
        // Exactly the cap with no terminator: the server has read all of it,
        // so the 431 is not lost to a reset.
        let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        let r = exchange(addr, &big).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{r}");
    }

    #[tokio::test]
    async fn http_answers_503_when_the_daemon_is_gone() {
        let addr = server(None).await;
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        // The pointer page needs no daemon.
        let r = exchange(addr, b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    }

    #[tokio::test]
    async fn http_times_out_a_silent_client() {
        let addr = server_with(Some(""), Limits { head: Duration::from_millis(200), ..LIMITS }).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        let mut out = Vec::new();
        timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
        let r = String::from_utf8_lossy(&out);
        assert!(r.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{r}");
    }
}
