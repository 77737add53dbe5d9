//! `pmtu trace`: attach the observer, print events live, print the table on
//! exit (and on SIGUSR1), with the kernel's own cache beside it when asked.

use std::{
    collections::HashMap,
    io::{self, Write as _},
    num::NonZeroUsize,
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use pmtu_common::{
    counters::{RATE_LIMITED, RING_LOST},
    flow::ObserverConfig,
};
use tokio::io::unix::AsyncFd;

use crate::{
    clock::{WallClock, monotonic_ns},
    decode::{Ptb, Record, decode_record},
    learn::{Learner, Note},
    loader::LearnedHandle,
    iface::{Interfaces, Prepared},
    kernel_cache::{self, KernelCache, Sysctls},
    loader::{IngressHook, ifname},
    pcap::{PcapOutput, PcapSettings},
    plan::{IfacePlan, IfaceRule, Plan, TableSettings},
    render::{self, Shown, Totals},
    stop::{Stop, Wake},
    supervisor::Supervisor,
    table::Table,
};

pub struct TraceOptions {
    pub ifaces: Vec<String>,
    pub hook: IngressHook,
    pub json: bool,
    pub duration: Option<Duration>,
    /// `--expires`: the table's expiry for both families; `None` takes the
    /// host's net.ipv4/ipv6.route.mtu_expires, as the kernel does.
    pub expires_secs: Option<u64>,
    /// `--kernel`: the kernel's own cache beside each destination in text.
    pub kernel: bool,
    pub max_destinations: NonZeroUsize,
    /// Let invalid events into the table too.
    pub accept_unvalidated: bool,
    /// Flow timeout and rate limits for the kernel side.
    pub config: ObserverConfig,
    /// Event ring size in bytes (None: the object's 256 KiB).
    pub ring_bytes: Option<u32>,
    /// `--pcap`: each PTB's packet to this file as well.
    pub pcap: Option<PcapSettings>,
}

/// How long the kernel lookups for one table may take in all; the rest are
/// marked as not asked (a table of 65,536 destinations is not worth a
/// minute's wait at exit).
const KERNEL_BUDGET: Duration = Duration::from_secs(10);

/// Drains the ring into the table, handing each event to a sink (`pmtu
/// trace` prints it; the daemon counts, captures and forwards it), and
/// teaches the learner, when clamping to learned PMTUs.
pub(crate) struct Consumer {
    pub(crate) table: Table,
    pub(crate) clock: WallClock,
    pub(crate) delivered: u64,
    pub(crate) decode_errors: u64,
    pub(crate) learner: Option<Learner<LearnedHandle>>,
}

/// The interface's name, or `ifN` for one pmtu is not attached to and
/// that is gone.
pub(crate) fn name_of(index: u32, names: &HashMap<u32, String>) -> String {
    match names.get(&index) {
        Some(name) => name.clone(),
        None => ifname(index).unwrap_or_else(|| render::unnamed(index)),
    }
}

/// One decoded event with the names of its interfaces.
pub(crate) struct Seen<'a> {
    pub(crate) ptb: &'a Ptb,
    pub(crate) ifname: &'a str,
    pub(crate) out_ifname: Option<&'a str>,
}

