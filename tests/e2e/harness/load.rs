//! A steady client load for reload, upgrade and rotation tests: keep-alive HTTPS clients that
//! count answers and every connection they open. A client reconnects after a response that
//! says `Connection: close` (announced); a connection closed without a response to a request
//! sent on it, any status but 200, and a refused connection are failures.

use super::client::Conn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What each client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET path`.
    Get,
    /// `POST path/CLIENT/N` with a 2 KiB body: every target is unique, so the backend's record
    /// shows whether each POST arrived exactly once.
    Post,
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// 200 responses.
    pub ok: usize,
    /// New connections after a response that announced `Connection: close`.
    pub reconnects: usize,
    /// Every connection opened, the first of each client included.
    pub connections: usize,
    /// Anything else: other statuses, connections closed without a response, refusals.
    pub failures: Vec<String>,
}

#[derive(Default)]
struct Counters {
    ok: AtomicUsize,
    reconnects: AtomicUsize,
    connections: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Counters {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    fn connect(&self, port: u16) -> Option<Conn> {
        match Conn::try_tls(port) {
            Ok(c) => {
                self.connections.fetch_add(1, Ordering::SeqCst);
                Some(c)
            }
            Err(e) => {
                self.fail(format!("refused: {e}"));
                None
            }
        }
    }
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` keep-alive clients sending `GET path` to 127.0.0.1:`port`.
    pub fn start(port: u16, clients: usize, path: &'static str) -> Load {
        Load::with(port, clients, path, Method::Get)
    }

    /// Starts `clients` keep-alive clients sending `method` requests to 127.0.0.1:`port`.
    pub fn with(port: u16, clients: usize, path: &'static str, method: Method) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let clients = (0..clients)
            .map(|id| {
                let (stop, c) = (stop.clone(), counters.clone());
                std::thread::spawn(move || {
                    let body = "x".repeat(2048);
                    let Some(mut conn) = c.connect(port) else {
                        return;
                    };
                    let mut n = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let request = match method {
                            Method::Get => format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n"),
                            Method::Post => format!(
                                "POST {path}/{id}/{n} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            ),
                        };
                        match conn.try_send(&request) {
                            Ok(r) if r.status == 200 => {
                                c.ok.fetch_add(1, Ordering::SeqCst);
                                if r.header("connection") == Some("close") {
                                    c.reconnects.fetch_add(1, Ordering::SeqCst);
                                    match c.connect(port) {
                                        Some(next) => conn = next,
                                        None => return,
                                    }
                                }
                            }
                            Ok(r) => c.fail(format!("status {}: {}", r.status, r.body)),
                            Err(e) => {
                                c.fail(format!("request {n} of client {id}: {e}"));
                                match c.connect(port) {
                                    Some(next) => conn = next,
                                    None => return,
                                }
                            }
                        }
                        if c.failures.lock().unwrap().len() > 20 {
                            return;
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            counters,
            clients,
        }
    }

    /// 200 responses so far.
    pub fn ok(&self) -> usize {
        self.counters.ok.load(Ordering::SeqCst)
    }

    /// Stops the clients and reports.
    pub fn stop(self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.clients {
            c.join().unwrap();
        }
        let c = &self.counters;
        Outcome {
            ok: c.ok.load(Ordering::SeqCst),
            reconnects: c.reconnects.load(Ordering::SeqCst),
            connections: c.connections.load(Ordering::SeqCst),
            failures: std::mem::take(&mut *c.failures.lock().unwrap()),
        }
    }
}
