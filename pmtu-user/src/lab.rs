//! Throw-away network labs in namespaces, for `pmtu demo` and the tests.
//!
//! Every namespace gets a name unique to this process and run
//! (`pmtu-<pid>-<n>-<role>`), so labs can run in parallel, and is deleted when
//! its [`Netns`] is dropped, on every exit path. Nothing here touches the root
//! namespace: veth pairs are created inside the namespaces themselves.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A network namespace that is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

fn check(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?} (is iproute2 installed?)"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl Netns {
    pub fn create(name: String) -> anyhow::Result<Self> {
        check(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`, for the caller to add arguments and run.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs a program in the namespace; fails on a non-zero exit.
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = check(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = check(Command::new("ip").args(["-n", &self.name]).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.run("sysctl", &["-qw", &format!("{key}={value}")]).map(drop)
    }
}

impl Netns {
    /// Runs `f` on a new thread that has entered this namespace: sockets it
    /// opens live there. The thread is joined before this returns.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        in_netns(&self.name, f)
    }

    /// Like [`Netns::enter`], but returns at once with the running thread.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<JoinHandle<T>> {
        let file = netns_file(&self.name)?;
        Ok(std::thread::spawn(move || {
            // A failed setns would silently use the wrong namespace: abort the
            // thread instead (its join reports the panic).
            setns(&file).expect("entering the lab namespace");
            f()
        }))
    }
}

fn netns_file(name: &str) -> anyhow::Result<File> {
    File::open(format!("/var/run/netns/{name}")).with_context(|| format!("opening namespace {name}"))
}

fn setns(file: &File) -> std::io::Result<()> {
    // SAFETY: setns(2) on the calling thread with a valid namespace fd.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread inside network namespace `name`.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let file = netns_file(name)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&file).with_context(|| format!("entering namespace {name}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace {name} panicked"))?
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veths (and any XDP/tc programs
        // on them) with it.
        let res = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(res, Ok(s) if s.success()) {
            eprintln!("pmtu lab: could not delete namespace {}; remove it with `ip netns del {}`", self.name, self.name);
        }
    }
}

/// The prefix every lab namespace of this process starts with.
fn process_prefix() -> String {
    format!("pmtu-{}-", std::process::id())
}

/// Deletes this process's lab namespaces when SIGINT, SIGTERM or SIGHUP
/// arrives, then exits (128 + signal). [`Netns`]'s Drop guard covers every
/// return and panic, but not a signal that ends the process; commands that
/// build labs (`pmtu demo`, the soak, the bench) call this first.
pub fn remove_labs_on_signal() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let prefix = process_prefix();
            let listed = Command::new("ip").args(["netns", "list"]).stdin(Stdio::null()).output();
            if let Ok(out) = listed {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let name = line.split_whitespace().next().unwrap_or("");
                    if name.starts_with(&prefix) {
                        let _ = Command::new("ip").args(["netns", "del", name]).stdin(Stdio::null()).status();
                    }
                }
            }
            eprintln!("pmtu: interrupted; lab namespaces removed");
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

/// A unique prefix for this lab's namespaces.
pub fn unique_prefix() -> String {
    format!("{}{}", process_prefix(), NEXT_LAB.fetch_add(1, Ordering::Relaxed))
}

/// One end of a link: namespace, interface name, addresses with prefix length.
pub struct End<'a> {
    pub ns: &'a Netns,
    pub ifname: &'a str,
    pub v4: &'a str,
    pub v6: &'a str,
}

/// A veth pair between two namespaces with one MTU on both ends (a link
/// whose ends disagree is another lab: seed 001, "When PMTU Doesn't Work").
pub fn link(a: &End, b: &End, mtu: u32) -> anyhow::Result<()> {
    a.ns.ip(&[
        "link", "add", a.ifname, "mtu", &mtu.to_string(), "type", "veth", "peer", "name", b.ifname,
        "netns", b.ns.name(), "mtu", &mtu.to_string(),
    ])?;
    for end in [a, b] {
        end.ns.ip(&["addr", "add", end.v4, "dev", end.ifname])?;
        // nodad: the lab is usable at once instead of after ~2 s of DAD.
        end.ns.ip(&["-6", "addr", "add", end.v6, "dev", end.ifname, "nodad"])?;
        end.ns.ip(&["link", "set", end.ifname, "up"])?;
    }
    Ok(())
}

/// The three-hop lab of seed 001: h0 — r1 — r2 — h3, MTUs 1500, 1370, 1350.
///
/// ```text
///  h0 to-r1 ──1500── to-h0 r1 to-r2 ──1370── to-r1 r2 to-h3 ──1350── to-r2 h3
///  192.168.5.1/30   .5.2      192.168.6.1/30   .6.2     192.168.7.1/30    .7.2
///  fd54:54:54:1::1  ::2       fd54:54:54:2::1  ::2      fd54:54:54:3::1   ::2
/// ```
pub struct SeedLab {
    pub h0: Netns,
    pub r1: Netns,
    pub r2: Netns,
    pub h3: Netns,
}

impl SeedLab {
    pub const TARGET_V4: &'static str = "192.168.7.2";
    pub const TARGET_V6: &'static str = "fd54:54:54:3::2";
    /// h0's interface toward r1, and r1's toward h0 and r2.
    pub const H0_IF: &'static str = "to-r1";
    pub const R1_IF_H0: &'static str = "to-h0";
    pub const R1_IF_R2: &'static str = "to-r2";

    pub fn build() -> anyhow::Result<Self> {
        let prefix = unique_prefix();
        let ns = |role: &str| Netns::create(format!("{prefix}-{role}"));
        let lab = Self { h0: ns("h0")?, r1: ns("r1")?, r2: ns("r2")?, h3: ns("h3")? };
        let SeedLab { h0, r1, r2, h3 } = &lab;
        link(
            &End { ns: h0, ifname: "to-r1", v4: "192.168.5.1/30", v6: "fd54:54:54:1::1/64" },
            &End { ns: r1, ifname: "to-h0", v4: "192.168.5.2/30", v6: "fd54:54:54:1::2/64" },
            1500,
        )?;
        link(
            &End { ns: r1, ifname: "to-r2", v4: "192.168.6.1/30", v6: "fd54:54:54:2::1/64" },
            &End { ns: r2, ifname: "to-r1", v4: "192.168.6.2/30", v6: "fd54:54:54:2::2/64" },
            1370,
        )?;
        link(
            &End { ns: r2, ifname: "to-h3", v4: "192.168.7.1/30", v6: "fd54:54:54:3::1/64" },
            &End { ns: h3, ifname: "to-r2", v4: "192.168.7.2/30", v6: "fd54:54:54:3::2/64" },
            1350,
        )?;
        for r in [r1, r2] {
            r.sysctl("net.ipv4.ip_forward", "1")?;
            r.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        }
        h0.ip(&["route", "add", "default", "via", "192.168.5.2"])?;
        h0.ip(&["-6", "route", "add", "default", "via", "fd54:54:54:1::2"])?;
        r1.ip(&["route", "add", "192.168.7.0/30", "via", "192.168.6.2"])?;
        r1.ip(&["-6", "route", "add", "fd54:54:54:3::/64", "via", "fd54:54:54:2::2"])?;
        r2.ip(&["route", "add", "default", "via", "192.168.6.1"])?;
        r2.ip(&["-6", "route", "add", "default", "via", "fd54:54:54:2::1"])?;
        h3.ip(&["route", "add", "default", "via", "192.168.7.1"])?;
        h3.ip(&["-6", "route", "add", "default", "via", "fd54:54:54:3::1"])?;
        Ok(lab)
    }

    /// One don't-fragment echo of exactly `size` bytes of IP packet from h0,
    /// as `ping -M do -s` sends it. Returns ping's output (it "fails" when a
    /// router answers Packet-Too-Big, which is the point).
    pub fn probe(&self, target: &str, size: u32) -> anyhow::Result<String> {
        let v6 = target.contains(':');
        let payload = size - if v6 { 48 } else { 28 };
        let out = self
            .h0
            .command("ping")
            .args([
                if v6 { "-6" } else { "-4" },
                "-n",
                "-c1",
                "-W3",
                "-M",
                "do",
                "-s",
                &payload.to_string(),
                target,
            ])
            .stdin(Stdio::null())
            .output()
            .context("running ping (install iputils-ping: `cargo xtask build` does)")?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok(text)
    }

    /// Makes h0 and h3 advertise the MSS of a 1500-byte link (route
    /// `advmss` 1460 / 1440) over their narrower paths, as hosts behind
    /// other links do: what r1 clamps then shows in both directions.
    pub fn advertise_large_mss(&self) -> anyhow::Result<()> {
        for (ns, v4_gw, v6_gw) in [(&self.h0, "192.168.5.2", "fd54:54:54:1::2"), (&self.h3, "192.168.7.1", "fd54:54:54:3::1")] {
            ns.ip(&["route", "replace", "default", "via", v4_gw, "advmss", "1460"])?;
            ns.ip(&["-6", "route", "replace", "default", "via", v6_gw, "advmss", "1440"])?;
        }
        Ok(())
    }

    /// The kernel's own answer in h0: `ip route get TARGET`.
    pub fn route_get(&self, target: &str) -> anyhow::Result<String> {
        let family = if target.contains(':') { "-6" } else { "-4" };
        self.h0.ip(&[family, "route", "get", target])
    }
}

/// The black-hole lab of seeds 002/003: c0 — r1 — r2 — s3, with a 1400-byte
/// link in the middle and both routers dropping the Frag-Needed and
/// Packet-Too-Big messages they would send.
///
/// ```text
///  c0 to-r1 ──1500── to-c0 r1 to-r2 ──1400── to-r1 r2 to-s3 ──1500── to-r2 s3
///  10.1.1.1/24      .1.2      10.1.2.1/24      .2.2     10.1.3.1/24       .3.2
///  fd00:1:1::1      ::2       fd00:1:2::1      ::2      fd00:1:3::1       ::2
/// ```
pub struct BlackHoleLab {
    pub c0: Netns,
    pub r1: Netns,
    pub r2: Netns,
    pub s3: Netns,
}

impl BlackHoleLab {
    pub const SERVER_V4: &'static str = "10.1.3.2";
    pub const SERVER_V6: &'static str = "fd00:1:3::2";
    pub const CLIENT_V4: &'static str = "10.1.1.1";
    pub const CLIENT_V6: &'static str = "fd00:1:1::1";
    pub const R1_IF_C0: &'static str = "to-c0";
    pub const R1_IF_R2: &'static str = "to-r2";
    pub const C0_IF: &'static str = "to-r1";
    pub const S3_IF: &'static str = "to-r2";
    pub const MIDDLE_MTU: u32 = 1400;

    pub fn build() -> anyhow::Result<Self> {
        let prefix = unique_prefix();
        let ns = |role: &str| Netns::create(format!("{prefix}-{role}"));
        let lab = Self { c0: ns("c0")?, r1: ns("r1")?, r2: ns("r2")?, s3: ns("s3")? };
        let BlackHoleLab { c0, r1, r2, s3 } = &lab;
        link(
            &End { ns: c0, ifname: "to-r1", v4: "10.1.1.1/24", v6: "fd00:1:1::1/64" },
            &End { ns: r1, ifname: "to-c0", v4: "10.1.1.2/24", v6: "fd00:1:1::2/64" },
            1500,
        )?;
        link(
            &End { ns: r1, ifname: "to-r2", v4: "10.1.2.1/24", v6: "fd00:1:2::1/64" },
            &End { ns: r2, ifname: "to-r1", v4: "10.1.2.2/24", v6: "fd00:1:2::2/64" },
            Self::MIDDLE_MTU,
        )?;
        link(
            &End { ns: r2, ifname: "to-s3", v4: "10.1.3.1/24", v6: "fd00:1:3::1/64" },
            &End { ns: s3, ifname: "to-r2", v4: "10.1.3.2/24", v6: "fd00:1:3::2/64" },
            1500,
        )?;
        for r in [r1, r2] {
            r.sysctl("net.ipv4.ip_forward", "1")?;
            r.sysctl("net.ipv6.conf.all.forwarding", "1")?;
            // The black hole: the routers never tell anyone a packet was too big.
            r.run("iptables", &["-A", "OUTPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP"])?;
            r.run("ip6tables", &["-A", "OUTPUT", "-p", "icmpv6", "--icmpv6-type", "packet-too-big", "-j", "DROP"])?;
        }
        c0.ip(&["route", "add", "default", "via", "10.1.1.2"])?;
        c0.ip(&["-6", "route", "add", "default", "via", "fd00:1:1::2"])?;
        r1.ip(&["route", "add", "10.1.3.0/24", "via", "10.1.2.2"])?;
        r1.ip(&["-6", "route", "add", "fd00:1:3::/64", "via", "fd00:1:2::2"])?;
        r2.ip(&["route", "add", "10.1.1.0/24", "via", "10.1.2.1"])?;
        r2.ip(&["-6", "route", "add", "fd00:1:1::/64", "via", "fd00:1:2::1"])?;
        s3.ip(&["route", "add", "default", "via", "10.1.3.1"])?;
        s3.ip(&["-6", "route", "add", "default", "via", "fd00:1:3::1"])?;
        Ok(lab)
    }

    /// Adds iptables' own clamping rule on r1 (the reference pmtu is
    /// compared with): `-t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN
    /// -j TCPMSS --clamp-mss-to-pmtu`, for IPv4 and IPv6.
    pub fn iptables_clamp_on_r1(&self) -> anyhow::Result<()> {
        for tool in ["iptables", "ip6tables"] {
            self.r1.run(
                tool,
                &["-t", "mangle", "-A", "FORWARD", "-p", "tcp", "--tcp-flags", "SYN,RST", "SYN", "-j", "TCPMSS", "--clamp-mss-to-pmtu"],
            )?;
        }
        Ok(())
    }

    pub fn iptables_unclamp_on_r1(&self) -> anyhow::Result<()> {
        for tool in ["iptables", "ip6tables"] {
            self.r1.run(tool, &["-t", "mangle", "-F", "FORWARD"])?;
        }
        Ok(())
    }

    /// Sends `bytes` from c0 to s3 and `bytes` back over one TCP connection
    /// to `server` (an address of s3), giving up `timeout` after it starts.
    pub fn transfer(&self, server: &str, port: u16, bytes: usize, timeout: Duration) -> anyhow::Result<Transfer> {
        transfer(&self.c0, &self.s3, server, port, bytes, timeout)
    }
}

/// Sends `bytes` from a client in namespace `client` to a listener in
/// `server_ns` and `bytes` back over one TCP connection to `server` (an
/// address of `server_ns`), giving up `timeout` after it starts. Every lab's
/// "does TCP get through" check: a black hole stalls it.
pub fn transfer(
    client: &Netns,
    server_ns: &Netns,
    server: &str,
    port: u16,
    bytes: usize,
    timeout: Duration,
) -> anyhow::Result<Transfer> {
    let addr: SocketAddr = SocketAddr::new(server.parse().context("server address")?, port);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let ns_name = server_ns.name().to_string();
    let server_thread = server_ns.spawn(move || -> anyhow::Result<usize> {
        let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr} in {ns_name}"))?;
        ready_tx.send(()).ok();
        let (mut conn, _) = listener.accept().context("accept in the server namespace")?;
        let deadline = Instant::now() + timeout;
        let got = read_n(&mut conn, bytes, deadline);
        if got == bytes {
            write_n(&mut conn, bytes, deadline);
        }
        Ok(got)
    })?;
    ready_rx.recv_timeout(Duration::from_secs(5)).context("the server did not start")?;
    let started = Instant::now();
    let client = client.enter(move || -> anyhow::Result<(usize, usize)> {
        let deadline = Instant::now() + timeout;
        let mut conn = TcpStream::connect_timeout(&addr, timeout).context("connect from the client namespace")?;
        let sent = write_n(&mut conn, bytes, deadline);
        let received = if sent == bytes { read_n(&mut conn, bytes, deadline) } else { 0 };
        Ok((sent, received))
    })??;
    let elapsed = started.elapsed();
    // The server gives up on its own timeout; don't wait for it otherwise.
    let server_got = if client.0 == bytes && client.1 == bytes {
        server_thread.join().map_err(|_| anyhow::anyhow!("server thread panicked"))??
    } else {
        0
    };
    Ok(Transfer { bytes, sent: client.0, server_got, received: client.1, elapsed })
}

/// Result of [`transfer`].
#[derive(Debug)]
pub struct Transfer {
    pub bytes: usize,
    /// Bytes c0 wrote before its timeout, s3 read, and c0 read back.
    pub sent: usize,
    pub server_got: usize,
    pub received: usize,
    pub elapsed: Duration,
}

impl Transfer {
    pub fn completed(&self) -> bool {
        self.sent == self.bytes && self.server_got == self.bytes && self.received == self.bytes
    }
}

/// Time left until `deadline`, or `None` when it has passed.
fn left(deadline: Instant) -> Option<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    (!d.is_zero()).then_some(d)
}

