//! Firewall rules that drop the messages PMTU discovery lives on: ICMP
//! Frag-Needed (type 3 code 4, RFC 1191) and ICMPv6 Packet-Too-Big (type 2,
//! RFC 8201), alone or with all ICMP. A router or host that filters them
//! makes a "black hole": TCP completes its handshake and then stalls on the
//! first full-size segment (RFC 2923 section 2.1; seed 002).
//!
//! Rules are read with each tool's own output: `nft -j list ruleset`
//! (JSON) and `iptables-save` / `ip6tables-save` (iptables has no JSON;
//! its save format is one rule a line, options as iptables takes them).
//! With iptables-nft both see the same tables, but nft's JSON shows
//! iptables' matches as opaque `xt` expressions; those tables are judged
//! from iptables-save alone.
//!
//! Each rule is judged against two model packets: a Frag-Needed and a
//! Packet-Too-Big, both RELATED to a tracked flow in conntrack's eyes (an
//! ICMP error about a known connection is RELATED). A condition pmtu does
//! not model (an address, an interface) neither matches nor excludes: the
//! rule is reported with it.

use std::{collections::BTreeSet, process::Command};

use serde_json::Value;

use super::{Finding, Severity};

/// The model packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Probe {
    /// ICMP type 3 code 4 over IPv4.
    FragNeeded,
    /// ICMPv6 type 2 code 0.
    PacketTooBig,
}

impl Probe {
    fn v6(self) -> bool {
        self == Probe::PacketTooBig
    }

    fn name(self) -> &'static str {
        match self {
            Probe::FragNeeded => "ICMP Frag-Needed (type 3 code 4)",
            Probe::PacketTooBig => "ICMPv6 Packet-Too-Big (type 2)",
        }
    }
}

/// What a condition looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// The transport protocol, either family (iptables -p, meta l4proto).
    L4Proto,
    /// IPv4's protocol field (nft `ip protocol`): no IPv6 packet matches.
    IpProtocol,
    /// IPv6's next header (nft `ip6 nexthdr`): no IPv4 packet matches.
    Ip6Nexthdr,
    /// The family (meta nfproto, meta protocol).
    Family,
    /// nft `icmp type` / `icmp code`, `icmpv6 type` / `icmpv6 code`.
    IcmpType,
    IcmpCode,
    Icmp6Type,
    Icmp6Code,
    /// iptables' `--icmp-type` / `--icmpv6-type`: type and optional code.
    IptIcmp,
    IptIcmp6,
    /// Conntrack state (ct state, -m conntrack --ctstate, -m state).
    CtState,
    /// A transport header ICMP does not have (tcp dport, udp sport, ...).
    NotIcmp,
    /// Anything else; `Some(v6)` when only that family has the field
    /// (`ip saddr` excludes IPv6 packets).
    Other(Option<bool>),
}

/// One value a condition compares with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    Name(String),
    Num(u64),
    Range(u64, u64),
    /// iptables' `3/4` (type/code) or `3` (any code).
    TypeCode(u64, Option<u64>),
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub field: Field,
    pub negated: bool,
    pub values: Vec<Val>,
}

impl Cond {
    fn new(field: Field, negated: bool, values: Vec<Val>) -> Self {
        Self { field, negated, values }
    }

    fn other() -> Self {
        Self::new(Field::Other(None), false, Vec::new())
    }

    /// Whether `probe` meets this condition: `None` if pmtu cannot tell.
    pub fn eval(&self, probe: Probe) -> Option<bool> {
        let v6 = probe.v6();
        // Names and numbers the probe answers to, for each field.
        let (names, num): (&[&str], Option<u64>) = match (&self.field, v6) {
            (Field::L4Proto, false) | (Field::IpProtocol, false) => (&["icmp"], Some(1)),
            (Field::L4Proto, true) | (Field::Ip6Nexthdr, true) => (&["ipv6-icmp", "icmpv6", "icmp6"], Some(58)),
            (Field::IpProtocol, true) | (Field::Ip6Nexthdr, false) => return Some(false),
            // NFPROTO_IPV4 = 2, ETH_P_IP; NFPROTO_IPV6 = 10, ETH_P_IPV6.
            (Field::Family, false) => (&["ipv4", "ip"], Some(2)),
            (Field::Family, true) => (&["ipv6", "ip6"], Some(10)),
            (Field::IcmpType, false) => (&["destination-unreachable"], Some(3)),
            (Field::IcmpCode, false) => (&["frag-needed"], Some(4)),
            (Field::Icmp6Type, true) => (&["packet-too-big"], Some(2)),
            (Field::Icmp6Code, true) => (&["no-route"], Some(0)),
            // An ICMP header field of the other family: nft adds the
            // protocol dependency, so the other family never matches.
            (Field::IcmpType | Field::IcmpCode, true) | (Field::Icmp6Type | Field::Icmp6Code, false) => {
                return Some(false);
            }
            (Field::IptIcmp, false) => (&["any", "destination-unreachable", "fragmentation-needed"], None),
            (Field::IptIcmp6, true) => (&["any", "packet-too-big"], None),
            (Field::IptIcmp, true) | (Field::IptIcmp6, false) => return Some(false),
            (Field::CtState, _) => (&["related"], None),
            (Field::NotIcmp, _) => return Some(false),
            (Field::Other(Some(only_v6)), _) if *only_v6 != v6 => return Some(false),
            (Field::Other(_), _) => return None,
        };
        let (ptype, pcode) = if v6 { (2, 0) } else { (3, 4) };
        let mut hit = false;
        for val in &self.values {
            hit |= match val {
                Val::Any => true,
                Val::Name(n) => {
                    let n = n.to_ascii_lowercase();
                    // `ether type ip`-style aliases and 0x0800 for Family.
                    names.contains(&n.as_str())
                        || (self.field == Field::Family && (n == if v6 { "0x86dd" } else { "0x0800" }))
                }
                Val::Num(x) => {
                    Some(*x) == num || (self.field == Field::Family && *x == if v6 { 0x86dd } else { 0x0800 })
                }
                Val::Range(a, b) => num.is_some_and(|n| (*a..=*b).contains(&n)),
                Val::TypeCode(t, c) => *t == ptype && c.is_none_or(|c| c == pcode),
            };
        }
        Some(hit != self.negated)
    }

