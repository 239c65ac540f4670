//! Backends by name: a name stands for every address it resolves to, and is resolved again
//! while pinion runs, through a real DNS server the test runs on loopback and changes.

use crate::harness::dns::DnsServer;
use crate::harness::gateway::Gateway;
use crate::harness::load::Load;
use crate::harness::{free_port, get, pinion, wait_for, Backend, Ca, Env, Identity};
use crate::operations::{admin_get, metrics, sample};
use std::time::{Duration, Instant};

const NAME: &str = "api.pinion.test";

/// Starts pinion with `dns` as its resolver, an admin listener on `admin`, the pools given and
/// a catch-all route to the first pool, `api`.
fn start(env: Env, dns: &DnsServer, admin: u16, pools: &str) -> Gateway {
    let yaml = config(&env, dns, admin, pools);
    env.start(&yaml)
}

fn config(env: &Env, dns: &DnsServer, admin: u16, pools: &str) -> String {
    format!(
        "{}{}admin:\n  bind: 127.0.0.1:{admin}\n{}pools:\n{pools}routes:\n  - name: all\n    pool: api\n",
        env.server_section(0),
        dns.resolvers_line(),
        env.listeners()
    )
}

/// pinion with a pool `api` of `NAME:port` that whitelists one key (plus `pool_keys`), asking
/// `dns`; a backend `bN` presenting that key on 127.0.0.N:port for each N of `backends`.
struct Pinned {
    dns: DnsServer,
    port: u16,
    admin: u16,
    backends: Vec<Backend>,
    gw: Gateway,
}

fn pinned(dns: DnsServer, backends: &[u8], pool_keys: &str) -> Pinned {
    let id = Identity::self_signed(&[NAME]);
    let port = free_port();
    let backends = backends
        .iter()
        .map(|n| Backend::https_at(&format!("b{n}"), &id, &format!("127.0.0.{n}:{port}")))
        .collect();
    let env = Env::new();
    id.write(env.path(), "backend");
    let admin = free_port();
    let pool = format!(
        "  - name: api\n    servers: [\"{NAME}:{port}\"]\n{pool_keys}    tls:\n      pins: [{{cert: backend.pem}}]\n"
    );
    let gw = start(env, &dns, admin, &pool);
    Pinned {
        dns,
        port,
        admin,
        backends,
        gw,
    }
}

fn status(admin: u16) -> serde_json::Value {
    let r = admin_get(admin, "/status");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn lookups(admin: u16, name: &str, result: &str) -> f64 {
    let labels = [("pool", "api"), ("name", name), ("result", result)];
    sample(&metrics(admin), "pinion_dns_lookups_total", &labels)
}

fn name_status(admin: u16) -> serde_json::Value {
    status(admin)["pools"][0]["names"][0].clone()
}

#[test]
fn a_name_stands_for_each_of_its_addresses_and_is_verified_and_addressed_by_name() {
    let dns = DnsServer::start();
    dns.set(NAME, &["127.0.0.2", "127.0.0.3"]);
    let ca = Ca::new("pinion dns test CA");
    let id = ca.issue(&[NAME]);
    let port = free_port();
    let b2 = Backend::https_at("b2", &id, &format!("127.0.0.2:{port}"));
    let b3 = Backend::https_at("b3", &id, &format!("127.0.0.3:{port}"));
    let env = Env::new();
    ca.write(env.path(), "ca");
    let admin = free_port();
    // CA trust: the chain and the name in the certificate are checked against the server's
    // name, which is also the SNI; the Host header is the name (`host_header: backend`).
    let gw = start(
        env,
        &dns,
        admin,
        &format!(
            "  - name: api\n    servers: [\"{NAME}:{port}\"]\n    host_header: backend\n    probe: false\n    tls:\n      ca: ca.pem\n"
        ),
    );
    for _ in 0..20 {
        let r = get(gw.port(), "www.example.com", "/spread");
        assert_eq!(r.status, 200, "{}\n{}", r.body, gw.logs());
    }
    let (n2, n3) = (b2.requests().len(), b3.requests().len());
    assert_eq!((n2, n3), (10, 10), "round robin over both addresses");
    for r in b2.requests().iter().chain(&b3.requests()) {
        assert_eq!(r.header("host"), Some(NAME));
    }
    let m = metrics(admin);
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let server = format!("{NAME}:{port} ({ip})");
        let labels = [("pool", "api"), ("server", server.as_str())];
        assert_eq!(
            sample(&m, "pinion_server_healthy", &labels),
            1.0,
            "{server}"
        );
    }
    let labels = [("pool", "api"), ("name", NAME)];
    assert_eq!(sample(&m, "pinion_dns_addresses", &labels), 2.0);
    assert_eq!(sample(&m, "pinion_dns_resolving", &labels), 1.0);
    let name = name_status(admin);
    assert_eq!(name["name"], NAME);
    assert_eq!(
        name["addresses"],
        serde_json::json!(["127.0.0.2", "127.0.0.3"])
    );
    assert_eq!(name["resolving"], true);
}

