//! Backends that are down or silent get clean gateway errors.

use crate::harness::{free_port, get, Backend, Env};
use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    let asked = Instant::now();
    let r = get(gw.port(), "h", "/");
    let waited = asked.elapsed();
    release.send(()).ok();
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "504 Gateway Timeout\n"),
        "{}",
        gw.logs()
    );
    // Not before request_seconds (1), and well before the 20 s default: the pool's value applied.
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(20),
        "answered after {waited:?}"
    );
    gw.log_line(&["pool slow", "timed out, answered 504"]);
}

#[test]
fn a_get_that_times_out_on_a_pooled_connection_is_answered_504_once_and_not_replayed() {
    let (a, b) = (Backend::plain("a"), Backend::plain("b"));
    let env = Env::new();
    let yaml = format!(
        "{}pools:\n  - name: slow\n    probe: false\n    retries: 2\n    servers: [127.0.0.1:{}, 127.0.0.1:{}]\n    timeouts:\n      request_seconds: 1\nroutes:\n  - name: all\n    pool: slow\n",
        env.listeners(),
        a.port,
        b.port
    );
    let gw = env.start(&yaml);
    // Round robin: a, b, a, b. Each server's connection is pooled a whole request before the
    // slow one reuses it (the case where a stale pooled connection may be replayed).
    for _ in 0..4 {
        assert_eq!(get(gw.port(), "h", "/warm").status, 200, "{}", gw.logs());
    }
    a.set_delay(Duration::from_secs(5));
    b.set_delay(Duration::from_secs(5));
    let r = get(gw.port(), "h", "/slow");
    assert_eq!(r.status, 504, "{}", gw.logs());
    let slow = |b: &Backend| b.requests().iter().filter(|r| r.target == "/slow").count();
    assert_eq!(
        slow(&a) + slow(&b),
        1,
        "the timed-out GET reached one server once\n{}",
        gw.logs()
    );
    gw.log_line(&["pool slow", "timed out, answered 504"]);
    assert!(!gw.logs().contains("retrying"), "{}", gw.logs());
}
