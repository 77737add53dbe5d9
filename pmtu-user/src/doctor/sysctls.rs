//! The sysctls that shape PMTU discovery in this network namespace (all
//! of them are per namespace), read from /proc/sys, each with what its
//! value means. The meanings follow the kernel's own documentation,
//! Documentation/networking/ip-sysctl.rst ("ip-sysctl" below), and the RFCs
//! it implements.

use std::collections::BTreeMap;

use super::{Finding, Severity};

/// The sysctls read, in the order reported.
pub const KEYS: &[&str] = &[
    "net.ipv4.ip_no_pmtu_disc",
    "net.ipv4.tcp_mtu_probing",
    "net.ipv4.tcp_base_mss",
    "net.ipv4.tcp_mtu_probe_floor",
    "net.ipv4.route.min_pmtu",
    "net.ipv4.route.mtu_expires",
    "net.ipv6.route.mtu_expires",
    "net.ipv4.route.min_adv_mss",
    "net.ipv6.route.min_adv_mss",
    "net.ipv4.ip_forward",
    "net.ipv4.ip_forward_use_pmtu",
    "net.ipv6.conf.all.forwarding",
];

/// `net.ipv4.route.min_pmtu` -> `/proc/sys/net/ipv4/route/min_pmtu`.
pub fn path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Every key in [`KEYS`], read from this namespace.
pub fn findings() -> Vec<Finding> {
    let values: BTreeMap<&str, Result<String, String>> = KEYS
        .iter()
        .map(|k| {
            let v = std::fs::read_to_string(path(k)).map(|t| t.trim().to_string()).map_err(|e| e.to_string());
            (*k, v)
        })
        .collect();
    judge_all(&values)
}

/// The findings for values already read (`Err` when the file could not be).
pub fn judge_all(values: &BTreeMap<&str, Result<String, String>>) -> Vec<Finding> {
    KEYS.iter()
        .filter_map(|key| {
            let topic = format!("sysctl/{key}");
            Some(match values.get(key)? {
                Ok(value) => {
                    let (severity, meaning) = judge(key, value, values);
                    Finding::new(topic, value.clone(), severity, meaning)
                }
                // A kernel without IPv6, or one from before the sysctl.
                Err(e) => Finding::new(
                    topic,
                    "missing",
                    Severity::Info,
                    format!("{} cannot be read ({e}): not checked", path(key)),
                ),
            })
        })
        .collect()
}

