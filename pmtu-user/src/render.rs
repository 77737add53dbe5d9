//! Text and JSON renderings of events and of the final table.
//!
//! JSON is newline-delimited: one object per event, then one last object with
//! the table and the counters, so `jq` and line-oriented tools both work.

use std::{fmt::Write as _, net::IpAddr};

use serde::Serialize;

use crate::{clock::WallClock, counters::Counters, decode::Ptb, table::Row};

#[derive(Serialize)]
pub struct EventJson<'a> {
    pub time: String,
    pub ifname: &'a str,
    pub hook: &'static str,
    pub family: u8,
    pub reporter: IpAddr,
    pub to: IpAddr,
    pub mtu: u32,
    pub mtu_estimated: bool,
    pub orig_src: IpAddr,
    pub orig_dst: IpAddr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub quoted_len: u32,
    pub verdict: &'static str,
    pub reasons: Vec<&'static str>,
}

pub fn event_json(ptb: &Ptb, ifname: &str, clock: &WallClock) -> String {
    let ev = EventJson {
        time: clock.rfc3339(ptb.ts_ns),
        ifname,
        hook: ptb.hook.as_str(),
        family: ptb.family,
        reporter: ptb.reporter,
        to: ptb.to,
        mtu: ptb.mtu,
        mtu_estimated: ptb.mtu_estimated,
        orig_src: ptb.orig_src,
        orig_dst: ptb.orig_dst,
        proto: ptb.proto,
        sport: ptb.sport,
        dport: ptb.dport,
        quoted_len: ptb.quoted_len,
        verdict: ptb.verdict(),
        reasons: ptb.reason_names(),
    };
    // Serializing plain strings, numbers and addresses cannot fail.
    serde_json::to_string(&ev).unwrap_or_default()
}

pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmp6".into(),
        132 => "sctp".into(),
        other => format!("proto {other}"),
    }
}

fn endpoint(addr: IpAddr, port: Option<u16>) -> String {
    match (addr, port) {
        (IpAddr::V4(a), Some(p)) => format!("{a}:{p}"),
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, None) => a.to_string(),
    }
}

/// One line per event, in the words of the message itself:
/// `TIME IFACE HOOK REPORTER says mtu N for SRC > DST (PROTO, LEN bytes)`.
pub fn event_text(ptb: &Ptb, ifname: &str, clock: &WallClock) -> String {
    let verdict = if ptb.is_valid() {
        String::new()
    } else {
        format!(" INVALID: {}", ptb.reason_names().join(", "))
    };
    format!(
        "{} {} {} {} says mtu {}{} for {} > {} ({}, {} bytes){verdict}",
        clock.rfc3339(ptb.ts_ns),
        ifname,
        ptb.hook.as_str(),
        ptb.reporter,
        ptb.mtu,
        if ptb.mtu_estimated { " (estimated, RFC 1191 plateau)" } else { "" },
        endpoint(ptb.orig_src, ptb.sport),
        endpoint(ptb.orig_dst, ptb.dport),
        proto_name(ptb.proto),
        ptb.quoted_len,
    )
}

#[derive(Serialize)]
struct ReporterJson {
    addr: IpAddr,
    mtu: u32,
    events: u64,
}

#[derive(Serialize)]
struct DestinationJson {
    dst: IpAddr,
    pmtu: u32,
    reporters: Vec<ReporterJson>,
    events: u64,
    first_seen: String,
    last_seen: String,
    expires_in: u64,
}

#[derive(Serialize)]
struct TableJson {
    destinations: Vec<DestinationJson>,
    counters: serde_json::Map<String, serde_json::Value>,
}

/// Counters of the kernel side plus userspace's own.
pub struct Totals {
    pub kernel: Counters,
    pub events_delivered: u64,
    /// Invalid events the table ignored (`--accept-unvalidated` not given).
    pub events_ignored: u64,
    pub decode_errors: u64,
    pub destinations_evicted: u64,
}

impl Totals {
    fn entries(&self) -> Vec<(&'static str, u64)> {
        let mut all: Vec<_> = self.kernel.named().collect();
        all.push(("events_delivered", self.events_delivered));
        all.push(("events_ignored", self.events_ignored));
        all.push(("decode_errors", self.decode_errors));
        all.push(("destinations_evicted", self.destinations_evicted));
        all
    }
}

pub fn table_json(rows: &[Row], totals: &Totals, clock: &WallClock) -> String {
    let destinations = rows
        .iter()
        .map(|row| DestinationJson {
            dst: row.dst,
            pmtu: row.pmtu,
            reporters: row
                .reporters
                .iter()
                .map(|r| ReporterJson { addr: r.addr, mtu: r.mtu, events: r.events })
                .collect(),
            events: row.events,
            first_seen: clock.rfc3339(row.first_seen_ns),
            last_seen: clock.rfc3339(row.last_seen_ns),
            expires_in: row.expires_in_secs,
        })
        .collect();
    let counters = totals
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
        .collect();
    serde_json::to_string(&TableJson { destinations, counters }).unwrap_or_default()
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") }
}

