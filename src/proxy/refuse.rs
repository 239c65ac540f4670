//! Answers the gateway gives instead of proxying: a request over a limit, and gateway errors
//! with the listener's error page.

use super::context::{Ctx, Next};
use super::{respond, Proxy};
use crate::config::ErrorPage;
use crate::limits::Rejection;
use log::{debug, info};
use pingora::proxy::{FailToProxy, Session};
use pingora::Result;

impl Proxy {
    /// Gives the answer `request_filter` decided on instead of proxying.
    pub(super) async fn answer(
        &self,
        session: &mut Session,
        ctx: &Ctx,
        next: Next,
    ) -> Result<bool> {
        match next {
            Next::Proxy => Ok(false),
            Next::Reject(why) => self.reject(session, ctx, why).await,
            Next::Redirect(status, location) => respond::redirect(session, status, &location).await,
            Next::Error(code, keepalive) => self.error(session, ctx, code, keepalive).await,
        }
    }

    /// Answers a request that crossed a limit: its status, counted by reason; the connection
    /// is not kept, since the client may still be sending what was refused.
    pub(super) async fn reject(
        &self,
        session: &mut Session,
        ctx: &Ctx,
        why: Rejection,
    ) -> Result<bool> {
        debug!("request {} refused: {why}", ctx.request_id);
        ctx.gen.metrics.rejected(ctx.listener, why);
        let code = why.status();
        let answered = match why {
            // The request itself is fine: a client without a body to send may go on.
            Rejection::RateLimited { retry_after } => {
                let keepalive = session.is_body_empty();
                let page = page(ctx, code);
                respond::error_retry_after(session, code, keepalive, page, Some(retry_after)).await
            }
            _ => self.error(session, ctx, code, false).await,
        };
        respond::discard_body(session).await;
        answered
    }

    /// A body that crossed its limit while it streamed: 413 when the backend has not answered
    /// yet; after its answer began, the exchange is cut off and logged. Either way the
    /// connection closes.
    pub(super) async fn body_refused(
        &self,
        session: &mut Session,
        ctx: &Ctx,
        why: Rejection,
    ) -> FailToProxy {
        ctx.gen.metrics.rejected(ctx.listener, why);
        let code = if session.response_written().is_none() {
            debug!("request {} refused: {why}", ctx.request_id);
            if let Err(e) = self.error(session, ctx, why.status(), false).await {
                debug!("cannot send the 413 response to the client: {e}");
            }
            respond::discard_body(session).await;
            why.status()
        } else {
            info!(
                "request {}: {why} after the backend began to answer; the exchange is cut off",
                ctx.request_id
            );
            0
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Answers with a gateway error; `Ok(true)` stops request processing.
    pub(super) async fn error(
        &self,
        session: &mut Session,
        ctx: &Ctx,
        code: u16,
        keepalive: bool,
    ) -> Result<bool> {
        respond::error(session, code, keepalive, page(ctx, code)).await
    }
}

/// The listener's error page for `code`, if it has one.
pub(super) fn page(ctx: &Ctx, code: u16) -> Option<&ErrorPage> {
    ctx.gen
        .listeners
        .get(ctx.listener)
        .and_then(|l| l.error_pages.get(&code))
}
