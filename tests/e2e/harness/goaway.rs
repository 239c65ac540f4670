//! A cleartext HTTP/2 server (prior knowledge, h2c) that serves one stream per connection and
//! refuses every later one with GOAWAY(NO_ERROR) naming the first as the last it processed, as
//! nginx does when a connection reaches its `keepalive_requests`. Written at the frame level so
//! the refusal is exact: the refused stream's request has arrived and is known unprocessed.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    answered: AtomicUsize,
    refused: AtomicUsize,
}

/// The server; it stops with the test process.
pub struct GoawayBackend {
    pub port: u16,
    counts: Arc<Counts>,
}

impl GoawayBackend {
    /// Listens on a free loopback port.
    pub fn start() -> GoawayBackend {
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        let port = super::serve_connections(move |stream| {
            let n = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = serve(stream, n, &shared);
        });
        GoawayBackend { port, counts }
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    /// Requests answered (200, body `connection N`).
    pub fn answered(&self) -> usize {
        self.counts.answered.load(Ordering::SeqCst)
    }

    /// Streams refused by a GOAWAY.
    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::SeqCst)
    }
}

fn frame(
    out: &mut impl Write,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = payload.len() as u32;
    let mut head = [0u8; 9];
    head[..3].copy_from_slice(&len.to_be_bytes()[1..]);
    head[3] = kind;
    head[4] = flags;
    head[5..].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.write_all(&head)?;
    out.write_all(payload)
}

fn serve(mut s: TcpStream, n: usize, counts: &Counts) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut preface = [0u8; PREFACE.len()];
    s.read_exact(&mut preface)?;
    if preface != PREFACE {
        return Ok(());
    }
    frame(&mut s, SETTINGS, 0, 0, &[])?;
    // The stream this connection serves, once its request has begun.
    let mut first: Option<u32> = None;
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head)?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload)?;
        match kind {
            SETTINGS if flags & ACK == 0 => frame(&mut s, SETTINGS, ACK, 0, &[])?,
            PING if flags & ACK == 0 => frame(&mut s, PING, ACK, 0, &payload)?,
            HEADERS if first.is_some_and(|f| f != stream) => {
                // Never processed: say so with the last stream id, then close once the client
                // has read it (a close with unread input would reset the connection instead).
                let last = first.unwrap_or(0);
                let mut goaway = last.to_be_bytes().to_vec();
                goaway.extend_from_slice(&0u32.to_be_bytes());
                frame(&mut s, GOAWAY, 0, 0, &goaway)?;
                counts.refused.fetch_add(1, Ordering::SeqCst);
                s.shutdown(Shutdown::Write)?;
                let _ = std::io::copy(&mut s, &mut std::io::sink());
                return Ok(());
            }
            HEADERS | DATA if first.is_none_or(|f| f == stream) => {
                first = Some(stream);
                if flags & END_STREAM != 0 {
                    // HPACK: indexed field 8 of the static table is `:status: 200`.
                    frame(&mut s, HEADERS, END_HEADERS, stream, &[0x88])?;
                    let body = format!("connection {n}\n");
                    frame(&mut s, DATA, END_STREAM, stream, body.as_bytes())?;
                    counts.answered.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ => {}
        }
    }
}
