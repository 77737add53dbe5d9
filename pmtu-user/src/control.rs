//! The daemon's control socket: a Unix stream socket speaking JSON lines.
//!
//! A client writes one request line, e.g. `{"cmd":"table","json":true}`;
//! the daemon answers with any number of `{"out":"..."}` lines (what the
//! client prints, in the very shapes `pmtu trace` prints) and one last
//! `{"ok":true}` or `{"error":"..."}`. `events --follow` keeps sending `out`
//! lines until the client goes.
//!
//! Only root and, if configured, one group may connect: the socket file is
//! 0660 root:GROUP in a 0755 directory, and each connection's peer
//! credentials (SO_PEERCRED) are checked again, in case the file's mode is
//! changed behind pmtu's back.

use std::{
    ffi::CString,
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status {
        #[serde(default)]
        json: bool,
    },
    Table {
        #[serde(default)]
        json: bool,
        #[serde(default)]
        kernel: bool,
    },
    Stats {
        #[serde(default)]
        json: bool,
    },
    Events {
        #[serde(default)]
        json: bool,
        #[serde(default)]
        follow: bool,
    },
    Reload,
    /// Learned clamping: switch learning on or off, or forget every
    /// lesson (`set`), and/or say what is learned.
    Learning {
        #[serde(default)]
        set: Option<LearningSwitch>,
        #[serde(default)]
        json: bool,
    },
    /// Stop the daemon; `detach` removes everything (`pmtu detach`),
    /// otherwise its `on-exit` applies.
    Stop {
        #[serde(default)]
        detach: bool,
    },
}

/// `pmtu learning on|off|flush`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LearningSwitch {
    /// Learn from valid PTBs again.
    On,
    /// Learn nothing new; what was learned applies until it expires.
    Off,
    /// Forget every learned PMTU now (learning stays as it is).
    Flush,
}

/// One line of an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Out { out: String },
    Ok { ok: bool },
    Error { error: String },
}

/// A request as the daemon's main loop receives it: reply lines go back
/// through `reply` (dropping it ends the answer).
pub struct Incoming {
    pub request: Request,
    pub reply: mpsc::Sender<Reply>,
}

/// Exit code of a client that found no daemon.
pub const NO_DAEMON: u8 = 3;

/// The error a client gets when no daemon answers.
#[derive(Debug, thiserror::Error)]
#[error("no pmtu daemon is answering on {path}; start one with `pmtu run --config FILE`")]
pub struct NoDaemon {
    pub path: PathBuf,
    pub source: io::Error,
}

/// The gid of group `name`.
fn group_id(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name).map_err(|_| anyhow!("invalid group name {name:?}"))?;
    // SAFETY: `c` is NUL-terminated; getgrnam returns a pointer to static
    // storage or null, read at once below.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        bail!("control-group {name}: no such group");
    }
    // SAFETY: non-null, points to a valid group entry.
    Ok(unsafe { (*gr).gr_gid })
}

/// Listens on `path`: its directory is created (0755), a stale socket file
/// from a daemon that died is replaced, a live daemon is an error.
pub async fn listen(path: &Path, group: Option<&str>) -> anyhow::Result<(UnixListener, Option<u32>)> {
    let gid = group.map(group_id).transpose()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!("another pmtu daemon is running (it answers on {}); stop it first", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).with_context(|| format!("chown {}", path.display()))?;
    }
    Ok((listener, gid))
}

/// Accepts connections for ever, each served by its own task.
pub async fn serve(listener: UnixListener, gid: Option<u32>, to_daemon: mpsc::Sender<Incoming>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("control socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let to_daemon = to_daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, gid, to_daemon).await {
                tracing::debug!("control connection: {e:#}");
            }
        });
    }
}

/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;

async fn connection(stream: UnixStream, gid: Option<u32>, to_daemon: mpsc::Sender<Incoming>) -> anyhow::Result<()> {
    let cred = stream.peer_cred().context("reading the peer's credentials")?;
    let allowed = cred.uid() == 0 || gid.is_some_and(|g| cred.gid() == g);
    let (read, mut write) = stream.into_split();
    if !allowed {
        let line = serde_json::to_string(&Reply::Error { error: "permission denied: root or the control group only".into() })?;
        write.write_all(format!("{line}\n").as_bytes()).await?;
        return Ok(());
    }
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    let mut line = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .context("no request within 10 s")??;
    let request: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            let reply = serde_json::to_string(&Reply::Error { error: format!("bad request: {e}") })?;
            write.write_all(format!("{reply}\n").as_bytes()).await?;
            return Ok(());
        }
    };
    let (tx, mut rx) = mpsc::channel(1024);
    to_daemon.send(Incoming { request, reply: tx }).await.map_err(|_| anyhow!("the daemon is stopping"))?;
    while let Some(reply) = rx.recv().await {
        let line = serde_json::to_string(&reply)?;
        if write.write_all(format!("{line}\n").as_bytes()).await.is_err() {
            // The client left (e.g. `pmtu events --follow | head`).
            break;
        }
    }
    Ok(())
}