/// What `value` of `key` means; `all` gives the others (tcp_base_mss
/// matters only while probing is on).
pub fn judge(key: &str, value: &str, all: &BTreeMap<&str, Result<String, String>>) -> (Severity, String) {
    let n: Option<i64> = value.parse().ok();
    let other = |k: &str| all.get(k).and_then(|v| v.as_ref().ok()).and_then(|v| v.parse::<i64>().ok());
    match (key, n) {
        // ip-sysctl, ip_no_pmtu_disc (modes 1 to 3).
        ("net.ipv4.ip_no_pmtu_disc", Some(0)) => (
            Severity::Ok,
            "PMTU discovery is on: IPv4 sockets send with DF set and lower their path MTU on ICMP Frag-Needed \
             (RFC 1191)"
                .into(),
        ),
        ("net.ipv4.ip_no_pmtu_disc", Some(1)) => (
            Severity::Warning,
            "PMTU discovery is off (mode 1): packets leave without DF and are fragmented on the way; a \
             Frag-Needed lowers the path MTU only to the smaller of the old one and min_pmtu (ip-sysctl)"
                .into(),
        ),
        ("net.ipv4.ip_no_pmtu_disc", Some(2)) => (
            Severity::Warning,
            "PMTU discovery is off (mode 2): incoming Frag-Needed messages are discarded and every socket is \
             created with IP_PMTUDISC_DONT, as in mode 1 (ip-sysctl)"
                .into(),
        ),
        ("net.ipv4.ip_no_pmtu_disc", Some(3)) => (
            Severity::Warning,
            "hardened mode 3: only protocols that can verify a Frag-Needed against their own state (TCP, SCTP) \
             act on it; UDP and the rest ignore it, so their PMTU discovery does not work; meant for a namespace, \
             not globally (ip-sysctl)"
                .into(),
        ),
        ("net.ipv4.ip_no_pmtu_disc", _) => {
            (Severity::Warning, format!("unknown mode {value}: modes are 0 (on) to 3 (ip-sysctl)"))
        }

        // ip-sysctl, tcp_mtu_probing; RFC 4821 (PLPMTUD).
        ("net.ipv4.tcp_mtu_probing", Some(0)) => (
            Severity::Info,
            "Packetization-Layer PMTU discovery (PLPMTUD, RFC 4821) is off: TCP learns the path MTU from ICMP \
             alone, so behind a black hole (ICMP filtered) a connection stalls after the handshake"
                .into(),
        ),
        ("net.ipv4.tcp_mtu_probing", Some(1)) => (
            Severity::Ok,
            "PLPMTUD (RFC 4821) starts once TCP detects a black hole (retransmission timeouts): it drops to \
             tcp_base_mss and probes upward (ip-sysctl)"
                .into(),
        ),
        ("net.ipv4.tcp_mtu_probing", Some(2)) => (
            Severity::Ok,
            "PLPMTUD (RFC 4821) always: every TCP connection starts at tcp_base_mss and probes upward, \
             independent of ICMP (ip-sysctl)"
                .into(),
        ),
        ("net.ipv4.tcp_mtu_probing", _) => {
            (Severity::Info, format!("unknown value {value}: 0 off, 1 on black hole, 2 always (ip-sysctl)"))
        }

        // ip-sysctl, tcp_base_mss; RFC 4821 section 7.2 suggests 1024.
        ("net.ipv4.tcp_base_mss", _) => {
            let used = match other("net.ipv4.tcp_mtu_probing") {
                Some(0) => "; unused while tcp_mtu_probing is 0",
                _ => "",
            };
            (
                Severity::Info,
                format!(
                    "the MSS PLPMTUD starts from (search_low) when probing begins; the default 1024 follows RFC \
                     4821 section 7.2 (ip-sysctl){used}"
                ),
            )
        }
        ("net.ipv4.tcp_mtu_probe_floor", _) => (
            Severity::Info,
            "the smallest MSS PLPMTUD falls back to after repeated black-hole timeouts (default 48; ip-sysctl)".into(),
        ),

        // ip-sysctl, min_pmtu; net/ipv4/route.c __ip_rt_update_pmtu(): a
        // smaller reported MTU locks the route, and ip_dont_fragment()
        // clears DF on a locked route.
        ("net.ipv4.route.min_pmtu", _) => (
            Severity::Info,
            "a Frag-Needed never lowers an IPv4 path MTU below this (default 552): a smaller one locks the \
             route at min_pmtu and its packets leave without DF, to be fragmented on the way; IPv6 has no such \
             knob, its floor is 1280 (RFC 8200 section 5)"
                .into(),
        ),
        ("net.ipv4.route.mtu_expires" | "net.ipv6.route.mtu_expires", Some(secs)) => (
            Severity::Info,
            format!(
                "a path MTU learnt from ICMP is forgotten after {secs} s (default 600) and the interface MTU tried \
                 again, as RFC 1191 section 6.3 and RFC 8201 section 4 suggest (about 10 minutes; ip-sysctl)"
            ),
        ),
        ("net.ipv4.route.min_adv_mss", _) => (
            Severity::Info,
            "the MSS this host advertises in its SYNs follows the first hop's route MTU (less 40) but is never \
             below this (default 256; ip-sysctl)"
                .into(),
        ),
        ("net.ipv6.route.min_adv_mss", _) => (
            Severity::Info,
            "the MSS this host advertises over IPv6 follows the first hop's route MTU (less 60) but is never below \
             this (default 1220, IPv6's minimum MTU 1280 less 60; ip-sysctl)"
                .into(),
        ),

        // ip-sysctl, ip_forward; RFC 1191 section 1 and RFC 4443 section
        // 3.2: a router answers a packet too big for the next link.
        ("net.ipv4.ip_forward", Some(0)) => (
            Severity::Info,
            "not an IPv4 router: only this host's own connections depend on the ICMP it receives".into(),
        ),
        ("net.ipv4.ip_forward", Some(_)) => (
            Severity::Info,
            "an IPv4 router: for a DF packet too big for the next link it must send ICMP Frag-Needed back \
             (RFC 1191); dropping those makes a black hole for the hosts behind it"
                .into(),
        ),
        ("net.ipv4.ip_forward_use_pmtu", Some(0)) => (
            Severity::Info,
            "forwarded packets are sized by the outgoing interface's MTU, not by path MTUs learnt from ICMP, \
             which forged Frag-Needed could lower (default; ip-sysctl)"
                .into(),
        ),
        ("net.ipv4.ip_forward_use_pmtu", Some(_)) => (
            Severity::Info,
            "forwarded packets honour path MTUs learnt from ICMP: a forged Frag-Needed can lower them for \
             everything routed (ip-sysctl)"
                .into(),
        ),
        ("net.ipv6.conf.all.forwarding", Some(0)) => (
            Severity::Info,
            "not an IPv6 router: only this host's own connections depend on the ICMPv6 it receives".into(),
        ),
        ("net.ipv6.conf.all.forwarding", Some(_)) => (
            Severity::Info,
            "an IPv6 router: for a packet too big for the next link it must send ICMPv6 Packet-Too-Big (RFC 4443 \
             section 3.2); IPv6 routers never fragment (RFC 8200 section 5), so dropping those is a black hole"
                .into(),
        ),
        (_, _) => (Severity::Info, format!("{value:?} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, Result<String, String>> {
        pairs.iter().map(|(k, v)| (*k, Ok(v.to_string()))).collect()
    }

    #[test]
    fn paths_follow_the_dots() {
        assert_eq!(path("net.ipv4.route.min_pmtu"), "/proc/sys/net/ipv4/route/min_pmtu");
        assert_eq!(path("net.ipv6.conf.all.forwarding"), "/proc/sys/net/ipv6/conf/all/forwarding");
    }

    #[test]
    fn pmtud_off_is_a_warning_in_every_mode() {
        let all = BTreeMap::new();
        assert_eq!(judge("net.ipv4.ip_no_pmtu_disc", "0", &all).0, Severity::Ok);
        for (mode, word) in [("1", "mode 1"), ("2", "IP_PMTUDISC_DONT"), ("3", "TCP, SCTP")] {
            let (sev, meaning) = judge("net.ipv4.ip_no_pmtu_disc", mode, &all);
            assert_eq!(sev, Severity::Warning, "{mode}");
            assert!(meaning.contains(word), "{mode}: {meaning}");
        }
        assert_eq!(judge("net.ipv4.ip_no_pmtu_disc", "7", &all).0, Severity::Warning);
    }

    #[test]
    fn probing_off_is_information_and_base_mss_says_it_is_unused() {
        let all = values(&[("net.ipv4.tcp_mtu_probing", "0"), ("net.ipv4.tcp_base_mss", "1024")]);
        let (sev, meaning) = judge("net.ipv4.tcp_mtu_probing", "0", &all);
        assert_eq!(sev, Severity::Info);
        assert!(meaning.contains("black hole"), "{meaning}");
        assert!(judge("net.ipv4.tcp_base_mss", "1024", &all).1.contains("unused"));
        let all = values(&[("net.ipv4.tcp_mtu_probing", "1")]);
        assert!(!judge("net.ipv4.tcp_base_mss", "1024", &all).1.contains("unused"));
        assert_eq!(judge("net.ipv4.tcp_mtu_probing", "1", &all).0, Severity::Ok);
        assert!(judge("net.ipv4.tcp_mtu_probing", "2", &all).1.contains("always"));
    }

    #[test]
    fn a_missing_sysctl_is_reported_as_such() {
        let mut all = values(&[("net.ipv4.ip_forward", "1")]);
        all.insert("net.ipv6.route.mtu_expires", Err("No such file or directory (os error 2)".into()));
        let out = judge_all(&all);
        assert_eq!(out.len(), 2);
        let v6 = out.iter().find(|f| f.topic == "sysctl/net.ipv6.route.mtu_expires").unwrap();
        assert_eq!(v6.value, "missing");
        assert!(v6.meaning.contains("not checked"), "{}", v6.meaning);
        let fwd = out.iter().find(|f| f.topic == "sysctl/net.ipv4.ip_forward").unwrap();
        assert!(fwd.meaning.contains("router"), "{}", fwd.meaning);
    }

    #[test]
    fn expiry_names_its_seconds() {
        let (_, meaning) = judge("net.ipv6.route.mtu_expires", "300", &BTreeMap::new());
        assert!(meaning.contains("300 s"), "{meaning}");
    }
}