    /// A condition on the ICMP type or code (as opposed to the protocol).
    fn is_icmp_type(&self) -> bool {
        matches!(
            self.field,
            Field::IcmpType | Field::IcmpCode | Field::Icmp6Type | Field::Icmp6Code | Field::IptIcmp | Field::IptIcmp6
        )
    }

    fn is_protocol(&self) -> bool {
        matches!(self.field, Field::L4Proto | Field::IpProtocol | Field::Ip6Nexthdr)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// DROP, REJECT, drop, reject.
    Drop,
    Accept,
    /// Anything else (a jump, LOG, RETURN, ...): neither.
    Other,
}

/// One rule, as its tool lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// As the tool writes it (iptables-save's line; for nft, a rendering of
    /// the JSON close to `nft list ruleset`, with the rule's handle).
    pub text: String,
    pub conds: Vec<Cond>,
    pub verdict: Verdict,
}

/// Where a chain sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// "iptables", "ip6tables", "nft".
    pub tool: &'static str,
    /// iptables' table ("filter"); nft's family and table ("inet fw").
    pub table: String,
    pub name: String,
    /// The netfilter hook ("input", "output", "forward", "prerouting",
    /// "postrouting", "ingress", "egress"); `None` for a chain reached only
    /// by jumps.
    pub hook: Option<String>,
    /// The base chain's policy drops.
    pub policy_drop: bool,
    /// The model packets this chain can see (by family).
    pub probes: Vec<Probe>,
    pub rules: Vec<Rule>,
}

/// How a rule that drops a probe goes about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// It names the ICMP type (or code): aimed at it.
    Aimed,
    /// It matches the ICMP protocol, whatever the type.
    AllIcmp,
}

/// What a base chain's hook means for a dropped Frag-Needed / PTB.
fn where_dropped(hook: Option<&str>, chain: &str) -> String {
    match hook {
        Some("input") => "those reaching this host: its own connections cannot learn the path MTU".into(),
        Some("output") => "those this host sends: as a router it hides from senders that their packets were too \
                           big, a black hole for every path through it"
            .into(),
        Some("forward") => "those passing through: hosts on either side cannot learn the path MTU".into(),
        Some("prerouting" | "ingress") => {
            "those arriving, for this host and for forwarding alike: its own connections and those routed through \
             it cannot learn the path MTU"
                .into()
        }
        Some("postrouting" | "egress") => {
            "those leaving, sent and forwarded alike: a black hole for every path through this host".into()
        }
        Some(h) => format!("those on the {h} hook"),
        None => format!("those in chain {chain}, wherever it is jumped to"),
    }
}

