//! The client-facing side: SNI certificates, TLS policy, HTTP/2 and WebSocket.

use crate::harness::client::{block_on, h2_client, read_head};
use crate::harness::{plain_pool, Backend, Ca, Conn, Env, Identity};
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode, SslVersion};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What a test client offers in its ClientHello.
#[derive(Default, Clone, Copy)]
struct Hello<'a> {
    sni: Option<&'a str>,
    min: Option<SslVersion>,
    max: Option<SslVersion>,
    ciphers: Option<&'a str>,
    alpn: Option<&'a [u8]>,
}

fn handshake(port: u16, hello: Hello<'_>) -> Result<SslStream<TcpStream>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    // Security level 0 lets this client offer old versions, so refusals come from the server.
    b.set_cipher_list(hello.ciphers.unwrap_or("DEFAULT:@SECLEVEL=0"))
        .unwrap();
    b.set_min_proto_version(hello.min).unwrap();
    b.set_max_proto_version(hello.max).unwrap();
    if let Some(alpn) = hello.alpn {
        b.set_alpn_protos(alpn).unwrap();
    }
    let mut cfg = b.build().configure().unwrap();
    cfg.set_use_server_name_indication(hello.sni.is_some());
    cfg.set_verify_hostname(false);
    cfg.connect(hello.sni.unwrap_or(""), tcp)
        .map_err(|e| e.to_string())
}

fn presented_cn(s: &SslStream<TcpStream>) -> String {
    let cert = s.ssl().peer_certificate().unwrap();
    let cn = cert
        .subject_name()
        .entries()
        .next()
        .unwrap()
        .data()
        .to_string()
        .unwrap();
    cn
}

#[test]
fn sni_chooses_the_certificate_and_sends_its_chain() {
    let root = Ca::new("Root");
    let inter = root.intermediate("Intermediate");
    let env = Env::new();
    let d = env.path();
    Identity::self_signed(&["default.example"]).write(d, "default");
    let www = inter.issue(&["www.example.com"]);
    let (www_pem, _) = www.write(d, "www");
    let mut chain = std::fs::read(&www_pem).unwrap();
    chain.extend(inter.cert().to_pem().unwrap());
    std::fs::write(&www_pem, chain).unwrap();
    Identity::self_signed(&["*.wild.example"]).write(d, "wild");
    let backend = Backend::plain("b");
    let yaml = format!(
        "listeners:\n  - name: https\n    bind: 127.0.0.1:{}\n    tls:\n      certificates:\n        - {{cert: default.pem, key: default.key}}\n        - {{cert: www.pem, key: www.key}}\n        - {{cert: wild.pem, key: wild.key}}\n{}",
        env.port,
        plain_pool(&backend)
    );
    let gw = env.start(&yaml);
    let port = gw.port();
    let cn = |sni| {
        presented_cn(
            &handshake(
                port,
                Hello {
                    sni,
                    ..Hello::default()
                },
            )
            .unwrap(),
        )
    };
    assert_eq!(cn(Some("www.example.com")), "www.example.com");
    assert_eq!(cn(Some("WWW.Example.COM")), "www.example.com");
    assert_eq!(cn(Some("a.wild.example")), "*.wild.example");
    assert_eq!(cn(Some("a.b.wild.example")), "default.example");
    assert_eq!(cn(Some("unknown.example")), "default.example");
    assert_eq!(cn(None), "default.example");
    let s = handshake(
        port,
        Hello {
            sni: Some("www.example.com"),
            ..Hello::default()
        },
    )
    .unwrap();
    let chain = s.ssl().peer_cert_chain().unwrap();
    assert_eq!(chain.len(), 2, "leaf and intermediate are sent");
    assert_eq!(
        chain
            .get(1)
            .unwrap()
            .subject_name()
            .entries()
            .next()
            .unwrap()
            .data()
            .to_string()
            .unwrap(),
        "Intermediate"
    );
}

fn listener_with(env: &Env, tls_extra: &str) -> String {
    format!(
        "listeners:\n  - name: https\n    bind: 127.0.0.1:{}\n    tls:\n      certificates:\n        - cert: front.pem\n          key: front.key\n{tls_extra}",
        env.port
    )
}

