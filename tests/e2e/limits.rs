//! Request limits (issue 13): a request over a listener's or route's limit gets the status
//! that names the limit, over HTTP/1.1 and HTTP/2, with the listener's error page, a metric
//! and an access-log line; no byte of it reaches a backend, and the gateway keeps serving.

use crate::harness::client::{block_on, h2_client};
use crate::harness::{free_port, wait_for, Backend, Conn, Env, Response};
use crate::operations::{metrics, sample};
use std::time::Duration;

const PAGE: &str = "<h1>too large</h1>\n";

struct Fixture {
    gw: crate::harness::gateway::Gateway,
    backend: Backend,
    admin: u16,
}

fn start() -> Fixture {
    let backend = Backend::plain("b");
    let env = Env::new();
    std::fs::write(env.path().join("431.html"), PAGE).unwrap();
    let admin = free_port();
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\naccess_log:\n  path: access.log\n  format: json\n{}      http2: true\n    error_pages:\n      431: 431.html\n    limits:\n      max_header_bytes: 8KiB\n      max_headers: 20\n      max_uri_bytes: 1024\n      max_body_bytes: 1000\npools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\nroutes:\n  - name: upload\n    paths: [\"/upload\"]\n    pool: p\n    limits:\n      max_body_bytes: unlimited\n  - name: all\n    pool: p\n",
        env.listeners(),
        backend.port,
    );
    let gw = env.start(&yaml);
    Fixture { gw, backend, admin }
}

fn h1(port: u16, raw: &str) -> Response {
    Conn::tls(port).send(raw)
}

fn big_header(bytes: usize) -> String {
    format!("X-Big: {}\r\n", "a".repeat(bytes))
}

fn many_headers(n: usize) -> String {
    (0..n).map(|i| format!("X-H{i}: v\r\n")).collect()
}

#[test]
fn requests_over_a_limit_get_its_status_over_http1_and_nothing_reaches_the_backend() {
    let f = start();
    let port = f.gw.port();
    let cases = [
        (
            "header bytes",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", big_header(9000)),
            431,
        ),
        (
            "header count",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", many_headers(25)),
            431,
        ),
        (
            "uri",
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(2000)),
            414,
        ),
        (
            "declared body",
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n{}",
                "b".repeat(1001)
            ),
            413,
        ),
    ];
    for (what, raw, status) in &cases {
        let r = h1(port, raw);
        assert_eq!(r.status, *status, "{what}: {r:?}");
        assert_eq!(
            r.header("connection"),
            Some("close"),
            "{what}: the client may still be sending"
        );
        if *status == 431 {
            assert_eq!(r.body, PAGE, "{what}: the listener's error page");
        }
    }
    assert!(
        f.backend.requests().is_empty(),
        "a refused request reached the backend"
    );

    // At the limits, and on the route that lifts the body limit, requests pass.
    let ok = [
        format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", many_headers(18)),
        format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(1000)),
        format!(
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{}",
            "b".repeat(1000)
        ),
        format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n{}",
            "b".repeat(5000)
        ),
    ];
    for raw in &ok {
        let r = h1(port, raw);
        assert_eq!(r.status, 200, "{}: {r:?}", &raw[..raw.len().min(60)]);
    }
    assert_eq!(f.backend.requests().len(), ok.len());

    let m = metrics(f.admin);
    let rejected = |reason| {
        sample(
            &m,
            "pinion_requests_rejected_total",
            &[("listener", "https"), ("reason", reason)],
        )
    };
    assert_eq!(rejected("header_bytes"), 1.0);
    assert_eq!(rejected("headers"), 1.0);
    assert_eq!(rejected("uri_bytes"), 1.0);
    assert_eq!(rejected("body_bytes"), 1.0);

    // One access-log line per refused request, with its status.
    let log = f.gw.env.path().join("access.log");
    let statuses = wait_for(
        "an access-log line for every request",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            let statuses: Vec<u64> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["status"].as_u64())
                .collect();
            (statuses.len() == cases.len() + ok.len()).then_some(statuses)
        },
    );
    for code in [431, 414, 413] {
        assert!(statuses.contains(&code), "{code} not logged: {statuses:?}");
    }
}