/// Judges one chain: explicit drops of the probes, and a drop policy (or a
/// final catch-all drop) that no earlier rule lets them through.
pub fn judge_chain(chain: &Chain) -> Vec<Finding> {
    let topic = format!("firewall/{}", chain.tool);
    let mut out = Vec::new();
    // Per probe: an earlier accept matches it for sure / at least partly.
    let mut accepted_exact: Vec<Probe> = Vec::new();
    let mut accepted_partly: Vec<Probe> = Vec::new();
    let base = chain.hook.is_some();
    let mut terminal: Option<&Rule> = None;
    for rule in &chain.rules {
        let mut hits: Vec<(Probe, Reach)> = Vec::new();
        for &probe in &chain.probes {
            let evals: Vec<(Option<bool>, &Cond)> = rule.conds.iter().map(|c| (c.eval(probe), c)).collect();
            if evals.iter().any(|(e, _)| *e == Some(false)) {
                continue;
            }
            let exact = evals.iter().all(|(e, _)| *e == Some(true));
            let some_true = evals.iter().any(|(e, _)| *e == Some(true));
            match rule.verdict {
                Verdict::Accept => {
                    if exact && !accepted_exact.contains(&probe) {
                        accepted_exact.push(probe);
                    }
                    if (some_true || rule.conds.is_empty()) && !accepted_partly.contains(&probe) {
                        accepted_partly.push(probe);
                    }
                }
                Verdict::Drop => {
                    let aimed = evals.iter().any(|(e, c)| *e == Some(true) && c.is_icmp_type() && !c.negated);
                    let icmp = evals.iter().any(|(e, c)| *e == Some(true) && (c.is_protocol() || c.is_icmp_type()));
                    if aimed {
                        hits.push((probe, Reach::Aimed));
                    } else if icmp {
                        hits.push((probe, Reach::AllIcmp));
                    }
                }
                Verdict::Other => {}
            }
        }
        if rule.verdict == Verdict::Drop && rule.conds.is_empty() && base {
            // Nothing after a catch-all drop is reached.
            terminal = Some(rule);
            break;
        }
        if hits.is_empty() {
            continue;
        }
        let shadowed = hits.iter().all(|(p, _)| accepted_exact.contains(p));
        let what: Vec<&str> = hits.iter().map(|(p, _)| p.name()).collect();
        let all_icmp = hits.iter().all(|(_, r)| *r == Reach::AllIcmp);
        let narrowed = rule.conds.iter().any(|c| matches!(c.field, Field::Other(_)));
        let only_some = if narrowed { " (those its other conditions select)" } else { "" };
        let meaning = format!(
            "drops {}{}{only_some}: {}; TCP stalls after the handshake (RFC 2923 section 2.1)",
            if all_icmp { "all ICMP, " } else { "" },
            what.join(" and "),
            where_dropped(chain.hook.as_deref(), &chain.name),
        );
        let (severity, meaning) = if shadowed {
            (Severity::Info, format!("{meaning}; but an earlier rule in this chain accepts them first"))
        } else {
            (Severity::Warning, meaning)
        };
        out.push(Finding::new(
            topic.clone(),
            format!("{} {}: {}", chain.table, chain.name, rule.text),
            severity,
            meaning,
        ));
    }
    if base && (chain.policy_drop || terminal.is_some()) {
        let missing: Vec<Probe> = chain.probes.iter().copied().filter(|p| !accepted_partly.contains(p)).collect();
        if !missing.is_empty() {
            let how = match terminal {
                Some(r) => format!("ends with {}", r.text),
                None => "policy drop".to_string(),
            };
            let what: Vec<&str> = missing.iter().map(|p| p.name()).collect();
            out.push(Finding::new(
                topic,
                format!("{} {}: {how}", chain.table, chain.name),
                Severity::Warning,
                format!(
                    "drops {} unless accepted earlier, and no rule before it accepts ICMP errors or RELATED \
                     packets (an ICMP error about a tracked connection is RELATED): {}",
                    what.join(" and "),
                    where_dropped(chain.hook.as_deref(), &chain.name)
                ),
            ));
        }
    }
    out
}

// ---- iptables-save ----

/// The built-in chains and the hooks they sit on.
fn iptables_hook(chain: &str) -> Option<&'static str> {
    Some(match chain {
        "INPUT" => "input",
        "OUTPUT" => "output",
        "FORWARD" => "forward",
        "PREROUTING" => "prerouting",
        "POSTROUTING" => "postrouting",
        _ => return None,
    })
}

/// iptables-save's words: split at spaces, double quotes group (with `\"`
/// inside), as iptables-save quotes comments.
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut started = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

/// `3/4`, `3`, `any` or a name (iptables' and ip6tables' ICMP types).
fn ipt_icmp_value(v: &str, v6: bool) -> Val {
    let num = |s: &str| s.parse::<u64>().ok();
    if v == "any" {
        return Val::Any;
    }
    if let Some((t, c)) = v.split_once('/')
        && let (Some(t), Some(c)) = (num(t), num(c))
    {
        return Val::TypeCode(t, Some(c));
    }
    if let Some(t) = num(v) {
        return Val::TypeCode(t, None);
    }
    // The names iptables accepts for the types that matter here
    // (iptables-save itself writes numbers).
    match (v, v6) {
        ("destination-unreachable", false) => Val::TypeCode(3, None),
        ("fragmentation-needed", false) => Val::TypeCode(3, Some(4)),
        ("packet-too-big", true) => Val::TypeCode(2, None),
        _ => Val::Name(v.to_string()),
    }
}

/// One `-A CHAIN ...` line of iptables-save (without the `-A CHAIN`).
pub fn parse_iptables_rule(line: &str, v6: bool) -> Option<(String, Rule)> {
    let w = words(line);
    if w.first().map(String::as_str) != Some("-A") {
        return None;
    }
    let chain = w.get(1)?.clone();
    let mut conds = Vec::new();
    let mut verdict = Verdict::Other;
    let mut negated = false;
    let mut i = 2;
    // The arguments of the option at `i`: the words up to the next option.
    let args_end = |from: usize| (from..w.len()).find(|&k| w[k].starts_with('-') || w[k] == "!").unwrap_or(w.len());
    while i < w.len() {
        let word = w[i].as_str();
        let next = w.get(i + 1).map(String::as_str).unwrap_or("");
        match word {
            "!" => {
                negated = true;
                i += 1;
                continue;
            }
            "-p" | "--protocol" => {
                let val = if next == "all" || next == "0" { Val::Any } else { num_or_name(next) };
                conds.push(Cond::new(Field::L4Proto, negated, vec![val]));
                i += 2;
            }
            "--icmp-type" => {
                conds.push(Cond::new(Field::IptIcmp, negated, vec![ipt_icmp_value(next, false)]));
                i += 2;
            }
            "--icmpv6-type" => {
                conds.push(Cond::new(Field::IptIcmp6, negated, vec![ipt_icmp_value(next, true)]));
                i += 2;
            }
            "--ctstate" | "--state" => {
                let vals = next.split(',').map(|s| Val::Name(s.to_ascii_lowercase())).collect();
                conds.push(Cond::new(Field::CtState, negated, vals));
                i += 2;
            }
            // Loading a match module, or a comment: not conditions.
            "-m" | "--match" | "--comment" => i += 2,
            "-j" | "--jump" => {
                verdict = match next {
                    "DROP" | "REJECT" => Verdict::Drop,
                    "ACCEPT" => Verdict::Accept,
                    _ => Verdict::Other,
                };
                // What follows are the target's options.
                break;
            }
            "-g" | "--goto" => break,
            w if w.starts_with('-') => {
                conds.push(Cond::other());
                i = args_end(i + 1);
            }
            _ => i += 1,
        }
        negated = false;
    }
    // The family is fixed by the tool; a -p condition already excludes
    // other protocols.
    let _ = v6;
    Some((chain, Rule { text: line.to_string(), conds, verdict }))
}

