//! The `/status` document: the configuration in force (listeners, routes, pools) and what each
//! server is doing now, for people, the status page and `pinion status`.

use crate::config::{Listener, TlsVersion};
use crate::gateway::Generation;
use crate::pool::{Pool, Server};
use crate::routing::{HostPattern, PathPattern, Route, Target};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// The whole document for generation `gen` at `now` (Unix seconds).
pub fn document(gen: &Generation, draining: bool, now: i64) -> Value {
    json!({
        "draining": draining,
        "now": now,
        "config": {
            "generation": gen.number,
            "sha256": gen.sha256,
            "loaded_at": rfc3339(gen.loaded_at),
            "file": gen.file.display().to_string(),
        },
        "latency_buckets_seconds": crate::metrics::latency_bounds(),
        "listeners": gen.listeners.iter().map(|l| listener(l, now)).collect::<Vec<_>>(),
        "routes": gen.routes.routes().iter().map(|r| route(gen, r)).collect::<Vec<_>>(),
        "pools": gen.pools.iter().map(|p| pool(p, now)).collect::<Vec<_>>(),
    })
}

fn version(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::V1_2 => "1.2",
        TlsVersion::V1_3 => "1.3",
    }
}

fn listener(l: &Listener, now: i64) -> Value {
    let tls = l.tls.as_ref().map(|t| {
        let certificates: Vec<Value> = t
            .certificates
            .iter()
            .map(|c| {
                let leaf = c.chain.first();
                let expires = leaf.and_then(|x| crate::upstream::unix_time(x.not_after()));
                json!({
                    "file": c.cert.display().to_string(),
                    "names": c.names,
                    "expires": leaf.map(|x| x.not_after().to_string()),
                    "expiry_days": expires.map(|t| days(t, now)),
                })
            })
            .collect();
        json!({
            "min_version": version(t.min_version),
            "max_version": version(t.max_version),
            "http2": t.http2,
            "client_auth": t.client_auth.is_some(),
            "certificates": certificates,
        })
    });
    json!({
        "name": l.name,
        "binds": l.binds.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "tls": tls,
        "redirect_to_https": l.redirect_to_https,
        "proxy_protocol": l.proxy_protocol,
    })
}

fn route(gen: &Generation, r: &Route) -> Value {
    let hosts: Vec<String> = r
        .hosts
        .iter()
        .map(|h| match h {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Wildcard(suffix) => format!("*{suffix}"),
        })
        .collect();
    let paths: Vec<String> = r
        .paths
        .iter()
        .map(|p| match p {
            PathPattern::Exact(p) => p.clone(),
            PathPattern::Prefix(p) => format!("{p}*"),
        })
        .collect();
    let listeners: Option<Vec<&str>> = r.listeners.as_ref().map(|ls| {
        ls.iter()
            .filter_map(|i| gen.listeners.get(*i).map(|l| l.name.as_str()))
            .collect()
    });
    let (pool, redirect) = match &r.target {
        Target::Pool(i) => (gen.pools.get(*i).map(|p| p.name.as_str()), None),
        Target::Redirect(to) => (None, Some(json!({"to": to.to, "status": to.status}))),
    };
    json!({
        "name": r.name,
        "listeners": listeners,
        "hosts": hosts,
        "paths": paths,
        "pool": pool,
        "redirect": redirect,
    })
}

fn pool(p: &Pool, now: i64) -> Value {
    let set = p.servers();
    let servers: Vec<Value> = set.iter().map(|s| server(p, s, now)).collect();
    let names: Vec<Value> = p
        .names
        .iter()
        .map(|n| {
            let r = n.report();
            json!({
                "name": n.host,
                "addresses": r.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "resolving": r.error.is_none() && !r.addrs.is_empty(),
                "error": r.error,
                "resolved_at": r.resolved_at.map(rfc3339),
                "failing_since": r.failing_since.map(rfc3339),
            })
        })
        .collect();
    json!({
        "name": p.name,
        "tls": p.tls.is_some(),
        "pin_mode": p.tls.as_ref().map(|t| match t.pin_mode {
            crate::config::PinMode::Enforce => "enforce",
            crate::config::PinMode::Report => "report",
        }),
        "pins": pins_json(p, now),
        "unlisted_keys": unlisted_json(p),
        "names": names,
        "healthy_servers": set.iter().filter(|s| s.health.is_healthy()).count(),
        "servers": servers,
    })
}

fn server(p: &Pool, s: &Server, now: i64) -> Value {
    let r = s.health.report();
    let pins = crate::pool::pins::server_pins(p, s, now);
    let (requests, errors, latency) = s.counters.snapshot();
    json!({
        "server": s.label,
        "healthy": r.healthy,
        "reason": r.reason,
        "presented_pin": r.pin,
        "presented_chain": r.chain,
        "certificate_expires": r.not_after,
        "certificate_expiry_days": r.not_after_unix.map(|t| days(t, now)),
        "in_flight": s.in_flight.load(Ordering::Relaxed),
        "requests": requests,
        "errors": errors,
        "latency_histogram": latency,
        "pin_match": pins.as_ref().and_then(|v| v.matched).map(|m| json!({
            "pin": m.pin.to_string(),
            "scope": m.scope.as_str(),
            "depth": m.depth,
        })),
        "pin_refused": pins.as_ref().and_then(|v| v.refused.clone()),
        "pin_warnings": pins.map(|v| v.warnings.iter().map(|w| json!({
            "reason": w.reason(),
            "message": w.to_string(),
        })).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

/// Days from `now` to `t`, to a thousandth.
fn days(t: i64, now: i64) -> f64 {
    ((t - now) as f64 / 86_400.0 * 1000.0).round() / 1000.0
}

/// Every pin of a pool with its scope, window and state at `now`.
fn pins_json(pool: &Pool, now: i64) -> Vec<Value> {
    let Some(tls) = &pool.tls else {
        return Vec::new();
    };
    tls.pins
        .iter()
        .map(|e| {
            json!({
                "sha256": e.pin.to_string(),
                "scope": e.scope.as_str(),
                "not_before": e.not_before.map(crate::tls::rfc3339),
                "not_after": e.not_after.map(crate::tls::rfc3339),
                "state": e.state(now).as_str(),
            })
        })
        .collect()
}

/// The keys a `pin_mode: report` pool saw that its pins do not accept (`null` elsewhere).
fn unlisted_json(pool: &Pool) -> Value {
    let report = pool
        .tls
        .as_ref()
        .is_some_and(|t| t.pin_mode == crate::config::PinMode::Report);
    if !report {
        return Value::Null;
    }
    let (keys, overflow) = pool.unlisted.report();
    json!({
        "keys": keys.iter().map(|k| json!({
            "pin": k.pin.to_string(),
            "servers": k.servers,
            "first_seen": crate::tls::rfc3339(k.first_seen),
            "last_seen": crate::tls::rfc3339(k.last_seen),
            "count": k.count,
        })).collect::<Vec<_>>(),
        "not_listed_beyond_limit": overflow,
    })
}

fn rfc3339(t: SystemTime) -> String {
    let t: chrono::DateTime<chrono::Utc> = t.into();
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
