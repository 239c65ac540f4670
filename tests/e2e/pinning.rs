//! The whitelist on the data path (SPEC trust table).

use crate::harness::{get, Backend, Ca, Conn, Env, Identity};

fn pool(name: &str, backend: &Backend, tls: &str) -> String {
    format!(
        "  - name: {name}\n    servers: [127.0.0.1:{}]\n    probe: false\n    tls:\n{tls}",
        backend.port
    )
}

#[test]
fn whitelisted_self_signed_backend_answers() {
    let key = Identity::self_signed(&["backend.internal"]);
    let backend = Backend::https("good", &key);
    let env = Env::new();
    key.write(env.path(), "good");
    let yaml = format!(
        "{}pools:\n{}routes:\n  - name: all\n    pool: p\n",
        env.listeners(),
        pool("p", &backend, "      pins:\n        - cert: good.pem\n")
    );
    let gw = env.start(&yaml);
    let r = get(gw.port(), "www.example.com", "/hello");
    assert_eq!(r.status, 200, "{}", gw.logs());
    assert_eq!(r.body, "good /hello\n");
}

#[test]
fn backend_with_another_key_gets_no_request_bytes_and_the_client_gets_502() {
    let whitelisted = Identity::self_signed(&["backend.internal"]);
    let impostor = Identity::self_signed(&["backend.internal"]);
    let backend = Backend::https("impostor", &impostor);
    let env = Env::new();
    whitelisted.write(env.path(), "whitelisted");
    let yaml = format!(
        "{}pools:\n{}routes:\n  - name: all\n    pool: api\n",
        env.listeners(),
        pool(
            "api",
            &backend,
            "      pins:\n        - cert: whitelisted.pem\n"
        )
    );
    let gw = env.start(&yaml);
    for _ in 0..3 {
        let r = get(gw.port(), "www.example.com", "/secret?token=1");
        assert_eq!(r.status, 502);
        assert_eq!(r.body, "502 Bad Gateway\n");
    }
    assert!(
        backend.handshakes() >= 1,
        "the gateway never reached the backend"
    );
    assert_eq!(
        backend.request_bytes(),
        0,
        "request bytes reached a non-whitelisted backend"
    );
    assert!(backend.requests().is_empty());
    let line = gw.log_line(&["pool api", "not whitelisted"]);
    assert!(
        line.contains(&format!("127.0.0.1:{}", backend.port)),
        "{line}"
    );
    assert!(
        line.contains(&impostor.pin()),
        "the log must show the presented pin: {line}"
    );
    assert_eq!(
        gw.logs()
            .lines()
            .filter(|l| l.contains("/secret") || l.contains("Fail to proxy"))
            .count(),
        0,
        "one line per rejection, from pinion: {}",
        gw.logs()
    );
}

#[test]
fn two_pins_allow_key_rotation_and_every_pin_form_works() {
    let old = Identity::self_signed(&["api.internal"]);
    let new = Identity::self_signed(&["api.internal"]);
    let third = Identity::self_signed(&["api.internal"]);
    let (b_old, b_new, b_third) = (
        Backend::https("old", &old),
        Backend::https("new", &new),
        Backend::https("third", &third),
    );
    let env = Env::new();
    old.write(env.path(), "old");
    std::fs::write(
        env.path().join("new.pub"),
        new.cert.public_key().unwrap().public_key_to_pem().unwrap(),
    )
    .unwrap();
    let pins = format!(
        "      pins:\n        - cert: old.pem\n        - public_key: new.pub\n        - sha256: \"{}\"\n",
        third.pin()
    );
    let yaml = format!(
        "{}pools:\n  - name: rot\n    servers: [127.0.0.1:{}, 127.0.0.1:{}, 127.0.0.1:{}]\n    tls:\n{pins}routes:\n  - name: all\n    pool: rot\n",
        env.listeners(),
        b_old.port,
        b_new.port,
        b_third.port
    );
    let gw = env.start(&yaml);
    for _ in 0..6 {
        assert_eq!(get(gw.port(), "h", "/").status, 200, "{}", gw.logs());
    }
    assert_eq!(b_old.requests().len(), 2);
    assert_eq!(b_new.requests().len(), 2);
    assert_eq!(b_third.requests().len(), 2);
}

