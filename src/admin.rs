//! The admin listener: `/healthz` for the load balancer in front, `/metrics` for Prometheus,
//! `/status` for people. Bind it to loopback or a management network only.

use crate::gateway::Gateway;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Whether this instance is draining (a shutdown or upgrade hand-over has begun), and since when.
#[derive(Debug, Default)]
pub struct Drain {
    since: OnceLock<Instant>,
}

impl Drain {
    /// Marks the instance as draining; `/healthz` answers 503 and responses close their
    /// connections from now on.
    pub fn start(&self) {
        let _ = self.since.set(Instant::now());
    }

    /// Whether draining has begun.
    pub fn is_draining(&self) -> bool {
        self.since.get().is_some()
    }

    /// When draining began.
    pub fn since(&self) -> Option<Instant> {
        self.since.get().copied()
    }
}

/// The admin HTTP application.
pub struct Admin {
    gw: Arc<Gateway>,
    drain: Arc<Drain>,
}

impl Admin {
    /// An admin application over the gateway's state.
    pub fn new(gw: Arc<Gateway>, drain: Arc<Drain>) -> Admin {
        Admin { gw, drain }
    }

    fn status_json(&self, now: i64) -> serde_json::Value {
        let gen = self.gw.current();
        let pools: Vec<serde_json::Value> = gen
            .pools
            .iter()
            .map(|p| {
                let set = p.servers();
                let servers: Vec<serde_json::Value> = set
                    .iter()
                    .map(|s| {
                        let r = s.health.report();
                        let pins = crate::pool::pins::server_pins(p, s, now);
                        serde_json::json!({
                            "server": s.label,
                            "healthy": r.healthy,
                            "reason": r.reason,
                            "presented_pin": r.pin,
                            "presented_chain": r.chain,
                            "certificate_expires": r.not_after,
                            "certificate_expiry_days": r.not_after_unix.map(|t| ((t - now) as f64 / 86_400.0 * 1000.0).round() / 1000.0),
                            "in_flight": s.in_flight.load(Ordering::Relaxed),
                            "pin_match": pins.as_ref().and_then(|v| v.matched).map(|m| serde_json::json!({
                                "pin": m.pin.to_string(),
                                "scope": m.scope.as_str(),
                                "depth": m.depth,
                            })),
                            "pin_refused": pins.as_ref().and_then(|v| v.refused.clone()),
                            "pin_warnings": pins.map(|v| v.warnings.iter().map(|w| serde_json::json!({
                                "reason": w.reason(),
                                "message": w.to_string(),
                            })).collect::<Vec<_>>()).unwrap_or_default(),
                        })
                    })
                    .collect();
                let names: Vec<serde_json::Value> = p
                    .names
                    .iter()
                    .map(|n| {
                        let r = n.report();
                        serde_json::json!({
                            "name": n.host,
                            "addresses": r.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                            "resolving": r.error.is_none() && !r.addrs.is_empty(),
                            "error": r.error,
                            "resolved_at": r.resolved_at.map(rfc3339),
                            "failing_since": r.failing_since.map(rfc3339),
                        })
                    })
                    .collect();
                serde_json::json!({
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
            })
            .collect();

        serde_json::json!({
            "draining": self.drain.is_draining(),
            "config": {
                "generation": gen.number,
                "sha256": gen.sha256,
                "loaded_at": rfc3339(gen.loaded_at),
                "file": gen.file.display().to_string(),
            },
            "pools": pools,
        })
    }
}

/// Every pin of a pool with its scope, window and state at `now`.
fn pins_json(pool: &crate::pool::Pool, now: i64) -> Vec<serde_json::Value> {
    let Some(tls) = &pool.tls else {
        return Vec::new();
    };
    tls.pins
        .iter()
        .map(|e| {
            serde_json::json!({
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
fn unlisted_json(pool: &crate::pool::Pool) -> serde_json::Value {
    let report = pool
        .tls
        .as_ref()
        .is_some_and(|t| t.pin_mode == crate::config::PinMode::Report);
    if !report {
        return serde_json::Value::Null;
    }
    let (keys, overflow) = pool.unlisted.report();
    serde_json::json!({
        "keys": keys.iter().map(|k| serde_json::json!({
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

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"GET only\n".to_vec(),
            );
        }
        match req.uri.path() {
            "/healthz" if self.drain.is_draining() => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"draining\n".to_vec(),
            ),
            "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                {
                    let gen = self.gw.current();
                    let config = self.gw.config_metrics();
                    let mut text = gen.metrics.render(&gen.pools, unix_now(), &config);
                    crate::limits::render_rate_limits(
                        &mut text,
                        gen.listeners
                            .iter()
                            .filter_map(|l| Some((l.name.as_str(), l.rate_limit.as_deref()?))),
                        gen.routes
                            .routes()
                            .iter()
                            .filter_map(|r| Some((r.name.as_str(), r.rate_limit.as_deref()?))),
                    );
                    text.into_bytes()
                },
            ),
            "/status" => {
                let mut body =
                    serde_json::to_vec_pretty(&self.status_json(unix_now())).unwrap_or_default();
                body.push(b'\n');
                reply(StatusCode::OK, "application/json", body)
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found: try /healthz, /metrics or /status\n".to_vec(),
            ),
        }
    }
}
