//! The status page on the admin listener, loaded in headless Chromium (Debian's `chromium`,
//! which `make test` installs), and `pinion status`, the same picture in a terminal.

use crate::harness::{free_port, get, pinion, wait_for, Backend, Env, Identity};
use crate::operations::admin_get;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A self-signed certificate for `api.internal` valid from yesterday for `days` more days.
fn valid_for(days: i64) -> Identity {
    Identity::self_signed_between(&["api.internal"], -1, days)
}

/// Debian's Chromium (`PINION_CHROMIUM` overrides).
fn chromium() -> String {
    if let Ok(c) = std::env::var("PINION_CHROMIUM") {
        return c;
    }
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return c.to_owned();
        }
    }
    panic!("headless Chromium is needed: `make test` installs Debian's chromium package");
}

/// Runs headless Chromium on `url` with `args`; its standard output, within a deadline.
fn browse(profile: &Path, url: &str, args: &[&str]) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::park_timeout(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium failed: {status}");
    reader.join().unwrap()
}

/// The rendered row of the first server of `pool`.
fn row<'a>(dom: &'a str, pool: &str) -> &'a str {
    let marker = format!("<tr class=\"server\" data-pool=\"{pool}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no row for pool {pool} in the page:\n{dom}"));
    let rest = &dom[start..];
    &rest[..rest.find("</tr>").unwrap()]
}

/// The text of the cell with class `class` in `row`.
fn cell<'a>(row: &'a str, class: &str) -> &'a str {
    let marker = format!("class=\"{class}\"");
    let at = row
        .find(&marker)
        .unwrap_or_else(|| panic!("no cell {class} in {row}"));
    let rest = &row[at..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest.find("</td>").unwrap();
    &rest[open..close]
}

