//! Command-line interface (clap derive).

use std::{num::NonZeroUsize, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use pmtu_common::flow::ObserverConfig;

use crate::{
    clamp::{ClampMode, ClampOptions},
    loader::IngressHook,
    pcap::{DEFAULT_PCAP_KEEP, DEFAULT_PCAP_MAX_BYTES, MIN_PCAP_MAX_BYTES, PcapSettings},
    trace::TraceOptions,
};

/// Watch Path-MTU signals (ICMP Frag-Needed, ICMPv6 Packet-Too-Big) in the kernel.
#[derive(Debug, Parser)]
#[command(name = "pmtu", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show PTB messages live and, on exit, the PMTU per destination.
    #[command(after_help = TRACE_AFTER_HELP)]
    Trace(TraceArgs),
    /// Lower the MSS of SYN and SYN-ACK passing these interfaces, as
    /// iptables' TCPMSS target does, until stopped; then print counters.
    Clamp(ClampArgs),
    /// Build the seed lab (h0—r1—r2—h3) in throw-away namespaces, trace
    /// PMTU discovery across it, and compare with the kernel's own cache.
    Demo(DemoArgs),
    /// Run as a daemon from a config file: pinned state that outlives it,
    /// a control socket, Prometheus metrics, reload on SIGHUP.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Parse and check a config file; attach nothing.
    CheckConfig(CheckConfigArgs),
    /// Ask the daemon what is attached where.
    Status(ClientArgs),
    /// Ask the daemon for its PMTU table.
    Table(TableArgs),
    /// Ask the daemon for its counters.
    Stats(ClientArgs),
    /// Ask the daemon for the PTB events it saw (the last 1000), or follow them.
    Events(EventsArgs),
    /// Ask the daemon to re-read its config (as SIGHUP does).
    Reload(ClientArgs),
    /// Ask the daemon what it learned for learned clamping; `off` stops
    /// learning (what was learned applies until it expires), `on` resumes,
    /// `flush` forgets it all now.
    Learning(LearningArgs),
    /// Remove everything pmtu pinned and attached (stopping a daemon first).
    Detach(DetachArgs),
    /// Inspect this host for what helps or hurts PMTU discovery.
    ///
    /// Looks at this network namespace: the PMTU sysctls, MTU mismatches
    /// (veth ends, VLANs, tunnels over their underlay, bridges), firewall
    /// rules dropping Frag-Needed or Packet-Too-Big, XDP/TCX/BTF support,
    /// programs on pmtu's hooks. Changes nothing; exits 0 even with
    /// warnings.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// One JSON object: {"findings": [{"topic", "value", "severity"
    /// ("ok", "info" or "warning"), "meaning"}], "warnings": N}.
    #[arg(long)]
    pub json: bool,
}

const RUN_AFTER_HELP: &str = "\
Signals:
  SIGTERM, SIGINT  stop; what stays attached follows on-exit (\"keep\": pinned, clamping goes on)
  SIGHUP           re-read the config and apply the difference (as `pmtu reload`)
  SIGUSR1          print the table on stderr

Exit codes of status/table/stats/events/reload: 3 when no daemon answers.";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The TOML config file (see contrib/pmtu.toml).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    #[arg(value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = crate::plan::DEFAULT_CONTROL_SOCKET)]
    pub control: PathBuf,
}

#[derive(Debug, Args)]
pub struct TableArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The kernel's own cached PMTU under each destination.
    #[arg(long)]
    pub kernel: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Keep printing events as they come.
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct LearningArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(value_enum)]
    pub set: Option<crate::control::LearningSwitch>,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// The daemon's pin path.
    #[arg(long, value_name = "DIR", default_value = crate::plan::DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
    /// The daemon's control socket (a running daemon is stopped first).
    #[arg(long, value_name = "PATH", default_value = crate::plan::DEFAULT_CONTROL_SOCKET)]
    pub control: PathBuf,
}

/// `pmtu trace --help`'s closing words: signals and output.
const TRACE_AFTER_HELP: &str = "\
Signals:
  SIGINT (Ctrl-C), SIGTERM  stop: detach, then print the table
  SIGUSR1                   print the table now and keep tracing
  SIGHUP                    ignored, with a note on stderr (reserved for reloading)

