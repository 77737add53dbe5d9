//! `pmtu run --config FILE`: the supervisor as a daemon. Its state is
//! pinned (clamping outlives it), it answers on a control socket, serves
//! Prometheus metrics, writes observed PTBs as pcap, reloads its config on
//! SIGHUP or `pmtu reload`, and tells systemd when it is ready or stopping.

use std::{
    collections::{HashMap, VecDeque},
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::programs::TcAttachType;
use serde::Serialize;
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, oneshot},
};

use crate::{
    clock::{WallClock, monotonic_ns},
    config,
    control::{self, Incoming, LearningSwitch, Reply, Request},
    iface::{Interfaces, Prepared},
    kernel_cache::{KernelCache, Sysctls},
    learn::Learner,
    metrics::{self, EventTally},
    pcap::PcapSink,
    plan::{OnExit, Plan},
    stop::{Stop, Wake},
    supervisor::Supervisor,
    table::Table,
    trace::{Consumer, Item, Moment, Report, Seen, event_line},
};

/// Events kept for `pmtu events` (without --follow).
const RECENT_EVENTS: usize = 1000;

/// A follower of `pmtu events --follow`.
struct Follower {
    json: bool,
    reply: mpsc::Sender<Reply>,
}

/// What the event sink feeds besides the table.
struct Outputs {
    recent: VecDeque<(String, String)>,
    followers: Vec<Follower>,
    tally: EventTally,
    pcap: Option<PcapSink>,
    pcap_failed: bool,
    /// The interface the last valid PTB for each destination came in on:
    /// the lowest PMTU per interface is taken over the table's live entries.
    dst_iface: HashMap<std::net::IpAddr, String>,
}

