//! When a long-running command stops: Ctrl-C (SIGINT), SIGTERM or
//! `--duration`; and, for `pmtu trace`, the signals that do not stop it:
//! SIGUSR1 prints the table, SIGHUP is ignored (reserved for reloading).

use std::time::Duration;

use anyhow::Context as _;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::Instant,
};

/// What woke [`Stop::next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Time to stop (the signal's name, or `--duration`).
    Stop(&'static str),
    /// SIGUSR1: print the table and carry on.
    PrintTable,
    /// SIGHUP, for the daemon (`pmtu run`): re-read the config.
    Reload,
}

/// SIGUSR1 and SIGHUP, for commands that handle them.
struct TableSignals {
    sigusr1: Signal,
    sighup: Signal,
}

pub struct Stop {
    sigterm: Signal,
    sigint: Signal,
    table: Option<TableSignals>,
    deadline: Option<Instant>,
    /// SIGHUP reloads instead of being ignored.
    reload: bool,
}

pub const SIGHUP_NOTE: &str = "pmtu: SIGHUP ignored (reserved for reloading); SIGINT or SIGTERM stops, SIGUSR1 prints the table";

impl Stop {
    /// Installs the handlers now, before anything is attached, so a signal
    /// that comes early still ends in an orderly detach.
    pub fn install(duration: Option<Duration>) -> anyhow::Result<Self> {
        Ok(Self {
            sigterm: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            sigint: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            table: None,
            deadline: duration.map(|d| Instant::now() + d),
            reload: false,
        })
    }

    /// Also handles SIGUSR1 (print the table, [`Wake::PrintTable`]) and
    /// SIGHUP (a note on stderr, nothing else). Without a handler, either
    /// would kill the process: SIGHUP when a terminal closes, which a
    /// tracer under nohup or a service manager should outlive.
    pub fn with_table_signals(mut self) -> anyhow::Result<Self> {
        self.table = Some(TableSignals {
            sigusr1: signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?,
            sighup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        });
        Ok(self)
    }

    /// SIGHUP returns [`Wake::Reload`] (the daemon) instead of a note.
    pub fn with_reload(mut self) -> anyhow::Result<Self> {
        if self.table.is_none() {
            self = self.with_table_signals()?;
        }
        self.reload = true;
        Ok(self)
    }

    /// The next reason to act. SIGHUP is answered here with a note and
    /// never returned, unless reloading. Cancel-safe: use it in `select!`.
    pub async fn next(&mut self) -> Wake {
        loop {
            let at = self.deadline;
            let deadline = async move {
                match at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let (usr1, hup) = match self.table.as_mut() {
                Some(t) => (Some(&mut t.sigusr1), Some(&mut t.sighup)),
                None => (None, None),
            };
            let usr1 = async {
                match usr1 {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let hup = async {
                match hup {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.sigterm.recv() => return Wake::Stop("SIGTERM"),
                _ = self.sigint.recv() => return Wake::Stop("SIGINT"),
                () = deadline => return Wake::Stop("--duration"),
                _ = usr1 => return Wake::PrintTable,
                _ = hup => {
                    if self.reload {
                        return Wake::Reload;
                    }
                    eprintln!("{SIGHUP_NOTE}");
                }
            }
        }
    }

    /// Resolves when it is time to stop; SIGUSR1, if handled, is dropped.
    /// Cancel-safe: use it in `select!`.
    pub async fn wait(&mut self) {
        while let Wake::PrintTable | Wake::Reload = self.next().await {}
    }

    /// What to tell the user about stopping.
    pub fn describe(duration: Option<Duration>) -> String {
        match duration {
            Some(d) => format!("Ctrl-C, SIGTERM or the end of --duration ({}s) stops", d.as_secs_f64()),
            None => "Ctrl-C or SIGTERM stops".to_string(),
        }
    }
}
