//! The admin listener: `/healthz` for the load balancer in front, `/metrics` for Prometheus,
//! `/status` (JSON) and `/` (the status page) for people. Bind it to loopback or a management
//! network only; `admin.token` protects every path when set.

mod auth;
mod page;
pub mod status;

pub use auth::{exposed, AdminToken};

use crate::gateway::Gateway;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

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
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = r.body().len();
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(page::CSP),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    r
}

/// 401 with the challenges a browser (basic) and a script (bearer) answer.
fn unauthorized() -> Response<Vec<u8>> {
    let mut r = reply(
        StatusCode::UNAUTHORIZED,
        "text/plain",
        b"admin.token is set: send Authorization: Bearer TOKEN (or basic auth with the token as password)\n"
            .to_vec(),
    );
    for challenge in [
        "Basic realm=\"pinion admin\", charset=\"UTF-8\"",
        "Bearer realm=\"pinion admin\"",
    ] {
        r.headers_mut().append(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(challenge),
        );
    }
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
        let gen = self.gw.current();
        if let Some(token) = &gen.admin_token {
            let auth = req.headers.get(http::header::AUTHORIZATION);
            if !token.accepts(auth.map(http::HeaderValue::as_bytes)) {
                return unauthorized();
            }
        }
        let path = req.uri.path();
        if let Some((content_type, body)) = page::asset(path) {
            return reply(StatusCode::OK, content_type, body.to_vec());
        }
        match path {
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
                    let config = self.gw.config_metrics();
                    let mut text =
                        gen.metrics
                            .render(&gen.pools, crate::upstream::unix_now(), &config);
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
                let doc =
                    status::document(&gen, self.drain.is_draining(), crate::upstream::unix_now());
                // The page asks for it without indentation: a third less to send and parse
                // with thousands of servers.
                let mut body = if req.uri.query() == Some("compact") {
                    serde_json::to_vec(&doc)
                } else {
                    serde_json::to_vec_pretty(&doc)
                }
                .unwrap_or_default();
                body.push(b'\n');
                reply(StatusCode::OK, "application/json", body)
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found: try /, /healthz, /metrics or /status\n".to_vec(),
            ),
        }
    }
}
