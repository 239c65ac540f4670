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
    let no_certificate = get(port, "localhost", "/mtls/hello");
    let dir = std::env::temp_dir().join(format!("pinion-demo-{}", child.id()));
    let with_certificate = mtls_get(port, &dir);
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
    assert_eq!(no_certificate.status, 403);
    assert_eq!(
        with_certificate,
        "trusted-backend /mtls/hello (client CN=demo-client)\n"
    );
    assert!(printed.contains("--cert"), "{printed}");
    assert_eq!(status.status, 200);
    assert!(status.body.contains("\"untrusted\""), "{}", status.body);
    assert!(
        printed.contains(&format!("curl -k https://localhost:{port}/untrusted/hello")),
        "{printed}"
    );
}

/// GET /mtls/hello presenting the client certificate the demo wrote into `dir`; the body.
fn mtls_get(port: u16, dir: &std::path::Path) -> String {
    use openssl::pkey::PKey;
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    use openssl::x509::X509;
    use std::io::Write;
    let cert = X509::from_pem(&std::fs::read(dir.join("client.pem")).unwrap()).unwrap();
    let key = PKey::private_key_from_pem(&std::fs::read(dir.join("client.key")).unwrap()).unwrap();
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_certificate(&cert).unwrap();
    b.set_private_key(&key).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = b.build().connect("localhost", tcp).unwrap();
    s.write_all(b"GET /mtls/hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}