Output:
  If stdout is closed by its reader (EPIPE, e.g. `pmtu trace ... | head`), pmtu
  detaches and exits quietly with status 0. Any other failure to write it
  (ENOSPC, EIO, e.g. `> /dev/full`) detaches and exits with an error on stderr
  and status 1.";

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Interface to observe, or a pattern such as 'ppp*' for every matching
    /// interface, now and as they appear (repeat for several). An interface
    /// that goes is observed again when it returns.
    #[arg(short = 'i', long = "interface", value_name = "IFACE", required = true)]
    pub interfaces: Vec<String>,
    /// Ingress hook; tc egress is always attached too. tc (TCX) is the
    /// default: it shares the hook with other programs and keeps GRO.
    /// XDP is opt-in: it takes the interface's one XDP slot from other
    /// tools, and on veth (containers, labs, virtual routers) any XDP
    /// program moves received packets off the GRO path, which cut
    /// forwarded throughput by ~80% here (BENCHMARKS.md).
    #[arg(long, value_enum, default_value = "tc")]
    pub hook: IngressHook,
    /// One JSON object per line: events, then the table.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// How long an entry lives, in seconds (default: this host's
    /// net.ipv4.route.mtu_expires and net.ipv6.route.mtu_expires, as the
    /// kernel's own cache).
    #[arg(long, value_name = "SECS", value_parser = parse_nonzero_secs)]
    pub expires: Option<u64>,
    /// Show, under each destination, the kernel's own cached PMTU on this
    /// host (`ip route get`) and whether it agrees (the final --json table
    /// always has it).
    #[arg(long)]
    pub kernel: bool,
    /// Destinations kept in the table; the least recently updated go first.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_DESTINATIONS_NZ)]
    pub max_destinations: NonZeroUsize,
    /// Let messages that fail validation (forged, unknown flow, below the
    /// MTU floor, ...) into the table too. They are always printed.
    #[arg(long)]
    pub accept_unvalidated: bool,
    /// A flow not seen leaving for this long is unknown (seconds).
    #[arg(long, value_name = "SECS", value_parser = parse_nonzero_secs,
          default_value_t = ObserverConfig::DEFAULT.flow_timeout_ns / 1_000_000_000)]
    pub flow_timeout: u64,
    /// Events per second from one reporter before the kernel suppresses
    /// (and counts) the rest; 0 for no limit.
    #[arg(long, value_name = "N", default_value_t = ObserverConfig::DEFAULT.reporter_rate)]
    pub rate_per_reporter: u32,
    /// Events per second from all reporters together; 0 for no limit.
    #[arg(long, value_name = "N", default_value_t = ObserverConfig::DEFAULT.global_rate)]
    pub rate_global: u32,
    /// Event ring size in KiB (a power of two, at least 4).
    #[arg(long, value_name = "KIB", value_parser = parse_ring_kib)]
    pub ring_kib: Option<u32>,
    /// Also write each PTB's packet, as seen when it was (its first 256
    /// bytes, the kernel's timestamp), to this pcap file for tcpdump -r or
    /// tshark -r: IP packets (LINKTYPE_RAW), Ethernet and VLAN headers cut
    /// off. A file already there is rotated out first.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Rotate the pcap file before it grows past this size: FILE becomes
    /// FILE.1, FILE.1 FILE.2, and so on (bytes; K, M, G suffixes for KiB,
    /// MiB, GiB).
    #[arg(long, value_name = "N", requires = "pcap", value_parser = parse_bytes, default_value = "64M")]
    pub pcap_max_bytes: u64,
    /// Rotated pcap files kept (FILE.1 .. FILE.N), the oldest dropped; 0
    /// keeps none.
    #[arg(long, value_name = "N", requires = "pcap", default_value_t = DEFAULT_PCAP_KEEP,
          value_parser = clap::value_parser!(u32).range(..=1000))]
    pub pcap_keep: u32,
}

use crate::plan::DEFAULT_MAX_DESTINATIONS_NZ;

/// A size in bytes, with an optional binary K, M or G suffix; at least
/// MIN_PCAP_MAX_BYTES.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("{s:?}: the suffix may be K, M or G")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a number of bytes"))?;
    let bytes = n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes < MIN_PCAP_MAX_BYTES {
        return Err(format!("{bytes} bytes is too small for a pcap file: at least {MIN_PCAP_MAX_BYTES}"));
    }
    Ok(bytes)
}

