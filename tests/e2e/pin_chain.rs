//! Pins for short-lived certificates: `scope: chain` pins anywhere in the verified chain,
//! staged pins with windows, their states and warnings, report-mode keys, and proposals.

use crate::harness::{free_port, get, pinion, wait_for, Backend, Ca, Env, Identity};
use crate::operations::{admin_get, metrics, sample};
use std::time::Duration;

/// A pool of one server, no probe, with `tls` (already indented under `tls:`).
fn pool(name: &str, backend: &Backend, tls: &str) -> String {
    format!(
        "  - name: {name}\n    servers: [127.0.0.1:{}]\n    probe: false\n    tls:\n{tls}",
        backend.port
    )
}

/// One route per pool, by path prefix `/<pool>/`.
fn routes(pools: &[&str]) -> String {
    let mut out = String::from("routes:\n");
    for p in pools {
        out.push_str(&format!(
            "  - name: {p}\n    paths: [\"/{p}/*\"]\n    pool: {p}\n"
        ));
    }
    out
}

fn status(admin: u16) -> serde_json::Value {
    serde_json::from_str(&admin_get(admin, "/status").body).unwrap()
}

fn pool_status<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
}

#[test]
fn a_renewed_key_under_the_pinned_intermediate_is_accepted_where_a_leaf_pin_refuses_it() {
    let root = Ca::new("Root");
    let issuing = root.intermediate("Issuing CA 1");
    let before = issuing.issue(&["api.internal"]);
    // The renewal: same name, same issuer, a new key (as ACME clients do by default).
    let renewed = issuing.issue(&["api.internal"]);
    assert_ne!(before.pin(), renewed.pin());
    let for_chain = Backend::https_chain("chain", &renewed, &[issuing.cert()]);
    let for_leaf = Backend::https_chain("leaf", &renewed, &[issuing.cert()]);
    let env = Env::new();
    issuing.write(env.path(), "issuing");
    before.write(env.path(), "before");
    let admin = free_port();
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}pools:\n{}{}{}",
        env.listeners(),
        pool(
            "chain",
            &for_chain,
            "      sni: api.internal\n      pins:\n        - cert: issuing.pem\n          scope: chain\n"
        ),
        pool("leaf", &for_leaf, "      pins:\n        - cert: before.pem\n"),
        routes(&["chain", "leaf"])
    );
    let gw = env.start(&yaml);

    let r = get(gw.port(), "www.example.com", "/chain/x");
    assert_eq!(r.status, 200, "{}", gw.logs());
    assert_eq!(r.body, "chain /chain/x\n");
    let r = get(gw.port(), "www.example.com", "/leaf/x");
    assert_eq!(
        r.status, 502,
        "a leaf pin of the old key refuses the renewal"
    );
    assert_eq!(for_leaf.request_bytes(), 0);

    let s = status(admin);
    let server = &pool_status(&s, "chain")["servers"][0];
    assert_eq!(server["pin_match"]["scope"], "chain", "{server}");
    assert_eq!(server["pin_match"]["depth"], 1, "{server}");
    assert_eq!(server["pin_match"]["pin"], issuing.pin().as_str());
    let leaf = &pool_status(&s, "leaf")["servers"][0];
    assert!(leaf["pin_match"].is_null(), "{leaf}");
    assert!(
        leaf["pin_refused"]
            .as_str()
            .unwrap()
            .contains(&renewed.pin()),
        "{leaf}"
    );
}

#[test]
fn a_foreign_leaf_sent_with_the_pinned_intermediate_gets_zero_request_bytes() {
    let root = Ca::new("Root");
    let issuing = root.intermediate("Issuing CA 1");
    // Same name, signed by an unrelated CA, presented together with the pinned intermediate.
    let foreign = Ca::new("Elsewhere").issue(&["api.internal"]);
    let impostor = Backend::https_chain("impostor", &foreign, &[issuing.cert()]);
    // The pinned intermediate's key presented as a self-signed leaf is no better: its owner
    // would need the intermediate's private key.
    let fake_issuer = Identity::self_signed(&["api.internal"]);
    let fake = Backend::https_chain("fake", &fake_issuer, &[issuing.cert()]);
    let env = Env::new();
    issuing.write(env.path(), "issuing");
    let tls = "      sni: api.internal\n      pins:\n        - cert: issuing.pem\n          scope: chain\n";
    let yaml = format!(
        "{}pools:\n{}{}{}",
        env.listeners(),
        pool("impostor", &impostor, tls),
        pool("fake", &fake, tls),
        routes(&["impostor", "fake"])
    );
    let gw = env.start(&yaml);
    for p in ["impostor", "fake"] {
        for _ in 0..2 {
            let r = get(gw.port(), "www.example.com", &format!("/{p}/secret"));
            assert_eq!(r.status, 502, "{p}: {}", gw.logs());
        }
    }
    for (b, id) in [(&impostor, &foreign), (&fake, &fake_issuer)] {
        assert!(b.handshakes() >= 1, "the gateway never reached {}", b.name);
        assert_eq!(b.request_bytes(), 0, "request bytes reached {}", b.name);
        let line = gw.log_line(&["not whitelisted", &id.pin()]);
        assert!(line.contains(&format!("127.0.0.1:{}", b.port)), "{line}");
    }
}

