//! Backends that are down or silent get clean gateway errors.

use crate::harness::{free_port, get, Env};
use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc;

#[test]
fn a_server_that_refuses_connections_gives_502_and_one_log_line() {
    let env = Env::new();
    let dead = free_port();
    let yaml = format!(
        "{}pools:\n  - name: gone\n    servers: [127.0.0.1:{dead}]\nroutes:\n  - name: all\n    pool: gone\n",
        env.listeners()
    );
    let gw = env.start(&yaml);
    let r = get(gw.port(), "h", "/");
    assert_eq!((r.status, r.body.as_str()), (502, "502 Bad Gateway\n"));
    gw.log_line(&[
        "route all",
        "pool gone",
        &format!("127.0.0.1:{dead}"),
        "502",
    ]);
}

#[test]
fn a_server_that_never_answers_gives_504_after_request_seconds() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (release, hold) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut conn, _) = silent.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf);
        let _ = hold.recv();
    });
    let env = Env::new();
    let yaml = format!(
        "{}pools:\n  - name: slow\n    servers: [127.0.0.1:{port}]\n    timeouts:\n      request_seconds: 1\nroutes:\n  - name: all\n    pool: slow\n",
        env.listeners()
    );
    let gw = env.start(&yaml);
    let r = get(gw.port(), "h", "/");
    release.send(()).ok();
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "504 Gateway Timeout\n"),
        "{}",
        gw.logs()
    );
    gw.log_line(&["pool slow", "timed out, answered 504"]);
}
