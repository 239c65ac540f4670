//! A plain HTTP/1.1 server that answers the first request of each connection and keeps the
//! connection open, then closes it without a byte of answer when a second request arrives: the
//! race every keep-alive pool meets when a server's idle timeout fires as a request comes.

use std::io::{BufRead, BufReader, Read, Write};
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

/// Reads one request (header and `Content-Length` body); `None` at the end of the connection.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    r.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        r.read_line(&mut header).ok().filter(|n| *n > 0)?;
        if header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).ok()?;
    Some(line.trim_end().to_owned())
}

fn serve(stream: TcpStream, n: usize, seen: &Seen) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(stream);
    let Some(first) = read_request(&mut r) else {
        return;
    };
    seen.requests.lock().unwrap().push(first);
    let body = format!("connection {n}\n");
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if out.write_all(answer.as_bytes()).is_err() {
        return;
    }
    // The second request is read whole, so the close is a clean FIN and not a reset.
    if let Some(second) = read_request(&mut r) {
        seen.requests.lock().unwrap().push(second);
    }
}