impl Outputs {
    fn take(&mut self, item: &Item<'_>, clock: &WallClock) {
        let (text, json) = match item {
            Item::Ptb(seen) => {
                self.ptb(seen, clock);
                (event_line(seen, clock, false), event_line(seen, clock, true))
            }
            Item::Note(note) => (note.text.clone(), note.json.clone()),
        };
        self.followers.retain(|f| {
            let line = if f.json { json.clone() } else { text.clone() };
            match f.reply.try_send(Reply::Out { out: line }) {
                Ok(()) => true,
                // A slow follower misses lines rather than stalling the daemon.
                Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back((text, json));
    }

    /// What a PTB feeds besides the event lines: metrics, pcap.
    fn ptb(&mut self, seen: &Seen<'_>, clock: &WallClock) {
        self.tally.record(seen.ptb, seen.ifname);
        if seen.ptb.reasons == 0 {
            self.dst_iface.insert(seen.ptb.orig_dst, seen.ifname.to_string());
        }
        if let Some(sink) = self.pcap.as_mut()
            && let Err(e) = sink.write_ptb(seen.ptb, clock)
            && !self.pcap_failed
        {
            // Said once; the daemon carries on without the capture.
            tracing::error!("pcap: {e:#}; no more PTBs will be written to it");
            self.pcap_failed = true;
        }
        if self.pcap_failed {
            self.pcap = None;
        }
    }
}

/// `pmtu check-config FILE`: parses and validates, attaches nothing.
pub fn check_config(path: &Path) -> anyhow::Result<()> {
    let plan = config::load(path)?;
    print!("{}", config::describe(&plan));
    println!("{}: OK", path.display());
    Ok(())
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("telling systemd: {e}");
    }
}

/// Everything the main loop owns.
struct Daemon {
    config_path: PathBuf,
    plan: Plan,
    ifaces: Interfaces<Supervisor>,
    consumer: Consumer,
    outputs: Outputs,
    sysctls: Sysctls,
    kernel_cache: Option<KernelCache>,
    started: Instant,
    started_ns: u64,
}

pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let mut stop = Stop::install(None)?.with_reload()?;
    let plan = config::load(&config_path)?;
    let Some(settings) = plan.daemon.clone() else {
        bail!("{}: not a daemon configuration", config_path.display());
    };
    let origin = config_path.display().to_string();
    // Everything that can fail on the user's input fails before anything
    // is attached: the socket, the listener, the pcap file, the interfaces.
    let (listener, gid) = control::listen(&settings.control, settings.control_group.as_deref()).await?;
    let metrics_listener = match settings.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("{origin}: metrics: listening on {addr}"))?,
        ),
        None => None,
    };
    let pcap = match &plan.pcap {
        Some(p) => Some(PcapSink::create(p).with_context(|| format!("{origin}: pcap {}", p.path.display()))?),
        None => None,
    };
    let prepared = Prepared::new(&plan.selectors()).await.with_context(|| origin.clone())?;
    prepared.require_globs_match(&origin)?;
    let features = crate::features::get()?;
    for line in features.describe() {
        eprintln!("pmtu: {line}");
    }
    let (sysctls, notes) = Sysctls::read();
    for note in notes {
        tracing::info!("{note}");
    }
    let rules = sysctls.rules(plan.table.expires_secs);
    let mut supervisor = Supervisor::load(plan.clone())?;
    let local_addrs = crate::local_addrs::start(supervisor.programs.take_local_addrs()?)
        .await
        .context("following this host's addresses")?;
    let ring = supervisor.programs.take_events()?;
    let learned = supervisor.programs.take_learned(plan.learn)?;
    let mut ifaces = Interfaces::start(prepared, supervisor)?;
    for line in ifaces.hooks.release_prior()? {
        eprintln!("pmtu: {line}");
    }
    // SAFETY: the RingBuf owns its map fd and keeps it open and unchanged for
    // as long as the AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register(ring) }.context("polling the event ring")?;

    let (to_daemon, mut requests) = mpsc::channel::<Incoming>(64);
    let control_task = tokio::spawn(control::serve(listener, gid, to_daemon));
    let (metrics_tx, mut metrics_requests) = mpsc::channel::<oneshot::Sender<String>>(16);
    let metrics_task = metrics_listener.map(|l| tokio::spawn(metrics::serve(l, metrics_tx)));

    let mut consumer = Consumer::new(Table::with_rules(plan.table.max_destinations, rules, plan.table.accept_unvalidated));
    let mut learner = Learner::new(learned, plan.learn, rules, plan.table.max_destinations);
    learner.set_wanted(plan.learns());
    consumer.learner = Some(learner);
    let mut d = Daemon {
        config_path,
        plan: plan.clone(),
        ifaces,
        consumer,
        outputs: Outputs { recent: VecDeque::new(), followers: Vec::new(), tally: EventTally::default(), pcap, pcap_failed: false, dst_iface: HashMap::new() },
        sysctls,
        kernel_cache: None,
        started: Instant::now(),
        started_ns: monotonic_ns(),
    };
    let status = format!(
        "serving {} interface(s); control {}{}",
        d.ifaces.attached(),
        settings.control.display(),
        settings.metrics.map(|a| format!(", metrics http://{a}/metrics")).unwrap_or_default()
    );
    eprintln!("pmtu: {status}");
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);

    let mut detach = settings.on_exit == OnExit::Detach;
    let mut stopper: Option<mpsc::Sender<Reply>> = None;
    let mut failure = None;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    // Learned entries leave the clamper's map within a second of expiring
    // (the clamper ignores them from that instant on anyway).
    let mut learn_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the event ring")?;
                d.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            event = d.ifaces.next_event() => {
                d.drain(ring.get_mut());
                if let Err(e) = d.ifaces.apply(event).await {
                    failure = Some(e);
                    break;
                }
            }
            wake = stop.next() => match wake {
                Wake::Stop(why) => {
                    tracing::info!("{why}: stopping");
                    break;
                }
                Wake::Reload => {
                    if let Err(e) = d.reload().await {
                        tracing::error!("reload: {e:#}; carrying on with the previous configuration");
                    }
                }
                Wake::PrintTable => {
                    d.drain(ring.get_mut());
                    let text = d.table_text(false, false).await;
                    eprintln!("{text}");
                }
            },
            Some(incoming) = requests.recv() => {
                d.drain(ring.get_mut());
                if let Request::Stop { detach: all } = incoming.request {
                    detach |= all;
                    stopper = Some(incoming.reply);
                    break;
                }
                d.handle(incoming).await;
            }
            Some(asked) = metrics_requests.recv() => {
                d.drain(ring.get_mut());
                let text = d.metrics().unwrap_or_else(|e| format!("# error: {e:#}\n"));
                if asked.send(text).is_err() {
                    tracing::debug!("metrics client left");
                }
            }
            _ = tick.tick() => {
                d.consumer.table.expire(monotonic_ns());
            }
            _ = learn_tick.tick() => d.sync_learned(),
        }
    }

    notify(&[sd_notify::NotifyState::Stopping]);
    control_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    local_addrs.abort();
    d.drain(ring.get_mut());
    let result = if detach {
        let (mut supervisor, detached) = d.ifaces.stop();
        let removed = remove_pins(&mut supervisor);
        eprintln!("pmtu: detached; pins removed");
        detached.and(removed)
    } else {
        let mut supervisor = d.ifaces.into_hooks();
        let n = supervisor.served().len();
        supervisor.keep();
        eprintln!("pmtu: stopped; {n} interface(s) stay clamped/traced in the kernel (pinned); `pmtu detach` removes them");
        Ok(())
    };
    if let Err(e) = std::fs::remove_file(&settings.control)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", settings.control.display());
    }
    if let Some(reply) = stopper {
        let text = if detach { "stopped; everything detached" } else { "stopped; pinned state kept" };
        control::answer(&reply, text).await;
    }
    result?;
    failure.map_or(Ok(()), Err)
}

