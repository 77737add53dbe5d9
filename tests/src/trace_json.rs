//! Reading `pmtu trace --json`: one object per event, then the table
//! object (`"final": true`) with `destinations` (live entries),
//! `untabled` (destinations seen without an entry), `summary` and
//! `counters`. Every test that reads pmtu's JSON output goes through here,
//! so a change of format is met in one place.
//!
//! Event keys: `time direction ifname out_ifname hook family reporter to
//! mtu mtu_estimated orig_src orig_dst proto sport dport quoted_len verdict
//! reasons`. Table row keys: `dst direction family pmtu locked expires_in
//! reporters events ... kernel`, where `kernel` is pmtu's own reading of the
//! kernel's cache (`state` cached / no-entry / no-route / not-applicable /
//! error, `mtu`, `locked`, `expires_in`, `agrees`, `why`).

use std::net::IpAddr;

use serde_json::Value;

use crate::procs::Finished;

/// A cached PMTU: what `ip route get` prints as `mtu [lock] N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pmtu {
    pub mtu: u32,
    pub locked: bool,
}

impl Pmtu {
    pub const fn new(mtu: u32, locked: bool) -> Self {
        Self { mtu, locked }
    }
}

impl std::fmt::Display for Pmtu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.locked { write!(f, "mtu lock {}", self.mtu) } else { write!(f, "mtu {}", self.mtu) }
    }
}

/// One event line.
#[derive(Clone, Debug)]
pub struct Event {
    /// `received`, `transit`, `sent` (None if the key is missing).
    pub direction: Option<String>,
    pub ifname: String,
    /// A transit event's way out.
    pub out_ifname: Option<String>,
    pub hook: String,
    pub family: u8,
    pub reporter: IpAddr,
    pub to: IpAddr,
    pub mtu: u32,
    pub orig_src: IpAddr,
    pub orig_dst: IpAddr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub quoted_len: u32,
    pub valid: bool,
    pub reasons: Vec<String>,
    pub raw: Value,
}

/// pmtu's reading of the kernel's cache for one row (the `kernel` key).
#[derive(Clone, Debug)]
pub struct KernelColumn {
    pub state: String,
    pub pmtu: Option<Pmtu>,
    pub expires_in: Option<u64>,
    pub agrees: Option<bool>,
    pub why: Option<String>,
}

/// One destination in one direction: a live entry (`pmtu` is Some) or one
/// seen without an entry (`untabled`).
#[derive(Clone, Debug)]
pub struct Row {
    pub dst: IpAddr,
    pub direction: Option<String>,
    pub pmtu: Option<Pmtu>,
    pub expires_in: Option<u64>,
    /// (reporter, mtu), as listed.
    pub reporters: Vec<(IpAddr, u32)>,
    pub events: Option<u64>,
    pub rejected_events: Option<u64>,
    pub kernel: Option<KernelColumn>,
    pub raw: Value,
}

/// A whole `pmtu trace --json` run.
#[derive(Clone, Debug)]
pub struct Trace {
    pub events: Vec<Event>,
    pub rows: Vec<Row>,
    pub table: Value,
    pub stderr: Vec<String>,
}

fn addr(v: &Value, key: &str, line: &Value) -> IpAddr {
    v[key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("pmtu JSON: no address at {key:?} in {line}"))
}

fn num(v: &Value, key: &str, line: &Value) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("pmtu JSON: no number at {key:?} in {line}"))
}

fn text(v: &Value, key: &str, line: &Value) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("pmtu JSON: no string at {key:?} in {line}")).to_string()
}

fn opt_text(v: &Value, key: &str) -> Option<String> {
    v[key].as_str().map(str::to_string)
}

