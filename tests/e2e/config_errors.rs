//! `pinion -t`: every error at once, each with file:line:column, key path and what is accepted.

use crate::harness::{pinion, Identity};
use std::path::Path;

/// Runs `pinion -t -c FILE` on `yaml` in a directory holding `good.pem/key` and `other.pem/key`.
fn check(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let good = Identity::self_signed(&["good.example"]);
    good.write(dir.path(), "good");
    Identity::self_signed(&["other.example"]).write(dir.path(), "other");
    std::fs::write(
        dir.path().join("garbage.pem"),
        "-----BEGIN CERTIFICATE-----\nxx\n",
    )
    .unwrap();
    check_in(dir.path(), yaml)
}

fn check_in(dir: &Path, yaml: &str) -> (i32, String) {
    let file = dir.join("pinion.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = pinion().arg("-t").arg("-c").arg(&file).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    (out.status.code().unwrap(), stderr)
}

const LISTENER: &str = "listeners:\n  - name: https\n    bind: 127.0.0.1:8443\n    tls:\n      certificates:\n        - cert: good.pem\n          key: good.key\n";
const POOL: &str = "pools:\n  - name: p\n    servers: [127.0.0.1:9443]\n    tls:\n      pins:\n        - cert: good.pem\n";
const ROUTE: &str = "routes:\n  - name: r\n    pool: p\n";

#[test]
fn a_valid_file_passes() {
    let (code, stderr) = check(&format!("{LISTENER}{POOL}{ROUTE}"));
    assert_eq!((code, stderr.as_str()), (0, ""));
}

#[test]
fn each_bad_config_names_line_column_path_and_what_is_accepted() {
    // (the whole file, "line:column: path", words from the explanation)
    let table: &[(String, &str, &[&str])] = &[
        (
            // SPEC's full example writes `verify_hostname: true` beside pins and `ca: null`.
            format!("{LISTENER}{POOL}      ca: null\n      verify_hostname: true\n{ROUTE}"),
            ":15:24: pools[0].tls.verify_hostname",
            &["applies only with `ca`, with a `scope: chain` pin, or without `pins`"],
        ),
        (
            format!("{LISTENER}{POOL}          scope: branch\n{ROUTE}"),
            ":14:18: pools[0].tls.pins[0].scope",
            &["\"branch\"", "leaf or chain"],
        ),
        (
            format!("{LISTENER}{POOL}          not_before: tomorrow\n{ROUTE}"),
            ":14:23: pools[0].tls.pins[0].not_before",
            &["RFC 3339", "2027-03-01T00:00:00Z"],
        ),
        (
            format!("{LISTENER}{POOL}          not_before: \"2027-01-02T00:00:00Z\"\n          not_after: \"2027-01-01T00:00:00Z\"\n{ROUTE}"),
            ":15:22: pools[0].tls.pins[0].not_after",
            &["later than `not_before`"],
        ),
        (
            format!("{LISTENER}      client_auth:\n        mode: require\n        pins:\n          - cert: good.pem\n            not_after: \"2027-01-01T00:00:00Z\"\n{POOL}{ROUTE}"),
            ":12:24: listeners[0].tls.client_auth.pins[0].not_after",
            &["only pins of pools"],
        ),
        (
            // A chain pin checks names: a server without one needs `sni`.
            format!("{LISTENER}pools:\n  - name: p\n    servers: [127.0.0.1:9443]\n    tls:\n      pins:\n        - cert: good.pem\n          scope: chain\n{ROUTE}"),
            ":10:15: pools[0].servers[0]",
            &["no host name to verify", "verify_hostname: false"],
        ),
        (
            format!("{LISTENER}{POOL}{ROUTE}listenrs: []\n"),
            ":17:1: .",
            &["unknown field `listenrs`", "expected one of"],
        ),
        (
            format!("{LISTENER}pools:\n  - name: p\n    servers:\n      - address: 127.0.0.1:1\n        weigth: 2\n{ROUTE}"),
            ":12:9: pools[0].servers[0]",
            &["unknown field `weigth`", "`address` or `weight`"],
        ),
        (
            format!("listeners:\n  - name: https\n    bind: 127.0.0.1:99999\n{POOL}{ROUTE}"),
            ":3:11: listeners[0].bind",
            &["invalid address \"127.0.0.1:99999\"", "expected IP:PORT"],
        ),
        (
            format!("{LISTENER}pools:\n  - name: p\n    servers: [\"no such host!:1\"]\n{ROUTE}"),
            ":10:15: pools[0].servers[0]",
            &["not an IP address or a DNS name", "expected HOST:PORT"],
        ),
        (
            format!("server:\n  resolvers: [\"127.0.0.1:53\", nope]\n{LISTENER}{POOL}{ROUTE}"),
            ":2:31: server.resolvers[1]",
            &["invalid resolver \"nope\"", "expected IP:PORT"],
        ),
        (
            format!("{LISTENER}{POOL}    resolve_on_start: sometimes\n{ROUTE}"),
            ":14:23: pools[0].resolve_on_start",
            &["\"sometimes\"", "expected optional or required"],
        ),
        (
            format!("{LISTENER}{POOL}    resolve_seconds: 0\n{ROUTE}"),
            ":14:22: pools[0].resolve_seconds",
            &["0 is out of range", "1 to 86400 seconds"],
        ),
        (
            format!("{LISTENER}pools:\n  - name: p\n    servers: [127.0.0.1:1]\n    tls:\n      pins:\n        - cert: missing.pem\n{ROUTE}"),
            ":13:17: pools[0].tls.pins[0].cert",
            &["missing.pem", "No such file"],
        ),
        (
            format!("{LISTENER}pools:\n  - name: p\n    servers: [127.0.0.1:1]\n    tls:\n      pins:\n        - sha256: \"c2hvcnQ=\"\n{ROUTE}"),
            ":13:19: pools[0].tls.pins[0].sha256",
            &["invalid pin", "44 characters"],
        ),
        (
            format!("{LISTENER}pools:\n  - name: p\n    servers: [127.0.0.1:1]\n    tls:\n      pins:\n        - cert: garbage.pem\n{ROUTE}"),
            ":13:17: pools[0].tls.pins[0].cert",
            &["garbage.pem", "expected PEM or DER X.509"],
        ),
        (
            format!("{LISTENER}pools:\n  - name: p\n    servers: [127.0.0.1:1]\n    tls:\n      pins:\n        - cert: good.pem\n          sha256: x\n{ROUTE}"),
            ":13:11: pools[0].tls.pins[0]",
            &["exactly one of `cert`, `public_key` or `sha256`"],
        ),
        (
            "listeners:\n  - name: https\n    bind: 127.0.0.1:8443\n    tls:\n      certificates:\n        - cert: good.pem\n          key: other.key\n".to_owned() + POOL + ROUTE,
            ":7:16: listeners[0].tls.certificates[0].key",
            &["does not belong to the first certificate"],
        ),
        (
            format!("{LISTENER}{POOL}routes:\n  - name: r\n    pool: nope\n"),
            ":16:11: routes[0].pool",
            &["unknown pool \"nope\"", "defined pools: p"],
        ),
        (
            format!("{LISTENER}{POOL}routes:\n  - name: r\n    listeners: [http]\n    pool: p\n"),
            ":16:17: routes[0].listeners[0]",
            &["unknown listener \"http\"", "defined listeners: https"],
        ),
        (
            format!("{LISTENER}{POOL}{ROUTE}  - name: r\n    pool: p\n"),
            ":17:11: routes[1].name",
            &["duplicate name \"r\""],
        ),
        (
            format!("{LISTENER}pools:\n  - name: p\n    servers: [127.0.0.1:1]\n    tls:\n      ca: good.pem\n{ROUTE}"),
            ":10:15: pools[0].servers[0]",
            &["no host name to verify", "set `tls.sni`"],
        ),
        (
            format!("{LISTENER}{POOL}    probe:\n      unhealthy_threshold: 0\n{ROUTE}"),
            ":15:28: pools[0].probe.unhealthy_threshold",
            &["0 is out of range", "a threshold from 1 to 20"],
        ),
        (
            format!("{LISTENER}{POOL}    probe: {{interval_seconds: 0}}\n{ROUTE}"),
            ":14:31: pools[0].probe.interval_seconds",
            &["0 is out of range", "1 to 86400 seconds"],
        ),
        (
            format!("{LISTENER}{POOL}    balance: fastest\n{ROUTE}"),
            ":14:14: pools[0].balance",
            &["invalid value \"fastest\"", "round_robin, random, least_connections or ip_hash"],
        ),
        (
            format!("{LISTENER}{POOL}    probe: {{status: [\"200-99\"]}}\n{ROUTE}"),
            ":14:22: pools[0].probe.status[0]",
            &["\"200-399\""],
        ),
        (
            format!("{LISTENER}{POOL}    affinity: {{same_site: none, secure: false}}\n{ROUTE}"),
            ":14:27: pools[0].affinity.same_site",
            &["lax or strict when `secure: false`"],
        ),
        (
            format!("{LISTENER}{POOL}    affinity: {{cookie: c}}\n{ROUTE}"),
            ": pools[0].affinity:",
            &["affinity needs `secret_file`", "the same on every instance"],
        ),
        (
            format!("{LISTENER}{POOL}    affinity: {{secret_file: garbage.pem}}\n{ROUTE}"),
            ":14:29: pools[0].affinity.secret_file",
            &["holds 30 bytes", "at least 32 random bytes"],
        ),
        (
            format!("{LISTENER}      ciphers: NOT-A-CIPHER\n{POOL}{ROUTE}"),
            ":8:16: listeners[0].tls.ciphers",
            &["invalid cipher string", "OpenSSL cipher list"],
        ),
        (
            format!("{LISTENER}  - name: http\n    bind: 127.0.0.1:8080\n    redirect_to_https: http\n{POOL}{ROUTE}"),
            ":10:24: listeners[1].redirect_to_https",
            &["a listener with `tls`"],
        ),
        (
            format!("{LISTENER}    error_pages: {{418: good.pem}}\n{POOL}{ROUTE}"),
            ":8:24: listeners[0].error_pages.418",
            &["400, 403, 404, 413, 414, 429, 431, 500, 502, 503 or 504"],
        ),
        (
            format!("{LISTENER}    trusted_proxies: [10.0.0.0/40]\n{POOL}{ROUTE}"),
            ":8:23: listeners[0].trusted_proxies[0]",
            &["CIDR range"],
        ),
        (
            format!("{LISTENER}{POOL}{ROUTE}    redirect: {{to: /x}}\n"),
            ":17:15: routes[0].redirect",
            &["either `pool` or `redirect`"],
        ),
        (
            format!("{LISTENER}{POOL}{ROUTE}    request_headers: {{set: {{Host: x}}}}\n"),
            ":17:35: routes[0].request_headers.set.Host",
            &["cannot be rewritten", "host_header"],
        ),
        (
            format!("{LISTENER}{POOL}    redirect_to: x\n{ROUTE}"),
            ":14:5: pools[0]",
            &["unknown field `redirect_to`"],
        ),
        (
            format!("{LISTENER}{POOL}{ROUTE}    paths: [\"images/*\"]\n"),
            ":17:13: routes[0].paths[0]",
            &["invalid path \"images/*\"", "\"/x/*\""],
        ),
        (
            format!("listeners:\n  - name: https\n    bind: 127.0.0.1:8443\n    tls:\n      certificates:\n        - cert: good.pem\n          key: good.key\n      min_version: \"1.1\"\n{POOL}{ROUTE}"),
            ":8:20: listeners[0].tls.min_version",
            &["\"1.2\" or \"1.3\""],
        ),
        (
            format!("{LISTENER}    limits:\n      max_headers: 0\n{POOL}{ROUTE}"),
            ":9:20: listeners[0].limits.max_headers",
            &["0 is out of range", "between 1 and 256"],
        ),
        (
            format!("{LISTENER}    limits:\n      max_body_bytes: 5 KB\n{POOL}{ROUTE}"),
            ":9:23: listeners[0].limits.max_body_bytes",
            &["invalid value \"5 KB\"", "64KiB or 10MiB"],
        ),
        (
            format!("{LISTENER}    limits:\n      max_header_bytes: -1\n{POOL}{ROUTE}"),
            ":9:25: listeners[0].limits.max_header_bytes",
            &["invalid value \"-1\"", "a number of bytes"],
        ),
        (
            format!("{LISTENER}{POOL}{ROUTE}    limits:\n      max_body_bytes: 0\n"),
            ":18:23: routes[0].limits.max_body_bytes",
            &["0 is out of range", "at least 1 byte, or unlimited"],
        ),
        (
            format!("{LISTENER}{POOL}{ROUTE}    limits:\n      max_headers: 5\n"),
            ":18:7: routes[0].limits",
            &["unknown field `max_headers`", "max_body_bytes"],
        ),
        (
            format!("{LISTENER}    limits:\n      max_connections: 0\n{POOL}{ROUTE}"),
            ":9:24: listeners[0].limits.max_connections",
            &["0 is out of range", "at least 1 connection"],
        ),
        (
            format!("{LISTENER}    limits:\n      max_connections_per_ip: 1.5\n{POOL}{ROUTE}"),
            ":9:31: listeners[0].limits.max_connections_per_ip",
            &["invalid value \"1.5\"", "a whole number of connections"],
        ),
        (
            format!("{LISTENER}    rate_limit:\n      requests_per_second: 0\n{POOL}{ROUTE}"),
            ":9:28: listeners[0].rate_limit.requests_per_second",
            &["invalid value \"0\"", "above 0"],
        ),
        (
            format!("{LISTENER}    rate_limit:\n      requests_per_second: 5\n      burst: 0\n{POOL}{ROUTE}"),
            ":10:14: listeners[0].rate_limit.burst",
            &["invalid value \"0\"", "at least 1"],
        ),
        (
            format!("{LISTENER}{POOL}{ROUTE}    rate_limit:\n      requests_per_second: 5\n      key: cookie\n"),
            ":19:12: routes[0].rate_limit.key",
            &["invalid value \"cookie\"", "client_ip"],
        ),
        (
            format!("{LISTENER}      client_auth:\n        mode: sometimes\n        ca: good.pem\n{POOL}{ROUTE}"),
            ":9:15: listeners[0].tls.client_auth.mode",
            &["invalid value \"sometimes\"", "require"],
        ),
        (
            format!("{LISTENER}      client_auth:\n        mode: require\n        ca: nope.pem\n{POOL}{ROUTE}"),
            ":10:13: listeners[0].tls.client_auth.ca",
            &["nope.pem"],
        ),
        (
            format!("{LISTENER}      client_auth:\n        mode: require\n{POOL}{ROUTE}"),
            "listeners[0].tls.client_auth:",
            &["needs `ca`", "`pins`"],
        ),
        (
            format!("{LISTENER}      client_auth:\n        mode: require\n        pins:\n          - {{}}\n{POOL}{ROUTE}"),
            "listeners[0].tls.client_auth.pins[0]",
            &["exactly one of `cert`, `public_key` or `sha256`"],
        ),
        (
            format!("{LISTENER}      client_auth:\n        mode: require\n        ca: good.pem\n        crl: good.pem\n{POOL}{ROUTE}"),
            "listeners[0].tls.client_auth.crl",
            &["expected PEM certificate revocation lists"],
        ),
    ];
    let mut misses = Vec::new();
    for (yaml, place, words) in table {
        let (code, stderr) = check(yaml);
        assert_eq!(code, 1, "{yaml}\n{stderr}");
        let Some(line) = stderr.lines().find(|l| l.contains(place)) else {
            misses.push(format!("no error at {place} in:\n{stderr}"));
            continue;
        };
        assert!(line.contains("pinion.yaml:"), "{line}");
        for w in *words {
            assert!(line.contains(w), "{line:?} should say {w:?}");
        }
        assert!(stderr.ends_with("configuration invalid\n"), "{stderr}");
    }
    assert!(misses.is_empty(), "{}", misses.join("\n"));
}

#[test]
fn all_errors_are_reported_at_once() {
    let yaml = format!(
        "listeners:\n  - name: https\n    bind: nope\n{POOL}  - name: p\n    servers: []\nroutes:\n  - name: r\n    pool: missing\n    hosts: [\"a*b\"]\n"
    );
    let (code, stderr) = check(&yaml);
    assert_eq!(code, 1);
    for place in [
        ":3:11: listeners[0].bind",
        ":10:11: pools[1].name",
        ":11:14: pools[1].servers",
        ":14:11: routes[0].pool",
        ":15:13: routes[0].hosts[0]",
    ] {
        assert!(stderr.contains(place), "missing {place} in:\n{stderr}");
    }
    let (code, stderr) = check(&format!(
        "{LISTENER}pools:\n  - name: p\n    servrs: []\n  - name: q\n    servers: [{{adress: x}}]\n{ROUTE}"
    ));
    assert_eq!(code, 1);
    assert!(
        stderr.contains(":10:5: pools[0]: unknown field `servrs`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":12:16: pools[1].servers[0]: unknown field `adress`"),
        "{stderr}"
    );
}

#[test]
fn errors_never_echo_the_file_and_bad_yaml_is_located() {
    let secret = "sha256-looking-secret-value";
    let (code, stderr) = check(&format!("{LISTENER}{POOL}{ROUTE}# {secret}\n  broken: [\n"));
    assert_eq!(code, 1);
    assert!(!stderr.contains(secret), "{stderr}");
    assert!(stderr.contains("pinion.yaml:"), "{stderr}");
    let (code, stderr) = check("");
    assert_eq!(code, 1, "{stderr}");
    let missing = pinion()
        .args(["-t", "-c", "/nonexistent/pinion.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read the file"));
}

#[test]
fn checking_a_file_writes_nothing() {
    // -t only reads; the file and its directory are left as they were.
    let dir = tempfile::tempdir().unwrap();
    let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    let (code, _) = check_in(dir.path(), "listeners: nope\n");
    assert_eq!(code, 1);
    let after: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        before.len() + 1,
        after.len(),
        "only the config file we wrote is there: {after:?}"
    );
}

#[test]
fn the_shipped_example_validates() {
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/pinion.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    Identity::self_signed(&["www.contoso.com"]).write(&dir.path().join("certs"), "www");
    Identity::self_signed(&["api.internal"]).write(&dir.path().join("certs"), "api-backend");
    let (code, stderr) = check_in(dir.path(), &example);
    assert_eq!((code, stderr.as_str()), (0, ""));
}