fn num_or_name(s: &str) -> Val {
    s.parse().map(Val::Num).unwrap_or_else(|_| Val::Name(s.to_ascii_lowercase()))
}

/// What iptables-save (or ip6tables-save) printed: its chains, and whether
/// it is the nf_tables variant (its tables are then nft's too).
#[derive(Clone, Debug, Default)]
pub struct SaveOutput {
    pub chains: Vec<Chain>,
    pub nf_tables: bool,
    /// iptables-nft saw tables of the legacy (x_tables) kernel interface.
    pub legacy_present: bool,
    pub tables: BTreeSet<String>,
}

pub fn parse_iptables_save(text: &str, v6: bool) -> SaveOutput {
    let tool = if v6 { "ip6tables" } else { "iptables" };
    let probes = vec![if v6 { Probe::PacketTooBig } else { Probe::FragNeeded }];
    let mut out = SaveOutput::default();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with("# Generated by") && line.contains("(nf_tables)") {
            out.nf_tables = true;
        } else if line.contains("iptables-legacy tables present") {
            out.legacy_present = true;
        } else if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
            out.tables.insert(table.clone());
        } else if let Some(decl) = line.strip_prefix(':') {
            // `:INPUT DROP [0:0]`; a user chain's policy is `-`.
            let mut parts = decl.split_whitespace();
            let name = parts.next().unwrap_or("").to_string();
            let policy = parts.next().unwrap_or("-");
            out.chains.push(Chain {
                tool,
                table: table.clone(),
                hook: iptables_hook(&name).map(str::to_string),
                policy_drop: policy == "DROP",
                name,
                probes: probes.clone(),
                rules: Vec::new(),
            });
        } else if let Some((chain, rule)) = parse_iptables_rule(line, v6)
            && let Some(c) = out.chains.iter_mut().rev().find(|c| c.table == table && c.name == chain)
        {
            c.rules.push(rule);
        }
    }
    out
}

// ---- nft -j list ruleset ----

/// nft's JSON value as `nft list` writes it.
fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().map(render_value).collect::<Vec<_>>().join(","),
        Value::Object(o) => {
            if let Some(Value::Array(items)) = o.get("set") {
                format!("{{ {} }}", items.iter().map(render_value).collect::<Vec<_>>().join(", "))
            } else if let Some(Value::Array(r)) = o.get("range")
                && r.len() == 2
            {
                format!("{}-{}", render_value(&r[0]), render_value(&r[1]))
            } else if let Some(p) = o.get("payload") {
                format!("{} {}", p["protocol"].as_str().unwrap_or("?"), p["field"].as_str().unwrap_or("?"))
            } else if let Some(m) = o.get("meta") {
                format!("meta {}", m["key"].as_str().unwrap_or("?"))
            } else if let Some(c) = o.get("ct") {
                format!("ct {}", c["key"].as_str().unwrap_or("?"))
            } else {
                o.keys().next().map_or_else(|| "?".to_string(), |k| k.clone())
            }
        }
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
    }
}

/// The values on the right of a match: `None` if their shape is not one
/// pmtu compares (a prefix, a variable, a map).
fn values(v: &Value) -> Option<Vec<Val>> {
    match v {
        Value::String(s) => Some(vec![Val::Name(s.to_ascii_lowercase())]),
        Value::Number(n) => n.as_u64().map(|n| vec![Val::Num(n)]),
        Value::Array(items) => items.iter().map(values).collect::<Option<Vec<_>>>().map(|v| v.concat()),
        Value::Object(o) => {
            if let Some(items) = o.get("set") {
                return values(items);
            }
            let r = o.get("range")?.as_array()?;
            Some(vec![Val::Range(r.first()?.as_u64()?, r.get(1)?.as_u64()?)])
        }
        _ => None,
    }
}

