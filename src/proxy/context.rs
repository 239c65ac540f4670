//! Per-request state carried through Pingora's phases.

use crate::pool::Pool;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// What `request_filter` decided once routing is done.
pub(super) enum Next {
    /// Go on to the pool.
    Proxy,
    /// Answer with a redirect: status and location.
    Redirect(u16, String),
    /// Answer with a gateway error; whether the connection may be kept.
    Error(u16, bool),
}

/// Per-request state.
#[derive(Debug, Default)]
pub struct Ctx {
    pub(super) listener: usize,
    pub(super) route: Option<usize>,
    pub(super) pool: Option<usize>,
    pub(super) server: Option<usize>,
    /// Servers tried for this request, in order.
    pub(super) tried: Vec<usize>,
    /// Counts this request in its server's in-flight requests while it lives.
    pub(super) in_flight: Option<InFlight>,
    /// The affinity cookie the client sent.
    pub(super) affinity: Option<String>,
    /// The affinity cookie to set on the response.
    pub(super) set_cookie: Option<String>,
    /// The last failure happened before any request byte was sent (safe to replay anywhere).
    pub(super) nothing_sent: bool,
    /// Normalized path plus the original query, when normalization changed the path: what the
    /// backend receives instead of the client's request target.
    pub(super) target: Option<String>,
    /// Host (or `:authority`) as the client sent it.
    pub(super) authority: String,
    pub(super) request_id: String,
    /// Set when pinion already logged why the request failed.
    pub(super) logged: bool,
    /// The address the connection came from (the PROXY header's, with `proxy_protocol`).
    pub(super) peer: Option<SocketAddr>,
    /// Whether that peer is a trusted proxy.
    pub(super) trusted: bool,
    /// The client: the peer, or from a trusted proxy the first untrusted X-Forwarded-For entry.
    pub(super) client: Option<IpAddr>,
    /// When the request started.
    pub(super) start: Option<(Instant, SystemTime)>,
    /// When the current server was chosen.
    pub(super) upstream_start: Option<Instant>,
    /// TLS version of the backend connection.
    pub(super) upstream_tls: Option<String>,
}

/// The request's pool (0 before routing; only read once a pool is set).
pub(super) fn pool_index(ctx: &Ctx) -> usize {
    ctx.pool.unwrap_or_default()
}

/// Counts a request in its server's in-flight requests until dropped (with the request's
/// context, whatever way the request ends).
#[derive(Debug)]
pub(super) struct InFlight {
    pools: Arc<Vec<Pool>>,
    pool: usize,
    server: usize,
}

impl InFlight {
    pub(super) fn new(pools: Arc<Vec<Pool>>, pool: usize, server: usize) -> InFlight {
        if let Some(s) = pools.get(pool).and_then(|p| p.servers.get(server)) {
            s.in_flight
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        InFlight {
            pools,
            pool,
            server,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(s) = self
            .pools
            .get(self.pool)
            .and_then(|p| p.servers.get(self.server))
        {
            s.in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
