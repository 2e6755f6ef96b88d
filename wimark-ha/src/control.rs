//! The control socket: `wimark-ha status` and `wimark-ha switchover` talk to
//! the running daemon over a Unix socket, one JSON request and one JSON
//! response per connection.
//!
//! Owns: the protocol, the server (root-only: mode 0600 and the peer's
//! credentials checked) and the client. Must not: change state itself — it
//! passes requests to the engine and reports what the engine says.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::records::DaemonStatus;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Hand mastership to the peer at once (priority-0 advert). Without a
    /// name: every instance this node is master of.
    Switchover {
        instance: Option<String>,
        /// End a hand-over instead (`switchover --back`): the node that
        /// handed over may preempt again.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        back: bool,
    },
    /// Restart the daemon in place keeping mastership (`restart_hold`).
    Restart,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<DaemonStatus>,
}

impl Response {
    pub fn failed(error: &str) -> Self {
        Self {
            ok: false,
            error: Some(error.to_string()),
            ..Default::default()
        }
    }
}

pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

/// A request is one JSON line of a few dozen bytes; a longer one is refused
/// unread (a 200 MiB line grew the daemon from 12 to 225 MB).
pub const MAX_REQUEST_BYTES: u64 = 64 << 10;
/// The request line must be in within this, or the connection is closed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket (replacing a stale one), root-only. Anything at the
/// path that is not a socket is left alone and refused: it is not ours.
pub fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => bail!(
            "{} exists and is not a socket: not removed (set [daemon] control_socket to a free path)",
            path.display()
        ),
        _ => {}
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!("{} is in use: another wimark-ha is running", path.display()),
        Err(_) => {
            let _ = std::fs::remove_file(path);
        }
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(listener)
}

/// Serves requests until the task is dropped.
pub async fn serve(listener: tokio::net::UnixListener, handler: Handler) {
    let our_uid = nix::unistd::geteuid().as_raw();
    let mut accept_failing = crate::storm::Storm::new(Duration::from_secs(60));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: do not spin, try again shortly.
                if let Some(unlogged) = accept_failing.occurred(std::time::Instant::now()) {
                    tracing::warn!("control socket: accept: {e}{}", crate::storm::more(unlogged));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let allowed = stream
                .peer_cred()
                .map(|c| c.uid() == 0 || c.uid() == our_uid)
                .unwrap_or(false);
            let (read, mut write) = stream.into_split();
            let line = match read_request(read).await {
                Ok(line) => Some(line),
                Err(RequestError::Io) => return,
                Err(RequestError::TooLong) => None,
            };
            let response = if !allowed {
                Response {
                    ok: false,
                    error: Some("permission denied: root only".to_string()),
                    ..Default::default()
                }
            } else if let Some(line) = line {
                match serde_json::from_str::<Request>(&line) {
                    Ok(request) => {
                        let handler = handler.clone();
                        tokio::task::spawn_blocking(move || handler(request))
                            .await
                            .unwrap_or_else(|e| Response {
                                ok: false,
                                error: Some(format!("internal error: {e}")),
                                ..Default::default()
                            })
                    }
                    Err(e) => Response {
                        ok: false,
                        error: Some(format!("bad request: {e}")),
                        ..Default::default()
                    },
                }
            } else {
                Response::failed(&format!(
                    "bad request: longer than {MAX_REQUEST_BYTES} bytes (one JSON line)"
                ))
            };
            let mut text = serde_json::to_string(&response).unwrap_or_default();
            text.push('\n');
            let _ = write.write_all(text.as_bytes()).await;
        });
    }
}

enum RequestError {
    /// The peer went away, sent no line in time, or not UTF-8.
    Io,
    TooLong,
}

/// The request line, read within [`REQUEST_TIMEOUT`] and at most
/// [`MAX_REQUEST_BYTES`] of it.
async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> Result<String, RequestError> {
    use tokio::io::AsyncReadExt as _;
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES + 1));
    let mut line = String::new();
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) if line.len() as u64 > MAX_REQUEST_BYTES => Err(RequestError::TooLong),
        Ok(Ok(_)) => Ok(line),
        Ok(Err(_)) | Err(_) => Err(RequestError::Io),
    }
}

/// Sends one request to the daemon at `path`.
pub fn request(path: &Path, request: &Request) -> anyhow::Result<Response> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!("cannot reach the daemon at {} (is `wimark-ha run` running? --socket names another path)", path.display())
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .context("reading the daemon's answer")?;
    serde_json::from_str(&line).context("the daemon's answer is not valid JSON")
}

pub fn default_socket() -> PathBuf {
    PathBuf::from(crate::config::DEFAULT_CONTROL_SOCKET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_at_the_socket_path_is_refused_and_kept() {
        let path = std::env::temp_dir().join(format!("wimark-ha-control-{}", std::process::id()));
        std::fs::write(&path, b"an operator's file").expect("write");
        let error = bind(&path).expect_err("a regular file is not replaced");
        assert!(error.to_string().contains("is not a socket"), "{error:#}");
        assert_eq!(std::fs::read(&path).expect("kept"), b"an operator's file");
        std::fs::remove_file(&path).ok();
    }
}
