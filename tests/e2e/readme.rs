//! Every command of the README's "Using it" block, in order, on a fresh copy of `conf/` (the
//! configuration the repository holds and nothing else: no certificate), as a new user runs them.
//!
//! The only changes are the fixed ports of the example (8443, 9900, 9443, 9444, and the demo's)
//! and its PID and socket files in /tmp: tests never bind fixed ports or share /tmp paths, so
//! each is replaced by a private one, in the copied file and in the commands alike.

use crate::harness::reload::captured;
use crate::harness::{exited, free_port, get, pinion, wait_for};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pinion::demo::backend::Backend;
use pinion::demo::certs::Identity;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

/// The commands of the README's "Using it" block, without their comments.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Using it")
        .nth(1)
        .expect("a \"Using it\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim().to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Processes this test started, stopped at the end whatever happens.
struct Processes {
    children: Vec<Child>,
    pid_file: PathBuf,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn pid(file: &Path) -> i32 {
    std::fs::read_to_string(file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn listening(port: u16) -> Option<()> {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .ok()
        .map(drop)
}

#[test]
fn every_command_of_using_it_runs_as_printed_on_a_fresh_copy() {
    let commands = readme_commands();
    assert!(commands.len() >= 9, "{commands:?}");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let (port, admin, b1, b2) = (free_port(), free_port(), free_port(), free_port());
    let (demo_port, demo_admin) = (free_port(), free_port());
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/pinion.yaml")).unwrap();
    let private = format!(
        "server:\n  pid_file: {d}/pinion.pid\n  upgrade_sock: {d}/upgrade.sock\n  control_sock: {d}/control.sock\n",
        d = dir.path().display()
    );
    let ports = |text: &str| {
        text.replace("0.0.0.0:8443", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:9900", &format!("127.0.0.1:{admin}"))
            .replace("127.0.0.1:9443", &format!("127.0.0.1:{b1}"))
            .replace("127.0.0.1:9444", &format!("127.0.0.1:{b2}"))
    };
    assert!(
        example.contains("\nserver:\n"),
        "the example has a server section"
    );
    std::fs::write(
        conf.join("pinion.yaml"),
        ports(&example).replacen("\nserver:\n", &format!("\n{private}"), 1),
    )
    .unwrap();
    let mut procs = Processes {
        children: Vec::new(),
        pid_file: dir.path().join("pinion.pid"),
    };
    let run = |args: &[String]| {
        let mut c = pinion();
        c.args(args).current_dir(dir.path());
        let out = captured(c, Duration::from_secs(60));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    // A command that keeps running (a gateway, the demo), in the copy's directory.
    let spawn = |args: &[String]| {
        pinion()
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut backends = Vec::new();
    let mut pins = Vec::new();
    for command in &commands {
        let words: Vec<String> = ports(command)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        match words
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["make", "example"] => {
                let makefile =
                    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Makefile"))
                        .unwrap();
                assert!(
                    makefile.contains("pinion demo --write-config conf\n"),
                    "make example runs `pinion demo --write-config conf`"
                );
                let args = ["demo", "--write-config", "conf"].map(String::from);
                let (code, out) = run(&args);
                assert_eq!(code, Some(0), "{out}");
                // The backends the example's pool names, presenting the generated key.
                let cert = std::fs::read(conf.join("certs/api-backend.pem")).unwrap();
                let key = std::fs::read(conf.join("certs/api-backend.key")).unwrap();
                let identity = Identity {
                    cert: openssl::x509::X509::from_pem(&cert).unwrap(),
                    key: openssl::pkey::PKey::private_key_from_pem(&key).unwrap(),
                };
                for b in [b1, b2] {
                    let bind = format!("127.0.0.1:{b}");
                    backends.push(Backend::https("example-backend", &identity, &bind).unwrap());
                }
            }
            ["pinion", "demo"] => {
                let (port, admin) = (demo_port.to_string(), demo_admin.to_string());
                let args = ["demo", "--port", &port, "--admin-port", &admin].map(String::from);
                procs.children.push(spawn(&args));
                wait_for("the demo", Duration::from_secs(30), || listening(demo_port));
                assert_eq!(get(demo_port, "localhost", "/hello").status, 200);
            }
            ["pinion", "-t", "-c", _] => {
                let (code, out) = run(&words[1..]);
                assert_eq!(code, Some(0), "{command}: {out}");
                assert!(out.contains("configuration ok"), "{out}");
            }
            ["pinion", "-c", _] => {
                procs.children.push(spawn(&words[1..]));
                wait_for("the gateway", Duration::from_secs(30), || listening(port));
                wait_for("the admin listener", Duration::from_secs(30), || {
                    listening(admin)
                });
                let r = get(port, "www.contoso.com", "/api/hello");
                assert_eq!(r.status, 200, "{}", r.body);
                assert_eq!(r.body, "example-backend /api/hello\n");
            }
            ["pinion", "-u", "-c", _] => {
                let old = pid(&procs.pid_file);
                let sock = dir.path().join("upgrade.sock");
                let _ = std::fs::remove_file(&sock);
                let child = spawn(&words[1..]);
                let new = child.id() as i32;
                procs.children.push(child);
                // Once the new process waits for the sockets, SIGQUIT makes the old one send them.
                wait_for("the upgrade socket", Duration::from_secs(30), || {
                    sock.exists().then_some(())
                });
                kill(Pid::from_raw(old), Signal::SIGQUIT).unwrap();
                wait_for(
                    "the new process to take over",
                    Duration::from_secs(30),
                    || {
                        (std::fs::read_to_string(&procs.pid_file).ok()?.trim() == new.to_string())
                            .then_some(())
                    },
                );
                wait_for("the old process to exit", Duration::from_secs(30), || {
                    exited(old).then_some(())
                });
                assert_eq!(get(port, "www.contoso.com", "/api/after").status, 200);
            }
            ["pinion", "pin", ..] => {
                let (code, out) = run(&words[1..]);
                assert_eq!(code, Some(0), "{command}: {out}");
                let pin = out
                    .split_whitespace()
                    .find(|w| w.len() == 44 && w.ends_with('='))
                    .unwrap_or_else(|| panic!("{command}: no pin in {out}"))
                    .to_owned();
                pins.push(pin);
            }
            ["pinion", "preflight", "-c", _] => {
                let (code, out) = run(&words[1..]);
                assert_eq!(code, Some(0), "{command}: {out}");
                assert_eq!(out.matches(" yes ").count(), 2, "{out}");
            }
            ["pinion", "reload", "-c", _] | ["pinion", "upgrade", "-c", _] => {
                let before = pid(&procs.pid_file);
                let (code, out) = run(&words[1..]);
                assert_eq!(code, Some(0), "{command}: {out}");
                if words[1] == "upgrade" {
                    assert_ne!(pid(&procs.pid_file), before, "{out}");
                }
                assert_eq!(get(port, "www.contoso.com", "/api/x").status, 200);
            }
            other => panic!("the README shows a command this test does not know: {other:?}"),
        }
    }
    assert_eq!(pins.len(), 2, "{commands:?}");
    assert_eq!(
        pins[0], pins[1],
        "the file's pin is the pin the live backend presents"
    );
    drop(backends);
}
