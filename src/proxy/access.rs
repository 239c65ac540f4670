//! The access log line of a finished request.

use super::{client_gate, route, Ctx};
use crate::access_log::{self, AccessLog};
use pingora::proxy::Session;

/// Records one line for the request that `session` and `ctx` describe, answered `status`.
pub(super) fn record(log: &AccessLog, session: &Session, ctx: &Ctx, status: u16) {
    let gen = &ctx.gen;
    let req = session.req_header();
    let header = |name: http::HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
    let pool = ctx.pool();
    let certificate = client_gate(session).and_then(|g| g.identity.certificate.as_ref());
    log.record(&access_log::Entry {
        time: ctx.start.map(|(_, t)| t),
        client: ctx.client,
        listener: gen
            .listeners
            .get(ctx.listener)
            .map_or("", |l| l.name.as_str()),
        route: route(gen, ctx).map_or("", |r| r.name.as_str()),
        pool: pool.map_or("", |p| p.name.as_str()),
        server: ctx.chosen().map_or("", |s| s.label.as_str()),
        method: req.method.as_str(),
        path: req.uri.path_and_query().map_or("", |p| p.as_str()),
        version: version_str(req.version),
        status,
        bytes: session.as_downstream().body_bytes_sent(),
        duration: ctx.start.map(|(t, _)| t.elapsed()).unwrap_or_default(),
        upstream_tls: ctx.upstream_tls.as_deref(),
        request_id: &ctx.request_id,
        referer: header(http::header::REFERER),
        user_agent: header(http::header::USER_AGENT),
        client_subject: certificate.map(|c| c.subject.as_str()),
        client_pin: certificate.map(|c| c.pin.as_str()),
        grpc_status: ctx.grpc_status,
    });
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}