/// The table in the shape of `ip route get`'s cache line:
/// `DST mtu N expires Ns` and the routers that said so underneath.
pub fn table_text(rows: &[Row], totals: &Totals) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no Packet-Too-Big seen\n");
    }
    for row in rows {
        let _ = writeln!(
            out,
            "{} mtu {} expires {}sec {}",
            row.dst,
            row.pmtu,
            row.expires_in_secs,
            plural(row.events, "event")
        );
        for r in &row.reporters {
            let _ = writeln!(out, "    reported by {} mtu {} ({})", r.addr, r.mtu, plural(r.events, "event"));
        }
    }
    let counters: Vec<String> = totals.entries().iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(out, "counters: {}", counters.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode::Hook,
        table::{Reporter, Row},
    };

    fn clock() -> WallClock {
        // 2026-11-24T00:00:00Z at monotonic 0.
        WallClock::with_offset_ns(1_795_478_400 * 1_000_000_000)
    }

    fn ptb() -> Ptb {
        Ptb {
            ts_ns: 1_500_000,
            ifindex: 2,
            hook: Hook::TcEgress,
            family: 4,
            reporter: "192.168.6.2".parse().unwrap(),
            to: "192.168.5.1".parse().unwrap(),
            mtu: 1350,
            mtu_estimated: false,
            orig_src: "192.168.5.1".parse().unwrap(),
            orig_dst: "192.168.7.2".parse().unwrap(),
            proto: 17,
            sport: Some(40000),
            dport: Some(53),
            quoted_len: 1370,
            reasons: 0,
            direction: crate::decode::Direction::Received,
            out_ifindex: None,
        }
    }

    #[test]
    fn event_json_has_exactly_the_documented_keys() {
        let v: serde_json::Value = serde_json::from_str(&event_json(&ptb(), "to-r1", &clock())).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "dport", "family", "hook", "ifname", "mtu", "mtu_estimated", "orig_dst", "orig_src",
                "proto", "quoted_len", "reasons", "reporter", "sport", "time", "to", "verdict"
            ]
        );
        assert_eq!(v["time"], "2026-11-24T00:00:00.001500Z");
        assert_eq!(v["hook"], "tc-egress");
        assert_eq!(v["reporter"], "192.168.6.2");
        assert_eq!(v["mtu"], 1350);
        assert_eq!(v["sport"], 40000);
        assert_eq!(v["mtu_estimated"], false);
        assert_eq!(v["verdict"], "valid");
        assert_eq!(v["reasons"], serde_json::json!([]));
    }

    #[test]
    fn table_json_shape() {
        let rows = vec![Row {
            dst: "192.168.7.2".parse().unwrap(),
            pmtu: 1350,
            reporters: vec![
                Reporter { addr: "192.168.6.2".parse().unwrap(), mtu: 1350, events: 1, last_seen_ns: 2 },
                Reporter { addr: "192.168.5.2".parse().unwrap(), mtu: 1370, events: 1, last_seen_ns: 1 },
            ],
            events: 2,
            first_seen_ns: 1,
            last_seen_ns: 2,
            expires_in_secs: 599,
        }];
        let totals = Totals {
            kernel: Counters::default(),
            events_delivered: 2,
            events_ignored: 0,
            decode_errors: 0,
            destinations_evicted: 0,
        };
        let v: serde_json::Value = serde_json::from_str(&table_json(&rows, &totals, &clock())).unwrap();
        let d = &v["destinations"][0];
        assert_eq!(d["dst"], "192.168.7.2");
        assert_eq!(d["pmtu"], 1350);
        assert_eq!(d["reporters"][1]["addr"], "192.168.5.2");
        assert_eq!(d["reporters"][1]["mtu"], 1370);
        assert_eq!(d["reporters"][1]["events"], 1);
        assert_eq!(d["expires_in"], 599);
        assert!(d["first_seen"].as_str().unwrap().starts_with("2026-11-24T00:00:00"));
        assert_eq!(v["counters"]["events_delivered"], 2);
        assert_eq!(v["counters"]["ring_lost"], 0);

        let text = table_text(&rows, &totals);
        assert!(text.starts_with("192.168.7.2 mtu 1350 expires 599sec 2 events\n"), "{text}");
        assert!(text.contains("    reported by 192.168.5.2 mtu 1370 (1 event)\n"), "{text}");
    }

    #[test]
    fn event_text_reads_like_the_message() {
        let line = event_text(&ptb(), "to-r1", &clock());
        assert_eq!(
            line,
            "2026-11-24T00:00:00.001500Z to-r1 tc-egress 192.168.6.2 says mtu 1350 for 192.168.5.1:40000 > 192.168.7.2:53 (udp, 1370 bytes)"
        );
    }
}
