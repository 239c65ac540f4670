//! Client certificates at the front door (issue 14): `tls.client_auth` with `mode: require`
//! lets in only clients whose certificate chains to the CA, carries a pinned key, or both;
//! every other client is refused during or right after its handshake and nothing it sends
//! reaches a backend.

use crate::harness::{one, Backend, Ca, Env, Identity};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509Builder;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sends one request over TLS, presenting `client` when given; the status, or why there was
/// none (the handshake or the connection failed).
fn get(port: u16, client: Option<&Identity>) -> Result<u16, String> {
    get_with(port, client, None)
}

/// [`get`] with the highest TLS version the client offers.
fn get_with(port: u16, client: Option<&Identity>, max: Option<SslVersion>) -> Result<u16, String> {
    send(
        port,
        client,
        max,
        "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
}

/// Sends `raw` over TLS, presenting `client` when given; the response's status.
fn send(
    port: u16,
    client: Option<&Identity>,
    max: Option<SslVersion>,
    raw: &str,
) -> Result<u16, String> {
    send_to(port, "localhost", client, max, raw)
}

/// [`send`] with `sni` as the TLS server name.
fn send_to(
    port: u16,
    sni: &str,
    client: Option<&Identity>,
    max: Option<SslVersion>,
    raw: &str,
) -> Result<u16, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = connector_for(client, None, max)
        .connect(sni, tcp)
        .map_err(|e| format!("handshake: {e}"))?;
    s.write_all(raw.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no response: {text:?}"))
}

/// A TLS connector presenting `client`, offering `alpn` and at most TLS version `max` when
/// given.
fn connector_for(
    client: Option<&Identity>,
    alpn: Option<&[u8]>,
    max: Option<SslVersion>,
) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_max_proto_version(max).unwrap();
    if let Some(id) = client {
        b.set_certificate(&id.cert).unwrap();
        b.set_private_key(&id.key).unwrap();
    }
    if let Some(protos) = alpn {
        b.set_alpn_protos(protos).unwrap();
    }
    b.build()
}

/// A gateway whose listener has `client_auth` (the YAML lines under it, indented by 8).
fn gateway(env: Env, backend: &Backend, client_auth: &str) -> crate::harness::gateway::Gateway {
    let yaml = format!(
        "{}      client_auth:\n{client_auth}pools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\nroutes:\n  - name: all\n    pool: p\n",
        env.listeners(),
        backend.port,
    );
    env.start(&yaml)
}

/// A backend, a test directory, and a client CA written there as `clients-ca.pem`.
fn with_client_ca() -> (Backend, Env, Ca) {
    let env = Env::new();
    let ca = Ca::new("clients");
    ca.write(env.path(), "clients-ca");
    (Backend::plain("b"), env, ca)
}

/// A self-signed certificate whose validity ended yesterday.
fn expired() -> Identity {
    Identity::self_signed_between(&["old.client"], -10, -1)
}

#[test]
fn a_ca_lets_in_only_the_clients_it_issued() {
    let (backend, env, ca) = with_client_ca();
    let good = ca.issue(&["good.client"]);
    let foreign = Ca::new("elsewhere").issue(&["foreign.client"]);
    let gw = gateway(
        env,
        &backend,
        "        mode: require\n        ca: clients-ca.pem\n",
    );
    assert_eq!(get(gw.port(), Some(&good)), Ok(200));
    assert!(
        get(gw.port(), Some(&foreign)).is_err(),
        "a foreign CA's client"
    );
    assert!(
        get(gw.port(), None).is_err(),
        "a client without a certificate"
    );
    assert!(
        get(gw.port(), Some(&Identity::self_signed(&["self.client"]))).is_err(),
        "a self-signed client"
    );
    // Over TLS 1.2 the client learns of the refusal in the handshake itself (with TLS 1.3 the
    // alert comes after the client's Finished): the server refuses before reading anything.
    let tls12 = Some(SslVersion::TLS1_2);
    assert_eq!(get_with(gw.port(), Some(&good), tls12), Ok(200));
    let refused = get_with(gw.port(), Some(&foreign), tls12);
    assert!(
        refused.as_ref().is_err_and(|e| e.starts_with("handshake")),
        "refused in the handshake: {refused:?}"
    );
    assert_eq!(
        backend.requests().len(),
        2,
        "only the good client's requests"
    );
}

