//! Process life: daemon mode (`-d`), start-up failures, `server.user`/`server.group` and paths
//! relative to the configuration file.

use crate::harness::{exited, free_port, get, pinion, plain_pool, wait_for, Backend, Env};
use crate::operations::{admin_get, metrics, sample};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

/// A gateway started with `-d`: the command returns once it has forked; the daemon is found
/// through its PID file and killed when this is dropped.
struct Daemon {
    env: Env,
    file: PathBuf,
    pid_file: PathBuf,
}

impl Daemon {
    /// Writes `yaml` (which must name `pid_file`), runs `pinion -d -c FILE` from `cwd`, and
    /// waits for the daemon to listen on every port in `ports`.
    fn start(env: Env, yaml: &str, pid_file: PathBuf, cwd: &Path, ports: &[u16]) -> Daemon {
        let file = env.write_config(yaml);
        let out = run_in(cwd, &["-d", "-c", file.to_str().unwrap()]);
        let daemon = Daemon {
            env,
            file,
            pid_file,
        };
        assert!(out.status.success(), "pinion -d: {}", text(&out));
        for &p in ports {
            wait_for("the daemon to listen", Duration::from_secs(30), || {
                TcpStream::connect(("127.0.0.1", p)).ok()
            });
        }
        daemon
    }

    fn pid(&self) -> i32 {
        wait_for("the PID file", Duration::from_secs(10), || {
            std::fs::read_to_string(&self.pid_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.env.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        drop(KillByPidFile(self.pid_file.clone()));
    }
}

/// Runs pinion with `args` from `dir`, stdin closed, its output captured through files: a
/// daemon may keep the descriptors it was given, and a pipe would then never end.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let out = tempfile::tempdir().unwrap();
    let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut child = Running(
        pinion()
            .current_dir(dir)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    let status = wait_for("pinion to return", Duration::from_secs(30), || {
        child.0.try_wait().unwrap()
    });
    Output {
        status,
        stdout: std::fs::read(&stdout).unwrap(),
        stderr: std::fs::read(&stderr).unwrap(),
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The user and group ids of a running process (real, effective, saved, filesystem).
fn ids(pid: i32) -> (Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    (field("Uid:"), field("Gid:"))
}

fn json_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count()
}

#[test]
fn a_daemon_writes_its_access_log_reloads_and_drains_on_sigterm() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let admin = free_port();
    let d = env.path().display().to_string();
    let yaml = format!(
        "{}  error_log: {d}/error.log\naccess_log:\n  path: {d}/access.log\n  format: json\nadmin:\n  bind: 127.0.0.1:{admin}\n{}{}",
        env.server_section(2),
        env.listeners(),
        plain_pool(&backend)
    );
    let port = env.port;
    let log = env.path().join("access.log");
    let pid_file = env.path().join("pinion.pid");
    let cwd = env.path().to_owned();
    let daemon = Daemon::start(env, &yaml, pid_file, &cwd, &[port, admin]);
    let pid = daemon.pid();
    assert_ne!(pid, 0);
    for _ in 0..3 {
        assert_eq!(get(port, "h", "/").status, 200);
    }
    wait_for("three access log lines", Duration::from_secs(10), || {
        (json_lines(&log) == 3).then_some(())
    });
    let m = metrics(admin);
    assert_eq!(
        sample(&m, "pinion_access_log_dropped_lines_total", &[]),
        0.0
    );

    let out = pinion()
        .args(["reload", "-c"])
        .arg(&daemon.file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    assert_eq!(daemon.pid(), pid, "the reload was applied in place");
    assert_eq!(
        sample(
            &metrics(admin),
            "pinion_config_reloads_total",
            &[("result", "ok")]
        ),
        1.0
    );
    assert_eq!(get(port, "h", "/").status, 200);
    wait_for("four access log lines", Duration::from_secs(10), || {
        (json_lines(&log) == 4).then_some(())
    });

    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    wait_for("healthz 503", Duration::from_secs(5), || {
        (admin_get(admin, "/healthz").status == 503).then_some(())
    });
    assert_eq!(get(port, "h", "/").status, 200, "served while draining");
    wait_for("the daemon to exit", Duration::from_secs(20), || {
        exited(pid).then_some(())
    });
    assert_eq!(json_lines(&log), 5, "every line written before exit");
    assert!(
        daemon.log().contains("SIGTERM"),
        "the daemon logs to error_log: {}",
        daemon.log()
    );
}

/// Kills, when dropped, the process a PID file names: a daemon that should not have started.
struct KillByPidFile(PathBuf);

impl Drop for KillByPidFile {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A child process killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs pinion with `args`, waiting at most 30 s for it to exit; its exit code and stderr.
fn exit_of(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A second gateway on the first one's port exits 1 naming the address, before its admin
/// listener ever answers.
fn a_second_instance_on_a_taken_port_stops(daemon: bool) {
    let backend = Backend::plain("b");
    let env = Env::new();
    let yaml = format!("{}{}", env.listeners(), plain_pool(&backend));
    let first = env.start(&yaml);

    let mut second = Env::new();
    second.port = first.port();
    let admin = free_port();
    let file = second.write_config(&format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}{}",
        second.listeners(),
        plain_pool(&backend)
    ));
    let mut args = vec!["-c", file.to_str().unwrap()];
    if daemon {
        args.insert(0, "-d");
    }
    let _stray = KillByPidFile(second.path().join("pinion.pid"));
    let (code, stderr) = exit_of(&args);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{}", first.port())),
        "{stderr}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", admin)).is_err(),
        "the admin listener of the failed instance never opened"
    );
    assert!(!second.path().join("pinion.pid").exists());
    assert_eq!(
        get(first.port(), "h", "/").status,
        200,
        "the first serves on"
    );
}

#[test]
fn a_taken_port_stops_start_up_in_the_foreground() {
    a_second_instance_on_a_taken_port_stops(false);
}

#[test]
fn a_taken_port_stops_start_up_of_a_daemon() {
    a_second_instance_on_a_taken_port_stops(true);
}

/// A port below 1024 on 127.0.0.1 that nothing listens on (only root can bind it, and no
/// other test uses this range).
fn low_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Handed out once each: two tests given the same port would each find a gateway there.
    static NEXT: AtomicU16 = AtomicU16::new(600);
    std::iter::from_fn(|| Some(NEXT.fetch_add(1, Ordering::SeqCst)))
        .take_while(|&p| p < 1024)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below 1024")
}

