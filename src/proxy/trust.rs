//! The whitelist on the request path: every connection a request is about to use, new or
//! reused, is judged against the request's own generation before a request byte is written;
//! and connections refused while being established (HTTP/2 pools judge them there, so that a
//! refused one never enters the shared pool) are reported the same way.

use super::error::ProxyError;
use super::Ctx;
use crate::pool::{Pool, Server};
use crate::upstream::{self, PinError};
use log::warn;
use pingora::protocols::Digest;
use pingora::{Error, Result};

/// Checks the connection a request got, new or reused. A reload that removed a pin refuses a
/// connection pooled under the old whitelist.
pub(super) fn check_connection(ctx: &mut Ctx, reused: bool, digest: Option<&Digest>) -> Result<()> {
    let gen = ctx.gen.clone();
    let pool = ctx.pool.and_then(|p| gen.pools.get(p));
    let (Some(pool), Some(server)) = (pool, ctx.chosen().cloned()) else {
        return Err(ProxyError::NoPool.into_pingora());
    };
    server.counters.connection(reused);
    let Some(tls) = &pool.tls else { return Ok(()) };
    ctx.upstream_tls = digest
        .and_then(|d| d.ssl_digest.as_ref())
        .map(|d| d.version.clone());
    if !reused {
        if let Some(seen) = upstream::presented(digest) {
            server.health.presented(seen);
        }
    }
    let Err(reason) = upstream::check(tls, digest) else {
        return Ok(());
    };
    if !upstream::enforced(tls) {
        let rejected = rejected(pool, &server, reason);
        server.counters.pin_reported();
        warn!("{rejected} (pin_mode: report, request allowed)");
        return Ok(());
    }
    Err(refuse(ctx, pool, &server, reason).into_pingora())
}

/// When `e` is a connection that the whitelist refused as it was established: counts, logs and
/// audits it as [`check_connection`] does, and returns the error to answer with.
pub(super) fn refused_at_connect(ctx: &mut Ctx, e: &Error) -> Option<Box<Error>> {
    let reason = upstream::pin_refusal(e)?.clone();
    let gen = ctx.gen.clone();
    let pool = ctx.pool.and_then(|p| gen.pools.get(p))?;
    let server = ctx.chosen().cloned()?;
    Some(refuse(ctx, pool, &server, reason).into_pingora())
}

fn refuse(ctx: &mut Ctx, pool: &Pool, server: &Server, reason: PinError) -> ProxyError {
    server.counters.tls_failure(reason.metric());
    let rejected = rejected(pool, server, reason);
    warn!("{rejected}; connection closed before the request was sent");
    ctx.nothing_sent = true;
    ctx.logged = true;
    rejected
}

fn rejected(pool: &Pool, server: &Server, reason: PinError) -> ProxyError {
    crate::pool::pins::refused(pool, &server.label, &reason);
    ProxyError::Rejected {
        pool: pool.name.clone(),
        server: server.label.clone(),
        reason,
    }
}