#[test]
fn pins_let_in_only_the_pinned_keys_and_never_an_expired_certificate() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let pinned = Identity::self_signed(&["pinned.client"]);
    let other = Identity::self_signed(&["other.client"]);
    let old = expired();
    old.write(env.path(), "old");
    let auth = format!(
        "        mode: require\n        pins:\n          - sha256: \"{}\"\n          - cert: old.pem\n",
        pinned.pin()
    );
    let gw = gateway(env, &backend, &auth);
    assert_eq!(get(gw.port(), Some(&pinned)), Ok(200));
    assert!(get(gw.port(), Some(&other)).is_err(), "an unpinned key");
    assert!(
        get(gw.port(), Some(&old)).is_err(),
        "a pinned but expired certificate"
    );
    assert!(get(gw.port(), None).is_err(), "no certificate");
    assert_eq!(backend.requests().len(), 1);
    assert!(gw.logs().contains("not pinned"), "the log says why");
}

#[test]
fn with_a_ca_and_pins_both_must_hold() {
    let (backend, env, ca) = with_client_ca();
    let issued_pinned = ca.issue(&["a.client"]);
    let issued_unpinned = ca.issue(&["b.client"]);
    let foreign_pinned = Identity::self_signed(&["c.client"]);
    let auth = format!(
        "        mode: require\n        ca: clients-ca.pem\n        pins:\n          - sha256: \"{}\"\n          - sha256: \"{}\"\n",
        issued_pinned.pin(),
        foreign_pinned.pin()
    );
    let gw = gateway(env, &backend, &auth);
    assert_eq!(get(gw.port(), Some(&issued_pinned)), Ok(200));
    assert!(
        get(gw.port(), Some(&issued_unpinned)).is_err(),
        "issued, not pinned"
    );
    assert!(
        get(gw.port(), Some(&foreign_pinned)).is_err(),
        "pinned, not issued"
    );
    assert_eq!(backend.requests().len(), 1);
}

/// A listener with `mode: optional` and the CA, a route open to all and one that requires a
/// verified certificate.
fn optional_gateway(env: Env, backend: &Backend) -> crate::harness::gateway::Gateway {
    let yaml = format!(
        "access_log:\n  path: access.log\n  format: json\n{}      client_auth:\n        mode: optional\n        ca: clients-ca.pem\n    error_pages:\n      403: 403.html\npools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\nroutes:\n  - name: secure\n    paths: [\"/secure\"]\n    pool: p\n    client_certificate: required\n  - name: open\n    pool: p\n",
        env.listeners(),
        backend.port,
    );
    std::fs::write(
        env.path().join("403.html"),
        "<h1>certificate required</h1>\n",
    )
    .unwrap();
    env.start(&yaml)
}

fn request(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\n{extra}Connection: close\r\n\r\n")
}

