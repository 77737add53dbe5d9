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
    ifnames: HashMap<u32, String>,
    delivered: u64,
    decode_errors: u64,
    accept_unvalidated: bool,
    ignored: u64,
}

impl Consumer {
    fn ifname(&mut self, index: u32) -> &str {
        self.ifnames
            .entry(index)
            .or_insert_with(|| ifname(index).unwrap_or_else(|| format!("if{index}")))
    }

    /// Reads every record available now. Stops early only if stdout is gone.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> io::Result<()> {
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
            let (json, clock) = (self.json, self.clock);
            let name = self.ifname(ptb.ifindex).to_string();
            let line = if json {
                render::event_json(&ptb, &name, &clock)
            } else {
                render::event_text(&ptb, &name, &clock)
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

pub async fn run(opts: TraceOptions) -> anyhow::Result<()> {
    let mut stop = Stop::install(opts.duration)?;

    for iface in &opts.ifaces {
        crate::loader::ifindex(iface)?;
    }
    if opts.accept_unvalidated {
        eprintln!(
            "pmtu: WARNING: --accept-unvalidated: Packet-Too-Big messages that fail validation \
             (forged, for unknown flows, below the MTU floor) will shape the table"
        );
    }
    let mut observer = Programs::load(Role::Observer, opts.ring_bytes)?;
    observer.set_observer_config(opts.config)?;
    for iface in &opts.ifaces {
        for line in observer.attach(iface, opts.hook)? {
            eprintln!("pmtu: {line}");
        }
    }
    eprintln!(
        "pmtu: attached to {} interface(s); {} and prints the table",
        opts.ifaces.len(),
        Stop::describe(opts.duration)
    );

    let ring = observer.take_events()?;
    // SAFETY: the RingBuf owns its map fd and keeps it open and unchanged for
    // as long as the AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register(ring) }.context("polling the event ring")?;
    let mut consumer = Consumer {
        table: Table::new(opts.max_destinations, opts.expires_secs),
        clock: WallClock::now(),
        json: opts.json,
        ifnames: HashMap::new(),
        delivered: 0,
        decode_errors: 0,
        accept_unvalidated: opts.accept_unvalidated,
        ignored: 0,
    };
    let mut stdout_gone = false;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the event ring")?;
                if consumer.drain(guard.get_inner_mut()).is_err() {
                    stdout_gone = true;
                    break;
                }
                guard.clear_ready();
            }
            () = stop.wait() => break,
        }
    }

    observer.detach_all()?;
    eprintln!("pmtu: detached");
    if stdout_gone {
        return Ok(());
    }
    // Whatever the programs submitted before they were detached.
    if consumer.drain(ring.get_mut()).is_err() {
        return Ok(()); // stdout is gone: nobody to print the table to.
    }

    let totals = Totals {
        kernel: observer.counters()?,
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
    // A closed stdout at the very end is not worth an error exit.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    Ok(())
}