#[test]
fn a_refused_body_still_being_sent_does_not_cost_the_client_its_answer() {
    let f = start();
    // The client writes its whole body (more than the socket buffers hold) before it reads:
    // the 413 must arrive, not a reset of a connection closed on unread bytes.
    let mut c = Conn::tls(f.gw.port());
    c.write_raw(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 800000\r\n\r\n");
    let chunk = vec![b'b'; 40_000];
    for _ in 0..20 {
        c.write_raw(&chunk);
    }
    let r = c.send("");
    assert_eq!(r.status, 413, "{r:?}");
    // A close with unread bytes is a reset, and a reset can destroy an answer still in flight.
    c.read_to_close()
        .expect("the connection ends cleanly, its body read and dropped");
    assert!(f.backend.requests().is_empty());
}

/// Sends one HTTP/2 request on a connection that then sends a plain GET; returns the first
/// response's status and body and the second's status.
fn h2_pair(
    port: u16,
    req: http::Request<()>,
    body: Option<Vec<u8>>,
) -> Result<(u16, String, u16), String> {
    block_on(async {
        let mut client = h2_client(port).await?;
        let (resp, mut stream) = client
            .send_request(req, body.is_none())
            .map_err(|e| e.to_string())?;
        if let Some(body) = body {
            stream
                .send_data(body.into(), true)
                .map_err(|e| e.to_string())?;
        }
        let resp = resp.await.map_err(|e| e.to_string())?;
        let first = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            text.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        }
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let get = http::Request::get("https://a/after").body(()).unwrap();
        let (resp, _) = client.send_request(get, true).map_err(|e| e.to_string())?;
        let second = resp.await.map_err(|e| e.to_string())?.status().as_u16();
        Ok((first, String::from_utf8_lossy(&text).into_owned(), second))
    })
}

/// What is checked, the request, its body and the status it must get.
type H2Case = (&'static str, http::Request<()>, Option<Vec<u8>>, u16);

#[test]
fn requests_over_a_limit_get_its_status_over_http2_and_the_connection_stays() {
    let f = start();
    let port = f.gw.port();
    let get = |path: &str| http::Request::get(format!("https://a{path}"));
    let cases: Vec<H2Case> = vec![
        (
            "header bytes",
            get("/").header("x-big", "a".repeat(9000)).body(()).unwrap(),
            None,
            431,
        ),
        (
            "header count",
            (0..25)
                .fold(get("/"), |b, i| b.header(format!("x-h{i}"), "v"))
                .body(())
                .unwrap(),
            None,
            431,
        ),
        (
            "uri",
            get(&format!("/{}", "u".repeat(2000))).body(()).unwrap(),
            None,
            414,
        ),
        (
            "declared body",
            http::Request::post("https://a/x")
                .header("content-length", "1001")
                .body(())
                .unwrap(),
            Some(vec![b'b'; 1001]),
            413,
        ),
    ];
    for (what, req, body, status) in cases {
        let (first, text, second) =
            h2_pair(port, req, body).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(first, status, "{what}");
        if status == 431 {
            assert_eq!(text, PAGE, "{what}: the listener's error page");
        }
        assert_eq!(second, 200, "{what}: the connection serves the next stream");
    }
    let forwarded: Vec<String> = f.backend.requests().into_iter().map(|r| r.target).collect();
    assert!(
        forwarded.iter().all(|t| t == "/after"),
        "a refused request reached the backend: {forwarded:?}"
    );
}

#[test]
fn with_default_limits_a_70_kb_header_gets_the_gateways_431_over_both_protocols() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let yaml = format!(
        "{}      http2: true\npools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\nroutes:\n  - name: all\n    pool: p\n",
        env.listeners(),
        backend.port,
    );
    let gw = env.start(&yaml);
    let r = h1(
        gw.port(),
        &format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", big_header(70_000)),
    );
    assert_eq!(r.status, 431, "{r:?}");
    let eight: String = (0..8)
        .map(|i| format!("X-Big{i}: {}\r\n", "a".repeat(20_000)))
        .collect();
    let r8 = h1(
        gw.port(),
        &format!("GET / HTTP/1.1\r\nHost: a\r\n{eight}\r\n"),
    );
    assert_eq!(r8.status, 431, "eight fields of 20 KB: {r8:?}");
    assert!(
        r.body.starts_with("431 "),
        "the gateway's own answer: {r:?}"
    );
    let req = http::Request::get("https://a/")
        .header("x-big", "a".repeat(70_000))
        .body(())
        .unwrap();
    // Past HTTP/2's own decoder limit the stream would be reset; below it, pinion answers.
    let (status, text, next) = h2_pair(gw.port(), req, None).unwrap();
    assert_eq!((status, next), (431, 200));
    assert!(
        text.starts_with("431 "),
        "the gateway's own answer, not HTTP/2's: {text:?}"
    );
    assert!(backend.requests().iter().all(|r| r.target == "/after"));
}