#[test]
fn optional_mode_lets_every_client_in_and_a_route_can_require_a_verified_certificate() {
    let (backend, env, ca) = with_client_ca();
    let good = ca.issue(&["good.client"]);
    let foreign = Ca::new("elsewhere").issue(&["foreign.client"]);
    let gw = optional_gateway(env, &backend);
    let port = gw.port();
    // Spoofed identity headers are removed, whatever the client presents.
    let spoof = "X-Client-Cert-Subject: CN=admin\r\nX-Client-Cert: forged\r\nX-Client-Cert-Verify: SUCCESS\r\n";
    assert_eq!(
        send(port, None, None, &request("/open/none", spoof)),
        Ok(200)
    );
    assert_eq!(send(port, None, None, &request("/secure", spoof)), Ok(403));
    assert_eq!(
        send(port, Some(&foreign), None, &request("/open/foreign", spoof)),
        Ok(200)
    );
    assert_eq!(
        send(port, Some(&foreign), None, &request("/secure", "")),
        Ok(403)
    );
    assert_eq!(
        send(port, Some(&good), None, &request("/secure", spoof)),
        Ok(200)
    );
    let seen = backend.requests();
    let at = |target: &str| {
        seen.iter()
            .find(|r| r.target == target)
            .unwrap_or_else(|| panic!("{target} not forwarded: {seen:?}"))
    };
    let none = at("/open/none");
    assert_eq!(one(none, "x-client-cert-verify"), Some("NONE"));
    assert_eq!(
        one(none, "x-client-cert-subject"),
        None,
        "spoofed subject removed"
    );
    assert_eq!(
        one(none, "x-client-cert"),
        None,
        "spoofed certificate removed"
    );
    let failed = one(at("/open/foreign"), "x-client-cert-verify").unwrap_or_default();
    assert!(failed.starts_with("FAILED:"), "{failed}");
    let secure = at("/secure");
    assert_eq!(one(secure, "x-client-cert-verify"), Some("SUCCESS"));
    assert_eq!(one(secure, "x-client-cert-subject"), Some("CN=good.client"));
    assert_eq!(one(secure, "x-client-cert-issuer"), Some("CN=clients"));
    assert_eq!(one(secure, "x-client-cert-pin"), Some(good.pin().as_str()));
    let pem = one(secure, "x-client-cert").unwrap_or_default();
    assert!(pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{pem}");
    assert_eq!(
        seen.iter().filter(|r| r.target == "/secure").count(),
        1,
        "the refused /secure requests never reached the backend"
    );
    // The access log names the client by subject and pin.
    let log = gw.env.path().join("access.log");
    let line = crate::harness::wait_for("the access-log line", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["path"] == "/secure" && v["status"] == 200)
    });
    assert_eq!(line["client_subject"], "CN=good.client");
    assert_eq!(line["client_pin"], good.pin());
}

#[test]
fn identity_headers_from_a_client_are_removed_on_listeners_without_client_auth() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let gw = env.serve(
        &format!(
            "  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\n",
            backend.port
        ),
        "  - name: all\n    pool: p\n",
    );
    let spoof = "X-Client-Cert-Verify: SUCCESS\r\nX-Client-Cert-Pin: abc\r\n";
    assert_eq!(send(gw.port(), None, None, &request("/", spoof)), Ok(200));
    let r = &backend.requests()[0];
    assert_eq!(one(r, "x-client-cert-verify"), None);
    assert_eq!(one(r, "x-client-cert-pin"), None);
}

/// One request to host `sni` (as SNI and Host); its status, or why there was none.
fn get_host(port: u16, sni: &str, client: Option<&Identity>) -> Result<u16, String> {
    let raw = format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    send_to(port, sni, client, None, &raw)
}

#[test]
fn each_host_name_can_have_its_own_client_certificate_policy() {
    let (backend, env, ca) = with_client_ca();
    Identity::self_signed(&["open.example"]).write(env.path(), "open");
    Identity::self_signed(&["secure.example"]).write(env.path(), "secure");
    let good = ca.issue(&["good.client"]);
    let port = env.port;
    let yaml = format!(
        "listeners:\n  - name: https\n    bind: 127.0.0.1:{port}\n    tls:\n      certificates:\n        - cert: open.pem\n          key: open.key\n        - cert: secure.pem\n          key: secure.key\n          client_auth:\n            mode: require\n            ca: clients-ca.pem\npools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\nroutes:\n  - name: all\n    pool: p\n",
        backend.port
    );
    let gw = env.start(&yaml);
    assert_eq!(get_host(gw.port(), "open.example", None), Ok(200));
    assert!(
        get_host(gw.port(), "secure.example", None).is_err(),
        "the secure name requires a client certificate"
    );
    assert_eq!(get_host(gw.port(), "secure.example", Some(&good)), Ok(200));
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        one(&seen[1], "x-client-cert-verify"),
        Some("SUCCESS"),
        "the secure name's policy tells the backend"
    );
    assert_eq!(
        one(&seen[0], "x-client-cert-verify"),
        None,
        "the open name has no policy"
    );
}