#[test]
fn ca_mode_accepts_its_chain_and_rejects_another_ca() {
    let ours = Ca::new("Our Root");
    let theirs = Ca::new("Their Root");
    let good = Backend::https("good", &ours.issue(&["api.internal"]));
    let foreign = Backend::https("foreign", &theirs.issue(&["api.internal"]));
    let wrong_name = Backend::https("wrong-name", &ours.issue(&["other.internal"]));
    let env = Env::new();
    ours.write(env.path(), "root");
    let tls = "      sni: api.internal\n      ca: root.pem\n";
    let yaml = format!(
        "{}pools:\n{}{}{}routes:\n  - name: good\n    paths: [\"/good\"]\n    pool: good\n  - name: foreign\n    paths: [\"/foreign\"]\n    pool: foreign\n  - name: name\n    paths: [\"/name\"]\n    pool: name\n",
        env.listeners(),
        pool("good", &good, tls),
        pool("foreign", &foreign, tls),
        pool("name", &wrong_name, tls)
    );
    let gw = env.start(&yaml);
    assert_eq!(get(gw.port(), "h", "/good").status, 200, "{}", gw.logs());
    assert_eq!(get(gw.port(), "h", "/foreign").status, 502);
    assert_eq!(get(gw.port(), "h", "/name").status, 502);
    assert_eq!(foreign.request_bytes(), 0);
    gw.log_line(&[
        "pool foreign",
        &format!("127.0.0.1:{}", foreign.port),
        "InvalidCert",
    ]);
    assert_eq!(wrong_name.request_bytes(), 0);
    assert_eq!(good.requests().len(), 1);
}

#[test]
fn pins_and_ca_together_require_both() {
    let ca = Ca::new("Root");
    let pinned = ca.issue(&["api.internal"]);
    let unpinned = ca.issue(&["api.internal"]);
    let self_signed_pinned = Identity::self_signed(&["api.internal"]);
    let b_pinned = Backend::https("pinned", &pinned);
    let b_unpinned = Backend::https("unpinned", &unpinned);
    let b_self = Backend::https("self", &self_signed_pinned);
    let env = Env::new();
    ca.write(env.path(), "root");
    pinned.write(env.path(), "pinned");
    self_signed_pinned.write(env.path(), "self");
    let tls = "      sni: api.internal\n      ca: root.pem\n      pins:\n        - cert: pinned.pem\n        - cert: self.pem\n";
    let yaml = format!(
        "{}pools:\n{}{}{}routes:\n  - name: a\n    paths: [\"/a\"]\n    pool: a\n  - name: b\n    paths: [\"/b\"]\n    pool: b\n  - name: c\n    paths: [\"/c\"]\n    pool: c\n",
        env.listeners(),
        pool("a", &b_pinned, tls),
        pool("b", &b_unpinned, tls),
        pool("c", &b_self, tls)
    );
    let gw = env.start(&yaml);
    assert_eq!(get(gw.port(), "h", "/a").status, 200, "{}", gw.logs());
    assert_eq!(
        get(gw.port(), "h", "/b").status,
        502,
        "CA-signed but not pinned"
    );
    assert_eq!(
        get(gw.port(), "h", "/c").status,
        502,
        "pinned but not CA-signed"
    );
    assert_eq!(b_unpinned.request_bytes() + b_self.request_bytes(), 0);
}