/// A server that accepts TLS 1.1, to show the test client really offers it.
fn tls11_server() -> u16 {
    let id = Identity::self_signed(&["old.example"]);
    let mut b = id.acceptor_builder().unwrap();
    b.set_cipher_list("DEFAULT:@SECLEVEL=0").unwrap();
    b.clear_options(openssl::ssl::SslOptions::NO_TLSV1_1);
    b.set_min_proto_version(Some(SslVersion::TLS1_1)).unwrap();
    let acceptor = b.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Some(Ok(tcp)) = listener.incoming().next() {
            let _ = acceptor.accept(tcp);
        }
    });
    port
}

#[test]
fn tls_versions_below_the_minimum_are_refused() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let yaml = listener_with(&env, "") + &plain_pool(&backend);
    let gw = env.start(&yaml);
    let tls11 = Hello {
        min: Some(SslVersion::TLS1_1),
        max: Some(SslVersion::TLS1_1),
        ..Hello::default()
    };
    assert_eq!(
        handshake(tls11_server(), tls11)
            .unwrap()
            .ssl()
            .version_str(),
        "TLSv1.1",
        "control: this client does speak TLS 1.1"
    );
    assert!(
        handshake(gw.port(), tls11).is_err(),
        "TLS 1.1 must be refused by default"
    );
    let tls12 = Hello {
        max: Some(SslVersion::TLS1_2),
        ..tls11
    };
    assert!(
        handshake(gw.port(), tls12).is_ok(),
        "the same client with TLS 1.2 is accepted"
    );

    let backend = Backend::plain("b");
    let env = Env::new();
    let yaml = listener_with(&env, "      min_version: \"1.3\"\n") + &plain_pool(&backend);
    let gw = env.start(&yaml);
    let only12 = Hello {
        max: Some(SslVersion::TLS1_2),
        ..Hello::default()
    };
    assert!(
        handshake(gw.port(), only12).is_err(),
        "min_version 1.3 refuses TLS 1.2"
    );
    let s = handshake(gw.port(), Hello::default()).unwrap();
    assert_eq!(s.ssl().version_str(), "TLSv1.3");
}

#[test]
fn ciphers_outside_the_list_are_refused() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let yaml = listener_with(
        &env,
        "      max_version: \"1.2\"\n      ciphers: ECDHE-ECDSA-AES128-GCM-SHA256\n",
    ) + &plain_pool(&backend);
    let gw = env.start(&yaml);
    let tls12 = |ciphers| Hello {
        max: Some(SslVersion::TLS1_2),
        ciphers: Some(ciphers),
        ..Hello::default()
    };
    assert!(handshake(gw.port(), tls12("ECDHE-ECDSA-AES256-GCM-SHA384")).is_err());
    let s = handshake(gw.port(), tls12("ECDHE-ECDSA-AES128-GCM-SHA256")).unwrap();
    assert_eq!(
        s.ssl().current_cipher().unwrap().name(),
        "ECDHE-ECDSA-AES128-GCM-SHA256"
    );
}

/// Sends one HTTP/2 GET and returns (negotiated ALPN, status, body, what the backend saw).
fn h2_get(port: u16, authority: &str, path: &str) -> Result<(u16, String), String> {
    block_on(async {
        let mut client = h2_client(port).await?;
        let req = http::Request::get(format!("https://{authority}{path}"))
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).map_err(|e| e.to_string())?;
        let resp = resp.await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = body.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        Ok((status, String::from_utf8_lossy(&out).to_string()))
    })
}

#[test]
fn http2_clients_are_served_over_http1_backends_and_http2_can_be_turned_off() {
    let key = Identity::self_signed(&["api.internal"]);
    let backend = Backend::https("h1", &key);
    let env = Env::new();
    key.write(env.path(), "k");
    let pools = format!(
        "  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\n    tls:\n      pins:\n        - cert: k.pem\n",
        backend.port
    );
    let routes = "  - name: www\n    hosts: [www.example.com]\n    pool: p\n";
    let gw = env.serve(&pools, routes);
    let (status, body) = h2_get(gw.port(), "www.example.com", "/a/../h2?x=1").unwrap();
    assert_eq!((status, body.as_str()), (200, "h1 /h2?x=1\n"));
    let seen = &backend.requests()[0];
    assert_eq!(
        seen.header("host"),
        Some("www.example.com"),
        ":authority becomes Host"
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        h2_get(gw.port(), "other.example", "/").unwrap().0,
        404,
        "routing uses :authority"
    );

    let env = Env::new();
    let yaml = listener_with(&env, "      http2: false\n") + &plain_pool(&Backend::plain("b"));
    let gw = env.start(&yaml);
    assert_eq!(
        h2_get(gw.port(), "x", "/"),
        Err("h2 not negotiated".to_owned())
    );
}

