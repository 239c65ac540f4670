//! The real `pinion` binary, started on a generated YAML file.

use super::backend::Backend;
use super::certs::Identity;
use super::wait_for;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// A free port on 127.0.0.1 that nothing else in this run can be handed.
///
/// A port from `bind(127.0.0.1:0)` lies in the kernel's ephemeral range, where any other
/// test's listener or outgoing connection may take it between our release and the gateway's
/// bind (CI saw a gateway test talk to another test's server). Ports are therefore handed out
/// once each from below that range, starting at a random offset so consecutive runs differ.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_start().clamp(12_000, 65_535);
    let span = low - 10_000;
    let _ = NEXT.compare_exchange(
        0,
        1 + u32::from(std::process::id() as u16) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = 10_000 + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().unwrap().port();
        }
    }
    panic!("no free port below the ephemeral range");
}

/// First port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// `pools:` and `routes:` sections: one plain-HTTP pool `p` on `backend`, without probes, and a
/// catch-all route `all` to it.
pub fn plain_pool(backend: &Backend) -> String {
    format!(
        "pools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\nroutes:\n  - name: all\n    pool: p\n",
        backend.port
    )
}

/// The ports of every `bind: 127.0.0.1:PORT` in a configuration.
fn bound_ports(yaml: &str) -> Vec<u16> {
    yaml.lines()
        .filter_map(|l| l.split_once("bind:").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once("127.0.0.1:").map(|(_, p)| p))
        .filter_map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// The pinion binary under test.
pub fn pinion() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pinion"))
}

/// A test directory with a front-end certificate and a port for the HTTPS listener.
pub struct Env {
    pub dir: TempDir,
    pub port: u16,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        Identity::self_signed(&["localhost"]).write(dir.path(), "front");
        Env {
            dir,
            port: free_port(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `listeners:` section with one HTTPS listener named `https`.
    pub fn listeners(&self) -> String {
        format!(
            "listeners:\n  - name: https\n    bind: 127.0.0.1:{}\n    tls:\n      certificates:\n        - cert: front.pem\n          key: front.key\n",
            self.port
        )
    }

    /// Starts a gateway with this test's HTTPS listener and the given `pools:` and `routes:`
    /// entries.
    pub fn serve(self, pools: &str, routes: &str) -> Gateway {
        let yaml = format!("{}pools:\n{pools}routes:\n{routes}", self.listeners());
        self.start(&yaml)
    }

    /// Writes `yaml` plus a `server:` section private to this test, starts pinion on it and
    /// waits until the listener accepts connections.
    pub fn start(self, yaml: &str) -> Gateway {
        self.start_under(yaml, &[], Duration::from_secs(30))
    }

    /// [`Env::start`] with pinion run by `wrapper` (e.g. `valgrind --tool=dhat`), whose own
    /// output joins pinion's log, allowing `deadline` for each address to listen.
    pub fn start_under(self, yaml: &str, wrapper: &[String], deadline: Duration) -> Gateway {
        let port = self.port;
        let file = self.write_config(yaml);
        let log = self.dir.path().join("pinion.log");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_pinion"));
                c
            }
            None => pinion(),
        };
        let child = command
            .arg("-c")
            .arg(&file)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {wrapper:?} pinion: {e}"));
        let mut gw = Gateway {
            child,
            env: self,
            log,
        };
        // Every bound address (listeners and admin) binds on its own: wait for all of them.
        let mut ports = bound_ports(yaml);
        ports.push(port);
        for p in ports {
            wait_for("the gateway to listen", deadline, || {
                if let Ok(Some(status)) = gw.child.try_wait() {
                    panic!("pinion exited with {status}: {}", gw.logs());
                }
                TcpStream::connect(("127.0.0.1", p)).ok()
            });
        }
        gw
    }

    /// Writes the config file and returns its path.
    pub fn write_config(&self, yaml: &str) -> PathBuf {
        let file = self.dir.path().join("pinion.yaml");
        let server = if yaml.starts_with("server:") {
            String::new()
        } else {
            self.server_section(0)
        };
        std::fs::write(&file, format!("{server}{yaml}")).unwrap();
        file
    }

    /// A `server:` section private to this test, draining for `grace` seconds.
    pub fn server_section(&self, grace: u64) -> String {
        let d = self.dir.path().display();
        format!(
            "server:\n  threads: 2\n  pid_file: {d}/pinion.pid\n  upgrade_sock: {d}/upgrade.sock\n  control_sock: {d}/control.sock\n  grace_period_seconds: {grace}\n  graceful_shutdown_timeout_seconds: 1\n"
        )
    }
}

/// A running gateway; killed when dropped.
pub struct Gateway {
    child: Child,
    pub env: Env,
    log: PathBuf,
}

impl Gateway {
    pub fn port(&self) -> u16 {
        self.env.port
    }

    /// The process id of the pinion started by this test.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the process started by the test still runs (not exited, not a zombie).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        wait_for("pinion to exit", deadline, || {
            self.child.try_wait().ok().flatten()
        })
        .code()
    }

    /// Everything pinion logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a log line contains every needle; returns that line.
    pub fn log_line(&self, needles: &[&str]) -> String {
        wait_for("a log line", Duration::from_secs(10), || {
            self.logs()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_owned)
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // After a reload the gateway is another process, named by the PID file.
        let pid_file = self.env.path().join("pinion.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