/// Starts a gateway on a port below 1024 with `user: nobody` and `group:` nobody's group, and
/// checks that it serves there as nobody.
fn drops_privileges_after_binding(daemon: bool) {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: binding a port below 1024 and switching users needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let group = nix::unistd::Group::from_gid(nobody.gid)
        .unwrap()
        .expect("nobody's group");
    let backend = Backend::plain("b");
    let mut env = Env::new();
    env.port = low_port();
    let port = env.port;
    let yaml = format!(
        "{}  user: nobody\n  group: {}\n{}{}",
        env.server_section(0),
        group.name,
        env.listeners(),
        plain_pool(&backend)
    );
    let expect = |pid: i32| {
        wait_for("pinion to run as nobody", Duration::from_secs(10), || {
            let (uids, gids) = ids(pid);
            (uids.iter().all(|&u| u == nobody.uid.as_raw())
                && gids.iter().all(|&g| g == nobody.gid.as_raw()))
            .then_some(())
        });
        assert_eq!(get(port, "h", "/").status, 200);
    };
    if daemon {
        let pid_file = env.path().join("pinion.pid");
        let cwd = env.path().to_owned();
        let d = Daemon::start(env, &yaml, pid_file, &cwd, &[port]);
        expect(d.pid());
    } else {
        let gw = env.start(&yaml);
        expect(gw.pid());
    }
}

#[test]
fn user_and_group_are_taken_after_binding_a_low_port_in_the_foreground() {
    drops_privileges_after_binding(false);
}

#[test]
fn user_and_group_are_taken_after_binding_a_low_port_as_a_daemon() {
    drops_privileges_after_binding(true);
}

#[test]
fn process_paths_are_relative_to_the_configuration_file() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir(env.path().join("run")).unwrap();
    let yaml = format!(
        "server:\n  pid_file: run/pinion.pid\n  upgrade_sock: run/upgrade.sock\n  control_sock: run/control.sock\n  error_log: run/error.log\n  graceful_shutdown_timeout_seconds: 1\n{}{}",
        env.listeners(),
        plain_pool(&backend)
    );
    let port = env.port;
    let pid_file = env.path().join("run/pinion.pid");
    let daemon = Daemon::start(env, &yaml, pid_file, elsewhere.path(), &[port]);
    let pid = daemon.pid();
    assert!(wait_for(
        "the control socket",
        Duration::from_secs(10),
        || {
            daemon
                .env
                .path()
                .join("run/control.sock")
                .exists()
                .then_some(true)
        }
    ));
    assert!(daemon.env.path().join("run/error.log").exists());
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "nothing lands in the working directory"
    );
    // From yet another directory, `reload` finds the PID file and control socket the same way.
    let out = run_in(
        elsewhere.path(),
        &["reload", "-c", daemon.file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    assert_eq!(daemon.pid(), pid);
}

#[test]
fn test_mode_checks_that_the_error_log_can_be_written() {
    let env = Env::new();
    let backend = Backend::plain("b");
    std::fs::create_dir(env.path().join("logs")).unwrap();
    for (error_log, reason) in [
        ("missing/error.log", "its directory does not exist"),
        ("logs", "Is a directory"),
    ] {
        let file = env.write_config(&format!(
            "server:\n  error_log: {error_log}\n{}{}",
            env.listeners(),
            plain_pool(&backend)
        ));
        let out = run_in(env.path(), &["-t", "-c", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("server.error_log"), "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
    }
    let file = env.write_config(&format!(
        "server:\n  error_log: logs/error.log\n{}{}",
        env.listeners(),
        plain_pool(&backend)
    ));
    let out = run_in(env.path(), &["-t", "-c", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !env.path().join("logs/error.log").exists(),
        "-t leaves no file behind"
    );
}
