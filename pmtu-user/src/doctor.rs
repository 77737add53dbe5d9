//! `pmtu doctor`: what on this host (this network namespace) helps or
//! hurts Path-MTU discovery, one finding a line.
//!
//! It reads; it attaches, loads (beyond the kernel feature probe) and
//! changes nothing. Each concern lives in its own module:
//!
//! - [`sysctls`]: the PMTU sysctls and what their values mean;
//! - [`links`]: interface MTUs and mismatches (veth ends, VLANs over their
//!   parent, tunnels over their underlay, bridges and their ports);
//! - [`firewall`]: rules that drop ICMP Frag-Needed or ICMPv6 Packet-Too-Big;
//! - [`support`]: what the kernel offers pmtu (ring buffers, TCX, BTF) and
//!   whether each interface's driver runs XDP natively;
//! - [`hooks`]: other programs on the hooks pmtu uses (XDP, TCX, tc filters).
//!
//! A finding that cannot be checked (a tool not installed, a permission
//! missing) is itself a finding: the report says what it could not see
//! rather than failing. Only a host it cannot read at all (no netlink
//! socket) makes it exit non-zero.

pub mod firewall;
pub mod hooks;
pub mod links;
pub mod support;
pub mod sysctls;

use std::io::Write as _;

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::DoctorArgs;

/// How much a finding matters for PMTU discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// As it should be.
    Ok,
    /// Worth knowing; not a fault by itself.
    Info,
    /// Likely to break PMTU discovery or to drop packets silently.
    Warning,
}

impl Severity {
    /// The marker that starts a text line: the warnings stand out.
    fn marker(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warning => "WARNING",
        }
    }
}

/// One thing the doctor saw, and what it means.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What was looked at: `sysctl/net.ipv4.ip_no_pmtu_disc`,
    /// `mtu/veth/to-r2`, `firewall/iptables`, `hooks/eth0`, ...
    pub topic: String,
    /// What was found there (a sysctl's value, a rule, MTUs).
    pub value: String,
    pub severity: Severity,
    /// What it means for PMTU discovery, in one line.
    pub meaning: String,
}

impl Finding {
    pub fn new(
        topic: impl Into<String>,
        value: impl Into<String>,
        severity: Severity,
        meaning: impl Into<String>,
    ) -> Self {
        Self { topic: topic.into(), value: value.into(), severity, meaning: meaning.into() }
    }

    /// The text line: `WARNING  topic: value: meaning`; a line break in
    /// what a tool said would split a finding, so there are none.
    pub fn line(&self) -> String {
        let text = format!("{}: {}: {}", self.topic, self.value, self.meaning);
        format!("{:<8} {}", self.severity.marker(), text.replace(['\n', '\r'], " "))
    }
}

/// The whole report, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub warnings: usize,
}

impl Report {
    pub fn new(findings: Vec<Finding>) -> Self {
        let warnings = findings.iter().filter(|f| f.severity == Severity::Warning).count();
        Self { findings, warnings }
    }
}

/// Examines this network namespace. Fails only when it cannot look at all.
pub async fn examine() -> anyhow::Result<Report> {
    let mut findings = sysctls::findings();
    let facts = links::Facts::gather().await.context("reading this host's interfaces")?;
    findings.extend(links::findings(&facts));
    findings.extend(firewall::findings());
    findings.extend(support::findings(&facts.links));
    findings.extend(hooks::findings(&facts.links));
    Ok(Report::new(findings))
}

/// `pmtu doctor [--json]`.
pub async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let report = examine().await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let text = serde_json::to_string(&report).context("encoding the report")?;
        writeln!(out, "{text}").context("writing the report")?;
    } else {
        for f in &report.findings {
            writeln!(out, "{}", f.line()).context("writing the report")?;
        }
        writeln!(
            out,
            "{} finding{}, {} warning{}",
            report.findings.len(),
            if report.findings.len() == 1 { "" } else { "s" },
            report.warnings,
            if report.warnings == 1 { "" } else { "s" }
        )
        .context("writing the report")?;
    }
    out.flush().context("writing the report")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_json_carry_the_four_fields() {
        let f = Finding::new("sysctl/net.ipv4.ip_no_pmtu_disc", "1", Severity::Warning, "PMTUD off");
        assert_eq!(f.line(), "WARNING  sysctl/net.ipv4.ip_no_pmtu_disc: 1: PMTUD off");
        assert_eq!(Finding::new("t", "v", Severity::Info, "a\nb").line(), "info     t: v: a b");
        let report = Report::new(vec![f, Finding::new("t", "v", Severity::Ok, "m")]);
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["warnings"], 1);
        assert_eq!(json["findings"][0]["severity"], "warning");
        assert_eq!(json["findings"][1]["severity"], "ok");
        assert_eq!(json["findings"][0]["topic"], "sysctl/net.ipv4.ip_no_pmtu_disc");
        assert_eq!(json["findings"][0]["value"], "1");
        assert_eq!(json["findings"][0]["meaning"], "PMTUD off");
    }
}