#[test]
fn a_body_without_a_length_is_refused_with_413_as_soon_as_it_crosses_the_limit() {
    let f = start();
    let port = f.gw.port();
    // HTTP/1.1 chunked: 600 + 600 bytes against a limit of 1000.
    let chunk = "c".repeat(600);
    let r = h1(
        port,
        &format!(
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
        ),
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    // Within the limit, and on the route without one, chunked bodies pass.
    let r = h1(
        port,
        &format!("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n0\r\n\r\n"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = h1(
        port,
        &format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");

    // HTTP/2 without content-length: 2,000 bytes against 1,000; the connection stays.
    let req = http::Request::post("https://a/x").body(()).unwrap();
    let (status, _, next) = h2_pair(port, req, Some(vec![b'b'; 2000])).unwrap();
    assert_eq!((status, next), (413, 200));

    let m = metrics(f.admin);
    let refused = sample(
        &m,
        "pinion_requests_rejected_total",
        &[("listener", "https"), ("reason", "body_bytes")],
    );
    assert_eq!(refused, 2.0);
}

const GET: &str = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn connections_over_a_cap_are_closed_unanswered_counted_and_logged_once() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let admin = free_port();
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}    limits:\n      max_connections: 3\n      max_connections_per_ip: 2\npools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\nroutes:\n  - name: all\n    pool: p\n",
        env.listeners(),
        backend.port,
    );
    let gw = env.start(&yaml);
    let port = gw.port();
    let from = |last: u8| std::net::Ipv4Addr::new(127, 0, 0, last);
    // Two from one address are admitted (each answered, so each is held by the gateway).
    let mut first = Conn::tls_from(port, from(1));
    let mut second = Conn::tls_from(port, from(1));
    assert_eq!(first.send(GET).status, 200);
    assert_eq!(second.send(GET).status, 200);
    // A third from that address is closed before its TLS handshake.
    // Refused before the TLS handshake: a connection over a cap costs the gateway none.
    let refused = |last: u8| Conn::try_tls_from(port, from(last)).is_err();
    assert!(refused(1), "over max_connections_per_ip");
    // Another address still gets in, up to the listener's total of three.
    let mut other = Conn::tls_from(port, from(2));
    assert_eq!(other.send(GET).status, 200);
    assert!(refused(3), "over max_connections");
    // A burst of refusals is one log line a second, not one per connection.
    for _ in 0..20 {
        assert!(refused(1));
    }
    // A closed connection frees its place.
    drop(first);
    wait_for("a freed place", Duration::from_secs(10), || {
        Conn::try_tls_from(port, from(1))
            .ok()?
            .try_send(GET)
            .ok()
            .filter(|r| r.status == 200)
    });
    let m = metrics(admin);
    let refusals = |reason| {
        sample(
            &m,
            "pinion_connections_refused_total",
            &[("listener", "https"), ("reason", reason)],
        )
    };
    assert!(refusals("max_connections_per_ip") >= 1.0);
    assert!(
        refusals("max_connections") >= 21.0,
        "the burst, with the listener full"
    );
    let lines = gw.logs().matches("refused").count();
    assert!(
        (1..=4).contains(&lines),
        "refusals are logged at most once a second, not per connection: {lines} lines"
    );
    assert_eq!(
        second.send(GET).status,
        200,
        "admitted connections keep working"
    );
}

fn rate_limited_gateway() -> (crate::harness::gateway::Gateway, Backend, u16) {
    let backend = Backend::plain("b");
    let env = Env::new();
    std::fs::write(env.path().join("429.json"), "{\"error\":\"slow down\"}\n").unwrap();
    let admin = free_port();
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}      http2: true\n    trusted_proxies: [127.0.0.1/32]\n    error_pages:\n      429: 429.json\n    rate_limit:\n      requests_per_second: 0.1\n      burst: 3\n      max_clients: 1000\npools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\nroutes:\n  - name: login\n    paths: [\"/login\"]\n    pool: p\n    rate_limit:\n      requests_per_second: 0.05\n      burst: 1\n  - name: all\n    pool: p\n",
        env.listeners(),
        backend.port,
    );
    (env.start(&yaml), backend, admin)
}

