//! What the tests of `pmtu run` share: a scratch directory with a private
//! BPF filesystem for the daemon's pins, and the control-socket client.

use std::{path::PathBuf, process::Command};

use serde_json::Value;

/// A private BPF filesystem and a scratch directory for one test: the
/// daemon's pins, control socket, config and pcap. Removed on drop (after
/// `pmtu detach`, in case the test failed half way).
pub struct Scratch {
    pub dir: PathBuf,
    bpffs: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pmtu-{tag}-{}-{}", std::process::id(), pmtu_user::lab::unique_prefix()));
        let bpffs = dir.join("bpffs");
        std::fs::create_dir_all(&bpffs).unwrap();
        // A bpffs of its own (a mount in the root mount namespace, visible
        // inside `ip netns exec`, which remounts only /sys): the host's
        // /sys/fs/bpf is never touched.
        let ok = Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs).status().unwrap().success();
        assert!(ok, "mounting a bpffs on {}", bpffs.display());
        Self { dir, bpffs }
    }

    pub fn pins(&self) -> PathBuf {
        self.bpffs.join("pmtu")
    }

    pub fn control(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("pmtu.toml")
    }

    pub fn pcap(&self) -> PathBuf {
        self.dir.join("ptb.pcap")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let bin = crate::pmtu_bin();
        let detached = Command::new(&bin)
            .arg("detach")
            .arg("--pin-path")
            .arg(self.pins())
            .arg("--control")
            .arg(self.control())
            .output();
        if let Err(e) = detached {
            eprintln!("pmtu detach: {e}");
        }
        let umount = Command::new("umount").arg(&self.bpffs).status();
        if !umount.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("umount {}: {umount:?}", self.bpffs.display());
        }
        if std::env::var_os("PMTU_KEEP_SCRATCH").is_some() { return; }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        }
    }
}

/// `pmtu ARGS --control SOCKET` from the root namespace (the socket is a
/// file: the client needs no namespace).
pub fn client(s: &Scratch, args: &[&str]) -> std::process::Output {
    Command::new(crate::pmtu_bin()).args(args).arg("--control").arg(s.control()).output().unwrap()
}

pub fn client_json(s: &Scratch, args: &[&str]) -> Value {
    let out = client(s, args);
    assert!(out.status.success(), "pmtu {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().expect("one JSON line")).unwrap_or_else(|e| panic!("{e}: {text}"))
}