#[test]
fn a_root_pin_matches_by_its_certificate_file_and_names_are_still_checked() {
    let root = Ca::new("Org Root");
    let issuing = root.intermediate("Org Issuing");
    let leaf = issuing.issue(&["api.internal"]);
    let (good, misnamed, unnamed) = (
        Backend::https_chain("good", &leaf, &[issuing.cert()]),
        Backend::https_chain("misnamed", &leaf, &[issuing.cert()]),
        Backend::https_chain("unnamed", &leaf, &[issuing.cert()]),
    );
    let env = Env::new();
    root.write(env.path(), "root");
    let pin = "      pins:\n        - cert: root.pem\n          scope: chain\n";
    let yaml = format!(
        "{}pools:\n{}{}{}{}",
        env.listeners(),
        pool("good", &good, &format!("      sni: api.internal\n{pin}")),
        pool(
            "misnamed",
            &misnamed,
            &format!("      sni: web.internal\n{pin}")
        ),
        pool(
            "unnamed",
            &unnamed,
            &format!("      sni: web.internal\n      verify_hostname: false\n{pin}")
        ),
        routes(&["good", "misnamed", "unnamed"])
    );
    let gw = env.start(&yaml);
    assert_eq!(get(gw.port(), "h", "/good/").status, 200, "{}", gw.logs());
    let r = get(gw.port(), "h", "/misnamed/");
    assert_eq!(r.status, 502, "the name is checked with a chain pin");
    assert_eq!(misnamed.request_bytes(), 0);
    gw.log_line(&["pool misnamed", "names do not match"]);
    assert_eq!(
        get(gw.port(), "h", "/unnamed/").status,
        200,
        "{}",
        gw.logs()
    );
}

#[test]
fn staged_pins_match_only_inside_their_window_and_show_their_state() {
    let key = Identity::self_signed(&["api.internal"]);
    let (inside, before, after) = (
        Backend::https("inside", &key),
        Backend::https("before", &key),
        Backend::https("after", &key),
    );
    let pin = key.pin();
    let env = Env::new();
    let admin = free_port();
    let now = chrono::Utc::now();
    let at = |days: i64| {
        (now + chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let window = |nb: String, na: String| {
        format!("      pins:\n        - sha256: \"{pin}\"\n          not_before: \"{nb}\"\n          not_after: \"{na}\"\n")
    };
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}pools:\n{}{}{}{}",
        env.listeners(),
        pool("inside", &inside, &window(at(-1), at(10))),
        pool("before", &before, &window(at(2), at(30))),
        pool("after", &after, &window(at(-30), at(-2))),
        routes(&["inside", "before", "after"])
    );
    let gw = env.start(&yaml);
    assert_eq!(get(gw.port(), "h", "/inside/").status, 200, "{}", gw.logs());
    for (p, b) in [("before", &before), ("after", &after)] {
        assert_eq!(get(gw.port(), "h", &format!("/{p}/")).status, 502, "{p}");
        assert_eq!(b.request_bytes(), 0, "{p}");
    }
    gw.log_line(&["pool before", "only by staged pins"]);
    gw.log_line(&["pool after", "only by expired pins"]);

    let s = status(admin);
    for (p, state) in [
        ("inside", "active"),
        ("before", "staged"),
        ("after", "expired"),
    ] {
        let pins = &pool_status(&s, p)["pins"];
        assert_eq!(pins[0]["state"], state, "{p}: {pins}");
        assert_eq!(pins[0]["sha256"], pin.as_str());
        // Read as text: base64 pins end in '=', which naive exposition parsers split on.
        let body = admin_get(admin, "/metrics").body;
        let line = format!(
            "pinion_pin_state{{pool=\"{p}\",pin=\"{pin}\",scope=\"leaf\",state=\"{state}\"}} 1"
        );
        assert!(body.lines().any(|l| l == line), "{line} not in:\n{body}");
    }
    // The only pin accepting `inside` ends in 10 days, within the default 14: a warning now.
    let server = &pool_status(&s, "inside")["servers"][0];
    assert_eq!(
        server["pin_warnings"][0]["reason"], "pin_window_ending",
        "{server}"
    );
    let m = metrics(admin);
    let server = format!("127.0.0.1:{}", inside.port);
    for (reason, want) in [("pin_window_ending", 1.0), ("certificate_expiring", 0.0)] {
        let labels = [
            ("pool", "inside"),
            ("server", server.as_str()),
            ("reason", reason),
        ];
        assert_eq!(sample(&m, "pinion_pin_warning", &labels), want, "{reason}");
    }
    wait_for("the warning log line", Duration::from_secs(10), || {
        gw.logs().contains("stops matching at").then_some(())
    });
}

