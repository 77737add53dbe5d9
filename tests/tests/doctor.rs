//! `pmtu doctor` in labs built for it: the black-hole lab's router r1
//! (iptables and ip6tables drop the Frag-Needed and Packet-Too-Big it
//! would send), a veth pair whose ends disagree, and VXLANs too large for
//! their underlay.

use std::process::Output;

use pmtu_tests::{procs::pmtu_in, require_root};
use pmtu_user::lab::{BlackHoleLab, Netns, unique_prefix};
use serde_json::Value;

/// Runs `pmtu doctor ARGS` in `ns`; it must exit 0 (warnings or not).
fn doctor(ns: &Netns, args: &[&str]) -> Output {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    let out = pmtu_in(ns, &pmtu_tests::pmtu_bin(), &all).output().expect("running pmtu doctor");
    assert!(
        out.status.success(),
        "pmtu doctor {args:?} in {}: {}\nstdout:\n{}\nstderr:\n{}",
        ns.name(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `pmtu doctor --json` in `ns`: its findings.
fn findings(ns: &Netns) -> Vec<Value> {
    let out = doctor(ns, &["--json"]);
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(text.lines().count(), 1, "one JSON object: {text}");
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let findings = report["findings"].as_array().expect("findings").clone();
    let warnings = findings.iter().filter(|f| f["severity"] == "warning").count();
    assert_eq!(report["warnings"].as_u64(), Some(warnings as u64), "{report:#}");
    for f in &findings {
        assert!(matches!(f["severity"].as_str(), Some("ok" | "info" | "warning")), "{f}");
        for key in ["topic", "value", "meaning"] {
            assert!(f[key].as_str().is_some_and(|s| !s.is_empty()), "{key} in {f}");
        }
    }
    findings
}

/// The one finding under `topic` (and whose value contains `needle`).
fn find<'a>(fs: &'a [Value], topic: &str, needle: &str) -> &'a Value {
    let hits: Vec<&Value> =
        fs.iter().filter(|f| f["topic"] == topic && f["value"].as_str().is_some_and(|v| v.contains(needle))).collect();
    assert_eq!(hits.len(), 1, "{topic} / {needle:?}: {hits:#?}\nall: {fs:#?}");
    hits[0]
}

fn severity(f: &Value) -> &str {
    f["severity"].as_str().unwrap_or("")
}

#[test]
fn black_hole_lab_r1_drops_frag_needed_and_packet_too_big() {
    if !require_root("black_hole_lab_r1_drops_frag_needed_and_packet_too_big") {
        return;
    }
    let lab = BlackHoleLab::build().unwrap();
    let fs = findings(&lab.r1);
    let v4 = find(&fs, "firewall/iptables", "--icmp-type 3/4 -j DROP");
    assert_eq!(severity(v4), "warning", "{v4}");
    assert_eq!(v4["value"], "filter OUTPUT: -A OUTPUT -p icmp -m icmp --icmp-type 3/4 -j DROP");
    assert!(v4["meaning"].as_str().unwrap().contains("Frag-Needed"), "{v4}");
    let v6 = find(&fs, "firewall/ip6tables", "--icmpv6-type 2 -j DROP");
    assert_eq!(severity(v6), "warning", "{v6}");
    assert!(v6["meaning"].as_str().unwrap().contains("Packet-Too-Big"), "{v6}");
    // Only those two firewall warnings: iptables-nft's tables are not
    // reported a second time from nft's view of them.
    let firewall: Vec<&Value> =
        fs.iter().filter(|f| f["topic"].as_str().is_some_and(|t| t.starts_with("firewall/"))).collect();
    assert_eq!(firewall.iter().filter(|f| severity(f) == "warning").count(), 2, "{firewall:#?}");
    assert_eq!(severity(find(&fs, "firewall/nft", "")), "ok", "{firewall:#?}");
    // A router, with its veths' peers in other namespaces.
    assert!(find(&fs, "sysctl/net.ipv4.ip_forward", "1")["meaning"].as_str().unwrap().contains("router"));
    assert_eq!(find(&fs, "sysctl/net.ipv6.conf.all.forwarding", "")["value"], "1");
    assert_eq!(find(&fs, "sysctl/net.ipv4.ip_no_pmtu_disc", "")["value"], "0");
    let veth = find(&fs, "mtu/veth/to-r2", "");
    assert_eq!(severity(veth), "info");
    assert!(veth["meaning"].as_str().unwrap().contains("another network namespace"), "{veth}");
    assert_eq!(find(&fs, "link/to-r2", "")["value"], "mtu 1400");
    let xdp = find(&fs, "xdp/to-r2", "");
    assert!(xdp["value"].as_str().unwrap().starts_with("native, driver veth"), "{xdp}");
    assert_eq!(severity(find(&fs, "kernel/ring_buf", "")), "ok");
    find(&fs, "kernel/tcx", "");
    find(&fs, "kernel/btf", "");
    assert_eq!(severity(find(&fs, "hooks", "none")), "ok");

    // The text form: one line a finding, the warnings marked.
    let out = doctor(&lab.r1, &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    let warnings: Vec<&str> = text.lines().filter(|l| l.starts_with("WARNING ")).collect();
    assert_eq!(warnings.len(), 2, "{text}");
    assert!(
        warnings[0].contains("firewall/iptables: filter OUTPUT: -A OUTPUT -p icmp -m icmp --icmp-type 3/4 -j DROP"),
        "{text}"
    );
    assert_eq!(text.lines().count(), fs.len() + 1, "{text}");
    assert!(text.lines().last().unwrap().ends_with(", 2 warnings"), "{text}");
}

#[test]
fn veth_ends_with_different_mtus_are_a_mismatch() {
    if !require_root("veth_ends_with_different_mtus_are_a_mismatch") {
        return;
    }
    let ns = Netns::create(format!("{}-veth", unique_prefix())).unwrap();
    ns.ip(&["link", "add", "big", "mtu", "1500", "type", "veth", "peer", "name", "small", "mtu", "1400"]).unwrap();
    ns.ip(&["link", "add", "same0", "mtu", "1500", "type", "veth", "peer", "name", "same1", "mtu", "1500"]).unwrap();
    let fs = findings(&ns);
    // Each pair once, named after its end with the lower ifindex (`ip
    // link add` creates the peer first).
    let pair: Vec<&Value> =
        fs.iter().filter(|f| matches!(f["topic"].as_str(), Some("mtu/veth/big" | "mtu/veth/small"))).collect();
    assert_eq!(pair.len(), 1, "{fs:#?}");
    let f = pair[0];
    assert_eq!(severity(f), "warning", "{f}");
    let value = f["value"].as_str().unwrap();
    assert!(value.contains("big mtu 1500") && value.contains("small mtu 1400") && value.contains(" <-> "), "{f}");
    assert!(f["meaning"].as_str().unwrap().contains("dropped by small"), "{f}");
    let same: Vec<&Value> =
        fs.iter().filter(|f| matches!(f["topic"].as_str(), Some("mtu/veth/same0" | "mtu/veth/same1"))).collect();
    assert_eq!(same.len(), 1, "{fs:#?}");
    assert_eq!(severity(same[0]), "ok");
    // A namespace without rules: nothing dropped, nothing missing.
    for tool in ["iptables", "ip6tables", "nft"] {
        assert_eq!(severity(find(&fs, &format!("firewall/{tool}"), "")), "ok", "{tool}");
    }
}

#[test]
fn vxlan_as_large_as_its_underlay_is_flagged() {
    if !require_root("vxlan_as_large_as_its_underlay_is_flagged") {
        return;
    }
    let ns = Netns::create(format!("{}-vxlan", unique_prefix())).unwrap();
    // The underlay: a veth pair, u0 addressed, its peer holding the remote.
    ns.ip(&["link", "add", "u0", "mtu", "1600", "type", "veth", "peer", "name", "u1", "mtu", "1600"]).unwrap();
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "u0"]).unwrap();
    for dev in ["u0", "u1"] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    // Bound to u0: the kernel refuses an MTU over u0's less 50 at creation,
    // but not u0 shrinking under it afterwards.
    ns.ip(&[
        "link",
        "add",
        "vx-dev",
        "mtu",
        "1500",
        "type",
        "vxlan",
        "id",
        "42",
        "dev",
        "u0",
        "remote",
        "10.77.0.2",
        "dstport",
        "4789",
    ])
    .unwrap();
    ns.ip(&[
        "link",
        "add",
        "vx-fits",
        "type",
        "vxlan",
        "id",
        "44",
        "dev",
        "u0",
        "remote",
        "10.77.0.2",
        "dstport",
        "4789",
    ])
    .unwrap();
    ns.ip(&["link", "set", "u0", "mtu", "1500"]).unwrap();
    ns.ip(&["link", "set", "u1", "mtu", "1500"]).unwrap();
    // No device: the kernel gives it 1500, whatever the route to its remote.
    ns.ip(&["link", "add", "vx-route", "type", "vxlan", "id", "43", "remote", "10.77.0.2", "dstport", "4789"]).unwrap();
    let fs = findings(&ns);
    let f = find(&fs, "mtu/tunnel/vx-dev", "");
    assert_eq!(severity(f), "warning", "{f}");
    assert_eq!(f["value"], "vx-dev mtu 1500 + 50 (vxlan over IPv4) bound to u0 mtu 1500");
    assert!(f["meaning"].as_str().unwrap().contains("lower vx-dev to 1450"), "{f}");
    let f = find(&fs, "mtu/tunnel/vx-route", "");
    assert_eq!(severity(f), "warning", "{f}");
    assert_eq!(f["value"], "vx-route mtu 1500 + 50 (vxlan over IPv4) routed to its remote via u0 mtu 1500");
    // Created over u0 at 1600: 1550, which no longer fits either.
    let f = find(&fs, "mtu/tunnel/vx-fits", "");
    assert_eq!(f["value"], "vx-fits mtu 1550 + 50 (vxlan over IPv4) bound to u0 mtu 1500");
    assert_eq!(severity(f), "warning", "{f}");
    ns.ip(&["link", "set", "vx-fits", "mtu", "1450"]).unwrap();
    let fs = findings(&ns);
    let f = find(&fs, "mtu/tunnel/vx-fits", "");
    assert_eq!(severity(f), "ok", "{f}");
    assert!(f["meaning"].as_str().unwrap().contains("1450 + 50 = 1500 fits 1500"), "{f}");
    assert!(find(&fs, "xdp/vx-route", "")["value"].as_str().unwrap().starts_with("generic only"));
}
