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

criterion_group!(benches, routing, pins);
criterion_main!(benches);
