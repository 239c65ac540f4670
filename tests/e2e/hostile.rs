//! Hostile clients: slow senders, request smuggling, obs-fold.

use crate::harness::{get, Backend, Env};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn plain_gateway(backend: &Backend) -> (crate::harness::gateway::Gateway, u16) {
    let env = Env::new();
    let plain = crate::harness::free_port();
    let yaml = format!(
        "{}  - name: plain\n    bind: 127.0.0.1:{plain}\n{}",
        env.listeners(),
        crate::harness::plain_pool(backend)
    );
    (env.start(&yaml), plain)
}

fn raw(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn slow_header_senders_do_not_stop_other_clients() {
    let backend = Backend::plain("b");
    let (gw, plain) = plain_gateway(&backend);
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", plain)).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    for round in 0..10 {
        for s in slow.iter_mut() {
            let _ = s.write_all(b"s");
        }
        let r = get(gw.port(), "h", &format!("/normal{round}"));
        assert_eq!(r.status, 200);
    }
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "normal clients were held up"
    );
    assert!(backend
        .requests()
        .iter()
        .all(|r| r.target.starts_with("/normal")));
}

#[test]
fn conflicting_lengths_and_obs_fold_are_never_forwarded_as_two_requests() {
    let backend = Backend::plain("b");
    let (_gw, plain) = plain_gateway(&backend);
    let attacks: [&[u8]; 4] = [
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nContent-Length: 0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nGET /\r\n0\r\n\r\n",
        b"GET /d HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
    ];
    for attack in attacks {
        let answer = raw(plain, attack);
        let status: Option<u16> = answer.split(' ').nth(1).and_then(|s| s.parse().ok());
        assert!(
            status.is_none_or(|s| s == 200 || (400..500).contains(&s)),
            "{answer}"
        );
    }
    let seen: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert!(
        !seen.iter().any(|t| t.contains("smuggled")),
        "a smuggled request reached the backend: {seen:?}"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let backend = Backend::plain("b");
    let (_gw, plain) = plain_gateway(&backend);
    let answer = raw(
        plain,
        b"GET /one HTTP/1.1\r\nHost: h\r\n\r\nGET /two HTTP/1.1\r\nHost: h\r\n\r\nPOST /three HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /four HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    let bodies: Vec<&str> = answer
        .split("\r\n\r\n")
        .filter_map(|part| part.strip_prefix("b "))
        .map(|b| b.split('\n').next().unwrap_or(""))
        .collect();
    assert_eq!(bodies, ["/one", "/two", "/three", "/four"], "{answer}");
    let seen: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(seen, ["/one", "/two", "/three", "/four"]);
}
