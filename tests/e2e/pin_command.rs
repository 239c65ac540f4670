//! `pinion pin FILE...` and `pinion pin --connect`.

use crate::harness::{pinion, Backend, Identity};
use std::process::Command;

/// The pin as the OpenSSL command line computes it (the SPEC's definition).
fn openssl_pin(cert: &std::path::Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
            cert.display()
        ))
        .output()
        .expect("the openssl command line (Debian package openssl)");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs a command that must succeed; returns its standard output.
fn succeed(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn first_field(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

#[test]
fn pins_of_files_match_the_openssl_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let a = Identity::self_signed(&["a.example"]);
    let b = Identity::self_signed(&["b.example"]);
    let (a_pem, _) = a.write(dir.path(), "a");
    let (b_pem, _) = b.write(dir.path(), "b");
    let der = dir.path().join("b.cer");
    std::fs::write(&der, b.cert.to_der().unwrap()).unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        [a.cert.to_pem().unwrap(), b.cert.to_pem().unwrap()].concat(),
    )
    .unwrap();
    let pubkey = dir.path().join("a.pub");
    std::fs::write(
        &pubkey,
        a.cert.public_key().unwrap().public_key_to_pem().unwrap(),
    )
    .unwrap();

    let stdout = succeed(pinion().arg("pin").args([&a_pem, &der, &bundle, &pubkey]));
    let pins: Vec<&str> = stdout.lines().map(first_field).collect();
    let (pa, pb) = (openssl_pin(&a_pem), openssl_pin(&b_pem));
    assert_eq!(
        pins,
        [
            pa.as_str(),
            pb.as_str(),
            pa.as_str(),
            pb.as_str(),
            pa.as_str()
        ]
    );
}

#[test]
fn pin_of_a_live_server_matches_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let id = Identity::self_signed(&["live.example"]);
    let (pem, _) = id.write(dir.path(), "live");
    let backend = Backend::https("live", &id);
    let stdout = succeed(pinion().args([
        "pin",
        "--connect",
        &format!("127.0.0.1:{}", backend.port),
        "--sni",
        "live.example",
    ]));
    assert_eq!(first_field(&stdout), openssl_pin(&pem));
    assert_eq!(backend.request_bytes(), 0, "pin --connect sends no request");
}

#[test]
fn pin_errors_exit_1_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let out = pinion().arg("pin").arg(&junk).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.pem"));
    let out = pinion()
        .args(["pin", "--connect", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = pinion().args(["pin", "--frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