impl Event {
    pub fn from_json(v: &Value) -> Self {
        let reasons = v["reasons"]
            .as_array()
            .unwrap_or_else(|| panic!("pmtu JSON: no reasons in {v}"))
            .iter()
            .map(|r| r.as_str().unwrap_or_default().to_string())
            .collect();
        let verdict = text(v, "verdict", v);
        assert!(verdict == "valid" || verdict == "invalid", "pmtu JSON: verdict {verdict:?} in {v}");
        Self {
            direction: opt_text(v, "direction"),
            ifname: text(v, "ifname", v),
            out_ifname: opt_text(v, "out_ifname"),
            hook: text(v, "hook", v),
            family: u8::try_from(num(v, "family", v)).unwrap_or(0),
            reporter: addr(v, "reporter", v),
            to: addr(v, "to", v),
            mtu: u32::try_from(num(v, "mtu", v)).unwrap_or(u32::MAX),
            orig_src: addr(v, "orig_src", v),
            orig_dst: addr(v, "orig_dst", v),
            proto: u8::try_from(num(v, "proto", v)).unwrap_or(0),
            sport: v["sport"].as_u64().and_then(|p| u16::try_from(p).ok()),
            dport: v["dport"].as_u64().and_then(|p| u16::try_from(p).ok()),
            quoted_len: u32::try_from(num(v, "quoted_len", v)).unwrap_or(u32::MAX),
            valid: verdict == "valid",
            reasons,
            raw: v.clone(),
        }
    }

    /// `reporter says mtu N for orig_dst (direction, ifname[ -> out]): verdict [reasons]`,
    /// for failure messages.
    pub fn brief(&self) -> String {
        format!(
            "{} says mtu {} for {} ({}, {}{} {}): {}{}",
            self.reporter,
            self.mtu,
            self.orig_dst,
            self.direction.as_deref().unwrap_or("?"),
            self.ifname,
            self.out_ifname.as_deref().map(|o| format!(" -> {o}")).unwrap_or_default(),
            self.hook,
            if self.valid { "valid" } else { "invalid" },
            if self.reasons.is_empty() { String::new() } else { format!(" {:?}", self.reasons) },
        )
    }
}

fn kernel_column(v: &Value) -> Option<KernelColumn> {
    if v.is_null() {
        return None;
    }
    let state = opt_text(v, "state").unwrap_or_default();
    let pmtu = v["mtu"].as_u64().map(|m| Pmtu::new(u32::try_from(m).unwrap_or(u32::MAX), v["locked"].as_bool().unwrap_or(false)));
    Some(KernelColumn {
        state,
        pmtu,
        expires_in: v["expires_in"].as_u64(),
        agrees: v["agrees"].as_bool(),
        why: opt_text(v, "why"),
    })
}

impl Row {
    fn from_json(v: &Value, live: bool) -> Self {
        let pmtu = if live {
            // `pmtu` is a number and `locked` a bool on a live entry.
            let mtu = num(v, "pmtu", v);
            Some(Pmtu::new(u32::try_from(mtu).unwrap_or(u32::MAX), v["locked"].as_bool().unwrap_or(false)))
        } else {
            None
        };
        let reporters = v["reporters"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| (addr(r, "addr", v), u32::try_from(num(r, "mtu", v)).unwrap_or(u32::MAX)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            dst: addr(v, "dst", v),
            direction: opt_text(v, "direction"),
            pmtu,
            expires_in: v["expires_in"].as_u64(),
            reporters,
            events: v["events"].as_u64(),
            rejected_events: v["rejected_events"].as_u64(),
            kernel: kernel_column(&v["kernel"]),
            raw: v.clone(),
        }
    }
}

impl Trace {
    /// Parses a finished `pmtu trace --json` run: it must have exited 0
    /// with every stdout line JSON and the last one the final table.
    pub fn parse(run: &Finished) -> Self {
        assert!(run.status.success(), "pmtu trace failed: {:?}\nstderr:\n{}", run.status, run.stderr.join("\n"));
        Self::parse_lines(&run.stdout, &run.stderr)
    }

