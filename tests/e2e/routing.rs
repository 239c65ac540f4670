//! Host and path routing, normalization, balancing and plain-HTTP hops.

use crate::harness::{get, request, Backend, Conn, Env, Identity};

fn pinned_pool(env: &Env, name: &str, backends: &[&Backend], key: &Identity) -> String {
    key.write(env.path(), name);
    let servers: Vec<String> = backends
        .iter()
        .map(|b| format!("127.0.0.1:{}", b.port))
        .collect();
    format!(
        "  - name: {name}\n    servers: [{}]\n    tls:\n      pins:\n        - cert: {name}.pem\n",
        servers.join(", ")
    )
}

#[test]
fn hosts_and_paths_route_first_match_in_file_order() {
    let key = Identity::self_signed(&["b.internal"]);
    let (www, wild, images, fallback) = (
        Backend::https("www", &key),
        Backend::https("wild", &key),
        Backend::https("images", &key),
        Backend::https("fallback", &key),
    );
    let env = Env::new();
    let pools = [
        pinned_pool(&env, "www", &[&www], &key),
        pinned_pool(&env, "wild", &[&wild], &key),
        pinned_pool(&env, "images", &[&images], &key),
        pinned_pool(&env, "fallback", &[&fallback], &key),
    ]
    .concat();
    let routes = r#"routes:
  - name: images
    hosts: [www.contoso.com]
    paths: ["/images/*"]
    pool: images
  - name: www
    hosts: [www.contoso.com]
    pool: www
  - name: wild
    hosts: ["*.contoso.com"]
    paths: ["/app*", "/exact"]
    pool: wild
  - name: fallback
    hosts: [other.example]
    pool: fallback
"#;
    let yaml = format!("{}pools:\n{pools}{routes}", env.listeners());
    let gw = env.start(&yaml);
    let port = gw.port();
    let backend_of = |host: &str, path: &str| {
        let r = get(port, host, path);
        match r.status {
            200 => r.header("x-backend").unwrap().to_owned(),
            other => other.to_string(),
        }
    };
    assert_eq!(backend_of("www.contoso.com", "/images/a.png"), "images");
    assert_eq!(backend_of("WWW.Contoso.COM:443", "/images/a.png"), "images");
    assert_eq!(backend_of("www.contoso.com", "/images"), "www");
    assert_eq!(backend_of("www.contoso.com", "/"), "www");
    assert_eq!(backend_of("a.contoso.com", "/app"), "wild");
    assert_eq!(backend_of("a.b.contoso.com", "/application/x"), "wild");
    assert_eq!(backend_of("a.contoso.com", "/exact"), "wild");
    assert_eq!(backend_of("a.contoso.com", "/exact/"), "404");
    assert_eq!(backend_of("contoso.com", "/app"), "404");
    assert_eq!(backend_of("other.example", "/anything"), "fallback");
    assert_eq!(backend_of("nobody.example", "/"), "404");
}

#[test]
fn the_backend_receives_the_normalized_path_and_query() {
    let key = Identity::self_signed(&["b.internal"]);
    let (b, admin) = (Backend::https("b", &key), Backend::https("admin", &key));
    let env = Env::new();
    let pools = [
        pinned_pool(&env, "b", &[&b], &key),
        pinned_pool(&env, "admin", &[&admin], &key),
    ]
    .concat();
    let routes = r#"routes:
  - name: admin
    paths: ["/admin/*"]
    pool: admin
  - name: b
    paths: ["/b", "/public/*"]
    pool: b
"#;
    let yaml = format!("{}pools:\n{pools}{routes}", env.listeners());
    let gw = env.start(&yaml);
    let r = get(gw.port(), "h", "/a/../b?x=1&y=%2F");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "b /b?x=1&y=%2F\n");
    assert_eq!(get(gw.port(), "h", "/%62").body, "b /b\n");
    assert_eq!(
        get(gw.port(), "h", "/public/./x//y").body,
        "b /public/x/y\n"
    );
    // Traversal above the root and encoded slashes that would change the route: 400.
    assert_eq!(get(gw.port(), "h", "/../b").status, 400);
    assert_eq!(get(gw.port(), "h", "/public/..%2Fadmin/x").status, 400);
    assert_eq!(
        get(gw.port(), "h", "/public/%2e%2e/admin/x").body,
        "admin /admin/x\n"
    );
    assert_eq!(get(gw.port(), "h", "/b%00").status, 400);
    assert_eq!(get(gw.port(), "h", "/b%zz").status, 400);
    // Each 400 is logged with the path and the reason.
    for (path, reason) in [
        ("/../b", "path climbs above the root"),
        ("/public/..%2Fadmin/x", "encoded '/' changes the route"),
        ("/b%00", "encoded NUL in path"),
        ("/b%zz", "malformed percent-encoding"),
    ] {
        gw.log_line(&["400 for h", &format!("{path:?}"), reason]);
    }
    let targets: Vec<String> = admin.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(
        targets,
        ["/admin/x"],
        "only the normalized admin path reached the admin pool"
    );
}

