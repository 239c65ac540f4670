//! The `ProxyHttp` implementation: each Pingora phase is short and hands the work to the module
//! that owns it (routing, pool, upstream, headers). See docs/architecture.md for the phase map.

mod headers;
mod respond;

use crate::config::Config;
use crate::listener::{BindIndex, ListenerInfo};
use crate::pool::Pool;
use crate::routing::{Decision, RouteTable, Target};
use crate::upstream::{self, PinError};
use async_trait::async_trait;
use log::{error, warn};
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::sync::Arc;

/// Errors raised by pinion itself while proxying a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The connection arrived on a socket no listener owns (a bug, not a client error).
    #[error("connection on an unknown local address")]
    UnknownListener,
    /// The request reached `upstream_peer` without a routed pool.
    #[error("no pool was selected for this request")]
    NoPool,
    /// The pool has no server to try.
    #[error("pool {0} has no server")]
    NoServer(String),
    /// The backend failed the pool's whitelist.
    #[error("pool {pool} server {server}: {reason}")]
    Rejected {
        pool: String,
        server: String,
        reason: PinError,
    },
    /// The normalized path could not be turned back into a request target.
    #[error("cannot build the upstream request target: {0}")]
    Target(#[from] http::uri::InvalidUri),
}

impl ProxyError {
    /// The Pingora error for this failure, with the status it maps to.
    fn into_pingora(self) -> Box<Error> {
        let etype = match &self {
            ProxyError::Rejected { .. } => ErrorType::InvalidCert,
            ProxyError::NoServer(_) => ErrorType::ConnectNoRoute,
            ProxyError::UnknownListener | ProxyError::NoPool | ProxyError::Target(_) => {
                ErrorType::InternalError
            }
        };
        let upstream = matches!(self, ProxyError::Rejected { .. } | ProxyError::NoServer(_));
        let mut e = Error::because(etype, "pinion", self);
        e.set_retry(false);
        if upstream {
            e.into_up()
        } else {
            e.into_in()
        }
    }
}

/// Everything a request needs, built once from a validated configuration.
pub struct Gateway {
    listeners: Vec<ListenerInfo>,
    binds: BindIndex,
    routes: RouteTable,
    pools: Vec<Pool>,
}

impl Gateway {
    /// Prepares routes, pools and peers.
    pub fn new(config: &Config) -> Gateway {
        let hook = upstream::handshake_hook();
        Gateway {
            listeners: config
                .listeners
                .iter()
                .map(|l| ListenerInfo {
                    name: l.name.clone(),
                    tls: l.tls.is_some(),
                })
                .collect(),
            binds: BindIndex::new(&config.listeners),
            routes: config.routes.clone(),
            pools: config.pools.iter().map(|p| Pool::new(p, &hook)).collect(),
        }
    }
}

/// The proxy service logic.
pub struct Proxy {
    gw: Arc<Gateway>,
}

impl Proxy {
    /// A proxy over the prepared gateway state.
    pub fn new(gw: Arc<Gateway>) -> Proxy {
        Proxy { gw }
    }
}

/// Per-request state.
#[derive(Debug, Default)]
pub struct Ctx {
    listener: usize,
    route: Option<usize>,
    pool: Option<usize>,
    server: Option<usize>,
    /// Normalized path plus the original query: what the backend receives.
    target: String,
    /// Host (or `:authority`) as the client sent it.
    authority: String,
    request_id: String,
    /// Set when pinion already logged why the request failed.
    logged: bool,
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let Some(listener) = local.and_then(|a| self.gw.binds.lookup(a)) else {
            return Err(ProxyError::UnknownListener.into_pingora());
        };
        ctx.listener = listener;
        let req = session.req_header();
        let Some(authority) = headers::authority(req) else {
            return respond::error(session, 400, false).await;
        };
        ctx.authority = authority.to_owned();
        let path = req.uri.path().to_owned();
        let query = req.uri.query().map(str::to_owned);
        match self.gw.routes.decide(listener, &ctx.authority, &path) {
            Decision::Matched { index, route, path } => {
                ctx.route = Some(index);
                ctx.pool = match route.target {
                    Target::Pool(p) => Some(p),
                };
                ctx.target = match query {
                    Some(q) => format!("{path}?{q}"),
                    None => path,
                };
                ctx.request_id = headers::new_request_id();
                Ok(false)
            }
            Decision::NotFound => respond::error(session, 404, true).await,
            Decision::BadPath(_) => respond::error(session, 400, false).await,
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool
            .and_then(|p| self.gw.pools.get(p))
            .ok_or_else(|| ProxyError::NoPool.into_pingora())?;
        let index = pool
            .pick()
            .ok_or_else(|| ProxyError::NoServer(pool.name.clone()).into_pingora())?;
        ctx.server = Some(index);
        let server = pool
            .servers
            .get(index)
            .ok_or_else(|| ProxyError::NoServer(pool.name.clone()).into_pingora())?;
        Ok(Box::new(server.peer.clone()))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Runs for new and reused connections alike, before any request byte is written.
        let Some(pool) = ctx.pool.and_then(|p| self.gw.pools.get(p)) else {
            return Err(ProxyError::NoPool.into_pingora());
        };
        let Some(tls) = &pool.tls else { return Ok(()) };
        let Err(reason) = upstream::check(tls, digest) else {
            return Ok(());
        };
        let server = ctx
            .server
            .and_then(|s| pool.servers.get(s))
            .map_or("?", |s| s.label.as_str());
        let rejected = ProxyError::Rejected {
            pool: pool.name.clone(),
            server: server.to_owned(),
            reason,
        };
        if !upstream::enforced(tls) {
            warn!("{rejected} (pin_mode: report, request allowed)");
            return Ok(());
        }
        warn!("{rejected}; connection closed before the request was sent");
        ctx.logged = true;
        Err(rejected.into_pingora())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let uri = ctx
            .target
            .parse::<http::Uri>()
            .map_err(|e| ProxyError::Target(e).into_pingora())?;
        upstream_request.set_uri(uri);
        let tls = self.gw.listeners.get(ctx.listener).is_some_and(|l| l.tls);
        let forwarded = headers::Forwarded {
            client: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            local_port: session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port()),
            tls,
            authority: &ctx.authority,
            request_id: &ctx.request_id,
        };
        forwarded.apply(upstream_request)
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        ctx.logged
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = status_for(e);
        if code > 0 {
            if let Err(write) = respond::error(session, code, false).await {
                error!("cannot send the {code} response to the client: {write}");
            }
        }
        if !ctx.logged && code >= 500 {
            let route = ctx
                .route
                .and_then(|r| self.gw.routes.routes().get(r))
                .map_or("-", |r| r.name.as_str());
            let pool = ctx.pool.and_then(|p| self.gw.pools.get(p));
            let server = pool
                .zip(ctx.server)
                .and_then(|(p, s)| p.servers.get(s))
                .map_or("-", |s| s.label.as_str());
            warn!(
                "route {route} pool {} server {server}: {code}: {e}",
                pool.map_or("-", |p| p.name.as_str())
            );
            ctx.logged = true;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

/// The status a failed request is answered with.
fn status_for(e: &Error) -> u16 {
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (ErrorType::ReadTimedout, ErrorSource::Upstream) => 504,
        (_, ErrorSource::Upstream) => 502,
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        (_, ErrorSource::Internal | ErrorSource::Unset) => 500,
    }
}
