//! The per-request cost guard (issue 11): heap allocations per proxied keep-alive request,
//! counted by valgrind's DHAT in the real binary, against a checked-in budget. A count, not a
//! time: the same on a busy or an idle machine, so it can fail only when the request path
//! allocates more.

use crate::harness::backend::Backend;
use crate::harness::certs::Identity;
use crate::harness::client::Conn;
use crate::harness::gateway::Env;
use std::time::Duration;

/// Heap allocations one proxied keep-alive request may cost, everything on: the pin check,
/// forwarding headers, X-Request-Id, the JSON access log to a file, metrics and timeouts.
/// docs/benchmarks.md ("Allocations per request") has the measured count and how to find
/// what a change allocates. Lower it when the count goes down; never raise it to make a
/// change pass.
const BUDGET: f64 = 98.0;

/// Requests of the shorter run; the longer one makes twice as many. The difference of the two
/// runs' totals is the cost of this many requests, without start-up and shutdown.
const REQUESTS: usize = 300;

/// Total heap blocks allocated by one pinion process that served `requests` keep-alive
/// requests on one client connection, through a pinned TLS backend.
fn blocks_for(requests: usize) -> u64 {
    let key = Identity::self_signed(&["backend.internal"]);
    let backend = Backend::https("b", &key);
    let env = Env::new();
    key.write(env.path(), "backend");
    let dir = env.path().to_path_buf();
    // One worker thread: the count does not depend on how requests spread over threads.
    let server = env.server_section(0).replace("threads: 2", "threads: 1");
    let yaml = format!(
        "{server}access_log:\n  path: {}/access.log\n  format: json\n{}pools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:{}]\n    tls:\n      sni: backend.internal\n      pins:\n        - cert: backend.pem\nroutes:\n  - name: all\n    pool: p\n",
        dir.display(),
        env.listeners(),
        backend.port
    );
    let valgrind = [
        "valgrind".to_owned(),
        "--tool=dhat".to_owned(),
        format!("--dhat-out-file={}/dhat.json", dir.display()),
    ];
    let mut gw = env.start_under(&yaml, &valgrind, Duration::from_secs(180));
    let mut conn = Conn::tls(gw.port());
    for i in 0..requests {
        let r = conn.send("GET /item HTTP/1.1\r\nHost: www.example.com\r\n\r\n");
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    drop(conn);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gw.pid()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    gw.wait_exit(Duration::from_secs(60));
    let log = gw.logs();
    let total = log
        .lines()
        .find_map(|l| l.split_once("Total:").map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("no DHAT total in valgrind's output:\n{log}"));
    // "     1,234,567 bytes in 12,345 blocks"
    let blocks = total
        .split(" in ")
        .nth(1)
        .and_then(|b| b.split_whitespace().next())
        .map(|b| b.replace(',', ""))
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the block count in {total:?}"));
    blocks
}

#[test]
fn a_keep_alive_request_stays_within_its_allocation_budget() {
    let short = blocks_for(REQUESTS);
    let long = blocks_for(2 * REQUESTS);
    let per_request = long.saturating_sub(short) as f64 / REQUESTS as f64;
    println!("heap allocations per keep-alive request: {per_request:.1} (budget {BUDGET})");
    assert!(
        per_request <= BUDGET,
        "a proxied keep-alive request now costs {per_request:.1} heap allocations, over the \
         budget of {BUDGET}: find what the change allocates per request (docs/benchmarks.md, \
         \"Allocations per request\", says how)"
    );
    // A count far below the budget means the measurement broke, not that the path got cheap.
    assert!(
        per_request >= BUDGET / 2.0,
        "{per_request:.1} allocations per request is implausibly low; the measurement is broken"
    );
}