/// Removes this daemon's ABI directory (its links are detached by now).
fn remove_pins(supervisor: &mut Supervisor) -> anyhow::Result<()> {
    let Some(p) = supervisor.programs.pin_state() else { return Ok(()) };
    let dir = p.ours.clone();
    crate::pins::remove_abi_dir(&dir)?;
    // The pin path itself, if pmtu left it empty.
    if let Some(root) = dir.root.parent()
        && std::fs::read_dir(root).map(|mut d| d.next().is_none()).unwrap_or(false)
        && let Err(e) = std::fs::remove_dir(root)
    {
        tracing::debug!("removing {}: {e}", root.display());
    }
    Ok(())
}

/// `pmtu status` in JSON.
#[derive(Serialize)]
struct StatusJson<'a> {
    version: &'static str,
    pid: u32,
    uptime_secs: u64,
    config: String,
    pin_path: Option<String>,
    on_exit: &'static str,
    kernel: &'static crate::features::Features,
    interfaces: Vec<IfaceJson<'a>>,
    /// Learned clamping: the switch, and entries in the clamper's map.
    learning: Option<LearningJson>,
}

#[derive(Serialize)]
struct LearningJson {
    learning: bool,
    used: bool,
    entries: usize,
}

#[derive(Serialize)]
struct IfaceJson<'a> {
    #[serde(flatten)]
    iface: &'a crate::supervisor::IfaceStatus,
    hooks: Vec<HookJson>,
}

#[derive(Serialize)]
struct HookJson {
    program: &'static str,
    hook: &'static str,
    position: String,
    others: Vec<String>,
}

/// Where a program sits: "tc ingress", "tc egress", "xdp".
fn hook_of(program: &str) -> (&'static str, Option<TcAttachType>) {
    if program.contains("xdp") {
        ("xdp", None)
    } else if program.contains("egress") {
        ("tc egress", Some(TcAttachType::Egress))
    } else {
        ("tc ingress", Some(TcAttachType::Ingress))
    }
}

