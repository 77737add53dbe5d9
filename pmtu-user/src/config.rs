//! `pmtu run`'s config file (TOML), turned into the same [`Plan`] that `pmtu
//! trace`'s and `pmtu clamp`'s flags become, under the same rules as those
//! flags. A daemon reads its config unattended, so every error names the
//! file, the line and the key: `pmtu.toml:7: interface.mss: 40 is below 88 ...`.
//! `contrib/pmtu.toml` is a commented example.

use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    num::NonZeroUsize,
    ops::Range,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Deserialize;
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use crate::{
    clamp::ClampMode,
    cli,
    iface::Selectors,
    loader::IngressHook,
    plan::{
        DEFAULT_CONTROL_SOCKET, DEFAULT_MAX_DESTINATIONS_NZ, DEFAULT_PCAP_KEEP, DEFAULT_PCAP_MAX_BYTES,
        DEFAULT_PIN_PATH, DaemonSettings, IfacePlan, IfaceRule, OnExit, PcapSettings, Plan, TableSettings,
        observer_config,
    },
};
use pmtu_common::flow::ObserverConfig;

/// What is wrong with a config file, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; `None` when the problem has no one place (no `[[interface]]`).
    pub line: Option<usize>,
    /// Dotted path of the key (`interface.mss`), or of the table an unknown
    /// key sits in (`interface`; empty at top level or for a syntax error).
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Reads and parses `file`.
pub fn load(file: &Path) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading config file {}", file.display()))?;
    Ok(parse(&text, file)?)
}