#[test]
fn without_pins_or_ca_the_system_store_is_required() {
    let self_signed = Identity::self_signed(&["localhost"]);
    let backend = Backend::https("self", &self_signed);
    let env = Env::new();
    let yaml = format!(
        "{}pools:\n{}routes:\n  - name: all\n    pool: sys\n",
        env.listeners(),
        pool("sys", &backend, "      sni: localhost\n")
    );
    let gw = env.start(&yaml);
    assert_eq!(get(gw.port(), "h", "/").status, 502);
    assert_eq!(backend.request_bytes(), 0);
    assert!(
        backend.handshakes() == 0,
        "an untrusted chain fails inside the handshake"
    );
    gw.log_line(&["pool sys", "502", "InvalidCert"]);
}

#[test]
fn a_connection_pooled_for_one_pin_set_is_never_used_by_another() {
    let key = Identity::self_signed(&["api.internal"]);
    let other = Identity::self_signed(&["api.internal"]);
    let backend = Backend::https("shared", &key);
    let env = Env::new();
    key.write(env.path(), "key");
    other.write(env.path(), "other");
    let yaml = format!(
        "{}pools:\n{}{}routes:\n  - name: a\n    paths: [\"/a\"]\n    pool: a\n  - name: b\n    paths: [\"/b\"]\n    pool: b\n",
        env.listeners(),
        pool("a", &backend, "      pins:\n        - cert: key.pem\n"),
        pool("b", &backend, "      pins:\n        - cert: other.pem\n")
    );
    let gw = env.start(&yaml);
    let mut conn = Conn::tls(gw.port());
    for _ in 0..3 {
        let r = conn.send("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        backend.handshakes(),
        1,
        "keep-alive to the backend reuses one connection"
    );
    for _ in 0..2 {
        assert_eq!(get(gw.port(), "h", "/b").status, 502);
    }
    let targets: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(
        targets,
        ["/a", "/a", "/a"],
        "pool b must never reach the backend"
    );
}

#[test]
fn report_mode_logs_the_mismatch_and_allows_the_request() {
    let presented = Identity::self_signed(&["api.internal"]);
    let listed = Identity::self_signed(&["api.internal"]);
    let backend = Backend::https("reported", &presented);
    let env = Env::new();
    listed.write(env.path(), "listed");
    let yaml = format!(
        "{}pools:\n{}routes:\n  - name: all\n    pool: p\n",
        env.listeners(),
        pool(
            "p",
            &backend,
            "      pin_mode: report\n      pins:\n        - cert: listed.pem\n"
        )
    );
    let gw = env.start(&yaml);
    assert_eq!(get(gw.port(), "h", "/").status, 200);
    gw.log_line(&["pool p", "not whitelisted", &presented.pin(), "report"]);
}

#[test]
fn sni_defaults_to_the_server_dns_name_and_that_name_is_verified() {
    use std::net::ToSocketAddrs;
    let first = ("localhost", 1).to_socket_addrs().unwrap().next().unwrap();
    if !first.ip().is_ipv4() {
        eprintln!("skipped: localhost resolves to {first} here, the backends listen on IPv4");
        return;
    }
    let ca = Ca::new("Root");
    let named = Backend::https("named", &ca.issue(&["localhost"]));
    let misnamed = Backend::https("misnamed", &ca.issue(&["other.internal"]));
    let env = Env::new();
    ca.write(env.path(), "root");
    let pools = format!(
        "  - name: named\n    servers: [\"localhost:{}\"]\n    probe: false\n    tls:\n      ca: root.pem\n  - name: misnamed\n    servers: [\"localhost:{}\"]\n    probe: false\n    tls:\n      ca: root.pem\n",
        named.port, misnamed.port
    );
    let routes = "  - name: misnamed\n    paths: [\"/m\"]\n    pool: misnamed\n  - name: named\n    pool: named\n";
    let gw = env.serve(&pools, routes);
    assert_eq!(get(gw.port(), "h", "/").status, 200, "{}", gw.logs());
    assert_eq!(get(gw.port(), "h", "/m").status, 502);
    assert_eq!(misnamed.request_bytes(), 0);
}
