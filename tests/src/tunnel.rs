//! The tunnel lab: a userspace UDP tunnel (two `pmtu-tun-relay`s, as
//! wireguard-go or OpenVPN would run) between two routers, so the tests see
//! pmtu on a tun device, an L3 interface with no Ethernet header, in the
//! place such tunnels sit on real routers.
//!
//! ```text
//!  c to-a ──1500── to-c a tun0 ══1400══ tun0 b to-d ──1500── to-b d
//!  10.20.1.1/24    .1.2   10.20.9.1/30   .9.2   10.20.3.1/24    .3.2
//!  fd00:20:1::1    ::2    fd00:20:9::1/126 ::2  fd00:20:3::1    ::2
//!                         a to-b ──1500 (UDP underlay)── to-a b
//!                         10.20.2.1/24, port 51820        .2.2
//! ```
//!
//! The tun's MTU (1400) is below every link's (1500), as a tunnel's always
//! is. In the black-hole variant a and b drop the Frag-Needed and
//! Packet-Too-Big messages they would send, so TCP at MSS 1460 stalls unless
//! the MSS is clamped. In the PTB variant the c—a link is 1300, so a big DF
//! packet from d toward c makes a send a PTB back to d, through the tunnel.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use pmtu_user::lab::{End, Netns, Transfer, link, transfer, unique_prefix};

