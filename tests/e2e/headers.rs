//! Headers toward the backend (SPEC "HTTP behaviour").

use crate::harness::{one, plain_pool, request, Backend, Env, Identity};

#[test]
fn forwarding_headers_are_set_by_the_gateway_and_spoofed_ones_dropped() {
    let key = Identity::self_signed(&["b.internal"]);
    let backend = Backend::https("b", &key);
    let env = Env::new();
    key.write(env.path(), "k");
    let yaml = format!(
        "{}pools:\n  - name: p\n    servers: [127.0.0.1:{}]\n    tls:\n      pins:\n        - cert: k.pem\nroutes:\n  - name: all\n    pool: p\n",
        env.listeners(),
        backend.port
    );
    let gw = env.start(&yaml);
    let port = gw.port();
    let r = request(
        port,
        "GET /x HTTP/1.1\r\nHost: WWW.Example.com:8443\r\nX-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 1\r\nX-Original-Host: evil.example\r\nX-Request-Id: spoofed\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nCF-Connecting-IP: 6.6.6.6\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", gw.logs());
    let seen = &backend.requests()[0];
    assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(one(seen, "x-forwarded-proto"), Some("https"));
    assert_eq!(
        one(seen, "x-forwarded-port"),
        Some(port.to_string().as_str())
    );
    assert_eq!(one(seen, "x-forwarded-host"), Some("WWW.Example.com:8443"));
    assert_eq!(one(seen, "x-original-host"), Some("WWW.Example.com:8443"));
    assert_eq!(
        one(seen, "host"),
        Some("WWW.Example.com:8443"),
        "Host is preserved"
    );
    assert!(seen.all("forwarded").is_empty());
    for name in ["x-real-ip", "true-client-ip", "cf-connecting-ip"] {
        assert!(seen.all(name).is_empty(), "spoofed {name} is removed");
    }
    let id = one(seen, "x-request-id").unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");

    request(
        port,
        "GET /y HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    let second = &backend.requests()[1];
    assert_ne!(one(second, "x-request-id"), Some(id), "ids are per request");
    assert!(!backend
        .requests()
        .iter()
        .flat_map(|r| r.headers.iter())
        .any(|(_, v)| v.contains("6.6.6.6")
            || v.contains("7.7.7.7")
            || v.contains("evil")
            || v == "spoofed"));
}

#[test]
fn hop_by_hop_headers_never_reach_the_backend() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let yaml = env.listeners() + &plain_pool(&backend);
    let gw = env.start(&yaml);
    let hop_by_hop = [
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "Proxy-Authorization: Basic Zm9vOmJhcg==",
        "Proxy-Authenticate: Basic",
        "TE: trailers",
        "Trailer: X-Checksum",
        "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA",
    ];
    // Each alone (nothing else in the request is hop-by-hop, not even Connection), then all
    // of them with Connection.
    let mut raws: Vec<String> = hop_by_hop
        .iter()
        .map(|h| format!("GET /hop HTTP/1.1\r\nHost: h\r\n{h}\r\nX-Kept: yes\r\n\r\n"))
        .collect();
    raws.push(format!(
        "GET /hop HTTP/1.1\r\nHost: h\r\n{}\r\nConnection: keep-alive\r\nX-Kept: yes\r\n\r\n",
        hop_by_hop.join("\r\n")
    ));
    for (i, raw) in raws.iter().enumerate() {
        assert_eq!(request(gw.port(), raw).status, 200, "{}", gw.logs());
        let seen = &backend.requests()[i];
        assert_eq!(one(seen, "x-kept"), Some("yes"), "end-to-end headers pass");
        let names = hop_by_hop
            .iter()
            .map(|h| h.split(':').next().unwrap().to_ascii_lowercase())
            .chain(["connection".to_owned()]);
        for name in names {
            assert!(
                seen.all(&name).is_empty(),
                "{name} reached the backend in request {i}"
            );
        }
    }
}
