//! Operations: admin endpoints, metrics, access log, draining and graceful reload.

use crate::harness::load::Load;
use crate::harness::{free_port, get, pinion, plain_pool, wait_for, Backend, Conn, Env, Identity};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::time::Duration;

pub fn admin_get(port: u16, path: &str) -> crate::harness::Response {
    Conn::plain(port).send(&format!(
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    ))
}

/// Samples by (metric name, sorted labels).
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

/// Parses `/metrics` with a Prometheus text-format parser.
pub fn metrics(port: u16) -> Samples {
    let r = admin_get(port, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let lines = r.body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            Some(((s.metric, labels), value))
        })
        .collect()
}

pub fn sample(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    m.get(&(name.to_owned(), want)).copied().unwrap_or(0.0)
}

#[test]
fn admin_endpoints_report_health_metrics_and_status() {
    let key = Identity::self_signed(&["api.internal"]);
    let good = Backend::https("good", &key);
    let other = Identity::self_signed(&["api.internal"]);
    let impostor = Backend::https("impostor", &other);
    let env = Env::new();
    key.write(env.path(), "k");
    let admin = free_port();
    let pools = format!(
        "  - name: api\n    servers: [127.0.0.1:{}]\n    probe: false\n    tls:\n      pins: [{{cert: k.pem}}]\n  - name: bad\n    servers: [127.0.0.1:{}]\n    probe: {{interval_seconds: 1, unhealthy_threshold: 1}}\n    tls:\n      pins: [{{cert: k.pem}}]\n",
        good.port, impostor.port
    );
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}pools:\n{pools}routes:\n  - name: bad\n    paths: [\"/bad\"]\n    pool: bad\n  - name: api\n    pool: api\n",
        env.listeners()
    );
    let gw = env.start(&yaml);
    assert_eq!(
        (
            admin_get(admin, "/healthz").status,
            admin_get(admin, "/healthz").body.as_str()
        ),
        (200, "ok\n")
    );
    gw.log_line(&["pool bad", "unhealthy"]);
    let mut conn = Conn::tls(gw.port());
    for _ in 0..3 {
        assert_eq!(conn.send("GET /x HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
    assert_eq!(get(gw.port(), "h", "/bad").status, 502);

    let m = metrics(admin);
    let req = |route: &str, pool: &str, class: &str| {
        sample(
            &m,
            "pinion_requests_total",
            &[
                ("listener", "https"),
                ("route", route),
                ("pool", pool),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(req("api", "api", "2xx"), 3.0);
    assert_eq!(req("bad", "bad", "5xx"), 1.0);
    let server = format!("127.0.0.1:{}", good.port);
    let conn_kind = |kind| {
        sample(
            &m,
            "pinion_backend_connections_total",
            &[("pool", "api"), ("server", &server), ("kind", kind)],
        )
    };
    assert_eq!((conn_kind("opened"), conn_kind("reused")), (1.0, 2.0));
    assert_eq!(
        sample(
            &m,
            "pinion_server_healthy",
            &[("pool", "api"), ("server", &server)]
        ),
        1.0
    );
    let bad_server = format!("127.0.0.1:{}", impostor.port);
    assert_eq!(
        sample(
            &m,
            "pinion_server_healthy",
            &[("pool", "bad"), ("server", &bad_server)]
        ),
        0.0
    );
    let days = sample(
        &m,
        "pinion_backend_certificate_expiry_days",
        &[("pool", "api"), ("server", &server)],
    );
    assert!(
        (29.0..=30.1).contains(&days),
        "the test certificates last 30 days: {days}"
    );
    let count = m
        .iter()
        .find(|((name, labels), _)| {
            name == "pinion_upstream_latency_seconds_count"
                && labels.iter().any(|(_, v)| v == "api")
        })
        .map(|(_, v)| *v);
    assert_eq!(count, Some(3.0));

    let status: serde_json::Value =
        serde_json::from_str(&admin_get(admin, "/status").body).unwrap();
    let bad = &status["pools"][1]["servers"][0];
    assert_eq!(bad["healthy"], false);
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("certificate public key not whitelisted"),
        "{bad}"
    );
    assert_eq!(bad["presented_pin"], other.pin());
    assert!(bad["certificate_expires"]
        .as_str()
        .unwrap()
        .ends_with("GMT"));
    assert_eq!(status["pools"][0]["servers"][0]["presented_pin"], key.pin());
    assert_eq!(admin_get(admin, "/nope").status, 404);
}

#[test]
fn the_access_log_has_one_line_per_request_with_every_field() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let dead = free_port();
    let yaml = format!(
        "access_log:\n  path: access.log\n  format: json\n{}pools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\n  - name: dead\n    probe: false\n    servers: [127.0.0.1:{dead}]\nroutes:\n  - name: old\n    paths: [\"/old\"]\n    redirect: {{to: /new}}\n  - name: dead\n    paths: [\"/dead\"]\n    pool: dead\n  - name: app\n    paths: [\"/app\"]\n    pool: p\n",
        env.listeners(),
        backend.port
    );
    let log = env.path().join("access.log");
    let gw = env.start(&yaml);
    let r = crate::harness::request(
        gw.port(),
        "GET /app?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: tester\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(get(gw.port(), "h", "/none").status, 404);
    assert_eq!(get(gw.port(), "h", "/old").status, 302);
    assert_eq!(get(gw.port(), "h", "/dead").status, 502);
    let lines: Vec<serde_json::Value> =
        wait_for("four access log lines", Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            (lines.len() >= 4).then_some(lines)
        });
    let app = &lines[0];
    for key in [
        "time",
        "client",
        "listener",
        "route",
        "pool",
        "server",
        "method",
        "path",
        "status",
        "bytes",
        "duration_ms",
        "upstream_tls",
        "request_id",
    ] {
        assert!(app.get(key).is_some(), "missing {key} in {app}");
    }
    assert_eq!(app["path"], "/app?x=1");
    assert_eq!(app["status"], 200);
    assert_eq!(app["bytes"], r.body.len());
    assert_eq!(app["client"], "127.0.0.1");
    assert_eq!(app["route"], "app");
    assert_eq!(app["server"], format!("127.0.0.1:{}", backend.port));
    assert_eq!(app["user_agent"], "tester");
    assert_eq!(
        app["request_id"],
        backend.requests()[0].header("x-request-id").unwrap()
    );
    let statuses: Vec<u64> = lines
        .iter()
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 404, 302, 502]);
    assert_eq!(lines[3]["pool"], "dead");
}

#[test]
fn sigterm_drains_healthz_503_while_serving_then_exits_zero() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let admin = free_port();
    let yaml = format!(
        "{}admin:\n  bind: 127.0.0.1:{admin}\n{}{}",
        // The grace period must outlast the polls and requests below on a loaded machine:
        // when it ends, the listeners close and a request in flight would be reset.
        env.server_section(8),
        env.listeners(),
        plain_pool(&backend)
    );
    let mut gw = env.start(&yaml);
    assert_eq!(admin_get(admin, "/healthz").status, 200);
    kill(Pid::from_raw(gw.pid()), Signal::SIGTERM).unwrap();
    wait_for("healthz 503", Duration::from_secs(5), || {
        (admin_get(admin, "/healthz").status == 503).then_some(())
    });
    for _ in 0..5 {
        assert_eq!(
            get(gw.port(), "h", "/").status,
            200,
            "requests are served while draining"
        );
    }
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn reload_with_a_broken_file_changes_nothing() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let yaml = env.listeners() + &plain_pool(&backend);
    let gw = env.start(&yaml);
    let broken = gw.env.path().join("broken.yaml");
    std::fs::write(&broken, yaml.replace("pool: p", "pool: nope")).unwrap();
    let out = pinion()
        .args(["reload", "-c"])
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown pool \"nope\""));
    assert_eq!(get(gw.port(), "h", "/").status, 200);
    assert_eq!(
        kill(Pid::from_raw(gw.pid()), None),
        Ok(()),
        "the running gateway is untouched"
    );
}