#[test]
fn traffic_moves_to_a_new_address_within_resolve_seconds_and_no_request_fails() {
    let dns = DnsServer::start();
    dns.set(NAME, &["127.0.0.2", "127.0.0.3"]);
    let keys = "    resolve_seconds: 1\n    probe: {interval_seconds: 1}\n";
    let Pinned {
        dns,
        port,
        backends,
        gw,
        ..
    } = pinned(dns, &[2, 3, 4], keys);
    let [b2, b3, b4] = &backends[..] else {
        unreachable!()
    };
    let load = Load::start(gw.port(), 4, "/load");
    wait_for("both addresses to serve", Duration::from_secs(10), || {
        (!b2.requests().is_empty() && !b3.requests().is_empty()).then_some(())
    });
    dns.set(NAME, &["127.0.0.4"]);
    let changed = Instant::now();
    wait_for("the new address to serve", Duration::from_secs(5), || {
        (!b4.requests().is_empty()).then_some(())
    });
    let moved = changed.elapsed();
    // The addresses that left: their pooled connections are closed (long before the 60 s idle
    // timeout), and no request reaches them any more.
    wait_for(
        "the old addresses' connections to close",
        Duration::from_secs(10),
        || {
            let all_closed = b2.closed() == b2.accepted() && b3.closed() == b3.accepted();
            all_closed.then_some(())
        },
    );
    let before = (
        b2.requests().len(),
        b3.requests().len(),
        b4.requests().len(),
    );
    let until = Instant::now() + Duration::from_secs(1);
    wait_for(
        "more load on the new address",
        Duration::from_secs(10),
        || (Instant::now() > until && b4.requests().len() > before.2 + 20).then_some(()),
    );
    let outcome = load.stop();
    assert_eq!(
        (b2.requests().len(), b3.requests().len()),
        (before.0, before.1),
        "a request reached an address that left"
    );
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert!(outcome.ok > 100, "{outcome:?}");
    println!(
        "traffic moved {} ms after the answer changed (resolve_seconds: 1); {} requests, 0 failed",
        moved.as_millis(),
        outcome.ok
    );
    assert!(
        moved <= Duration::from_secs(1),
        "moved after {moved:?}, resolve_seconds is 1"
    );
    gw.log_line(&[
        "pool api: servers now 1",
        &format!("{NAME}:{port} (127.0.0.4)"),
    ]);
}

#[test]
fn a_record_ttl_shorter_than_resolve_seconds_brings_the_next_lookup_forward() {
    let dns = DnsServer::start();
    dns.set_ttl(1);
    dns.set(NAME, &["127.0.0.2"]);
    // Bound to `_backends` so they live to the end: fields left to `..` are dropped at once.
    let Pinned {
        dns,
        gw,
        backends: _backends,
        ..
    } = pinned(dns, &[2, 3], "    resolve_seconds: 60\n    probe: false\n");
    assert_eq!(get(gw.port(), "www", "/").body, "b2 /\n");
    dns.set(NAME, &["127.0.0.3"]);
    // resolve_seconds is 60; the 1 s TTL has pinion ask again after a second.
    wait_for(
        "the answer's TTL to run out",
        Duration::from_secs(10),
        || (get(gw.port(), "www", "/").body == "b3 /\n").then_some(()),
    );
}