// The default spelled for clap must be the constant.
const _: () = assert!(DEFAULT_PCAP_MAX_BYTES == 64 << 20);


pub fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s.parse().map_err(|_| format!("{s:?} is not a number of KiB"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err(format!("{kib} KiB: the ring must be a power of two from 4 KiB to 1 GiB"));
    }
    Ok(kib)
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).multiple(true).args(["set_mss", "to_pmtu", "learned"])))]
pub struct ClampArgs {
    /// Interface to clamp on, both directions, or a pattern such as 'ppp*'
    /// for every matching interface, now and as they appear (repeat for
    /// several; iptables writes 'ppp+'). An interface that goes is clamped
    /// again when it returns.
    #[arg(short = 'i', long = "interface", value_name = "IFACE", required = true)]
    pub interfaces: Vec<String>,
    /// Clamp to this MSS (never raises one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(88..), conflicts_with = "to_pmtu")]
    pub set_mss: Option<u16>,
    /// Clamp to the route MTU through this host (toward the destination and
    /// back toward the source, the lower) less 40 for IPv4 or 60 for IPv6.
    #[arg(long)]
    pub to_pmtu: bool,
    /// Also clamp to the PMTUs this host learns from the valid
    /// Packet-Too-Big messages it forwards or receives on these interfaces
    /// (toward the segment's destination and toward its source, the
    /// lower), less 40 / 60, never below 536 / 1220. With --to-pmtu or
    /// --set-mss the lowest applies. Prints what it learns and each SYN a
    /// learned PMTU clamps.
    #[arg(long)]
    pub learned: bool,
    /// With --learned: key learned PMTUs by prefix rather than address,
    /// V4[/V6] bits (e.g. 24 or 24/64). One report then lowers the MSS
    /// toward every host of the prefix: fewer PTBs needed, but a host
    /// behind a narrow link narrows its neighbours too.
    #[arg(long, value_name = "V4[/V6]", value_parser = crate::plan::parse_learn_prefix, requires = "learned")]
    pub learn_prefix: Option<pmtu_common::learned::LearnConfig>,
    /// With --learned: seconds a learned PMTU lasts (default: the host's
    /// net.ipv4/ipv6.route.mtu_expires, as the kernel's own cache).
    #[arg(long, value_name = "SECS", value_parser = parse_nonzero_secs, requires = "learned")]
    pub expires: Option<u64>,
    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Print the counters (and with --learned, each line) as JSON.
    #[arg(long)]
    pub json: bool,
}

