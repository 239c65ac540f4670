//! Per-request pure functions: route matching, path normalization and the pin check.
//! Run with `cargo bench`; numbers are recorded in docs, never asserted in tests.

// Bench set-up with constant inputs cannot fail.
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use pinion::routing::{HostPattern, PathPattern, Route, RouteTable, Target};
use pinion::tls::{Pin, PinSet};
use std::hint::black_box;

fn table(n: usize) -> RouteTable {
    let routes = (0..n)
        .map(|i| Route {
            max_body_bytes: None,
            rate_limit: None,
            client_certificate_required: false,
            name: format!("r{i}"),
            listeners: None,
            hosts: vec![HostPattern::parse(&format!("site{i}.example.com")).unwrap()],
            paths: vec![PathPattern::parse("/api/*").unwrap()],
            target: Target::Pool(0),
            request_headers: Default::default(),
            response_headers: Default::default(),
        })
        .collect();
    RouteTable::new(routes, 1)
}

fn routing(c: &mut Criterion) {
    for n in [1usize, 100, 10_000] {
        let t = table(n);
        let host = format!("site{}.example.com", n - 1);
        c.bench_function(&format!("route match, last of {n} host routes"), |b| {
            b.iter(|| black_box(t.decide(0, black_box(&host), black_box("/api/v1/items?x=1"))))
        });
    }
    let t = table(1);
    c.bench_function("route match with dot segments and escapes", |b| {
        b.iter(|| black_box(t.decide(0, "site0.example.com", black_box("/api/./v1/%7Eitems/../x"))))
    });
}

fn pins(c: &mut Criterion) {
    let set = PinSet::new((0u8..4).map(|i| Pin([i; 32])).collect());
    let presented = Pin([3; 32]);
    c.bench_function("pin check, 4 pins", |b| {
        b.iter(|| black_box(set.contains(black_box(&presented))))
    });
}

fn headers(c: &mut Criterion) {
    use pinion::config::ForwardedFor;
    use pinion::proxy::headers::Forwarded;
    let mut base = pingora::http::RequestHeader::build("GET", b"/api/v1/items", None).unwrap();
    for (k, v) in [
        ("Host", "www.example.com"),
        ("User-Agent", "bench"),
        ("Accept", "*/*"),
        ("X-Forwarded-For", "6.6.6.6"),
    ] {
        base.append_header(k, v).unwrap();
    }
    c.bench_function("forwarding headers on a 4-header request", |b| {
        b.iter_batched(
            || base.clone(),
            |mut req| {
                Forwarded {
                    peer: Some("192.0.2.1:50000".parse().unwrap()),
                    trusted: false,
                    format: ForwardedFor::Ip,
                    local_port: Some(443),
                    tls: true,
                    authority: "www.example.com",
                    request_id: "0123456789abcdef0123456789abcdef",
                }
                .apply(&mut req)
                .unwrap();
                req
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn config_load(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("listeners:\n  - name: http\n    bind: 127.0.0.1:8080\npools:\n  - name: p\n    probe: false\n    servers: [127.0.0.1:9000, 127.0.0.1:9001]\nroutes:\n");
    for i in 0..1000 {
        yaml.push_str(&format!("  - name: r{i}\n    hosts: [site{i}.example.com, \"*.site{i}.example.com\"]\n    paths: [\"/api/*\", \"/static*\"]\n    pool: p\n"));
    }
    let file = dir.path().join("pinion.yaml");
    std::fs::write(&file, yaml).unwrap();
    c.bench_function("config load, 1,000 routes", |b| {
        b.iter(|| black_box(pinion::config::load(&file).unwrap()))
    });
}

criterion_group!(benches, routing, pins, headers, config_load);
criterion_main!(benches);