fn from_client(path: &str, client: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: {client}\r\n\r\n")
}

#[test]
fn a_client_over_its_rate_gets_429_with_retry_after_and_others_are_served() {
    let (gw, backend, admin) = rate_limited_gateway();
    let port = gw.port();
    let mut c = Conn::tls(port);
    for i in 0..3 {
        let r = c.send(&from_client(&format!("/a{i}"), "192.0.2.1"));
        assert_eq!(r.status, 200, "within the burst: {r:?}");
    }
    let r = c.send(&from_client("/a3", "192.0.2.1"));
    assert_eq!(r.status, 429, "{r:?}");
    // A token is back 10 s after the burst (0.1 per second).
    assert_eq!(r.header("retry-after"), Some("10"));
    assert_eq!(r.body, "{\"error\":\"slow down\"}\n");
    assert_ne!(
        r.header("connection"),
        Some("close"),
        "a bodiless request keeps its connection"
    );
    // Another client (the address after trusted-proxy resolution) has its own bucket.
    assert_eq!(c.send(&from_client("/b", "192.0.2.2")).status, 200);
    // A route's own limit, on top of the listener's.
    let r = c.send(&from_client("/login", "192.0.2.3"));
    assert_eq!(r.status, 200);
    let r = c.send(&from_client("/login", "192.0.2.3"));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("20"));
    // HTTP/2 alike; the connection stays.
    let req = http::Request::get("https://a/h2")
        .header("x-forwarded-for", "192.0.2.1")
        .body(())
        .unwrap();
    let (status, _, _) = h2_pair(port, req, None).unwrap();
    assert_eq!(status, 429);
    let forwarded: Vec<String> = backend.requests().into_iter().map(|r| r.target).collect();
    assert!(
        !forwarded.iter().any(|t| t == "/a3" || t == "/h2"),
        "a refused request reached the backend: {forwarded:?}"
    );
    let m = metrics(admin);
    let refused = sample(
        &m,
        "pinion_requests_rejected_total",
        &[("listener", "https"), ("reason", "rate_limit")],
    );
    assert_eq!(refused, 3.0);
}

#[test]
fn a_spray_of_ten_thousand_client_addresses_keeps_at_most_max_clients_buckets() {
    let (gw, _backend, admin) = rate_limited_gateway();
    let mut c = Conn::tls(gw.port());
    for n in 0..10_000u32 {
        let client = std::net::Ipv4Addr::from(0x0a00_0000 + n);
        let r = c.send(&from_client("/", &client.to_string()));
        assert_eq!(r.status, 200, "a new address has a full bucket");
    }
    let m = metrics(admin);
    let kept = sample(
        &m,
        "pinion_rate_limit_clients",
        &[("name", "https"), ("scope", "listener")],
    );
    assert!(
        (500.0..=1000.0).contains(&kept),
        "buckets kept for {kept} addresses; max_clients is 1000"
    );
}

