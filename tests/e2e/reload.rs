//! Configuration changes: reload in place (`pinion reload`, SIGHUP, watch mode) and the
//! hand-over to a new process (`pinion upgrade`, or `reload` when sockets change), each under
//! load, counting every request and every client connection.

use crate::harness::gateway::Gateway;
use crate::harness::load::{H2Load, Load, Method, Outcome};
use crate::harness::reload::{
    captured, captured_callers, presented_pin, secret_generation, stdout,
};
use crate::harness::{free_port, get, pinion, wait_for, Backend, Conn, Env, Identity};
use crate::operations::{admin_get, current_pid, metrics, reload, sample};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;

/// `pools:` and `routes:` with one plain pool `p` on `port` and a catch-all route `all`, with
/// `extra` added to the route.
fn pool_on(port: u16, extra: &str) -> String {
    format!(
        "pools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:{port}]\nroutes:\n  - name: all\n    pool: p\n{extra}"
    )
}

fn config_file(gw: &Gateway) -> std::path::PathBuf {
    gw.env.path().join("pinion.yaml")
}

/// Writes the test's full configuration (server section included) to its file.
fn rewrite(gw: &Gateway, yaml: &str) {
    gw.env.write_config(yaml);
}

#[test]
fn reload_and_upgrade_return_under_captured_output() {
    let (a, b) = (Backend::plain("a"), Backend::plain("b"));
    let env = Env::new();
    let listeners = env.listeners();
    let gw = env.start(&(listeners.clone() + &pool_on(a.port, "")));
    let file = config_file(&gw);
    let pid = gw.pid();
    let deadline = Duration::from_secs(25);

    rewrite(&gw, &(listeners.clone() + &pool_on(b.port, "")));
    for (generation, (how, cmd)) in (2..).zip(captured_callers("reload", &file)) {
        let out = captured(cmd, deadline);
        assert_eq!(out.status.code(), Some(0), "{how}: {out:?}");
        let want = format!(
            "reloaded {} in place: pid {pid}, generation {generation}, sha256 ",
            file.display()
        );
        assert!(stdout(&out).contains(&want), "{how}: {out:?}");
        assert_eq!(get(gw.port(), "h", "/").body, "b /\n");
    }
    assert_eq!(current_pid(&gw), pid);

    // The hand-over too: the new gateway must not keep the caller's pipes.
    let callers = captured_callers("upgrade", &file);
    let upgrades = callers.len();
    for (how, cmd) in callers {
        let old = current_pid(&gw);
        let out = captured(cmd, deadline);
        assert_eq!(out.status.code(), Some(0), "{how}: {out:?}");
        let new = current_pid(&gw);
        assert_ne!(new, old, "{how}: a new process serves");
        assert!(
            stdout(&out).contains(&format!("upgraded: pid {old} handed over to pid {new}")),
            "{how}: {out:?}"
        );
        assert_eq!(get(gw.port(), "h", "/").body, "b /\n");
    }
    // Each new process logs where the old one logged: this test's log file.
    wait_for("every process's log", Duration::from_secs(10), || {
        let started = gw
            .logs()
            .lines()
            .filter(|l| l.contains("control socket") && l.contains("ready"))
            .count();
        (started > upgrades).then_some(())
    });
}

#[test]
fn in_place_reload_under_load_keeps_every_connection_and_the_process() {
    let (old, new) = (Backend::plain("old"), Backend::plain("new"));
    let env = Env::new();
    let listeners = env.listeners();
    let mut gw = env.start(&(listeners.clone() + &pool_on(old.port, "")));
    let pid = gw.pid();
    let load = Load::start(gw.port(), 20, "/");
    wait_for("load on the old backend", Duration::from_secs(10), || {
        (old.requests().len() > 200).then_some(())
    });
    rewrite(&gw, &(listeners + &pool_on(new.port, "")));
    let said = reload(&gw, &config_file(&gw));
    assert!(said.contains("in place"), "{said}");
    wait_for("load on the new backend", Duration::from_secs(10), || {
        (new.requests().len() > 200).then_some(())
    });
    let outcome = load.stop();
    eprintln!("in-place reload under load: {} ok", outcome.ok);
    lost_nothing(&outcome, &gw);
    assert_eq!(
        outcome.connections, 20,
        "a reload in place closes no connection"
    );
    assert_eq!(outcome.reconnects, 0);
    assert_eq!(current_pid(&gw), pid, "the PID file names the same process");
    assert!(gw.running(), "the process started by the test still runs");
}

