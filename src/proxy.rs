//! The `ProxyHttp` implementation: each Pingora phase is short and hands the work to the module
//! that owns it (routing, pool, upstream, headers). See docs/architecture.md for the phase map.

mod access;
mod affinity;
mod context;
mod error;
mod grpc;
pub mod headers;
mod refuse;
mod respond;
mod retry;
mod trust;

pub use context::Ctx;
use context::{InFlight, Next};
use error::status_for;
pub use error::ProxyError;
use refuse::page;

use crate::admin::Drain;
use crate::config::HostHeader;
use crate::gateway::{Gateway, Generation};
use crate::limits::rate::RateLimiter;
use crate::limits::{self, Rejection};
use crate::listener::ClientGate;
use crate::metrics::TlsFailure;
use crate::pool::SelectKey;
use crate::routing::{host_of, Decision, Route, Target};
use async_trait::async_trait;
use log::{error, info, warn};
use pingora::modules::http::HttpModules;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The proxy service logic.
pub struct Proxy {
    gw: Arc<Gateway>,
    drain: Arc<Drain>,
}

impl Proxy {
    /// A proxy over the gateway's live state; `drain` tells it when to stop keeping client
    /// connections alive.
    pub fn new(gw: Arc<Gateway>, drain: Arc<Drain>) -> Proxy {
        Proxy { gw, drain }
    }
}

/// How long an idle client connection is kept open between requests (HTTP/1.1 keep-alive and
/// HTTP/2 alike): nginx's `keepalive_timeout` and the cloud gateway's 75 s. Pingora's own default
/// keeps idle HTTP/1.1 connections forever, which lets idle clients pile up without bound.
pub const CLIENT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(75);

/// What `request_filter` decides for a request: proxy it, or answer it here (the answer is
/// given by [`Proxy::answer`]). Fills the context's client, request id, route and pool.
fn admit(session: &mut Session, ctx: &mut Ctx, draining: bool) -> Result<Next> {
    limit_keepalive(session, draining);
    let gen = ctx.gen.clone();
    let local = session.server_addr().and_then(|a| a.as_inet()).copied();
    let Some(listener) = local.and_then(|a| gen.binds.lookup(a)) else {
        return Err(ProxyError::UnknownListener.into_pingora());
    };
    ctx.listener = listener;
    let l = gen.listeners.get(listener);
    let trusted_proxies = l.map_or(&[][..], |l| l.trusted_proxies.as_slice());
    ctx.peer = session.client_addr().and_then(|a| a.as_inet()).copied();
    ctx.trusted = ctx
        .peer
        .is_some_and(|p| trusted_proxies.iter().any(|c| c.contains(p.ip())));
    let req = session.req_header();
    let forwarded = ctx
        .trusted
        .then(|| headers::forwarded_client(req, trusted_proxies))
        .flatten();
    ctx.client = forwarded.or(ctx.peer.map(|p| p.ip()));
    ctx.request_id = ctx
        .trusted
        .then(|| headers::incoming_request_id(req))
        .flatten()
        .unwrap_or_else(headers::new_request_id);
    let limits = l.map(|l| l.limits).unwrap_or_default();
    if let Err(why) = limits::check_head(session.req_header(), &limits) {
        return Ok(Next::Reject(why));
    }
    if let Err(why) = rate_limited(l.and_then(|l| l.rate_limit.as_deref()), ctx) {
        return Ok(Next::Reject(why));
    }
    let Some(authority) = headers::authority(req) else {
        return Ok(Next::Error(400, false));
    };
    ctx.authority = authority.to_owned();
    if let Some(port) = l.and_then(|l| l.redirect_to_https) {
        let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let location = https_location(&ctx.authority, port, target);
        return Ok(Next::Redirect(308, location));
    }
    let query = req.uri.query();
    let next = match gen.routes.decide(listener, &ctx.authority, req.uri.path()) {
        Decision::Matched { index, route, path } => {
            ctx.route = Some(index);
            if let Err(why) = rate_limited(route.rate_limit.as_deref(), ctx) {
                return Ok(Next::Reject(why));
            }
            if route.client_certificate_required
                && !client_gate(session).is_some_and(|g| g.identity.verified())
            {
                return Ok(Next::Reject(Rejection::ClientCertificate));
            }
            match &route.target {
                Target::Redirect(r) => Next::Redirect(r.status, r.location(&path, query)),
                Target::Pool(pool) => {
                    let max_body = route.max_body_bytes.unwrap_or(limits.max_body_bytes);
                    if let Err(why) = limits::check_declared_body(req, max_body) {
                        return Ok(Next::Reject(why));
                    }
                    ctx.body_limit = max_body;
                    ctx.pool = Some(*pool);
                    // A path that normalization left alone is sent on as it came.
                    if let Cow::Owned(path) = path {
                        ctx.target = Some(match query {
                            Some(q) => format!("{path}?{q}"),
                            None => path,
                        });
                    }
                    if let Some(a) = gen.pools.get(*pool).and_then(|p| p.affinity.as_ref()) {
                        ctx.affinity = affinity::cookie(req, &a.cookie);
                    }
                    Next::Proxy
                }
            }
        }
        Decision::NotFound => Next::Error(404, true),
        Decision::BadPath(e) => {
            // Answered without reaching a backend: the log is the only trace of why.
            info!(
                "listener {}: 400 for {} {:?} from {}: {e}",
                l.map_or("-", |l| l.name.as_str()),
                ctx.authority,
                req.uri.path(),
                ctx.client.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            );
            ctx.logged = true;
            Next::Error(400, false)
        }
    };
    Ok(next)
}

