//! Child processes of a test: `pmtu trace` and `tcpdump` inside a namespace,
//! stopped with a signal, killed on drop so no test leaves one running.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use pmtu_user::lab::Netns;

/// A running child whose stdout is collected and whose stderr is watched.
pub struct Proc {
    child: Option<Child>,
    what: String,
    stdout: Option<JoinHandle<Vec<String>>>,
    stderr_lines: Receiver<String>,
    stderr_seen: Vec<String>,
}

pub struct Finished {
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Proc {
    pub fn spawn(mut cmd: Command, what: &str) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let stdout = std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child: Some(child), what: what.into(), stdout: Some(stdout), stderr_lines: rx, stderr_seen: Vec::new() }
    }

    /// Waits until a stderr line contains `needle` (panics after `timeout`).
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.stderr_seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(e) => panic!(
                    "{}: no {needle:?} on stderr ({}); stderr so far:\n{}",
                    self.what,
                    match e {
                        mpsc::RecvTimeoutError::Timeout => format!("waited {timeout:?}"),
                        mpsc::RecvTimeoutError::Disconnected => "it closed stderr".to_string(),
                    },
                    self.stderr_seen.join("\n")
                ),
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the child to exit by itself (panics after `timeout`).
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let mut child = self.child.take().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within {timeout:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let mut stderr = std::mem::take(&mut self.stderr_seen);
        // The reader thread ends at EOF, after the child exited.
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_secs(2)) {
            stderr.push(line);
        }
        Finished { pid, status, stdout, stderr }
    }

    pub fn stop(self, sig: i32, timeout: Duration) -> Finished {
        self.signal(sig);
        self.wait(timeout)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Resident set size of process `pid` in KiB (`VmRSS` of /proc/PID/status),
/// 0 if it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Runs a scapy script in `ns`. Debian's python3-scapy serves
/// /usr/bin/python3, not a python3 that may come earlier on PATH.
pub fn scapy(ns: &Netns, script: &str) {
    ns.run("/usr/bin/python3", &["-c", &format!("from scapy.all import *\n{script}")])
        .unwrap_or_else(|e| panic!("scapy in {}: {e:#}", ns.name()));
}

/// `pmtu ARGS` inside `ns`.
pub fn pmtu_in(ns: &Netns, bin: &Path, args: &[&str]) -> Command {
    let mut cmd = ns.command(bin.to_str().unwrap());
    cmd.args(args);
    cmd
}

/// Starts `pmtu trace ARGS` in `ns` and waits until it says it is attached.
pub fn start_trace(ns: &Netns, args: &[&str]) -> Proc {
    let mut all = vec!["trace"];
    all.extend_from_slice(args);
    let mut p = Proc::spawn(pmtu_in(ns, &crate::pmtu_bin(), &all), &format!("pmtu {}", all.join(" ")));
    p.wait_for_stderr("attached to", Duration::from_secs(30));
    p
}

/// tcpdump on `iface` in `ns`, line-buffered, started and listening.
pub fn start_capture(ns: &Netns, iface: &str, filter: &str) -> Proc {
    start_capture_with(ns, iface, &[], filter)
}

/// [`start_capture`] with extra tcpdump flags (e.g. `-vv`, which verifies
/// checksums and prints `(correct)` or `(incorrect -> 0x...)`).
pub fn start_capture_with(ns: &Netns, iface: &str, flags: &[&str], filter: &str) -> Proc {
    let mut cmd = ns.command("tcpdump");
    cmd.args(["-n", "-l", "-U"]).args(flags).args(["-i", iface, filter]);
    let mut p = Proc::spawn(cmd, &format!("tcpdump -i {iface} {filter}"));
    p.wait_for_stderr("listening on", Duration::from_secs(20));
    p
}