#[test]
fn an_expiring_certificate_without_a_spare_pin_warns_and_a_staged_next_key_clears_it() {
    // Test certificates live 30 days: with warn_days 60 they are "expiring".
    let key = Identity::self_signed(&["api.internal"]);
    let next = Identity::self_signed(&["api.internal"]);
    let (alone, spare) = (Backend::https("alone", &key), Backend::https("spare", &key));
    let env = Env::new();
    let admin = free_port();
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}pools:\n{}{}{}",
        env.listeners(),
        pool(
            "alone",
            &alone,
            &format!("      warn_days: 60\n      pins:\n        - sha256: \"{}\"\n", key.pin())
        ),
        pool(
            "spare",
            &spare,
            &format!(
                "      warn_days: 60\n      pins:\n        - sha256: \"{}\"\n        - sha256: \"{}\"\n          not_before: \"2020-01-01T00:00:00Z\"\n",
                key.pin(),
                next.pin()
            )
        ),
        routes(&["alone", "spare"])
    );
    let gw = env.start(&yaml);
    assert_eq!(get(gw.port(), "h", "/alone/").status, 200);
    assert_eq!(get(gw.port(), "h", "/spare/").status, 200);
    let m = metrics(admin);
    for (p, b, want) in [("alone", &alone, 1.0), ("spare", &spare, 0.0)] {
        let server = format!("127.0.0.1:{}", b.port);
        let labels = [
            ("pool", p),
            ("server", server.as_str()),
            ("reason", "certificate_expiring"),
        ];
        assert_eq!(sample(&m, "pinion_pin_warning", &labels), want, "{p}");
    }
    wait_for("the warning log line", Duration::from_secs(10), || {
        gw.logs()
            .lines()
            .any(|l| l.contains("pool alone") && l.contains("no other pin of the pool"))
            .then_some(())
    });
}

#[test]
fn a_report_mode_pool_lists_the_keys_it_let_through() {
    let listed = Identity::self_signed(&["api.internal"]);
    let seen = Identity::self_signed(&["api.internal"]);
    let backend = Backend::https("seen", &seen);
    let env = Env::new();
    let admin = free_port();
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}pools:\n{}{}",
        env.listeners(),
        pool(
            "report",
            &backend,
            &format!(
                "      pin_mode: report\n      pins:\n        - sha256: \"{}\"\n",
                listed.pin()
            )
        ),
        routes(&["report"])
    );
    let gw = env.start(&yaml);
    for _ in 0..3 {
        assert_eq!(get(gw.port(), "h", "/report/").status, 200, "{}", gw.logs());
    }
    let s = status(admin);
    let keys = &pool_status(&s, "report")["unlisted_keys"]["keys"];
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys[0]["pin"], seen.pin().as_str());
    assert!(keys[0]["count"].as_u64().unwrap() >= 1, "{keys}");
    assert!(keys[0]["first_seen"].is_string() && keys[0]["last_seen"].is_string());
    assert_eq!(keys[0]["servers"][0], format!("127.0.0.1:{}", backend.port));
    let m = metrics(admin);
    assert_eq!(
        sample(&m, "pinion_pin_unlisted_keys", &[("pool", "report")]),
        1.0
    );
}