impl Daemon {
    fn drain(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) {
        let outputs = &mut self.outputs;
        let mut sink = |item: &Item<'_>, clock: &WallClock| -> io::Result<()> {
            outputs.take(item, clock);
            Ok(())
        };
        if let Err(e) = self.consumer.drain(ring, &self.ifaces.hooks.names, &mut sink) {
            tracing::error!("draining the event ring: {e}");
        }
    }

    /// Learned entries to the map (expired ones out), lines to the outputs.
    fn sync_learned(&mut self) {
        let outputs = &mut self.outputs;
        let mut sink = |item: &Item<'_>, clock: &WallClock| -> io::Result<()> {
            outputs.take(item, clock);
            Ok(())
        };
        if let Err(e) = self.consumer.sync_learned(&mut sink) {
            tracing::error!("updating learned PMTUs: {e}");
        }
    }

    /// `pmtu learning [on|off|flush]`.
    fn learning(&mut self, set: Option<LearningSwitch>, json: bool) -> anyhow::Result<String> {
        let learner = self.consumer.learner.as_mut().context("this daemon has no learner")?;
        match set {
            Some(LearningSwitch::On) => learner.set_enabled(true),
            Some(LearningSwitch::Off) => learner.set_enabled(false),
            Some(LearningSwitch::Flush) => {
                let n = learner.flush();
                tracing::info!("learned PMTUs flushed ({n} destination(s))");
            }
            None => {}
        }
        if let Some(s) = set {
            tracing::info!("learning: {s:?}");
        }
        self.sync_learned();
        let learner = self.consumer.learner.as_ref().context("this daemon has no learner")?;
        let status = learner.status(monotonic_ns());
        if json {
            return serde_json::to_string(&status).context("rendering the learned PMTUs as JSON");
        }
        Ok(status.text())
    }

    async fn reload(&mut self) -> anyhow::Result<Vec<String>> {
        notify(&[sd_notify::NotifyState::Reloading]);
        let result = self.try_reload().await;
        notify(&[sd_notify::NotifyState::Ready]);
        result
    }

    async fn try_reload(&mut self) -> anyhow::Result<Vec<String>> {
        let new = config::load(&self.config_path)?;
        let mut said = Vec::new();
        let (old_d, new_d) = (self.plan.daemon.clone().unwrap_or_default(), new.daemon.clone().unwrap_or_default());
        if old_d != new_d
            || self.plan.ring_bytes != new.ring_bytes
            || self.plan.pcap != new.pcap
            || self.plan.table != new.table
            || self.plan.learn != new.learn
        {
            said.push(
                "pin-path, control-socket, control-group, metrics, on-exit, ring-kib, pcap, learn-prefix and the \
                 table's settings take effect at the next start; the interfaces and rate limits are reloaded now"
                    .to_string(),
            );
        }
        let mut plan = new.clone();
        // Keep what only a restart changes.
        plan.daemon = self.plan.daemon.clone();
        plan.ring_bytes = self.plan.ring_bytes;
        plan.pcap = self.plan.pcap.clone();
        plan.table = self.plan.table;
        plan.learn = self.plan.learn;
        self.ifaces.hooks.set_plan(plan.clone())?;
        if let Some(l) = self.consumer.learner.as_mut() {
            l.set_wanted(plan.learns());
        }
        let selectors = self.ifaces.hooks.selectors().clone();
        self.ifaces.reselect(selectors).await?;
        said.extend(self.ifaces.hooks.converge());
        self.plan = plan;
        for line in &said {
            eprintln!("pmtu: {line}");
        }
        said.push(format!("reloaded {}", self.config_path.display()));
        tracing::info!("reloaded {}", self.config_path.display());
        Ok(said)
    }

    async fn handle(&mut self, incoming: Incoming) {
        let Incoming { request, reply } = incoming;
        let result: anyhow::Result<String> = match request {
            Request::Status { json } => self.status(json),
            Request::Table { json, kernel } => Ok(self.table_text(json, kernel).await),
            Request::Stats { json } => self.stats(json),
            Request::Events { json, follow } => {
                let mut text = String::new();
                for (t, j) in &self.outputs.recent {
                    text.push_str(if json { j } else { t });
                    text.push('\n');
                }
                if follow {
                    for line in text.lines() {
                        if reply.send(Reply::Out { out: line.to_string() }).await.is_err() {
                            return;
                        }
                    }
                    self.outputs.followers.push(Follower { json, reply });
                    return;
                }
                Ok(text)
            }
            Request::Reload => self.reload().await.map(|lines| lines.join("\n")),
            Request::Learning { set, json } => self.learning(set, json),
            Request::Stop { .. } => Err(anyhow!("handled by the main loop")),
        };
        match result {
            Ok(text) => control::answer(&reply, &text).await,
            Err(e) => control::fail(&reply, format!("{e:#}")).await,
        }
    }

    async fn table_text(&mut self, json: bool, kernel: bool) -> String {
        let counters = self.ifaces.hooks.programs.counters().unwrap_or_default();
        let report = Report {
            consumer: &mut self.consumer,
            kernel_cache: &mut self.kernel_cache,
            sysctls: self.sysctls,
            started_ns: self.started_ns,
            with_kernel: kernel,
            json,
        };
        report.render(counters, Moment::Asked).await
    }

    fn status(&mut self, json: bool) -> anyhow::Result<String> {
        let pin = self.ifaces.hooks.programs.pin_state().map(|p| p.ours.root.display().to_string());
        let on_exit = match self.plan.daemon.as_ref().map(|d| d.on_exit) {
            Some(OnExit::Detach) => "detach",
            _ => "keep",
        };
        let statuses = self.ifaces.hooks.status();
        let mut ifaces = Vec::new();
        for s in &statuses {
            let mut hooks = Vec::new();
            for a in &s.attachments {
                let (hook, kind) = hook_of(a.program);
                let (position, others) = match kind {
                    Some(kind) => match self.ifaces.hooks.programs.hook_neighbours(&s.name, a.program, kind) {
                        Ok(v) => v,
                        Err(e) => (format!("unknown ({e:#})"), Vec::new()),
                    },
                    None => ("the interface's one XDP program".to_string(), Vec::new()),
                };
                hooks.push(HookJson { program: a.program, hook, position, others });
            }
            ifaces.push(IfaceJson { iface: s, hooks });
        }
        let uptime = self.started.elapsed().as_secs();
        let learning = self.consumer.learner.as_ref().map(|l| LearningJson {
            learning: l.enabled(),
            used: l.wanted(),
            entries: l.len(),
        });
        if json {
            let j = StatusJson {
                version: env!("CARGO_PKG_VERSION"),
                pid: std::process::id(),
                uptime_secs: uptime,
                config: self.config_path.display().to_string(),
                pin_path: pin,
                on_exit,
                kernel: crate::features::get()?,
                interfaces: ifaces,
                learning,
            };
            return serde_json::to_string(&j).context("rendering the status as JSON");
        }
        let mut out = format!(
            "pmtu {} (pid {}), up {}, config {}\npinned state: {} (on exit: {on_exit})\n{}\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            humantime::format_duration(Duration::from_secs(uptime)),
            self.config_path.display(),
            pin.as_deref().unwrap_or("none"),
            crate::features::get()?.describe().join("; "),
        );
        if let Some(l) = learning.as_ref().filter(|l| l.used) {
            out.push_str(&format!(
                "learned clamping: learning {}, {} learned PMTU(s) in use (pmtu learning lists them)\n",
                if l.learning { "on" } else { "off" },
                l.entries
            ));
        }
        if ifaces.is_empty() {
            out.push_str("no interface served\n");
        }
        for i in &ifaces {
            let s = i.iface;
            let mut jobs = Vec::new();
            if let Some(h) = s.trace {
                jobs.push(format!("trace ({h})"));
            }
            if let Some(c) = &s.clamp {
                jobs.push(format!("clamp MSS {c}"));
            }
            out.push_str(&format!("{} (ifindex {}, {}): {}\n", s.name, s.ifindex, s.framing, jobs.join(", ")));
            for (a, h) in s.attachments.iter().zip(&i.hooks) {
                let mut flags = vec![a.mechanism.clone()];
                if a.pinned {
                    flags.push("pinned".into());
                }
                if a.adopted {
                    flags.push("adopted".into());
                }
                let others = if h.others.is_empty() { String::new() } else { format!("; also: {}", h.others.join(", ")) };
                out.push_str(&format!("  {:<11} {:<27} {}; {}{others}\n", h.hook, a.program, flags.join(", "), h.position));
            }
        }
        Ok(out)
    }

    fn stats(&mut self, json: bool) -> anyhow::Result<String> {
        let counters = self.ifaces.hooks.programs.counters()?;
        let (names, clamp) = self.ifaces.hooks.clamp_rows()?;
        let modes = self.ifaces.hooks.clamp_modes();
        if json {
            let observer: serde_json::Map<String, serde_json::Value> =
                counters.named().map(|(k, v)| (k.to_string(), v.into())).collect();
            let interfaces: Vec<serde_json::Value> = names
                .iter()
                .zip(&clamp)
                .map(|(n, c)| {
                    let counters: serde_json::Map<String, serde_json::Value> = pmtu_common::policy::counters::NAMES
                        .iter()
                        .zip(c)
                        .map(|(k, v)| (k.to_string(), (*v).into()))
                        .collect();
                    serde_json::json!({
                        "ifname": n,
                        "mode": modes.get(n).map(|m| m.name()),
                        "counters": counters,
                    })
                })
                .collect();
            let v = serde_json::json!({
                "observer": observer,
                "events_delivered": self.consumer.delivered,
                "decode_errors": self.consumer.decode_errors,
                "destinations": self.consumer.table.len(),
                "clamp": { "interfaces": interfaces },
            });
            return serde_json::to_string(&v).context("rendering the stats as JSON");
        }
        let mut out = String::from("observer:");
        for (k, v) in counters.named() {
            out.push_str(&format!(" {k}={v}"));
        }
        out.push_str(&format!(
            "\nevents delivered: {}, decode errors: {}, destinations in the table: {}\n",
            self.consumer.delivered,
            self.consumer.decode_errors,
            self.consumer.table.len()
        ));
        if !names.is_empty() {
            out.push_str("clamp:\n");
            let mut lines = String::new();
            let width = names.iter().map(|n| n.len()).max().unwrap_or(0).max("interface".len());
            let col = pmtu_common::policy::counters::NAMES.iter().map(|n| n.len()).max().unwrap_or(0).max(8);
            lines.push_str(&format!("{:<width$} {:<8}", "interface", "mode"));
            for n in pmtu_common::policy::counters::NAMES {
                lines.push_str(&format!(" {n:>col$}"));
            }
            lines.push('\n');
            for (n, c) in names.iter().zip(&clamp) {
                lines.push_str(&format!("{n:<width$} {:<8}", modes.get(n).map(|m| m.name()).unwrap_or("-")));
                for v in c {
                    lines.push_str(&format!(" {v:>col$}"));
                }
                lines.push('\n');
            }
            out.push_str(&lines);
        }
        Ok(out)
    }

    fn metrics(&mut self) -> anyhow::Result<String> {
        let counters = self.ifaces.hooks.programs.counters()?;
        let (names, clamp) = self.ifaces.hooks.clamp_rows()?;
        let clamp_rows: Vec<(String, [u64; pmtu_common::policy::counters::COUNT as usize])> =
            names.into_iter().zip(clamp).collect();
        let now = monotonic_ns();
        let rows = self.consumer.table.rows(now);
        let mut lowest: HashMap<String, u32> = HashMap::new();
        let live: std::collections::HashSet<std::net::IpAddr> = rows.iter().map(|r| r.dst).collect();
        self.outputs.dst_iface.retain(|dst, _| live.contains(dst));
        for row in &rows {
            if let (Some(cache), Some(name)) = (row.cache, self.outputs.dst_iface.get(&row.dst)) {
                let e = lowest.entry(name.clone()).or_insert(u32::MAX);
                *e = (*e).min(cache.pmtu);
            }
        }
        let lowest: Vec<(String, u32)> = lowest.into_iter().collect();
        let attached: Vec<(String, String, String)> = self
            .ifaces
            .hooks
            .status()
            .into_iter()
            .flat_map(|s| {
                s.attachments
                    .iter()
                    .map(|a| (s.name.clone(), a.job.to_string(), a.mechanism.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let snapshot = metrics::Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            observer: Some(counters),
            clamp: &clamp_rows,
            events: &self.outputs.tally,
            events_delivered: self.consumer.delivered,
            decode_errors: self.consumer.decode_errors,
            destinations: rows.len() as u64,
            table: self.consumer.table.totals(),
            lowest_pmtu: &lowest,
            flows: self.ifaces.hooks.programs.map_entries("FLOWS").ok(),
            reporters: self.ifaces.hooks.programs.map_entries("REPORTER_BUCKETS").ok(),
            ring_backlog_bytes: None,
            attached: &attached,
            learned: self.consumer.learner.as_ref().map(|l| {
                let (entries, taught, removed) = l.totals();
                metrics::LearnedTotals { entries: entries as u64, taught, removed }
            }),
        };
        metrics::render(&snapshot)
    }
}

/// `pmtu detach`: stops a running daemon with everything detached, then
/// removes whatever is still pinned under `pin_path` (a daemon killed with
/// SIGKILL, or stopped with `on-exit = "keep"`). Returns what it did.
pub async fn detach(pin_path: &Path, control_path: &Path) -> anyhow::Result<Vec<String>> {
    let mut said = Vec::new();
    match control::ask_quiet(control_path, &Request::Stop { detach: true }).await {
        Ok(lines) => {
            said.push(format!("stopped the daemon on {}", control_path.display()));
            said.extend(lines);
        }
        Err(e) if e.downcast_ref::<control::NoDaemon>().is_some() => {}
        Err(e) => return Err(e.context("stopping the running daemon")),
    }
    let root = crate::pins::PinRoot::new(pin_path);
    let dirs = root.abi_dirs()?;
    for dir in dirs {
        let removed = crate::pins::remove_abi_dir(&dir)?;
        said.push(format!(
            "removed {}: {} link(s) detached{}, {} program(s), {} map(s)",
            dir.root.display(),
            removed.links.len(),
            if removed.links.is_empty() { String::new() } else { format!(" ({})", removed.links.join(", ")) },
            removed.programs,
            removed.maps
        ));
    }
    // Legacy tc filters (kernels without TCX) a killed pmtu left.
    for line in crate::legacy_tc::sweep(true)? {
        said.push(format!("removed {line}"));
    }
    if pin_path.exists() && std::fs::read_dir(pin_path).map(|mut d| d.next().is_none()).unwrap_or(false) {
        std::fs::remove_dir(pin_path).with_context(|| format!("removing {}", pin_path.display()))?;
    }
    if said.is_empty() {
        said.push(format!("nothing pinned under {} and no tc filter recorded; nothing to do", pin_path.display()));
    }
    Ok(said)
}
