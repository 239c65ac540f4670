//! `pinion upgrade -c FILE` (and `pinion reload` when a change needs a new process): start a
//! new process on FILE that takes over the listening sockets of the running one (Pingora's
//! hand-over), and return once it serves. FILE is validated first; an invalid one changes
//! nothing.
//!
//! The new process never gets this command's standard streams: a caller capturing them
//! (`$(...)`, ssh, a Python subprocess) would otherwise wait until the new gateway exits. It
//! reads /dev/null and logs where the old process logs.

use crate::config::Config;
use crate::server::control::Client;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the new process may take to bind the upgrade socket, and then to serve.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a hand-over did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
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
    /// An address of the new configuration is taken by another process.
    #[error("{addr} is in use by another process; the running instance is untouched")]
    AddressInUse { addr: SocketAddr },
    /// Signalling the running instance failed.
    #[error("cannot signal the running instance (pid {pid}): {source}")]
    Signal { pid: i32, source: nix::Error },
}

/// Performs the hand-over; `config` is already validated. Returns (old pid, new pid).
pub fn run(file: &Path, config: &Config) -> Result<(i32, i32), UpgradeError> {
    let pid_file = &config.server.pid_file;
    let old = running_pid(pid_file)?;
    check_addresses(config, old)?;
    let sock = Path::new(&config.server.upgrade_sock);
    // A socket file left by an earlier upgrade would look like the new process is ready.
    let _ = std::fs::remove_file(sock);
    let exe = std::env::current_exe().map_err(UpgradeError::Spawn)?;
    let (stdout, stderr) = log_streams(log_destination(config, old), old);
    let mut child = Command::new(exe)
        .arg("-c")
        .arg(crate::config::absolute(file))
        .arg("-u")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group: a Ctrl-C meant for this command must not stop the new gateway.
        .process_group(0)
        .spawn()
        .map_err(UpgradeError::Spawn)?;
    wait(&mut child, "listen on the upgrade socket", || sock.exists())?;
    if let Err(source) = kill(Pid::from_raw(old), Signal::SIGQUIT) {
        let _ = child.kill();
        return Err(UpgradeError::Signal { pid: old, source });
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
    // Inherited sockets queue connections at once; an address the new process binds itself
    // serves only once it listens: return when every one of them does.
    let wanted: Vec<SocketAddr> = config
        .listeners
        .iter()
        .flat_map(|l| l.binds.iter().copied())
        .chain(config.admin)
        .collect();
    wait(&mut child, "listen on every address", || {
        let listening = listening_addresses(new);
        wanted.iter().all(|a| listening.contains(a))
    })?;
    Ok((old, new))
}

/// Where the new process logs: where the old one does. Its standard error comes over the
/// control socket (whatever it is: a terminal, a file, the journal's socket); else
/// `server.error_log`; else the old process's descriptor reopened through /proc. `None` when
/// none of these can be had.
fn log_destination(config: &Config, old: i32) -> Option<OwnedFd> {
    if let Ok(fd) = Client::new(&config.server.control_sock, old).stderr() {
        return Some(fd);
    }
    let append = |path: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(OwnedFd::from)
            .ok()
    };
    let proc_fd = format!("/proc/{old}/fd/2");
    config
        .server
        .error_log
        .as_deref()
        .and_then(|p| append(Path::new(p)))
        .or_else(|| append(Path::new(&proc_fd)))
}

/// The new process's standard output and error: both go to `log`.
fn log_streams(log: Option<OwnedFd>, old: i32) -> (Stdio, Stdio) {
    let Some(log) = log else {
        eprintln!(
            "pinion: cannot find where pid {old} logs; the new process logs nowhere (set \
             server.error_log)"
        );
        return (Stdio::null(), Stdio::null());
    };
    match log.try_clone() {
        Ok(out) => (Stdio::from(out), Stdio::from(log)),
        Err(_) => (Stdio::null(), Stdio::from(log)),
    }
}

/// Every address the new process will listen on must be inherited from the running instance
/// or free: the new process binds the others only after the hand-over, too late to back out.
fn check_addresses(config: &Config, old: i32) -> Result<(), UpgradeError> {
    let inherited = listening_addresses(old);
    let wanted = config
        .listeners
        .iter()
        .flat_map(|l| l.binds.iter().copied())
        .chain(config.admin);
    for addr in wanted {
        if inherited.contains(&addr) {
            continue;
        }
        if let Err(e) = std::net::TcpListener::bind(addr) {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                return Err(UpgradeError::AddressInUse { addr });
            }
        }
    }
    Ok(())
}

/// The TCP addresses process `pid` listens on (Linux: its socket inodes in /proc/net/tcp*).
fn listening_addresses(pid: i32) -> HashSet<SocketAddr> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().to_string();
            t.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let mut out = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            if *state == "0A" && inodes.contains(*inode) {
                out.extend(parse_proc_address(local));
            }
        }
    }
    out
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6), each 32-bit word in host order.
fn parse_proc_address(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| {
            addr.get(i * 8..i * 8 + 8)
                .and_then(|w| u32::from_str_radix(w, 16).ok())
        })
        .collect::<Option<_>>()?;
    let ip: IpAddr = match words.as_slice() {
        [w] => Ipv4Addr::from(w.to_le_bytes()).into(),
        [a, b, c, d] => {
            let mut octets = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                octets[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            Ipv6Addr::from(octets).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

pub fn running_pid(pid_file: &str) -> Result<i32, UpgradeError> {
    let not_running = |reason: String| UpgradeError::NotRunning {
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
) -> Result<(), UpgradeError> {
    let start = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            if !status.success() {
                return Err(UpgradeError::NewExited(status.to_string()));
            }
        }
        if start.elapsed() > STEP_TIMEOUT {
            let _ = child.kill();
            return Err(UpgradeError::Timeout(what));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses_parse() {
        assert_eq!(
            parse_proc_address("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_proc_address("00000000000000000000000001000000:01BB"),
            Some("[::1]:443".parse().unwrap())
        );
        assert_eq!(parse_proc_address("nope"), None);
    }

    #[test]
    fn this_process_listening_sockets_are_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let pid = i32::try_from(std::process::id()).unwrap();
        assert!(listening_addresses(pid).contains(&addr));
    }
}
