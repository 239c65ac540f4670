//! What an operator sees about a backend that fails the trust checks: refusals counted by
//! reason in `/metrics`, and the key and chain it presents in `/status` and `pinion preflight`,
//! also when the handshake itself was refused.

use crate::harness::{free_port, get, pinion, wait_for, Backend, Ca, Env, Identity};
use crate::operations::{admin_get, metrics, sample};
use std::time::Duration;

#[test]
fn status_and_preflight_show_the_key_and_chain_of_a_server_whose_chain_or_name_fails() {
    let root = Ca::new("Root");
    let foreign_id = Ca::new("Other").issue(&["api.internal"]);
    let misnamed_id = root.issue(&["elsewhere.internal"]);
    let (foreign, misnamed) = (
        Backend::https("foreign", &foreign_id),
        Backend::https("misnamed", &misnamed_id),
    );
    let env = Env::new();
    root.write(env.path(), "root");
    let admin = free_port();
    let pools = format!(
        "  - name: ca\n    servers: [127.0.0.1:{}, 127.0.0.1:{}]\n    probe: {{interval_seconds: 1, unhealthy_threshold: 1}}\n    tls:\n      sni: api.internal\n      ca: root.pem\n",
        foreign.port, misnamed.port
    );
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}pools:\n{pools}routes:\n  - name: all\n    pool: ca\n",
        env.listeners()
    );
    let file = env.write_config(&yaml);
    let gw = env.start(&yaml);

    let servers = wait_for(
        "both servers out of rotation with a presented pin",
        Duration::from_secs(20),
        || {
            let status: serde_json::Value =
                serde_json::from_str(&admin_get(admin, "/status").body).ok()?;
            let servers = status["pools"][0]["servers"].as_array()?.clone();
            servers
                .iter()
                .all(|s| s["healthy"] == false && s["presented_pin"].is_string())
                .then_some(servers)
        },
    );
    for (s, id, issuer) in [
        (&servers[0], &foreign_id, "CN=Other"),
        (&servers[1], &misnamed_id, "CN=Root"),
    ] {
        assert_eq!(s["presented_pin"], id.pin(), "{s}");
        let chain = s["presented_chain"][0].as_str().unwrap_or_default();
        assert!(chain.contains(&format!("(issuer: {issuer})")), "{s}");
        assert!(s["reason"].as_str().unwrap().contains("InvalidCert"), "{s}");
    }
    assert!(
        servers[1]["presented_chain"][0]
            .as_str()
            .unwrap()
            .starts_with("CN=elsewhere.internal"),
        "{}",
        servers[1]
    );

    let out = pinion()
        .args(["preflight", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{table}");
    for (port, id, issuer) in [
        (foreign.port, &foreign_id, "CN=Other"),
        (misnamed.port, &misnamed_id, "CN=Root"),
    ] {
        let mut lines = table
            .lines()
            .skip_while(|l| !l.contains(&format!("127.0.0.1:{port}")));
        let row = lines.next().unwrap_or_default();
        assert!(row.contains(&id.pin()) && row.contains("GMT"), "{table}");
        let chain = lines.next().unwrap_or_default();
        assert!(
            chain.contains("chain[0]:") && chain.contains(&format!("(issuer: {issuer})")),
            "{table}"
        );
    }
    assert_eq!(
        foreign.request_bytes() + misnamed.request_bytes(),
        0,
        "no byte is ever sent on a connection that failed verification\n{}",
        gw.logs()
    );
}

#[test]
fn tls_check_failures_are_counted_by_pool_server_and_reason() {
    let key = Identity::self_signed(&["api.internal"]);
    let impostor = Backend::https("impostor", &Identity::self_signed(&["api.internal"]));
    let ca = crate::harness::Ca::new("Root");
    let foreign = Backend::https(
        "foreign",
        &crate::harness::Ca::new("Other").issue(&["api.internal"]),
    );
    let env = Env::new();
    key.write(env.path(), "k");
    ca.write(env.path(), "root");
    let admin = free_port();
    let pools = format!(
        "  - name: pinned\n    servers: [127.0.0.1:{}]\n    probe: false\n    retries: 0\n    tls:\n      pins: [{{cert: k.pem}}]\n  - name: ca\n    servers: [127.0.0.1:{}]\n    probe: false\n    retries: 0\n    tls:\n      sni: api.internal\n      ca: root.pem\n  - name: report\n    servers: [127.0.0.1:{}]\n    probe: false\n    retries: 0\n    tls:\n      pins: [{{cert: k.pem}}]\n      pin_mode: report\n",
        impostor.port, foreign.port, impostor.port
    );
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}pools:\n{pools}routes:\n  - name: ca\n    paths: [\"/ca\"]\n    pool: ca\n  - name: report\n    paths: [\"/report\"]\n    pool: report\n  - name: pinned\n    pool: pinned\n",
        env.listeners()
    );
    let gw = env.start(&yaml);
    for _ in 0..2 {
        assert_eq!(get(gw.port(), "h", "/").status, 502);
        assert_eq!(get(gw.port(), "h", "/ca").status, 502);
        assert_eq!(
            get(gw.port(), "h", "/report").status,
            200,
            "report mode lets it through"
        );
    }
    let m = metrics(admin);
    let fails = |pool, port: u16, reason| {
        sample(
            &m,
            "pinion_tls_check_failures_total",
            &[
                ("pool", pool),
                ("server", &format!("127.0.0.1:{port}")),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(fails("pinned", impostor.port, "not_whitelisted"), 2.0);
    assert_eq!(fails("ca", foreign.port, "certificate_invalid"), 2.0);
    // Report mode refused nothing: its mismatches have their own counter.
    assert_eq!(fails("report", impostor.port, "not_whitelisted"), 0.0);
    assert!(
        m.keys()
            .any(|(name, labels)| name == "pinion_tls_check_failures_total"
                && labels.contains(&("reason".into(), "no_certificate".into()))),
        "a missing certificate has its own reason"
    );
    let reported = sample(
        &m,
        "pinion_pin_mismatches_reported_total",
        &[
            ("pool", "report"),
            ("server", &format!("127.0.0.1:{}", impostor.port)),
        ],
    );
    assert_eq!(reported, 2.0);
    drop(gw);
}
