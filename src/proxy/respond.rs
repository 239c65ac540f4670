//! Responses the gateway writes itself (404, 400, 502, 504...): a short plain-text body.

use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Writes a gateway-generated response; returns `Ok(true)` so that `request_filter` stops.
pub async fn error(session: &mut Session, code: u16, keepalive: bool) -> Result<bool> {
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = bytes::Bytes::from(format!("{code} {reason}\n"));
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    if !keepalive {
        // Pingora then answers `Connection: close` on HTTP/1.1 and ends the stream on HTTP/2.
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}