/// What the consumer hands its sink: a PTB, or a line about learned
/// clamping (a lesson learned or forgotten, a SYN clamped by one).
pub(crate) enum Item<'a> {
    Ptb(Seen<'a>),
    Note(&'a Note),
}

impl Consumer {
    pub(crate) fn new(table: Table) -> Self {
        Self { table, clock: WallClock::now(), delivered: 0, decode_errors: 0, learner: None }
    }

    /// Reads every record available now. Fails only if the sink does.
    /// `names` has every interface the observer is attached to: events
    /// come from those (a transit event's way out may be another).
    pub(crate) fn drain(
        &mut self,
        ring: &mut RingBuf<MapData>,
        names: &HashMap<u32, String>,
        sink: &mut dyn FnMut(&Item<'_>, &WallClock) -> io::Result<()>,
    ) -> io::Result<()> {
        while let Some(record) = ring.next() {
            let decoded = decode_record(&record);
            drop(record);
            let ptb = match decoded {
                Ok(Record::Ptb(ptb)) => ptb,
                Ok(Record::Clamp(ev)) => {
                    self.delivered += 1;
                    let name = name_of(ev.ifindex, names);
                    let note = match &self.learner {
                        Some(l) => l.describe_clamp(&ev, &name, &self.clock),
                        None => crate::learn::describe_clamp(&ev, &name, None, &self.clock),
                    };
                    sink(&Item::Note(&note), &self.clock)?;
                    continue;
                }
                Err(err) => {
                    self.decode_errors += 1;
                    eprintln!("pmtu: skipping a ring record: {err}");
                    continue;
                }
            };
            self.delivered += 1;
            let name = name_of(ptb.ifindex, names);
            let out_name = ptb.out_ifindex.map(|i| name_of(i, names));
            sink(&Item::Ptb(Seen { ptb: &ptb, ifname: &name, out_ifname: out_name.as_deref() }), &self.clock)?;
            self.table.record(&ptb);
            if let Some(note) = self.learner.as_mut().and_then(|l| l.take(&ptb, &name, &self.clock)) {
                sink(&Item::Note(&note), &self.clock)?;
            }
        }
        self.sync_learned(sink)
    }

    /// Brings the clamper's learned entries to what the learner knows now
    /// (expired ones out); a no-op without a learner or a change.
    pub(crate) fn sync_learned(&mut self, sink: &mut dyn FnMut(&Item<'_>, &WallClock) -> io::Result<()>) -> io::Result<()> {
        if let Some(learner) = self.learner.as_mut() {
            for note in learner.sync(monotonic_ns(), &self.clock) {
                sink(&Item::Note(&note), &self.clock)?;
            }
        }
        Ok(())
    }
}

/// One event as `pmtu trace` prints it (text or one JSON object).
pub(crate) fn event_line(seen: &Seen<'_>, clock: &WallClock, json: bool) -> String {
    if json {
        render::event_json_with(seen.ptb, seen.ifname, seen.out_ifname, clock)
    } else {
        render::event_text_with(seen.ptb, seen.ifname, seen.out_ifname, clock)
    }
}


/// Where a write to stdout failed. A reader that left (EPIPE: `| head`)
/// ends the trace quietly; anything else (ENOSPC, EIO: `> /dev/full`) is an
/// error the user must hear of.
fn output_failure(err: io::Error) -> Option<anyhow::Error> {
    match err.kind() {
        io::ErrorKind::BrokenPipe => None,
        _ => Some(anyhow::Error::new(err).context("writing to stdout")),
    }
}

/// Why the table is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Moment {
    /// At exit.
    Final,
    /// On SIGUSR1, while tracing on.
    Signal,
    /// Asked for over the control socket (`pmtu table`).
    Asked,
}

/// What to report about the table now.
pub(crate) struct Report<'a> {
    pub(crate) consumer: &'a mut Consumer,
    pub(crate) kernel_cache: &'a mut Option<KernelCache>,
    pub(crate) sysctls: Sysctls,
    pub(crate) started_ns: u64,
    pub(crate) with_kernel: bool,
    pub(crate) json: bool,
}

impl Report<'_> {
    /// The table (and the kernel's cache beside it when asked) as text or
    /// one JSON line.
    pub(crate) async fn render(self, counters: crate::counters::Counters, moment: Moment) -> String {
        let is_final = moment == Moment::Final;
        let now = monotonic_ns();
        let rows = self.consumer.table.rows(now);
        let totals = Totals {
            kernel: counters,
            events_delivered: self.consumer.delivered,
            decode_errors: self.consumer.decode_errors,
            table: self.consumer.table.totals(),
        };
        // JSON always carries the kernel column; text with --kernel.
        let ask = self.json || self.with_kernel;
        let kernel = if ask && !rows.is_empty() {
            if self.kernel_cache.is_none() {
                match KernelCache::open() {
                    Ok(cache) => *self.kernel_cache = Some(cache),
                    Err(e) => eprintln!("pmtu: cannot read the kernel's PMTU cache: {e:#}"),
                }
            }
            let ctx = kernel_cache::Context {
                now_ns: now,
                started_ns: self.started_ns,
                sysctls: self.sysctls,
                rules: *self.consumer.table.rules(),
                lost_reports: counters.get(RING_LOST) + counters.get(RATE_LIMITED),
            };
            kernel_cache::reports(self.kernel_cache.as_ref(), &rows, &ctx, KERNEL_BUDGET)
                .await
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None; rows.len()]
        };
        let shown: Vec<Shown> = rows.into_iter().zip(kernel).map(|(row, kernel)| Shown { row, kernel }).collect();
        if self.json {
            format!("{}\n", render::table_json(&shown, &totals, &self.consumer.clock, is_final))
        } else if moment == Moment::Final {
            format!("\n{}", render::table_text(&shown, &totals, self.with_kernel))
        } else if moment == Moment::Asked {
            render::table_text(&shown, &totals, self.with_kernel)
        } else {
            format!("\n--- table at {} (SIGUSR1) ---\n{}", self.consumer.clock.rfc3339(now), render::table_text(&shown, &totals, self.with_kernel))
        }
    }
}

fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

impl TraceOptions {
    /// What these flags ask for, in the shape the config file gives too.
    pub fn plan(&self) -> Plan {
        Plan {
            interfaces: self
                .ifaces
                .iter()
                .map(|selector| IfaceRule {
                    selector: selector.clone(),
                    plan: IfacePlan { trace: Some(self.hook), clamp: None },
                })
                .collect(),
            table: TableSettings {
                expires_secs: self.expires_secs,
                max_destinations: self.max_destinations,
                accept_unvalidated: self.accept_unvalidated,
            },
            observer: self.config,
            ring_bytes: self.ring_bytes,
            pcap: self.pcap.clone(),
            learn: pmtu_common::learned::LearnConfig::EXACT,
            daemon: None,
        }
    }
}

pub async fn run(opts: TraceOptions) -> anyhow::Result<()> {
    let mut stop = Stop::install(opts.duration)?.with_table_signals()?;
    let plan = opts.plan();
    let prepared = Prepared::new(&plan.selectors()).await?;
    if opts.accept_unvalidated {
        eprintln!(
            "pmtu: WARNING: --accept-unvalidated: Packet-Too-Big messages that fail validation \
             (forged, for unknown flows, below the MTU floor) will shape the table"
        );
    }
    // The kernel's PMTU parameters in this namespace: the table applies the
    // rules with them (min_pmtu; mtu_expires unless --expires).
    let (sysctls, notes) = Sysctls::read();
    for note in notes {
        eprintln!("pmtu: {note}");
    }
    let rules = sysctls.rules(opts.expires_secs);
    // Opened before anything is attached: a path that cannot be written is
    // an error up front.
    let mut pcap = opts.pcap.as_ref().map(PcapOutput::create).transpose()?;
    let mut supervisor = Supervisor::load(plan)?;
    // This host's addresses, so the kernel can tell received PTBs from
    // transit and not-for-us ones; kept up to date while tracing.
    let local_addrs = crate::local_addrs::start(supervisor.programs.take_local_addrs()?)
        .await
        .context("following this host's addresses")?;
    let ring = supervisor.programs.take_events()?;
    let mut ifaces = Interfaces::start(prepared, supervisor)?;
    let started_ns = monotonic_ns();
    eprintln!(
        "pmtu: attached to {} interface(s); {} and prints the table (SIGUSR1 prints it and carries on)",
        ifaces.attached(),
        Stop::describe(opts.duration)
    );

    // SAFETY: the RingBuf owns its map fd and keeps it open and unchanged for
    // as long as the AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register(ring) }.context("polling the event ring")?;
    let mut consumer = Consumer::new(Table::with_rules(opts.max_destinations, rules, opts.accept_unvalidated));
    let json = opts.json;
    let mut sink = |item: &Item<'_>, clock: &WallClock| -> io::Result<()> {
        let mut out = io::stdout().lock();
        match item {
            Item::Ptb(seen) => {
                writeln!(out, "{}", event_line(seen, clock, json))?;
                out.flush()?;
                if let Some(p) = pcap.as_mut() {
                    p.record(seen.ptb, clock);
                }
            }
            Item::Note(note) => {
                writeln!(out, "{}", if json { &note.json } else { &note.text })?;
                out.flush()?;
            }
        }
        Ok(())
    };
    let mut kernel_cache = None;
    // Why the loop ended early: stdout failed, or link events could not be
    // followed.
    let mut stdout_err: Option<io::Error> = None;
    let mut failure = None;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the event ring")?;
                if let Err(e) = consumer.drain(guard.get_inner_mut(), &ifaces.hooks.names, &mut sink) {
                    stdout_err = Some(e);
                    break;
                }
                guard.clear_ready();
            }
            event = ifaces.next_event() => {
                // What the ring holds came from interfaces as they were:
                // print it under their names before a detach forgets them.
                if let Err(e) = consumer.drain(ring.get_mut(), &ifaces.hooks.names, &mut sink) {
                    stdout_err = Some(e);
                    break;
                }
                if let Err(e) = ifaces.apply(event).await {
                    failure = Some(e);
                    break;
                }
            }
            wake = stop.next() => match wake {
                Wake::Stop(_) | Wake::Reload => break,
                Wake::PrintTable => {
                    if let Err(e) = consumer.drain(ring.get_mut(), &ifaces.hooks.names, &mut sink) {
                        stdout_err = Some(e);
                        break;
                    }
                    let counters = ifaces.hooks.programs.counters().unwrap_or_else(|e| {
                        eprintln!("pmtu: reading the observer's counters: {e:#}");
                        Default::default()
                    });
                    let report = Report {
                        consumer: &mut consumer,
                        kernel_cache: &mut kernel_cache,
                        sysctls,
                        started_ns,
                        with_kernel: opts.kernel,
                        json: opts.json,
                    };
                    let text = report.render(counters, Moment::Signal).await;
                    if let Err(e) = print(&text) {
                        stdout_err = Some(e);
                        break;
                    }
                }
            },
        }
    }

    local_addrs.abort();
    let names = ifaces.hooks.names.clone();
    let (supervisor, detached) = ifaces.stop();
    detached?;
    eprintln!("pmtu: detached");
    // Whatever the programs submitted before they were detached.
    if stdout_err.is_none()
        && let Err(e) = consumer.drain(ring.get_mut(), &names, &mut sink)
    {
        stdout_err = Some(e);
    }
    let pcap = pcap.take().map_or(Ok(()), PcapOutput::finish);
    if let Some(e) = stdout_err {
        // No table: stdout is where it would go.
        return match (failure, output_failure(e)) {
            (Some(f), _) => Err(f),
            (None, Some(e)) => Err(e),
            (None, None) => pcap,
        };
    }

    let counters = supervisor.programs.counters()?;
    let report = Report {
        consumer: &mut consumer,
        kernel_cache: &mut kernel_cache,
        sysctls,
        started_ns,
        with_kernel: opts.kernel,
        json: opts.json,
    };
    let text = report.render(counters, Moment::Final).await;
    if let Err(e) = print(&text)
        && let Some(err) = output_failure(e)
    {
        return Err(match failure {
            Some(f) => anyhow::anyhow!("{f:#}; and {err:#}"),
            None => err,
        });
    }
    failure.map_or(pcap, Err)
}