#[test]
fn idle_client_connections_are_closed_after_75_seconds_over_http1_and_http2() {
    let env = Env::new();
    let backend = Backend::plain("b");
    let yaml = listener_with(&env, "") + &plain_pool(&backend);
    let gw = env.start(&yaml);
    let port = gw.port();
    let h1 = std::thread::spawn(move || {
        let mut c = Conn::tls(port);
        let r = c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.status, 200);
        let idle = Instant::now();
        assert!(
            c.wait_closed(),
            "the server sent bytes on an idle connection"
        );
        idle.elapsed()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let h2_idle = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        b.set_alpn_protos(b"\x02h2").unwrap();
        let ssl = b
            .build()
            .configure()
            .unwrap()
            .into_ssl("localhost")
            .unwrap();
        let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
        std::pin::Pin::new(&mut tls).connect().await.unwrap();
        let (client, conn) = h2::client::handshake(tls).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let req = http::Request::get("https://h/").body(()).unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 200);
        let idle = Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(120), conn).await;
        idle.elapsed()
    });
    let h1_idle = h1.join().unwrap();
    for (what, idle) in [("HTTP/1.1", h1_idle), ("HTTP/2", h2_idle)] {
        assert!(
            idle >= Duration::from_secs(74) && idle < Duration::from_secs(100),
            "{what}: closed after {idle:?}, expected 75 s"
        );
    }
}

/// A WebSocket echo server behind TLS: answers the upgrade, then echoes frames back.
fn websocket_backend(identity: &Identity) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = identity.acceptor_builder().unwrap().build();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut s) = acceptor.accept(tcp.unwrap()) else {
                continue;
            };
            let head = read_head(&mut s);
            if !head.to_ascii_lowercase().contains("upgrade: websocket") {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                continue;
            }
            let key = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Sec-WebSocket-Key: ")
                        .or_else(|| l.strip_prefix("sec-websocket-key: "))
                })
                .unwrap()
                .trim()
                .to_owned();
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(&key)
            );
            s.write_all(resp.as_bytes()).unwrap();
            // Echo every frame, unmasked, with the server's own prefix.
            while let Some(payload) = read_frame(&mut s) {
                let reply = [b"echo: ".as_slice(), &payload].concat();
                s.write_all(&frame(&reply, None)).unwrap();
            }
        }
    });
    port
}

fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    let digest =
        openssl::sha::sha1(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// A final text frame; masked when `mask` is given (client to server).
fn frame(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x81];
    let len = payload.len();
    let m = if mask.is_some() { 0x80 } else { 0 };
    assert!(len < 126);
    out.push(m | len as u8);
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

fn read_frame(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let len = (h[1] & 0x7f) as usize;
    let mask = if h[1] & 0x80 != 0 {
        let mut k = [0u8; 4];
        s.read_exact(&mut k).ok()?;
        Some(k)
    } else {
        None
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    if let Some(k) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Some(payload)
}

#[test]
fn websocket_upgrades_pass_through_in_both_directions() {
    let key = Identity::self_signed(&["ws.internal"]);
    let port = websocket_backend(&key);
    let env = Env::new();
    key.write(env.path(), "k");
    let pools = format!("  - name: ws\n    probe: false\n    servers: [127.0.0.1:{port}]\n    tls:\n      pins:\n        - cert: k.pem\n");
    let gw = env.serve(&pools, "  - name: ws\n    pool: ws\n");
    let mut s = handshake(
        gw.port(),
        Hello {
            sni: Some("localhost"),
            ..Hello::default()
        },
    )
    .unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    for msg in ["hello", "second message"] {
        s.write_all(&frame(msg.as_bytes(), Some([1, 2, 3, 4])))
            .unwrap();
        let reply = read_frame(&mut s).unwrap();
        assert_eq!(String::from_utf8(reply).unwrap(), format!("echo: {msg}"));
    }
}