/// The field an nft match's left side names.
fn nft_field(left: &Value) -> Field {
    if let Some(key) = left.pointer("/meta/key").and_then(Value::as_str) {
        return match key {
            "l4proto" => Field::L4Proto,
            "nfproto" | "protocol" => Field::Family,
            _ => Field::Other(None),
        };
    }
    if let Some(key) = left.pointer("/ct/key").and_then(Value::as_str) {
        return if key == "state" { Field::CtState } else { Field::Other(None) };
    }
    let proto = left.pointer("/payload/protocol").and_then(Value::as_str);
    let field = left.pointer("/payload/field").and_then(Value::as_str);
    match (proto, field) {
        (Some("ip"), Some("protocol")) => Field::IpProtocol,
        (Some("ip6"), Some("nexthdr")) => Field::Ip6Nexthdr,
        (Some("ip"), _) => Field::Other(Some(false)),
        (Some("ip6"), _) => Field::Other(Some(true)),
        (Some("icmp"), Some("type")) => Field::IcmpType,
        (Some("icmp"), Some("code")) => Field::IcmpCode,
        (Some("icmpv6"), Some("type")) => Field::Icmp6Type,
        (Some("icmpv6"), Some("code")) => Field::Icmp6Code,
        (Some("icmp"), _) => Field::Other(Some(false)),
        (Some("icmpv6"), _) => Field::Other(Some(true)),
        // Headers an ICMP message does not have.
        (Some("tcp" | "udp" | "udplite" | "sctp" | "dccp" | "esp" | "ah" | "comp" | "igmp"), _) => Field::NotIcmp,
        _ => Field::Other(None),
    }
}

/// One rule object of nft's JSON.
pub fn parse_nft_rule(rule: &Value) -> Rule {
    let mut conds = Vec::new();
    let mut verdict = Verdict::Other;
    let mut text = Vec::new();
    for e in rule["expr"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let Some((key, body)) = e.as_object().and_then(|o| o.iter().next()) else { continue };
        match key.as_str() {
            "match" => {
                let left = &body["left"];
                let op = body["op"].as_str().unwrap_or("==");
                let right = &body["right"];
                let shown_op = match op {
                    "==" | "in" => " ".to_string(),
                    o => format!(" {o} "),
                };
                text.push(format!("{}{shown_op}{}", render_value(left), render_value(right)));
                let negated = op == "!=";
                let cond = match (op, values(right)) {
                    ("==" | "in" | "!=", Some(vals)) => Cond::new(nft_field(left), negated, vals),
                    _ => Cond::other(),
                };
                conds.push(cond);
            }
            "drop" | "reject" => {
                verdict = Verdict::Drop;
                text.push(key.clone());
            }
            "accept" => {
                verdict = Verdict::Accept;
                text.push(key.clone());
            }
            "jump" | "goto" => {
                text.push(format!("{key} {}", body["target"].as_str().unwrap_or("?")));
            }
            // iptables-nft's compat matches: opaque here.
            "xt" => {
                text.push(format!(
                    "xt {} {}",
                    body["type"].as_str().unwrap_or("?"),
                    body["name"].as_str().unwrap_or("?")
                ));
                if body["type"] == "match" {
                    conds.push(Cond::other());
                }
            }
            "counter" | "log" | "comment" => {}
            "limit" | "quota" => {
                text.push(key.clone());
                conds.push(Cond::other());
            }
            other => text.push(other.to_string()),
        }
    }
    let handle = rule["handle"].as_u64().map(|h| format!(" (handle {h})")).unwrap_or_default();
    Rule { text: format!("{}{handle}", text.join(" ")), conds, verdict }
}

/// The model packets a table of `family` can see.
fn nft_probes(family: &str) -> Vec<Probe> {
    match family {
        "ip" => vec![Probe::FragNeeded],
        "ip6" => vec![Probe::PacketTooBig],
        "inet" | "bridge" | "netdev" => vec![Probe::FragNeeded, Probe::PacketTooBig],
        _ => Vec::new(),
    }
}

/// Parses `nft -j list ruleset`. Tables in `skip` ((family, name) pairs
/// iptables-nft manages) are left out: iptables-save shows them readably.
pub fn parse_nft(json: &str, skip: &BTreeSet<(String, String)>) -> anyhow::Result<Vec<Chain>> {
    let doc: Value = serde_json::from_str(json)?;
    let items = doc["nftables"].as_array().ok_or_else(|| anyhow::anyhow!("no \"nftables\" array"))?;
    let mut chains: Vec<Chain> = Vec::new();
    for item in items {
        let key = |o: &Value, k: &str| o[k].as_str().unwrap_or("").to_string();
        if let Some(c) = item.get("chain") {
            let (family, table) = (key(c, "family"), key(c, "table"));
            if skip.contains(&(family.clone(), table.clone())) {
                continue;
            }
            chains.push(Chain {
                tool: "nft",
                table: format!("{family} {table}"),
                name: key(c, "name"),
                hook: c["hook"].as_str().map(str::to_string),
                policy_drop: c["policy"] == "drop",
                probes: nft_probes(&family),
                rules: Vec::new(),
            });
        } else if let Some(r) = item.get("rule") {
            let table = format!("{} {}", key(r, "family"), key(r, "table"));
            let name = key(r, "chain");
            if let Some(c) = chains.iter_mut().find(|c| c.table == table && c.name == name) {
                c.rules.push(parse_nft_rule(r));
            }
        }
    }
    Ok(chains)
}

// ---- running the tools ----

/// Why a tool's output is missing.
enum ToolError {
    NotInstalled,
    Failed(String),
}

