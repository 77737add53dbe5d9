//! What pmtu is asked to do: the one shape that `pmtu trace`'s and `pmtu
//! clamp`'s flags and `pmtu run`'s config file are both turned into, and that
//! the [`crate::supervisor`] carries out. Nothing here touches the kernel.

use std::{net::SocketAddr, num::NonZeroUsize, path::PathBuf};

use pmtu_common::{flow::ObserverConfig, learned::LearnConfig};

use crate::{clamp::ClampMode, loader::IngressHook, table::DEFAULT_MAX_DESTINATIONS};

/// What pmtu does on one interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfacePlan {
    /// Observe PTBs, with ingress at this hook (tc egress always).
    pub trace: Option<IngressHook>,
    /// Clamp SYN and SYN-ACK MSS, both directions.
    pub clamp: Option<ClampMode>,
}

impl IfacePlan {
    pub fn is_empty(&self) -> bool {
        self.trace.is_none() && self.clamp.is_none()
    }
}

/// One `-i` argument or one `[[interface]]` table: a name or a glob, and
/// what to do on every interface it selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceRule {
    pub selector: String,
    pub plan: IfacePlan,
}

/// The table's settings (userspace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSettings {
    /// Expiry for both families; `None`: the host's route/mtu_expires.
    pub expires_secs: Option<u64>,
    pub max_destinations: NonZeroUsize,
    /// Let invalid events into the table too.
    pub accept_unvalidated: bool,
}

/// Checked when compiling: no panic is left for run time.
pub const DEFAULT_MAX_DESTINATIONS_NZ: NonZeroUsize = match NonZeroUsize::new(DEFAULT_MAX_DESTINATIONS) {
    Some(n) => n,
    None => panic!("DEFAULT_MAX_DESTINATIONS must not be zero"),
};

impl Default for TableSettings {
    fn default() -> Self {
        Self { expires_secs: None, max_destinations: DEFAULT_MAX_DESTINATIONS_NZ, accept_unvalidated: false }
    }
}

/// What a stopping daemon does with its attachments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnExit {
    /// Leave programs attached and pinned: clamping goes on; the next
    /// `pmtu run` adopts them, `pmtu detach` removes them.
    #[default]
    Keep,
    /// Detach everything and remove the pins.
    Detach,
}

/// Where the observed PTBs are written as pcap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapSettings {
    pub path: PathBuf,
    /// Rotate when a file reaches this size (bytes).
    pub max_bytes: u64,
    /// Rotated files kept (path.1 .. path.N).
    pub keep: u32,
}

pub const DEFAULT_PCAP_MAX_BYTES: u64 = 64 << 20;
pub const DEFAULT_PCAP_KEEP: u32 = 4;

pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/pmtu";
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/pmtu/control.sock";

/// What only the daemon (`pmtu run`) has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonSettings {
    /// Prometheus `/metrics` listens here (none: no HTTP listener).
    pub metrics: Option<SocketAddr>,
    /// The control socket (JSON lines).
    pub control: PathBuf,
    /// Group allowed on the control socket besides root.
    pub control_group: Option<String>,
    /// bpffs directory for pinned programs, links and maps.
    pub pin_path: PathBuf,
    pub on_exit: OnExit,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            metrics: None,
            control: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            control_group: None,
            pin_path: PathBuf::from(DEFAULT_PIN_PATH),
            on_exit: OnExit::Keep,
        }
    }
}

/// Everything pmtu is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// In the order given: names before globs when choosing (see
    /// [`crate::iface::Selectors::selecting`]).
    pub interfaces: Vec<IfaceRule>,
    pub table: TableSettings,
    /// Flow timeout and rate limits for the kernel side.
    pub observer: ObserverConfig,
    /// Event ring size in bytes (None: the object's 256 KiB).
    pub ring_bytes: Option<u32>,
    pub pcap: Option<PcapSettings>,
    /// How learned PMTUs are keyed (`--learn-prefix`), for interfaces
    /// clamped to them.
    pub learn: LearnConfig,
    /// `pmtu run` only: pinned state, control socket, metrics.
    pub daemon: Option<DaemonSettings>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            table: TableSettings::default(),
            observer: ObserverConfig::DEFAULT,
            ring_bytes: None,
            pcap: None,
            learn: LearnConfig::EXACT,
            daemon: None,
        }
    }
}

impl Plan {
    /// The `-i`/`name` selectors, in order.
    pub fn selectors(&self) -> Vec<String> {
        self.interfaces.iter().map(|r| r.selector.clone()).collect()
    }

    /// What to do on an interface `selector` selected.
    pub fn for_selector(&self, selector: &str) -> IfacePlan {
        self.interfaces.iter().find(|r| r.selector == selector).map(|r| r.plan).unwrap_or_default()
    }

    /// True if any interface is traced (the observer's maps are needed).
    pub fn traces(&self) -> bool {
        self.interfaces.iter().any(|r| r.plan.trace.is_some())
    }

    /// True if any interface is clamped.
    pub fn clamps(&self) -> bool {
        self.interfaces.iter().any(|r| r.plan.clamp.is_some())
    }

    /// True if any interface is clamped to learned PMTUs.
    pub fn learns(&self) -> bool {
        self.interfaces.iter().any(|r| r.plan.clamp.is_some_and(|c| c.learned))
    }
}

/// `--learn-prefix V4[/V6]` and the config's `learn-prefix`: "24" keys
/// IPv4 entries by /24 and IPv6 by whole addresses, "24/64" both.
pub fn parse_learn_prefix(s: &str) -> Result<LearnConfig, String> {
    let (v4, v6) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let v4: u32 = v4.trim().parse().map_err(|_| format!("{s:?}: expected V4[/V6] prefix lengths, e.g. 24 or 24/64"))?;
    let v6: u32 = match v6 {
        Some(b) => b.trim().parse().map_err(|_| format!("{s:?}: expected V4[/V6] prefix lengths, e.g. 24 or 24/64"))?,
        None => 128,
    };
    if !(8..=32).contains(&v4) {
        return Err(format!("IPv4 prefix /{v4}: give 8 to 32"));
    }
    if !(16..=128).contains(&v6) {
        return Err(format!("IPv6 prefix /{v6}: give 16 to 128"));
    }
    Ok(LearnConfig::new(v4, v6))
}

/// The observer's kernel settings from per-second rates, as `pmtu trace`'s
/// flags and the config give them: a burst of two seconds' worth absorbs a
/// traceroute's probes.
pub fn observer_config(flow_timeout_secs: u64, rate_per_reporter: u32, rate_global: u32) -> ObserverConfig {
    ObserverConfig {
        flow_timeout_ns: flow_timeout_secs.saturating_mul(1_000_000_000),
        reporter_rate: rate_per_reporter,
        reporter_burst: rate_per_reporter.saturating_mul(2),
        global_rate: rate_global,
        global_burst: rate_global.saturating_mul(2),
    }
}