#[test]
fn sighup_reloads_in_place_and_a_broken_file_changes_nothing() {
    let (a, b) = (Backend::plain("a"), Backend::plain("b"));
    let env = Env::new();
    let admin = free_port();
    let head = format!("{}admin:\n  bind: 127.0.0.1:{admin}\n", env.listeners());
    let mut gw = env.start(&(head.clone() + &pool_on(a.port, "")));
    let pid = Pid::from_raw(gw.pid());
    assert_eq!(get(gw.port(), "h", "/").body, "a /\n");

    rewrite(&gw, &(head.clone() + &pool_on(b.port, "")));
    kill(pid, Signal::SIGHUP).unwrap();
    gw.log_line(&["configuration reloaded in place", "generation 2"]);
    assert_eq!(get(gw.port(), "h", "/").body, "b /\n");

    rewrite(&gw, &(head + &pool_on(a.port, "") + "    bogus: 1\n"));
    kill(pid, Signal::SIGHUP).unwrap();
    gw.log_line(&["configuration reload from", "failed, nothing changed"]);
    assert!(gw.running(), "SIGHUP never stops the gateway");
    assert_eq!(get(gw.port(), "h", "/").body, "b /\n");
    let m = metrics(admin);
    assert_eq!(sample(&m, "pinion_config_generation", &[]), 2.0);
    assert_eq!(
        sample(&m, "pinion_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        sample(&m, "pinion_config_reloads_total", &[("result", "failed")]),
        1.0
    );
}

#[test]
fn a_broken_file_is_refused_with_every_problem_and_changes_nothing() {
    let a = Backend::plain("a");
    let env = Env::new();
    let admin = free_port();
    let head = format!("{}admin:\n  bind: 127.0.0.1:{admin}\n", env.listeners());
    let gw = env.start(&(head.clone() + &pool_on(a.port, "")));
    let file = config_file(&gw);
    let broken = pool_on(a.port, "")
        .replace("pool: p\n", "pool: nope\n")
        .replace("probe: false", "probe: false\n    bogus: 1");
    rewrite(&gw, &(head + &broken));
    let test = pinion().arg("-t").arg("-c").arg(&file).output().unwrap();
    let out = pinion().args(["reload", "-c"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = std::str::from_utf8(&test.stderr)
        .unwrap()
        .lines()
        .filter(|l| l.contains(".yaml:"))
        .collect();
    assert!(problems.len() >= 2, "{problems:?}");
    for p in &problems {
        assert!(said.contains(p), "{p} missing from:\n{said}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(admin, "/status").body).unwrap();
    assert_eq!(status["config"]["generation"], 1);
    assert_eq!(get(gw.port(), "h", "/").body, "a /\n", "routing as before");
}

#[test]
fn certificates_and_tls_versions_change_for_new_handshakes_only() {
    let a = Backend::plain("a");
    let env = Env::new();
    let listeners = env.listeners();
    let gw = env.start(&(listeners.clone() + &pool_on(a.port, "")));
    let old_pin = presented_pin(gw.port(), false).unwrap();
    let mut open = Conn::tls(gw.port());
    let ask = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(open.send(ask).status, 200);

    let fresh = Identity::self_signed(&["localhost"]);
    fresh.write(gw.env.path(), "front");
    reload(&gw, &config_file(&gw));
    assert_eq!(presented_pin(gw.port(), false).unwrap(), fresh.pin());
    assert_ne!(fresh.pin(), old_pin);
    assert_eq!(
        open.send(ask).status,
        200,
        "a connection made before the reload keeps working"
    );

    assert!(presented_pin(gw.port(), true).is_ok());
    let strict = listeners.replace(
        "key: front.key\n",
        "key: front.key\n      min_version: \"1.3\"\n",
    );
    rewrite(&gw, &(strict + &pool_on(a.port, "")));
    reload(&gw, &config_file(&gw));
    assert!(
        presented_pin(gw.port(), true).is_err(),
        "a TLS 1.2 client is refused once min_version is 1.3"
    );
    assert!(presented_pin(gw.port(), false).is_ok());
}

#[test]
fn removing_a_pin_makes_a_pooled_connection_unusable_at_once() {
    let key = Identity::self_signed(&["api.internal"]);
    let other = Identity::self_signed(&["api.internal"]);
    let backend = Backend::https("api", &key);
    let env = Env::new();
    let listeners = env.listeners();
    let pools = |pins: &str| {
        format!(
            "pools:\n  - name: api\n    probe: false\n    servers: [127.0.0.1:{}]\n    tls:\n      pins:\n{pins}routes:\n  - name: all\n    pool: api\n",
            backend.port
        )
    };
    let both = format!(
        "        - sha256: \"{}\"\n        - sha256: \"{}\"\n",
        key.pin(),
        other.pin()
    );
    let gw = env.start(&(listeners.clone() + &pools(&both)));
    for _ in 0..3 {
        assert_eq!(get(gw.port(), "h", "/").status, 200);
    }
    assert_eq!(
        backend.handshakes(),
        1,
        "the backend connection is pooled and reused"
    );
    let only_other = format!("        - sha256: \"{}\"\n", other.pin());
    rewrite(&gw, &(listeners + &pools(&only_other)));
    reload(&gw, &config_file(&gw));
    let bytes = backend.request_bytes();
    assert_eq!(get(gw.port(), "h", "/").status, 502);
    assert_eq!(
        backend.request_bytes(),
        bytes,
        "no request byte reaches a key whose pin was removed"
    );
}

/// Whether `/status` on `admin` shows the second server of the first pool out of rotation
/// because it answered 503.
fn second_server_unhealthy(admin: u16) -> Option<bool> {
    let s: serde_json::Value = serde_json::from_str(&admin_get(admin, "/status").body).ok()?;
    let server = &s["pools"][0]["servers"][1];
    Some(server["healthy"] == false && server["reason"].as_str().is_some_and(|r| r.contains("503")))
}

#[test]
fn a_reload_keeps_the_health_of_servers_whose_trust_is_unchanged() {
    let key = Identity::self_signed(&["api.internal"]);
    let other = Identity::self_signed(&["api.internal"]);
    let (good, sick) = (Backend::https("good", &key), Backend::https("sick", &key));
    sick.set_status(503);
    // Every probe of the sick server takes 3 s: a reload that forgot its health would show it
    // healthy (and send it requests) until the first new probe ends.
    sick.set_delay(Duration::from_secs(3));
    let env = Env::new();
    let admin = free_port();
    let head = format!("{}admin:\n  bind: 127.0.0.1:{admin}\n", env.listeners());
    let pools = |pins: &str, header: &str| {
        format!(
            "pools:\n  - name: p\n    probe: {{interval_seconds: 1, timeout_seconds: 10, unhealthy_threshold: 1}}\n    servers: [127.0.0.1:{}, 127.0.0.1:{}]\n    tls:\n      pins: [{pins}]\nroutes:\n  - name: all\n    pool: p\n    response_headers: {{set: {{X-Gen: \"{header}\"}}}}\n",
            good.port, sick.port
        )
    };
    let one_pin = format!("{{sha256: \"{}\"}}", key.pin());
    let gw = env.start(&(head.clone() + &pools(&one_pin, "1")));
    wait_for(
        "the sick server out of rotation",
        Duration::from_secs(15),
        || second_server_unhealthy(admin)?.then_some(()),
    );

    // An unrelated change (a header rule): both servers keep their health.
    rewrite(&gw, &(head.clone() + &pools(&one_pin, "2")));
    reload(&gw, &config_file(&gw));
    assert_eq!(
        second_server_unhealthy(admin),
        Some(true),
        "the sick server is still out, with its reason, right after the reload"
    );
    gw.log_line(&["generation 2", "2 of 2 server(s) kept their health"]);
    let before = sick.requests().len();
    for _ in 0..10 {
        let r = get(gw.port(), "h", "/");
        assert_eq!((r.status, r.header("x-gen")), (200, Some("2")));
    }
    assert_eq!(
        sick.requests().len(),
        before,
        "no request for the unhealthy server"
    );

    // A change of the pool's trust (one more pin): its servers start afresh and are probed
    // again under the new trust.
    let two_pins = format!("{one_pin}, {{sha256: \"{}\"}}", other.pin());
    rewrite(&gw, &(head + &pools(&two_pins, "3")));
    reload(&gw, &config_file(&gw));
    gw.log_line(&["generation 3", "0 of 2 server(s) kept their health"]);
    assert_eq!(
        second_server_unhealthy(admin),
        Some(false),
        "under a new trust the server starts afresh"
    );
    wait_for(
        "the sick server probed again and out of rotation",
        Duration::from_secs(15),
        || second_server_unhealthy(admin)?.then_some(()),
    );
}

#[test]
fn counters_continue_and_status_names_the_configuration() {
    let a = Backend::plain("a");
    let env = Env::new();
    let admin = free_port();
    let head = format!("{}admin:\n  bind: 127.0.0.1:{admin}\n", env.listeners());
    let gw = env.start(&(head.clone() + &pool_on(a.port, "")));
    assert_eq!(
        sample(&metrics(admin), "pinion_config_generation", &[]),
        1.0
    );
    let count = || {
        sample(
            &metrics(admin),
            "pinion_requests_total",
            &[
                ("listener", "https"),
                ("route", "all"),
                ("pool", "p"),
                ("status_class", "2xx"),
            ],
        )
    };
    for _ in 0..5 {
        assert_eq!(get(gw.port(), "h", "/").status, 200);
    }
    // A request is counted in its logging phase, just after its response went out.
    let counted = |n: f64| {
        wait_for(
            &format!("{n} requests counted"),
            Duration::from_secs(5),
            || (count() == n).then_some(()),
        )
    };
    counted(5.0);
    rewrite(
        &gw,
        &(head + &pool_on(a.port, "    request_headers: {set: {X-Env: two}}\n")),
    );
    reload(&gw, &config_file(&gw));
    for _ in 0..3 {
        assert_eq!(get(gw.port(), "h", "/").status, 200);
    }
    // Counters go on across a reload: a reset would never reach 8.
    counted(8.0);
    assert_eq!(a.requests().last().unwrap().header("x-env"), Some("two"));

    let bytes = std::fs::read(config_file(&gw)).unwrap();
    let digest = openssl::hash::hash(openssl::hash::MessageDigest::sha256(), &bytes).unwrap();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let s: serde_json::Value = serde_json::from_str(&admin_get(admin, "/status").body).unwrap();
    assert_eq!(s["config"]["generation"], 2);
    assert_eq!(s["config"]["sha256"], hex.as_str());
    assert!(s["config"]["loaded_at"].as_str().unwrap().ends_with('Z'));
    let m = metrics(admin);
    assert_eq!(sample(&m, "pinion_config_generation", &[]), 2.0);
    assert_eq!(
        sample(&m, "pinion_config_reloads_total", &[("result", "ok")]),
        1.0
    );
}

/// Fails unless the load saw no failure and no connection closed unannounced; the message
/// has the gateway's log (every process of the test logs there).
fn lost_nothing(outcome: &Outcome, gw: &Gateway) {
    assert!(
        outcome.unannounced_closes == 0 && outcome.failures.is_empty(),
        "{} unannounced close(s), failures: {:?}\ngateway log:\n{}",
        outcome.unannounced_closes,
        outcome.failures,
        gw.logs()
    );
}

/// A gateway whose grace period is 2 s, on `backend`, with `admin` when given.
fn handover_gateway(backend: &Backend, admin: Option<u16>) -> (Gateway, String) {
    let env = Env::new();
    let admin = admin.map_or(String::new(), |p| {
        format!("admin:\n  bind: 127.0.0.1:{p}\n")
    });
    let yaml = format!(
        "{}{admin}{}{}",
        env.server_section(2),
        env.listeners(),
        pool_on(backend.port, "")
    );
    (env.start(&yaml), yaml)
}

/// With load running through `gw` to `old`: `pinion upgrade` onto `yaml` with `new` instead,
/// then waits until the old process has exited 0 and the load flows through the new one.
fn upgrade_from_to(gw: &mut Gateway, yaml: &str, old: &Backend, new: &Backend) {
    wait_for("load on the old backend", Duration::from_secs(10), || {
        (old.requests().len() > 200).then_some(())
    });
    rewrite(
        gw,
        &yaml.replace(&old.port.to_string(), &new.port.to_string()),
    );
    let out = pinion()
        .args(["upgrade", "-c"])
        .arg(config_file(gw))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    old_leaves_and_load_goes_on(gw, || new.requests().len());
}

/// Waits until the old process has exited 0 after a hand-over, then until `served` (a count of
/// answered requests) has grown by 200 through the new process.
fn old_leaves_and_load_goes_on(gw: &mut Gateway, served: impl Fn() -> usize) {
    assert_eq!(
        gw.wait_exit(Duration::from_secs(30)),
        Some(0),
        "the old process leaves once its connections are done"
    );
    let before = served();
    wait_for(
        "load after the old process left",
        Duration::from_secs(10),
        || (served() > before + 200).then_some(()),
    );
}

#[test]
fn upgrade_under_keepalive_load_loses_no_request_and_announces_every_close() {
    let (old, new) = (Backend::plain("old"), Backend::plain("new"));
    let (mut gw, yaml) = handover_gateway(&old, None);
    let load = Load::start(gw.port(), 20, "/");
    upgrade_from_to(&mut gw, &yaml, &old, &new);
    let outcome = load.stop();
    eprintln!(
        "upgrade under load: {} ok, {} announced reconnects",
        outcome.ok, outcome.reconnects
    );
    lost_nothing(&outcome, &gw);
    assert!(
        outcome.reconnects >= 20,
        "every client was told to reconnect: {}",
        outcome.reconnects
    );
}

#[test]
fn reload_with_a_new_socket_hands_over_and_loses_no_post() {
    let backend = Backend::plain("b");
    let (mut gw, yaml) = handover_gateway(&backend, None);
    let load = Load::with(gw.port(), 10, "/post", Method::Post);
    wait_for("POSTs flowing", Duration::from_secs(10), || {
        (load.ok() > 200).then_some(())
    });
    let admin = free_port();
    rewrite(&gw, &format!("{yaml}admin:\n  bind: 127.0.0.1:{admin}\n"));
    let said = reload(&gw, &config_file(&gw));
    assert!(
        said.contains("changes admin.bind: handing over to a new process"),
        "{said}"
    );
    old_leaves_and_load_goes_on(&mut gw, || load.ok());
    let outcome = load.stop();
    lost_nothing(&outcome, &gw);
    let posts: Vec<String> = backend
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.target)
        .collect();
    let unique: std::collections::HashSet<&String> = posts.iter().collect();
    assert_eq!(
        unique.len(),
        posts.len(),
        "a POST reached the backend twice"
    );
    assert_eq!(
        posts.len(),
        outcome.ok,
        "every answered POST reached the backend once"
    );
    assert_eq!(admin_get(admin, "/healthz").status, 200);
}

#[test]
fn reload_with_a_new_listener_hands_over_under_load_and_loses_no_request() {
    let backend = Backend::plain("b");
    let (mut gw, yaml) = handover_gateway(&backend, None);
    let load = Load::start(gw.port(), 20, "/");
    wait_for("load flowing", Duration::from_secs(10), || {
        (load.ok() > 200).then_some(())
    });
    let second = free_port();
    let listener = format!(
        "  - name: second\n    bind: 127.0.0.1:{second}\n    tls:\n      certificates:\n        - cert: front.pem\n          key: front.key\npools:\n"
    );
    rewrite(&gw, &yaml.replacen("pools:\n", &listener, 1));
    let said = reload(&gw, &config_file(&gw));
    assert!(
        said.contains("changes the listening sockets")
            && said.contains("handing over to a new process"),
        "{said}"
    );
    // `reload` returns once the new process serves: on the new listener too.
    let conn = Conn::try_tls(second);
    let logs = gw.logs();
    let mut conn = conn.unwrap_or_else(|e| panic!("new listener: {e}\n{logs}"));
    assert_eq!(
        conn.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n").status,
        200,
        "the new listener serves"
    );
    old_leaves_and_load_goes_on(&mut gw, || load.ok());
    let outcome = load.stop();
    lost_nothing(&outcome, &gw);
}

#[test]
fn upgrade_under_http2_load_loses_no_stream() {
    let (old, new) = (Backend::plain("old"), Backend::plain("new"));
    let (mut gw, yaml) = handover_gateway(&old, None);
    let load = H2Load::start(gw.port(), 4, 8, "/h2");
    upgrade_from_to(&mut gw, &yaml, &old, &new);
    let outcome = load.stop();
    eprintln!(
        "upgrade under HTTP/2 load: {} streams ok, {} reconnects after GOAWAY",
        outcome.ok, outcome.reconnects
    );
    lost_nothing(&outcome, &gw);
    assert!(
        outcome.reconnects >= 4,
        "every connection of the old process ended with a GOAWAY: {outcome:?}"
    );
}

#[test]
fn watch_mode_follows_a_secret_switch_and_ignores_a_broken_file() {
    let (a, b) = (Backend::plain("a"), Backend::plain("b"));
    let env = Env::new();
    let secret = env.path().join("secret");
    let first = Identity::self_signed(&["localhost"]);
    secret_generation(&secret, "..2026_01_01", &first);
    let d = env.path().display();
    let head = format!(
        "server:\n  pid_file: {d}/pinion.pid\n  upgrade_sock: {d}/upgrade.sock\n  control_sock: {d}/control.sock\n  watch: true\nlisteners:\n  - name: https\n    bind: 127.0.0.1:{}\n    tls:\n      certificates:\n        - cert: secret/tls.pem\n          key: secret/tls.key\n",
        env.port
    );
    let gw = env.start(&(head.clone() + &pool_on(a.port, "")));
    assert_eq!(presented_pin(gw.port(), false).unwrap(), first.pin());

    let second = Identity::self_signed(&["localhost"]);
    secret_generation(&secret, "..2026_02_01", &second);
    wait_for("the new certificate", Duration::from_secs(15), || {
        (presented_pin(gw.port(), false).ok()? == second.pin()).then_some(())
    });
    gw.log_line(&["watch:", "changed; reloading"]);

    let file = config_file(&gw);
    std::fs::write(&file, head.clone() + &pool_on(b.port, "") + "  - broken\n").unwrap();
    gw.log_line(&["configuration reload from", "failed, nothing changed"]);
    assert_eq!(
        get(gw.port(), "h", "/").body,
        "a /\n",
        "a broken file changes nothing"
    );

    std::fs::write(&file, head + &pool_on(b.port, "")).unwrap();
    wait_for("the fixed file applied", Duration::from_secs(15), || {
        (get(gw.port(), "h", "/").body == "b /\n").then_some(())
    });
    assert_eq!(current_pid(&gw), gw.pid());
}

#[test]
fn a_handover_answers_healthz_503_and_keeps_connections_for_the_grace_period() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let admin = free_port();
    // Longer than Pingora's accepting overlap plus the last-accept margin, so that closing
    // idle connections at either would be caught.
    let grace = 10;
    let yaml = format!(
        "{}admin:\n  bind: 127.0.0.1:{admin}\n{}{}",
        env.server_section(grace),
        env.listeners(),
        pool_on(backend.port, "")
    );
    let mut gw = env.start(&yaml);
    let health = "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n";
    let request = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    // Connections to the old process, opened before the hand-over.
    let mut probe = Conn::plain(admin);
    assert_eq!(probe.send(health).status, 200);
    let mut busy = Conn::tls(gw.port());
    assert_eq!(busy.send(request).status, 200);
    let mut idle = Conn::tls(gw.port());
    assert_eq!(idle.send(request).status, 200);

    let before = std::time::Instant::now();
    let out = pinion()
        .args(["upgrade", "-c"])
        .arg(config_file(&gw))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", gw.logs());
    wait_for(
        "healthz 503 in the old process",
        Duration::from_secs(5),
        || (probe.send(health).status == 503).then_some(()),
    );
    let r = busy.send(request);
    assert_eq!(r.status, 200, "open connections are served");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(idle.wait_closed());
    let kept = before.elapsed();
    assert!(
        kept >= Duration::from_secs(grace),
        "an idle connection was closed {kept:?} after the hand-over began, before the {grace} s grace period"
    );
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
}
