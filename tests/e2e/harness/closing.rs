//! A plain HTTP/1.1 server that answers the first request of each connection and keeps the
//! connection open, then closes it without a byte of answer when a second request arrives: the
//! race every keep-alive pool meets when a server's idle timeout fires as a request comes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Request lines that arrived, answered or not, in order.
    requests: Mutex<Vec<String>>,
}

/// The server; it stops with the test process.
pub struct ClosingBackend {
    pub port: u16,
    seen: Arc<Seen>,
}

impl ClosingBackend {
    /// Listens on a free loopback port.
    pub fn start() -> ClosingBackend {
        let seen = Arc::new(Seen::default());
        let shared = seen.clone();
        let port = super::serve_connections(move |stream| {
            let n = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
            serve(stream, n, &shared);
        });
        ClosingBackend { port, seen }
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// Request lines received (`GET / HTTP/1.1`), answered or not.
    pub fn requests(&self) -> Vec<String> {
        self.seen.requests.lock().unwrap().clone()
    }
}

/// Reads one request (head and `Content-Length` body); its request line, or `None` at the end
/// of the connection.
fn read_request(s: &mut TcpStream) -> Option<String> {
    let head = super::client::read_head(s);
    if !head.ends_with("\r\n\r\n") {
        return None;
    }
    let length = head
        .lines()
        .filter_map(|h| h.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |(_, v)| v.trim().parse().ok())?;
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).ok()?;
    head.lines().next().map(str::to_owned)
}

fn serve(mut s: TcpStream, n: usize, seen: &Seen) {
    let Some(first) = read_request(&mut s) else {
        return;
    };
    seen.requests.lock().unwrap().push(first);
    let body = format!("connection {n}\n");
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(answer.as_bytes()).is_err() {
        return;
    }
    // The second request is read whole, so the close is a clean FIN and not a reset.
    if let Some(second) = read_request(&mut s) {
        seen.requests.lock().unwrap().push(second);
    }
}
