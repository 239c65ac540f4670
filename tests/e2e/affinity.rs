//! Cookie affinity: sticky across requests, instances and trust-only reloads; the cookie value
//! is a keyed MAC that names the server without revealing it.

use crate::harness::{get, Backend, Env, Identity};
use crate::operations::reload;
use crate::pools::{backend_of, pinned, probe, ALL_TO_P};
use openssl::hash::{hash, MessageDigest};

/// The `affinity:` key with its secret file, for `pools[]` entries.
const AFFINITY: &str = "    affinity:\n      secret_file: affinity.key\n";
const SECRET: &str = "zGq6kXrJc1bW3n0L9yPQ2sVt8aHfE5mUoRiD7gKwTxA=\n";

/// Writes `affinity.key` holding `value` into the test's directory.
fn secret(env: &Env, value: &str) {
    std::fs::write(env.path().join("affinity.key"), value).unwrap();
}

/// A request carrying affinity cookie `id`.
fn with_cookie(port: u16, id: &str) -> crate::harness::Response {
    crate::harness::request(
        port,
        &format!("GET / HTTP/1.1\r\nHost: h\r\nCookie: x=1; ApplicationGatewayAffinity={id}\r\nConnection: close\r\n\r\n"),
    )
}

fn cookie_value(r: &crate::harness::Response) -> Option<String> {
    r.header("set-cookie")
        .and_then(|c| c.strip_prefix("ApplicationGatewayAffinity="))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

#[test]
fn affinity_cookie_sticks_to_a_server_and_is_replaced_when_unusable() {
    let key = Identity::self_signed(&["api.internal"]);
    let (a, b) = (Backend::https("a", &key), Backend::https("b", &key));
    let pools = pinned(
        &[a.port, b.port],
        &format!("{AFFINITY}      ttl_seconds: 600\n{}", probe(1, 1, 1)),
    );
    let env = Env::new();
    key.write(env.path(), "k");
    secret(&env, SECRET);
    let gw = env.serve(&pools, ALL_TO_P);

    let first = get(gw.port(), "h", "/");
    let set = first.header("set-cookie").unwrap().to_owned();
    assert!(
        set.ends_with("; Path=/; Max-Age=600; Secure; HttpOnly; SameSite=Lax"),
        "{set}"
    );
    let id = cookie_value(&first).unwrap();
    assert_eq!(id.len(), 32);
    assert!(!id.contains(&a.port.to_string()) && !id.contains("127.0.0.1"));
    let home = backend_of(&first);
    let with_cookie = |id: &str| with_cookie(gw.port(), id);
    for _ in 0..6 {
        let r = with_cookie(&id);
        assert_eq!(backend_of(&r), home);
        assert!(
            r.header("set-cookie").is_none(),
            "a valid cookie is not set again"
        );
    }
    let forged = with_cookie("0123456789abcdef0123456789abcdef");
    assert_eq!(forged.status, 200);
    let replacement = cookie_value(&forged).expect("a forged cookie is replaced");
    assert_ne!(replacement, "0123456789abcdef0123456789abcdef");
    assert!(with_cookie("garbage").header("set-cookie").is_some());

    // The same configuration on another instance maps the cookie to the same server.
    let env2 = Env::new();
    key.write(env2.path(), "k");
    secret(&env2, SECRET);
    let gw2 = env2.serve(&pools, ALL_TO_P);
    let r = crate::harness::request(
        gw2.port(),
        &format!("GET / HTTP/1.1\r\nHost: h\r\nCookie: ApplicationGatewayAffinity={id}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(
        (backend_of(&r), r.header("set-cookie")),
        (home.clone(), None)
    );
    drop(gw2);

    // A cookie for a server that went unhealthy is ignored and replaced.
    let (home_backend, other) = if home == "a" { (&a, "b") } else { (&b, "a") };
    home_backend.set_status(500);
    gw.log_line(&[&format!(
        "server 127.0.0.1:{}: unhealthy",
        home_backend.port
    )]);
    let moved = with_cookie(&id);
    assert_eq!(backend_of(&moved), other);
    assert!(cookie_value(&moved).is_some_and(|c| c != id));
}

#[test]
fn a_reload_that_changes_only_trust_settings_keeps_affinity_cookies() {
    let key = Identity::self_signed(&["api.internal"]);
    let next = Identity::self_signed(&["api.internal"]);
    let (a, b) = (Backend::https("a", &key), Backend::https("b", &key));
    let pools = pinned(&[a.port, b.port], &format!("{AFFINITY}    probe: false\n"));
    let env = Env::new();
    key.write(env.path(), "k");
    next.write(env.path(), "next");
    secret(&env, SECRET);
    let listeners = env.listeners();
    let gw = env.serve(&pools, ALL_TO_P);
    let first = get(gw.port(), "h", "/");
    let id = cookie_value(&first).expect("the first response sets the cookie");
    let home = backend_of(&first);

    // A pin rotation: the next key is whitelisted beside the current one.
    let rotated = pools.replace(
        "        - cert: k.pem\n",
        "        - cert: k.pem\n        - cert: next.pem\n",
    );
    assert_ne!(rotated, pools);
    gw.env
        .write_config(&format!("{listeners}pools:\n{rotated}routes:\n{ALL_TO_P}"));
    let said = reload(&gw, &gw.env.path().join("pinion.yaml"));
    assert!(said.contains("in place"), "{said}");
    for _ in 0..4 {
        let r = with_cookie(gw.port(), &id);
        assert_eq!(
            (r.status, backend_of(&r), r.header("set-cookie")),
            (200, home.clone(), None),
            "the cookie still names its server after the reload\n{}",
            gw.logs()
        );
    }
}

#[test]
fn the_cookie_value_is_keyed_by_the_secret_file() {
    let backend = Backend::plain("only");
    let pool = format!(
        "  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\n{AFFINITY}",
        backend.port
    );
    let cookie_with = |value: &str| {
        let env = Env::new();
        secret(&env, value);
        let gw = env.serve(&pool, ALL_TO_P);
        let r = get(gw.port(), "h", "/");
        assert_eq!(r.status, 200, "{}", gw.logs());
        cookie_value(&r).expect("the first response sets the cookie")
    };
    let id = cookie_with(SECRET);
    assert_eq!(id, cookie_with(SECRET), "the same secret, the same value");
    let other = cookie_with("9hQ2mZcL4xVb7nRt0wYsKe3uJ6aPf1gDiO8kE5lNyBM=\n");
    assert_ne!(
        id, other,
        "another secret, another value for the same server"
    );
    // Not what an unkeyed hash of pool and address gives, which anyone could recompute.
    let label = format!("127.0.0.1:{}", backend.port);
    let unkeyed = hash(
        MessageDigest::sha256(),
        format!("pinion-affinity\0p\0{label}\0").as_bytes(),
    )
    .unwrap();
    let unkeyed: String = unkeyed
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_ne!(id, unkeyed);
}
