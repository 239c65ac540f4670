//! `pinion demo` serves a whitelisted pool and refuses the non-whitelisted one.

use crate::harness::{free_port, get, pinion, wait_for};
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn demo_routes_to_the_trusted_pool_and_refuses_the_impostor() {
    let (port, admin) = (free_port(), free_port());
    let mut child = pinion()
        .args([
            "demo",
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the demo to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let ok = get(port, "localhost", "/hello");
    let refused = get(port, "localhost", "/untrusted/hello");
    let status = crate::harness::Conn::plain(admin)
        .send("GET /status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut printed = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    assert_eq!(
        (ok.status, ok.body.as_str()),
        (200, "trusted-backend /hello\n")
    );
    assert_eq!(refused.status, 502);
    assert_eq!(status.status, 200);
    assert!(status.body.contains("\"untrusted\""), "{}", status.body);
    assert!(
        printed.contains(&format!("curl -k https://localhost:{port}/untrusted/hello")),
        "{printed}"
    );
}
