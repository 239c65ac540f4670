//! Responses the gateway writes itself: errors (a short plain-text body, or the listener's
//! error page) and redirects.

use crate::config::ErrorPage;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use std::time::Duration;
use tokio::time::timeout;

/// How much of a refused request's body is read and dropped before the connection closes, and
/// for how long: closing a socket with unread bytes makes the kernel reset it, and a reset can
/// destroy the response before the client reads it (nginx's lingering close does the same).
const DISCARD_BYTES: usize = 1024 * 1024;
const DISCARD_TIME: Duration = Duration::from_secs(2);

/// Writes a gateway-generated error; returns `Ok(true)` so that `request_filter` stops.
pub async fn error(
    session: &mut Session,
    code: u16,
    keepalive: bool,
    page: Option<&ErrorPage>,
) -> Result<bool> {
    error_retry_after(session, code, keepalive, page, None).await
}

/// [`error`], with `Retry-After: seconds` when given (429, 503).
pub async fn error_retry_after(
    session: &mut Session,
    code: u16,
    keepalive: bool,
    page: Option<&ErrorPage>,
    retry_after: Option<u64>,
) -> Result<bool> {
    if super::grpc::is_call(session.req_header()) {
        // A gRPC client reads the outcome from grpc-status, not from an HTTP error page.
        let mut resp = super::grpc::trailers_only(code)?;
        resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
        if !keepalive {
            session.set_keepalive(None);
        }
        // One HEADERS frame that ends the stream (a "trailers-only" response): Pingora's
        // `write_response_header` would end it with a separate empty DATA frame.
        let task = pingora::protocols::http::HttpTask::Header(Box::new(resp), true);
        session
            .as_downstream_mut()
            .response_duplex_vec(vec![task])
            .await?;
        return Ok(true);
    }
    let (body, content_type) = match page {
        Some(p) => (p.body.clone(), p.content_type),
        None => {
            let reason = http::StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            (
                Bytes::from(format!("{code} {reason}\n")),
                "text/plain; charset=utf-8",
            )
        }
    };
    let mut resp = ResponseHeader::build(code, Some(5))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    if let Some(seconds) = retry_after {
        resp.insert_header(http::header::RETRY_AFTER, seconds.to_string())?;
    }
    write(session, resp, body, keepalive).await
}

/// Writes a redirect to `location`; returns `Ok(true)`.
pub async fn redirect(session: &mut Session, status: u16, location: &str) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header(http::header::LOCATION, location)?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    write(session, resp, Bytes::new(), true).await
}

async fn write(
    session: &mut Session,
    mut resp: ResponseHeader,
    body: Bytes,
    keepalive: bool,
) -> Result<bool> {
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    if !keepalive {
        // Pingora then answers `Connection: close` on HTTP/1.1 and ends the stream on HTTP/2.
        session.set_keepalive(None);
    }
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

/// After an early answer on a connection that will close: reads and drops what the client is
/// still sending of its body, up to [`DISCARD_BYTES`] or [`DISCARD_TIME`]. A client that waits
/// for `100 Continue` sends nothing, and nothing is waited for.
pub async fn discard_body(session: &mut Session) {
    let req = session.req_header();
    let expects_continue = req
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // HTTP/2 ends the refused stream on its own; the connection stays.
    let h2 = req.version == http::Version::HTTP_2;
    if h2 || expects_continue || session.is_body_empty() {
        return;
    }
    let _ = timeout(DISCARD_TIME, async {
        let mut read = 0;
        while read < DISCARD_BYTES {
            match session.read_request_body().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
    })
    .await;
}
