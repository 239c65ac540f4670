//! Backends on 127.0.0.1:0 that record everything they receive.

use super::certs::Identity;
use openssl::ssl::{SslAcceptor, SslMethod};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
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

    /// The single value of a header; panics if it appears more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} appears {} times", all.len());
        all.first().copied()
    }
}

#[derive(Default)]
struct State {
    accepted: AtomicUsize,
    handshakes: AtomicUsize,
    bytes: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
}

/// A running backend.
pub struct Backend {
    pub name: String,
    pub port: u16,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    /// An HTTPS backend presenting `identity`.
    pub fn https(name: &str, identity: &Identity) -> Backend {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_private_key(&identity.key).unwrap();
        b.set_certificate(&identity.cert).unwrap();
        Backend::start(name, Some(Arc::new(b.build())))
    }

    /// A plain-HTTP backend.
    pub fn plain(name: &str) -> Backend {
        Backend::start(name, None)
    }

    fn start(name: &str, tls: Option<Arc<SslAcceptor>>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, n) = (state.clone(), stop.clone(), name.to_owned());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let (s, tls, n) = (s.clone(), tls.clone(), n.clone());
                std::thread::spawn(move || serve(stream, tls, &s, &n));
            }
        });
        Backend {
            name: name.to_owned(),
            port,
            state,
            stop,
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
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
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
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

/// Reads requests (keep-alive) and answers each with `200 NAME TARGET`.
fn exchange(mut s: impl Read + Write, state: &State, name: &str) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut lines = head.split("\r\n");
            let mut first = lines.next().unwrap_or("").split(' ');
            let method = first.next().unwrap_or("").to_owned();
            let target = first.next().unwrap_or("").to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let body_len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + body_len {
                break;
            }
            buf.drain(..end + 4 + body_len);
            let close = headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close")
            });
            let body = format!("{name} {target}\n");
            state.requests.lock().unwrap().push(Recorded {
                method,
                target,
                headers,
            });
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: {name}\r\nContent-Length: {}\r\n\r\n{body}",
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
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