#[test]
fn http2_clients_present_certificates_alike() {
    let (backend, env, ca) = with_client_ca();
    let good = ca.issue(&["h2.client"]);
    let gw = gateway(
        env,
        &backend,
        "        mode: require\n        ca: clients-ca.pem\n        xfcc: true\n",
    );
    let port = gw.port();
    let status = crate::harness::client::block_on(async {
        let connector = connector_for(Some(&good), Some(b"\x02h2"), None);
        let mut client = crate::harness::client::h2_client_with(&connector, port).await?;
        let req = http::Request::get("https://a/h2")
            .header("x-forwarded-client-cert", "Hash=forged")
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).map_err(|e| e.to_string())?;
        Ok::<u16, String>(resp.await.map_err(|e| e.to_string())?.status().as_u16())
    });
    assert_eq!(status, Ok(200));
    let seen = backend.requests();
    assert_eq!(one(&seen[0], "x-client-cert-subject"), Some("CN=h2.client"));
    // Envoy's format with `xfcc: true`; the client's own value is replaced.
    let xfcc = one(&seen[0], "x-forwarded-client-cert").unwrap_or_default();
    let hash: String = openssl::sha::sha256(&good.cert.to_der().unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        xfcc.starts_with(&format!("Hash={hash};Cert=\"-----BEGIN%20CERTIFICATE")),
        "{xfcc}"
    );
    assert!(xfcc.ends_with(";Subject=\"CN=h2.client\""), "{xfcc}");
}

#[test]
fn the_pin_pinion_pin_prints_for_a_client_certificate_lets_that_client_in() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let client = Identity::self_signed(&["printed.client"]);
    let (pem, _) = client.write(env.path(), "client");
    let out = crate::harness::pinion()
        .arg("pin")
        .arg(&pem)
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let pin = printed
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(pin, client.pin());
    let auth = format!("        mode: require\n        pins:\n          - sha256: \"{pin}\"\n");
    let gw = gateway(env, &backend, &auth);
    assert_eq!(get(gw.port(), Some(&client)), Ok(200));
    assert!(get(gw.port(), Some(&Identity::self_signed(&["x"]))).is_err());
}

#[test]
fn refused_client_certificates_are_counted_by_listener_and_reason() {
    let (backend, env, ca) = with_client_ca();
    let issued_unpinned = ca.issue(&["unpinned.client"]);
    let issued_pinned = ca.issue(&["pinned.client"]);
    let old = expired();
    let admin = crate::harness::free_port();
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}      client_auth:\n        mode: require\n        ca: clients-ca.pem\n        pins:\n          - sha256: \"{}\"\npools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\nroutes:\n  - name: all\n    pool: p\n",
        env.listeners(),
        issued_pinned.pin(),
        backend.port,
    );
    let gw = env.start(&yaml);
    assert_eq!(get(gw.port(), Some(&issued_pinned)), Ok(200));
    assert!(get(gw.port(), Some(&issued_unpinned)).is_err());
    assert!(get(gw.port(), Some(&Identity::self_signed(&["x"]))).is_err());
    assert!(get(gw.port(), Some(&old)).is_err());
    assert!(get(gw.port(), None).is_err());
    assert!(get_with(gw.port(), None, Some(SslVersion::TLS1_2)).is_err());
    // The handshake failure is counted when the connection task sees it: poll for it.
    crate::harness::wait_for("the no-certificate count", Duration::from_secs(10), || {
        let m = crate::operations::metrics(admin);
        let n = crate::operations::sample(
            &m,
            "pinion_client_auth_failures_total",
            &[("listener", "https"), ("reason", "no_certificate")],
        );
        (n == 2.0).then_some(())
    });
    let m = crate::operations::metrics(admin);
    let count = |reason| {
        crate::operations::sample(
            &m,
            "pinion_client_auth_failures_total",
            &[("listener", "https"), ("reason", reason)],
        )
    };
    assert_eq!(count("not_pinned"), 1.0);
    assert_eq!(
        count("untrusted"),
        2.0,
        "the self-signed and the expired self-signed"
    );
    assert_eq!(
        count("expired"),
        0.0,
        "an untrusted chain is refused before its dates"
    );
}