/// Caps the client connection's keep-alive at [`CLIENT_IDLE_TIMEOUT`]; connections that are not
/// kept alive (`Connection: close`, HTTP/1.0) stay so.
///
/// HTTP/1.1 requests pipelined on the connection are answered in order, as nginx and HAProxy
/// do (Pingora's default answers the first and closes).
fn limit_keepalive(session: &mut Session, draining: bool) {
    session.as_downstream_mut().set_pipelining_enabled(true);
    if draining {
        // A hand-over or shutdown has begun: this response tells the client to reconnect,
        // which reaches the new process (or another instance) instead of a closing socket.
        session.set_keepalive(None);
        return;
    }
    let cap = CLIENT_IDLE_TIMEOUT.as_secs();
    if session.get_keepalive().is_some_and(|t| t == 0 || t > cap) {
        session.set_keepalive(Some(cap));
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.gw.current(), (Instant::now(), SystemTime::now()))
    }

    /// None: pinion does not compress, and Pingora's default (a compression module set to level
    /// 0, which never compresses) cost every request five allocations and three filter calls.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        match admit(session, ctx, self.drain.is_draining())? {
            Next::Proxy => Ok(false),
            // Boxed: the future of every request is only as large as the answer's handle, and
            // only requests answered here pay for the answer's.
            answer => Box::pin(self.answer(session, ctx, answer)).await,
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let gen = ctx.gen.clone();
        let pool = ctx
            .pool
            .and_then(|p| gen.pools.get(p))
            .ok_or_else(|| ProxyError::NoPool.into_pingora())?;
        let key = SelectKey {
            client: ctx.client,
            affinity: ctx.affinity.as_deref(),
        };
        let set = ctx.set.get_or_insert_with(|| pool.servers()).clone();
        let again = std::mem::take(&mut ctx.replay_same)
            .then_some(ctx.server)
            .flatten();
        let choice = pool
            .select(&set, &key, &ctx.tried)
            .or_else(|| again.and_then(|i| pool.again(&set, &key, i)));
        let Some(choice) = choice else {
            let e = ProxyError::NoServer {
                pool: pool.name.clone(),
                servers: pool.unhealthy_summary(&set),
            };
            warn!("{e}");
            ctx.logged = true;
            return Err(e.into_pingora());
        };
        let server = set
            .get(choice.index)
            .ok_or_else(|| ProxyError::NoPool.into_pingora())?;
        ctx.server = Some(choice.index);
        ctx.tried.push(choice.index);
        ctx.upstream_start = Some(Instant::now());
        ctx.in_flight = Some(InFlight::new(server.in_flight.clone()));
        ctx.set_cookie = match &pool.affinity {
            Some(a) if !choice.by_affinity => {
                Some(affinity::set_cookie(a, &server.id, is_tls(&gen, ctx)))
            }
            _ => None,
        };
        let mut peer = Box::new(server.peer.clone());
        // A gRPC deadline shorter than the pool's request timeout is the wait for the backend.
        let started = ctx.start.map(|(t, _)| t);
        if let Some(left) = grpc::remaining(session.req_header(), started) {
            let o = &mut peer.options;
            o.read_timeout = Some(o.read_timeout.map_or(left, |t| t.min(left)));
        }
        Ok(peer)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        trust::check_connection(ctx, reused, digest)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Backends get origin-form: the normalized target, or the client's own when it was
        // already normal and not in absolute form (HTTP/2 and absolute-form carry an authority).
        let target = match &ctx.target {
            Some(t) => Some(t.as_str()),
            None if upstream_request.uri.authority().is_some() => Some(
                upstream_request
                    .uri
                    .path_and_query()
                    .map_or("/", |pq| pq.as_str()),
            ),
            None => None,
        };
        if let Some(target) = target {
            let uri = target
                .parse::<http::Uri>()
                .map_err(|e| ProxyError::Target(e).into_pingora())?;
            upstream_request.set_uri(uri);
        }
        let gen = &ctx.gen;
        let l = gen.listeners.get(ctx.listener);
        let forwarded = headers::Forwarded {
            peer: ctx.peer,
            trusted: ctx.trusted,
            format: l.map_or(crate::config::ForwardedFor::Ip, |l| l.forwarded_for),
            local_port: session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port()),
            tls: is_tls(gen, ctx),
            authority: &ctx.authority,
            request_id: &ctx.request_id,
        };
        forwarded.apply(upstream_request)?;
        if let Some(gate) = client_gate(session).filter(|g| g.headers) {
            headers::client_certificate(upstream_request, &gate.identity, gate.xfcc);
        }
        let host = ctx.pool().and_then(|p| match &p.host_header {
            HostHeader::Preserve => None,
            HostHeader::Literal(h) => Some(h.as_str()),
            HostHeader::Backend => ctx.chosen().map(|s| s.host_name.as_str()),
        });
        if let Some(host) = host {
            upstream_request.insert_header(http::header::HOST, host)?;
        }
        if let Some(route) = route(gen, ctx) {
            headers::rewrite_request(upstream_request, &route.request_headers)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.answered = true;
        context::record_latency(ctx);
        Ok(())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        context::count_request(ctx, status);
        if grpc::is_call(session.req_header()) {
            // pinion's own trailers-only answers carry the status in the header block.
            let written = session
                .response_written()
                .and_then(|r| grpc::status_in(&r.headers));
            ctx.grpc_status = ctx.grpc_status.or(written);
            if let Some(code) = ctx.grpc_status {
                ctx.gen.metrics.grpc(ctx.listener, code);
            }
        }
        if let Some(log) = &ctx.gen.access_log {
            access::record(log, session, ctx, status);
        }
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        upstream_trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.grpc_status = grpc::status_in(upstream_trailers).or(ctx.grpc_status);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.grpc_status = grpc::status_in(&upstream_response.headers);
        if let Some(route) = route(&ctx.gen, ctx) {
            headers::rewrite_response(upstream_response, &route.response_headers)?;
        }
        if let Some(cookie) = ctx.set_cookie.take() {
            upstream_response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Counted under the whitelist's own reason by `refused_at_connect`.
        let refused = trust::refused_at_connect(ctx, &e);
        let failure = match e.etype() {
            _ if refused.is_some() => None,
            ErrorType::InvalidCert => Some(TlsFailure::CertificateInvalid),
            ErrorType::TLSHandshakeFailure => Some(TlsFailure::HandshakeFailed),
            _ => None,
        };
        if let Some(f) = failure {
            if let Some(server) = ctx.chosen() {
                server.counters.tls_failure(f);
            }
        }
        if let Some(refused) = refused {
            e = refused;
        }
        // Nothing reached the server: replaying on another one is safe for any method.
        let attempt = retry::Attempt {
            nothing_sent: true,
            ..retry::Attempt::default()
        };
        let retry = decide_retry(ctx, retry::replayable(&e, attempt), &e);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let attempt = retry::Attempt {
            nothing_sent: std::mem::take(&mut ctx.nothing_sent),
            // Pingora names it for the client side of the upstream connection: pooled or new.
            reused: client_reused,
            idempotent: session.req_header().method.is_idempotent(),
            body_truncated: session.as_ref().retry_buffer_truncated(),
            answered: std::mem::take(&mut ctx.answered) || session.response_written().is_some(),
        };
        let replay = match ctx.body_refused {
            None => retry::replayable(&e, attempt),
            Some(_) => retry::Replay::Never,
        };
        let mut e = e.more_context(format!("Peer: {peer}"));
        let retry = decide_retry(ctx, replay, &e);
        e.set_retry(retry);
        e
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        ctx.logged
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &Ctx,
        _error: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        // pinion logs each retry itself, naming pool and server.
        true
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let read = body.as_ref().map_or(0, |b| b.len() as u64);
        ctx.body_read = ctx.body_read.saturating_add(read);
        match limits::check_streamed_body(ctx.body_read, ctx.body_limit) {
            Ok(()) => Ok(()),
            Err(why) => {
                ctx.body_refused = Some(why);
                Err(Error::explain(
                    ErrorType::HTTPStatus(why.status()),
                    why.to_string(),
                ))
            }
        }
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if let Some(why) = ctx.body_refused {
            return self.body_refused(session, ctx, why).await;
        }
        let code = status_for(e);
        if code > 0 {
            if let Err(write) = respond::error(session, code, false, page(ctx, code)).await {
                error!("cannot send the {code} response to the client: {write}");
            }
        }
        if !ctx.logged && code >= 500 {
            let gen = &ctx.gen;
            let route = route(gen, ctx).map_or("-", |r| r.name.as_str());
            let what = if code == 504 { "timed out" } else { "failed" };
            warn!(
                "route {route} pool {} server {}: {what}, answered {code}: {e}",
                ctx.pool().map_or("-", |p| p.name.as_str()),
                ctx.server_label()
            );
            ctx.logged = true;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

fn is_tls(gen: &Generation, ctx: &Ctx) -> bool {
    gen.listeners
        .get(ctx.listener)
        .is_some_and(|l| l.tls.is_some())
}

fn route<'g>(gen: &'g Generation, ctx: &Ctx) -> Option<&'g Route> {
    ctx.route.and_then(|r| gen.routes.routes().get(r))
}

/// What the handshake learnt of the client's certificate, on `client_auth` listeners.
fn client_gate(session: &Session) -> Option<&ClientGate> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<ClientGate>()
}