/// The relay binary: `$PMTU_TUN_RELAY`, else the one cargo built next to
/// the test executable (target/<profile>/pmtu-tun-relay; `cargo test -p
/// pmtu-tests` builds the package's binaries before its tests).
pub fn relay_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PMTU_TUN_RELAY") {
        let p = PathBuf::from(p);
        return std::fs::canonicalize(&p).unwrap_or_else(|e| panic!("PMTU_TUN_RELAY={}: {e}", p.display()));
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/pmtu-tun-relay
    let bin = exe.parent().and_then(|d| d.parent()).map(|d| d.join("pmtu-tun-relay")).expect("target dir");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p pmtu-tests --bins` (cargo test -p pmtu-tests builds it too)",
        bin.display()
    );
    bin
}

/// One running `pmtu-tun-relay`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Relay {
    child: Option<Child>,
    what: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    /// Starts the relay in `ns` and waits until it has attached to the tun
    /// and bound its socket (it says so), or fails with what it printed.
    ///
    /// The relay exits when the thread that started it ends (PDEATHSIG
    /// follows the parent thread): start it on the thread that keeps the
    /// lab, as the tests do, not on a short-lived helper thread.
    pub fn start(ns: &Netns, tun: &str, local: &str, peer: &str) -> anyhow::Result<Self> {
        let bin = relay_bin();
        let bin = bin.to_str().context("relay path is not UTF-8")?;
        let mut cmd = ns.command(bin);
        cmd.args(["--tun", tun, "--local", local, "--peer", peer]);
        let what = format!("pmtu-tun-relay in {} ({local} -> {peer})", ns.name());
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let err = child.stderr.take().context("relay stderr")?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let lines = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("relaying") {
                    let _ = ready_tx.send(());
                }
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
        let mut relay = Self { child: Some(child), what, stderr };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return Ok(relay);
            }
            let exited = relay.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                // Let the reader thread collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                bail!("{} did not start ({:?}): {}", relay.what, exited, relay.stderr_text());
            }
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Whether the relay is still running (it must, for the whole lab).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then the exit status (SIGKILL after `timeout`).
    pub fn stop(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    return child.wait().ok();
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// Which tunnel lab to build.
#[derive(Clone, Copy, Debug)]
pub struct TunnelOptions {
    /// MTU of the c—a link (both ends).
    pub client_mtu: u32,
    /// a and b drop the Frag-Needed / Packet-Too-Big they would send.
    pub black_hole: bool,
}

impl TunnelOptions {
    /// Every link 1500, the tunnel 1400, PTBs dropped: TCP at the
    /// endpoints' MSS stalls in the tunnel unless something clamps it.
    pub const BLACK_HOLE: Self = Self { client_mtu: 1500, black_hole: true };
    /// The c—a link 1300 and PTBs allowed: a packet of 1301..=1400 bytes
    /// from d fits the tunnel, then a answers it with a PTB (MTU 1300) that
    /// crosses the tunnel back to d.
    pub const PTB_ACROSS: Self = Self { client_mtu: 1300, black_hole: false };
}

/// See the module documentation for the layout.
pub struct TunnelLab {
    // Declared first: fields drop in order, so the relays stop before their
    // namespaces are deleted.
    relays: Vec<Relay>,
    pub c: Netns,
    pub a: Netns,
    pub b: Netns,
    pub d: Netns,
    pub opts: TunnelOptions,
}

impl TunnelLab {
    pub const TUN: &'static str = "tun0";
    pub const TUN_MTU: u32 = 1400;
    pub const CLIENT_V4: &'static str = "10.20.1.1";
    pub const CLIENT_V6: &'static str = "fd00:20:1::1";
    pub const SERVER_V4: &'static str = "10.20.3.2";
    pub const SERVER_V6: &'static str = "fd00:20:3::2";
    /// The tunnel's inner addresses (a's end, b's end).
    pub const A_TUN_V4: &'static str = "10.20.9.1";
    pub const A_TUN_V6: &'static str = "fd00:20:9::1";
    pub const B_TUN_V4: &'static str = "10.20.9.2";
    pub const B_TUN_V6: &'static str = "fd00:20:9::2";
    /// a's interface toward c (and its other addresses, which a may use as
    /// the source of the PTBs it sends).
    pub const A_IF_C: &'static str = "to-c";
    pub const A_C_V4: &'static str = "10.20.1.2";
    pub const A_C_V6: &'static str = "fd00:20:1::2";
    pub const C_IF: &'static str = "to-a";
    pub const B_IF_D: &'static str = "to-d";
    pub const D_IF: &'static str = "to-b";
    /// The underlay link a—b, which carries only the relays' UDP.
    pub const A_IF_B: &'static str = "to-b";
    pub const B_IF_A: &'static str = "to-a";
    pub const UNDERLAY_MTU: u32 = 1500;
    pub const PORT: u16 = 51820;

    pub fn build(opts: TunnelOptions) -> anyhow::Result<Self> {
        let prefix = unique_prefix();
        let ns = |role: &str| Netns::create(format!("{prefix}-{role}"));
        let mut lab = Self { relays: Vec::new(), c: ns("c")?, a: ns("a")?, b: ns("b")?, d: ns("d")?, opts };
        let TunnelLab { c, a, b, d, .. } = &lab;
        for ns in [c, a, b, d] {
            // No duplicate address detection, for the link-local addresses
            // too (the links' `nodad` covers only the global ones): while a
            // link-local address is tentative, neighbour discovery on that
            // link waits, and the first IPv6 packet across takes ~2 s.
            // Set before the links exist, which copy `default`.
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        }
        link(
            &End { ns: c, ifname: Self::C_IF, v4: "10.20.1.1/24", v6: "fd00:20:1::1/64" },
            &End { ns: a, ifname: Self::A_IF_C, v4: "10.20.1.2/24", v6: "fd00:20:1::2/64" },
            opts.client_mtu,
        )?;
        link(
            &End { ns: a, ifname: Self::A_IF_B, v4: "10.20.2.1/24", v6: "fd00:20:2::1/64" },
            &End { ns: b, ifname: Self::B_IF_A, v4: "10.20.2.2/24", v6: "fd00:20:2::2/64" },
            Self::UNDERLAY_MTU,
        )?;
        link(
            &End { ns: b, ifname: Self::B_IF_D, v4: "10.20.3.1/24", v6: "fd00:20:3::1/64" },
            &End { ns: d, ifname: Self::D_IF, v4: "10.20.3.2/24", v6: "fd00:20:3::2/64" },
            1500,
        )?;
        for (r, v4, v6) in [(a, "10.20.9.1/30", "fd00:20:9::1/126"), (b, "10.20.9.2/30", "fd00:20:9::2/126")] {
            // A persistent tun for the relay to attach to; it goes with the
            // namespace (tun devices are deleted, not moved to the root
            // namespace, when theirs is).
            r.ip(&["tuntap", "add", "dev", Self::TUN, "mode", "tun"])?;
            r.ip(&["link", "set", Self::TUN, "mtu", &Self::TUN_MTU.to_string(), "up"])?;
            r.ip(&["addr", "add", v4, "dev", Self::TUN])?;
            r.ip(&["-6", "addr", "add", v6, "dev", Self::TUN, "nodad"])?;
            r.sysctl("net.ipv4.ip_forward", "1")?;
            r.sysctl("net.ipv6.conf.all.forwarding", "1")?;
            if opts.black_hole {
                r.run("iptables", &["-A", "OUTPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP"])?;
                r.run("ip6tables", &["-A", "OUTPUT", "-p", "icmpv6", "--icmpv6-type", "packet-too-big", "-j", "DROP"])?;
            }
        }
        let port = Self::PORT;
        // Locals until the lab owns them: on an early return they drop
        // (and stop) before the lab's namespaces do.
        let relay_a = Relay::start(a, Self::TUN, &format!("10.20.2.1:{port}"), &format!("10.20.2.2:{port}"))?;
        let relay_b = Relay::start(b, Self::TUN, &format!("10.20.2.2:{port}"), &format!("10.20.2.1:{port}"))?;
        // Routes over the tun by device: an L3 link has no neighbours.
        a.ip(&["route", "add", "10.20.3.0/24", "dev", Self::TUN])?;
        a.ip(&["-6", "route", "add", "fd00:20:3::/64", "dev", Self::TUN])?;
        b.ip(&["route", "add", "10.20.1.0/24", "dev", Self::TUN])?;
        b.ip(&["-6", "route", "add", "fd00:20:1::/64", "dev", Self::TUN])?;
        c.ip(&["route", "add", "default", "via", "10.20.1.2"])?;
        c.ip(&["-6", "route", "add", "default", "via", "fd00:20:1::2"])?;
        d.ip(&["route", "add", "default", "via", "10.20.3.1"])?;
        d.ip(&["-6", "route", "add", "default", "via", "fd00:20:3::1"])?;
        lab.relays = vec![relay_a, relay_b];
        Ok(lab)
    }

    /// Whether both relays still run, with what they printed otherwise.
    pub fn relays_alive(&mut self) -> Result<(), String> {
        for r in &mut self.relays {
            if !r.running() {
                return Err(format!("{} exited: {}", r.what, r.stderr_text()));
            }
        }
        Ok(())
    }

    /// Stops both relays (SIGTERM) and returns (exit status, stderr) of each.
    pub fn stop_relays(&mut self) -> Vec<(Option<std::process::ExitStatus>, String)> {
        self.relays
            .iter_mut()
            .map(|r| {
                let status = r.stop(Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(50));
                (status, r.stderr_text())
            })
            .collect()
    }

    /// `bytes` from c to d and back over one TCP connection (see
    /// [`pmtu_user::lab::transfer`]).
    pub fn transfer(&self, server: &str, port: u16, bytes: usize, timeout: Duration) -> anyhow::Result<Transfer> {
        transfer(&self.c, &self.d, server, port, bytes, timeout)
    }

    /// The four veth ends the endpoints' traffic crosses outside the tunnel.
    pub fn edge_ifaces(&self) -> [(&Netns, &'static str); 4] {
        [(&self.c, Self::C_IF), (&self.a, Self::A_IF_C), (&self.b, Self::B_IF_D), (&self.d, Self::D_IF)]
    }

    /// `ping -M do` of exactly `size` bytes of IP packet from `ns` to
    /// `target`; returns ping's output whatever its exit status (a PTB
    /// answer makes it "fail").
    pub fn ping(ns: &Netns, target: &str, size: u32, count: u32) -> anyhow::Result<(bool, String)> {
        let v6 = target.contains(':');
        let payload = size - if v6 { 48 } else { 28 };
        let out = ns
            .command("ping")
            .args([if v6 { "-6" } else { "-4" }, "-n", "-c", &count.to_string(), "-i", "0.2", "-W", "2", "-M", "do"])
            .args(["-s", &payload.to_string(), target])
            .stdin(Stdio::null())
            .output()
            .context("running ping")?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    }
}

/// Turns off checksum and segmentation offloads on `iface` in `ns`, so the
/// host computes and verifies full TCP checksums (tcpdump -vv then checks
/// real ones) and every packet on the wire is one segment, as it would be
/// on a physical link.
pub fn offloads_off(ns: &Netns, iface: &str) -> anyhow::Result<()> {
    ns.run("ethtool", &["-K", iface, "rx", "off", "tx", "off", "tso", "off", "gso", "off", "gro", "off"])
        .map(drop)
        .with_context(|| format!("ethtool -K {iface} in {}", ns.name()))
}