impl From<ClampArgs> for ClampOptions {
    fn from(a: ClampArgs) -> Self {
        let base = match (a.set_mss, a.to_pmtu) {
            (Some(mss), _) => Some(crate::clamp::Base::SetMss(mss)),
            (None, true) => Some(crate::clamp::Base::ToPmtu),
            (None, false) => None,
        };
        ClampOptions {
            ifaces: a.interfaces,
            mode: ClampMode { base, learned: a.learned },
            learn: a.learn_prefix.unwrap_or(pmtu_common::learned::LearnConfig::EXACT),
            expires_secs: a.expires,
            duration: a.duration,
            json: a.json,
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The pmtu binary to run inside the lab (default: this one).
    #[arg(long, hide = true)]
    pub pmtu: Option<PathBuf>,
}

/// Whole seconds, at least one: 0 would expire every entry (`--expires`)
/// or forget every flow (`--flow-timeout`) the moment it is made.
pub fn parse_nonzero_secs(s: &str) -> Result<u64, String> {
    let secs: u64 = s.parse().map_err(|_| format!("{s:?} is not a whole number of seconds"))?;
    if secs == 0 {
        return Err("0 would make everything expire at once; give at least 1 second".to_string());
    }
    Ok(secs)
}

pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("{s} is not a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl From<TraceArgs> for TraceOptions {
    fn from(a: TraceArgs) -> Self {
        TraceOptions {
            ifaces: a.interfaces,
            hook: a.hook,
            json: a.json,
            duration: a.duration,
            expires_secs: a.expires,
            kernel: a.kernel,
            max_destinations: a.max_destinations,
            accept_unvalidated: a.accept_unvalidated,
            config: crate::plan::observer_config(a.flow_timeout, a.rate_per_reporter, a.rate_global),
            ring_bytes: a.ring_kib.map(|k| k * 1024),
            pcap: a.pcap.map(|path| PcapSettings { path, max_bytes: a.pcap_max_bytes, keep: a.pcap_keep }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn trace_arguments() {
        let cli = Cli::try_parse_from([
            "pmtu", "trace", "-i", "eth0", "-i", "eth1", "--hook", "tc", "--json", "--duration", "2.5",
        ])
        .unwrap();
        let Command::Trace(t) = cli.command else { panic!("not trace") };
        assert_eq!(t.interfaces, ["eth0", "eth1"]);
        assert_eq!(t.hook, IngressHook::Tc);
        assert_eq!(t.duration, Some(Duration::from_millis(2500)));
        assert_eq!(t.expires, None, "the host's sysctls unless given");
        assert!(!t.kernel);
        assert_eq!(t.max_destinations.get(), 65_536);
    }

    #[test]
    fn pcap_arguments() {
        let cli = Cli::try_parse_from(["pmtu", "trace", "-i", "eth0"]).unwrap();
        let Command::Trace(t) = cli.command else { panic!("not trace") };
        assert_eq!(TraceOptions::from(t).pcap, None);
        let cli = Cli::try_parse_from(["pmtu", "trace", "-i", "eth0", "--pcap", "/tmp/p.pcap"]).unwrap();
        let Command::Trace(t) = cli.command else { panic!("not trace") };
        assert_eq!(
            TraceOptions::from(t).pcap,
            Some(PcapSettings { path: "/tmp/p.pcap".into(), max_bytes: DEFAULT_PCAP_MAX_BYTES, keep: DEFAULT_PCAP_KEEP })
        );
        let cli = Cli::try_parse_from([
            "pmtu", "trace", "-i", "eth0", "--pcap", "p", "--pcap-max-bytes", "8k", "--pcap-keep", "0",
        ])
        .unwrap();
        let Command::Trace(t) = cli.command else { panic!("not trace") };
        assert_eq!(TraceOptions::from(t).pcap, Some(PcapSettings { path: "p".into(), max_bytes: 8192, keep: 0 }));
        for args in [
            &["pmtu", "trace", "-i", "eth0", "--pcap-max-bytes", "1M"][..],
            &["pmtu", "trace", "-i", "eth0", "--pcap-keep", "2"],
            &["pmtu", "trace", "-i", "eth0", "--pcap", "p", "--pcap-max-bytes", "4095"],
            &["pmtu", "trace", "-i", "eth0", "--pcap", "p", "--pcap-max-bytes", "1T"],
            &["pmtu", "trace", "-i", "eth0", "--pcap", "p", "--pcap-max-bytes", "99999999999G"],
            &["pmtu", "trace", "-i", "eth0", "--pcap", "p", "--pcap-keep", "1001"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn clamp_arguments() {
        let cli = Cli::try_parse_from(["pmtu", "clamp", "-i", "eth0", "--set-mss", "1200"]).unwrap();
        let Command::Clamp(c) = cli.command else { panic!("not clamp") };
        assert_eq!(ClampOptions::from(c).mode, ClampMode::set_mss(1200));
        let cli = Cli::try_parse_from(["pmtu", "clamp", "-i", "eth0", "--to-pmtu", "--json"]).unwrap();
        let Command::Clamp(c) = cli.command else { panic!("not clamp") };
        assert_eq!(ClampOptions::from(c).mode, ClampMode::TO_PMTU);
        for args in [
            &["pmtu", "clamp", "-i", "eth0"][..],
            &["pmtu", "clamp", "-i", "eth0", "--to-pmtu", "--set-mss", "1200"],
            &["pmtu", "clamp", "-i", "eth0", "--set-mss", "70000"],
            &["pmtu", "clamp", "-i", "eth0", "--set-mss", "40"],
            &["pmtu", "clamp", "--to-pmtu"],
            &["pmtu", "clamp", "-i", "eth0", "--to-pmtu", "--learn-prefix", "24"],
            &["pmtu", "clamp", "-i", "eth0", "--to-pmtu", "--expires", "60"],
            &["pmtu", "clamp", "-i", "eth0", "--learned", "--learn-prefix", "24/200"],
            &["pmtu", "clamp", "-i", "eth0", "--learned", "--learn-prefix", "x"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        // Learned alone, or with a base rule; prefixes.
        let cli = Cli::try_parse_from(["pmtu", "clamp", "-i", "eth0", "--learned"]).unwrap();
        let Command::Clamp(c) = cli.command else { panic!("not clamp") };
        let o = ClampOptions::from(c);
        assert_eq!((o.mode, o.learn), (ClampMode::LEARNED, pmtu_common::learned::LearnConfig::EXACT));
        let cli = Cli::try_parse_from([
            "pmtu", "clamp", "-i", "eth0", "--learned", "--set-mss", "1300", "--learn-prefix", "24/64", "--expires", "60",
        ])
        .unwrap();
        let Command::Clamp(c) = cli.command else { panic!("not clamp") };
        let o = ClampOptions::from(c);
        assert_eq!(o.mode, ClampMode::set_mss(1300).with_learned(true));
        assert_eq!((o.learn.prefixes(), o.expires_secs), ((24, 64), Some(60)));
        let cli = Cli::try_parse_from(["pmtu", "clamp", "-i", "eth0", "--learned", "--learn-prefix", "16"]).unwrap();
        let Command::Clamp(c) = cli.command else { panic!("not clamp") };
        assert_eq!(ClampOptions::from(c).learn.prefixes(), (16, 128));
    }

    #[test]
    fn interfaces_may_be_globs() {
        let cli = Cli::try_parse_from(["pmtu", "clamp", "-i", "ppp*", "-i", "wg*", "-i", "eth0", "--to-pmtu"]).unwrap();
        let Command::Clamp(c) = cli.command else { panic!("not clamp") };
        assert_eq!(ClampOptions::from(c).ifaces, ["ppp*", "wg*", "eth0"]);
    }

    #[test]
    fn zero_expiry_and_flow_timeout_are_refused_with_a_message() {
        for flag in ["--expires", "--flow-timeout"] {
            let err = Cli::try_parse_from(["pmtu", "trace", "-i", "eth0", flag, "0"]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{flag}");
            let text = err.to_string();
            assert!(text.contains(flag) && text.contains("give at least 1 second"), "{flag}: {text}");
        }
        let cli = Cli::try_parse_from(["pmtu", "trace", "-i", "eth0", "--expires", "30", "--flow-timeout", "1", "--kernel"])
            .unwrap();
        let Command::Trace(t) = cli.command else { panic!("not trace") };
        assert_eq!((t.expires, t.flow_timeout, t.kernel), (Some(30), 1, true));
        let opts = TraceOptions::from(t);
        assert_eq!(opts.config.flow_timeout_ns, 1_000_000_000);
    }

    #[test]
    fn trace_help_documents_the_signals_and_output_errors() {
        let mut cmd = Cli::command();
        let trace = cmd.find_subcommand_mut("trace").unwrap();
        let help = trace.render_long_help().to_string();
        for needle in ["SIGUSR1", "SIGHUP", "reserved for reloading", "EPIPE", "ENOSPC", "status 1"] {
            assert!(help.contains(needle), "{needle}: {help}");
        }
    }

    #[test]
    fn doctor_arguments() {
        let cli = Cli::try_parse_from(["pmtu", "doctor", "--json"]).unwrap();
        let Command::Doctor(d) = cli.command else { panic!("not doctor") };
        assert!(d.json);
        let cli = Cli::try_parse_from(["pmtu", "doctor"]).unwrap();
        let Command::Doctor(d) = cli.command else { panic!("not doctor") };
        assert!(!d.json);
        assert!(Cli::try_parse_from(["pmtu", "doctor", "-i", "eth0"]).is_err());
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        for args in [
            &["pmtu", "trace"][..],
            &["pmtu", "trace", "-i", "eth0", "--duration", "-1"],
            &["pmtu", "trace", "-i", "eth0", "--duration", "soon"],
            &["pmtu", "trace", "-i", "eth0", "--hook", "kprobe"],
            &["pmtu", "trace", "-i", "eth0", "--max-destinations", "0"],
            &["pmtu", "trace", "-i", "eth0", "--ring-kib", "3"],
            &["pmtu", "trace", "-i", "eth0", "--ring-kib", "100"],
            &["pmtu", "trace", "-i", "eth0", "--rate-global", "-5"],
            &["pmtu", "trace", "-i", "eth0", "--expires", "-1"],
            &["pmtu", "trace", "-i", "eth0", "--expires", "1.5"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