/// Raw HTTP/2 frames, so that a test can send what a well-behaved client library refuses to.
mod raw_h2 {
    use std::io::{Read, Write};

    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const GOAWAY: u8 = 0x7;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A request block (HPACK, no Huffman, nothing indexed): GET https://a/, plus `extra`.
    pub fn request(extra: &[(&str, &str)]) -> Vec<u8> {
        // :method GET, :scheme https, :path / from the static table; :authority by name index.
        let mut block = vec![0x82, 0x87, 0x84, 0x01, 0x01, b'a'];
        for (name, value) in extra {
            block.push(0x00);
            block.push(u8::try_from(name.len()).unwrap());
            block.extend_from_slice(name.as_bytes());
            block.push(u8::try_from(value.len()).unwrap());
            block.extend_from_slice(value.as_bytes());
        }
        block
    }

    /// Reads frames until one of `kinds` arrives on `stream`, or GOAWAY; returns its kind.
    pub fn wait_for(io: &mut impl Read, stream: u32, kinds: &[u8]) -> Result<u8, String> {
        loop {
            let mut head = [0u8; 9];
            io.read_exact(&mut head).map_err(|e| e.to_string())?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            io.read_exact(&mut payload).map_err(|e| e.to_string())?;
            let on = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            if head[3] == GOAWAY || (on == stream && kinds.contains(&head[3])) {
                return Ok(head[3]);
            }
        }
    }

    pub fn send(io: &mut impl Write, bytes: &[u8]) {
        io.write_all(bytes).unwrap();
        io.flush().unwrap();
    }
}

/// An HTTP/2 connection to the gateway, past the preface and SETTINGS.
fn raw_h2_connection(port: u16) -> openssl::ssl::SslStream<std::net::TcpStream> {
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut io = crate::harness::client::connector(Some(b"\x02h2"))
        .connect("localhost", tcp)
        .unwrap();
    assert_eq!(io.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
    raw_h2::send(&mut io, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    raw_h2::send(&mut io, &raw_h2::frame(0x4, 0, 0, &[]));
    io
}

#[test]
fn malformed_http2_requests_are_refused_by_the_codec_and_never_forwarded() {
    use raw_h2::*;
    let f = start();
    // A connection-specific field is malformed in HTTP/2 (RFC 9113 §8.2.2): the codec resets
    // the stream before pinion sees the request, and the connection serves the next one.
    let mut io = raw_h2_connection(f.gw.port());
    let bad = request(&[("connection", "close")]);
    send(&mut io, &frame(HEADERS, 0x5, 1, &bad));
    assert_eq!(wait_for(&mut io, 1, &[HEADERS, RST_STREAM]), Ok(RST_STREAM));
    send(&mut io, &frame(HEADERS, 0x5, 3, &request(&[])));
    assert_eq!(wait_for(&mut io, 3, &[HEADERS, RST_STREAM]), Ok(HEADERS));
    // An upper-case field name (RFC 9113 §8.2.1): the h2 codec treats it as a connection error
    // and ends the connection with GOAWAY, stricter than the stream error §8.1.1 asks for.
    let mut io = raw_h2_connection(f.gw.port());
    send(
        &mut io,
        &frame(HEADERS, 0x5, 1, &request(&[("X-Bad", "1")])),
    );
    assert_eq!(wait_for(&mut io, 1, &[HEADERS, RST_STREAM]), Ok(GOAWAY));
    let forwarded = f.backend.requests();
    assert_eq!(
        forwarded.len(),
        1,
        "only the well-formed request: {forwarded:?}"
    );
}