#[test]
fn the_status_page_shows_a_rejected_key_an_expiring_certificate_and_rising_counts() {
    let good_key = valid_for(365);
    let good = Backend::https("good", &good_key);
    let stranger = valid_for(365);
    let rejected = Backend::https("rejected", &stranger);
    let short_key = valid_for(3);
    let short = Backend::https("short", &short_key);
    let env = Env::new();
    good_key.write(env.path(), "good");
    short_key.write(env.path(), "short");
    let admin = free_port();
    let probe = "    probe: {interval_seconds: 1, unhealthy_threshold: 1, healthy_threshold: 1}\n";
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}pools:\n\
         \x20 - name: healthy\n    servers: [127.0.0.1:{}]\n{probe}    tls:\n      pins: [{{cert: good.pem}}]\n\
         \x20 - name: rejected\n    servers: [127.0.0.1:{}]\n{probe}    tls:\n      pins: [{{cert: good.pem}}]\n\
         \x20 - name: expiring\n    servers: [127.0.0.1:{}]\n{probe}    tls:\n      pins: [{{cert: short.pem}}]\n\
         routes:\n  - name: expiring\n    paths: [\"/expiring\"]\n    pool: expiring\n  - name: all\n    pool: healthy\n",
        env.listeners(),
        good.port,
        rejected.port,
        short.port
    );
    let gw = env.start(&yaml);
    wait_for("every probe to report", Duration::from_secs(20), || {
        let s: serde_json::Value = serde_json::from_str(&admin_get(admin, "/status").body).ok()?;
        let server = |i: usize| &s["pools"][i]["servers"][0];
        (server(0)["healthy"] == true
            && server(1)["presented_pin"].is_string()
            && server(1)["healthy"] == false
            && server(2)["certificate_expiry_days"].is_number()
            && server(2)["healthy"] == true)
            .then_some(())
    });

    // The page and its assets carry the strict policy and nothing inline.
    let page = admin_get(admin, "/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(admin_get(admin, "/page.js").status, 200);
    assert_eq!(admin_get(admin, "/page.css").status, 200);

    let browser = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{admin}/");
    let before = browse(&browser.path().join("profile"), &url, &["--dump-dom"]);
    let refused = row(&before, "rejected");
    assert_eq!(cell(refused, "health bad"), "DOWN");
    assert!(
        cell(refused, "reason").contains("certificate public key not whitelisted"),
        "{refused}"
    );
    assert_eq!(cell(refused, "mono pin"), stranger.pin());
    assert_eq!(cell(refused, "listed no"), "no");
    let expiring = row(&before, "expiring");
    assert_eq!(cell(expiring, "health ok"), "up");
    assert!(
        cell(expiring, "num expiry bad").starts_with('2')
            || cell(expiring, "num expiry bad").starts_with('3'),
        "{expiring}"
    );
    assert!(
        before.contains("certificate expires in"),
        "the pool's badge"
    );
    let healthy = row(&before, "healthy");
    assert_eq!(cell(healthy, "health ok"), "up");
    assert_eq!(cell(healthy, "mono pin"), good_key.pin());
    assert_eq!(cell(healthy, "listed yes"), "yes (leaf)");
    let year = cell(healthy, "num expiry ");
    assert!(
        year == "364 d" || year == "365 d",
        "no highlight class, a year left: {year}"
    );
    let count = |row: &str| cell(row, "num requests").parse::<u64>().unwrap();
    let first = count(healthy);

    for _ in 0..5 {
        assert_eq!(get(gw.port(), "h", "/").status, 200);
    }
    let screenshot = browser.path().join("status.png");
    let after = browse(
        &browser.path().join("profile"),
        &url,
        &["--dump-dom", "--window-size=1280,1000"],
    );
    assert_eq!(
        count(row(&after, "healthy")),
        first + 5,
        "{}",
        row(&after, "healthy")
    );
    browse(
        &browser.path().join("profile"),
        &url,
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1280,1000",
        ],
    );
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);

    // The same picture in a terminal: exit 1, since pool `rejected` has no healthy server.
    let out = pinion()
        .args(["status", "--admin", &format!("127.0.0.1:{admin}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    let line = table.lines().find(|l| l.starts_with("rejected")).unwrap();
    assert!(
        line.contains("DOWN") && line.contains("not whitelisted"),
        "{line}"
    );
    assert!(
        line.contains(&stranger.pin()) && line.contains(" NO "),
        "{line}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("pool rejected has no healthy server"));
    drop(gw);
}

#[test]
fn the_admin_token_guards_every_admin_path_and_pinion_status_sends_it() {
    let backend = Backend::plain("b");
    let env = Env::new();
    std::fs::write(
        env.path().join("admin.token"),
        "s3cret-admin-token-0123456789\n",
    )
    .unwrap();
    let admin = free_port();
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n  token: admin.token\n{}{}",
        env.listeners(),
        crate::harness::plain_pool(&backend)
    );
    let conf = env.path().join("pinion.yaml");
    let gw = env.start(&yaml);
    for path in [
        "/",
        "/page.js",
        "/page.css",
        "/status",
        "/metrics",
        "/healthz",
        "/nope",
    ] {
        let r = admin_get(admin, path);
        assert_eq!(r.status, 401, "{path} without a token");
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    }
    let with = |auth: &str| {
        crate::harness::Conn::plain(admin).send(&format!(
            "GET /status HTTP/1.1\r\nHost: admin\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        ))
    };
    assert_eq!(with("Bearer s3cret-admin-token-0123456789").status, 200);
    assert_eq!(with("Bearer s3cret-admin-token-012345678").status, 401);
    // What a browser sends once the operator typed the token as the password.
    use base64::Engine as _;
    let basic =
        base64::engine::general_purpose::STANDARD.encode("ops:s3cret-admin-token-0123456789");
    assert_eq!(with(&format!("Basic {basic}")).status, 200);

    // `pinion status -c` reads admin.bind and admin.token from the file.
    let ok = pinion()
        .args(["status", "-c"])
        .arg(&conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\np "));
    // Without the token it is refused, and says why.
    let refused = pinion()
        .args(["status", "--admin", &format!("127.0.0.1:{admin}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    drop(gw);
}

#[test]
fn pinion_t_warns_about_an_exposed_admin_listener_without_a_token() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let check = |admin: &str, token: bool| {
        let token_line = if token { "  token: admin.token\n" } else { "" };
        std::fs::write(
            env.path().join("admin.token"),
            "another-long-admin-token-xyz\n",
        )
        .unwrap();
        let yaml = format!(
            "admin:\n  bind: {admin}\n{token_line}{}{}",
            env.listeners(),
            crate::harness::plain_pool(&backend)
        );
        let file = env.write_config(&yaml);
        let out = pinion()
            .arg("-t")
            .arg("-c")
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let port = free_port();
    assert!(check(&format!("0.0.0.0:{port}"), false).contains("admin.token is not set"));
    assert!(!check(&format!("0.0.0.0:{port}"), true).contains("warning"));
    assert!(!check(&format!("127.0.0.1:{port}"), false).contains("warning"));
}

#[test]
fn the_page_renders_200_pools_of_20_servers_with_the_problem_pools_open() {
    let backend = Backend::plain("b");
    let env = Env::new();
    let admin = free_port();
    let mut pools = String::new();
    for p in 0..200 {
        // Pool 7 is probed; only its first server is the backend's address, so the others go
        // out (and the one on a port nobody listens on).
        let dead = if p == 7 {
            format!(", 127.0.0.1:{}", free_port())
        } else {
            String::new()
        };
        let probe = if p == 7 {
            "{interval_seconds: 1, unhealthy_threshold: 1}"
        } else {
            "false"
        };
        let servers: Vec<String> = (0..20 - usize::from(p == 7))
            .map(|s| format!("127.0.{}.{}:{}", p % 250, s + 1, backend.port))
            .map(|a| {
                if p == 7 && a.starts_with("127.0.7.1:") {
                    format!("127.0.0.1:{}", backend.port)
                } else {
                    a
                }
            })
            .collect();
        pools.push_str(&format!(
            "  - name: pool-{p:03}\n    probe: {probe}\n    servers: [{}{dead}]\n",
            servers.join(", ")
        ));
    }
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}pools:\n{pools}routes:\n  - name: all\n    pool: pool-000\n",
        env.listeners()
    );
    let _gw = env.start(&yaml);
    wait_for("pool-007 to lose a server", Duration::from_secs(20), || {
        let s: serde_json::Value = serde_json::from_str(&admin_get(admin, "/status").body).ok()?;
        let pool = &s["pools"][7];
        (pool["healthy_servers"] == 1 && pool["servers"][0]["healthy"] == true).then_some(())
    });
    let browser = tempfile::tempdir().unwrap();
    let dom = browse(
        &browser.path().join("profile"),
        &format!("http://127.0.0.1:{admin}/"),
        &["--dump-dom"],
    );
    assert!(
        dom.contains("200 pools, 4000 servers"),
        "{}",
        &dom[..2000.min(dom.len())]
    );
    assert_eq!(dom.matches("<details class=\"pool").count(), 200);
    // Only the pool with a problem is open, so the page stays light: its 20 rows are drawn.
    assert_eq!(dom.matches("<tr class=\"server\"").count(), 20);
    assert!(
        row(&dom, "pool-007").contains(">up<"),
        "the backend's own address is up"
    );
    assert!(dom.contains(">DOWN<"));
    assert!(dom.contains("19 down"));
}