#[test]
fn a_dns_outage_keeps_the_last_good_addresses_and_is_logged_once() {
    let dns = DnsServer::start();
    dns.set(NAME, &["127.0.0.2", "127.0.0.3"]);
    let keys = "    resolve_seconds: 1\n    probe: false\n";
    let Pinned {
        dns,
        admin,
        backends,
        gw,
        ..
    } = pinned(dns, &[2, 3], keys);
    let [b2, b3] = &backends[..] else {
        unreachable!()
    };
    assert_eq!(get(gw.port(), "www", "/").status, 200);

    // The server stops answering: lookups time out, the last good addresses stay.
    dns.silence(true);
    wait_for("two failed lookups", Duration::from_secs(40), || {
        (lookups(admin, NAME, "failed") >= 2.0).then_some(())
    });
    let served = (b2.requests().len(), b3.requests().len());
    for _ in 0..10 {
        let r = get(gw.port(), "www", "/during-outage");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(b2.requests().len() - served.0, 5);
    assert_eq!(b3.requests().len() - served.1, 5);
    let name = name_status(admin);
    assert_eq!(
        name["addresses"],
        serde_json::json!(["127.0.0.2", "127.0.0.3"])
    );
    assert_eq!(name["resolving"], false);
    assert!(name["error"].is_string(), "{name}");
    assert!(name["failing_since"].is_string(), "{name}");
    let labels = [("pool", "api"), ("name", NAME)];
    assert_eq!(
        sample(&metrics(admin), "pinion_dns_resolving", &labels),
        0.0
    );

    dns.silence(false);
    gw.log_line(&["pool api:", NAME, "resolves again"]);
    // An empty answer (the name no longer exists) is a failure too: the addresses stay.
    let failed = lookups(admin, NAME, "failed");
    dns.set(NAME, &[]);
    wait_for(
        "a lookup of the removed name",
        Duration::from_secs(10),
        || (lookups(admin, NAME, "failed") > failed).then_some(()),
    );
    assert_eq!(get(gw.port(), "www", "/after").status, 200);
    assert_eq!(
        name_status(admin)["addresses"].as_array().map(Vec::len),
        Some(2)
    );

    let logs = gw.logs();
    let outages = logs
        .lines()
        .filter(|l| l.contains("does not resolve") && l.contains("keeping its last"))
        .count();
    assert_eq!(outages, 2, "one line per outage, not per lookup:\n{logs}");
}

#[test]
fn a_new_address_with_another_key_gets_no_request_bytes() {
    let dns = DnsServer::start();
    let probed = "probed.pinion.test";
    dns.set(NAME, &["127.0.0.2"]);
    dns.set(probed, &["127.0.0.2"]);
    let good = Identity::self_signed(&[NAME]);
    let impostor = Identity::self_signed(&[NAME]);
    let port = free_port();
    let b2 = Backend::https_at("b2", &good, &format!("127.0.0.2:{port}"));
    let b4 = Backend::https_at("impostor", &impostor, &format!("127.0.0.4:{port}"));
    let env = Env::new();
    good.write(env.path(), "backend");
    let admin = free_port();
    // `api` has no probe: a request meets the impostor and is refused after the handshake.
    // `probed` probes: the impostor's address never enters rotation.
    let yaml = config(
        &env,
        &dns,
        admin,
        &format!(
            "  - name: api\n    servers: [\"{NAME}:{port}\"]\n    resolve_seconds: 1\n    probe: false\n    tls:\n      pins: [{{cert: backend.pem}}]\n  - name: probed\n    servers: [\"{probed}:{port}\"]\n    resolve_seconds: 1\n    probe: {{interval_seconds: 1}}\n    tls:\n      pins: [{{cert: backend.pem}}]\n"
        ),
    )
    .replace(
        "routes:\n",
        "routes:\n  - name: probed\n    paths: [\"/probed/*\"]\n    pool: probed\n",
    );
    let gw = env.start(&yaml);
    assert_eq!(get(gw.port(), "www", "/").status, 200);

    dns.set(probed, &["127.0.0.2", "127.0.0.4"]);
    dns.set(NAME, &["127.0.0.4"]);
    wait_for(
        "the impostor's address to be used",
        Duration::from_secs(10),
        || (get(gw.port(), "www", "/").status == 502).then_some(()),
    );
    for _ in 0..5 {
        assert_eq!(get(gw.port(), "www", "/").status, 502);
    }
    wait_for(
        "the probe of the new address",
        Duration::from_secs(10),
        || {
            let status = admin_get(admin, "/status").body;
            status.contains("not whitelisted").then_some(())
        },
    );
    let before = b2.requests().len();
    for _ in 0..6 {
        assert_eq!(get(gw.port(), "www", "/probed/x").status, 200);
    }
    assert_eq!(
        b2.requests().len(),
        before + 6,
        "the probed pool stays on the good key"
    );
    assert!(b4.handshakes() > 0);
    assert_eq!(b4.request_bytes(), 0, "the other key got request bytes");
    let server = format!("{NAME}:{port} (127.0.0.4)");
    let labels = [
        ("pool", "api"),
        ("server", server.as_str()),
        ("reason", "not_whitelisted"),
    ];
    let refused = sample(&metrics(admin), "pinion_tls_check_failures_total", &labels);
    assert!(refused >= 6.0, "{refused}");
    let servers = status(admin)["pools"][1]["servers"]
        .as_array()
        .unwrap()
        .clone();
    let newcomer = servers
        .iter()
        .find(|s| s["server"].as_str().unwrap().ends_with("(127.0.0.4)"))
        .unwrap();
    assert_eq!(newcomer["healthy"], false, "{newcomer}");
}

#[test]
fn a_name_that_does_not_resolve_at_start_answers_502_until_it_does() {
    let dns = DnsServer::start();
    let id = Identity::self_signed(&[NAME]);
    let port = free_port();
    let b2 = Backend::https_at("b2", &id, &format!("127.0.0.2:{port}"));
    let env = Env::new();
    id.write(env.path(), "backend");
    let admin = free_port();
    let pool = format!(
        "  - name: api\n    servers: [\"{NAME}:{port}\"]\n    resolve_seconds: 1\n    probe: false\n    tls:\n      pins: [{{cert: backend.pem}}]\n"
    );

    // `-t` passes and names what does not resolve; `resolve_on_start: required` fails it.
    let file = env.write_config(&config(&env, &dns, admin, &pool));
    let out = pinion().arg("-t").arg("-c").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("pool api: {NAME}:{port} does not resolve")),
        "{stderr}"
    );
    let required = pool.replace(
        "probe: false\n",
        "probe: false\n    resolve_on_start: required\n",
    );
    let file = env.write_config(&config(&env, &dns, admin, &required));
    let out = pinion().arg("-t").arg("-c").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pools[0].servers[0]"), "{stderr}");
    assert!(stderr.contains("resolve_on_start: required"), "{stderr}");

    let gw = start(env, &dns, admin, &pool);
    let r = get(gw.port(), "www", "/");
    assert_eq!(r.status, 502, "{}", r.body);
    gw.log_line(&["pool api:", NAME, "does not resolve", "answers 502"]);
    gw.log_line(&[
        "pool api: no healthy server",
        &format!("{NAME} does not resolve"),
    ]);
    dns.set(NAME, &["127.0.0.2"]);
    wait_for("the name to resolve", Duration::from_secs(10), || {
        (get(gw.port(), "www", "/").status == 200).then_some(())
    });
    assert!(!b2.requests().is_empty());
}
