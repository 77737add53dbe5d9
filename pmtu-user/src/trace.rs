//! `pmtu trace`: attach the observer, print events live, print the table on exit.

use std::{
    collections::HashMap,
    io::{self, Write as _},
    num::NonZeroUsize,
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use pmtu_common::flow::ObserverConfig;
use tokio::io::unix::AsyncFd;

use crate::{
    clock::{WallClock, monotonic_ns},
    decode::decode,
    iface::{Hooks, Iface, Interfaces, LinkKind, Prepared},
    loader::{IngressHook, Programs, Role, ifname},
    render::{self, Totals},
    stop::Stop,
    table::Table,
};

pub struct TraceOptions {
    pub ifaces: Vec<String>,
    pub hook: IngressHook,
    pub json: bool,
    pub duration: Option<Duration>,
    pub expires_secs: u64,
    pub max_destinations: NonZeroUsize,
    /// Let invalid events into the table too.
    pub accept_unvalidated: bool,
    /// Flow timeout and rate limits for the kernel side.
    pub config: ObserverConfig,
    /// Event ring size in bytes (None: the object's 256 KiB).
    pub ring_bytes: Option<u32>,
}

/// Drains the ring into the table and prints each event.
struct Consumer {
    table: Table,
    clock: WallClock,
    json: bool,
    delivered: u64,
    decode_errors: u64,
    accept_unvalidated: bool,
    ignored: u64,
}

impl Consumer {
    /// Reads every record available now. Stops early only if stdout is gone.
    /// `names` has every interface the observer is attached to: events only
    /// come from those.
    fn drain(&mut self, ring: &mut RingBuf<MapData>, names: &HashMap<u32, String>) -> io::Result<()> {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        while let Some(record) = ring.next() {
            let ptb = match decode(&record) {
                Ok(ptb) => ptb,
                Err(err) => {
                    self.decode_errors += 1;
                    eprintln!("pmtu: skipping a ring record: {err}");
                    continue;
                }
            };
            drop(record);
            self.delivered += 1;
            let name = match names.get(&ptb.ifindex) {
                Some(name) => name.clone(),
                None => ifname(ptb.ifindex).unwrap_or_else(|| format!("if{}", ptb.ifindex)),
            };
            let line = if self.json {
                render::event_json(&ptb, &name, &self.clock)
            } else {
                render::event_text(&ptb, &name, &self.clock)
            };
            writeln!(out, "{line}")?;
            if ptb.is_valid() || self.accept_unvalidated {
                self.table.record(&ptb);
            } else {
                self.ignored += 1;
            }
        }
        out.flush()
    }
}

/// `pmtu trace`'s side of attaching: the observer's programs for the
/// interface's framing, and its name for the events it reports.
struct Tracer {
    programs: Programs,
    hook: IngressHook,
    names: HashMap<u32, String>,
}

/// Links per traced interface at most: XDP or tc ingress, tc egress, and
/// one spare for the tc fallback when XDP fails.
const LINKS_PER_IFACE: u64 = 3;

impl Hooks for Tracer {
    fn verb(&self) -> &'static str {
        "tracing"
    }

    fn room(&self) -> usize {
        usize::try_from(self.programs.link_room() / LINKS_PER_IFACE).unwrap_or(usize::MAX)
    }

    fn attach(&mut self, iface: &Iface, kind: LinkKind) -> anyhow::Result<Vec<String>> {
        let said = self.programs.attach_observer(iface.index, &iface.name, kind, self.hook)?;
        self.names.insert(iface.index, iface.name.clone());
        Ok(said)
    }

    fn detach(&mut self, index: u32, _name: &str) -> anyhow::Result<()> {
        self.names.remove(&index);
        self.programs.detach_iface(index)
    }
}

pub async fn run(opts: TraceOptions) -> anyhow::Result<()> {
    let mut stop = Stop::install(opts.duration)?;
    let prepared = Prepared::new(&opts.ifaces).await?;
    if opts.accept_unvalidated {
        eprintln!(
            "pmtu: WARNING: --accept-unvalidated: Packet-Too-Big messages that fail validation \
             (forged, for unknown flows, below the MTU floor) will shape the table"
        );
    }
    let mut observer = Programs::load(Role::Observer, opts.ring_bytes)?;
    observer.set_observer_config(opts.config)?;
    // This host's addresses, so the kernel can tell received PTBs from
    // transit and not-for-us ones; kept up to date while tracing.
    let local_addrs = crate::local_addrs::start(observer.take_local_addrs()?)
        .await
        .context("following this host's addresses")?;
    let ring = observer.take_events()?;
    let tracer = Tracer { programs: observer, hook: opts.hook, names: HashMap::new() };
    let mut ifaces = Interfaces::start(prepared, tracer)?;
    eprintln!(
        "pmtu: attached to {} interface(s); {} and prints the table",
        ifaces.attached(),
        Stop::describe(opts.duration)
    );

    // SAFETY: the RingBuf owns its map fd and keeps it open and unchanged for
    // as long as the AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register(ring) }.context("polling the event ring")?;
    let mut consumer = Consumer {
        table: Table::new(opts.max_destinations, opts.expires_secs),
        clock: WallClock::now(),
        json: opts.json,
        delivered: 0,
        decode_errors: 0,
        accept_unvalidated: opts.accept_unvalidated,
        ignored: 0,
    };
    let mut stdout_gone = false;
    let mut failure = None;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the event ring")?;
                if consumer.drain(guard.get_inner_mut(), &ifaces.hooks.names).is_err() {
                    stdout_gone = true;
                    break;
                }
                guard.clear_ready();
            }
            event = ifaces.next_event() => {
                // What the ring holds came from interfaces as they were:
                // print it under their names before a detach forgets them.
                if consumer.drain(ring.get_mut(), &ifaces.hooks.names).is_err() {
                    stdout_gone = true;
                    break;
                }
                if let Err(e) = ifaces.apply(event).await {
                    failure = Some(e);
                    break;
                }
            }
            () = stop.wait() => break,
        }
    }

    local_addrs.abort();
    let names = ifaces.hooks.names.clone();
    let (tracer, detached) = ifaces.stop();
    detached?;
    eprintln!("pmtu: detached");
    if stdout_gone {
        return failure.map_or(Ok(()), Err);
    }
    // Whatever the programs submitted before they were detached.
    if consumer.drain(ring.get_mut(), &names).is_err() {
        // stdout is gone: nobody to print the table to.
        return failure.map_or(Ok(()), Err);
    }

    let totals = Totals {
        kernel: tracer.programs.counters()?,
        events_delivered: consumer.delivered,
        events_ignored: consumer.ignored,
        decode_errors: consumer.decode_errors,
        destinations_evicted: consumer.table.evicted(),
    };
    let rows = consumer.table.rows(monotonic_ns());
    let text = if opts.json {
        format!("{}\n", render::table_json(&rows, &totals, &consumer.clock))
    } else {
        format!("\n{}", render::table_text(&rows, &totals))
    };
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A reader that left before the table is not worth an error exit.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.context("printing the table")?,
    }
    failure.map_or(Ok(()), Err)
}
