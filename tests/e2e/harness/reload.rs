//! Helpers of the reload tests: callers that capture a command's output, the certificate a new
//! TLS handshake gets, and a directory laid out as Kubernetes mounts a Secret.

use super::{pinion, Identity};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `cmd` with its standard output and error captured through pipes, as `$(...)` or a
/// Python subprocess does, and fails the test unless every pipe is closed within `deadline`.
pub fn captured(mut cmd: Command, deadline: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            panic!("{cmd:?} did not return within {deadline:?}: a pipe was kept open");
        }
    }
}

/// What a finished command printed on its standard output.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `pinion SUB -c FILE` as callers that capture its output run it: directly with pipes, as
/// `out=$(...)` in sh, and through Python's `subprocess.run(capture_output=True, timeout=20)`
/// (left out, with a note, when there is no python3). Named by how each is run.
pub fn captured_callers(sub: &str, file: &Path) -> Vec<(&'static str, Command)> {
    let bin = env!("CARGO_BIN_EXE_pinion");
    let mut direct = pinion();
    direct.args([sub, "-c"]).arg(file);
    let mut sh = Command::new("sh");
    sh.args(["-c", r#"out=$("$0" "$1" -c "$2") && echo "$out""#, bin, sub])
        .arg(file);
    let mut callers = vec![("direct", direct), ("sh $(...)", sh)];
    if Command::new("python3")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let script = "import subprocess,sys\n\
            r=subprocess.run(sys.argv[1:],capture_output=True,timeout=20)\n\
            sys.stdout.write(r.stdout.decode())\n\
            sys.stderr.write(r.stderr.decode())\n\
            sys.exit(r.returncode)\n";
        let mut py = Command::new("python3");
        py.args(["-c", script, bin, sub, "-c"]).arg(file);
        callers.push(("python subprocess", py));
    } else {
        eprintln!("python3 not found: the Python subprocess caller is left out");
    }
    callers
}

/// The pin of the certificate the gateway presents to a new TLS client, and whether the
/// handshake succeeded with TLS 1.2 at most when `tls12_only`.
pub fn presented_pin(port: u16, tls12_only: bool) -> Result<String, String> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    if tls12_only {
        b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
    }
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let s = b
        .build()
        .connect("localhost", tcp)
        .map_err(|e| e.to_string())?;
    let cert = s.ssl().peer_certificate().unwrap();
    Ok(pinion::tls::Pin::of_cert(&cert).unwrap().to_string())
}

/// Lays out `dir` as the kubelet mounts a Secret: `..TIMESTAMP/` holds the files, `..data`
/// links to it, and each name links through `..data`. Switching `..data` is one rename.
pub fn secret_generation(dir: &Path, stamp: &str, identity: &Identity) {
    let real = dir.join(stamp);
    std::fs::create_dir_all(&real).unwrap();
    identity.write(&real, "tls");
    let link = dir.join("..data_tmp");
    std::os::unix::fs::symlink(stamp, &link).unwrap();
    std::fs::rename(&link, dir.join("..data")).unwrap();
    for name in ["tls.pem", "tls.key"] {
        let file = dir.join(name);
        if std::fs::symlink_metadata(&file).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &file).unwrap();
        }
    }
}