fn run_tool(program: &str, args: &[&str]) -> Result<String, ToolError> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ToolError::NotInstalled
        } else {
            ToolError::Failed(e.to_string())
        }
    })?;
    if !out.status.success() {
        // One line: the report has one line a finding.
        let err = String::from_utf8_lossy(&out.stderr).split_whitespace().collect::<Vec<_>>().join(" ");
        return Err(ToolError::Failed(if err.is_empty() { out.status.to_string() } else { err }));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn not_checked(topic: &str, program: &str, err: ToolError) -> Finding {
    match err {
        ToolError::NotInstalled => {
            Finding::new(topic, "not installed", Severity::Info, format!("{program} not installed: not checked"))
        }
        ToolError::Failed(e) => Finding::new(
            topic,
            "not read",
            Severity::Info,
            format!("{program} failed ({e}): not checked (it needs CAP_NET_ADMIN; run as root)"),
        ),
    }
}

/// The findings of one tool's chains: its drops, or that none was found.
fn judged(topic: &str, what: &str, chains: &[Chain], note: &str) -> Vec<Finding> {
    let mut out: Vec<Finding> = chains.iter().flat_map(judge_chain).collect();
    if out.is_empty() {
        let rules: usize = chains.iter().map(|c| c.rules.len()).sum();
        out.push(Finding::new(
            topic,
            format!(
                "{rules} rule{} in {} chain{}{note}",
                if rules == 1 { "" } else { "s" },
                chains.len(),
                if chains.len() == 1 { "" } else { "s" }
            ),
            Severity::Ok,
            format!("none drops {what}"),
        ));
    }
    out
}

/// Every firewall finding of this namespace.
pub fn findings() -> Vec<Finding> {
    let mut out = Vec::new();
    let mut skip: BTreeSet<(String, String)> = BTreeSet::new();
    for (v6, save, legacy_save) in
        [(false, "iptables-save", "iptables-legacy-save"), (true, "ip6tables-save", "ip6tables-legacy-save")]
    {
        let tool = if v6 { "ip6tables" } else { "iptables" };
        let topic = format!("firewall/{tool}");
        let what = if v6 { Probe::PacketTooBig.name() } else { Probe::FragNeeded.name() };
        match run_tool(save, &[]) {
            Ok(text) => {
                let parsed = parse_iptables_save(&text, v6);
                if parsed.nf_tables {
                    let family = if v6 { "ip6" } else { "ip" };
                    skip.extend(parsed.tables.iter().map(|t| (family.to_string(), t.clone())));
                }
                out.extend(judged(&topic, what, &parsed.chains, ""));
                if parsed.legacy_present {
                    match run_tool(legacy_save, &[]) {
                        Ok(text) => out.extend(judged(
                            &format!("{topic}-legacy"),
                            what,
                            &parse_iptables_save(&text, v6).chains,
                            "",
                        )),
                        Err(e) => out.push(not_checked(&format!("{topic}-legacy"), legacy_save, e)),
                    }
                }
            }
            Err(e) => out.push(not_checked(&topic, save, e)),
        }
    }
    match run_tool("nft", &["-j", "list", "ruleset"]) {
        Ok(json) => match parse_nft(&json, &skip) {
            Ok(chains) => {
                let note =
                    if skip.is_empty() { "" } else { " besides iptables-nft's tables (read from iptables-save)" };
                out.extend(judged("firewall/nft", "ICMP Frag-Needed or ICMPv6 Packet-Too-Big", &chains, note))
            }
            Err(e) => out.push(Finding::new(
                "firewall/nft",
                "not read",
                Severity::Info,
                format!("nft -j list ruleset: unexpected JSON ({e}): not checked"),
            )),
        },
        Err(e) => out.push(not_checked("firewall/nft", "nft", e)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// iptables-save (iptables-nft 1.8.9) from a scratch namespace on the
    /// development machine, after rules such as `iptables -A OUTPUT -p icmp
    /// --icmp-type fragmentation-needed -j DROP` (saved as `3/4`).
    const IPT_MIXED: &str = include_str!("testdata/iptables-save-mixed.txt");
    const IP6T_MIXED: &str = include_str!("testdata/ip6tables-save-mixed.txt");
    /// `nft -j list ruleset` (nftables 1.0.6) of the same namespace: the
    /// same tables, iptables' matches opaque (`xt`).
    const NFT_OF_IPT: &str = include_str!("testdata/nft-iptables-nft.json");
    /// `nft -j list ruleset` of native nft rules (an inet table with a drop
    /// policy, a netdev ingress chain).
    const NFT_NATIVE: &str = include_str!("testdata/nft-native.json");
    /// iptables-save and ip6tables-save in r1 of the black-hole lab
    /// (BlackHoleLab::build()).
    const IPT_LAB: &str = include_str!("testdata/iptables-save-blackhole-r1.txt");
    const IP6T_LAB: &str = include_str!("testdata/ip6tables-save-blackhole-r1.txt");

    fn all(chains: &[Chain]) -> Vec<Finding> {
        chains.iter().flat_map(judge_chain).collect()
    }

    fn with<'a>(fs: &'a [Finding], needle: &str) -> &'a Finding {
        fs.iter().find(|f| f.value.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in {fs:#?}"))
    }

    #[test]
    fn words_follow_iptables_save_quoting() {
        assert_eq!(
            words(r#"-A INPUT -p icmp -m comment --comment "say \"hi\" there" -j DROP"#),
            ["-A", "INPUT", "-p", "icmp", "-m", "comment", "--comment", "say \"hi\" there", "-j", "DROP"]
        );
        assert_eq!(words(r#"--comment """#), ["--comment", ""]);
    }

    #[test]
    fn the_black_hole_labs_rules_are_warnings() {
        let v4 = parse_iptables_save(IPT_LAB, false);
        assert!(v4.nf_tables);
        let fs = all(&v4.chains);
        assert_eq!(fs.len(), 1, "{fs:#?}");
        assert_eq!(fs[0].topic, "firewall/iptables");
        assert_eq!(fs[0].value, "filter OUTPUT: -A OUTPUT -p icmp -m icmp --icmp-type 3/4 -j DROP");
        assert_eq!(fs[0].severity, Severity::Warning);
        assert!(fs[0].meaning.contains("Frag-Needed") && fs[0].meaning.contains("as a router"), "{}", fs[0].meaning);
        let fs = all(&parse_iptables_save(IP6T_LAB, true).chains);
        assert_eq!(fs.len(), 1, "{fs:#?}");
        assert_eq!(fs[0].value, "filter OUTPUT: -A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 2 -j DROP");
        assert!(fs[0].meaning.contains("Packet-Too-Big"), "{}", fs[0].meaning);
    }

    #[test]
    fn iptables_rules_are_judged_one_by_one() {
        let parsed = parse_iptables_save(IPT_MIXED, false);
        assert_eq!(parsed.tables, BTreeSet::from(["raw".to_string(), "filter".to_string()]));
        let fs = all(&parsed.chains);
        // raw PREROUTING: aimed at Frag-Needed.
        let f = with(&fs, "raw PREROUTING: -A PREROUTING -p icmp -m icmp --icmp-type 3/4 -j DROP");
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.meaning.contains("arriving"), "{}", f.meaning);
        // All ICMP.
        let f = with(&fs, "filter INPUT: -A INPUT -p icmp -j DROP");
        assert!(f.meaning.starts_with("drops all ICMP, ICMP Frag-Needed"), "{}", f.meaning);
        // All ICMP but Frag-Needed, and echo requests only: not reported.
        assert!(fs.iter().all(|f| !f.value.contains("! --icmp-type 3/4")), "{fs:#?}");
        assert!(fs.iter().all(|f| !f.value.contains("--icmp-type 8")), "{fs:#?}");
        // After `-A INPUT -j DROP` nothing in INPUT is reached; with no
        // accept before it, the catch-all itself is the finding.
        let f = with(&fs, "filter INPUT: ends with -A INPUT -j DROP");
        assert_eq!(f.severity, Severity::Warning);
        assert!(fs.iter().all(|f| !f.value.contains("say \"hi\"")), "{fs:#?}");
        // FORWARD: REJECT counts as a drop; destination-unreachable (any
        // code) includes Frag-Needed; the drop policy is a finding too.
        assert!(with(&fs, "--icmp-type 3 -j REJECT").meaning.contains("passing through"));
        let f = with(&fs, "filter FORWARD: policy drop");
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            with(&fs, "filter OUTPUT: -A OUTPUT -p icmp -m icmp --icmp-type 3/4 -j DROP").severity == Severity::Warning
        );
        // A user chain: reported with its other conditions, no policy.
        let f = with(&fs, "filter MYCHAIN: -A MYCHAIN -s 10.0.0.0/8 -p icmp -j DROP");
        assert!(
            f.meaning.contains("other conditions") && f.meaning.contains("wherever it is jumped to"),
            "{}",
            f.meaning
        );
    }

    #[test]
    fn an_earlier_related_accept_lets_them_through() {
        let text = "# Generated by iptables-save v1.8.9 (nf_tables)\n*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n\
                    -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -p icmp -j DROP\n\
                    -A FORWARD -i eth0 -m state --state RELATED -j ACCEPT\n-A FORWARD -j DROP\nCOMMIT\n";
        let fs = all(&parse_iptables_save(text, false).chains);
        let f = with(&fs, "-A INPUT -p icmp -j DROP");
        assert_eq!(f.severity, Severity::Info, "{f:?}");
        assert!(f.meaning.contains("accepts them first"));
        // Neither the INPUT policy nor FORWARD's catch-all (after an accept
        // of RELATED on one interface) is reported.
        assert_eq!(fs.len(), 1, "{fs:#?}");
    }

    #[test]
    fn ip6tables_rules() {
        let fs = all(&parse_iptables_save(IP6T_MIXED, true).chains);
        assert_eq!(fs.len(), 3, "{fs:#?}");
        assert!(
            with(&fs, "-A INPUT -p ipv6-icmp -j DROP").meaning.starts_with("drops all ICMP, ICMPv6 Packet-Too-Big")
        );
        assert_eq!(with(&fs, "-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 2 -j DROP").severity, Severity::Warning);
        assert!(
            with(&fs, "-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 2 -j DROP").meaning.contains("this host sends")
        );
    }

    #[test]
    fn icmp_type_values() {
        assert_eq!(ipt_icmp_value("3/4", false), Val::TypeCode(3, Some(4)));
        assert_eq!(ipt_icmp_value("3", false), Val::TypeCode(3, None));
        assert_eq!(ipt_icmp_value("fragmentation-needed", false), Val::TypeCode(3, Some(4)));
        assert_eq!(ipt_icmp_value("packet-too-big", true), Val::TypeCode(2, None));
        assert_eq!(ipt_icmp_value("any", true), Val::Any);
        let c = |v: &str| Cond::new(Field::IptIcmp, false, vec![ipt_icmp_value(v, false)]);
        assert_eq!(c("3/4").eval(Probe::FragNeeded), Some(true));
        assert_eq!(c("3/3").eval(Probe::FragNeeded), Some(false));
        assert_eq!(c("echo-request").eval(Probe::FragNeeded), Some(false));
        assert_eq!(c("3/4").eval(Probe::PacketTooBig), Some(false));
    }

    #[test]
    fn nft_native_rules_are_judged_by_family_and_type() {
        let chains = parse_nft(NFT_NATIVE, &BTreeSet::new()).unwrap();
        let fs = all(&chains);
        // The input chain accepts RELATED first: its drops are shadowed for
        // tracked flows, and its drop policy is covered.
        let f = with(&fs, "inet fw input: icmp type destination-unreachable icmp code frag-needed drop (handle 4)");
        assert_eq!(f.severity, Severity::Info, "{f:?}");
        assert!(f.meaning.contains("ICMP Frag-Needed") && !f.meaning.contains("Packet-Too-Big"), "{}", f.meaning);
        assert!(
            with(&fs, "meta l4proto { icmp, ipv6-icmp } drop")
                .meaning
                .contains("Frag-Needed (type 3 code 4) and ICMPv6")
        );
        assert!(with(&fs, "icmp type { destination-unreachable, echo-request } drop").meaning.contains("Frag-Needed"));
        assert!(with(&fs, "ip protocol icmp reject").meaning.contains("all ICMP"));
        assert!(with(&fs, "ip6 nexthdr ipv6-icmp drop").meaning.contains("Packet-Too-Big"));
        assert!(with(&fs, "meta iifname eth9 icmpv6 type packet-too-big drop").meaning.contains("other conditions"));
        assert!(fs.iter().all(|f| !f.value.contains("!= destination-unreachable")), "{fs:#?}");
        assert!(fs.iter().all(|f| !f.value.contains("echo-request accept")), "{fs:#?}");
        assert!(fs.iter().all(|f| !f.value.contains("policy drop")), "{fs:#?}");
        // The forward chain has no accept: its drops are warnings.
        let f = with(&fs, "inet fw forwarding: icmpv6 type packet-too-big drop");
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.meaning.contains("passing through"), "{}", f.meaning);
        assert_eq!(with(&fs, "inet fw forwarding: icmp code frag-needed drop").severity, Severity::Warning);
        // netdev ingress.
        let f = with(&fs, "netdev edge ing: icmp type destination-unreachable drop");
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.meaning.contains("arriving"), "{}", f.meaning);
    }

    #[test]
    fn the_black_hole_labs_nft_view_is_left_to_iptables_save() {
        let lab_nft = include_str!("testdata/nft-blackhole-r1.json");
        let skip: BTreeSet<(String, String)> =
            [("ip", "filter"), ("ip6", "filter")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert!(parse_nft(lab_nft, &skip).unwrap().is_empty());
    }

    #[test]
    fn iptables_nft_tables_are_left_to_iptables_save() {
        let skip: BTreeSet<(String, String)> = [("ip", "filter"), ("ip", "raw"), ("ip6", "filter")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert!(parse_nft(NFT_OF_IPT, &skip).unwrap().is_empty());
        // Without the skip list, nft's view of them: the xt matches are
        // opaque, but a plain protocol match is still read.
        let chains = parse_nft(NFT_OF_IPT, &BTreeSet::new()).unwrap();
        let fs = all(&chains);
        let f = with(&fs, "ip filter OUTPUT: meta l4proto icmp xt match icmp drop (handle 2)");
        assert!(f.meaning.contains("other conditions"), "{}", f.meaning);
    }

    #[test]
    fn nft_values_and_conditions() {
        let rule: Value = serde_json::from_str(
            r#"{"family":"inet","table":"t","chain":"c","handle":9,"expr":[
                {"match":{"op":"==","left":{"meta":{"key":"nfproto"}},"right":"ipv6"}},
                {"match":{"op":"==","left":{"payload":{"protocol":"icmpv6","field":"type"}},"right":{"set":[{"range":[1,4]},128]}}},
                {"reject":null}]}"#,
        )
        .unwrap();
        let r = parse_nft_rule(&rule);
        assert_eq!(r.text, "meta nfproto ipv6 icmpv6 type { 1-4, 128 } reject (handle 9)");
        assert_eq!(r.verdict, Verdict::Drop);
        assert_eq!(r.conds[0].eval(Probe::FragNeeded), Some(false));
        assert_eq!(r.conds[0].eval(Probe::PacketTooBig), Some(true));
        assert_eq!(r.conds[1].eval(Probe::PacketTooBig), Some(true));
    }
}