/// Parses config `text`; `file` only names it in errors.
pub fn parse(text: &str, file: &Path) -> Result<Plan, ConfigError> {
    let cx = Cx { text, file };
    let raw: RawConfig = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
    raw.into_plan(&cx)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    expires: Option<Spanned<u64>>,
    max_destinations: Option<Spanned<u64>>,
    accept_unvalidated: Option<bool>,
    flow_timeout: Option<Spanned<u64>>,
    rate_per_reporter: Option<u32>,
    rate_global: Option<u32>,
    ring_kib: Option<Spanned<u32>>,
    metrics: Option<Spanned<String>>,
    control_socket: Option<Spanned<PathBuf>>,
    control_group: Option<Spanned<String>>,
    pin_path: Option<Spanned<PathBuf>>,
    on_exit: Option<OnExitName>,
    pcap: Option<Spanned<PathBuf>>,
    pcap_max_bytes: Option<Spanned<u64>>,
    pcap_keep: Option<Spanned<u32>>,
    learn_prefix: Option<Spanned<String>>,
    #[serde(default)]
    interface: Vec<Spanned<RawIface>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawIface {
    name: Spanned<String>,
    trace: Option<bool>,
    hook: Option<Spanned<HookName>>,
    clamp: Option<Spanned<ClampSpec>>,
    mss: Option<Spanned<u64>>,
}

// Own enums: loader's and plan's types are not Deserialize, and the file's
// spellings are the flags' (`tc`, `to-pmtu`).
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum HookName {
    Tc,
    Xdp,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum ClampName {
    Off,
    ToPmtu,
    SetMss,
    Learned,
}

/// `clamp = "to-pmtu"`, or several rules: `clamp = ["learned", "to-pmtu"]`.
#[derive(Clone, Debug, PartialEq)]
struct ClampSpec(Vec<ClampName>);

impl<'de> Deserialize<'de> for ClampSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ClampSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a clamp rule (\"off\", \"to-pmtu\", \"set-mss\", \"learned\") or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ClampSpec, E> {
                let name = ClampName::deserialize(serde::de::value::StrDeserializer::<E>::new(v))?;
                Ok(ClampSpec(vec![name]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ClampSpec, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<ClampName>()? {
                    names.push(name);
                }
                Ok(ClampSpec(names))
            }
        }
        d.deserialize_any(V)
    }
}

impl ClampSpec {
    /// The mode it asks for (None: off), with `mss` for set-mss.
    fn mode(&self, mss: Option<u16>) -> Result<Option<ClampMode>, String> {
        let has = |n: ClampName| self.0.contains(&n);
        if self.0.is_empty() {
            return Err("give a rule, e.g. \"to-pmtu\", or [\"learned\", \"to-pmtu\"]".into());
        }
        if has(ClampName::Off) {
            return if self.0.len() == 1 { Ok(None) } else { Err("\"off\" cannot be combined with other rules".into()) };
        }
        if has(ClampName::ToPmtu) && has(ClampName::SetMss) {
            return Err("\"to-pmtu\" and \"set-mss\" exclude each other (combine either with \"learned\")".into());
        }
        let mut seen = Vec::new();
        for n in &self.0 {
            if seen.contains(n) {
                return Err(format!("{n:?} is given twice"));
            }
            seen.push(*n);
        }
        let base = if has(ClampName::ToPmtu) {
            Some(crate::clamp::Base::ToPmtu)
        } else if has(ClampName::SetMss) {
            // Checked by the caller: set-mss comes with mss.
            Some(crate::clamp::Base::SetMss(mss.unwrap_or(u16::MAX)))
        } else {
            None
        };
        Ok(Some(ClampMode { base, learned: has(ClampName::Learned) }))
    }
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum OnExitName {
    Keep,
    Detach,
}

/// The same range as `pmtu clamp --set-mss` (cli.rs): below 88 no IPv4
/// segment carries data once options are in.
const MIN_MSS: u64 = 88;
/// sun_path holds 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Below this a rotating pcap would hold barely a packet per file.
const MIN_PCAP_BYTES: u64 = 4096;

// The flags' own rules (cli.rs), so a config and a command line agree.
fn nonzero_secs(secs: u64) -> Result<u64, String> {
    cli::parse_nonzero_secs(&secs.to_string())
}

fn ring_bytes(kib: u32) -> Result<u32, String> {
    cli::parse_ring_kib(&kib.to_string()).map(|kib| kib * 1024)
}

/// `value` through `check`, or an error at its line naming `key`.
fn checked<T, U>(
    cx: &Cx,
    value: Option<Spanned<T>>,
    key: &str,
    check: impl FnOnce(T) -> Result<U, String>,
) -> Result<Option<U>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    let span = value.span();
    check(value.into_inner()).map(Some).map_err(|msg| cx.at(span, key, msg))
}

/// Relative paths are refused: relative to what, the daemon's working
/// directory or the config file's, would be a guess either way.
fn absolute(path: PathBuf) -> Result<PathBuf, String> {
    if path.is_absolute() { Ok(path) } else { Err(format!("{path:?} is not an absolute path")) }
}

fn mss(mss: u64) -> Result<u16, String> {
    match u16::try_from(mss) {
        Ok(n) if u64::from(n) >= MIN_MSS => Ok(n),
        _ if mss < MIN_MSS => Err(format!("{mss} is below {MIN_MSS}, the smallest MSS pmtu sets")),
        _ => Err(format!("{mss} is above 65535, the largest MSS")),
    }
}

impl RawConfig {
    fn into_plan(self, cx: &Cx) -> Result<Plan, ConfigError> {
        let flow_timeout = checked(cx, self.flow_timeout, "flow-timeout", nonzero_secs)?;
        let defaults = ObserverConfig::DEFAULT;
        let table = TableSettings {
            expires_secs: checked(cx, self.expires, "expires", nonzero_secs)?,
            max_destinations: checked(cx, self.max_destinations, "max-destinations", |n| {
                usize::try_from(n).ok().and_then(NonZeroUsize::new).ok_or("the table must hold at least 1".into())
            })?
            .unwrap_or(DEFAULT_MAX_DESTINATIONS_NZ),
            accept_unvalidated: self.accept_unvalidated.unwrap_or(false),
        };
        let metrics = checked(cx, self.metrics, "metrics", |text| {
            text.parse::<SocketAddr>()
                .map_err(|_| format!("{text:?} is not an address:port such as 127.0.0.1:9721 or [::1]:9721"))
        })?;
        let control = checked(cx, self.control_socket, "control-socket", |path| match path.as_os_str().len() {
            len if len > MAX_SOCKET_PATH => Err(format!("longer than a socket path may be ({MAX_SOCKET_PATH} bytes)")),
            _ => absolute(path),
        })?;
        let control_group = checked(cx, self.control_group, "control-group", |group| {
            if group.trim().is_empty() { Err("give a group name, or leave the key out".into()) } else { Ok(group) }
        })?;

        // Rotation without a file would be silently ignored: say so.
        let unused = [
            (self.pcap_max_bytes.as_ref().map(Spanned::span), "pcap-max-bytes"),
            (self.pcap_keep.as_ref().map(Spanned::span), "pcap-keep"),
        ];
        if self.pcap.is_none()
            && let Some((span, key)) = unused.into_iter().find_map(|(span, key)| span.map(|s| (s, key)))
        {
            return Err(cx.at(span, key, "only used with pcap = \"/path/file.pcap\""));
        }
        let max_bytes = checked(cx, self.pcap_max_bytes, "pcap-max-bytes", |n| {
            if n >= MIN_PCAP_BYTES {
                Ok(n)
            } else {
                Err(format!("{n} bytes is below the smallest file, {MIN_PCAP_BYTES}"))
            }
        })?;
        let keep = self.pcap_keep.map_or(DEFAULT_PCAP_KEEP, Spanned::into_inner);
        let pcap = checked(cx, self.pcap, "pcap", absolute)?.map(|path| PcapSettings {
            path,
            max_bytes: max_bytes.unwrap_or(DEFAULT_PCAP_MAX_BYTES),
            keep,
        });

        let interfaces = interfaces(cx, self.interface)?;
        if let Some(prefix) = &self.learn_prefix
            && !interfaces.iter().any(|r| r.plan.clamp.is_some_and(|c| c.learned))
        {
            return Err(cx.at(prefix.span(), "learn-prefix", "only used with clamp = \"learned\""));
        }
        let learn = checked(cx, self.learn_prefix, "learn-prefix", |p| crate::plan::parse_learn_prefix(&p))?;
        Ok(Plan {
            interfaces,
            learn: learn.unwrap_or(pmtu_common::learned::LearnConfig::EXACT),
            table,
            observer: observer_config(
                flow_timeout.unwrap_or(defaults.flow_timeout_ns / 1_000_000_000),
                self.rate_per_reporter.unwrap_or(defaults.reporter_rate),
                self.rate_global.unwrap_or(defaults.global_rate),
            ),
            ring_bytes: checked(cx, self.ring_kib, "ring-kib", ring_bytes)?,
            pcap,
            daemon: Some(DaemonSettings {
                metrics,
                control: control.unwrap_or_else(|| DEFAULT_CONTROL_SOCKET.into()),
                control_group,
                pin_path: checked(cx, self.pin_path, "pin-path", absolute)?.unwrap_or_else(|| DEFAULT_PIN_PATH.into()),
                on_exit: match self.on_exit {
                    Some(OnExitName::Keep) | None => OnExit::Keep,
                    Some(OnExitName::Detach) => OnExit::Detach,
                },
            }),
        })
    }
}

fn interfaces(cx: &Cx, raw: Vec<Spanned<RawIface>>) -> Result<Vec<IfaceRule>, ConfigError> {
    if raw.is_empty() {
        let message = "no [[interface]]: give at least one, with trace = true or a clamp".into();
        return Err(ConfigError { file: cx.file.to_path_buf(), line: None, key: "interface".into(), message });
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rules = Vec::new();
    let mut first_learned = None;
    for table in raw {
        let header = table.span();
        let iface = table.into_inner();
        let name_line = cx.line(iface.name.span().start);
        let name = checked(cx, Some(iface.name), "interface.name", |name| {
            if let Some(first) = seen.get(&name) {
                return Err(format!("{name:?} is already given on line {first}; give each interface or pattern once"));
            }
            if name.is_empty() {
                return Err("give an interface name or a pattern such as \"ppp*\"".into());
            }
            // Selectors::parse holds the rules for names and globs; its
            // words are about `-i`, so only its reason is kept.
            match Selectors::parse(std::slice::from_ref(&name)) {
                Ok(_) => Ok(name),
                Err(err) => {
                    let err = err.to_string();
                    Err(format!("{name:?}: {}", err.strip_prefix(&format!("-i {name}: ")).unwrap_or(&err)))
                }
            }
        })?
        .unwrap_or_default();
        seen.insert(name.clone(), name_line);

        // Keys that would be silently ignored are errors: the file says
        // something pmtu would not do.
        let trace = iface.trace.unwrap_or(false);
        if let (false, Some(hook)) = (trace, &iface.hook) {
            return Err(cx.at(hook.span(), "interface.hook", "only used with trace = true (where PTBs are observed)"));
        }
        let set_mss = iface.clamp.as_ref().is_some_and(|c| c.get_ref().0.contains(&ClampName::SetMss));
        match (&iface.clamp, &iface.mss) {
            (Some(clamp), None) if set_mss => {
                let span = clamp.span();
                return Err(cx.at(span, "interface.clamp", "clamp = \"set-mss\" needs mss = N (88 to 65535)"));
            }
            (_, Some(mss)) if !set_mss => {
                return Err(cx.at(mss.span(), "interface.mss", "only used with clamp = \"set-mss\""));
            }
            _ => {}
        }
        let mss = checked(cx, iface.mss, "interface.mss", mss)?;
        let clamp_span = iface.clamp.as_ref().map(Spanned::span);
        let clamp = checked(cx, iface.clamp, "interface.clamp", |spec| spec.mode(mss))?.flatten();
        if clamp.is_some_and(|c| c.learned) && first_learned.is_none() {
            first_learned = clamp_span;
        }
        let plan = IfacePlan {
            trace: trace.then(|| match iface.hook.map(Spanned::into_inner) {
                Some(HookName::Xdp) => IngressHook::Xdp,
                Some(HookName::Tc) | None => IngressHook::Tc,
            }),
            clamp,
        };
        if plan.is_empty() {
            let msg = format!("{name:?} does nothing: give trace = true, a clamp, or both");
            return Err(cx.at(header, "interface", msg));
        }
        rules.push(IfaceRule { selector: name, plan });
    }
    // Learned clamping learns from what the observer sees: with nothing
    // traced it would never clamp, silently.
    if let Some(span) = first_learned
        && !rules.iter().any(|r| r.plan.trace.is_some())
    {
        let msg = "\"learned\" learns from the PTBs pmtu observes: give trace = true on the interfaces they cross";
        return Err(cx.at(span, "interface.clamp", msg));
    }
    Ok(rules)
}

/// The text and file being parsed: turns spans into lines.
struct Cx<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Cx<'_> {
    fn line(&self, offset: usize) -> usize {
        let before = self.text.as_bytes().get(..offset).unwrap_or(self.text.as_bytes());
        before.iter().filter(|b| **b == b'\n').count() + 1
    }

    fn at(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: Some(self.line(span.start)),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// toml's errors carry a span but not the key: find the key at that
    /// span in the document, as far as it parses.
    fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let mut message = humanize(err.message());
        let Some(span) = err.span() else {
            return ConfigError { file: self.file.to_path_buf(), line: None, key: String::new(), message };
        };
        let mut key = locate(DeTable::parse_recoverable(self.text).0.get_ref(), span.start, "").unwrap_or_default();
        if message == "duplicate key"
            && let Some(dup) = self.text.get(span.clone())
        {
            message = format!("duplicate key `{}`", dup.trim());
        }
        if message.starts_with("unknown key") {
            // The span is the unknown key itself; name the table it is in.
            key = key.rsplit_once('.').map_or(String::new(), |(table, _)| table.to_string());
        }
        self.at(span, &key, message)
    }
}

fn covers(span: Range<usize>, at: usize) -> bool {
    span.contains(&at) || span.start == at
}

/// The dotted path of the innermost key or value at byte `at`. Arrays of
/// tables add no index: `interface.mss`, the line tells which one.
fn locate(table: &DeTable<'_>, at: usize, prefix: &str) -> Option<String> {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        let inner = match value.get_ref() {
            DeValue::Table(t) => locate(t, at, &path),
            DeValue::Array(items) => items.iter().find_map(|item| match item.get_ref() {
                // An element's span is its [[header]]: missing keys point there.
                DeValue::Table(t) => locate(t, at, &path).or_else(|| covers(item.span(), at).then(|| path.clone())),
                _ => None,
            }),
            _ => None,
        };
        if inner.is_some() {
            return inner;
        }
        if covers(key.span(), at) || covers(value.span(), at) {
            return Some(path);
        }
    }
    None
}

