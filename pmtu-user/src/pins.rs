//! pmtu's pinned state on a BPF filesystem: what `pmtu run` leaves in the
//! kernel so that clamping outlives the daemon (even `kill -9`), what the
//! next `pmtu run` adopts, and what `pmtu detach` removes.
//!
//! Layout, under the pin path (default /sys/fs/bpf/pmtu):
//!
//! ```text
//! abi-<16 hex>/           one per eBPF object: the stamp is a hash of the
//!   maps/<MAP>            object pmtu embeds, so a daemon only reuses maps
//!   progs/<program>       and programs built from the very same object
//!   links/<ifindex>-<program>
//! ```
//!
//! A link pinned here stays attached with no process holding it; removing
//! its pin (and closing the last descriptor) detaches it. A daemon with
//! another stamp does not reuse the maps (their layout may differ): it moves
//! each link to its own programs atomically (BPF_LINK_UPDATE), then removes
//! the old directory.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};

/// statfs f_type of a BPF filesystem (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where bpffs is conventionally mounted.
const BPF_FS_ROOT: &str = "/sys/fs/bpf";

/// FNV-1a, 64 bits: a stable stamp (std's hashers may change between Rust
/// releases, and two pmtu builds must agree on a stamp for the same object).
pub fn stamp(object: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in object {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The directory name for a stamp.
pub fn abi_dir_name(stamp: u64) -> String {
    format!("abi-{stamp:016x}")
}

/// Filesystem type of `path` (statfs f_type).
fn fs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: an all-zero statfs is a valid buffer for statfs to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid, writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, other widths elsewhere
    Ok(st.f_type as i64)
}

/// The nearest existing ancestor of `path` (itself included).
fn existing_ancestor(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

/// Mounts a BPF filesystem on /sys/fs/bpf (as systemd does at boot), for a
/// host where nothing did.
fn mount_bpffs() -> anyhow::Result<()> {
    let target = CString::new(BPF_FS_ROOT).map_err(|e| anyhow!(e))?;
    let fstype = CString::new("bpf").map_err(|e| anyhow!(e))?;
    let data = CString::new("mode=0700").map_err(|e| anyhow!(e))?;
    // SAFETY: every pointer is a valid NUL-terminated string; flags 0.
    let rc = unsafe {
        libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("mounting a BPF filesystem on /sys/fs/bpf");
    }
    Ok(())
}

/// Checks that `pin_path` is (or will be, once created) on a BPF filesystem,
/// mounting one on /sys/fs/bpf when the path is under it and nothing is
/// mounted there. Anything else is an error that names the path: pinning
/// works nowhere else.
pub fn ensure_bpffs(pin_path: &Path) -> anyhow::Result<()> {
    if !pin_path.is_absolute() {
        bail!("pin path {}: must be absolute", pin_path.display());
    }
    let Some(existing) = existing_ancestor(pin_path) else {
        bail!("pin path {}: no part of it exists", pin_path.display());
    };
    let t = fs_type(existing).with_context(|| format!("statfs {}", existing.display()))?;
    if t == BPF_FS_MAGIC {
        return Ok(());
    }
    let root = Path::new(BPF_FS_ROOT);
    if pin_path.starts_with(root) && existing.starts_with(root) && existing == root {
        mount_bpffs()?;
        if fs_type(root).ok() == Some(BPF_FS_MAGIC) {
            return Ok(());
        }
    }
    bail!(
        "pin path {}: {} is not on a BPF filesystem (bpffs); use a directory under /sys/fs/bpf, \
         or mount one: `mount -t bpf bpf DIR`",
        pin_path.display(),
        existing.display()
    )
}

/// One ABI directory's paths.
#[derive(Clone, Debug)]
pub struct AbiDir {
    pub root: PathBuf,
}

impl AbiDir {
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }
    pub fn progs(&self) -> PathBuf {
        self.root.join("progs")
    }
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }
    pub fn prog(&self, name: &str) -> PathBuf {
        self.progs().join(name)
    }
    pub fn link(&self, ifindex: u32, program: &str) -> PathBuf {
        self.links().join(format!("{ifindex}-{program}"))
    }

    /// Creates the directories (mode 0700: only root reads pinned maps).
    pub fn create(&self) -> anyhow::Result<()> {
        for dir in [self.maps(), self.progs(), self.links()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }

    /// The pinned links: (ifindex, program name, path).
    pub fn list_links(&self) -> anyhow::Result<Vec<(u32, String, PathBuf)>> {
        let mut out = Vec::new();
        let dir = self.links();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((index, prog)) = name.split_once('-')
                && let Ok(index) = index.parse::<u32>()
            {
                out.push((index, prog.to_string(), entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The whole pin path: every ABI directory in it.
#[derive(Clone, Debug)]
pub struct PinRoot {
    pub path: PathBuf,
}

impl PinRoot {
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_path_buf() }
    }

    pub fn abi(&self, stamp: u64) -> AbiDir {
        AbiDir { root: self.path.join(abi_dir_name(stamp)) }
    }

    /// Every ABI directory present (none if the pin path does not exist).
    pub fn abi_dirs(&self) -> anyhow::Result<Vec<AbiDir>> {
        let entries = match std::fs::read_dir(&self.path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.path.display())),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", self.path.display()))?;
            if entry.file_name().to_string_lossy().starts_with("abi-") {
                out.push(AbiDir { root: entry.path() });
            }
        }
        out.sort_by(|a, b| a.root.cmp(&b.root));
        Ok(out)
    }
}

/// Removes one pin (a missing one is no error). Removing a link's last pin
/// with no descriptor open detaches it; a map's or program's frees it once
/// nothing else refers to it.
pub fn unpin(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing pin {}", path.display())),
    }
}

/// What [`remove_abi_dir`] removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub links: Vec<String>,
    pub programs: usize,
    pub maps: usize,
}

