//! Test harness: certificates, backends, clients and the gateway process.

pub mod backend;
pub mod certs;
pub mod client;
pub mod closing;
pub mod dns;
pub mod gateway;
pub mod goaway;
pub mod grpc;
pub mod load;
pub mod reload;

pub use backend::{one, Backend};
pub use certs::{Ca, Identity};
pub use client::{get, request, Conn, Response};
pub use gateway::{free_port, pinion, plain_pool, Env};

use std::time::{Duration, Instant};

/// Polls `f` until it returns `Some`, or panics after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// Serves every connection to a free loopback port on its own thread; returns the port. The
/// server stops with the test process.
pub fn serve_connections(serve: impl Fn(std::net::TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let serve = std::sync::Arc::new(serve);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

/// Whether `pid` has exited (gone, or a zombie nobody reaped yet: a process that is not the
/// test's child, such as a daemon or the gateway a hand-over started).
pub fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}
