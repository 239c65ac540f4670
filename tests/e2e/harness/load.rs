//! A steady client load for reload, upgrade and rotation tests: keep-alive HTTPS clients that
//! count answers and every connection they open. An HTTP/1.1 client reconnects after a
//! response that says `Connection: close` (announced); an HTTP/2 client after a GOAWAY. A
//! connection closed without that announcement, any status but 200, and a refused connection
//! are failures.

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
    /// Connections the server closed without announcing it (no `Connection: close` on the
    /// response before, no GOAWAY); each is also among `failures`.
    pub unannounced_closes: usize,
    /// Anything else: other statuses, connections closed without a response, refusals.
    pub failures: Vec<String>,
}

#[derive(Default)]
struct Counters {
    ok: AtomicUsize,
    reconnects: AtomicUsize,
    connections: AtomicUsize,
    unannounced: AtomicUsize,
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
                                c.unannounced.fetch_add(1, Ordering::SeqCst);
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
        self.counters.outcome()
    }
}

impl Counters {
    fn outcome(&self) -> Outcome {
        Outcome {
            ok: self.ok.load(Ordering::SeqCst),
            reconnects: self.reconnects.load(Ordering::SeqCst),
            connections: self.connections.load(Ordering::SeqCst),
            unannounced_closes: self.unannounced.load(Ordering::SeqCst),
            failures: std::mem::take(&mut *self.failures.lock().unwrap()),
        }
    }
}

/// HTTP/2 clients (the h2 crate over TLS with ALPN `h2`), each keeping `streams` GETs in flight
/// on its connection. A client opens a new connection only after the server's GOAWAY (counted
/// in `reconnects`); a connection that ends without one, a stream that was accepted and then
/// failed, and any status but 200 are failures. Streams the GOAWAY refused (above its last
/// stream id, or `REFUSED_STREAM`) were never processed and are sent again.
pub struct H2Load {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    runner: JoinHandle<()>,
}

impl H2Load {
    /// Starts `connections` HTTP/2 clients sending `GET path` to 127.0.0.1:`port`.
    pub fn start(port: u16, connections: usize, streams: usize, path: &'static str) -> H2Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (s, c) = (stop.clone(), counters.clone());
        let runner = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let tls = Arc::new(super::client::connector(Some(b"\x02h2")));
                let clients: Vec<_> = (0..connections)
                    .map(|_| {
                        let (s, c, tls) = (s.clone(), c.clone(), tls.clone());
                        tokio::spawn(h2_client(port, path, streams, tls, s, c))
                    })
                    .collect();
                for client in clients {
                    client.await.unwrap();
                }
            });
        });
        H2Load {
            stop,
            counters,
            runner,
        }
    }

    /// Stops the clients and reports.
    pub fn stop(self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        self.runner.join().unwrap();
        self.counters.outcome()
    }
}

/// Why an HTTP/2 connection is left.
enum Ended {
    /// The server sent GOAWAY: open a new connection.
    GoAway,
    /// It ended without GOAWAY (a failure already recorded), or the load stops.
    Over,
}

async fn h2_client(
    port: u16,
    path: &'static str,
    streams: usize,
    tls: Arc<openssl::ssl::SslConnector>,
    stop: Arc<AtomicBool>,
    c: Arc<Counters>,
) {
    let mut first = true;
    while !stop.load(Ordering::SeqCst) {
        let io = match super::client::tls_stream(&tls, port).await {
            Ok(io) => io,
            Err(e) => return c.fail(format!("refused: {e}")),
        };
        let client = match h2::client::handshake(io).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                client
            }
            Err(e) => return c.fail(format!("h2 handshake: {e}")),
        };
        c.connections.fetch_add(1, Ordering::SeqCst);
        if !first {
            c.reconnects.fetch_add(1, Ordering::SeqCst);
        }
        first = false;
        match h2_rounds(client, path, streams, &stop, &c).await {
            Ended::GoAway => continue,
            Ended::Over => return,
        }
    }
}

/// Sends rounds of `streams` concurrent GETs on one connection until it ends or the load stops.
async fn h2_rounds(
    client: h2::client::SendRequest<bytes::Bytes>,
    path: &'static str,
    streams: usize,
    stop: &AtomicBool,
    c: &Counters,
) -> Ended {
    // A connection error that is not the server's GOAWAY means it closed unannounced.
    let ended = |e: h2::Error| {
        if e.is_go_away() {
            Ended::GoAway
        } else {
            c.unannounced.fetch_add(1, Ordering::SeqCst);
            c.fail(format!("connection ended without GOAWAY: {e}"));
            Ended::Over
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let mut pending = Vec::new();
        let mut over = None;
        for _ in 0..streams {
            let mut ready = match client.clone().ready().await {
                Ok(ready) => ready,
                Err(e) => {
                    over = Some(ended(e));
                    break;
                }
            };
            let req = http::Request::get(format!("https://h{path}"))
                .body(())
                .unwrap();
            match ready.send_request(req, true) {
                Ok((resp, _)) => pending.push(resp),
                Err(e) => {
                    over = Some(ended(e));
                    break;
                }
            }
        }
        for resp in pending {
            match resp.await {
                Ok(r) if r.status() == 200 => {
                    c.ok.fetch_add(1, Ordering::SeqCst);
                }
                Ok(r) => c.fail(format!("status {}", r.status())),
                // Never processed (above the GOAWAY's last stream id, or refused): safe to
                // send again on a new connection.
                Err(e) if e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM) => {
                    over.get_or_insert(Ended::GoAway);
                }
                Err(e) => {
                    c.fail(format!("stream: {e}"));
                    over.get_or_insert(Ended::Over);
                }
            }
        }
        if let Some(ended) = over {
            return ended;
        }
    }
    Ended::Over
}