/// Sends `request` and prints every `out` line to stdout. Returns Ok(false)
/// when the daemon answered with an error (already printed on stderr).
pub async fn ask(path: &Path, request: &Request) -> anyhow::Result<bool> {
    use std::io::Write as _;
    let stream = UnixStream::connect(path).await.map_err(|source| NoDaemon { path: path.to_path_buf(), source })?;
    let (read, mut write) = stream.into_split();
    let line = serde_json::to_string(request)?;
    write.write_all(format!("{line}\n").as_bytes()).await.context("sending the request")?;
    let mut lines = BufReader::new(read).lines();
    let stdout = std::io::stdout();
    while let Some(line) = lines.next_line().await.context("reading the daemon's answer")? {
        match serde_json::from_str::<Reply>(&line).with_context(|| format!("an answer that is not JSON: {line}"))? {
            Reply::Out { out } => {
                let mut o = stdout.lock();
                if let Err(e) = writeln!(o, "{out}").and_then(|()| o.flush()) {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(true);
                    }
                    return Err(e).context("writing to stdout");
                }
            }
            Reply::Ok { .. } => return Ok(true),
            Reply::Error { error } => {
                eprintln!("pmtu: the daemon says: {error}");
                return Ok(false);
            }
        }
    }
    bail!("the daemon closed the connection without finishing its answer")
}

/// Sends `request` and collects the `out` lines (for `pmtu detach`, which
/// acts on them itself).
pub async fn ask_quiet(path: &Path, request: &Request) -> Result<Vec<String>, anyhow::Error> {
    let stream = UnixStream::connect(path).await.map_err(|source| NoDaemon { path: path.to_path_buf(), source })?;
    let (read, mut write) = stream.into_split();
    let line = serde_json::to_string(request)?;
    write.write_all(format!("{line}\n").as_bytes()).await.context("sending the request")?;
    let mut lines = BufReader::new(read).lines();
    let mut out = Vec::new();
    while let Some(line) = lines.next_line().await.context("reading the daemon's answer")? {
        match serde_json::from_str::<Reply>(&line)? {
            Reply::Out { out: o } => out.push(o),
            Reply::Ok { .. } => return Ok(out),
            Reply::Error { error } => bail!("the daemon says: {error}"),
        }
    }
    // A daemon stopping may close before its last line.
    Ok(out)
}

/// Sends a oneshot-style single answer: every line of `text` as `out`, then ok.
pub async fn answer(reply: &mpsc::Sender<Reply>, text: &str) {
    for line in text.lines() {
        if reply.send(Reply::Out { out: line.to_string() }).await.is_err() {
            return;
        }
    }
    // The client may be gone; nothing to do about it.
    if reply.send(Reply::Ok { ok: true }).await.is_err() {
        tracing::debug!("control client left before the end of its answer");
    }
}

/// An error answer.
pub async fn fail(reply: &mpsc::Sender<Reply>, error: String) {
    if reply.send(Reply::Error { error }).await.is_err() {
        tracing::debug!("control client left before its error answer");
    }
}

/// Kept for the metrics server: one request for the text of /metrics.
pub type MetricsAsk = oneshot::Sender<String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_json_lines() {
        let r: Request = serde_json::from_str(r#"{"cmd":"table","json":true}"#).unwrap();
        assert_eq!(r, Request::Table { json: true, kernel: false });
        let r: Request = serde_json::from_str(r#"{"cmd":"stop"}"#).unwrap();
        assert_eq!(r, Request::Stop { detach: false });
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"table","jsn":true}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"rm -rf"}"#).is_err());
        assert_eq!(serde_json::to_string(&Reply::Out { out: "x".into() }).unwrap(), r#"{"out":"x"}"#);
        assert_eq!(serde_json::from_str::<Reply>(r#"{"ok":true}"#).unwrap(), Reply::Ok { ok: true });
        assert_eq!(serde_json::to_string(&Request::Reload).unwrap(), r#"{"cmd":"reload"}"#);
    }
}
