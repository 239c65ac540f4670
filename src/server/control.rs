//! The control socket: a Unix socket (mode 0600, `server.control_sock`) on which the running
//! gateway takes requests from `pinion reload` and `pinion upgrade` and answers each on the
//! same connection, so the command can tell its caller exactly what happened.
//!
//! One request per connection, one line: `reload\t<absolute path>` or `stderr`. Answers to
//! `reload` are a first line `applied <generation> <sha256>`, `invalid` (followed by every
//! problem, as `-t` prints them), `handover <what>` or `failed <reason>`. The answer to
//! `stderr` is one byte carrying the gateway's standard error descriptor (SCM_RIGHTS), so a new
//! process can log where this one does, whoever starts it.

use super::reload::{Outcome, Reloader};
use async_trait::async_trait;
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 4096;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `pinion reload` waits for the gateway's answer (loading resolves server names).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Talking to a running gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing answers on the socket.
    #[error("cannot reach the control socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    /// Another process than the one in the PID file answers there.
    #[error("the control socket {path} belongs to pid {found}, not to the running pid {expected}")]
    WrongProcess {
        path: String,
        found: i32,
        expected: i32,
    },
    /// The exchange broke off.
    #[error("control socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The gateway answered something this command does not understand.
    #[error("control socket {path}: unexpected answer {answer:?}")]
    Unexpected { path: String, answer: String },
}

/// The background service serving the control socket.
pub struct Control {
    reloader: Arc<Reloader>,
    path: PathBuf,
    takeover: bool,
}

impl Control {
    /// Serves `path`; with `takeover` (a hand-over), the previous process's socket is replaced.
    pub fn new(reloader: Arc<Reloader>, path: &str, takeover: bool) -> Control {
        Control {
            reloader,
            path: PathBuf::from(path),
            takeover,
        }
    }

    fn bind(&self) -> Option<tokio::net::UnixListener> {
        let shown = self.path.display();
        if self.path.exists() {
            if !self.takeover && UnixStream::connect(&self.path).is_ok() {
                warn!(
                    "control socket {shown} is served by another running pinion; `pinion reload` \
                     cannot reach this one: give each instance its own server.control_sock"
                );
                return None;
            }
            let _ = std::fs::remove_file(&self.path);
        }
        let listener = match tokio::net::UnixListener::bind(&self.path) {
            Ok(l) => l,
            Err(e) => {
                warn!("cannot listen on control socket {shown}: {e}; `pinion reload` will hand over to a new process instead");
                return None;
            }
        };
        if let Err(e) = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600))
        {
            warn!("cannot restrict control socket {shown} to its owner: {e}");
        }
        info!("control socket {shown} ready");
        Some(listener)
    }
}

#[async_trait]
impl BackgroundService for Control {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(listener) = self.bind() else { return };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let reloader = self.reloader.clone();
                        tokio::spawn(async move { serve(stream, &reloader).await });
                    }
                    Err(e) => {
                        warn!("control socket: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}

async fn serve(stream: tokio::net::UnixStream, reloader: &Reloader) {
    let mut reader = tokio::io::BufReader::new(stream).take(MAX_REQUEST);
    let mut line = String::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let mut stream = reader.into_inner().into_inner();
    let line = line.trim_end_matches(['\r', '\n']);
    let answer = match line.split_once('\t') {
        Some(("reload", file)) => match reloader.reload_or_handover(PathBuf::from(file)).await {
            Outcome::Applied { generation, sha256 } => format!("applied {generation} {sha256}\n"),
            Outcome::Invalid(text) => format!("invalid\n{text}\n"),
            Outcome::NeedsHandover(what) => format!("handover {what}\n"),
            Outcome::Failed(reason) => format!("failed {reason}\n"),
        },
        None if line == "stderr" => {
            if let Err(e) = send_stderr(stream).await {
                warn!("control socket: cannot pass the log descriptor: {e}");
            }
            return;
        }
        _ => format!("failed unknown request {line:?}\n"),
    };
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn send_stderr(stream: tokio::net::UnixStream) -> std::io::Result<()> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    tokio::task::spawn_blocking(move || {
        let stderr = std::io::stderr();
        let fds = [stderr.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        rustix::net::sendmsg(
            &stream,
            &[IoSlice::new(b"1")],
            &mut control,
            SendFlags::empty(),
        )?;
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A client of one running gateway's control socket.
pub struct Client {
    path: PathBuf,
    pid: i32,
}

/// The gateway's answer to a reload request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Applied in place.
    Applied { generation: u64, sha256: String },
    /// The file is invalid (its problems).
    Invalid(String),
    /// A new process must take over (what changes).
    Handover(String),
    /// Valid, but not applied (why).
    Failed(String),
}

impl Client {
    /// A client for the gateway with process id `pid`, at `path`.
    pub fn new(path: &str, pid: i32) -> Client {
        Client {
            path: PathBuf::from(path),
            pid,
        }
    }

    fn io(&self, source: std::io::Error) -> ControlError {
        ControlError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn connect(&self) -> Result<UnixStream, ControlError> {
        let path = self.path.display().to_string();
        let stream = UnixStream::connect(&self.path).map_err(|source| ControlError::Connect {
            path: path.clone(),
            source,
        })?;
        // The PID file names the instance meant; a socket shared by mistake must not reload
        // another one.
        let found = rustix::net::sockopt::socket_peercred(&stream)
            .map(|c| c.pid.as_raw_nonzero().get())
            .map_err(|e| self.io(e.into()))?;
        if found != self.pid {
            return Err(ControlError::WrongProcess {
                path,
                found,
                expected: self.pid,
            });
        }
        let io = |source| self.io(source);
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(io)?;
        Ok(stream)
    }

    /// Asks the gateway to reload from `file` in place.
    pub fn reload(&self, file: &Path) -> Result<Reply, ControlError> {
        let mut stream = self.connect()?;
        let io = |source| self.io(source);
        let request = format!("reload\t{}\n", crate::config::absolute(file).display());
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut reader = BufReader::new(stream);
        let mut first = String::new();
        reader.read_line(&mut first).map_err(io)?;
        let mut rest = String::new();
        reader.read_to_string(&mut rest).map_err(io)?;
        let first = first.trim_end();
        let unexpected = || ControlError::Unexpected {
            path: self.path.display().to_string(),
            answer: first.to_owned(),
        };
        let (word, tail) = first.split_once(' ').unwrap_or((first, ""));
        match word {
            "applied" => {
                let (generation, sha256) = tail.split_once(' ').ok_or_else(unexpected)?;
                Ok(Reply::Applied {
                    generation: generation.parse().map_err(|_| unexpected())?,
                    sha256: sha256.to_owned(),
                })
            }
            "invalid" => Ok(Reply::Invalid(rest.trim_end().to_owned())),
            "handover" => Ok(Reply::Handover(tail.to_owned())),
            "failed" => Ok(Reply::Failed(tail.to_owned())),
            _ => Err(unexpected()),
        }
    }

    /// The gateway's standard error, to hand to a process that takes over from it.
    pub fn stderr(&self) -> Result<OwnedFd, ControlError> {
        let mut stream = self.connect()?;
        let io = |source| self.io(source);
        stream.write_all(b"stderr\n").map_err(io)?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        rustix::net::recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| io(e.into()))?;
        let received = control.drain().find_map(|msg| match msg {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        });
        received.ok_or_else(|| ControlError::Unexpected {
            path: self.path.display().to_string(),
            answer: "no descriptor".into(),
        })
    }
}