    pub fn parse_lines(stdout: &[String], stderr: &[String]) -> Self {
        let mut lines: Vec<Value> = stdout
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("pmtu stdout line is not JSON ({e}): {l}")))
            .collect();
        let table = lines.pop().unwrap_or_else(|| panic!("pmtu printed nothing; stderr:\n{}", stderr.join("\n")));
        assert!(table.get("destinations").is_some(), "the last line is not the table: {table}");
        if let Some(f) = table.get("final") {
            assert_eq!(f, &Value::Bool(true), "the last table is not the final one: {table}");
        }
        // SIGUSR1 snapshots (tables that are not final) are skipped.
        let events = lines.iter().filter(|l| l.get("destinations").is_none()).map(Event::from_json).collect();
        let mut rows: Vec<Row> = table["destinations"]
            .as_array()
            .unwrap_or_else(|| panic!("destinations is not a list: {table}"))
            .iter()
            .map(|d| Row::from_json(d, true))
            .collect();
        if let Some(untabled) = table["untabled"].as_array() {
            rows.extend(untabled.iter().map(|d| Row::from_json(d, false)));
        }
        Self { events, rows, table, stderr: stderr.to_vec() }
    }

    /// A counter of the final table, if pmtu has it.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.table["counters"][name].as_u64()
    }

    /// Rows for `dst`, any direction.
    pub fn rows_for(&self, dst: IpAddr) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.dst == dst).collect()
    }

    /// The row for `dst` in `direction` (live or untabled), if any.
    pub fn row(&self, dst: IpAddr, direction: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.dst == dst && r.direction.as_deref().unwrap_or("received") == direction)
    }

    /// pmtu's cached PMTU for `dst` in `direction`: None when there is no
    /// live entry.
    pub fn pmtu(&self, dst: IpAddr, direction: &str) -> Option<Pmtu> {
        self.row(dst, direction).and_then(|r| r.pmtu)
    }

    /// Events whose quoted destination is `dst`.
    pub fn events_for(&self, dst: IpAddr) -> Vec<&Event> {
        self.events.iter().filter(|e| e.orig_dst == dst).collect()
    }

    /// Every event, one per line, for failure messages.
    pub fn dump_events(&self) -> String {
        self.events.iter().map(Event::brief).collect::<Vec<_>>().join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_events_and_both_kinds_of_row() {
        let out: Vec<String> = [
            r#"{"time":"2026-11-25T00:00:00Z","direction":"transit","ifname":"to-r2","out_ifname":"to-h0","hook":"tc-ingress","family":4,"reporter":"192.168.6.2","to":"192.168.5.1","mtu":1350,"mtu_estimated":false,"orig_src":"192.168.5.1","orig_dst":"192.168.7.2","proto":17,"sport":1,"dport":2,"quoted_len":1370,"verdict":"valid","reasons":[]}"#,
            r#"{"final":true,"destinations":[{"dst":"10.0.0.1","direction":"received","family":4,"pmtu":552,"locked":true,"expires_in":599,"reporters":[{"addr":"10.0.0.9","mtu":0,"events":1}],"events":1,"kernel":{"state":"cached","mtu":552,"locked":true,"expires_in":598,"route_mtu":1500,"agrees":true,"why":null}}],"untabled":[{"dst":"fd00::1","direction":"received","family":6,"why":"x","rejected_events":1,"kernel":{"state":"no-entry","mtu":null,"locked":null,"expires_in":null,"agrees":true,"why":null}}],"counters":{"invalid":1}}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let t = Trace::parse_lines(&out, &[]);
        assert_eq!(t.events.len(), 1);
        assert_eq!(t.events[0].out_ifname.as_deref(), Some("to-h0"));
        assert_eq!(t.events[0].sport, Some(1));
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(t.pmtu(v4, "received"), Some(Pmtu::new(552, true)));
        assert_eq!(t.row(v4, "received").unwrap().kernel.as_ref().unwrap().pmtu, Some(Pmtu::new(552, true)));
        assert_eq!(t.pmtu(v6, "received"), None);
        assert_eq!(t.row(v6, "received").unwrap().kernel.as_ref().unwrap().state, "no-entry");
        assert_eq!(t.counter("invalid"), Some(1));
        assert_eq!(Pmtu::new(552, true).to_string(), "mtu lock 552");
    }
}
