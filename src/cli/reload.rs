//! `pinion reload -c FILE`: validate FILE, start a new process on it that takes over the
//! listening sockets of the running one (Pingora's hand-over), and return once it serves.
//! An invalid FILE changes nothing.

use crate::config::Config;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long the new process may take to bind the upgrade socket, and then to serve.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a reload did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No running instance was found through the PID file.
    #[error("no running pinion found through {pid_file}: {reason}")]
    NotRunning { pid_file: String, reason: String },
    /// The new process could not be started.
    #[error("cannot start the new process: {0}")]
    Spawn(std::io::Error),
    /// The new process exited before serving.
    #[error("the new process exited ({0}) before taking over; the running instance is untouched")]
    NewExited(String),
    /// A step did not complete in time.
    #[error("timed out waiting for the new process to {0}")]
    Timeout(&'static str),
    /// Signalling the running instance failed.
    #[error("cannot signal the running instance (pid {pid}): {source}")]
    Signal { pid: i32, source: nix::Error },
}

/// Performs the hand-over; `config` is already validated. Returns (old pid, new pid).
pub fn run(file: &Path, config: &Config) -> Result<(i32, i32), ReloadError> {
    let pid_file = &config.server.pid_file;
    let old = running_pid(pid_file)?;
    let sock = Path::new(&config.server.upgrade_sock);
    // A socket file left by an earlier upgrade would look like the new process is ready.
    let _ = std::fs::remove_file(sock);
    let exe = std::env::current_exe().map_err(ReloadError::Spawn)?;
    let mut child = Command::new(exe)
        .arg("-c")
        .arg(file)
        .arg("-u")
        // Its own process group: a Ctrl-C meant for `reload` must not stop the new gateway.
        .process_group(0)
        .spawn()
        .map_err(ReloadError::Spawn)?;
    wait(&mut child, "listen on the upgrade socket", || sock.exists())?;
    if let Err(source) = kill(Pid::from_raw(old), Signal::SIGQUIT) {
        let _ = child.kill();
        return Err(ReloadError::Signal { pid: old, source });
    }
    let new = i32::try_from(child.id()).unwrap_or_default();
    let daemon = config.server.daemon;
    wait(&mut child, "take over and serve", || {
        let current = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        match current {
            Some(pid) if daemon => pid != old && kill(Pid::from_raw(pid), None).is_ok(),
            Some(pid) => pid == new,
            None => false,
        }
    })?;
    let new = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(new);
    Ok((old, new))
}

fn running_pid(pid_file: &str) -> Result<i32, ReloadError> {
    let not_running = |reason: String| ReloadError::NotRunning {
        pid_file: pid_file.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(pid_file).map_err(|e| not_running(e.to_string()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| not_running(format!("{:?} is not a process id", text.trim())))?;
    kill(Pid::from_raw(pid), None).map_err(|e| not_running(format!("process {pid}: {e}")))?;
    Ok(pid)
}

/// Polls `ready` until it holds, failing if the child exits first (unless it daemonized).
fn wait(
    child: &mut Child,
    what: &'static str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), ReloadError> {
    let start = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            if !status.success() {
                return Err(ReloadError::NewExited(status.to_string()));
            }
        }
        if start.elapsed() > STEP_TIMEOUT {
            let _ = child.kill();
            return Err(ReloadError::Timeout(what));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