/// serde's words in the file's terms, on one line.
fn humanize(message: &str) -> String {
    let message = message.trim().replace('\n', "; ");
    if let Some(rest) = message.strip_prefix("unknown field ")
        && let Some((key, expected)) = rest.split_once(", expected ")
    {
        return format!("unknown key {key} (expected {expected})");
    }
    message
        .replacen("missing field", "missing key", 1)
        .replacen("unknown variant", "unknown value", 1)
        .replace("expected u64", "expected a whole number, 0 or more")
        .replace("expected u32", "expected a whole number from 0 to 4294967295")
}

/// What a plan asks for, for `pmtu check-config`: one line per interface
/// rule, then the globals.
pub fn describe(plan: &Plan) -> String {
    let mut out = String::new();
    for rule in &plan.interfaces {
        let mut does = Vec::new();
        if let Some(hook) = rule.plan.trace {
            does.push(format!("trace (ingress at {})", if hook == IngressHook::Xdp { "xdp" } else { "tc" }));
        }
        if let Some(mode) = rule.plan.clamp {
            does.push(format!("clamp MSS {}", mode.describe()));
        }
        out += &format!("interface {}: {}\n", rule.selector, does.join(", "));
    }
    let limit = |n: u32| if n == 0 { "no limit".to_string() } else { format!("{n}/s") };
    let t = &plan.table;
    out += &format!(
        "table: {} destinations, expiry {}, {}\n",
        t.max_destinations,
        t.expires_secs.map_or("from the host's sysctls".into(), |s| format!("{s} s")),
        if t.accept_unvalidated { "unvalidated events accepted" } else { "validated events only" },
    );
    let o = &plan.observer;
    out += &format!(
        "observer: flow timeout {} s, {} per reporter, {} in all, ring {} KiB\n",
        o.flow_timeout_ns / 1_000_000_000,
        limit(o.reporter_rate),
        limit(o.global_rate),
        plan.ring_bytes.map_or(256, |b| b / 1024),
    );
    if let Some(p) = &plan.pcap {
        out += &format!("pcap: {} (rotated at {} bytes, {} kept)\n", p.path.display(), p.max_bytes, p.keep);
    }
    if plan.learns() {
        let (v4, v6) = plan.learn.prefixes();
        out += &format!("learned PMTUs: keyed by /{v4} (IPv4) and /{v6} (IPv6), expiring with the table\n");
    }
    if let Some(d) = &plan.daemon {
        let metrics = d.metrics.map_or("off".into(), |a| format!("http://{a}/metrics"));
        let group = d.control_group.as_ref().map_or(String::new(), |g| format!(" (group {g})"));
        let on_exit = if d.on_exit == OnExit::Keep { "keep attached" } else { "detach" };
        out += &format!("metrics: {metrics}\ncontrol: {}{group}\n", d.control.display());
        out += &format!("pins: {}, on exit: {on_exit}\n", d.pin_path.display());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Plan, ConfigError> {
        parse(text, Path::new("pmtu.toml"))
    }

    const IFACE: &str = "[[interface]]\nname = \"eth0\"\ntrace = true\n";

    #[test]
    fn full_example() {
        let text = r#"
expires = 600
max-destinations = 1000
accept-unvalidated = true
flow-timeout = 30
rate-per-reporter = 0
rate-global = 500
ring-kib = 1024
metrics = "[::1]:9721"
control-socket = "/run/p.sock"
control-group = "pmtu"
pin-path = "/sys/fs/bpf/p"
on-exit = "detach"
pcap = "/var/lib/pmtu/ptb.pcap"
pcap-max-bytes = 8192
pcap-keep = 2
learn-prefix = "24/64"

[[interface]]
name = "eth0"
trace = true
hook = "xdp"
clamp = ["learned", "set-mss"]
mss = 1360

[[interface]]
name = "ppp*"
clamp = "to-pmtu"
"#;
        let want = Plan {
            interfaces: vec![
                IfaceRule {
                    selector: "eth0".into(),
                    plan: IfacePlan {
                        trace: Some(IngressHook::Xdp),
                        clamp: Some(ClampMode::set_mss(1360).with_learned(true)),
                    },
                },
                IfaceRule { selector: "ppp*".into(), plan: IfacePlan { trace: None, clamp: Some(ClampMode::TO_PMTU) } },
            ],
            learn: pmtu_common::learned::LearnConfig::new(24, 64),
            table: TableSettings {
                expires_secs: Some(600),
                max_destinations: NonZeroUsize::new(1000).unwrap(),
                accept_unvalidated: true,
            },
            observer: observer_config(30, 0, 500),
            ring_bytes: Some(1 << 20),
            pcap: Some(PcapSettings { path: "/var/lib/pmtu/ptb.pcap".into(), max_bytes: 8192, keep: 2 }),
            daemon: Some(DaemonSettings {
                metrics: Some("[::1]:9721".parse().unwrap()),
                control: "/run/p.sock".into(),
                control_group: Some("pmtu".into()),
                pin_path: "/sys/fs/bpf/p".into(),
                on_exit: OnExit::Detach,
            }),
        };
        assert_eq!(parse_str(text).unwrap(), want);
    }

    #[test]
    fn minimal_config_gets_the_defaults() {
        let plan = parse_str("[[interface]]\nname = \"wg0\"\nclamp = \"to-pmtu\"\n").unwrap();
        let want = Plan {
            interfaces: vec![IfaceRule {
                selector: "wg0".into(),
                plan: IfacePlan { trace: None, clamp: Some(ClampMode::TO_PMTU) },
            }],
            daemon: Some(DaemonSettings::default()),
            ..Plan::default()
        };
        assert_eq!(plan, want);
        let plan = parse_str(IFACE).unwrap();
        assert_eq!(plan.interfaces[0].plan.trace, Some(IngressHook::Tc), "tc unless asked");
    }

    #[test]
    fn unknown_keys_name_line_and_key() {
        let err = parse_str(&format!("expires = 5\n\nfoo = 1\n{IFACE}")).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(3), ""), "{err}");
        assert!(err.to_string().starts_with("pmtu.toml:3: unknown key `foo` (expected one of `expires`"), "{err}");
        let err = parse_str(&format!("{IFACE}bar = 2\n")).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(4), "interface"), "{err}");
        assert!(
            err.to_string().starts_with("pmtu.toml:4: interface: unknown key `bar` (expected one of `name`"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let x = "[[interface]]\nname = \"x\"\n"; // lines 1-2
        #[rustfmt::skip]
        let cases = [
            (format!("{x}clamp = \"set-mss\"\nmss = 40\n"), Some(4), "interface.mss", "40 is below 88"),
            (format!("{x}clamp = \"set-mss\"\nmss = 65536\n"), Some(4), "interface.mss", "above 65535"),
            (format!("{x}clamp = \"sometimes\"\n"), Some(3), "interface.clamp", "unknown value `sometimes`"),
            (format!("ring-kib = 100\n{IFACE}"), Some(1), "ring-kib", "power of two"),
            (format!("ring-kib = 2097152\n{IFACE}"), Some(1), "ring-kib", "power of two"),
            (format!("{x}hook = \"xdp\"\nclamp = \"to-pmtu\"\n"), Some(3), "interface.hook", "trace = true"),
            (format!("{x}trace = false\nhook = \"tc\"\nclamp = \"to-pmtu\"\n"), Some(4), "interface.hook", "trace = true"),
            (format!("metrics = \"nonsense\"\n{IFACE}"), Some(1), "metrics", "not an address:port"),
            (format!("\non-exit = \"maybe\"\n{IFACE}"), Some(2), "on-exit", "unknown value `maybe`"),
            (format!("{x}clamp = \"set-mss\"\n"), Some(3), "interface.clamp", "needs mss"),
            (format!("{x}trace = true\nmss = 1200\n"), Some(4), "interface.mss", "only used with clamp"),
            (format!("{IFACE}{x}"), Some(4), "interface", "does nothing"),
            (format!("{IFACE}{x}clamp = \"off\"\n"), Some(4), "interface", "does nothing"),
            (format!("{IFACE}\n[[interface]]\nname = \"eth0\"\n"), Some(6), "interface.name", "already given on line 2"),
            (format!("{x}trace = 1\n"), Some(3), "interface.trace", "invalid type"),
            (format!("{IFACE}[[interface]]\ntrace = true\n"), Some(4), "interface", "missing key `name`"),
            ("[[interface]]\nname = \"eth0/1\"\n".into(), Some(2), "interface.name", "not a valid interface name"),
            ("[[interface]]\nname = \"a[\"\n".into(), Some(2), "interface.name", "not a valid pattern"),
            ("[[interface]]\nname = \"\"\n".into(), Some(2), "interface.name", "pattern"),
            (format!("expires = 0\n{IFACE}"), Some(1), "expires", "at least 1 second"),
            (format!("flow-timeout = -3\n{IFACE}"), Some(1), "flow-timeout", "0 or more"),
            (format!("max-destinations = 0\n{IFACE}"), Some(1), "max-destinations", "at least 1"),
            (format!("pin-path = \"bpf/pmtu\"\n{IFACE}"), Some(1), "pin-path", "absolute"),
            (format!("pcap-keep = 3\n{IFACE}"), Some(1), "pcap-keep", "only used with pcap"),
            (format!("pcap = \"/p.pcap\"\npcap-max-bytes = 10\n{IFACE}"), Some(2), "pcap-max-bytes", "below"),
            ("expires = 5\n".into(), None, "interface", "no [[interface]]"),
            (format!("{x}clamp = \"learned\"\n"), Some(3), "interface.clamp", "trace = true"),
            (format!("{IFACE}clamp = [\"to-pmtu\", \"set-mss\"]\nmss = 1300\n"), Some(4), "interface.clamp", "exclude each other"),
            (format!("{IFACE}clamp = [\"learned\", \"off\"]\n"), Some(4), "interface.clamp", "cannot be combined"),
            (format!("{IFACE}clamp = [\"learned\", \"learned\"]\n"), Some(4), "interface.clamp", "given twice"),
            (format!("{IFACE}clamp = []\n"), Some(4), "interface.clamp", "give a rule"),
            (format!("{IFACE}clamp = [\"sometimes\"]\n"), Some(4), "interface.clamp", "unknown value `sometimes`"),
            (format!("learn-prefix = \"24\"\n{IFACE}clamp = \"to-pmtu\"\n"), Some(1), "learn-prefix", "only used with clamp = \"learned\""),
            (format!("learn-prefix = \"40/64\"\n{IFACE}clamp = \"learned\"\n"), Some(1), "learn-prefix", "give 8 to 32"),
        ];
        for (text, line, key, needle) in cases {
            let err = parse_str(&text).unwrap_err();
            assert_eq!((err.line, err.key.as_str()), (line, key), "{text}\n=> {err}");
            assert!(err.message.contains(needle), "{text}\n=> {err}");
            assert_eq!(err.to_string().lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = parse_str(&format!("{IFACE}clamp = to-pmtu\n")).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(4), "interface.clamp"), "{err}");
        let err = parse_str(&format!("{IFACE}trace = false\n")).unwrap_err();
        assert_eq!(err.to_string(), "pmtu.toml:4: duplicate key `trace`");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        #[rustfmt::skip]
        let garbage = [
            "", "\0", "=", "[[", "[[interface]", "[[interface]]\n", "interface = 3", "interface = [1, 2]",
            "interface = [{name = 'a', trace = true, x = {y = 1}}]", "a.b.c = 1", "[interface]\nname = 'a'",
            "metrics = 1", "ring-kib = 99999999999999999999", "\u{feff}expires = 1",
            "[[interface]]\nname = \"\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\"\ntrace = true\n",
        ];
        for text in garbage {
            let err = parse_str(text).unwrap_err();
            assert!(!err.to_string().is_empty(), "{text:?}");
        }
    }

    #[test]
    fn contrib_example_parses() {
        let plan = parse_str(include_str!("../../contrib/pmtu.toml")).unwrap();
        assert_eq!(plan.selectors(), ["eth0", "ppp*", "wg*"]);
        assert_eq!(plan.for_selector("eth0").trace, Some(IngressHook::Tc));
        assert_eq!(plan.for_selector("wg*").clamp, Some(ClampMode::TO_PMTU));
        assert_eq!(plan.for_selector("eth0").clamp, Some(ClampMode::TO_PMTU.with_learned(true)));
        let daemon = plan.daemon.as_ref().unwrap();
        assert_eq!((daemon.metrics, daemon.on_exit), (Some("127.0.0.1:9721".parse().unwrap()), OnExit::Keep));
        let text = describe(&plan);
        assert!(text.starts_with("interface eth0: trace (ingress at tc), clamp MSS to the path MTU"), "{text}");
        assert!(text.contains("\ninterface ppp*: clamp MSS"), "{text}");
        assert!(text.contains("metrics: http://127.0.0.1:9721/metrics"), "{text}");
        assert!(text.contains("learned PMTUs: keyed by /32 (IPv4) and /128 (IPv6)"), "{text}");
    }

    #[test]
    fn load_names_the_file() {
        let err = load(Path::new("/nonexistent/pmtu.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/pmtu.toml"), "{err:#}");
    }
}