/// Writes up to `n` bytes before `deadline`; returns how many went out.
fn write_n(conn: &mut TcpStream, n: usize, deadline: Instant) -> usize {
    let chunk = [0x5a_u8; 16 * 1024];
    let mut done = 0;
    while done < n {
        let Some(t) = left(deadline) else { break };
        if conn.set_write_timeout(Some(t)).is_err() {
            break;
        }
        match conn.write(&chunk[..chunk.len().min(n - done)]) {
            Ok(0) | Err(_) => break,
            Ok(k) => done += k,
        }
    }
    done
}

/// Reads up to `n` bytes before `deadline`; returns how many came in.
fn read_n(conn: &mut TcpStream, n: usize, deadline: Instant) -> usize {
    let mut buf = [0u8; 16 * 1024];
    let mut done = 0;
    while done < n {
        let Some(t) = left(deadline) else { break };
        if conn.set_read_timeout(Some(t)).is_err() {
            break;
        }
        let want = buf.len().min(n - done);
        match conn.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(k) => done += k,
        }
    }
    done
}

/// The cached PMTU in an `ip route get` answer (`... mtu N ...`).
pub fn cached_mtu(route_get: &str) -> Option<u32> {
    let words: Vec<&str> = route_get.split_whitespace().collect();
    words.windows(2).find(|w| w[0] == "mtu").and_then(|w| w[1].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::cached_mtu;

    #[test]
    fn reads_the_cached_mtu() {
        let v4 = "192.168.7.2 via 192.168.5.2 dev to-r1 src 192.168.5.1 uid 0 \n    cache expires 381sec mtu 1350 \n";
        assert_eq!(cached_mtu(v4), Some(1350));
        assert_eq!(cached_mtu("192.168.7.2 via 192.168.5.2 dev to-r1 src 192.168.5.1 uid 0\n    cache\n"), None);
    }
}