/// A revocation list signed by `ca` that lists `revoked`, in PEM.
fn crl_revoking(ca: &Ca, revoked: &Identity) -> Vec<u8> {
    use openssl::x509::{X509CrlBuilder, X509Revoked};
    // RevokedCertificate ::= SEQUENCE { serial INTEGER, revocationDate UTCTime }
    let mut serial = revoked.cert.serial_number().to_bn().unwrap().to_vec();
    if serial.first().is_some_and(|b| b & 0x80 != 0) {
        serial.insert(0, 0);
    }
    let date = b"200101000000Z";
    let mut der = vec![
        0x30,
        u8::try_from(2 + serial.len() + 2 + date.len()).unwrap(),
    ];
    der.push(0x02);
    der.push(u8::try_from(serial.len()).unwrap());
    der.extend_from_slice(&serial);
    der.push(0x17);
    der.push(u8::try_from(date.len()).unwrap());
    der.extend_from_slice(date);
    let mut b = X509CrlBuilder::new().unwrap();
    b.set_issuer_name(ca.cert().subject_name()).unwrap();
    b.set_last_update(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_next_update(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.add_revoked(X509Revoked::from_der(&der).unwrap()).unwrap();
    // rust-openssl's builder requires an Authority Key Identifier and a CRL number.
    let x = X509Builder::new().unwrap();
    let ctx = x.x509v3_context(Some(ca.cert()), None);
    let aki = openssl::x509::extension::AuthorityKeyIdentifier::new()
        .issuer(true)
        .build(&ctx)
        .unwrap();
    b.append_extension(aki).unwrap();
    // crlNumber (2.5.29.20) = INTEGER 1
    let number = openssl::x509::X509Extension::new_from_der(
        &openssl::asn1::Asn1Object::from_str("2.5.29.20").unwrap(),
        false,
        &openssl::asn1::Asn1OctetString::new_from_bytes(&[0x02, 0x01, 0x01]).unwrap(),
    )
    .unwrap();
    b.append_extension(number).unwrap();
    b.sign(ca.key(), MessageDigest::sha256()).unwrap();
    b.build().unwrap().to_pem().unwrap()
}

#[test]
fn a_client_whose_certificate_is_revoked_by_the_crl_is_refused() {
    let (backend, env, ca) = with_client_ca();
    let kept = ca.issue(&["kept.client"]);
    let revoked = ca.issue(&["revoked.client"]);
    std::fs::write(env.path().join("clients.crl"), crl_revoking(&ca, &revoked)).unwrap();
    let gw = gateway(
        env,
        &backend,
        "        mode: require\n        ca: clients-ca.pem\n        crl: clients.crl\n",
    );
    assert_eq!(get(gw.port(), Some(&kept)), Ok(200));
    assert!(
        get(gw.port(), Some(&revoked)).is_err(),
        "a revoked certificate"
    );
    assert_eq!(backend.requests().len(), 1);
    assert!(gw.logs().contains("is revoked"), "the log says why");
}