#[test]
fn weighted_round_robin_spreads_requests_by_weight() {
    let key = Identity::self_signed(&["b.internal"]);
    let (one, three) = (Backend::https("one", &key), Backend::https("three", &key));
    let env = Env::new();
    key.write(env.path(), "k");
    let yaml = format!(
        "{}pools:\n  - name: p\n    servers:\n      - 127.0.0.1:{}\n      - address: 127.0.0.1:{}\n        weight: 3\n    tls:\n      pins:\n        - cert: k.pem\nroutes:\n  - name: all\n    pool: p\n",
        env.listeners(),
        one.port,
        three.port
    );
    let gw = env.start(&yaml);
    let mut conn = Conn::tls(gw.port());
    for _ in 0..40 {
        assert_eq!(conn.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
    assert_eq!((one.requests().len(), three.requests().len()), (10, 30));
}

#[test]
fn plain_http_listener_and_plain_http_backend() {
    let backend = Backend::plain("plain");
    let env = Env::new();
    let yaml = format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:{}\npools:\n  - name: p\n    servers: [127.0.0.1:{}]\nroutes:\n  - name: all\n    listeners: [http]\n    pool: p\n",
        env.port, backend.port
    );
    let gw = env.start(&yaml);
    let r = Conn::plain(gw.port()).send("GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "plain /x\n");
    assert_eq!(
        crate::harness::one(&backend.requests()[0], "x-forwarded-proto"),
        Some("http")
    );
}

#[test]
fn routes_bound_to_a_listener_do_not_match_on_another() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let other = crate::harness::free_port();
    let yaml = format!(
        "{}  - name: other\n    bind: 127.0.0.1:{other}\npools:\n  - name: p\n    servers: [127.0.0.1:{}]\nroutes:\n  - name: only-other\n    listeners: [other]\n    pool: p\n",
        env.listeners(),
        backend.port
    );
    let gw = env.start(&yaml);
    assert_eq!(get(gw.port(), "h", "/").status, 404);
    let r = Conn::plain(other).send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
}

#[test]
fn hostile_requests_get_4xx_and_the_gateway_keeps_serving() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let yaml = format!(
        "{}pools:\n  - name: p\n    servers: [127.0.0.1:{}]\nroutes:\n  - name: all\n    pool: p\n",
        env.listeners(),
        backend.port
    );
    let gw = env.start(&yaml);
    let no_host = request(gw.port(), "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(no_host.status, 400);
    for garbage in [
        "\x16\x03\x01garbage\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: h\r\n\r\n",
        "BLAH\r\n\r\n",
    ] {
        let r = Conn::tls(gw.port()).try_send(garbage);
        assert!(
            r.as_ref().is_ok_and(|r| (400..500).contains(&r.status)),
            "{garbage:?} should get a 4xx, got {:?}\n{}",
            r.map(|r| r.status),
            gw.logs()
        );
    }
    assert!(backend.requests().is_empty(), "nothing was forwarded");
    // A raw control character in the target: Pingora's parser percent-encodes it, so the
    // backend gets a well-formed path and never the raw byte.
    let r = Conn::tls(gw.port()).send("GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    let targets: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(targets, ["/%01"]);
    // A TLS handshake that is not TLS at all.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", gw.port())).unwrap();
    std::io::Write::write_all(&mut raw, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    drop(raw);
    assert_eq!(get(gw.port(), "h", "/ok").status, 200, "{}", gw.logs());
    assert!(!gw.logs().contains("panicked"), "{}", gw.logs());
}
