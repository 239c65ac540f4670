//! A small HTTPS (or plain HTTP) origin on loopback that answers every request with
//! `200 NAME TARGET` and records what it received: the demo's backends and the tests' fixture.

use super::certs::Identity;
use openssl::error::ErrorStack;
use openssl::ssl::SslAcceptor;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How many of the latest requests a backend keeps: a long-running demo or soak must not grow
/// without bound.
pub const KEPT_REQUESTS: usize = 100_000;

/// Errors starting a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The TLS acceptor could not be built.
    #[error("TLS setup: {0}")]
    Tls(#[from] ErrorStack),
    /// The socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// Headers in arrival order.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// Every value of a header (case-insensitive name).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }
}

struct State {
    accepted: AtomicUsize,
    handshakes: AtomicUsize,
    bytes: AtomicUsize,
    closed: AtomicUsize,
    status: AtomicU16,
    delay_ms: AtomicU64,
    requests: Mutex<VecDeque<Recorded>>,
    /// Open connections by id, to reset them on `kill`; each leaves when it closes.
    connections: Mutex<HashMap<usize, TcpStream>>,
}

impl Default for State {
    fn default() -> State {
        State {
            accepted: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
            requests: Mutex::new(VecDeque::new()),
            connections: Mutex::new(HashMap::new()),
        }
    }
}

/// A running backend; it stops accepting when dropped.
pub struct Backend {
    /// The name it answers with.
    pub name: String,
    /// Its address on loopback.
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    /// An HTTPS backend presenting `identity`, on `bind` (e.g. `127.0.0.1:0`).
    pub fn https(name: &str, identity: &Identity, bind: &str) -> Result<Backend, BackendError> {
        let acceptor = identity.acceptor_builder()?.build();
        Backend::start(name, Some(Arc::new(acceptor)), bind)
    }

    /// An HTTPS backend presenting `identity` and then `chain` (intermediates, leaf's issuer
    /// first), on `bind`.
    pub fn https_with_chain(
        name: &str,
        identity: &Identity,
        chain: &[openssl::x509::X509],
        bind: &str,
    ) -> Result<Backend, BackendError> {
        let mut builder = identity.acceptor_builder()?;
        for cert in chain {
            builder.add_extra_chain_cert(cert.clone())?;
        }
        Backend::start(name, Some(Arc::new(builder.build())), bind)
    }

    /// A plain-HTTP backend on `bind`.
    pub fn plain(name: &str, bind: &str) -> Result<Backend, BackendError> {
        Backend::start(name, None, bind)
    }

    fn start(
        name: &str,
        tls: Option<Arc<SslAcceptor>>,
        bind: &str,
    ) -> Result<Backend, BackendError> {
        let bind_err = |source| BackendError::Bind {
            addr: bind.to_owned(),
            source,
        };
        let listener = TcpListener::bind(bind).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, n) = (state.clone(), stop.clone(), name.to_owned());
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let id = s.accepted.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    s.connections
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(id, clone);
                }
                let (s, tls, n) = (s.clone(), tls.clone(), n.clone());
                std::thread::spawn(move || {
                    serve(stream, tls, &s, &n);
                    s.connections
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                    s.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Ok(Backend {
            name: name.to_owned(),
            addr,
            state,
            stop,
            acceptor: Mutex::new(Some(acceptor)),
        })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received so far (the latest [`KEPT_REQUESTS`] of them).
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Application bytes received after the TLS handshake, over all connections.
    pub fn request_bytes(&self) -> usize {
        self.state.bytes.load(Ordering::SeqCst)
    }

    /// Completed TLS handshakes.
    pub fn handshakes(&self) -> usize {
        self.state.handshakes.load(Ordering::SeqCst)
    }

    /// Accepted TCP connections.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections that have ended.
    pub fn closed(&self) -> usize {
        self.state.closed.load(Ordering::SeqCst)
    }

    /// The status of every following response (default 200).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// A pause before every following response.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Stops like a crashed server: the port is closed and every open connection reset.
    /// Returns once the port is free again.
    pub fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect(self.addr);
        let handle = self
            .acceptor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        for c in self
            .state
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            let _ = c.1.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(stream: TcpStream, tls: Option<Arc<SslAcceptor>>, state: &State, name: &str) {
    match tls {
        Some(acceptor) => {
            if let Ok(s) = acceptor.accept(stream) {
                state.handshakes.fetch_add(1, Ordering::SeqCst);
                exchange(s, state, name);
            }
        }
        None => exchange(stream, state, name),
    }
}

/// Reads keep-alive requests and answers each.
fn exchange(mut s: impl Read + Write, state: &State, name: &str) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        while let Some((request, consumed)) = parse(&buf) {
            buf.drain(..consumed);
            let close = request
                .all("connection")
                .iter()
                .any(|v| v.eq_ignore_ascii_case("close"));
            // The gateway's word on the client's certificate, when it sends one (demo's /mtls/).
            let body = match request.all("x-client-cert-subject").first() {
                Some(client) => format!("{name} {} (client {client})\n", request.target),
                None => format!("{name} {}\n", request.target),
            };
            {
                let mut kept = state
                    .requests
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if kept.len() == KEPT_REQUESTS {
                    kept.pop_front();
                }
                kept.push_back(request);
            }
            let delay = state.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                std::thread::sleep(Duration::from_millis(delay));
            }
            let status = state.status.load(Ordering::SeqCst);
            let resp = format!(
                "HTTP/1.1 {status} Status\r\nContent-Type: text/plain\r\nX-Backend: {name}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).is_err() || close {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                state.bytes.fetch_add(n, Ordering::SeqCst);
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
        }
    }
}

/// One complete request at the start of `buf` (head plus Content-Length body), and its size.
fn parse(buf: &[u8]) -> Option<(Recorded, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(buf.get(..end)?);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let body_len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let total = end + 4 + body_len;
    (buf.len() >= total).then_some((
        Recorded {
            method,
            target,
            headers,
        },
        total,
    ))
}