/// The PID the gateway's PID file names now.
pub fn current_pid(gw: &crate::harness::gateway::Gateway) -> i32 {
    std::fs::read_to_string(gw.env.path().join("pinion.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Runs `pinion reload -c FILE` with its output captured; panics unless it succeeds.
pub fn reload(gw: &crate::harness::gateway::Gateway, file: &std::path::Path) -> String {
    let out = pinion().args(["reload", "-c"]).arg(file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.logs()
    );
    stdout
}

#[test]
fn reload_onto_an_occupied_port_changes_nothing_and_says_why() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let base = env.listeners() + &plain_pool(&backend);
    let gw = env.start(&base);
    let pid = gw.pid();
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let file = gw.env.path().join("next.yaml");
    std::fs::write(
        &file,
        format!(
            "{}admin:\n  bind: 127.0.0.1:{taken}\n{base}",
            gw.env.server_section(0)
        ),
    )
    .unwrap();
    let out = pinion().args(["reload", "-c"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("127.0.0.1:{taken} is in use by another process")),
        "{stderr}"
    );
    assert_eq!(get(gw.port(), "h", "/").status, 200);
    assert_eq!(kill(Pid::from_raw(pid), None), Ok(()));
    assert_eq!(current_pid(&gw), pid, "no new process took over");
}

#[test]
fn pin_rotation_runbook_loses_no_request() {
    let old = Identity::self_signed(&["api.internal"]);
    let a = Backend::https("a", &old);
    let b = Backend::https("b", &old);
    let (a_port, b_port) = (a.port, b.port);
    let env = Env::new();
    old.write(env.path(), "old");
    let server = env.server_section(1);
    let listeners = env.listeners();
    let both = format!("127.0.0.1:{a_port}, 127.0.0.1:{b_port}");
    let with = |servers: &str, pins: &str| {
        format!(
            "{server}{listeners}pools:\n  - name: api\n    servers: [{servers}]\n    probe: {{interval_seconds: 1, unhealthy_threshold: 1, healthy_threshold: 1}}\n    tls:\n      pins:\n{pins}routes:\n  - name: all\n    pool: api\n"
        )
    };
    let config = |pins: &str| with(&both, pins);
    let file = env.path().join("pinion.yaml");
    let gw = env.start(&config("        - cert: old.pem\n"));
    let load = Load::start(gw.port(), 4, "/rotation");

    // 1. The new key's pin, from its certificate.
    let new = Identity::self_signed(&["api.internal"]);
    let (new_pem, _) = new.write(gw.env.path(), "new");
    let out = pinion().arg("pin").arg(&new_pem).output().unwrap();
    let new_pin = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(new_pin, new.pin());
    // 2. Whitelist it next to the old one and reload.
    std::fs::write(
        &file,
        config(&format!(
            "        - cert: old.pem\n        - sha256: \"{new_pin}\"\n"
        )),
    )
    .unwrap();
    reload(&gw, &file);
    // 3. Roll the servers to the new key, one at a time: out of the pool (reload), wait for its
    //    last request, replace it, back into the pool (reload).
    let both_pins = format!("        - cert: old.pem\n        - sha256: \"{new_pin}\"\n");
    let mut rolled = Vec::new();
    for (backend, port, other) in [(a, a_port, b_port), (b, b_port, a_port)] {
        std::fs::write(&file, with(&format!("127.0.0.1:{other}"), &both_pins)).unwrap();
        reload(&gw, &file);
        let (mut last, mut quiet) = (usize::MAX, 0);
        wait_for(
            "the leaving server's last request",
            Duration::from_secs(10),
            || {
                let n = backend.requests().len();
                quiet = if n == last { quiet + 1 } else { 0 };
                last = n;
                (quiet >= 3).then_some(())
            },
        );
        backend.kill();
        let fresh =
            pinion::demo::backend::Backend::https("rolled", &new, &format!("127.0.0.1:{port}"))
                .unwrap();
        std::fs::write(&file, with(&both, &both_pins)).unwrap();
        reload(&gw, &file);
        wait_for(
            "traffic on the rolled server",
            Duration::from_secs(15),
            || {
                (fresh
                    .requests()
                    .iter()
                    .filter(|r| r.target == "/rotation")
                    .count()
                    > 20)
                    .then_some(())
            },
        );
        rolled.push(fresh);
    }
    // 4. Preflight: every server presents the new, whitelisted key.
    let out = pinion()
        .args(["preflight", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert_eq!(table.matches(&new_pin).count(), 2, "{table}");
    // 5. Retire the old pin: in place, so from the next request on the old key is refused.
    let pid = current_pid(&gw);
    std::fs::write(&file, config(&format!("        - sha256: \"{new_pin}\"\n"))).unwrap();
    reload(&gw, &file);
    assert_eq!(current_pid(&gw), pid, "the rotation ran in place");
    let before = load.ok();
    wait_for("load after the rotation", Duration::from_secs(10), || {
        (load.ok() > before + 100).then_some(())
    });
    let outcome = load.stop();
    eprintln!(
        "pin rotation under load: {} ok, {} connections",
        outcome.ok, outcome.connections
    );
    assert!(
        outcome.failures.is_empty(),
        "{:?}\n{}",
        outcome.failures,
        gw.logs()
    );
    assert_eq!(outcome.connections, 4, "no client connection was closed");

    rolled.remove(0).kill();
    let stale =
        pinion::demo::backend::Backend::https("stale", &old, &format!("127.0.0.1:{a_port}"))
            .unwrap();
    for _ in 0..6 {
        assert_eq!(get(gw.port(), "h", "/after").status, 200);
    }
    assert_eq!(
        stale.request_bytes(),
        0,
        "the old key gets no request after its pin is retired"
    );
}

#[test]
fn preflight_prints_each_backend_and_fails_when_one_would_be_rejected() {
    let key = Identity::self_signed(&["api.internal"]);
    let good = Backend::https("good", &key);
    let other = Identity::self_signed(&["api.internal"]);
    let impostor = Backend::https("impostor", &other);
    let env = Env::new();
    key.write(env.path(), "k");
    let pools = |servers: String| {
        format!("{}pools:\n  - name: api\n    servers: [{servers}]\n    tls:\n      pins: [{{cert: k.pem}}]\nroutes:\n  - name: all\n    pool: api\n", env.listeners())
    };
    let good_only = env.write_config(&pools(format!("127.0.0.1:{}", good.port)));
    let out = pinion()
        .args(["preflight", "-c"])
        .arg(&good_only)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(
        table.contains(&key.pin()) && table.contains(" yes "),
        "{table}"
    );

    let both = env.write_config(&pools(format!(
        "127.0.0.1:{}, 127.0.0.1:{}",
        good.port, impostor.port
    )));
    let out = pinion()
        .args(["preflight", "-c"])
        .arg(&both)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{table}");
    let line = table
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{}", impostor.port)))
        .unwrap();
    assert!(
        line.contains(&other.pin()) && line.contains(" NO ") && line.contains("not whitelisted"),
        "{line}"
    );
    assert!(line.contains("GMT"), "expiry shown: {line}");
    assert_eq!(impostor.request_bytes(), 0);
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit_at_start() {
    use nix::sys::resource::{getrlimit, Resource};
    let backend = Backend::plain("b");
    let env = Env::new();
    let yaml = env.listeners() + &plain_pool(&backend);
    let file = env.write_config(&yaml);
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    // The shell lowers the soft limit, then becomes pinion (same process id).
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -S -n 256 && exec "$0" -c "$1""#)
        .arg(env!("CARGO_BIN_EXE_pinion"))
        .arg(&file)
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    wait_for("the gateway to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", env.port)).ok()
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(soft > 256, "soft limit still {soft}: {limits}");
    assert_eq!(soft, hard.min(1 << 20), "{limits}");
}