#[test]
fn preflight_proposes_the_leaf_and_chain_keys_and_the_merged_proposal_validates() {
    let root = Ca::new("Root");
    let issuing = root.intermediate("Issuing CA 1");
    let leaf = issuing.issue(&["api.internal"]);
    let old = Identity::self_signed(&["api.internal"]);
    let backend = Backend::https_chain("api", &leaf, &[issuing.cert()]);
    let env = Env::new();
    old.write(env.path(), "old");
    let staged = Identity::self_signed(&["api.internal"]).pin();
    let tls = format!(
        "      sni: api.internal\n      pins:\n        - cert: old.pem\n        - sha256: \"{staged}\"\n          not_before: \"2099-01-01T00:00:00Z\"\n"
    );
    let yaml = format!(
        "{}pools:\n{}{}",
        env.listeners(),
        pool("api", &backend, &tls),
        routes(&["api"])
    );
    let file = env.write_config(&yaml);
    let out = env.path().join("proposal.yaml");
    let run = pinion()
        .args(["preflight", "-c"])
        .arg(&file)
        .arg("--propose")
        .arg(&out)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(1),
        "the new key is not whitelisted yet: {table}"
    );
    assert_eq!(backend.request_bytes(), 0, "preflight sends nothing");
    let proposal = std::fs::read_to_string(&out).unwrap();
    assert!(proposal.contains(&leaf.pin()), "{proposal}");
    let issuing_pin = issuing.pin();
    assert!(proposal.contains(&issuing_pin), "{proposal}");
    assert!(
        proposal.contains("depth 1: subject \"CN=Issuing CA 1\", issuer \"CN=Root\""),
        "{proposal}"
    );
    assert!(proposal.contains("NEW: not whitelisted yet"), "{proposal}");
    assert!(
        proposal.contains("- cert: \"old.pem\""),
        "kept as written: {proposal}"
    );
    assert!(
        proposal.contains(&staged),
        "a staged pin is kept: {proposal}"
    );

    // Merge: the proposal's pins replace the pool's; the result validates and serves.
    let doc: serde_yaml::Value = serde_yaml::from_str(&proposal).unwrap();
    let pins = doc["pools"][0]["tls"]["pins"].clone();
    let chain_entry = pins
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["sha256"].as_str() == Some(issuing_pin.as_str()))
        .unwrap();
    assert_eq!(chain_entry["scope"].as_str(), Some("chain"));
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    config["pools"][0]["tls"]["pins"] = pins;
    std::fs::write(&file, serde_yaml::to_string(&config).unwrap()).unwrap();
    let check = pinion().arg("-t").arg("-c").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let again = pinion()
        .args(["preflight", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let table = String::from_utf8_lossy(&again.stdout);
    assert!(table.contains("yes (leaf)"), "{table}");
}

#[test]
fn probes_judge_chain_pins_as_requests_do() {
    let root = Ca::new("Root");
    let issuing = root.intermediate("Issuing CA 1");
    let leaf = issuing.issue(&["api.internal"]);
    let foreign = Ca::new("Elsewhere").issue(&["api.internal"]);
    let good = Backend::https_chain("good", &leaf, &[issuing.cert()]);
    let impostor = Backend::https_chain("impostor", &foreign, &[issuing.cert()]);
    let env = Env::new();
    issuing.write(env.path(), "issuing");
    let admin = free_port();
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}pools:\n  - name: api\n    servers: [127.0.0.1:{}, 127.0.0.1:{}]\n    probe: {{interval_seconds: 1, unhealthy_threshold: 1}}\n    tls:\n      sni: api.internal\n      pins:\n        - cert: issuing.pem\n          scope: chain\n{}",
        env.listeners(),
        good.port,
        impostor.port,
        routes(&["api"])
    );
    let gw = env.start(&yaml);
    let servers = wait_for(
        "the impostor out of rotation",
        Duration::from_secs(20),
        || {
            let s = status(admin);
            let servers = pool_status(&s, "api")["servers"].as_array()?.clone();
            // Servers start healthy: wait for the good one's first probe to have judged it too.
            let judged = !servers[0]["pin_match"].is_null();
            (judged && servers[0]["healthy"] == true && servers[1]["healthy"] == false)
                .then_some(servers)
        },
    );
    assert_eq!(servers[0]["pin_match"]["depth"], 1, "{}", servers[0]);
    let reason = servers[1]["reason"].as_str().unwrap();
    assert!(reason.contains("not whitelisted"), "{reason}");
    assert!(reason.contains(&foreign.pin()), "{reason}");
    assert!(good.probes() >= 1);
    assert_eq!(impostor.request_bytes(), 0, "a refused probe sends nothing");
    for _ in 0..4 {
        let r = get(gw.port(), "h", "/api/x");
        assert_eq!(r.status, 200, "{}", gw.logs());
        assert_eq!(r.body, "good /api/x\n");
    }
}
