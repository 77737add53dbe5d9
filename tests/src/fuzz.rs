//! Fuzz target bodies: libFuzzer runs them (`cargo xtask fuzz`), and the
//! test suite replays every corpus input through them on stable Rust.
//! Each body must never panic on any input; the assertions are invariants.

use std::num::NonZeroUsize;

use clap::Parser as _;
use pmtu_common::{
    event::PtbEvent,
    flow::FlowKey,
    parse::{Link, Outcome, SlicePacket, Syn, SynOutcome, parse_ptb, parse_sent, parse_syn, quoted_flow},
    tcpopt::scan_options,
    validate::intrinsic_reasons,
};
use pmtu_user::{
    clock::WallClock,
    decode::decode,
    render::{event_json, event_text},
    table::Table,
};

/// Every parser in pmtu-common over one frame.
pub fn parse_frame(data: &[u8]) {
    let pkt = SlicePacket(data);
    let mut ev = PtbEvent::zeroed();
    if parse_ptb(&pkt, Link::Ethernet, &mut ev) == Outcome::Ptb {
        assert!(ev.family == 4 || ev.family == 6);
        let _ = intrinsic_reasons(&ev);
        let _ = quoted_flow(&ev);
    }
    let mut syn = Syn::default();
    if parse_syn(&pkt, Link::Ethernet, &mut syn) == SynOutcome::Syn {
        assert!(syn.l3 < syn.l4 && syn.l4 + syn.tcp_hdr_len <= syn.ip_end && syn.ip_end <= data.len());
        let scan = scan_options(&pkt, syn.l4 + 20, syn.tcp_hdr_len - 20);
        for m in &scan.mss[..scan.mss_count as usize] {
            assert!(m.value_at + 2 <= syn.l4 + syn.tcp_hdr_len);
        }
    }
    let mut key = FlowKey::default();
    let _ = parse_sent(&pkt, Link::Ethernet, &mut key);
}

/// A ring record as the kernel would hand it over, then both renderings.
pub fn ring_record(data: &[u8]) {
    if let Ok(ptb) = decode(data) {
        let clock = WallClock::with_offset_ns(0);
        let json = event_json(&ptb, "eth0", &clock);
        let v: serde_json::Value = serde_json::from_str(&json).expect("event JSON parses");
        assert!(v["verdict"] == "valid" || v["verdict"] == "invalid");
        let _ = event_text(&ptb, "eth0", &clock);
        if let Some(cap) = &ptb.capture {
            // What `--pcap` would write: the IP packet within the capture.
            if let Ok((ip, len)) = pmtu_user::pcap::ip_packet(&cap.data, cap.orig_len, cap.link) {
                assert!(!ip.is_empty() && ip.len() <= cap.data.len() && len <= cap.orig_len);
            }
        }
    }
}

/// Command lines: NUL-separated arguments after `pmtu`.
pub fn cli_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let args = std::iter::once("pmtu").chain(text.split('\0'));
    if let Ok(cli) = pmtu_user::cli::Cli::try_parse_from(args) {
        match cli.command {
            pmtu_user::cli::Command::Trace(t) => {
                let _: pmtu_user::trace::TraceOptions = t.into();
            }
            pmtu_user::cli::Command::Clamp(c) => {
                let _: pmtu_user::clamp::ClampOptions = c.into();
            }
            // The daemon's and the client commands hold paths only.
            _ => {}
        }
    }
}

/// A sequence of table operations: 104-byte records and expiries.
pub fn table_ops(data: &[u8]) {
    let mut table = Table::new(NonZeroUsize::new(8).unwrap(), 600);
    let mut now = 0u64;
    for chunk in data.chunks(size_of::<PtbEvent>()) {
        match decode(chunk) {
            Ok(ptb) => {
                now = now.max(ptb.ts_ns);
                table.record(&ptb);
            }
            Err(_) => {
                now = now.saturating_add(chunk.first().copied().unwrap_or(1) as u64 * 1_000_000_000);
                table.expire(now);
            }
        }
        assert!(table.len() <= 8);
    }
    for row in table.rows(now) {
        // The kernel's rules: a lock only below IPv4's min_pmtu (552 here),
        // never an IPv6 PMTU under 1280, and an entry only from a report.
        if let Some(c) = row.cache {
            assert!(!c.locked || (row.family == 4 && c.pmtu <= 552));
            assert!(row.family == 4 || c.pmtu >= 1280);
            assert!(row.events >= 1);
        }
        assert!(row.reporters.len() as u64 <= row.events.max(1));
        assert!(row.reporters.len() <= pmtu_user::table::MAX_REPORTERS);
    }
}

/// The targets by name, for replay.
/// A fuzz target's name and body.
pub type Target = (&'static str, fn(&[u8]));

/// A config file, whatever it holds: a Plan or an error naming a line,
/// never a panic.
pub fn config_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match pmtu_user::config::parse(&text, std::path::Path::new("fuzz.toml")) {
        Ok(plan) => assert!(!plan.interfaces.is_empty(), "a config with no interface was accepted"),
        Err(e) => assert!(e.to_string().starts_with("fuzz.toml"), "an error that does not name the file: {e}"),
    }
}

pub const TARGETS: [Target; 6] = [
    ("config_file", config_file),
    ("parse_frame", parse_frame),
    ("ring_record", ring_record),
    ("cli_args", cli_args),
    ("table_ops", table_ops),
    ("mss_rewrite", mss_rewrite),
];

/// The MSS rewrite against the from-scratch oracle: the first three bytes
/// choose family, framing, SYN/SYN-ACK, AE bits and the clamp; the rest
/// (up to 40 bytes) are the TCP options, whatever they hold. The oracle
/// (crate::rewrite_check) must agree on the outcome, and every changed
/// frame must verify from scratch.
pub fn mss_rewrite(data: &[u8]) {
    let [a, b, c, options @ ..] = data else {
        return;
    };
    let spec = crate::rewrite_check::SynSpec {
        v6: a & 1 != 0,
        tags: match (a >> 1) & 3 {
            0 => None,
            n => Some(n as usize - 1),
        },
        syn_ack: a & 8 != 0,
        low_bits: a >> 4,
        options: options[..options.len().min(40)].to_vec(),
        v6_exts: (*b & 1) as usize,
        target: u16::from_be_bytes([*b, *c]).max(88) as u32,
    };
    if let Err(e) = crate::rewrite_check::check_spec(&spec) {
        panic!("{spec:?}: {e}");
    }
    // And the raw bytes as a whole frame of either framing: never a panic.
    let mut buf = data.to_vec();
    buf.resize(data.len() + 4, 0);
    for link in [Link::Ethernet, Link::L3 { ethertype: 0x0800 }, Link::L3 { ethertype: 0x86dd }] {
        let mut copy = buf.clone();
        // Room for the 4 bytes an insert adds was given, so the plan fits.
        pmtu_common::rewrite::clamp_frame(&mut copy, data.len(), link, a & 0x80 != 0, 1000).expect("the plan fits the buffer");
    }
}