/// Removes an ABI directory: links first (that detaches them), then
/// programs and maps, then the directories.
pub fn remove_abi_dir(dir: &AbiDir) -> anyhow::Result<Removed> {
    let mut removed = Removed::default();
    for (_, _, path) in dir.list_links()? {
        if unpin(&path)? {
            removed.links.push(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        }
    }
    for (sub, count) in [(dir.progs(), &mut removed.programs), (dir.maps(), &mut removed.maps)] {
        let entries = match std::fs::read_dir(&sub) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", sub.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", sub.display()))?;
            if unpin(&entry.path())? {
                *count += 1;
            }
        }
    }
    for sub in [dir.links(), dir.progs(), dir.maps(), dir.root.clone()] {
        match std::fs::remove_dir(&sub) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", sub.display())),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_is_stable_and_sensitive() {
        // FNV-1a test vectors.
        assert_eq!(stamp(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stamp(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(stamp(b"pmtu0"), stamp(b"pmtu1"));
        assert_eq!(abi_dir_name(0xab), "abi-00000000000000ab");
    }

    #[test]
    fn link_names_round_trip() {
        let dir = AbiDir { root: std::env::temp_dir().join(format!("pmtu-pins-test-{}", std::process::id())) };
        std::fs::create_dir_all(dir.links()).unwrap();
        std::fs::write(dir.link(7, "pmtu_clamp_tc_ingress"), b"").unwrap();
        std::fs::write(dir.links().join("junk"), b"").unwrap();
        let links = dir.list_links().unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!((links[0].0, links[0].1.as_str()), (7, "pmtu_clamp_tc_ingress"));
        let removed = remove_abi_dir(&AbiDir { root: dir.root.clone() });
        // "junk" is not a pin pmtu knows: the directory stays and says so.
        assert!(removed.is_err());
        std::fs::remove_dir_all(&dir.root).unwrap();
    }

    #[test]
    fn a_pin_path_off_bpffs_is_refused_by_name() {
        let err = ensure_bpffs(&std::env::temp_dir().join("pmtu-not-bpffs")).unwrap_err().to_string();
        assert!(err.contains("not on a BPF filesystem"), "{err}");
        assert!(ensure_bpffs(Path::new("relative/pins")).is_err());
    }
}
