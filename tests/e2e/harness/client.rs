//! Raw HTTP/1.1 clients over TLS or TCP, so tests control every byte (spoofed headers,
//! unnormalized paths).

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client connection that can carry several requests.
pub struct Conn {
    stream: Box<dyn ReadWrite>,
    buf: Vec<u8>,
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A client TLS setup that accepts the gateway's test certificate, offering `alpn` (wire
/// format, e.g. `b"\x02h2"`) when given.
pub fn connector(alpn: Option<&[u8]>) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    if let Some(protos) = alpn {
        b.set_alpn_protos(protos).unwrap();
    }
    b.build()
}

/// An async TLS connection to the gateway on 127.0.0.1:`port` with SNI `localhost`.
pub async fn tls_stream(
    connector: &SslConnector,
    port: u16,
) -> Result<tokio_openssl::SslStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let ssl = connector
        .configure()
        .and_then(|c| c.into_ssl("localhost"))
        .map_err(|e| e.to_string())?;
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    std::pin::Pin::new(&mut tls)
        .connect()
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(tls)
}

/// Runs `f` to completion on a runtime of its own (for a test's async client code).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// An HTTP/2 client over TLS to the gateway on `port`, ready for a request; the connection is
/// driven by a task on the current runtime.
pub async fn h2_client(port: u16) -> Result<h2::client::SendRequest<bytes::Bytes>, String> {
    h2_client_with(&connector(Some(b"\x02h2")), port).await
}

/// [`h2_client`] over a connector of the test's own (one that presents a client
/// certificate, say); it must offer `h2` by ALPN.
pub async fn h2_client_with(
    connector: &SslConnector,
    port: u16,
) -> Result<h2::client::SendRequest<bytes::Bytes>, String> {
    let tls = tls_stream(connector, port).await?;
    if tls.ssl().selected_alpn_protocol() != Some(b"h2") {
        return Err("h2 not negotiated".to_owned());
    }
    let (client, conn) = h2::client::handshake(tls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    client.ready().await.map_err(|e| e.to_string())
}

impl Conn {
    /// A TLS connection to the gateway on 127.0.0.1:`port` (no ALPN: HTTP/1.1).
    pub fn tls(port: u16) -> Conn {
        Conn::try_tls(port).unwrap()
    }

    /// A TLS connection from source address `from` (another 127.0.0.0/8 address).
    pub fn tls_from(port: u16, from: std::net::Ipv4Addr) -> Conn {
        Conn::try_tls_from(port, from).unwrap()
    }

    /// A TLS connection from `from`, or why the handshake failed.
    pub fn try_tls_from(port: u16, from: std::net::Ipv4Addr) -> Result<Conn, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind((from, 0).into()).unwrap();
        let tcp = rt
            .block_on(sock.connect(([127, 0, 0, 1], port).into()))
            .unwrap()
            .into_std()
            .unwrap();
        tcp.set_nonblocking(false).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let s = connector(None)
            .connect("localhost", tcp)
            .map_err(|e| e.to_string())?;
        Ok(Conn {
            stream: Box::new(s),
            buf: Vec::new(),
        })
    }

    /// A TLS connection, or the error that prevented it.
    pub fn try_tls(port: u16) -> Result<Conn, String> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let s = connector(None)
            .connect("localhost", tcp)
            .map_err(|e| e.to_string())?;
        Ok(Conn {
            stream: Box::new(s),
            buf: Vec::new(),
        })
    }

    /// Sends a request and reads the response; `Err` when the connection closes before any
    /// response byte (a keep-alive connection the server closed).
    pub fn try_send(&mut self, raw: &str) -> Result<Response, String> {
        self.stream
            .write_all(raw.as_bytes())
            .map_err(|e| e.to_string())?;
        if self.buf.is_empty() && !self.fill() {
            return Err("closed before a response".into());
        }
        Ok(self.read_response())
    }

    /// A plain TCP connection.
    pub fn plain(port: u16) -> Conn {
        Conn {
            stream: Box::new(tcp(port)),
            buf: Vec::new(),
        }
    }

    /// Sends raw bytes without reading anything.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends raw bytes and reads one response.
    pub fn send(&mut self, raw: &str) -> Response {
        self.stream.write_all(raw.as_bytes()).unwrap();
        self.read_response()
    }

    /// Blocks until the server closes the connection (read timeout: 30 s per read); `false` if
    /// the server sent bytes instead.
    pub fn wait_closed(&mut self) -> bool {
        loop {
            let mut chunk = [0u8; 64];
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => return false,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(_) => return true,
            }
        }
    }

    /// Reads until the server closes; `Err` when the connection ends in a reset (or error)
    /// rather than an end of stream, or the server sends more bytes.
    pub fn read_to_close(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 64];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
            Ok(n) => Err(format!("{n} more bytes instead of the close")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    fn read_response(&mut self) -> Response {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(
                self.fill(),
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut r = Response {
            status,
            headers,
            body: String::new(),
        };
        let body = if let Some(len) = r.header("content-length").and_then(|v| v.parse().ok()) {
            while self.buf.len() < len {
                assert!(self.fill(), "connection closed inside a body");
            }
            self.buf.drain(..len).collect::<Vec<u8>>()
        } else if r.header("transfer-encoding").is_some() {
            self.read_chunked()
        } else {
            while self.fill() {}
            std::mem::take(&mut self.buf)
        };
        r.body = String::from_utf8_lossy(&body).to_string();
        r
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(self.fill(), "connection closed inside a chunk size");
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                assert!(self.fill(), "connection closed inside a chunk");
            }
            out.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return out;
            }
        }
    }
}

/// Reads a request or response head byte by byte (nothing after it is consumed).
pub fn read_head(s: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_string()
}

fn tcp(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Sends one raw request on a new TLS connection.
pub fn request(port: u16, raw: &str) -> Response {
    Conn::tls(port).send(raw)
}

/// `GET path` with `Host: host` on a new TLS connection.
pub fn get(port: u16, host: &str, path: &str) -> Response {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}