/// Takes a token from the client's bucket of `limit`, when there is one.
fn rate_limited(limit: Option<&RateLimiter>, ctx: &Ctx) -> Result<(), Rejection> {
    match (limit, ctx.client) {
        (Some(limit), Some(client)) => limit
            .take(client, Instant::now())
            .map_err(|retry_after| Rejection::RateLimited { retry_after }),
        _ => Ok(()),
    }
}

/// Whether a failed attempt is replayed: the failure allows it within the request's allowance
/// (`retry::within_budget`) and a server is left for it. Logs the decision to replay.
fn decide_retry(ctx: &mut Ctx, replay: retry::Replay, e: &Error) -> bool {
    let retries = ctx.pool().map_or(0, |pool| pool.retries);
    let budget = retry::within_budget(replay, retries, ctx.tried.len(), ctx.refused_replays);
    let other = ctx
        .set
        .as_ref()
        .is_some_and(|set| crate::pool::has_candidate(set, &ctx.tried));
    let same =
        replay.same_server() && !other && ctx.chosen().is_some_and(|s| s.health.is_healthy());
    let retry = budget && (other || same);
    ctx.replay_same = retry && same;
    if retry && replay == retry::Replay::RefusedStream {
        ctx.refused_replays += 1;
    }
    if retry {
        log_retry(ctx, e, same);
    }
    retry
}

/// Logs that a failure is retried; a later failure gets its own line.
fn log_retry(ctx: &mut Ctx, e: &Error, same: bool) {
    let logged = std::mem::take(&mut ctx.logged);
    if !logged {
        warn!(
            "pool {} server {}: {}; retrying on {}",
            ctx.pool().map_or("-", |p| p.name.as_str()),
            ctx.server_label(),
            e.etype().as_str(),
            if same {
                "another connection to the same server"
            } else {
                "another server"
            }
        );
    }
}

/// `https://HOST[:PORT]TARGET` for `redirect_to_https`; the port is left out when it is 443.
fn https_location(authority: &str, port: u16, target: &str) -> String {
    let host = host_of(authority);
    let host = if host.contains(':') {
        Cow::Owned(format!("[{host}]"))
    } else {
        host
    };
    if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_redirects_keep_host_and_target_and_drop_port_443() {
        assert_eq!(
            https_location("WWW.Example.com:80", 443, "/a?b"),
            "https://www.example.com/a?b"
        );
        assert_eq!(https_location("h:8080", 8443, "/"), "https://h:8443/");
        assert_eq!(https_location("[::1]:80", 443, "/x"), "https://[::1]/x");
    }
}
