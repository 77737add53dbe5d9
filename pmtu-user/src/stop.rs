//! When a long-running command stops: Ctrl-C, SIGTERM or `--duration`.

use std::time::Duration;

use anyhow::Context as _;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::Instant,
};

pub struct Stop {
    sigterm: Signal,
    sigint: Signal,
    deadline: Option<Instant>,
}

impl Stop {
    /// Installs the handlers now, before anything is attached, so a signal
    /// that comes early still ends in an orderly detach.
    pub fn install(duration: Option<Duration>) -> anyhow::Result<Self> {
        Ok(Self {
            sigterm: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            sigint: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            deadline: duration.map(|d| Instant::now() + d),
        })
    }

    /// Resolves when it is time to stop. Cancel-safe: use it in `select!`.
    pub async fn wait(&mut self) {
        let deadline = async {
            match self.deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.sigterm.recv() => {}
            _ = self.sigint.recv() => {}
            () = deadline => {}
        }
    }

    /// What to tell the user about stopping.
    pub fn describe(duration: Option<Duration>) -> String {
        match duration {
            Some(d) => format!("stopping after {}s, or on Ctrl-C/SIGTERM", d.as_secs_f64()),
            None => "Ctrl-C or SIGTERM stops".to_string(),
        }
    }
}
