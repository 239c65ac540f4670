//! Per-request state carried through Pingora's phases.

use crate::gateway::Generation;
use crate::limits::Rejection;
use crate::pool::{Pool, Server, ServerSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// What `request_filter` decided once routing is done.
pub(super) enum Next {
    /// Go on to the pool.
    Proxy,
    /// Refuse: the request crossed a limit.
    Reject(Rejection),
    /// Answer with a redirect: status and location.
    Redirect(u16, String),
    /// Answer with a gateway error; whether the connection may be kept.
    Error(u16, bool),
}

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    /// The configuration generation this request started on; it keeps it to the end, so a
    /// reload never changes a request halfway.
    pub(super) gen: Arc<Generation>,
    pub(super) listener: usize,
    pub(super) route: Option<usize>,
    pub(super) pool: Option<usize>,
    /// The pool's servers when the first was chosen: retries choose from the same set, and
    /// `server` indexes it, however the pool's names resolve meanwhile.
    pub(super) set: Option<Arc<ServerSet>>,
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
    /// The current server's response header has arrived (a failure after it is never replayed).
    pub(super) answered: bool,
    /// The failure being replayed was the connection's, not the server's: when no other server
    /// is left, the replay may go to the same one over another connection.
    pub(super) replay_same: bool,
    /// Replays of streams a server refused, counted apart from `retries` (`retry::within_budget`).
    pub(super) refused_replays: u32,
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
    pub(super) upstream_tls: Option<std::borrow::Cow<'static, str>>,
    /// The body limit of the request's listener or route (`None`: unlimited).
    pub(super) body_limit: Option<u64>,
    /// Body bytes read from the client so far.
    pub(super) body_read: u64,
    /// Set when the body crossed `body_limit` while it streamed.
    pub(super) body_refused: Option<crate::limits::Rejection>,
    /// The `grpc-status` the backend ended a gRPC call with.
    pub(super) grpc_status: Option<u8>,
}

impl Ctx {
    /// A request's state, on generation `gen`, started at `start`.
    pub(super) fn new(gen: Arc<Generation>, start: (Instant, SystemTime)) -> Ctx {
        Ctx {
            gen,
            listener: 0,
            route: None,
            pool: None,
            set: None,
            server: None,
            tried: Vec::new(),
            in_flight: None,
            affinity: None,
            set_cookie: None,
            nothing_sent: false,
            answered: false,
            replay_same: false,
            refused_replays: 0,
            target: None,
            authority: String::new(),
            request_id: String::new(),
            logged: false,
            peer: None,
            trusted: false,
            client: None,
            start: Some(start),
            upstream_start: None,
            upstream_tls: None,
            body_limit: None,
            body_read: 0,
            body_refused: None,
            grpc_status: None,
        }
    }
}

impl Ctx {
    /// The request's pool, once routed to one.
    pub(super) fn pool(&self) -> Option<&Pool> {
        self.gen.pools.get(self.pool?)
    }

    /// The server chosen last, once one is.
    pub(super) fn chosen(&self) -> Option<&Arc<Server>> {
        self.set.as_ref()?.get(self.server?)
    }

    /// The chosen server's label, or "-".
    pub(super) fn server_label(&self) -> &str {
        self.chosen().map_or("-", |s| s.label.as_str())
    }
}

/// Records a response's upstream latency for its pool and its server.
pub(super) fn record_latency(ctx: &Ctx) {
    if let Some(t) = ctx.upstream_start {
        let elapsed = t.elapsed();
        ctx.gen.metrics.upstream_latency(pool_index(ctx), elapsed);
        if let Some(s) = ctx.chosen() {
            s.counters.latency(elapsed);
        }
    }
}

/// Counts a finished request for its listener and route, and for the server that answered it.
pub(super) fn count_request(ctx: &Ctx, status: u16) {
    ctx.gen.metrics.request(ctx.listener, ctx.route, status);
    if let Some(s) = ctx.chosen() {
        s.counters.request(status);
    }
}

/// The request's pool (0 before routing; only read once a pool is set).
pub(super) fn pool_index(ctx: &Ctx) -> usize {
    ctx.pool.unwrap_or_default()
}

/// Counts a request in its server's in-flight requests until dropped (with the request's
/// context, whatever way the request ends).
#[derive(Debug)]
pub(super) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(super) fn new(counter: Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
